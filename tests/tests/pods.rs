//! Pods and containers (issue 13): real cgroups in the kubelet's layout, for both cgroup
//! drivers, under a unique parent; real processes in them; the kubelet's /var/log/pods and
//! /var/log/containers built in a temporary root the agent is pointed at. The labels
//! resolve in /metrics and on a real Alertmanager's alert; 1,000 pods churned keep the
//! series within the budget and the agent's memory bounded, and a removed pod's series stop.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use gimbal_tests::{
    agent::Agent,
    alertmanager::Alertmanager,
    kubelet::{Driver, Node, Pod},
    require_root, sample, spawn_in, wait_for, wait_status, workload, Proc, TempDir, TestCgroup,
};

/// The default `[labels] max_series_per_metric`.
const MAX_SERIES: usize = 500;
/// A ceiling on the agent's resident memory under the churn. At the full series budget of
/// pod cgroups (500 latency histograms with ~200-byte paths) one scrape is 12-15 MB, and
/// the agent's RSS levels off at 55-85 MiB with it, run to run (the allocator keeps what
/// the scrapes took), within the first few hundred pods; 1,000 pods that each left 64 KiB
/// behind would cross this.
const RSS_LIMIT_KIB: u64 = 128 * 1024;

fn in_cgroup(dir: &Path, args: &[&str]) -> Proc {
    let mut cmd = workload();
    cmd.args(args).stdout(std::process::Stdio::null());
    spawn_in(&mut cmd, &[dir.join("cgroup.procs")])
}

/// A config on a state directory of its own, reading the layout under `node`.
fn config(dir: &TempDir, node: &Node, extra: &str) -> PathBuf {
    let path = dir.0.join("gimbal.toml");
    std::fs::write(
        &path,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[probes.syscall_latency]\ntimed_syscalls = [\"*\"]\n\
             [kubernetes]\nlog_root = \"{}\"\n{extra}",
            dir.0.display(),
            node.logs.0.display()
        ),
    )
    .unwrap();
    path
}

/// The label text a pod's series carry after their own labels.
fn identity(p: &Pod) -> String {
    format!(
        "namespace=\"{}\",pod=\"{}\",container=\"{}\"}}",
        p.namespace, p.name, p.container
    )
}

