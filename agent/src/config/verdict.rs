//! `[verdict]` and `[targets.verdict]`: how the load-balancing verdict is made (which
//! signals count, their thresholds, the anti-flap bounds) and where HAProxy's agent-check
//! is answered. Defaults suit a latency-critical service.
use std::net::SocketAddr;

use serde::Deserialize;

use super::HumanDuration;

/// `[verdict]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerdictConfig {
    /// Where HAProxy's `agent-check` is answered (TCP, one line per connection). Off unless
    /// set; keep it on loopback or a private address: anyone who can reach it learns the
    /// targets' states (it changes nothing).
    pub agent_check_listen: Option<SocketAddr>,
    /// Ticks a better verdict must hold before it is taken (slow to trust).
    pub rise: u32,
    /// Ticks a worse verdict must hold before it is taken (a dead target is `down` at once).
    pub fall: u32,
    /// The lowest weight a degraded target is given, in percent of full load.
    pub floor: u8,
    /// The most the weight moves in one tick, in percentage points.
    pub max_step: u8,
    /// The most targets that may be in `drain` at once on this node (further ones stay
    /// degraded at the floor): a node never sheds all its services on its own word.
    pub max_draining: usize,
    /// How long a GPU XID whose action is reset-gpu, reboot-node or restart-vm keeps the
    /// node (and every target on it) in `drain`.
    pub gpu_window: HumanDuration,
    /// Weigh by the latency SLI (5m window) against the target's latency_objective: the
    /// weight is the allowed slow fraction over the observed one.
    pub latency: bool,
    /// Weigh by the error-budget burn (the 5m window of the 1h/5m pair).
    pub burn: bool,
    /// Weigh by CPU pressure (PSI `some avg10` of the target's cgroups on cgroup2).
    pub cpu_pressure: bool,
    /// Pressure (percent) at which the weight starts to fall...
    pub cpu_pressure_low: f64,
    /// ...and at which it reaches the floor.
    pub cpu_pressure_high: f64,
    /// A burn rate (5m) at or above this drains the target; none: burn only weighs.
    pub drain_burn: Option<f64>,
}

/// The signals and their thresholds for one target: `[verdict]` with the target's
/// `[targets.verdict]` applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Signals {
    /// Weigh by the latency SLI (5m window) against the target's latency_objective: the
    /// weight is the allowed slow fraction over the observed one.
    pub latency: bool,
    /// Weigh by the error-budget burn (the 5m window of the 1h/5m pair).
    pub burn: bool,
    /// Weigh by CPU pressure (PSI `some avg10` of the target's cgroups on cgroup2).
    pub cpu_pressure: bool,
    /// Pressure (percent) at which the weight starts to fall...
    pub cpu_pressure_low: f64,
    /// ...and at which it reaches the floor.
    pub cpu_pressure_high: f64,
    pub drain_burn: Option<f64>,
    pub floor: u8,
}

impl Default for VerdictConfig {
    fn default() -> Self {
        Self {
            agent_check_listen: None,
            rise: 3,
            fall: 2,
            floor: 10,
            max_step: 25,
            max_draining: 1,
            gpu_window: HumanDuration::from_secs(600),
            latency: true,
            burn: true,
            cpu_pressure: true,
            cpu_pressure_low: 10.0,
            cpu_pressure_high: 60.0,
            drain_burn: None,
        }
    }
}

/// `[targets.verdict]`: any of the signal settings, for one target.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalsOverride {
    pub latency: Option<bool>,
    pub burn: Option<bool>,
    pub cpu_pressure: Option<bool>,
    pub cpu_pressure_low: Option<f64>,
    pub cpu_pressure_high: Option<f64>,
    pub drain_burn: Option<f64>,
    pub floor: Option<u8>,
}

impl VerdictConfig {
    /// The settings for a target with these overrides (none: the defaults).
    pub fn signals(&self, o: Option<&SignalsOverride>) -> Signals {
        let d = SignalsOverride::default();
        let o = o.unwrap_or(&d);
        Signals {
            latency: o.latency.unwrap_or(self.latency),
            burn: o.burn.unwrap_or(self.burn),
            cpu_pressure: o.cpu_pressure.unwrap_or(self.cpu_pressure),
            cpu_pressure_low: o.cpu_pressure_low.unwrap_or(self.cpu_pressure_low),
            cpu_pressure_high: o.cpu_pressure_high.unwrap_or(self.cpu_pressure_high),
            drain_burn: o.drain_burn.or(self.drain_burn),
            floor: o.floor.unwrap_or(self.floor),
        }
    }
}

type Errors = super::errors::ConfigErrors;

fn pressure(at: &str, low: f64, high: f64, spans: &super::spans::Spans, errors: &mut Errors) {
    for (key, v) in [("cpu_pressure_low", low), ("cpu_pressure_high", high)] {
        if !(0.0..=100.0).contains(&v) {
            let msg = format!("must be a percentage from 0 to 100, not {v}");
            errors.push_path(spans, &format!("{at}.{key}"), msg);
        }
    }
    if low >= high {
        let msg = format!("must be above cpu_pressure_low ({low}), not {high}");
        errors.push_path(spans, &format!("{at}.cpu_pressure_high"), msg);
    }
}

fn percent(at: &str, key: &str, v: Option<u8>, spans: &super::spans::Spans, errors: &mut Errors) {
    if let Some(v) = v {
        if !(1..=100).contains(&v) {
            let msg = format!("must be a percentage from 1 to 100, not {v}");
            errors.push_path(spans, &format!("{at}.{key}"), msg);
        }
    }
}

fn burn(at: &str, v: Option<f64>, spans: &super::spans::Spans, errors: &mut Errors) {
    if let Some(v) = v {
        if !(v > 1.0 && v.is_finite()) {
            let msg = format!("must be a burn rate above 1, not {v}");
            errors.push_path(spans, &format!("{at}.drain_burn"), msg);
        }
    }
}

pub(super) fn validate(config: &super::Config, spans: &super::spans::Spans, errors: &mut Errors) {
    let v = &config.verdict;
    for (key, n) in [("rise", v.rise), ("fall", v.fall)] {
        if !(1..=100).contains(&n) {
            let msg = format!("must be from 1 to 100 ticks, not {n}");
            errors.push_path(spans, &format!("verdict.{key}"), msg);
        }
    }
    percent("verdict", "floor", Some(v.floor), spans, errors);
    percent("verdict", "max_step", Some(v.max_step), spans, errors);
    pressure(
        "verdict",
        v.cpu_pressure_low,
        v.cpu_pressure_high,
        spans,
        errors,
    );
    burn("verdict", v.drain_burn, spans, errors);
    for (n, t) in config.targets.iter().enumerate() {
        let Some(o) = &t.verdict else { continue };
        let at = format!("{}.verdict", spans.item("targets", n));
        let s = v.signals(Some(o));
        if o.cpu_pressure_low.is_some() || o.cpu_pressure_high.is_some() {
            pressure(&at, s.cpu_pressure_low, s.cpu_pressure_high, spans, errors);
        }
        percent(&at, "floor", o.floor, spans, errors);
        burn(&at, o.drain_burn, spans, errors);
    }
}
