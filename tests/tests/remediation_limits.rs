//! The revertible CPU limit on a real cgroup: a CPU hog in a cpu cgroup this test creates
//! is held to the quota (its CPU time, from the kernel's schedstat, drops to about 0.2 of a
//! CPU) and gets its CPU back when a *restarted* journal (an agent killed while the limit
//! was active) restores the value it replaced.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use gimbal::remediate::{Limit, LimitJournal};
use gimbal_tests::{require_root, sibling_binary, spawn_in, unique, TempDir, TestCgroup};

/// A cpu cgroup this test owns: v1 (a child of this process's own cpu cgroup) where the
/// cpu controller is mounted on its own, else the cgroup2 test group.
enum CpuGroup {
    V1(PathBuf),
    V2(TestCgroup),
}

impl CpuGroup {
    fn new() -> Self {
        let v1 = Path::new("/sys/fs/cgroup/cpu");
        if v1.join("cpu.cfs_quota_us").is_file() {
            let own = std::fs::read_to_string("/proc/self/cgroup")
                .unwrap()
                .lines()
                .find_map(|l| {
                    let mut parts = l.splitn(3, ':');
                    let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                    controllers
                        .split(',')
                        .any(|c| c == "cpu")
                        .then(|| path.trim_start_matches('/').to_string())
                })
                .expect("a v1 cpu line in /proc/self/cgroup");
            let dir = v1.join(own).join(unique("throttle"));
            std::fs::create_dir(&dir).expect("create a v1 cpu cgroup");
            return Self::V1(dir);
        }
        let group = TestCgroup::new("throttle");
        assert!(
            group.path.join("cpu.max").is_file(),
            "neither a v1 cpu hierarchy nor the cpu controller on cgroup2 here"
        );
        Self::V2(group)
    }

    fn dir(&self) -> &Path {
        match self {
            Self::V1(dir) => dir,
            Self::V2(g) => &g.path,
        }
    }
}

impl Drop for CpuGroup {
    fn drop(&mut self) {
        if let Self::V1(dir) = self {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// CPUs' worth of time the process used over `window` (schedstat: ns on CPU, exact).
fn cpu_share(pid: u32, window: Duration) -> f64 {
    let on_cpu = || -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (t0, c0) = (Instant::now(), on_cpu());
    std::thread::sleep(window);
    (on_cpu() - c0) as f64 / t0.elapsed().as_nanos() as f64
}

#[test]
fn cpu_limit_holds_a_hog_to_its_quota_and_a_restarted_journal_gives_it_back() {
    if !require_root("cpu_limit_holds_a_hog_to_its_quota_and_a_restarted_journal_gives_it_back") {
        return;
    }
    let group = CpuGroup::new();
    let state = TempDir::new("limits");
    let quota_file = if group.dir().join("cpu.max").is_file() {
        "cpu.max"
    } else {
        "cpu.cfs_quota_us"
    };
    let original = std::fs::read_to_string(group.dir().join(quota_file)).unwrap();
    let hog = spawn_in(
        Command::new(sibling_binary("gimbal-workload")).args(["spin", "1000000000000"]),
        &[group.dir().join("cgroup.procs")],
    );
    let pid = hog.id();

    let before = cpu_share(pid, Duration::from_secs(1));
    assert!(
        before > 0.6,
        "the hog should use most of a CPU first: {before:.2}"
    );

    let mut journal = LimitJournal::open(&state.0);
    let change = journal.apply(group.dir(), Limit::Cpu(0.2)).unwrap();
    assert_eq!(change.previous, original.trim());
    std::thread::sleep(Duration::from_millis(300));
    let held = cpu_share(pid, Duration::from_secs(2));
    assert!(
        (0.1..0.3).contains(&held),
        "held to {held:.2} of a CPU, the quota is 0.2 ({quota_file} = {})",
        change.applied
    );

    // The agent dies with the limit active; the next one restores it from the journal.
    drop(journal);
    let mut restarted = LimitJournal::open(&state.0);
    assert_eq!(restarted.pending().len(), 1);
    assert!(restarted.revert_all().is_empty());
    assert_eq!(
        std::fs::read_to_string(group.dir().join(quota_file)).unwrap(),
        original,
        "{quota_file} restored"
    );
    let after = cpu_share(pid, Duration::from_secs(1));
    assert!(after > 0.6, "the hog's CPU came back: {after:.2}");
    assert!(LimitJournal::open(&state.0).pending().is_empty());
    drop(hog);
}
