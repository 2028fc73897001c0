//! `cargo xtask bench --only redis`: what the agent costs a real Redis. Debian's
//! redis-server pinned to CPU 0 (no persistence, its own directory and a free loopback
//! port), redis-benchmark pinned to CPU 1 (20 clients, REQUESTS SETs then REQUESTS GETs),
//! in interleaved rounds with no agent, gimbal at its defaults, gimbal with every syscall
//! timed and bpftrace (tests/src/cost). Prints a Markdown report.
//!
//! gimbal-bench-redis ROUNDS REQUESTS [FULL_CONFIG]
use std::{net::TcpStream, process::Command, time::Duration};

use gimbal_tests::{
    cost::{self, proc_cpu, FullMode, Load, Section, Workload},
    free_port, terminate, wait_until, Proc, TempDir,
};

const CLIENTS: u32 = 20;

struct Redis {
    server: Proc,
    port: u16,
    requests: u64,
    _dir: TempDir,
}

impl Redis {
    fn start(requests: u64) -> Self {
        let dir = TempDir::new("bench-redis");
        let port = free_port();
        let server = Proc::spawn(
            Command::new("taskset")
                .args(["-c", "0", "redis-server", "--port", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--daemonize", "no", "--dir"])
                .arg(&dir.0)
                .arg("--logfile")
                .arg(dir.0.join("redis.log")),
        );
        wait_until("redis-server listens", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self {
            server,
            port,
            requests,
            _dir: dir,
        }
    }
}

impl Workload for Redis {
    fn run(&mut self) -> Load {
        let pid = self.server.id();
        let before = proc_cpu::stat_cpu(pid).expect("redis-server runs");
        let out = Command::new("taskset")
            .args(["-c", "1", "redis-benchmark", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-c", &CLIENTS.to_string()])
            .args(["-n", &self.requests.to_string(), "-t", "set,get", "--csv"])
            .output()
            .expect("redis-benchmark (Debian redis-tools; cargo xtask bench installs it)");
        let cpu = proc_cpu::stat_cpu(pid).expect("redis-server still runs") - before;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "redis-benchmark failed: {}{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rps = parse_csv(&text);
        assert_eq!(rps.len(), 2, "expected SET and GET rows: {text}");
        // Both tests ran `requests` each: the rate over both is the harmonic mean.
        let seconds: f64 = rps.iter().map(|r| self.requests as f64 / r).sum();
        Load {
            requests: 2 * self.requests,
            throughput: 2.0 * self.requests as f64 / seconds,
            server_cpu: cpu,
        }
    }
}

/// The rps column of redis-benchmark's CSV (`"SET","19952.12",...`).
fn parse_csv(text: &str) -> Vec<f64> {
    text.lines()
        .filter(|l| l.starts_with("\"SET\"") || l.starts_with("\"GET\""))
        .filter_map(|l| l.split(',').nth(1)?.trim_matches('"').parse().ok())
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let requests: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(50_000);
    let full = FullMode::read(std::path::Path::new(
        &args.next().unwrap_or(cost::tracer::FULL_CONFIG.into()),
    ));
    let mut redis = Redis::start(requests);
    let section = Section {
        what: format!(
            "Redis: Debian's redis-server (no persistence) pinned to CPU 0, redis-benchmark pinned \
             to CPU 1 with {CLIENTS} clients, {requests} SETs then {requests} GETs per run; \
             throughput over both; the server's CPU is its utime + stime (/proc/<pid>/stat)."
        ),
        command: format!(
            "cargo xtask bench --only redis --rounds {rounds} --redis-requests {requests}"
        ),
        unit: "request",
        rounds,
        full,
    };
    let report = cost::run(&section, &mut redis);
    terminate(&mut redis.server);
    println!("{report}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_csv_gives_set_and_get_rates() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\"\n\"SET\",\"19952.12\",\"0.816\"\n\"GET\",\"19036.74\",\"0.863\"\n";
        assert_eq!(super::parse_csv(csv), vec![19952.12, 19036.74]);
    }
}
