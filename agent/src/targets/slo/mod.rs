//! Service-level figures per watched target, from its up/down history and its syscalls:
//! availability A = T_up / T_total over rolling windows, failures, MTTR, reliability
//! R = Π(1 − p_i) over its components, latency SLI and performance P = 1 / mean latency.
//! Pure: callers pass the time; persistence is in `store.rs`.
mod availability;
mod latency;
mod store;

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

pub use availability::{History, WINDOWS};
pub use latency::{counts as latency_counts, Counts, LatencyWindows};
pub use store::{load, save};

/// Components keep one day of history (30 days x many components would not be bounded).
const COMPONENT_MINUTES: usize = 24 * 60;
/// Components tracked per target; more are left out of reliability (and logged).
const MAX_COMPONENTS: usize = 256;

/// Everything remembered about one target, persisted across restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetState {
    /// Up = at least one live process in any of its cgroups.
    pub history: History,
    /// Per component (matched cgroup): up = a live process in it.
    pub components: BTreeMap<String, History>,
}

impl TargetState {
    /// Records the components' up/down state at `now_ms`; the target is up if any is.
    pub fn observe(&mut self, now_ms: u64, components: &BTreeMap<String, bool>, max_gap: Duration) {
        self.history
            .observe(now_ms, components.values().any(|&up| up), max_gap);
        for (name, &up) in components {
            if !self.components.contains_key(name) && self.components.len() >= MAX_COMPONENTS {
                continue;
            }
            let h = self.components.entry(name.clone()).or_default();
            h.observe(now_ms, up, max_gap);
            h.keep_minutes(COMPONENT_MINUTES);
        }
        // Components gone for longer than their history are forgotten.
        let oldest = (now_ms / 60_000).saturating_sub(COMPONENT_MINUTES as u64) as u32;
        self.components.retain(|name, h| {
            components.contains_key(name) || h.last_minute().is_some_and(|m| m >= oldest)
        });
    }

    /// R = Π(1 − p_i) with p_i = 1 − A_i, the unavailability of component i over the
    /// window: the chance that every component is up, if they fail independently.
    pub fn reliability(&self, now_ms: u64, window_s: u64) -> Option<f64> {
        let parts: Vec<f64> = self
            .components
            .values()
            .filter_map(|h| h.availability(now_ms, window_s))
            .collect();
        (!parts.is_empty()).then(|| parts.iter().product())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reliability_is_the_product_of_component_availabilities() {
        let mut s = TargetState::default();
        let t0 = 1_795_708_800_000u64;
        let gap = Duration::from_secs(10);
        for sec in 0..=600u64 {
            // a is always up; b is down for the second half.
            let comps = BTreeMap::from([("a".to_string(), true), ("b".to_string(), sec <= 300)]);
            s.observe(t0 + sec * 1000, &comps, gap);
        }
        let now = t0 + 600_000;
        let r = s.reliability(now, 600).unwrap();
        assert!((r - 0.5).abs() < 0.01, "R = {r}");
        assert_eq!(
            s.history.availability(now, 600),
            Some(1.0),
            "the target as a whole stayed up"
        );
    }
}
