//! The agent under a cardinality storm: processes in 10,000 cgroups. Series stay within the
//! agent's series budget and the per-metric one, the rest is folded and counted, and the
//! agent's memory stays bounded.
use std::time::{Duration, Instant};

use gimbal_tests::{agent::Agent, require_root, sample, workload, TestCgroup};

const CGROUPS: usize = 10_000;
/// The default `[labels] max_series_per_metric`.
const MAX_SERIES: usize = 500;
/// The default `[labels] max_series`: label sets of their own take at most 3/4 of it.
const BUDGET: usize = 4_000;
/// Families the budget covers, by the prefix of their series' lines.
const BUDGETED: [&str; 5] = [
    "gimbal_syscall_latency_seconds_",
    "gimbal_syscalls_total{",
    "gimbal_syscall_errors_total{",
    "gimbal_tcp_retransmits_total{",
    "gimbal_process_exits_total{",
];
/// What docs and BENCHMARKS.md promise for the agent's resident memory.
const RSS_LIMIT_KIB: u64 = 64 * 1024;
const FOLDED_EXITS: &str = "gimbal_process_exits_total{cgroup=\"other\",comm=\"other\",";
/// Folded series keep their bounded labels: exits their reason (3) and code (an exit code
/// or one of 64 signal names), latency its syscall (within a second budget).
const MAX_FOLDED_EXITS: usize = 3 * (256 + 64);

/// Child cgroups of the test's own, removed even when an assertion fails (before the
/// parent, which is declared first and so dropped last).
struct Children(Vec<std::path::PathBuf>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = std::fs::remove_dir(c);
        }
    }
}

/// Exits of the storm in `body`: (kept in their own series, folded into `other`, dropped).
fn accounted(body: &str, parent: &str) -> (f64, f64, f64) {
    let kept: f64 = body
        .lines()
        .filter(|l| l.starts_with("gimbal_process_exits_total{") && l.contains(parent))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    // Folded exits keep their reason and code: one `other` series per (reason, code).
    let other: f64 = body
        .lines()
        .filter(|l| l.starts_with(FOLDED_EXITS))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let dropped =
        sample(body, "gimbal_events_dropped_total{probe=\"process_exit\"} ").unwrap_or(0.0);
    (kept, other, dropped)
}

#[test]
fn ten_thousand_cgroups_stay_within_the_series_budget_and_bounded_memory() {
    if !require_root!() {
        return;
    }
    // Every syscall timed: each cgroup's latency label sets cost 25 series each, so the
    // agent's series budget, not the per-metric one, is what binds.
    let agent = Agent::start_config("[probes.syscall_latency]\ntimed_syscalls = [\"*\"]\n");
    let parent = TestCgroup::new("many");
    let mut children = Children(Vec::with_capacity(CGROUPS));
    for i in 0..CGROUPS {
        let c = parent.path.join(format!("c{i}"));
        std::fs::create_dir(&c).expect("create child cgroup");
        children.0.push(c);
    }
    let t0 = Instant::now();
    let status = workload()
        .args([
            "spread",
            parent.path.to_str().unwrap(),
            &CGROUPS.to_string(),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "spread workload failed");
    eprintln!(
        "{CGROUPS} processes in {CGROUPS} cgroups in {:?}",
        t0.elapsed()
    );

    // Wait until every exit of the storm is somewhere: in its own series, in `other`, or
    // counted as dropped.
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let body = agent.metrics();
        let (kept, other, dropped) = accounted(&body, &parent.name);
        if kept + other + dropped >= CGROUPS as f64 || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let rss = agent.rss_kib();

    // (series of their own, folded series): a folded one has cgroup="other".
    let series = |metric_prefix: &str| {
        let all: Vec<&str> = body
            .lines()
            .filter(|l| l.starts_with(metric_prefix))
            .collect();
        let folded = all
            .iter()
            .filter(|l| l.contains("cgroup=\"other\""))
            .count();
        (all.len() - folded, folded)
    };
    let latency = series("gimbal_syscall_latency_seconds_count{");
    let exits = series("gimbal_process_exits_total{");
    eprintln!(
        "series (own, folded): latency {latency:?}, exits {exits:?}; agent RSS {} MiB; scrape {} KiB",
        rss / 1024,
        body.len() / 1024
    );
    assert!(
        latency.0 <= MAX_SERIES && latency.1 <= MAX_SERIES,
        "{latency:?} latency series"
    );
    assert!(
        exits.0 <= MAX_SERIES && exits.1 <= MAX_FOLDED_EXITS,
        "{exits:?} exit series"
    );
    // One budget in series over every family: own series at most 3/4 of it; with the
    // folded ones, the budget plus the folded exits (not counted: few by construction)
    // and one all-`other` series per family.
    let budgeted: Vec<&str> = body
        .lines()
        .filter(|l| BUDGETED.iter().any(|p| l.starts_with(p)))
        .collect();
    let own = budgeted
        .iter()
        .filter(|l| !l.contains("cgroup=\"other\""))
        .count();
    let used = sample(&body, "gimbal_series_budget_used ").unwrap();
    eprintln!(
        "budgeted series: {} ({own} own), budget used {used}",
        budgeted.len()
    );
    assert!(own <= BUDGET * 3 / 4, "{own} own series");
    assert!(
        used > (BUDGET / 2) as f64,
        "budget used {used}: the storm should have spent it"
    );
    assert!(latency.1 > 0, "no latency series folded: {latency:?}");
    assert!(used <= BUDGET as f64, "budget used {used}");
    assert!(
        budgeted.len() <= BUDGET + MAX_FOLDED_EXITS + 25 + 4,
        "{} series in the budgeted families",
        budgeted.len()
    );
    let folded = sample(
        &body,
        "gimbal_series_folded_total{metric=\"gimbal_process_exits_total\"} ",
    )
    .unwrap();
    let (kept, other, dropped) = accounted(&body, &parent.name);
    assert!(
        folded > 0.0 && other > 0.0,
        "nothing folded: folded {folded}, other {other}"
    );
    assert!(
        kept + other + dropped >= CGROUPS as f64,
        "kept {kept} + other {other} + dropped {dropped} < {CGROUPS} after 30 s"
    );
    assert!(
        rss < RSS_LIMIT_KIB,
        "agent RSS {} MiB over {} MiB",
        rss / 1024,
        RSS_LIMIT_KIB / 1024
    );

    let status = agent.stop();
    assert_eq!(status, 0, "agent exit status");
}
