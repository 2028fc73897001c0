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

use crate::host::{cgroupfs, is_gone, procfs};

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

/// Reads the members of the cgroups matching `pattern` under `cgroup_root`, leaving out
/// `exiting` (a process whose exit the kernel just reported) and zombies.
pub fn members(
    cgroup_root: &Path,
    proc_root: &Path,
    patterns: &[String],
    exiting: Option<u32>,
) -> Members {
    let mut m = Members::default();
    let mut dirs = Vec::new();
    for p in patterns {
        match expand_checked(cgroup_root, p) {
            Ok(found) => dirs.extend(found),
            Err(PathError::Unreadable { path, error }) => {
                m.failed(&path, &std::io::Error::other(error));
            }
            Err(e) => say_refused(p, &e),
        }
    }
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

/// Why a cgroup path or glob was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("cgroup path {path:?}: a {segment:?} segment is not allowed (paths are relative to the cgroup mount and never resolved upward)")]
    Traversal { path: String, segment: String },
    #[error("cgroup path {path:?} is not under the cgroup mount {root}")]
    Outside { path: String, root: PathBuf },
    #[error("{}: {why}", path.display())]
    NotCgroup { path: PathBuf, why: &'static str },
    /// A directory that could not be listed for another reason than being gone: what it
    /// holds is unknown, not empty.
    #[error("cannot list {}: {error}", path.display())]
    Unreadable { path: PathBuf, error: String },
}

/// The segments of a path relative to a cgroup mount, with `.` and `..` refused: a
/// guard must see the cgroup an action lands on, so nothing is resolved.
pub fn segments(relative: &str) -> Result<Vec<&str>, PathError> {
    let segs: Vec<&str> = relative.split('/').filter(|s| !s.is_empty()).collect();
    match segs.iter().find(|s| **s == "." || **s == "..") {
        Some(seg) => Err(PathError::Traversal {
            path: relative.to_string(),
            segment: seg.to_string(),
        }),
        None => Ok(segs),
    }
}

/// Normalises `relative` and confines it to the cgroup mount `root`: no `.`/`..`
/// segments, no symlink on the way, every step a directory on the mount's filesystem,
/// and the result a cgroup (it has `cgroup.procs`). The one check every cgroup path the
/// agent acts on or reads membership from goes through. `root` itself is the agent's own
/// (a mount it found) and may be a link (`cpu` -> `cpu,cpuacct` on v1 hosts).
pub fn confine(root: &Path, relative: &str) -> Result<PathBuf, PathError> {
    let segs = segments(relative)?;
    let dev = std::fs::metadata(root)
        .map_err(|_| PathError::NotCgroup {
            path: root.to_path_buf(),
            why: "the cgroup mount is not readable",
        })?
        .dev();
    let mut path = root.to_path_buf();
    for seg in segs {
        path.push(seg);
        if !is_dir_on(&path, dev) {
            return Err(PathError::NotCgroup {
                path,
                why: "not a directory of the cgroup mount (missing, a link, or another filesystem)",
            });
        }
    }
    if !is_cgroup(&path, dev) {
        return Err(PathError::NotCgroup {
            path,
            why: "not a cgroup (no cgroup.procs)",
        });
    }
    Ok(path)
}

/// `path` relative to the mount `root`, for an absolute path that must lie under it
/// (the limit journal's, say), confined as [`confine`] does.
pub fn confine_absolute(root: &Path, path: &Path) -> Result<PathBuf, PathError> {
    let outside = || PathError::Outside {
        path: path.display().to_string(),
        root: root.to_path_buf(),
    };
    let rel = path.strip_prefix(root).map_err(|_| outside())?;
    let rel = rel.to_str().ok_or_else(outside)?;
    let confined = confine(root, rel)?;
    // A literal "x/../y" would have been refused; this only catches a root that is not
    // itself normal ("/sys/fs/cgroup/../x").
    match confined == path {
        true => Ok(confined),
        false => Err(outside()),
    }
}

/// A directory, not a link, on the device `dev`.
fn is_dir_on(path: &Path, dev: u64) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir() && m.dev() == dev)
}

/// A cgroup directory: on the mount's filesystem, with a regular `cgroup.procs`.
fn is_cgroup(path: &Path, dev: u64) -> bool {
    is_dir_on(path, dev)
        && std::fs::symlink_metadata(path.join(cgroupfs::PROCS)).is_ok_and(|m| m.is_file())
}

/// Cgroups under `root` matching the glob, segment by segment (no symlinks followed, no
/// `.`/`..` accepted, only cgroup directories of the mount yielded). A refused glob is
/// logged and matches nothing; [`expand_checked`] says why to callers that report it.
pub fn expand(root: &Path, pattern: &str) -> Vec<PathBuf> {
    expand_checked(root, pattern).unwrap_or_else(|e| {
        say_refused(pattern, &e);
        Vec::new()
    })
}

