//! A target's latency SLI and performance over rolling windows, from the (cumulative)
//! syscall histograms of its cgroups, snapshotted on every tick.
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use gimbal_common::hist;

use crate::{
    model::{HistTotals, Labels},
    targets::glob_match,
};

/// Syscalls of a target so far: all, those above the threshold, and their total time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    pub slow: u64,
    pub sum_ns: u64,
}

/// Sums the histograms of `syscalls` in cgroups matching any of `globs`; a syscall is slow when it
/// lands in a bucket whose upper bound is above `threshold_ns`.
pub fn counts(
    series: &BTreeMap<Labels<2>, HistTotals>,
    globs: &[String],
    syscalls: &BTreeSet<String>,
    threshold_ns: u64,
) -> Counts {
    let first_slow = (0..hist::BUCKETS)
        .find(|&i| hist::upper_bound_ns(i).is_none_or(|up| up > threshold_ns))
        .unwrap_or(0);
    let mut c = Counts::default();
    for ([syscall, cgroup], h) in series {
        if syscalls.contains(&**syscall) && globs.iter().any(|g| glob_match(g, cgroup)) {
            c.total += h.count();
            c.slow += h.buckets[first_slow..].iter().sum::<u64>();
            c.sum_ns += h.sum_ns;
        }
    }
    c
}

/// Snapshots for the last hour, at most one per 10 s, and the latest reading: a window
/// is the latest minus the oldest snapshot inside it, so it has data from the second tick
/// on (a slow start would delay the latency alert, and a throttle waiting on it, by 10 s).
#[derive(Debug, Default)]
pub struct LatencyWindows {
    snapshots: VecDeque<(u64, Counts)>,
    latest: Option<Counts>,
}

const KEEP_MS: u64 = 3_600_000 + 60_000;
const EVERY_MS: u64 = 10_000;

impl LatencyWindows {
    pub fn push(&mut self, now_ms: u64, c: Counts) {
        self.latest = Some(c);
        if self
            .snapshots
            .back()
            .is_none_or(|(t, _)| now_ms - t >= EVERY_MS)
        {
            self.snapshots.push_back((now_ms, c));
        }
        while self
            .snapshots
            .front()
            .is_some_and(|(t, _)| now_ms - t > KEEP_MS)
        {
            self.snapshots.pop_front();
        }
    }

    /// (SLI = fast / all, P = 1 / mean latency in 1/s) over the window; None without
    /// syscalls in it.
    pub fn over(&self, now_ms: u64, window_s: u64) -> Option<(f64, f64)> {
        let newest = self.latest.as_ref()?;
        let since = now_ms.saturating_sub(window_s * 1000);
        let (_, oldest) = self.snapshots.iter().find(|(t, _)| *t >= since)?;
        let total = newest.total.checked_sub(oldest.total)?;
        let slow = newest.slow.checked_sub(oldest.slow)?;
        let sum_ns = newest.sum_ns.checked_sub(oldest.sum_ns)?;
        (total > 0 && sum_ns > 0).then(|| {
            (
                1.0 - slow as f64 / total as f64,
                total as f64 / (sum_ns as f64 / 1e9),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn series(entries: &[(&str, &str, u64, u64)]) -> BTreeMap<Labels<2>, HistTotals> {
        entries
            .iter()
            .map(|&(syscall, cgroup, ns, n)| {
                let mut h = HistTotals::default();
                h.buckets[hist::bucket(ns)] = n;
                h.sum_ns = ns * n;
                ([Arc::from(syscall), Arc::from(cgroup)], h)
            })
            .collect()
    }

    #[test]
    fn counts_only_matching_syscalls_and_cgroups() {
        let s = series(&[
            ("read", "svc/a", 5_000, 90),
            ("read", "svc/b", 300_000_000, 10),
            ("getppid", "svc/a", 5_000, 1000),
            ("read", "other/b", 5_000, 7),
        ]);
        let set = BTreeSet::from(["read".to_string()]);
        let c = counts(&s, &["svc/*".into()], &set, 100_000_000);
        assert_eq!((c.total, c.slow), (100, 10));
    }

    #[test]
    fn windows_take_differences() {
        let mut w = LatencyWindows::default();
        let t0 = 1_000_000_000u64;
        w.push(
            t0,
            Counts {
                total: 100,
                slow: 50,
                sum_ns: 1_000_000,
            },
        );
        w.push(
            t0 + 60_000,
            Counts {
                total: 200,
                slow: 60,
                sum_ns: 2_000_000,
            },
        );
        let (sli, p) = w.over(t0 + 60_000, 300).unwrap();
        assert!((sli - 0.9).abs() < 1e-9, "{sli}");
        assert!((p - 100_000.0).abs() < 1e-6, "100 syscalls in 1 ms: {p}");
        assert_eq!(w.over(t0 + 60_000, 1), None, "no change inside one second");
        let third = Counts {
            total: 300,
            slow: 60,
            sum_ns: 3_000_000,
        };
        w.push(t0 + 61_000, third);
        let (sli, _) = w.over(t0 + 61_000, 300).unwrap();
        assert!(
            (sli - 0.95).abs() < 1e-9,
            "the latest reading counts at once: {sli}"
        );
    }
}
