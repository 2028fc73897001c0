//! What the readers (`/metrics`, the rules) see: the kernel model next to what the stages
//! around it last reported. `run.rs` is its only writer; the model itself stays pure and
//! knows nothing of targets, alerts or remediation.
//!
//! Published today under one lock that run.rs takes per tick and per event (one thread
//! writes it, and the HTTP task on the same current-thread runtime reads it).
use std::collections::BTreeMap;

use crate::{model::Model, remediate::Ledger, watch::TargetStatus};

#[derive(Debug)]
pub struct Snapshot {
    /// Kernel-derived totals.
    pub kernel: Model,
    /// The watched targets as the watcher last saw them.
    pub targets: Vec<TargetStatus>,
    /// Active alerts per (alertname, state), as the rules last left them.
    pub alerts: BTreeMap<(String, &'static str), u64>,
    /// Remediation actions by (action, result), and what the rules report of them: the
    /// one channel back from the actuators into the rules.
    pub remediations: Ledger,
    pub reloads: Reloads,
}

/// SIGHUP reloads of the config file.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reloads {
    pub accepted: u64,
    /// The new config was refused and the running one stayed.
    pub rejected: u64,
}

impl Snapshot {
    pub fn new(max_series_per_metric: usize) -> Self {
        Self {
            kernel: Model::new(max_series_per_metric),
            targets: Vec::new(),
            alerts: BTreeMap::new(),
            remediations: Ledger::default(),
            reloads: Reloads::default(),
        }
    }
}
