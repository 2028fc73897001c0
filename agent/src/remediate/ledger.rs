//! What remediation did, for the rest of the agent: counts for
//! `gimbal_remediations_total`, the recent actions the informational GimbalRemediation
//! alert reports, and the targets given up on (GimbalRemediationGaveUp). Bounded by the
//! config: keys are (action, rule or target, result).
use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use super::{Kind, Outcome};

/// Actions by (action, result), for `gimbal_remediations_total`.
pub type Counts = BTreeMap<(Kind, Outcome), u64>;

/// How long an action keeps its informational alert firing.
pub const RECENT: Duration = Duration::from_secs(300);

/// One decision carried out (or only logged, in dry-run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionEvent {
    pub action: Kind,
    /// The [[throttle]] rule, [[restart]] target or [[supervise]] name.
    pub target: String,
    pub result: Outcome,
    pub detail: String,
    pub at: SystemTime,
}

#[derive(Debug, Default, Clone)]
pub struct Ledger {
    pub counts: Counts,
    recent: BTreeMap<(Kind, String, Outcome), (SystemTime, String)>,
    /// Target -> why it was given up.
    gave_up: BTreeMap<String, String>,
}

impl Ledger {
    pub fn record(&mut self, e: ActionEvent) {
        *self.counts.entry((e.action, e.result)).or_default() += 1;
        match e.result {
            Outcome::GaveUp => {
                self.gave_up.insert(e.target.clone(), e.detail.clone());
            }
            Outcome::Done => {
                self.gave_up.remove(&e.target);
            }
            _ => {}
        }
        let now = e.at;
        self.recent
            .retain(|_, (at, _)| now.duration_since(*at).unwrap_or_default() < RECENT);
        self.recent
            .insert((e.action, e.target, e.result), (e.at, e.detail));
    }

    /// Actions of the last 5 minutes: ((action, target, result), detail).
    pub fn recent(
        &self,
        now: SystemTime,
    ) -> impl Iterator<Item = (&(Kind, String, Outcome), &String)> {
        self.recent
            .iter()
            .filter(move |(_, (at, _))| now.duration_since(*at).unwrap_or_default() < RECENT)
            .map(|(k, (_, detail))| (k, detail))
    }

    pub fn gave_up(&self) -> &BTreeMap<String, String> {
        &self.gave_up
    }

    /// A new configuration gets a fresh budget.
    pub fn forget_gave_up(&mut self) {
        self.gave_up.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(result: Outcome, at: SystemTime) -> ActionEvent {
        ActionEvent {
            action: Kind::Restart,
            target: "web".into(),
            result,
            detail: "d".into(),
            at,
        }
    }

    #[test]
    fn counts_keeps_recent_actions_for_five_minutes_and_tracks_give_up() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut l = Ledger::default();
        l.record(event(Outcome::Done, t0));
        l.record(event(Outcome::GaveUp, t0));
        assert_eq!(l.counts[&(Kind::Restart, Outcome::Done)], 1);
        assert_eq!(l.gave_up().len(), 1);
        assert_eq!(l.recent(t0 + Duration::from_secs(299)).count(), 2);
        assert_eq!(l.recent(t0 + RECENT).count(), 0);
        l.record(event(Outcome::Done, t0 + RECENT));
        assert!(
            l.gave_up().is_empty(),
            "a successful restart ends the give-up"
        );
    }
}
