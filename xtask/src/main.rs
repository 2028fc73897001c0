//! `cargo xtask <command>`: the project's own set-up, build, run, test and bench steps,
//! so that a fresh machine needs nothing but the Rust toolchains.
mod bench;
mod bench_cost;
mod deb;
mod gpu_check;
mod kube_tools;
mod setup;
mod util;
mod vm;
mod watchdog;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Gimbal's developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need (idempotent; fast when all is present).
    Setup,
    /// Build the agent (release) with its kernel programs.
    Build,
    /// Set up, build, and run the agent with its embedded default config (needs root).
    Run {
        /// Arguments passed to `gimbal run`, e.g. `-- --listen 0.0.0.0:9977`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, then run every test: formatting, clippy, unit tests, and (as root) the
    /// integration tests that load the real programs into this kernel.
    Test {
        /// Only the tests whose name contains this filter (integration tests only).
        filter: Option<String>,
    },
    /// Build the Debian package into target/debian/ (cargo-deb).
    Deb {
        /// Debian version instead of the crate's (e.g. 0.1.0-2).
        #[arg(long)]
        deb_version: Option<String>,
    },
    /// Boot Debian's 6.1 kernel with systemd in qemu, install the .deb there, check the
    /// service end to end and run the probe tests on that kernel (root; the image is
    /// built once per machine and cached in /var/cache/gimbal-vm).
    VmTest {
        /// Give up on a guest that has not powered off after this many seconds.
        #[arg(long, default_value_t = 1200)]
        timeout: u64,
    },
    /// Regenerate packaging/kubernetes/gimbal.yaml: the Helm chart rendered with its
    /// defaults into namespace `gimbal` (fetches helm into target/tools/ if needed).
    Manifests,
    /// Compare the agent's GPU readings with `nvidia-smi -q -x` on this node (root): builds
    /// the agent and target/release/gimbal-gpu-check here; on a GPU node, run that binary
    /// next to the agent's (it builds nothing). Without a GPU it checks that the agent
    /// reports NVML not attached, and says so.
    GpuCheck,
    /// Syscall-overhead benchmark: no tracer, empty raw tracepoints, gimbal, bpftrace.
    Bench {
        /// Syscalls per measured run.
        #[arg(long, default_value_t = 2_000_000)]
        syscalls: u64,
        /// Interleaved rounds per configuration.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// Run only these sections (comma-separated): syscalls, alert, kmsg, restart, noisy, stall, scrape, lb, redis, nginx, pipe, vm.
        #[arg(long, value_delimiter = ',', value_parser = ["syscalls", "alert", "kmsg", "restart", "noisy", "stall", "scrape", "lb", "redis", "nginx", "pipe", "vm"])]
        only: Vec<String>,
        /// redis section: SETs and then GETs per run.
        #[arg(long, default_value_t = 50_000)]
        redis_requests: u64,
        /// nginx section: seconds of wrk per run.
        #[arg(long, default_value_t = 5)]
        wrk_seconds: u32,
        /// pipe section: `perf bench sched pipe` loops per run.
        #[arg(long, default_value_t = 300_000)]
        pipe_loops: u64,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Build => {
            setup::run()?;
            util::cargo(&["build", "--release", "-p", "gimbal"])
        }
        Command::Run { args } => {
            setup::run()?;
            util::cargo(&["build", "--release", "-p", "gimbal"])?;
            util::require_root("gimbal loads eBPF programs")?;
            let mut cmd = std::process::Command::new(util::root().join("target/release/gimbal"));
            cmd.arg("run").args(args);
            util::exec(cmd)
        }
        Command::Test { filter } => test(filter),
        Command::VmTest { timeout } => {
            setup::run()?;
            vm::test(std::time::Duration::from_secs(timeout))
        }
        Command::Deb { deb_version } => {
            setup::run()?;
            deb::build_as(deb_version.as_deref(), &util::root().join("target/debian")).map(|_| ())
        }
        Command::Manifests => kube_tools::manifests(),
        Command::GpuCheck => gpu_check::run(),
        Command::Bench {
            syscalls,
            rounds,
            only,
            redis_requests,
            wrk_seconds,
            pipe_loops,
        } => {
            setup::run()?;
            let load = bench::Load {
                redis_requests,
                wrk_seconds,
                pipe_loops,
            };
            bench::run(syscalls, rounds, &only, &load)
        }
    }
}

fn test(filter: Option<String>) -> anyhow::Result<()> {
    setup::run()?;
    util::step("formatting (cargo fmt --check)");
    util::cargo(&["fmt", "--all", "--", "--check"])?;
    util::step("lints (cargo clippy -D warnings)");
    util::cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    util::step("unit tests");
    util::cargo(&["test", "-p", "gimbal", "-p", "gimbal-common", "-p", "xtask"])?;
    if !util::is_root() {
        println!("xtask: SKIPPING the integration tests: they load eBPF programs into the kernel and need root (run `sudo -E cargo xtask test`)");
        return Ok(());
    }
    util::step("integration tests (real kernel, root)");
    // The tests start the real agent binary and a workload next to their own executables.
    util::build_release_binaries()?;
    deb::build()?;
    // Release: the workload loops and the agent should run as users run them.
    let mut args = vec![
        "test",
        "--release",
        "-p",
        "gimbal-tests",
        "--",
        "--test-threads=1",
        "--nocapture",
    ];
    if let Some(f) = filter.as_deref() {
        args.push(f);
    }
    // About 5 minutes here; the limit only turns a hang into a failure with a reason.
    watchdog::run_within(
        util::cargo_command(&args),
        std::time::Duration::from_secs(40 * 60),
    )?;
    if filter.is_some() {
        return Ok(());
    }
    // Under a second here (no GPU: NVML must report not attached); on a GPU node the
    // comparison with nvidia-smi, a few seconds.
    gpu_check::run()?;
    // The second kernel and a real systemd: about 5 minutes, 2 more the first time on a
    // machine while the image is built.
    vm::test(std::time::Duration::from_secs(1200))
}
