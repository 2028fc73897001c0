//! Noisy-neighbour protection: while an alert fires (a critical target's latency SLI, say),
//! hold the configured best-effort cgroups to a CPU quota and/or `memory.high`, or freeze
//! them; give it back when the alert resolves, when the rule's time-to-live ends, and when
//! the agent stops.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::SystemTime,
};

use super::{
    cap::{ActionCap, Slot},
    guard::Guard,
    record::{Act, Kind, Outcome, Recorder},
    Limit, LimitJournal,
};
use crate::{
    alert::AlertLabels,
    config::{Config, RemediationMode, ThrottleConfig},
};

pub struct Throttler {
    rules: Vec<ThrottleConfig>,
    /// Guards for the CPU hierarchy and for cgroup2 (the agent's own cgroup differs
    /// between them on hybrid hosts).
    guard: Guard,
    guard_v2: Guard,
    /// The hierarchy whose CPU files are written: the v1 `cpu` mount on hybrid hosts,
    /// else cgroup2.
    root: PathBuf,
    /// Where `memory.high` and `cgroup.freeze` are (cgroup v2 only).
    cgroup2: PathBuf,
    journal: LimitJournal,
    recorder: Recorder,
    /// Rule name -> (cgroups held, or that would be in dry-run; since).
    active: BTreeMap<String, (Vec<PathBuf>, SystemTime)>,
    /// Rules whose TTL ended while their alert still fires: not again until it resolves.
    expired: BTreeSet<String>,
}

impl Throttler {
    /// Restores whatever a previous agent left throttled (it was killed, say) first.
    pub fn new(config: &Config, cgroup2: &Path, recorder: Recorder) -> Self {
        let (root, own) = cpu_hierarchy(cgroup2);
        let mut journal = LimitJournal::open_under(&config.agent.state_dir, &[cgroup2, &root]);
        let now = SystemTime::now();
        for (change, why) in journal.refused() {
            let cgroup = change.cgroup.display().to_string();
            let act = previous(&cgroup);
            recorder.outcome(act, &format!("refused: {why}"), Outcome::Refused, now);
        }
        let pending = journal.pending().to_vec();
        for change in &pending {
            tracing::warn!(cgroup = %change.cgroup.display(), "restoring a limit left by the previous agent");
            let cgroup = change.cgroup.display().to_string();
            recorder.intent(previous(&cgroup), &undo_detail(change), now);
        }
        let failed = journal.revert_all();
        for change in &pending {
            let cgroup = change.cgroup.display().to_string();
            let result = match failed.iter().find(|(c, _)| c == change) {
                Some((_, e)) => {
                    tracing::error!(cgroup, error = %e, "cannot restore a limit");
                    Outcome::Failed
                }
                None => Outcome::Done,
            };
            recorder.outcome(previous(&cgroup), &undo_detail(change), result, now);
        }
        Self {
            rules: config.throttles.clone(),
            guard: Guard::new(&config.remediation.protected, &own),
            guard_v2: Guard::new(
                &config.remediation.protected,
                &super::guard::own_cgroup_v2(),
            ),
            root,
            cgroup2: cgroup2.to_path_buf(),
            journal,
            recorder,
            active: BTreeMap::new(),
            expired: BTreeSet::new(),
        }
    }

    /// Applies and releases throttles for the alerts firing now.
    pub fn step(&mut self, firing: &[AlertLabels], now: SystemTime, cap: &mut ActionCap) {
        for rule in self.rules.clone() {
            let triggered = super::fires(firing, &rule.when, rule.target.as_deref());
            let key = format!("{}:{}", actions(&rule).0.name(), rule.name);
            if !triggered {
                self.expired.remove(&rule.name);
                cap.forget(&key);
            }
            match self.active.get(&rule.name) {
                Some((_, since)) => {
                    let expired = now.duration_since(*since).unwrap_or_default() >= rule.ttl.get();
                    if !triggered || expired {
                        let why = if triggered {
                            "ttl ended"
                        } else {
                            "alert resolved"
                        };
                        self.release(&rule.name, why, now);
                        cap.release(&key);
                        if triggered {
                            self.expired.insert(rule.name.clone());
                        }
                    }
                }
                None if triggered && !self.expired.contains(&rule.name) => {
                    match cap.take(&key, None, now) {
                        Slot::Granted => {
                            // A throttle that holds nothing (all refused, failed or
                            // unmatched) stays decided, so it is not retried every tick,
                            // but takes no slot.
                            if !self.throttle(&rule, now) {
                                cap.release(&key);
                            }
                        }
                        Slot::Deferred => super::record_deferred(
                            &self.recorder,
                            actions(&rule).0,
                            &rule.name,
                            &cap.why(),
                            now,
                        ),
                        Slot::StillDeferred => {}
                    }
                }
                None => {}
            }
        }
    }

    /// Gives every throttle back (agent stop, config reload).
    pub fn release_all(&mut self, why: &str) {
        let names: Vec<String> = self.active.keys().cloned().collect();
        for name in names {
            self.release(&name, why, SystemTime::now());
        }
    }

