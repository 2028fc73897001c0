//! Syscall latency against ground truth the workload defines: exactly N calls of one
//! syscall, and M sleeps of a known length, from a child alone in a new cgroup.
use std::{io::Read, process::Stdio, sync::Arc};

use gimbal::{
    config::{Config, SyscallHookChoice},
    host::cgroupfs::CgroupNames,
    model::{HistTotals, Model},
    names::syscall_name,
    probes::{LoadOptions, MapReader, Probe, Probes, TimingPlan},
};
use gimbal_common::hist::{bucket, upper_bound_ns};
use gimbal_tests::{load_attached, require_root, wait_status, workload, TestCgroup};

/// The syscall probe alone, at the dispatcher where the kernel allows it (the VM test
/// bed's Debian kernel), so every test here covers that hook where it exists and the
/// tracepoints elsewhere.
fn options() -> LoadOptions {
    LoadOptions {
        tcp_retransmit: false,
        process_exit: false,
        syscall_map_memory_mb: 16,
        syscall_hook: SyscallHookChoice::Auto,
        ..LoadOptions::default()
    }
}

/// The timing plan of a config with `toml` in it.
fn plan(toml: &str) -> TimingPlan {
    TimingPlan::from_config(&Config::parse(toml, "test").expect("a valid config"))
}

/// The probes with every syscall timed (the full mode).
fn load_timing_all() -> Probes {
    let mut probes = load_attached(&options());
    probes
        .set_timing(&plan(
            "[probes.syscall_latency]\ntimed_syscalls = [\"*\"]\n",
        ))
        .expect("time every syscall");
    probes
}

/// Runs the workload with `args` in a fresh cgroup and returns the model's histogram of
/// `syscall` for that cgroup.
fn measure(args: &[&str], syscall: &str) -> HistTotals {
    measure_with_output(args, syscall).0
}

/// `measure`, with what the workload printed.
fn measure_with_output(args: &[&str], syscall: &str) -> (HistTotals, String) {
    let mut probes = load_timing_all();
    let mut reader = MapReader::new(&mut probes, CgroupNames::from_host().unwrap()).unwrap();
    let cgroup = TestCgroup::new("syscalls");
    let mut child = cgroup.spawn_into(workload().args(args).stdout(Stdio::piped()));
    assert_eq!(wait_status(&mut child), 0, "workload failed");
    let mut out = String::new();
    // A few lines at most: they fit the pipe, so reading after the exit is safe.
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut model = Model::new(100_000);
    model.apply(reader.read().expect("read maps"));
    let key = [syscall.into(), cgroup.name.as_str().into()];
    let hist = model
        .syscall_latency
        .series
        .get(&key)
        .copied()
        .unwrap_or_else(|| {
            let seen: Vec<_> = model
                .syscall_latency
                .series
                .keys()
                .filter(|k| *k[1] == *cgroup.name)
                .collect();
            panic!(
                "no {syscall} series for cgroup {}; series of that cgroup: {seen:?}",
                cgroup.name
            )
        });
    (hist, out)
}

#[test]
fn counts_exactly_n_calls_of_one_syscall() {
    if !require_root!() {
        return;
    }
    assert_eq!(syscall_name(libc::SYS_getppid as u32), "getppid");
    for n in [1u64, 1000, 54_321] {
        let h = measure(&["getppid", &n.to_string()], "getppid");
        assert_eq!(
            h.count(),
            n,
            "getppid calls counted for a child that made exactly {n}"
        );
    }
}

