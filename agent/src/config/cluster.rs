//! `[cluster]`: what the agent writes to the Kubernetes API about its own node, from the
//! node's verdict: a node condition, a readiness-gate condition on the watched pods (informational, merged by type as node-problem-detector
//! does) and, opt-in and dry-run by default, a taint that keeps new pods off a draining
//! node, behind a cluster-wide circuit breaker. Off by default: a .deb host has no API.
use std::path::PathBuf;

use serde::Deserialize;

use super::HumanDuration;

/// The taint effects the agent may set (never `NoExecute`: it evicts, and evicting is a
/// remediation with its own guards, not a side effect of a verdict).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
}

impl TaintEffect {
    pub fn name(self) -> &'static str {
        match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
        }
    }
}

/// `[cluster]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Write the `GimbalNodeDrain` condition on this node's status (needs `get nodes` and
    /// `patch nodes/status`).
    pub node_condition: bool,
    /// Taint the node with `gimbal.io/drain` and this effect while its verdict is drain or
    /// down (needs `list nodes` and `patch nodes`). None: never.
    pub taint: Option<TaintEffect>,
    /// Log the taint changes that would be made and count them, writing nothing.
    pub dry_run: bool,
    /// No taint is added when this share of the cluster's nodes (0..1) would then carry it:
    /// a fault seen everywhere at once is more likely the agent's than every node's.
    pub max_tainted_share: f64,
    /// The condition is written again this often while nothing changes (lastHeartbeatTime),
    /// and a failed write is retried after this long.
    pub heartbeat: HumanDuration,
    /// Write the `gimbal.io/healthy` condition on the pods of every watched target that
    /// runs in pods: "True" while the target's verdict is up, "False" while degraded,
    /// draining or down, so a pod whose spec declares that readiness gate leaves its
    /// Services' endpoints without being killed (needs `patch pods/status`).
    pub readiness_gate: bool,
    /// A `[[restart]]` of a target selected by pod evicts the pod it alerted on through the
    /// API (honouring its PodDisruptionBudgets; needs `create pods/eviction`), under the
    /// remediation's mode, guards, cap, backoff and audit.
    pub evictions: bool,
    /// A kubeconfig file; none: in-cluster (the pod's service account), else $KUBECONFIG.
    pub kubeconfig: Option<PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_condition: false,
            taint: None,
            readiness_gate: false,
            evictions: false,
            dry_run: true,
            max_tainted_share: 0.1,
            heartbeat: HumanDuration::from_secs(60),
            kubeconfig: None,
        }
    }
}

impl ClusterConfig {
    /// Whether anything is written at all.
    pub fn enabled(&self) -> bool {
        self.node_condition || self.taint.is_some() || self.readiness_gate
    }
}

pub(super) fn validate(
    config: &super::Config,
    spans: &super::spans::Spans,
    errors: &mut super::errors::ConfigErrors,
) {
    let c = &config.cluster;
    let share = c.max_tainted_share;
    if !(share > 0.0 && share <= 1.0) {
        let msg = format!("must be a share of the nodes above 0 and at most 1, not {share}");
        errors.push_path(spans, "cluster.max_tainted_share", msg);
    }
    let beat = c.heartbeat.get().as_secs();
    if !(5..=3600).contains(&beat) {
        let msg = format!("must be from 5s to 1h, not {}", c.heartbeat);
        errors.push_path(spans, "cluster.heartbeat", msg);
    }
}
