//! The pure stage: previous model + one sample -> new model. No I/O, no aya; everything
//! here is unit-tested without root.
//!
//! Kernel maps hold cumulative values per raw key (cgroup id, syscall number, flow). The
//! model turns them into monotonic totals per label set, with label cardinality bounded by
//! a `SeriesBudget` per metric, all drawing on the agent's one `SeriesPool` of series.
mod budget;
mod counters;
pub mod exits;
mod forget;
pub mod gpu;
pub mod gpu_devices;
mod histogram;
pub mod jobs;
pub mod text;

use std::{collections::BTreeMap, sync::Arc};

use gimbal_common::{ErrnoKey, FlowKey, SyscallKey, DROP_KINDS, DROP_PROBES};

pub use budget::{SeriesBudget, SeriesPool, OTHER};
use counters::Deltas;
pub use histogram::{HistTotals, WrappedHist};

/// Label values of one series, in the order the metric declares its labels.
pub type Labels<const N: usize> = [Arc<str>; N];

/// One kernel counter read with the labels its raw key resolves to.
#[derive(Debug, Clone)]
pub struct CounterReading<R, const N: usize> {
    pub raw: R,
    pub labels: Labels<N>,
    pub value: u64,
}

/// One latency histogram (summed over CPUs, still wrapping) with its labels.
#[derive(Debug, Clone)]
pub struct HistReading {
    pub raw: SyscallKey,
    /// [syscall, cgroup]
    pub labels: Labels<2>,
    pub hist: WrappedHist,
}

/// Everything read from the kernel maps on one tick.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub syscalls: Vec<HistReading>,
    /// Syscalls counted without a histogram: [syscall, cgroup]
    pub syscall_counts: Vec<CounterReading<SyscallKey, 2>>,
    /// [syscall, cgroup, errno]
    pub syscall_errors: Vec<CounterReading<ErrnoKey, 3>>,
    /// [cgroup, remote, family]
    pub tcp_retransmits: Vec<CounterReading<FlowKey, 3>>,
    /// Cumulative kernel drop counters, indexed by `gimbal_common::Drop`.
    pub drops: [u64; DROP_KINDS as usize],
    /// Raw keys deleted from the kernel maps after this sample was read.
    pub pruned: Pruned,
    /// The kernel's own counts of each loaded program, by program name.
    pub programs: Vec<(&'static str, ProgramRuns)>,
    /// (cgroup, syscall) pairs counted in SYSCALL_COUNT_SLOTS rather than the hash.
    pub count_slots_used: usize,
}

/// What the kernel counted for one program since it was loaded (run count and time grow
/// only while its BPF statistics are on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProgramRuns {
    pub runs: u64,
    pub run_ns: u64,
}

/// Raw keys the probe stage deleted from the kernel maps: if they come back, they count
/// again from zero.
#[derive(Debug, Clone, Default)]
pub struct Pruned {
    pub syscalls: Vec<SyscallKey>,
    pub syscall_counts: Vec<SyscallKey>,
    pub syscall_errors: Vec<ErrnoKey>,
    pub tcp_retransmits: Vec<FlowKey>,
}

/// What folding keeps of a label set past the budget. Labels whose values are few by
/// construction (an exit's reason and code, a flow's family) stay exact, so that a flood
/// of new comms or cgroups cannot hide an OOM kill under `other`; the rest become `other`.
#[derive(Debug, Clone, Copy)]
pub struct Fold<const N: usize> {
    /// Labels kept exact in folded series.
    pub keep: [bool; N],
    /// Whether the kept labels can take values from outside without bound (a syscall
    /// number is any u32 a process passes); their combinations then get a budget of their
    /// own, past which everything folds.
    pub unbounded: bool,
}

/// How many series the models may make (`[labels]`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Label sets per metric (`max_series_per_metric`).
    pub per_metric: usize,
    /// The agent's budget in series (`max_series`), shared by every family.
    pub pool: SeriesPool,
    /// Series one latency histogram label set exports: its classic buckets with +Inf,
    /// `_sum` and `_count`.
    pub histogram_series: usize,
}

impl From<usize> for Limits {
    /// Only a per-metric cap, no budget in series.
    fn from(per_metric: usize) -> Self {
        Self {
            per_metric,
            pool: SeriesPool::unlimited(),
            histogram_series: 1,
        }
    }
}

