//! `cargo xtask bench`'s alert latency: SIGKILL of a watched process to its TargetDown alert
//! being active in a real local Alertmanager, over many kills. Prints a Markdown table.
//!
//! gimbal-bench-alert KILLS
use std::time::{Duration, Instant};

use gimbal_tests::{
    agent::Agent, alertmanager::Alertmanager, wait_status, workload, TempDir, TestCgroup,
};

fn main() {
    let kills: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let am = Alertmanager::start();
    let cgroup = TestCgroup::new("bench-alert");
    let dir = TempDir::new("bench-alert");
    let config = dir.0.join("gimbal.toml");
    std::fs::write(
        &config,
        format!("[[targets]]\nname = \"bench\"\ncgroup = \"{}\"\n[alerting]\nalertmanagers = [\"http://127.0.0.1:{}\"]\nresend_interval = \"1s\"\n", cgroup.name, am.port),
    )
    .unwrap();
    let mut service = cgroup.spawn_into(workload().arg("pause"));
    let agent = Agent::start_with(&["--config", config.to_str().unwrap()]);
    let down = [("alertname", "TargetDown"), ("target", "bench")];
    let mut latencies = Vec::with_capacity(kills);
    for i in 0..kills {
        // Up again (the replacement was seen on a tick) and the previous alert resolved.
        wait(|| {
            agent
                .metrics()
                .contains("gimbal_target_up{target=\"bench\"} 1")
                && !am.has_active(&down)
        });
        let t0 = Instant::now();
        // SAFETY: killing our own child by pid.
        unsafe { libc::kill(service.id() as i32, libc::SIGKILL) };
        wait(|| am.has_active(&down));
        latencies.push(t0.elapsed());
        wait_status(&mut service);
        eprintln!("kill {}/{kills}: {:?}", i + 1, latencies[i]);
        service = cgroup.spawn_into(workload().arg("pause"));
    }
    // SAFETY: killing our own child by pid.
    unsafe { libc::kill(service.id() as i32, libc::SIGKILL) };
    wait_status(&mut service);
    agent.stop();

    latencies.sort();
    let q = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    println!("| kills | p50 | p99 | max |\n|---|---|---|---|");
    println!(
        "| {kills} | {:.2} ms | {:.2} ms | {:.2} ms |",
        ms(q(0.5)),
        ms(q(0.99)),
        ms(latencies[latencies.len() - 1])
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Polls every millisecond (the measurement's resolution) for at most 30 s.
fn wait(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "condition not met within 30 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}
