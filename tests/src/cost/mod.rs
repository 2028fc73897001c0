//! What the agent costs a real service (`cargo xtask bench --only redis,nginx,pipe`): a
//! workload runs against its server in interleaved rounds of five configurations (no agent,
//! gimbal at its embedded defaults, gimbal with every syscall timed, bpftrace doing the same
//! work, an empty `sys_exit` program: the floor), then once more per gimbal configuration
//! under the kernel's BPF statistics for a per-program breakdown.
//! Each workload (tests/src/bin/bench_{redis,nginx,pipe}.rs) owns its server and load
//! generator; this module owns the rounds, the tracers and the report.
pub mod bpf_stats;
pub mod proc_cpu;
mod report;
pub mod tracer;

use std::time::{Duration, Instant};

pub use tracer::{Config, FullMode};

/// One load run, measured by the workload itself.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Requests (or operations) served.
    pub requests: u64,
    /// Requests per second, as the load generator reports it.
    pub throughput: f64,
    /// The server's own CPU time (utime + stime) over the run.
    pub server_cpu: Duration,
}

impl Load {
    pub fn cpu_per_request_us(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }
}

/// A server under load. `run` is called once per configuration and round.
pub trait Workload {
    fn run(&mut self) -> Load;
}

/// What the report says about the section.
pub struct Section {
    /// One paragraph: server, load generator, pinning, sizes.
    pub what: String,
    /// The command that reproduces it.
    pub command: String,
    /// "request" or "op".
    pub unit: &'static str,
    pub rounds: u32,
    pub full: FullMode,
}

/// One round of one configuration.
pub struct Sample {
    pub config: Config,
    pub load: Load,
    /// The tracer's CPU over the run, as a share of one core.
    pub tracer_cpu: Option<f64>,
}

/// Per program of the agent, over one load run with the statistics on: (name, runs, ns).
pub struct Breakdown {
    pub load: Load,
    pub programs: Vec<(String, u64, u64)>,
}

/// Runs the section and returns its Markdown report.
pub fn run(section: &Section, workload: &mut dyn Workload) -> String {
    assert!(
        std::thread::available_parallelism().map_or(0, |n| n.get()) >= 2,
        "the cost benchmarks pin the server to CPU 0 and the load to CPU 1: they need 2 CPUs"
    );
    eprintln!("warm-up run (not counted)");
    workload.run();
    let mut samples = Vec::new();
    let mut foreign_rounds = 0;
    for round in 1..=section.rounds {
        let foreign = others_tracing_syscalls();
        if !foreign.is_empty() {
            foreign_rounds += 1;
            eprintln!("warning: other syscall tracers are loaded this round: {foreign:?}");
        }
        for config in Config::ALL {
            let sample = measure(config, &section.full, workload);
            eprintln!(
                "round {round}/{}: {:<40} {:>10.0} /s {:>8.2} us CPU per {}{}",
                section.rounds,
                report::name(config, &section.full),
                sample.load.throughput,
                sample.load.cpu_per_request_us(),
                section.unit,
                sample.tracer_cpu.map_or(String::new(), |c| format!(
                    ", tracer {:.1}% of a core",
                    c * 100.0
                )),
            );
            samples.push(sample);
        }
    }
    let mut breakdowns = Vec::new();
    for config in [Config::Defaults, Config::Full] {
        eprintln!(
            "breakdown round: {} with the kernel's BPF statistics on",
            report::name(config, &section.full)
        );
        breakdowns.push((config, breakdown(config, &section.full, workload)));
    }
    report::render(section, &samples, &breakdowns, foreign_rounds)
}

fn measure(config: Config, full: &FullMode, workload: &mut dyn Workload) -> Sample {
    let tracer = tracer::Tracer::start(config, full);
    let pid = tracer.pid();
    let before = pid.map(proc_cpu::sched_cpu);
    let t0 = Instant::now();
    let load = workload.run();
    let wall = t0.elapsed();
    let tracer_cpu = pid
        .zip(before)
        .map(|(p, b)| (proc_cpu::sched_cpu(p) - b).as_secs_f64() / wall.as_secs_f64());
    tracer.stop();
    Sample {
        config,
        load,
        tracer_cpu,
    }
}

fn breakdown(config: Config, full: &FullMode, workload: &mut dyn Workload) -> Breakdown {
    let stats = bpf_stats::StatsOn::enable();
    let tracer = tracer::Tracer::start(config, full);
    let ids = bpf_stats::prog_ids_of(tracer.pid().expect("the agent runs"));
    assert!(!ids.is_empty(), "the agent holds no BPF programs");
    let before = bpf_stats::snapshot(&ids);
    let load = workload.run();
    let after = bpf_stats::snapshot(&ids);
    tracer.stop();
    drop(stats);
    let programs = bpf_stats::delta(&before, &after);
    assert!(
        programs.iter().any(|(_, runs, _)| *runs > 0),
        "no program of the agent ran with the statistics on: {programs:?}"
    );
    Breakdown { load, programs }
}

/// Programs loaded by someone else that trace every syscall or context switch (another
/// agent, a bpftrace): they slow every configuration alike and make the round noisier.
fn others_tracing_syscalls() -> Vec<String> {
    let Ok(out) = std::process::Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
    else {
        return Vec::new();
    };
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    all.iter()
        .filter_map(|p| p.get("name")?.as_str())
        .filter(|n| {
            report::is_syscall_program(n) || *n == "sched_switch" || n.starts_with("tracepoint_raw")
        })
        .map(str::to_string)
        .collect()
}
