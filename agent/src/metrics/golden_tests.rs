//! The exposition of a filled snapshot, pinned byte for byte: a change to the metric
//! table must not move a family, a HELP text or a value's formatting.
use std::sync::Arc;

use prometheus_client::encoding::text::encode;

use super::{AgentInfo, Exposition};
use crate::{alert::DeliveryStats, probes::Probe, probes::ProbeStatus, snapshot};

const GOLDEN: &str = include_str!("testdata/exposition.om");

#[test]
fn the_exposition_of_a_filled_snapshot_is_unchanged() {
    let delivery = DeliveryStats::default();
    {
        let mut endpoints = delivery.endpoints.lock().unwrap();
        let e = endpoints.entry("http://am:9093".into()).or_default();
        (e.sent, e.failed, e.queued) = (3, 1, 2);
        e.last_latency = std::time::Duration::from_millis(250);
    }
    delivery
        .dropped
        .store(4, std::sync::atomic::Ordering::Relaxed);
    let info = AgentInfo {
        version: "1.2.3",
        kernel: "6.1.0".into(),
        probes: vec![ProbeStatus {
            probe: Probe::SyscallLatency,
            enabled: true,
            error: None,
            hook: Some("tracepoints"),
        }],
        refused: Default::default(),
    };
    let registry = Exposition::registry(
        snapshot::Published::new(snapshot::filled()),
        info,
        Arc::new(delivery),
    );
    let mut om = String::new();
    encode(&mut om, &registry).expect("encoding into a String");
    if std::env::var_os("GIMBAL_BLESS").is_some() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/metrics/testdata/exposition.om"
        );
        std::fs::write(path, &om).expect("writing the golden file");
    }
    assert_eq!(om, GOLDEN);
}

/// The OpenMetrics exposition of the filled snapshot with these classic buckets.
fn filled_scrape(classic: &crate::config::ClassicBuckets) -> String {
    let registry = Exposition::registry_with(
        snapshot::Published::new(snapshot::filled()),
        AgentInfo {
            version: "1",
            kernel: "6.1.0".into(),
            probes: vec![],
            refused: Default::default(),
        },
        Arc::new(DeliveryStats::default()),
        classic,
    );
    let mut om = String::new();
    encode(&mut om, &registry).expect("encoding into a String");
    om
}

/// A coarser classic histogram is the full one read at fewer bounds: every bucket line it
/// exports is, byte for byte, the full resolution's line at that bound (counts exact).
#[test]
fn chosen_bounds_export_the_full_resolution_s_counts_at_those_bounds() {
    let scrape = filled_scrape;
    let full = scrape(&crate::config::ClassicBuckets::full());
    let buckets = |om: &str| -> Vec<String> {
        om.lines()
            .filter(|l| l.contains("_bucket{"))
            .map(String::from)
            .collect()
    };
    let all = buckets(&full);
    assert_eq!(all.len(), 98);
    for text in [
        "[labels]\nclassic_buckets = [\"1.907us\", \"1.134us\"]",
        "[labels]\nclassic_buckets = [\"1.134us\", \"1.907us\", \"7.8125ms\"]",
        "",
    ] {
        let config = crate::config::Config::parse(text, "t");
        let Ok(config) = config else {
            // Bounds out of order are refused.
            assert!(text.contains("\"1.907us\", \"1.134us\""), "{text}");
            continue;
        };
        let chosen = buckets(&scrape(&config.labels.classic_buckets));
        assert_eq!(
            chosen.len(),
            config.labels.classic_buckets.indices().len() + 1
        );
        for line in &chosen {
            assert!(all.contains(line), "{line} not in the full exposition");
        }
    }
    // Lines other than the buckets are the same.
    let others = |om: &str| -> Vec<String> {
        om.lines()
            .filter(|l| !l.contains("_bucket{"))
            .map(String::from)
            .collect()
    };
    let default = scrape(&crate::config::ClassicBuckets::default());
    assert_eq!(others(&full), others(&default));
}

/// Every `le` of the full resolution parses back to the kernel bound's own double (the
/// native bucket's), and a whole number of nanoseconds is at most it iff it is in the bucket.
#[test]
fn every_le_is_the_exact_kernel_bound() {
    use gimbal_common::hist;
    let om = filled_scrape(&crate::config::ClassicBuckets::full());
    let les: Vec<&str> = om
        .lines()
        .filter_map(|l| l.split_once("_bucket{le=\""))
        .filter_map(|(_, rest)| rest.split_once('"'))
        .map(|(le, _)| le)
        .collect();
    assert_eq!(les.len(), hist::BUCKETS);
    assert_eq!(les[hist::BUCKETS - 1], "+Inf");
    for (i, le) in les[..hist::BUCKETS - 1].iter().enumerate() {
        let le: f64 = le.parse().unwrap();
        assert_eq!(Some(le), hist::upper_bound_seconds(i), "bucket {i}");
        let ns = hist::upper_bound_ns(i).unwrap();
        assert!(
            ns as f64 <= le * 1e9 && le * 1e9 < (ns + 1) as f64,
            "bucket {i}"
        );
        assert_eq!(hist::bucket(ns), i);
    }
}
