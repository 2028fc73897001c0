//! Remediation: changes the agent makes to the host to protect it, each one guarded,
//! audited and undone. CPU throttling of best-effort cgroups while an alert fires
//! (`[[throttle]]`), on a limit that is journaled before it is written (`limits.rs`), so it
//! is always given back, also after the agent was killed; restarts of processes the agent
//! supervises (`[[supervise]]`) and of systemd units through D-Bus (`[[restart]]`), with a
//! backoff and a give-up budget (`backoff.rs`).
//! `[remediation] mode` is `dry-run` by default: everything is decided, logged and counted,
//! nothing changes. The rule-bound actions share one node-wide cap (`cap.rs`).
mod audit;
mod backoff;
mod cap;
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
pub use supervise::Supervisor;

use std::{path::Path, time::SystemTime};

use cap::ActionCap;
use restart::Restarter;
use signal::Signaller;
use throttle::Throttler;

use crate::{alert::AlertLabels, config::Config};

/// The actions bound to alerts (throttle and freeze, restart, signal), stepped together
/// under one node-wide cap. Supervised processes are not capped: their restarts are what a
/// service manager owes them, bounded per process by the backoff.
pub struct RuleActions {
    throttler: Throttler,
    restarter: Restarter,
    signaller: Signaller,
    cap: ActionCap,
}

impl RuleActions {
    /// First gives back whatever a killed predecessor left throttled.
    pub fn new(config: &Config, cgroup2: &Path, ledger: &mut Ledger) -> Self {
        Self {
            throttler: Throttler::new(config, cgroup2, ledger),
            restarter: Restarter::new(config),
            signaller: Signaller::new(config, cgroup2),
            cap: ActionCap::new(config.remediation.max_concurrent),
        }
    }

    /// Acts on the alerts firing now, and gives back what no longer fires.
    pub fn step(&mut self, firing: &[AlertLabels], now: SystemTime, ledger: &mut Ledger) {
        self.throttler.step(firing, now, &mut self.cap, ledger);
        self.restarter.step(firing, now, &mut self.cap, ledger);
        self.signaller.step(firing, now, &mut self.cap, ledger);
    }

    /// Gives every throttle and freeze back (agent stop, config reload).
    pub fn release_all(&mut self, why: &str, ledger: &mut Ledger) {
        self.throttler.release_all(why, ledger);
    }
}

/// An action over the node-wide cap: logged, audited and counted, once; it waits.
fn record_deferred(
    audit: &audit::AuditLog,
    mode: crate::config::RemediationMode,
    action: &'static str,
    rule: &str,
    why: &str,
    now: SystemTime,
    ledger: &mut Ledger,
) {
    tracing::warn!(rule, "{action} {why}");
    let entry = audit::Entry {
        phase: "outcome",
        action,
        rule,
        cgroup: "",
        mode: mode.name(),
        detail: why,
        result: "deferred",
    };
    audit.record(&entry, now);
    ledger.record(ActionEvent {
        action,
        target: rule.to_string(),
        result: "deferred",
        detail: why.to_string(),
        at: now,
    });
}

/// The cgroups a rule's globs match under `root`, each confined to the mount
/// (targets::confine's rules); a glob refused for traversal is audited and recorded as
/// refused, so an operator sees why the rule did nothing.
#[allow(
    clippy::too_many_arguments,
    reason = "what to expand and everything a refusal is audited and recorded with"
)]
fn confined_groups(
    root: &Path,
    globs: &[String],
    audit: &audit::AuditLog,
    mode: crate::config::RemediationMode,
    action: &'static str,
    rule: &str,
    now: SystemTime,
    ledger: &mut Ledger,
) -> Vec<std::path::PathBuf> {
    let mut groups = Vec::new();
    for glob in globs {
        match crate::targets::expand_checked(root, glob) {
            Ok(found) => groups.extend(found),
            Err(e) => {
                let why = format!("refused: {e}");
                tracing::warn!(rule, "{action} {why}");
                audit.record(
                    &audit::Entry {
                        phase: "outcome",
                        action,
                        rule,
                        cgroup: glob,
                        mode: mode.name(),
                        detail: &why,
                        result: "refused",
                    },
                    now,
                );
                ledger.record(ActionEvent {
                    action,
                    target: rule.to_string(),
                    result: "refused",
                    detail: why,
                    at: now,
                });
            }
        }
    }
    groups.sort();
    groups.dedup();
    groups
}

/// Whether alert `when` fires (for `target`, if given): what every rule-bound action asks.
fn fires(firing: &[AlertLabels], when: &str, target: Option<&str>) -> bool {
    firing.iter().any(|l| {
        l.get("alertname").map(String::as_str) == Some(when)
            && target.is_none_or(|t| l.get("target").map(String::as_str) == Some(t))
    })
}
