//! The revertible CPU limit on a real cgroup: a CPU hog in a cpu cgroup this test creates
//! is held to the quota (its CPU time, from the kernel's schedstat, drops to about 0.2 of a
//! CPU) and gets its CPU back when a *restarted* journal (an agent killed while the limit
//! was active) restores the value it replaced.
use std::{process::Command, time::Duration};

use gimbal::remediate::{Limit, LimitJournal};
use gimbal_tests::{cpu_share_in, require_root, sibling_binary, spawn_in, CpuGroup, TempDir};

#[test]
fn cpu_limit_holds_a_hog_to_its_quota_and_a_restarted_journal_gives_it_back() {
    if !require_root!() {
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

    let second = Duration::from_secs(1);
    cpu_share_in(pid, second, 0.6..2.0, "the hog first uses most of a CPU");

    let mut journal = LimitJournal::open(&state.0);
    let change = journal.apply(group.dir(), Limit::Cpu(0.2), None).unwrap();
    assert_eq!(change.previous, original.trim());
    std::thread::sleep(Duration::from_millis(300));
    cpu_share_in(
        pid,
        2 * second,
        0.1..0.3,
        &format!("held to the 0.2 quota ({quota_file} = {})", change.applied),
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
    cpu_share_in(pid, second, 0.6..2.0, "the hog's CPU came back");
    assert!(LimitJournal::open(&state.0).pending().is_empty());
    drop(hog);
}
