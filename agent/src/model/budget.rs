//! Bounded label cardinality: the first N distinct label sets of a metric keep their
//! labels; later ones are folded into one `other` series and counted.
//!
//! Admission is sticky (first come, first kept) rather than a moving top-N by value, so a
//! counter never jumps between series and stays monotonic, as Prometheus requires.
use std::{collections::HashSet, hash::Hash};

#[derive(Debug, Clone)]
pub struct SeriesBudget<K> {
    admitted: HashSet<K>,
    /// Distinct label sets refused; bounded by a second set so each is counted once.
    refused: HashSet<K>,
    max: usize,
    folded: u64,
}

/// The label value that folded series carry.
pub const OTHER: &str = "other";

impl<K: Hash + Eq + Clone> SeriesBudget<K> {
    pub fn new(max: usize) -> Self {
        Self {
            admitted: HashSet::new(),
            refused: HashSet::new(),
            max,
            folded: 0,
        }
    }

    /// Whether `key` already has its own series (no side effect).
    pub fn is_admitted(&self, key: &K) -> bool {
        self.admitted.contains(key)
    }

    /// Whether `key` keeps its own series.
    pub fn admit(&mut self, key: &K) -> bool {
        if self.admitted.contains(key) {
            return true;
        }
        if self.admitted.len() < self.max {
            self.admitted.insert(key.clone());
            return true;
        }
        // Remember refused keys only up to the same bound; past it every refusal counts,
        // which over-counts rather than lets memory grow.
        if self.refused.len() < self.max {
            if self.refused.insert(key.clone()) {
                self.folded += 1;
            }
        } else if !self.refused.contains(key) {
            self.folded += 1;
        }
        false
    }

    /// Gives `key`'s unit back (its series is gone), so a later label set can take it.
    pub fn release(&mut self, key: &K) {
        self.admitted.remove(key);
    }

    /// Distinct label sets folded into `other` so far.
    pub fn folded(&self) -> u64 {
        self.folded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_n_and_folds_the_rest_counting_each_once() {
        let mut b = SeriesBudget::new(2);
        assert!(b.admit(&"a"));
        assert!(b.admit(&"b"));
        assert!(!b.admit(&"c"));
        assert!(!b.admit(&"c"));
        assert!(!b.admit(&"d"));
        assert!(b.admit(&"a"), "admitted stays admitted");
        assert_eq!(b.folded(), 2);
    }

    #[test]
    fn memory_is_bounded_under_endless_new_keys() {
        let mut b = SeriesBudget::new(10);
        for i in 0..100_000u32 {
            b.admit(&i);
        }
        assert_eq!(b.admitted.len() + b.refused.len(), 20);
        assert_eq!(b.folded(), 100_000 - 10);
    }
}
