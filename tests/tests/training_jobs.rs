//! A training job's ranks through the real agent and a real Alertmanager: four processes
//! the test starts with torchrun's environment (`TORCHELASTIC_RUN_ID`, `RANK`, ...), each
//! in a cgroup of its own, one watched target over the four. Rank 0 is SIGKILLed, rank 1
//! OOM-killed by its memory limit, rank 2 preceded by a real-format XID record naming its
//! pid in /dev/kmsg and then killed with SIGABRT; each alert names the job, the rank and
//! the cause. A second job whose ranks exit 0 is finished, not failed.
use std::{process::Command, time::Duration};

use gimbal_tests::{
    agent::Agent, alertmanager::Alertmanager, require_root, sample, spawn_in, unique, wait_for,
    wait_status, wait_until, workload, MemoryLimit, Proc, TempDir, TestCgroup,
};
use serde_json::Value;

/// A rank: `args` for the workload, torchrun's environment for rank `rank` of 4.
fn rank(job: &str, rank: u32, args: &[&str]) -> Command {
    let mut c = workload();
    c.args(args)
        .env_clear()
        .env("TORCHELASTIC_RUN_ID", job)
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("WORLD_SIZE", "4")
        .env("GROUP_RANK", "0")
        .env("TORCHELASTIC_RESTART_COUNT", "0")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", "29500");
    c
}

