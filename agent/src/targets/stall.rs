//! Progress clocks: when each watched cgroup last completed a "progress" syscall (the
//! write and send families by default), read from the cumulative syscall counts the
//! model already keeps per (syscall, cgroup). A count only grows when a syscall returns,
//! so a process blocked in a futex, or spinning without I/O, leaves its progress count
//! still. No kernel work beyond the count every syscall gets anyway.
//!
//! The kernel maps are read once a tick, so a change seen at tick T happened after the
//! tick before; the clock takes the earliest such time (at most one interval before T),
//! which makes a stall known within `stall_for` + one interval of the last progress
//! syscall, and never for a quiet gap shorter than `stall_for` − one interval.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Duration,
};

use crate::model::Labels;

/// One progress set's view of one cgroup.
#[derive(Debug, Clone, Copy)]
struct Clock {
    /// Progress syscalls completed so far (cumulative, from the model).
    count: u64,
    /// The earliest time (unix ms) the last change of `count` may have happened.
    since_ms: u64,
}

/// The clocks of every (progress set, cgroup) the targets watch.
#[derive(Debug, Default)]
pub struct Clocks {
    /// Distinct progress sets; targets refer to them by index.
    sets: Vec<BTreeSet<String>>,
    clocks: HashMap<(usize, String), Clock>,
    last_tick_ms: Option<u64>,
}

/// What a tick of the clocks needs besides the series.
#[derive(Debug, Clone, Copy)]
pub struct Observed {
    pub now_ms: u64,
    /// The agent's tick: how far back a change seen now may lie.
    pub interval: Duration,
    /// False while the counts cannot be trusted to show every syscall (the syscall probe
    /// is not attached, or a map was full this tick: a new (cgroup, syscall) pair was not
    /// counted). The clocks of cgroups with no progress counted yet restart, since
    /// unknown is not stalled; a cgroup whose progress pair is in the map is counted
    /// whatever else is dropped, so a full map elsewhere on the node does not blind it.
    pub complete: bool,
}

impl Clocks {
    /// The index of `set` among the distinct progress sets.
    pub fn set_index(&mut self, set: &[String]) -> usize {
        let set: BTreeSet<String> = set.iter().cloned().collect();
        match self.sets.iter().position(|s| *s == set) {
            Some(i) => i,
            None => {
                self.sets.push(set);
                self.sets.len() - 1
            }
        }
    }

    /// Reads the progress counts of the `wanted` (set, cgroup) pairs from the histograms
    /// and moves their clocks; clocks no longer wanted are dropped (bounded by the
    /// targets' components). One pass over the series, a hash lookup each.
    pub fn tick<'a>(
        &mut self,
        wanted: impl IntoIterator<Item = (usize, &'a str)>,
        series: &BTreeMap<Labels<2>, u64>,
        seen: Observed,
    ) {
        let mut counts: HashMap<(usize, &str), u64> = HashMap::new();
        let mut by_cgroup: HashMap<&str, Vec<usize>> = HashMap::new();
        for (set, cgroup) in wanted {
            if counts.insert((set, cgroup), 0).is_none() {
                by_cgroup.entry(cgroup).or_default().push(set);
            }
        }
        for ([syscall, cgroup], n) in series {
            let Some(sets) = by_cgroup.get(&**cgroup) else {
                continue;
            };
            for &set in sets {
                if self.sets[set].contains(&**syscall) {
                    *counts.entry((set, cgroup)).or_default() += *n;
                }
            }
        }
        let now = seen.now_ms;
        let interval = seen.interval.as_millis() as u64;
        // The change happened after the previous read, and at most one interval ago.
        let changed_at = self
            .last_tick_ms
            .map_or(now, |prev| prev.max(now.saturating_sub(interval)))
            .min(now);
        let mut next = HashMap::with_capacity(counts.len());
        for ((set, cgroup), count) in counts {
            let key = (set, cgroup.to_string());
            let clock = match self.clocks.remove(&key) {
                None => Clock {
                    count,
                    since_ms: now,
                },
                Some(_) if !seen.complete && count == 0 => Clock {
                    count,
                    since_ms: now,
                },
                Some(c) if c.count != count => Clock {
                    count,
                    since_ms: changed_at,
                },
                Some(c) => c,
            };
            next.insert(key, clock);
        }
        self.clocks = next;
        self.last_tick_ms = Some(now);
    }

