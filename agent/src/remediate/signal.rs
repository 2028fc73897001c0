//! `[[signal]]`: when an alert starts firing, send a signal once to every process of the
//! matched cgroups (SIGUSR1 so a training job checkpoints, say); again only after the alert
//! resolved and fired anew. Each process is pinned with a pidfd and then checked to still
//! be in the cgroup, so a PID reused between reading `cgroup.procs` and sending is never hit.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::SystemTime,
};

use super::{
    cap::{ActionCap, Slot, SETTLE},
    guard::{own_cgroup_v2, Guard},
    pidfd,
    record::{Act, Kind, Outcome, Recorder},
};
use crate::{
    alert::AlertLabels,
    config::{Config, RemediationMode, SignalConfig},
    host::{cgroupfs, procfs},
    names::signal_number,
};

pub struct Signaller {
    rules: Vec<SignalConfig>,
    guard: Guard,
    recorder: Recorder,
    cgroup2: PathBuf,
    /// Rules whose alert fired and got its signal; cleared when the alert resolves.
    sent: BTreeSet<String>,
    /// `cgroup_from_alert` rules: (rule, cgroup) signalled while that alert fires.
    sent_to: BTreeSet<(String, String)>,
}

impl Signaller {
    pub fn new(config: &Config, cgroup2: &Path, recorder: Recorder) -> Self {
        Self {
            rules: config.signals.clone(),
            guard: Guard::new(&config.remediation.protected, &own_cgroup_v2()),
            recorder,
            cgroup2: cgroup2.to_path_buf(),
            sent: BTreeSet::new(),
            sent_to: BTreeSet::new(),
        }
    }

    pub fn step(&mut self, firing: &[AlertLabels], now: SystemTime, cap: &mut ActionCap) {
        for rule in self.rules.clone() {
            if rule.cgroup_from_alert {
                self.step_named(&rule, firing, now, cap);
                continue;
            }
            let triggered = super::fires(firing, &rule.when, rule.target.as_deref());
            let key = format!("signal:{}", rule.name);
            if !triggered {
                self.sent.remove(&rule.name);
                cap.forget(&key);
            } else if !self.sent.contains(&rule.name) {
                match cap.take(&key, Some(now + SETTLE), now) {
                    Slot::Granted => {
                        self.sent.insert(rule.name.clone());
                        self.signal(&rule, now);
                    }
                    Slot::Deferred => super::record_deferred(
                        &self.recorder,
                        Kind::Signal,
                        &rule.name,
                        &cap.why(),
                        now,
                    ),
                    Slot::StillDeferred => {}
                }
            }
        }
    }

    /// A `cgroup_from_alert` rule: each firing alert's own cgroup, once while it fires.
    fn step_named(
        &mut self,
        rule: &SignalConfig,
        firing: &[AlertLabels],
        now: SystemTime,
        cap: &mut ActionCap,
    ) {
        let named: BTreeSet<String> = firing
            .iter()
            .filter(|l| super::fires(std::slice::from_ref(*l), &rule.when, rule.target.as_deref()))
            .filter_map(|l| l.get("cgroup").cloned())
            .collect();
        let gone: Vec<(String, String)> = self
            .sent_to
            .iter()
            .filter(|(r, c)| *r == rule.name && !named.contains(c))
            .cloned()
            .collect();
        for (r, c) in gone {
            cap.forget(&format!("signal:{r}:{c}"));
            self.sent_to.remove(&(r, c));
        }
        for cgroup in named {
            let sent = (rule.name.clone(), cgroup.clone());
            if self.sent_to.contains(&sent) {
                continue;
            }
            // Not one the rule may hit ("unknown" for an XID that named no process, a pod
            // outside its globs): nothing to do, and nothing to audit.
            if !rule
                .cgroups
                .iter()
                .any(|g| crate::targets::glob_match(g, &cgroup))
            {
                tracing::debug!(rule = %rule.name, cgroup = %cgroup, "signal: the alert's cgroup is not in the rule's cgroups");
                continue;
            }
            let key = format!("signal:{}:{cgroup}", rule.name);
            match cap.take(&key, Some(now + SETTLE), now) {
                Slot::Granted => {
                    self.sent_to.insert(sent);
                    match crate::targets::confine(&self.cgroup2, &cgroup) {
                        Ok(dir) => self.signal_dir(rule, &dir, now),
                        Err(e) => {
                            let act = Act {
                                kind: Kind::Signal,
                                rule: &rule.name,
                                cgroup: &cgroup,
                            };
                            let why = format!("refused: {e}");
                            tracing::warn!(rule = %rule.name, "signal {why}");
                            self.recorder.outcome(act, &why, Outcome::Refused, now);
                        }
                    }
                }
                Slot::Deferred => super::record_deferred(
                    &self.recorder,
                    Kind::Signal,
                    &rule.name,
                    &cap.why(),
                    now,
                ),
                Slot::StillDeferred => {}
            }
        }
    }

