//! Alert states, as Prometheus keeps them: inactive -> pending (condition true, waiting out
//! `for`) -> firing -> resolved. Pure: callers pass the time.
//!
//! What is sent to Alertmanager follows its API contract: a firing alert is re-sent every
//! resend interval with `endsAt` = now + 4 x interval, so an agent that dies is not taken for
//! a resolution for a while; a resolved alert is sent at once with `endsAt` = the resolution
//! time, and repeated for 15 minutes in case a notification was lost.
use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use super::time::rfc3339;

/// Labels identify an alert.
pub type AlertLabels = BTreeMap<String, String>;

const RESOLVED_REPEAT: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    Pending,
    Firing,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Active {
    since: SystemTime,
    state: State,
    last_sent: Option<SystemTime>,
    annotations: AlertLabels,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Resolved {
    starts_at: SystemTime,
    ends_at: SystemTime,
    last_sent: Option<SystemTime>,
    annotations: AlertLabels,
}

/// One alert as Alertmanager's `POST /api/v2/alerts` takes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Notification {
    pub labels: AlertLabels,
    pub annotations: AlertLabels,
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    #[serde(rename = "endsAt")]
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

#[derive(Debug)]
pub struct Alerts {
    active: BTreeMap<AlertLabels, Active>,
    resolved: BTreeMap<AlertLabels, Resolved>,
    resend: Duration,
    generator_url: String,
    /// Alerts asserted since the last `sweep`.
    touched: std::collections::BTreeSet<AlertLabels>,
    /// Whether anything worth persisting changed since `take_dirty`.
    dirty: bool,
}

/// What is persisted of the alerts (JSON keys must be strings, hence lists).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    active: Vec<(AlertLabels, Active)>,
    resolved: Vec<(AlertLabels, Resolved)>,
}

impl Alerts {
    pub fn new(resend: Duration, generator_url: String) -> Self {
        Self {
            active: BTreeMap::new(),
            resolved: BTreeMap::new(),
            resend,
            generator_url,
            touched: Default::default(),
            dirty: false,
        }
    }

