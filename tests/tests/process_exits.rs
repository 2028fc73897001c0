//! Process exits against waitpid(2): the kernel's wait status for each child is the ground
//! truth for code, signal and core-dump flag; the OOM killer's verdict for oom_killed.
use std::process::Command;

use gimbal::{
    host::cgroupfs::CgroupNames,
    model::exits::{comm, decode},
    probes::{ExitReader, ExitRecord, LoadOptions, MapReader, Probes},
};
use gimbal_common::Drop;
use gimbal_tests::{
    load_attached, require_root, spawn_in, wait_status, workload, MemoryLimit, TempDir, TestCgroup,
};

struct Harness {
    cgroup: TestCgroup,
    probes: Probes,
    exits: ExitReader,
    _runtime: tokio::runtime::Runtime,
}

impl Harness {
    /// Probes that record only this test's cgroup, so the counts are exact on a busy host.
    fn new(ring_bytes: u32) -> Self {
        let cgroup = TestCgroup::new("exits");
        let options = LoadOptions {
            syscall_latency: false,
            tcp_retransmit: false,
            exit_ring_bytes: ring_bytes,
            filter_cgroup_id: cgroup.id,
            ..LoadOptions::default()
        };
        let mut probes = load_attached(&options);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let exits = {
            let _in_runtime = runtime.enter();
            ExitReader::new(&mut probes, CgroupNames::from_host().unwrap()).unwrap()
        };
        Self {
            cgroup,
            probes,
            exits,
            _runtime: runtime,
        }
    }

    /// Runs `cmd` in the test cgroup (and any extra cgroups), optionally signals it, and
    /// returns its waitpid status and the one exit event recorded for it.
    fn run(
        &mut self,
        cmd: &mut Command,
        extra_procs: &[std::path::PathBuf],
        signal: Option<i32>,
    ) -> (i32, ExitRecord) {
        let mut files = vec![self.cgroup.path.join("cgroup.procs")];
        files.extend_from_slice(extra_procs);
        let mut child = spawn_in(cmd, &files);
        if let Some(sig) = signal {
            std::thread::sleep(std::time::Duration::from_millis(100));
            // SAFETY: signalling our own child by pid.
            unsafe { libc::kill(child.id() as i32, sig) };
        }
        let status = wait_status(&mut child);
        let records = self.exits.drain_now();
        let mine: Vec<_> = records
            .into_iter()
            .filter(|r| r.event.pid == child.id())
            .collect();
        assert_eq!(
            mine.len(),
            1,
            "exactly one exit event for pid {}: {mine:?}",
            child.id()
        );
        (status, mine.into_iter().next().unwrap())
    }
}

fn check_common(record: &ExitRecord, status: i32, cgroup: &TestCgroup) {
    assert_eq!(
        record.event.exit_code, status as u32,
        "kernel exit_code equals the waitpid status"
    );
    assert_eq!(record.event.ppid, std::process::id(), "parent is this test");
    assert_eq!(comm(&record.event), "gimbal-workload");
    assert_eq!(&*record.labels[0], cgroup.name, "cgroup label");
    assert!(
        record.event.lifetime_ns > 0 && record.event.lifetime_ns < 60_000_000_000,
        "lifetime {} ns",
        record.event.lifetime_ns
    );
}

