//! The kubelet's own on-disk layout, the source log shippers use: `<root>/pods/
//! <namespace>_<pod>_<uid>/` names each pod UID, and `<root>/containers/
//! <pod>_<namespace>_<container>-<cid>.log` names each container id. Re-read only when a
//! directory's mtime moves (and while it is too recent to trust, since mtimes are coarse),
//! never per event. Every name is hostile: checked against what Kubernetes allows,
//! bounded in length and count; an entry that fails is skipped and counted.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use super::cgroup_path::{self, is_container_id};

/// Entries read per directory at most (a node runs ~110 pods); past it they are skipped.
const MAX_ENTRIES: usize = 20_000;
/// A directory changed this recently is read again next time: a change in the same
/// timestamp tick as the last read would not move the mtime again.
const SETTLE: Duration = Duration::from_secs(2);

/// A pod's names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PodName {
    namespace: Arc<str>,
    pod: Arc<str>,
}

/// What a cgroup is in Kubernetes' words; empty strings where unknown (outside Kubernetes,
/// or before the kubelet wrote its layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Identity<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub container: &'a str,
}

impl Identity<'_> {
    pub fn is_empty(&self) -> bool {
        self.namespace.is_empty() && self.pod.is_empty() && self.container.is_empty()
    }
}

/// One read of the layout.
#[derive(Debug, Default, PartialEq)]
pub struct Kubelet {
    /// Pod UID (dashed, as the API writes it) -> names.
    pods: HashMap<Box<str>, PodName>,
    /// Container id -> (pod names, container name).
    containers: HashMap<Box<str>, (PodName, Arc<str>)>,
    /// Entries of the last read that were not the kubelet's shape (or past the bound).
    pub skipped: u64,
}

impl Kubelet {
    /// Reads `<root>/pods` and `<root>/containers`; a missing directory is empty (no
    /// Kubernetes here).
    pub fn read(root: &Path) -> Self {
        let mut k = Kubelet::default();
        for name in k.names(&root.join("pods")) {
            match pod_dir(&name) {
                Some((uid, names)) => {
                    k.pods.insert(uid.into(), names);
                }
                None => k.skipped += 1,
            }
        }
        for name in k.names(&root.join("containers")) {
            match container_log(&name) {
                Some((cid, names, container)) => {
                    k.containers.insert(cid.into(), (names, container));
                }
                None => k.skipped += 1,
            }
        }
        k
    }

    /// Entry names of `dir`, bounded; unreadable or non-UTF-8 ones counted as skipped.
    fn names(&mut self, dir: &Path) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries {
            match entry.map(|e| e.file_name().into_string()) {
                Ok(Ok(name)) if out.len() < MAX_ENTRIES => out.push(name),
                _ => self.skipped += 1,
            }
        }
        out
    }

    /// A layout of `(namespace, pod, uid)` pods and `(pod, namespace, container, id)`
    /// containers, as if read from disk: for readers' tests.
    #[cfg(test)]
    pub fn of(pods: &[(&str, &str, &str)], containers: &[(&str, &str, &str, &str)]) -> Self {
        let mut k = Kubelet::default();
        for (namespace, pod, uid) in pods {
            let name = format!("{namespace}_{pod}_{uid}");
            let (uid, names) = pod_dir(&name).expect("a pod");
            k.pods.insert(uid.into(), names);
        }
        for (pod, namespace, container, id) in containers {
            let name = format!("{pod}_{namespace}_{container}-{id}.log");
            let (id, names, container) = container_log(&name).expect("a container");
            k.containers.insert(id.into(), (names, container));
        }
        k
    }

    /// Pods known.
    pub fn pods(&self) -> usize {
        self.pods.len()
    }

    /// The identity of the cgroup at `path` (relative to the cgroup2 mount, as labelled).
    pub fn resolve(&self, path: &str) -> Identity<'_> {
        let Some(at) = cgroup_path::parse(path) else {
            return Identity::default();
        };
        let container = at.container_id.and_then(|cid| self.containers.get(cid));
        let pod = dashed(at.uid)
            .and_then(|uid| self.pods.get(uid.as_str()))
            .or(container.map(|(p, _)| p));
        Identity {
            namespace: pod.map_or("", |p| &p.namespace),
            pod: pod.map_or("", |p| &p.pod),
            container: container.map_or("", |(_, c)| c),
        }
    }

    /// The namespace and name of pod `uid` (dashed, as the API writes it), if named.
    pub fn pod_names(&self, uid: &str) -> Option<(&str, &str)> {
        self.pods.get(uid).map(|p| (&*p.namespace, &*p.pod))
    }

    /// Ids of the containers the kubelet names for pod `namespace`/`pod` (not its sandbox,
    /// which has no log).
    pub fn container_ids<'a>(
        &'a self,
        namespace: &'a str,
        pod: &'a str,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.containers
            .iter()
            .filter(move |(_, (p, _))| &*p.namespace == namespace && &*p.pod == pod)
            .map(|(cid, _)| &**cid)
    }

    /// (UID, namespace, name) of the pods whose namespace and name match.
    pub fn pods_matching<'a>(
        &'a self,
        matches: impl Fn(&str, &str) -> bool + 'a,
    ) -> impl Iterator<Item = (&'a str, &'a str, &'a str)> + 'a {
        self.pods
            .iter()
            .filter(move |(_, p)| matches(&p.namespace, &p.pod))
            .map(|(uid, p)| (&**uid, &*p.namespace, &*p.pod))
    }
}