fn config(state: &TempDir, am: &Alertmanager, glob: &str) -> std::path::PathBuf {
    let path = state.0.join("gimbal.toml");
    let text = format!(
        "[agent]\nstate_dir = \"{}\"\n[[targets]]\nname = \"trainer\"\ncgroup = \"{glob}\"\n[alerting]\nalertmanagers = [\"http://127.0.0.1:{}\"]\nresend_interval = \"1s\"\n[gpu]\nkmsg_user_records = true\n",
        state.0.display(),
        am.port
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn failure(am: &Alertmanager, job: &str, rank: u32) -> Option<Value> {
    let rank = rank.to_string();
    am.active_alerts().into_iter().find(|a| {
        a["labels"]["alertname"] == "TrainingRankFailed"
            && a["labels"]["job"] == job
            && a["labels"]["rank"] == *rank
    })
}

fn summary(alert: &Value) -> String {
    alert["annotations"]["summary"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn signal(p: &Proc, sig: i32) {
    // SAFETY: signalling our own child, not yet reaped.
    unsafe { libc::kill(p.id() as i32, sig) };
}

#[test]
fn each_dead_rank_is_named_with_its_job_and_cause_in_alertmanager() {
    if !require_root!() {
        return;
    }
    let am = Alertmanager::start();
    let state = TempDir::new("jobs-state");
    let prefix = unique("rank");
    let cgroups: Vec<TestCgroup> = (0..4)
        .map(|r| TestCgroup::new(&format!("{prefix}{r}")))
        .collect();
    // TestCgroup names are "gimbal-test-<pid>-<what>-<n>": one glob takes the four.
    let glob = format!("gimbal-test-{}-{prefix}*", std::process::id());
    let config = config(&state, &am, &glob);
    let job = unique("job");
    let finished = unique("finished-job");
    let cores = TempDir::new("cores");

    let mut r0 = cgroups[0].spawn_into(&mut rank(&job, 0, &["pause"]));
    let limit = MemoryLimit::new(&cgroups[1], 64 << 20);
    let mut r1 = spawn_in(
        &mut rank(&job, 1, &["on-usr1", "alloc", "400"]),
        &[cgroups[1].path.join("cgroup.procs"), limit.procs.clone()],
    );
    let mut r2 = cgroups[2].spawn_into(rank(&job, 2, &["pause"]).current_dir(&cores.0));
    let _r3 = cgroups[3].spawn_into(&mut rank(&job, 3, &["pause"]));
    // The second job: two ranks that exit 0 when told.
    let mut done: Vec<Proc> = (0..2)
        .map(|r| cgroups[3].spawn_into(&mut rank(&finished, r, &["on-usr1", "exit", "0"])))
        .collect();

    let agent = Agent::start_with(&["--config", config.to_str().unwrap()]);
    let alive = |job: &str| {
        sample(
            &agent.metrics(),
            &format!("gimbal_training_job_ranks_alive{{training_job=\"{job}\"}} "),
        )
    };
    wait_until("the four ranks found", Duration::from_secs(20), || {
        alive(&job) == Some(4.0) && alive(&finished) == Some(2.0)
    });

    // Rank 0: SIGKILL.
    signal(&r0, libc::SIGKILL);
    assert_eq!(wait_status(&mut r0), libc::SIGKILL);
    // Rank 1: allocates past its cgroup's memory limit.
    signal(&r1, libc::SIGUSR1);
    let status = wait_status(&mut r1);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "rank 1 was not OOM-killed: status {status:#x}"
    );
    // Rank 2: an XID naming its pid, counted by the agent, then SIGABRT.
    let bus = format!("{:04x}:3b:00", std::process::id() & 0xffff);
    let record = format!(
        "<4>NVRM: Xid (PCI:{bus}): 79, pid={}, name=gimbal-workload, GPU has fallen off the bus. {job}\n",
        r2.id()
    );
    std::fs::write("/dev/kmsg", record).expect("write a record to /dev/kmsg (root)");
    wait_until("the XID counted", Duration::from_secs(20), || {
        sample(
            &agent.metrics(),
            &format!(
                "gimbal_gpu_xid_errors_by_cgroup_total{{cgroup=\"{}\",xid=\"79\",action=\"reboot-node\"}} ",
                cgroups[2].name
            ),
        ) == Some(1.0)
    });
    signal(&r2, libc::SIGABRT);
    assert!(libc::WIFSIGNALED(wait_status(&mut r2)));
    // The finished job's ranks exit 0.
    for p in &mut done {
        signal(p, libc::SIGUSR1);
        assert_eq!(wait_status(p), 0);
    }

    let [k0, k1, k2] = wait_for(
        "TrainingRankFailed for ranks 0, 1 and 2",
        Duration::from_secs(20),
        || {
            Some([
                failure(&am, &job, 0)?,
                failure(&am, &job, 1)?,
                failure(&am, &job, 2)?,
            ])
        },
    );
    let node = &k0["labels"]["instance"];
    eprintln!("{}\n{}\n{}", summary(&k0), summary(&k1), summary(&k2));
    assert_eq!(
        summary(&k0),
        format!(
            "rank 0 of job {job} died on {}: SIGKILL",
            node.as_str().unwrap()
        )
    );
    assert!(
        summary(&k1).starts_with(&format!("rank 1 of job {job} died on "))
            && summary(&k1).ends_with(": OOM-killed (SIGKILL)"),
        "{k1}"
    );
    assert_eq!(k1["annotations"]["cause"], "OOM kill");
    let s2 = summary(&k2);
    assert!(
        s2.starts_with(&format!("rank 2 of job {job} died on "))
            && s2.contains(": SIGABRT")
            && s2.ends_with(&format!(" after XID 79 on GPU {bus}")),
        "{s2}"
    );
    assert_eq!(k2["annotations"]["cause"], format!("XID 79 on GPU {bus}"));
    assert_eq!(k2["labels"]["severity"], "critical");
    assert!(failure(&am, &job, 3).is_none(), "rank 3 lives");
    assert!(
        failure(&am, &finished, 0).is_none() && failure(&am, &finished, 1).is_none(),
        "ranks that exit 0 did not fail"
    );

    let m = agent.metrics();
    let state = |job: &str, s: &str| {
        sample(
            &m,
            &format!("gimbal_training_job_state{{training_job=\"{job}\",state=\"{s}\"}} "),
        )
    };
    assert_eq!(state(&finished, "finished"), Some(1.0), "{m}");
    assert_eq!(state(&job, "running"), Some(1.0), "rank 3 still runs");
    assert_eq!(
        sample(
            &m,
            &format!("gimbal_training_job_ranks_alive{{training_job=\"{job}\"}} ")
        ),
        Some(1.0)
    );
    for (reason, code, n) in [
        ("signaled", "SIGKILL", 1.0),
        ("oom_killed", "SIGKILL", 1.0),
        ("signaled", "SIGABRT", 1.0),
    ] {
        assert_eq!(
            sample(
                &m,
                &format!("gimbal_training_job_rank_exits_total{{training_job=\"{job}\",reason=\"{reason}\",code=\"{code}\"}} ")
            ),
            Some(n),
            "{reason} {code}"
        );
    }
    assert_eq!(
        sample(
            &m,
            &format!("gimbal_training_job_rank_exits_total{{training_job=\"{finished}\",reason=\"exited\",code=\"0\"}} ")
        ),
        Some(2.0)
    );
    assert_eq!(agent.stop(), 0);
    drop(limit);
}
