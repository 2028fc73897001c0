//! Encodes the snapshot as OpenMetrics text with prometheus-client, on each scrape. Every
//! family and series is written through [`Families`], which escapes HELP texts and label
//! values.
use std::sync::{Arc, Mutex};

use gimbal_common::hist;
use prometheus_client::{
    collector::Collector,
    encoding::DescriptorEncoder,
    metrics::MetricType,
    registry::{Registry, Unit},
};

use super::families::{Families, Family};
use crate::{
    alert::DeliveryStats,
    catalog::{Kind, Rows, Value, METRICS},
    probes::ProbeStatus,
    snapshot::Snapshot,
};

/// What the agent knows about itself, fixed after start-up.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    pub version: &'static str,
    pub kernel: String,
    pub probes: Vec<ProbeStatus>,
}

/// Per Alertmanager: endpoint, [sent, failed, dropped, queued], last latency in seconds.
type Delivered = Vec<(String, [u64; 4], f64)>;

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
        // Copied before the snapshot's lock is taken, so the two locks never nest.
        let endpoints: Delivered = crate::sync::lock(&self.delivery.endpoints)
            .iter()
            .map(|(e, s)| {
                let counts = [s.sent, s.failed, s.dropped, s.queued];
                (e.clone(), counts, s.last_latency.as_secs_f64())
            })
            .collect();
        let snapshot = crate::sync::lock(&self.snapshot);
        for metric in METRICS {
            let unit = metric.seconds.then_some(&Unit::Seconds);
            let kind = match metric.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
                Kind::Histogram => MetricType::Histogram,
            };
            let mut m = e.family(metric.name, metric.help, unit, kind)?;
            match metric.rows {
                Rows::Snapshot(read) => {
                    let mut result = Ok(());
                    read(&snapshot, &mut |values, v| {
                        if result.is_ok() {
                            result = self.row(&mut m, metric.labels, values, v);
                        }
                    });
                    result?;
                }
                Rows::Agent => self.agent_rows(metric.name, &mut m, &endpoints)?,
            }
        }
        Ok(())
    }
}

impl Exposition {
    fn row(
        &self,
        m: &mut Family,
        names: &[&'static str],
        values: &[&str],
        v: Value,
    ) -> Result<(), std::fmt::Error> {
        match v {
            Value::Counter(n) => m.counter_row(names, values, n),
            Value::Gauge(v) => m.gauge_row(names, values, v),
            Value::Histogram(totals) => {
                let buckets: Vec<(f64, u64)> = self
                    .bounds_seconds
                    .iter()
                    .copied()
                    .zip(totals.buckets)
                    .collect();
                m.histogram_row(
                    names,
                    values,
                    totals.sum_ns as f64 / 1e9,
                    totals.count(),
                    &buckets,
                )
            }
        }
    }

    /// The rows of the families the snapshot does not hold. Their gauges are integers
    /// (`1`, not `1.0`), as they always were.
    fn agent_rows(
        &self,
        name: &str,
        m: &mut Family,
        endpoints: &Delivered,
    ) -> Result<(), std::fmt::Error> {
        match name {
            "gimbal_probe_attached" => {
                for s in &self.info.probes {
                    m.gauge([("probe", s.probe.name())], s.attached() as i64)?;
                }
            }
            "gimbal_build_info" => m.gauge(
                [
                    ("version", self.info.version),
                    ("kernel", self.info.kernel.as_str()),
                ],
                1i64,
            )?,
            "gimbal_alertmanager_notifications" => {
                for (endpoint, [sent, failed, dropped, _], _) in endpoints {
                    for (result, n) in [("sent", *sent), ("failed", *failed), ("dropped", *dropped)]
                    {
                        m.counter([("endpoint", endpoint.as_str()), ("result", result)], n)?;
                    }
                }
            }
            "gimbal_alertmanager_queue_length" => {
                for (endpoint, [.., queued], _) in endpoints {
                    m.gauge([("endpoint", endpoint.as_str())], *queued as i64)?;
                }
            }
            "gimbal_alertmanager_latency" => {
                for (endpoint, _, latency) in endpoints {
                    m.gauge([("endpoint", endpoint.as_str())], *latency)?;
                }
            }
            "gimbal_alert_batches_dropped" => m.counter(
                [],
                self.delivery
                    .dropped
                    .load(std::sync::atomic::Ordering::Relaxed),
            )?,
            other => unreachable!("{other} is in the metric table without agent rows"),
        }
        Ok(())
    }
}
