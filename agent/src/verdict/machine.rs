//! Anti-flap for one verdict: a worse raw verdict is taken after `fall` ticks in a row, a
//! better one after `rise`, the weight moves at most `max_step` points a tick (both ways),
//! and a target coming back from `drain` or `down` starts at the floor (a slow start).
//! A dead target is `down` at once: that is an observation, not a noisy signal.
use super::{State, Verdict};

/// Weight differences smaller than this are noise: not a change.
const DEADBAND: i32 = 5;

#[derive(Debug, Clone)]
pub struct Machine {
    current: Option<Verdict>,
    worse: u32,
    better: u32,
    rise: u32,
    fall: u32,
    floor: u8,
    max_step: u8,
}

/// A verdict as one number, higher is better: the weight, below zero for drain and down.
fn score(v: &Verdict) -> i32 {
    match v.state {
        State::Down => -1000,
        State::Drain => -500,
        _ => i32::from(v.weight),
    }
}

impl Machine {
    pub fn new(rise: u32, fall: u32, floor: u8, max_step: u8) -> Self {
        Self {
            current: None,
            worse: 0,
            better: 0,
            rise: rise.max(1),
            fall: fall.max(1),
            floor: floor.clamp(1, 100),
            max_step: max_step.clamp(1, 100),
        }
    }

    /// The same machine with new bounds (a reload), keeping its verdict.
    pub fn rebound(&mut self, rise: u32, fall: u32, floor: u8, max_step: u8) {
        let current = self.current.take();
        *self = Self::new(rise, fall, floor, max_step);
        self.current = current;
    }

    pub fn current(&self) -> Option<&Verdict> {
        self.current.as_ref()
    }

    /// Whether the current verdict is `drain`.
    pub fn draining(&self) -> bool {
        self.current
            .as_ref()
            .is_some_and(|v| v.state == State::Drain)
    }

    /// Takes this tick's raw verdict; the new verdict if it changed (state or weight).
    pub fn step(&mut self, raw: Verdict) -> Option<Verdict> {
        let Some(cur) = self.current.clone() else {
            self.current = Some(raw.clone());
            return Some(raw);
        };
        if raw.state == State::Down {
            self.worse = 0;
            self.better = 0;
            return self.set(cur, raw);
        }
        let (r, c) = (score(&raw), score(&cur));
        let better_state = raw.state == State::Up && cur.state != State::Up;
        if r < c - DEADBAND || (raw.state > cur.state && raw.state >= State::Drain) {
            self.better = 0;
            self.worse += 1;
            if self.worse >= self.fall {
                let next = self.toward(&cur, raw);
                return self.set(cur, next);
            }
        } else if r > c + DEADBAND || better_state || raw.state < cur.state {
            self.worse = 0;
            self.better += 1;
            if self.better >= self.rise {
                let next = self.toward(&cur, raw);
                return self.set(cur, next);
            }
        } else {
            self.worse = 0;
            self.better = 0;
            // Same verdict within the deadband: keep it, with the freshest reason.
            if let Some(c) = self.current.as_mut() {
                if c.state == raw.state && raw.state != State::Up {
                    c.reason = raw.reason;
                }
            }
        }
        None
    }

    fn set(&mut self, cur: Verdict, next: Verdict) -> Option<Verdict> {
        let changed = cur.state != next.state || cur.weight != next.weight;
        self.current = Some(next.clone());
        changed.then_some(next)
    }

    /// One bounded step from `cur` toward `raw`.
    fn toward(&self, cur: &Verdict, raw: Verdict) -> Verdict {
        if raw.state >= State::Drain {
            return raw;
        }
        let step = i32::from(self.max_step);
        let from = match cur.state {
            // Back from drain or down: start at the floor.
            State::Drain | State::Down => {
                let w = i32::from(self.floor).min(score(&raw));
                return self.weighted(w, raw, true);
            }
            _ => i32::from(cur.weight),
        };
        let to = score(&raw);
        let w = if to > from {
            (from + step).min(to)
        } else {
            (from - step).max(to)
        };
        let rising = to > from;
        self.weighted(w, raw, rising)
    }

