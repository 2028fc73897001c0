//! A real Prometheus (Debian's 2.42) with native histograms enabled scrapes the agent's
//! protobuf exposition, and a second one, without, scrapes its classic buckets. Ground
//! truth: a workload in a test cgroup makes a known number of getppid and clock_nanosleep
//! calls. The native series counts them exactly, and its quantiles match the classic
//! buckets' within one bucket.
//!
//! Two servers, not one: Prometheus 2.42 stores only the native series of a histogram that
//! has native fields (`scrape_classic_histograms`, which keeps both, came in 2.45).
use std::time::{Duration, Instant};

use gimbal_tests::{
    agent::Agent, prometheus::Prometheus, require_root, wait_status, workload, TempDir, TestCgroup,
};

#[test]
fn native_histograms_count_exactly_and_match_the_classic_quantiles() {
    if !require_root!() {
        return;
    }
    // Full classic resolution: each classic bucket is one native bucket, so "within one
    // bucket" is the kernel's own resolution (2^(1/4)).
    let state = TempDir::new("native-state");
    let config = state.0.join("gimbal.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[labels]\nclassic_buckets = \"full\"\n\
             [probes.syscall_latency]\ntimed_syscalls = [\"getppid\", \"clock_nanosleep\"]\n",
            state.0.display()
        ),
    )
    .unwrap();
    let agent = Agent::start_with(&["--config", config.to_str().unwrap()]);
    let scrape = format!(
        "scrape_configs:\n  - job_name: gimbal\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
        agent.port
    );
    let native = Prometheus::start_config_args(&scrape, &["--enable-feature=native-histograms"]);
    let classic = Prometheus::start_config(&scrape);

    let cgroup = TestCgroup::new("native");
    let (getppids, short, long) = (3000u64, (30u64, 1u64), (10u64, 4u64));
    for args in [
        vec!["getppid".to_string(), getppids.to_string()],
        vec!["sleep".into(), short.0.to_string(), short.1.to_string()],
        vec!["sleep".into(), long.0.to_string(), long.1.to_string()],
    ] {
        let mut child = cgroup.spawn_into(workload().args(&args));
        assert_eq!(wait_status(&mut child), 0, "{args:?}");
    }
    let sleeps = short.0 + long.0;

    let wait = |p: &Prometheus, q: &str, want: f64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = p.query_one(q);
            if got == Some(want) {
                return;
            }
            assert!(Instant::now() < deadline, "{q}: {got:?}, want {want}");
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let cg = &cgroup.name;
    let sel = |syscall: &str| format!("{{syscall=\"{syscall}\",cgroup=\"{cg}\"}}");
    for (syscall, n) in [("getppid", getppids), ("clock_nanosleep", sleeps)] {
        let s = sel(syscall);
        // Exact counts: the native series' own count, and the classic _count.
        wait(
            &native,
            &format!("histogram_count(gimbal_syscall_latency_seconds{s})"),
            n as f64,
        );
        wait(
            &classic,
            &format!("gimbal_syscall_latency_seconds_count{s}"),
            n as f64,
        );
        wait(
            &classic,
            &format!("gimbal_syscall_latency_seconds_bucket{{syscall=\"{syscall}\",cgroup=\"{cg}\",le=\"+Inf\"}}"),
            n as f64,
        );
    }
    // 2.42 with native histograms keeps no classic series of a native histogram: what it
    // holds came from the protobuf exposition.
    assert_eq!(
        native.query(&format!(
            "gimbal_syscall_latency_seconds_bucket{}",
            sel("getppid")
        )),
        Some(vec![])
    );
    // Quantiles over the sleeps (1 and 4 ms). Not over getppid: it takes well under 953 ns,
    // the zero bucket, and where every observation is in the zero bucket Prometheus reads
    // it as [-953 ns, 953 ns] (p50 = 0) where the classic reads (0, 953 ns] (docs/metrics.md).
    for syscall in ["clock_nanosleep"] {
        let s = sel(syscall);
        for q in [0.5, 0.99] {
            let n = native
                .query_one(&format!(
                    "histogram_quantile({q}, gimbal_syscall_latency_seconds{s})"
                ))
                .expect("a native quantile");
            let c = classic
                .query_one(&format!(
                    "histogram_quantile({q}, gimbal_syscall_latency_seconds_bucket{s})"
                ))
                .expect("a classic quantile");
            eprintln!("{syscall} p{}: native {n} s, classic {c} s", q * 100.0);
            let one_bucket = 2f64.powf(0.25);
            assert!(
                n > 0.0 && c > 0.0 && n / c <= one_bucket && c / n <= one_bucket,
                "{syscall} p{}: native {n} s, classic {c} s",
                q * 100.0
            );
            // The sleeps' quantiles are known: p50 of 30 x 1 ms and 10 x 4 ms is ~1 ms,
            // p99 ~4 ms; each within the bucket that holds it (and the wake-up delay).
            if syscall == "clock_nanosleep" {
                let want = if q == 0.5 { 1e-3 } else { 4e-3 };
                assert!(
                    n >= want / one_bucket && n <= want * one_bucket * one_bucket,
                    "p{}: native {n} s for sleeps of {want} s",
                    q * 100.0
                );
            }
        }
    }
    drop((native, classic));
    assert_eq!(agent.stop(), 0);
}
