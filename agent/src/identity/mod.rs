//! What a cgroup is in the words of those who run it: the Kubernetes pod and container it
//! belongs to (from its path and the kubelet's on-disk layout), and whether it is still
//! there (a removed cgroup's series leave the model). No I/O per event: the layout is
//! re-read when it changes, the removals looked for on the tick.
pub mod cgroup_path;
pub mod kubelet;
pub mod removed;

pub use kubelet::{Identity, Kubelet, Layout};
pub use removed::Removed;

/// The labels an identity adds beside `cgroup`, in this order; each is left out of a
/// series or alert where empty, so nothing changes outside Kubernetes.
pub const LABELS: [&str; 3] = ["namespace", "pod", "container"];

impl Identity<'_> {
    /// Values in the order of [`LABELS`].
    pub fn values(&self) -> [&str; 3] {
        [self.namespace, self.pod, self.container]
    }
}
