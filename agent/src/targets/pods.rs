//! Targets selected by pod (`namespace`, `pod` globs, or `pod_uid`): their components are
//! the cgroups of the pods' containers, one level below the pod cgroup, where the runtime
//! puts the processes (the pod cgroup itself holds none). By name, the pods whose names
//! match now, so a pod recreated under a new UID is followed without a reload. The sandbox
//! (pause) and CRI-O's monitor have cgroups too: where the kubelet's layout names the pod's
//! containers only those count, so a pod whose containers all died is down whatever its
//! sandbox does; without the layout every container-shaped cgroup of the pod counts.
use std::collections::BTreeSet;

use crate::{
    config::{pod_uid_patterns, TargetConfig},
    identity::{cgroup_path, Kubelet},
};

use super::glob_match;

/// Where a pod-name target's processes are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSelection {
    /// The cgroups directly below the matching pods' cgroups (both drivers).
    pub patterns: Vec<String>,
    /// Of those, the containers' (by id), as the kubelet names them; the rest are
    /// sandboxes and monitors. Empty where the layout does not name the pods' containers.
    pub containers: BTreeSet<String>,
}

impl PodSelection {
    /// Whether the cgroup at `path` (relative to the mount) is one of the containers.
    pub fn keeps(&self, path: &str) -> bool {
        cgroup_path::parse(path)
            .and_then(|p| p.container_id)
            .is_some_and(|c| self.containers.is_empty() || self.containers.contains(c))
    }

    fn add(&mut self, uid: &str, containers: impl Iterator<Item = String>) {
        self.patterns
            .extend(pod_uid_patterns(uid).map(|p| format!("{p}/*")));
        self.containers.extend(containers);
    }
}

/// The pods `config` selects (by UID, or by name in `pods`), in a stable order.
pub fn select(config: &TargetConfig, pods: &Kubelet) -> PodSelection {
    let mut s = PodSelection::default();
    if let Some(uid) = &config.pod_uid {
        let names = pods.pod_names(uid);
        let containers = names
            .into_iter()
            .flat_map(|(n, p)| pods.container_ids(n, p))
            .map(str::to_string);
        s.add(uid, containers);
        return s;
    }
    let namespace = config.namespace.as_deref().unwrap_or("*");
    let pod = config.pod.as_deref().unwrap_or("*");
    let mut matching: Vec<_> = pods
        .pods_matching(|n, p| glob_match(namespace, n) && glob_match(pod, p))
        .collect();
    matching.sort_unstable();
    for (uid, namespace, name) in matching {
        s.add(uid, pods.container_ids(namespace, name).map(str::to_string));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const CID: &str = "9ab1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1";

    #[test]
    fn pod_name_globs_resolve_to_the_containers_of_matching_pods() {
        let uid = |n: u8| format!("0f3c5a6e-2b1d-4c8e-9a7f-1e2d3c4b5a6{n}");
        let (u1, u2, u3) = (uid(1), uid(2), uid(3));
        let pods = Kubelet::of(
            &[
                ("ml", "trainer-0", &u1),
                ("ml", "web", &u2),
                ("dev", "trainer-0", &u3),
            ],
            &[("trainer-0", "ml", "worker", CID)],
        );
        let config = Config::parse(
            "[[targets]]\nname = \"t\"\nnamespace = \"ml\"\npod = \"trainer-*\"\n\
             [[targets]]\nname = \"all\"\nnamespace = \"ml\"\n",
            "test",
        )
        .expect("valid");
        let t = select(&config.targets[0], &pods);
        assert_eq!(t.patterns, pod_uid_patterns(&u1).map(|p| format!("{p}/*")));
        assert_eq!(t.containers, BTreeSet::from([CID.to_string()]));
        assert!(t.keeps(&format!("x/kubepods/burstable/pod{u1}/{CID}")));
        let pause = "e".repeat(64);
        assert!(!t.keeps(&format!("x/kubepods/burstable/pod{u1}/{pause}")));
        let u1_ = u1.replace('-', "_");
        assert!(!t.keeps(&format!(
            "kubepods.slice/kubepods-pod{u1_}.slice/crio-conmon-{CID}.scope"
        )));
        assert_eq!(
            select(&config.targets[1], &pods).patterns.len(),
            4,
            "both ml pods"
        );
        assert_eq!(
            select(&config.targets[0], &Kubelet::default()),
            PodSelection::default()
        );
        // By UID: the same, and without the layout any container of the pod counts.
        let by_uid = Config::parse(
            &format!("[[targets]]\nname = \"u\"\npod_uid = \"{u1}\"\n"),
            "t",
        )
        .expect("valid");
        assert_eq!(select(&by_uid.targets[0], &pods), t);
        let bare = select(&by_uid.targets[0], &Kubelet::default());
        assert_eq!(bare.patterns, t.patterns);
        assert!(bare.keeps(&format!("x/kubepods/burstable/pod{u1}/{pause}")));
        assert!(!bare.keeps(&format!("x/kubepods/burstable/pod{u1}")));
    }
}
