//! The pure stage: previous model + one sample -> new model. No I/O, no aya; everything
//! here is unit-tested without root.
//!
//! Kernel maps hold cumulative values per raw key (cgroup id, syscall number, flow). The
//! model turns them into monotonic totals per label set, with label cardinality bounded by
//! a `SeriesBudget` per metric.
mod budget;
mod counters;
pub mod exits;
mod histogram;
pub mod text;

use std::{collections::BTreeMap, sync::Arc};

use gimbal_common::{ErrnoKey, FlowKey, SyscallKey, DROP_KINDS};

pub use budget::{SeriesBudget, OTHER};
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
    /// [syscall, cgroup, errno]
    pub syscall_errors: Vec<CounterReading<ErrnoKey, 3>>,
    /// [cgroup, remote, family]
    pub tcp_retransmits: Vec<CounterReading<FlowKey, 3>>,
    /// Cumulative kernel drop counters, indexed by `gimbal_common::Drop`.
    pub drops: [u64; DROP_KINDS as usize],
    /// Raw keys deleted from the kernel maps after this sample was read.
    pub pruned: Pruned,
}

/// Raw keys the probe stage deleted from the kernel maps: if they come back, they count
/// again from zero.
#[derive(Debug, Clone, Default)]
pub struct Pruned {
    pub syscalls: Vec<SyscallKey>,
    pub syscall_errors: Vec<ErrnoKey>,
    pub tcp_retransmits: Vec<FlowKey>,
}

/// A series map with its cardinality budget.
#[derive(Debug)]
pub struct Family<const N: usize, V> {
    pub series: BTreeMap<Labels<N>, V>,
    budget: SeriesBudget<Labels<N>>,
}

impl<const N: usize, V: Default> Family<N, V> {
    fn new(max_series: usize) -> Self {
        Self {
            series: BTreeMap::new(),
            budget: SeriesBudget::new(max_series),
        }
    }

    /// The series `labels` belongs to: its own, or `other` once the budget is spent.
    fn entry(&mut self, labels: Labels<N>) -> &mut V {
        let key = if self.budget.admit(&labels) {
            labels
        } else {
            std::array::from_fn(|_| Arc::from(OTHER))
        };
        self.series.entry(key).or_default()
    }

    pub fn folded(&self) -> u64 {
        self.budget.folded()
    }
}

#[derive(Debug)]
pub struct Model {
    /// [syscall, cgroup]
    pub syscall_latency: Family<2, HistTotals>,
    /// [syscall, cgroup, errno]
    pub syscall_errors: Family<3, u64>,
    /// [cgroup, remote, family]
    pub tcp_retransmits: Family<3, u64>,
    /// [cgroup, comm, reason, code]
    pub process_exits: Family<4, u64>,
    pub drops: [u64; DROP_KINDS as usize],
    /// SIGHUP reloads: [accepted, rejected].
    pub config_reloads: [u64; 2],
    /// Remediation actions by (action, result).
    pub remediations: crate::remediate::Ledger,
    /// Targets and alerts, as the watcher last saw them.
    pub watch: crate::watch::WatchStatus,
    hist_last: std::collections::HashMap<SyscallKey, WrappedHist>,
    errors_last: Deltas<ErrnoKey>,
    tcp_last: Deltas<FlowKey>,
}

impl Model {
    pub fn new(max_series_per_metric: usize) -> Self {
        Self {
            syscall_latency: Family::new(max_series_per_metric),
            syscall_errors: Family::new(max_series_per_metric),
            tcp_retransmits: Family::new(max_series_per_metric),
            process_exits: Family::new(max_series_per_metric),
            drops: [0; DROP_KINDS as usize],
            watch: Default::default(),
            config_reloads: [0; 2],
            remediations: Default::default(),
            hist_last: Default::default(),
            errors_last: Deltas::default(),
            tcp_last: Deltas::default(),
        }
    }

    /// Folds one tick's readings into the totals.
    pub fn apply(&mut self, sample: Sample) {
        for r in sample.syscalls {
            let last = self.hist_last.entry(r.raw).or_default();
            let delta = r.hist.since(last);
            *last = r.hist;
            self.syscall_latency.entry(r.labels).add(&delta);
        }
        for r in sample.syscall_errors {
            let d = self.errors_last.delta(r.raw, r.value);
            *self.syscall_errors.entry(r.labels) += d;
        }
        for r in sample.tcp_retransmits {
            let d = self.tcp_last.delta(r.raw, r.value);
            *self.tcp_retransmits.entry(r.labels) += d;
        }
        // Kernel drop counters are already cumulative and never reset while loaded.
        for (mine, now) in self.drops.iter_mut().zip(sample.drops) {
            *mine = (*mine).max(now);
        }
        // Forget pruned raw keys, keeping their totals.
        for k in &sample.pruned.syscalls {
            self.hist_last.remove(k);
        }
        for k in &sample.pruned.syscall_errors {
            self.errors_last.forget(k);
        }
        for k in &sample.pruned.tcp_retransmits {
            self.tcp_last.forget(k);
        }
    }

    /// Counts one process exit; labels are [cgroup, comm, reason, code].
    pub fn apply_exit(&mut self, labels: Labels<4>) {
        *self.process_exits.entry(labels) += 1;
    }
}

#[cfg(test)]
mod tests;
