//! Encodes the snapshot as OpenMetrics text with prometheus-client, on each scrape. Every
//! family and series is written through [`Families`], which escapes HELP texts and label
//! values. The protobuf encoding (protobuf.rs) reads the same snapshot through the same
//! [`Exposition`].
use std::sync::{atomic::Ordering, Arc};

use gimbal_common::hist;
use prometheus_client::{
    collector::Collector,
    encoding::DescriptorEncoder,
    metrics::MetricType,
    registry::{Registry, Unit},
};

use super::{
    families::{Families, Family},
    web::Refusals,
};
use crate::{
    alert::DeliveryStats,
    catalog::{AgentView, Delivery, Kind, Rows, Value, METRICS},
    config::ClassicBuckets,
    probes::ProbeStatus,
    snapshot::Published,
};

/// What the agent knows about itself, fixed after start-up.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    pub version: &'static str,
    pub kernel: String,
    pub probes: Vec<ProbeStatus>,
    /// The HTTP endpoint's refusals (web config), counted by http.rs.
    pub refused: Arc<Refusals>,
}

#[derive(Debug)]
pub struct Exposition {
    snapshot: Published,
    info: AgentInfo,
    delivery: Arc<DeliveryStats>,
    /// The classic histogram's buckets: (last kernel bucket index it takes in, `le` in
    /// seconds), the last being +Inf.
    bounds: Vec<(usize, f64)>,
}

impl Exposition {
    /// With the default classic buckets (one per doubling).
    pub fn registry(
        snapshot: Published,
        info: AgentInfo,
        delivery: Arc<DeliveryStats>,
    ) -> Registry {
        Self::registry_with(snapshot, info, delivery, &ClassicBuckets::default())
    }

    /// With the classic histogram's `le` bounds chosen from the kernel's (`[labels]
    /// classic_buckets`).
    pub fn registry_with(
        snapshot: Published,
        info: AgentInfo,
        delivery: Arc<DeliveryStats>,
        classic: &ClassicBuckets,
    ) -> Registry {
        Self::registry_of(Self::shared(snapshot, info, delivery, classic))
    }

    /// A registry that encodes `exposition` as text.
    pub fn registry_of(exposition: Arc<Exposition>) -> Registry {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Shared(exposition)));
        registry
    }

    /// One exposition for both encodings (text through a registry, protobuf directly).
    pub fn shared(
        snapshot: Published,
        info: AgentInfo,
        delivery: Arc<DeliveryStats>,
        classic: &ClassicBuckets,
    ) -> Arc<Self> {
        // +Inf is encoded by prometheus-client as f64::MAX.
        let bounds = classic
            .indices()
            .iter()
            .copied()
            .chain([hist::BUCKETS - 1])
            .map(|i| {
                // The double nearest 2^(k/4) s, the native bucket's own bound: a whole
                // number of ns is <= it iff it is in the kernel bucket (hist.rs).
                (i, hist::upper_bound_seconds(i).unwrap_or(f64::MAX))
            })
            .collect();
        Arc::new(Exposition {
            snapshot,
            info,
            delivery,
            bounds,
        })
    }

    pub(super) fn snapshot(&self) -> &Published {
        &self.snapshot
    }

    /// (last kernel bucket index, `le` in seconds) of each classic bucket, +Inf last.
    pub(super) fn bounds(&self) -> &[(usize, f64)] {
        &self.bounds
    }

    /// What the agent view borrows, copied first: no lock is held while encoding.
    pub(super) fn agent_parts(&self) -> AgentParts {
        AgentParts {
            deliveries: crate::sync::lock(&self.delivery.endpoints)
                .iter()
                .map(|(endpoint, s)| Delivery {
                    endpoint: endpoint.clone(),
                    sent: s.sent,
                    failed: s.failed,
                    dropped: s.dropped,
                    queued: s.queued,
                    last_latency_seconds: s.last_latency.as_secs_f64(),
                })
                .collect(),
            http_refused: self.info.refused.rows(),
        }
    }

    pub(super) fn agent_view<'a>(&'a self, parts: &'a AgentParts) -> AgentView<'a> {
        AgentView {
            version: self.info.version,
            kernel: &self.info.kernel,
            probes: &self.info.probes,
            deliveries: &parts.deliveries,
            batches_dropped: self.delivery.dropped.load(Ordering::Relaxed),
            http_refused: &parts.http_refused,
        }
    }
}

pub(super) struct AgentParts {
    deliveries: Vec<Delivery>,
    http_refused: [(&'static str, u64); 3],
}

/// The registry's handle on an exposition it shares with the protobuf encoder.
#[derive(Debug)]
struct Shared(Arc<Exposition>);

impl Collector for Shared {
    fn encode(&self, e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode_text(e)
    }
}

impl Exposition {
    fn encode_text(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Shadowed so that nothing below can reach the unescaping encoder.
        let mut e = Families::new(&mut e);
        let parts = self.agent_parts();
        let agent = self.agent_view(&parts);
        let snapshot = self.snapshot.read();
        for metric in METRICS {
            let unit = metric.seconds.then_some(&Unit::Seconds);
            let kind = match metric.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
                Kind::Histogram => MetricType::Histogram,
            };
            let mut m = e.family(metric.name, metric.help, unit, kind)?;
            let mut result = Ok(());
            let mut sink = |values: &[&str], v: Value<'_>| {
                if result.is_ok() {
                    result = self.row(&mut m, metric.labels, values, v);
                }
            };
            match metric.rows {
                Rows::Snapshot(read) => read(&snapshot, &mut sink),
                Rows::Agent(read) => read(&agent, &mut sink),
            }
            result?;
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
            Value::FloatCounter(v) => m.counter_row(names, values, v),
            Value::Gauge(v) => m.gauge_row(names, values, v),
            Value::WholeGauge(v) => m.gauge_row(names, values, v),
            Value::Histogram(totals) => {
                // Each exported bucket sums the kernel buckets since the previous bound:
                // whole buckets, so the counts stay exact.
                let mut from = 0;
                let buckets: Vec<(f64, u64)> = self
                    .bounds
                    .iter()
                    .map(|&(last, le)| {
                        let n = totals
                            .buckets
                            .get(from..=last)
                            .map_or(0, |b| b.iter().fold(0u64, |sum, &n| sum.wrapping_add(n)));
                        from = last + 1;
                        (le, n)
                    })
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
}
