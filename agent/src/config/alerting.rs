//! `[alerting]` and `[[rules]]`: where alerts go and the user's own alert rules.
use serde::Deserialize;

use super::HumanDuration;

/// `[alerting]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// Alertmanager base URLs (http://host:port); every one gets every notification.
    pub alertmanagers: Vec<String>,
    /// How often firing and recently resolved alerts are re-sent.
    pub resend_interval: HumanDuration,
    /// How long a target must be down before TargetDown fires.
    pub target_down_for: HumanDuration,
    /// How long a target's latency SLI must stay below objective before the alert fires.
    pub latency_for: HumanDuration,
    /// TcpRetransmitRateHigh fires above this many retransmits per second (node, 5m).
    pub tcp_retransmit_rate: f64,
    /// Where alerts link back to (generatorURL); default: http://<listen>/metrics.
    pub external_url: Option<String>,
    /// PEM file of the CA certificates that https:// Alertmanagers are verified against.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// File holding a bearer token sent to every Alertmanager.
    pub bearer_token_file: Option<std::path::PathBuf>,
    /// HTTP basic auth towards every Alertmanager: user name, and a file holding the password.
    pub basic_auth_username: Option<String>,
    pub basic_auth_password_file: Option<std::path::PathBuf>,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        Self {
            alertmanagers: Vec::new(),
            resend_interval: HumanDuration::from_secs(60),
            target_down_for: HumanDuration::from_secs(0),
            latency_for: HumanDuration::from_secs(300),
            tcp_retransmit_rate: 100.0,
            external_url: None,
            tls_ca_file: None,
            bearer_token_file: None,
            basic_auth_username: None,
            basic_auth_password_file: None,
        }
    }
}

/// `[[rules]]`: an alert on any exported series (see rules/expr.rs for the syntax).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The alertname.
    pub alert: String,
    /// Condition, e.g. `rate(gimbal_tcp_retransmits_total[5m]) > 50`.
    pub expr: String,
    /// How long the condition must hold before the alert fires.
    #[serde(rename = "for", default = "defaults::zero")]
    pub hold: HumanDuration,
    #[serde(default = "defaults::severity")]
    pub severity: String,
    /// Extra labels of the alert.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// summary, description, runbook_url, ...
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

mod defaults {
    use super::HumanDuration;

    pub fn zero() -> HumanDuration {
        HumanDuration::from_secs(0)
    }
    pub fn severity() -> String {
        "warning".into()
    }
}
