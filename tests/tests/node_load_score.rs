//! The descheduler's load score, end to end: the real agent under real CPU pressure, a real
//! Prometheus (Debian's) scraping it and evaluating the shipped recording rule, queried the
//! way the descheduler's `LowNodeUtilization` queries it (an instant vector, `instance` =
//! the node's name, values in [0, 1]). Ground truth: the kernel's own `/proc/pressure/cpu`.
use std::{path::PathBuf, process::Command, time::Duration};

use gimbal_tests::{
    agent::Agent, prometheus::Prometheus, require_root, sibling_binary, unique, wait_for, Proc,
    TestCgroup,
};

fn host_cpu_some_avg10() -> f64 {
    let text = std::fs::read_to_string("/proc/pressure/cpu").expect("PSI (/proc/pressure/cpu)");
    text.lines()
        .find(|l| l.starts_with("some "))
        .and_then(|l| l.split_whitespace().find_map(|f| f.strip_prefix("avg10=")))
        .and_then(|v| v.parse().ok())
        .expect("some avg10 in /proc/pressure/cpu")
}

#[test]
fn the_recorded_score_names_the_node_and_follows_the_kernels_cpu_pressure() {
    if !require_root("the_recorded_score_names_the_node_and_follows_the_kernels_cpu_pressure") {
        return;
    }
    let node = unique("node");
    // Read by the agent at start, as the DaemonSet sets it from spec.nodeName. This test
    // file is its own process, with this one test.
    std::env::set_var("NODE_NAME", &node);
    let agent = Agent::start();
    let rules =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging/prometheus/gimbal-rules.yml");
    let prometheus =
        Prometheus::start_with_rules(&format!("127.0.0.1:{}", agent.port), Some(&rules));

    // Twice as many CPU hogs as CPUs: some task always waits for a CPU.
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hogs = TestCgroup::new("cpu-hogs");
    let _hogs: Vec<Proc> = (0..2 * cpus)
        .map(|_| {
            hogs.spawn_into(
                Command::new(sibling_binary("gimbal-workload")).args(["spin", "1000000000000"]),
            )
        })
        .collect();
    wait_for(
        "host CPU pressure above 30 %",
        Duration::from_secs(60),
        || (host_cpu_some_avg10() > 30.0).then_some(()),
    );

    let (labels, score, psi) = wait_for(
        "the recorded score to follow the pressure",
        Duration::from_secs(60),
        || {
            let samples = prometheus.query("gimbal:node_load_score")?;
            let psi = host_cpu_some_avg10();
            match samples.as_slice() {
                [(labels, score)] if *score > 0.2 => Some((labels.clone(), *score, psi)),
                [_] | [] => None,
                more => panic!("one node, one sample: {more:?}"),
            }
        },
    );
    eprintln!("gimbal:node_load_score {score} with the kernel's some avg10 at {psi} %");
    assert_eq!(labels.get("instance"), Some(&node), "{labels:?}");
    assert_eq!(labels.get("node"), Some(&node), "{labels:?}");
    assert!((0.0..=1.0).contains(&score), "{score}");
    // The agent read the pressure at its last tick (<= 1 s), Prometheus scraped and then
    // evaluated the rule (<= 2 s more); avg10 moves little in 3 s.
    assert!(
        (score - psi / 100.0).abs() < 0.15,
        "score {score} against the kernel's some avg10 {psi} %"
    );
    drop(prometheus);
    assert_eq!(agent.stop(), 0);
}
