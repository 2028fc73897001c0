//! `[[restart]]`: when a target's alert (TargetDown by default) fires, restart its systemd
//! unit through systemd's D-Bus API (`RestartUnit`), or, for a target selected by pod
//! (`[cluster] evictions`), evict the pod the alert names through the Kubernetes API
//! (`evict.rs`: its PodDisruptionBudgets decide), with the backoff and give-up budget of
//! `backoff.rs`: a unit that goes down again soon after a restart is a crash loop, and a
//! refused eviction is retried the same way.
use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use super::{
    backoff::{Backoff, Next, Policy},
    cap::{ActionCap, Slot, SETTLE},
    evict::Evictor,
    guard::Guard,
    record::{Act, Kind, Outcome, Recorder},
    systemd::Systemd,
};
use crate::{
    alert::AlertLabels,
    config::{Config, RemediationMode},
};

pub struct Restarter {
    policy: Policy,
    guard: Guard,
    recorder: Recorder,
    /// Target -> (alertname, what to restart, state).
    rules: BTreeMap<String, (String, How, State)>,
    /// The agent's own unit, never restarted by itself.
    own_unit: Option<String>,
    /// Connected on the first restart (hosts without [[restart]] never touch D-Bus).
    systemd: Option<Systemd>,
    /// Pods are evicted through the API (opened on the first eviction).
    evictor: Evictor,
}

/// What a target's restart restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum How {
    Unit(String),
    /// The pod its alert names (`namespace`, `pod` labels), evicted.
    Pod,
}

impl How {
    /// What it acts on, as the audit names it: the unit, or `namespace/pod`.
    fn subject(&self, alert: Option<&AlertLabels>) -> Option<String> {
        match self {
            How::Unit(unit) => Some(unit.clone()),
            How::Pod => {
                let alert = alert?;
                let (ns, pod) = (alert.get("namespace")?, alert.get("pod")?);
                (!ns.is_empty() && !pod.is_empty()).then(|| format!("{ns}/{pod}"))
            }
        }
    }
}

#[derive(Default)]
struct State {
    backoff: Backoff,
    last_restart: Option<SystemTime>,
    /// A decided restart waits for its backoff until then.
    due: Option<SystemTime>,
    gave_up: bool,
}

impl Restarter {
    pub fn new(config: &Config, recorder: Recorder) -> Self {
        let own = super::guard::own_cgroup_v2();
        let rules = config
            .restarts
            .iter()
            .filter_map(|r| {
                let target = config.targets.iter().find(|t| t.name == r.target)?;
                let how = match &target.unit {
                    Some(unit) => How::Unit(unit.clone()),
                    None if config.cluster.evictions
                        && (target.pod_uid.is_some() || target.by_pod_name()) =>
                    {
                        How::Pod
                    }
                    None => return None,
                };
                Some((r.target.clone(), (r.when.clone(), how, State::default())))
            })
            .collect();
        Self {
            policy: Policy::from_config(&config.remediation),
            guard: Guard::new(&config.remediation.protected, &own),
            own_unit: own
                .rsplit('/')
                .next()
                .filter(|u| u.contains('.'))
                .map(String::from),
            recorder,
            rules,
            systemd: None,
            evictor: Evictor::new(config.cluster.kubeconfig.clone()),
        }
    }

