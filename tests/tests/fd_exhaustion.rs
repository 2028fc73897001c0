//! One anonymous client must not make a healthy service look down (issue 10, finding 3).
//!
//! 2,000 idle connections to /metrics' port, against an agent held to 1,024 open files
//! (the common default soft limit, below what the unit and the agent itself set): the agent
//! keeps its descriptors for its own reads, /healthz answers throughout, the watched
//! process that ran the whole time never counts as down (no TargetDown in a real
//! Alertmanager, no failure), and its history is saved at shutdown.
use std::{
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant, SystemTime},
};

use gimbal_tests::{
    agent::{healthz, open_files, Agent},
    alertmanager::Alertmanager,
    require_root, sample, wait_status, wait_until, workload, TempDir, TestCgroup,
};

const IDLE_CONNECTIONS: usize = 2_000;
const AGENT_NOFILE: u64 = 1_024;
const HOLD: Duration = Duration::from_secs(15);

/// Lets this test itself hold the connections.
fn raise_own_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain rlimit calls on our own process with a struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur > IDLE_CONNECTIONS as u64 + 100,
        "the test needs {IDLE_CONNECTIONS} descriptors, the hard limit is {}",
        lim.rlim_cur
    );
}

#[test]
fn idle_connections_cannot_exhaust_the_agents_descriptors_or_fake_a_target_down() {
    if !require_root!() {
        return;
    }
    raise_own_nofile();
    let am = Alertmanager::start();
    let cgroup = TestCgroup::new("fdsvc");
    let dir = TempDir::new("fd-state");
    let config = dir.0.join("gimbal.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[[targets]]\nname = \"svc\"\ncgroup = \"{}\"\n[alerting]\nalertmanagers = [\"http://127.0.0.1:{}\"]\nresend_interval = \"1s\"\n",
            dir.0.display(),
            cgroup.name,
            am.port
        ),
    )
    .unwrap();
    let mut service = cgroup.spawn_into(workload().arg("pause"));
    let mut agent =
        Agent::start_limited(&["--config", config.to_str().unwrap()], Some(AGENT_NOFILE));
    let pid = agent.child.id();
    wait_until("target up", Duration::from_secs(10), || {
        agent.metric("gimbal_target_up{target=\"svc\"} ") == Some(1.0)
    });

    let addr: SocketAddr = format!("127.0.0.1:{}", agent.port).parse().unwrap();
    let held: Vec<TcpStream> = (0..IDLE_CONNECTIONS)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok())
        .collect();
    eprintln!(
        "{} of {IDLE_CONNECTIONS} idle connections opened; the agent holds {} files",
        held.len(),
        open_files(pid)
    );

    // The burst itself is shed: while every slot is younger than the eviction grace, new
    // connections (a probe among them) are closed. Once it is taken in, all must answer.
    let settle = Instant::now();
    wait_until("/healthz after the burst", Duration::from_secs(5), || {
        healthz(addr) == Ok(200)
    });
    eprintln!("the burst was taken in after {:?}", settle.elapsed());

    let t0 = Instant::now();
    let (mut answered, mut failures, mut most_files) = (0, Vec::new(), 0);
    while t0.elapsed() < HOLD {
        let asked = Instant::now();
        match healthz(addr) {
            Ok(200) => answered += 1,
            other => failures.push(format!("at {:?}: {other:?}", t0.elapsed())),
        }
        most_files = most_files.max(open_files(pid));
        std::thread::sleep(Duration::from_millis(250).saturating_sub(asked.elapsed()));
    }
    eprintln!(
        "/healthz answered 200 {answered} times; failed: {failures:?}; the agent held at most {most_files} files"
    );
    let metrics = agent.metrics();
    assert_eq!(
        sample(&metrics, "gimbal_target_failures_total{target=\"svc\"} "),
        Some(0.0),
        "the process ran the whole time: no failure may be counted"
    );
    assert_eq!(
        sample(&metrics, "gimbal_target_up{target=\"svc\"} "),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "gimbal_target_read_failures_total{target=\"svc\"} "
        ),
        Some(0.0),
        "the agent kept the descriptors for its own reads"
    );
    let down: Vec<_> = am
        .active_alerts()
        .into_iter()
        .filter(|a| a["labels"]["target"] == "svc")
        .map(|a| a["labels"]["alertname"].clone())
        .collect();
    assert!(
        down.is_empty(),
        "no alert for a service that never stopped: {down:?}"
    );

    assert!(
        failures.is_empty(),
        "/healthz must answer while idle connections are held: {failures:?}"
    );
    assert!(
        most_files < 300,
        "the agent held {most_files} files: its connections are not capped"
    );
    // Shut down while the connections are still held: the history must still be saved.
    // File times come from the kernel's coarse clock, a tick behind SystemTime at most;
    // the last save before this was at the target's start, 15 s earlier.
    let stop_at = SystemTime::now() - Duration::from_secs(1);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert_eq!(wait_status(&mut agent.child), 0, "a clean stop");
    let saved: Vec<_> = std::fs::read_dir(dir.0.join("targets"))
        .expect("the targets' history directory")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|m| m >= stop_at)
        })
        .collect();
    assert_eq!(
        saved.len(),
        1,
        "the history of svc is saved at shutdown, held connections or not"
    );
    drop(held);
    // SAFETY: killing our own child by pid.
    unsafe { libc::kill(service.id() as i32, libc::SIGKILL) };
    wait_status(&mut service);
}
