//! The Kubernetes packaging, checked without a cluster: the Helm chart lints strictly, its
//! renders validate against Kubernetes 1.28 and 1.31 schemas (unknown fields are errors),
//! the DaemonSet holds the documented security posture, its config passes the real agent's
//! check, the committed plain manifest is current, and the alerting rules pass promtool.
//! Tools: `cargo xtask setup` (helm and kubernetes-validate in target/tools/), promtool.
mod packaging;

use std::collections::BTreeSet;

use gimbal_tests::{pki::pki, sibling_binary, TempDir};
use packaging::*;
use serde_json::{json, Value};

const VERSIONS: &[&str] = &["1.28.0", "1.31.0"];
const CRDS: &str = "monitoring.coreos.com/v1";

fn daemonset(docs: &[Value]) -> &Value {
    find(docs, "DaemonSet")
}

fn container(docs: &[Value]) -> &Value {
    let containers = daemonset(docs)["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1, "one container, the agent");
    &containers[0]
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn chart_lints_strictly_with_defaults_and_every_option() {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    for extra in [&[][..], ALL_OPTIONAL] {
        let mut args = vec!["lint", "--strict", chart];
        args.extend_from_slice(extra);
        let (ok, out, err) = run(&tool("helm"), &args, "");
        assert!(ok, "helm {}:\n{out}{err}", args.join(" "));
    }
}

#[test]
fn renders_validate_strictly_against_kubernetes_schemas() {
    for (what, extra) in [("defaults", &[][..]), ("every option on", ALL_OPTIONAL)] {
        let (docs, errors) = load_and_validate(&helm_template(extra), VERSIONS, CRDS);
        assert!(errors.is_empty(), "{what}:\n{}", errors.join("\n"));
        let kinds: BTreeSet<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        let mut want = vec![
            "ConfigMap",
            "DaemonSet",
            "NetworkPolicy",
            "Service",
            "ServiceAccount",
        ];
        if !extra.is_empty() {
            want.extend(["PrometheusRule", "ServiceMonitor"]);
        }
        assert_eq!(kinds, want.into_iter().collect(), "{what}");
        // Only the prometheus-operator kinds escape the schema check.
        for d in docs.iter().filter(|d| d["apiVersion"] == CRDS) {
            assert!(
                ["PrometheusRule", "ServiceMonitor"].contains(&d["kind"].as_str().unwrap()),
                "{d}"
            );
        }
    }
}

#[test]
fn validation_rejects_an_unknown_field() {
    // The check above is only worth something if strict mode catches typos.
    let render = helm_template(&[]).replace("hostPID: true", "hostPIDs: true");
    let (_, errors) = load_and_validate(&render, VERSIONS, CRDS);
    assert!(
        errors.iter().any(|e| e.contains("hostPIDs")),
        "a misspelt field passed validation: {errors:?}"
    );
}

#[test]
fn daemonset_runs_with_capabilities_not_privileges() {
    let docs = load_yaml(&helm_template(&[]));
    let pod = &daemonset(&docs)["spec"]["template"]["spec"];
    let c = container(&docs);
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsUser"], 0);
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    let added: BTreeSet<String> = strings(&sc["capabilities"]["add"]).into_iter().collect();
    // SYSLOG: /dev/kmsg for GPU XIDs where kernel.dmesg_restrict = 1; SYS_PTRACE: other users'
    // /proc/<pid>/environ for training-job ranks (docs/install-kubernetes.md).
    let documented: BTreeSet<String> = [
        "BPF",
        "PERFMON",
        "DAC_READ_SEARCH",
        "SYS_RESOURCE",
        "SYSLOG",
        "SYS_PTRACE",
    ]
    .map(String::from)
    .into();
    assert_eq!(added, documented);
    assert_eq!(sc["seccompProfile"], json!({"type": "RuntimeDefault"}));
    assert_eq!(pod["hostPID"], true);
    assert_ne!(pod["hostNetwork"], true);
    assert_ne!(pod["hostIPC"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert!(
        pod["tolerations"].as_array().unwrap().contains(&json!(
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        )),
        "{}",
        pod["tolerations"]
    );
    assert!(pod["securityContext"].get("privileged").is_none());
}

#[test]
fn daemonset_mounts_exactly_the_documented_host_paths() {
    let docs = load_yaml(&helm_template(&[]));
    let pod = &daemonset(&docs)["spec"]["template"]["spec"];
    let c = container(&docs);
    // host path -> (type, mount path, read-only)
    let mut got = BTreeSet::new();
    for v in pod["volumes"].as_array().unwrap() {
        let Some(host) = v.get("hostPath") else {
            continue;
        };
        let mount = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == v["name"])
            .unwrap_or_else(|| panic!("volume {} is not mounted", v["name"]));
        got.insert((
            host["path"].as_str().unwrap().to_string(),
            host["type"].as_str().unwrap().to_string(),
            mount["mountPath"].as_str().unwrap().to_string(),
            mount["readOnly"] == true,
        ));
    }
    let want: BTreeSet<_> = [
        (
            "/var/lib/gimbal",
            "DirectoryOrCreate",
            "/var/lib/gimbal",
            false,
        ),
        ("/sys/fs/cgroup", "Directory", "/sys/fs/cgroup", true),
        (
            "/sys/kernel/tracing",
            "Directory",
            "/sys/kernel/tracing",
            true,
        ),
        ("/sys/kernel/btf", "Directory", "/sys/kernel/btf", true),
        // GPU XIDs from the kernel log (docs/install-kubernetes.md).
        ("/dev/kmsg", "CharDevice", "/dev/kmsg", true),
        // Namespace, pod and container names from the kubelet's layout (same document).
        ("/var/log/pods", "DirectoryOrCreate", "/var/log/pods", true),
        (
            "/var/log/containers",
            "DirectoryOrCreate",
            "/var/log/containers",
            true,
        ),
    ]
    .map(|(h, t, m, ro)| (h.to_string(), t.to_string(), m.to_string(), ro))
    .into();
    assert_eq!(got, want);
    // bpffs only on request.
    let docs = load_yaml(&helm_template(&["--set", "mountBpffs=true"]));
    let pod = &daemonset(&docs)["spec"]["template"]["spec"];
    assert!(pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["hostPath"]["path"] == "/sys/fs/bpf"));
}

#[test]
fn probes_command_ports_and_scrape_annotations_match_the_agent() {
    let docs = load_yaml(&helm_template(&[]));
    let c = container(&docs);
    assert_eq!(strings(&c["command"]), ["/usr/bin/gimbal"]);
    assert_eq!(
        strings(&c["args"]),
        ["run", "--config", "/etc/gimbal/gimbal.toml"]
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(
        c["ports"],
        json!([{"name": "metrics", "containerPort": 9977, "protocol": "TCP"}])
    );
    let meta = &daemonset(&docs)["spec"]["template"]["metadata"];
    assert_eq!(meta["annotations"]["prometheus.io/scrape"], "true");
    assert_eq!(meta["annotations"]["prometheus.io/port"], "9977");
    assert_eq!(meta["annotations"]["prometheus.io/path"], "/metrics");
    let service = find(&docs, "Service");
    assert_eq!(service["spec"]["clusterIP"], "None");
    assert_eq!(service["spec"]["ports"][0]["name"], "metrics");
    assert_eq!(service["spec"]["ports"][0]["port"], 9977);
    let strategy = &daemonset(&docs)["spec"]["updateStrategy"];
    assert_eq!(strategy["type"], "RollingUpdate");
    assert!(strategy["rollingUpdate"]["maxUnavailable"].is_string());
    assert_eq!(
        daemonset(&docs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        30
    );
    // extraArgs go after the config.
    let docs = load_yaml(&helm_template(&["--set", "extraArgs={--listen,[::]:9977}"]));
    assert_eq!(
        strings(&container(&docs)["args"])[3..],
        ["--listen", "[::]:9977"]
    );
}

#[test]
fn every_taint_is_tolerated_on_request() {
    let docs = load_yaml(&helm_template(&["--set", "tolerateAllTaints=true"]));
    let tolerations = &daemonset(&docs)["spec"]["template"]["spec"]["tolerations"];
    assert!(
        tolerations
            .as_array()
            .unwrap()
            .contains(&json!({"operator": "Exists"})),
        "{tolerations}"
    );
}

#[test]
fn configmap_config_passes_the_agents_check_and_listens_on_the_pod() {
    let docs = load_yaml(&helm_template(&[]));
    let toml = find(&docs, "ConfigMap")["data"]["gimbal.toml"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(toml.contains("listen = \"0.0.0.0:9977\""), "{toml}");
    assert!(toml.contains("state_dir = \"/var/lib/gimbal\""), "{toml}");
    let dir = TempDir::new("chart-config");
    let file = dir.0.join("gimbal.toml");
    std::fs::write(&file, &toml).unwrap();
    let (ok, out, err) = run(
        &sibling_binary("gimbal"),
        &["check-config", file.to_str().unwrap()],
        "",
    );
    assert!(ok, "gimbal check-config on the chart's config:\n{out}{err}");
}

#[test]
fn a_config_that_does_not_listen_on_the_pod_port_is_refused() {
    let dir = TempDir::new("chart-bad-config");
    for (config, extra) in [
        ("[agent]\nlisten = \"127.0.0.1:9977\"\n", None),
        ("[agent]\ninterval = \"1s\"\n", None),
        ("[agent]\nlisten = \"0.0.0.0:9977\"\n", Some("port=9100")),
    ] {
        let file = dir.0.join("gimbal.toml");
        std::fs::write(&file, config).unwrap();
        let set_file = format!("config={}", file.display());
        let chart = chart();
        let mut args = vec![
            "template",
            "gimbal",
            chart.to_str().unwrap(),
            "--set-file",
            &set_file,
        ];
        if let Some(e) = extra {
            args.extend(["--set", e]);
        }
        let (ok, _, err) = run(&tool("helm"), &args, "");
        assert!(
            !ok && err.contains("[agent] listen must be"),
            "{config:?} {extra:?}: {err}"
        );
    }
}

#[test]
fn a_changed_config_rolls_the_pods() {
    let checksum = |args: &[&str]| {
        let docs = load_yaml(&helm_template(args));
        daemonset(&docs)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let base = checksum(&[]);
    assert_eq!(base.len(), 64, "a sha256: {base}");
    assert_eq!(base, checksum(&[]), "the same config gives the same hash");
    let dir = TempDir::new("chart-config-change");
    let file = dir.0.join("gimbal.toml");
    std::fs::write(
        &file,
        "[agent]\nlisten = \"0.0.0.0:9977\"\ninterval = \"2s\"\n",
    )
    .unwrap();
    let set_file = format!("config={}", file.display());
    assert_ne!(base, checksum(&["--set-file", &set_file]));
}

#[test]
fn committed_plain_manifests_are_fresh_renders() {
    // The defaults, and the web config from a Secret (xtask's MANIFESTS).
    for (file, values) in [
        ("gimbal.yaml", &[][..]),
        (
            "gimbal-web-config.yaml",
            &["--set", "webConfig.enabled=true"][..],
        ),
    ] {
        plain_manifest_is_a_fresh_render(file, values);
    }
}

fn plain_manifest_is_a_fresh_render(file: &str, values: &[&str]) {
    let path = workspace().join("packaging/kubernetes").join(file);
    let committed = std::fs::read_to_string(&path).unwrap();
    let fresh = helm_template(values);
    let header = committed.strip_suffix(fresh.as_str()).unwrap_or_else(|| {
        panic!(
            "{} differs from the chart rendered with {values:?}: run `cargo xtask manifests`",
            path.display()
        )
    });
    // The part before the render is the namespace, allowed to run the agent's pods.
    let docs = load_yaml(header);
    assert_eq!(docs.len(), 1, "only the Namespace precedes the render");
    assert_eq!(docs[0]["kind"], "Namespace");
    assert_eq!(docs[0]["metadata"]["name"], "gimbal");
    assert_eq!(
        docs[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    let (docs, errors) = load_and_validate(&committed, VERSIONS, CRDS);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert!(docs
        .iter()
        .all(|d| d["kind"] == "Namespace" || d["metadata"]["namespace"] == "gimbal"));
}

#[test]
fn service_monitor_scrapes_the_metrics_port_as_job_gimbal() {
    let docs = load_yaml(&helm_template(&[
        "--set",
        "serviceMonitor.enabled=true,serviceMonitor.labels.release=prom",
    ]));
    let sm = find(&docs, "ServiceMonitor");
    assert_eq!(sm["apiVersion"], CRDS);
    assert_eq!(sm["metadata"]["labels"]["release"], "prom");
    // job comes from this Service label, whose value is the chart name.
    assert_eq!(sm["spec"]["jobLabel"], "app.kubernetes.io/name");
    let service = find(&docs, "Service");
    assert_eq!(
        service["metadata"]["labels"]["app.kubernetes.io/name"],
        "gimbal"
    );
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&service["metadata"]["labels"][k], v, "selector {k}");
    }
    assert_eq!(
        strings(&sm["spec"]["namespaceSelector"]["matchNames"]),
        ["gimbal"]
    );
    let endpoints = sm["spec"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["port"], "metrics");
    assert_eq!(endpoints[0]["path"], "/metrics");
    let allowed: BTreeSet<&str> = ["apiVersion", "kind", "metadata", "spec"].into();
    assert!(sm
        .as_object()
        .unwrap()
        .keys()
        .all(|k| allowed.contains(k.as_str())));
}

fn rules_file() -> Vec<Value> {
    let path = chart().join("files/gimbal-rules.yml");
    load_yaml(&std::fs::read_to_string(path).unwrap())
}

#[test]
fn prometheus_rule_embeds_the_rules_file() {
    let rules = rules_file();
    assert_eq!(rules.len(), 1);
    let docs = load_yaml(&helm_template(&["--set", "prometheusRule.enabled=true"]));
    let pr = find(&docs, "PrometheusRule");
    assert_eq!(pr["apiVersion"], CRDS);
    assert_eq!(
        pr["spec"], rules[0],
        "spec must be the rules file, unchanged"
    );
    // The agent's scrape job is configurable; only GimbalAgentDown changes.
    let docs = load_yaml(&helm_template(&[
        "--set",
        "prometheusRule.enabled=true,prometheusRule.job=kubernetes-pods",
    ]));
    let text = find(&docs, "PrometheusRule")["spec"].to_string();
    assert!(
        text.contains(r#"up{job=\"kubernetes-pods\"} == 0"#),
        "{text}"
    );
    assert_eq!(text.matches("job=").count(), 1, "{text}");
}

#[test]
fn rules_link_in_packaging_prometheus_is_the_chart_file() {
    let link = workspace().join("packaging/prometheus/gimbal-rules.yml");
    assert_eq!(
        std::fs::canonicalize(&link).unwrap(),
        std::fs::canonicalize(chart().join("files/gimbal-rules.yml")).unwrap(),
        "{} must link to the chart's copy (one copy of the rules)",
        link.display()
    );
}

#[test]
fn rules_pass_promtool_check_and_unit_tests() {
    let promtool = std::path::Path::new("promtool");
    let rules = chart().join("files/gimbal-rules.yml");
    let (ok, out, err) = run(promtool, &["check", "rules", rules.to_str().unwrap()], "");
    assert!(ok, "promtool check rules:\n{out}{err}");
    let tests = workspace().join("packaging/prometheus/gimbal-rules.test.yml");
    let (ok, out, err) = run(promtool, &["test", "rules", tests.to_str().unwrap()], "");
    assert!(ok, "promtool test rules:\n{out}{err}");
}

#[test]
fn every_alert_is_unit_tested() {
    let alerts: BTreeSet<String> = rules_file()[0]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect();
    let tests = workspace().join("packaging/prometheus/gimbal-rules.test.yml");
    let tests = &load_yaml(&std::fs::read_to_string(tests).unwrap())[0];
    let mut fired = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for t in tests["tests"].as_array().unwrap() {
        for case in t["alert_rule_test"].as_array().into_iter().flatten() {
            let name = case["alertname"].as_str().unwrap().to_string();
            if case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()) {
                fired.insert(name);
            } else {
                silent.insert(name);
            }
        }
    }
    assert_eq!(fired, alerts, "each alert has a case where it fires");
    // Cases where it must not fire: explicit empty expectations, or the unit's other
    // series (which promtool would report as unexpected alerts).
    assert!(silent.len() >= alerts.len() / 2, "{silent:?}");
}

#[test]
fn rules_use_only_contract_metrics() {
    let contract = contract();
    for group in rules_file()[0]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let expr = rule["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr}");
            for name in names {
                assert!(
                    name == "up" || contract_metric(&contract, &name).is_some(),
                    "{}: {name} is not in docs/metrics.md",
                    if rule["alert"].is_null() {
                        &rule["record"]
                    } else {
                        &rule["alert"]
                    }
                );
            }
        }
    }
}

#[test]
fn dockerfile_installs_the_deb_and_runs_the_agent_as_the_chart_does() {
    let text = std::fs::read_to_string(workspace().join("packaging/container/Dockerfile")).unwrap();
    assert!(text.contains("FROM debian:bookworm-slim"), "{text}");
    let deb = format!(
        "ARG GIMBAL_DEB=gimbal_{}-1_amd64.deb",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        text.contains(&deb),
        "the default .deb must be this version's: {deb}"
    );
    assert!(
        text.contains(r#"ENTRYPOINT ["/usr/bin/gimbal"]"#)
            && text.contains(r#"CMD ["run", "--config", "/etc/gimbal/gimbal.toml"]"#),
        "{text}"
    );
}

#[test]
fn network_policy_admits_only_the_scrapers_to_the_metrics_port() {
    let docs = load_yaml(&helm_template(&[]));
    let policy = find(&docs, "NetworkPolicy");
    let pod_labels = &daemonset(&docs)["spec"]["template"]["metadata"]["labels"];
    for (k, v) in policy["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &pod_labels[k], v,
            "the policy selects the agent's pods by {k}"
        );
    }
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    let ingress = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 1, "{ingress:?}");
    assert_eq!(
        ingress[0]["ports"],
        json!([{"port": "metrics", "protocol": "TCP"}])
    );
    assert_eq!(
        ingress[0]["from"],
        json!([{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]),
        "by default only pods labelled as Prometheus"
    );
    let off = load_yaml(&helm_template(&["--set", "networkPolicy.enabled=false"]));
    assert!(off.iter().all(|d| d["kind"] != "NetworkPolicy"));
}

/// The values of a web config from a Secret, scraped with a CA, a client certificate and
/// basic auth.
const WEB: &[&str] = &[
    "--set",
    "webConfig.enabled=true,serviceMonitor.enabled=true,\
     serviceMonitor.tlsConfig.serverName=gimbal.gimbal.svc,\
     serviceMonitor.tlsConfig.ca.secret.name=scrape,serviceMonitor.tlsConfig.ca.secret.key=ca.crt,\
     serviceMonitor.basicAuth.username.name=scrape,serviceMonitor.basicAuth.username.key=user,\
     serviceMonitor.basicAuth.password.name=scrape,serviceMonitor.basicAuth.password.key=password",
];

#[test]
fn a_web_config_from_a_secret_is_mounted_read_only_and_scraped_over_https() {
    let (docs, errors) = load_and_validate(&helm_template(WEB), VERSIONS, CRDS);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    let pod = &daemonset(&docs)["spec"]["template"]["spec"];
    let c = container(&docs);
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "web-config")
        .expect("a web-config volume");
    assert_eq!(volume["secret"]["secretName"], "gimbal-web");
    // 0400: the server's key is in it; the agent runs as uid 0.
    assert_eq!(volume["secret"]["defaultMode"], 0o400);
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "web-config")
        .expect("the web config mounted");
    assert_eq!(mount["mountPath"], "/etc/gimbal/web");
    assert_eq!(mount["readOnly"], true);
    // The kubelet sends no credentials: by default its probes only connect.
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["tcpSocket"], json!({"port": "metrics"}), "{probe}");
        assert!(c[probe].get("httpGet").is_none(), "{probe}");
    }
    let meta = &daemonset(&docs)["spec"]["template"]["metadata"];
    assert_eq!(meta["annotations"]["prometheus.io/scheme"], "https");
    let endpoint = &find(&docs, "ServiceMonitor")["spec"]["endpoints"][0];
    assert_eq!(endpoint["scheme"], "https");
    assert_eq!(endpoint["tlsConfig"]["serverName"], "gimbal.gimbal.svc");
    assert_eq!(endpoint["tlsConfig"]["ca"]["secret"]["key"], "ca.crt");
    assert_eq!(endpoint["basicAuth"]["password"]["key"], "password");

    // web_config sits in [agent], and the real agent's check takes the config with a real
    // web config at that path (moved here: the Secret's path does not exist off a pod).
    let toml = find(&docs, "ConfigMap")["data"]["gimbal.toml"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        toml.starts_with("[agent]\nweb_config = \"/etc/gimbal/web/web.yml\"\n"),
        "{toml}"
    );
    let dir = TempDir::new("chart-web-config");
    pki(&dir.0);
    std::fs::write(
        dir.0.join("web.yml"),
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
    )
    .unwrap();
    let file = dir.0.join("gimbal.toml");
    let web = dir.0.join("web.yml");
    std::fs::write(
        &file,
        toml.replace("/etc/gimbal/web/web.yml", web.to_str().unwrap()),
    )
    .unwrap();
    let (ok, out, err) = run(
        &sibling_binary("gimbal"),
        &["check-config", file.to_str().unwrap()],
        "",
    );
    assert!(ok, "gimbal check-config on the chart's config:\n{out}{err}");

    // Off: nothing of it.
    let docs = load_yaml(&helm_template(&["--set", "serviceMonitor.enabled=true"]));
    let render = serde_json::to_string(&docs).unwrap();
    for absent in ["web-config", "web_config", "https", "tcpSocket"] {
        assert!(!render.contains(absent), "{absent} without webConfig");
    }
}

#[test]
fn probes_go_over_https_on_request_and_web_config_is_not_set_twice() {
    let docs = load_yaml(&helm_template(&[
        "--set",
        "webConfig.enabled=true,webConfig.probes=https",
    ]));
    let c = container(&docs);
    assert_eq!(c["livenessProbe"]["httpGet"]["scheme"], "HTTPS");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
    let dir = TempDir::new("chart-web-bad");
    for (config, extra, says) in [
        (
            "[agent]\nlisten = \"0.0.0.0:9977\"\nweb_config = \"/x.yml\"\n",
            "webConfig.enabled=true",
            "leave web_config out",
        ),
        (
            "[agent]\nlisten = \"0.0.0.0:9977\"\n",
            "webConfig.enabled=true,webConfig.probes=exec",
            "webConfig.probes",
        ),
    ] {
        let file = dir.0.join("gimbal.toml");
        std::fs::write(&file, config).unwrap();
        let set_file = format!("config={}", file.display());
        let chart = chart();
        let args = [
            "template",
            "gimbal",
            chart.to_str().unwrap(),
            "--set-file",
            &set_file,
            "--set",
            extra,
        ];
        let (ok, _, err) = run(&tool("helm"), &args, "");
        assert!(!ok && err.contains(says), "{extra}: {err}");
    }
}
