//! `[[supervise]]` end to end, with the real agent and real processes: a supervised
//! process killed with SIGKILL is restarted at once, the way the agent's waitpid saw it
//! end is audited, Alertmanager gets the informational alert; the agent itself is
//! SIGKILLed and the next one adopts the running process instead of starting a second
//! copy; removing the entry stops it. A crash-looping process follows the backoff and is
//! given up with an alert; in dry-run a killed process is only reported.
use std::time::Duration;

use gimbal_tests::{
    agent::Agent,
    alertmanager::Alertmanager,
    audit, require_root,
    supervised::{config, is_alive, kill, outcomes, secs, supervise, SupervisedRoot},
    wait_for, TempDir,
};

#[test]
fn a_killed_supervised_process_is_restarted_adopted_by_the_next_agent_and_stopped_when_removed() {
    if !require_root!() {
        return;
    }
    let am = Alertmanager::start();
    let state = TempDir::new("supervise");
    let root = SupervisedRoot::new();
    let file = config(&state, &root, &am, "enforce", &supervise("svc", &["pause"]));
    let agent = Agent::start_with(&["--config", &file]);

    // Born in its cgroup (clone3), then exec'd: the command line is the workload's only
    // after exec.
    let first = wait_for(
        "the supervised process running the workload",
        secs(10),
        || {
            let pid = root.procs("svc").first().copied()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            cmdline
                .ends_with(b"gimbal-workload\0pause\0")
                .then_some(pid)
        },
    );

    kill(first, libc::SIGKILL);
    let second = wait_for("the replacement", secs(5), || {
        root.procs("svc").first().copied().filter(|&p| p != first)
    });
    assert_eq!(root.procs("svc"), [second]);
    let lines = wait_for("the restart audited", secs(5), || {
        let lines = audit(&state);
        (!outcomes(&lines, "restart").is_empty()).then_some(lines)
    });
    let restart = outcomes(&lines, "restart");
    assert_eq!(restart.len(), 1, "{lines:#?}");
    assert_eq!(restart[0]["result"], "done");
    assert_eq!(restart[0]["cgroup"], format!("{}/svc", root.relative));
    let detail = restart[0]["detail"].as_str().unwrap();
    // What the agent's waitpid saw is what this test did.
    assert!(detail.contains("killed by SIGKILL"), "{detail}");
    assert!(detail.contains(&format!("pid {second}")), "{detail}");
    let done = "gimbal_remediations_total{action=\"restart\",result=\"done\"} ";
    wait_for("the restart counted", secs(5), || {
        (agent.metric(done) == Some(1.0)).then_some(())
    });
    wait_for("the informational alert in Alertmanager", secs(10), || {
        am.has_active(&[
            ("alertname", "GimbalRemediation"),
            ("action", "restart"),
            ("target", "svc"),
            ("result", "done"),
            ("severity", "info"),
        ])
        .then_some(())
    });

    // The agent dies; the process it supervises lives on, and the next agent adopts it.
    let mut agent = agent;
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    assert!(
        is_alive(second),
        "the supervised process died with the agent"
    );
    let next = Agent::start_with(&["--config", &file]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(root.procs("svc"), [second], "a second copy was started");
    let starts = outcomes(&audit(&state), "start").len();
    assert_eq!(starts, 1, "the next agent started it again");

    // Adopted: not its child, watched through a pidfd, and restarted all the same.
    kill(second, libc::SIGKILL);
    let third = wait_for("the adopted process's replacement", secs(5), || {
        root.procs("svc").first().copied().filter(|&p| p != second)
    });
    // The pid joins its cgroup before exec; the outcome is audited once spawn returned.
    let lines = wait_for("the second restart audited", secs(5), || {
        let lines = audit(&state);
        (outcomes(&lines, "restart").len() == 2).then_some(lines)
    });
    let last = outcomes(&lines, "restart")[1].clone();
    assert_eq!(last["result"], "done");
    assert!(
        last["detail"].as_str().unwrap().contains("status unknown"),
        "{last}"
    );
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("pid {third}")),
        "{last}"
    );

    // Removed from the config: stopped (SIGTERM) and its cgroup removed.
    config(&state, &root, &am, "enforce", "");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(next.child.id() as i32, libc::SIGHUP) };
    wait_for("the removed process stopped", secs(15), || {
        (!is_alive(third)).then_some(())
    });
    wait_for("its cgroup removed", secs(5), || {
        (!root.path.join("svc").exists()).then_some(())
    });
    let lines = audit(&state);
    let stop = outcomes(&lines, "stop");
    assert_eq!(stop.len(), 1, "{lines:#?}");
    assert!(
        stop[0]["detail"].as_str().unwrap().contains("SIGTERM"),
        "{}",
        stop[0]
    );
    drop(next);
}

