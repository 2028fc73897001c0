//! The Grafana dashboard (packaging/helm/gimbal/files/gimbal-dashboard.json): every query
//! parses as PromQL (promtool) once Grafana's variables are substituted, selects only
//! metrics of the contract (docs/metrics.md), uses only variables the dashboard defines,
//! and the chart's dashboard ConfigMap carries the same JSON.
mod packaging;

use std::collections::BTreeSet;

use packaging::*;
use serde_json::Value;

fn dashboard() -> Value {
    let path = chart().join("files/gimbal-dashboard.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Panels, with those nested in collapsed rows.
fn panels(d: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        out.push(p.clone());
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested.iter().cloned());
        }
    }
    out
}

/// (where, query) of every panel target and every query variable's selector.
fn queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_else(|| {
                panic!("panel {:?} target {} has no expr", p["title"], t["refId"])
            });
            out.push((
                format!("panel {:?} {}", p["title"], t["refId"]),
                expr.into(),
            ));
        }
    }
    for v in variables(d).filter(|v| v["type"] == "query") {
        let q = v["query"]["query"].as_str().unwrap();
        // label_values(SELECTOR, label): the selector is PromQL.
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.rsplit_once(','))
            .map(|(sel, _)| sel.trim().to_string())
            .unwrap_or_else(|| panic!("variable {}: expected label_values(...): {q}", v["name"]));
        out.push((format!("variable {}", v["name"]), inner));
    }
    out
}

fn variables(d: &Value) -> impl Iterator<Item = &Value> {
    d["templating"]["list"].as_array().unwrap().iter()
}

/// Grafana's built-in variables, as Prometheus would see them after substitution.
const GLOBALS: &[(&str, &str)] = &[
    ("__rate_interval", "1m"),
    ("__interval", "30s"),
    ("__range", "6h"),
];

/// Replaces `$name` and `${name}`: globals by a duration, dashboard variables by `.*`
/// (they sit in regex matchers). Returns the unknown names left.
fn substitute(expr: &str, defined: &BTreeSet<String>) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut unknown = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = match after.strip_prefix('{') {
            Some(b) => {
                let end = b.find('}').expect("closed ${");
                (&b[..end], end + 2)
            }
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        if let Some((_, v)) = GLOBALS.iter().find(|(g, _)| *g == name) {
            out.push_str(v);
        } else {
            if !defined.contains(name) {
                unknown.push(name.to_string());
            }
            out.push_str(".*");
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    (out, unknown)
}

fn substituted(d: &Value) -> Vec<(String, String)> {
    let defined: BTreeSet<String> = variables(d)
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    queries(d)
        .into_iter()
        .map(|(what, q)| {
            let (expr, unknown) = substitute(&q, &defined);
            assert!(
                unknown.is_empty(),
                "{what} uses undefined variables {unknown:?}: {q}"
            );
            (what, expr)
        })
        .collect()
}

#[test]
fn every_query_parses_as_promql() {
    let exprs = substituted(&dashboard());
    assert!(exprs.len() >= 20, "{} queries", exprs.len());
    if let Some(err) = promql_syntax_errors(&exprs) {
        panic!("promtool rejects dashboard queries:\n{err}");
    }
}

#[test]
fn the_syntax_check_catches_a_broken_query() {
    let broken = vec![("broken".to_string(), "sum by (le) (rate(x[5m])".to_string())];
    assert!(promql_syntax_errors(&broken).is_some());
}

#[test]
fn every_query_selects_only_contract_metrics() {
    let contract = contract();
    let mut used = BTreeSet::new();
    for (what, expr) in substituted(&dashboard()) {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "{what} selects no metric: {expr}");
        for name in names {
            let metric = contract_metric(&contract, &name)
                .unwrap_or_else(|| panic!("{what}: {name} is not in docs/metrics.md"));
            used.insert(metric);
        }
    }
    // The panels the dashboard promises.
    for m in [
        "gimbal_target_up",
        "gimbal_target_availability_ratio",
        "gimbal_target_reliability_ratio",
        "gimbal_target_mttr_seconds",
        "gimbal_target_latency_sli_ratio",
        "gimbal_syscall_latency_seconds",
        "gimbal_syscall_errors_total",
        "gimbal_tcp_retransmits_total",
        "gimbal_process_exits_total",
        "gimbal_probe_attached",
        "gimbal_events_dropped_total",
        "gimbal_alerts",
    ] {
        assert!(used.contains(m), "no panel shows {m}");
    }
}