#[test]
fn exit_code_signal_core_dump_and_oom_kill_match_waitpid() {
    if !require_root!() {
        return;
    }
    let mut h = Harness::new(64 * 1024);

    let (status, r) = h.run(workload().args(["exit", "3"]), &[], None);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 3);
    check_common(&r, status, &h.cgroup);
    assert_eq!((&*r.labels[2], &*r.labels[3]), ("exited", "3"));

    let (status, r) = h.run(workload().arg("pause"), &[], Some(libc::SIGKILL));
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
    check_common(&r, status, &h.cgroup);
    assert_eq!((&*r.labels[2], &*r.labels[3]), ("signaled", "SIGKILL"));

    let cores = TempDir::new("cores");
    let (status, r) = h.run(workload().arg("segv").current_dir(&cores.0), &[], None);
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV);
    assert!(
        libc::WCOREDUMP(status),
        "the kernel did not dump core (core_pattern {:?}); the test needs core dumps to check the flag",
        std::fs::read_to_string("/proc/sys/kernel/core_pattern")
    );
    check_common(&r, status, &h.cgroup);
    assert!(decode(&r.event).core_dumped, "core-dump flag");
    assert_eq!((&*r.labels[2], &*r.labels[3]), ("signaled", "SIGSEGV"));

    let limit = MemoryLimit::new(&h.cgroup, 64 << 20);
    let (status, r) = h.run(
        workload().args(["alloc", "400"]),
        std::slice::from_ref(&limit.procs),
        None,
    );
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "the hog was not OOM-killed: status {status:#x}"
    );
    check_common(&r, status, &h.cgroup);
    assert_eq!((&*r.labels[2], &*r.labels[3]), ("oom_killed", "SIGKILL"));
    drop(limit);
}

#[test]
fn ring_buffer_overflow_loses_nothing_uncounted() {
    if !require_root!() {
        return;
    }
    // One page holds 64 events; 300 exits with nobody reading must overflow it.
    let mut h = Harness::new(4096);
    let mut maps = MapReader::new(&mut h.probes, CgroupNames::from_host().unwrap()).unwrap();
    let out = spawn_in(
        workload()
            .args(["forks", "300"])
            .stdout(std::process::Stdio::piped()),
        &[h.cgroup.path.join("cgroup.procs")],
    )
    .into_inner()
    .wait_with_output()
    .unwrap();
    assert!(out.status.success());
    let forked: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("fork count");
    let generated = forked + 1; // the children and the workload itself

    let delivered = h.exits.drain_now().len() as u64;
    let dropped = maps.read().unwrap().drops[Drop::ExitRingFull as usize];
    assert!(
        dropped > 0,
        "the ring never overflowed (delivered {delivered} of {generated})"
    );
    assert_eq!(
        delivered + dropped,
        generated,
        "delivered {delivered} + dropped {dropped} = generated {generated}"
    );
}

#[test]
fn a_probe_whose_tracepoint_is_missing_is_reported_and_the_others_run() {
    if !require_root!() {
        return;
    }
    // A kernel without tcp:tcp_retransmit_skb: the real format files of the exit
    // tracepoints, and no tcp directory at all.
    let tracefs = gimbal::host::tracefs::ensure_mounted().expect("tracefs");
    let formats = TempDir::new("tracefs");
    for tp in ["sched/sched_process_exit", "oom/mark_victim"] {
        let dir = formats.0.join("events").join(tp);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(
            tracefs.join("events").join(tp).join("format"),
            dir.join("format"),
        )
        .unwrap();
    }
    let cgroup = TestCgroup::new("degrade");
    let options = LoadOptions {
        filter_cgroup_id: cgroup.id,
        tracepoint_formats: Some(formats.0.clone()),
        ..LoadOptions::default()
    };
    let mut probes = Probes::load(&options).expect("the other probes still load");
    let status: Vec<_> = probes
        .status
        .iter()
        .map(|s| (s.probe.name(), s.attached(), s.error.clone()))
        .collect();
    let tcp = status.iter().find(|s| s.0 == "tcp_retransmit").unwrap();
    assert!(!tcp.1, "tcp_retransmit reported attached: {status:?}");
    assert!(
        tcp.2
            .as_deref()
            .unwrap_or("")
            .contains("tcp_retransmit_skb"),
        "the error names the tracepoint: {status:?}"
    );
    assert!(
        status
            .iter()
            .filter(|s| s.0 != "tcp_retransmit")
            .all(|s| s.1),
        "others attached: {status:?}"
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut exits = {
        let _in_runtime = runtime.enter();
        ExitReader::new(&mut probes, CgroupNames::from_host().unwrap()).unwrap()
    };
    let mut child = cgroup.spawn_into(workload().args(["exit", "7"]));
    let status = wait_status(&mut child);
    let records = exits.drain_now();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].event.exit_code, status as u32);
}
