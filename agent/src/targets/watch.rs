//! Watched targets: which processes each has, its up/down history (persisted), and the
//! figures derived from them. Membership is refreshed on every tick and, for a target whose
//! cgroup just lost a process, at once on the exit event, so the rules see a target go down
//! within milliseconds.
use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::{
    members, members_where,
    pods::PodSelection,
    process_members,
    slo::{self, LatencyWindows, TargetState, WINDOWS},
    stall::{Clocks, Observed},
    Members, ProcessMatch,
};
use crate::{
    config::TargetConfig,
    model::{HistTotals, Labels},
    probes::ExitRecord,
};

/// Longer than this between two observations and the time in between is "unobserved".
const MAX_GAP: Duration = Duration::from_secs(10);
const SAVE_EVERY: Duration = Duration::from_secs(60);
/// How long a kill (exit by signal or OOM) keeps TargetProcessKilled firing.
pub const KILL_MEMORY_MS: u64 = 300_000;
/// Reliability windows (component histories keep one day).
pub const RELIABILITY_WINDOWS: [(&str, u64); 3] = [("5m", 300), ("1h", 3_600), ("1d", 86_400)];
/// Latency windows (snapshots are kept for an hour).
pub const LATENCY_WINDOWS: [(&str, u64); 2] = [("5m", 300), ("1h", 3_600)];
/// Error-budget burn windows, (long, short) in seconds, one pair per multiwindow alert
/// (rules/ pairs its thresholds with these by position, so none can go uncomputed).
pub const BURN_WINDOWS: [(u64, u64); 2] = [(3_600, 300), (21_600, 1_800)];

pub struct Watcher {
    targets: Vec<Watched>,
    cgroup_root: PathBuf,
    proc_root: PathBuf,
    store: PathBuf,
    last_save: Instant,
    /// When each watched cgroup last made progress (targets with `stall_for`).
    clocks: Clocks,
}

struct Watched {
    config: TargetConfig,
    /// The cgroup globs that select it.
    patterns: Vec<String>,
    /// Selected by pod name: which of the matched cgroups are the pods' containers.
    pods: Option<PodSelection>,
    syscalls: BTreeSet<String>,
    members: Members,
    state: TargetState,
    latency: LatencyWindows,
    /// The last exit of one of its processes, for alert descriptions.
    last_exit: Option<String>,
    /// Exits by a signal (other than a polite stop) or an OOM kill.
    kills: VecDeque<Kill>,
    /// Membership reads that failed for another reason than a process or cgroup being
    /// gone; each left the target's state as it was (unknown is not down).
    read_failures: u64,
    /// The last read failed.
    unreadable: bool,
    /// Its progress set among the clocks' sets.
    progress_set: usize,
    /// When its set of processes last changed (unix ms): a new process has not stalled.
    pids_since_ms: Option<u64>,
    /// The stall check's last verdict (targets with `stall_for`).
    stall: Option<StallStatus>,
}

impl Watched {
    /// Its processes now: from its cgroups, or (comm / exe selectors) from /proc.
    fn read_members(&self, cgroup_root: &Path, proc_root: &Path, exiting: Option<u32>) -> Members {
        if self.config.comm.is_some() || self.config.exe.is_some() {
            let wanted = ProcessMatch {
                comm: self.config.comm.as_deref(),
                exe: self.config.exe.as_deref(),
            };
            return process_members(cgroup_root, proc_root, &wanted, exiting);
        }
        match &self.pods {
            Some(pods) => members_where(cgroup_root, proc_root, &self.patterns, exiting, &|c| {
                pods.keeps(c)
            }),
            None => members(cgroup_root, proc_root, &self.patterns, exiting),
        }
    }

    /// Cgroups whose syscalls count for its latency SLI.
    fn latency_globs(&self) -> Vec<String> {
        if self.patterns.is_empty() {
            // Selected by process: the cgroups those processes are in.
            return self.members.components.keys().cloned().collect();
        }
        self.patterns.clone()
    }

