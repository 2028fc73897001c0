//! `cargo xtask bench`: what gimbal adds to every syscall, next to the floor (an empty
//! raw-tracepoint pair) and bpftrace building the same per-(cgroup, syscall) histogram.
//!
//! Configurations run interleaved, round after round, in one invocation, so drift on this
//! shared machine hits all of them alike; figures are medians over rounds and the result is
//! reported as ratios against the no-tracer baseline measured in the same run.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::util;

/// bpftrace's per-syscall latency histogram keyed like gimbal's (cgroup, syscall); the cost
/// sections (redis, nginx, pipe) run the same file.
const BPFTRACE_HIST: &str = include_str!("../../tests/bench/syscall-hist.bt");

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tracer {
    None,
    Floor,
    ExitFloor,
    DispatcherFloor,
    Clock,
    Gimbal,
    GimbalDispatcher,
    GimbalHash,
    GimbalFull,
    GimbalSampled,
    Bpftrace,
}

impl Tracer {
    const ALL: [Tracer; 11] = [
        Tracer::None,
        Tracer::Floor,
        Tracer::ExitFloor,
        Tracer::DispatcherFloor,
        Tracer::Clock,
        Tracer::Gimbal,
        Tracer::GimbalDispatcher,
        Tracer::GimbalHash,
        Tracer::GimbalFull,
        Tracer::GimbalSampled,
        Tracer::Bpftrace,
    ];
    fn name(self) -> &'static str {
        match self {
            Tracer::None => "no tracer",
            Tracer::Floor => "empty raw tracepoint pair (floor)",
            Tracer::ExitFloor => "empty sys_exit program (the counted floor)",
            Tracer::DispatcherFloor => "empty fexit on x64_sys_call (the dispatcher's floor)",
            Tracer::Clock => "floor + clock read at each end",
            Tracer::Gimbal => "gimbal, embedded defaults (counted, not timed)",
            Tracer::GimbalDispatcher => "gimbal, defaults, hook = \"dispatcher\"",
            Tracer::GimbalHash => "gimbal, defaults, every count in the hash",
            Tracer::GimbalFull => "gimbal, every syscall timed",
            Tracer::GimbalSampled => "gimbal, every syscall timed, one in 16 sampled",
            Tracer::Bpftrace => "bpftrace histogram",
        }
    }
}

/// The every-syscall-timed config the cost sections use too.
const FULL_CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/bench/gimbal-full.toml"
);

/// The defaults with every count in the hash (`count_slots = false`): what the count
/// slots save.
const HASH_CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/bench/gimbal-hash.toml"
);

/// The defaults at the syscall dispatcher (`hook = "dispatcher"`), next to the tracepoints.
const DISPATCHER_CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/bench/gimbal-dispatcher.toml"
);

/// Every syscall timed, one in 16 sampled (`sample_one_in = 16`).
const SAMPLED_CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/bench/gimbal-sampled.toml"
);

/// One round of one configuration.
struct Run {
    ns_per_syscall: f64,
    /// The tracer's own user+system CPU while the loop ran, as a share of one core.
    tracer_cpu: Option<f64>,
    tracer_rss_kib: Option<u64>,
}

/// How much load each run of the cost sections (redis, nginx, pipe) puts on its server.
pub struct Load {
    pub redis_requests: u64,
    pub wrk_seconds: u32,
    pub pipe_loops: u64,
}

