//! The metric contract in one table: every family the agent exports, in exposition order,
//! with its type, HELP text, unit, label names and how its rows are read. `/metrics`
//! encodes from it and user rules resolve names against it, so the two cannot drift.
use std::collections::BTreeMap;

use crate::{
    identity,
    model::{HistTotals, Labels},
    probes::ProbeStatus,
    snapshot::Snapshot,
    targets::watch::TargetStatus,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One row's number.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Counter(u64),
    /// A counter of a continuous quantity (seconds).
    FloatCounter(f64),
    Gauge(f64),
    /// A gauge that is a whole number by nature (a flag, a count), written as one (`1`,
    /// not `1.0`), as these always were.
    WholeGauge(i64),
    Histogram(&'a HistTotals),
}

/// What the exposition holds beside the snapshot, copied per scrape: the agent's own
/// info and Alertmanager delivery. Rules cannot see these.
pub struct AgentView<'a> {
    pub version: &'a str,
    pub kernel: &'a str,
    pub probes: &'a [ProbeStatus],
    pub deliveries: &'a [Delivery],
    pub batches_dropped: u64,
    /// HTTP requests and connections refused, by reason.
    pub http_refused: &'a [(&'static str, u64)],
}

/// One Alertmanager's delivery counters.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub endpoint: String,
    pub sent: u64,
    pub failed: u64,
    pub dropped: u64,
    pub queued: u64,
    pub last_latency_seconds: f64,
}

/// Receives each row: label values in the order of [`Metric::labels`], and the number.
pub type Sink<'s> = dyn FnMut(&[&str], Value<'_>) + 's;

#[derive(Clone, Copy)]
pub enum Rows {
    Snapshot(fn(&Snapshot, &mut Sink)),
    /// Read from what the exposition holds beside the snapshot.
    Agent(fn(&AgentView, &mut Sink)),
}

pub struct Metric {
    /// The family name, without the unit and `_total` suffixes the encoder adds.
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    /// Whether the unit is seconds (`_seconds` and a UNIT line); the only unit used.
    pub seconds: bool,
    pub labels: &'static [&'static str],
    /// Whether user rules may refer to it (docs/metrics.md lists those).
    pub rules: bool,
    pub rows: Rows,
}

impl Metric {
    /// The name with its unit suffix, as scraped (before `_total`, `_count`, `_sum`).
    pub fn exposed_name(&self) -> String {
        if self.seconds {
            format!("{}_seconds", self.name)
        } else {
            self.name.to_string()
        }
    }
}

const fn metric(
    name: &'static str,
    kind: Kind,
    help: &'static str,
    labels: &'static [&'static str],
    rules: bool,
    rows: Rows,
) -> Metric {
    Metric {
        name,
        kind,
        help,
        seconds: false,
        labels,
        rules,
        rows,
    }
}

const TARGET: &[&str] = &["target"];
/// The labels of a GPU NVML reads: the bus id (as XID records give it), index, UUID.
const GPU: &[&str] = &["gpu", "index", "uuid"];
const MIG: &[&str] = &["gpu", "index", "uuid", "mig_index"];
const TARGET_WINDOW: &[&str] = &["target", "window"];