#[test]
fn every_sleep_lands_in_its_bucket() {
    if !require_root!() {
        return;
    }
    // 63 ms sits just above the 62.5 ms (2^-4 s) bound. Ground truth: the workload times
    // each sleep around the syscall, so the kernel's duration lies in [63 ms, that time].
    let (count, ms) = (5u64, 63u64);
    let (h, out) = measure_with_output(
        &["sleep", &count.to_string(), &ms.to_string()],
        "clock_nanosleep",
    );
    let user: Vec<u64> = out.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(user.len() as u64, count, "{out}");
    let i = bucket(ms * 1_000_000);
    let (lower, upper) = (upper_bound_ns(i - 1).unwrap(), upper_bound_ns(i).unwrap());
    assert!(lower < ms * 1_000_000 && ms * 1_000_000 <= upper);
    assert_eq!(h.count(), count, "one histogram entry per sleep");
    let requested = count * ms * 1_000_000;
    let windows: u64 = user.iter().sum();
    assert!(
        (requested..=windows).contains(&h.sum_ns),
        "kernel total {} ns outside [requested {requested}, user-timed {windows}]",
        h.sum_ns
    );
    let longest = *user.iter().max().unwrap();
    for (j, n) in h.buckets.iter().enumerate().filter(|(_, n)| **n > 0) {
        let below = j.checked_sub(1).and_then(upper_bound_ns).unwrap_or(0);
        assert!(
            j >= i && below < longest,
            "{n} sleeps in bucket {j}, outside [{ms} ms, {longest} ns]: {:?}",
            nonzero(&h)
        );
    }
    // Where every sleep really ended within the bucket (an unloaded machine: always on
    // the host), all five must be in it.
    if user.iter().all(|&d| bucket(d) == i) {
        assert_eq!(
            h.buckets[i],
            count,
            "all {count} sleeps of {ms} ms in ({lower} ns, {upper} ns]; buckets: {:?}",
            nonzero(&h)
        );
    }
}

fn nonzero(h: &HistTotals) -> Vec<(u64, u64)> {
    h.buckets
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(i, &n)| (upper_bound_ns(i).unwrap_or(u64::MAX), n))
        .collect()
}

#[test]
fn syscalls_that_return_on_another_cpu_are_counted() {
    if !require_root!() {
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        cpus >= 2,
        "this test needs two CPUs to move a thread between; this host has {cpus}"
    );
    // Each sched_setaffinity enters on one CPU and returns on the other: only the start
    // time spilled to task storage at the context switch can time it.
    let n = 500u64;
    let h = measure(&["migrate", &n.to_string()], "sched_setaffinity");
    assert_eq!(
        h.count(),
        n,
        "sched_setaffinity calls that each changed CPU"
    );
}

#[test]
fn idle_keys_are_deleted_from_the_kernel_map_without_losing_counts() {
    if !require_root!() {
        return;
    }
    let mut probes = load_timing_all();
    let mut reader = MapReader::new(&mut probes, CgroupNames::from_host().unwrap())
        .unwrap()
        .with_idle_prune(std::time::Duration::from_millis(500));
    let cgroup = TestCgroup::new("prune");
    let raw = gimbal_common::SyscallKey {
        cgroup_id: cgroup.id,
        nr: libc::SYS_getppid as u32,
        _pad: 0,
    };
    let key = ["getppid".into(), cgroup.name.as_str().into()];
    let mut model = Model::new(1000);

    let mut child = cgroup.spawn_into(workload().args(["getppid", "5"]));
    assert_eq!(wait_status(&mut child), 0);
    model.apply(reader.read().unwrap());
    assert_eq!(model.syscall_latency.series[&key].count(), 5);

    std::thread::sleep(std::time::Duration::from_millis(700));
    let sample = reader.read().unwrap();
    assert!(
        sample.pruned.syscalls.contains(&raw),
        "idle key not pruned: {:?}",
        sample.pruned
    );
    model.apply(sample);
    let after = reader.read().unwrap();
    assert!(
        after.syscalls.iter().all(|r| r.raw != raw),
        "the kernel map still holds the pruned key"
    );
    model.apply(after);

    let mut child = cgroup.spawn_into(workload().args(["getppid", "3"]));
    assert_eq!(wait_status(&mut child), 0);
    model.apply(reader.read().unwrap());
    assert_eq!(
        model.syscall_latency.series[&key].count(),
        8,
        "counts before and after the prune add up"
    );
}

/// Restores `kernel.bpf_stats_enabled` to what it was, also when the test panics.
struct BpfStats(String);

impl BpfStats {
    const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";

    fn set(on: bool) -> Self {
        let before = std::fs::read_to_string(Self::PATH).expect("read bpf_stats_enabled");
        std::fs::write(Self::PATH, if on { "1" } else { "0" }).expect("set bpf_stats_enabled");
        Self(before.trim().to_string())
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.0);
    }
}

fn program_runs(reader: &mut MapReader, program: &str) -> (u64, u64) {
    let sample = reader.read().expect("read maps");
    let (_, runs) = sample
        .programs
        .iter()
        .find(|(name, _)| *name == program)
        .unwrap_or_else(|| panic!("{program} among the agent's programs"));
    (runs.runs, runs.run_ns)
}

