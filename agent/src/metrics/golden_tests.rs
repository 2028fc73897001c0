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
        }],
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