    /// Takes freshly read members: a read that failed leaves the last known members and
    /// records no observation, so the time until the next good read counts as unobserved
    /// (never as down). True if the target went up or down.
    fn refresh(&mut self, fresh: Members, ms: u64) -> bool {
        if let Some(why) = &fresh.unreadable {
            // Logged once per run of failures, counted every time.
            if !self.unreadable {
                tracing::warn!(target = ?self.config.name, error = ?why, "cannot read the target's processes; its state stays unknown until a read succeeds");
            }
            self.unreadable = true;
            self.read_failures += 1;
            return false;
        }
        if std::mem::take(&mut self.unreadable) {
            tracing::info!(target = ?self.config.name, "the target's processes are readable again");
        }
        if self.pids_since_ms.is_none() || fresh.pids != self.members.pids {
            self.pids_since_ms = Some(ms);
        }
        self.members = fresh;
        self.observe(ms)
    }

    /// Records the current members; true if the target went up or down.
    fn observe(&mut self, ms: u64) -> bool {
        let was_up = self.state.history.is_up();
        self.state.observe(ms, &self.members.components, MAX_GAP);
        was_up != self.state.history.is_up()
    }
}

/// A process of a target killed (by a signal other than a polite stop, or the OOM killer):
/// what the kill alert says, and what joins it to a GPU fault that preceded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    pub at_ms: u64,
    /// "signaled" or "oom_killed".
    pub reason: String,
    /// The signal's name.
    pub code: String,
    pub pid: u32,
    /// Its cgroup, relative to the cgroup2 mount.
    pub cgroup: String,
}

/// The stall check of one target: all its processes alive, none completed a progress
/// syscall for `quiet`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StallStatus {
    pub stall_for: Duration,
    /// Time since the last progress syscall of any of its processes (or since its set of
    /// processes last changed, or since the agent could last see its syscalls).
    pub quiet: Duration,
    /// Its live processes.
    pub processes: usize,
    /// It has live processes, the same ones for `quiet`, and `quiet` >= `stall_for`.
    pub stalled: bool,
}

