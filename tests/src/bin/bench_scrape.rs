//! `cargo xtask bench --only scrape`: what a busy scrape costs on the wire, in series and
//! in a Prometheus server, next to Debian's prometheus-node-exporter on the same machine.
//! Three agents run side by side, every syscall timed (`timed_syscalls = ["*"]`): the
//! defaults (series budget, one classic bucket per doubling), the same without the series
//! budget (the exposition before it), and `classic_buckets = "full"` without it (before
//! issue 15). CGROUPS cgroups each run a shell loop with a couple of dozen distinct
//! syscalls; then each exporter is scraped as Prometheus scrapes (Accept-Encoding: gzip)
//! and without gzip, with its CPU (utime + stime) over 20 scrapes of each; last, two real
//! Prometheus servers (classic, and native histograms) scrape all four, and report what
//! they ingest, and one server per exporter and kind (scraping only it) what the series
//! cost it in memory. Prints Markdown.
//!
//! gimbal-bench-scrape CGROUPS
use std::{
    io::Read as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use gimbal_tests::{
    agent::{http_get, request_raw, Agent},
    free_port,
    prometheus::Prometheus,
    terminate, wait_status, TempDir, TestCgroup,
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
            "[agent]\nstate_dir = \"{}\"\n[probes.syscall_latency]\ntimed_syscalls = [\"*\"]\n\
             [gpu]\nkmsg = false\nnvml = false\n[labels]\n{labels}\n",
            state.display()
        ),
    )
    .unwrap();
    Agent::start_with(&["--config", config.to_str().unwrap()])
}

/// Debian's node_exporter with its default collectors, as its own process on a free
/// loopback port (its system unit is never touched); killed on drop.
struct NodeExporter {
    child: Child,
    port: u16,
}

