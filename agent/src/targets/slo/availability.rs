//! Up/down history of one target in one-minute buckets (30 days at most: bounded memory,
//! 8 bytes a minute), plus its failures (down -> up intervals) for MTTR.
use std::{collections::VecDeque, time::Duration};

use serde::{Deserialize, Serialize};

/// The rolling windows availability is reported over, with their label values.
pub const WINDOWS: [(&str, u64); 4] = [
    ("5m", 300),
    ("1h", 3_600),
    ("1d", 86_400),
    ("30d", 2_592_000),
];

const MAX_MINUTES: usize = 30 * 24 * 60;
const MAX_FAILURES: usize = 10_000;

/// Milliseconds of one minute spent up, out of those observed (the agent may not have been
/// running for all of it; unobserved time counts neither way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Minute {
    /// Minutes since the Unix epoch.
    pub at: u32,
    pub up_ms: u16,
    pub observed_ms: u16,
}

/// One failure: when the target went down, and when it came back (None while down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub down_ms: u64,
    pub up_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    minutes: VecDeque<Minute>,
    failures: VecDeque<Failure>,
    /// Total failures ever recorded (the counter; `failures` keeps only recent ones).
    pub failures_total: u64,
    /// Last observation: (unix ms, up).
    last: Option<(u64, bool)>,
}

impl History {
    /// Records that the target was `up` from the last observation until `now_ms` (Unix ms).
    /// A gap longer than `max_gap` (the agent was not running) is left unobserved.
    pub fn observe(&mut self, now_ms: u64, up: bool, max_gap: Duration) {
        if let Some((last_ms, was_up)) = self.last {
            if now_ms > last_ms && now_ms - last_ms <= max_gap.as_millis() as u64 {
                self.add_span(last_ms, now_ms, was_up);
            }
            if was_up && !up {
                self.fail(now_ms);
            } else if !was_up && up {
                if let Some(f) = self.failures.back_mut().filter(|f| f.up_ms.is_none()) {
                    // A wall clock stepped back while down must not make recovery precede
                    // the failure: the outage then counts as zero long, never negative.
                    f.up_ms = Some(now_ms.max(f.down_ms));
                }
            }
        } else if !up {
            // First sight of the target and it is down: that is a failure too.
            self.fail(now_ms);
        }
        self.last = Some((now_ms, up));
    }

    fn fail(&mut self, now_ms: u64) {
        self.failures_total += 1;
        self.failures.push_back(Failure {
            down_ms: now_ms,
            up_ms: None,
        });
        while self.failures.len() > MAX_FAILURES {
            self.failures.pop_front();
        }
    }

    /// Spreads [from, to) over minute buckets.
    fn add_span(&mut self, from: u64, to: u64, up: bool) {
        let mut t = from;
        while t < to {
            let minute = t / 60_000;
            let end = ((minute + 1) * 60_000).min(to);
            let ms = (end - t) as u16;
            let m = match self.minutes.back_mut() {
                Some(m) if m.at as u64 == minute => m,
                _ => {
                    self.minutes.push_back(Minute {
                        at: minute as u32,
                        up_ms: 0,
                        observed_ms: 0,
                    });
                    if self.minutes.len() > MAX_MINUTES {
                        self.minutes.pop_front();
                    }
                    self.minutes.back_mut().expect("just pushed")
                }
            };
            m.observed_ms = m.observed_ms.saturating_add(ms);
            if up {
                m.up_ms = m.up_ms.saturating_add(ms);
            }
            t = end;
        }
    }

    /// A = T_up / T_total over the last `window_s` seconds (minute resolution); None when
    /// nothing was observed in it.
    pub fn availability(&self, now_ms: u64, window_s: u64) -> Option<f64> {
        let since = (now_ms.saturating_sub(window_s * 1000)) / 60_000;
        let (up, total) = self
            .minutes
            .iter()
            .rev()
            .take_while(|m| m.at as u64 >= since)
            .fold((0u64, 0u64), |(u, t), m| {
                (u + m.up_ms as u64, t + m.observed_ms as u64)
            });
        (total > 0).then(|| up as f64 / total as f64)
    }