pub const METRICS: &[Metric] = &[
    Metric {
        name: "gimbal_syscall_latency",
        kind: Kind::Histogram,
        help: "Syscall latency from raw_syscalls:sys_enter to sys_exit, per syscall and cgroup, for the syscalls timed (targets' latency_syscalls in their cgroups, [probes.syscall_latency] timed_syscalls everywhere)",
        seconds: true,
        labels: &["syscall", "cgroup", "namespace", "pod", "container"],
        rules: true,
        rows: Rows::Snapshot(|s, sink| {
            by_cgroup(s, &s.kernel.syscall_latency.series, 1, sink, Value::Histogram)
        }),
    },
    metric(
        "gimbal_syscalls",
        Kind::Counter,
        "Syscalls completed (seen at raw_syscalls:sys_exit), timed or not, per syscall and cgroup",
        &["syscall", "cgroup", "namespace", "pod", "container"],
        true,
        Rows::Snapshot(|s, sink| cgroup_counters(s, &s.kernel.syscalls.series, 1, sink)),
    ),
    metric(
        "gimbal_syscall_errors",
        Kind::Counter,
        "Syscalls that returned an error, per errno",
        &["syscall", "cgroup", "errno", "namespace", "pod", "container"],
        true,
        Rows::Snapshot(|s, sink| cgroup_counters(s, &s.kernel.syscall_errors.series, 1, sink)),
    ),
    metric(
        "gimbal_tcp_retransmits",
        Kind::Counter,
        "TCP segments retransmitted (tcp:tcp_retransmit_skb), per owning cgroup and remote end",
        &["cgroup", "remote", "family", "namespace", "pod", "container"],
        true,
        Rows::Snapshot(|s, sink| cgroup_counters(s, &s.kernel.tcp_retransmits.series, 0, sink)),
    ),
    metric(
        "gimbal_process_exits",
        Kind::Counter,
        "Whole-process exits by reason and exit code or signal",
        &["cgroup", "comm", "reason", "code", "namespace", "pod", "container"],
        true,
        Rows::Snapshot(|s, sink| cgroup_counters(s, &s.kernel.process_exits.series, 0, sink)),
    ),
    metric(
        "gimbal_probe_attached",
        Kind::Gauge,
        "1 if the probe is attached to the kernel, 0 if disabled or failed",
        &["probe"],
        false,
        Rows::Agent(|a, sink| {
            for s in a.probes {
                sink(&[s.probe.name()], Value::WholeGauge(s.attached().into()));
            }
        }),
    ),
    metric(
        "gimbal_syscall_hook_info",
        Kind::Gauge,
        "Always 1: where the syscall programs run, tracepoints (raw_syscalls) or dispatcher (fentry/fexit on the kernel's syscall dispatchers; [probes.syscall_latency] hook)",
        &["hook"],
        false,
        Rows::Agent(|a, sink| {
            for hook in a.probes.iter().filter_map(|s| s.hook) {
                sink(&[hook], Value::WholeGauge(1));
            }
        }),
    ),
    metric(
        "gimbal_events_dropped",
        Kind::Counter,
        "Events the kernel side could not record (full map or ring buffer)",
        &["probe"],
        true,
        Rows::Snapshot(|s, sink| {
            for (probe, n) in s.kernel.drops_per_probe() {
                sink(&[probe], Value::Counter(n));
            }
        }),
    ),
    metric(
        "gimbal_bpf_program_runs",
        Kind::Counter,
        "Runs of each of the agent's kernel programs, as the kernel counts them while kernel.bpf_stats_enabled is 1",
        &["program"],
        false,
        Rows::Snapshot(|s, sink| {
            for (program, r) in &s.kernel.programs {
                sink(&[program], Value::Counter(r.runs));
            }
        }),
    ),
    Metric {
        name: "gimbal_bpf_program_run",
        kind: Kind::Counter,
        help: "Time spent in each of the agent's kernel programs, as the kernel counts it while kernel.bpf_stats_enabled is 1",
        seconds: true,
        labels: &["program"],
        rules: false,
        rows: Rows::Snapshot(|s, sink| {
            for (program, r) in &s.kernel.programs {
                sink(&[program], Value::FloatCounter(r.run_ns as f64 / 1e9));
            }
        }),
    },
    metric(
        "gimbal_series_folded",
        Kind::Counter,
        "Distinct label sets folded into `other` by the series budget",
        &["metric"],
        false,
        Rows::Snapshot(|s, sink| {
            let k = &s.kernel;
            for (metric, n) in [
                ("gimbal_syscall_latency_seconds", k.syscall_latency.folded()),
                ("gimbal_syscalls_total", k.syscalls.folded()),
                ("gimbal_syscall_errors_total", k.syscall_errors.folded()),
                ("gimbal_tcp_retransmits_total", k.tcp_retransmits.folded()),
                ("gimbal_process_exits_total", k.process_exits.folded()),
                ("gimbal_gpu_xid_errors_total", s.gpu.xid_errors.folded()),
                ("gimbal_gpu_xid_errors_by_cgroup_total", s.gpu.xid_by_cgroup.folded()),
                ("gimbal_training_job_rank_exits_total", s.jobs.rank_exits.folded()),
            ] {
                sink(&[metric], Value::Counter(n));
            }
        }),
    ),
    metric(
        "gimbal_series_budget_used",
        Kind::Gauge,
        "Series held of the agent's budget ([labels] max_series): label sets of their own and folded ones that keep a syscall, errno or XID",
        &[],
        false,
        Rows::Snapshot(|s, sink| sink(&[], Value::WholeGauge(s.kernel.pool.used() as i64))),
    ),
    metric(
        "gimbal_syscall_latency_sampled_ratio",
        Kind::Gauge,
        "Share of the timed syscalls that go into gimbal_syscall_latency_seconds (1 / [probes.syscall_latency] sample_one_in): the histograms are a random sample of this size, gimbal_syscalls_total counts them all",
        &[],
        false,
        Rows::Snapshot(|s, sink| {
            let n = s.kernel.latency_sample_one_in.max(1);
            sink(&[], Value::Gauge(1.0 / f64::from(n)))
        }),
    ),
    metric(
        "gimbal_syscall_count_slots_used",
        Kind::Gauge,
        "Busy (cgroup, syscall) pairs the kernel counts in a per-CPU array slot instead of its hash, of 1024",
        &[],
        false,
        Rows::Snapshot(|s, sink| {
            sink(&[], Value::WholeGauge(s.kernel.count_slots_used as i64))
        }),
    ),
    metric(
        "gimbal_build_info",
        Kind::Gauge,
        "Agent version and kernel release (always 1)",
        &["version", "kernel"],
        false,
        Rows::Agent(|a, sink| sink(&[a.version, a.kernel], Value::WholeGauge(1))),
    ),
    metric(
        "gimbal_target_up",
        Kind::Gauge,
        "1 if the watched target has at least one live process",
        TARGET,
        true,
        Rows::Snapshot(|s, sink| per_target(s, sink, |t| Some(f64::from(u8::from(t.up))))),
    ),
    metric(
        "gimbal_target_availability_ratio",
        Kind::Gauge,
        "A = T_up / T_total over the window (time the agent was not running is not counted)",
        TARGET_WINDOW,
        true,
        Rows::Snapshot(|s, sink| by_window(s, sink, |t| t.availability.clone())),
    ),
    metric(
        "gimbal_target_reliability_ratio",
        Kind::Gauge,
        "R = product of (1 - p_i) over the target's components (matched cgroups), p_i = 1 - A_i",
        TARGET_WINDOW,
        true,
        Rows::Snapshot(|s, sink| by_window(s, sink, |t| t.reliability.clone())),
    ),
    metric(
        "gimbal_target_latency_sli_ratio",
        Kind::Gauge,
        "Fraction of the target's latency syscalls at or under its threshold, over the window",
        TARGET_WINDOW,
        true,
        Rows::Snapshot(|s, sink| by_window(s, sink, |t| latency(t, |(sli, _)| sli))),
    ),
    metric(
        "gimbal_target_performance",
        Kind::Gauge,
        "P = 1 / mean latency of the target's latency syscalls over the window, in 1/s",
        TARGET_WINDOW,
        true,
        Rows::Snapshot(|s, sink| by_window(s, sink, |t| latency(t, |(_, p)| p))),
    ),
    metric(
        "gimbal_target_mttr_seconds",
        Kind::Gauge,
        "Mean time from down to up over the failures of the last 30 days",
        TARGET,
        true,
        Rows::Snapshot(|s, sink| per_target(s, sink, |t| t.mttr.map(|d| d.as_secs_f64()))),
    ),
    metric(
        "gimbal_target_failures",
        Kind::Counter,
        "Times the target went down (no live process left)",
        TARGET,
        true,
        Rows::Snapshot(|s, sink| {
            for t in &s.targets {
                sink(&[&t.config.name], Value::Counter(t.failures_total));
            }
        }),
    ),
    metric(
        "gimbal_target_read_failures",
        Kind::Counter,
        "Reads of the target's processes that failed (not for a process or cgroup being gone); each left its state unknown, not down",
        TARGET,
        false,
        Rows::Snapshot(|s, sink| {
            for t in &s.targets {
                sink(&[&t.config.name], Value::Counter(t.read_failures_total));
            }
        }),
    ),
    metric(
        "gimbal_target_stalled",
        Kind::Gauge,
        "1 if every process of the target is alive and none completed a progress syscall for its stall_for (targets with stall_for)",
        TARGET,
        true,
        Rows::Snapshot(|s, sink| {
            for t in &s.targets {
                if let Some(stall) = &t.stall {
                    sink(&[&t.config.name], Value::WholeGauge(i64::from(stall.stalled)));
                }
            }
        }),
    ),
    Metric {
        name: "gimbal_target_quiet",
        kind: Kind::Gauge,
        help: "Time since any process of the target last completed a progress syscall, or since its processes last changed (targets with stall_for)",
        seconds: true,
        labels: TARGET,
        rules: true,
        rows: Rows::Snapshot(|s, sink| {
            per_target(s, sink, |t| t.stall.map(|st| st.quiet.as_secs_f64()))
        }),
    },
    metric(
        "gimbal_alerts",
        Kind::Gauge,
        "Active alerts by name and state (pending, firing)",
        &["alertname", "state"],
        false,
        Rows::Snapshot(|s, sink| {
            for ((name, state), n) in &s.alerts {
                sink(&[name, state], Value::Gauge(*n as f64));
            }
        }),
    ),
    metric(
        "gimbal_config_reloads",
        Kind::Counter,
        "SIGHUP reloads of the config file: accepted, or rejected (the running config stays)",
        &["result"],
        false,
        Rows::Snapshot(|s, sink| {
            sink(&["accepted"], Value::Counter(s.reloads.accepted));
            sink(&["rejected"], Value::Counter(s.reloads.rejected));
        }),
    ),
    metric(
        "gimbal_remediations",
        Kind::Counter,
        "Remediation actions by action and result (dry_run: decided, not carried out)",
        &["action", "result"],
        false,
        Rows::Snapshot(|s, sink| {
            for ((action, result), n) in &s.remediations.counts {
                sink(&[action.name(), result.name()], Value::Counter(*n));
            }
        }),
    ),
    metric(
        "gimbal_alertmanager_notifications",
        Kind::Counter,
        "Alert notifications per Alertmanager: sent, failed (attempts), dropped (spool full)",
        &["endpoint", "result"],
        false,
        Rows::Agent(|a, sink| {
            for d in a.deliveries {
                for (result, n) in [("sent", d.sent), ("failed", d.failed), ("dropped", d.dropped)] {
                    sink(&[&d.endpoint, result], Value::Counter(n));
                }
            }
        }),
    ),
    metric(
        "gimbal_alertmanager_queue_length",
        Kind::Gauge,
        "Notification batches waiting in each Alertmanager's on-disk spool",
        &["endpoint"],
        false,
        Rows::Agent(|a, sink| {
            for d in a.deliveries {
                sink(&[&d.endpoint], Value::WholeGauge(d.queued as i64));
            }
        }),
    ),
    Metric {
        name: "gimbal_alertmanager_latency",
        kind: Kind::Gauge,
        help: "Duration of the last successful delivery to each Alertmanager",
        seconds: true,
        labels: &["endpoint"],
        rules: false,
        rows: Rows::Agent(|a, sink| {
            for d in a.deliveries {
                sink(&[&d.endpoint], Value::Gauge(d.last_latency_seconds));
            }
        }),
    },
    metric(
        "gimbal_alert_batches_dropped",
        Kind::Counter,
        "Alert batches dropped because the delivery queue was full",
        &[],
        false,
        Rows::Agent(|a, sink| sink(&[], Value::Counter(a.batches_dropped))),
    ),
    metric(
        "gimbal_http_requests_refused",
        Kind::Counter,
        "Requests and connections the HTTP endpoint refused under its web config, by reason: unauthorized (basic auth), no_client_cert, tls_handshake",
        &["reason"],
        false,
        Rows::Agent(|a, sink| {
            for &(reason, n) in a.http_refused {
                sink(&[reason], Value::Counter(n));
            }
        }),
    ),
    metric(
        "gimbal_gpu_xid_errors",
        Kind::Counter,
        "NVIDIA XID records in the kernel log (NVRM: Xid), per GPU (PCI bus id), XID and the catalog's action",
        &["gpu", "xid", "action"],
        true,
        Rows::Snapshot(|s, sink| counters(&s.gpu.xid_errors.series, sink)),
    ),
    metric(
        "gimbal_gpu_xid_errors_by_cgroup",
        Kind::Counter,
        "NVIDIA XID records per cgroup of the process the record names (unknown: none named, or gone before it was read)",
        &["cgroup", "xid", "action", "namespace", "pod", "container"],
        true,
        Rows::Snapshot(|s, sink| cgroup_counters(s, &s.gpu.xid_by_cgroup.series, 0, sink)),
    ),
    metric(
        "gimbal_gpu_kmsg_records_dropped",
        Kind::Counter,
        "Kernel log records overwritten before the agent read them (EPIPE on /dev/kmsg); XIDs among them are lost",
        &[],
        true,
        Rows::Snapshot(|s, sink| sink(&[], Value::Counter(s.gpu.kmsg_dropped))),
    ),
    metric(
        "gimbal_gpu_kmsg_records_malformed",
        Kind::Counter,
        "Kernel log records that did not parse as /dev/kmsg records",
        &[],
        false,
        Rows::Snapshot(|s, sink| sink(&[], Value::Counter(s.gpu.kmsg_malformed))),
    ),
    metric(
        "gimbal_gpu_source_attached",
        Kind::Gauge,
        "1 if the GPU source (kmsg: the kernel log; nvml: NVIDIA's library) is read, 0 if disabled or failed (the reason is in the log)",
        &["source"],
        true,
        Rows::Snapshot(|s, sink| {
            for (source, attached) in &s.gpu.attached {
                sink(&[source], Value::WholeGauge(i64::from(*attached)));
            }
        }),
    ),
    metric(
        "gimbal_gpu_info",
        Kind::Gauge,
        "Always 1 per GPU NVML reads: its PCI bus id, index, UUID, product name and MIG mode",
        &["gpu", "index", "uuid", "name", "mig"],
        true,
        Rows::Snapshot(|s, sink| {
            for d in &s.gpu.devices {
                let index = d.index.to_string();
                sink(&[&d.gpu, &index, &d.uuid, &d.name, d.mig], Value::WholeGauge(1));
            }
        }),
    ),
    metric(
        "gimbal_gpu_temperature_celsius",
        Kind::Gauge,
        "GPU die temperature (nvmlDeviceGetTemperature)",
        GPU,
        true,
        Rows::Snapshot(|s, sink| per_gpu(s, sink, |d| gauge(d.temperature_celsius))),
    ),
    metric(
        "gimbal_gpu_power_watts",
        Kind::Gauge,
        "GPU power draw (nvmlDeviceGetPowerUsage)",
        GPU,
        true,
        Rows::Snapshot(|s, sink| per_gpu(s, sink, |d| gauge(d.power_watts))),
    ),
    metric(
        "gimbal_gpu_power_limit_watts",
        Kind::Gauge,
        "The power limit the driver enforces on the GPU (nvmlDeviceGetEnforcedPowerLimit)",
        GPU,
        true,
        Rows::Snapshot(|s, sink| per_gpu(s, sink, |d| gauge(d.power_limit_watts))),
    ),
    metric(
        "gimbal_gpu_utilization_ratio",
        Kind::Gauge,
        "Fraction of the last sample period a kernel ran on the GPU (nvmlDeviceGetUtilizationRates gpu)",
        GPU,
        true,
        Rows::Snapshot(|s, sink| per_gpu(s, sink, |d| gauge(d.utilization))),
    ),
    metric(
        "gimbal_gpu_memory_utilization_ratio",
        Kind::Gauge,
        "Fraction of the last sample period device memory was read or written (nvmlDeviceGetUtilizationRates memory)",
        GPU,
        true,
        Rows::Snapshot(|s, sink| per_gpu(s, sink, |d| gauge(d.memory_utilization))),
    ),
    metric(
        "gimbal_gpu_memory_used_bytes",
        Kind::Gauge,
        "Device memory in use (nvmlDeviceGetMemoryInfo used)",
        GPU,
        true,
        Rows::Snapshot(|s, sink| per_gpu(s, sink, |d| whole(d.memory_used_bytes))),
    ),
    metric(
        "gimbal_gpu_memory_total_bytes",
        Kind::Gauge,
        "Device memory in all (nvmlDeviceGetMemoryInfo total)",
        GPU,
        true,
        Rows::Snapshot(|s, sink| per_gpu(s, sink, |d| whole(d.memory_total_bytes))),
    ),
    metric(
        "gimbal_gpu_ecc_enabled",
        Kind::Gauge,
        "1 if ECC is on now (nvmlDeviceGetEccMode current)",
        GPU,
        true,
        Rows::Snapshot(|s, sink| per_gpu(s, sink, |d| flag(d.ecc_enabled))),
    ),
    metric(
        "gimbal_gpu_ecc_errors",
        Kind::Counter,
        "ECC errors by error (corrected, uncorrected) and counter (volatile: since the driver loaded; aggregate: the GPU's life) (nvmlDeviceGetTotalEccErrors)",
        &["gpu", "index", "uuid", "error", "counter"],
        true,
        Rows::Snapshot(|s, sink| {
            for d in &s.gpu.devices {
                let index = d.index.to_string();
                for (error, counter, n) in &d.ecc_errors {
                    sink(&[&d.gpu, &index, &d.uuid, error, counter], Value::Counter(*n));
                }
            }
        }),
    ),
    metric(
        "gimbal_gpu_retired_pages",
        Kind::Gauge,
        "Memory pages retired, by cause (single_bit: multiple single-bit errors; double_bit) (nvmlDeviceGetRetiredPages)",
        &["gpu", "index", "uuid", "cause"],
        true,
        Rows::Snapshot(|s, sink| {
            for d in &s.gpu.devices {
                let index = d.index.to_string();
                for (cause, n) in &d.retired_pages {
                    sink(&[&d.gpu, &index, &d.uuid, cause], whole(Some(*n)).expect("some"));
                }
            }
        }),
    ),
    metric(
        "gimbal_gpu_retired_pages_pending",
        Kind::Gauge,
        "1 if a page retirement waits for the next driver reload (nvmlDeviceGetRetiredPagesPendingStatus)",
        GPU,
        true,
        Rows::Snapshot(|s, sink| per_gpu(s, sink, |d| flag(d.retired_pages_pending))),
    ),
    metric(
        "gimbal_gpu_remapped_rows",
        Kind::Gauge,
        "Memory rows remapped, by the error that caused it (correctable, uncorrectable) (NVML fields 142, 143)",
        &["gpu", "index", "uuid", "error"],
        true,
        Rows::Snapshot(|s, sink| {
            for d in &s.gpu.devices {
                let index = d.index.to_string();
                let r = &d.remapped_rows;
                for (error, n) in [("correctable", r.correctable), ("uncorrectable", r.uncorrectable)] {
                    if let Some(n) = n {
                        sink(&[&d.gpu, &index, &d.uuid, error], whole(Some(n)).expect("some"));
                    }
                }
            }
        }),
    ),
    metric(
        "gimbal_gpu_remapped_rows_pending",
        Kind::Gauge,
        "1 if a row remap waits for a GPU reset (NVML field 144)",
        GPU,
        true,
        Rows::Snapshot(|s, sink| per_gpu(s, sink, |d| flag(d.remapped_rows.pending))),
    ),
    metric(
        "gimbal_gpu_row_remap_failed",
        Kind::Gauge,
        "1 if a row remap failed: the GPU needs service (NVML field 145)",
        GPU,
        true,
        Rows::Snapshot(|s, sink| per_gpu(s, sink, |d| flag(d.remapped_rows.failed))),
    ),
    metric(
        "gimbal_gpu_pcie_replays",
        Kind::Counter,
        "PCIe replays since the driver loaded (nvmlDeviceGetPcieReplayCounter)",
        GPU,
        true,
        Rows::Snapshot(|s, sink| {
            for d in &s.gpu.devices {
                if let Some(n) = d.pcie_replays {
                    sink(&[&d.gpu, &d.index.to_string(), &d.uuid], Value::Counter(n));
                }
            }
        }),
    ),
    metric(
        "gimbal_gpu_nvlink_errors",
        Kind::Counter,
        "NVLink data-link errors per active link and counter (replay, recovery, crc_flit, crc_data) (nvmlDeviceGetNvLinkErrorCounter)",
        &["gpu", "index", "uuid", "link", "error"],
        true,
        Rows::Snapshot(|s, sink| {
            for d in &s.gpu.devices {
                let index = d.index.to_string();
                for (link, error, n) in &d.nvlink_errors {
                    sink(&[&d.gpu, &index, &d.uuid, &link.to_string(), error], Value::Counter(*n));
                }
            }
        }),
    ),
    metric(
        "gimbal_gpu_throttle_reason",
        Kind::Gauge,
        "1 for each clock throttle reason active now, 0 for the others (nvmlDeviceGetCurrentClocksThrottleReasons)",
        &["gpu", "index", "uuid", "reason"],
        true,
        Rows::Snapshot(|s, sink| {
            for d in s.gpu.devices.iter().filter(|d| d.throttle_read) {
                let index = d.index.to_string();
                for (_, reason) in crate::gpu::readings::THROTTLE_REASONS {
                    let on = d.throttle_reasons.contains(&reason);
                    sink(&[&d.gpu, &index, &d.uuid, reason], Value::WholeGauge(i64::from(on)));
                }
            }
        }),
    ),
    metric(
        "gimbal_gpu_recovery_action",
        Kind::Gauge,
        "1 for the recovery action the driver asks for now (none, gpu_reset, node_reboot, drain_p2p, drain_and_reset) (NVML field 230)",
        &["gpu", "index", "uuid", "action"],
        true,
        Rows::Snapshot(|s, sink| {
            for d in &s.gpu.devices {
                if let Some(action) = &d.recovery_action {
                    sink(&[&d.gpu, &d.index.to_string(), &d.uuid, action], Value::WholeGauge(1));
                }
            }
        }),
    ),
    metric(
        "gimbal_gpu_cgroup_processes",
        Kind::Gauge,
        "Compute processes on the GPU per cgroup (pod) they run in: which cgroups hold each GPU (nvmlDeviceGetComputeRunningProcesses, /proc/<pid>/cgroup)",
        &["gpu", "index", "uuid", "cgroup", "namespace", "pod", "container"],
        true,
        Rows::Snapshot(|s, sink| {
            for d in &s.gpu.devices {
                let index = d.index.to_string();
                for h in &d.holders {
                    let id = s.pods.resolve(&h.cgroup);
                    let [ns, pod, container] = id.values();
                    let row = [&*d.gpu, &index, &d.uuid, &h.cgroup, ns, pod, container];
                    sink(&row, Value::WholeGauge(h.processes as i64));
                }
            }
        }),
    ),
    metric(
        "gimbal_gpu_cgroup_memory_used_bytes",
        Kind::Gauge,
        "GPU memory used by the cgroup's processes on the GPU, where the driver reports it for each (nvmlDeviceGetComputeRunningProcesses)",
        &["gpu", "index", "uuid", "cgroup", "namespace", "pod", "container"],
        true,
        Rows::Snapshot(|s, sink| {
            for d in &s.gpu.devices {
                let index = d.index.to_string();
                for h in &d.holders {
                    if let Some(b) = h.memory_bytes {
                        let id = s.pods.resolve(&h.cgroup);
                        let [ns, pod, container] = id.values();
                        let row = [&*d.gpu, &index, &d.uuid, &h.cgroup, ns, pod, container];
                        sink(&row, whole(Some(b)).expect("some"));
                    }
                }
            }
        }),
    ),
    metric(
        "gimbal_gpu_mig_instance_info",
        Kind::Gauge,
        "Always 1 per MIG instance of a GPU with MIG enabled: its index on the GPU and its UUID (nvmlDeviceGetMigDeviceHandleByIndex, nvmlDeviceGetUUID)",
        &["gpu", "index", "uuid", "mig_index", "mig_uuid"],
        true,
        Rows::Snapshot(|s, sink| {
            for d in &s.gpu.devices {
                let index = d.index.to_string();
                for m in &d.mig_instances {
                    let mig = m.index.to_string();
                    sink(
                        &[&d.gpu, &index, &d.uuid, &mig, &m.uuid],
                        Value::WholeGauge(1),
                    );
                }
            }
        }),
    ),
    metric(
        "gimbal_gpu_mig_memory_used_bytes",
        Kind::Gauge,
        "Device memory in use in the MIG instance (nvmlDeviceGetMemoryInfo on its handle)",
        MIG,
        true,
        Rows::Snapshot(|s, sink| per_mig(s, sink, |m| whole(m.memory_used_bytes))),
    ),
    metric(
        "gimbal_gpu_mig_memory_total_bytes",
        Kind::Gauge,
        "Device memory of the MIG instance (nvmlDeviceGetMemoryInfo on its handle)",
        MIG,
        true,
        Rows::Snapshot(|s, sink| per_mig(s, sink, |m| whole(m.memory_total_bytes))),
    ),
    metric(
        "gimbal_gpu_mig_cgroup_processes",
        Kind::Gauge,
        "Compute processes in the MIG instance per cgroup (pod) they run in: which pod holds which slice (nvmlDeviceGetComputeRunningProcesses on its handle, /proc/<pid>/cgroup)",
        &["gpu", "index", "uuid", "mig_index", "cgroup", "namespace", "pod", "container"],
        true,
        Rows::Snapshot(|s, sink| {
            for d in &s.gpu.devices {
                let index = d.index.to_string();
                for m in &d.mig_instances {
                    let mig = m.index.to_string();
                    for h in &m.holders {
                        let id = s.pods.resolve(&h.cgroup);
                        let [ns, pod, container] = id.values();
                        let row = [&*d.gpu, &index, &d.uuid, &mig, &h.cgroup, ns, pod, container];
                        sink(&row, Value::WholeGauge(h.processes as i64));
                    }
                }
            }
        }),
    ),
    metric(
        "gimbal_gpu_nvml_xid_events",
        Kind::Counter,
        "XID events NVML delivered (nvmlEventTypeXidCriticalError), per GPU and XID; the kernel log's records are counted apart",
        &["gpu", "xid"],
        true,
        Rows::Snapshot(|s, sink| {
            for ((gpu, xid), n) in &s.gpu.nvml_events.xids {
                sink(&[gpu, &xid.to_string()], Value::Counter(*n));
            }
        }),
    ),
    metric(
        "gimbal_gpu_nvml_ecc_events",
        Kind::Counter,
        "ECC events NVML delivered, per GPU and error (single_bit, double_bit)",
        &["gpu", "error"],
        true,
        Rows::Snapshot(|s, sink| {
            for ((gpu, error), n) in &s.gpu.nvml_events.ecc {
                sink(&[gpu, error], Value::Counter(*n));
            }
        }),
    ),
    metric(
        "gimbal_pod_identities",
        Kind::Gauge,
        "Kubernetes pods named by the kubelet's log layout ([kubernetes] log_root) as last read",
        &[],
        false,
        Rows::Snapshot(|s, sink| sink(&[], Value::WholeGauge(s.pods.pods() as i64))),
    ),
    metric(
        "gimbal_pod_identity_entries_skipped",
        Kind::Gauge,
        "Entries of the kubelet's log layout skipped in its last read: not the kubelet's shape, names Kubernetes would not allow, or past the bound",
        &[],
        false,
        Rows::Snapshot(|s, sink| sink(&[], Value::WholeGauge(s.pods.skipped as i64))),
    ),
    metric(
        "gimbal_verdict",
        Kind::Gauge,
        "The load-balancing verdict per target (an empty target for the node): 1 for the current state (up, degraded, drain, down), 0 for the others",
        &["target", "state"],
        true,
        Rows::Snapshot(|s, sink| {
            let v = &s.verdicts;
            let node = v.node.iter().map(|n| ("", n));
            for (target, verdict) in node.chain(v.targets.iter().map(|(t, v)| (t.as_str(), v))) {
                for state in crate::verdict::State::ALL {
                    sink(&[target, state.name()], Value::WholeGauge(i64::from(verdict.state == state)));
                }
            }
        }),
    ),
    metric(
        "gimbal_verdict_weight",
        Kind::Gauge,
        "The load-balancing weight per target (an empty target for the node), in percent of full load: 100 up, 1-99 degraded, 0 drain or down",
        TARGET,
        true,
        Rows::Snapshot(|s, sink| {
            let v = &s.verdicts;
            let node = v.node.iter().map(|n| ("", n));
            for (target, verdict) in node.chain(v.targets.iter().map(|(t, v)| (t.as_str(), v))) {
                sink(&[target], Value::WholeGauge(i64::from(verdict.weight)));
            }
        }),
    ),
    metric(
        "gimbal_node_load_score",
        Kind::Gauge,
        "How loaded the node is, in [0, 1], for the descheduler: the worst of the node draining (1), the host's CPU pressure (some avg10 / 100) and the mean weight the watched targets shed",
        &["node"],
        true,
        Rows::Snapshot(|s, sink| {
            if let Some(load) = &s.verdicts.load {
                sink(&[&load.node], Value::Gauge(load.score));
            }
        }),
    ),
    metric(
        "gimbal_cluster_writes",
        Kind::Counter,
        "Writes to the Kubernetes API about this node ([cluster]) by kind (condition, taint, untaint) and outcome (written, dry_run, circuit_open, conflict, failed)",
        &["kind", "outcome"],
        true,
        Rows::Snapshot(|s, sink| {
            for ((kind, outcome), n) in &s.cluster.0 {
                sink(&[kind.name(), outcome.name()], Value::Counter(*n));
            }
        }),
    ),
    metric(
        "gimbal_verdict_changes",
        Kind::Counter,
        "Changes of the load-balancing verdict (state or weight) per target (an empty target for the node), each logged with its reason",
        TARGET,
        true,
        Rows::Snapshot(|s, sink| {
            for (target, n) in &s.verdicts.changes {
                sink(&[target], Value::Counter(*n));
            }
        }),
    ),
    metric(
        "gimbal_training_job_ranks_alive",
        Kind::Gauge,
        "Live ranks of the training job on this node (processes of watched targets launched with a rank by torchrun or Slurm)",
        TRAINING_JOB,
        true,
        Rows::Snapshot(|s, sink| {
            for (job, j) in &s.jobs.jobs {
                sink(&[job], Value::WholeGauge(j.alive() as i64));
            }
        }),
    ),
    metric(
        "gimbal_training_job_restarts",
        Kind::Gauge,
        "The highest TORCHELASTIC_RESTART_COUNT among the job's ranks seen on this node: the launcher's restarts of its workers",
        TRAINING_JOB,
        true,
        Rows::Snapshot(|s, sink| {
            for (job, j) in &s.jobs.jobs {
                sink(&[job], Value::WholeGauge(i64::from(j.restarts)));
            }
        }),
    ),
    metric(
        "gimbal_training_job_state",
        Kind::Gauge,
        "1 for the training job's state on this node (running, stalled, finished: every rank exited 0, failed: a rank died), 0 for the others",
        &["training_job", "state"],
        true,
        Rows::Snapshot(|s, sink| {
            for (job, j) in &s.jobs.jobs {
                let now = if s.jobs.stalled.contains_key(job) { "stalled" } else { j.state() };
                for state in ["running", "stalled", "finished", "failed"] {
                    sink(&[job, state], Value::WholeGauge(i64::from(state == now)));
                }
            }
        }),
    ),
    metric(
        "gimbal_training_job_rank_exits",
        Kind::Counter,
        "Exits of training-job ranks by reason and exit code or signal",
        &["training_job", "reason", "code"],
        true,
        Rows::Snapshot(|s, sink| counters(&s.jobs.rank_exits.series, sink)),
    ),
    metric(
        "gimbal_training_job_ranks_untracked",
        Kind::Counter,
        "Ranks seen but not tracked: their job was past the limit of jobs (max_series_per_metric) or past 1,024 ranks",
        &[],
        false,
        Rows::Snapshot(|s, sink| sink(&[], Value::Counter(s.jobs.untracked_ranks))),
    ),
];

