//! `[[signal]]` end to end: a critical target goes down, TargetDown fires, and the agent
//! sends SIGUSR1 once to the processes of a cgroup2 group this test made. Ground truth is
//! waitpid: the test's own child died of SIGUSR1. A process that joins the group while the
//! alert still fires is left alone (once per firing).
use std::{
    process::Command,
    time::{Duration, Instant},
};

use gimbal_tests::{
    agent::Agent, audit, require_root, sibling_binary, wait_status, TempDir, TestCgroup,
};

#[test]
fn a_firing_alert_sends_its_signal_once_to_the_matched_cgroups_processes() {
    if !require_root!() {
        return;
    }
    let workload = sibling_binary("gimbal-workload");
    let state = TempDir::new("signal");
    let critical = TestCgroup::new("critical");
    let batch = TestCgroup::new("batch");
    let service = critical.spawn_into(Command::new(&workload).arg("pause"));
    let mut victim = batch.spawn_into(Command::new(&workload).arg("pause"));
    let file = state.0.join("gimbal.toml");
    std::fs::write(
        &file,
        format!(
            "[agent]\nstate_dir = \"{}\"\n\n[[targets]]\nname = \"critical\"\ncgroup = \"{}\"\n\n\
             [remediation]\nmode = \"enforce\"\n\n[[signal]]\nname = \"checkpoint\"\n\
             when = \"TargetDown\"\ntarget = \"critical\"\ncgroups = [\"{}\"]\nsignal = \"SIGUSR1\"\n",
            state.0.display(),
            critical.name,
            batch.name
        ),
    )
    .unwrap();
    let agent = Agent::start_with(&["--config", file.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !agent
        .metrics()
        .contains("gimbal_target_up{target=\"critical\"} 1")
    {
        assert!(
            Instant::now() < deadline,
            "the critical target never came up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    drop(service); // TargetDown fires
    let status = wait_status(&mut victim);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGUSR1,
        "the batch process ended with status {status:#x}, not by SIGUSR1"
    );
    // Still firing: a newcomer is not signalled again.
    let mut newcomer = batch.spawn_into(Command::new(&workload).arg("pause"));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        newcomer.try_wait().unwrap().is_none(),
        "signalled twice in one firing"
    );
    let lines = audit(&state);
    let outcomes: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["phase"] == "outcome").collect();
    assert_eq!(outcomes.len(), 1, "{lines:#?}");
    assert_eq!(outcomes[0]["result"], "done");
    assert_eq!(outcomes[0]["detail"], "SIGUSR1 to 1 processes");
    drop(agent);
}
