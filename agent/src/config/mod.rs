//! The agent's configuration: TOML with every default embedded, so no file is needed.
//!
//! Each section is deserialized on its own so that `gimbal check-config` reports every
//! error in a file at once, each with its line and column, instead of stopping at the first.
mod agent;
mod alerting;
mod buckets;
mod cluster;
mod errors;
mod files;
mod gpu;
mod kubernetes;
mod remediation;
mod spans;
mod targets;
mod validate;
mod verdict;

use std::path::Path;

use serde::de::DeserializeOwned;
use toml::{de::DeValue, Spanned};

// Re-exported: the config's types name them, and so do their readers.
pub use crate::units::{ByteSize, HumanDuration};
pub use agent::{
    AgentConfig, LabelsConfig, ProbesConfig, ProcessExitConfig, SyscallHookChoice,
    SyscallLatencyConfig, TcpRetransmitConfig,
};
pub use alerting::{AlertingConfig, AlertmanagerEntry, RuleConfig};
pub use buckets::ClassicBuckets;
pub use cluster::{ClusterConfig, TaintEffect};
pub use errors::{ConfigError, ConfigErrors};
pub use gpu::{parse_xid, GpuConfig, GpuRuleConfig, XidAction, MAX_XID};
pub use kubernetes::KubernetesConfig;
pub use remediation::{
    RemediationConfig, RemediationMode, RestartConfig, RestartWhen, SignalConfig, SuperviseConfig,
    ThrottleConfig,
};
pub use targets::{pod_uid_patterns, TargetConfig};
pub use verdict::{Signals, SignalsOverride, VerdictConfig};

const SECTIONS: &str = "`agent`, `probes`, `labels`, `targets`, `alerting`, `rules`, `remediation`, `throttle`, `restart`, `supervise`, `signal`, `gpu`, `verdict`, `kubernetes`, `cluster`";

/// The default configuration, embedded in the binary and shipped as /etc/gimbal/gimbal.toml.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    pub agent: AgentConfig,
    pub probes: ProbesConfig,
    pub labels: LabelsConfig,
    /// `[[targets]]`: the services to watch.
    pub targets: Vec<TargetConfig>,
    pub alerting: AlertingConfig,
    /// `[[rules]]`: the user's own alert rules.
    pub rules: Vec<RuleConfig>,
    pub remediation: RemediationConfig,
    /// `[[throttle]]`: CPU limits on other cgroups while an alert fires.
    pub throttles: Vec<ThrottleConfig>,
    /// `[[restart]]`: systemd units restarted when their target goes down.
    pub restarts: Vec<RestartConfig>,
    /// `[[supervise]]`: processes the agent runs and restarts itself.
    pub supervise: Vec<SuperviseConfig>,
    /// `[[signal]]`: a signal to the processes of some cgroups when an alert fires.
    pub signals: Vec<SignalConfig>,
    /// `[gpu]`: XIDs from the kernel log, NVML, the XID catalog's overrides and rules.
    pub gpu: GpuConfig,
    /// `[verdict]`: the load-balancing verdict and HAProxy's agent-check.
    pub verdict: VerdictConfig,
    /// `[cluster]`: the node condition and taint written to the Kubernetes API.
    pub cluster: ClusterConfig,
    /// `[kubernetes]`: the kubelet's layout (pod and container names), removed cgroups.
    pub kubernetes: KubernetesConfig,
}

/// The checks that need a module above config (rule expressions and the series they name,
/// Alertmanager URLs, TLS roots): config asks, `crate::check` answers, so config stays a
/// leaf and each error is still reported where the text writes it, with all the others.
pub trait CrossChecks {
    /// A `[[rules]]` expr that the rules would refuse, and why.
    fn rule_expr(&self, expr: &str) -> Result<(), String>;
    /// Whether an Alertmanager URL is https, or why it is no Alertmanager URL.
    fn alertmanager_is_https(&self, url: &str) -> Result<bool, String>;
    /// Why a readable CA file holds nothing a TLS client can trust.
    fn tls_ca(&self, path: &Path) -> Result<(), String>;
    /// Why readable client certificate and key files make no TLS client identity, and the
    /// field to blame (`tls_cert_file` or `tls_key_file`).
    fn tls_client(&self, cert: &Path, key: &Path) -> Result<(), (&'static str, String)>;
    /// Why a web config file (`[agent] web_config`) would not load.
    fn web_config(&self, path: &Path) -> Result<(), String>;
}

/// Accepts what only other modules can judge: for tests and the embedded defaults
/// (`crate::check` is what `run` and `check-config` use).
struct SectionsOnly;

impl CrossChecks for SectionsOnly {
    fn rule_expr(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn alertmanager_is_https(&self, _: &str) -> Result<bool, String> {
        Ok(false)
    }
    fn tls_ca(&self, _: &Path) -> Result<(), String> {
        Ok(())
    }
    fn tls_client(&self, _: &Path, _: &Path) -> Result<(), (&'static str, String)> {
        Ok(())
    }
    fn web_config(&self, _: &Path) -> Result<(), String> {
        Ok(())
    }
}

impl Config {
    /// Reads and validates a config file, with `checks` for what config cannot judge.
    pub fn from_file_with(path: &Path, checks: &dyn CrossChecks) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors::io(path, &e))?;
        Self::parse_with(&text, &path.display().to_string(), checks)
    }

