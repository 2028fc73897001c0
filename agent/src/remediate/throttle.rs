//! Noisy-neighbour protection: while an alert fires (a critical target's latency SLI, say),
//! hold the configured best-effort cgroups to a CPU quota; give the capacity back when the
//! alert resolves, when the throttle's time-to-live ends, and when the agent stops.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::SystemTime,
};

use super::{
    audit::{AuditLog, Entry},
    guard::Guard,
    ActionEvent, Ledger, Limit, LimitJournal,
};
use crate::{
    alert::AlertLabels,
    config::{Config, RemediationMode, ThrottleConfig},
};

pub struct Throttler {
    mode: RemediationMode,
    rules: Vec<ThrottleConfig>,
    guard: Guard,
    /// The hierarchy whose CPU files are written: the v1 `cpu` mount on hybrid hosts,
    /// else cgroup2.
    root: PathBuf,
    journal: LimitJournal,
    audit: AuditLog,
    /// Rule name -> (cgroups throttled, or that would be in dry-run; since).
    active: BTreeMap<String, (Vec<PathBuf>, SystemTime)>,
    /// Rules whose TTL ended while their alert still fires: not again until it resolves.
    expired: BTreeSet<String>,
}

impl Throttler {
    /// Restores whatever a previous agent left throttled (it was killed, say) first.
    pub fn new(config: &Config, cgroup2: &Path, ledger: &mut Ledger) -> Self {
        let (root, own) = cpu_hierarchy(cgroup2);
        let mut journal = LimitJournal::open(&config.agent.state_dir);
        let audit = AuditLog::new(&config.agent.state_dir);
        let pending = journal.pending().to_vec();
        let now = SystemTime::now();
        let record = |change: &crate::remediate::Change, phase: &str, result: &str| {
            audit.record(
                &Entry {
                    phase,
                    action: "unthrottle",
                    rule: PREVIOUS,
                    cgroup: &change.cgroup.display().to_string(),
                    mode: config.remediation.mode.name(),
                    detail: &format!("{} back to {}", change.file, change.previous),
                    result,
                },
                now,
            )
        };
        for change in &pending {
            tracing::warn!(cgroup = %change.cgroup.display(), "restoring a limit left by the previous agent");
            record(change, "intent", "pending");
        }
        let failed = journal.revert_all();
        for change in &pending {
            match failed.iter().find(|(c, _)| c == change) {
                Some((_, e)) => {
                    tracing::error!(cgroup = %change.cgroup.display(), error = %e, "cannot restore a limit");
                    record(change, "outcome", "failed");
                    ledger.record(event("unthrottle", PREVIOUS, "failed", &change.file, now));
                }
                None => {
                    record(change, "outcome", "done");
                    ledger.record(event("unthrottle", PREVIOUS, "done", &change.file, now));
                }
            }
        }
        Self {
            mode: config.remediation.mode,
            rules: config.throttles.clone(),
            guard: Guard::new(&config.remediation.protected, &own),
            root,
            journal,
            audit,
            active: BTreeMap::new(),
            expired: BTreeSet::new(),
        }
    }

