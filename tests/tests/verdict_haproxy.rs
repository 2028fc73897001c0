//! The load-balancing verdict proven with a real HAProxy (Debian's `haproxy`): two real
//! HTTP backends, each in a cgroup of its own and watched as a target, behind one HAProxy
//! backend that asks Gimbal's agent-check for each server's state and weight
//! (`agent-check agent-port ... agent-send "<target>\n"`), and a second one that checks
//! `GET /health/<target>` on Gimbal's metrics port (`option httpchk`). What HAProxy
//! itself shows (`show stat` on its admin socket) is the ground truth:
//!
//! - a squeeze (CPU hogs in backend b's cgroup, throttled through a v1 cpu quota so they
//!   wait, which is CPU pressure) lowers b's weight in HAProxy, and not a's;
//! - recovery brings it back to 100 %, without flapping (the weight HAProxy shows goes down
//!   and then up, and the changes Gimbal counts stay few);
//! - a GPU XID whose action is reboot-node (a real-format record written to /dev/kmsg)
//!   drains the node: both servers DRAIN in HAProxy within one agent-inter, and are made
//!   ready again by the agent once `gpu_window` is over;
//! - a SIGKILLed backend is DOWN in HAProxy, by the agent's word, within one agent-inter
//!   of the kill, and the httpchk backend sees the same through `/health/<target>`;
//! - hostile input to the agent-check (4 KiB without a line end, a name that is a reply,
//!   300 idle connections) is answered without echo and does not silence it for long.
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use gimbal_tests::{
    agent::Agent,
    free_port,
    haproxy::{reversals, server, Haproxy},
    require_root, sample, spawn_in, unique, wait_for, workload, CpuGroup, Proc, TempDir,
    TestCgroup,
};

/// HAProxy's agent-inter in this test: the bound on the time from an exit to DOWN.
const AGENT_INTER: Duration = Duration::from_millis(500);

fn weight(socket: &Path, server_name: &str) -> Option<u32> {
    server(socket, "be", server_name)?
        .get("weight")?
        .parse()
        .ok()
}

fn status(socket: &Path, proxy: &str, server_name: &str) -> String {
    server(socket, proxy, server_name)
        .and_then(|r| r.get("status").cloned())
        .unwrap_or_default()
}

/// One raw GET: (status, head, body).
fn get(port: u16, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the agent");
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_string(), body.to_string())
}

/// One agent-check exchange, as HAProxy makes it.
fn agent_check(port: u16, send: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the agent-check");
    s.write_all(send).unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply
}

