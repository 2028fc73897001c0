//! Alerting against a real Alertmanager: a watched process killed -> TargetDown (and
//! TargetProcessKilled); a replacement started -> resolved; an unreachable second
//! Alertmanager does not hold delivery up; while every Alertmanager is down, notifications
//! wait in the spool, also across an agent crash.
use std::time::{Duration, Instant};

use gimbal_tests::{
    agent::Agent, alertmanager::Alertmanager, free_port, require_root, sample, wait_status,
    wait_until, workload, TempDir, TestCgroup,
};
use serde_json::Value;

/// `wait_until` that also says how long it took, polling finely: it times a delivery.
fn timed_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    t0.elapsed()
}

fn find(am: &Alertmanager, alertname: &str, target: &str) -> Option<Value> {
    am.active_alerts()
        .into_iter()
        .find(|a| a["labels"]["alertname"] == alertname && a["labels"]["target"] == target)
}

/// A config watching `target`, selected by `selector` (e.g. `unit = "x"`).
fn config_with(
    dir: &TempDir,
    target: &str,
    selector: &str,
    alertmanagers: &[String],
) -> std::path::PathBuf {
    let path = dir.0.join("gimbal.toml");
    let ams: Vec<String> = alertmanagers.iter().map(|u| format!("\"{u}\"")).collect();
    let text = format!(
        "[agent]\nstate_dir = \"{}\"\n[[targets]]\nname = \"{target}\"\n{selector}\n[alerting]\nalertmanagers = [{}]\nresend_interval = \"1s\"\n",
        dir.0.display(),
        ams.join(", ")
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn config(
    dir: &TempDir,
    target: &str,
    cgroup: &str,
    alertmanagers: &[String],
) -> std::path::PathBuf {
    config_with(
        dir,
        target,
        &format!("cgroup = \"{cgroup}\""),
        alertmanagers,
    )
}

#[test]
fn killed_target_fires_target_down_in_alertmanager_and_a_restart_resolves_it() {
    if !require_root!() {
        return;
    }
    // An HA pair; the second goes down before the failure.
    let am = Alertmanager::start();
    let second = Alertmanager::start();
    let live = format!("http://127.0.0.1:{}", am.port);
    let dead = format!("http://127.0.0.1:{}", second.port);
    let cgroup = TestCgroup::new("svc");
    let dir = TempDir::new("alert-config");
    // Selected the way a systemd unit is: by its cgroup's name at any depth.
    let unit = format!("unit = \"{}\"", cgroup.name);
    let config = config_with(&dir, "svc", &unit, &[live.clone(), dead.clone()]);

    let mut service = cgroup.spawn_into(workload().arg("pause"));
    let agent = Agent::start_with(&["--config", config.to_str().unwrap()]);
    wait_until("target up", Duration::from_secs(10), || {
        sample(&agent.metrics(), "gimbal_target_up{target=\"svc\"} ") == Some(1.0)
    });
    assert!(
        find(&am, "TargetDown", "svc").is_none(),
        "no alert while the service runs"
    );
    drop(second);

    // SAFETY: killing our own child by pid.
    unsafe { libc::kill(service.id() as i32, libc::SIGKILL) };
    assert_eq!(wait_status(&mut service), libc::SIGKILL);
    let took = timed_until(
        "TargetDown in Alertmanager",
        Duration::from_secs(10),
        || find(&am, "TargetDown", "svc").is_some(),
    );
    eprintln!("SIGKILL -> TargetDown active in Alertmanager (polled every 5 ms): {took:?}");
    let down = find(&am, "TargetDown", "svc").unwrap();
    let description = down["annotations"]["description"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        description.contains("signaled SIGKILL"),
        "the last exit is in the description: {description}"
    );
    assert!(
        down["generatorURL"]
            .as_str()
            .unwrap_or_default()
            .starts_with("http://127.0.0.1:"),
        "{down}"
    );
    let killed = find(&am, "TargetProcessKilled", "svc").expect("TargetProcessKilled fires too");
    assert!(
        killed["annotations"]["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("SIGKILL"),
        "{killed}"
    );

    let _replacement = cgroup.spawn_into(workload().arg("pause"));
    wait_until(
        "TargetDown resolved in Alertmanager",
        Duration::from_secs(10),
        || find(&am, "TargetDown", "svc").is_none(),
    );

    // The counters move when each Alertmanager's reply is read, which can come after the
    // resolution shows there.
    let sent =
        format!("gimbal_alertmanager_notifications_total{{endpoint=\"{live}\",result=\"sent\"}} ");
    let failed = format!(
        "gimbal_alertmanager_notifications_total{{endpoint=\"{dead}\",result=\"failed\"}} "
    );
    // TargetDown firing and resolved, TargetProcessKilled firing.
    wait_until("3 notifications sent", Duration::from_secs(10), || {
        agent.metric(&sent).is_some_and(|n| n >= 3.0)
    });
    wait_until(
        "3 failed to the unreachable Alertmanager",
        Duration::from_secs(10),
        || agent.metric(&failed).is_some_and(|n| n >= 3.0),
    );
    let body = agent.metrics();
    assert!(
        sample(&body, "gimbal_target_failures_total{target=\"svc\"} ").is_some_and(|n| n >= 1.0)
    );
    assert_eq!(agent.stop(), 0);
}

#[test]
fn alerts_wait_in_the_spool_while_alertmanager_is_down_also_across_an_agent_crash() {
    if !require_root!() {
        return;
    }
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let cgroup = TestCgroup::new("spool");
    let dir = TempDir::new("spool-config");
    let config = config(&dir, "spooled", &cgroup.name, std::slice::from_ref(&url));
    let args = ["--config", config.to_str().unwrap()];
    let queued = format!("gimbal_alertmanager_queue_length{{endpoint=\"{url}\"}} ");
    let queue = |agent: &Agent| sample(&agent.metrics(), &queued).unwrap_or(0.0);

    // 1. Alertmanager down: the firing and the resolution of an outage wait in the spool.
    let mut service = cgroup.spawn_into(workload().arg("pause"));
    let agent = Agent::start_with(&args);
    wait_until("target up", Duration::from_secs(10), || {
        sample(&agent.metrics(), "gimbal_target_up{target=\"spooled\"} ") == Some(1.0)
    });
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(service.id() as i32, libc::SIGKILL) };
    wait_status(&mut service);
    wait_until("firing spooled", Duration::from_secs(10), || {
        queue(&agent) >= 1.0
    });
    let mut service = cgroup.spawn_into(workload().arg("pause"));
    wait_until("resolution spooled", Duration::from_secs(10), || {
        queue(&agent) >= 2.0
    });
    let am = Alertmanager::start_on(port);
    wait_until("spool drained", Duration::from_secs(10), || {
        queue(&agent) == 0.0
    });
    // Delivered in order, so the resolution came last and the alert is not active.
    assert!(
        find(&am, "TargetDown", "spooled").is_none(),
        "resolved in Alertmanager"
    );
    drop(am);

    // 2. The agent is killed (no clean shutdown) with a firing alert in the spool, and the
    //    service comes back while no agent runs. The next agent first delivers the spooled
    //    firing, then the resolution it finds from its persisted alert state.
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(service.id() as i32, libc::SIGKILL) };
    wait_status(&mut service);
    wait_until("firing spooled again", Duration::from_secs(10), || {
        queue(&agent) >= 1.0
    });
    drop(agent); // SIGKILL
    let spool_dir = dir.0.join("alert-spool");
    let spooled: usize = std::fs::read_dir(&spool_dir)
        .unwrap()
        .flatten()
        // Not a `.tmp` a kill left behind mid-write: the agent never reads those either.
        .filter(|f| f.path().extension().is_some_and(|e| e == "jsonl"))
        .flat_map(|f| {
            std::fs::read_to_string(f.path())
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .map(|batch| {
            serde_json::from_str::<Value>(&batch)
                .unwrap()
                .as_array()
                .map_or(0, Vec::len)
        })
        .sum();
    assert!(spooled >= 1, "the crash left alerts in the spool");
    let _service = cgroup.spawn_into(workload().arg("pause"));
    let am = Alertmanager::start_on(port);
    let agent = Agent::start_with(&args);
    let sent =
        format!("gimbal_alertmanager_notifications_total{{endpoint=\"{url}\",result=\"sent\"}} ");
    wait_until(
        "spool delivered by the new agent, then the resolution",
        Duration::from_secs(10),
        || queue(&agent) == 0.0 && sample(&agent.metrics(), &sent).unwrap_or(0.0) > spooled as f64,
    );
    assert!(
        find(&am, "TargetDown", "spooled").is_none(),
        "resolved last, in order"
    );
    // The history survived the crash: both failures are still counted.
    assert_eq!(
        sample(
            &agent.metrics(),
            "gimbal_target_failures_total{target=\"spooled\"} "
        ),
        Some(2.0)
    );
    assert_eq!(agent.stop(), 0);
}

#[test]
fn crash_loops_user_rules_and_sighup_reloads() {
    if !require_root!() {
        return;
    }
    let am = Alertmanager::start();
    let url = format!("http://127.0.0.1:{}", am.port);
    let (one, two) = (TestCgroup::new("one"), TestCgroup::new("two"));
    let dir = TempDir::new("rules-config");
    let path = config(&dir, "one", &one.name, std::slice::from_ref(&url));
    let rule = format!(
        "[[rules]]\nalert = \"WorkloadExit42\"\nexpr = 'increase(gimbal_process_exits_total{{cgroup=\"{}\",code=\"42\"}}[5m]) > 0'\nseverity = \"page\"\nlabels = {{ team = \"ml\" }}\nannotations = {{ summary = \"exit 42\", runbook_url = \"https://runbooks.example/exit42\" }}\n",
        one.name
    );
    let v1 = std::fs::read_to_string(&path).unwrap() + &rule;
    std::fs::write(&path, &v1).unwrap();
    let agent = Agent::start_with(&["--config", path.to_str().unwrap()]);
    let body = |agent: &Agent| agent.metrics();

    // A user rule on a counter that did not exist before.
    let mut p = one.spawn_into(workload().args(["exit", "42"]));
    wait_status(&mut p);
    wait_until(
        "WorkloadExit42 in Alertmanager",
        Duration::from_secs(10),
        || {
            am.has_active(&[
                ("alertname", "WorkloadExit42"),
                ("team", "ml"),
                ("severity", "page"),
                ("code", "42"),
            ])
        },
    );

    // Three failures within the crash-loop window (default 3 in 10m).
    for i in 0..3 {
        let mut service = one.spawn_into(workload().arg("pause"));
        wait_until("up", Duration::from_secs(10), || {
            sample(&body(&agent), "gimbal_target_up{target=\"one\"} ") == Some(1.0)
        });
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(service.id() as i32, libc::SIGKILL) };
        wait_status(&mut service);
        wait_until("down", Duration::from_secs(10), || {
            sample(
                &body(&agent),
                "gimbal_target_failures_total{target=\"one\"} ",
            ) >= Some(i as f64 + 2.0)
        });
    }
    wait_until(
        "TargetCrashLooping in Alertmanager",
        Duration::from_secs(10),
        || find(&am, "TargetCrashLooping", "one").is_some(),
    );

    // A broken config is rejected and the running one stays.
    std::fs::write(&path, "[[targets]]\nname = \"two\"\ncgroup = \n").unwrap();
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGHUP) };
    wait_until("rejected reload", Duration::from_secs(10), || {
        sample(
            &body(&agent),
            "gimbal_config_reloads_total{result=\"rejected\"} ",
        ) == Some(1.0)
    });
    assert!(
        sample(&body(&agent), "gimbal_target_up{target=\"one\"} ").is_some(),
        "still watching `one`"
    );

    // A good one replaces targets and rules.
    config(&dir, "two", &two.name, std::slice::from_ref(&url));
    let _service = two.spawn_into(workload().arg("pause"));
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGHUP) };
    wait_until("two watched", Duration::from_secs(10), || {
        sample(&body(&agent), "gimbal_target_up{target=\"two\"} ") == Some(1.0)
    });
    let b = body(&agent);
    assert_eq!(
        sample(&b, "gimbal_config_reloads_total{result=\"accepted\"} "),
        Some(1.0)
    );
    assert!(
        sample(&b, "gimbal_target_up{target=\"one\"} ").is_none(),
        "`one` is no longer watched"
    );
    assert_eq!(agent.stop(), 0);
}

