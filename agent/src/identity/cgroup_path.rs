//! A cgroup path -> the Kubernetes pod UID and container id it belongs to, for both kubelet
//! cgroup drivers, at any depth (a kubelet in a nested cgroup, or a test's own parent):
//!
//! - cgroupfs: `kubepods/burstable/pod<uid>/<cid>` (`kubepods/pod<uid>/...` for guaranteed)
//! - systemd:  `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/
//!   cri-containerd-<cid>.scope` (also `crio-<cid>.scope`, `docker-<cid>.scope`)
//!
//! Pure and allocation-free: it runs on every row of a scrape.

/// What a cgroup path says about its pod. Borrowed from the path; the systemd driver's
/// UID has `_` where the UID has `-` ([`PodRef::uid_eq`] compares across that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodRef<'a> {
    /// The pod UID as the path writes it.
    pub uid: &'a str,
    /// The container id, when the path is in (or below) a container's cgroup.
    pub container_id: Option<&'a str>,
}

impl PodRef<'_> {
    /// Whether the path's UID is `uid` (dashes in the API's form, `_` in a systemd slice).
    pub fn uid_eq(&self, uid: &str) -> bool {
        self.uid.len() == uid.len()
            && self
                .uid
                .bytes()
                .zip(uid.bytes())
                .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
    }
}

/// The pod (and container) a cgroup path lies in, or None outside Kubernetes' tree.
pub fn parse(path: &str) -> Option<PodRef<'_>> {
    let mut under_kubepods = false;
    let mut segments = path.split('/');
    while let Some(seg) = segments.next() {
        under_kubepods |=
            seg == "kubepods" || seg.starts_with("kubepods.") || seg.starts_with("kubepods-");
        if !under_kubepods {
            continue;
        }
        if let Some(uid) = pod_uid(seg) {
            let container_id = segments.next().and_then(container_id);
            return Some(PodRef { uid, container_id });
        }
    }
    None
}

/// `pod<uid>` (cgroupfs) or `kubepods[-qos]-pod<uid_>.slice` (systemd).
fn pod_uid(seg: &str) -> Option<&str> {
    let uid = if let Some(slice) = seg.strip_suffix(".slice") {
        let at = slice.rfind("-pod")?;
        slice[..at]
            .starts_with("kubepods")
            .then_some(&slice[at + 4..])?
    } else {
        seg.strip_prefix("pod")?
    };
    is_uid(uid).then_some(uid)
}

/// A UID: 36 characters with dashes (or `_` in a systemd slice), or the 32 hex digits of a
/// static pod's (the kubelet hashes its manifest).
fn is_uid(s: &str) -> bool {
    (32..=36).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-' || b == b'_')
}

/// The container id of a container's cgroup: the bare id (cgroupfs), or the runtime's
/// scope (systemd). CRI-O's monitor (`crio-conmon-<cid>.scope`) is no container.
fn container_id(seg: &str) -> Option<&str> {
    let id = match seg.strip_suffix(".scope") {
        Some(scope) => ["cri-containerd-", "crio-", "docker-"]
            .iter()
            .find_map(|p| scope.strip_prefix(p))?,
        None => seg.strip_prefix("crio-").unwrap_or(seg),
    };
    is_container_id(id).then_some(id)
}

/// Runtimes name containers by 64 hex digits; shorter (but not trivially short) ids are
/// accepted for runtimes that abbreviate.
pub fn is_container_id(s: &str) -> bool {
    (12..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f3c5a6e-2b1d-4c8e-9a7f-1e2d3c4b5a69";
    const UID_: &str = "0f3c5a6e_2b1d_4c8e_9a7f_1e2d3c4b5a69";
    const CID: &str = "9ab1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1";

    fn pod(path: &str) -> Option<(String, Option<String>)> {
        parse(path).map(|p| (p.uid.to_string(), p.container_id.map(str::to_string)))
    }

    #[test]
    fn cgroupfs_driver_every_qos_class() {
        for qos in ["burstable/", "besteffort/", ""] {
            let path = format!("kubepods/{qos}pod{UID}/{CID}");
            assert_eq!(pod(&path), Some((UID.into(), Some(CID.into()))), "{path}");
            let path = format!("kubepods/{qos}pod{UID}");
            assert_eq!(pod(&path), Some((UID.into(), None)), "{path}");
        }
        // CRI-O with cgroupfs prefixes the id.
        assert_eq!(
            pod(&format!("kubepods/burstable/pod{UID}/crio-{CID}")),
            Some((UID.into(), Some(CID.into())))
        );
    }

    #[test]
    fn systemd_driver_every_runtime_and_qos_class() {
        for runtime in ["cri-containerd", "crio", "docker"] {
            for (qos_slice, qos) in [
                ("kubepods-burstable.slice/", "kubepods-burstable"),
                ("kubepods-besteffort.slice/", "kubepods-besteffort"),
                ("", "kubepods"),
            ] {
                let path = format!(
                    "kubepods.slice/{qos_slice}{qos}-pod{UID_}.slice/{runtime}-{CID}.scope"
                );
                let p = parse(&path).unwrap_or_else(|| panic!("{path}"));
                assert_eq!(p.uid, UID_);
                assert!(p.uid_eq(UID), "{path}");
                assert_eq!(p.container_id, Some(CID), "{path}");
            }
        }
        let conmon = format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{CID}.scope"
        );
        assert_eq!(
            pod(&conmon),
            Some((UID_.into(), None)),
            "conmon is no container"
        );
    }

    #[test]
    fn found_at_any_depth_and_below_the_container() {
        let nested = format!("gimbal-test-42/kubepods/burstable/pod{UID}/{CID}/inner");
        assert_eq!(pod(&nested), Some((UID.into(), Some(CID.into()))));
        let nested = format!(
            "system.slice/kubelet-x.slice/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope"
        );
        assert_eq!(pod(&nested).map(|p| p.1), Some(Some(CID.into())));
        // A static pod's UID is a 32-digit hash.
        let static_uid = "8c9e5b2e5f8d4a1b9c0d1e2f3a4b5c6d";
        assert_eq!(
            pod(&format!("kubepods/pod{static_uid}")),
            Some((static_uid.into(), None))
        );
    }

    #[test]
    fn paths_outside_kubernetes_or_malformed_are_none() {
        for path in [
            "",
            "/",
            "other",
            "unknown",
            "system.slice/sshd.service",
            &format!("system.slice/pod{UID}"), // no kubepods above it
            &format!("user.slice/x-pod{UID_}.slice"), // not a kubepods slice
            "kubepods/burstable/podnot-a-uid",
            "kubepods/burstable/pod",
            &format!("kubepods/burstable/pod{UID}x"),
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod.slice",
            &format!("kubepods/burstable/pod{}", "a".repeat(10_000)),
        ] {
            assert_eq!(pod(path), None, "{path:?}");
        }
        // The pod is known, the container segment is not one.
        assert_eq!(
            pod(&format!("kubepods/burstable/pod{UID}/not-hex")),
            Some((UID.into(), None))
        );
        assert_eq!(
            pod(&format!(
                "kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-XYZ.scope"
            )),
            Some((UID_.into(), None))
        );
    }

    #[test]
    fn uid_eq_compares_across_the_systemd_spelling() {
        let path = format!("kubepods.slice/kubepods-pod{UID_}.slice");
        let p = parse(&path).unwrap();
        assert!(p.uid_eq(UID));
        assert!(!p.uid_eq("0f3c5a6e-2b1d-4c8e-9a7f-1e2d3c4b5a60"));
        assert!(!p.uid_eq(&UID[1..]));
    }
}
