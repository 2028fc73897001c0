//! `[[targets]]`: the services to watch, how each is selected (cgroup glob, systemd
//! unit, pod, container, comm or exe) and its objectives.
use serde::Deserialize;

use super::HumanDuration;

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
    /// Kubernetes pods by name: a glob (`*`) over pod names, resolved to pod UIDs through
    /// the kubelet's layout (`[kubernetes] log_root`) on every tick. With `namespace`, or
    /// `namespace` alone for every pod of the namespaces it matches.
    #[serde(default)]
    pub pod: Option<String>,
    /// A glob over namespaces, for `pod` (default: any namespace).
    #[serde(default)]
    pub namespace: Option<String>,
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
    /// TargetStalled fires when every process of the target is alive and none has completed
    /// a syscall of `progress_syscalls` for this long (unset: no stall check). Read from
    /// the latency histograms the agent keeps anyway: no extra kernel work.
    #[serde(default)]
    pub stall_for: Option<HumanDuration>,
    /// The syscalls that count as progress for `stall_for` (the write and send families by
    /// default; a job that only checkpoints may be judged by its writes alone).
    #[serde(default = "defaults::progress_syscalls")]
    pub progress_syscalls: Vec<String>,
    /// `[targets.verdict]`: this target's own verdict signals and thresholds.
    #[serde(default)]
    pub verdict: Option<super::SignalsOverride>,
}

impl TargetConfig {
    /// The cgroup globs that select this target.
    pub fn patterns(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(self.cgroup.clone());
        out.extend(self.unit.as_ref().map(|u| format!("**/{u}")));
        if let Some(uid) = &self.pod_uid {
            out.extend(pod_uid_patterns(uid));
        }
        out.extend(self.container_id.as_ref().map(|id| format!("**/*{id}*")));
        out
    }

    /// Whether it selects pods by name (`pod`, `namespace`): its cgroups then follow the
    /// kubelet's layout, not fixed globs.
    pub fn by_pod_name(&self) -> bool {
        self.pod.is_some() || self.namespace.is_some()
    }

    /// How the target is selected, for messages.
    pub fn selector(&self) -> String {
        let mut parts = self.patterns();
        if self.by_pod_name() {
            let glob = |g: &Option<String>| g.clone().unwrap_or_else(|| "*".into());
            parts.push(format!("pod {}/{}", glob(&self.namespace), glob(&self.pod)));
        }
        parts.extend(self.comm.as_ref().map(|c| format!("comm {c}")));
        parts.extend(self.exe.as_ref().map(|e| format!("exe {e}")));
        parts.join(" or ")
    }
}

/// The pod cgroup of pod `uid`, for both kubelet cgroup drivers, at any depth.
pub fn pod_uid_patterns(uid: &str) -> [String; 2] {
    [
        format!("**/*pod{uid}"),
        format!("**/*pod{}.slice", uid.replace('-', "_")),
    ]
}

mod defaults {
    use super::HumanDuration;

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
    pub fn progress_syscalls() -> Vec<String> {
        [
            "write", "writev", "pwrite64", "pwritev", "pwritev2", "sendto", "sendmsg", "sendmmsg",
            "sendfile",
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
}
