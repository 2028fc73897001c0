//! Training jobs on this node: each job (keyed on its launcher's run id, since ranks change
//! across elastic restarts), its ranks (the processes a launcher started with a rank),
//! whether each is alive and how each ended, and what hit a rank shortly before it died
//! (an XID on its pid or cgroup, an OOM kill in its cgroup). Pure: the jobs/ stage reads
//! who is which rank, run.rs hands every exit here with its time.
use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::Arc,
    time::{Duration, SystemTime},
};

use gimbal_common::{ExitEvent, EXIT_FLAG_OOM_KILLED};

use super::{exits, gpu::GpuModel, Family, Fold};

/// How long before a rank's death an XID on its pid (or cgroup), or an OOM kill in its
/// cgroup, is named as the cause.
pub const CAUSE_WINDOW: Duration = Duration::from_secs(300);
/// How long before a rank's death an XID naming no process (a GPU fallen off the bus) is
/// named, as a possible cause: without NVML the agent cannot tell which GPU a rank used.
pub const NODE_XID_WINDOW: Duration = Duration::from_secs(60);
/// How long a rank's failure keeps TrainingRankFailed firing.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(300);
/// A job with no live rank is forgotten this long after its last change (its counters
/// stay).
pub const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// A rank missing from its target for this long without an exit event (the event was
/// lost, or the process moved away) is taken as gone.
pub const MISSING_GRACE: Duration = Duration::from_secs(5);
/// Ranks kept per job: more than any node holds GPUs, far fewer than a forged flood.
pub const MAX_RANKS: usize = 1024;
const RECENT_OOMS: usize = 256;
const RECENT_FAILURES: usize = 256;

/// A process found to be a rank (its launcher's environment), as the jobs/ stage saw it.
#[derive(Debug, Clone)]
pub struct RankSeen {
    pub job: Arc<str>,
    pub rank: u32,
    pub local_rank: Option<u32>,
    pub world_size: Option<u32>,
    pub restart_count: u32,
    pub pid: u32,
    pub comm: String,
    pub cgroup: Arc<str>,
    pub target: Arc<str>,
}

#[derive(Debug, Clone)]
pub struct Rank {
    pub rank: u32,
    pub local_rank: Option<u32>,
    pub pid: u32,
    pub comm: String,
    pub cgroup: Arc<str>,
    pub target: Arc<str>,
    pub restart_count: u32,
    pub seen_at: SystemTime,
    pub alive: bool,
    /// How it ended: (reason, code), "gone" when it vanished without an exit event.
    pub ended: Option<(&'static str, String)>,
    missing_since: Option<SystemTime>,
}

#[derive(Debug, Clone)]
pub struct Job {
    /// By pid (a rank number is reused by the next incarnation).
    pub ranks: BTreeMap<u32, Rank>,
    pub world_size: Option<u32>,
    /// The highest TORCHELASTIC_RESTART_COUNT seen: the launcher's own restarts.
    pub restarts: u32,
    /// A rank of the current incarnation failed (non-zero exit, a kill, an OOM kill).
    pub failed: bool,
    pub changed: SystemTime,
}

impl Job {
    pub fn alive(&self) -> usize {
        self.ranks.values().filter(|r| r.alive).count()
    }

    /// running, finished (every rank here ended, none failed) or failed.
    pub fn state(&self) -> &'static str {
        if self.alive() > 0 {
            "running"
        } else if self.failed {
            "failed"
        } else {
            "finished"
        }
    }
}

/// What hit a rank shortly before it died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    Xid {
        xid: u32,
        gpu: Arc<str>,
        after: Duration,
        /// The record named the rank's pid (or its cgroup); false for one that named no
        /// process, somewhere on this node.
        named: bool,
    },
    OomKill {
        after: Duration,
        pid: u32,
        comm: String,
    },
}

/// A rank that died: a non-zero exit, a kill or an OOM kill (not a polite stop, which is
/// how a launcher tears down the other ranks after a failure).
#[derive(Debug, Clone)]
pub struct RankFailure {
    pub job: Arc<str>,
    pub rank: u32,
    pub pid: u32,
    pub comm: String,
    pub cgroup: Arc<str>,
    pub target: Arc<str>,
    pub reason: &'static str,
    pub code: String,
    pub core_dumped: bool,
    pub restart_count: u32,
    pub world_size: Option<u32>,
    pub cause: Option<Cause>,
    pub at: SystemTime,
}