/// The program that notes a timed 64-bit syscall's start: `sys_enter`, or the dispatcher's
/// entry where the kernel lets the agent hook it (syscall_hook.rs).
fn enter_program(probes: &Probes) -> &'static str {
    probes
        .syscall_hook()
        .expect("the syscall probe attached")
        .enter_program()
}

#[test]
fn the_programs_own_runs_are_counted_while_the_kernel_counts_them() {
    if !require_root!() {
        return;
    }
    let mut probes = load_timing_all();
    let enter = enter_program(&probes);
    let mut reader = MapReader::new(&mut probes, CgroupNames::from_host().unwrap()).unwrap();
    let cgroup = TestCgroup::new("bpfstats");
    let n = 20_000u64;
    let run = || {
        let mut child = cgroup.spawn_into(workload().args(["getppid", &n.to_string()]));
        assert_eq!(wait_status(&mut child), 0, "workload failed");
    };

    let (runs_on, ns_on) = {
        let _stats = BpfStats::set(true);
        let (runs0, ns0) = program_runs(&mut reader, enter);
        run();
        let (runs1, ns1) = program_runs(&mut reader, enter);
        (runs1 - runs0, ns1 - ns0)
    };
    // The workload alone made n syscalls into the enter; the rest of the host adds more.
    assert!(
        runs_on >= n,
        "{enter} ran {runs_on} times while a child made {n} getppid calls"
    );
    assert!(ns_on > 0, "{enter} took no time over {runs_on} runs");

    let _stats = BpfStats::set(false);
    let before = program_runs(&mut reader, enter);
    run();
    assert_eq!(
        program_runs(&mut reader, enter),
        before,
        "the kernel counts nothing while its BPF statistics are off"
    );
}

/// Runs `getppid` `n` times and a failing `close(-1)` `n` times in `cgroup`.
fn getppid_and_failed_closes(cgroup: &TestCgroup, n: u64) {
    for mode in ["getppid", "badclose"] {
        let mut child = cgroup.spawn_into(workload().args([mode, &n.to_string()]));
        assert_eq!(wait_status(&mut child), 0, "workload failed");
    }
}

#[test]
fn by_default_every_syscall_is_counted_exactly_and_none_is_timed() {
    if !require_root!() {
        return;
    }
    let mut probes = load_attached(&options());
    probes.set_timing(&plan("")).expect("the default plan");
    let enter = enter_program(&probes);
    let mut reader = MapReader::new(&mut probes, CgroupNames::from_host().unwrap()).unwrap();
    let cgroup = TestCgroup::new("counted");
    let n = 4_321u64;
    let (enter_before, _) = program_runs(&mut reader, enter);
    getppid_and_failed_closes(&cgroup, n);
    let mut model = Model::new(100_000);
    model.apply(reader.read().expect("read maps"));
    let cg = cgroup.name.as_str();
    let key = |s: &str| [s.into(), cg.into()];
    assert_eq!(model.syscalls.series.get(&key("getppid")), Some(&n));
    let ebadf = [Arc::from("close"), cg.into(), Arc::from("EBADF")];
    assert_eq!(
        model.syscall_errors.series.get(&ebadf),
        Some(&n),
        "failed closes counted by errno"
    );
    let timed: Vec<_> = model
        .syscall_latency
        .series
        .keys()
        .filter(|k| *k[1] == *cg)
        .collect();
    assert!(timed.is_empty(), "nothing is timed by default: {timed:?}");
    // Not attached at all: the kernel's own count of its runs (0 whether or not its
    // statistics are on, since it never ran) does not move.
    assert_eq!(program_runs(&mut reader, enter).0, enter_before);
}

