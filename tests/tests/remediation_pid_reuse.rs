//! A supervised process's pid handed to an unrelated process while no agent ran: the next
//! agent neither adopts nor signals it. On its own (a test binary of its own) because it
//! makes this process a child subreaper and rewinds the kernel's pid counter, which would
//! hand recently freed pids to other tests' processes.
use std::process::Stdio;

use gimbal_tests::{
    agent::Agent,
    alertmanager::Alertmanager,
    audit, require_root, spawn_in,
    supervised::{config, is_alive, kill, outcomes, secs, supervise, SupervisedRoot},
    wait_for, workload, Proc, TempDir,
};

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
    if !require_root!() {
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
    assert_eq!(
        // SAFETY: reaping our own (adopted) orphan into a status we own.
        unsafe { libc::waitpid(first as i32, &mut status, 0) },
        first as i32
    );
    // Start times are in clock ticks (10 ms): an impostor started in the same tick would
    // look like the original. Real reuse takes far longer than a tick.
    std::thread::sleep(std::time::Duration::from_millis(50));
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