    fn weighted(&self, w: i32, raw: Verdict, rising: bool) -> Verdict {
        if w >= 100 {
            return Verdict::up();
        }
        let w = w.clamp(i32::from(self.floor.min(raw.weight.max(1))), 99) as u8;
        let reason = if rising && raw.state == State::Up {
            "recovering".to_string()
        } else {
            raw.reason
        };
        Verdict::new(State::Degraded, w, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn degraded(w: u8) -> Verdict {
        Verdict::new(State::Degraded, w, "slow")
    }

    fn weights(m: &mut Machine, raws: &[Verdict]) -> Vec<(State, u8)> {
        raws.iter()
            .map(|r| {
                m.step(r.clone());
                let c = m.current().unwrap();
                (c.state, c.weight)
            })
            .collect()
    }

    #[test]
    fn a_worse_verdict_waits_fall_ticks_then_steps_at_most_max_step() {
        let mut m = Machine::new(3, 2, 10, 25);
        assert!(
            m.step(Verdict::up()).is_some(),
            "the first verdict is taken"
        );
        let got = weights(
            &mut m,
            &[
                degraded(10),
                degraded(10),
                degraded(10),
                degraded(10),
                degraded(10),
                degraded(10),
            ],
        );
        use State::*;
        assert_eq!(
            got,
            [
                (Up, 100),
                (Degraded, 75),
                (Degraded, 50),
                (Degraded, 25),
                (Degraded, 10),
                (Degraded, 10)
            ]
        );
    }

    #[test]
    fn a_better_verdict_waits_rise_ticks_and_climbs_back_in_steps() {
        let mut m = Machine::new(3, 1, 10, 25);
        m.step(Verdict::up());
        for _ in 0..4 {
            m.step(degraded(10));
        }
        assert_eq!(m.current().unwrap().weight, 10);
        let got = weights(&mut m, &vec![Verdict::up(); 7]);
        use State::*;
        assert_eq!(
            got,
            [
                (Degraded, 10),
                (Degraded, 10),
                (Degraded, 35),
                (Degraded, 60),
                (Degraded, 85),
                (Up, 100),
                (Up, 100)
            ]
        );
    }

    #[test]
    fn a_dead_target_is_down_at_once_and_comes_back_from_the_floor() {
        let mut m = Machine::new(2, 3, 10, 50);
        m.step(Verdict::up());
        let down = Verdict::new(State::Down, 0, "no live process");
        assert_eq!(m.step(down.clone()).map(|v| v.state), Some(State::Down));
        let got = weights(&mut m, &vec![Verdict::up(); 5]);
        use State::*;
        assert_eq!(
            got,
            [
                (Down, 0),
                (Degraded, 10),
                (Degraded, 60),
                (Up, 100),
                (Up, 100)
            ]
        );
    }

    #[test]
    fn an_alternating_signal_never_flaps() {
        // Bad one tick, good the next: with fall 2 nothing is ever taken.
        let mut m = Machine::new(3, 2, 10, 25);
        m.step(Verdict::up());
        let mut changes = 0;
        for i in 0..100 {
            let raw = if i % 2 == 0 {
                degraded(10)
            } else {
                Verdict::up()
            };
            changes += usize::from(m.step(raw).is_some());
        }
        assert_eq!(changes, 0);
        assert_eq!(m.current().unwrap().state, State::Up);
    }

    #[test]
    fn small_weight_moves_are_noise() {
        let mut m = Machine::new(1, 1, 10, 25);
        m.step(degraded(50));
        for w in [52, 48, 54, 47, 50] {
            assert!(m.step(degraded(w)).is_none(), "{w} is within the deadband");
        }
        assert_eq!(m.step(degraded(40)).map(|v| v.weight), Some(40));
    }

    #[test]
    fn drain_is_taken_after_fall_ticks_without_steps() {
        let mut m = Machine::new(3, 2, 10, 25);
        m.step(Verdict::up());
        let drain = Verdict::new(State::Drain, 0, "burn");
        assert!(m.step(drain.clone()).is_none());
        assert_eq!(m.step(drain).map(|v| v.state), Some(State::Drain));
        assert!(m.draining());
    }
}
