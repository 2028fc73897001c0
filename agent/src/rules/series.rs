//! The exported series that user rules can refer to, read straight from the snapshot (not by
//! encoding and parsing the exposition, which would cost far more on every tick). Names and
//! rows come from the metric table the exposition encodes, so the two cannot drift.
use std::collections::BTreeMap;

use crate::{
    catalog::{Kind, Metric, Rows, Value, METRICS},
    snapshot::Snapshot,
};

pub type Series = Vec<(BTreeMap<String, String>, f64)>;

/// Which number of a row a rule's name stands for.
#[derive(Debug, Clone, Copy)]
enum Pick {
    /// A counter's total or a gauge's value.
    Value,
    /// A histogram's observation count.
    Count,
    /// A histogram's sum, in its unit.
    Sum,
}

/// The names a rule uses for `m`, as scraped: `_total` for counters, `_count` and `_sum`
/// for the latency histogram.
fn rule_names(m: &Metric) -> Vec<(String, Pick)> {
    let name = m.exposed_name();
    match m.kind {
        Kind::Counter => vec![(format!("{name}_total"), Pick::Value)],
        Kind::Gauge => vec![(name, Pick::Value)],
        Kind::Histogram => vec![
            (format!("{name}_count"), Pick::Count),
            (format!("{name}_sum"), Pick::Sum),
        ],
    }
}

/// Metric names user rules may use, in table order.
pub fn known() -> Vec<String> {
    METRICS
        .iter()
        .filter(|m| m.rules)
        .flat_map(rule_names)
        .map(|(n, _)| n)
        .collect()
}

fn lookup(name: &str) -> Option<(&'static Metric, Pick)> {
    METRICS.iter().filter(|m| m.rules).find_map(|m| {
        rule_names(m)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, pick)| (m, pick))
    })
}

pub fn is_known(name: &str) -> bool {
    lookup(name).is_some()
}