#[test]
fn a_target_syscall_is_timed_in_the_targets_cgroups_and_counted_elsewhere() {
    if !require_root!() {
        return;
    }
    let mut probes = load_attached(&options());
    probes
        .set_timing(&plan(
            "[[targets]]\nname = \"t\"\ncgroup = \"x\"\nlatency_syscalls = [\"getppid\"]\n",
        ))
        .expect("a target's plan");
    let watched = TestCgroup::new("timed");
    let other = TestCgroup::new("untimed");
    probes.set_timed_cgroups([watched.id].into());
    let mut reader = MapReader::new(&mut probes, CgroupNames::from_host().unwrap()).unwrap();
    let n = 1_234u64;
    getppid_and_failed_closes(&watched, n);
    getppid_and_failed_closes(&other, n);
    let mut model = Model::new(100_000);
    model.apply(reader.read().expect("read maps"));
    let key = |s: &str, c: &TestCgroup| [s.into(), c.name.as_str().into()];
    let timed = model.syscall_latency.series.get(&key("getppid", &watched));
    assert_eq!(
        timed.map(|h| h.count()),
        Some(n),
        "timed in the target's cgroup"
    );
    assert!(
        !model
            .syscall_latency
            .series
            .contains_key(&key("getppid", &other)),
        "not timed outside the target's cgroups"
    );
    assert!(
        !model
            .syscall_latency
            .series
            .contains_key(&key("close", &watched)),
        "a syscall outside the SLI is not timed in the target's cgroup"
    );
    for c in [&watched, &other] {
        assert_eq!(model.syscalls.series.get(&key("getppid", c)), Some(&n));
    }

    // Back to nothing timed: the same workload is counted, and the histogram stays.
    probes.set_timing(&plan("")).expect("the default plan");
    getppid_and_failed_closes(&watched, n);
    model.apply(reader.read().expect("read maps"));
    assert_eq!(
        model.syscalls.series.get(&key("getppid", &watched)),
        Some(&(2 * n))
    );
    let timed = model.syscall_latency.series.get(&key("getppid", &watched));
    assert_eq!(timed.map(|h| h.count()), Some(n));
}

#[test]
fn busy_pairs_are_counted_in_slots_and_every_count_stays_exact() {
    if !require_root!() {
        return;
    }
    let mut probes = load_attached(&options());
    probes.set_timing(&plan("")).expect("the default plan");
    let mut reader = MapReader::new(&mut probes, CgroupNames::from_host().unwrap())
        .unwrap()
        .with_idle_prune(std::time::Duration::from_millis(500));
    let cgroup = TestCgroup::new("slots");
    let raw = gimbal_common::SyscallKey {
        cgroup_id: cgroup.id,
        nr: libc::SYS_sched_setaffinity as u32,
        _pad: 0,
    };
    let key = ["sched_setaffinity".into(), cgroup.name.as_str().into()];
    let mut model = Model::new(100_000);
    // `migrate` returns from every call on the other CPU, so the slot is counted on both.
    let run = |n: u64| {
        let mut child = cgroup.spawn_into(workload().args(["migrate", &n.to_string()]));
        assert_eq!(wait_status(&mut child), 0, "workload failed");
    };

    // New and busy: counted in the hash, then given a slot at the read.
    run(4_000);
    model.apply(reader.read().unwrap());
    assert_eq!(model.syscalls.series.get(&key), Some(&4_000));
    assert_eq!(reader.count_split(&raw), (4_000, 0));
    assert!(reader.count_slots_used() >= 1, "a busy pair got no slot");

    // From then on the kernel counts it in the slot; the hash value stays as it was.
    run(6_000);
    model.apply(reader.read().unwrap());
    assert_eq!(
        reader.count_split(&raw),
        (4_000, 6_000),
        "(in the hash, in the slot) after a second burst"
    );
    assert_eq!(model.syscalls.series.get(&key), Some(&10_000));

    // Idle: the key and its slot go together, and the total lives on in the model.
    std::thread::sleep(std::time::Duration::from_millis(700));
    let sample = reader.read().unwrap();
    assert!(
        sample.pruned.syscall_counts.contains(&raw),
        "idle key not pruned: {:?}",
        sample.pruned
    );
    model.apply(sample);
    assert_eq!(reader.count_split(&raw), (0, 0), "key and slot freed");
    run(5);
    model.apply(reader.read().unwrap());
    assert_eq!(
        model.syscalls.series.get(&key),
        Some(&10_005),
        "counts before and after the prune add up"
    );
    assert_eq!(
        reader.count_split(&raw),
        (5, 0),
        "back in the hash, too few for a slot"
    );
}

