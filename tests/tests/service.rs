//! The agent as a service manager sees it: the sd_notify datagrams systemd would get
//! (READY only once /metrics serves, watchdog pings, STOPPING) and /readyz. The same
//! protocol against the real systemd is checked in the VM test bed (`cargo xtask vm-test`).
use std::{
    os::unix::net::UnixDatagram,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use gimbal_tests::{
    agent::http_get, free_port, require_root, sibling_binary, wait_status, TempDir,
};

fn recv(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .expect("a datagram from gimbal in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn ready_is_notified_once_metrics_serve_then_the_watchdog_is_pinged_until_stop() {
    if !require_root!() {
        return;
    }
    let dir = TempDir::new("notify");
    let socket_path = dir.0.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let config = dir.0.join("gimbal.toml");
    std::fs::write(
        &config,
        format!("[agent]\nstate_dir = \"{}\"\n", dir.0.display()),
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new(sibling_binary("gimbal"))
        .args(["run", "--listen", &format!("127.0.0.1:{port}"), "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start gimbal");
    let mut killer = Killer(child.id(), true);

    let ready = recv(&socket);
    // The moment systemd would consider the start done, everything must already work.
    let readyz = http_get(port, "/readyz");
    let metrics = http_get(port, "/metrics");
    assert!(ready.starts_with("READY=1\n"), "first datagram: {ready:?}");
    assert!(
        ready.contains(&format!("MAINPID={}", child.id())),
        "{ready:?}"
    );
    assert_eq!(readyz.map(|r| r.0), Some(200));
    let (status, body) = metrics.expect("/metrics answers at READY");
    assert_eq!(status, 200);
    for probe in ["syscall_latency", "tcp_retransmit", "process_exit"] {
        let line = format!("gimbal_probe_attached{{probe=\"{probe}\"}} 1");
        assert!(body.contains(&line), "{line} missing at READY");
    }

    // WATCHDOG_USEC=1 s: pings every half second.
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_secs(3) {
        let msg = recv(&socket);
        assert_eq!(msg, "WATCHDOG=1", "only pings expected while running");
        pings += 1;
    }
    // About 6; a busy machine (a qemu guest) can stall the loop for a ping or two, and more
    // than 8 would mean pings are not paced at all.
    assert!(
        (3..=8).contains(&pings),
        "{pings} watchdog pings in 3 s, expected about 6"
    );

    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = recv(&socket);
    while last == "WATCHDOG=1" {
        assert!(
            Instant::now() < deadline,
            "still pinging 30 s after SIGTERM"
        );
        last = recv(&socket);
    }
    assert!(last.starts_with("STOPPING=1"), "{last:?}");
    let pid = child.id();
    let status = wait_status(&mut child);
    killer.disarm();
    assert_eq!(status, 0, "clean exit on SIGTERM (pid {pid})");
}

/// Kills the agent if the test fails half-way, so a failure cannot leave it running.
struct Killer(u32, bool);

impl Killer {
    fn disarm(&mut self) {
        self.1 = false;
    }
}

impl Drop for Killer {
    fn drop(&mut self) {
        if self.1 {
            // SAFETY: signalling our own child, not yet reaped.
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
}