#[test]
fn pod_names_resolve_for_both_drivers_in_metrics_and_on_an_alert() {
    if !require_root!() {
        return;
    }
    let am = Alertmanager::start();
    let mut node = Node::new();
    let trainer = node.pod(Driver::Cgroupfs, "burstable", "ml", "trainer-0", "worker");
    let web = node.pod(
        Driver::Systemd,
        "besteffort",
        "web",
        "frontend-7f9c",
        "nginx",
    );
    let guaranteed = node.pod(Driver::Systemd, "", "ml", "loader-1", "fetch");
    let sandbox = node.sandbox(&trainer);
    let plain = TestCgroup::new("plain");
    // What a hostile or broken layout holds: skipped, counted, never a label.
    std::fs::create_dir(node.logs.0.join("pods").join("Not_A_Pod")).unwrap();
    std::fs::write(
        node.logs
            .0
            .join("containers")
            .join("p_ml_c\"x-0123456789ab.log"),
        "",
    )
    .unwrap();
    let dir = TempDir::new("pods-config");
    let path = config(
        &dir,
        &node,
        &format!(
            "[[targets]]\nname = \"trainer\"\nnamespace = \"ml\"\npod = \"trainer-*\"\n\
             [[targets]]\nname = \"web\"\npod_uid = \"{}\"\n\
             [alerting]\nalertmanagers = [\"http://127.0.0.1:{}\"]\nresend_interval = \"1s\"\n",
            web.uid, am.port
        ),
    );
    let agent = Agent::start_with(&["--config", path.to_str().unwrap()]);

    let sleep = ["sleep", "600", "50"];
    let mut worker = in_cgroup(&trainer.dir, &sleep);
    let _nginx = in_cgroup(&web.dir, &sleep);
    let _fetch = in_cgroup(&guaranteed.dir, &sleep);
    // The pod's sandbox lives on after its container dies, as pause does.
    let _pause = in_cgroup(&sandbox, &sleep);
    let _plain = plain.spawn_into(workload().args(sleep).stdout(std::process::Stdio::null()));

    // Each container's syscalls carry its names beside its cgroup.
    let body = wait_for(
        "labelled latency series of all three pods",
        Duration::from_secs(20),
        || {
            let body = agent.metrics();
            [&trainer, &web, &guaranteed]
                .iter()
                .all(|p| {
                    body.lines().any(|l| {
                        l.starts_with(
                            "gimbal_syscall_latency_seconds_count{syscall=\"clock_nanosleep\",",
                        ) && l.contains(&format!("cgroup=\"{}\",{}", p.cgroup, identity(p)))
                    })
                })
                .then_some(body)
        },
    );
    // Not a pod: no identity label at all (not an empty one).
    let plain_lines: Vec<&str> = body
        .lines()
        .filter(|l| l.contains(&format!("cgroup=\"{}\"", plain.name)))
        .collect();
    assert!(!plain_lines.is_empty(), "the plain cgroup's series");
    assert!(
        plain_lines
            .iter()
            .all(|l| !l.contains("namespace=") && !l.contains("pod=")),
        "{plain_lines:?}"
    );
    // The sandbox is in the pod but no container: namespace and pod, no container.
    let sandbox_rel = sandbox
        .strip_prefix(node.mount())
        .unwrap()
        .display()
        .to_string();
    assert!(
        body.lines().any(|l| l.contains(&format!(
            "cgroup=\"{sandbox_rel}\",namespace=\"ml\",pod=\"trainer-0\"}}"
        ))),
        "the sandbox's series"
    );
    assert_eq!(sample(&body, "gimbal_pod_identities "), Some(3.0));
    assert_eq!(
        sample(&body, "gimbal_pod_identity_entries_skipped "),
        Some(2.0)
    );
    assert_eq!(
        sample(&body, "gimbal_target_up{target=\"trainer\"} "),
        Some(1.0)
    );
    // By UID: its processes are in its container's cgroup, below the pod's (systemd driver).
    assert_eq!(
        sample(&body, "gimbal_target_up{target=\"web\"} "),
        Some(1.0)
    );

    // The trainer's container is killed; its sandbox lives on. The pod-name target is down,
    // and its alert and the exit series say which pod.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(worker.id() as i32, libc::SIGKILL) };
    wait_status(&mut worker);
    let alert = wait_for(
        "TargetDown of the pod-selected target",
        Duration::from_secs(15),
        || {
            am.active_alerts().into_iter().find(|a| {
                a["labels"]["alertname"] == "TargetDown" && a["labels"]["target"] == "trainer"
            })
        },
    );
    assert_eq!(alert["labels"]["namespace"], "ml", "{alert}");
    assert_eq!(alert["labels"]["pod"], "trainer-0", "{alert}");
    // Its one container's cgroup is still there (empty): the container too.
    assert_eq!(alert["labels"]["container"], "worker", "{alert}");
    let exit = format!(
        "cgroup=\"{}\",comm=\"gimbal-workload\",reason=\"signaled\",code=\"SIGKILL\",{}",
        trainer.cgroup,
        identity(&trainer)
    );
    wait_for(
        "the kill's exit series with the pod's names",
        Duration::from_secs(10),
        || {
            agent
                .metrics()
                .lines()
                .any(|l| l.starts_with("gimbal_process_exits_total{") && l.contains(&exit))
                .then_some(())
        },
    );
    // The exposition is still what promtool accepts.
    let (ok, said) = gimbal_tests::promtool_check_metrics(&agent.metrics());
    assert!(ok, "promtool: {said}");
    assert_eq!(agent.stop(), 0);
}