    fn signal(&self, rule: &SignalConfig, now: SystemTime) {
        let groups = super::confined_groups(
            &self.cgroup2,
            &rule.cgroups,
            &self.recorder,
            Kind::Signal,
            &rule.name,
            now,
        );
        if groups.is_empty() {
            tracing::warn!(rule = %rule.name, globs = ?rule.cgroups, "signal: no cgroup matches");
        }
        for dir in groups {
            self.signal_dir(rule, &dir, now);
        }
    }

    /// Signals the processes of one confined group (or, in dry-run, says it would).
    fn signal_dir(&self, rule: &SignalConfig, dir: &Path, now: SystemTime) {
        let Some(sig) = signal_number(&rule.signal) else {
            return; // rejected at config load
        };
        let rel = dir
            .strip_prefix(&self.cgroup2)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let act = Act {
            kind: Kind::Signal,
            rule: &rule.name,
            cgroup: &rel,
        };
        let (result, detail) = if let Some(why) = self.guard.refusal(&rel) {
            (Outcome::Refused, format!("refused: {why}"))
        } else {
            self.recorder.intent(act, &rule.signal, now);
            match self.recorder.mode() {
                RemediationMode::DryRun => (
                    Outcome::DryRun,
                    format!("would send {} to {rel}", rule.signal),
                ),
                RemediationMode::Enforce => {
                    let (sent, errors) = send_to_group(dir, &rel, sig as i32);
                    let detail = format!("{} to {sent} processes{errors}", rule.signal);
                    (
                        if sent > 0 || errors.is_empty() {
                            Outcome::Done
                        } else {
                            Outcome::Failed
                        },
                        detail,
                    )
                }
            }
        };
        tracing::info!(rule = %rule.name, cgroup = %rel, result = result.name(), "{detail}");
        self.recorder.outcome(act, &detail, result, now);
    }
}

/// Signals every process of the group: (how many got it, "; errors" if any).
fn send_to_group(dir: &Path, relative: &str, sig: i32) -> (usize, String) {
    let procs = cgroupfs::procs(dir).unwrap_or_default();
    let own = std::process::id();
    let mut sent = 0;
    let mut errors = Vec::new();
    for pid in procs {
        if pid <= 1 || pid == own {
            continue; // PID 1 and the agent itself are never signalled
        }
        let Ok(fd) = pidfd::open(pid) else {
            continue; // ended since cgroup.procs was read
        };
        // Pinned now: if this pid is no longer the group's process, it is not ours to hit.
        if !in_cgroup(pid, relative) || is_kernel_thread(pid) {
            continue;
        }
        match pidfd::send_signal(&fd, sig) {
            Ok(()) => sent += 1,
            Err(e) => errors.push(format!("pid {pid}: {e}")),
        }
    }
    let errors = match errors.is_empty() {
        true => String::new(),
        false => format!("; {}", errors.join(", ")),
    };
    (sent, errors)
}

