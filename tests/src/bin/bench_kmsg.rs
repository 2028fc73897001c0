//! `cargo xtask bench`'s kernel log cost: the CPU time the agent's kmsg reader thread
//! ("gpu-kmsg", from /proc/<pid>/task/<tid>/stat) and the whole agent spend on RECORDS
//! records written to /dev/kmsg, one in ten an NVIDIA XID record (the rest other kernel
//! chatter, as on a real node), next to the same agent idle for the same time. Prints a
//! Markdown table.
//!
//! gimbal-bench-kmsg RECORDS
use std::{
    io::Write as _,
    time::{Duration, Instant},
};

use gimbal_tests::{agent::Agent, TempDir, TestCgroup};

/// Clock ticks per second of /proc's utime and stime (USER_HZ).
fn ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// utime + stime of a /proc stat line, in seconds.
fn cpu_s(stat: &str) -> f64 {
    let after = stat.rsplit_once(") ").map_or("", |(_, a)| a);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / ticks()
}

/// (the gpu-kmsg thread's CPU seconds, the agent's) now.
fn cpu(pid: u32) -> (f64, f64) {
    let mut reader = 0.0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the agent's tasks") {
        let dir = task.unwrap().path();
        if std::fs::read_to_string(dir.join("comm"))
            .unwrap_or_default()
            .trim()
            == "gpu-kmsg"
        {
            reader = cpu_s(&std::fs::read_to_string(dir.join("stat")).unwrap_or_default());
        }
    }
    let all = cpu_s(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap());
    (reader, all)
}

fn main() {
    let records: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let cgroup = TestCgroup::new("bench-kmsg");
    let mut victim = cgroup.spawn_into(gimbal_tests::workload().arg("pause"));
    let dir = TempDir::new("bench-kmsg");
    let config = dir.0.join("gimbal.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[gpu]\nkmsg_user_records = true\nnvml = false\n",
            dir.0.display()
        ),
    )
    .unwrap();
    let agent = Agent::start_with(&["--config", config.to_str().unwrap()]);
    let pid = agent.child.id();
    let bus = format!("{:04x}:3b:00", std::process::id() & 0xffff);
    let counted = format!(
        "gimbal_gpu_xid_errors_total{{gpu=\"{bus}\",xid=\"13\",action=\"restart-application\"}} "
    );
    let xids = records / 10;
    std::thread::sleep(Duration::from_secs(1));

    // Loaded first; then idle for as long as that took.
    let (r0, a0) = cpu(pid);
    let t0 = Instant::now();
    for i in 0..records {
        // A fresh open per record: each open of /dev/kmsg has its own rate limit.
        let mut kmsg = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/kmsg")
            .expect("/dev/kmsg (root)");
        let line = if i % 10 == 0 {
            format!("<4>NVRM: Xid (PCI:{bus}): 13, pid={}, name=gimbal-workload, Graphics Exception: ESR 0x{i:x}\n", victim.id())
        } else {
            format!("<6>gimbal-bench-kmsg: ordinary kernel chatter, record {i} of {records}\n")
        };
        kmsg.write_all(line.as_bytes()).expect("write to /dev/kmsg");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while agent.metric(&counted) != Some(f64::from(xids)) {
        assert!(
            Instant::now() < deadline,
            "the agent did not count {xids} XIDs within 60 s: {:?}",
            agent.metric(&counted)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let busy = t0.elapsed();
    let (r1, a1) = cpu(pid);
    let dropped = agent
        .metric("gimbal_gpu_kmsg_records_dropped_total ")
        .unwrap_or(0.0);
    std::thread::sleep(busy);
    let (_, a2) = cpu(pid);
    let _ = agent.stop();
    let _ = victim.kill();
    let _ = victim.wait();

    let per = |s: f64| s * 1000.0 * 10_000.0 / f64::from(records);
    println!("| records (XIDs) | wall | gpu-kmsg thread CPU | agent CPU | agent CPU idle, same time | per 10,000 records: reader / agent less idle | dropped (EPIPE) |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {records} ({xids}) | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms / {:.0} ms | {dropped} |",
        busy.as_secs_f64() * 1000.0,
        (r1 - r0) * 1000.0,
        (a1 - a0) * 1000.0,
        (a2 - a1) * 1000.0,
        per(r1 - r0),
        per((a1 - a0) - (a2 - a1)).max(0.0),
    );
}