/// A job whose every rank here is alive and none made progress for `stall_for`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobStall {
    pub quiet: Duration,
    pub stall_for: Duration,
    /// (rank, pid, cgroup)
    pub ranks: Vec<(u32, u32, Arc<str>)>,
    /// The target holding every rank, if one does (remediation can then act by target).
    pub target: Option<Arc<str>>,
}

#[derive(Debug, Clone)]
pub struct JobsModel {
    /// At most `max_jobs`.
    pub jobs: BTreeMap<Arc<str>, Job>,
    /// Live ranks' pids -> their job.
    by_pid: HashMap<u32, Arc<str>>,
    max_jobs: usize,
    /// Ranks not tracked: their job was past the job limit, or the job past MAX_RANKS.
    pub untracked_ranks: u64,
    /// [training_job, reason, code]
    pub rank_exits: Family<3, u64>,
    /// Recent failures, oldest first, for TrainingRankFailed.
    pub failures: VecDeque<RankFailure>,
    /// (time, cgroup, pid, comm) of recent OOM kills, any process.
    recent_ooms: VecDeque<(SystemTime, Arc<str>, u32, String)>,
    /// Stalled jobs, as jobs/ last judged them.
    pub stalled: BTreeMap<Arc<str>, JobStall>,
}

impl JobsModel {
    pub fn new(limits: impl Into<super::Limits>) -> Self {
        let limits = &limits.into();
        Self {
            jobs: BTreeMap::new(),
            by_pid: HashMap::new(),
            max_jobs: limits.per_metric,
            untracked_ranks: 0,
            // reason is one of four, code an exit code or a signal name: kept exact.
            rank_exits: Family::new(
                limits,
                1,
                Fold {
                    keep: [false, true, true],
                    unbounded: false,
                },
            ),
            failures: VecDeque::new(),
            recent_ooms: VecDeque::new(),
            stalled: BTreeMap::new(),
        }
    }

    /// Whether `pid` is a live rank already known.
    pub fn knows(&self, pid: u32) -> bool {
        self.by_pid.contains_key(&pid)
    }

    /// A rank found; a newer incarnation (a higher restart count) replaces the ended ranks
    /// of the one before.
    pub fn rank_seen(&mut self, seen: RankSeen, now: SystemTime) {
        if self.knows(seen.pid) {
            return;
        }
        if !self.jobs.contains_key(&seen.job) && self.jobs.len() >= self.max_jobs {
            self.untracked_ranks += 1;
            return;
        }
        let job = self.jobs.entry(seen.job.clone()).or_insert_with(|| Job {
            ranks: BTreeMap::new(),
            world_size: None,
            restarts: seen.restart_count,
            failed: false,
            changed: now,
        });
        if seen.restart_count > job.restarts {
            job.restarts = seen.restart_count;
            job.ranks.retain(|_, r| r.alive);
            job.failed = false;
        }
        if job.ranks.len() >= MAX_RANKS {
            self.untracked_ranks += 1;
            return;
        }
        job.world_size = seen.world_size.or(job.world_size);
        job.changed = now;
        job.ranks.insert(
            seen.pid,
            Rank {
                rank: seen.rank,
                local_rank: seen.local_rank,
                pid: seen.pid,
                comm: seen.comm,
                cgroup: seen.cgroup,
                target: seen.target,
                restart_count: seen.restart_count,
                seen_at: now,
                alive: true,
                ended: None,
                missing_since: None,
            },
        );
        self.by_pid.insert(seen.pid, seen.job);
    }