#[test]
fn basic_auth_towards_alertmanager() {
    if !require_root!() {
        return;
    }
    // bcrypt of "gimbal-test-password" (a fixture made with Python's crypt module).
    let hash = "$2b$04$3CqOiNtVIvx74zlCUsyFvutnBFjIuLkrf/KXxnd0Q0O5.PvE5hBUe";
    let am = Alertmanager::start_with_basic_auth("gimbal", hash, "gimbal-test-password");
    assert_eq!(
        gimbal_tests::agent::http_get(am.port, "/api/v2/alerts").map(|r| r.0),
        Some(401),
        "Alertmanager enforces auth"
    );
    let url = format!("http://127.0.0.1:{}", am.port);
    let cgroup = TestCgroup::new("auth");
    let dir = TempDir::new("auth-config");
    let path = config(&dir, "authed", &cgroup.name, std::slice::from_ref(&url));
    std::fs::write(dir.0.join("password"), "gimbal-test-password\n").unwrap();
    let auth = format!(
        "basic_auth_username = \"gimbal\"\nbasic_auth_password_file = \"{}\"\n",
        dir.0.join("password").display()
    );
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("[alerting]\n", &format!("[alerting]\n{auth}"));
    std::fs::write(&path, text).unwrap();
    // No process in the cgroup: TargetDown fires at the first tick.
    let agent = Agent::start_with(&["--config", path.to_str().unwrap()]);
    wait_until(
        "TargetDown through basic auth",
        Duration::from_secs(10),
        || find(&am, "TargetDown", "authed").is_some(),
    );
    assert_eq!(agent.stop(), 0);
}

