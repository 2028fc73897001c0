//! The taint: `gimbal.io/drain` with the configured effect. `spec.taints` is an atomic list
//! (a patch replaces it whole), so it is changed by read-modify-write on the node's
//! resourceVersion; others' taints are kept as read. The circuit breaker counts the nodes
//! that already carry it.
use k8s_openapi::api::core::v1::{Node, Taint};

use crate::config::TaintEffect;

/// The taint key Gimbal owns.
pub const TAINT_KEY: &str = "gimbal.io/drain";

fn ours(t: &Taint) -> bool {
    t.key == TAINT_KEY
}

/// Whether `node` carries our taint (with any effect).
pub fn has(node: &Node) -> bool {
    taints(node).iter().any(ours)
}

fn taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// The node's taints with ours (`Some(effect)`) or without it (`None`); the rest kept.
pub fn with(node: &Node, effect: Option<TaintEffect>, why: &str) -> Vec<Taint> {
    let mut out: Vec<Taint> = taints(node).iter().filter(|t| !ours(t)).cloned().collect();
    if let Some(effect) = effect {
        out.push(Taint {
            key: TAINT_KEY.into(),
            effect: effect.name().into(),
            // A label value: at most 63 characters of [A-Za-z0-9._-].
            value: Some(label_value(why)),
            time_added: None,
        });
    }
    out
}

/// The JSON merge patch that sets `taints`, with the resourceVersion it was read at as a
/// precondition (the API server answers 409 if the node changed since).
pub fn patch(taints: &[Taint], resource_version: &str) -> serde_json::Value {
    serde_json::json!({
        "metadata": { "resourceVersion": resource_version },
        "spec": { "taints": taints },
    })
}

/// Whether one more tainted node stays within `max_share` of `nodes`.
pub fn breaker_allows(nodes: &[Node], max_share: f64) -> bool {
    let tainted = nodes.iter().filter(|n| has(n)).count();
    let total = nodes.len().max(1);
    (tainted + 1) as f64 / total as f64 <= max_share
}

fn label_value(why: &str) -> String {
    let v: String = why
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    v.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::NodeSpec;

    use super::*;

    fn node(taints: &[(&str, &str)]) -> Node {
        Node {
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|(k, e)| Taint {
                            key: k.to_string(),
                            effect: e.to_string(),
                            ..Taint::default()
                        })
                        .collect(),
                ),
                ..NodeSpec::default()
            }),
            ..Node::default()
        }
    }

    #[test]
    fn ours_is_added_or_removed_and_the_others_are_kept() {
        let n = node(&[("nvidia.com/gpu", "NoSchedule")]);
        let added = with(
            &n,
            Some(TaintEffect::PreferNoSchedule),
            "GPU 0000:3b:00 XID 79 (reboot-node)",
        );
        assert_eq!(added.len(), 2);
        assert_eq!(added[0].key, "nvidia.com/gpu");
        assert_eq!(added[1].key, TAINT_KEY);
        assert_eq!(added[1].effect, "PreferNoSchedule");
        assert_eq!(
            added[1].value.as_deref(),
            Some("GPU_0000_3b_00_XID_79__reboot-node")
        );
        let tainted = node(&[("nvidia.com/gpu", "NoSchedule"), (TAINT_KEY, "NoSchedule")]);
        assert!(has(&tainted));
        let removed = with(&tainted, None, "");
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].key, "nvidia.com/gpu");
    }

    #[test]
    fn the_breaker_holds_back_a_taint_past_the_share() {
        let mut nodes: Vec<Node> = (0..9).map(|_| node(&[])).collect();
        nodes.push(node(&[(TAINT_KEY, "NoSchedule")]));
        assert!(breaker_allows(&nodes, 0.2), "2 of 10");
        assert!(!breaker_allows(&nodes, 0.1), "2 of 10 > 10 %");
        assert!(
            !breaker_allows(&[], 0.5),
            "an empty list is no cluster to judge"
        );
    }

    #[test]
    fn a_hostile_reason_becomes_a_valid_label_value() {
        let v = label_value(&"é\"}\n".repeat(40));
        assert!(v.len() <= 63);
        assert!(v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)));
    }
}
