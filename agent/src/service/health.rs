//! Liveness and readiness, shared by the main loop (which updates them) and the HTTP
//! endpoints (which report them).
use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

pub struct Health {
    started: Instant,
    /// Milliseconds after `started` of the main loop's last turn.
    last_turn_ms: AtomicU64,
    ready: AtomicBool,
    /// A loop that has not turned for this long is stuck (liveness fails).
    stall_after: Duration,
}

impl Health {
    /// `interval` is the main loop's period: the loop is declared stuck after three missed
    /// periods, and never sooner than 10 s, so a busy node does not get a healthy agent
    /// restarted.
    pub fn new(interval: Duration) -> Self {
        Self {
            started: Instant::now(),
            last_turn_ms: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            stall_after: (interval * 3).max(Duration::from_secs(10)),
        }
    }

    /// The main loop turned: it is alive.
    pub fn turned(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_turn_ms.store(ms, Ordering::Relaxed);
    }

    /// Probes attached, metrics served, first sample taken.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Whether the main loop turned recently. Before the first turn the agent counts as
    /// alive (loading the probes can take seconds on a large BTF).
    pub fn alive(&self) -> bool {
        self.stalled_for() < self.stall_after
    }

    /// How long since the main loop last turned (or since start, before its first turn).
    pub fn stalled_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_turn_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_until_told_and_alive_while_turning() {
        let h = Health::new(Duration::from_millis(1));
        assert!(!h.ready());
        assert!(h.alive());
        h.set_ready();
        h.turned();
        assert!(h.ready() && h.alive());
    }

    #[test]
    fn a_loop_that_stops_turning_is_not_alive() {
        let mut h = Health::new(Duration::from_millis(1));
        h.stall_after = Duration::from_millis(20);
        h.turned();
        std::thread::sleep(Duration::from_millis(40));
        assert!(!h.alive(), "stalled for {:?}", h.stalled_for());
        h.turned();
        assert!(h.alive());
    }
}