/// A UID in the API's form (systemd slices write `_` for `-`); None if too long.
fn dashed(uid: &str) -> Option<heapless_uid::Uid> {
    heapless_uid::Uid::new(uid)
}

/// A 36-byte stack copy: no allocation per scraped row.
mod heapless_uid {
    pub struct Uid([u8; 36], usize);

    impl Uid {
        pub fn new(uid: &str) -> Option<Self> {
            let b = uid.as_bytes();
            if b.len() > 36 {
                return None;
            }
            let mut out = [0u8; 36];
            for (o, c) in out.iter_mut().zip(b) {
                *o = if *c == b'_' { b'-' } else { *c };
            }
            Some(Self(out, b.len()))
        }

        pub fn as_str(&self) -> &str {
            // Only ASCII bytes were swapped for ASCII bytes in valid UTF-8.
            std::str::from_utf8(&self.0[..self.1]).unwrap_or("")
        }
    }
}

/// `<namespace>_<pod>_<uid>`.
fn pod_dir(name: &str) -> Option<(&str, PodName)> {
    let mut parts = name.split('_');
    let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    (parts.next().is_none()
        && is_label(namespace)
        && is_subdomain(pod)
        && (32..=36).contains(&uid.len())
        && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
    .then(|| (uid, names(namespace, pod)))
}

/// `<pod>_<namespace>_<container>-<cid>.log`.
fn container_log(name: &str) -> Option<(&str, PodName, Arc<str>)> {
    let mut parts = name.strip_suffix(".log")?.split('_');
    let (pod, namespace, rest) = (parts.next()?, parts.next()?, parts.next()?);
    let (container, cid) = rest.rsplit_once('-')?;
    (parts.next().is_none()
        && is_subdomain(pod)
        && is_label(namespace)
        && is_label(container)
        && is_container_id(cid))
    .then(|| (cid, names(namespace, pod), Arc::from(container)))
}

fn names(namespace: &str, pod: &str) -> PodName {
    PodName {
        namespace: Arc::from(namespace),
        pod: Arc::from(pod),
    }
}

/// A DNS-1123 label (namespaces, container names): at most 63 of `[a-z0-9-]`.
fn is_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A DNS-1123 subdomain (pod names): at most 253 of `[a-z0-9.-]`.
fn is_subdomain(s: &str) -> bool {
    (1..=253).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// The layout under a root, re-read when it changes.
#[derive(Debug)]
pub struct Layout {
    root: PathBuf,
    /// mtimes of pods/ and containers/ at the last read.
    seen: Option<[Option<SystemTime>; 2]>,
}

impl Layout {
    pub fn new(root: PathBuf) -> Self {
        Self { root, seen: None }
    }

    /// A new read when the layout may have changed since the last one, else None.
    pub fn refresh(&mut self, now: SystemTime) -> Option<Kubelet> {
        let mtimes = ["pods", "containers"].map(|d| {
            std::fs::metadata(self.root.join(d))
                .and_then(|m| m.modified())
                .ok()
        });
        let settling = mtimes
            .iter()
            .flatten()
            .any(|t| now.duration_since(*t).map_or(true, |age| age < SETTLE));
        if self.seen == Some(mtimes) && !settling {
            return None;
        }
        self.seen = Some(mtimes);
        Some(Kubelet::read(&self.root))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f3c5a6e-2b1d-4c8e-9a7f-1e2d3c4b5a69";
    const CID: &str = "9ab1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1";

    fn layout(entries: &[(&str, &str)]) -> PathBuf {
        let root = std::env::temp_dir().join(format!(
            "gimbal-kubelet-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["pods", "containers"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for (dir, name) in entries {
            std::fs::create_dir_all(root.join(dir).join(name)).unwrap();
        }
        root
    }

    #[test]
    fn names_resolve_for_both_drivers_and_a_pod_without_its_container() {
        let root = layout(&[
            ("pods", &format!("ml_trainer-0_{UID}")),
            ("pods", &format!("ml_trainer-0_{UID}/worker")),
            ("containers", &format!("trainer-0_ml_worker-{CID}.log")),
        ]);
        let k = Kubelet::read(&root);
        assert_eq!(k.skipped, 0);
        let want = Identity {
            namespace: "ml",
            pod: "trainer-0",
            container: "worker",
        };
        let u = UID.replace('-', "_");
        for path in [
            format!("kubepods/burstable/pod{UID}/{CID}"),
            format!("x/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{CID}.scope"),
        ] {
            assert_eq!(k.resolve(&path), want, "{path}");
        }
        // The pause container's cgroup: the pod, no container name.
        let pause = format!("kubepods/burstable/pod{UID}/{}", "e".repeat(64));
        assert_eq!(
            k.resolve(&pause),
            Identity {
                container: "",
                ..want
            }
        );
        assert!(k.resolve("system.slice/sshd.service").is_empty());
        assert!(k.resolve("other").is_empty());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn hostile_or_malformed_entries_are_skipped_and_counted() {
        let long = "a".repeat(64); // one over a DNS label's 63
        let root = layout(&[
            ("pods", &format!("ml_trainer-0_{UID}")),
            ("pods", "no-underscores"),
            ("pods", &format!("ML_Trainer_{UID}")),
            ("pods", &format!("{long}_p_{UID}")),
            ("pods", &format!("ml_a_b_{UID}")),
            ("pods", "ml_pod_not-a-uid"),
            ("pods", &format!("ml_x\"y_{UID}")),
            ("containers", &format!("p_ml_c-{CID}.txt")),
            ("containers", "p_ml_c-nothex.log"),
            ("containers", &format!("p_ml_c\n-{CID}.log")),
            ("containers", &format!("p_ml-{CID}.log")),
        ]);
        let k = Kubelet::read(&root);
        assert_eq!(k.pods(), 1);
        assert!(k.containers.is_empty());
        assert_eq!(k.skipped, 10);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn re_read_only_when_a_directory_changes() {
        let root = layout(&[]);
        let mut l = Layout::new(root.clone());
        let later = SystemTime::now() + Duration::from_secs(60);
        assert!(l.refresh(later).is_some(), "the first read");
        assert!(l.refresh(later).is_none(), "nothing moved");
        std::fs::create_dir(root.join("pods").join(format!("ml_p_{UID}"))).unwrap();
        let read = l.refresh(later).expect("pods/ changed");
        assert_eq!(read.pods(), 1);
        // Just changed: read again until the mtime is old enough to trust.
        assert!(l.refresh(SystemTime::now()).is_some());
        // No Kubernetes at all: empty, and no error.
        let mut none = Layout::new(root.join("absent"));
        assert_eq!(none.refresh(later), Some(Kubelet::default()));
        assert!(none.refresh(later).is_none());
        let _ = std::fs::remove_dir_all(&root);
    }
}
