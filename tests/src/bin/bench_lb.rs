//! `cargo xtask bench --only lb`: traffic moved off a squeezed backend. A real HAProxy in
//! front of three real HTTP backends (each in a cgroup of its own, watched by the agent as
//! a target), under a bounded load generator on loopback. One backend (b) is squeezed: two
//! CPU spinners join its cgroup and the group is held to 0.2 CPU (a CFS quota), so b's
//! server waits for CPU behind them. Rounds alternate between two HAProxy backends over the
//! same three servers: `be_gimbal`, whose servers take their weight from Gimbal's
//! agent-check, and `be_plain`, the same without agent-check (regular checks only). Per
//! mode: each server's share of the requests during the squeeze, the clients' latency, the
//! time from the squeeze to the first weight change HAProxy shows for b, and, after the
//! squeeze, the verdict changes Gimbal counts (gimbal_verdict_changes_total) and the
//! reversals of the weight HAProxy shows until b is back at 100. Last, c is SIGKILLed
//! and the time to DOWN is taken in both HAProxy backends. Prints Markdown.
//!
//! gimbal-bench-lb [ROUNDS [FLOOR]] (rounds per mode, interleaved: 2; the verdict's floor: 10)
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use gimbal_tests::{
    agent::{http_get, Agent},
    free_port,
    haproxy::{reversals, Haproxy},
    loadgen::{quantile_ms, Load, Record},
    wait_for, workload, CpuTarget, Proc, TempDir, TestCgroup,
};

const SERVERS: [&str; 3] = ["a", "b", "c"];
/// The squeezed group's CPU: b's server and the two spinners share it.
const QUOTA_CPUS: f64 = 0.2;
const HOGS: usize = 2;
const BEFORE: Duration = Duration::from_secs(2);
const SQUEEZE: Duration = Duration::from_secs(15);
/// The squeeze's last seconds: the share once the feedback has settled.
const SETTLED: Duration = Duration::from_secs(5);
const CONCURRENCY: usize = 6;
const PACE: Duration = Duration::from_millis(25);
const AGENT_INTER_MS: u64 = 1000;
const HEADER: &str = "x-served-by";

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Mode {
    Gimbal,
    Plain,
}

impl Mode {
    fn backend(self) -> &'static str {
        match self {
            Mode::Gimbal => "be_gimbal",
            Mode::Plain => "be_plain",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Mode::Gimbal => "with Gimbal's agent-check",
            Mode::Plain => "without (no agent-check)",
        }
    }
}

/// What one round saw.
struct Round {
    mode: Mode,
    before: Vec<Record>,
    squeeze: Vec<Record>,
    settled: Vec<Record>,
    /// Squeeze to the first weight change of b HAProxy showed in be_gimbal, and what the
    /// agent said then.
    first_change: Option<(Duration, u32, String)>,
    /// b's weights in be_gimbal during the squeeze and the recovery (repeats removed).
    weights: Vec<u32>,
    /// b's verdict changes counted by the agent from the release to b back at 100.
    recovery_changes: f64,
    recovery: Duration,
    /// b's 5m latency SLI at the end of the squeeze (observed; not a weight signal here).
    sli: Option<f64>,
}

