//! What no action may touch. The hard part cannot be lifted by config: the root cgroup,
//! PID 1's `init.scope`, and the agent's own cgroup with its ancestors (limiting those
//! would limit the agent). The protected unit names (kubelet, containerd, sshd …) come
//! from `[remediation] protected`, whose default config can change.
use std::path::Path;

use crate::host::procfs;

pub struct Guard {
    protected: Vec<String>,
    /// The agent's own cgroup, as path segments in the hierarchy actions write to.
    own: Vec<String>,
}

impl Guard {
    pub fn new(protected: &[String], own_cgroup: &str) -> Self {
        Self {
            protected: protected.to_vec(),
            own: segments(own_cgroup).map(String::from).collect(),
        }
    }

    /// Why an action on the cgroup at `path` (relative to its hierarchy) is refused.
    pub fn refusal(&self, path: &str) -> Option<String> {
        let segs: Vec<&str> = segments(path).collect();
        // Paths reach here confined (targets::confine); one that is not is never guessed at.
        if segs.iter().any(|s| *s == "." || *s == "..") {
            return Some(format!("{path:?} is not a normalised cgroup path"));
        }
        if segs.is_empty() {
            return Some("the root cgroup".into());
        }
        if segs.contains(&"init.scope") {
            return Some("init.scope holds PID 1".into());
        }
        if self.own.len() >= segs.len() && self.own.iter().zip(&segs).all(|(a, b)| a == b) {
            return Some("the agent's own cgroup or one above it".into());
        }
        segs.iter()
            .find(|s| self.protected.iter().any(|p| p == *s))
            .map(|s| format!("{s} is protected ([remediation] protected)"))
    }
}

/// The agent's own cgroup2 path ("0::/..." in /proc/self/cgroup).
pub fn own_cgroup_v2() -> String {
    procfs::cgroup_v2_path(Path::new(procfs::ROOT), "self")
        .ok()
        .flatten()
        .unwrap_or_else(|| "/".into())
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_root_pid1_the_agent_and_its_ancestors_and_protected_units() {
        let g = Guard::new(&["sshd.service".into()], "system.slice/gimbal.service");
        assert!(g.refusal("/").is_some());
        assert!(g.refusal("init.scope").is_some());
        assert!(g.refusal("system.slice").is_some());
        assert!(g.refusal("system.slice/gimbal.service").is_some());
        assert!(g.refusal("system.slice/sshd.service").is_some());
        assert!(g.refusal("system.slice/batch.service").is_none());
        assert!(g.refusal("system.slice/gimbal.service.d").is_none());
        assert!(
            g.refusal("x/..").is_some(),
            "never resolved, always refused"
        );
        assert!(g.refusal("batch/../system.slice/gimbal.service").is_some());
        // An agent in the root cgroup (containers, plain hosts) still refuses the root.
        let root = Guard::new(&[], "/");
        assert!(root.refusal("").is_some());
        assert!(root.refusal("batch").is_none());
    }
}
