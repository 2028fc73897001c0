//! `[alerting]` and `[[rules]]`: where alerts go and the user's own alert rules.
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use super::HumanDuration;

/// `[alerting]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// Alertmanagers, each a base URL (http://host:port) or a table with its own TLS and
    /// auth settings; every one gets every notification.
    #[serde(deserialize_with = "url_or_table")]
    pub alertmanagers: Vec<AlertmanagerEntry>,
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
    /// PEM client certificate (chain) and its key, presented to https:// Alertmanagers (mTLS).
    pub tls_cert_file: Option<std::path::PathBuf>,
    pub tls_key_file: Option<std::path::PathBuf>,
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
            tls_cert_file: None,
            tls_key_file: None,
            bearer_token_file: None,
            basic_auth_username: None,
            basic_auth_password_file: None,
        }
    }
}

impl AlertingConfig {
    /// `[alerting]`'s own TLS and auth settings, as an entry with no URL.
    pub fn defaults(&self) -> AlertmanagerEntry {
        AlertmanagerEntry {
            url: String::new(),
            tls_ca_file: self.tls_ca_file.clone(),
            tls_cert_file: self.tls_cert_file.clone(),
            tls_key_file: self.tls_key_file.clone(),
            bearer_token_file: self.bearer_token_file.clone(),
            basic_auth_username: self.basic_auth_username.clone(),
            basic_auth_password_file: self.basic_auth_password_file.clone(),
        }
    }

    /// Every Alertmanager with the settings it is delivered with (its own over `[alerting]`'s).
    pub fn endpoints(&self) -> Vec<AlertmanagerEntry> {
        let defaults = self.defaults();
        self.alertmanagers
            .iter()
            .map(|e| e.over(&defaults))
            .collect()
    }
}

/// One `[alerting] alertmanagers` entry: a URL, or `{ url = "...", tls_cert_file = ... }`.
/// Settings it leaves out come from `[alerting]`, in groups: a CA; a client certificate
/// with its key; an authentication (bearer token, or basic auth user and password).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerEntry {
    pub url: String,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub bearer_token_file: Option<PathBuf>,
    pub basic_auth_username: Option<String>,
    pub basic_auth_password_file: Option<PathBuf>,
}

impl AlertmanagerEntry {
    /// This entry with each group it leaves out taken from `defaults`.
    fn over(&self, defaults: &Self) -> Self {
        let mut out = self.clone();
        if out.tls_ca_file.is_none() {
            out.tls_ca_file.clone_from(&defaults.tls_ca_file);
        }
        if out.tls_cert_file.is_none() && out.tls_key_file.is_none() {
            out.tls_cert_file.clone_from(&defaults.tls_cert_file);
            out.tls_key_file.clone_from(&defaults.tls_key_file);
        }
        let own_auth = out.bearer_token_file.is_some()
            || out.basic_auth_username.is_some()
            || out.basic_auth_password_file.is_some();
        if !own_auth {
            out.bearer_token_file
                .clone_from(&defaults.bearer_token_file);
            out.basic_auth_username
                .clone_from(&defaults.basic_auth_username);
            out.basic_auth_password_file
                .clone_from(&defaults.basic_auth_password_file);
        }
        out
    }
}

/// `alertmanagers`: each entry a URL string or a table (serde's untagged enums would
/// hide which of the table's fields is wrong).
fn url_or_table<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<AlertmanagerEntry>, D::Error> {
    struct Entry(AlertmanagerEntry);
    impl<'de> Deserialize<'de> for Entry {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(EntryVisitor).map(Entry)
        }
    }
    struct EntryVisitor;
    impl<'de> serde::de::Visitor<'de> for EntryVisitor {
        type Value = AlertmanagerEntry;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a URL, or a table with `url` and TLS or auth settings")
        }
        fn visit_str<E: serde::de::Error>(self, url: &str) -> Result<Self::Value, E> {
            Ok(AlertmanagerEntry {
                url: url.into(),
                ..Default::default()
            })
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            AlertmanagerEntry::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    Ok(Vec::<Entry>::deserialize(d)?
        .into_iter()
        .map(|e| e.0)
        .collect())
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
