//! The node-wide cap on remediation actions in effect at once. A storm (one bad rule that
//! matches every service, an alert flapping on every target) changes at most `max` things
//! on the node before a human looks: an action over the cap is deferred, not dropped, and
//! retried while its alert still fires.
use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, SystemTime},
};

/// How long a one-shot action (a restart, a signal) counts as in effect: the time the
/// alert gets to see its result.
pub const SETTLE: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub struct ActionCap {
    max: usize,
    /// Action key ("throttle:rule", "restart:target") -> in effect until then, or until
    /// released (a held throttle or freeze).
    held: BTreeMap<String, Option<SystemTime>>,
    /// Keys told they are deferred, so each deferral is reported once.
    deferred: BTreeSet<String>,
}

/// What `take` decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Slot {
    Granted,
    /// Over the cap, reported for the first time: log and count it.
    Deferred,
    /// Over the cap, already reported.
    StillDeferred,
}

impl ActionCap {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            held: BTreeMap::new(),
            deferred: BTreeSet::new(),
        }
    }

    /// Why an action waits, for the log, the audit and the informational alert.
    pub fn why(&self) -> String {
        format!(
            "deferred: {} actions already in effect on the node (remediation.max_concurrent)",
            self.max
        )
    }

    /// A slot for `key` until `until` (None: until `release`).
    pub fn take(&mut self, key: &str, until: Option<SystemTime>, now: SystemTime) -> Slot {
        self.held.retain(|_, u| u.is_none_or(|u| u > now));
        if self.held.contains_key(key) || self.held.len() < self.max {
            self.held.insert(key.to_string(), until);
            self.deferred.remove(key);
            return Slot::Granted;
        }
        match self.deferred.insert(key.to_string()) {
            true => Slot::Deferred,
            false => Slot::StillDeferred,
        }
    }

    /// The action ended (a throttle given back), or was never carried out (refused).
    pub fn release(&mut self, key: &str) {
        self.held.remove(key);
    }

    /// The alert behind a deferred action resolved: it no longer waits.
    pub fn forget(&mut self, key: &str) {
        self.deferred.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_most_max_and_frees_timed_slots_when_they_end() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut cap = ActionCap::new(2);
        assert_eq!(cap.take("throttle:a", None, t0), Slot::Granted);
        assert_eq!(cap.take("restart:b", Some(t0 + SETTLE), t0), Slot::Granted);
        assert_eq!(cap.take("signal:c", Some(t0 + SETTLE), t0), Slot::Deferred);
        assert_eq!(
            cap.take("signal:c", Some(t0 + SETTLE), t0),
            Slot::StillDeferred
        );
        assert_eq!(
            cap.take("throttle:a", None, t0),
            Slot::Granted,
            "held again"
        );
        let later = t0 + SETTLE;
        assert_eq!(
            cap.take("signal:c", Some(later + SETTLE), later),
            Slot::Granted
        );
        assert_eq!(cap.take("restart:d", None, later), Slot::Deferred);
        cap.release("throttle:a");
        assert_eq!(cap.take("restart:d", None, later), Slot::Granted);
    }
}