/// Logs a glob that matches nothing because of `e`, once per glob: membership is read
/// every tick.
fn say_refused(pattern: &str, e: &PathError) {
    static SAID: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());
    let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
    if said.insert(pattern.to_string()) {
        tracing::warn!(error = ?e.to_string(), "cgroup glob refused; it matches nothing");
    }
}

/// `read_dir`, with a directory that vanished meanwhile as empty and any other failure
/// an error: unknown is not empty.
fn list(dir: &Path) -> Result<Vec<std::fs::DirEntry>, PathError> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(entries.flatten().collect()),
        Err(e) if is_gone(&e) => Ok(Vec::new()),
        Err(e) => Err(PathError::Unreadable {
            path: dir.to_path_buf(),
            error: e.to_string(),
        }),
    }
}

/// [`expand`], with a traversal in the glob an error.
pub fn expand_checked(root: &Path, pattern: &str) -> Result<Vec<PathBuf>, PathError> {
    let segs = segments(pattern)?;
    let Ok(dev) = std::fs::metadata(root).map(|m| m.dev()) else {
        return Ok(Vec::new());
    };
    if segs.contains(&"**") {
        return Ok(walk(root)?
            .into_iter()
            .filter(|d| {
                d.strip_prefix(root)
                    .is_ok_and(|rel| glob_match(pattern, &rel.to_string_lossy()))
                    && is_cgroup(d, dev)
            })
            .collect());
    }
    let mut level = vec![root.to_path_buf()];
    for seg in segs {
        let mut next = Vec::new();
        for dir in &level {
            if !seg.contains(['*', '?']) {
                let p = dir.join(seg);
                if is_dir_on(&p, dev) {
                    next.push(p);
                }
                continue;
            }
            for e in list(dir)? {
                let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                if is_dir && segment_match(seg.as_bytes(), e.file_name().as_encoded_bytes()) {
                    next.push(e.path());
                }
            }
        }
        level = next;
    }
    level.retain(|d| is_cgroup(d, dev));
    level.sort();
    Ok(level)
}

#[cfg(test)]
mod confine_tests {
    use super::*;

    #[test]
    fn traversal_links_plain_dirs_and_paths_outside_are_refused() {
        let root = std::env::temp_dir().join(format!("gimbal-confine-{}", std::process::id()));
        for d in ["", "a", "a/b"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
            std::fs::write(root.join(d).join("cgroup.procs"), "").unwrap();
        }
        std::fs::create_dir_all(root.join("plain")).unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("link")).unwrap();

        assert_eq!(confine(&root, "a").unwrap(), root.join("a"));
        assert_eq!(confine(&root, "/a//b/").unwrap(), root.join("a/b"));
        assert_eq!(confine(&root, "/").unwrap(), root);
        for bad in ["x/..", "a/../a", "..", "a/./b", "../../etc"] {
            assert!(
                matches!(confine(&root, bad), Err(PathError::Traversal { .. })),
                "{bad}"
            );
            assert!(expand_checked(&root, bad).is_err(), "{bad}");
            assert!(expand(&root, bad).is_empty(), "{bad}");
        }
        for bad in ["link", "link/b", "plain", "missing"] {
            assert!(
                matches!(confine(&root, bad), Err(PathError::NotCgroup { .. })),
                "{bad}"
            );
        }
        // Only cgroups are yielded: not the plain directory, not the link.
        assert_eq!(expand(&root, "*"), vec![root.join("a")]);
        assert_eq!(expand(&root, "**/b"), vec![root.join("a/b")]);
        assert!(expand(&root, "plain").is_empty());

        assert_eq!(
            confine_absolute(&root, &root.join("a/b")).unwrap(),
            root.join("a/b")
        );
        assert!(matches!(
            confine_absolute(&root, Path::new("/etc")),
            Err(PathError::Outside { .. })
        ));
        assert!(confine_absolute(&root, &root.join("a/../a")).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
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

/// Every directory below `root` on its filesystem, without following symlinks;
/// directories that vanish meanwhile are skipped.
fn walk(root: &Path) -> Result<Vec<PathBuf>, PathError> {
    let Ok(dev) = std::fs::metadata(root).map(|m| m.dev()) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in list(&dir)? {
            // file_type() does not follow links; other filesystems are not entered.
            let same_fs = e.metadata().is_ok_and(|m| m.dev() == dev);
            if e.file_type().is_ok_and(|t| t.is_dir()) && same_fs {
                stack.push(e.path());
                out.push(e.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A process that has exited but not been reaped still shows in cgroup.procs. One whose
/// stat cannot be read for another reason than being gone is taken as live and the
/// membership marked unreadable.
fn is_zombie(proc_root: &Path, pid: u32, m: &mut Members) -> bool {
    match procfs::stat(proc_root, pid) {
        Ok(stat) => procfs::stat_field(&stat, 3)
            .is_some_and(|state| matches!(state.as_bytes().first(), Some(b'Z' | b'X'))),
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
