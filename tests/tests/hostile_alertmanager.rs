//! A hostile Alertmanager (issue 10, finding 2): an endpoint that answers 200 and then an
//! endless body must neither grow the agent's memory nor hold up the healthy Alertmanager
//! next to it. The agent runs under the unit's 256 MiB memory limit, where the unbounded
//! read got it OOM-killed in under a second.
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use gimbal_tests::{
    agent::Agent, alertmanager::Alertmanager, require_root, sample, wait_status, wait_until,
    workload, MemoryLimit, TempDir, TestCgroup,
};

/// A loopback server that answers every request with `200 OK` and then bytes without end,
/// until the client goes away. Counts the connections it served.
struct EndlessBody {
    port: u16,
    connections: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EndlessBody {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt) = (connections.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        let halt = halt.clone();
                        std::thread::spawn(move || serve(s, &halt));
                    }
                    // Non-blocking, so that `stop` is seen: poll for the next client.
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self {
            port,
            connections,
            stop,
            thread: Some(thread),
        }
    }
}

/// Reads the request head, then writes `200 OK` and 1 MiB chunks until a write fails (the
/// agent closed the connection) or the test ends.
fn serve(mut s: TcpStream, stop: &AtomicBool) {
    s.set_nonblocking(false).unwrap();
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let chunk = vec![b'x'; 1 << 20];
    if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
        .is_err()
    {
        return;
    }
    while !stop.load(Ordering::Relaxed) && s.write_all(&chunk).is_ok() {}
}

impl Drop for EndlessBody {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// (times the limit was hit, OOM kills) of a memory cgroup, v1 or cgroup2.
fn memory_events(dir: &Path) -> (u64, u64) {
    let field = |file: &str, key: &str| {
        std::fs::read_to_string(dir.join(file))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
    };
    if dir.join("memory.events").exists() {
        let max = field("memory.events", "max ").expect("memory.events max");
        let kills = field("memory.events", "oom_kill ").expect("memory.events oom_kill");
        return (max, kills);
    }
    let failcnt = std::fs::read_to_string(dir.join("memory.failcnt"))
        .expect("memory.failcnt")
        .trim()
        .parse()
        .expect("memory.failcnt is a number");
    let kills = field("memory.oom_control", "oom_kill ").expect("memory.oom_control oom_kill");
    (failcnt, kills)
}

#[test]
fn an_endless_reply_neither_kills_the_agent_nor_holds_up_the_healthy_alertmanager() {
    if !require_root!() {
        return;
    }
    let healthy = Alertmanager::start();
    let hostile = EndlessBody::start();
    let healthy_url = format!("http://127.0.0.1:{}", healthy.port);
    let hostile_url = format!("http://127.0.0.1:{}", hostile.port);

    let service_cgroup = TestCgroup::new("svc");
    let agent_cgroup = TestCgroup::new("agent-memory");
    // The unit's and the chart's limit.
    let limit = MemoryLimit::new(&agent_cgroup, 256 << 20);
    let limit_dir = limit
        .procs
        .parent()
        .expect("a cgroup directory")
        .to_path_buf();

    let dir = TempDir::new("hostile-am");
    let config = dir.0.join("gimbal.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[[targets]]\nname = \"svc\"\ncgroup = \"{}\"\n[alerting]\nalertmanagers = [\"{hostile_url}\", \"{healthy_url}\"]\nresend_interval = \"1s\"\n",
            dir.0.display(),
            service_cgroup.name
        ),
    )
    .unwrap();

    let mut service = service_cgroup.spawn_into(workload().arg("pause"));
    let mut agent = Agent::start_with(&["--config", config.to_str().unwrap()]);
    let pid = agent.child.id();
    // Everything it allocates from now on counts against the limit.
    std::fs::write(&limit.procs, pid.to_string()).expect("move the agent into the limit");
    wait_until("target up", Duration::from_secs(10), || {
        sample(&agent.metrics(), "gimbal_target_up{target=\"svc\"} ") == Some(1.0)
    });
    let before = memory_events(&limit_dir);
    let rss_before = agent.rss_kib();

    // SAFETY: killing our own child by pid.
    unsafe { libc::kill(service.id() as i32, libc::SIGKILL) };
    assert_eq!(wait_status(&mut service), libc::SIGKILL);

    wait_until(
        "TargetDown in the healthy Alertmanager",
        Duration::from_secs(20),
        || healthy.has_active(&[("alertname", "TargetDown"), ("target", "svc")]),
    );
    // Several attempts against the endless body (retried every second), each survived.
    let failed = format!(
        "gimbal_alertmanager_notifications_total{{endpoint=\"{hostile_url}\",result=\"failed\"}} "
    );
    wait_until(
        "3 attempts at the hostile endpoint, failed",
        Duration::from_secs(30),
        || {
            assert_eq!(agent.child.try_wait().ok(), Some(None), "the agent died");
            hostile.connections.load(Ordering::Relaxed) >= 3
                && agent.metric(&failed).is_some_and(|n| n >= 3.0)
        },
    );
    let sent = format!(
        "gimbal_alertmanager_notifications_total{{endpoint=\"{hostile_url}\",result=\"sent\"}} "
    );
    assert!(
        agent.metric(&sent).unwrap_or(0.0) == 0.0,
        "a 200 with a body past the cap is not taken for an acceptance"
    );

    let after = memory_events(&limit_dir);
    let rss_after = agent.rss_kib();
    eprintln!(
        "hostile endpoint: {} connections; agent RSS {rss_before} KiB -> {rss_after} KiB; (limit hits, OOM kills) {before:?} -> {after:?}",
        hostile.connections.load(Ordering::Relaxed)
    );
    assert_eq!(
        agent.child.try_wait().ok(),
        Some(None),
        "the agent is still running"
    );
    assert_eq!(agent.child.id(), pid);
    assert_eq!(
        after, before,
        "the memory limit was never reached, nothing OOM-killed"
    );
    assert_eq!(agent.stop(), 0);
}
