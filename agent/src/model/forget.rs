//! A removed cgroup's series leave the model (docs/metrics.md, "Removed cgroups"): run.rs
//! finds which (identity::Removed) and the model drops them, handing their budget back so
//! that a node churning pods keeps giving new pods series of their own.
use std::{collections::BTreeSet, sync::Arc};

use super::{Family, Model};

impl<const N: usize, V> Family<N, V> {
    /// Drops the series whose label at `index` is `value`, and their budget units.
    fn forget(&mut self, index: usize, value: &str) {
        let budget = &mut self.budget;
        self.series.retain(|labels, _| {
            let keep = &*labels[index] != value;
            if !keep {
                budget.release(labels);
            }
            keep
        });
    }

    fn label_values(&self, index: usize, out: &mut BTreeSet<Arc<str>>) {
        for labels in self.series.keys() {
            if !out.contains(&labels[index]) {
                out.insert(Arc::clone(&labels[index]));
            }
        }
    }
}

impl Model {
    /// Every cgroup label the model holds (including `other` and `unknown`).
    pub fn cgroups(&self) -> BTreeSet<Arc<str>> {
        let mut out = BTreeSet::new();
        self.syscall_latency.label_values(1, &mut out);
        self.syscalls.label_values(1, &mut out);
        self.syscall_errors.label_values(1, &mut out);
        self.tcp_retransmits.label_values(0, &mut out);
        self.process_exits.label_values(0, &mut out);
        out
    }

    /// Drops every series of cgroup `label`. Kernel keys of the removed cgroup still in the
    /// maps add nothing (a zero delta creates no series), so it does not come back.
    pub fn forget_cgroup(&mut self, label: &str) {
        self.syscall_latency.forget(1, label);
        self.syscalls.forget(1, label);
        self.syscall_errors.forget(1, label);
        self.tcp_retransmits.forget(0, label);
        self.process_exits.forget(0, label);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use gimbal_common::{hist::bucket, SyscallKey};

    use crate::model::{HistReading, Model, Sample, WrappedHist};

    fn reading(cgroup_id: u64, cgroup: &str, count: u32) -> HistReading {
        let mut hist = WrappedHist::default();
        hist.buckets[bucket(2_000)] = count;
        hist.sum_ns = 2_000 * u64::from(count);
        HistReading {
            raw: SyscallKey {
                cgroup_id,
                nr: 0,
                _pad: 0,
            },
            labels: [Arc::from("read"), Arc::from(cgroup)],
            hist,
        }
    }

    #[test]
    fn a_forgotten_cgroup_leaves_every_family_and_gives_its_budget_back() {
        let mut m = Model::new(2);
        m.apply(Sample {
            syscalls: vec![reading(1, "pod-a", 3), reading(2, "pod-b", 1)],
            ..Default::default()
        });
        m.apply_exit(["pod-a", "sleep", "exited", "0"].map(Arc::from));
        assert!(m.cgroups().contains("pod-a"));
        m.forget_cgroup("pod-a");
        assert!(!m.cgroups().contains("pod-a"));
        assert!(m.process_exits.series.is_empty());
        // The removed cgroup's kernel key is read again, unchanged: nothing comes back.
        m.apply(Sample {
            syscalls: vec![reading(1, "pod-a", 3), reading(2, "pod-b", 1)],
            ..Default::default()
        });
        assert!(
            !m.cgroups().contains("pod-a"),
            "a zero delta makes no series"
        );
        // Its budget unit went back: a new pod gets a series of its own, not `other`.
        m.apply(Sample {
            syscalls: vec![reading(3, "pod-c", 1)],
            ..Default::default()
        });
        let cgroups: Vec<_> = m.cgroups().iter().map(|c| c.to_string()).collect();
        assert_eq!(cgroups, ["pod-b", "pod-c"]);
        assert_eq!(m.syscall_latency.folded(), 0);
    }
}
