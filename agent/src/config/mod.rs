//! The agent's configuration: TOML with every default embedded, so no file is needed.
//!
//! Each section is deserialized on its own so that `gimbal check-config` reports every
//! error in a file at once, each with its line and column, instead of stopping at the first.
mod errors;
mod files;
mod spans;
mod validate;

use std::{net::SocketAddr, path::Path};

use serde::{de::DeserializeOwned, Deserialize};
use toml::{de::DeValue, Spanned};

// Re-exported: the config's types name them, and so do their readers.
pub use crate::units::{ByteSize, HumanDuration};
pub use errors::{ConfigError, ConfigErrors};

const SECTIONS: &str = "`agent`, `probes`, `labels`, `targets`, `alerting`, `rules`, `remediation`, `throttle`, `restart`, `supervise`, `signal`";

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
}

/// `[[signal]]`: when alert `when` starts firing (for `target`, if set), send `signal` once
/// to every process in the cgroups matching `cgroups` (cgroup2), e.g. SIGUSR1 so a
/// training job checkpoints before anything harsher.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalConfig {
    pub name: String,
    pub when: String,
    #[serde(default)]
    pub target: Option<String>,
    pub cgroups: Vec<String>,
    /// A signal name: "SIGUSR1", "SIGTERM", "SIGRTMIN+2".
    pub signal: String,
}

/// `[remediation]`: whether actions change the host, and what they may never touch.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemediationConfig {
    /// `dry-run` (the default): every action is decided, logged and counted, and nothing
    /// on the host changes. `enforce`: actions are carried out.
    pub mode: RemediationMode,
    /// Cgroup path segments no action touches (systemd unit names). Replaces the default
    /// list; the root cgroup, init.scope and the agent's own cgroup are always refused.
    pub protected: Vec<String>,
    /// Restart backoff: the delay after the second quick failure in a row, doubled after
    /// each further one up to `backoff_max` (the first restart is immediate).
    pub backoff: HumanDuration,
    pub backoff_max: HumanDuration,
    /// A run at least this long counts as healthy: the backoff starts over.
    pub stable_after: HumanDuration,
    /// After this many quick failures in a row, stop restarting and raise
    /// GimbalRemediationGaveUp.
    pub give_up_after: u32,
    /// The cgroup2 directory (relative to the mount) that holds one cgroup per
    /// `[[supervise]]` process.
    pub supervised_cgroup: String,
    /// Node-wide: at most this many throttles, freezes, restarts and signals in effect at
    /// once (a restart or signal for 3 s); more wait while their alert fires.
    pub max_concurrent: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RemediationMode {
    DryRun,
    Enforce,
}

impl RemediationMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::DryRun => "dry-run",
            Self::Enforce => "enforce",
        }
    }
}

impl Default for RemediationConfig {
    fn default() -> Self {
        Self {
            mode: RemediationMode::DryRun,
            protected: [
                "kubelet.service",
                "containerd.service",
                "docker.service",
                "crio.service",
                "sshd.service",
                "ssh.service",
                "systemd-journald.service",
                "nvidia-persistenced.service",
                "nvidia-fabricmanager.service",
                "dbus.service",
            ]
            .map(String::from)
            .to_vec(),
            backoff: HumanDuration::from_secs(10),
            backoff_max: HumanDuration::from_secs(300),
            stable_after: HumanDuration::from_secs(600),
            give_up_after: 6,
            supervised_cgroup: "gimbal.supervised".into(),
            max_concurrent: 4,
        }
    }
}

/// `[[restart]]`: when `when` fires for `target`, restart its systemd unit through D-Bus.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartConfig {
    /// A `[[targets]]` name; the target must select a systemd `unit`.
    pub target: String,
    #[serde(default = "defaults::restart_when")]
    pub when: String,
}