    /// Applies and releases throttles for the alerts firing now.
    pub fn step(&mut self, firing: &[AlertLabels], now: SystemTime, ledger: &mut Ledger) {
        for rule in self.rules.clone() {
            let triggered = firing.iter().any(|l| {
                l.get("alertname") == Some(&rule.when)
                    && rule
                        .target
                        .as_ref()
                        .is_none_or(|t| l.get("target") == Some(t))
            });
            if !triggered {
                self.expired.remove(&rule.name);
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
                        self.release(&rule.name, why, now, ledger);
                        if triggered {
                            self.expired.insert(rule.name.clone());
                        }
                    }
                }
                None if triggered && !self.expired.contains(&rule.name) => {
                    self.throttle(&rule, now, ledger);
                }
                None => {}
            }
        }
    }

    /// Gives every throttle back (agent stop, config reload).
    pub fn release_all(&mut self, why: &str, ledger: &mut Ledger) {
        let names: Vec<String> = self.active.keys().cloned().collect();
        for name in names {
            self.release(&name, why, SystemTime::now(), ledger);
        }
    }

    fn throttle(&mut self, rule: &ThrottleConfig, now: SystemTime, ledger: &mut Ledger) {
        let mut groups: Vec<PathBuf> = rule
            .cgroups
            .iter()
            .flat_map(|p| crate::targets::expand(&self.root, p))
            .collect();
        groups.sort();
        groups.dedup();
        let detail = format!("cpu {} (alert {})", rule.cpu, rule.when);
        let mut held = Vec::new();
        for dir in groups {
            let rel = self.relative(&dir);
            let mut entry = Entry {
                phase: "intent",
                action: "throttle",
                rule: &rule.name,
                cgroup: &rel,
                mode: self.mode.name(),
                detail: &detail,
                result: "pending",
            };
            if let Some(why) = self.guard.refusal(&rel) {
                tracing::warn!(cgroup = %rel, why, "throttle refused");
                let detail = format!("refused: {why}");
                entry.phase = "outcome";
                entry.result = "refused";
                entry.detail = &detail;
                self.audit.record(&entry, now);
                ledger.record(event("throttle", &rule.name, "refused", &rel, now));
                continue;
            }
            self.audit.record(&entry, now);
            entry.phase = "outcome";
            let result = match self.mode {
                RemediationMode::DryRun => {
                    tracing::info!(cgroup = %rel, rule = %rule.name, "dry-run: would throttle to {} CPUs", rule.cpu);
                    held.push(dir);
                    "dry_run"
                }
                RemediationMode::Enforce => match self.journal.apply(&dir, Limit::Cpu(rule.cpu)) {
                    Ok(_) => {
                        held.push(dir);
                        "done"
                    }
                    Err(e) => {
                        tracing::error!(cgroup = %rel, error = %e, "throttle failed");
                        "failed"
                    }
                },
            };
            entry.result = result;
            self.audit.record(&entry, now);
            ledger.record(event("throttle", &rule.name, result, &rel, now));
        }
        self.active.insert(rule.name.clone(), (held, now));
    }

    fn release(&mut self, name: &str, why: &str, now: SystemTime, ledger: &mut Ledger) {
        let Some((groups, _)) = self.active.remove(name) else {
            return;
        };
        for dir in groups {
            let rel = self.relative(&dir);
            let mut entry = Entry {
                phase: "intent",
                action: "unthrottle",
                rule: name,
                cgroup: &rel,
                mode: self.mode.name(),
                detail: why,
                result: "pending",
            };
            self.audit.record(&entry, now);
            let result = match self.mode {
                RemediationMode::DryRun => "dry_run",
                RemediationMode::Enforce => match self.journal.revert(&dir) {
                    Ok(()) => "done",
                    Err(e) => {
                        tracing::error!(cgroup = %rel, error = %e, "cannot give the CPU back; kept in the journal for the next start");
                        "failed"
                    }
                },
            };
            entry.phase = "outcome";
            entry.result = result;
            self.audit.record(&entry, now);
            ledger.record(event("unthrottle", name, result, &rel, now));
        }
    }

    fn relative(&self, dir: &Path) -> String {
        dir.strip_prefix(&self.root)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| dir.display().to_string())
    }
}

/// Where CPU limits are written, and the agent's own cgroup there.
fn cpu_hierarchy(cgroup2: &Path) -> (PathBuf, String) {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let line_for = |want: &dyn Fn(&str) -> bool| {
        own.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            want(controllers).then(|| path.to_string())
        })
    };
    let v1 = Path::new("/sys/fs/cgroup/cpu");
    if v1.join("cpu.cfs_quota_us").is_file() {
        let path = line_for(&|c| c.split(',').any(|c| c == "cpu")).unwrap_or_default();
        return (v1.to_path_buf(), path);
    }
    let path = line_for(&|c| c.is_empty()).unwrap_or_default();
    (cgroup2.to_path_buf(), path)
}

/// The rule name of limits a previous agent left.
const PREVIOUS: &str = "(left by the previous agent)";

fn event(
    action: &'static str,
    rule: &str,
    result: &'static str,
    cgroup: &str,
    at: SystemTime,
) -> ActionEvent {
    ActionEvent {
        action,
        target: rule.to_string(),
        result,
        detail: cgroup.to_string(),
        at,
    }
}