/// A series map with its cardinality budget.
#[derive(Debug, Clone)]
pub struct Family<const N: usize, V> {
    pub series: BTreeMap<Labels<N>, V>,
    budget: SeriesBudget<Labels<N>>,
    keep: [bool; N],
    /// Folded label sets with their kept labels; `None` where those are bounded anyway.
    kept_budget: Option<SeriesBudget<Labels<N>>>,
    other: Arc<str>,
}

impl<const N: usize, V: Default> Family<N, V> {
    /// A family whose label sets export `cost` series each.
    fn new(limits: &Limits, cost: usize, fold: Fold<N>) -> Self {
        Self {
            series: BTreeMap::new(),
            budget: SeriesBudget::new(limits.per_metric, &limits.pool, cost),
            keep: fold.keep,
            // Folded series with unbounded kept labels draw on the same pool, its reserve
            // too; past it they fold whole, into one series per family.
            kept_budget: fold
                .unbounded
                .then(|| SeriesBudget::folding(limits.per_metric, &limits.pool, cost)),
            other: Arc::from(OTHER),
        }
    }

    /// The series `labels` belongs to: its own, or a folded one once the budget is spent.
    fn entry(&mut self, labels: Labels<N>) -> &mut V {
        self.entry_unless_protected(labels, |_| false)
    }

    /// `entry`, except that label sets `protected` accepts always keep their own series
    /// and take no share of the budget.
    fn entry_unless_protected(
        &mut self,
        labels: Labels<N>,
        protected: impl Fn(&Labels<N>) -> bool,
    ) -> &mut V {
        // Admitted keys first: the predicate (glob matching) runs only for the others.
        let key =
            if self.budget.is_admitted(&labels) || protected(&labels) || self.budget.admit(&labels)
            {
                labels
            } else {
                self.fold(&labels)
            };
        self.series.entry(key).or_default()
    }

    fn fold(&mut self, labels: &Labels<N>) -> Labels<N> {
        let kept = std::array::from_fn(|i| {
            if self.keep[i] {
                Arc::clone(&labels[i])
            } else {
                Arc::clone(&self.other)
            }
        });
        let admitted = self.kept_budget.as_mut().is_none_or(|b| b.admit(&kept));
        if admitted {
            kept
        } else {
            std::array::from_fn(|_| Arc::clone(&self.other))
        }
    }

    pub fn folded(&self) -> u64 {
        self.budget.folded()
    }
}

#[derive(Debug, Clone)]
pub struct Model {
    /// Timed syscalls: [syscall, cgroup]
    pub syscall_latency: Family<2, HistTotals>,
    /// Every syscall, timed or only counted: [syscall, cgroup]
    pub syscalls: Family<2, u64>,
    /// [syscall, cgroup, errno]
    pub syscall_errors: Family<3, u64>,
    /// [cgroup, remote, family]
    pub tcp_retransmits: Family<3, u64>,
    /// [cgroup, comm, reason, code]
    pub process_exits: Family<4, u64>,
    /// The agent's series budget, shared with the GPU and jobs models.
    pub pool: SeriesPool,
    pub drops: [u64; DROP_KINDS as usize],
    /// The latest program counts (cumulative in the kernel already).
    pub programs: Vec<(&'static str, ProgramRuns)>,
    pub count_slots_used: usize,
    /// One timed syscall in this many goes into the histograms (`sample_one_in`).
    pub latency_sample_one_in: u32,
    hist_last: std::collections::HashMap<SyscallKey, WrappedHist>,
    errors_last: Deltas<ErrnoKey>,
    counts_last: Deltas<SyscallKey>,
    tcp_last: Deltas<FlowKey>,
    /// Cgroups whose latency series never fold: the watched targets', whose latency SLIs
    /// read them. Anyone who can make cgroups could otherwise fill the budget first and
    /// blind those SLIs.
    watched_cgroup: WatchedCgroups,
}

/// A predicate over cgroup labels (the targets' globs, in run.rs).
#[derive(Clone)]
struct WatchedCgroups(Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl std::fmt::Debug for WatchedCgroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchedCgroups(..)")
    }
}

