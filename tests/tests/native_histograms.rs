//! A real Prometheus (Debian's 2.42) with native histograms enabled scrapes the agent's
//! protobuf exposition, and a second one, without, scrapes its classic buckets. Ground
//! truth: a workload in a test cgroup makes a known number of getppid and clock_nanosleep
//! calls. The native series counts them exactly, and its quantiles match the classic
//! buckets' within one bucket. The dashboard's latency panels show on both servers (the
//! native one stores no _bucket series): the same p99 by cgroup, the heatmap, the rate.
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
    dashboard_latency_panels_show_on_both(&native, &classic, &cgroup);
    drop((native, classic));
    assert_eq!(agent.stop(), 0);
}

/// The targets' queries of the dashboard panel `title`, with Grafana's variables filled in:
/// every instance, the cgroup `cg`, a 1-minute rate window.
fn panel(title: &str, cg: &str) -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/helm/gimbal/files/gimbal-dashboard.json"
    );
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let p = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == title)
        .unwrap_or_else(|| panic!("no panel {title:?}"));
    p["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["expr"]
                .as_str()
                .unwrap()
                .replace("$instance", ".*")
                .replace("$cgroup", cg)
                .replace("$__rate_interval", "1m")
        })
        .collect()
}

/// The dashboard's latency panels (a Prometheus with native histograms stores no _bucket
/// series) show the same thing from either server: the p99 by cgroup within one bucket,
/// the heatmap from the classic buckets or else the native histogram, and the syscall rate.
fn dashboard_latency_panels_show_on_both(
    native: &Prometheus,
    classic: &Prometheus,
    cgroup: &TestCgroup,
) {
    // New sleeps (4 ms) while both scrape: the rates over the window are not zero.
    let mut child = cgroup.spawn_into(workload().args(["sleep", "20", "4"]));
    assert_eq!(wait_status(&mut child), 0);
    let cg = &cgroup.name;
    let p99 = &panel("p99 syscall latency by cgroup", cg)[0];
    let of_cgroup = |p: &Prometheus| {
        p.query(p99)?
            .into_iter()
            .find(|(l, v)| l.get("cgroup") == Some(cg) && v.is_finite() && *v > 0.0)
            .map(|(_, v)| v)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let (n, c) = loop {
        if let (Some(n), Some(c)) = (of_cgroup(native), of_cgroup(classic)) {
            break (n, c);
        }
        assert!(Instant::now() < deadline, "the p99 panel is blank: {p99}");
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!("dashboard p99 of {cg}: native {n} s, classic {c} s");
    let one_bucket = 2f64.powf(0.25);
    assert!(n / c <= one_bucket && c / n <= one_bucket, "{n} vs {c}");

    let heatmap = panel("Syscall latency", cg);
    let count = |p: &Prometheus, q: &str| p.query(q).map(|r| r.len());
    // A: the classic buckets; B: the native histogram, only where there are none.
    assert!(count(classic, &heatmap[0]).unwrap() > 0, "{}", heatmap[0]);
    assert_eq!(count(native, &heatmap[0]), Some(0), "{}", heatmap[0]);
    assert_eq!(count(classic, &heatmap[1]), Some(0), "{}", heatmap[1]);
    let b = format!("histogram_count({})", heatmap[1]);
    assert!(native.query_one(&b).is_some_and(|n| n > 0.0), "{b}");

    let rate = &panel("Syscalls per second, top 10", cg)[0];
    for p in [native, classic] {
        assert!(count(p, rate).unwrap() > 0, "{rate}");
    }
}
