//! The cgroup mounts: where cgroup2 is mounted, a cgroup's processes (`cgroup.procs`),
//! and the cgroup ids reported by the kernel side turned into the cgroup paths a user
//! would type ("system.slice/ssh.service", "/" for the root cgroup).
//!
//! On cgroup2, `bpf_get_current_cgroup_id()` is the inode number of the
//! cgroup's directory in the cgroup2 mount, so resolving an id means walking
//! that mount and recording each directory's inode. The kernel hands out
//! these ids from a 64-bit counter and never reuses them, so a cached name
//! can go stale only by its cgroup disappearing, never by pointing at a
//! different cgroup.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::mountinfo::HOST as MOUNTINFO;

/// How long [`CgroupNames::from_host`] waits between walks of the tree. New
/// cgroups show up within this time; unknown ids arriving faster than this
/// cost a hash lookup each, not a walk.
pub const DEFAULT_MIN_RESCAN: Duration = Duration::from_secs(5);

/// A walk stops recording after this many cgroups, so a runaway host cannot
/// grow the cache without limit. 10,000 cgroups take about 1 MB; this cap is
/// far above what real hosts run.
const MAX_CGROUPS: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no cgroup2 filesystem is mounted: {} has no mount of type \"cgroup2\"", path.display())]
    NoCgroup2Mount { path: PathBuf },
    #[error("cgroup path {path:?} must name a directory below the cgroup2 root, without \".\" or \"..\"")]
    InvalidPath { path: String },
    #[error("{} is not a directory, so it is not a cgroup", path.display())]
    NotACgroup { path: PathBuf },
}

/// The file listing a cgroup's processes; a directory of the mount without it is no cgroup.
pub const PROCS: &str = "cgroup.procs";

/// The processes of the cgroup at `dir` (its `cgroup.procs`), in the kernel's order.
pub fn procs(dir: &Path) -> io::Result<Vec<u32>> {
    let text = fs::read_to_string(dir.join(PROCS))?;
    Ok(text
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .collect())
}

/// Finds the cgroup2 mount point in the text of /proc/self/mountinfo. A mount of the whole
/// hierarchy (root "/") is preferred over a bind mount of a subtree, whose paths would not
/// start at the root cgroup.
pub fn find_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    let mut subtree = None;
    for mount in super::mountinfo::mounts(mountinfo).filter(|m| m.fstype == "cgroup2") {
        if mount.root == "/" {
            return Some(mount.mount_point);
        }
        subtree.get_or_insert(mount.mount_point);
    }
    subtree
}

/// Resolves cgroup ids to paths relative to the cgroup2 mount, walking the
/// tree on a cache miss at most once per `min_rescan`. Clones share the cache: the exit
/// reader then names a cgroup that the map reader saw alive even when the cgroup is gone
/// by the time its last process's exit event is read.
#[derive(Debug, Clone)]
pub struct CgroupNames {
    root: PathBuf,
    min_rescan: Duration,
    /// Exactly what the last walk found: each walk replaces it, so removed
    /// cgroups drop out and the size follows the host, not the history.
    names: Arc<std::sync::Mutex<HashMap<u64, Arc<str>>>>,
    last_walk: Option<Instant>,
}

/// The path of cgroup `id` relative to `root`, from the kernel: on cgroup2 the id is also a
/// kernfs file handle, so open_by_handle_at opens the directory and /proc/self/fd names it.
/// Needs CAP_DAC_READ_SEARCH; None without it, for a removed cgroup, or off cgroup2.
fn by_handle(root: &Path, id: u64) -> Option<String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    /// struct file_handle with the 8 bytes a kernfs handle (FILEID_KERNFS) carries.
    #[repr(C)]
    struct KernfsHandle {
        handle_bytes: u32,
        handle_type: i32,
        f_handle: [u8; 8],
    }
    const FILEID_KERNFS: i32 = 0xfe;
    let mount = std::fs::File::open(root).ok()?;
    let mut handle = KernfsHandle {
        handle_bytes: 8,
        handle_type: FILEID_KERNFS,
        f_handle: id.to_ne_bytes(),
    };
    // SAFETY: a valid directory fd, a handle struct of the size it declares, plain flags.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            (&mut handle as *mut KernfsHandle).cast(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd was just returned to us and is owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    let rel = path.strip_prefix(root).ok()?.to_string_lossy().into_owned();
    Some(if rel.is_empty() { "/".to_string() } else { rel })
}

impl CgroupNames {
    /// Resolves ids below `root`, walking it at most once per `min_rescan`.
    /// Nothing is read until the first [`resolve`](Self::resolve).
    pub fn new(root: PathBuf, min_rescan: Duration) -> Self {
        Self {
            root,
            min_rescan,
            names: Default::default(),
            last_walk: None,
        }
    }

