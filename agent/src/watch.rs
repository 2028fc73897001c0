//! Watched targets and their alerts: the fast path from a process exit to Alertmanager.
//!
//! Membership is refreshed on every tick and, for a target whose cgroup just lost a process,
//! at once on the exit event, so a target that goes down raises TargetDown within
//! milliseconds instead of a scrape and an evaluation interval later.
use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{atomic::Ordering, Arc},
    time::{Duration, SystemTime},
};

use tokio::sync::mpsc;

use crate::{
    alert::{Alerts, DeliveryStats, Notification, State},
    config::{AlertingConfig, TargetConfig},
    probes::ExitRecord,
    targets::{members, Members},
};

pub struct Watcher {
    targets: Vec<Watched>,
    alerts: Alerts,
    hold: Duration,
    cgroup_root: PathBuf,
    proc_root: PathBuf,
    instance: String,
    outbox: Option<mpsc::Sender<Vec<Notification>>>,
    stats: Arc<DeliveryStats>,
}

struct Watched {
    config: TargetConfig,
    members: Members,
    /// What the last exit of one of its processes was, for the alert's description.
    last_exit: Option<String>,
}

/// What the exposition shows of the watcher.
#[derive(Debug, Clone, Default)]
pub struct WatchStatus {
    pub targets_up: BTreeMap<String, bool>,
    pub alerts: BTreeMap<(String, &'static str), u64>,
}

impl Watcher {
    pub fn new(
        targets: &[TargetConfig],
        alerting: &AlertingConfig,
        generator_url: String,
        cgroup_root: PathBuf,
        outbox: Option<mpsc::Sender<Vec<Notification>>>,
        stats: Arc<DeliveryStats>,
    ) -> Self {
        let instance = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        Self {
            targets: targets
                .iter()
                .map(|c| Watched {
                    config: c.clone(),
                    members: Members::default(),
                    last_exit: None,
                })
                .collect(),
            alerts: Alerts::new(alerting.resend_interval.get(), generator_url),
            hold: alerting.target_down_for.get(),
            cgroup_root,
            proc_root: PathBuf::from("/proc"),
            instance,
            outbox,
            stats,
        }
    }

    /// Re-reads every target's members, re-evaluates, sends what is due.
    pub fn tick(&mut self, now: SystemTime) {
        for i in 0..self.targets.len() {
            self.refresh(i, None);
        }
        self.evaluate(now);
    }

    /// A process exited: targets that held its cgroup are re-read at once.
    pub fn on_exit(&mut self, record: &ExitRecord, now: SystemTime) {
        let mut touched = false;
        for i in 0..self.targets.len() {
            if self.targets[i]
                .members
                .cgroups
                .contains(&record.event.cgroup_id)
            {
                let [_, comm, reason, code] = &record.labels;
                self.targets[i].last_exit =
                    Some(format!("{comm} (pid {}) {reason} {code}", record.event.pid));
                self.refresh(i, Some(record.event.pid));
                touched = true;
            }
        }
        if touched {
            self.evaluate(now);
        }
    }

    fn refresh(&mut self, i: usize, exiting: Option<u32>) {
        let t = &mut self.targets[i];
        t.members = members(
            &self.cgroup_root,
            &self.proc_root,
            &t.config.cgroup,
            exiting,
        );
    }

    fn evaluate(&mut self, now: SystemTime) {
        for t in &self.targets {
            let labels = BTreeMap::from([
                ("alertname".to_string(), "TargetDown".to_string()),
                ("target".to_string(), t.config.name.clone()),
                ("severity".to_string(), "critical".to_string()),
                ("instance".to_string(), self.instance.clone()),
            ]);
            let mut annotations = BTreeMap::from([(
                "summary".to_string(),
                format!("{} has no live process on {}", t.config.name, self.instance),
            )]);
            let detail = match &t.last_exit {
                Some(e) => format!(
                    "No process left in cgroups matching `{}`; the last one to exit: {e}.",
                    t.config.cgroup
                ),
                None => format!("No process in cgroups matching `{}`.", t.config.cgroup),
            };
            annotations.insert("description".to_string(), detail);
            self.alerts.set(
                labels,
                annotations,
                t.members.pids.is_empty(),
                self.hold,
                now,
            );
        }
        let due = self.alerts.due(now);
        if due.is_empty() {
            return;
        }
        if let Some(outbox) = &self.outbox {
            if outbox.try_send(due).is_err() {
                // The delivery task is behind by a full queue: count rather than block the
                // probes; firing alerts are re-sent on the next resend interval anyway.
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn status(&self) -> WatchStatus {
        let mut s = WatchStatus {
            targets_up: self
                .targets
                .iter()
                .map(|t| (t.config.name.clone(), !t.members.pids.is_empty()))
                .collect(),
            alerts: BTreeMap::new(),
        };
        for (name, state) in self.alerts.states() {
            let state = match state {
                State::Pending => "pending",
                State::Firing => "firing",
            };
            *s.alerts.entry((name.to_string(), state)).or_default() += 1;
        }
        s
    }
}
