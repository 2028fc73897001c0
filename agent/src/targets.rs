//! Watched services ("targets"): which processes belong to each, and whether it is up.
//!
//! A target is selected by globs over cgroup2 paths (relative to the mount, like the
//! `cgroup` label): `system.slice/trainer.service`, `kubepods.slice/*/*`, `**/ssh.service`.
//! `*` matches within one path segment, `**` any number of segments. Systemd units and
//! Kubernetes pods and containers are selected through the paths their managers give their
//! cgroups (config/mod.rs turns them into globs). Membership is read from each matched
//! cgroup's `cgroup.procs`: one small file per cgroup, far cheaper than scanning /proc.
use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// Whether `path` (segments separated by '/') matches `pattern` segment by segment.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let p: Vec<_> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let s: Vec<_> = path.split('/').filter(|s| !s.is_empty()).collect();
    segments_match(&p, &s)
}

fn segments_match(p: &[&str], s: &[&str]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(&"**") => segments_match(&p[1..], s) || (!s.is_empty() && segments_match(p, &s[1..])),
        Some(first) => {
            !s.is_empty()
                && segment_match(first.as_bytes(), s[0].as_bytes())
                && segments_match(&p[1..], &s[1..])
        }
    }
}

/// `*` matches any run of characters, `?` one character; everything else itself.
fn segment_match(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            segment_match(&p[1..], s) || (!s.is_empty() && segment_match(p, &s[1..]))
        }
        (Some(b'?'), Some(_)) => segment_match(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => segment_match(&p[1..], &s[1..]),
        _ => false,
    }
}

/// The processes of one target right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    /// cgroup2 ids of the matched cgroups.
    pub cgroups: BTreeSet<u64>,
    /// Live (not zombie) processes in them.
    pub pids: BTreeSet<u32>,
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

/// Whether a failed read means the thing is gone (a process or cgroup that ended between
/// listing and reading it) rather than that it could not be read.
fn is_gone(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
        || matches!(e.raw_os_error(), Some(libc::ESRCH | libc::ENODEV))
}

/// Reads the members of the cgroups matching `pattern` under `cgroup_root`, leaving out
/// `exiting` (a process whose exit the kernel just reported) and zombies.
pub fn members(
    cgroup_root: &Path,
    proc_root: &Path,
    patterns: &[String],
    exiting: Option<u32>,
) -> Members {
    let mut m = Members::default();
    let mut dirs: Vec<PathBuf> = patterns
        .iter()
        .flat_map(|p| expand(cgroup_root, p))
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        let meta = match std::fs::metadata(&dir) {
            Ok(meta) => meta,
            Err(e) if is_gone(&e) => continue,
            Err(e) => {
                m.failed(&dir, &e);
                continue;
            }
        };
        m.cgroups.insert(meta.ino());
        let procs_file = dir.join("cgroup.procs");
        let procs = match std::fs::read_to_string(&procs_file) {
            Ok(procs) => procs,
            Err(e) if is_gone(&e) => continue,
            Err(e) => {
                m.failed(&procs_file, &e);
                continue;
            }
        };
        let mut live = false;
        for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
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

/// Directories under `root` matching the glob, segment by segment (no symlinks followed).
pub fn expand(root: &Path, pattern: &str) -> Vec<PathBuf> {
    if pattern.split('/').any(|s| s == "**") {
        return walk(root)
            .into_iter()
            .filter(|d| {
                d.strip_prefix(root)
                    .is_ok_and(|rel| glob_match(pattern, &rel.to_string_lossy()))
            })
            .collect();
    }
    let mut level = vec![root.to_path_buf()];
    for seg in pattern.split('/').filter(|s| !s.is_empty()) {
        let mut next = Vec::new();
        for dir in &level {
            if !seg.contains(['*', '?']) {
                let p = dir.join(seg);
                if p.is_dir() {
                    next.push(p);
                }
                continue;
            }
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                if is_dir && segment_match(seg.as_bytes(), e.file_name().as_encoded_bytes()) {
                    next.push(e.path());
                }
            }
        }
        level = next;
    }
    level.sort();
    level
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
        // The cgroup2 line ("0::/path") names its cgroup.
        let cgroups = match std::fs::read_to_string(dir.join("cgroup")) {
            Ok(c) => c,
            Err(e) => {
                if !is_gone(&e) {
                    m.failed(&dir.join("cgroup"), &e);
                }
                String::new()
            }
        };
        if let Some(path) = cgroups.lines().find_map(|l| l.strip_prefix("0::")) {
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

/// Every directory below `root`, without following symlinks or entering other mounts'
/// contents twice; directories that vanish meanwhile are skipped.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// A process that has exited but not been reaped still shows in cgroup.procs. One whose
/// stat cannot be read for another reason than being gone is taken as live and the
/// membership marked unreadable.
fn is_zombie(proc_root: &Path, pid: u32, m: &mut Members) -> bool {
    let stat = proc_root.join(pid.to_string()).join("stat");
    match std::fs::read_to_string(&stat) {
        Ok(stat) => crate::procstat::field(&stat, 3)
            .is_some_and(|state| matches!(state.as_bytes().first(), Some(b'Z' | b'X'))),
        Err(e) if is_gone(&e) => true,
        Err(e) => {
            m.failed(&stat, &e);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_segments() {
        assert!(glob_match(
            "system.slice/trainer.service",
            "system.slice/trainer.service"
        ));
        assert!(glob_match(
            "system.slice/*.service",
            "system.slice/ssh.service"
        ));
        assert!(glob_match(
            "kubepods.slice/*/*",
            "kubepods.slice/pod1/cri-abc"
        ));
        assert!(
            !glob_match("kubepods.slice/*", "kubepods.slice/pod1/cri-abc"),
            "* stays in its segment"
        );
        assert!(glob_match("a/b?d", "a/bcd"));
        assert!(!glob_match(
            "system.slice/*.service",
            "system.slice/ssh.socket"
        ));
        assert!(glob_match("*", "x"));
        assert!(glob_match("**/ssh.service", "system.slice/ssh.service"));
        assert!(glob_match("**/ssh.service", "ssh.service"));
        assert!(glob_match(
            "kubepods.slice/**/*pod1234*",
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice"
        ));
        assert!(!glob_match(
            "**/ssh.service",
            "system.slice/ssh.service/child"
        ));
    }

    #[test]
    fn a_read_that_fails_for_another_reason_than_gone_marks_the_membership_unreadable() {
        let root = std::env::temp_dir().join(format!("gimbal-unreadable-{}", std::process::id()));
        let (cg, proc_root) = (root.join("cg"), root.join("proc"));
        // A directory where a file should be: reading it fails with EISDIR, as a read fails
        // with EMFILE when descriptors run out.
        std::fs::create_dir_all(cg.join("a.service/cgroup.procs")).unwrap();
        std::fs::create_dir_all(cg.join("b.service")).unwrap();
        std::fs::write(cg.join("b.service/cgroup.procs"), "20\n21\n").unwrap();
        std::fs::create_dir_all(proc_root.join("20/stat")).unwrap();
        let m = members(&cg, &proc_root, &["a.service".into()], None);
        assert!(m.pids.is_empty());
        assert!(
            m.unreadable
                .as_deref()
                .is_some_and(|e| e.contains("cgroup.procs")),
            "{m:?}"
        );
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
