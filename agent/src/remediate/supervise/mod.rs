//! `[[supervise]]`: processes the agent runs itself (hosts without systemd) and restarts
//! when they end, with the restart backoff and give-up budget of `backoff.rs`. Each one
//! lives in its own cgroup (`<cgroup2>/<[remediation] supervised_cgroup>/<name>`), so it
//! can be a `[[targets]]` like any service. A supervised process outlives the agent (an
//! agent upgrade must not kill a training job): its pid and start time are saved, and the
//! next agent adopts it through a pidfd instead of starting a second copy.
mod process;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::{
    backoff::{Backoff, Next, Policy},
    record::{Act, Kind, Outcome, Recorder},
};
use crate::config::{Config, RemediationMode, RestartWhen, SuperviseConfig};
use process::Proc;

/// How long a stopped process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub struct Supervisor {
    running: BTreeMap<String, Task>,
    shared: Arc<Shared>,
    cgroup2: PathBuf,
    /// A runtime on a thread of its own: a restart never waits for the main loop's tick
    /// (a map read and rule evaluation take milliseconds).
    runtime: tokio::runtime::Handle,
}

struct Task {
    config: SuperviseConfig,
    /// Stop the process; true: it left the config, remove its cgroup too.
    stop: oneshot::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

struct Shared {
    policy: Policy,
    recorder: Recorder,
    /// The cgroup2 directory the processes' cgroups are made in; None: the agent's own.
    parent: Option<PathBuf>,
    records_path: PathBuf,
    records: Mutex<BTreeMap<String, Record>>,
    /// Entries whose budget is spent; a reload gives them a fresh one.
    gave_up: Mutex<std::collections::BTreeSet<String>>,
}

/// What the next agent needs to adopt a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    pid: u32,
    start_time: u64,
    /// The config it was started with: a changed entry is restarted, not adopted.
    config: String,
}

impl Supervisor {
    /// Adopts what a previous agent left running and starts the rest.
    pub fn start(config: &Config, cgroup2: &Path, recorder: Recorder) -> Self {
        let records_path = config.agent.state_dir.join("remediation/supervised.json");
        let records = crate::host::durable::read_json(&records_path).unwrap_or_default();
        let mut supervisor = Self {
            running: BTreeMap::new(),
            shared: Shared::new(config, cgroup2, recorder, records_path, records),
            cgroup2: cgroup2.to_path_buf(),
            runtime: own_runtime(),
        };
        supervisor.reconcile(&config.supervise, BTreeMap::new());
        supervisor
    }

    /// A new configuration: removed or changed entries are stopped, new ones started,
    /// unchanged ones keep running.
    pub fn reload(&mut self, config: &Config) {
        let records = crate::sync::lock(&self.shared.records).clone();
        let shared = Shared::new(
            config,
            &self.cgroup2,
            self.shared.recorder.with_mode(config.remediation.mode),
            self.shared.records_path.clone(),
            records,
        );
        let same_rules = shared.recorder.mode() == self.shared.recorder.mode()
            && shared.policy == self.shared.policy;
        let gave_up = std::mem::take(&mut *crate::sync::lock(&self.shared.gave_up));
        let mut stopping = BTreeMap::new();
        for (name, task) in std::mem::take(&mut self.running) {
            let wanted = config.supervise.iter().find(|s| s.name == name);
            match wanted {
                Some(s) if *s == task.config && same_rules && !gave_up.contains(&name) => {
                    self.running.insert(name, task);
                }
                // Changed, given up or gone: the task stops its process and forgets it;
                // a successor waits for that.
                _ => {
                    let _ = task.stop.send(wanted.is_none());
                    stopping.insert(name, task.done);
                }
            }
        }
        self.shared = shared;
        self.reconcile(&config.supervise, stopping);
    }

    /// Starts a task for every wanted entry without one, after its stopping predecessor.
    fn reconcile(
        &mut self,
        wanted: &[SuperviseConfig],
        mut stopping: BTreeMap<String, tokio::task::JoinHandle<()>>,
    ) {
        for config in wanted {
            if self.running.contains_key(&config.name) {
                continue;
            }
            let (stop, stopped) = oneshot::channel();
            let predecessor = stopping.remove(&config.name);
            let (config2, shared) = (config.clone(), self.shared.clone());
            let done = self.runtime.spawn(async move {
                if let Some(p) = predecessor {
                    let _ = p.await;
                }
                supervise(config2, shared, stopped).await;
            });
            self.running.insert(
                config.name.clone(),
                Task {
                    config: config.clone(),
                    stop,
                    done,
                },
            );
        }
    }
}