fn backend(cgroup: &TestCgroup, port: u16) -> Proc {
    let mut cmd = workload();
    cmd.args(["http-server", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null());
    let p = cgroup.spawn_into(&mut cmd);
    wait_for("the backend listens", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    p
}

fn haproxy_config(
    dir: &Path,
    frontend: u16,
    (a, b): (u16, u16),
    (ta, tb): (&str, &str),
    agent_check: u16,
    metrics: u16,
) -> String {
    let inter = AGENT_INTER.as_millis();
    format!(
        "global
    stats socket {dir}/admin.sock mode 600 level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:{frontend}
    default_backend be
backend be
    balance roundrobin
    server a 127.0.0.1:{a} weight 100 check inter 30s agent-check agent-addr 127.0.0.1 agent-port {agent_check} agent-send \"{ta}\\n\" agent-inter {inter}ms
    server b 127.0.0.1:{b} weight 100 check inter 30s agent-check agent-addr 127.0.0.1 agent-port {agent_check} agent-send \"{tb}\\n\" agent-inter {inter}ms
backend be_http
    option httpchk GET /health/{ta}
    server a 127.0.0.1:{a} check port {metrics} inter {inter}ms fall 1 rise 1
",
        dir = dir.display()
    )
}

#[test]
fn haproxy_follows_the_verdict() {
    if !require_root!() {
        return;
    }
    let state = TempDir::new("verdict-haproxy");
    let (cg_a, cg_b) = (TestCgroup::new("lb-a"), TestCgroup::new("lb-b"));
    let (ta, tb) = (unique("lb-a"), unique("lb-b"));
    let (port_a, port_b, frontend, ac) = (free_port(), free_port(), free_port(), free_port());
    let config = state.0.join("gimbal.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[gpu]\nkmsg_user_records = true\nnvml = false\n[verdict]\ngpu_window = \"4s\"\nagent_check_listen = \"127.0.0.1:{ac}\"\nfall = 1\nrise = 2\nlatency = false\ncpu_pressure_low = 5.0\ncpu_pressure_high = 30.0\n[[targets]]\nname = \"{ta}\"\ncgroup = \"{}\"\n[[targets]]\nname = \"{tb}\"\ncgroup = \"{}\"\n",
            state.0.display(),
            cg_a.name,
            cg_b.name
        ),
    )
    .unwrap();
    let mut be_a = backend(&cg_a, port_a);
    let _be_b = backend(&cg_b, port_b);
    let agent = Agent::start_with(&["--config", config.to_str().unwrap()]);

    // The agent-check itself, hostile input first: nothing echoed, nothing acted on.
    wait_for(
        "the agent-check answers a for the target",
        Duration::from_secs(10),
        || (agent_check(ac, format!("{ta}\n").as_bytes()) == "ready 100%\n").then_some(()),
    );
    let junk = agent_check(ac, &[b'x'; 4096]);
    assert!(junk.starts_with("#gimbal: invalid request"), "{junk:?}");
    let unknown = agent_check(ac, b"down 0%\n");
    assert!(
        unknown.starts_with('#') && !unknown.contains("down 0%"),
        "{unknown:?}"
    );
    assert_eq!(agent_check(ac, b"\n"), "ready 100%\n", "the node");
    // A flood of connections that send nothing holds at most 64 slots, each for at most
    // the request wait: the agent-check answers again within a second or two.
    let flood: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", ac)).ok())
        .collect();
    let flooded = Instant::now();
    wait_for(
        "the agent-check answers after a flood",
        Duration::from_secs(3),
        || {
            let mut s = TcpStream::connect(("127.0.0.1", ac)).ok()?;
            s.write_all(format!("{ta}\n").as_bytes()).ok()?;
            let mut reply = String::new();
            s.read_to_string(&mut reply).ok()?;
            (reply == "ready 100%\n").then_some(())
        },
    );
    eprintln!(
        "answered {:?} after a flood of {} idle connections",
        flooded.elapsed(),
        flood.len()
    );
    drop(flood);
    let (code, _, body) = get(agent.port, "/health/%3Cx%3E");
    assert_eq!(code, 404);
    assert!(body.contains("\"<x>\"") && !body.contains("%3C"), "{body}");
    assert_eq!(get(agent.port, "/health/%zz").0, 400);

    let dir = TempDir::new("haproxy");
    let haproxy = Haproxy::start(
        &dir.0,
        &haproxy_config(
            &dir.0,
            frontend,
            (port_a, port_b),
            (&ta, &tb),
            ac,
            agent.port,
        ),
    );
    let socket = haproxy.socket.clone();
    wait_for(
        "HAProxy shows both servers up at weight 100",
        Duration::from_secs(20),
        || {
            let up = |s| status(&socket, "be", s) == "UP" && weight(&socket, s) == Some(100);
            (up("a") && up("b") && status(&socket, "be_http", "a") == "UP").then_some(())
        },
    );
    // Traffic flows through it to both.
    let (code, _, body) = get(frontend, "/");
    assert_eq!((code, body.as_str()), (200, "ok\n"));

    // (b) Squeeze b: two CPU hogs in its cgroup, held to 10 % of a CPU by a v1 quota, so
    // they mostly wait: CPU pressure in b's cgroup.
    let quota = CpuGroup::new();
    std::fs::write(quota.quota_file(), "10000").expect("set the cpu quota");
    let procs = [
        cg_b.path.join("cgroup.procs"),
        quota.dir().join("cgroup.procs"),
    ];
    let hogs: Vec<Proc> = (0..2)
        .map(|_| {
            spawn_in(
                Command::new("sh").args(["-c", "while :; do :; done"]),
                &procs,
            )
        })
        .collect();
    let squeezed = Instant::now();
    let mut seen_b = vec![100];
    let mut a_weights = Vec::new();
    let low = wait_for(
        "HAProxy lowers b's weight to 50 or less",
        Duration::from_secs(60),
        || {
            let w = weight(&socket, "b")?;
            seen_b.push(w);
            a_weights.extend(weight(&socket, "a"));
            std::thread::sleep(Duration::from_millis(80));
            (w <= 50).then_some(w)
        },
    );
    eprintln!("b's weight {low} after {:?} of squeeze", squeezed.elapsed());
    let (code, head, body) = get(agent.port, &format!("/health/{tb}"));
    assert_eq!(code, 200, "{head}\n{body}");
    // Header names are case-insensitive (RFC 9110); the server writes them title-cased.
    assert!(
        head.to_ascii_lowercase().contains("x-envoy-degraded: true"),
        "{head}"
    );
    assert!(
        body.contains("\"state\":\"degraded\"") && body.contains("CPU pressure"),
        "{body}"
    );
    assert!(
        a_weights.iter().all(|w| *w == 100),
        "a is not squeezed and keeps full weight: {a_weights:?}"
    );

    // (c) Recovery: the hogs gone, the weight climbs back to 100 without flapping.
    drop(hogs);
    let released = Instant::now();
    wait_for(
        "HAProxy brings b back to weight 100",
        Duration::from_secs(120),
        || {
            let w = weight(&socket, "b")?;
            seen_b.push(w);
            std::thread::sleep(Duration::from_millis(80));
            (w == 100).then_some(())
        },
    );
    eprintln!(
        "b back at 100 after {:?}; weights HAProxy showed: {seen_b:?}",
        released.elapsed()
    );
    assert!(
        reversals(&seen_b) <= 1,
        "the weight went down, then up, without flapping: {seen_b:?}"
    );
    let changes = sample(
        &agent.metrics(),
        &format!("gimbal_verdict_changes_total{{target=\"{tb}\"}} "),
    )
    .expect("b's change count");
    // Down to the floor and back in steps of at least 5 points: at most 18 each way, and
    // a few state changes.
    assert!(changes <= 40.0, "{changes} changes of b's verdict");
    assert!(
        changes >= 2.0,
        "{changes}: b's verdict changed at least down and up"
    );

    // A GPU that fell off the bus (XID 79, reboot-node) drains the node: both servers go
    // to DRAIN in HAProxy, and come back (only the agent can undo it) once the window
    // is over. The record is written to the kernel log in the driver's format, on a PCI
    // domain of this run's own.
    let bus = format!("{:04x}:3b:00", std::process::id() & 0xffff);
    let mut kmsg = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .expect("open /dev/kmsg for writing (root)");
    kmsg.write_all(
        format!(
            "<4>NVRM: Xid (PCI:{bus}): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus. {ta}\n"
        )
        .as_bytes(),
    )
    .expect("write an XID record");
    let xid = Instant::now();
    let drained = |n| {
        let r = server(&socket, "be", n).unwrap_or_default();
        format!(
            "{n}: status {:?} weight {:?} agent {:?} {:?}",
            r.get("status"),
            r.get("weight"),
            r.get("agent_status"),
            r.get("last_agt")
        )
    };
    while !(status(&socket, "be", "a").starts_with("DRAIN")
        && status(&socket, "be", "b").starts_with("DRAIN"))
    {
        assert!(
            xid.elapsed() < Duration::from_secs(5),
            "HAProxy did not drain both servers: {} / {}",
            drained("a"),
            drained("b")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = xid.elapsed();
    eprintln!("both servers DRAIN {took:?} after the XID");
    assert!(
        took <= AGENT_INTER + Duration::from_millis(500),
        "DRAIN {took:?} after the XID; agent-inter is {AGENT_INTER:?}"
    );
    let node = agent_check(ac, b"\n");
    assert_eq!(node, format!("drain #GPU {bus} XID 79 (reboot-node)\n"));
    let (code, _, body) = get(agent.port, &format!("/health/{ta}"));
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("\"state\":\"drain\"") && body.contains("node: GPU"),
        "{body}"
    );
    wait_for(
        "the drain is undone after gpu_window",
        Duration::from_secs(15),
        || {
            let back = |s| status(&socket, "be", s) == "UP" && weight(&socket, s) == Some(100);
            (back("a") && back("b")).then_some(())
        },
    );

    // (a) SIGKILL backend a: DOWN in HAProxy by the agent's word within one agent-inter.
    assert_eq!(weight(&socket, "a"), Some(100));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(be_a.id() as i32, libc::SIGKILL) };
    let killed = Instant::now();
    let mut last = None;
    let row = loop {
        let row = server(&socket, "be", "a").unwrap_or_default();
        if row.get("status").is_some_and(|s| s.starts_with("DOWN")) {
            break row;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "HAProxy never showed a DOWN: {last:?}"
        );
        last = Some(row);
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = killed.elapsed();
    let _ = be_a.wait();
    eprintln!("a DOWN in HAProxy {took:?} after the SIGKILL: {row:?}");
    let said = format!(
        "{} {}",
        row.get("agent_desc").cloned().unwrap_or_default(),
        row.get("last_agt").cloned().unwrap_or_default()
    );
    assert!(
        said.contains("no live process"),
        "the agent took it down (its regular check runs every 30 s): {row:?}"
    );
    assert!(
        took <= AGENT_INTER + Duration::from_millis(300),
        "DOWN {took:?} after the kill; agent-inter is {AGENT_INTER:?}"
    );
    // The same through option httpchk against /health/<target>.
    wait_for("httpchk sees a DOWN", Duration::from_secs(5), || {
        status(&socket, "be_http", "a")
            .starts_with("DOWN")
            .then_some(())
    });
    assert_eq!(get(agent.port, &format!("/health/{ta}")).0, 503);
    assert_eq!(
        agent_check(ac, format!("{ta}\n").as_bytes()),
        "down #no live process\n"
    );
    assert_eq!(agent.stop(), 0);
}
