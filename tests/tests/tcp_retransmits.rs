//! TCP retransmits against bpftrace counting the same tracepoint in the same window.
//!
//! Two network namespaces joined by a veth pair; the receiver drops a share of incoming
//! segments at its input hook (this kernel has no netem), so the sender retransmits.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use gimbal::{
    host::cgroupfs::CgroupNames,
    model::Model,
    probes::{LoadOptions, MapReader},
};
use gimbal_tests::{
    load_attached, require_root, sibling_binary, spawn_in, unique, wait_status, Proc, TestCgroup,
};

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e} (cargo xtask setup installs it)"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces and a veth pair; deleted on drop.
struct Link {
    a: String,
    b: String,
}

impl Link {
    fn new(v4: (&str, &str), v6: (&str, &str), port: u16, drop_percent: u32) -> Self {
        let (a, b) = (unique("a"), unique("b"));
        let link = Link {
            a: a.clone(),
            b: b.clone(),
        };
        sh(&["ip", "netns", "add", &a]);
        sh(&["ip", "netns", "add", &b]);
        sh(&[
            "ip", "link", "add", "gva", "netns", &a, "type", "veth", "peer", "name", "gvb",
            "netns", &b,
        ]);
        for (ns, dev, ip4, ip6) in [(&a, "gva", v4.0, v6.0), (&b, "gvb", v4.1, v6.1)] {
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip4}/24"),
                "dev",
                dev,
            ]);
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            // One segment per skb, so the count is not blurred by offload batching.
            sh(&[
                "ip", "netns", "exec", ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro",
                "off",
            ]);
        }
        let nft = |rule: &str| {
            sh(&[
                "ip",
                "netns",
                "exec",
                &b,
                "sh",
                "-c",
                &format!("nft {rule}"),
            ])
        };
        nft("add table inet gimbal_test");
        nft("add chain inet gimbal_test in '{ type filter hook input priority 0; }'");
        nft(&format!("add rule inet gimbal_test in tcp dport {port} numgen random mod 100 lt {drop_percent} drop"));
        link
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(args);
        c
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// bpftrace counting tcp_retransmit_skb for one destination port; killed if the test fails
/// before it has exited.
struct Bpftrace {
    child: Child,
    /// Its stdout lines but the attach notice, once it has exited.
    stdout: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Bpftrace {
    fn start(port: u16) -> Self {
        let prog = format!(
            "tracepoint:tcp:tcp_retransmit_skb /args->dport == {port}/ {{ @n = count(); }}"
        );
        // bpftrace prints "Attaching N probes" before it attaches; with this variable set it
        // says so once every probe is in (a qemu guest lost a whole run to the gap). 0.17
        // says it on stderr, 0.23 and later on stdout: both are watched.
        const ATTACHED: &str = "__BPFTRACE_NOTIFY_PROBES_ATTACHED";
        let mut child = Command::new("bpftrace")
            .args(["-e", &prog])
            .env(ATTACHED, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bpftrace (cargo xtask setup installs it)");
        let (attached, wait) = std::sync::mpsc::channel();
        let on_stdout = attached.clone();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let stdout = std::thread::spawn(move || {
            let mut kept = Vec::new();
            for line in stdout.lines().map_while(Result::ok) {
                if line.contains(ATTACHED) {
                    let _ = on_stdout.send(());
                } else {
                    kept.push(line);
                }
            }
            kept
        });
        // Its stderr is passed on, so a warning is seen and never blocks it.
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if line.contains(ATTACHED) {
                    let _ = attached.send(());
                } else {
                    eprintln!("bpftrace: {line}");
                }
            }
        });
        let this = Self {
            child,
            stdout: Some(stdout),
        };
        wait.recv_timeout(Duration::from_secs(60))
            .expect("bpftrace did not attach its probe within 60 s");
        this
    }

    fn stop(mut self) -> u64 {
        // bpftrace can miss a SIGINT that lands just before it sleeps in epoll_wait, and
        // then waits for the next event forever (seen under qemu): repeat it until it exits.
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "bpftrace ignored SIGINT for 20 s"
            );
            // SAFETY: signalling our own child, not yet reaped.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            std::thread::sleep(Duration::from_millis(200));
        }
        let out = self.stdout.take().unwrap().join().unwrap();
        // "@n: 123"; no line at all when nothing was counted.
        out.iter()
            .find_map(|l| l.strip_prefix("@n: "))
            .map_or(0, |n| n.trim().parse().expect("bpftrace count"))
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        // Only a child not yet reaped: its pid cannot have been reused.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn retransmits_equal_bpftrace_on_the_same_tracepoint() {
    if !require_root!() {
        return;
    }
    let x = std::process::id() % 200 + 20;
    let (a4, b4) = (format!("10.231.{x}.1"), format!("10.231.{x}.2"));
    let (a6, b6) = (format!("fd00:231:{x}::1"), format!("fd00:231:{x}::2"));
    let port = 40_000 + (std::process::id() % 20_000) as u16;
    let link = Link::new((&a4, &b4), (&a6, &b6), port, 5);
    let cgroup = TestCgroup::new("tcp");

    let options = LoadOptions {
        syscall_latency: false,
        process_exit: false,
        ..LoadOptions::default()
    };
    let mut probes = load_attached(&options);
    let mut reader = MapReader::new(&mut probes, CgroupNames::from_host().unwrap()).unwrap();
    let bpftrace = Bpftrace::start(port);

    let workload = sibling_binary("gimbal-workload");
    let workload = workload.to_str().unwrap();
    for server in [format!("{b4}:{port}"), format!("[{b6}]:{port}")] {
        // Guarded: a failed assertion must not leave it waiting in accept() with our stderr.
        let mut srv = Proc::spawn(
            link.exec(&link.b, &[workload, "tcp-server", &server])
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        let mut line = String::new();
        let mut srv_out = BufReader::new(srv.stdout.take().unwrap());
        srv_out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "listening");
        // The client (the retransmitting side) runs in the test cgroup: its sockets belong there.
        let client = spawn_in(
            &mut link.exec(&link.a, &[workload, "tcp-client", &server, "3000000"]),
            &[cgroup.path.join("cgroup.procs")],
        );
        let out = client.into_inner().wait_with_output().unwrap();
        assert!(out.status.success(), "client to {server} failed");
        assert_eq!(wait_status(&mut srv), 0, "server on {server}");
    }
    std::thread::sleep(Duration::from_millis(300));

    let mut model = Model::new(1000);
    model.apply(reader.read().expect("read maps"));
    let truth = bpftrace.stop();
    let mine: Vec<_> = model
        .tcp_retransmits
        .series
        .iter()
        .filter(|(k, _)| k[1].ends_with(&format!(":{port}")))
        .collect();
    let total: u64 = mine.iter().map(|(_, n)| **n).sum();
    eprintln!("retransmits to port {port}: gimbal {total}, bpftrace {truth}");
    assert!(
        truth > 0,
        "no retransmits happened: the test proves nothing"
    );
    assert_eq!(
        total, truth,
        "gimbal counted {total}, bpftrace {truth}: {mine:?}"
    );
    let v4 = format!("{b4}:{port}");
    let v6 = format!("[{b6}]:{port}");
    for (k, n) in &mine {
        assert_eq!(
            &*k[0], cgroup.name,
            "retransmits attributed to the client's cgroup: {k:?}"
        );
        assert!(
            (*k[1] == v4 && &*k[2] == "ipv4") || (*k[1] == v6 && &*k[2] == "ipv6"),
            "remote/family {k:?} ({n})"
        );
    }
    assert_eq!(mine.len(), 2, "one IPv4 and one IPv6 series: {mine:?}");
}