#[test]
fn an_agent_crash_while_an_alert_fires_neither_resolves_it_nor_loses_history() {
    if !require_root!() {
        return;
    }
    let am = Alertmanager::start();
    let url = format!("http://127.0.0.1:{}", am.port);
    let cgroup = TestCgroup::new("crash");
    let dir = TempDir::new("crash-config");
    let path = config(&dir, "crashy", &cgroup.name, std::slice::from_ref(&url));
    // A firing alert's endsAt is 4 resend intervals ahead: at 1 s, a restart slowed by a
    // busy machine (BTF, the verifier) could let Alertmanager expire it on its own.
    let text = std::fs::read_to_string(&path).unwrap();
    let slower = text.replace("resend_interval = \"1s\"", "resend_interval = \"5s\"");
    assert_ne!(text, slower);
    std::fs::write(&path, slower).unwrap();
    let args = ["--config", path.to_str().unwrap()];
    // Nothing runs in the cgroup: TargetDown fires at the first tick.
    let agent = Agent::start_with(&args);
    wait_until("TargetDown", Duration::from_secs(10), || {
        find(&am, "TargetDown", "crashy").is_some()
    });
    let failures = sample(
        &agent.metrics(),
        "gimbal_target_failures_total{target=\"crashy\"} ",
    )
    .unwrap();
    let starts_at = find(&am, "TargetDown", "crashy").unwrap()["startsAt"].clone();

    drop(agent); // SIGKILL: no clean shutdown, no resolution sent
    let restarted = Instant::now();
    let agent = Agent::start_with(&args);
    let sent =
        format!("gimbal_alertmanager_notifications_total{{endpoint=\"{url}\",result=\"sent\"}} ");
    // Until the new agent has re-sent the alert, Alertmanager must never see it resolved.
    while sample(&agent.metrics(), &sent).unwrap_or(0.0) < 1.0 {
        assert!(
            find(&am, "TargetDown", "crashy").is_some(),
            "resolved during the restart"
        );
        assert!(
            restarted.elapsed() < Duration::from_secs(20),
            "the new agent never re-sent"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(find(&am, "TargetDown", "crashy").is_some());
    // A fresh Alertmanager on the same port knows only what the new agent sends it (the old
    // one merges startsAt on its own): the persisted alert state kept the original startsAt.
    let port = am.port;
    drop(am);
    let am = Alertmanager::start_on(port);
    wait_until(
        "re-sent to the fresh Alertmanager",
        Duration::from_secs(20),
        || find(&am, "TargetDown", "crashy").is_some(),
    );
    let resent = find(&am, "TargetDown", "crashy").unwrap();
    assert_eq!(
        resent["startsAt"], starts_at,
        "the restarted agent kept the alert's startsAt"
    );
    let after = sample(
        &agent.metrics(),
        "gimbal_target_failures_total{target=\"crashy\"} ",
    )
    .unwrap();
    assert_eq!(
        after, failures,
        "the failure count survived the crash (and the down target was not counted again)"
    );
    assert_eq!(agent.stop(), 0);
}

#[test]
fn a_target_selected_by_executable_goes_down_with_its_last_process() {
    if !require_root!() {
        return;
    }
    let am = Alertmanager::start();
    let url = format!("http://127.0.0.1:{}", am.port);
    let dir = TempDir::new("exe-config");
    let exe = gimbal_tests::sibling_binary("gimbal-workload");
    let selector = format!("comm = \"gimbal-workload\"\nexe = \"{}\"", exe.display());
    let path = config_with(&dir, "byexe", &selector, std::slice::from_ref(&url));
    let cgroup = TestCgroup::new("exe");
    let mut service = cgroup.spawn_into(workload().arg("pause"));
    let agent = Agent::start_with(&["--config", path.to_str().unwrap()]);
    wait_until("up", Duration::from_secs(10), || {
        sample(&agent.metrics(), "gimbal_target_up{target=\"byexe\"} ") == Some(1.0)
    });
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(service.id() as i32, libc::SIGKILL) };
    wait_status(&mut service);
    wait_until("TargetDown", Duration::from_secs(10), || {
        find(&am, "TargetDown", "byexe").is_some()
    });
    assert_eq!(agent.stop(), 0);
}

#[test]
fn https_towards_alertmanager_verified_against_the_configured_ca() {
    if !require_root!() {
        return;
    }
    let (am, ca) = Alertmanager::start_with_tls();
    let url = format!("https://127.0.0.1:{}", am.port);
    let cgroup = TestCgroup::new("tls");
    let dir = TempDir::new("tls-config");
    let path = config(&dir, "secure", &cgroup.name, std::slice::from_ref(&url));
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[alerting]\n",
        &format!("[alerting]\ntls_ca_file = \"{}\"\n", ca.display()),
    );
    std::fs::write(&path, text).unwrap();
    // No process in the cgroup: TargetDown fires at the first tick, over TLS.
    let agent = Agent::start_with(&["--config", path.to_str().unwrap()]);
    wait_until("TargetDown over https", Duration::from_secs(15), || {
        find(&am, "TargetDown", "secure").is_some()
    });
    assert_eq!(agent.stop(), 0);
}
