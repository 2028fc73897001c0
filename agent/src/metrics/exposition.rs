//! Encodes the snapshot as OpenMetrics text with prometheus-client, on each scrape. Every
//! family and series is written through [`Families`], which escapes HELP texts and label
//! values.
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use gimbal_common::hist;
use prometheus_client::{
    collector::Collector,
    encoding::DescriptorEncoder,
    metrics::MetricType,
    registry::{Registry, Unit},
};

use super::families::{Families, LabelSet};
use crate::{
    alert::DeliveryStats, model::Labels, probes::ProbeStatus, snapshot::Snapshot,
    watch::TargetStatus,
};

/// What the agent knows about itself, fixed after start-up.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    pub version: &'static str,
    pub kernel: String,
    pub probes: Vec<ProbeStatus>,
}

#[derive(Debug)]
pub struct Exposition {
    snapshot: Arc<Mutex<Snapshot>>,
    info: AgentInfo,
    delivery: Arc<DeliveryStats>,
    bounds_seconds: Vec<f64>,
}

impl Exposition {
    pub fn registry(
        snapshot: Arc<Mutex<Snapshot>>,
        info: AgentInfo,
        delivery: Arc<DeliveryStats>,
    ) -> Registry {
        // +Inf is encoded by prometheus-client as f64::MAX.
        let bounds_seconds = (0..hist::BUCKETS)
            .map(|i| hist::upper_bound_ns(i).map_or(f64::MAX, |ns| ns as f64 / 1e9))
            .collect();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Exposition {
            snapshot,
            info,
            delivery,
            bounds_seconds,
        }));
        registry
    }
}

impl Collector for Exposition {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Shadowed so that nothing below can reach the unescaping encoder.
        let mut e = Families::new(&mut e);
        let snapshot = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        let model = &snapshot.kernel;

        let mut m = e.family(
            "gimbal_syscall_latency",
            "Syscall latency from raw_syscalls:sys_enter to sys_exit, per syscall and cgroup",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(hist::BUCKETS);
        for ([syscall, cgroup], totals) in &model.syscall_latency.series {
            buckets.clear();
            buckets.extend(self.bounds_seconds.iter().copied().zip(totals.buckets));
            m.histogram(
                [("syscall", syscall), ("cgroup", cgroup)],
                totals.sum_ns as f64 / 1e9,
                totals.count(),
                &buckets,
            )?;
        }

        counters(
            &mut e,
            "gimbal_syscall_errors",
            "Syscalls that returned an error, per errno",
            ["syscall", "cgroup", "errno"],
            &model.syscall_errors.series,
        )?;
        counters(
            &mut e,
            "gimbal_tcp_retransmits",
            "TCP segments retransmitted (tcp:tcp_retransmit_skb), per owning cgroup and remote end",
            ["cgroup", "remote", "family"],
            &model.tcp_retransmits.series,
        )?;
        counters(
            &mut e,
            "gimbal_process_exits",
            "Whole-process exits by reason and exit code or signal",
            ["cgroup", "comm", "reason", "code"],
            &model.process_exits.series,
        )?;

        let mut m = e.family(
            "gimbal_probe_attached",
            "1 if the probe is attached to the kernel, 0 if disabled or failed",
            None,
            MetricType::Gauge,
        )?;
        for s in &self.info.probes {
            m.gauge([("probe", s.probe.name())], s.attached() as i64)?;
        }

        let mut m = e.family(
            "gimbal_events_dropped",
            "Events the kernel side could not record (full map or ring buffer)",
            None,
            MetricType::Counter,
        )?;
        for (probe, n) in model.drops_per_probe() {
            m.counter([("probe", probe)], n)?;
        }

        let mut m = e.family(
            "gimbal_series_folded",
            "Distinct label sets folded into `other` by the per-metric series limit",
            None,
            MetricType::Counter,
        )?;
        for (metric, n) in [
            (
                "gimbal_syscall_latency_seconds",
                model.syscall_latency.folded(),
            ),
            ("gimbal_syscall_errors_total", model.syscall_errors.folded()),
            (
                "gimbal_tcp_retransmits_total",
                model.tcp_retransmits.folded(),
            ),
            ("gimbal_process_exits_total", model.process_exits.folded()),
        ] {
            m.counter([("metric", metric)], n)?;
        }

        let mut m = e.family(
            "gimbal_build_info",
            "Agent version and kernel release (always 1)",
            None,
            MetricType::Gauge,
        )?;
        m.gauge(
            [
                ("version", self.info.version),
                ("kernel", self.info.kernel.as_str()),
            ],
            1i64,
        )?;

        encode_targets(&mut e, &snapshot.targets, &snapshot.alerts)?;
        let mut m = e.family(
            "gimbal_config_reloads",
            "SIGHUP reloads of the config file: accepted, or rejected (the running config stays)",
            None,
            MetricType::Counter,
        )?;
        for (result, n) in [
            ("accepted", snapshot.reloads.accepted),
            ("rejected", snapshot.reloads.rejected),
        ] {
            m.counter([("result", result)], n)?;
        }
        let mut m = e.family(
            "gimbal_remediations",
            "Remediation actions by action and result (dry_run: decided, not carried out)",
            None,
            MetricType::Counter,
        )?;
        for ((action, result), n) in &snapshot.remediations.counts {
            m.counter([("action", action), ("result", result)], *n)?;
        }
        drop(snapshot);
        self.encode_delivery(&mut e)
    }
}

