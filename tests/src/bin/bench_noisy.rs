//! `cargo xtask bench`'s noisy-neighbour scenario: a latency-critical service (back-to-back
//! CPU-bound read(2)s of 8 MiB from /dev/zero, each timed by the service itself) in its own
//! CPU cgroup, next to four best-effort batch groups of two CPU spinners each. Three phases
//! in one run: the service alone, with the hogs, and with the hogs while the agent
//! (enforce) holds them to a CPU quota because the service's latency SLI fell below its
//! objective (TargetLatencySLIBelowObjective). Prints a Markdown table.
//!
//! gimbal-bench-noisy READS
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use gimbal_tests::{
    agent::Agent, quantiles_ms, sibling_binary, spawn_in, wait_until, CpuGroup, CpuTarget, Proc,
    TempDir,
};

/// Per batch group: 0.05 CPU, 0.2 of a CPU for the four together.
const QUOTA: f64 = 0.05;
const GROUPS: usize = 4;
const SPINNERS: usize = 2;
const MIB: u64 = 8;
/// A read slower than this is slow for the latency SLI.
const THRESHOLD_MS: f64 = 2.0;

/// The service's cgroups: for the CPU controller and for the agent's target.
struct Service(CpuTarget);

impl Service {
    fn new() -> Self {
        Self(CpuTarget::new("critical"))
    }

    fn target(&self) -> String {
        self.0.target()
    }

    fn spawn(&self, reads: u64, out: Stdio) -> Proc {
        let mut cmd = Command::new(sibling_binary("gimbal-workload"));
        cmd.args(["reads", &reads.to_string(), &MIB.to_string()])
            .stdout(out);
        self.0.spawn(&mut cmd)
    }

    /// One measured run: each read's duration.
    fn measure(&self, reads: u64) -> Vec<Duration> {
        let out = self.spawn(reads, Stdio::piped()).into_inner();
        let out = out.wait_with_output().expect("the service's output");
        assert!(out.status.success(), "the service failed: {}", out.status);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| Duration::from_nanos(l.parse().expect("ns per line")))
            .collect()
    }
}

fn main() {
    let reads: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let service = Service::new();
    let batch: Vec<CpuGroup> = (0..GROUPS).map(|_| CpuGroup::new()).collect();

    eprintln!("phase 1/3: the service alone, {reads} reads");
    let alone = service.measure(reads);

    let hogs: Vec<Proc> = batch
        .iter()
        .flat_map(|g| (0..SPINNERS).map(move |_| g))
        .map(|g| {
            let mut cmd = Command::new(sibling_binary("gimbal-workload"));
            cmd.args(["spin", "1000000000000"]).stdout(Stdio::null());
            spawn_in(&mut cmd, &[g.dir().join("cgroup.procs")])
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    eprintln!("phase 2/3: the service next to {GROUPS} batch groups x {SPINNERS} spinners");
    let noisy = service.measure(reads);

    eprintln!("phase 3/3: the same, with the agent throttling the batch groups");
    let dir = TempDir::new("bench-noisy");
    let config = dir.0.join("gimbal.toml");
    let cgroups: Vec<String> = batch.iter().map(CpuGroup::relative).collect();
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[alerting]\nlatency_for = \"0s\"\n\
             [remediation]\nmode = \"enforce\"\n\
             [[targets]]\nname = \"critical\"\ncgroup = \"{}\"\nlatency_syscalls = [\"read\"]\n\
             latency_threshold = \"{THRESHOLD_MS}ms\"\nlatency_objective = 0.99\n\
             [[throttle]]\nname = \"protect-critical\"\nwhen = \"TargetLatencySLIBelowObjective\"\n\
             target = \"critical\"\ncgroups = {cgroups:?}\ncpu = {QUOTA}\nttl = \"10m\"\n",
            dir.0.display(),
            service.target()
        ),
    )
    .unwrap();
    // The service keeps working while the agent watches it; the SLI it computes from its
    // own histograms fires the alert.
    let driver = service.spawn(u64::MAX / 2, Stdio::null());
    let agent = Agent::start_with(&["--config", config.to_str().unwrap()]);
    let t0 = Instant::now();
    let done = "gimbal_remediations_total{action=\"throttle\",result=\"done\"} ";
    wait_until(
        "the batch groups throttled",
        Duration::from_secs(120),
        || agent.metric(done) == Some(GROUPS as f64),
    );
    let detected = t0.elapsed();
    drop(driver);
    let protected = service.measure(reads);
    assert_eq!(agent.stop(), 0, "the agent did not stop cleanly");
    drop(hogs);

    println!(
        "| phase | reads | p50 | p99 | max | reads over {THRESHOLD_MS} ms |\n|---|---|---|---|---|---|"
    );
    for (name, mut v) in [
        ("the service alone", alone),
        ("next to the batch hogs", noisy),
        ("next to the hogs, gimbal throttling them", protected),
    ] {
        let over = v
            .iter()
            .filter(|d| d.as_secs_f64() * 1000.0 > THRESHOLD_MS)
            .count();
        let (p50, p99, max) = quantiles_ms(&mut v);
        println!(
            "| {name} | {} | {p50:.2} ms | {p99:.2} ms | {max:.2} ms | {:.2} % |",
            v.len(),
            over as f64 * 100.0 / v.len() as f64
        );
    }
    println!(
        "\nThe agent throttled the {GROUPS} batch groups to {QUOTA} CPU each {:.1} s after it \
         reported ready: the share of the service's reads faster than {THRESHOLD_MS} ms, its \
         latency SLI, fell below the 0.99 objective.",
        detected.as_secs_f64()
    );
}