    /// Whether any cgroup is held (or would be, in dry-run).
    fn throttle(&mut self, rule: &ThrottleConfig, now: SystemTime) -> bool {
        let (action, _) = actions(rule);
        let mut limits = Vec::new();
        limits.extend(rule.cpu.map(Limit::Cpu));
        limits.extend(rule.memory_high.map(|b| Limit::MemoryHigh(b.0)));
        if rule.freeze {
            limits.push(Limit::Freeze);
        }
        let mut held = Vec::new();
        for limit in limits {
            let v2 = !matches!(limit, Limit::Cpu(_));
            let root = if v2 { &self.cgroup2 } else { &self.root }.clone();
            let groups = super::confined_groups(
                &root,
                &rule.cgroups,
                &self.recorder,
                action,
                &rule.name,
                now,
            );
            if groups.is_empty() {
                // Nothing to act on is worth saying: a typo, or the group is not there yet.
                tracing::warn!(rule = %rule.name, globs = ?rule.cgroups, "{}: no cgroup matches", action.name());
            }
            let detail = format!("{} (alert {})", describe(limit), rule.when);
            for dir in groups {
                let rel = relative(&root, &dir);
                let act = Act {
                    kind: action,
                    rule: &rule.name,
                    cgroup: &rel,
                };
                let guard = if v2 { &self.guard_v2 } else { &self.guard };
                if let Some(why) = guard.refusal(&rel) {
                    tracing::warn!(cgroup = %rel, why, "{} refused", action.name());
                    let why = format!("refused: {why}");
                    self.recorder.outcome(act, &why, Outcome::Refused, now);
                    continue;
                }
                self.recorder.intent(act, &detail, now);
                let result = match self.recorder.mode() {
                    RemediationMode::DryRun => {
                        tracing::info!(cgroup = %rel, rule = %rule.name, "dry-run: would {}: {detail}", action.name());
                        Outcome::DryRun
                    }
                    RemediationMode::Enforce => {
                        // A systemd unit's cgroup is changed through systemd.
                        let unit = self.journal.unit_for(&rel);
                        match self.journal.apply(&dir, limit, unit.as_deref()) {
                            Ok(_) => Outcome::Done,
                            Err(e) => {
                                tracing::error!(cgroup = %rel, error = %e, "{} failed", action.name());
                                Outcome::Failed
                            }
                        }
                    }
                };
                if result != Outcome::Failed {
                    held.push(dir);
                }
                self.recorder.outcome(act, &detail, result, now);
            }
        }
        held.sort();
        held.dedup();
        let holds = !held.is_empty();
        self.active.insert(rule.name.clone(), (held, now));
        holds
    }

    fn release(&mut self, name: &str, why: &str, now: SystemTime) {
        let Some((groups, _)) = self.active.remove(name) else {
            return;
        };
        let undo = self
            .rules
            .iter()
            .find(|r| r.name == name)
            .map_or(Kind::Unthrottle, |r| actions(r).1);
        for dir in groups {
            let rel = self.relative(&dir);
            let act = Act {
                kind: undo,
                rule: name,
                cgroup: &rel,
            };
            self.recorder.intent(act, why, now);
            let result = match self.recorder.mode() {
                RemediationMode::DryRun => Outcome::DryRun,
                RemediationMode::Enforce => match self.journal.revert(&dir) {
                    Ok(()) => Outcome::Done,
                    Err(e) => {
                        tracing::error!(cgroup = %rel, error = %e, "cannot {}; kept in the journal for the next start", undo.name());
                        Outcome::Failed
                    }
                },
            };
            self.recorder.outcome(act, why, result, now);
        }
    }

    fn relative(&self, dir: &Path) -> String {
        match dir.starts_with(&self.root) {
            true => relative(&self.root, dir),
            false => relative(&self.cgroup2, dir),
        }
    }
}

fn relative(root: &Path, dir: &Path) -> String {
    dir.strip_prefix(root)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| dir.display().to_string())
}

/// The action a rule takes and the one that undoes it.
fn actions(rule: &ThrottleConfig) -> (Kind, Kind) {
    match rule.freeze {
        true => (Kind::Freeze, Kind::Thaw),
        false => (Kind::Throttle, Kind::Unthrottle),
    }
}

fn describe(limit: Limit) -> String {
    match limit {
        Limit::Cpu(cpus) => format!("cpu {cpus}"),
        Limit::MemoryHigh(bytes) => format!("memory.high {bytes}"),
        Limit::Freeze => "freeze".into(),
    }
}

/// Where CPU limits are written, and the agent's own cgroup there.
fn cpu_hierarchy(cgroup2: &Path) -> (PathBuf, String) {
    use crate::host::procfs;
    let own = std::fs::read_to_string(procfs::path(Path::new(procfs::ROOT), "self", "cgroup"))
        .unwrap_or_default();
    let v1 = Path::new("/sys/fs/cgroup/cpu");
    if v1.join("cpu.cfs_quota_us").is_file() {
        let path = procfs::cgroup_v1_of_text(&own, "cpu").unwrap_or_default();
        return (v1.to_path_buf(), path.to_string());
    }
    let path = procfs::cgroup_v2_of_text(&own).unwrap_or_default();
    (cgroup2.to_path_buf(), path.to_string())
}

/// The rule name of limits a previous agent left.
const PREVIOUS: &str = "(left by the previous agent)";

/// Giving back a limit a previous agent left on `cgroup`.
fn previous(cgroup: &str) -> Act<'_> {
    Act {
        kind: Kind::Unthrottle,
        rule: PREVIOUS,
        cgroup,
    }
}

fn undo_detail(change: &crate::remediate::Change) -> String {
    format!("{} back to {}", change.file, change.previous)
}