    /// Parses and validates config text without the cross-module checks (`crate::check`
    /// makes those); `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigErrors> {
        Self::parse_with(text, origin, &SectionsOnly)
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse_with(
        text: &str,
        origin: &str,
        checks: &dyn CrossChecks,
    ) -> Result<Self, ConfigErrors> {
        let mut errors = ConfigErrors::new(origin, text);
        let (root, syntax) = toml::de::DeTable::parse_recoverable(text);
        for e in syntax {
            errors.push_toml(&e);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut spans = spans::Spans::index(root.get_ref());
        let mut config = Config::default();
        for (key, value) in root.into_inner() {
            match key.get_ref().as_ref() {
                "agent" => section(value, &mut errors, &mut config.agent),
                "labels" => section(value, &mut errors, &mut config.labels),
                "probes" => probes(value, &mut errors, &mut config.probes),
                "targets" => section_list(
                    "targets",
                    value,
                    &mut errors,
                    &mut spans,
                    &mut config.targets,
                ),
                "alerting" => section(value, &mut errors, &mut config.alerting),
                "rules" => section_list("rules", value, &mut errors, &mut spans, &mut config.rules),
                "remediation" => section(value, &mut errors, &mut config.remediation),
                "throttle" => section_list(
                    "throttle",
                    value,
                    &mut errors,
                    &mut spans,
                    &mut config.throttles,
                ),
                "restart" => section_list(
                    "restart",
                    value,
                    &mut errors,
                    &mut spans,
                    &mut config.restarts,
                ),
                "supervise" => section_list(
                    "supervise",
                    value,
                    &mut errors,
                    &mut spans,
                    &mut config.supervise,
                ),
                "signal" => section_list(
                    "signal",
                    value,
                    &mut errors,
                    &mut spans,
                    &mut config.signals,
                ),
                "gpu" => section(value, &mut errors, &mut config.gpu),
                "verdict" => section(value, &mut errors, &mut config.verdict),
                "cluster" => section(value, &mut errors, &mut config.cluster),
                "kubernetes" => section(value, &mut errors, &mut config.kubernetes),
                other => errors.push_at(
                    key.span(),
                    format!("unknown section `{other}`, expected one of {SECTIONS}"),
                ),
            }
        }
        validate::validate(&config, &spans, &mut errors, checks);
        errors.sort();
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }

    /// The embedded default configuration.
    pub fn embedded() -> Self {
        Self::parse(DEFAULT_TOML, "embedded default config")
            .expect("the embedded default config is valid")
    }
}

fn probes(value: Spanned<DeValue<'_>>, errors: &mut ConfigErrors, probes: &mut ProbesConfig) {
    let span = value.span();
    let DeValue::Table(table) = value.into_inner() else {
        return errors.push_at(span, "`probes` must be a table".into());
    };
    for (key, value) in table {
        match key.get_ref().as_ref() {
            "syscall_latency" => section(value, errors, &mut probes.syscall_latency),
            "tcp_retransmit" => section(value, errors, &mut probes.tcp_retransmit),
            "process_exit" => section(value, errors, &mut probes.process_exit),
            other => errors.push_at(key.span(), format!("unknown probe `{other}`, expected one of `syscall_latency`, `tcp_retransmit`, `process_exit`")),
        }
    }
}

/// Deserializes one section into `slot`, recording (not returning) its error.
fn section<T: DeserializeOwned>(
    value: Spanned<DeValue<'_>>,
    errors: &mut ConfigErrors,
    slot: &mut T,
) {
    match T::deserialize(toml::de::ValueDeserializer::from(value)) {
        Ok(parsed) => *slot = parsed,
        Err(e) => errors.push_toml(&e),
    }
}

/// Deserializes each table of an array of tables (`[[targets]]`) on its own, so that one
/// bad entry does not hide the errors of the others.
fn section_list<T: DeserializeOwned>(
    name: &str,
    value: Spanned<DeValue<'_>>,
    errors: &mut ConfigErrors,
    spans: &mut spans::Spans,
    slot: &mut Vec<T>,
) {
    let span = value.span();
    let DeValue::Array(items) = value.into_inner() else {
        return errors.push_at(span, "expected an array of tables, like [[targets]]".into());
    };
    for (index, item) in items.into_iter().enumerate() {
        let mut parsed = None;
        section(item, errors, &mut parsed);
        if parsed.is_some() {
            // Later checks name this entry by where it is in the file.
            spans.keep(name, index);
        }
        slot.extend(parsed);
    }
}

#[cfg(test)]
mod tests;