/// One gauge per GPU NVML reads, skipping GPUs without that reading.
fn flag(b: Option<bool>) -> Option<Value<'static>> {
    b.map(|b| Value::WholeGauge(i64::from(b)))
}

/// A count or byte figure, written as the whole number it is.
fn whole(n: Option<u64>) -> Option<Value<'static>> {
    n.map(|n| Value::WholeGauge(i64::try_from(n).unwrap_or(i64::MAX)))
}

fn gauge(v: Option<f64>) -> Option<Value<'static>> {
    v.map(Value::Gauge)
}

fn per_gpu(
    s: &Snapshot,
    sink: &mut Sink,
    pick: impl Fn(&crate::model::gpu_devices::Device) -> Option<Value<'static>>,
) {
    for d in &s.gpu.devices {
        if let Some(v) = pick(d) {
            sink(&[&d.gpu, &d.index.to_string(), &d.uuid], v);
        }
    }
}
/// A value of each MIG instance of each GPU, labelled gpu, index, uuid, mig_index.
fn per_mig(
    s: &Snapshot,
    sink: &mut Sink,
    pick: impl Fn(&crate::model::gpu_devices::MigInstance) -> Option<Value<'static>>,
) {
    for d in &s.gpu.devices {
        let index = d.index.to_string();
        for m in &d.mig_instances {
            if let Some(v) = pick(m) {
                sink(&[&d.gpu, &index, &d.uuid, &m.index.to_string()], v);
            }
        }
    }
}