    /// The earliest time the last progress of `cgroup` under `set` may have happened;
    /// None if the cgroup was not wanted on the last tick.
    pub fn since_ms(&self, set: usize, cgroup: &str) -> Option<u64> {
        self.clocks
            .get(&(set, cgroup.to_string()))
            .map(|c| c.since_ms)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn series(entries: &[(&str, &str, u64)]) -> BTreeMap<Labels<2>, u64> {
        entries
            .iter()
            .map(|&(syscall, cgroup, n)| ([Arc::from(syscall), Arc::from(cgroup)], n))
            .collect()
    }

    fn at(now_ms: u64) -> Observed {
        Observed {
            now_ms,
            interval: Duration::from_secs(1),
            complete: true,
        }
    }

    #[test]
    fn a_clock_moves_only_when_a_progress_syscall_of_its_set_completes() {
        let mut c = Clocks::default();
        let writes = c.set_index(&["write".into(), "sendto".into()]);
        let only_write = c.set_index(&["write".into()]);
        assert_eq!(c.set_index(&["sendto".into(), "write".into()]), writes);
        let wanted = [(writes, "job/a"), (only_write, "job/a"), (writes, "job/b")];
        let t0 = 1_000_000;
        c.tick(wanted, &series(&[("write", "job/a", 5)]), at(t0));
        assert_eq!(
            c.since_ms(writes, "job/a"),
            Some(t0),
            "first sight: from now"
        );
        assert_eq!(
            c.since_ms(writes, "job/b"),
            Some(t0),
            "no series yet: from now"
        );
        // A second later: a sendto in a, reads (not progress) in b.
        let s = series(&[
            ("write", "job/a", 5),
            ("sendto", "job/a", 1),
            ("read", "job/b", 9),
        ]);
        c.tick(wanted, &s, at(t0 + 1_000));
        assert_eq!(
            c.since_ms(writes, "job/a"),
            Some(t0),
            "after the previous read"
        );
        assert_eq!(
            c.since_ms(only_write, "job/a"),
            Some(t0),
            "sendto is not in this set"
        );
        c.tick(wanted, &s, at(t0 + 2_000));
        c.tick(wanted, &s, at(t0 + 3_000));
        assert_eq!(c.since_ms(writes, "job/a"), Some(t0), "nothing since");
        assert_eq!(
            c.since_ms(writes, "job/b"),
            Some(t0),
            "reads are no progress"
        );
        // A late tick (the loop was held up 5 s): the change is placed at most one
        // interval back, not at the tick before.
        let s = series(&[("write", "job/a", 6), ("sendto", "job/a", 1)]);
        c.tick(wanted, &s, at(t0 + 8_000));
        assert_eq!(c.since_ms(writes, "job/a"), Some(t0 + 7_000));
        // No longer wanted: forgotten.
        c.tick([(writes, "job/a")], &s, at(t0 + 9_000));
        assert_eq!(c.since_ms(writes, "job/b"), None);
    }

    #[test]
    fn an_incomplete_reading_restarts_the_clocks_of_cgroups_never_seen_progressing() {
        let mut c = Clocks::default();
        let set = c.set_index(&["write".into()]);
        let s = series(&[("write", "x", 1), ("read", "y", 1)]);
        let both = [(set, "x"), (set, "y")];
        c.tick(both, &s, at(10_000));
        c.tick(both, &s, at(20_000));
        assert_eq!(c.since_ms(set, "x"), Some(10_000));
        assert_eq!(c.since_ms(set, "y"), Some(10_000));
        let mut incomplete = at(21_000);
        incomplete.complete = false;
        c.tick(both, &s, incomplete);
        assert_eq!(
            c.since_ms(set, "y"),
            Some(21_000),
            "y's writes may be the ones not counted: unknown is not stalled"
        );
        assert_eq!(
            c.since_ms(set, "x"),
            Some(10_000),
            "x's write pair is in the map: still counted"
        );
    }
}