/// Everything the rules and the exposition need about one target.
#[derive(Debug, Clone)]
pub struct TargetStatus {
    pub config: TargetConfig,
    pub up: bool,
    pub availability: Vec<(&'static str, Option<f64>)>,
    pub reliability: Vec<(&'static str, Option<f64>)>,
    pub failures_total: u64,
    /// Failures within the config's crash-loop window.
    pub failures_recent: u64,
    /// Mean time to recovery over 30 days.
    pub mttr: Option<Duration>,
    /// (SLI, performance) per latency window.
    pub latency: Vec<(&'static str, Option<(f64, f64)>)>,
    /// Error-budget burn rate, (1 − A) / (1 − objective), over each `BURN_WINDOWS` pair:
    /// (long, short).
    pub burn: [(Option<f64>, Option<f64>); 2],
    pub last_exit: Option<String>,
    /// The most recent kill within KILL_MEMORY_MS.
    pub recent_kill: Option<Kill>,
    /// Membership reads that failed (the target's state was left unknown).
    pub read_failures_total: u64,
    /// Its components: the matched cgroups, relative to the cgroup2 mount.
    pub cgroups: Vec<String>,
    /// The stall check, for targets with `stall_for`.
    pub stall: Option<StallStatus>,
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

impl Watcher {
    /// Loads each target's history from `state_dir/targets`.
    pub fn new(targets: &[TargetConfig], cgroup_root: PathBuf, state_dir: PathBuf) -> Self {
        let store = state_dir.join("targets");
        let known: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        let mut clocks = Clocks::default();
        Self {
            targets: targets
                .iter()
                .map(|c| Watched {
                    progress_set: clocks.set_index(&c.progress_syscalls),
                    pids_since_ms: None,
                    stall: None,
                    state: slo::load(&store, &c.name, &known),
                    syscalls: c.latency_syscalls.iter().cloned().collect(),
                    patterns: if c.pod_uid.is_some() {
                        super::pods::select(c, &Default::default()).patterns
                    } else {
                        c.patterns()
                    },
                    pods: (c.by_pod_name() || c.pod_uid.is_some())
                        .then(|| super::pods::select(c, &Default::default())),
                    config: c.clone(),
                    members: Members::default(),
                    latency: LatencyWindows::default(),
                    last_exit: None,
                    kills: VecDeque::new(),
                    read_failures: 0,
                    unreadable: false,
                })
                .collect(),
            cgroup_root,
            proc_root: PathBuf::from("/proc"),
            store,
            last_save: Instant::now(),
            clocks,
        }
    }

    /// Targets selected by pod take the container cgroups of the pods (by UID, or whose
    /// names match) in `pods` (the kubelet's layout as last read).
    pub fn resolve_pods(&mut self, pods: &crate::identity::Kubelet) {
        for t in &mut self.targets {
            if t.config.by_pod_name() || t.config.pod_uid.is_some() {
                let selection = super::pods::select(&t.config, pods);
                t.patterns = selection.patterns.clone();
                t.pods = Some(selection);
            }
        }
    }

    /// Reads processes under `proc_root` instead of /proc (tests build a tree).
    pub fn with_proc_root(mut self, proc_root: PathBuf) -> Self {
        self.proc_root = proc_root;
        self
    }

    /// After `tick`: moves the progress clocks of the targets with `stall_for` and judges
    /// each. `folded`: the latency family folded series into `other`, so a cgroup that no
    /// target glob protects (targets selected by comm or exe) may have lost its own.
    pub fn progress(&mut self, series: &BTreeMap<Labels<2>, u64>, seen: Observed, folded: bool) {
        let wanted: Vec<(usize, &str)> = self
            .targets
            .iter()
            .filter(|t| t.config.stall_for.is_some())
            .flat_map(|t| {
                t.members
                    .components
                    .keys()
                    .map(|c| (t.progress_set, c.as_str()))
            })
            .collect();
        self.clocks.tick(wanted, series, seen);
        let now = seen.now_ms;
        for t in &mut self.targets {
            let Some(stall_for) = t.config.stall_for.map(|d| d.get()) else {
                continue;
            };
            let by_process = t.config.comm.is_some() || t.config.exe.is_some();
            let last = t
                .members
                .components
                .keys()
                .map(|c| self.clocks.since_ms(t.progress_set, c).unwrap_or(now))
                .chain(t.pids_since_ms)
                .max()
                .unwrap_or(now);
            let quiet = Duration::from_millis(now.saturating_sub(last));
            // Any exit or new process changed the pid set and restarted `quiet`, so the
            // processes judged are the same ones throughout. Components without processes
            // of their own (a pod's cgroup above its containers') do not count.
            let all_alive = !t.members.pids.is_empty() && !t.unreadable;
            t.stall = Some(StallStatus {
                stall_for,
                quiet,
                processes: t.members.pids.len(),
                stalled: all_alive && quiet >= stall_for && !(by_process && folded),
            });
        }
    }

    /// Each watched process with its target's name and its start time (when read).
    pub fn processes(&self) -> impl Iterator<Item = (&str, u32, Option<u64>)> + '_ {
        self.targets.iter().flat_map(|t| {
            t.members.pids.iter().map(move |&pid| {
                (
                    t.config.name.as_str(),
                    pid,
                    t.members.starts.get(&pid).copied(),
                )
            })
        })
    }

    /// The earliest time the last progress syscall of `cgroup` may have happened, under
    /// the progress set of the first target with `stall_for` holding it, and that
    /// target's `stall_for`.
    pub fn cgroup_progress(&self, cgroup: &str) -> Option<(u64, Duration)> {
        self.targets.iter().find_map(|t| {
            let stall_for = t.config.stall_for?.get();
            t.members.components.contains_key(cgroup).then_some(())?;
            Some((self.clocks.since_ms(t.progress_set, cgroup)?, stall_for))
        })
    }

    /// The cgroups (ids) whose syscalls the targets' latency SLIs read, as last read: the
    /// kernel times their `latency_syscalls` there.
    pub fn latency_cgroup_ids(&self) -> std::collections::BTreeSet<u64> {
        self.targets
            .iter()
            .flat_map(|t| t.members.cgroups.iter().copied())
            .collect()
    }

    /// The cgroup globs of the targets selected by pod, as last resolved.
    pub fn pod_patterns(&self) -> Vec<String> {
        self.targets
            .iter()
            .filter(|t| t.pods.is_some())
            .flat_map(|t| t.patterns.iter().cloned())
            .collect()
    }

    /// Re-reads every target's members and latency, records the tick, saves now and then.
    pub fn tick(&mut self, now: SystemTime, latency: &BTreeMap<Labels<2>, HistTotals>) {
        let ms = unix_ms(now);
        let mut transitions = false;
        for t in &mut self.targets {
            let fresh = t.read_members(&self.cgroup_root, &self.proc_root, None);
            if t.refresh(fresh, ms) {
                transitions = true;
            }
            let threshold = t.config.latency_threshold.get().as_nanos() as u64;
            t.latency.push(
                ms,
                slo::latency_counts(latency, &t.latency_globs(), &t.syscalls, threshold),
            );
        }
        // Up/down changes are saved at once, so a crash loses no failure; the minutes
        // in between every SAVE_EVERY.
        if transitions || self.last_save.elapsed() >= SAVE_EVERY {
            self.save();
        }
    }

    /// A process exited: targets holding its cgroup are re-read at once. Returns whether
    /// any target was affected (the rules should run).
    pub fn on_exit(&mut self, record: &ExitRecord, now: SystemTime) -> bool {
        let ms = unix_ms(now);
        let mut touched = false;
        let mut transitions = false;
        for t in &mut self.targets {
            let pid = record.event.pid;
            if !t.members.cgroups.contains(&record.event.cgroup_id)
                && !t.members.pids.contains(&pid)
            {
                continue;
            }
            let [cgroup, comm, reason, code] = &record.labels;
            t.last_exit = Some(format!("{comm} (pid {}) {reason} {code}", record.event.pid));
            // From the event itself, not parsed back from its labels.
            let exit = crate::model::exits::decode(&record.event);
            if exit.is_kill() {
                t.kills.push_back(Kill {
                    at_ms: ms,
                    reason: exit.reason.to_string(),
                    code: exit.code.into_owned(),
                    pid,
                    cgroup: cgroup.to_string(),
                });
                if t.kills.len() > 100 {
                    t.kills.pop_front();
                }
            }
            let fresh = t.read_members(&self.cgroup_root, &self.proc_root, Some(pid));
            if t.refresh(fresh, ms) {
                transitions = true;
            }
            touched = true;
        }
        if transitions {
            self.save();
        }
        touched
    }

    /// Writes every target's history (also called on shutdown).
    ///
    /// Called on every up/down change: with a handful of targets and ~100 KB each that is
    /// cheap next to what a crash would lose.
    pub fn save(&mut self) {
        for t in &self.targets {
            if let Err(e) = slo::save(&self.store, &t.config.name, &t.state) {
                tracing::error!(target = ?t.config.name, dir = ?self.store, error = %e, "cannot save the target's history");
            }
        }
        self.last_save = Instant::now();
    }

    pub fn status(&self, now: SystemTime) -> Vec<TargetStatus> {
        let ms = unix_ms(now);
        self.targets
            .iter()
            .map(|t| {
                let h = &t.state.history;
                let budget = 1.0 - t.config.availability_objective;
                let rate = |w| h.availability(ms, w).map(|a| (1.0 - a) / budget);
                let burn = BURN_WINDOWS.map(|(long, short)| (rate(long), rate(short)));
                TargetStatus {
                    config: t.config.clone(),
                    up: !t.members.pids.is_empty(),
                    availability: WINDOWS
                        .iter()
                        .map(|&(name, w)| (name, h.availability(ms, w)))
                        .collect(),
                    reliability: RELIABILITY_WINDOWS
                        .iter()
                        .map(|&(name, w)| (name, t.state.reliability(ms, w)))
                        .collect(),
                    failures_total: h.failures_total,
                    failures_recent: h.failures_in(ms, t.config.crash_loop_window.get().as_secs()),
                    mttr: h.mttr(ms, 2_592_000),
                    latency: LATENCY_WINDOWS
                        .iter()
                        .map(|&(name, w)| (name, t.latency.over(ms, w)))
                        .collect(),
                    burn,
                    last_exit: t.last_exit.clone(),
                    recent_kill: t
                        .kills
                        .back()
                        .filter(|k| ms.saturating_sub(k.at_ms) < KILL_MEMORY_MS)
                        .cloned(),
                    read_failures_total: t.read_failures,
                    cgroups: t.members.components.keys().cloned().collect(),
                    stall: t.stall,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(w: &Watcher, now: SystemTime) -> TargetStatus {
        w.status(now).remove(0)
    }

    #[test]
    fn a_target_is_stalled_when_all_its_processes_live_and_none_made_progress_for_stall_for() {
        use std::sync::Arc;
        let root = std::env::temp_dir().join(format!("gimbal-stall-{}", std::process::id()));
        let cg = root.join("cg/svc.service");
        std::fs::create_dir_all(&cg).unwrap();
        for pid in [777, 778] {
            std::fs::create_dir_all(root.join(format!("proc/{pid}"))).unwrap();
            std::fs::write(
                root.join(format!("proc/{pid}/stat")),
                format!("{pid} (svc) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 {pid}00 0"),
            )
            .unwrap();
        }
        std::fs::write(cg.join("cgroup.procs"), "777\n").unwrap();
        let config = crate::config::Config::parse(
            "[[targets]]\nname = \"svc\"\ncgroup = \"svc.service\"\nstall_for = \"3s\"\n",
            "test",
        )
        .unwrap();
        let mut w = Watcher::new(&config.targets, root.join("cg"), root.join("state"));
        w.proc_root = root.join("proc");
        let mut series = BTreeMap::new();
        let mut writes = |n: u64| {
            series.insert([Arc::from("write"), Arc::from("svc.service")], n);
            series.clone()
        };
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let step = |w: &mut Watcher, s: u64, series: &BTreeMap<Labels<2>, u64>| {
            let now = t0 + Duration::from_secs(s);
            w.tick(now, &BTreeMap::new());
            let seen = Observed {
                now_ms: unix_ms(now),
                interval: Duration::from_secs(1),
                complete: true,
            };
            w.progress(series, seen, false);
            status(w, now).stall.unwrap()
        };
        let s = writes(1);
        assert!(!step(&mut w, 0, &s).stalled);
        let s = writes(2);
        let st = step(&mut w, 1, &s);
        assert_eq!(st.quiet, Duration::from_secs(1), "the write came after t0");
        assert!(w.processes().eq([("svc", 777, Some(77700))]));
        assert!(!step(&mut w, 2, &s).stalled);
        // The write happened after t0 (the read before the one that saw it): stalled once
        // 3 s have passed since then, which is at most 3 s + one tick after the write.
        let st = step(&mut w, 3, &s);
        assert!(st.stalled && st.quiet == Duration::from_secs(3), "{st:?}");
        // A new process is not stalled yet.
        std::fs::write(cg.join("cgroup.procs"), "777\n778\n").unwrap();
        let st = step(&mut w, 5, &s);
        assert!(!st.stalled && st.processes == 2, "{st:?}");
        assert_eq!(
            w.cgroup_progress("svc.service").map(|(_, f)| f),
            Some(Duration::from_secs(3))
        );
        // No live process: down, not stalled.
        std::fs::write(cg.join("cgroup.procs"), "").unwrap();
        assert!(!step(&mut w, 20, &s).stalled);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_unreadable_membership_is_unknown_not_down() {
        let root = std::env::temp_dir().join(format!("gimbal-watch-{}", std::process::id()));
        let (cg, stat) = (root.join("cg/svc.service"), root.join("proc/777/stat"));
        std::fs::create_dir_all(&cg).unwrap();
        std::fs::create_dir_all(stat.parent().unwrap()).unwrap();
        std::fs::write(cg.join("cgroup.procs"), "777\n").unwrap();
        std::fs::write(&stat, "777 (svc) S 1 2 3").unwrap();
        let config = crate::config::Config::parse(
            "[[targets]]\nname = \"svc\"\ncgroup = \"svc.service\"\n",
            "test",
        )
        .unwrap();
        let mut w = Watcher::new(&config.targets, root.join("cg"), root.join("state"));
        w.proc_root = root.join("proc");
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let none = BTreeMap::new();
        w.tick(t0, &none);
        assert!(status(&w, t0).up);

        // A read that fails (EISDIR here, EMFILE under a descriptor shortage).
        std::fs::remove_file(&stat).unwrap();
        std::fs::create_dir(&stat).unwrap();
        let t1 = t0 + Duration::from_secs(1);
        w.tick(t1, &none);
        let s = status(&w, t1);
        assert!(s.up, "an unreadable target keeps its last known state");
        assert_eq!((s.failures_total, s.read_failures_total), (0, 1));

        // Gone is down.
        std::fs::remove_dir_all(root.join("proc/777")).unwrap();
        let t2 = t1 + Duration::from_secs(1);
        w.tick(t2, &none);
        let s = status(&w, t2);
        assert!(!s.up);
        assert_eq!((s.failures_total, s.read_failures_total), (1, 1));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
