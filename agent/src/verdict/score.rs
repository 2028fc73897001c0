//! The node's load score for the scheduler side: one number in [0, 1] per node, in the form
//! the descheduler's Prometheus-driven `LowNodeUtilization` reads (a sample per node, values
//! in [0, 1]; the recording rule in packaging/prometheus gives it `instance` = the node).
//! 0 is an idle, healthy node; 1 is a node to take work off. It is the worst of:
//! - the node's own verdict: draining or down (a GPU that needs a reset) is 1;
//! - the host's CPU pressure (PSI `some avg10`, percent / 100);
//! - the load the watched targets shed: the mean of (1 - weight) over them, so a node
//!   whose services are degraded or draining looks as loaded as it is to their users.
use std::collections::BTreeMap;

use super::{State, Verdict};

pub fn node_load(
    node: &Verdict,
    targets: &BTreeMap<String, Verdict>,
    host_pressure: Option<f64>,
) -> f64 {
    let fault = match node.state {
        State::Drain | State::Down => 1.0,
        State::Up | State::Degraded => 1.0 - f64::from(node.weight) / 100.0,
    };
    let pressure = host_pressure.filter(|p| p.is_finite()).unwrap_or(0.0) / 100.0;
    let shed = if targets.is_empty() {
        0.0
    } else {
        let lost: f64 = targets
            .values()
            .map(|v| 1.0 - f64::from(v.weight) / 100.0)
            .sum();
        lost / targets.len() as f64
    };
    fault.max(pressure).max(shed).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(weights: &[(State, u8)]) -> BTreeMap<String, Verdict> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &(s, w))| (format!("t{i}"), Verdict::new(s, w, "x")))
            .collect()
    }

    #[test]
    fn the_score_is_the_worst_of_node_fault_pressure_and_shed_load() {
        let up = Verdict::up();
        assert_eq!(node_load(&up, &BTreeMap::new(), None), 0.0);
        assert_eq!(node_load(&up, &BTreeMap::new(), Some(37.5)), 0.375);
        let half = targets(&[(State::Up, 100), (State::Drain, 0)]);
        assert_eq!(node_load(&up, &half, Some(10.0)), 0.5);
        let degraded = targets(&[(State::Degraded, 40)]);
        assert!((node_load(&up, &degraded, Some(10.0)) - 0.6).abs() < 1e-9);
        let gpu = Verdict::new(State::Drain, 0, "GPU 0000:3b:00 XID 79 (reboot-node)");
        assert_eq!(node_load(&gpu, &BTreeMap::new(), Some(1.0)), 1.0);
    }

    #[test]
    fn out_of_range_pressure_stays_within_zero_and_one() {
        let up = Verdict::up();
        assert_eq!(node_load(&up, &BTreeMap::new(), Some(f64::NAN)), 0.0);
        assert_eq!(node_load(&up, &BTreeMap::new(), Some(250.0)), 1.0);
        assert_eq!(node_load(&up, &BTreeMap::new(), Some(-5.0)), 0.0);
    }
}
