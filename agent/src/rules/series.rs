//! The exported series that user rules can refer to, read straight from the snapshot (not by
//! encoding and parsing the exposition, which would cost far more on every tick).
use std::collections::BTreeMap;

use crate::{model::Labels, snapshot::Snapshot, watch::TargetStatus};

pub type Series = Vec<(BTreeMap<String, String>, f64)>;

/// Metric names user rules may use.
pub const KNOWN: &[&str] = &[
    "gimbal_syscall_latency_seconds_count",
    "gimbal_syscall_latency_seconds_sum",
    "gimbal_syscall_errors_total",
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
];

pub fn is_known(name: &str) -> bool {
    KNOWN.contains(&name)
}

fn labelled<const N: usize, V: Copy>(
    names: [&str; N],
    series: &BTreeMap<Labels<N>, V>,
    value: impl Fn(V) -> f64,
) -> Series {
    series
        .iter()
        .map(|(l, v)| {
            (
                names
                    .iter()
                    .zip(l.iter())
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                value(*v),
            )
        })
        .collect()
}

fn per_target(
    snapshot: &Snapshot,
    pick: impl Fn(&TargetStatus) -> Vec<(Option<&'static str>, Option<f64>)>,
) -> Series {
    let mut out = Series::new();
    for t in &snapshot.targets {
        for (window, v) in pick(t) {
            if let Some(v) = v {
                let mut l = BTreeMap::from([("target".to_string(), t.config.name.clone())]);
                if let Some(w) = window {
                    l.insert("window".into(), w.to_string());
                }
                out.push((l, v));
            }
        }
    }
    out
}

/// Current values of the series of `name`.
pub fn series(snapshot: &Snapshot, name: &str) -> Series {
    let model = &snapshot.kernel;
    let windows = |v: &Vec<(&'static str, Option<f64>)>| {
        v.iter().map(|(w, x)| (Some(*w), *x)).collect::<Vec<_>>()
    };
    match name {
        "gimbal_syscall_latency_seconds_count" => {
            labelled(["syscall", "cgroup"], &model.syscall_latency.series, |h| {
                h.count() as f64
            })
        }
        "gimbal_syscall_latency_seconds_sum" => {
            labelled(["syscall", "cgroup"], &model.syscall_latency.series, |h| {
                h.sum_ns as f64 / 1e9
            })
        }
        "gimbal_syscall_errors_total" => labelled(
            ["syscall", "cgroup", "errno"],
            &model.syscall_errors.series,
            |n| n as f64,
        ),
        "gimbal_tcp_retransmits_total" => labelled(
            ["cgroup", "remote", "family"],
            &model.tcp_retransmits.series,
            |n| n as f64,
        ),
        "gimbal_process_exits_total" => labelled(
            ["cgroup", "comm", "reason", "code"],
            &model.process_exits.series,
            |n| n as f64,
        ),
        "gimbal_events_dropped_total" => model
            .drops_per_probe()
            .into_iter()
            .map(|(p, n)| {
                (
                    BTreeMap::from([("probe".to_string(), p.to_string())]),
                    n as f64,
                )
            })
            .collect(),
        "gimbal_target_up" => {
            per_target(snapshot, |t| vec![(None, Some(f64::from(u8::from(t.up))))])
        }
        "gimbal_target_availability_ratio" => per_target(snapshot, |t| windows(&t.availability)),
        "gimbal_target_reliability_ratio" => per_target(snapshot, |t| windows(&t.reliability)),
        "gimbal_target_failures_total" => {
            per_target(snapshot, |t| vec![(None, Some(t.failures_total as f64))])
        }
        "gimbal_target_mttr_seconds" => {
            per_target(snapshot, |t| vec![(None, t.mttr.map(|d| d.as_secs_f64()))])
        }
        "gimbal_target_latency_sli_ratio" => per_target(snapshot, |t| {
            t.latency
                .iter()
                .map(|(w, v)| (Some(*w), v.map(|(s, _)| s)))
                .collect()
        }),
        "gimbal_target_performance" => per_target(snapshot, |t| {
            t.latency
                .iter()
                .map(|(w, v)| (Some(*w), v.map(|(_, p)| p)))
                .collect()
        }),
        _ => Series::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name rules may use, with its series read from a filled snapshot, pinned: the
    /// table that drives them must not change what a rule sees.
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
