//! Which kernel map keys have stopped changing, so they can be deleted: the maps are
//! bounded, and keys of cgroups and flows that are gone would otherwise fill them for good.
use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

#[derive(Debug)]
pub struct IdleKeys<K> {
    /// Per key: a fingerprint of its value and when that last changed.
    seen: HashMap<K, (u64, Instant)>,
    after: Duration,
}

impl<K: Hash + Eq + Copy> IdleKeys<K> {
    pub fn new(after: Duration) -> Self {
        Self {
            seen: HashMap::new(),
            after,
        }
    }

    /// Records the key's value; true if it is new or changed since the last observation.
    pub fn observe(&mut self, key: K, fingerprint: u64, now: Instant) -> bool {
        match self.seen.entry(key) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert((fingerprint, now));
                true
            }
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let changed = o.get().0 != fingerprint;
                if changed {
                    o.insert((fingerprint, now));
                }
                changed
            }
        }
    }

    /// The key's fingerprint at the last observation.
    pub fn last(&self, key: &K) -> Option<u64> {
        self.seen.get(key).map(|(f, _)| *f)
    }

    /// Stops tracking a key deleted for another reason.
    pub fn forget(&mut self, key: &K) {
        self.seen.remove(key);
    }

    /// Keys unchanged for the idle period; forgotten here, to be deleted by the caller.
    pub fn take_idle(&mut self, now: Instant) -> Vec<K> {
        let idle: Vec<K> = self
            .seen
            .iter()
            .filter(|(_, (_, changed))| now.duration_since(*changed) >= self.after)
            .map(|(k, _)| *k)
            .collect();
        for k in &idle {
            self.seen.remove(k);
        }
        idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unchanged_keys_go_idle() {
        let t0 = Instant::now();
        let mut idle = IdleKeys::new(Duration::from_secs(10));
        assert!(idle.observe(1, 5, t0), "new");
        assert!(idle.observe(2, 5, t0));
        assert!(!idle.observe(2, 5, t0), "unchanged");
        assert!(idle.observe(2, 6, t0 + Duration::from_secs(8)), "changed");
        assert!(idle.take_idle(t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(idle.take_idle(t0 + Duration::from_secs(10)), vec![1]);
        assert_eq!(idle.take_idle(t0 + Duration::from_secs(18)), vec![2]);
        assert!(
            idle.take_idle(t0 + Duration::from_secs(100)).is_empty(),
            "taken keys are forgotten"
        );
    }
}
