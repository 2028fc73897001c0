//! Cgroup paths and globs confined to the cgroup mount: no `.`/`..`, no symlink followed,
//! no other filesystem entered, and only cgroups (directories with `cgroup.procs`)
//! yielded. Every cgroup path the agent reads membership from or acts on goes through here.
use std::{
    collections::BTreeSet,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use super::glob::{glob_match, segment_match};
use crate::host::{cgroupfs, is_gone};

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

/// The cgroups under `root` matching any of `patterns`, sorted, each once: what every
/// reader of a glob list (membership, the remediation rules) acts on. A pattern that
/// cannot be expanded is handed to `refused` with why, and the others still count.
pub fn expand_all(
    root: &Path,
    patterns: &[String],
    mut refused: impl FnMut(&str, PathError),
) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for p in patterns {
        match expand_checked(root, p) {
            Ok(found) => dirs.extend(found),
            Err(e) => refused(p, e),
        }
    }
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Logs a glob that matches nothing because of `e`, once per glob: membership is read
/// every tick.
pub(super) fn say_refused(pattern: &str, e: &PathError) {
    static SAID: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());
    let mut said = crate::sync::lock(&SAID);
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

#[cfg(test)]
mod tests {
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
        // A list of globs: their union, each cgroup once, and the refused one reported.
        let mut refused = Vec::new();
        let globs = ["a/*", "*", "**/b", "../x"].map(String::from);
        assert_eq!(
            expand_all(&root, &globs, |p, _| refused.push(p.to_string())),
            vec![root.join("a"), root.join("a/b")]
        );
        assert_eq!(refused, ["../x"]);

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
