//! The namespace, pod and container labels as the exposition and the rules see them: beside
//! `cgroup` where the kubelet's layout names it, left out (not empty) where it does not, and
//! no series added either way.
use std::sync::Arc;

use prometheus_client::encoding::text::encode;

use super::{
    strict::{parse, Format},
    AgentInfo, Exposition,
};
use crate::{alert::DeliveryStats, identity::Kubelet, snapshot};

const UID: &str = "0f3c5a6e-2b1d-4c8e-9a7f-1e2d3c4b5a69";
const CID: &str = "9ab1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1";

fn kubelet() -> Kubelet {
    Kubelet::of(
        &[("ml", "trainer-0", UID)],
        &[("trainer-0", "ml", "worker", CID)],
    )
}

fn scrape(s: snapshot::Snapshot) -> String {
    let info = AgentInfo {
        version: "1",
        kernel: "6.1.0".into(),
        probes: Vec::new(),
        refused: Default::default(),
    };
    let registry = Exposition::registry(
        snapshot::Published::new(s),
        info,
        Arc::new(DeliveryStats::default()),
    );
    let mut om = String::new();
    encode(&mut om, &registry).unwrap();
    om
}

#[test]
fn a_pod_cgroup_s_series_carry_its_names_and_others_none() {
    let pod_cgroup = format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{CID}.scope",
        UID.replace('-', "_")
    );
    let mut s = snapshot::filled();
    let without = scrape(s.clone());
    s.kernel
        .apply_exit([pod_cgroup.as_str(), "python3", "exited", "1"].map(Arc::from));
    s.pods = Arc::new(kubelet());
    let with = scrape(s.clone());
    let line = with
        .lines()
        .find(|l| l.contains("comm=\"python3\""))
        .expect("the pod's exit series");
    assert_eq!(
        line,
        format!("gimbal_process_exits_total{{cgroup=\"{pod_cgroup}\",comm=\"python3\",reason=\"exited\",code=\"1\",namespace=\"ml\",pod=\"trainer-0\",container=\"worker\"}} 1")
    );
    parse(&with, Format::OpenMetrics).expect("a valid exposition");
    // Every other line is as it was without the pod: no label added where nothing is known
    // (the budget used counts the exit's series).
    let others = |om: &str| -> Vec<String> {
        om.lines()
            .filter(|l| {
                !l.contains("python3")
                    && !l.starts_with("gimbal_pod_identit")
                    && !l.starts_with("gimbal_series_budget_used ")
            })
            .map(str::to_string)
            .collect()
    };
    assert_eq!(others(&with), others(&without));
    assert!(with.contains("gimbal_pod_identities 1\n"));
}
