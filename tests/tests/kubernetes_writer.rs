//! The `[cluster]` writer against a request-checking stand-in for the Kubernetes API server
//! (`gimbal_tests::kube_api`: no API server can be installed here, so the exact requests
//! are checked instead; this is not a cluster test). The node's verdict is flipped the real
//! way: a real-format NVRM XID 79 record written to /dev/kmsg as root (records from user
//! space are counted only with `kmsg_user_records = true`, as in gpu_xid.rs).
use std::{collections::BTreeSet, time::Duration};

use gimbal_tests::{
    agent::Agent,
    kmsg::gpu_fell_off_the_bus,
    kube_api::{KubeApi, Request},
    kubelet::{Driver, Node},
    require_root, sample, spawn_in, unique, wait_for, wait_until, workload, TempDir,
};
use serde_json::{json, Value};

mod packaging;

/// The agent as the node `node`, writing to `api` with `cluster` added to `[cluster]`;
/// a GPU fault drains the node for 4 s.
fn start(api: &KubeApi, node: &str, cluster: &str) -> (Agent, TempDir) {
    let state = TempDir::new("cluster-state");
    let kubeconfig = state.0.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let config = state.0.join("gimbal.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[gpu]\nkmsg_user_records = true\n[verdict]\ngpu_window = \"4s\"\n[cluster]\nkubeconfig = \"{}\"\nheartbeat = \"5s\"\n{cluster}\n",
            state.0.display(),
            kubeconfig.display()
        ),
    )
    .unwrap();
    let agent = Agent::start_with_env(
        &["--config", config.to_str().unwrap()],
        &[("NODE_NAME", node)],
    );
    (agent, state)
}

