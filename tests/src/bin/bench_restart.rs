//! `cargo xtask bench`'s time to recover: SIGKILL of a `[[supervise]]` process to its
//! replacement running (the replacement's first act is to announce its pid on a datagram
//! socket), over many kills, next to the floor measured in the same run: this program
//! itself spawning the same command and waiting for the same announcement. Prints a
//! Markdown table.
//!
//! gimbal-bench-restart KILLS
use std::{
    os::unix::net::UnixDatagram,
    process::Command,
    time::{Duration, Instant},
};

use gimbal::host::cgroupfs::CgroupNames;
use gimbal_tests::{agent::Agent, quantiles_ms, sibling_binary, unique, TempDir};

fn main() {
    let kills: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let dir = TempDir::new("bench-restart");
    let socket_path = dir.0.join("announce.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the announce socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let workload = sibling_binary("gimbal-workload");
    let parent = unique("bench-supervised");
    let cgroup2 = CgroupNames::from_host()
        .expect("cgroup2")
        .root()
        .to_path_buf();
    let config = dir.0.join("gimbal.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[remediation]\nmode = \"enforce\"\nsupervised_cgroup = \"{parent}\"\n\
             stable_after = \"1s\"\n[[supervise]]\nname = \"bench\"\ncommand = [{:?}, \"announce\", {:?}]\n",
            dir.0.display(),
            workload.display().to_string(),
            socket_path.display().to_string()
        ),
    )
    .unwrap();
    let agent = Agent::start_with(&["--config", config.to_str().unwrap()]);
    let mut pid = announced(&socket);
    let mut recover = Vec::with_capacity(kills);
    let mut floor = Vec::with_capacity(kills);
    for i in 0..kills {
        // Longer than stable_after: each kill ends a healthy run, so no backoff applies.
        std::thread::sleep(Duration::from_millis(1100));
        let t0 = Instant::now();
        // SAFETY: the agent's child, announced a moment ago; the agent has not reaped it.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        pid = announced(&socket);
        recover.push(t0.elapsed());

        // The floor: the same command spawned directly, to the same announcement.
        let t0 = Instant::now();
        let mut direct = Command::new(&workload)
            .arg("announce")
            .arg(&socket_path)
            .spawn()
            .expect("spawn the workload");
        announced(&socket);
        floor.push(t0.elapsed());
        let _ = direct.kill();
        let _ = direct.wait();
        eprintln!(
            "kill {}/{kills}: recovered in {:?} (direct spawn {:?})",
            i + 1,
            recover[i],
            floor[i]
        );
    }
    agent.stop();
    // SAFETY: as above; the agent is stopped first so nothing restarts it.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(100));
    let _ = std::fs::remove_dir(cgroup2.join(&parent).join("bench"));
    let _ = std::fs::remove_dir(cgroup2.join(&parent));

    let (r50, r99, rmax) = quantiles_ms(&mut recover);
    let (f50, f99, fmax) = quantiles_ms(&mut floor);
    println!("| path | kills | p50 | p99 | max |\n|---|---|---|---|---|");
    println!("| gimbal `[[supervise]]`: SIGKILL -> replacement announced | {kills} | {r50:.2} ms | {r99:.2} ms | {rmax:.2} ms |");
    println!(
        "| floor: direct spawn -> announced | {kills} | {f50:.2} ms | {f99:.2} ms | {fmax:.2} ms |"
    );
    println!(
        "\nThe agent's own share (p50 minus the floor's p50): {:.2} ms.",
        r50 - f50
    );
}

fn announced(socket: &UnixDatagram) -> u32 {
    let mut buf = [0u8; 32];
    let n = socket.recv(&mut buf).expect("no announcement within 30 s");
    std::str::from_utf8(&buf[..n]).unwrap().parse().unwrap()
}
