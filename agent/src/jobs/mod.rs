//! Training jobs: which watched processes are ranks of which job (read once per process
//! from the launcher's environment, `host/environ.rs`), and which jobs hang (every rank
//! alive, none making progress, from the targets' progress clocks). What is counted and
//! alerted on is the model's (`model/jobs.rs`); this stage only reads the host for it.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::{
    host::{environ, is_gone, procfs},
    model::jobs::{JobStall, JobsModel, RankSeen},
    targets::watch::{unix_ms, Watcher},
};

/// What was read of one watched process, once (a pid with another start time is read
/// again).
#[derive(Debug)]
struct Known {
    start: Option<u64>,
    ppid: u32,
    comm: String,
    identity: Option<environ::LaunchIdentity>,
    cgroup: Option<Arc<str>>,
}

/// The launch identities of the watched processes.
pub struct Launchers {
    proc_root: PathBuf,
    /// Only the targets' live processes: bounded by them.
    known: HashMap<u32, Known>,
    /// Environment reads refused (no CAP_SYS_PTRACE for another user's process).
    refused: u64,
}

impl Launchers {
    pub fn new(proc_root: PathBuf) -> Self {
        Self {
            proc_root,
            known: HashMap::new(),
            refused: 0,
        }
    }

    /// Reads the identity of each watched process not seen before and reports the new
    /// ranks; a process whose parent has the same job and rank (a data loader worker) is
    /// part of that rank, not one of its own. Ranks gone from the targets without an exit
    /// event end after a grace.
    pub fn observe(&mut self, watcher: &Watcher, jobs: &mut JobsModel, now: SystemTime) {
        let mut live = HashSet::new();
        let mut fresh = Vec::new();
        for (target, pid, start) in watcher.processes() {
            if !live.insert(pid) {
                continue;
            }
            if self.known.get(&pid).is_some_and(|k| k.start == start) {
                continue;
            }
            let known = self.read(pid, start);
            self.known.insert(pid, known);
            fresh.push((pid, target));
        }
        self.known.retain(|pid, _| live.contains(pid));
        for (pid, target) in fresh {
            let Some(k) = self.known.get(&pid) else {
                continue;
            };
            let (Some(id), Some(cgroup)) = (&k.identity, &k.cgroup) else {
                continue;
            };
            let parent = self.known.get(&k.ppid).and_then(|p| p.identity.as_ref());
            if parent.is_some_and(|p| p.job == id.job && p.rank == id.rank) {
                continue;
            }
            jobs.rank_seen(
                RankSeen {
                    job: Arc::from(id.job.as_str()),
                    rank: id.rank,
                    local_rank: id.local_rank,
                    world_size: id.world_size,
                    restart_count: id.restart_count,
                    pid,
                    comm: k.comm.clone(),
                    cgroup: cgroup.clone(),
                    target: Arc::from(target),
                },
                now,
            );
        }
        jobs.retain_live(&live, now);
    }

    fn read(&mut self, pid: u32, start: Option<u64>) -> Known {
        let stat = procfs::stat(&self.proc_root, pid).unwrap_or_default();
        let ppid = procfs::stat_field(&stat, 4)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let comm = stat
            .split_once('(')
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .map(|(c, _)| c.chars().take(16).collect())
            .unwrap_or_default();
        let identity = match environ::read_identity(&self.proc_root, pid) {
            Ok(id) => id,
            Err(e) => {
                if !is_gone(&e) {
                    if self.refused == 0 {
                        tracing::warn!(pid, error = %e, "cannot read a watched process's environment (training-job identity); reading another user's needs CAP_SYS_PTRACE");
                    }
                    self.refused += 1;
                }
                None
            }
        };
        let cgroup = match identity {
            Some(_) => procfs::cgroup_v2_path(&self.proc_root, pid)
                .ok()
                .flatten()
                .map(|p| match p.trim_start_matches('/') {
                    "" => Arc::from("/"),
                    rel => Arc::from(rel),
                }),
            None => None,
        };
        Known {
            start,
            ppid,
            comm,
            identity,
            cgroup,
        }
    }

    /// Environment reads refused so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

/// Judges every job: stalled when each of its ranks here is alive and none of their
/// cgroups completed a progress syscall for the `stall_for` of the targets holding them
/// (the longest, if they differ). A job with a rank outside every target with
/// `stall_for` is not judged.
pub fn judge_stalls(watcher: &Watcher, jobs: &mut JobsModel, now: SystemTime) {
    let now_ms = unix_ms(now);
    let mut stalled = BTreeMap::new();
    'jobs: for (id, job) in &jobs.jobs {
        if job.ranks.is_empty() || job.ranks.values().any(|r| !r.alive) {
            continue;
        }
        let mut last = 0;
        let mut stall_for = Duration::ZERO;
        for r in job.ranks.values() {
            let Some((since, limit)) = watcher.cgroup_progress(&r.cgroup) else {
                continue 'jobs;
            };
            last = last.max(since).max(unix_ms(r.seen_at));
            stall_for = stall_for.max(limit);
        }
        let quiet = Duration::from_millis(now_ms.saturating_sub(last));
        if quiet >= stall_for {
            let ranks = job
                .ranks
                .values()
                .map(|r| (r.rank, r.pid, r.cgroup.clone()))
                .collect();
            let mut targets = job.ranks.values().map(|r| &r.target);
            let first = targets.next().cloned();
            let target = first.filter(|t| targets.all(|o| o == t));
            stalled.insert(
                id.clone(),
                JobStall {
                    quiet,
                    stall_for,
                    ranks,
                    target,
                },
            );
        }
    }
    jobs.stalled = stalled;
}
