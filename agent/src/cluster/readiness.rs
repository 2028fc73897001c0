//! The readiness gate: a `gimbal.io/healthy` condition on a watched pod's status. A pod
//! whose spec lists it in `readinessGates` is Ready only while it is "True", so it leaves
//! its Services' endpoints (kube-proxy, ingresses, meshes stop sending to it) while its
//! target is degraded, and comes back when it recovers, without being killed. A pod that
//! does not declare the gate is unaffected by the condition.
use std::time::SystemTime;

use k8s_openapi::{
    api::core::v1::PodCondition, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};

use super::PodHealth;

/// The readiness gate's condition type.
pub const GATE: &str = "gimbal.io/healthy";

/// The strategic-merge patch of `pods/<name>/status` that sets the gate (conditions merge
/// by `type`, so the kubelet's own conditions stay), which flipped at `transition`.
pub fn patch(health: &PodHealth, transition: SystemTime) -> serde_json::Value {
    let (status, reason) = if health.ready {
        ("True", "TargetHealthy")
    } else {
        ("False", "TargetNotHealthy")
    };
    let condition = PodCondition {
        type_: GATE.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(health.why.clone()),
        last_transition_time: Timestamp::try_from(transition).ok().map(Time),
        ..PodCondition::default()
    };
    serde_json::json!({ "status": { "conditions": [condition] } })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_gate_is_one_condition_merged_by_type() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        let down = PodHealth {
            ready: false,
            why: "target web: degraded 40% (CPU pressure 35.0%)".into(),
        };
        assert_eq!(
            patch(&down, at),
            serde_json::json!({"status": {"conditions": [{
                "type": "gimbal.io/healthy",
                "status": "False",
                "reason": "TargetNotHealthy",
                "message": "target web: degraded 40% (CPU pressure 35.0%)",
                "lastTransitionTime": "2026-09-21T14:13:20Z",
            }]}})
        );
    }

    #[test]
    fn a_pod_two_targets_watch_is_ready_only_if_both_say_so() {
        let mut h = PodHealth {
            ready: true,
            why: "a: up".into(),
        };
        h.and(PodHealth {
            ready: false,
            why: "b: down".into(),
        });
        h.and(PodHealth {
            ready: true,
            why: "c: up".into(),
        });
        assert_eq!((h.ready, h.why.as_str()), (false, "b: down"));
    }
}