/// `[[supervise]]`: a process the agent starts, and restarts when it exits (hosts
/// without systemd). It keeps running when the agent stops; the next agent adopts it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuperviseConfig {
    pub name: String,
    /// The program (absolute path) and its arguments.
    pub command: Vec<String>,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    #[serde(default = "defaults::root_dir")]
    pub cwd: std::path::PathBuf,
    /// Run as this user (name or uid) and its primary group; the agent's own by default.
    #[serde(default)]
    pub user: Option<String>,
    /// `on-failure` (the default): restart unless it exited with status 0. `always`.
    #[serde(default)]
    pub restart: RestartWhen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartWhen {
    #[default]
    OnFailure,
    Always,
}

/// `[[throttle]]`: while alert `when` fires (for `target`, if set), hold the cgroups
/// matching `cgroups` to `cpu` CPUs and/or `memory_high`, or freeze them; give it all back
/// when the alert resolves or `ttl` ends.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleConfig {
    pub name: String,
    /// The alertname that triggers it, e.g. `TargetLatencySLIBelowObjective`.
    pub when: String,
    /// Only alerts whose `target` label is this.
    #[serde(default)]
    pub target: Option<String>,
    /// Globs over cgroup paths, like `[[targets]] cgroup`: the best-effort groups.
    pub cgroups: Vec<String>,
    /// CPUs' worth of time each matched cgroup may use (0.5 = half a CPU).
    #[serde(default)]
    pub cpu: Option<f64>,
    /// `memory.high` of each matched cgroup (cgroup v2): reclaimed and slowed above it,
    /// never OOM-killed for it.
    #[serde(default)]
    pub memory_high: Option<ByteSize>,
    /// Freeze the matched cgroups (`cgroup.freeze`, cgroup v2) instead of limiting them.
    #[serde(default)]
    pub freeze: bool,
    /// The longest a throttle stays, even if the alert keeps firing.
    #[serde(default = "defaults::throttle_ttl")]
    pub ttl: HumanDuration,
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

/// `[[targets]]`: one watched service.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// The `target` label of its series and alerts.
    pub name: String,
    /// Glob over cgroup2 paths relative to the mount (`*` within a segment, `**` across
    /// segments), e.g. "system.slice/trainer.service". Each matched cgroup is a component.
    /// Exactly one of `cgroup`, `unit`, `pod_uid`, `container_id` selects the target.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// A systemd unit ("trainer.service"): the cgroup systemd names after it, at any depth.
    #[serde(default)]
    pub unit: Option<String>,
    /// A Kubernetes pod UID: its pod cgroup (cgroupfs `pod<uid>` or systemd
    /// `...-pod<uid_with_underscores>.slice`), at any depth.
    #[serde(default)]
    pub pod_uid: Option<String>,
    /// A container id (or a unique prefix of it), as the runtime names its cgroup.
    #[serde(default)]
    pub container_id: Option<String>,
    /// Processes by name (`/proc/<pid>/comm`, up to 15 characters), found by scanning /proc
    /// on every tick; their cgroups are the components. May be combined with `exe`.
    #[serde(default)]
    pub comm: Option<String>,
    /// Processes by executable path (`/proc/<pid>/exe`). May be combined with `comm`.
    #[serde(default)]
    pub exe: Option<String>,
    /// Availability objective; the error budget is 1 minus it.
    #[serde(default = "defaults::availability_objective")]
    pub availability_objective: f64,
    /// A syscall slower than this is "slow" for the latency SLI (rounded to the histogram
    /// bucket bound at or below it).
    #[serde(default = "defaults::latency_threshold")]
    pub latency_threshold: HumanDuration,
    /// Fraction of the latency syscalls that should be faster than the threshold.
    #[serde(default = "defaults::latency_objective")]
    pub latency_objective: f64,
    /// Syscalls the latency SLI is computed over.
    #[serde(default = "defaults::latency_syscalls")]
    pub latency_syscalls: Vec<String>,
    /// TargetCrashLooping fires at this many failures within `crash_loop_window`.
    #[serde(default = "defaults::crash_loop_failures")]
    pub crash_loop_failures: u64,
    #[serde(default = "defaults::crash_loop_window")]
    pub crash_loop_window: HumanDuration,
}

