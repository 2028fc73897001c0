//! What the agent writes to the Kubernetes API about its own node (`[cluster]`), from the
//! node's verdict: the `GimbalNodeDrain` condition (merged by type, as node-problem-detector
//! writes its own) and, opt-in and dry-run by default, the `gimbal.io/drain` taint behind a
//! cluster-wide circuit breaker. A task of its own: the loop hands it the latest verdict
//! over a watch channel and never waits for the API server; what it did comes back as
//! [`Write`] events, which the loop counts in the snapshot.
//!
//! - `condition.rs`: the condition and its status patch (pure).
//! - `taint.rs`: the node's taints with or without ours, and the circuit breaker (pure).
//! - `writer.rs`: the task: the API calls, conflicts retried, heartbeats, dry-run.
mod condition;
mod taint;
mod writer;

use std::collections::BTreeMap;

pub use condition::CONDITION;
pub use taint::TAINT_KEY;
pub use writer::Writer;

/// What the node's verdict asks of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The node's verdict is drain or down.
    pub draining: bool,
    /// Why (the verdict's reason), for the condition's message and the log.
    pub why: String,
}

/// What was written, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Condition,
    Taint,
    Untaint,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Condition => "condition",
            Kind::Taint => "taint",
            Kind::Untaint => "untaint",
        }
    }
}

/// How a write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Written,
    /// Dry-run: logged, not sent.
    DryRun,
    /// The taint was held back: too many nodes carry it already.
    CircuitOpen,
    /// The node changed under every retry (409 each time).
    Conflict,
    Failed,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Written => "written",
            Outcome::DryRun => "dry_run",
            Outcome::CircuitOpen => "circuit_open",
            Outcome::Conflict => "conflict",
            Outcome::Failed => "failed",
        }
    }
}

/// One write the task made (or held back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Write {
    pub kind: Kind,
    pub outcome: Outcome,
}

/// Writes counted by kind and outcome, as the snapshot keeps them.
#[derive(Debug, Clone, Default)]
pub struct Writes(pub BTreeMap<(Kind, Outcome), u64>);

impl Writes {
    pub fn record(&mut self, w: Write) {
        *self.0.entry((w.kind, w.outcome)).or_default() += 1;
    }
}
