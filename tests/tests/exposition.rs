//! The real agent binary, scraped over HTTP: the series it reports for a known workload,
//! `promtool check metrics` (Debian's prometheus package), and docs/metrics.md as the spec.
use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use gimbal_tests::{
    agent::Agent, promtool_check_metrics, require_root, sample, wait_status, workload, TestCgroup,
};

/// Polls until the sample with exactly these labels has the value `want` (a tick can read
/// the maps while the workload is still running, so the first value seen may be partial);
/// returns that scrape.
fn wait_for_value(agent: &Agent, line_prefix: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body = agent.metrics();
        let seen = sample(&body, line_prefix);
        if seen == Some(want) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "`{line_prefix}` is {seen:?} after 15 s, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn live_scrape_reports_the_workload_passes_promtool_and_matches_the_docs() {
    if !require_root!() {
        return;
    }
    let agent = Agent::start();
    let cgroup = TestCgroup::new("scrape");
    let mut child = cgroup.spawn_into(workload().args(["getppid", "777"]));
    assert_eq!(wait_status(&mut child), 0);

    let cg = &cgroup.name;
    // The child made exactly 777 getppid calls and exited once, with 0. At the defaults
    // they are counted, not timed (no target asks for them).
    wait_for_value(
        &agent,
        &format!("gimbal_syscalls_total{{syscall=\"getppid\",cgroup=\"{cg}\"}} "),
        777.0,
    );
    let body = wait_for_value(&agent, &format!("gimbal_process_exits_total{{cgroup=\"{cg}\",comm=\"gimbal-workload\",reason=\"exited\",code=\"0\"}} "), 1.0);
    let timed =
        format!("gimbal_syscall_latency_seconds_count{{syscall=\"getppid\",cgroup=\"{cg}\"}} ");
    assert_eq!(sample(&body, &timed), None, "timed at the defaults");

    let (ok, said) = promtool_check_metrics(&body);
    assert!(ok, "promtool check metrics: {said}");

    check_against_docs(&body);

    let (status, ctype, om) = agent
        .try_get(
            "/metrics",
            Some("application/openmetrics-text; version=1.0.0"),
        )
        .unwrap();
    assert_eq!(status, 200);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(om.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    assert_eq!(agent.try_get("/nope", None).unwrap().0, 404);

    let status = agent.stop();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "agent exit status {status:#x} on SIGTERM"
    );
}

/// The exported buckets are exact at their bounds: five sleeps of 63 ms (just above the
/// 62.5 ms = 2^-4 s kernel bound) are in no bucket up to 0.0625, in every one from the next
/// exported bound on (0.125 at the default buckets, 2^(-15/4) s = 74.3 ms in a chosen
/// list), where each sleep, timed by the workload, really ended below that bound.
#[test]
fn exported_buckets_count_exactly_at_their_bounds() {
    if !require_root!() {
        return;
    }
    let dir = gimbal_tests::TempDir::new("buckets");
    for (labels, bounds, next) in [
        ("", 23, "0.125"),
        (
            "classic_buckets = [\"3.814us\", \"62.5ms\", \"74.325444ms\", \"1s\"]",
            5,
            "0.07432544468767007",
        ),
    ] {
        let config = dir.0.join("gimbal.toml");
        std::fs::write(
            &config,
            format!(
                "[agent]\nstate_dir = \"{}\"\n[labels]\n{labels}\n\
                 [probes.syscall_latency]\ntimed_syscalls = [\"clock_nanosleep\"]\n",
                dir.0.display()
            ),
        )
        .unwrap();
        let agent = Agent::start_with(&["--config", config.to_str().unwrap()]);
        let cgroup = TestCgroup::new("buckets");
        let child = cgroup.spawn_into(
            workload()
                .args(["sleep", "5", "63"])
                .stdout(std::process::Stdio::piped()),
        );
        let out = child.into_inner().wait_with_output().unwrap();
        assert!(out.status.success());
        let longest_ns = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().parse::<u64>().unwrap())
            .max()
            .unwrap();
        let cg = &cgroup.name;
        let series = format!("syscall=\"clock_nanosleep\",cgroup=\"{cg}\"}} ");
        let body = wait_for_value(
            &agent,
            &format!("gimbal_syscall_latency_seconds_count{{{series}"),
            5.0,
        );
        let bucket = |le: &str| {
            sample(
                &body,
                &format!("gimbal_syscall_latency_seconds_bucket{{le=\"{le}\",{series}"),
            )
        };
        let exported = body
            .lines()
            .filter(|l| {
                l.starts_with("gimbal_syscall_latency_seconds_bucket{") && l.contains(&series)
            })
            .count();
        assert_eq!(exported, bounds, "{labels}: {body}");
        assert_eq!(bucket("0.0625"), Some(0.0), "{labels}");
        assert_eq!(bucket("+Inf"), Some(5.0), "{labels}");
        let next_ns = (next.parse::<f64>().unwrap() * 1e9).round() as u64;
        if longest_ns <= next_ns {
            assert_eq!(bucket(next), Some(5.0), "{labels}: longest {longest_ns} ns");
        }
        assert_eq!(agent.stop(), 0);
    }
}

