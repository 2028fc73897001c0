//! Which cgroups (as labelled) have been removed for longer than a grace period, so that
//! their series can leave the model: without this, a node that churns pods would export
//! every pod it ever ran and, once the series budget is spent, fold every new pod into
//! `other`. The grace lets Prometheus scrape a removed cgroup's final counts.
use std::{
    collections::HashMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

/// At most this long between two looks (a stat per cgroup label).
const MAX_SWEEP: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Removed {
    grace: Duration,
    /// Labels found gone, and since when. Only labels the model still holds: bounded by it.
    gone_since: HashMap<Arc<str>, Instant>,
    last_sweep: Option<Instant>,
}

impl Removed {
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            gone_since: HashMap::new(),
            last_sweep: None,
        }
    }

    /// The labels among `cgroups` whose directory under `mount` has been gone for the
    /// grace period, to be forgotten now. Looks at most every grace/2 (10 s at most).
    pub fn sweep<I: IntoIterator<Item = Arc<str>>>(
        &mut self,
        mount: &Path,
        cgroups: impl FnOnce() -> I,
        now: Instant,
    ) -> Vec<Arc<str>> {
        let every = (self.grace / 2).min(MAX_SWEEP);
        if self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < every)
        {
            return Vec::new();
        }
        self.last_sweep = Some(now);
        let mut still_gone = HashMap::new();
        let mut forget = Vec::new();
        for cg in cgroups() {
            if !is_path_label(&cg) || mount.join(&*cg).is_dir() {
                continue;
            }
            let since = self.gone_since.get(&cg).copied().unwrap_or(now);
            if now.saturating_duration_since(since) >= self.grace {
                forget.push(cg);
            } else {
                still_gone.insert(cg, since);
            }
        }
        self.gone_since = still_gone;
        forget
    }
}

/// A cgroup path as the reader labels it; not the placeholders (`unknown`, `other`) and
/// nothing that could leave the mount.
fn is_path_label(cg: &str) -> bool {
    !matches!(cg, "" | "unknown" | "other")
        && !cg.starts_with('/')
        && cg
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_is_forgotten_once_its_cgroup_is_gone_for_the_grace() {
        let mount = std::env::temp_dir().join(format!("gimbal-removed-{}", std::process::id()));
        std::fs::create_dir_all(mount.join("kept")).unwrap();
        let labels = || ["kept", "gone", "other", "unknown", "../etc"].map(Arc::from);
        let mut r = Removed::new(Duration::from_secs(4));
        let t0 = Instant::now();
        assert!(r.sweep(&mount, labels, t0).is_empty(), "just found gone");
        assert!(
            r.sweep(&mount, labels, t0 + Duration::from_secs(1))
                .is_empty(),
            "too soon to look again"
        );
        assert!(r
            .sweep(&mount, labels, t0 + Duration::from_secs(2))
            .is_empty());
        let forget = r.sweep(&mount, labels, t0 + Duration::from_secs(4));
        assert_eq!(forget, vec![Arc::<str>::from("gone")]);
        assert!(
            r.gone_since.is_empty(),
            "forgotten labels are not remembered"
        );
        // Back before the grace ran out: kept.
        let mut r = Removed::new(Duration::from_secs(4));
        r.sweep(&mount, labels, t0);
        std::fs::create_dir_all(mount.join("gone")).unwrap();
        assert!(r
            .sweep(&mount, labels, t0 + Duration::from_secs(8))
            .is_empty());
        let _ = std::fs::remove_dir_all(&mount);
    }
}
