//! `cargo xtask bench --only scrape`: what a busy scrape costs on the wire and in series.
//! Two agents run side by side (default classic buckets, one per doubling; and
//! `classic_buckets = "full"`, the 98 kernel buckets); CGROUPS cgroups each run a shell
//! loop with a couple of dozen distinct syscalls; then each agent is scraped as Prometheus
//! scrapes (OpenMetrics, Accept-Encoding: gzip) and without gzip, and the agent's CPU
//! (utime + stime) over 20 scrapes of each. Prints a Markdown table.
//!
//! gimbal-bench-scrape CGROUPS
use std::{io::Read as _, process::Command, time::Duration};

use gimbal_tests::{
    agent::{request_raw, Agent},
    wait_status, TempDir, TestCgroup,
};

const OPENMETRICS: &str =
    "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";

fn agent(dir: &TempDir, name: &str, labels: &str) -> Agent {
    let state = dir.0.join(name);
    std::fs::create_dir_all(&state).unwrap();
    let config = dir.0.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[gpu]\nkmsg = false\nnvml = false\n[labels]\n{labels}\n",
            state.display()
        ),
    )
    .unwrap();
    Agent::start_with(&["--config", config.to_str().unwrap()])
}

struct Scrape {
    series: usize,
    latency_series: usize,
    pairs: usize,
    identity: usize,
    gzip: usize,
    /// The agent's CPU per scrape, ms: (identity, gzip).
    cpu_ms: (f64, f64),
}

/// Scrapes timed for the agent's CPU, per coding.
const TIMED: u32 = 20;

/// The agent's utime + stime, in seconds.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the agent's stat");
    let after = stat.rsplit_once(") ").map_or("", |(_, a)| a);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / hz
}

fn scrape(agent: &Agent) -> Scrape {
    let get = |gzip: bool| {
        let headers = [OPENMETRICS, "Accept-Encoding: gzip"];
        let (status, head, body) = request_raw(
            agent.port,
            "GET",
            "/metrics",
            headers[..1 + gzip as usize].iter().copied(),
        )
        .expect("a scrape");
        assert_eq!(status, 200, "{head}");
        assert_eq!(head.contains("Content-Encoding: gzip"), gzip, "{head}");
        body
    };
    let timed = |gzip: bool| {
        let before = cpu_s(agent.child.id());
        for _ in 0..TIMED {
            get(gzip);
        }
        (cpu_s(agent.child.id()) - before) * 1e3 / TIMED as f64
    };
    let cpu_ms = (timed(false), timed(true));
    let identity = get(false);
    let gzip = get(true);
    let mut unpacked = String::new();
    flate2::read::GzDecoder::new(&gzip[..])
        .read_to_string(&mut unpacked)
        .expect("a gzip body");
    let text = String::from_utf8(identity).expect("text");
    let samples = |body: &str, prefix: &str| {
        body.lines()
            .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
            .count()
    };
    Scrape {
        series: samples(&text, ""),
        latency_series: samples(&text, "gimbal_syscall_latency_seconds"),
        pairs: samples(&text, "gimbal_syscall_latency_seconds_count"),
        identity: text.len(),
        // Two scrapes a moment apart: the decoded body may hold a newer tick's values, so
        // only its size is compared, not its bytes (the unit tests compare bytes).
        gzip: {
            assert!(unpacked.len().abs_diff(text.len()) * 10 < text.len());
            gzip.len()
        },
        cpu_ms,
    }
}

fn main() {
    let cgroups: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    let dir = TempDir::new("bench-scrape");
    let default = agent(&dir, "default", "");
    let full = agent(&dir, "full", "classic_buckets = \"full\"");
    // Busy: each cgroup's shell execs, reads, lists, stats, writes, sleeps and forks.
    let script = "for i in 1 2 3; do ls -la /usr/lib /proc/self > /dev/null; cat /etc/os-release /proc/self/status > /dev/null; date > /dev/null; sleep 0.01; done";
    let groups: Vec<TestCgroup> = (0..cgroups)
        .map(|_| TestCgroup::new("bench-scrape"))
        .collect();
    let mut children: Vec<_> = groups
        .iter()
        .map(|g| g.spawn_into(Command::new("sh").args(["-c", script])))
        .collect();
    for child in &mut children {
        let status = wait_status(child);
        assert_eq!(status, 0, "the workload failed");
    }
    // Two ticks: every agent has read the maps since the workloads ended.
    std::thread::sleep(Duration::from_secs(3));
    let rows = [
        ("one per doubling (default)", scrape(&default)),
        ("\"full\"", scrape(&full)),
    ];
    println!(
        "| classic_buckets | (cgroup, syscall) label sets | series | latency series | identity bytes | gzip bytes | identity / gzip | agent CPU per scrape, identity | agent CPU per scrape, gzip |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, s) in &rows {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {:.1} | {:.1} ms | {:.1} ms |",
            s.pairs,
            s.series,
            s.latency_series,
            s.identity,
            s.gzip,
            s.identity as f64 / s.gzip as f64,
            s.cpu_ms.0,
            s.cpu_ms.1
        );
    }
    let (d, f) = (&rows[0].1, &rows[1].1);
    println!(
        "\nThe default's gzip scrape is {:.0}x smaller on the wire than the full resolution's uncompressed one, with {:.1}x fewer series.",
        f.identity as f64 / d.gzip as f64,
        f.series as f64 / d.series as f64
    );
    drop(children);
    assert_eq!(default.stop(), 0);
    assert_eq!(full.stop(), 0);
}