pub fn run(syscalls: u64, rounds: u32, only: &[String], load: &Load) -> anyhow::Result<()> {
    util::require_root("the benchmark attaches eBPF programs")?;
    util::step("building (release)");
    util::build_release_binaries()?;
    let bin = util::root().join("target/release");
    let section = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let mut report = String::new();
    if ["syscalls", "redis", "nginx", "pipe", "vm"]
        .into_iter()
        .any(section)
    {
        // The floors' programs are not in the shipped object: their binary alone is built
        // with them (its own gimbal library; target/release/gimbal stays the shipped one).
        // Only these sections need it, and it is a second build of the agent's library.
        util::cargo(&[
            "build",
            "--release",
            "-p",
            "gimbal-tests",
            "--bin",
            "gimbal-bench-floor",
            "--features",
            "gimbal-tests/bench",
        ])?;
    }
    if section("syscalls") {
        // The dispatcher's rows only where the kernel lets a program hook it; elsewhere
        // the defaults already run on the tracepoints.
        let dispatcher = dispatcher_hookable(&bin);
        let tracers: Vec<Tracer> = Tracer::ALL
            .into_iter()
            .filter(|t| {
                dispatcher || !matches!(t, Tracer::DispatcherFloor | Tracer::GimbalDispatcher)
            })
            .collect();
        let mut runs: Vec<(Tracer, Run)> = Vec::new();
        for round in 1..=rounds {
            for &tracer in &tracers {
                print!("round {round}/{rounds}: {:<36}", tracer.name());
                let run = measure(tracer, &bin, syscalls)?;
                println!("{:8.1} ns/syscall", run.ns_per_syscall);
                runs.push((tracer, run));
            }
        }
        report += &self::report(&runs, &tracers, syscalls, rounds);
    }
    if section("alert") {
        util::step(
            "alert latency: SIGKILL of a watched process -> TargetDown active in a local Alertmanager",
        );
        report += &alert_latency(&bin, 20)?;
    }
    if section("kmsg") {
        util::step("kernel log reader: CPU per 10,000 records written to /dev/kmsg");
        report += &kmsg_cost(&bin, 10_000)?;
    }
    if section("restart") {
        util::step("time to recover: SIGKILL of a supervised process -> its replacement running");
        report += &restart_latency(&bin, 20)?;
    }
    if section("noisy") {
        util::step(
            "noisy neighbour: a latency-critical service next to CPU hogs, with and without throttling",
        );
        report += &noisy_neighbour(&bin, 5000)?;
    }
    if section("stall") {
        util::step(
            "the stall check's added CPU at 1,000 targets: the watcher's tick with and without it",
        );
        report += &stall_check(&bin, 1000)?;
    }
    if section("scrape") {
        util::step("a busy scrape: series, bytes on the wire, CPU and Prometheus' ingestion, next to node_exporter");
        crate::setup::ensure_packages(&[(
            "prometheus-node-exporter",
            "the scrape section's baseline exporter (run by the bench on a loopback port; its unit is never started)",
        )])?;
        report += &scrape_cost(&bin, 20)?;
    }
    if section("lb") {
        util::step(
            "traffic moved off a squeezed backend: HAProxy with and without Gimbal's agent-check",
        );
        report += &traffic_share(&bin, 2)?;
    }
    for (name, amount) in [
        ("redis", load.redis_requests.to_string()),
        ("nginx", load.wrk_seconds.to_string()),
        ("pipe", load.pipe_loops.to_string()),
    ] {
        if section(name) {
            report += &crate::bench_cost::section(&bin, name, rounds, &amount)?;
        }
    }
    if section("vm") {
        util::step(
            "time to recover of a systemd unit in the VM: gimbal's RestartUnit next to Restart=",
        );
        report += &format!(
            "\nIn the VM test bed (systemd 252, Debian's 6.1 kernel, software emulation): a \
             systemd unit's time to recover, SIGKILL of its main process to its replacement's \
             first command; then what each syscall hook costs a getppid loop on a kernel that \
             has both (syscall_hooks_cost).\n\n{}",
            crate::vm::bench(std::time::Duration::from_secs(1800))?
        );
    }
    println!("\n{report}");
    let out = util::root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("syscall-overhead.md"), &report)?;
    println!(
        "(also written to target/bench/syscall-overhead.md; copy the table into BENCHMARKS.md)"
    );
    Ok(())
}