impl TargetConfig {
    /// The cgroup globs that select this target.
    pub fn patterns(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(self.cgroup.clone());
        out.extend(self.unit.as_ref().map(|u| format!("**/{u}")));
        if let Some(uid) = &self.pod_uid {
            out.push(format!("**/*pod{uid}"));
            out.push(format!("**/*pod{}.slice", uid.replace('-', "_")));
        }
        out.extend(self.container_id.as_ref().map(|id| format!("**/*{id}*")));
        out
    }

    /// How the target is selected, for messages.
    pub fn selector(&self) -> String {
        let mut parts = self.patterns();
        parts.extend(self.comm.as_ref().map(|c| format!("comm {c}")));
        parts.extend(self.exe.as_ref().map(|e| format!("exe {e}")));
        parts.join(" or ")
    }
}

mod defaults {
    use super::HumanDuration;

    pub fn zero() -> HumanDuration {
        HumanDuration::from_secs(0)
    }
    pub fn severity() -> String {
        "warning".into()
    }
    pub fn availability_objective() -> f64 {
        0.999
    }
    pub fn latency_threshold() -> HumanDuration {
        HumanDuration::from_millis(100)
    }
    pub fn latency_objective() -> f64 {
        0.99
    }
    pub fn latency_syscalls() -> Vec<String> {
        [
            "read",
            "write",
            "readv",
            "writev",
            "pread64",
            "pwrite64",
            "sendto",
            "recvfrom",
            "sendmsg",
            "recvmsg",
            "sendmmsg",
            "recvmmsg",
            "poll",
            "ppoll",
            "select",
            "pselect6",
            "epoll_wait",
            "epoll_pwait",
            "epoll_pwait2",
        ]
        .map(String::from)
        .to_vec()
    }
    pub fn crash_loop_failures() -> u64 {
        3
    }
    pub fn crash_loop_window() -> HumanDuration {
        HumanDuration::from_secs(600)
    }
    pub fn throttle_ttl() -> HumanDuration {
        HumanDuration::from_secs(1800)
    }
    pub fn restart_when() -> String {
        "TargetDown".into()
    }
    pub fn root_dir() -> std::path::PathBuf {
        "/".into()
    }
}

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

/// `[agent]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Address of the /metrics and /healthz endpoints.
    pub listen: SocketAddr,
    /// How often kernel maps are read into the model.
    pub interval: HumanDuration,
    /// The agent's own state (alert spool); created when first needed.
    pub state_dir: std::path::PathBuf,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9977)),
            interval: HumanDuration::from_secs(1),
            state_dir: "/var/lib/gimbal".into(),
        }
    }
}

/// `[probes.*]`
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProbesConfig {
    pub syscall_latency: SyscallLatencyConfig,
    pub tcp_retransmit: TcpRetransmitConfig,
    pub process_exit: ProcessExitConfig,
}

/// `[probes.syscall_latency]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyscallLatencyConfig {
    pub enabled: bool,
    /// Kernel memory for the per-CPU histograms; the number of (cgroup, syscall) pairs
    /// tracked is this divided by (histogram size x CPU count). Pairs beyond it are counted
    /// in gimbal_events_dropped_total{probe="syscall_latency"}.
    pub map_memory_mb: u32,
}

impl Default for SyscallLatencyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            map_memory_mb: 16,
        }
    }
}

/// `[probes.tcp_retransmit]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpRetransmitConfig {
    pub enabled: bool,
}

impl Default for TcpRetransmitConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// `[probes.process_exit]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessExitConfig {
    pub enabled: bool,
    /// Ring buffer between kernel and agent, in KiB: a power of two, at least the page
    /// size (and 4), at most 65536.
    pub ring_buffer_kb: u32,
}

impl Default for ProcessExitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ring_buffer_kb: 256,
        }
    }
}

/// `[labels]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelsConfig {
    /// Distinct label sets kept per metric; later ones are folded into `other` and counted
    /// in gimbal_series_folded_total.
    pub max_series_per_metric: usize,
}

impl Default for LabelsConfig {
    fn default() -> Self {
        Self {
            max_series_per_metric: 500,
        }
    }
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
