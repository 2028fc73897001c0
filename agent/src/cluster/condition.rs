//! The node condition, as node-problem-detector writes its own: one entry of
//! `status.conditions`, merged by `type` through a strategic-merge patch of `nodes/status`
//! (so other writers' conditions stay), `status` "True" while the node should take no new
//! work, `lastTransitionTime` moved only when the status flips, `lastHeartbeatTime` on every
//! write.
use std::time::SystemTime;

use k8s_openapi::{
    api::core::v1::NodeCondition, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};

use super::Desired;

/// The condition type Gimbal owns.
pub const CONDITION: &str = "GimbalNodeDrain";

/// The condition's status as the API spells it.
pub fn status(draining: bool) -> &'static str {
    if draining {
        "True"
    } else {
        "False"
    }
}

fn time(t: SystemTime) -> Option<Time> {
    Timestamp::try_from(t).ok().map(Time)
}

/// The condition for `desired`, which last flipped at `transition`.
pub fn condition(desired: &Desired, transition: SystemTime, now: SystemTime) -> NodeCondition {
    let (reason, message) = if desired.draining {
        ("NodeDraining", desired.why.clone())
    } else {
        ("NodeHealthy", "no fault that drains the node".to_string())
    };
    NodeCondition {
        type_: CONDITION.into(),
        status: status(desired.draining).into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: time(transition),
        last_heartbeat_time: time(now),
    }
}

/// The strategic-merge patch of `nodes/<name>/status` that sets `c` (conditions merge by
/// `type`).
pub fn patch(c: &NodeCondition) -> serde_json::Value {
    serde_json::json!({ "status": { "conditions": [c] } })
}

/// When the condition last flipped: the existing one's time if its status is what we
/// write, else now.
pub fn transition(existing: Option<&NodeCondition>, draining: bool, now: SystemTime) -> SystemTime {
    existing
        .filter(|c| c.status == status(draining))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| SystemTime::from(t.0))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn the_patch_merges_one_condition_by_type_with_rfc3339_times() {
        let d = Desired {
            draining: true,
            why: "GPU 0000:3b:00 XID 79 (reboot-node)".into(),
        };
        let p = patch(&condition(&d, at(1_790_000_000), at(1_790_000_060)));
        assert_eq!(
            p,
            serde_json::json!({"status": {"conditions": [{
                "type": "GimbalNodeDrain",
                "status": "True",
                "reason": "NodeDraining",
                "message": "GPU 0000:3b:00 XID 79 (reboot-node)",
                "lastTransitionTime": "2026-09-21T14:13:20Z",
                "lastHeartbeatTime": "2026-09-21T14:14:20Z",
            }]}})
        );
    }

    #[test]
    fn the_transition_time_moves_only_when_the_status_flips() {
        let existing = condition(
            &Desired {
                draining: false,
                why: String::new(),
            },
            at(100),
            at(200),
        );
        assert_eq!(transition(Some(&existing), false, at(300)), at(100));
        assert_eq!(transition(Some(&existing), true, at(300)), at(300));
        assert_eq!(transition(None, false, at(300)), at(300));
    }
}
