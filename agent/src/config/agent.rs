//! `[agent]`, `[probes.*]` and `[labels]`: how the agent itself runs, which probes it
//! loads, and how many series it keeps.
use std::net::SocketAddr;

use serde::Deserialize;

use super::HumanDuration;

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
    /// TLS, client certificates and basic auth for `listen`, in the exporter-toolkit's web
    /// config format (docs/web-config.md); re-read when it changes. None: plain HTTP.
    pub web_config: Option<std::path::PathBuf>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9977)),
            interval: HumanDuration::from_secs(1),
            state_dir: "/var/lib/gimbal".into(),
            web_config: None,
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
    /// Syscalls timed into latency histograms in every cgroup ("*": all of them), on top
    /// of each target's `latency_syscalls` in its own cgroups. Every syscall is counted
    /// either way; timing costs a clock read at each end and a program on every context
    /// switch (docs/metrics.md has the measurements).
    pub timed_syscalls: Vec<String>,
    /// Time one timed syscall in this many, picked at random; the others are only
    /// counted (docs/metrics.md, "Sampling"). 1: every one.
    pub sample_one_in: u32,
    /// Count the busiest (cgroup, syscall) pairs in a per-CPU array shared with the kernel
    /// instead of its hash (docs/metrics.md, "What is timed"). Read at start.
    pub count_slots: bool,
    /// Where the syscall programs run (docs/metrics.md, "Where syscalls are hooked").
    /// Read at start.
    pub hook: SyscallHookChoice,
}

/// `[probes.syscall_latency] hook`. The tracepoints by default: the dispatcher showed no
/// saving where it could be measured (BENCHMARKS.md, "Where syscalls are hooked").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyscallHookChoice {
    /// The kernel's syscall dispatchers where fentry/fexit on them attaches, else the
    /// tracepoints.
    Auto,
    /// The dispatchers or nothing: the probe fails on a kernel that refuses them.
    Dispatcher,
    /// The `raw_syscalls` tracepoints, as on every kernel before the dispatchers.
    Tracepoints,
}

impl SyscallLatencyConfig {
    /// Whether `timed_syscalls` asks for every syscall.
    pub fn times_all(&self) -> bool {
        self.timed_syscalls.iter().any(|s| s == "*")
    }
}

impl Default for SyscallLatencyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            map_memory_mb: 16,
            timed_syscalls: Vec::new(),
            sample_one_in: 1,
            count_slots: true,
            hook: SyscallHookChoice::Tracepoints,
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
    /// The agent's budget in series, shared by every metric's label sets at their price in
    /// series (a latency histogram's classic buckets + `_sum` + `_count`, a counter's 1);
    /// later label sets are folded into `other` and counted in gimbal_series_folded_total.
    pub max_series: usize,
    /// Distinct label sets kept per metric, under `max_series`.
    pub max_series_per_metric: usize,
    /// The `le` bounds of the classic latency histograms: kernel bucket bounds, or "full".
    pub classic_buckets: super::ClassicBuckets,
}

impl LabelsConfig {
    /// Series one latency histogram label set exports: its classic buckets, +Inf, `_sum`
    /// and `_count`.
    pub fn histogram_series(&self) -> usize {
        self.classic_buckets.indices().len() + 3
    }
}

impl Default for LabelsConfig {
    fn default() -> Self {
        Self {
            max_series: 4_000,
            max_series_per_metric: 500,
            classic_buckets: super::ClassicBuckets::default(),
        }
    }
}