#[test]
fn a_sample_of_the_timed_syscalls_is_timed_and_every_one_is_counted() {
    if !require_root!() {
        return;
    }
    let mut probes = load_attached(&options());
    probes
        .set_timing(&plan(
            "[probes.syscall_latency]\ntimed_syscalls = [\"getppid\"]\nsample_one_in = 10\n",
        ))
        .expect("time getppid, one in 10");
    assert_eq!(probes.sample_one_in(), 10);
    let mut reader = MapReader::new(&mut probes, CgroupNames::from_host().unwrap()).unwrap();
    let cgroup = TestCgroup::new("sampled");
    let n = 100_000u64;
    let mut child = cgroup.spawn_into(workload().args(["getppid", &n.to_string()]));
    assert_eq!(wait_status(&mut child), 0, "workload failed");
    let mut model = Model::new(100_000);
    model.apply(reader.read().expect("read maps"));
    let key = ["getppid".into(), cgroup.name.as_str().into()];
    assert_eq!(
        model.syscalls.series.get(&key),
        Some(&n),
        "every call counted, sampled or not"
    );
    // Binomial(100,000, 1/10): mean 10,000, standard deviation 95; 6 of them either side.
    let sampled = model.syscall_latency.series[&key].count();
    assert!(
        (9_430..=10_570).contains(&sampled),
        "{sampled} of {n} calls timed, expected about one in 10"
    );
    // Back to timing every one: a second child is timed whole.
    probes
        .set_timing(&plan(
            "[probes.syscall_latency]\ntimed_syscalls = [\"getppid\"]\n",
        ))
        .expect("time every getppid");
    let mut child = cgroup.spawn_into(workload().args(["getppid", "1000"]));
    assert_eq!(wait_status(&mut child), 0, "workload failed");
    model.apply(reader.read().expect("read maps"));
    assert_eq!(model.syscall_latency.series[&key].count(), sampled + 1000);
    assert_eq!(model.syscalls.series.get(&key), Some(&(n + 1000)));
}

/// Counts `n` getppid and `n` failed closes of a fresh cgroup through `probes` (nothing
/// timed) and checks both counts exactly.
fn counts_exactly(probes: &mut Probes, n: u64) {
    probes.set_timing(&plan("")).expect("the default plan");
    let mut reader = MapReader::new(probes, CgroupNames::from_host().unwrap()).unwrap();
    let cgroup = TestCgroup::new("hook");
    getppid_and_failed_closes(&cgroup, n);
    let mut model = Model::new(100_000);
    model.apply(reader.read().expect("read maps"));
    let cg = cgroup.name.as_str();
    assert_eq!(
        model
            .syscalls
            .series
            .get(&[Arc::from("getppid"), cg.into()]),
        Some(&n)
    );
    let ebadf = [Arc::from("close"), cg.into(), Arc::from("EBADF")];
    assert_eq!(model.syscall_errors.series.get(&ebadf), Some(&n));
}

fn load_hooked(hook: SyscallHookChoice) -> Probes {
    Probes::load(&LoadOptions {
        syscall_hook: hook,
        ..options()
    })
    .expect("load probes")
}

fn hook_of(probes: &Probes) -> Option<&'static str> {
    probes.syscall_hook().map(|h| h.name())
}

#[test]
fn every_hook_counts_exactly_and_auto_takes_the_dispatcher_where_the_kernel_allows_it() {
    if !require_root!() {
        return;
    }
    let mut tracepoints = load_hooked(SyscallHookChoice::Tracepoints);
    assert_eq!(hook_of(&tracepoints), Some("tracepoints"));
    counts_exactly(&mut tracepoints, 2_345);
    drop(tracepoints);

    let mut auto = load_hooked(SyscallHookChoice::Auto);
    let chosen = hook_of(&auto).expect("auto always attaches somewhere");
    counts_exactly(&mut auto, 3_456);
    drop(auto);

    // Forcing the dispatcher agrees with what auto found: attached and exact where auto
    // chose it, a failed probe that says why where the kernel refused it.
    let mut forced = load_hooked(SyscallHookChoice::Dispatcher);
    let status = forced
        .status
        .iter()
        .find(|s| s.probe == Probe::SyscallLatency)
        .expect("a syscall probe status")
        .clone();
    if chosen == "dispatcher" {
        assert_eq!(status.error, None);
        assert_eq!(hook_of(&forced), Some("dispatcher"));
        counts_exactly(&mut forced, 4_567);
    } else {
        assert_eq!(chosen, "tracepoints");
        let error = status.error.expect("the forced dispatcher fails here");
        assert!(
            error.starts_with("hook = \"dispatcher\": "),
            "the error names the setting and the kernel's refusal: {error}"
        );
        assert_eq!(hook_of(&forced), None, "no hook without the probe");
    }
}