impl NodeExporter {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-node-exporter (cargo xtask bench installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(port, "/metrics").map(|r| r.0) != Some(200) {
            assert!(Instant::now() < deadline, "node_exporter not up on {port}");
            std::thread::sleep(Duration::from_millis(200));
        }
        Self { child, port }
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

struct Scrape {
    series: usize,
    latency_series: usize,
    /// (cgroup, syscall) label sets of gimbal_syscalls_total (own and folded).
    pairs: usize,
    identity: usize,
    gzip: usize,
    /// CPU per scrape, ms: (identity, gzip).
    cpu_ms: (f64, f64),
}

/// Scrapes timed for CPU, per coding.
const TIMED: u32 = 20;

/// A process's utime + stime, in seconds.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = stat.rsplit_once(") ").map_or("", |(_, a)| a);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / hz
}

fn scrape(port: u16, pid: u32) -> Scrape {
    let get = |gzip: bool| {
        let headers = [OPENMETRICS, "Accept-Encoding: gzip"];
        let (status, head, body) = request_raw(
            port,
            "GET",
            "/metrics",
            headers[..1 + gzip as usize].iter().copied(),
        )
        .expect("a scrape");
        assert_eq!(status, 200, "{head}");
        let gzipped = head.to_ascii_lowercase().contains("content-encoding: gzip");
        assert_eq!(gzipped, gzip, "{head}");
        body
    };
    let timed = |gzip: bool| {
        let before = cpu_s(pid);
        for _ in 0..TIMED {
            get(gzip);
        }
        (cpu_s(pid) - before) * 1e3 / TIMED as f64
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
            .filter(|l| !l.starts_with('#') && !l.is_empty() && l.starts_with(prefix))
            .count()
    };
    Scrape {
        series: samples(&text, ""),
        latency_series: samples(&text, "gimbal_syscall_latency_seconds"),
        pairs: samples(&text, "gimbal_syscalls_total{"),
        identity: text.len(),
        // Two scrapes a moment apart: only the sizes are compared.
        gzip: {
            assert!(unpacked.len().abs_diff(text.len()) * 10 < text.len());
            gzip.len()
        },
        cpu_ms,
    }
}

/// What a Prometheus server ingests from each job: (samples per scrape, series in its
/// head), once every job has been scraped and a few more scrapes (1 s apart) later.
fn ingested(p: &Prometheus, jobs: &[&str]) -> Vec<(f64, f64)> {
    let read = || -> Option<Vec<(f64, f64)>> {
        jobs.iter()
            .map(|job| {
                let samples = p.query_one(&format!("scrape_samples_scraped{{job=\"{job}\"}}"))?;
                let series = p.query_one(&format!("count({{job=\"{job}\"}})"))?;
                Some((samples, series))
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while read().is_none() {
        assert!(
            Instant::now() < deadline,
            "Prometheus scraped not every job"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(4));
    read().expect("every job still scraped")
}

/// What one job's series cost a Prometheus server that scrapes only them.
#[derive(Clone)]
struct Memory {
    series: f64,
    /// Bytes of the label values the head holds, from the TSDB status
    /// (`memoryInBytesByLabelName`, summed): interned, so they grow with distinct values.
    label_bytes: f64,
    /// Go heap in use above a server that scrapes nothing (the least of a few reads a
    /// second apart: what stays after a collection).
    heap_bytes: f64,
}

/// For each job of `config`, a classic and a native-histogram Prometheus scraping only that
/// job (all at once, beside one scraping nothing), read a few scrapes in.
fn memory_per_series(config: &str, jobs: &[&str]) -> Vec<[Memory; 2]> {
    let native_flag = ["--enable-feature=native-histograms"];
    let only = |job: &str| {
        let start = config
            .find(&format!("  - job_name: {job}\n"))
            .expect("the job is in the config");
        let rest = &config[start + 1..];
        let end = rest
            .find("  - job_name:")
            .map_or(config.len(), |e| start + 1 + e);
        format!("scrape_configs:\n{}", &config[start..end])
    };
    let idle = Prometheus::start_config("scrape_configs: []\n");
    let servers: Vec<[Prometheus; 2]> = jobs
        .iter()
        .map(|job| {
            [
                Prometheus::start_config(&only(job)),
                Prometheus::start_config_args(&only(job), &native_flag),
            ]
        })
        .collect();
    for (pair, job) in servers.iter().zip(jobs) {
        for p in pair {
            ingested(p, &[job]);
        }
    }
    let all: Vec<&Prometheus> = std::iter::once(&idle)
        .chain(servers.iter().flatten())
        .collect();
    let mut heap = vec![f64::INFINITY; all.len()];
    for _ in 0..5 {
        for (least, p) in heap.iter_mut().zip(&all) {
            *least = least.min(heap_in_use(p));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let baseline = heap[0];
    servers
        .iter()
        .flatten()
        .zip(&heap[1..])
        .map(|(p, heap)| {
            let (series, label_bytes) = tsdb_status(p);
            Memory {
                series,
                label_bytes,
                heap_bytes: heap - baseline,
            }
        })
        .collect::<Vec<_>>()
        .chunks(2)
        .map(|pair| [pair[0].clone(), pair[1].clone()])
        .collect()
}

/// (head series, bytes of label memory summed over the label names it lists).
fn tsdb_status(p: &Prometheus) -> (f64, f64) {
    let (status, body) = http_get(p.port, "/api/v1/status/tsdb").expect("TSDB status");
    assert_eq!(status, 200, "TSDB status: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("TSDB status is JSON");
    let series = v["data"]["headStats"]["numSeries"]
        .as_f64()
        .expect("headStats.numSeries");
    let labels = v["data"]["memoryInBytesByLabelName"]
        .as_array()
        .expect("memoryInBytesByLabelName")
        .iter()
        .map(|e| e["value"].as_f64().expect("a byte count"))
        .sum();
    (series, labels)
}

/// The server's own `go_memstats_heap_inuse_bytes`.
fn heap_in_use(p: &Prometheus) -> f64 {
    let (_, body) = http_get(p.port, "/metrics").expect("Prometheus' own /metrics");
    body.lines()
        .find_map(|l| l.strip_prefix("go_memstats_heap_inuse_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .expect("go_memstats_heap_inuse_bytes")
}

fn main() {
    let cgroups: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let dir = TempDir::new("bench-scrape");
    let default = agent(&dir, "default", "");
    let unbudgeted = agent(&dir, "unbudgeted", "max_series = 100000000");
    let full = agent(
        &dir,
        "full",
        "max_series = 100000000\nclassic_buckets = \"full\"",
    );
    let node = NodeExporter::start();
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
    let targets = [
        ("gimbal, defaults", default.port, default.child.id()),
        (
            "gimbal, no series budget",
            unbudgeted.port,
            unbudgeted.child.id(),
        ),
        (
            "gimbal, no budget, \"full\" buckets",
            full.port,
            full.child.id(),
        ),
        ("node_exporter 1.5 (Debian)", node.port, node.child.id()),
    ];
    let rows: Vec<Scrape> = targets
        .iter()
        .map(|&(_, port, pid)| scrape(port, pid))
        .collect();

    // Real Prometheus servers (Debian's 2.42), classic and with native histograms, each
    // scraping all four.
    let jobs = ["default", "unbudgeted", "full", "node"];
    let config: String = jobs
        .iter()
        .zip(&targets)
        .map(|(job, (_, port, _))| {
            format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
            )
        })
        .collect();
    let config = format!("scrape_configs:\n{config}");
    let classic = Prometheus::start_config(&config);
    let native = Prometheus::start_config_args(&config, &["--enable-feature=native-histograms"]);
    let in_classic = ingested(&classic, &jobs);
    let in_native = ingested(&native, &jobs);
    drop((classic, native));
    let memory = memory_per_series(&config, &jobs);

    println!(
        "| exporter | (cgroup, syscall) label sets | series | latency series | identity bytes | gzip bytes | identity / gzip | CPU per scrape, identity | CPU per scrape, gzip | Prometheus: samples per scrape | head series | with native histograms: samples per scrape | head series |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, s) in rows.iter().enumerate() {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.1} | {:.1} ms | {:.1} ms | {} | {} | {} | {} |",
            targets[i].0,
            s.pairs,
            s.series,
            s.latency_series,
            s.identity,
            s.gzip,
            s.identity as f64 / s.gzip as f64,
            s.cpu_ms.0,
            s.cpu_ms.1,
            in_classic[i].0,
            in_classic[i].1,
            in_native[i].0,
            in_native[i].1,
        );
    }
    println!(
        "\nWhat the series cost a Prometheus (2.42) in memory, one server per exporter and kind \
         scraping only it: its Go heap in use above a server scraping nothing (the least of 5 \
         reads a second apart), and the bytes of label values its TSDB status reports \
         (`memoryInBytesByLabelName`, summed; values are interned, so this grows with distinct \
         values, not with series).\n"
    );
    println!(
        "| exporter | classic: head series | heap | heap per series | label value bytes | native: head series | heap | heap per series | label value bytes |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mib = |b: f64| format!("{:.1} MiB", b / 1048576.0);
    for (i, [c, n]) in memory.iter().enumerate() {
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {:.0} | {} |",
            targets[i].0,
            c.series,
            mib(c.heap_bytes),
            c.heap_bytes / c.series,
            c.label_bytes,
            n.series,
            mib(n.heap_bytes),
            n.heap_bytes / n.series,
            n.label_bytes,
        );
    }
    let (d, f, n) = (&rows[0], &rows[2], &rows[3]);
    println!(
        "\nAgainst node_exporter in the same run: the defaults export {:.2}x its series, \
         {:.2}x its gzip bytes, at {:.2}x its CPU per gzip scrape; a classic Prometheus \
         keeps {:.2}x its head series, one with native histograms {:.2}x. The defaults' gzip \
         scrape is {:.0}x smaller than the full, unbudgeted, uncompressed one (before issue 15).",
        d.series as f64 / n.series as f64,
        d.gzip as f64 / n.gzip as f64,
        d.cpu_ms.1 / n.cpu_ms.1,
        in_classic[0].1 / in_classic[3].1,
        in_native[0].1 / in_native[3].1,
        f.identity as f64 / d.gzip as f64,
    );
    drop(children);
    assert_eq!(default.stop(), 0);
    assert_eq!(unbudgeted.stop(), 0);
    assert_eq!(full.stop(), 0);
}
