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
            match self.known.get(&pid) {
                Some(k) if k.start == start => continue,
                // Another process under a known pid: the one before ended unseen.
                Some(_) => jobs.pid_reused(pid, now),
                None => {}
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn process(root: &Path, pid: u32, ppid: u32, start: u64, env: &[&str]) {
        let dir = root.join(format!("proc/{pid}"));
        std::fs::create_dir_all(&dir).unwrap();
        let stat = format!(
            "{pid} (python3) S {ppid} 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 {start} 0"
        );
        std::fs::write(dir.join("stat"), stat).unwrap();
        std::fs::write(dir.join("cgroup"), "0::/job.scope\n").unwrap();
        let mut environ = env.join("\0");
        environ.push('\0');
        std::fs::write(dir.join("environ"), environ).unwrap();
    }

    #[test]
    fn ranks_are_read_once_per_process_helpers_join_their_rank_and_a_reused_pid_is_read_again() {
        let root = std::env::temp_dir().join(format!("gimbal-jobs-{}", std::process::id()));
        let cg = root.join("cg/job.scope");
        std::fs::create_dir_all(&cg).unwrap();
        let rank = |r: &str| ["TORCHELASTIC_RUN_ID=j".to_string(), format!("RANK={r}")];
        let (r0, r1) = (rank("0"), rank("1"));
        let r0: Vec<&str> = r0.iter().map(String::as_str).collect();
        let r1: Vec<&str> = r1.iter().map(String::as_str).collect();
        process(&root, 10, 1, 100, &r0);
        // A data loader worker: rank 0's child, with its environment.
        process(&root, 11, 10, 101, &r0);
        process(&root, 12, 1, 102, &r1);
        process(&root, 13, 1, 103, &["PATH=/bin"]);
        std::fs::write(cg.join("cgroup.procs"), "10\n11\n12\n13\n").unwrap();
        let config = crate::config::Config::parse(
            "[[targets]]\nname = \"trainer\"\ncgroup = \"job.scope\"\n",
            "test",
        )
        .unwrap();
        let mut w = Watcher::new(&config.targets, root.join("cg"), root.join("state"))
            .with_proc_root(root.join("proc"));
        let mut launchers = Launchers::new(root.join("proc"));
        let mut jobs = JobsModel::new(10);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        w.tick(t0, &BTreeMap::new());
        launchers.observe(&w, &mut jobs, t0);
        let ranks: Vec<(u32, u32, &str)> = jobs.jobs["j"]
            .ranks
            .values()
            .map(|r| (r.pid, r.rank, &*r.cgroup))
            .collect();
        assert_eq!(ranks, [(10, 0, "job.scope"), (12, 1, "job.scope")]);

        // Pid 12 is reused by another process (another start time) of rank 3; the old
        // one's exit event was lost: read again, and the old rank 1 ends after the grace.
        process(
            &root,
            12,
            1,
            999,
            &rank("3").iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let t1 = t0 + Duration::from_secs(1);
        w.tick(t1, &BTreeMap::new());
        launchers.observe(&w, &mut jobs, t1);
        assert_eq!(
            launchers.known[&12].identity.as_ref().map(|i| i.rank),
            Some(3)
        );
        let j = &jobs.jobs["j"];
        let alive: Vec<u32> = j
            .ranks
            .values()
            .filter(|r| r.alive)
            .map(|r| r.rank)
            .collect();
        assert_eq!(alive, [0, 3], "the reused pid's old rank ended");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
