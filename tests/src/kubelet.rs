//! A fake Kubernetes node for the tests: pod cgroups in the kubelet's layout (both cgroup
//! drivers) below a unique parent cgroup, and the kubelet's /var/log/pods and
//! /var/log/containers in a temporary root the agent is pointed at (`[kubernetes]
//! log_root`). No kubelet runs: the layout is what one would leave.
use std::{
    os::unix::fs::symlink,
    path::{Path, PathBuf},
};

use crate::{TempDir, TestCgroup};

#[derive(Clone, Copy)]
pub enum Driver {
    Cgroupfs,
    Systemd,
}

/// A fake node: pod cgroups below a unique parent, the kubelet's log layout in a
/// temporary root. Everything is removed on drop (processes first: they are the test's
/// `Proc`s, dropped before this).
pub struct Node {
    pub parent: TestCgroup,
    pub logs: TempDir,
    next: u64,
}

/// One pod with one container, as the kubelet and the runtime lay it out.
pub struct Pod {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub container: String,
    /// The pod's cgroup and its container's, relative to the cgroup2 mount.
    pub pod_cgroup: String,
    pub cgroup: String,
    pub dir: PathBuf,
    pub log_dir: PathBuf,
    pub log_link: PathBuf,
}

impl Default for Node {
    fn default() -> Self {
        Self::new()
    }
}

impl Node {
    pub fn new() -> Self {
        let logs = TempDir::new("kubelet-logs");
        for d in ["pods", "containers"] {
            std::fs::create_dir(logs.0.join(d)).unwrap();
        }
        Self {
            parent: TestCgroup::new("node"),
            logs,
            next: 0,
        }
    }

    pub fn mount(&self) -> &Path {
        self.parent.path.parent().expect("the cgroup2 mount")
    }

    /// A UID and a container id no other pod of this run has.
    fn ids(&mut self) -> (String, String) {
        self.next += 1;
        let (pid, n) = (std::process::id(), self.next);
        (
            format!("{pid:08x}-0000-4000-8000-{n:012x}"),
            format!("{pid:032x}{n:032x}"),
        )
    }

    /// Creates the pod's cgroups (`qos`: burstable, besteffort, or "" for guaranteed) and
    /// its log layout.
    pub fn pod(&mut self, driver: Driver, qos: &str, ns: &str, name: &str, container: &str) -> Pod {
        let (uid, cid) = self.ids();
        let (pod_cgroup, cgroup) = match driver {
            Driver::Cgroupfs => {
                let qos = if qos.is_empty() {
                    String::new()
                } else {
                    format!("{qos}/")
                };
                let pod = format!("{}/kubepods/{qos}pod{uid}", self.parent.name);
                (pod.clone(), format!("{pod}/{cid}"))
            }
            Driver::Systemd => {
                let u = uid.replace('-', "_");
                let (slice, prefix) = if qos.is_empty() {
                    (String::new(), "kubepods".to_string())
                } else {
                    (format!("kubepods-{qos}.slice/"), format!("kubepods-{qos}"))
                };
                let pod = format!(
                    "{}/kubepods.slice/{slice}{prefix}-pod{u}.slice",
                    self.parent.name
                );
                (pod.clone(), format!("{pod}/cri-containerd-{cid}.scope"))
            }
        };
        let dir = self.mount().join(&cgroup);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let log_dir = self.logs.0.join("pods").join(format!("{ns}_{name}_{uid}"));
        std::fs::create_dir_all(log_dir.join(container)).unwrap();
        std::fs::write(log_dir.join(container).join("0.log"), "").unwrap();
        let log_link = self
            .logs
            .0
            .join("containers")
            .join(format!("{name}_{ns}_{container}-{cid}.log"));
        symlink(log_dir.join(container).join("0.log"), &log_link).unwrap();
        Pod {
            uid,
            namespace: ns.into(),
            name: name.into(),
            container: container.into(),
            pod_cgroup,
            cgroup,
            dir,
            log_dir,
            log_link,
        }
    }

    /// A cgroup beside the container's in the pod (a sandbox: no log of its own).
    pub fn sandbox(&mut self, pod: &Pod) -> PathBuf {
        let (_, cid) = self.ids();
        let dir = self.mount().join(&pod.pod_cgroup).join(&cid);
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    /// What the kubelet does when a pod is deleted: its cgroups and its logs go.
    pub fn remove(&self, pod: &Pod) {
        remove_tree(&self.mount().join(&pod.pod_cgroup));
        let _ = std::fs::remove_file(&pod.log_link);
        let _ = std::fs::remove_dir_all(&pod.log_dir);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Children first; the parent TestCgroup removes itself after.
        if let Ok(entries) = std::fs::read_dir(&self.parent.path) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_tree(&e.path());
                }
            }
        }
    }
}

/// Removes a cgroup directory and every cgroup below it (only directories: the files in
/// them are the kernel's).
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
