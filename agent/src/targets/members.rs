//! Which processes belong to a target now: read from each matched cgroup's
//! `cgroup.procs` (one small file per cgroup, far cheaper than scanning /proc), or, for a
//! target selected by comm or exe, by scanning /proc. Zombies and the process whose exit
//! was just reported are left out.
use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::MetadataExt as _,
    path::Path,
};

use super::confine::{expand_all, say_refused, PathError};
use crate::host::{cgroupfs, is_gone, procfs};

/// The processes of one target right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    /// cgroup2 ids of the matched cgroups.
    pub cgroups: BTreeSet<u64>,
    /// Live (not zombie) processes in them.
    pub pids: BTreeSet<u32>,
    /// The start time (clock ticks after boot, stat field 22) of each live process whose
    /// stat was read: with the pid, it names a process across pid reuse.
    pub starts: BTreeMap<u32, u64>,
    /// Each matched cgroup (path relative to the root, the target's components) and
    /// whether it has a live process.
    pub components: BTreeMap<String, bool>,
    /// Set when a read failed for a reason other than the process or cgroup being gone
    /// (out of file descriptors, say): the membership is then unknown, not empty.
    pub unreadable: Option<String>,
}

impl Members {
    fn failed(&mut self, path: &Path, e: &std::io::Error) {
        if self.unreadable.is_none() {
            self.unreadable = Some(format!("{}: {e}", path.display()));
        }
    }
}

/// Reads the members of the cgroups matching `pattern` under `cgroup_root`, leaving out
/// `exiting` (a process whose exit the kernel just reported) and zombies.
pub fn members(
    cgroup_root: &Path,
    proc_root: &Path,
    patterns: &[String],
    exiting: Option<u32>,
) -> Members {
    members_where(cgroup_root, proc_root, patterns, exiting, &|_| true)
}

/// [`members`] of the matched cgroups whose path (relative to the root) `keep` accepts.
pub fn members_where(
    cgroup_root: &Path,
    proc_root: &Path,
    patterns: &[String],
    exiting: Option<u32>,
    keep: &dyn Fn(&str) -> bool,
) -> Members {
    let mut m = Members::default();
    let dirs = expand_all(cgroup_root, patterns, |p, e| match e {
        PathError::Unreadable { path, error } => m.failed(&path, &std::io::Error::other(error)),
        e => say_refused(p, &e),
    });
    for dir in dirs {
        let relative = dir.strip_prefix(cgroup_root).unwrap_or(&dir);
        if !keep(&relative.to_string_lossy()) {
            continue;
        }
        let meta = match std::fs::metadata(&dir) {
            Ok(meta) => meta,
            Err(e) if is_gone(&e) => continue,
            Err(e) => {
                m.failed(&dir, &e);
                continue;
            }
        };
        m.cgroups.insert(meta.ino());
        let procs = match cgroupfs::procs(&dir) {
            Ok(procs) => procs,
            Err(e) if is_gone(&e) => continue,
            Err(e) => {
                m.failed(&dir.join(cgroupfs::PROCS), &e);
                continue;
            }
        };
        let mut live = false;
        for pid in procs {
            if Some(pid) != exiting && !is_zombie(proc_root, pid, &mut m) {
                m.pids.insert(pid);
                live = true;
            }
        }
        let name = dir.strip_prefix(cgroup_root).unwrap_or(&dir);
        m.components
            .insert(name.to_string_lossy().into_owned(), live);
    }
    m
}

/// A process selector: its comm (`/proc/<pid>/comm`, at most 15 bytes) and/or executable
/// (`/proc/<pid>/exe`); both must hold when both are given.
pub struct ProcessMatch<'a> {
    pub comm: Option<&'a str>,
    pub exe: Option<&'a str>,
}

/// The live processes matching `wanted`, found by scanning /proc; their cgroups are the
/// target's components. Costs one or two small reads per process per call, so it is meant
/// for the tick, not for hot paths.
pub fn process_members(
    cgroup_root: &Path,
    proc_root: &Path,
    wanted: &ProcessMatch<'_>,
    exiting: Option<u32>,
) -> Members {
    let mut m = Members::default();
    let entries = match std::fs::read_dir(proc_root) {
        Ok(entries) => entries,
        Err(e) => {
            m.failed(proc_root, &e);
            return m;
        }
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if Some(pid) == exiting {
            continue;
        }
        let dir = e.path();
        if let Some(comm) = wanted.comm {
            match std::fs::read_to_string(dir.join("comm")) {
                Ok(c) if c.trim_end() == comm => {}
                Ok(_) => continue,
                Err(e) => {
                    if !is_gone(&e) {
                        m.failed(&dir.join("comm"), &e);
                    }
                    continue;
                }
            }
        }
        if let Some(exe) = wanted.exe {
            match std::fs::read_link(dir.join("exe")) {
                Ok(p) if p == Path::new(exe) => {}
                // Kernel threads have no exe (ENOENT), other users' processes may be
                // unreadable without privilege: neither is the process wanted.
                _ => continue,
            }
        }
        if is_zombie(proc_root, pid, &mut m) {
            continue;
        }
        m.pids.insert(pid);
        // Its cgroup2 path names its cgroup.
        let cgroup = match procfs::cgroup_v2_path(proc_root, pid) {
            Ok(c) => c,
            Err(e) => {
                if !is_gone(&e) {
                    m.failed(&dir.join("cgroup"), &e);
                }
                None
            }
        };
        if let Some(path) = cgroup {
            let rel = path.trim_start_matches('/');
            if let Ok(meta) = std::fs::metadata(cgroup_root.join(rel)) {
                m.cgroups.insert(meta.ino());
            }
            m.components.insert(
                if rel.is_empty() {
                    "/".into()
                } else {
                    rel.to_string()
                },
                true,
            );
        }
    }
    m
}