impl Model {
    pub fn new(limits: impl Into<Limits>) -> Self {
        let limits = &limits.into();
        let hist = limits.histogram_series;
        Self {
            // The latency SLO and user rules select by syscall, and errors by errno: kept,
            // with a budget of their own, because a process can pass any syscall number
            // and (through seccomp) return any errno.
            syscall_latency: Family::new(
                limits,
                hist,
                Fold {
                    keep: [true, false],
                    unbounded: true,
                },
            ),
            syscalls: Family::new(
                limits,
                1,
                Fold {
                    keep: [true, false],
                    unbounded: true,
                },
            ),
            syscall_errors: Family::new(
                limits,
                1,
                Fold {
                    keep: [true, false, true],
                    unbounded: true,
                },
            ),
            // `family` is ipv4 or ipv6.
            tcp_retransmits: Family::new(
                limits,
                1,
                Fold {
                    keep: [false, false, true],
                    unbounded: false,
                },
            ),
            // `reason` is one of three and `code` an exit code (0-255) or a signal name
            // (at most 127): the OOM and kill rules must see them exact whatever floods comm.
            process_exits: Family::new(
                limits,
                1,
                Fold {
                    keep: [false, false, true, true],
                    unbounded: false,
                },
            ),
            pool: limits.pool.clone(),
            drops: [0; DROP_KINDS as usize],
            programs: Vec::new(),
            count_slots_used: 0,
            latency_sample_one_in: 1,
            hist_last: Default::default(),
            errors_last: Deltas::default(),
            counts_last: Deltas::default(),
            tcp_last: Deltas::default(),
            watched_cgroup: WatchedCgroups(Arc::new(|_| false)),
        }
    }

    /// Which cgroups (paths as labelled) belong to watched targets; set at start and on
    /// every reload.
    pub fn watch_cgroups(&mut self, watched: impl Fn(&str) -> bool + Send + Sync + 'static) {
        self.watched_cgroup = WatchedCgroups(Arc::new(watched));
    }

    /// Folds one tick's readings into the totals.
    pub fn apply(&mut self, sample: Sample) {
        for r in sample.syscalls {
            let last = self.hist_last.entry(r.raw).or_default();
            let delta = r.hist.since(last);
            *last = r.hist;
            // Nothing new makes no series: a forgotten cgroup's key, read again, stays out.
            if delta.count() == 0 && delta.sum_ns == 0 {
                continue;
            }
            let watched = &self.watched_cgroup.0;
            *self
                .syscalls
                .entry_unless_protected(r.labels.clone(), |[_, cgroup]| watched(cgroup)) +=
                delta.count();
            self.syscall_latency
                .entry_unless_protected(r.labels, |[_, cgroup]| watched(cgroup))
                .add(&delta);
        }
        for r in sample.syscall_counts {
            let d = self.counts_last.delta(r.raw, r.value);
            if d > 0 {
                let watched = &self.watched_cgroup.0;
                *self
                    .syscalls
                    .entry_unless_protected(r.labels, |[_, cgroup]| watched(cgroup)) += d;
            }
        }
        for r in sample.syscall_errors {
            let d = self.errors_last.delta(r.raw, r.value);
            if d > 0 {
                *self.syscall_errors.entry(r.labels) += d;
            }
        }
        for r in sample.tcp_retransmits {
            let d = self.tcp_last.delta(r.raw, r.value);
            if d > 0 {
                *self.tcp_retransmits.entry(r.labels) += d;
            }
        }
        // Kernel drop counters are already cumulative and never reset while loaded.
        for (mine, now) in self.drops.iter_mut().zip(sample.drops) {
            *mine = (*mine).max(now);
        }
        self.programs = sample.programs;
        self.count_slots_used = sample.count_slots_used;
        // Forget pruned raw keys, keeping their totals.
        for k in &sample.pruned.syscalls {
            self.hist_last.remove(k);
        }
        for k in &sample.pruned.syscall_counts {
            self.counts_last.forget(k);
        }
        for k in &sample.pruned.syscall_errors {
            self.errors_last.forget(k);
        }
        for k in &sample.pruned.tcp_retransmits {
            self.tcp_last.forget(k);
        }
    }

    /// Cumulative kernel drops per probe (`gimbal_events_dropped_total{probe}`): the
    /// kinds of one probe summed.
    pub fn drops_per_probe(&self) -> BTreeMap<&'static str, u64> {
        let mut per_probe = BTreeMap::new();
        for (i, n) in self.drops.iter().enumerate() {
            *per_probe.entry(DROP_PROBES[i]).or_insert(0) += n;
        }
        per_probe
    }

    /// Counts one process exit; labels are [cgroup, comm, reason, code].
    pub fn apply_exit(&mut self, labels: Labels<4>) {
        *self.process_exits.entry(labels) += 1;
    }
}

#[cfg(test)]
mod tests;
