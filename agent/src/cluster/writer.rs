//! The writer task: told the latest [`Desired`] over a watch channel, it writes the
//! condition (on each change and every heartbeat) and moves the taint (read-modify-write on
//! the node's resourceVersion, a 409 re-read and retried), behind the circuit breaker and
//! dry-run. Every API call has a timeout; a failure is logged, counted and retried at the
//! next heartbeat. It never blocks the loop: the loop only replaces the channel's value.
use std::time::SystemTime;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    api::{ListParams, Patch, PatchParams},
    Api,
};
use tokio::sync::{mpsc, watch};

use super::{condition, readiness, taint, Desired, Kind, Outcome, PodRef, Write};
use crate::config::{ClusterConfig, TaintEffect};

/// Attempts of one taint change before it counts as a conflict.
const CONFLICT_RETRIES: usize = 5;
/// The field manager the API server records for our writes.
const MANAGER: &str = "gimbal";

pub struct Writer {
    readiness_gate: bool,
    desired: watch::Sender<Option<Desired>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    /// Starts the task for `node`, or None when `[cluster]` writes nothing.
    pub fn start(
        config: &ClusterConfig,
        node: String,
        events: mpsc::UnboundedSender<Write>,
    ) -> Option<Self> {
        if !config.enabled() {
            return None;
        }
        if node.is_empty() {
            tracing::error!("[cluster]: the node has no name ($NODE_NAME, hostname): nothing is written to Kubernetes");
            return None;
        }
        let (desired, rx) = watch::channel(None);
        let task = tokio::spawn(run(config.clone(), node, rx, events));
        Some(Self {
            readiness_gate: config.readiness_gate,
            desired,
            task,
        })
    }

    /// The node's latest verdict; the task writes what changed.
    /// Whether the pods' health is wanted (`readiness_gate`): else the loop need not work
    /// it out.
    pub fn wants_pods(&self) -> bool {
        self.readiness_gate
    }

    pub fn set(&self, d: Desired) {
        self.desired.send_if_modified(|cur| {
            let changed = cur.as_ref() != Some(&d);
            *cur = Some(d);
            changed
        });
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

/// Our writes, recorded under our field manager.
fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(MANAGER.into()),
        ..PatchParams::default()
    }
}

/// What the task knows it wrote.
#[derive(Default)]
struct Written {
    /// The condition's status and when it last flipped.
    condition: Option<(bool, SystemTime)>,
    /// Whether the node carries our taint (as last read or written; dry-run: as it would).
    tainted: Option<bool>,
    /// The node's verdict (draining, why) the condition was last written for.
    node_word: Option<(bool, String)>,
    /// Each watched pod's gate as last written, and when it last flipped.
    gates: BTreeMap<PodRef, (bool, SystemTime)>,
}

async fn run(
    config: ClusterConfig,
    node: String,
    mut desired: watch::Receiver<Option<Desired>>,
    events: mpsc::UnboundedSender<Write>,
) {
    let client = match crate::kubeapi::client(config.kubeconfig.as_deref(), true).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("[cluster]: no Kubernetes API client, nothing is written: {e:#}");
            return;
        }
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let report = |kind, outcome| {
        let _ = events.send(Write { kind, outcome });
    };
    let mut written = Written::default();
    let mut heartbeat = tokio::time::interval(config.heartbeat.get());
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let beat = tokio::select! {
            changed = desired.changed() => if changed.is_err() { return } else { false },
            _ = heartbeat.tick() => true,
        };
        let Some(want) = desired.borrow_and_update().clone() else {
            continue;
        };
        // The condition on each heartbeat and when the node's own word changes (not when
        // only a pod's does).
        let node_word = Some((want.draining, want.why.clone()));
        if config.node_condition && (beat || written.node_word != node_word) {
            written.node_word = node_word;
            let outcome = write_condition(&nodes, &node, &want, &mut written).await;
            report(Kind::Condition, outcome);
        }
        if config.readiness_gate {
            for outcome in write_gates(&client, &want, &mut written).await {
                report(Kind::ReadinessGate, outcome);
            }
        }
        if let Some(effect) = config.taint {
            if written.tainted != Some(want.draining) {
                if let Some((kind, outcome)) =
                    move_taint(&nodes, &node, &config, effect, &want, &mut written).await
                {
                    report(kind, outcome);
                }
            }
        }
    }
}

