//! What the signals say about one target right now, before any anti-flap: the raw verdict.
use super::{State, Verdict};
use crate::{config::Signals, targets::watch::TargetStatus};

/// What one target's raw verdict is made from.
pub struct Inputs<'a> {
    pub target: &'a TargetStatus,
    /// CPU pressure, `some avg10` in percent: the highest of its cgroups (None: unknown).
    pub cpu_pressure: Option<f64>,
    pub signals: &'a Signals,
}

/// The raw verdict: `down` when no process is left, `drain` past `drain_burn`, else the
/// lowest weight any signal asks for (never under the floor), `up` at 100 %.
pub fn raw(i: &Inputs) -> Verdict {
    let t = i.target;
    let s = i.signals;
    if !t.up {
        return Verdict::new(State::Down, 0, "no live process");
    }
    let short_burn = t.burn[0].1;
    if let (Some(limit), Some(b)) = (s.drain_burn, short_burn) {
        if b >= limit {
            return Verdict::new(
                State::Drain,
                0,
                format!("error budget burning at {b:.1}x (drain at {limit})"),
            );
        }
    }
    // (weight in percent, reason) per signal that lowers it.
    let mut lowest: Option<(f64, String)> = None;
    let mut consider = |w: f64, why: String| {
        if w < 100.0 && lowest.as_ref().is_none_or(|(l, _)| w < *l) {
            lowest = Some((w, why));
        }
    };
    if s.latency {
        let sli = t
            .latency
            .iter()
            .find(|(w, _)| *w == "5m")
            .and_then(|(_, v)| v.map(|(sli, _)| sli));
        let objective = t.config.latency_objective;
        if let Some(sli) = sli {
            let allowed = 1.0 - objective;
            let slow = 1.0 - sli;
            if slow > allowed {
                consider(
                    100.0 * allowed / slow,
                    format!(
                        "latency SLI {:.2}% under its objective {:.2}%",
                        sli * 100.0,
                        objective * 100.0
                    ),
                );
            }
        }
    }
    if s.burn {
        if let Some(b) = short_burn.filter(|b| *b > 1.0) {
            consider(100.0 / b, format!("error budget burning at {b:.1}x"));
        }
    }
    if s.cpu_pressure {
        if let Some(p) = i.cpu_pressure.filter(|p| *p > s.cpu_pressure_low) {
            let span = s.cpu_pressure_high - s.cpu_pressure_low;
            let share = ((p - s.cpu_pressure_low) / span).min(1.0);
            let floor = f64::from(s.floor);
            consider(
                100.0 - share * (100.0 - floor),
                format!("CPU pressure {p:.1}% (some avg10)"),
            );
        }
    }
    match lowest {
        None => Verdict::up(),
        Some((w, why)) => {
            let w = w.max(f64::from(s.floor)).round() as u8;
            if w >= 100 {
                Verdict::up()
            } else {
                Verdict::new(State::Degraded, w, why)
            }
        }
    }
}