const TRAINING_JOB: &[&str] = &["training_job"];

/// Each series of a model family, in the model's (sorted) order.
fn each<'a, const N: usize, V>(
    series: &'a BTreeMap<Labels<N>, V>,
    sink: &mut Sink,
    value: impl Fn(&'a V) -> Value<'a>,
) {
    for (labels, v) in series {
        sink(&labels.each_ref().map(|l| &**l), value(v));
    }
}

fn counters<const N: usize>(series: &BTreeMap<Labels<N>, u64>, sink: &mut Sink) {
    each(series, sink, |n| Value::Counter(*n));
}

/// Whether a label is one of the identity labels that is left out where empty (outside
/// Kubernetes), in the exposition and in what rules see.
pub fn omitted_if_empty(name: &str) -> bool {
    identity::LABELS.contains(&name)
}

/// Each series of a family keyed by cgroup (its label at `cgroup`), with the cgroup's
/// namespace, pod and container after its own labels. They are functions of the cgroup,
/// so they add no series and take no budget of their own.
fn by_cgroup<'a, const N: usize, V>(
    s: &'a Snapshot,
    series: &'a BTreeMap<Labels<N>, V>,
    cgroup: usize,
    sink: &mut Sink,
    value: impl Fn(&'a V) -> Value<'a>,
) {
    const MAX: usize = 8;
    const { assert!(N + identity::LABELS.len() <= MAX) };
    for (labels, v) in series {
        let mut row = [""; MAX];
        for (slot, l) in row.iter_mut().zip(labels) {
            *slot = l;
        }
        let id = s.pods.resolve(&labels[cgroup]);
        row[N..N + identity::LABELS.len()].copy_from_slice(&id.values());
        sink(&row[..N + identity::LABELS.len()], value(v));
    }
}

