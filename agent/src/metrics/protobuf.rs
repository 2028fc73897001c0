//! The exposition in Prometheus' protobuf format (length-delimited MetricFamily messages),
//! which carries native histograms: what Prometheus asks for with
//! `--enable-feature=native-histograms`. It reads the same snapshot and metric table as the
//! text encoder; every family goes out, and histograms carry both the native fields and
//! the classic buckets (native.rs). Label values go out as they are (protobuf strings need
//! no escaping); the series are the text exposition's, so the same budget holds.
use prost::Message;

use super::{
    exposition::Exposition,
    native,
    proto::{self, LabelPair, MetricFamily, MetricType},
};
use crate::catalog::{Kind, Rows, Value, METRICS};

pub const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

impl Exposition {
    /// Every family of the metric table, each a length-delimited MetricFamily.
    pub fn encode_protobuf(&self) -> Vec<u8> {
        let parts = self.agent_parts();
        let agent = self.agent_view(&parts);
        let snapshot = self.snapshot().read();
        let mut out = Vec::new();
        for metric in METRICS {
            let (name, kind) = match metric.kind {
                // The text formats add `_total` to a counter's samples; here the family
                // name is the sample's name.
                Kind::Counter => (
                    format!("{}_total", metric.exposed_name()),
                    MetricType::Counter,
                ),
                Kind::Gauge => (metric.exposed_name(), MetricType::Gauge),
                Kind::Histogram => (metric.exposed_name(), MetricType::Histogram),
            };
            let mut family = MetricFamily {
                name: Some(name),
                help: Some(metric.help.to_string()),
                r#type: Some(kind as i32),
                metric: Vec::new(),
            };
            let mut sink = |values: &[&str], v: Value<'_>| {
                family.metric.push(self.metric(metric.labels, values, v));
            };
            match metric.rows {
                Rows::Snapshot(read) => read(&snapshot, &mut sink),
                Rows::Agent(read) => read(&agent, &mut sink),
            }
            // Infallible into a Vec (it grows).
            let _ = family.encode_length_delimited(&mut out);
        }
        out
    }

    fn metric(&self, names: &[&'static str], values: &[&str], v: Value) -> proto::Metric {
        debug_assert_eq!(
            names.len(),
            values.len(),
            "a row's labels against its names"
        );
        let label = names
            .iter()
            .zip(values)
            // Identity labels are left out where empty, as in the text formats.
            .filter(|(name, value)| !(value.is_empty() && crate::catalog::omitted_if_empty(name)))
            .map(|(name, value)| LabelPair {
                name: Some(name.to_string()),
                value: Some(value.to_string()),
            })
            .collect();
        let mut m = proto::Metric {
            label,
            ..Default::default()
        };
        let counter = |value: f64| Some(proto::Counter { value: Some(value) });
        let gauge = |value: f64| Some(proto::Gauge { value: Some(value) });
        match v {
            Value::Counter(n) => m.counter = counter(n as f64),
            Value::FloatCounter(x) => m.counter = counter(x),
            Value::Gauge(x) => m.gauge = gauge(x),
            Value::WholeGauge(n) => m.gauge = gauge(n as f64),
            Value::Histogram(h) => m.histogram = Some(native::histogram(h, self.bounds())),
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prometheus_client::encoding::text::encode;
    use prost::Message;

    use super::*;
    use crate::{alert::DeliveryStats, config::ClassicBuckets, metrics::AgentInfo, snapshot};

    fn exposition(classic: &ClassicBuckets) -> Arc<Exposition> {
        Exposition::shared(
            snapshot::Published::new(snapshot::filled()),
            AgentInfo {
                version: "1.2.3",
                kernel: "6.1.0".into(),
                probes: vec![],
                refused: Default::default(),
            },
            Arc::new(DeliveryStats::default()),
            classic,
        )
    }

    /// Reads the body back as Prometheus does: MetricFamily messages, each after its length.
    fn decode(mut body: &[u8]) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        while !body.is_empty() {
            out.push(MetricFamily::decode_length_delimited(&mut body).expect("a family"));
        }
        out
    }

    #[test]
    fn every_family_and_sample_of_the_text_goes_out_with_the_same_value() {
        let e = exposition(&ClassicBuckets::default());
        let families = decode(&e.encode_protobuf());
        assert_eq!(families.len(), METRICS.len());
        let mut om = String::new();
        encode(&mut om, &Exposition::registry_of(e.clone())).unwrap();
        // Each text sample of a counter or gauge is a protobuf metric with the same value
        // (labels compared as sorted name=value, unescaped by the text's rules).
        let mut text_samples = 0;
        for line in om.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            if ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name.ends_with(s))
            {
                continue;
            }
            text_samples += 1;
            let (series, value) = line.rsplit_once(' ').unwrap();
            let name = series.split('{').next().unwrap();
            let family = families
                .iter()
                .find(|f| f.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("no family {name}"));
            let value: f64 = value.parse().unwrap();
            let found = family.metric.iter().any(|m| {
                let v = m.counter.as_ref().and_then(|c| c.value);
                let v = v.or(m.gauge.as_ref().and_then(|g| g.value));
                let labels: Vec<String> = m
                    .label
                    .iter()
                    .map(|l| {
                        let v = l.value.as_deref().unwrap();
                        let v = v.replace('\\', "\\\\").replace('"', "\\\"");
                        format!(
                            "{}=\"{}\"",
                            l.name.as_deref().unwrap(),
                            v.replace('\n', "\\n")
                        )
                    })
                    .collect();
                let text = match labels.is_empty() {
                    true => name.to_string(),
                    false => format!("{name}{{{}}}", labels.join(",")),
                };
                v == Some(value) && text == series
            });
            assert!(found, "{line} not in the protobuf family {family:?}");
        }
        let metrics: usize = families
            .iter()
            .filter(|f| f.r#type != Some(MetricType::Histogram as i32))
            .map(|f| f.metric.len())
            .sum();
        assert_eq!(metrics, text_samples);
    }

    #[test]
    fn histograms_carry_native_and_classic_buckets() {
        let e = exposition(&ClassicBuckets::default());
        let families = decode(&e.encode_protobuf());
        let f = families
            .iter()
            .find(|f| f.name.as_deref() == Some("gimbal_syscall_latency_seconds"))
            .unwrap();
        assert_eq!(f.r#type, Some(MetricType::Histogram as i32));
        let h = f.metric[0].histogram.as_ref().unwrap();
        // The filled snapshot: 3 reads of 2 us, 1 of 5 ms.
        assert_eq!(h.sample_count, Some(4));
        assert_eq!(h.schema, Some(2));
        assert_eq!(h.zero_threshold, Some(2f64.powi(-20)));
        assert_eq!(h.zero_count, Some(0));
        let two_us = gimbal_common::hist::bucket(2_000) as i32 - 80;
        let five_ms = gimbal_common::hist::bucket(5_000_000) as i32 - 80;
        assert_eq!(
            crate::metrics::native::tests::expand(h),
            [(two_us, 3), (five_ms, 1)]
        );
        // 2^(index/4) s bounds them.
        assert!(2f64.powf((two_us - 1) as f64 / 4.0) < 2e-6);
        assert!(2e-6 <= 2f64.powf(two_us as f64 / 4.0));
        assert!(2f64.powf((five_ms - 1) as f64 / 4.0) < 5e-3);
        assert!(5e-3 <= 2f64.powf(five_ms as f64 / 4.0));
        // The classic buckets are the text's, +Inf aside.
        assert_eq!(h.bucket.len(), 22);
        assert_eq!(h.bucket[0].upper_bound, Some(2f64.powi(-18)));
        assert_eq!(h.bucket[0].cumulative_count, Some(3));
        assert_eq!(h.bucket[21].upper_bound, Some(8.0));
        assert_eq!(h.bucket[21].cumulative_count, Some(4));
        // Raw label values: no text escaping in protobuf.
        let exits = families
            .iter()
            .find(|f| f.name.as_deref() == Some("gimbal_process_exits_total"))
            .unwrap();
        assert!(exits.metric[0]
            .label
            .iter()
            .any(|l| l.value.as_deref() == Some("a \"q\"\n")));
    }
}