fn condition(api: &KubeApi, node: &str, kind: &str) -> Option<Value> {
    api.node(node)["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .cloned()
}

fn taint_keys(api: &KubeApi, node: &str) -> Vec<(String, String)> {
    api.node(node)["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["key"].as_str().unwrap().to_string(),
                t["effect"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn writes(agent: &Agent, kind: &str, outcome: &str) -> f64 {
    sample(
        &agent.metrics(),
        &format!("gimbal_cluster_writes_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} "),
    )
    .unwrap_or(0.0)
}

/// Every request was one the agent is allowed and expected to make, with our token.
fn all_expected(requests: &[Request], node: &str) {
    for r in requests {
        assert_ne!(
            r.status, 401,
            "every request carries the kubeconfig's token: {r:?}"
        );
        assert_ne!(r.status, 404, "a path the agent should not use: {r:?}");
        assert_ne!(r.status, 415, "wrong content type: {r:?}");
        assert!(
            r.path == "/api/v1/nodes"
                || r.path.starts_with(&format!("/api/v1/nodes/{node}"))
                || r.path.starts_with("/api/v1/namespaces/"),
            "another node touched: {r:?}"
        );
        if r.method == "PATCH" {
            assert!(r.query.contains("fieldManager=gimbal"), "{r:?}");
        }
    }
}

#[test]
fn the_condition_merges_by_type_and_its_transition_time_moves_only_on_a_flip() {
    if !require_root("the_condition_merges_by_type_and_its_transition_time_moves_only_on_a_flip") {
        return;
    }
    let node = unique("node");
    let api = KubeApi::start(&[(node.as_str(), json!([]))]);
    let (agent, _state) = start(&api, &node, "node_condition = true");

    let first = wait_for("the first condition", Duration::from_secs(20), || {
        condition(&api, &node, "GimbalNodeDrain")
    });
    assert_eq!(first["status"], "False", "{first}");
    assert_eq!(first["reason"], "NodeHealthy", "{first}");
    assert_eq!(
        condition(&api, &node, "KernelDeadlock").unwrap()["reason"],
        "KernelHasNoDeadlock",
        "another writer's condition is kept (merged by type)"
    );
    let since = first["lastTransitionTime"].clone();
    // A heartbeat: written again, the transition time unmoved.
    let beat = wait_for("a heartbeat", Duration::from_secs(20), || {
        condition(&api, &node, "GimbalNodeDrain")
            .filter(|c| c["lastHeartbeatTime"] != first["lastHeartbeatTime"])
    });
    assert_eq!(beat["status"], "False");
    assert_eq!(beat["lastTransitionTime"], since, "no flip, no transition");

    gpu_fell_off_the_bus(&unique("condition"));
    let drained = wait_for("the condition to flip", Duration::from_secs(20), || {
        condition(&api, &node, "GimbalNodeDrain").filter(|c| c["status"] == "True")
    });
    assert_eq!(drained["reason"], "NodeDraining");
    let message = drained["message"].as_str().unwrap();
    assert!(
        message.contains("XID 79") && message.contains("reboot-node"),
        "{message}"
    );
    assert_ne!(drained["lastTransitionTime"], since, "a flip moves it");
    // The window (4 s) passes: healthy again, and the time moves once more.
    let healthy = wait_for(
        "the condition to flip back",
        Duration::from_secs(30),
        || condition(&api, &node, "GimbalNodeDrain").filter(|c| c["status"] == "False"),
    );
    assert_ne!(healthy["lastTransitionTime"], drained["lastTransitionTime"]);

    let requests = api.requests();
    all_expected(&requests, &node);
    for r in requests.iter().filter(|r| r.method == "PATCH") {
        assert_eq!(
            r.path,
            format!("/api/v1/nodes/{node}/status"),
            "conditions only: {r:?}"
        );
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/strategic-merge-patch+json")
        );
        let conditions = r.body.as_ref().unwrap()["status"]["conditions"]
            .as_array()
            .unwrap();
        assert_eq!(conditions.len(), 1, "only our own condition is sent: {r:?}");
    }
    assert!(writes(&agent, "condition", "written") >= 4.0);
    assert_eq!(agent.stop(), 0);
}

#[test]
fn a_taint_is_read_modified_written_with_a_conflict_retried_and_others_kept() {
    if !require_root("a_taint_is_read_modified_written_with_a_conflict_retried_and_others_kept") {
        return;
    }
    let node = unique("node");
    let others = [unique("peer"), unique("peer"), unique("peer")];
    let nvidia = json!([{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]);
    let drained = json!([{"key": "gimbal.io/drain", "effect": "NoSchedule"}]);
    // One of four nodes already tainted: ours makes two of four, within max 0.5.
    let api = KubeApi::start(&[
        (node.as_str(), nvidia),
        (others[0].as_str(), drained),
        (others[1].as_str(), json!([])),
        (others[2].as_str(), json!([])),
    ]);
    api.interfere_once(json!({"key": "example.com/maintenance", "effect": "PreferNoSchedule"}));
    let (agent, _state) = start(
        &api,
        &node,
        "taint = \"NoSchedule\"\ndry_run = false\nmax_tainted_share = 0.5",
    );
    wait_until(
        "the agent to read its node",
        Duration::from_secs(20),
        || api.requests().iter().any(|r| r.method == "GET"),
    );
    assert!(
        !api.requests().iter().any(|r| r.method == "PATCH"),
        "a healthy node is not written"
    );

    gpu_fell_off_the_bus(&unique("taint"));
    wait_until("the taint", Duration::from_secs(20), || {
        taint_keys(&api, &node).contains(&("gimbal.io/drain".into(), "NoSchedule".into()))
    });
    let keys = taint_keys(&api, &node);
    assert!(
        keys.contains(&("nvidia.com/gpu".into(), "NoSchedule".into())),
        "{keys:?}"
    );
    assert!(
        keys.contains(&("example.com/maintenance".into(), "PreferNoSchedule".into())),
        "the taint another writer added meanwhile is kept: {keys:?}"
    );
    let patches: Vec<Request> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(
        patches.iter().map(|r| r.status).collect::<Vec<_>>(),
        [409, 200],
        "a stale resourceVersion is refused, then re-read and retried"
    );
    for p in &patches {
        assert_eq!(
            p.content_type.as_deref(),
            Some("application/merge-patch+json")
        );
        assert!(
            p.body.as_ref().unwrap()["metadata"]["resourceVersion"].is_string(),
            "every taint patch carries its precondition: {p:?}"
        );
    }
    assert!(
        api.requests()
            .iter()
            .any(|r| r.method == "GET" && r.path == "/api/v1/nodes"),
        "the circuit breaker listed the nodes"
    );

    // The window passes: our taint goes, the others stay.
    wait_until("the untaint", Duration::from_secs(30), || {
        !taint_keys(&api, &node)
            .iter()
            .any(|(k, _)| k == "gimbal.io/drain")
    });
    let keys = taint_keys(&api, &node);
    assert_eq!(keys.len(), 2, "{keys:?}");
    wait_until("the untaint counted", Duration::from_secs(5), || {
        writes(&agent, "untaint", "written") == 1.0
    });
    assert_eq!(writes(&agent, "taint", "written"), 1.0);
    assert_eq!(
        writes(&agent, "taint", "conflict"),
        0.0,
        "the retry succeeded"
    );
    all_expected(&api.requests(), &node);
    for p in api.requests().iter().filter(|r| r.method == "PATCH") {
        assert_eq!(p.path, format!("/api/v1/nodes/{node}"), "{p:?}");
    }
    assert_eq!(agent.stop(), 0);
}

#[test]
fn the_circuit_breaker_holds_back_a_taint_and_dry_run_writes_nothing() {
    if !require_root("the_circuit_breaker_holds_back_a_taint_and_dry_run_writes_nothing") {
        return;
    }
    let drained = json!([{"key": "gimbal.io/drain", "effect": "NoSchedule"}]);
    // Two of four tainted already: a third is 75 %, over the default 10 % and over 0.5.
    let node = unique("node");
    let (a, b, c) = (unique("peer"), unique("peer"), unique("peer"));
    let api = KubeApi::start(&[
        (node.as_str(), json!([])),
        (a.as_str(), drained.clone()),
        (b.as_str(), drained),
        (c.as_str(), json!([])),
    ]);
    let (agent, _state) = start(
        &api,
        &node,
        "taint = \"NoSchedule\"\ndry_run = false\nmax_tainted_share = 0.5",
    );
    gpu_fell_off_the_bus(&unique("breaker"));
    wait_until(
        "the breaker to hold the taint back",
        Duration::from_secs(20),
        || writes(&agent, "taint", "circuit_open") >= 1.0,
    );
    assert!(
        !api.requests().iter().any(|r| r.method == "PATCH"),
        "nothing written past the breaker"
    );
    all_expected(&api.requests(), &node);
    assert_eq!(agent.stop(), 0);

    // Dry-run (the default): the taint it would add is counted and logged, nothing sent.
    let node = unique("node");
    let api = KubeApi::start(&[(node.as_str(), json!([]))]);
    let (agent, _state) = start(
        &api,
        &node,
        "taint = \"PreferNoSchedule\"\nmax_tainted_share = 1.0",
    );
    gpu_fell_off_the_bus(&unique("dry-run"));
    wait_until("a dry-run taint", Duration::from_secs(20), || {
        writes(&agent, "taint", "dry_run") >= 1.0
    });
    wait_until("a dry-run untaint", Duration::from_secs(30), || {
        writes(&agent, "untaint", "dry_run") >= 1.0
    });
    let requests = api.requests();
    assert!(
        !requests.iter().any(|r| r.method != "GET"),
        "dry-run only reads: {requests:?}"
    );
    assert!(taint_keys(&api, &node).is_empty());
    all_expected(&requests, &node);
    assert_eq!(agent.stop(), 0);
}

/// The readiness gate on a watched pod: "True" while its target is up, "False" once a
/// SIGKILL takes it down, "True" again when a new process brings it back; written only
/// when it flips, merged by type beside the kubelet's own conditions. (The error-budget
/// burn is not weighed here: one second down burns a 5-minute window for minutes, and the
/// gate would rightly stay shut while the target is degraded by it.)
#[test]
fn a_watched_pods_readiness_gate_follows_its_targets_verdict() {
    if !require_root("a_watched_pods_readiness_gate_follows_its_targets_verdict") {
        return;
    }
    let mut kubelet = Node::new();
    let pod = kubelet.pod(Driver::Systemd, "burstable", "shop", "web-0", "app");
    let first = spawn_in(workload().arg("pause"), &[pod.dir.join("cgroup.procs")]);
    let node = unique("node");
    let api = KubeApi::start(&[(node.as_str(), json!([]))]);
    api.add_pod("shop", "web-0");
    let target = format!(
        "readiness_gate = true\n[kubernetes]\nlog_root = \"{}\"\n[[targets]]\nname = \"web\"\nnamespace = \"shop\"\npod = \"web-*\"\n[targets.verdict]\nburn = false\n",
        kubelet.logs.0.display()
    );
    let (agent, _state) = start(&api, &node, &target);
    let gate = |status: &str| {
        api.pod("shop", "web-0")["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "gimbal.io/healthy" && c["status"] == status)
            .cloned()
    };
    let healthy = wait_for("the gate True", Duration::from_secs(20), || gate("True"));
    assert_eq!(healthy["reason"], "TargetHealthy", "{healthy}");

    // The API's times have whole seconds: the flip must come in a later one to show.
    std::thread::sleep(Duration::from_millis(1100));
    let mut first = first.into_inner();
    first.kill().unwrap();
    assert_eq!(
        gimbal_tests::wait_status(&mut first),
        libc::SIGKILL,
        "killed by our SIGKILL"
    );
    let down = wait_for("the gate False", Duration::from_secs(20), || gate("False"));
    let message = down["message"].as_str().unwrap();
    assert!(message.starts_with("target web: down"), "{message}");
    assert_ne!(down["lastTransitionTime"], healthy["lastTransitionTime"]);

    let _second = spawn_in(workload().arg("pause"), &[pod.dir.join("cgroup.procs")]);
    let back = wait_for("the gate True again", Duration::from_secs(30), || {
        gate("True").filter(|g| g["lastTransitionTime"] != healthy["lastTransitionTime"])
    });
    assert_ne!(back["lastTransitionTime"], down["lastTransitionTime"]);
    assert_eq!(
        api.pod("shop", "web-0")["status"]["conditions"][0]["type"],
        "Ready",
        "the kubelet's own condition is kept"
    );

    let requests = api.requests();
    all_expected(&requests, &node);
    let gates: Vec<&Request> = requests.iter().filter(|r| r.method == "PATCH").collect();
    assert_eq!(gates.len(), 3, "written on each flip only: {gates:?}");
    for r in gates {
        assert_eq!(r.path, "/api/v1/namespaces/shop/pods/web-0/status");
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/strategic-merge-patch+json")
        );
    }
    wait_until("the three writes counted", Duration::from_secs(5), || {
        writes(&agent, "readiness_gate", "written") == 3.0
    });
    assert_eq!(agent.stop(), 0);
}

/// A pod target's `[[restart]]` is an eviction: the first refused by the pod's
/// PodDisruptionBudget (429), audited as failed and retried after the backoff, the second
/// granted; in dry-run (the default) the eviction is audited and nothing is sent.
#[test]
fn a_pod_targets_restart_is_an_eviction_retried_past_its_disruption_budget() {
    if !require_root("a_pod_targets_restart_is_an_eviction_retried_past_its_disruption_budget") {
        return;
    }
    for mode in ["enforce", "dry-run"] {
        let mut kubelet = Node::new();
        let pod = kubelet.pod(Driver::Systemd, "burstable", "shop", "web-2", "app");
        let web = spawn_in(workload().arg("pause"), &[pod.dir.join("cgroup.procs")]);
        let node = unique("node");
        let api = KubeApi::start(&[(node.as_str(), json!([]))]);
        api.add_pod("shop", "web-2");
        api.refuse_evictions(1);
        let (agent, state) = start(
            &api,
            &node,
            &format!(
                "evictions = true\n[kubernetes]\nlog_root = \"{}\"\n[[targets]]\nname = \"web\"\nnamespace = \"shop\"\npod = \"web-*\"\n[[restart]]\ntarget = \"web\"\n[remediation]\nmode = \"{mode}\"\nbackoff = \"1s\"\n",
                kubelet.logs.0.display()
            ),
        );
        let mut web = web.into_inner();
        web.kill().unwrap();
        assert_eq!(gimbal_tests::wait_status(&mut web), libc::SIGKILL);
        let evictions = |api: &KubeApi| -> Vec<Request> {
            api.requests()
                .into_iter()
                .filter(|r| r.path.ends_with("/eviction"))
                .collect()
        };
        let outcomes = |what: &str| -> Vec<Value> {
            gimbal_tests::audit(&state)
                .into_iter()
                .filter(|e| {
                    e["action"] == "evict" && e["phase"] == "outcome" && e["result"] == what
                })
                .collect()
        };
        if mode == "enforce" {
            wait_until("the pod evicted", Duration::from_secs(40), || {
                !api.has_pod("shop", "web-2")
            });
            // What the kubelet does once the API deleted the pod.
            kubelet.remove(&pod);
            let posts = evictions(&api);
            assert_eq!(
                posts.iter().take(2).map(|r| r.status).collect::<Vec<_>>(),
                [429, 201],
                "refused by the budget, then granted: {posts:?}"
            );
            assert!(
                posts.iter().skip(2).all(|r| r.status == 404),
                "later tries while the alert still names it find it gone: {posts:?}"
            );
            for p in &posts {
                assert_eq!(p.method, "POST");
                assert_eq!(p.path, "/api/v1/namespaces/shop/pods/web-2/eviction");
            }
            wait_until("both outcomes audited", Duration::from_secs(10), || {
                !outcomes("failed").is_empty() && !outcomes("done").is_empty()
            });
            assert_eq!(
                outcomes("failed").len(),
                1,
                "only the budget's refusal failed"
            );
            let failed = &outcomes("failed")[0];
            assert!(
                failed["detail"]
                    .as_str()
                    .unwrap()
                    .contains("PodDisruptionBudget"),
                "{failed}"
            );
            assert_eq!(failed["cgroup"], "shop/web-2", "{failed}");
        } else {
            wait_until(
                "the dry-run eviction audited",
                Duration::from_secs(20),
                || !outcomes("dry_run").is_empty(),
            );
            assert_eq!(outcomes("dry_run")[0]["detail"], "would evict shop/web-2");
            assert!(evictions(&api).is_empty(), "dry-run sends no eviction");
            assert!(api.has_pod("shop", "web-2"));
        }
        all_expected(&api.requests(), &node);
        assert_eq!(agent.stop(), 0);
    }
}

/// The chart's ClusterRole grants exactly what the writer's requests need.
#[test]
fn the_requests_need_exactly_the_verbs_the_chart_grants() {
    if !require_root("the_requests_need_exactly_the_verbs_the_chart_grants") {
        return;
    }
    let mut kubelet = Node::new();
    let pod = kubelet.pod(Driver::Cgroupfs, "burstable", "shop", "web-1", "app");
    let web = spawn_in(workload().arg("pause"), &[pod.dir.join("cgroup.procs")]);
    let node = unique("node");
    let api = KubeApi::start(&[
        (node.as_str(), json!([])),
        (unique("peer").as_str(), json!([])),
    ]);
    api.add_pod("shop", "web-1");
    let (agent, _state) = start(
        &api,
        &node,
        &format!(
            "node_condition = true\ntaint = \"NoSchedule\"\ndry_run = false\nmax_tainted_share = 1.0\nreadiness_gate = true\nevictions = true\n[kubernetes]\nlog_root = \"{}\"\n[[targets]]\nname = \"web\"\nnamespace = \"shop\"\npod = \"web-*\"\n[[restart]]\ntarget = \"web\"\n[remediation]\nmode = \"enforce\"\n",
            kubelet.logs.0.display()
        ),
    );
    gpu_fell_off_the_bus(&unique("rbac"));
    wait_until("taint and untaint", Duration::from_secs(40), || {
        writes(&agent, "untaint", "written") >= 1.0
    });
    assert!(writes(&agent, "readiness_gate", "written") >= 1.0);
    let mut web = web.into_inner();
    web.kill().unwrap();
    gimbal_tests::wait_status(&mut web);
    wait_until("an eviction", Duration::from_secs(20), || {
        !api.has_pod("shop", "web-1")
    });
    assert_eq!(agent.stop(), 0);
    let used: BTreeSet<(String, String)> = api.requests().iter().map(Request::rbac).collect();
    let granted = chart_grants();
    assert_eq!(
        used, granted,
        "the requests made against the chart's ClusterRole"
    );
}

/// (verb, resource) pairs of the chart's ClusterRole with the writer turned on, rendered
/// by helm and validated against the API's schemas.
fn chart_grants() -> BTreeSet<(String, String)> {
    let text = packaging::helm_template(&[
        "--set",
        "cluster.nodeCondition=true,cluster.taint=NoSchedule,cluster.dryRun=false,cluster.readinessGate=true,cluster.evictions=true",
    ]);
    let docs = packaging::load_yaml(&text);
    let role = packaging::find(&docs, "ClusterRole");
    let mut grants = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        assert_eq!(rule["apiGroups"], json!([""]), "{rule}");
        for resource in rule["resources"].as_array().unwrap() {
            for verb in rule["verbs"].as_array().unwrap() {
                grants.insert((
                    verb.as_str().unwrap().to_string(),
                    resource.as_str().unwrap().to_string(),
                ));
            }
        }
    }
    let config = packaging::find(&docs, "ConfigMap")["data"]["gimbal.toml"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        config
            .contains("[cluster]\nnode_condition = true\ntaint = \"NoSchedule\"\nreadiness_gate = true\nevictions = true\ndry_run = false"),
        "{config}"
    );
    grants
}