fn cgroup_counters<const N: usize>(
    s: &Snapshot,
    series: &BTreeMap<Labels<N>, u64>,
    cgroup: usize,
    sink: &mut Sink,
) {
    by_cgroup(s, series, cgroup, sink, |n| Value::Counter(*n));
}

/// One gauge per target, skipping targets without a value.
fn per_target(s: &Snapshot, sink: &mut Sink, pick: impl Fn(&TargetStatus) -> Option<f64>) {
    for t in &s.targets {
        if let Some(v) = pick(t) {
            sink(&[&t.config.name], Value::Gauge(v));
        }
    }
}

/// Per-target values of one figure by window, skipping windows with no observation.
/// One half of a target's (SLI, performance) pair, per latency window.
fn latency(t: &TargetStatus, half: fn((f64, f64)) -> f64) -> Vec<(&'static str, Option<f64>)> {
    t.latency.iter().map(|(w, v)| (*w, v.map(half))).collect()
}

fn by_window(
    s: &Snapshot,
    sink: &mut Sink,
    pick: impl Fn(&TargetStatus) -> Vec<(&'static str, Option<f64>)>,
) {
    for t in &s.targets {
        for (w, v) in pick(t) {
            if let Some(v) = v {
                sink(&[&t.config.name, w], Value::Gauge(v));
            }
        }
    }
}