    pub fn step(&mut self, firing: &[AlertLabels], now: SystemTime, cap: &mut ActionCap) {
        let targets: Vec<String> = self.rules.keys().cloned().collect();
        for target in targets {
            let (when, how, state) = self.rules.get_mut(&target).expect("listed");
            let down = super::fires(firing, when, Some(&target));
            let key = format!("restart:{target}");
            if !down {
                // Up again (by itself, or someone restarted it): a pending restart is moot.
                cap.forget(&key);
                state.due = None;
            }
            // After a restart the alert needs a moment to see the new process; until then
            // it still firing is not a new failure.
            let since_restart = state
                .last_restart
                .map(|t| now.duration_since(t).unwrap_or_default());
            if !down || state.gave_up || since_restart.is_some_and(|d| d < SETTLE) {
                continue;
            }
            let alert = firing
                .iter()
                .find(|l| l.get("alertname") == Some(&*when) && l.get("target") == Some(&target));
            let Some(unit) = how.subject(alert) else {
                tracing::debug!(target = %target, "the alert names no pod to evict");
                continue;
            };
            let how = how.clone();
            let kind = how.kind();
            if state.due.is_none() {
                let ran_for = since_restart.unwrap_or(Duration::MAX);
                match state.backoff.on_failure(ran_for, &self.policy) {
                    Next::GiveUp => {
                        state.gave_up = true;
                        let detail = format!(
                            "{unit} failed {} times in a row soon after a restart; not restarting it again",
                            state.backoff.failures() - 1
                        );
                        tracing::error!(target = %target, "{detail}");
                        self.recorder.outcome(
                            act(kind, &target, &unit),
                            &detail,
                            Outcome::GaveUp,
                            now,
                        );
                        continue;
                    }
                    Next::RestartAfter(delay) => {
                        if !delay.is_zero() {
                            tracing::info!(target = %target, unit = %unit, "restarting in {delay:?} ({} quick failures in a row)", state.backoff.failures());
                        }
                        state.due = Some(now + delay);
                    }
                }
            }
            if state.due.is_some_and(|due| now >= due) {
                match cap.take(&key, Some(now + SETTLE), now) {
                    Slot::Granted => {
                        state.due = None;
                        state.last_restart = Some(now);
                        if !self.restart(&target, &how, &unit, now) {
                            cap.release(&key);
                        }
                    }
                    Slot::Deferred => {
                        super::record_deferred(&self.recorder, kind, &target, &cap.why(), now)
                    }
                    Slot::StillDeferred => {}
                }
            }
        }
    }

    /// False when refused: nothing was (or would be) done. `unit`: the unit, or the pod
    /// (`namespace/pod`) to evict.
    fn restart(&mut self, target: &str, how: &How, unit: &str, now: SystemTime) -> bool {
        let kind = how.kind();
        let own = (*how == How::Unit(unit.to_string()) && self.own_unit.as_deref() == Some(unit))
            .then(|| "the agent's own unit".to_string());
        let guarded = match how {
            How::Unit(_) => self.guard.refusal(unit),
            How::Pod => None,
        };
        if let Some(why) = own.or(guarded) {
            let detail = format!("refused: {why}");
            tracing::warn!(unit, "restart {detail}");
            self.recorder
                .outcome(act(kind, target, unit), &detail, Outcome::Refused, now);
            return false;
        }
        self.recorder
            .intent(act(kind, target, unit), "target down", now);
        let (result, detail) = match (self.recorder.mode(), how) {
            (RemediationMode::DryRun, How::Unit(_)) => {
                tracing::info!(unit, "dry-run: would restart {unit}");
                (Outcome::DryRun, format!("would restart {unit}"))
            }
            (RemediationMode::DryRun, How::Pod) => {
                tracing::info!(pod = unit, "dry-run: would evict {unit}");
                (Outcome::DryRun, format!("would evict {unit}"))
            }
            (RemediationMode::Enforce, How::Pod) => {
                let (ns, pod) = unit.split_once('/').expect("namespace/pod");
                match self.evictor.evict(ns, pod) {
                    Ok(()) => {
                        tracing::warn!(pod = unit, "evicted through the Kubernetes API");
                        (Outcome::Done, format!("evicted {unit}"))
                    }
                    // Its replacement may not be up yet while the alert still names it.
                    Err(super::evict::EvictError::Gone) => {
                        tracing::info!(pod = unit, "nothing to evict: the pod is gone");
                        (Outcome::Done, format!("{unit} is already gone"))
                    }
                    Err(e) => {
                        tracing::error!(pod = unit, error = %e, "eviction failed");
                        (Outcome::Failed, e.to_string())
                    }
                }
            }
            (RemediationMode::Enforce, How::Unit(_)) => {
                match self.connected().and_then(|s| s.restart_unit(unit)) {
                    Ok(job) => {
                        tracing::info!(unit, job = %job, "restarted through systemd");
                        (Outcome::Done, format!("RestartUnit({unit}) queued {job}"))
                    }
                    Err(e) => {
                        tracing::error!(unit, error = %format!("{e:#}"), "restart failed");
                        (Outcome::Failed, format!("{e:#}"))
                    }
                }
            }
        };
        self.recorder
            .outcome(act(kind, target, unit), &detail, result, now);
        true
    }

