//! What the `[[supervise]]` tests share: the cgroup the agent makes supervised processes'
//! cgroups in, the agent's config, and readers of its audit log.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use gimbal::host::cgroupfs::CgroupNames;

use crate::{alertmanager::Alertmanager, sibling_binary, unique, TempDir};

/// The cgroup the agent makes its supervised processes' cgroups in; everything in it is
/// killed and removed when the test ends, also when it fails.
pub struct SupervisedRoot {
    pub relative: String,
    pub path: PathBuf,
}

impl Default for SupervisedRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl SupervisedRoot {
    pub fn new() -> Self {
        let relative = unique("supervised");
        let path = CgroupNames::from_host()
            .expect("a cgroup2 mount")
            .root()
            .join(&relative);
        Self { relative, path }
    }

    pub fn procs(&self, name: &str) -> Vec<u32> {
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

pub fn config(
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

pub fn supervise(name: &str, args: &[&str]) -> String {
    let mut command = vec![sibling_binary("gimbal-workload").display().to_string()];
    command.extend(args.iter().map(|a| a.to_string()));
    format!("[[supervise]]\nname = \"{name}\"\ncommand = {command:?}\n")
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn outcomes<'a>(lines: &'a [serde_json::Value], action: &str) -> Vec<&'a serde_json::Value> {
    lines
        .iter()
        .filter(|l| l["action"] == action && l["phase"] == "outcome")
        .collect()
}

pub fn kill(pid: u32, sig: i32) {
    // SAFETY: plain kill(2); the pid was just read from a cgroup only this test's agent
    // fills, and the process cannot be reaped before its parent (the agent) waits for it.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0, "kill {pid}");
}

pub fn is_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}