    /// Every exit on the node: a rank's ends it (a failure is remembered with its cause);
    /// an OOM kill anywhere is remembered as a possible cause. Returns the failure, if
    /// this was one.
    pub fn apply_exit(
        &mut self,
        event: &ExitEvent,
        cgroup: &Arc<str>,
        comm: &str,
        gpu: &GpuModel,
        at: SystemTime,
    ) -> Option<&RankFailure> {
        let exit = exits::decode(event);
        let pid = event.pid;
        let job_id = self.by_pid.remove(&pid);
        if event.flags & EXIT_FLAG_OOM_KILLED != 0 {
            if self.recent_ooms.len() == RECENT_OOMS {
                self.recent_ooms.pop_front();
            }
            self.recent_ooms
                .push_back((at, cgroup.clone(), pid, comm.to_string()));
        }
        let job_id = job_id?;
        let job = self.jobs.get_mut(&job_id)?;
        let rank = job.ranks.get_mut(&pid)?;
        rank.alive = false;
        rank.ended = Some((exit.reason, exit.code.to_string()));
        job.changed = at;
        *self.rank_exits.entry([
            job_id.clone(),
            Arc::from(exit.reason),
            Arc::from(&*exit.code),
        ]) += 1;
        let failed = exit.is_kill() || (exit.reason == "exited" && exit.code != "0");
        if !failed {
            return None;
        }
        job.failed = true;
        let (rank_no, rank_cgroup, target, restarts) = (
            rank.rank,
            rank.cgroup.clone(),
            rank.target.clone(),
            rank.restart_count,
        );
        let world_size = job.world_size;
        let cause = if exit.reason == "oom_killed" {
            None // the reason says it
        } else {
            self.cause(pid, &rank_cgroup, gpu, at)
        };
        if self.failures.len() == RECENT_FAILURES {
            self.failures.pop_front();
        }
        self.failures.push_back(RankFailure {
            job: job_id,
            rank: rank_no,
            pid,
            comm: comm.to_string(),
            cgroup: rank_cgroup,
            target,
            reason: exit.reason,
            code: exit.code.into_owned(),
            core_dumped: exit.core_dumped,
            restart_count: restarts,
            world_size,
            cause,
            at,
        });
        self.failures.back()
    }

    /// The latest XID on the rank's pid or cgroup, else the latest OOM kill in its cgroup,
    /// else an XID naming no process shortly before.
    fn cause(&self, pid: u32, cgroup: &str, gpu: &GpuModel, at: SystemTime) -> Option<Cause> {
        let after = |t: SystemTime| at.duration_since(t).unwrap_or_default();
        if let Some(x) = gpu.xid_before(pid, cgroup, at, CAUSE_WINDOW) {
            return Some(Cause::Xid {
                xid: x.xid,
                gpu: x.gpu.clone(),
                after: after(x.at),
                named: true,
            });
        }
        let oom = self.recent_ooms.iter().rev().find(|(t, c, p, _)| {
            &**c == cgroup && *p != pid && *t <= at && after(*t) <= CAUSE_WINDOW
        });
        if let Some((t, _, p, comm)) = oom {
            return Some(Cause::OomKill {
                after: after(*t),
                pid: *p,
                comm: comm.clone(),
            });
        }
        let since = at.checked_sub(NODE_XID_WINDOW)?;
        gpu.recent
            .iter()
            .rev()
            .skip_while(|r| r.at > at)
            .take_while(|r| r.at >= since)
            .find(|r| r.pid.is_none())
            .map(|x| Cause::Xid {
                xid: x.xid,
                gpu: x.gpu.clone(),
                after: after(x.at),
                named: false,
            })
    }

    /// `pid` now names another process (its start time changed) though no exit event
    /// came: the rank it was is forgotten (ranks are keyed by pid), and the pid may be
    /// seen as a new rank.
    pub fn pid_reused(&mut self, pid: u32, now: SystemTime) {
        let Some(job_id) = self.by_pid.remove(&pid) else {
            return;
        };
        if let Some(job) = self.jobs.get_mut(&job_id) {
            job.ranks.remove(&pid);
            job.changed = now;
        }
    }

    /// Live ranks whose process is no longer among `live` (the targets' processes now):
    /// taken as gone after MISSING_GRACE, if their exit event never came.
    pub fn retain_live(&mut self, live: &HashSet<u32>, now: SystemTime) {
        for (job_id, job) in &mut self.jobs {
            for rank in job.ranks.values_mut().filter(|r| r.alive) {
                if live.contains(&rank.pid) {
                    rank.missing_since = None;
                    continue;
                }
                let since = *rank.missing_since.get_or_insert(now);
                if now.duration_since(since).unwrap_or_default() >= MISSING_GRACE {
                    rank.alive = false;
                    rank.ended = Some(("gone", String::new()));
                    job.changed = now;
                    if self.by_pid.get(&rank.pid) == Some(job_id) {
                        self.by_pid.remove(&rank.pid);
                    }
                }
            }
        }
    }

