//! `cargo xtask bench --only pipe`: what the agent costs a context-switch-heavy ping-pong.
//! `perf bench sched pipe` (Debian linux-perf): two processes pinned together to CPU 0
//! pass a token over two pipes LOOPS times (every operation a write, a read and a context
//! switch each way); in interleaved rounds with no agent, gimbal at its defaults, gimbal
//! with every syscall timed and bpftrace (tests/src/cost). Prints a Markdown report.
//!
//! gimbal-bench-pipe ROUNDS LOOPS [FULL_CONFIG]
use std::{
    io::Read as _,
    process::{Command, Stdio},
    time::Duration,
};

use gimbal_tests::cost::{self, FullMode, Load, Section, Workload};

struct Pipe {
    loops: u64,
}

impl Workload for Pipe {
    #[expect(clippy::zombie_processes, reason = "reaped by wait4, for its rusage")]
    fn run(&mut self) -> Load {
        let mut child = Command::new("taskset")
            .args(["-c", "0", "perf", "bench", "sched", "pipe", "-l"])
            .arg(self.loops.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("perf (Debian linux-perf; cargo xtask bench installs it)");
        let (mut out, mut err) = (String::new(), String::new());
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        // wait4, not wait: its rusage is the CPU of perf and of the child it reaped, both
        // ends of the ping-pong, to the microsecond.
        let (status, cpu) = wait4(child.id());
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "perf bench sched pipe failed (wait status {status}): {err}{out}"
        );
        let rate = parse_ops_per_sec(&out)
            .unwrap_or_else(|| panic!("perf's output has no ops/sec: {out}"));
        Load {
            requests: self.loops,
            throughput: rate,
            server_cpu: cpu,
        }
    }
}

/// Reaps our child `pid`: (wait status, its and its reaped children's utime + stime).
fn wait4(pid: u32) -> (i32, Duration) {
    let mut status = 0;
    // SAFETY: rusage is plain integers: all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, not yet reaped, into locals that outlive the call.
    let r = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    assert_eq!(r, pid as i32, "wait4: {}", std::io::Error::last_os_error());
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (status, tv(usage.ru_utime) + tv(usage.ru_stime))
}

/// perf's "     111592 ops/sec" line.
fn parse_ops_per_sec(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.trim().strip_suffix("ops/sec"))?
        .trim()
        .parse()
        .ok()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let loops: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(300_000);
    let full = FullMode::read(std::path::Path::new(
        &args.next().unwrap_or(cost::tracer::FULL_CONFIG.into()),
    ));
    let section = Section {
        what: format!(
            "Pipe ping-pong: `perf bench sched pipe -l {loops}` (Debian linux-perf), both processes \
             pinned to CPU 0, so every operation is a write, a read and a context switch each \
             way; its CPU is both processes' utime + stime (wait4's rusage)."
        ),
        command: format!("cargo xtask bench --only pipe --rounds {rounds} --pipe-loops {loops}"),
        unit: "op",
        rounds,
        full,
    };
    println!("{}", cost::run(&section, &mut Pipe { loops }));
}

#[cfg(test)]
mod tests {
    #[test]
    fn perf_output_gives_the_rate() {
        let out = "# Running 'sched/pipe' benchmark:\n\n     Total time: 1.792 [sec]\n\n       8.961195 usecs/op\n         111592 ops/sec\n";
        assert_eq!(super::parse_ops_per_sec(out), Some(111592.0));
    }
}
