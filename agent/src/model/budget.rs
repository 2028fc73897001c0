//! Bounded cardinality: one budget in series for the whole agent (`SeriesPool`), drawn
//! by every family's label sets at their price in series (a classic histogram's exported
//! buckets + `_sum` + `_count`; a counter's 1), under a per-metric cap on label sets.
//! Label sets past either are folded into `other` series and counted.
//!
//! Admission is sticky (first come, first kept) rather than a moving top-N by value, so a
//! counter never jumps between series and stays monotonic, as Prometheus requires. A
//! label set keeps its series until its cgroup is removed (`release`), which gives its
//! series back to the pool for a later one.
use std::{
    collections::HashSet,
    hash::Hash,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

/// The agent's series budget, shared by the families of every model. Shared through an
/// `Arc` because the snapshot holding the models is copied on write while a reader holds
/// it: only the writer's copy ever admits or releases, so one count serves every copy.
/// (A copy that admitted on its own would only spend the budget sooner, never overspend.)
#[derive(Debug, Clone)]
pub struct SeriesPool(Arc<Pool>);

#[derive(Debug)]
struct Pool {
    max: usize,
    used: AtomicUsize,
}

impl SeriesPool {
    pub fn new(max: usize) -> Self {
        Self(Arc::new(Pool {
            max,
            used: AtomicUsize::new(0),
        }))
    }

    /// No budget in series (only the per-metric caps): for tests of other things.
    pub fn unlimited() -> Self {
        Self::new(usize::MAX)
    }

    /// Takes `n` series if they fit, leaving `spare` of the budget untaken.
    fn take(&self, n: usize, spare: usize) -> bool {
        let p = &self.0;
        let limit = p.max.saturating_sub(spare);
        p.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(n).filter(|&u| u <= limit)
            })
            .is_ok()
    }

    /// The share only folded series may take: a quarter of the budget, so that once the
    /// label sets of their own have spent the rest, what folds still keeps its syscall,
    /// errno or XID (`Fold::keep`) instead of folding whole.
    fn reserve(&self) -> usize {
        self.0.max / 4
    }

    fn give(&self, n: usize) {
        let _ = self
            .0
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }

    /// Series held by admitted label sets.
    pub fn used(&self) -> usize {
        self.0.used.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.0.max
    }
}

#[derive(Debug, Clone)]
pub struct SeriesBudget<K> {
    admitted: HashSet<K>,
    /// Distinct label sets refused; bounded by a second set so each is counted once.
    refused: HashSet<K>,
    /// Label sets per metric.
    max: usize,
    folded: u64,
    pool: SeriesPool,
    /// Series one label set exports.
    cost: usize,
    /// Of the pool's budget, what this one must leave to folded series.
    spare: usize,
}

/// The label value that folded series carry.
pub const OTHER: &str = "other";

impl<K: Hash + Eq + Clone> SeriesBudget<K> {
    /// At most `max` label sets of their own, each costing `cost` series of `pool`, and
    /// never the pool's reserve.
    pub fn new(max: usize, pool: &SeriesPool, cost: usize) -> Self {
        Self {
            admitted: HashSet::new(),
            refused: HashSet::new(),
            max,
            folded: 0,
            pool: pool.clone(),
            cost,
            spare: pool.reserve(),
        }
    }

    /// The same for folded label sets, which may also take the reserve.
    pub fn folding(max: usize, pool: &SeriesPool, cost: usize) -> Self {
        Self {
            spare: 0,
            ..Self::new(max, pool, cost)
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
        if self.admitted.len() < self.max && self.pool.take(self.cost, self.spare) {
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

    /// Gives `key`'s series back (its series is gone), so a later label set can take them.
    pub fn release(&mut self, key: &K) {
        if self.admitted.remove(key) {
            self.pool.give(self.cost);
        }
    }

    /// Distinct label sets folded into `other` so far.
    pub fn folded(&self) -> u64 {
        self.folded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget<K: Hash + Eq + Clone>(max: usize) -> SeriesBudget<K> {
        SeriesBudget::new(max, &SeriesPool::unlimited(), 1)
    }

    #[test]
    fn keeps_the_first_n_and_folds_the_rest_counting_each_once() {
        let mut b = budget(2);
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
        let mut b = budget(10);
        for i in 0..100_000u32 {
            b.admit(&i);
        }
        assert_eq!(b.admitted.len() + b.refused.len(), 20);
        assert_eq!(b.folded(), 100_000 - 10);
    }

    #[test]
    fn families_share_one_pool_counted_in_series() {
        // 60 series of their own (80 less the folded series' quarter): a histogram label
        // set costs 25, a counter's 1.
        let pool = SeriesPool::new(80);
        let mut hist = SeriesBudget::new(1000, &pool, 25);
        let mut counter = SeriesBudget::<String>::new(1000, &pool, 1);
        assert!(hist.admit(&"a") && hist.admit(&"b"));
        assert_eq!(pool.used(), 50);
        assert!(!hist.admit(&"c"), "a third histogram is 75 series");
        for i in 0..10 {
            assert!(counter.admit(&format!("c{i}")));
        }
        assert!(!counter.admit(&"c10".into()), "the 61st series");
        assert_eq!(pool.used(), 60);
        assert_eq!((hist.folded(), counter.folded()), (1, 1));
        // Sticky: the admitted keep their series whatever the pool holds.
        assert!(hist.admit(&"a") && counter.admit(&"c0".into()));
    }

    #[test]
    fn a_released_label_set_gives_its_series_back_and_the_refused_stay_where_they_are() {
        let pool = SeriesPool::new(50);
        let mut hist = SeriesBudget::folding(1000, &pool, 25);
        assert!(hist.admit(&"a") && hist.admit(&"b"));
        assert!(!hist.admit(&"c"));
        hist.release(&"a");
        hist.release(&"a");
        assert_eq!(pool.used(), 25, "released once");
        assert!(hist.admit(&"d"), "room for one more histogram");
        assert_eq!(pool.used(), 50);
        hist.release(&"zzz");
        assert_eq!(
            pool.used(),
            50,
            "releasing what never had series gives nothing"
        );
    }

    #[test]
    fn a_copy_spends_the_same_pool() {
        // The snapshot is copied on write; the copy's admissions count in the one pool.
        let pool = SeriesPool::new(2);
        let mut b = SeriesBudget::folding(10, &pool, 1);
        assert!(b.admit(&1));
        let mut copy = b.clone();
        assert!(copy.admit(&2));
        assert!(!b.admit(&3), "the copy's series are counted");
        assert!(b.admit(&1), "already admitted ones keep theirs");
    }

    #[test]
    fn folded_series_have_a_quarter_of_the_budget_to_themselves() {
        let pool = SeriesPool::new(100);
        let mut own = SeriesBudget::new(1000, &pool, 1);
        let mut folded = SeriesBudget::folding(1000, &pool, 1);
        let kept = (0..200).filter(|i| own.admit(i)).count();
        assert_eq!((kept, pool.used()), (75, 75));
        assert_eq!((0..200).filter(|i| folded.admit(i)).count(), 25);
        assert_eq!(pool.used(), 100);
    }

    #[test]
    fn the_per_metric_cap_still_holds_under_a_large_pool() {
        let pool = SeriesPool::new(1_000_000);
        let mut b = SeriesBudget::new(3, &pool, 1);
        for i in 0..10 {
            b.admit(&i);
        }
        assert_eq!(pool.used(), 3);
        assert_eq!(b.folded(), 7);
    }
}