    /// Forgets old failures, OOM kills and jobs without a live rank.
    pub fn prune(&mut self, now: SystemTime) {
        let age = |t: SystemTime| now.duration_since(t).unwrap_or_default();
        while self
            .failures
            .front()
            .is_some_and(|f| age(f.at) > FAILURE_MEMORY)
        {
            self.failures.pop_front();
        }
        while self
            .recent_ooms
            .front()
            .is_some_and(|o| age(o.0) > CAUSE_WINDOW)
        {
            self.recent_ooms.pop_front();
        }
        self.jobs
            .retain(|_, j| j.alive() > 0 || age(j.changed) <= FORGET_AFTER);
        self.stalled.retain(|job, _| self.jobs.contains_key(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gpu::XidSeen;

    const T0: u64 = 1_000_000;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + s)
    }

    fn seen(job: &str, rank: u32, pid: u32, restart: u32) -> RankSeen {
        RankSeen {
            job: Arc::from(job),
            rank,
            local_rank: Some(rank),
            world_size: Some(4),
            restart_count: restart,
            pid,
            comm: "python3".into(),
            cgroup: Arc::from(format!("job/rank{rank}")),
            target: Arc::from("trainer"),
        }
    }

    fn exit(pid: u32, status: u32, oom: bool) -> ExitEvent {
        ExitEvent {
            cgroup_id: 1,
            lifetime_ns: 0,
            pid,
            ppid: 1,
            exit_code: status,
            flags: if oom { EXIT_FLAG_OOM_KILLED } else { 0 },
            comm: *b"python3\0\0\0\0\0\0\0\0\0",
        }
    }

    fn xid(xid: u32, pid: Option<u32>, at: SystemTime) -> XidSeen {
        XidSeen {
            gpu: Arc::from("0000:3b:00"),
            xid,
            action: "reset-gpu",
            cgroup: Arc::from("unknown"),
            pid,
            name: None,
            detail: String::new(),
            at,
        }
    }

    fn die(
        m: &mut JobsModel,
        gpu: &GpuModel,
        pid: u32,
        status: u32,
        oom: bool,
        at: SystemTime,
    ) -> Option<RankFailure> {
        let cgroup: Arc<str> = m
            .jobs
            .values()
            .find_map(|j| j.ranks.get(&pid).map(|r| r.cgroup.clone()))
            .unwrap_or_else(|| Arc::from("elsewhere"));
        m.apply_exit(&exit(pid, status, oom), &cgroup, "python3", gpu, at)
            .cloned()
    }

    #[test]
    fn each_death_names_its_cause_and_a_job_whose_ranks_all_exit_0_is_finished() {
        let mut m = JobsModel::new(10);
        let mut gpu = GpuModel::new(10);
        for (rank, pid) in [(0, 100), (1, 101), (2, 102), (3, 103)] {
            m.rank_seen(seen("j", rank, pid, 0), t(0));
        }
        assert_eq!(m.jobs["j"].alive(), 4);
        // Rank 3: an XID on its pid 2 s before its SIGABRT.
        gpu.apply_xid(xid(79, Some(103), t(10)));
        let f = die(&mut m, &gpu, 103, 6, false, t(12)).expect("a failure");
        assert_eq!(
            (f.rank, f.reason, f.code.as_str()),
            (3, "signaled", "SIGABRT")
        );
        assert_eq!(
            f.cause,
            Some(Cause::Xid {
                xid: 79,
                gpu: Arc::from("0000:3b:00"),
                after: Duration::from_secs(2),
                named: true
            })
        );
        // Rank 1: OOM-killed; the reason is the cause.
        let f = die(&mut m, &gpu, 101, 9, true, t(13)).unwrap();
        assert_eq!((f.reason, f.cause.clone()), ("oom_killed", None));
        // Rank 0: SIGKILL, nothing before it (rank 3's XID named another pid).
        let f = die(&mut m, &gpu, 100, 9, false, t(14)).unwrap();
        assert_eq!(
            (f.reason, f.code.as_str(), f.cause.clone()),
            ("signaled", "SIGKILL", None)
        );
        // Rank 2: SIGTERM is how a launcher stops the rest: no failure.
        assert!(die(&mut m, &gpu, 102, 15, false, t(15)).is_none());
        assert_eq!(m.jobs["j"].state(), "failed");
        assert_eq!(m.failures.len(), 3);
        let k = |r: &str, c: &str| [Arc::from("j"), Arc::from(r), Arc::from(c)];
        assert_eq!(m.rank_exits.series[&k("signaled", "SIGKILL")], 1);
        assert_eq!(m.rank_exits.series[&k("oom_killed", "SIGKILL")], 1);
        assert_eq!(m.rank_exits.series[&k("signaled", "SIGTERM")], 1);

        // Another job whose ranks all exit 0: finished, no failure.
        m.rank_seen(seen("k", 0, 200, 0), t(0));
        m.rank_seen(seen("k", 1, 201, 0), t(0));
        assert!(die(&mut m, &gpu, 200, 0, false, t(20)).is_none());
        assert_eq!(m.jobs["k"].state(), "running");
        assert!(die(&mut m, &gpu, 201, 0, false, t(21)).is_none());
        assert_eq!(m.jobs["k"].state(), "finished");
        // Exit 1 is a failure.
        m.rank_seen(seen("l", 0, 300, 0), t(0));
        assert!(die(&mut m, &gpu, 300, 1 << 8, false, t(22)).is_some());
        assert_eq!(m.jobs["l"].state(), "failed");

        // Failures are remembered FAILURE_MEMORY; jobs without a live rank FORGET_AFTER.
        m.prune(t(22) + FAILURE_MEMORY + Duration::from_secs(1));
        assert!(m.failures.is_empty());
        assert_eq!(m.jobs.len(), 3);
        m.prune(t(22) + FORGET_AFTER + Duration::from_secs(1));
        assert!(m.jobs.is_empty());
    }

    #[test]
    fn an_oom_kill_in_the_cgroup_or_an_unnamed_xid_shortly_before_is_the_cause() {
        let mut m = JobsModel::new(10);
        let mut gpu = GpuModel::new(10);
        m.rank_seen(seen("j", 0, 100, 0), t(0));
        m.rank_seen(seen("j", 1, 101, 0), t(0));
        // A data loader worker (not a rank) of rank 0 OOM-killed in its cgroup.
        let cg: Arc<str> = Arc::from("job/rank0");
        assert!(m
            .apply_exit(&exit(555, 9, true), &cg, "pt_data_worker", &gpu, t(5))
            .is_none());
        let f = die(&mut m, &gpu, 100, 1 << 8, false, t(8)).unwrap();
        assert_eq!(
            f.cause,
            Some(Cause::OomKill {
                after: Duration::from_secs(3),
                pid: 555,
                comm: "pt_data_worker".into()
            })
        );
        // A GPU fallen off the bus (no pid) 30 s before rank 1 dies.
        gpu.apply_xid(xid(79, None, t(10)));
        let f = die(&mut m, &gpu, 101, 6, false, t(40)).unwrap();
        assert!(
            matches!(
                f.cause,
                Some(Cause::Xid {
                    xid: 79,
                    named: false,
                    ..
                })
            ),
            "{f:?}"
        );
        // Past the window: no cause.
        m.rank_seen(seen("j", 2, 102, 0), t(0));
        let late = t(10) + NODE_XID_WINDOW + Duration::from_secs(1);
        assert_eq!(die(&mut m, &gpu, 102, 6, false, late).unwrap().cause, None);
    }

    #[test]
    fn restarts_replace_ended_ranks_and_everything_is_bounded() {
        let mut m = JobsModel::new(2);
        let gpu = GpuModel::new(10);
        m.rank_seen(seen("j", 0, 100, 0), t(0));
        assert!(die(&mut m, &gpu, 100, 9, false, t(1)).is_some());
        assert_eq!(m.jobs["j"].state(), "failed");
        m.rank_seen(seen("j", 0, 110, 1), t(5));
        let j = &m.jobs["j"];
        assert_eq!((j.restarts, j.state(), j.ranks.len()), (1, "running", 1));
        // Past two jobs, ranks of new jobs are counted, not kept.
        m.rank_seen(seen("k", 0, 200, 0), t(5));
        m.rank_seen(seen("x", 0, 300, 0), t(5));
        assert_eq!((m.jobs.len(), m.untracked_ranks), (2, 1));
        for pid in 0..(MAX_RANKS as u32 + 10) {
            m.rank_seen(seen("k", 1, 10_000 + pid, 0), t(5));
        }
        assert_eq!(m.jobs["k"].ranks.len(), MAX_RANKS);
        // A rank that vanished without an exit event is gone after the grace.
        let live: HashSet<u32> = [110].into();
        m.retain_live(&live, t(10));
        assert_eq!(m.jobs["k"].alive(), MAX_RANKS);
        m.retain_live(&live, t(10) + MISSING_GRACE);
        assert_eq!(m.jobs["k"].alive(), 0);
        assert_eq!(m.jobs["j"].alive(), 1);
        assert!(!m.knows(200));
    }
}
