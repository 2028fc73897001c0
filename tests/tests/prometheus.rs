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
    let agent = Agent::start();
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
    assert_eq!(agent.stop(), 0);
}
