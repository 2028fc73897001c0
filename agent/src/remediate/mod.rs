//! Remediation: changes the agent makes to the host to protect it, each one guarded,
//! audited and undone. CPU throttling of best-effort cgroups while an alert fires
//! (`[[throttle]]`), on a limit that is journaled before it is written (`limits.rs`), so it
//! is always given back, also after the agent was killed; restarts of processes the agent
//! supervises (`[[supervise]]`) and of systemd units through D-Bus (`[[restart]]`), with a
//! backoff and a give-up budget (`backoff.rs`).
//! `[remediation] mode` is `dry-run` by default: everything is decided, logged and counted,
//! nothing changes.
mod audit;
mod backoff;
mod guard;
mod ledger;
mod limits;
mod pidfd;
mod restart;
mod signal;
mod supervise;
mod systemd;
mod throttle;

pub use ledger::{ActionEvent, Counts, Ledger};
pub use limits::{Change, Limit, LimitJournal};
pub use restart::Restarter;
pub use signal::Signaller;
pub use supervise::Supervisor;
pub use throttle::Throttler;

/// Whether alert `when` fires (for `target`, if given): what every rule-bound action asks.
fn fires(firing: &[crate::alert::AlertLabels], when: &str, target: Option<&str>) -> bool {
    firing.iter().any(|l| {
        l.get("alertname").map(String::as_str) == Some(when)
            && target.is_none_or(|t| l.get("target").map(String::as_str) == Some(t))
    })
}