/// docs/metrics.md's table: name -> (type, label names). A name written `x?` is left out
/// where its value is unknown (the pod identity labels): kept here as `x?`.
fn documented() -> BTreeMap<String, (String, BTreeSet<String>)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
    let text = std::fs::read_to_string(path).expect("docs/metrics.md");
    text.lines()
        .filter(|l| l.starts_with("| gimbal_"))
        .map(|l| {
            let cells: Vec<_> = l.split('|').map(str::trim).collect();
            let labels = cells[3]
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            (cells[1].to_string(), (cells[2].to_string(), labels))
        })
        .collect()
}

fn check_against_docs(body: &str) {
    let docs = documented();
    assert!(
        docs.len() >= 8,
        "docs/metrics.md table not found or incomplete: {docs:?}"
    );
    let mut types = BTreeMap::new();
    let mut labels: BTreeMap<String, BTreeSet<BTreeSet<String>>> = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap();
            types.insert(name.to_string(), ty.to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            let (name, names) = sample_labels(line);
            let family = types
                .keys()
                .filter(|f| name.starts_with(f.as_str()))
                .max_by_key(|f| f.len())
                .cloned()
                .unwrap_or_else(|| panic!("sample before its TYPE: {line}"));
            labels
                .entry(family)
                .or_default()
                .insert(names.into_iter().filter(|l| l != "le").collect());
        }
    }
    for (name, (ty, want)) in &docs {
        assert_eq!(
            types.get(name),
            Some(ty),
            "{name}: documented as {ty}, exposed as {:?}",
            types.get(name)
        );
        for got in labels.get(name).into_iter().flatten() {
            // Every label the docs require, and of the optional ones only what is there.
            let optional = |l: &String| l.ends_with('?');
            let required: BTreeSet<_> = want.iter().filter(|l| !optional(l)).cloned().collect();
            let extra: BTreeSet<_> = got.difference(&required).cloned().collect();
            let allowed = extra.iter().all(|l| want.contains(&format!("{l}?")));
            assert!(
                got.is_superset(&required) && allowed,
                "{name}: labels {got:?}, documented {want:?}"
            );
        }
    }
    for name in types.keys() {
        assert!(
            docs.contains_key(name),
            "{name} is exposed but not documented in docs/metrics.md"
        );
    }
}

/// Sample name and label names of one exposition line, honouring quoted values.
fn sample_labels(line: &str) -> (String, Vec<String>) {
    let Some((name, rest)) = line.split_once('{') else {
        return (line.split(' ').next().unwrap().to_string(), vec![]);
    };
    let mut names = vec![];
    let (mut key, mut in_value, mut escaped) = (String::new(), false, false);
    for c in rest.chars() {
        match (in_value, c) {
            (true, '\\') if !escaped => escaped = true,
            (true, '"') if !escaped => in_value = false,
            (true, _) => escaped = false,
            (false, '=') => names.push(std::mem::take(&mut key)),
            (false, '"') => in_value = true,
            (false, ',') => {}
            (false, '}') => break,
            (false, c) => key.push(c),
        }
    }
    (name.to_string(), names)
}