async fn write_condition(
    nodes: &Api<Node>,
    node: &str,
    want: &Desired,
    written: &mut Written,
) -> Outcome {
    let now = SystemTime::now();
    let transition = match written.condition {
        Some((draining, at)) if draining == want.draining => at,
        Some(_) => now,
        // First write: keep the time of a condition already there with the same status
        // (the agent restarted; the node did not flip).
        None => match nodes.get(node).await {
            Ok(n) => {
                let existing = n
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|cs| cs.iter().find(|c| c.type_ == condition::CONDITION));
                condition::transition(existing, want.draining, now)
            }
            Err(e) => {
                tracing::warn!(node, "[cluster]: cannot read the node: {e}");
                return Outcome::Failed;
            }
        },
    };
    let c = condition::condition(want, transition, now);
    match nodes
        .patch_status(node, &params(), &Patch::Strategic(condition::patch(&c)))
        .await
    {
        Ok(_) => {
            if written.condition.map(|(d, _)| d) != Some(want.draining) {
                tracing::info!(node, status = %c.status, reason = ?c.reason, message = ?c.message, "[cluster]: node condition {} written", condition::CONDITION);
            }
            written.condition = Some((want.draining, transition));
            Outcome::Written
        }
        Err(e) => {
            tracing::warn!(node, "[cluster]: cannot write the node condition: {e}");
            Outcome::Failed
        }
    }
}

/// The readiness gates that changed (or were never written, or failed last time); pods
/// no longer watched are forgotten, not written.
async fn write_gates(client: &kube::Client, want: &Desired, written: &mut Written) -> Vec<Outcome> {
    written.gates.retain(|pod, _| want.pods.contains_key(pod));
    let mut out = Vec::new();
    for (pod, health) in &want.pods {
        let now = SystemTime::now();
        let transition = match written.gates.get(pod) {
            Some((ready, _)) if *ready == health.ready => continue,
            Some(_) | None => now,
        };
        let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
        let patch = Patch::Strategic(readiness::patch(health, transition));
        match pods.patch_status(&pod.name, &params(), &patch).await {
            Ok(_) => {
                tracing::info!(namespace = %pod.namespace, pod = %pod.name, ready = health.ready, reason = %health.why, "[cluster]: readiness gate {} written", readiness::GATE);
                written
                    .gates
                    .insert(pod.clone(), (health.ready, transition));
                out.push(Outcome::Written);
            }
            Err(e) => {
                tracing::warn!(namespace = %pod.namespace, pod = %pod.name, "[cluster]: cannot write the readiness gate: {e}");
                out.push(Outcome::Failed);
            }
        }
    }
    out
}

/// Adds or removes our taint; None when the node already is as wanted (nothing to count).
async fn move_taint(
    nodes: &Api<Node>,
    node: &str,
    config: &ClusterConfig,
    effect: TaintEffect,
    want: &Desired,
    written: &mut Written,
) -> Option<(Kind, Outcome)> {
    let kind = if want.draining {
        Kind::Taint
    } else {
        Kind::Untaint
    };
    for _ in 0..CONFLICT_RETRIES {
        let current = match nodes.get(node).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(node, "[cluster]: cannot read the node: {e}");
                return Some((kind, Outcome::Failed));
            }
        };
        // Dry-run keeps the state it would have made: a would-be taint is would-be removed.
        let has = match written.tainted {
            Some(simulated) if config.dry_run => simulated,
            _ => taint::has(&current),
        };
        if has == want.draining {
            written.tainted = Some(want.draining);
            return None;
        }
        if want.draining {
            match nodes.list(&ListParams::default()).await {
                Ok(all) if taint::breaker_allows(&all.items, config.max_tainted_share) => {}
                Ok(all) => {
                    let tainted = all.items.iter().filter(|n| taint::has(n)).count();
                    tracing::warn!(
                        node,
                        tainted,
                        nodes = all.items.len(),
                        max_share = config.max_tainted_share,
                        "[cluster]: taint held back by the circuit breaker"
                    );
                    return Some((kind, Outcome::CircuitOpen));
                }
                Err(e) => {
                    tracing::warn!(
                        node,
                        "[cluster]: cannot list the nodes for the circuit breaker: {e}"
                    );
                    return Some((kind, Outcome::Failed));
                }
            }
        }
        let taints = taint::with(&current, want.draining.then_some(effect), &want.why);
        if config.dry_run {
            tracing::warn!(node, effect = effect.name(), reason = %want.why, "[cluster] dry-run: would {} the node ({})", kind.name(), taint::TAINT_KEY);
            written.tainted = Some(want.draining);
            return Some((kind, Outcome::DryRun));
        }
        let Some(version) = current.metadata.resource_version.as_deref() else {
            tracing::warn!(
                node,
                "[cluster]: the node has no resourceVersion; not changing its taints"
            );
            return Some((kind, Outcome::Failed));
        };
        match nodes
            .patch(
                node,
                &params(),
                &Patch::Merge(taint::patch(&taints, version)),
            )
            .await
        {
            Ok(_) => {
                tracing::warn!(node, effect = effect.name(), reason = %want.why, "[cluster]: {} the node ({})", if want.draining { "tainted" } else { "untainted" }, taint::TAINT_KEY);
                written.tainted = Some(want.draining);
                return Some((kind, Outcome::Written));
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tracing::info!(
                    node,
                    "[cluster]: the node changed while its taints were written; reading it again"
                );
            }
            Err(e) => {
                tracing::warn!(node, "[cluster]: cannot change the node's taints: {e}");
                return Some((kind, Outcome::Failed));
            }
        }
    }
    Some((kind, Outcome::Conflict))
}