    /// Mean time to recovery of the failures that began in the window and have recovered.
    pub fn mttr(&self, now_ms: u64, window_s: u64) -> Option<Duration> {
        let since = now_ms.saturating_sub(window_s * 1000);
        let repaired: Vec<u64> = self
            .failures
            .iter()
            .filter(|f| f.down_ms >= since)
            // Saturating: a stored history may hold a recovery stamped before its failure.
            .filter_map(|f| f.up_ms.map(|u| u.saturating_sub(f.down_ms)))
            .collect();
        let total = repaired.iter().fold(0u64, |sum, d| sum.saturating_add(*d));
        (!repaired.is_empty()).then(|| Duration::from_millis(total / repaired.len() as u64))
    }

    /// The state last observed (None before the first observation).
    pub fn is_up(&self) -> Option<bool> {
        self.last.map(|(_, up)| up)
    }

    /// Forgets all but the newest `n` minutes (components keep one day, not thirty).
    pub fn keep_minutes(&mut self, n: usize) {
        while self.minutes.len() > n {
            self.minutes.pop_front();
        }
    }

    /// The newest minute with an observation (Unix minutes).
    pub fn last_minute(&self) -> Option<u32> {
        self.minutes.back().map(|m| m.at)
    }

    /// Failures that began in the window.
    pub fn failures_in(&self, now_ms: u64, window_s: u64) -> u64 {
        let since = now_ms.saturating_sub(window_s * 1000);
        self.failures.iter().filter(|f| f.down_ms >= since).count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAP: Duration = Duration::from_secs(10);
    const T0: u64 = 1_795_708_800_000; // a minute boundary

    fn run(h: &mut History, from_s: u64, to_s: u64, up: bool) {
        for s in from_s..=to_s {
            h.observe(T0 + s * 1000, up, GAP);
        }
    }

    #[test]
    fn availability_failures_and_mttr_from_a_known_timeline() {
        let mut h = History::default();
        run(&mut h, 0, 240, true); // up 4 min
        run(&mut h, 241, 300, false); // down 1 min (the transition second counts as up)
        run(&mut h, 301, 600, true);
        let now = T0 + 600_000;
        let a = h.availability(now, 600).unwrap();
        assert!((a - 540.0 / 600.0).abs() < 0.01, "A = {a}");
        assert_eq!(h.failures_total, 1);
        assert_eq!(h.mttr(now, 3600), Some(Duration::from_secs(60)));
        assert_eq!(
            h.availability(now, 60),
            Some(1.0),
            "the last minute was all up"
        );
    }

    #[test]
    fn unobserved_gaps_count_neither_way() {
        let mut h = History::default();
        run(&mut h, 0, 60, true);
        // The agent was down for an hour; then it sees the target up again.
        run(&mut h, 3660, 3720, true);
        assert_eq!(h.availability(T0 + 3_720_000, 7200), Some(1.0));
    }

    #[test]
    fn first_sight_down_is_a_failure_and_memory_is_bounded() {
        let mut h = History::default();
        h.observe(T0, false, GAP);
        assert_eq!(h.failures_total, 1);
        for m in 0..(MAX_MINUTES as u64 + 100) {
            h.observe(T0 + m * 60_000, true, Duration::from_secs(120));
        }
        assert!(h.minutes.len() <= MAX_MINUTES);
    }

    #[test]
    fn a_clock_stepped_back_while_down_never_underflows_the_mttr() {
        let mut h = History::default();
        run(&mut h, 0, 60, true);
        run(&mut h, 61, 120, false); // down at T0+61 s
                                     // The wall clock steps back an hour; the target recovers "before" it failed.
        h.observe(T0 - 3_600_000, true, GAP);
        let now = T0 + 120_000;
        assert_eq!(h.mttr(now, 3600), Some(Duration::ZERO));
        // A stored history (from an older agent) with up before down is clamped too.
        h.failures.push_back(Failure {
            down_ms: T0 + 100_000,
            up_ms: Some(T0),
        });
        assert_eq!(h.mttr(now, 3600), Some(Duration::ZERO));
        h.failures.push_back(Failure {
            down_ms: T0,
            up_ms: Some(u64::MAX),
        });
        assert!(
            h.mttr(now, 3600).is_some(),
            "a huge span saturates, never panics"
        );
    }
}
