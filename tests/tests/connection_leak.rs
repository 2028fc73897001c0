//! 10,000 connections leave nothing behind (issue 15): the real agent takes connections of
//! every kind a client makes (requests kept alive, heads abandoned half-way, idle ones the
//! client closes, oversized heads, slow heads the agent must time out; with a TLS web
//! config: handshakes done and abandoned, plain HTTP to the TLS port), in batches under
//! its connection cap, while /healthz is probed on a connection of its own throughout.
//! Afterwards its open descriptors (/proc/<pid>/fd) are back to what they were before and
//! its resident memory has not grown past a small bound.
//!
//! Why it can fail (each tried with a temporary change to the agent, then reverted): a
//! connection whose socket the agent never closes (a dup'd descriptor per connection)
//! stops the run at the first batches' pacing below, its descriptors never back; 1 KiB kept
//! per connection (a leaked buffer) grew RSS by 5.3 MB over the run (memory freed by closed
//! connections is reused first, so about half shows), past the 2 MiB bound, where runs
//! without a leak grew 36-310 KiB; a stall of the agent's loop shows in the probes.
use std::{
    net::{SocketAddr, TcpStream},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use gimbal_tests::{
    agent::{healthz, Agent},
    conns::{get_kept_alive, tls_client, tls_connect, ClientConfig, Kind},
    pki::pki,
    require_root, wait_for, TempDir,
};

const CONNECTIONS: usize = 10_000;
/// Open at once: with the prober's, well under the agent's cap of 64 (metrics/http.rs), so
/// no connection is shed for want of a slot.
const BATCH: usize = 32;
/// Connections of each mode before the baseline is taken: the agent's lazily made state
/// (its threads, buffers, TLS config) is in it.
const WARM_UP: usize = 1_000;
/// Descriptors the agent may hold over its baseline after the connections: its own reads
/// (cgroup and /proc files it has open for a moment).
const FD_SLACK: usize = 4;
/// Resident memory the agent may gain over its baseline: allocator slack (36-310 KiB in
/// runs here). A leak of 1 KiB per connection showed as 5.3 MB.
const RSS_SLACK_KIB: u64 = 2 * 1024;
/// Each /healthz answer, connect to last byte (TLS handshake included), within this.
/// Measured here: p99 3 ms plain, 10 ms over TLS, the slowest 12 ms, while the test's
/// client keeps the other core busy. The VM is shared with other builds, so a probe may
/// wait on the scheduler for tens of ms; a real stall (a probe shed at the cap, the loop
/// blocked behind a scrape or a handshake, Nagle and a delayed ACK: 40 ms, a head timeout:
/// 5 s) is longer, or shows in the p99.
const PROBE_BOUND: Duration = Duration::from_millis(250);
/// What the issue asks of every answer, held here by 99 of 100.
const PROBE_P99: Duration = Duration::from_millis(100);
/// A slow client's head (or TLS handshake) must be done within the agent's 5 s
/// (conn::HEAD_TIMEOUT); it is closed by then.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

const PLAIN: &str = "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n";
const TLS: &str = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    Tls,
}

/// What each mode's connections do, in turn.
fn kinds(mode: Mode, i: usize) -> Kind {
    let plain = [
        Kind::KeptAlive {
            // Every 100th kept-alive connection scrapes (gzip); the rest ask for a route
            // that is not there.
            last: if i.is_multiple_of(400) {
                "/metrics"
            } else {
                "/nope"
            },
        },
        Kind::AbandonedHead,
        Kind::Idle,
        Kind::OversizedHead,
    ];
    let tls = [
        Kind::TlsKeptAlive,
        Kind::TlsAbandonedHandshake,
        Kind::Idle,
        Kind::PlainToTls,
    ];
    match mode {
        Mode::Plain => plain[i % 4],
        Mode::Tls => tls[i % 4],
    }
}

/// The web config file and the mode the prober speaks, switched together.
struct Web<'a> {
    file: &'a Path,
    mode: Arc<Mutex<Mode>>,
}