/// A process that has exited but not been reaped still shows in cgroup.procs. One whose
/// stat cannot be read for another reason than being gone is taken as live and the
/// membership marked unreadable.
fn is_zombie(proc_root: &Path, pid: u32, m: &mut Members) -> bool {
    match procfs::stat(proc_root, pid) {
        Ok(stat) => {
            let zombie = procfs::stat_field(&stat, 3)
                .is_some_and(|state| matches!(state.as_bytes().first(), Some(b'Z' | b'X')));
            if let Some(start) = procfs::stat_field(&stat, 22).and_then(|s| s.parse().ok()) {
                if !zombie {
                    m.starts.insert(pid, start);
                }
            }
            zombie
        }
        Err(e) if is_gone(&e) => true,
        Err(e) => {
            m.failed(&procfs::path(proc_root, pid, "stat"), &e);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_fails_for_another_reason_than_gone_marks_the_membership_unreadable() {
        let root = std::env::temp_dir().join(format!("gimbal-unreadable-{}", std::process::id()));
        let (cg, proc_root) = (root.join("cg"), root.join("proc"));
        std::fs::create_dir_all(cg.join("b.service")).unwrap();
        std::fs::write(cg.join("b.service/cgroup.procs"), "20\n21\n").unwrap();
        // A directory where a file should be: reading it fails with EISDIR, as a read fails
        // with EMFILE when descriptors run out.
        std::fs::create_dir_all(proc_root.join("20/stat")).unwrap();
        // Pid 20's stat is unreadable: live, but the answer is uncertain. Pid 21 is gone.
        let m = members(&cg, &proc_root, &["b.service".into()], None);
        assert_eq!(m.pids, BTreeSet::from([20]));
        assert!(
            m.unreadable
                .as_deref()
                .is_some_and(|e| e.contains("20/stat")),
            "{m:?}"
        );
        // Gone is not unreadable.
        let m = members(&cg, &proc_root, &["c.service".into()], None);
        assert_eq!(m.unreadable, None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn members_come_from_matching_cgroup_procs_without_zombies_or_the_exiting() {
        let root = std::env::temp_dir().join(format!("gimbal-targets-{}", std::process::id()));
        let (cg, proc_root) = (root.join("cg"), root.join("proc"));
        for (dir, procs) in [
            ("cg/app.slice/a.service", "10\n11\n"),
            ("cg/app.slice/b.service", "12\n"),
            ("cg/other/c.service", "13\n"),
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
            std::fs::write(root.join(dir).join("cgroup.procs"), procs).unwrap();
        }
        for (pid, state) in [(10, "S"), (11, "Z"), (12, "R"), (13, "S")] {
            std::fs::create_dir_all(proc_root.join(pid.to_string())).unwrap();
            std::fs::write(
                proc_root.join(pid.to_string()).join("stat"),
                format!("{pid} (my (odd) name) {state} 1 2 3"),
            )
            .unwrap();
        }
        let m = members(&cg, &proc_root, &["app.slice/*.service".into()], None);
        assert_eq!(m.pids, BTreeSet::from([10, 12]));
        assert_eq!(m.cgroups.len(), 2);
        assert_eq!(
            m.components,
            BTreeMap::from([
                ("app.slice/a.service".into(), true),
                ("app.slice/b.service".into(), true)
            ])
        );
        assert_eq!(
            members(&cg, &proc_root, &["app.slice/*.service".into()], Some(12)).pids,
            BTreeSet::from([10])
        );
        assert!(members(&cg, &proc_root, &["nothing/*".into()], None)
            .pids
            .is_empty());
        for (pid, comm, cgroup) in [
            (10, "trainer", "app.slice/a.service"),
            (12, "other", "app.slice/b.service"),
        ] {
            let d = proc_root.join(pid.to_string());
            std::fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
            std::fs::write(d.join("cgroup"), format!("0::/{cgroup}\n")).unwrap();
        }
        let wanted = ProcessMatch {
            comm: Some("trainer"),
            exe: None,
        };
        let by_comm = process_members(&cg, &proc_root, &wanted, None);
        assert_eq!(by_comm.pids, BTreeSet::from([10]));
        assert_eq!(
            by_comm.components.keys().collect::<Vec<_>>(),
            vec!["app.slice/a.service"]
        );
        assert!(process_members(&cg, &proc_root, &wanted, Some(10))
            .pids
            .is_empty());
        let deep = members(&cg, &proc_root, &["**/c.service".into()], None);
        assert_eq!(deep.pids, BTreeSet::from([13]), "** finds it at any depth");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
