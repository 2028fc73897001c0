//! Alert rules, evaluated on every tick and at once on a watched target's exit: the
//! built-in ones (thresholds and `for` from `[alerting]` and `[[targets]]`) and the user's
//! `[[rules]]` (docs/alerting.md).
pub mod expr;
mod gpu;
#[cfg(test)]
mod identity_tests;
mod jobs;
pub mod series;
mod user;
use std::{
    collections::{BTreeMap, VecDeque},
    sync::{atomic::Ordering, Arc},
    time::{Duration, SystemTime},
};

use std::path::PathBuf;

use tokio::sync::mpsc;

use crate::{
    alert::{Alerts, DeliveryStats, Notification, State},
    config::{AlertingConfig, RuleConfig},
    host::durable,
    model::gpu::GpuModel,
    probes::ProbeStatus,
    remediate::Ledger,
    snapshot::Snapshot,
    targets::watch::{unix_ms, TargetStatus, BURN_WINDOWS},
};

/// Multiwindow, multi-burn-rate alerting (Google SRE workbook, table 5-8): (burn rate,
/// alert, severity) over the window pair of `BURN_WINDOWS` at the same position.
const BURN_RULES: [(f64, &str, &str); BURN_WINDOWS.len()] = [
    (14.4, "TargetErrorBudgetBurnFast", "critical"),
    (6.0, "TargetErrorBudgetBurnSlow", "warning"),
];
/// Window of the node-wide rate and increase rules.
const NODE_WINDOW_MS: u64 = 300_000;

/// Node-wide inputs of the rules.
pub struct NodeInputs<'a> {
    pub probes: &'a [ProbeStatus],
    /// Cumulative kernel drops per probe name.
    pub drops: BTreeMap<&'static str, u64>,
    pub retransmits_total: u64,
}

