//! `[[supervise]]` end to end, with the real agent and real processes: a supervised
//! process killed with SIGKILL is restarted at once, the way the agent's waitpid saw it
//! end is audited, Alertmanager gets the informational alert; the agent itself is
//! SIGKILLed and the next one adopts the running process instead of starting a second
//! copy; removing the entry stops it. A crash-looping process follows the backoff and is
//! given up with an alert; in dry-run a killed process is only reported. A pid reused by
//! an unrelated process while no agent ran is neither adopted nor signalled.
use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use gimbal::cgroups::CgroupNames;
use gimbal_tests::{
    agent::Agent, alertmanager::Alertmanager, require_root, sibling_binary, spawn_in, unique,
    wait_for, workload, Proc, TempDir,
};

/// The cgroup the agent makes its supervised processes' cgroups in; everything in it is
/// killed and removed when the test ends, also when it fails.
struct SupervisedRoot {
    relative: String,
    path: PathBuf,
}

impl SupervisedRoot {
    fn new() -> Self {
        let relative = unique("supervised");
        let path = CgroupNames::from_host()
            .expect("a cgroup2 mount")
            .root()
            .join(&relative);
        Self { relative, path }
    }

    fn procs(&self, name: &str) -> Vec<u32> {
        std::fs::read_to_string(self.path.join(name).join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }
}

impl Drop for SupervisedRoot {
    fn drop(&mut self) {
        let Ok(children) = std::fs::read_dir(&self.path) else {
            return;
        };
        for child in children.flatten().filter(|c| c.path().is_dir()) {
            let _ = std::fs::write(child.path().join("cgroup.kill"), "1");
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::fs::remove_dir(child.path()).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

fn config(
    state: &TempDir,
    root: &SupervisedRoot,
    am: &Alertmanager,
    mode: &str,
    extra: &str,
) -> String {
    let file = state.0.join("gimbal.toml");
    let text = format!(
        "[agent]\nstate_dir = \"{}\"\n\n[alerting]\nalertmanagers = [\"http://127.0.0.1:{}\"]\n\
         resend_interval = \"1s\"\n\n[remediation]\nmode = \"{mode}\"\nsupervised_cgroup = \"{}\"\n\
         backoff = \"300ms\"\nbackoff_max = \"600ms\"\ngive_up_after = 3\nstable_after = \"10s\"\n\n{extra}",
        state.0.display(),
        am.port,
        root.relative
    );
    std::fs::write(&file, text).unwrap();
    file.display().to_string()
}

fn supervise(name: &str, args: &[&str]) -> String {
    let mut command = vec![sibling_binary("gimbal-workload").display().to_string()];
    command.extend(args.iter().map(|a| a.to_string()));
    format!("[[supervise]]\nname = \"{name}\"\ncommand = {command:?}\n")
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn audit(state: &TempDir) -> Vec<serde_json::Value> {
    std::fs::read_to_string(state.0.join("remediation/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit line is JSON"))
        .collect()
}

fn outcomes<'a>(lines: &'a [serde_json::Value], action: &str) -> Vec<&'a serde_json::Value> {
    lines
        .iter()
        .filter(|l| l["action"] == action && l["phase"] == "outcome")
        .collect()
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: plain kill(2); the pid was just read from a cgroup only this test's agent
    // fills, and the process cannot be reaped before its parent (the agent) waits for it.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0, "kill {pid}");
}

fn is_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn a_killed_supervised_process_is_restarted_adopted_by_the_next_agent_and_stopped_when_removed() {
    if !require_root("a_killed_supervised_process_is_restarted_adopted_by_the_next_agent_and_stopped_when_removed") {
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
    if !require_root("a_crash_loop_backs_off_then_is_given_up_with_an_alert") {
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
    if !require_root("dry_run_reports_the_restart_it_would_do_and_starts_nothing") {
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
    if !require_root("a_program_that_cannot_start_is_audited_with_the_kernels_error") {
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

/// Spawns `gimbal-workload pause` with exactly `pid`, by setting the root namespace's last
/// allocated pid just below it; retries when another fork on the host took it first.
fn spawn_with_pid(pid: u32) -> Proc {
    for _ in 0..100 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        // Killed when dropped (a failed assertion included), and holding none of the test
        // harness's pipes, which would keep `cargo test` waiting.
        let child = spawn_in(
            workload()
                .arg("pause")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            &[],
        );
        if child.id() == pid {
            return child;
        }
    }
    panic!("could not get pid {pid} back in 100 tries");
}

#[test]
fn a_pid_reused_while_no_agent_ran_is_neither_adopted_nor_signalled() {
    if !require_root("a_pid_reused_while_no_agent_ran_is_neither_adopted_nor_signalled") {
        return;
    }
    // The supervised process outlives its agent; as this test's orphan it is reaped here,
    // so its pid is free to hand to another process.
    // SAFETY: prctl with integer arguments.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) }, 0);
    let am = Alertmanager::start();
    let state = TempDir::new("pid-reuse");
    let root = SupervisedRoot::new();
    let file = config(&state, &root, &am, "enforce", &supervise("svc", &["pause"]));
    let mut agent = Agent::start_with(&["--config", &file]);
    let first = wait_for("the supervised process", secs(10), || {
        root.procs("svc").first().copied()
    });
    wait_for("its record saved", secs(5), || {
        std::fs::read_to_string(state.0.join("remediation/supervised.json"))
            .ok()
            .filter(|s| s.contains(&format!("\"pid\":{first}")))
    });
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();

    // While no agent runs, the process ends and its pid goes to an unrelated process.
    kill(first, libc::SIGKILL);
    let mut status = 0;
    // SAFETY: reaping our own (adopted) orphan.
    assert_eq!(
        unsafe { libc::waitpid(first as i32, &mut status, 0) },
        first as i32
    );
    let mut impostor = spawn_with_pid(first);

    // The next agent finds the saved pid alive but started at another time: a new process,
    // not the one it supervised. It starts a fresh one and leaves the impostor alone.
    let next = Agent::start_with(&["--config", &file]);
    let fresh = wait_for("a fresh supervised process", secs(10), || {
        root.procs("svc").first().copied()
    });
    assert_ne!(fresh, first);
    // Born in its cgroup by clone3, audited once spawn returned.
    wait_for(
        "a second start audited (else the saved pid was adopted)",
        secs(5),
        || (outcomes(&audit(&state), "start").len() == 2).then_some(()),
    );

    // Removing the entry stops what the agent supervises, and nothing else.
    config(&state, &root, &am, "enforce", "");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(next.child.id() as i32, libc::SIGHUP) };
    wait_for("the fresh process stopped", secs(15), || {
        (!is_alive(fresh)).then_some(())
    });
    assert!(
        impostor.try_wait().unwrap().is_none(),
        "the process that reused pid {first} was signalled"
    );
    drop(next);
}