#[test]
fn a_crash_loop_backs_off_then_is_given_up_with_an_alert() {
    if !require_root!() {
        return;
    }
    let am = Alertmanager::start();
    let state = TempDir::new("crashloop");
    let root = SupervisedRoot::new();
    let file = config(
        &state,
        &root,
        &am,
        "enforce",
        &supervise("crashy", &["exit", "3"]),
    );
    let agent = Agent::start_with(&["--config", &file]);

    wait_for("the give-up alert in Alertmanager", secs(15), || {
        am.has_active(&[
            ("alertname", "GimbalRemediationGaveUp"),
            ("target", "crashy"),
            ("severity", "critical"),
        ])
        .then_some(())
    });
    let lines = audit(&state);
    let restarts = outcomes(&lines, "restart");
    let results: Vec<&str> = restarts
        .iter()
        .map(|l| l["result"].as_str().unwrap())
        .collect();
    // give_up_after = 3: three restarts, then no more.
    assert_eq!(results, ["done", "done", "done", "gave_up"], "{lines:#?}");
    let gave_up = restarts[3]["detail"].as_str().unwrap();
    assert!(gave_up.contains("exited with status 3"), "{gave_up}");
    // The first restart at once, then 300 ms, then 600 ms (backoff_max) between them.
    let ms = |l: &serde_json::Value| time_ms(l["time"].as_str().unwrap());
    let gaps: Vec<u64> = restarts.windows(2).map(|w| ms(w[1]) - ms(w[0])).collect();
    assert!(gaps[0] >= 300 && gaps[1] >= 600, "gaps {gaps:?} ms");
    let gave = "gimbal_remediations_total{action=\"restart\",result=\"gave_up\"} ";
    assert_eq!(agent.metric(gave), Some(1.0));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        outcomes(&audit(&state), "restart").len(),
        4,
        "restarted after giving up"
    );
    assert!(root.procs("crashy").is_empty());
}

#[test]
fn dry_run_reports_the_restart_it_would_do_and_starts_nothing() {
    if !require_root!() {
        return;
    }
    let am = Alertmanager::start();
    let state = TempDir::new("supervise-dry");
    let root = SupervisedRoot::new();
    let file = config(&state, &root, &am, "dry-run", &supervise("svc", &["pause"]));
    let agent = Agent::start_with(&["--config", &file]);
    let first = wait_for("the supervised process", secs(10), || {
        root.procs("svc").first().copied()
    });
    kill(first, libc::SIGKILL);
    let dry = "gimbal_remediations_total{action=\"restart\",result=\"dry_run\"} ";
    wait_for("the dry-run decision", secs(5), || {
        (agent.metric(dry) == Some(1.0)).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(root.procs("svc").is_empty(), "dry-run restarted it");
    let lines = audit(&state);
    let restart = outcomes(&lines, "restart");
    assert_eq!(restart.len(), 1);
    assert!(
        restart[0]["detail"]
            .as_str()
            .unwrap()
            .contains("would restart"),
        "{}",
        restart[0]
    );
}

/// Milliseconds of an audit timestamp (`2026-11-26T17:31:05.123Z`) within its day.
fn time_ms(t: &str) -> u64 {
    let clock = &t[11..23];
    let (h, m, s) = (&clock[0..2], &clock[3..5], &clock[6..12]);
    let s: f64 = s.parse().unwrap();
    (h.parse::<u64>().unwrap() * 3600 + m.parse::<u64>().unwrap() * 60) * 1000
        + (s * 1000.0).round() as u64
}

#[test]
fn a_program_that_cannot_start_is_audited_with_the_kernels_error() {
    if !require_root!() {
        return;
    }
    let am = Alertmanager::start();
    let state = TempDir::new("supervise-missing");
    let root = SupervisedRoot::new();
    let entry =
        "[[supervise]]\nname = \"missing\"\ncommand = [\"/nonexistent/gimbal-test-program\"]\n";
    let file = config(&state, &root, &am, "enforce", entry);
    let _agent = Agent::start_with(&["--config", &file]);
    let start = wait_for("the failed start audited", secs(10), || {
        let lines = audit(&state);
        outcomes(&lines, "start").first().map(|l| (*l).clone())
    });
    assert_eq!(start["result"], "failed");
    let detail = start["detail"].as_str().unwrap();
    // execve's ENOENT, carried from the child through the agent's pipe.
    assert!(
        detail.contains("/nonexistent/gimbal-test-program") && detail.contains("No such file"),
        "{detail}"
    );
}