impl Web<'_> {
    /// Replaces the file whole (a new inode), as a Secret update does; the prober waits
    /// meanwhile, so no probe straddles the change.
    fn switch(&self, mode: Mode) {
        let mut m = self.mode.lock().unwrap();
        let tmp = self.file.with_extension("new");
        std::fs::write(&tmp, if mode == Mode::Tls { TLS } else { PLAIN }).unwrap();
        std::fs::rename(&tmp, self.file).unwrap();
        *m = mode;
    }
}

/// /healthz on a fresh connection every 20 ms until stopped: (over what, how long, status).
type Probes = Vec<(Mode, Duration, Result<u16, String>)>;

fn prober(
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    stop: Arc<AtomicBool>,
    ca: &Path,
) -> std::thread::JoinHandle<Probes> {
    let tls = tls_client(ca);
    std::thread::spawn(move || {
        let mut probes = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let m = *mode.lock().unwrap();
            let asked = Instant::now();
            let got = match m {
                Mode::Plain => healthz(addr),
                Mode::Tls => tls_connect(addr, &tls)
                    .map_err(|e| format!("TLS: {e}"))
                    .and_then(|s| get_kept_alive(&mut std::io::BufReader::new(s), "/healthz", "")),
            };
            probes.push((m, asked.elapsed(), got));
            std::thread::sleep(Duration::from_millis(20));
        }
        probes
    })
}

/// `n` connections of `mode`'s kinds in batches of `BATCH`: each batch opened, then each
/// connection does its part and is closed. A batch starts once the agent holds no more
/// than `fd_limit` descriptors (earlier batches closed). Failures, as text.
fn connections(
    agent: &Agent,
    tls: &Arc<ClientConfig>,
    mode: Mode,
    n: usize,
    fd_limit: usize,
) -> Vec<String> {
    let addr: SocketAddr = format!("127.0.0.1:{}", agent.port).parse().unwrap();
    let mut failures = Vec::new();
    for start in (0..n).step_by(BATCH) {
        wait_for(
            "earlier batches' connections closed by the agent",
            Duration::from_secs(5),
            || (agent.open_files() <= fd_limit).then_some(()),
        );
        let batch: Vec<_> = (start..(start + BATCH).min(n))
            .map(|i| (kinds(mode, i), kinds(mode, i).open(addr, tls)))
            .collect();
        for (kind, open) in batch {
            if let Err(e) = open.and_then(|o| kind.finish(o, tls)) {
                failures.push(e);
            }
        }
    }
    failures
}

/// Slow clients: `BATCH` plain connections that send half a head and wait. The agent must
/// close each within its head timeout (the read sees the end, or a reset).
fn slow_heads_are_closed(addr: SocketAddr) {
    use std::io::{Read as _, Write as _};
    let held: Vec<TcpStream> = (0..BATCH)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: loc").unwrap();
            s.set_read_timeout(Some(HEAD_TIMEOUT * 2)).unwrap();
            s
        })
        .collect();
    let t0 = Instant::now();
    for mut s in held {
        let mut buf = [0; 1024];
        // The agent closes without an answer or with a 408; then the end.
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
    let took = t0.elapsed();
    eprintln!("{BATCH} slow heads closed by the agent after {took:?}");
    assert!(
        took < HEAD_TIMEOUT + Duration::from_secs(2),
        "slow heads held {took:?}, past the agent's head timeout"
    );
}

/// Prints `mode`'s probe times: their (p99, max).
fn summary(mode: Mode, probes: &Probes) -> (Duration, Duration) {
    let mut took: Vec<Duration> = probes.iter().filter(|p| p.0 == mode).map(|p| p.1).collect();
    took.sort();
    let label = format!("/healthz over {mode:?}");
    let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize];
    eprintln!(
        "{label}: {} probes, p50 {:?}, p99 {:?}, max {:?}",
        took.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    (at(0.99), at(1.0))
}

