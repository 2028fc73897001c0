//! A watched process killed -> TargetDown in a real Alertmanager; a replacement started ->
//! resolved there; a second, unreachable Alertmanager does not hold delivery up.
use std::time::{Duration, Instant};

use gimbal_tests::{
    agent::Agent, alertmanager::Alertmanager, free_port, require_root, wait_status, workload,
    TempDir, TestCgroup,
};

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    t0.elapsed()
}

fn metric(body: &str, line_prefix: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn killed_target_fires_target_down_in_alertmanager_and_a_restart_resolves_it() {
    if !require_root("killed_target_fires_target_down_in_alertmanager_and_a_restart_resolves_it") {
        return;
    }
    let am = Alertmanager::start();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let cgroup = TestCgroup::new("svc");
    let dir = TempDir::new("alert-config");
    let config = dir.0.join("gimbal.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[[targets]]\nname = \"svc\"\ncgroup = \"{}\"\n\n[alerting]\nalertmanagers = [\"http://127.0.0.1:{}\", \"{dead}\"]\nresend_interval = \"1s\"\n",
            dir.0.display(),
            cgroup.name,
            am.port
        ),
    )
    .unwrap();

    let mut service = cgroup.spawn_into(workload().arg("pause"));
    let agent = Agent::start_with(&["--config", config.to_str().unwrap()]);
    wait_until("target up", Duration::from_secs(10), || {
        metric(&agent.metrics(), "gimbal_target_up{target=\"svc\"} ") == Some(1.0)
    });
    assert!(
        !am.has_active(&[("alertname", "TargetDown"), ("target", "svc")]),
        "no alert while the service runs"
    );

    // SAFETY: killing our own child by pid.
    unsafe { libc::kill(service.id() as i32, libc::SIGKILL) };
    assert_eq!(wait_status(&mut service), libc::SIGKILL);
    let took = wait_until(
        "TargetDown in Alertmanager",
        Duration::from_secs(10),
        || am.has_active(&[("alertname", "TargetDown"), ("target", "svc")]),
    );
    eprintln!("SIGKILL -> TargetDown active in Alertmanager (polled every 5 ms): {took:?}");
    let alert = am
        .active_alerts()
        .into_iter()
        .find(|a| a["labels"]["target"] == "svc")
        .unwrap();
    let description = alert["annotations"]["description"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        description.contains("signaled SIGKILL"),
        "the last exit is in the description: {description}"
    );
    assert!(
        alert["generatorURL"]
            .as_str()
            .unwrap_or_default()
            .starts_with("http://127.0.0.1:"),
        "{alert}"
    );

    let mut replacement = cgroup.spawn_into(workload().arg("pause"));
    wait_until(
        "TargetDown resolved in Alertmanager",
        Duration::from_secs(10),
        || !am.has_active(&[("alertname", "TargetDown"), ("target", "svc")]),
    );

    let body = agent.metrics();
    let sent = metric(&body, &format!("gimbal_alertmanager_notifications_total{{endpoint=\"http://127.0.0.1:{}\",result=\"sent\"}} ", am.port)).unwrap();
    let failed = metric(
        &body,
        &format!(
            "gimbal_alertmanager_notifications_total{{endpoint=\"{dead}\",result=\"failed\"}} "
        ),
    )
    .unwrap();
    assert!(sent >= 2.0, "firing and resolved delivered: sent {sent}");
    assert!(
        failed >= 2.0,
        "the unreachable Alertmanager is counted as failed: {failed}"
    );

    unsafe { libc::kill(replacement.id() as i32, libc::SIGKILL) };
    wait_status(&mut replacement);
    assert_eq!(agent.stop(), 0);
}

#[test]
fn alerts_wait_in_the_spool_while_alertmanager_is_down_also_across_an_agent_crash() {
    if !require_root(
        "alerts_wait_in_the_spool_while_alertmanager_is_down_also_across_an_agent_crash",
    ) {
        return;
    }
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let cgroup = TestCgroup::new("spool");
    let dir = TempDir::new("spool-config");
    let config = dir.0.join("gimbal.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[[targets]]\nname = \"spooled\"\ncgroup = \"{}\"\n[alerting]\nalertmanagers = [\"{url}\"]\nresend_interval = \"1s\"\n",
            dir.0.display(),
            cgroup.name
        ),
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let queued = format!("gimbal_alertmanager_queue_length{{endpoint=\"{url}\"}} ");
    let sent =
        format!("gimbal_alertmanager_notifications_total{{endpoint=\"{url}\",result=\"sent\"}} ");

    // 1. Alertmanager down: the firing and the resolution of an outage wait in the spool.
    let mut service = cgroup.spawn_into(workload().arg("pause"));
    let agent = Agent::start_with(&args);
    wait_until("target up", Duration::from_secs(10), || {
        metric(&agent.metrics(), "gimbal_target_up{target=\"spooled\"} ") == Some(1.0)
    });
    unsafe { libc::kill(service.id() as i32, libc::SIGKILL) };
    wait_status(&mut service);
    wait_until("firing spooled", Duration::from_secs(10), || {
        metric(&agent.metrics(), &queued) == Some(1.0)
    });
    let mut service = cgroup.spawn_into(workload().arg("pause"));
    wait_until("resolution spooled", Duration::from_secs(10), || {
        metric(&agent.metrics(), &queued) == Some(2.0)
    });
    let am = Alertmanager::start_on(port);
    wait_until("spool drained", Duration::from_secs(10), || {
        metric(&agent.metrics(), &queued) == Some(0.0)
    });
    assert_eq!(
        metric(&agent.metrics(), &sent),
        Some(2.0),
        "the firing and the resolution, in order"
    );
    assert!(
        !am.has_active(&[("alertname", "TargetDown"), ("target", "spooled")]),
        "resolved in Alertmanager"
    );
    drop(am);

    // 2. The agent is killed (no clean shutdown) with a firing alert in the spool; the next
    //    agent delivers it once Alertmanager is back.
    unsafe { libc::kill(service.id() as i32, libc::SIGKILL) };
    wait_status(&mut service);
    wait_until("firing spooled again", Duration::from_secs(10), || {
        metric(&agent.metrics(), &queued) == Some(1.0)
    });
    let killed_at = std::time::SystemTime::now();
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGKILL) };
    let mut service = cgroup.spawn_into(workload().arg("pause"));
    let am = Alertmanager::start_on(port);
    let agent = Agent::start_with(&args);
    wait_until(
        "spooled alert delivered by the new agent",
        Duration::from_secs(10),
        || {
            am.active_alerts()
                .iter()
                .any(|a| a["labels"]["target"] == "spooled")
        },
    );
    let alert = am
        .active_alerts()
        .into_iter()
        .find(|a| a["labels"]["target"] == "spooled")
        .unwrap();
    let starts_at = alert["startsAt"].as_str().unwrap().to_string();
    let killed = gimbal::alert::rfc3339(killed_at);
    assert!(
        starts_at < killed,
        "delivered alert started ({starts_at}) before the agent was killed ({killed})"
    );

    unsafe { libc::kill(service.id() as i32, libc::SIGKILL) };
    wait_status(&mut service);
    assert_eq!(agent.stop(), 0);
}
