//! Cumulative kernel counters turned into monotonic totals per label set.
//!
//! The kernel keeps one cumulative value per raw key (cgroup id, flow, ...). Userspace keeps
//! the last value seen per raw key and adds the difference to the labelled total, so keys
//! that fold into one `other` series add up, and a key deleted from the map and re-created
//! from zero loses nothing.
use std::{collections::HashMap, hash::Hash};

#[derive(Debug, Clone)]
pub struct Deltas<R> {
    last: HashMap<R, u64>,
}

impl<R: Hash + Eq + Copy> Default for Deltas<R> {
    fn default() -> Self {
        Self {
            last: HashMap::new(),
        }
    }
}

impl<R: Hash + Eq + Copy> Deltas<R> {
    /// Increase since the previous reading of `raw`.
    pub fn delta(&mut self, raw: R, now: u64) -> u64 {
        let last = self.last.insert(raw, now).unwrap_or(0);
        // A smaller value means the key was deleted and re-created: count from zero.
        if now >= last {
            now - last
        } else {
            now
        }
    }

    /// Forgets a raw key deleted from the kernel map.
    pub fn forget(&mut self, raw: &R) {
        self.last.remove(raw);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_add_up_to_the_total() {
        let mut d = Deltas::default();
        assert_eq!(d.delta(1u8, 5), 5);
        assert_eq!(d.delta(1, 5), 0);
        assert_eq!(d.delta(1, 12), 7);
        assert_eq!(d.delta(1, 2), 2, "re-created key counts from zero");
        d.forget(&1);
        assert_eq!(d.delta(1, 9), 9, "a forgotten key starts from zero");
    }
}
