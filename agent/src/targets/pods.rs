//! Targets selected by pod name (`namespace`, `pod` globs): their cgroups are the pod
//! cgroups of the UIDs whose names match in the kubelet's layout now, so a pod recreated
//! under a new UID is followed without a reload.
use crate::{
    config::{pod_uid_patterns, TargetConfig},
    identity::Kubelet,
};

use super::glob_match;

/// The cgroup globs of the pods `config` selects by name, in a stable order.
pub fn patterns(config: &TargetConfig, pods: &Kubelet) -> Vec<String> {
    let namespace = config.namespace.as_deref().unwrap_or("*");
    let pod = config.pod.as_deref().unwrap_or("*");
    let mut uids: Vec<&str> = pods
        .uids_matching(|n, p| glob_match(namespace, n) && glob_match(pod, p))
        .collect();
    uids.sort_unstable();
    uids.into_iter().flat_map(pod_uid_patterns).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_name_globs_resolve_to_the_pod_cgroups_of_matching_uids() {
        let root = std::env::temp_dir().join(format!("gimbal-target-pods-{}", std::process::id()));
        let uid = |n: u8| format!("0f3c5a6e-2b1d-4c8e-9a7f-1e2d3c4b5a6{n}");
        for (ns, pod, n) in [
            ("ml", "trainer-0", 1),
            ("ml", "web", 2),
            ("dev", "trainer-0", 3),
        ] {
            std::fs::create_dir_all(root.join("pods").join(format!("{ns}_{pod}_{}", uid(n))))
                .unwrap();
        }
        let pods = Kubelet::read(&root);
        let config = crate::config::Config::parse(
            "[[targets]]\nname = \"t\"\nnamespace = \"ml\"\npod = \"trainer-*\"\n\
             [[targets]]\nname = \"all\"\nnamespace = \"ml\"\n",
            "test",
        )
        .expect("valid");
        let got = patterns(&config.targets[0], &pods);
        assert_eq!(got, pod_uid_patterns(&uid(1)).to_vec());
        assert_eq!(patterns(&config.targets[1], &pods).len(), 4, "both ml pods");
        assert!(patterns(&config.targets[0], &Kubelet::default()).is_empty());
        let _ = std::fs::remove_dir_all(&root);
    }
}