fn measure(tracer: Tracer, bin: &std::path::Path, syscalls: u64) -> anyhow::Result<Run> {
    let mut child = start(tracer, bin)?;
    let before = child.as_ref().map(|c| cpu_ns(c.id())).transpose()?;
    let t0 = Instant::now();
    // Pinned to CPU 0 so the loop never shares a core with itself across migrations; the
    // tracer's userspace is free to use the other core.
    let out = Command::new("taskset")
        .args(["-c", "0"])
        .arg(bin.join("gimbal-workload"))
        .args(["spin", &syscalls.to_string()])
        .output()
        .context("running the syscall loop")?;
    let wall = t0.elapsed();
    if !out.status.success() {
        bail!(
            "the syscall loop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let loop_ns: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("loop time")?;
    let (tracer_cpu, tracer_rss_kib) = match (&child, before) {
        (Some(c), Some(before)) => {
            let busy_ns = cpu_ns(c.id())? - before;
            (
                Some(busy_ns as f64 / wall.as_nanos() as f64),
                Some(rss_kib(c.id())?),
            )
        }
        _ => (None, None),
    };
    if let Some(c) = child.as_mut() {
        stop(c)?;
    }
    Ok(Run {
        ns_per_syscall: loop_ns / syscalls as f64,
        tracer_cpu,
        tracer_rss_kib,
    })
}

/// Starts the tracer and waits until it is attached.
fn start(tracer: Tracer, bin: &std::path::Path) -> anyhow::Result<Option<Child>> {
    let (mut cmd, ready): (Command, fn(&str) -> bool) = match tracer {
        Tracer::None => return Ok(None),
        Tracer::Floor => (Command::new(bin.join("gimbal-bench-floor")), |l| {
            l.contains("attached")
        }),
        Tracer::Clock | Tracer::ExitFloor | Tracer::DispatcherFloor => {
            let mut c = Command::new(bin.join("gimbal-bench-floor"));
            c.arg(match tracer {
                Tracer::Clock => "clock",
                Tracer::ExitFloor => "exit",
                _ => "fexit",
            });
            (c, |l| l.contains("attached"))
        }
        Tracer::Gimbal
        | Tracer::GimbalDispatcher
        | Tracer::GimbalHash
        | Tracer::GimbalFull
        | Tracer::GimbalSampled => {
            let mut c = Command::new(bin.join("gimbal"));
            // A port of its own; the log line announcing /metrics means all probes are in.
            c.args(["run", "--listen", "127.0.0.1:0"])
                .env("GIMBAL_LOG", "info")
                .env("NO_COLOR", "1");
            match tracer {
                Tracer::GimbalFull => _ = c.args(["--config", FULL_CONFIG]),
                Tracer::GimbalHash => _ = c.args(["--config", HASH_CONFIG]),
                Tracer::GimbalDispatcher => _ = c.args(["--config", DISPATCHER_CONFIG]),
                Tracer::GimbalSampled => _ = c.args(["--config", SAMPLED_CONFIG]),
                _ => {}
            }
            (c, |l| l.contains("metrics at"))
        }
        Tracer::Bpftrace => {
            let mut c = Command::new("bpftrace");
            // "Attaching N probes" comes before the attach; this line after every probe is in.
            c.args(["-e", BPFTRACE_HIST.trim()])
                .env("__BPFTRACE_NOTIFY_PROBES_ATTACHED", "1");
            (c, |l| l.contains("__BPFTRACE_NOTIFY_PROBES_ATTACHED"))
        }
    };
    // The floor says so on stdout, gimbal logs to stderr, bpftrace uses either (0.17
    // stderr, 0.23 and later stdout): read both.
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", tracer.name()))?;
    let (tx, rx) = std::sync::mpsc::channel();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    // Keep draining so the tracer never blocks on a full pipe.
                    continue;
                }
            }
        });
    }
    // Only the readers hold senders now: a tracer that exits ends the wait at once.
    drop(tx);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if ready(&line) => return Ok(Some(child)),
            Ok(_) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{} {}",
                    tracer.name(),
                    match e {
                        std::sync::mpsc::RecvTimeoutError::Timeout =>
                            "did not report it was attached within 60 s",
                        std::sync::mpsc::RecvTimeoutError::Disconnected =>
                            "exited before it was attached",
                    }
                );
            }
        }
    }
}