/// PF_KTHREAD in the flags of /proc/<pid>/stat. Kernel threads are never signalled; one
/// can sit in a workload's cgroup (a vhost worker in a VM's, say).
fn is_kernel_thread(pid: u32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let stat = procfs::stat(Path::new(procfs::ROOT), pid).unwrap_or_default();
    procfs::stat_field(&stat, 9) // flags
        .and_then(|flags| flags.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

fn in_cgroup(pid: u32, relative: &str) -> bool {
    procfs::cgroup_v2_path(Path::new(procfs::ROOT), pid)
        .ok()
        .flatten()
        .is_some_and(|path| path.trim_start_matches('/') == relative.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn kthreadd_is_a_kernel_thread_and_this_process_is_not() {
        // PID 2 is kthreadd in the initial pid namespace; the kernel's flags say so.
        let comm = std::fs::read_to_string("/proc/2/comm").unwrap_or_default();
        assert_eq!(comm.trim(), "kthreadd", "not the initial pid namespace");
        assert!(is_kernel_thread(2));
        assert!(!is_kernel_thread(std::process::id()));
        assert!(!is_kernel_thread(u32::MAX), "no such process");
    }

    /// A `cgroup_from_alert` rule acts on the cgroup each firing alert names, once per
    /// firing, and only where its globs allow: an XID that named no process ("unknown"),
    /// another alert, or a cgroup outside the globs gets nothing, not even an audit line.
    #[test]
    fn a_rule_from_the_alert_signals_only_the_named_cgroup_once_per_firing() {
        let dir = std::env::temp_dir().join(format!("gimbal-signal-named-{}", std::process::id()));
        let root = dir.join("cg");
        for g in ["pod-a", "pod-b", "system"] {
            std::fs::create_dir_all(root.join(g)).unwrap();
            std::fs::write(root.join(g).join("cgroup.procs"), "").unwrap();
        }
        let config = Config::parse(
            &format!(
                "[agent]\nstate_dir = \"{}\"\n[[signal]]\nname = \"xid\"\nwhen = \"GpuApplicationXid\"\n\
                 cgroups = [\"pod-*\"]\nsignal = \"SIGTERM\"\ncgroup_from_alert = true\n",
                dir.display()
            ),
            "t",
        )
        .unwrap();
        let recorded = super::super::record::testing::Recorded::new(&dir, config.remediation.mode);
        let mut s = Signaller::new(&config, &root, recorded.recorder.clone());
        let mut cap = ActionCap::new(4);
        let alert = |name: &str, cgroup: &str| -> AlertLabels {
            [("alertname", name), ("cgroup", cgroup), ("xid", "13")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let outcomes = || -> Vec<String> {
            std::fs::read_to_string(dir.join("remediation/audit.jsonl"))
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .filter(|l| l["phase"] == "outcome")
                .map(|l| {
                    format!(
                        "{} {}",
                        l["cgroup"].as_str().unwrap(),
                        l["result"].as_str().unwrap()
                    )
                })
                .collect()
        };
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let at = |s| t0 + std::time::Duration::from_secs(s);
        let firing = [
            alert("GpuApplicationXid", "pod-a"),
            alert("GpuApplicationXid", "unknown"),
            alert("GpuApplicationXid", "system"),
            alert("GpuFallenOffBus", "pod-b"),
        ];
        s.step(&firing, at(0), &mut cap);
        s.step(&firing, at(1), &mut cap);
        assert_eq!(outcomes(), ["pod-a dry_run"], "once, and only pod-a");
        s.step(&[], at(10), &mut cap);
        s.step(&firing[..1], at(11), &mut cap);
        assert_eq!(outcomes(), ["pod-a dry_run", "pod-a dry_run"], "fired anew");
        // A name the globs allow that is no cgroup (gone, or a traversal) is refused by
        // the confinement, and audited.
        s.step(&[alert("GpuApplicationXid", "pod-gone")], at(20), &mut cap);
        assert_eq!(outcomes().len(), 3, "{:?}", outcomes());
        assert!(outcomes()[2].ends_with("refused"), "{:?}", outcomes());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