#[test]
fn ten_thousand_connections_leave_no_descriptor_or_memory_behind() {
    if !require_root!() {
        return;
    }
    let t0 = Instant::now();
    let dir = TempDir::new("conn-leak");
    pki(&dir.0);
    let tls = tls_client(&dir.0.join("ca.crt"));
    let web_file = dir.0.join("web.yml");
    std::fs::write(&web_file, PLAIN).unwrap();
    let agent = Agent::start_config(&format!("web_config = \"{}\"\n", web_file.display()));
    let addr: SocketAddr = format!("127.0.0.1:{}", agent.port).parse().unwrap();
    let fd_start = agent.open_files();
    // Pacing only: the batches before may still be closing.
    let fd_limit = fd_start + 2 * BATCH;

    let web = Web {
        file: &web_file,
        mode: Arc::new(Mutex::new(Mode::Plain)),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let probes = prober(addr, web.mode.clone(), stop.clone(), &dir.0.join("ca.crt"));

    let mut failures = connections(&agent, &tls, Mode::Plain, WARM_UP, fd_limit);
    web.switch(Mode::Tls);
    failures.extend(connections(&agent, &tls, Mode::Tls, WARM_UP, fd_limit));
    web.switch(Mode::Plain);
    // The agent closes a connection a moment after its client: give it 5 s.
    let settled = |limit: usize| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n = agent.open_files();
            if n <= limit || Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let fd_base = settled(fd_start + FD_SLACK);
    assert!(
        fd_base <= fd_start + FD_SLACK,
        "after the warm-up the agent holds {fd_base} descriptors, {fd_start} at start"
    );
    let rss_base = agent.rss_kib();
    eprintln!(
        "after {} warm-up connections ({:?}): {fd_base} descriptors (at start {fd_start}), RSS {rss_base} KiB",
        2 * WARM_UP,
        t0.elapsed()
    );

    let run = Instant::now();
    failures.extend(connections(
        &agent,
        &tls,
        Mode::Plain,
        CONNECTIONS / 2,
        fd_limit,
    ));
    slow_heads_are_closed(addr);
    web.switch(Mode::Tls);
    failures.extend(connections(
        &agent,
        &tls,
        Mode::Tls,
        CONNECTIONS / 2,
        fd_limit,
    ));
    let during = run.elapsed();
    stop.store(true, Ordering::Relaxed);
    let probes = probes.join().expect("prober");

    let fd_after = settled(fd_base + FD_SLACK);
    let rss_after = agent.rss_kib();
    assert!(
        fd_after <= fd_base + FD_SLACK,
        "the agent holds {fd_after} descriptors after {CONNECTIONS} connections, {fd_base} before"
    );
    eprintln!(
        "after {CONNECTIONS} connections ({during:?}): {fd_after} descriptors, RSS {rss_after} KiB ({:+} KiB)",
        rss_after as i64 - rss_base as i64
    );
    let (plain, tls) = (summary(Mode::Plain, &probes), summary(Mode::Tls, &probes));
    let slowest = plain.1.max(tls.1);
    let bad: Vec<_> = probes
        .iter()
        .filter(|p| p.2 != Ok(200) || p.1 > PROBE_BOUND)
        .collect();
    assert!(
        failures.is_empty(),
        "{} connections did not go as their kind should, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        bad.is_empty(),
        "/healthz not answered 200 within {PROBE_BOUND:?} (slowest {slowest:?}): {:?}",
        &bad[..bad.len().min(10)]
    );
    assert!(
        plain.0 <= PROBE_P99 && tls.0 <= PROBE_P99,
        "/healthz p99 {:?} plain, {:?} over TLS: over {PROBE_P99:?}",
        plain.0,
        tls.0
    );
    // The prober ran throughout: one probe per ~20 ms of the run, at least a quarter of them.
    assert!(
        probes.len() as u128 >= t0.elapsed().as_millis() / 80,
        "{} probes in {:?}",
        probes.len(),
        t0.elapsed()
    );
    assert!(
        rss_after <= rss_base + RSS_SLACK_KIB,
        "RSS grew {rss_base} -> {rss_after} KiB over {CONNECTIONS} connections"
    );
    assert_eq!(agent.stop(), 0, "a clean stop");
}