    /// Resolves ids below this host's cgroup2 mount, as found in
    /// /proc/self/mountinfo, rescanning at most every [`DEFAULT_MIN_RESCAN`].
    pub fn from_host() -> Result<Self, CgroupError> {
        let mountinfo = fs::read_to_string(MOUNTINFO).map_err(|source| CgroupError::Read {
            path: MOUNTINFO.into(),
            source,
        })?;
        let root = find_cgroup2_mount(&mountinfo).ok_or_else(|| CgroupError::NoCgroup2Mount {
            path: MOUNTINFO.into(),
        })?;
        Ok(Self::new(root, DEFAULT_MIN_RESCAN))
    }

    /// The cgroup2 mount point that paths are relative to.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of cgroup `id` relative to the root ("a/b", or "/" for the
    /// root itself), or `None` if no walk has found it.
    pub fn resolve(&mut self, id: u64) -> Option<Arc<str>> {
        // Plain inserts and lookups: a panic elsewhere cannot leave it inconsistent.
        let mut names = crate::sync::lock(&self.names);
        if let Some(name) = names.get(&id) {
            return Some(Arc::clone(name));
        }
        // A new cgroup: ask the kernel for this one id (O(1)) before walking.
        if let Some(name) = by_handle(&self.root, id) {
            let name: Arc<str> = Arc::from(name);
            if names.len() < MAX_CGROUPS {
                names.insert(id, Arc::clone(&name));
            }
            return Some(name);
        }
        // Rate-limit walks so a storm of unknown ids (short-lived cgroups,
        // or garbage) cannot keep the agent walking the tree.
        let due = self
            .last_walk
            .is_none_or(|last| last.elapsed() >= self.min_rescan);
        if !due {
            return None;
        }
        *names = walk(&self.root);
        self.last_walk = Some(Instant::now());
        names.get(&id).cloned()
    }

    /// The id (directory inode) of the cgroup at `relative` below the root;
    /// "/" or "" is the root itself. For tests and config, so it checks the
    /// path now rather than consulting the cache.
    pub fn id_of(&self, relative: &str) -> Result<u64, CgroupError> {
        let trimmed = relative.trim_matches('/');
        // Only plain names, so the path stays inside the mount and names the
        // cgroup the way resolve() would print it. Checked on the string
        // because Path::components silently drops inner "." segments.
        if trimmed
            .split('/')
            .any(|segment| segment == "." || segment == "..")
        {
            return Err(CgroupError::InvalidPath {
                path: relative.to_owned(),
            });
        }
        let path = self.root.join(trimmed);
        let meta = fs::symlink_metadata(&path).map_err(|source| CgroupError::Read {
            path: path.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(CgroupError::NotACgroup { path });
        }
        Ok(meta.ino())
    }
}

/// Maps the inode of every directory below `root` (and `root` itself, as
/// "/") to its path relative to `root`.
///
/// Cgroups come and go while we walk, so a directory that vanishes or cannot
/// be read is skipped, never an error. Symlinks are not followed and other
/// filesystems mounted below `root` are not entered: inode numbers identify
/// directories only within one filesystem.
fn walk(root: &Path) -> HashMap<u64, Arc<str>> {
    let started = Instant::now();
    let mut names = HashMap::new();
    let root_dev = match fs::symlink_metadata(root) {
        Ok(meta) if meta.is_dir() => {
            names.insert(meta.ino(), Arc::from("/"));
            meta.dev()
        }
        Ok(_) => {
            tracing::warn!(root = %root.display(), "cgroup root is not a directory");
            return names;
        }
        Err(err) => {
            tracing::warn!(root = %root.display(), %err, "cannot read cgroup root");
            return names;
        }
    };

    // An explicit stack instead of recursion, so a deep tree cannot overflow
    // the thread's stack.
    let mut pending = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, relative)) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) => {
                if err.kind() != io::ErrorKind::NotFound {
                    tracing::debug!(dir = %dir.display(), %err, "skipping unreadable cgroup");
                }
                continue;
            }
        };
        for entry in entries.flatten() {
            // DirEntry::file_type and ::metadata do not follow symlinks.
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.dev() != root_dev {
                continue;
            }
            if names.len() >= MAX_CGROUPS {
                tracing::warn!(
                    root = %root.display(),
                    max = MAX_CGROUPS,
                    "too many cgroups; names of the rest stay unresolved"
                );
                return names;
            }
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let child = if relative.is_empty() {
                name.into_owned()
            } else {
                format!("{relative}/{name}")
            };
            names.insert(meta.ino(), Arc::from(child.as_str()));
            pending.push((entry.path(), child));
        }
    }
    tracing::debug!(
        root = %root.display(),
        cgroups = names.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "walked cgroup tree"
    );
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::SystemTime;

    /// A uniquely named path, so parallel tests and concurrent runs never
    /// share a directory.
    fn unique_name(prefix: &str) -> String {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{}-{nanos}-{n}", std::process::id())
    }

    /// A fake cgroup tree in the temp dir, removed on drop even if the test
    /// fails.
    struct TempTree(PathBuf);

    impl TempTree {
        fn new() -> Self {
            let root = std::env::temp_dir().join(unique_name("gimbal-cgroups-test"));
            fs::create_dir(&root).unwrap();
            TempTree(root)
        }

        fn mkdir(&self, relative: &str) {
            fs::create_dir_all(self.0.join(relative)).unwrap();
        }

        fn ino(&self, relative: &str) -> u64 {
            fs::symlink_metadata(self.0.join(relative)).unwrap().ino()
        }
    }

    impl Drop for TempTree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const PURE_V2: &str = "\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