    fn connected(&mut self) -> anyhow::Result<&Systemd> {
        if self.systemd.is_none() {
            let systemd = Systemd::connect()?.ok_or_else(|| {
                anyhow::anyhow!("systemd is not PID 1: nothing to restart units through")
            })?;
            self.systemd = Some(systemd);
        }
        Ok(self.systemd.as_ref().expect("just set"))
    }
}

impl How {
    fn kind(&self) -> Kind {
        match self {
            How::Unit(_) => Kind::Restart,
            How::Pod => Kind::Evict,
        }
    }
}

/// A restart (or eviction) of `unit` for target `target`.
fn act<'a>(kind: Kind, target: &'a str, unit: &'a str) -> Act<'a> {
    Act {
        kind,
        rule: target,
        cgroup: unit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remediate::{record::testing::Recorded, Ledger};

    fn firing(target: &str) -> Vec<AlertLabels> {
        vec![[("alertname", "TargetDown"), ("target", target)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()]
    }

    /// A dry-run restarter for unit target "web", its state in a temp dir named after `test`
    /// (removed by the caller); `remediation` adds to its `[remediation]` section.
    fn restarter(test: &str, remediation: &str) -> (Restarter, Recorded, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("gimbal-{test}-{}", std::process::id()));
        let config = Config::parse(
            &format!(
                "[agent]\nstate_dir = \"{}\"\n[remediation]\n{remediation}\n\
                 [[targets]]\nname = \"web\"\nunit = \"web.service\"\n[[restart]]\ntarget = \"web\"\n",
                dir.display()
            ),
            "t",
        )
        .unwrap();
        let recorded = Recorded::new(&dir, config.remediation.mode);
        (
            Restarter::new(&config, recorded.recorder.clone()),
            recorded,
            dir,
        )
    }

    #[test]
    fn a_unit_that_stays_down_is_restarted_at_once_then_after_the_backoff_then_given_up() {
        let (mut r, mut events, dir) =
            restarter("restart-unit", "backoff = \"10s\"\ngive_up_after = 2");
        let mut cap = ActionCap::new(1);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let dry_runs = |l: &Ledger| {
            l.counts
                .get(&(Kind::Restart, Outcome::DryRun))
                .copied()
                .unwrap_or(0)
        };
        r.step(&firing("web"), at(0), &mut cap);
        assert_eq!(dry_runs(events.ledger()), 1, "the first failure: at once");
        r.step(&firing("web"), at(2), &mut cap);
        assert_eq!(
            dry_runs(events.ledger()),
            1,
            "still settling after the restart"
        );
        r.step(&firing("other"), at(3), &mut cap);
        r.step(&firing("web"), at(4), &mut cap);
        assert_eq!(
            dry_runs(events.ledger()),
            1,
            "the second failure waits 10 s"
        );
        r.step(&firing("web"), at(14), &mut cap);
        assert_eq!(dry_runs(events.ledger()), 2);
        r.step(&firing("web"), at(18), &mut cap);
        assert_eq!(events.ledger().gave_up().len(), 1, "give_up_after = 2");
        r.step(&firing("web"), at(100), &mut cap);
        assert_eq!(dry_runs(events.ledger()), 2, "nothing after giving up");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_restart_over_the_cap_waits_is_reported_once_then_goes_ahead() {
        let (mut r, mut events, dir) = restarter("restart-cap", "");
        let mut cap = ActionCap::new(1);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(cap.take("throttle:other", None, t0), Slot::Granted);
        let count =
            |l: &Ledger, result| l.counts.get(&(Kind::Restart, result)).copied().unwrap_or(0);
        r.step(&firing("web"), t0, &mut cap);
        r.step(&firing("web"), t0 + Duration::from_secs(1), &mut cap);
        let l = events.ledger();
        assert_eq!(
            (count(l, Outcome::Deferred), count(l, Outcome::DryRun)),
            (1, 0)
        );
        cap.release("throttle:other");
        r.step(&firing("web"), t0 + Duration::from_secs(2), &mut cap);
        let l = events.ledger();
        assert_eq!(
            (count(l, Outcome::Deferred), count(l, Outcome::DryRun)),
            (1, 1)
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