/// A current-thread runtime on its own thread, alive as long as the agent.
fn own_runtime() -> tokio::runtime::Handle {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("gimbal-supervise".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime for the supervisor");
            let _ = tx.send(rt.handle().clone());
            rt.block_on(std::future::pending::<()>());
        })
        .expect("a thread for the supervisor");
    rx.recv().expect("the supervisor's runtime")
}

/// One entry's life: adopt or start, wait, restart with backoff, until stopped or given up.
async fn supervise(
    config: SuperviseConfig,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<bool>,
) {
    let cgroup = shared.cgroup_for(&config.name);
    let mut backoff = Backoff::default();
    let mut proc = match shared.adopt(&config) {
        Some(p) => Some(p),
        None => shared.launch(&config, cgroup.as_deref(), Kind::Start, "configured"),
    };
    loop {
        let ended = match proc.as_mut() {
            Some(p) => {
                tokio::select! {
                    ended = p.wait() => Some((ended, p.started.elapsed())),
                    removed = &mut stop => {
                        // Err: the agent itself stops, and leaves the process running.
                        if removed.is_ok() {
                            shared.terminate(&config, p).await;
                            shared.cleanup(removed, cgroup.as_deref());
                        }
                        return;
                    }
                }
            }
            // It could not be started: as a failure that lasted no time.
            None => None,
        };
        let (why, ran_for) = match ended {
            Some((ended, ran_for)) => {
                tracing::warn!(name = %config.name, "supervised process {}", ended.how);
                if ended.success && config.restart == RestartWhen::OnFailure {
                    shared.forget(&config.name);
                    shared.cleanup(stop.await, cgroup.as_deref());
                    return;
                }
                (ended.how, ran_for)
            }
            None => ("could not be started".to_string(), Duration::ZERO),
        };
        let delay = match backoff.on_failure(ran_for, &shared.policy) {
            Next::GiveUp => {
                let detail = format!(
                    "{why}; gave up after {} quick failures in a row",
                    backoff.failures() - 1
                );
                tracing::error!(name = %config.name, "{detail}");
                shared.outcome(
                    &config.name,
                    cgroup.as_deref(),
                    Kind::Restart,
                    &detail,
                    Outcome::GaveUp,
                );
                shared.forget(&config.name);
                crate::sync::lock(&shared.gave_up).insert(config.name.clone());
                shared.cleanup(stop.await, cgroup.as_deref());
                return;
            }
            Next::RestartAfter(delay) => delay,
        };
        if shared.recorder.mode() == RemediationMode::DryRun {
            let detail = format!("{why}; would restart in {delay:?}");
            tracing::info!(name = %config.name, "dry-run: {detail}");
            shared.outcome(
                &config.name,
                cgroup.as_deref(),
                Kind::Restart,
                &detail,
                Outcome::DryRun,
            );
            shared.forget(&config.name);
            shared.cleanup(stop.await, cgroup.as_deref());
            return;
        }
        if !delay.is_zero() {
            tracing::info!(name = %config.name, "restarting in {delay:?} ({} quick failures in a row)", backoff.failures());
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                removed = &mut stop => {
                    if removed.is_ok() {
                        shared.forget(&config.name);
                        shared.cleanup(removed, cgroup.as_deref());
                    }
                    return;
                }
            }
        }
        proc = shared.launch(&config, cgroup.as_deref(), Kind::Restart, &why);
    }
}

impl Shared {
    fn new(
        config: &Config,
        cgroup2: &Path,
        recorder: Recorder,
        records_path: PathBuf,
        records: BTreeMap<String, Record>,
    ) -> Arc<Self> {
        Arc::new(Self {
            policy: Policy::from_config(&config.remediation),
            recorder,
            parent: Some(cgroup2.join(&config.remediation.supervised_cgroup)),
            records_path,
            records: Mutex::new(records),
            gave_up: Mutex::default(),
        })
    }

    /// The process's cgroup, made if needed; None (the agent's cgroup) when that fails.
    fn cgroup_for(&self, name: &str) -> Option<PathBuf> {
        let dir = self.parent.as_ref()?.join(name);
        match std::fs::create_dir_all(&dir) {
            Ok(()) => Some(dir),
            Err(e) => {
                tracing::warn!(cgroup = %dir.display(), error = %e, "cannot make the supervised process's cgroup; it runs in the agent's");
                None
            }
        }
    }

    fn adopt(&self, config: &SuperviseConfig) -> Option<Proc> {
        let record = self
            .records
            .lock()
            .expect("records")
            .get(&config.name)
            .cloned()?;
        let proc = Proc::adopt(record.pid, record.start_time);
        match &proc {
            Some(p) if record.config == fingerprint(config) => {
                tracing::info!(name = %config.name, pid = p.pid, "adopted the process a previous agent started");
            }
            Some(p) => {
                // Its config changed while no agent ran: replace it.
                tracing::info!(name = %config.name, pid = p.pid, "config changed since it was started; replacing it");
                let _ = p.signal(libc::SIGKILL);
                self.forget(&config.name);
                return None;
            }
            None => self.forget(&config.name),
        }
        proc
    }