#[test]
fn a_thousand_pods_churned_stay_within_the_budget_and_removed_pods_series_stop() {
    if !require_root!() {
        return;
    }
    const PODS: usize = 1_000;
    const WAVE: usize = 50;
    let mut node = Node::new();
    let dir = TempDir::new("churn-config");
    // Every syscall is timed here, in every cgroup of a shared test machine: its own
    // cgroups would spend the default series budget (4,000) before the pods come. What
    // this shows is the budget given back by removed pods, so the per-metric bound binds.
    let path = config(
        &dir,
        &node,
        "removed_cgroup_grace = \"2s\"\n[labels]\nmax_series = 40000\n",
    );
    let agent = Agent::start_with(&["--config", path.to_str().unwrap()]);
    let rss_start = agent.rss_kib();
    let t0 = Instant::now();
    // (own, folded) series of a family in a scrape: a folded one has cgroup="other".
    let series = |body: &str, prefix: &str| {
        let all: Vec<&str> = body.lines().filter(|l| l.starts_with(prefix)).collect();
        let folded = all
            .iter()
            .filter(|l| l.contains("cgroup=\"other\""))
            .count();
        (all.len() - folded, folded)
    };
    let mut last_wave_labelled = 0;
    let mut rss_per_wave = Vec::new();
    let mut max_seen = (0, 0);
    for wave in 0..PODS / WAVE {
        let pods: Vec<Pod> = (0..WAVE)
            .map(|i| {
                let driver = if i % 2 == 0 {
                    Driver::Cgroupfs
                } else {
                    Driver::Systemd
                };
                let name = format!("churn-{:04}", wave * WAVE + i);
                node.pod(driver, "burstable", "batch", &name, "job")
            })
            .collect();
        for p in &pods {
            let mut child = in_cgroup(&p.dir, &["getppid", "10"]);
            assert_eq!(wait_status(&mut child), 0);
        }
        // Read by at least one tick while the pods are there, then deleted.
        let body = wait_for(
            "this wave's exits, with names",
            Duration::from_secs(10),
            || {
                let body = agent.metrics();
                let labelled = pods
                    .iter()
                    .filter(|p| body.contains(&format!("pod=\"{}\",container=\"job\"}}", p.name)))
                    .count();
                (labelled > 0).then_some((body, labelled))
            },
        );
        let (body, labelled) = body;
        let latency = series(&body, "gimbal_syscall_latency_seconds_count{");
        let exits = series(&body, "gimbal_process_exits_total{");
        max_seen = (max_seen.0.max(latency.0), max_seen.1.max(exits.0));
        assert!(
            latency.0 <= MAX_SERIES,
            "wave {wave}: {latency:?} latency series"
        );
        assert!(exits.0 <= MAX_SERIES, "wave {wave}: {exits:?} exit series");
        last_wave_labelled = labelled;
        rss_per_wave.push(agent.rss_kib());
        if std::env::var_os("GIMBAL_PODS_TRACE").is_some() {
            eprintln!(
                "wave {wave}: RSS {} KiB, latency {latency:?}, exits {exits:?}, scrape {} KiB",
                rss_per_wave[wave],
                body.len() / 1024,
            );
        }
        for p in &pods {
            node.remove(p);
        }
    }
    let churn = t0.elapsed();
    // The last of the 1,000 pods still got series of their own, with their names: the
    // removed ones handed their budget back (without that, everything past the first
    // 500 label sets would fold into `other`).
    assert!(last_wave_labelled > 0);

    // All removed: after the grace, none of their series is left.
    let body = wait_for(
        "the removed pods' series to stop",
        Duration::from_secs(15),
        || {
            let body = agent.metrics();
            (!body.contains(&node.parent.name)).then_some(body)
        },
    );
    let rss = agent.rss_kib();
    let half = rss_per_wave.len() / 2;
    let first = *rss_per_wave[..half].iter().max().unwrap();
    let second = *rss_per_wave[half..].iter().max().unwrap();
    eprintln!(
        "{PODS} pods churned in {churn:?}; most own series seen: latency {}, exits {}; \
         last wave labelled {last_wave_labelled}/{WAVE}; RSS {rss_start} KiB at start, \
         most {first} KiB in the first half, {second} KiB in the second, {rss} KiB at the end; \
         scrape after {} KiB; folded exits {:?}",
        max_seen.0,
        max_seen.1,
        body.len() / 1024,
        sample(
            &body,
            "gimbal_series_folded_total{metric=\"gimbal_process_exits_total\"} "
        )
    );
    assert!(rss.max(second) < RSS_LIMIT_KIB, "agent RSS {rss} KiB");

    // The removed pods' kernel map keys went with their series (without that they would
    // fill the latency map for the ten minutes of the idle prune): one more pod's syscalls
    // get a series of their own, and nothing is dropped for want of room.
    let dropped = |body: &str| {
        sample(
            body,
            "gimbal_events_dropped_total{probe=\"syscall_latency\"} ",
        )
        .unwrap_or(0.0)
    };
    assert_eq!(sample(&body, "gimbal_pod_identities "), Some(0.0));
    let before = dropped(&body);
    let last = node.pod(Driver::Systemd, "", "batch", "after-churn", "job");
    let mut child = in_cgroup(&last.dir, &["getppid", "10"]);
    assert_eq!(wait_status(&mut child), 0);
    let want = format!("cgroup=\"{}\",{}", last.cgroup, identity(&last));
    let body = wait_for(
        "the pod after the churn's getppid series",
        Duration::from_secs(10),
        || {
            let body = agent.metrics();
            body.lines()
                .any(|l| {
                    l.starts_with("gimbal_syscall_latency_seconds_count{syscall=\"getppid\",")
                        && l.contains(&want)
                })
                .then_some(body)
        },
    );
    assert_eq!(
        dropped(&body),
        before,
        "latency pairs dropped after the churn"
    );
    assert_eq!(agent.stop(), 0);
}
