//! How every remediation action is written down: one `Recorder` per agent, shared by the
//! rule-bound actions and the supervisor, writes the audit log (the only writer of that
//! file) and reports each outcome as an `ActionEvent` over the one channel the main loop
//! records into the ledger. Kinds and outcomes are enums, named once for the log, the
//! audit and the metric labels.
use std::{sync::Arc, time::SystemTime};

use tokio::sync::mpsc::UnboundedSender;

use super::{
    audit::{AuditLog, Entry},
    ActionEvent,
};
use crate::config::RemediationMode;

/// What an action does. Declared in the order of their names, so sorted keys read as
/// sorted labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Evict,
    Freeze,
    Restart,
    Signal,
    Start,
    Stop,
    Thaw,
    Throttle,
    Unthrottle,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Evict => "evict",
            Kind::Freeze => "freeze",
            Kind::Restart => "restart",
            Kind::Signal => "signal",
            Kind::Start => "start",
            Kind::Stop => "stop",
            Kind::Thaw => "thaw",
            Kind::Throttle => "throttle",
            Kind::Unthrottle => "unthrottle",
        }
    }
}

/// How an action ended (or `Pending`, for an intent). In the order of their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Over the node-wide cap: waits while its alert fires.
    Deferred,
    Done,
    /// Decided and logged, not carried out (`[remediation] mode = "dry-run"`).
    DryRun,
    Failed,
    /// The backoff's budget is spent: not tried again until the config is reloaded.
    GaveUp,
    Pending,
    /// A guard said no (a protected cgroup, the agent itself, traversal).
    Refused,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Deferred => "deferred",
            Outcome::Done => "done",
            Outcome::DryRun => "dry_run",
            Outcome::Failed => "failed",
            Outcome::GaveUp => "gave_up",
            Outcome::Pending => "pending",
            Outcome::Refused => "refused",
        }
    }
}

/// One action on one thing: what the audit line and the event say about it.
#[derive(Debug, Clone, Copy)]
pub struct Act<'a> {
    pub kind: Kind,
    /// The [[throttle]]/[[signal]] rule, [[restart]] target or [[supervise]] name.
    pub rule: &'a str,
    /// The cgroup (relative to its mount) or unit acted on; empty when there is none.
    pub cgroup: &'a str,
}

#[derive(Clone)]
pub struct Recorder {
    audit: Arc<AuditLog>,
    mode: RemediationMode,
    events: UnboundedSender<ActionEvent>,
}

impl Recorder {
    pub fn new(
        audit: Arc<AuditLog>,
        mode: RemediationMode,
        events: UnboundedSender<ActionEvent>,
    ) -> Self {
        Self {
            audit,
            mode,
            events,
        }
    }

    /// The same log and channel, for a reloaded config's mode.
    pub fn with_mode(&self, mode: RemediationMode) -> Self {
        Self {
            mode,
            ..self.clone()
        }
    }

    pub fn mode(&self) -> RemediationMode {
        self.mode
    }

    /// Written before the host is touched (not fsynced: see audit.rs).
    pub fn intent(&self, act: Act<'_>, detail: &str, now: SystemTime) {
        self.audit_line(act, "intent", detail, Outcome::Pending, now);
    }

    /// Audited (fsynced), then reported to the main loop for the ledger.
    pub fn outcome(&self, act: Act<'_>, detail: &str, outcome: Outcome, now: SystemTime) {
        self.audit_line(act, "outcome", detail, outcome, now);
        let detail = match act.cgroup.is_empty() {
            true => detail.to_string(),
            false => format!("{}: {detail}", act.cgroup),
        };
        // The loop is gone only when the agent stops: nothing is left to tell.
        let _ = self.events.send(ActionEvent {
            action: act.kind,
            target: act.rule.to_string(),
            result: outcome,
            detail,
            at: now,
        });
    }

    fn audit_line(
        &self,
        act: Act<'_>,
        phase: &str,
        detail: &str,
        outcome: Outcome,
        now: SystemTime,
    ) {
        self.audit.record(
            &Entry {
                phase,
                action: act.kind.name(),
                rule: act.rule,
                cgroup: act.cgroup,
                mode: self.mode.name(),
                detail,
                result: outcome.name(),
            },
            now,
        );
    }
}

#[cfg(test)]
pub mod testing {
    //! A recorder whose events land in a ledger the test reads.
    use super::*;
    use crate::remediate::Ledger;

    pub struct Recorded {
        pub recorder: Recorder,
        rx: tokio::sync::mpsc::UnboundedReceiver<ActionEvent>,
        pub ledger: Ledger,
    }

    impl Recorded {
        pub fn new(state_dir: &std::path::Path, mode: RemediationMode) -> Self {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            Self {
                recorder: Recorder::new(Arc::new(AuditLog::new(state_dir)), mode, tx),
                rx,
                ledger: Ledger::default(),
            }
        }

        /// The ledger with every event reported so far.
        pub fn ledger(&mut self) -> &Ledger {
            while let Ok(e) = self.rx.try_recv() {
                self.ledger.record(e);
            }
            &self.ledger
        }
    }
}