pub struct Engine {
    alerts: Alerts,
    config: AlertingConfig,
    instance: String,
    outbox: Option<mpsc::Sender<Vec<Notification>>>,
    stats: Arc<DeliveryStats>,
    /// (unix ms, drops per probe, retransmits) for the last NODE_WINDOW_MS.
    node_history: VecDeque<(u64, BTreeMap<&'static str, u64>, u64)>,
    user: Vec<user::UserRule>,
    /// Alert states survive restarts and reloads here, so startsAt is kept and an alert
    /// whose rule is gone is resolved rather than left to expire.
    state_file: PathBuf,
    /// What each XID calls for and when it alerts (`[gpu]`).
    gpu: crate::gpu::Catalog,
    /// Pods and containers by name, from the snapshot being evaluated: an alert that
    /// carries a cgroup carries its namespace, pod and container too.
    pods: Arc<crate::identity::Kubelet>,
    /// Each target's last known identity labels: kept while its cgroups are gone (a
    /// deleted pod's TargetDown), so an alert's label set does not change under it.
    target_identities: BTreeMap<String, Vec<(&'static str, String)>>,
}

type Map = BTreeMap<String, String>;

fn map<const N: usize>(pairs: [(&str, String); N]) -> Map {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

impl Engine {
    pub fn new(
        config: &AlertingConfig,
        rules: &[RuleConfig],
        generator_url: String,
        outbox: Option<mpsc::Sender<Vec<Notification>>>,
        stats: Arc<DeliveryStats>,
        state_file: PathBuf,
    ) -> Self {
        let instance = crate::host::node::name();
        let user = rules
            .iter()
            .filter_map(|r| {
                user::UserRule::new(r)
                    .map_err(|e| tracing::error!(alert = %r.alert, error = %e, "rule skipped"))
                    .ok()
            })
            .collect();
        let mut alerts = Alerts::new(config.resend_interval.get(), generator_url);
        if let Some(snapshot) = durable::read_json(&state_file) {
            alerts.restore(snapshot);
        }
        Self {
            user,
            state_file,
            alerts,
            config: config.clone(),
            instance,
            outbox,
            stats,
            node_history: VecDeque::new(),
            gpu: crate::gpu::Catalog::default(),
            pods: Arc::default(),
            target_identities: BTreeMap::new(),
        }
    }

    /// The XID catalog and rules of `[gpu]` (the built-in ones until set).
    pub fn with_gpu(mut self, catalog: crate::gpu::Catalog) -> Self {
        self.gpu = catalog;
        self
    }

    fn labels(&self, alertname: &str, severity: &str, extra: &[(&str, &str)]) -> Map {
        let mut l = map([
            ("alertname", alertname.to_string()),
            ("severity", severity.to_string()),
            ("instance", self.instance.clone()),
        ]);
        for (k, v) in extra {
            l.insert(k.to_string(), v.to_string());
            if *k == "cgroup" {
                self.add_identity(&mut l, v);
            }
        }
        l
    }

    /// The namespace, pod and container of `cgroup`, those that are known.
    fn add_identity(&self, l: &mut Map, cgroup: &str) {
        let id = self.pods.resolve(cgroup);
        for (name, value) in crate::identity::LABELS.into_iter().zip(id.values()) {
            if !value.is_empty() {
                l.insert(name.to_string(), value.to_string());
            }
        }
    }

    /// Evaluates every rule, then sends what is due.
    pub fn evaluate(
        &mut self,
        targets: &[TargetStatus],
        node: NodeInputs<'_>,
        snapshot: &Snapshot,
        now: SystemTime,
    ) {
        self.pods = snapshot.pods.clone();
        for t in targets {
            self.target_rules(t, &snapshot.gpu, now);
        }
        self.node_rules(node, now);
        self.remediation_rules(&snapshot.remediations, now);
        self.gpu_rules(&snapshot.gpu, now);
        self.stall_rules(targets, now);
        self.job_rules(&snapshot.jobs, &snapshot.gpu, now);
        self.user_rules(snapshot, now);
        self.alerts.sweep(now);
        if self.alerts.take_dirty() {
            let saved = serde_json::to_vec(&self.alerts.snapshot())
                .map_err(std::io::Error::other)
                .and_then(|bytes| durable::write_atomic(&self.state_file, &bytes));
            if let Err(e) = saved {
                tracing::error!(path = %self.state_file.display(), error = %e, "cannot save alert states");
            }
        }
        let due = self.alerts.due(now);
        if due.is_empty() {
            return;
        }
        if let Some(outbox) = &self.outbox {
            if outbox.try_send(due).is_err() {
                // Delivery is a full queue behind: count rather than block the probes;
                // firing alerts are re-sent at the next resend interval anyway.
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn target_rules(&mut self, t: &TargetStatus, gpu: &GpuModel, now: SystemTime) {
        let name = t.config.name.as_str();
        let identity = self.target_identity(t);
        let mut extra = vec![("target", name)];
        extra.extend(identity.iter().map(|(k, v)| (*k, v.as_str())));
        let glob = t.config.selector();
        let last = t
            .last_exit
            .as_deref()
            .map(|e| format!(" The last exit: {e}."))
            .unwrap_or_default();
        let summary = |s: String| map([("summary", s)]);

        let l = self.labels("TargetDown", "critical", &extra);
        let a = map([
            (
                "summary",
                format!("{name} has no live process on {}", self.instance),
            ),
            (
                "description",
                format!("No live process in the cgroups matching `{glob}`.{last}"),
            ),
        ]);
        self.alerts
            .set(l, a, !t.up, self.config.target_down_for.get(), now);

        let l = self.labels("TargetCrashLooping", "warning", &extra);
        let window = t.config.crash_loop_window.get();
        let a = summary(format!(
            "{name} failed {} times in {}s.{last}",
            t.failures_recent,
            window.as_secs()
        ));
        self.alerts.set(
            l,
            a,
            t.failures_recent >= t.config.crash_loop_failures,
            Duration::ZERO,
            now,
        );

        let l = self.labels("TargetProcessKilled", "warning", &extra);
        let a = match &t.recent_kill {
            Some(kill) => {
                let (reason, code) = (&kill.reason, &kill.code);
                match self.kill_cause(gpu, kill) {
                    Some(cause) => map([
                        (
                            "summary",
                            format!(
                                "A process of {name} was {reason} ({code}) after {cause}.{last}"
                            ),
                        ),
                        ("cause", cause),
                    ]),
                    None => summary(format!("A process of {name} was {reason} ({code}).{last}")),
                }
            }
            None => Map::new(),
        };
        self.alerts
            .set(l, a, t.recent_kill.is_some(), Duration::ZERO, now);

        let burns = BURN_WINDOWS.into_iter().zip(t.burn).zip(BURN_RULES);
        for (((long, short), (bl, bs)), (rate, alertname, severity)) in burns {
            let firing = bl.is_some_and(|b| b > rate) && bs.is_some_and(|b| b > rate);
            let l = self.labels(alertname, severity, &extra);
            let a = summary(format!(
                "{name} burns its error budget (objective {}) {:.1}x too fast over {}h and {:.1}x over {}m",
                t.config.availability_objective,
                bl.unwrap_or(0.0),
                long / 3600,
                bs.unwrap_or(0.0),
                short / 60
            ));
            self.alerts.set(l, a, firing, Duration::ZERO, now);
        }

        let sli = t
            .latency
            .iter()
            .find(|(w, _)| *w == "5m")
            .and_then(|(_, v)| *v)
            .map(|(sli, _)| sli);
        let l = self.labels("TargetLatencySLIBelowObjective", "warning", &extra);
        let a = summary(format!(
            "{:.4} of {name}'s syscalls were faster than {:?} over 5m; objective {}",
            sli.unwrap_or(1.0),
            t.config.latency_threshold.get(),
            t.config.latency_objective
        ));
        let firing = sli.is_some_and(|s| s < t.config.latency_objective);
        self.alerts
            .set(l, a, firing, self.config.latency_for.get(), now);
    }

    /// The namespace, pod and container a target's cgroups share, those that are known:
    /// a target selected by pod (or container) alerts in the words of Kubernetes.
    fn target_identity(&mut self, t: &TargetStatus) -> Vec<(&'static str, String)> {
        let now = self.identity_now(t);
        let name = &t.config.name;
        if now.is_empty() {
            return self
                .target_identities
                .get(name)
                .cloned()
                .unwrap_or_default();
        }
        self.target_identities.insert(name.clone(), now.clone());
        now
    }

    fn identity_now(&self, t: &TargetStatus) -> Vec<(&'static str, String)> {
        let mut ids = t.cgroups.iter().map(|c| self.pods.resolve(c));
        let Some(first) = ids.next() else {
            return Vec::new();
        };
        let mut same = [true; 3];
        for id in ids {
            for (s, (a, b)) in same
                .iter_mut()
                .zip(first.values().into_iter().zip(id.values()))
            {
                *s &= a == b;
            }
        }
        crate::identity::LABELS
            .into_iter()
            .zip(first.values())
            .zip(same)
            .filter(|((_, v), same)| *same && !v.is_empty())
            .map(|((k, v), _)| (k, v.to_string()))
            .collect()
    }

    fn node_rules(&mut self, node: NodeInputs<'_>, now: SystemTime) {
        for p in node.probes {
            let l = self.labels("ProbeNotAttached", "critical", &[("probe", p.probe.name())]);
            let why = p.error.clone().unwrap_or_default();
            let a = map([(
                "summary",
                format!("probe {} is not attached: {why}", p.probe.name()),
            )]);
            self.alerts
                .set(l, a, p.enabled && p.error.is_some(), Duration::ZERO, now);
        }

        let ms = unix_ms(now);
        self.node_history
            .push_back((ms, node.drops.clone(), node.retransmits_total));
        while self
            .node_history
            .front()
            .is_some_and(|(t, _, _)| ms - t > NODE_WINDOW_MS)
        {
            self.node_history.pop_front();
        }
        let (t0, drops0, retrans0) = self.node_history.front().cloned().expect("just pushed");
        for (probe, n) in &node.drops {
            let increase = n.saturating_sub(drops0.get(probe).copied().unwrap_or(*n));
            let l = self.labels("KernelEventsDropped", "warning", &[("probe", probe)]);
            let a = map([("summary", format!("{increase} {probe} events dropped in the kernel in the last 5m (a map or ring buffer is full)"))]);
            self.alerts.set(l, a, increase > 0, Duration::ZERO, now);
        }
        let secs = (ms - t0) as f64 / 1000.0;
        let rate = if secs > 0.0 {
            node.retransmits_total.saturating_sub(retrans0) as f64 / secs
        } else {
            0.0
        };
        let l = self.labels("TcpRetransmitRateHigh", "warning", &[]);
        let a = map([(
            "summary",
            format!(
                "{rate:.1} TCP retransmits/s on {} (threshold {})",
                self.instance, self.config.tcp_retransmit_rate
            ),
        )]);
        self.alerts.set(
            l,
            a,
            rate > self.config.tcp_retransmit_rate,
            Duration::ZERO,
            now,
        );
    }

    /// An informational alert per recent action (so Alertmanager hears of every change
    /// the agent makes), and a critical one per target the agent gave up on.
    fn remediation_rules(&mut self, ledger: &Ledger, now: SystemTime) {
        let recent: Vec<_> = ledger
            .recent(now)
            .map(|((action, target, result), detail)| {
                (action.name(), target.clone(), result.name(), detail.clone())
            })
            .collect();
        for (action, target, result, detail) in recent {
            let l = self.labels(
                "GimbalRemediation",
                "info",
                &[("action", action), ("target", &target), ("result", result)],
            );
            let a = map([(
                "summary",
                format!(
                    "{action} of {target} on {}: {result} ({detail})",
                    self.instance
                ),
            )]);
            self.alerts.set(l, a, true, Duration::ZERO, now);
        }
        for (target, why) in ledger.gave_up() {
            let l = self.labels("GimbalRemediationGaveUp", "critical", &[("target", target)]);
            let a = map([(
                "summary",
                format!(
                    "gimbal stopped restarting {target} on {}: {why}",
                    self.instance
                ),
            )]);
            self.alerts.set(l, a, true, Duration::ZERO, now);
        }
    }

    fn user_rules(&mut self, snapshot: &Snapshot, now: SystemTime) {
        let ms = unix_ms(now);
        for i in 0..self.user.len() {
            let results = self.user[i].evaluate(snapshot, ms);
            let c = &self.user[i].config;
            for (series_labels, holds) in results {
                let mut labels = series_labels;
                labels.extend(c.labels.clone());
                labels.insert("alertname".into(), c.alert.clone());
                labels.insert("severity".into(), c.severity.clone());
                labels.insert("instance".into(), self.instance.clone());
                self.alerts
                    .set(labels, c.annotations.clone(), holds, c.hold.get(), now);
            }
        }
    }

    /// The labels of every firing alert.
    pub fn firing(&self) -> Vec<crate::alert::AlertLabels> {
        self.alerts.firing()
    }

    /// Active alerts per (alertname, state), for `gimbal_alerts`.
    pub fn alert_states(&self) -> BTreeMap<(String, &'static str), u64> {
        let mut out = BTreeMap::new();
        for (name, state) in self.alerts.states() {
            let state = match state {
                State::Pending => "pending",
                State::Firing => "firing",
            };
            *out.entry((name.to_string(), state)).or_default() += 1;
        }
        out
    }
}

/// An engine on `config` (its `[gpu]` catalog and rules too) with no Alertmanager, its
/// state in `dir`: for the rules' unit tests.
#[cfg(test)]
pub(crate) fn test_engine(config: &str, dir: &std::path::Path) -> Engine {
    let c = crate::config::Config::parse(config, "t").unwrap();
    Engine::new(
        &c.alerting,
        &c.rules,
        "http://x".into(),
        None,
        Arc::new(DeliveryStats::default()),
        dir.join("alerts.json"),
    )
    .with_gpu(crate::gpu::Catalog::new(&c.gpu))
}