#[test]
fn latency_panels_are_a_heatmap_and_a_p99_by_cgroup_with_classic_or_native_histograms() {
    let d = dashboard();
    let all = panels(&d);
    let heatmap = all
        .iter()
        .find(|p| p["type"] == "heatmap")
        .expect("a heatmap panel");
    let t = &heatmap["targets"][0];
    assert_eq!(t["format"], "heatmap");
    assert!(t["expr"]
        .as_str()
        .unwrap()
        .contains("gimbal_syscall_latency_seconds_bucket"));
    // A Prometheus with native histograms enabled stores no _bucket series: the heatmap
    // has a target over the native one too, shown only where no classic buckets are.
    let native = |e: &str| e.contains("gimbal_syscall_latency_seconds{");
    let b = &heatmap["targets"][1];
    assert_eq!(b["format"], "heatmap");
    let b = b["expr"].as_str().unwrap();
    assert!(native(b) && b.contains("unless on()"), "{b}");
    // The p99: over the classic buckets, or else over the native histogram.
    assert!(all.iter().any(
        |p| p["targets"].as_array().is_some_and(|ts| ts.iter().any(|t| {
            let e = t["expr"].as_str().unwrap_or_default();
            e.starts_with("histogram_quantile(0.99,")
                && e.contains("by (cgroup, le)")
                && e.contains(" or histogram_quantile(0.99, sum by (cgroup) (")
                && native(e)
        }))
    ));
    // No panel reads a classic-only series of the histogram without a native fallback.
    for p in &all {
        for t in p["targets"].as_array().into_iter().flatten() {
            let e = t["expr"].as_str().unwrap_or_default();
            let classic = ["_bucket", "_count", "_sum"]
                .iter()
                .any(|s| e.contains(&format!("gimbal_syscall_latency_seconds{s}")));
            assert!(
                !classic
                    || native(e)
                    || p["targets"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|o| { native(o["expr"].as_str().unwrap_or_default()) }),
                "panel {:?} goes blank with native histograms: {e}",
                p["title"]
            );
        }
    }
    // Every syscall, timed or not, counted either way.
    assert!(all.iter().any(
        |p| p["targets"]
            .as_array()
            .is_some_and(|ts| ts.iter().any(|t| t["expr"]
                .as_str()
                .unwrap_or_default()
                .contains("rate(gimbal_syscalls_total{")))
    ));
}

#[test]
fn panels_use_the_datasource_variable_and_have_unique_ids() {
    let d = dashboard();
    let names: Vec<&str> = variables(&d).map(|v| v["name"].as_str().unwrap()).collect();
    for want in ["datasource", "instance", "target"] {
        assert!(names.contains(&want), "variables {names:?} lack {want}");
    }
    let ds = variables(&d).find(|v| v["name"] == "datasource").unwrap();
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let mut ids = BTreeSet::new();
    for p in panels(&d) {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate id {}",
            p["id"]
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }
    assert!(d["uid"].is_string() && d["title"].is_string());
}

#[test]
fn chart_configmap_carries_the_same_dashboard() {
    let docs = load_yaml(&helm_template(&["--set", "dashboard.enabled=true"]));
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "gimbal-dashboard")
        .expect("the dashboard ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let embedded: Value = serde_json::from_str(cm["data"]["gimbal.json"].as_str().unwrap())
        .expect("the ConfigMap holds JSON");
    assert_eq!(embedded, dashboard());
    // Off by default.
    let docs = load_yaml(&helm_template(&[]));
    assert!(!docs
        .iter()
        .any(|d| d["metadata"]["name"] == "gimbal-dashboard"));
}

#[test]
fn the_install_doc_points_at_the_dashboard_and_the_rules() {
    let doc = std::fs::read_to_string(workspace().join("docs/install-kubernetes.md")).unwrap();
    for path in [
        "packaging/helm/gimbal/files/gimbal-dashboard.json",
        "packaging/helm/gimbal/files/gimbal-rules.yml",
        "packaging/kubernetes/gimbal.yaml",
    ] {
        assert!(
            doc.contains(path),
            "docs/install-kubernetes.md does not mention {path}"
        );
    }
}

#[test]
fn metric_names_skips_functions_labels_strings_and_keywords() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (cgroup, le) (rate(a_bucket{x="b{c}", y=~".*"}[5m])))
           and ignoring (window) (1 - b{window="1h"}) > 14.4 * (1 - 0.999)
           or (c unless c offset 5m) or sum(d) without (e) > bool 1e-3 or on(f) group_left(g) up"#,
    );
    assert_eq!(names, ["a_bucket", "b", "c", "c", "d", "up"]);
}
