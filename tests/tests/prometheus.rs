//! A real Prometheus scrapes the agent: the target is healthy (up == 1) and PromQL over
//! gimbal's series returns what the workload did.
use std::time::{Duration, Instant};

use gimbal_tests::{
    agent::Agent, prometheus::Prometheus, require_root, wait_status, workload, TestCgroup,
};

#[test]
fn prometheus_scrapes_the_agent_and_promql_sees_the_workload() {
    if !require_root!() {
        return;
    }
    // getppid timed in every cgroup: its histogram is what PromQL reads below.
    let agent = Agent::start_config("[probes.syscall_latency]\ntimed_syscalls = [\"getppid\"]\n");
    let prometheus = Prometheus::start(&format!("127.0.0.1:{}", agent.port));
    let cgroup = TestCgroup::new("promql");
    let mut child = cgroup.spawn_into(workload().args(["getppid", "4321"]));
    assert_eq!(wait_status(&mut child), 0);

    let wait = |q: &str, want: f64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = prometheus.query_one(q);
            if got == Some(want) {
                return;
            }
            assert!(Instant::now() < deadline, "{q}: {got:?}, want {want}");
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    wait("up{job=\"gimbal\"}", 1.0);
    let cg = &cgroup.name;
    wait(
        &format!("gimbal_syscall_latency_seconds_count{{syscall=\"getppid\",cgroup=\"{cg}\"}}"),
        4321.0,
    );
    wait(
        &format!("sum(gimbal_process_exits_total{{cgroup=\"{cg}\",reason=\"exited\",code=\"0\"}})"),
        1.0,
    );
    wait("sum(gimbal_probe_attached)", 3.0);

    // Prometheus asks for gzip (the agent answers it, metrics/http_tests.rs) and reads
    // the same samples as an identity scrape: every bucket of the workload's histogram at
    // the same `le` with the same count, and as many samples per scrape.
    let body = agent.metrics();
    let prefix = "gimbal_syscall_latency_seconds_bucket{le=\"";
    let ours = format!("\",syscall=\"getppid\",cgroup=\"{cg}\"}} ");
    let buckets: Vec<(&str, f64)> = body
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|l| l.split_once(ours.as_str()))
        .map(|(le, v)| (le, v.parse().unwrap()))
        .collect();
    assert_eq!(
        buckets.len(),
        23,
        "the default buckets: 22 bounds and +Inf\n{body}"
    );
    assert_eq!(buckets.last(), Some(&("+Inf", 4321.0)));
    for (le, n) in &buckets {
        wait(
            &format!("gimbal_syscall_latency_seconds_bucket{{syscall=\"getppid\",cgroup=\"{cg}\",le=\"{le}\"}}"),
            *n,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Other cgroups may add series between two scrapes: equal once both saw the same.
        let samples = agent
            .metrics()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .count() as f64;
        let scraped = prometheus.query_one("scrape_samples_scraped{job=\"gimbal\"}");
        if scraped == Some(samples) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus scraped {scraped:?} samples, the agent serves {samples}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(agent.stop(), 0);
}