fn main() {
    let arg = |i: usize| std::env::args().nth(i).and_then(|s| s.parse::<u8>().ok());
    let rounds = usize::from(arg(1).unwrap_or(2));
    // The verdict's floor (its default unless given): a lower one sends b less at the bottom.
    let floor = arg(2).unwrap_or(10);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("gimbal-bench-lb needs root (cgroups, eBPF)");
        std::process::exit(1);
    }
    let state = TempDir::new("bench-lb");
    let squeezed = CpuTarget::new("lb-b");
    let (cg_a, cg_c) = (TestCgroup::new("lb-a"), TestCgroup::new("lb-c"));
    let groups = [cg_a.name.clone(), squeezed.target(), cg_c.name.clone()];
    let ports: Vec<u16> = SERVERS.iter().map(|_| free_port()).collect();
    let (fe_gimbal, fe_plain, ac) = (free_port(), free_port(), free_port());
    let targets: Vec<String> = SERVERS
        .iter()
        .map(|s| gimbal_tests::unique(&format!("lb-{s}")))
        .collect();

    let mut config = format!(
        "[agent]\nstate_dir = \"{}\"\n[gpu]\nnvml = false\n[verdict]\nagent_check_listen = \"127.0.0.1:{ac}\"\n# The 5m latency window would hold b down for up to 5 minutes after the squeeze.\nlatency = false\nfloor = {floor}\n",
        state.0.display()
    );
    for (t, g) in targets.iter().zip(&groups) {
        let _ = write!(
            config,
            "[[targets]]\nname = \"{t}\"\ncgroup = \"{g}\"\nlatency_threshold = \"10ms\"\n"
        );
    }
    let config_path = state.0.join("gimbal.toml");
    std::fs::write(&config_path, config).unwrap();

    let spawn_backend = |i: usize| -> Proc {
        let mut cmd = workload();
        cmd.args(["http-server", &format!("127.0.0.1:{}", ports[i])])
            .stdout(Stdio::null());
        let p = match i {
            0 => cg_a.spawn_into(&mut cmd),
            1 => squeezed.spawn(&mut cmd),
            _ => cg_c.spawn_into(&mut cmd),
        };
        wait_for("a backend listens", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", ports[i])).ok()
        });
        p
    };
    let mut backends: Vec<Proc> = (0..3).map(spawn_backend).collect();
    let agent = Agent::start_with(&["--config", config_path.to_str().unwrap()]);

    let dir = TempDir::new("bench-haproxy");
    let haproxy = Haproxy::start(
        &dir.0,
        &haproxy_config(&dir.0, (fe_gimbal, fe_plain), &ports, &targets, ac),
    );
    let b_weight = |mode: Mode| haproxy.weight(mode.backend(), "b");
    wait_for(
        "HAProxy shows every server up at weight 100",
        Duration::from_secs(30),
        || {
            let all = [Mode::Gimbal, Mode::Plain].iter().all(|m| {
                SERVERS.iter().all(|s| {
                    haproxy.status(m.backend(), s) == "UP"
                        && haproxy.weight(m.backend(), s) == Some(100)
                })
            });
            all.then_some(())
        },
    );
    let changes = || {
        agent
            .metric(&format!(
                "gimbal_verdict_changes_total{{target=\"{}\"}} ",
                targets[1]
            ))
            .unwrap_or(0.0)
    };

    let mut results = Vec::new();
    for round in 0..rounds * 2 {
        let mode = if round % 2 == 0 {
            Mode::Gimbal
        } else {
            Mode::Plain
        };
        eprintln!("round {}/{}: {}", round + 1, rounds * 2, mode.name());
        // A clean start: b at full weight by the agent's word (its pressure has settled).
        wait_for(
            "b back at weight 100 before the round",
            Duration::from_secs(120),
            || (b_weight(Mode::Gimbal) == Some(100)).then_some(()),
        );
        let port = match mode {
            Mode::Gimbal => fe_gimbal,
            Mode::Plain => fe_plain,
        };
        let load = Load::start(port, CONCURRENCY, PACE, HEADER);
        std::thread::sleep(BEFORE);

        squeezed.set_quota(Some(QUOTA_CPUS));
        let hogs: Vec<Proc> = (0..HOGS)
            .map(|_| squeezed.spawn(Command::new("sh").args(["-c", "while :; do :; done"])))
            .collect();
        let t_squeeze = Instant::now();
        let mut weights = vec![100];
        let mut first_change = None;
        while t_squeeze.elapsed() < SQUEEZE {
            if let Some(row) = haproxy.server(Mode::Gimbal.backend(), "b") {
                if let Some(w) = row.get("weight").and_then(|w| w.parse::<u32>().ok()) {
                    if w != *weights.last().unwrap() {
                        weights.push(w);
                    }
                    if w != 100 && first_change.is_none() {
                        let at = t_squeeze.elapsed();
                        first_change = Some((at, w, reason(agent.port, &targets[1])));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let t_release = Instant::now();
        let sli = agent.metric(&format!(
            "gimbal_target_latency_sli_ratio{{target=\"{}\",window=\"5m\"}} ",
            targets[1]
        ));
        let records = load.stop();
        drop(hogs);
        squeezed.set_quota(None);
        let c0 = changes();
        wait_for(
            "HAProxy shows b back at weight 100",
            Duration::from_secs(120),
            || {
                let w = b_weight(Mode::Gimbal)?;
                if w != *weights.last().unwrap() {
                    weights.push(w);
                }
                std::thread::sleep(Duration::from_millis(50));
                (w == 100).then_some(())
            },
        );
        let recovery = t_release.elapsed();
        let recovery_changes = changes() - c0;
        let in_window = |from: Instant, to: Instant| -> Vec<Record> {
            records
                .iter()
                .filter(|r| r.start >= from && r.start < to)
                .cloned()
                .collect()
        };
        results.push(Round {
            mode,
            before: in_window(t_squeeze - BEFORE, t_squeeze),
            squeeze: in_window(t_squeeze, t_release),
            settled: in_window(t_release - SETTLED, t_release),
            first_change,
            weights,
            recovery_changes,
            recovery,
            sli,
        });
    }

    // Last: c SIGKILLed, the time to DOWN in each HAProxy backend.
    let killed_c = &mut backends[2];
    // SAFETY: signalling our own child.
    unsafe { libc::kill(killed_c.id() as i32, libc::SIGKILL) };
    let t_kill = Instant::now();
    let _ = killed_c.wait();
    let mut down: BTreeMap<Mode, Duration> = BTreeMap::new();
    while down.len() < 2 && t_kill.elapsed() < Duration::from_secs(20) {
        for mode in [Mode::Gimbal, Mode::Plain] {
            if !down.contains_key(&mode) && haproxy.status(mode.backend(), "c").starts_with("DOWN")
            {
                down.insert(mode, t_kill.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let said = haproxy
        .server(Mode::Gimbal.backend(), "c")
        .and_then(|r| r.get("last_agt").cloned())
        .unwrap_or_default();
    print!("{}", report(&results, &down, &said, floor));
    assert_eq!(agent.stop(), 0, "the agent stops cleanly");
}

/// The reason in the agent's verdict for a target now (`/health/<target>`), bounded.
fn reason(port: u16, target: &str) -> String {
    let body = http_get(port, &format!("/health/{target}"))
        .map(|(_, b)| b)
        .unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("reason")?
                .as_str()
                .map(|r| r.chars().take(80).collect())
        })
        .unwrap_or_default()
}

fn haproxy_config(
    dir: &std::path::Path,
    (fe_gimbal, fe_plain): (u16, u16),
    ports: &[u16],
    targets: &[String],
    ac: u16,
) -> String {
    let mut servers_gimbal = String::new();
    let mut servers_plain = String::new();
    for ((s, port), t) in SERVERS.iter().zip(ports).zip(targets) {
        let _ = writeln!(
            servers_gimbal,
            "    server {s} 127.0.0.1:{port} weight 100 check inter 1s agent-check agent-addr 127.0.0.1 agent-port {ac} agent-send \"{t}\\n\" agent-inter {AGENT_INTER_MS}ms"
        );
        let _ = writeln!(
            servers_plain,
            "    server {s} 127.0.0.1:{port} weight 100 check inter 1s"
        );
    }
    format!(
        "global
    stats socket {dir}/admin.sock mode 600 level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend fe_gimbal
    bind 127.0.0.1:{fe_gimbal}
    default_backend be_gimbal
frontend fe_plain
    bind 127.0.0.1:{fe_plain}
    default_backend be_plain
backend be_gimbal
    balance roundrobin
    http-response set-header {HEADER} %s
{servers_gimbal}backend be_plain
    balance roundrobin
    http-response set-header {HEADER} %s
{servers_plain}",
        dir = dir.display()
    )
}

/// Each server's share of the answered requests, in percent, "a / b / c".
fn shares(records: &[Record]) -> String {
    let answered = records.iter().filter(|r| r.server.is_some()).count().max(1);
    SERVERS
        .iter()
        .map(|s| {
            let n = records
                .iter()
                .filter(|r| r.server.as_deref() == Some(*s))
                .count();
            format!("{:.1}", 100.0 * n as f64 / answered as f64)
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

fn latencies(records: &[Record]) -> String {
    let mut v: Vec<Duration> = records.iter().map(|r| r.latency).collect();
    v.sort();
    format!(
        "{:.2} / {:.2} / {:.2}",
        quantile_ms(&v, 0.5),
        quantile_ms(&v, 0.9),
        quantile_ms(&v, 0.99)
    )
}

fn report(rounds: &[Round], down: &BTreeMap<Mode, Duration>, said: &str, floor: u8) -> String {
    let mut s = format!(
        "HAProxy (roundrobin, 3 servers at weight 100) under {CONCURRENCY} clients, each at most one \
         request per {} ms; b squeezed for {} s (its server and {HOGS} spinners held to {QUOTA_CPUS} CPU); \
         agent-inter {AGENT_INTER_MS} ms; the verdict's floor {floor} %; rounds interleaved, the two modes over the same servers, \
         agent and HAProxy.\n\n\
         | mode | requests in the squeeze | share a / b / c, whole squeeze (%) | share a / b / c, its last {} s (%) | client p50 / p90 / p99 in the squeeze (ms) | the same, its last {} s | failed |\n|---|---|---|---|---|---|---|\n",
        PACE.as_millis(),
        SQUEEZE.as_secs(),
        SETTLED.as_secs(),
        SETTLED.as_secs()
    );
    let pooled = |mode: Option<Mode>, pick: fn(&Round) -> &Vec<Record>| -> Vec<Record> {
        rounds
            .iter()
            .filter(|r| mode.is_none_or(|m| r.mode == m))
            .flat_map(|r| pick(r).iter().cloned())
            .collect()
    };
    for mode in [Mode::Gimbal, Mode::Plain] {
        let sq = pooled(Some(mode), |r| &r.squeeze);
        let settled = pooled(Some(mode), |r| &r.settled);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            mode.name(),
            sq.len(),
            shares(&sq),
            shares(&settled),
            latencies(&sq),
            latencies(&settled),
            sq.iter().filter(|r| r.server.is_none()).count()
        );
    }
    let before = pooled(None, |r| &r.before);
    let _ = writeln!(
        s,
        "| before the squeeze (both modes, {} s a round) | {} | {} | - | {} | - | {} |",
        BEFORE.as_secs(),
        before.len(),
        shares(&before),
        latencies(&before),
        before.iter().filter(|r| r.server.is_none()).count()
    );
    s += "\nPer round (be_gimbal's weight for b is read in every round: the agent sees the same squeeze; \
          only the gimbal rounds send traffic through it):\n\n\
          | round | mode | squeeze -> first weight change of b (agent said) | b's weights in be_gimbal | b's 5m latency SLI (10 ms) at the squeeze's end | release -> b at 100 | verdict changes in the recovery | weight reversals |\n|---|---|---|---|---|---|---|---|\n";
    for (i, r) in rounds.iter().enumerate() {
        let first = r
            .first_change
            .as_ref()
            .map_or("none".to_string(), |(d, w, said)| {
                format!("{:.1} s, to {w} ({said})", d.as_secs_f64())
            });
        let weights: Vec<String> = r.weights.iter().map(u32::to_string).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {first} | {} | {} | {:.1} s | {} | {} |",
            i + 1,
            r.mode.name(),
            weights.join(" "),
            r.sli.map_or("-".into(), |v| format!("{:.3}", v)),
            r.recovery.as_secs_f64(),
            r.recovery_changes,
            reversals(&r.weights),
        );
    }
    let ms = |m: Mode| {
        down.get(&m).map_or("not within 20 s".to_string(), |d| {
            format!("{:.0} ms", d.as_secs_f64() * 1000.0)
        })
    };
    let _ = writeln!(
        s,
        "\nc SIGKILLed: DOWN in be_gimbal after {} (agent-inter {AGENT_INTER_MS} ms; the agent said {said:?}), \
         in be_plain after {} (regular check, inter 1 s, fall 3).",
        ms(Mode::Gimbal),
        ms(Mode::Plain)
    );
    s
}