/// SIGINT until it exits: bpftrace can miss one that lands just before it sleeps.
fn stop(child: &mut Child) -> anyhow::Result<()> {
    for _ in 0..100 {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        // SAFETY: signalling our own child by pid, not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    anyhow::bail!("pid {} ignored SIGINT for 20 s", child.id())
}

/// CPU time of all the process's threads, in ns (schedstat: exact, unlike clock ticks).
fn cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(task?.path().join("schedstat")).unwrap_or_default();
        total += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Whether this kernel lets a program hook the syscall dispatcher (fexit on x64_sys_call):
/// the floor binary attaches it and says so, or fails.
fn dispatcher_hookable(bin: &std::path::Path) -> bool {
    match start(Tracer::DispatcherFloor, bin) {
        Ok(Some(mut child)) => {
            let _ = stop(&mut child);
            true
        }
        _ => {
            println!(
                "this kernel refuses fexit on x64_sys_call: the dispatcher's rows are left out"
            );
            false
        }
    }
}

fn report(runs: &[(Tracer, Run)], tracers: &[Tracer], syscalls: u64, rounds: u32) -> String {
    let of = |t: Tracer| runs.iter().filter(move |(x, _)| *x == t).map(|(_, r)| r);
    let ns = |t: Tracer| median(of(t).map(|r| r.ns_per_syscall).collect());
    let base = ns(Tracer::None);
    let added = |t: Tracer| ns(t) - base;
    let mut s = format!(
        "Syscall overhead, getppid loop pinned to CPU 0, {syscalls} syscalls x {rounds} interleaved rounds, medians.\n\
         Command: cargo xtask bench --syscalls {syscalls} --rounds {rounds}\n\n\
         | configuration | ns/syscall | added ns | tracer CPU (share of a core) | tracer RSS |\n|---|---|---|---|---|\n"
    );
    for &t in tracers {
        let cpu = of(t).filter_map(|r| r.tracer_cpu).collect::<Vec<_>>();
        let rss = of(t).filter_map(|r| r.tracer_rss_kib).max();
        s += &format!(
            "| {} | {:.1} | {:+.1} | {} | {} |\n",
            t.name(),
            ns(t),
            added(t),
            if cpu.is_empty() {
                "-".into()
            } else {
                format!("{:.3}%", median(cpu) * 100.0)
            },
            rss.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
        );
    }
    for t in [
        Tracer::Gimbal,
        Tracer::GimbalHash,
        Tracer::GimbalFull,
        Tracer::GimbalSampled,
    ] {
        s += &format!(
            "\n{} adds {:.2} x what bpftrace adds; {:.2} x the empty-pair floor's addition.\n",
            t.name(),
            added(t) / added(Tracer::Bpftrace),
            added(t) / added(Tracer::Floor)
        );
    }
    if tracers.contains(&Tracer::DispatcherFloor) {
        s += &format!(
            "\nThe two hooks: an empty fexit on the syscall dispatcher adds {:.1} ns per syscall, \
             the empty sys_exit program {:.1} ns; the defaults add {:.1} ns with hook = \
             \"dispatcher\", {:.1} ns on the tracepoints.\n",
            added(Tracer::DispatcherFloor),
            added(Tracer::ExitFloor),
            added(Tracer::GimbalDispatcher),
            added(Tracer::Gimbal)
        );
    } else {
        s += "\nThis kernel refuses fexit on the syscall dispatcher: its rows are left out.\n";
    }
    s += &format!(
        "\nAbove the empty sys_exit program: the defaults add {:.1} ns per syscall, with every count in the hash {:.1} ns.\n",
        added(Tracer::Gimbal) - added(Tracer::ExitFloor),
        added(Tracer::GimbalHash) - added(Tracer::ExitFloor)
    );
    s
}

/// Runs one of the benchmark binaries (`gimbal-bench-NAME COUNT`) and returns its
/// Markdown table, which it prints to stdout.
fn bench_binary(bin: &std::path::Path, name: &str, count: usize) -> anyhow::Result<String> {
    let program = format!("gimbal-bench-{name}");
    let out = Command::new(bin.join(&program))
        .arg(count.to_string())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{program} failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn alert_latency(bin: &std::path::Path, kills: usize) -> anyhow::Result<String> {
    Ok(format!(
        "\nAlert latency: SIGKILL of a watched process to TargetDown active in a local Alertmanager \
         (polled every 1 ms), {kills} kills.\n\n{}\nFor comparison: a Prometheus pipeline needs up to \
         scrape 1m + evaluation 1m + `for`; a Kubernetes liveness probe 10 s x 3 = 30 s.\n",
        bench_binary(bin, "alert", kills)?
    ))
}

fn kmsg_cost(bin: &std::path::Path, records: usize) -> anyhow::Result<String> {
    Ok(format!(
        "\nKernel log reader: {records} records written to /dev/kmsg (one in ten an NVIDIA XID \
         record naming a live process, counted and attributed to its cgroup), the CPU of the \
         agent's gpu-kmsg thread and of the whole agent, next to the agent idle for the same \
         time (`cargo xtask bench --only kmsg`). NVML's poll cost needs a GPU: not measured.\n\n{}",
        bench_binary(bin, "kmsg", records)?
    ))
}

fn noisy_neighbour(bin: &std::path::Path, reads: usize) -> anyhow::Result<String> {
    Ok(format!(
        "\nNoisy neighbour: a latency-critical service's read(2) of 8 MiB from /dev/zero, back to \
         back, timed by the service; next to 4 batch cgroups of 2 CPU spinners each.\n\n{}",
        bench_binary(bin, "noisy", reads)?
    ))
}

fn stall_check(bin: &std::path::Path, targets: usize) -> anyhow::Result<String> {
    Ok(format!(
        "\nStall check (TargetStalled, TrainingJobStalled): {targets} targets with `stall_for`, each \
         a real cgroup with a sleeping process, 3 latency histograms each; the watcher's tick \
         alone against the tick plus the check, interleaved rounds.\n\n{}",
        bench_binary(bin, "stall", targets)?
    ))
}

fn restart_latency(bin: &std::path::Path, kills: usize) -> anyhow::Result<String> {
    Ok(format!(
        "\nTime to recover: SIGKILL of a `[[supervise]]` process to its replacement announcing \
         itself, {kills} kills, next to a direct spawn of the same command.\n\n{}",
        bench_binary(bin, "restart", kills)?
    ))
}

fn scrape_cost(bin: &std::path::Path, cgroups: usize) -> anyhow::Result<String> {
    Ok(format!(
        "\nA busy scrape (`cargo xtask bench --only scrape`): {cgroups} cgroups, each a shell loop \
         of a few dozen distinct syscalls, every syscall timed; three agents side by side (the \
         defaults; no series budget; no budget and `classic_buckets = \"full\"`) and Debian's \
         node_exporter; each scraped as Prometheus does (Accept-Encoding: gzip) and without \
         gzip, then by two real Prometheus servers (classic, native histograms).\n\n{}",
        bench_binary(bin, "scrape", cgroups)?
    ))
}

fn traffic_share(bin: &std::path::Path, rounds: usize) -> anyhow::Result<String> {
    Ok(format!(
        "\nTraffic share: a real HAProxy in front of three backends in cgroups, one squeezed by CPU \
         hogs under a CFS quota; {rounds} rounds per mode, interleaved, with Gimbal's agent-check \
         and without (`cargo xtask bench --only lb`).\n\n{}",
        bench_binary(bin, "lb", rounds)?
    ))
}