impl Exposition {
    fn encode_delivery(&self, e: &mut Families) -> Result<(), std::fmt::Error> {
        let endpoints = self
            .delivery
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut m = e.family(
            "gimbal_alertmanager_notifications",
            "Alert notifications per Alertmanager: sent, failed (attempts), dropped (spool full)",
            None,
            MetricType::Counter,
        )?;
        for (endpoint, s) in &endpoints {
            for (result, n) in [
                ("sent", s.sent),
                ("failed", s.failed),
                ("dropped", s.dropped),
            ] {
                m.counter([("endpoint", endpoint), ("result", result)], n)?;
            }
        }
        let mut m = e.family(
            "gimbal_alertmanager_queue_length",
            "Notification batches waiting in each Alertmanager's on-disk spool",
            None,
            MetricType::Gauge,
        )?;
        for (endpoint, s) in &endpoints {
            m.gauge([("endpoint", endpoint)], s.queued as i64)?;
        }
        let mut m = e.family(
            "gimbal_alertmanager_latency",
            "Duration of the last successful delivery to each Alertmanager",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for (endpoint, s) in &endpoints {
            m.gauge([("endpoint", endpoint)], s.last_latency.as_secs_f64())?;
        }
        let mut m = e.family(
            "gimbal_alert_batches_dropped",
            "Alert batches dropped because the delivery queue was full",
            None,
            MetricType::Counter,
        )?;
        let n = self
            .delivery
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed);
        m.counter([], n)
    }
}

/// One counter family whose series are the model's label sets.
fn counters<const N: usize>(
    e: &mut Families,
    name: &str,
    help: &str,
    label_names: [&'static str; N],
    series: &BTreeMap<Labels<N>, u64>,
) -> Result<(), std::fmt::Error> {
    let mut m = e.family(name, help, None, MetricType::Counter)?;
    for (values, n) in series {
        m.counter::<N>(std::array::from_fn(|i| (label_names[i], &*values[i])), *n)?;
    }
    Ok(())
}

type Row<'a, const N: usize> = (LabelSet<'a, N>, f64);

fn gauge<'a, const N: usize>(
    e: &mut Families,
    name: &str,
    help: &str,
    rows: impl Iterator<Item = Row<'a, N>>,
) -> Result<(), std::fmt::Error> {
    let mut m = e.family(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        m.gauge(labels, v)?;
    }
    Ok(())
}

/// Per-target values of one figure by window, skipping windows with no observation.
fn by_window<'a>(
    t: &'a [TargetStatus],
    pick: impl Fn(&'a TargetStatus) -> Vec<(&'static str, Option<f64>)> + 'a,
) -> impl Iterator<Item = Row<'a, 2>> {
    t.iter().flat_map(move |t| {
        pick(t)
            .into_iter()
            .filter_map(move |(w, v)| v.map(|v| ([("target", name(t)), ("window", w)], v)))
    })
}

fn name(t: &TargetStatus) -> &str {
    t.config.name.as_str()
}

/// The watched targets' figures and the alert states.
fn encode_targets(
    e: &mut Families,
    t: &[TargetStatus],
    alerts: &BTreeMap<(String, &'static str), u64>,
) -> Result<(), std::fmt::Error> {
    gauge(
        e,
        "gimbal_target_up",
        "1 if the watched target has at least one live process",
        t.iter()
            .map(|t| ([("target", name(t))], f64::from(u8::from(t.up)))),
    )?;
    gauge(
        e,
        "gimbal_target_availability_ratio",
        "A = T_up / T_total over the window (time the agent was not running is not counted)",
        by_window(t, |t| t.availability.clone()),
    )?;
    gauge(
        e,
        "gimbal_target_reliability_ratio",
        "R = product of (1 - p_i) over the target's components (matched cgroups), p_i = 1 - A_i",
        by_window(t, |t| t.reliability.clone()),
    )?;
    gauge(
        e,
        "gimbal_target_latency_sli_ratio",
        "Fraction of the target's latency syscalls at or under its threshold, over the window",
        by_window(t, |t| {
            t.latency
                .iter()
                .map(|(w, v)| (*w, v.map(|(sli, _)| sli)))
                .collect()
        }),
    )?;
    gauge(
        e,
        "gimbal_target_performance",
        "P = 1 / mean latency of the target's latency syscalls over the window, in 1/s",
        by_window(t, |t| {
            t.latency
                .iter()
                .map(|(w, v)| (*w, v.map(|(_, p)| p)))
                .collect()
        }),
    )?;
    gauge(
        e,
        "gimbal_target_mttr_seconds",
        "Mean time from down to up over the failures of the last 30 days",
        t.iter()
            .filter_map(|t| t.mttr.map(|d| ([("target", name(t))], d.as_secs_f64()))),
    )?;
    let mut m = e.family(
        "gimbal_target_failures",
        "Times the target went down (no live process left)",
        None,
        MetricType::Counter,
    )?;
    for t in t {
        m.counter([("target", name(t))], t.failures_total)?;
    }
    let mut m = e.family(
        "gimbal_target_read_failures",
        "Reads of the target's processes that failed (not for a process or cgroup being gone); each left its state unknown, not down",
        None,
        MetricType::Counter,
    )?;
    for t in t {
        m.counter([("target", name(t))], t.read_failures_total)?;
    }
    gauge(
        e,
        "gimbal_alerts",
        "Active alerts by name and state (pending, firing)",
        alerts.iter().map(|((n, state), count)| {
            (
                [("alertname", n.as_str()), ("state", *state)],
                *count as f64,
            )
        }),
    )
}