    /// Starts the process, journaled: intent, then outcome with its pid.
    fn launch(
        &self,
        config: &SuperviseConfig,
        cgroup: Option<&Path>,
        action: Kind,
        why: &str,
    ) -> Option<Proc> {
        let name = &config.name;
        self.intent(name, cgroup, action, why);
        match Proc::spawn(config, cgroup) {
            Ok(p) => {
                let detail = format!("pid {} ({why})", p.pid);
                tracing::info!(name = %name, pid = p.pid, "supervised process {}ed", action.name());
                self.remember(config, &p);
                self.outcome(name, cgroup, action, &detail, Outcome::Done);
                Some(p)
            }
            Err(e) => {
                let detail = format!("cannot start {:?}: {e}", config.command[0]);
                tracing::error!(name = %name, "{detail}");
                self.outcome(name, cgroup, action, &detail, Outcome::Failed);
                None
            }
        }
    }

    /// SIGTERM, and SIGKILL after the grace period.
    async fn terminate(&self, config: &SuperviseConfig, p: &mut Proc) {
        self.intent(&config.name, None, Kind::Stop, "removed from the config");
        let _ = p.signal(libc::SIGTERM);
        let how = match tokio::time::timeout(STOP_GRACE, p.wait()).await {
            Ok(ended) => ended.how,
            Err(_) => {
                let _ = p.signal(libc::SIGKILL);
                p.wait().await.how
            }
        };
        tracing::info!(name = %config.name, "supervised process stopped: {how}");
        self.outcome(&config.name, None, Kind::Stop, &how, Outcome::Done);
        self.forget(&config.name);
    }

    /// Removes the cgroup of an entry that left the config (`removed`: Ok(true)); an
    /// agent that stops (the sender dropped) leaves everything as it is.
    fn cleanup(&self, removed: Result<bool, oneshot::error::RecvError>, cgroup: Option<&Path>) {
        if let (Ok(true), Some(dir)) = (removed, cgroup) {
            // Fails harmlessly while something still runs in it.
            if std::fs::remove_dir(dir).is_ok() {
                tracing::debug!(cgroup = %dir.display(), "removed the supervised cgroup");
            }
        }
    }

    fn remember(&self, config: &SuperviseConfig, p: &Proc) {
        let record = Record {
            pid: p.pid,
            start_time: p.start_time,
            config: fingerprint(config),
        };
        let mut records = crate::sync::lock(&self.records);
        records.insert(config.name.clone(), record);
        self.save(&records);
    }

    fn forget(&self, name: &str) {
        let mut records = crate::sync::lock(&self.records);
        if records.remove(name).is_some() {
            self.save(&records);
        }
    }

    fn save(&self, records: &BTreeMap<String, Record>) {
        let saved = serde_json::to_vec(records)
            .map_err(std::io::Error::other)
            .and_then(|bytes| crate::host::durable::write_atomic(&self.records_path, &bytes));
        if let Err(e) = saved {
            tracing::error!(path = %self.records_path.display(), error = %e, "cannot save the supervised processes");
        }
    }

    fn intent(&self, name: &str, cgroup: Option<&Path>, kind: Kind, why: &str) {
        let cgroup = self.relative(cgroup);
        let act = Act {
            kind,
            rule: name,
            cgroup: &cgroup,
        };
        self.recorder.intent(act, why, SystemTime::now());
    }

    /// The outcome of an action: audited (fsynced), then reported to the main loop.
    fn outcome(
        &self,
        name: &str,
        cgroup: Option<&Path>,
        kind: Kind,
        detail: &str,
        result: Outcome,
    ) {
        let cgroup = self.relative(cgroup);
        let act = Act {
            kind,
            rule: name,
            cgroup: &cgroup,
        };
        self.recorder
            .outcome(act, detail, result, SystemTime::now());
    }

    /// As gimbal labels cgroups: relative to the cgroup2 mount.
    fn relative(&self, cgroup: Option<&Path>) -> String {
        let base = self.parent.as_ref().and_then(|p| p.parent());
        cgroup
            .map(|c| base.and_then(|b| c.strip_prefix(b).ok()).unwrap_or(c))
            .map(|c| c.display().to_string())
            .unwrap_or_default()
    }
}

fn fingerprint(config: &SuperviseConfig) -> String {
    format!("{config:?}")
}