/// Current values of the series of `name`.
pub fn series(snapshot: &Snapshot, name: &str) -> Series {
    let mut out = Series::new();
    let Some((metric, pick)) = lookup(name) else {
        return out;
    };
    let Rows::Snapshot(read) = metric.rows else {
        return out;
    };
    read(snapshot, &mut |values, v| {
        let labels = metric
            .labels
            .iter()
            .zip(values)
            .filter(|(k, v)| !(v.is_empty() && crate::catalog::omitted_if_empty(k)))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let v = match (v, pick) {
            (Value::Counter(n), _) => n as f64,
            (Value::FloatCounter(v), _) => v,
            (Value::Gauge(v), _) => v,
            (Value::WholeGauge(v), _) => v as f64,
            (Value::Histogram(h), Pick::Count) => h.count() as f64,
            (Value::Histogram(h), Pick::Sum | Pick::Value) => h.sum_ns as f64 / 1e9,
        };
        out.push((labels, v));
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rules see a pod cgroup's namespace, pod and container as labels, and no such label
    /// (not an empty one) on other cgroups' series.
    #[test]
    fn identity_labels_are_there_where_known_and_absent_elsewhere() {
        let uid = "0f3c5a6e-2b1d-4c8e-9a7f-1e2d3c4b5a69";
        let cid = "9ab1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1";
        let mut s = crate::snapshot::filled();
        let cgroup = format!("kubepods/burstable/pod{uid}/{cid}");
        s.kernel
            .apply_exit([cgroup.as_str(), "python3", "exited", "1"].map(std::sync::Arc::from));
        s.pods = std::sync::Arc::new(crate::identity::Kubelet::of(
            &[("ml", "trainer-0", uid)],
            &[("trainer-0", "ml", "worker", cid)],
        ));
        let all = series(&s, "gimbal_process_exits_total");
        let pod = &all.iter().find(|(l, _)| l["comm"] == "python3").unwrap().0;
        assert_eq!(
            [&pod["namespace"], &pod["pod"], &pod["container"]],
            ["ml", "trainer-0", "worker"]
        );
        let svc = &all.iter().find(|(l, _)| l["cgroup"] == "svc").unwrap().0;
        assert!(
            !svc.contains_key("pod") && !svc.contains_key("namespace"),
            "{svc:?}"
        );
    }

    /// Every name rules may use, with its series read from a filled snapshot, pinned: the
    /// table that drives them must not change what a rule sees.
    /// The names rules could use before the table, in the order the golden file keeps.
    const KNOWN: &[&str] = &[
        "gimbal_syscall_latency_seconds_count",
        "gimbal_syscall_latency_seconds_sum",
        "gimbal_syscall_errors_total",
        "gimbal_syscalls_total",
        "gimbal_tcp_retransmits_total",
        "gimbal_process_exits_total",
        "gimbal_events_dropped_total",
        "gimbal_target_up",
        "gimbal_target_availability_ratio",
        "gimbal_target_reliability_ratio",
        "gimbal_target_failures_total",
        "gimbal_target_mttr_seconds",
        "gimbal_target_latency_sli_ratio",
        "gimbal_target_performance",
        "gimbal_gpu_xid_errors_total",
        "gimbal_gpu_xid_errors_by_cgroup_total",
        "gimbal_gpu_kmsg_records_dropped_total",
        "gimbal_gpu_source_attached",
        "gimbal_gpu_info",
        "gimbal_gpu_temperature_celsius",
        "gimbal_gpu_power_watts",
        "gimbal_gpu_power_limit_watts",
        "gimbal_gpu_utilization_ratio",
        "gimbal_gpu_memory_utilization_ratio",
        "gimbal_gpu_memory_used_bytes",
        "gimbal_gpu_memory_total_bytes",
        "gimbal_gpu_ecc_enabled",
        "gimbal_gpu_ecc_errors_total",
        "gimbal_gpu_retired_pages",
        "gimbal_gpu_retired_pages_pending",
        "gimbal_gpu_remapped_rows",
        "gimbal_gpu_remapped_rows_pending",
        "gimbal_gpu_row_remap_failed",
        "gimbal_gpu_pcie_replays_total",
        "gimbal_gpu_nvlink_errors_total",
        "gimbal_gpu_throttle_reason",
        "gimbal_gpu_recovery_action",
        "gimbal_gpu_cgroup_processes",
        "gimbal_gpu_cgroup_memory_used_bytes",
        "gimbal_gpu_mig_instance_info",
        "gimbal_gpu_mig_memory_used_bytes",
        "gimbal_gpu_mig_memory_total_bytes",
        "gimbal_gpu_mig_cgroup_processes",
        "gimbal_gpu_nvml_xid_events_total",
        "gimbal_gpu_nvml_ecc_events_total",
        "gimbal_verdict",
        "gimbal_verdict_weight",
        "gimbal_verdict_changes_total",
        "gimbal_node_load_score",
        "gimbal_cluster_writes_total",
        "gimbal_target_stalled",
        "gimbal_target_quiet_seconds",
        "gimbal_training_job_ranks_alive",
        "gimbal_training_job_restarts",
        "gimbal_training_job_state",
        "gimbal_training_job_rank_exits_total",
    ];

    #[test]
    fn rules_may_use_the_same_names() {
        let mut want = KNOWN.to_vec();
        want.sort_unstable();
        let mut got = known();
        got.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn the_series_of_a_filled_snapshot_are_unchanged() {
        let snapshot = crate::snapshot::filled();
        let mut out = String::new();
        for name in KNOWN {
            out.push_str(&format!("{name}\n"));
            for (labels, v) in series(&snapshot, name) {
                out.push_str(&format!("  {labels:?} {v:?}\n"));
            }
        }
        if std::env::var_os("GIMBAL_BLESS").is_some() {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/rules/testdata/series.txt");
            std::fs::write(path, &out).expect("writing the golden file");
        }
        assert_eq!(out, include_str!("testdata/series.txt"));
        assert!(!is_known("gimbal_syscall_latency_seconds"));
        assert!(!is_known("gimbal_build_info"));
    }
}
