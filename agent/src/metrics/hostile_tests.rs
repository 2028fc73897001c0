//! Hostile label values through the real encoder: arbitrary bytes (made text the one way
//! the agent makes outside bytes text) as label values and HELP text must come back out of
//! a strict parser of both formats exactly, without adding a series or a label.
use std::sync::Arc;

use prometheus_client::{
    collector::Collector,
    encoding::{text::encode, DescriptorEncoder},
    metrics::MetricType,
    registry::{Registry, Unit},
};
use proptest::prelude::*;

use super::{
    families::Families,
    strict::{parse, Format, Parsed},
    text_format::from_openmetrics,
    AgentInfo, Exposition,
};
use crate::{model::text, snapshot::Snapshot};

/// Stands where the hostile value goes; no other label value or HELP text contains it.
const MARK: &str = "MARK";

#[derive(Debug)]
struct Every(String);

impl Collector for Every {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut e = Families::new(&mut e);
        let v = self.0.as_str();
        let help = format!("help {v} end");
        e.family("t_count", &help, None, MetricType::Counter)?
            .counter_row(&["a", "b"], &[v, "fixed"], 3u64)?;
        let mut g = e.family("t_gauge", &help, None, MetricType::Gauge)?;
        g.gauge_row(&["a"], &[v], 1.5)?;
        g.gauge_row(&["a", "b", "c"], &["fixed", v, v], 2i64)?;
        e.family("t_lat", &help, Some(&Unit::Seconds), MetricType::Histogram)?
            .histogram_row(&["a"], &[v], 0.5, 2, &[(0.1, 1), (f64::MAX, 1)])?;
        e.family("t_plain", &help, None, MetricType::Counter)?
            .counter_row(&[], &[], 7u64)
    }
}

fn openmetrics(registry: &Registry) -> String {
    let mut om = String::new();
    encode(&mut om, registry).expect("encoding into a String");
    om
}

/// Both formats parsed strictly.
fn both(om: &str) -> [Parsed; 2] {
    let text = from_openmetrics(om);
    [
        parse(om, Format::OpenMetrics).unwrap_or_else(|e| panic!("OpenMetrics: {e}\n{om}")),
        parse(&text, Format::Text004).unwrap_or_else(|e| panic!("0.0.4: {e}\n{text}")),
    ]
}

/// `parsed` with every occurrence of MARK in label values and HELP replaced by `v`.
fn with_value(mut parsed: Parsed, v: &str) -> Parsed {
    for (_, help) in &mut parsed.help {
        *help = help.replace(MARK, v);
    }
    for s in &mut parsed.samples {
        for (_, value) in &mut s.labels {
            *value = value.replace(MARK, v);
        }
    }
    parsed
}

fn every(v: &str) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(Every(v.to_string())));
    r
}

/// The agent's own exposition with `v` in every label that takes outside text.
fn agent(v: &str) -> Registry {
    let mut snapshot = Snapshot::new(10);
    snapshot
        .kernel
        .apply_exit([v, v, "signaled", "SIGKILL"].map(Arc::from));
    snapshot
        .kernel
        .apply_exit(["c", v, "exited", "0"].map(Arc::from));
    snapshot.alerts.insert((v.to_string(), "firing"), 1);
    let delivery = crate::alert::DeliveryStats::default();
    delivery
        .endpoints
        .lock()
        .unwrap()
        .insert(v.to_string(), Default::default());
    let info = AgentInfo {
        version: "1",
        kernel: v.to_string(),
        probes: vec![],
        refused: Default::default(),
    };
    Exposition::registry(
        crate::snapshot::Published::new(snapshot),
        info,
        Arc::new(delivery),
    )
}

/// Series in a fixed order: the model keeps them sorted by label values, so a different
/// value may move a series, which is no change.
fn sorted(mut p: Parsed) -> Parsed {
    p.samples
        .sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
    p
}

fn round_trips(registry: impl Fn(&str) -> Registry, v: &str) {
    let want = both(&openmetrics(&registry(MARK)));
    let got = both(&openmetrics(&registry(v)));
    for (want, got) in want.into_iter().zip(got) {
        assert_eq!(sorted(got), sorted(with_value(want, v)), "value {v:?}");
    }
}

#[test]
fn the_issue_s_names_round_trip() {
    for v in [
        "~\"} 1\nevil 1\n#",
        "a\"b\\c\n{x}",
        "x q\"b\\s y",
        "\\",
        "\\\"",
        "\n",
        "",
    ] {
        round_trips(every, v);
        round_trips(agent, v);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..48)) {
        let v = text::from_bytes(&bytes);
        prop_assume!(!v.contains(MARK));
        round_trips(every, &v);
    }

    #[test]
    fn arbitrary_bytes_round_trip_through_the_agent_exposition(
        bytes in proptest::collection::vec(
            prop_oneof![Just(b'"'), Just(b'\\'), Just(b'\n'), Just(b'{'), Just(b'}'), any::<u8>()],
            0..32,
        )
    ) {
        let v = text::from_bytes(&bytes);
        prop_assume!(!v.contains(MARK));
        round_trips(agent, &v);
    }
}
