//! Alerts in Kubernetes' words: one that carries a cgroup carries its namespace, pod and
//! container; a target's carry what its cgroups share, kept once its pod is gone.
use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use super::{Engine, NodeInputs};
use crate::{alert::DeliveryStats, config::Config, identity::Kubelet, model::gpu::XidSeen};

const UID: &str = "0f3c5a6e-2b1d-4c8e-9a7f-1e2d3c4b5a69";
const CID: &str = "9ab1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1";

fn firing_with(e: &Engine, alertname: &str) -> BTreeMap<String, String> {
    e.firing()
        .into_iter()
        .map(|l| l.into_iter().collect::<BTreeMap<_, _>>())
        .find(|l| l["alertname"] == alertname)
        .unwrap_or_else(|| panic!("{alertname} not firing"))
}

#[test]
fn alerts_on_a_pod_s_cgroup_name_its_namespace_pod_and_container() {
    let dir = std::env::temp_dir().join(format!("gimbal-rules-identity-{}", std::process::id()));
    let c = Config::parse("[[targets]]\nname = \"t\"\nnamespace = \"ml\"\n", "t").unwrap();
    let mut e = Engine::new(
        &c.alerting,
        &c.rules,
        "http://x".into(),
        None,
        Arc::new(DeliveryStats::default()),
        dir.join("alerts.json"),
    );
    let container = format!("kubepods/burstable/pod{UID}/{CID}");
    let mut s = crate::snapshot::filled();
    s.pods = Arc::new(Kubelet::of(
        &[("ml", "trainer-0", UID)],
        &[("trainer-0", "ml", "worker", CID)],
    ));
    let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
    s.gpu.apply_xid(XidSeen {
        gpu: Arc::from("0000:3b:00"),
        xid: 79,
        action: "reboot-node",
        cgroup: Arc::from(container.as_str()),
        pid: Some(7),
        name: Some("python3".into()),
        detail: "fell off the bus".into(),
        at: now,
    });
    let mut target = s.targets[0].clone();
    target.config = c.targets[0].clone();
    target.up = false;
    target.cgroups = vec![container.clone()];
    let node = || NodeInputs {
        probes: &[],
        drops: BTreeMap::new(),
        retransmits_total: 0,
    };
    e.evaluate(std::slice::from_ref(&target), node(), &s, now);

    let xid = e
        .firing()
        .into_iter()
        .map(|l| l.into_iter().collect::<BTreeMap<_, _>>())
        .find(|l| l.get("cgroup") == Some(&container))
        .expect("the XID's alert");
    assert_eq!(
        [&xid["namespace"], &xid["pod"], &xid["container"]],
        ["ml", "trainer-0", "worker"]
    );
    let down = firing_with(&e, "TargetDown");
    assert_eq!(
        [&down["namespace"], &down["pod"], &down["container"]],
        ["ml", "trainer-0", "worker"]
    );

    // The pod is deleted: no cgroups, no names on disk. The same alert goes on firing,
    // still naming the pod.
    target.cgroups.clear();
    s.pods = Arc::new(Kubelet::default());
    e.evaluate(
        std::slice::from_ref(&target),
        node(),
        &s,
        now + Duration::from_secs(1),
    );
    assert_eq!(firing_with(&e, "TargetDown"), down);
    let _ = std::fs::remove_dir_all(&dir);
}
