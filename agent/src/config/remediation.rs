//! `[remediation]` and the actions it governs: `[[throttle]]`, `[[restart]]`,
//! `[[supervise]]` and `[[signal]]`.
use serde::Deserialize;

use super::{ByteSize, HumanDuration};

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
    /// Signal only the cgroup each firing alert names in its `cgroup` label (the pod an
    /// XID hit, say), once per alert, and only where `cgroups` matches it: the globs then
    /// say which groups may be hit, not which are.
    #[serde(default)]
    pub cgroup_from_alert: bool,
}

mod defaults {
    use super::HumanDuration;

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