    /// Starts from persisted states: a still-true alert keeps its startsAt, and one whose
    /// rule is gone or whose condition cleared meanwhile is resolved by the next `sweep`.
    /// Everything is re-sent on the next `due`.
    pub fn restore(&mut self, snapshot: Snapshot) {
        self.active = snapshot
            .active
            .into_iter()
            .map(|(l, a)| {
                (
                    l,
                    Active {
                        last_sent: None,
                        ..a
                    },
                )
            })
            .collect();
        self.resolved = snapshot
            .resolved
            .into_iter()
            .map(|(l, r)| {
                (
                    l,
                    Resolved {
                        last_sent: None,
                        ..r
                    },
                )
            })
            .collect();
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            active: self
                .active
                .iter()
                .map(|(l, a)| (l.clone(), a.clone()))
                .collect(),
            resolved: self
                .resolved
                .iter()
                .map(|(l, r)| (l.clone(), r.clone()))
                .collect(),
        }
    }

    /// Whether the states changed since the last call.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// After a full evaluation: alerts no rule asserted (their rule or series is gone)
    /// resolve, as if their condition had cleared.
    pub fn sweep(&mut self, now: SystemTime) {
        let stale: Vec<AlertLabels> = self
            .active
            .keys()
            .filter(|l| !self.touched.contains(*l))
            .cloned()
            .collect();
        for labels in stale {
            self.set(labels, AlertLabels::new(), false, Duration::ZERO, now);
        }
        self.touched.clear();
    }

    /// Sets whether the condition of the alert `labels` holds now; `hold` is its `for`.
    pub fn set(
        &mut self,
        labels: AlertLabels,
        annotations: AlertLabels,
        condition: bool,
        hold: Duration,
        now: SystemTime,
    ) {
        self.touched.insert(labels.clone());
        if condition {
            if !self.active.contains_key(&labels) {
                self.dirty = true;
            }
            let a = self.active.entry(labels.clone()).or_insert_with(|| Active {
                since: now,
                state: State::Pending,
                last_sent: None,
                annotations: annotations.clone(),
            });
            a.annotations = annotations;
            if a.state == State::Pending && now.duration_since(a.since).unwrap_or_default() >= hold
            {
                a.state = State::Firing;
                self.dirty = true;
            }
            self.resolved.remove(&labels);
        } else if let Some(a) = self.active.remove(&labels) {
            self.dirty = true;
            // A pending alert never fired: nothing to resolve.
            if a.state == State::Firing {
                self.resolved.insert(
                    labels,
                    Resolved {
                        starts_at: a.since,
                        ends_at: now,
                        last_sent: None,
                        annotations: a.annotations,
                    },
                );
            }
        }
    }

    /// The labels of every firing alert (what remediation acts on).
    pub fn firing(&self) -> Vec<AlertLabels> {
        self.active
            .iter()
            .filter(|(_, a)| a.state == State::Firing)
            .map(|(l, _)| l.clone())
            .collect()
    }

    /// Alerts in each state, for `gimbal_alerts{alertname,state}`.
    pub fn states(&self) -> impl Iterator<Item = (&str, State)> {
        self.active
            .iter()
            .map(|(l, a)| (l.get("alertname").map_or("", String::as_str), a.state))
    }

    /// What should be sent now: new firings and resolutions at once, the rest every resend
    /// interval. Marks them sent.
    fn make(
        url: &str,
        labels: &AlertLabels,
        annotations: &AlertLabels,
        starts: SystemTime,
        ends: SystemTime,
    ) -> Notification {
        Notification {
            labels: labels.clone(),
            annotations: annotations.clone(),
            starts_at: rfc3339(starts),
            ends_at: rfc3339(ends),
            generator_url: url.to_string(),
        }
    }

    pub fn due(&mut self, now: SystemTime) -> Vec<Notification> {
        let due = |last: Option<SystemTime>| {
            last.is_none_or(|t| now.duration_since(t).unwrap_or_default() >= self.resend)
        };
        let mut out = Vec::new();
        for (labels, a) in self
            .active
            .iter_mut()
            .filter(|(_, a)| a.state == State::Firing)
        {
            if due(a.last_sent) {
                a.last_sent = Some(now);
                let ends = now + self.resend * 4;
                out.push(Self::make(
                    &self.generator_url,
                    labels,
                    &a.annotations,
                    a.since,
                    ends,
                ));
            }
        }
        self.resolved
            .retain(|_, r| now.duration_since(r.ends_at).unwrap_or_default() < RESOLVED_REPEAT);
        for (labels, r) in &mut self.resolved {
            if due(r.last_sent) {
                r.last_sent = Some(now);
                out.push(Self::make(
                    &self.generator_url,
                    labels,
                    &r.annotations,
                    r.starts_at,
                    r.ends_at,
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn labels(name: &str) -> AlertLabels {
        BTreeMap::from([
            ("alertname".to_string(), name.to_string()),
            ("target".to_string(), "svc".to_string()),
        ])
    }

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    #[test]
    fn pending_waits_out_for_then_fires_and_resends() {
        let mut a = Alerts::new(Duration::from_secs(60), "http://x/".into());
        let hold = Duration::from_secs(30);
        a.set(labels("Down"), AlertLabels::new(), true, hold, at(0));
        assert_eq!(
            a.states().collect::<Vec<_>>(),
            vec![("Down", State::Pending)]
        );
        assert!(a.due(at(0)).is_empty(), "pending alerts are not sent");
        a.set(labels("Down"), AlertLabels::new(), true, hold, at(30));
        let sent = a.due(at(30));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].starts_at, rfc3339(at(0)));
        assert_eq!(
            sent[0].ends_at,
            rfc3339(at(30 + 240)),
            "endsAt = now + 4 x resend"
        );
        assert!(
            a.due(at(60)).is_empty(),
            "not again before the resend interval"
        );
        assert_eq!(a.due(at(90)).len(), 1, "re-sent after it");
    }

    #[test]
    fn resolution_is_sent_at_once_with_endsat_then_repeated_for_15_minutes() {
        let mut a = Alerts::new(Duration::from_secs(60), "http://x/".into());
        a.set(
            labels("Down"),
            AlertLabels::new(),
            true,
            Duration::ZERO,
            at(0),
        );
        assert_eq!(a.due(at(0)).len(), 1);
        a.set(
            labels("Down"),
            AlertLabels::new(),
            false,
            Duration::ZERO,
            at(10),
        );
        let sent = a.due(at(10));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].ends_at, rfc3339(at(10)));
        assert_eq!(a.due(at(70)).len(), 1, "repeated");
        assert!(
            a.due(at(10 + 15 * 60)).is_empty(),
            "until 15 minutes have passed"
        );
        assert_eq!(a.states().count(), 0);
    }

    #[test]
    fn a_pending_alert_that_clears_is_never_sent() {
        let mut a = Alerts::new(Duration::from_secs(60), "http://x/".into());
        a.set(
            labels("Down"),
            AlertLabels::new(),
            true,
            Duration::from_secs(30),
            at(0),
        );
        a.set(
            labels("Down"),
            AlertLabels::new(),
            false,
            Duration::from_secs(30),
            at(5),
        );
        assert!(a.due(at(5)).is_empty());
        assert!(a.due(at(500)).is_empty());
    }
}

#[cfg(test)]
mod restore_tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn l(name: &str) -> AlertLabels {
        BTreeMap::from([("alertname".to_string(), name.to_string())])
    }

    #[test]
    fn restored_alerts_keep_starts_at_and_orphans_resolve_on_sweep() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut a = Alerts::new(Duration::from_secs(60), "u".into());
        a.set(l("Kept"), AlertLabels::new(), true, Duration::ZERO, t0);
        a.set(l("Orphan"), AlertLabels::new(), true, Duration::ZERO, t0);
        assert!(a.take_dirty());
        let json = serde_json::to_string(&a.snapshot()).unwrap();

        let mut b = Alerts::new(Duration::from_secs(60), "u".into());
        b.restore(serde_json::from_str(&json).unwrap());
        let later = t0 + Duration::from_secs(30);
        b.set(l("Kept"), AlertLabels::new(), true, Duration::ZERO, later);
        b.sweep(later);
        let sent = b.due(later);
        let kept = sent.iter().find(|n| n.labels == l("Kept")).unwrap();
        assert_eq!(kept.starts_at, rfc3339(t0), "startsAt survives the restart");
        let orphan = sent.iter().find(|n| n.labels == l("Orphan")).unwrap();
        assert_eq!(
            orphan.ends_at,
            rfc3339(later),
            "an alert no rule asserts any more is resolved"
        );
    }
}