25 30 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn finds_hybrid_and_pure_cgroup2_mounts() {
        assert_eq!(
            find_cgroup2_mount(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            find_cgroup2_mount(PURE_V2),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
    }

    #[test]
    fn no_cgroup2_mount_or_garbage_gives_none() {
        let v1_only = HYBRID.lines().take(3).collect::<Vec<_>>().join("\n");
        assert_eq!(find_cgroup2_mount(&v1_only), None);
        assert_eq!(find_cgroup2_mount(""), None);
        assert_eq!(
            find_cgroup2_mount("garbage\n - cgroup2\n1 2 - cgroup2 x"),
            None
        );
    }

    #[test]
    fn mount_point_escapes_are_undone() {
        let info = "41 31 0:38 / /mnt/my\\040cgroup\\134x rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            find_cgroup2_mount(info),
            Some(PathBuf::from("/mnt/my cgroup\\x"))
        );
    }

    #[test]
    fn whole_hierarchy_preferred_over_subtree_bind_mount() {
        let info = "\
50 1 0:38 /docker/abc /mnt/sub rw - cgroup2 cgroup2 rw
51 1 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            find_cgroup2_mount(info),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let only_subtree = info.lines().next().unwrap();
        assert_eq!(
            find_cgroup2_mount(only_subtree),
            Some(PathBuf::from("/mnt/sub"))
        );
    }

    #[test]
    fn resolves_fake_tree() {
        let tree = TempTree::new();
        tree.mkdir("system.slice/ssh.service");
        tree.mkdir("system.slice/cron.service");
        tree.mkdir("user.slice");
        fs::write(tree.0.join("cgroup.procs"), "").unwrap();
        std::os::unix::fs::symlink(tree.0.join("user.slice"), tree.0.join("link")).unwrap();

        let mut names = CgroupNames::new(tree.0.clone(), Duration::from_secs(3600));
        assert_eq!(names.root(), tree.0);

        let ssh = names.id_of("system.slice/ssh.service").unwrap();
        assert_eq!(ssh, tree.ino("system.slice/ssh.service"));
        assert_eq!(
            names.resolve(ssh).as_deref(),
            Some("system.slice/ssh.service")
        );

        let root = names.id_of("/").unwrap();
        assert_eq!(root, tree.ino(""));
        assert_eq!(names.id_of("").unwrap(), root);
        assert_eq!(names.resolve(root).as_deref(), Some("/"));

        let user = names.id_of("/user.slice/").unwrap();
        assert_eq!(names.resolve(user).as_deref(), Some("user.slice"));
        assert_eq!(
            names
                .resolve(names.id_of("system.slice/cron.service").unwrap())
                .as_deref(),
            Some("system.slice/cron.service")
        );

        // The root, three directories and two services; the file and the
        // symlink are not cgroups.
        assert_eq!(names.names.lock().unwrap().len(), 5);
        assert!(names
            .names
            .lock()
            .unwrap()
            .values()
            .all(|n| !n.contains("link")));
        assert_eq!(names.resolve(u64::MAX), None);
    }

    #[test]
    fn procs_lists_the_pids_of_a_cgroup() {
        let tree = TempTree::new();
        tree.mkdir("a");
        fs::write(tree.0.join("a").join(PROCS), "12\n 7\nnot a pid\n").unwrap();
        assert_eq!(procs(&tree.0.join("a")).unwrap(), [12, 7]);
        let gone = procs(&tree.0.join("gone")).unwrap_err();
        assert_eq!(gone.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn id_of_rejects_bad_paths() {
        let tree = TempTree::new();
        tree.mkdir("a");
        fs::write(tree.0.join("a/file"), "").unwrap();
        let names = CgroupNames::new(tree.0.clone(), Duration::ZERO);

        for bad in ["..", "a/../..", "a/./b", "./a"] {
            assert!(
                matches!(names.id_of(bad), Err(CgroupError::InvalidPath { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            names.id_of("missing"),
            Err(CgroupError::Read { .. })
        ));
        assert!(matches!(
            names.id_of("a/file"),
            Err(CgroupError::NotACgroup { .. })
        ));
        // The error names the path it was about.
        let message = names.id_of("missing").unwrap_err().to_string();
        assert!(message.contains("missing"), "{message}");
    }

    #[test]
    fn rescans_are_rate_limited() {
        let tree = TempTree::new();
        tree.mkdir("old");
        let mut names = CgroupNames::new(tree.0.clone(), Duration::from_secs(3600));
        let old = names.id_of("old").unwrap();
        assert_eq!(names.resolve(old).as_deref(), Some("old"));

        // Created after the first walk: not seen until min_rescan passes.
        tree.mkdir("new");
        let new = names.id_of("new").unwrap();
        assert_eq!(names.resolve(new), None);

        names.min_rescan = Duration::ZERO;
        assert_eq!(names.resolve(new).as_deref(), Some("new"));
    }

    #[test]
    fn a_clone_names_a_cgroup_the_other_saw_before_it_was_removed() {
        let tree = TempTree::new();
        tree.mkdir("unit");
        let mut maps = CgroupNames::new(tree.0.clone(), Duration::from_secs(3600));
        let mut exits = maps.clone();
        let id = maps.id_of("unit").unwrap();
        assert_eq!(maps.resolve(id).as_deref(), Some("unit"));
        fs::remove_dir(tree.0.join("unit")).unwrap();
        // The exit event of the unit's last process arrives after its cgroup is gone.
        assert_eq!(exits.resolve(id).as_deref(), Some("unit"));
    }

    #[test]
    fn walk_replaces_cache_so_removed_cgroups_drop_out() {
        let tree = TempTree::new();
        tree.mkdir("gone");
        tree.mkdir("kept");
        let mut names = CgroupNames::new(tree.0.clone(), Duration::ZERO);
        let gone = names.id_of("gone").unwrap();
        assert_eq!(names.resolve(gone).as_deref(), Some("gone"));

        fs::remove_dir(tree.0.join("gone")).unwrap();
        // An unknown id triggers a walk, which forgets the removed cgroup.
        assert_eq!(names.resolve(u64::MAX), None);
        assert!(!names.names.lock().unwrap().contains_key(&gone));
        assert_eq!(names.names.lock().unwrap().len(), 2);
    }

    #[test]
    fn missing_root_resolves_nothing() {
        let root = std::env::temp_dir().join(unique_name("gimbal-cgroups-missing"));
        let mut names = CgroupNames::new(root.clone(), Duration::ZERO);
        assert_eq!(names.resolve(1), None);
        assert!(walk(&root).is_empty());
        assert!(matches!(names.id_of("/"), Err(CgroupError::Read { .. })));
    }

    /// Removes a cgroup this test created, even if the test fails.
    struct TestCgroup(PathBuf);

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            // rmdir, never remove_dir_all: a cgroup directory is removed as a
            // whole, and its interface files cannot be deleted one by one.
            if let Err(err) = fs::remove_dir(&self.0) {
                eprintln!("could not remove test cgroup {}: {err}", self.0.display());
            }
        }
    }

    #[test]
    fn resolves_real_cgroup_when_root() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping real cgroup test: creating a cgroup needs root");
            return;
        }
        let mut names = match CgroupNames::from_host() {
            Ok(names) => names,
            Err(err) => {
                eprintln!("skipping real cgroup test: {err}");
                return;
            }
        };
        let name = unique_name("gimbal-test");
        let path = names.root().join(&name);
        if let Err(err) = fs::create_dir(&path) {
            eprintln!(
                "skipping real cgroup test: cannot create {}: {err}",
                path.display()
            );
            return;
        }
        let _cleanup = TestCgroup(path.clone());

        let id = names.id_of(&name).unwrap();
        assert_eq!(id, fs::symlink_metadata(&path).unwrap().ino());
        // The kernel names a new cgroup by its id alone, without a walk.
        assert_eq!(by_handle(names.root(), id).as_deref(), Some(name.as_str()));
        assert_eq!(by_handle(names.root(), u64::MAX), None);
        assert_eq!(names.resolve(id).as_deref(), Some(name.as_str()));
        assert_eq!(
            names.resolve(names.id_of("/").unwrap()).as_deref(),
            Some("/")
        );
    }
}
