//! Remediation: changes the agent makes to the host to protect it, each one guarded,
//! audited and undone. CPU throttling of best-effort cgroups while an alert fires
//! (`[[throttle]]`), on a limit that is journaled before it is written (`limits.rs`), so it
//! is always given back, also after the agent was killed; restarts of processes the agent
//! supervises (`[[supervise]]`) and of systemd units through D-Bus (`[[restart]]`), with a
//! backoff and a give-up budget (`backoff.rs`).
//! `[remediation] mode` is `dry-run` by default: everything is decided, logged and counted,
//! nothing changes. The rule-bound actions share one node-wide cap (`cap.rs`).
mod actor;
mod audit;
mod backoff;
mod cap;
mod evict;
mod guard;
mod ledger;
mod limits;
mod pidfd;
mod record;
mod restart;
mod signal;
mod supervise;
mod systemd;
mod throttle;

pub use actor::Remediator;
pub use audit::AuditLog;
pub use ledger::{ActionEvent, Counts, Ledger};
pub use limits::{Change, Limit, LimitJournal};
pub use record::{Kind, Outcome, Recorder};
pub use supervise::Supervisor;

use std::{path::Path, time::SystemTime};

use cap::ActionCap;
use record::Act;
use restart::Restarter;
use signal::Signaller;
use throttle::Throttler;

use crate::{alert::AlertLabels, config::Config};

/// The actions bound to alerts (throttle and freeze, restart, signal), stepped together
/// under one node-wide cap. Supervised processes are not capped: their restarts are what a
/// service manager owes them, bounded per process by the backoff. Runs on the
/// `Remediator`'s thread, never on the agent's loop.
pub struct RuleActions {
    throttler: Throttler,
    restarter: Restarter,
    signaller: Signaller,
    cap: ActionCap,
}

impl RuleActions {
    /// First gives back whatever a killed predecessor left throttled.
    pub fn new(config: &Config, cgroup2: &Path, recorder: &Recorder) -> Self {
        Self {
            throttler: Throttler::new(config, cgroup2, recorder.clone()),
            restarter: Restarter::new(config, recorder.clone()),
            signaller: Signaller::new(config, cgroup2, recorder.clone()),
            cap: ActionCap::new(config.remediation.max_concurrent),
        }
    }

    /// Acts on the alerts firing now, and gives back what no longer fires.
    pub fn step(&mut self, firing: &[AlertLabels], now: SystemTime) {
        self.throttler.step(firing, now, &mut self.cap);
        self.restarter.step(firing, now, &mut self.cap);
        self.signaller.step(firing, now, &mut self.cap);
    }

    /// Gives every throttle and freeze back (agent stop, config reload).
    pub fn release_all(&mut self, why: &str) {
        self.throttler.release_all(why);
    }
}

/// An action over the node-wide cap: logged, audited and counted, once; it waits.
fn record_deferred(recorder: &Recorder, kind: Kind, rule: &str, why: &str, now: SystemTime) {
    tracing::warn!(rule, "{} {why}", kind.name());
    let act = Act {
        kind,
        rule,
        cgroup: "",
    };
    recorder.outcome(act, why, Outcome::Deferred, now);
}

/// The cgroups a rule's globs match under `root`, each confined to the mount
/// (targets::confine's rules); a glob refused for traversal is audited and recorded as
/// refused, so an operator sees why the rule did nothing.
fn confined_groups(
    root: &Path,
    globs: &[String],
    recorder: &Recorder,
    kind: Kind,
    rule: &str,
    now: SystemTime,
) -> Vec<std::path::PathBuf> {
    crate::targets::expand_all(root, globs, |glob, e| {
        let why = format!("refused: {e}");
        tracing::warn!(rule, "{} {why}", kind.name());
        let act = Act {
            kind,
            rule,
            cgroup: glob,
        };
        recorder.outcome(act, &why, Outcome::Refused, now);
    })
}

/// Whether alert `when` fires (for `target`, if given): what every rule-bound action asks.
fn fires(firing: &[AlertLabels], when: &str, target: Option<&str>) -> bool {
    firing.iter().any(|l| {
        l.get("alertname").map(String::as_str) == Some(when)
            && target.is_none_or(|t| l.get("target").map(String::as_str) == Some(t))
    })
}
