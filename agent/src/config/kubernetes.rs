//! `[kubernetes]`: where the kubelet's on-disk layout is read from (namespace, pod and
//! container names for the cgroups of pods), and how long a removed cgroup's series stay.
use serde::Deserialize;

use super::HumanDuration;

/// `[kubernetes]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// Holds the kubelet's `pods/` (`<namespace>_<pod>_<uid>/`) and `containers/`
    /// (`<pod>_<namespace>_<container>-<id>.log`). Absent outside Kubernetes: the
    /// namespace, pod and container labels are then left out.
    pub log_root: std::path::PathBuf,
    /// A removed cgroup's series leave /metrics this long after its directory is gone, so
    /// Prometheus scrapes their final values first and a churning node's budget frees up.
    pub removed_cgroup_grace: HumanDuration,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            log_root: "/var/log".into(),
            removed_cgroup_grace: HumanDuration::from_secs(300),
        }
    }
}
