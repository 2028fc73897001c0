//! TargetStalled and TrainingJobStalled through the real agent and a real Alertmanager,
//! from the kernel's latency histograms: a process that writes every 100 ms and then
//! blocks in a futex is called stalled within `stall_for` + one tick of its last write; one
//! that writes once a second for 5 minutes never is (and is, once it blocks); a training
//! job whose two ranks block is stalled as a job.
use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use gimbal_tests::{
    agent::Agent, alertmanager::Alertmanager, require_root, sample, unique, wait_for, wait_until,
    workload, Proc, TempDir, TestCgroup,
};
use serde_json::Value;

const STALL_FOR_MS: u64 = 3_000;
/// The agent's tick (`[agent] interval`, default 1 s).
const TICK_MS: u64 = 1_000;
/// Scheduling on this shared two-core machine: the agent's tick can come this much late.
const SLACK_MS: u64 = 300;

fn config(state: &TempDir, am: &Alertmanager, target: &str, glob: &str) -> std::path::PathBuf {
    let path = state.0.join("gimbal.toml");
    let text = format!(
        "[agent]\nstate_dir = \"{}\"\n[[targets]]\nname = \"{target}\"\ncgroup = \"{glob}\"\nstall_for = \"{STALL_FOR_MS}ms\"\n[alerting]\nalertmanagers = [\"http://127.0.0.1:{}\"]\nresend_interval = \"1s\"\n",
        state.0.display(),
        am.port
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn find(am: &Alertmanager, alertname: &str, key: &str, value: &str) -> Option<Value> {
    am.active_alerts()
        .into_iter()
        .find(|a| a["labels"]["alertname"] == alertname && a["labels"][key] == value)
}

/// An RFC 3339 time as unix ms, read by date(1) (an independent parser).
fn unix_ms(rfc3339: &str) -> u64 {
    let out = Command::new("date")
        .args(["-u", "-d", rfc3339, "+%s%3N"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("date could not read {rfc3339:?}"))
}

/// A `write-then-block COUNT MS` workload in `cgroup`, with its stdout to read.
fn writer(cgroup: &TestCgroup, count: u32, every_ms: u32) -> Proc {
    let mut cmd = workload();
    cmd.args([
        "write-then-block",
        &count.to_string(),
        &every_ms.to_string(),
    ])
    .stdout(Stdio::piped());
    cgroup.spawn_into(&mut cmd)
}

/// The unix ms of the writer's last write, which it prints when it blocks.
fn last_write(p: &mut Proc) -> u64 {
    let mut line = String::new();
    BufReader::new(p.stdout.as_mut().expect("piped"))
        .read_line(&mut line)
        .expect("the writer's last line");
    line.trim().parse().expect("unix ms")
}

fn stalled(agent: &Agent, target: &str) -> Option<f64> {
    sample(
        &agent.metrics(),
        &format!("gimbal_target_stalled{{target=\"{target}\"}} "),
    )
}

#[test]
fn a_process_that_blocks_in_a_futex_is_stalled_within_stall_for_and_a_tick() {
    if !require_root!() {
        return;
    }
    let am = Alertmanager::start();
    let state = TempDir::new("stall-state");
    let cgroup = TestCgroup::new("stuck");
    let config = config(&state, &am, "stuck", &cgroup.name);
    let agent = Agent::start_with(&["--config", config.to_str().unwrap()]);
    // 4 s of progress, longer than stall_for: no stall meanwhile.
    let mut p = writer(&cgroup, 40, 100);
    wait_until("the writer watched", Duration::from_secs(10), || {
        stalled(&agent, "stuck") == Some(0.0)
    });
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(3_000) {
        assert_eq!(stalled(&agent, "stuck"), Some(0.0), "stalled while writing");
        assert!(find(&am, "TargetStalled", "target", "stuck").is_none());
        std::thread::sleep(Duration::from_millis(100));
    }
    let last = last_write(&mut p);
    let alert = wait_for(
        "TargetStalled in Alertmanager",
        Duration::from_secs(20),
        || find(&am, "TargetStalled", "target", "stuck"),
    );
    let starts = unix_ms(alert["startsAt"].as_str().expect("startsAt"));
    let after = starts as i64 - last as i64;
    eprintln!("last write -> TargetStalled firing: {after} ms (stall_for {STALL_FOR_MS} ms, tick {TICK_MS} ms)");
    assert!(
        after <= (STALL_FOR_MS + TICK_MS + SLACK_MS) as i64,
        "fired {after} ms after the last write"
    );
    assert!(
        after >= (STALL_FOR_MS - TICK_MS) as i64,
        "fired early: {after} ms after the last write"
    );
    let summary = alert["annotations"]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.starts_with("stuck is stalled on ") && summary.contains("1 process(es) are alive"),
        "{summary}"
    );
    assert_eq!(stalled(&agent, "stuck"), Some(1.0));
    // A restart of the process is progress: resolved.
    drop(p);
    let _p = writer(&cgroup, 1000, 100);
    wait_until("TargetStalled resolved", Duration::from_secs(20), || {
        find(&am, "TargetStalled", "target", "stuck").is_none()
    });
    assert_eq!(agent.stop(), 0);
}

/// Runs for over 5 minutes.
#[test]
fn a_process_that_writes_once_a_second_for_5_minutes_is_never_stalled() {
    if !require_root!() {
        return;
    }
    let am = Alertmanager::start();
    let state = TempDir::new("steady-state");
    let cgroup = TestCgroup::new("steady");
    let config = config(&state, &am, "steady", &cgroup.name);
    let agent = Agent::start_with(&["--config", config.to_str().unwrap()]);
    let mut p = writer(&cgroup, 300, 1000);
    wait_until("the writer watched", Duration::from_secs(10), || {
        stalled(&agent, "steady") == Some(0.0)
    });
    let t0 = Instant::now();
    let mut polls = 0;
    // Until it blocks (it prints then): every scrape and Alertmanager say not stalled.
    let (tx, rx) = std::sync::mpsc::channel();
    let mut out = p.stdout.take().expect("piped");
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(&mut out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = loop {
        if let Ok(line) = rx.try_recv() {
            break line;
        }
        assert_eq!(
            stalled(&agent, "steady"),
            Some(0.0),
            "stalled after {:?} of writes once a second",
            t0.elapsed()
        );
        assert!(find(&am, "TargetStalled", "target", "steady").is_none());
        polls += 1;
        assert!(
            t0.elapsed() < Duration::from_secs(400),
            "the writer never blocked"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!(
        "{polls} polls over {:?}: never stalled; then it blocked at {}",
        t0.elapsed(),
        line.trim()
    );
    assert!(t0.elapsed() >= Duration::from_secs(290));
    // The check was armed all along: once the writer blocks, it fires.
    let blocked = Instant::now();
    while find(&am, "TargetStalled", "target", "steady").is_none() {
        if blocked.elapsed() > Duration::from_secs(20) {
            // What the agent saw: its stall figures and the kernel's drops.
            let m = agent.metrics();
            let said: Vec<&str> = m
                .lines()
                .filter(|l| {
                    (l.starts_with("gimbal_target_") && l.contains("target=\"steady\""))
                        || l.starts_with("gimbal_events_dropped_total")
                })
                .collect();
            panic!(
                "TargetStalled not within 20 s of the block; the agent says:\n{}",
                said.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(agent.stop(), 0);
}

#[test]
fn a_training_job_whose_ranks_all_block_is_stalled() {
    if !require_root!() {
        return;
    }
    let am = Alertmanager::start();
    let state = TempDir::new("job-stall-state");
    let prefix = unique("hang");
    let cgroups: Vec<TestCgroup> = (0..2)
        .map(|r| TestCgroup::new(&format!("{prefix}{r}")))
        .collect();
    let glob = format!("gimbal-test-{}-{prefix}*", std::process::id());
    let config = config(&state, &am, "trainer", &glob);
    let job = unique("job");
    let agent = Agent::start_with(&["--config", config.to_str().unwrap()]);
    let ranks: Vec<Proc> = cgroups
        .iter()
        .enumerate()
        .map(|(r, cg)| {
            let mut cmd = workload();
            cmd.args(["write-then-block", "20", "100"])
                .env("TORCHELASTIC_RUN_ID", &job)
                .env("RANK", r.to_string())
                .env("WORLD_SIZE", "2")
                .stdout(Stdio::null());
            cg.spawn_into(&mut cmd)
        })
        .collect();
    let alert = wait_for(
        "TrainingJobStalled in Alertmanager",
        Duration::from_secs(30),
        || find(&am, "TrainingJobStalled", "job", &job),
    );
    let summary = alert["annotations"]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.starts_with(&format!("job {job} is stalled on "))
            && summary.contains("all 2 of its ranks here are alive"),
        "{summary}"
    );
    let m = agent.metrics();
    assert_eq!(
        sample(
            &m,
            &format!("gimbal_training_job_state{{training_job=\"{job}\",state=\"stalled\"}} ")
        ),
        Some(1.0),
        "{m}"
    );
    drop(ranks);
    assert_eq!(agent.stop(), 0);
}
