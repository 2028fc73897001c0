//! `gimbal run`: load the probes, then move data one way: maps -> model -> /metrics.
use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use tokio::{net::TcpListener, signal::unix::SignalKind};

use crate::{
    alert::{Deliverer, DeliveryStats, Endpoint},
    config::Config,
    gpu::{self, Catalog, GpuEvent},
    host::cgroupfs::CgroupNames,
    identity::{Layout, Removed},
    metrics::{self, AgentInfo, Exposition},
    model::{Limits, Model, SeriesPool},
    probes::{ExitReader, LoadOptions, MapReader, ProbeStatus, Probes, TimingPlan},
    remediate::{AuditLog, Recorder, Remediator, Supervisor},
    rules::{Engine, NodeInputs},
    service::{Health, Notifier},
    snapshot::{Published, Snapshot},
    targets::watch::Watcher,
    verdict::Judge,
};

/// How often the cgroup tree may be walked again to resolve an unknown cgroup id: short,
/// so that a new pod's first events get its name, yet a storm of unknown ids costs at most
/// four walks a second.
const CGROUP_RESCAN: Duration = Duration::from_millis(250);

/// `config_path` is where `config` came from (None: the embedded defaults), re-read on
/// SIGHUP; `listen` (--listen) overrides `[agent] listen`, in every config read.
pub async fn run(
    mut config: Config,
    config_path: Option<std::path::PathBuf>,
    listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    config = with_listen(config, listen);
    let listener = TcpListener::bind(config.agent.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (set [agent] listen or --listen)",
                config.agent.listen
            )
        })?;
    let mut probes = Probes::load(&LoadOptions::from(&config))
        .context("loading the eBPF programs (gimbal needs root, or CAP_BPF and CAP_PERFMON)")?;
    let cgroup2 = CgroupNames::from_host()?.root().to_path_buf();
    // One name cache for both readers (see CgroupNames).
    let names = CgroupNames::new(cgroup2.clone(), CGROUP_RESCAN);
    let mut maps = MapReader::new(&mut probes, names.clone())?;
    probes.set_timing(&TimingPlan::from_config(&config))?;
    let mut exits = ExitReader::new(&mut probes, names)?;

    let snapshot = Published::new(Snapshot::new(Limits {
        per_metric: config.labels.max_series_per_metric,
        pool: SeriesPool::new(config.labels.max_series),
        histogram_series: config.labels.histogram_series(),
    }));
    let refused = Arc::new(metrics::web::Refusals::default());
    let web = Arc::new(match &config.agent.web_config {
        Some(path) => metrics::web::WebConfig::from_file(path)
            .map_err(|e| anyhow::anyhow!("[agent] web_config: {e}"))?,
        None => metrics::web::WebConfig::none(),
    });
    let info = AgentInfo {
        version: env!("CARGO_PKG_VERSION"),
        kernel: kernel_release(),
        probes: probes.status.clone(),
        refused: refused.clone(),
    };
    let delivery = Arc::new(DeliveryStats::default());
    let exposition = Exposition::shared(
        snapshot.clone(),
        info,
        delivery.clone(),
        &config.labels.classic_buckets,
    );
    let addr: SocketAddr = listener.local_addr()?;
    let (gpu_tx, mut gpu_events) = tokio::sync::mpsc::channel(gpu::CHANNEL_BATCHES);
    start_gpu(&config, &mut snapshot.write(), gpu_tx);
    let mut catalog = Catalog::new(&config.gpu);
    let (mut watcher, mut engine) = alerting(&config, &cgroup2, addr, &delivery)?;
    // The cgroups of targets selected by pod, as the kubelet's layout last resolved them.
    let pod_globs = PodGlobs::default();
    watch_cgroups(&mut snapshot.write().kernel, &config, &pod_globs);
    let mut identity = identity(&config);
    // Remediation reports what it did here (from its own thread and the supervisor's); the
    // loop records it in the snapshot, where the rules read it back.
    let (actions_tx, mut actions) = tokio::sync::mpsc::unbounded_channel();
    let recorder = Recorder::new(
        Arc::new(AuditLog::new(&config.agent.state_dir)),
        config.remediation.mode,
        actions_tx,
    );
    let remediator = Remediator::start(&config, cgroup2.clone(), recorder.clone())
        .context("cannot start the remediation thread")?;
    let mut supervisor = Supervisor::start(&config, &cgroup2, recorder);
    let probe_status = probes.status.clone();
    tracing::info!(
        syscall_hist_entries = probes.syscall_hist_entries,
        "metrics at http://{addr}/metrics"
    );
    let unsaveable = state_unsaveable(&config.agent.state_dir);
    if let Some(why) = &unsaveable {
        tracing::error!("{why}; histories, alert states and spools will be lost at restart");
    }
    let health = Arc::new(Health::new(config.agent.interval.get()));
    let mut notifier = Notifier::from_env();
    let http = tokio::spawn(metrics::serve(
        listener,
        metrics::Routes::new(exposition, health.clone(), snapshot.clone()),
        web,
        refused,
    ));
    let mut judge = Judge::new(&config);
    // The Kubernetes writer reports each write here; the loop counts them in the snapshot.
    let (cluster_tx, mut cluster_writes) = tokio::sync::mpsc::unbounded_channel();
    let cluster =
        crate::cluster::Writer::start(&config.cluster, crate::host::node::name(), cluster_tx);
    let mut jobs = JobsStep::new(&probe_status);
    let agent_check = match config.verdict.agent_check_listen {
        Some(at) => {
            let listener = TcpListener::bind(at).await.with_context(|| {
                format!("cannot listen on {at} for HAProxy's agent-check ([verdict] agent_check_listen)")
            })?;
            tracing::info!("HAProxy agent-check at {at}");
            Some(tokio::spawn(metrics::agent_check::serve(
                listener,
                snapshot.clone(),
            )))
        }
        None => None,
    };
    // Without a systemd watchdog this timer is idle (hourly).
    let mut watchdog = tokio::time::interval(
        notifier
            .watchdog_every()
            .unwrap_or(Duration::from_secs(3600)),
    );

    let mut tick = tokio::time::interval(config.agent.interval.get());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut sighup = tokio::signal::unix::signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let sample = maps.read()?;
                // Exits already in the ring first: a target this tick finds empty was
                // emptied by them, and its TargetDown should say how it died.
                let early = exits.drain_now();
                let now = SystemTime::now();
                let mut s = snapshot.write();
                s.kernel.apply(sample);
                s.kernel.latency_sample_one_in = probes.sample_one_in();
                take_exits(early, &mut watcher, &mut jobs, &mut s, now);
                let removed = identity_step(&mut identity, &mut s, &mut watcher, &cgroup2, now);
                *crate::sync::lock(&pod_globs) = watcher.pod_patterns();
                maps.forget_cgroups(removed);
                s.gpu.prune(now);
                watcher.tick(now, &s.kernel.syscall_latency.series);
                probes.set_timed_cgroups(watcher.latency_cgroup_ids());
                jobs.tick(&mut watcher, &mut s, config.agent.interval.get(), now);
                evaluate(&mut engine, &watcher, &mut s, &probe_status, now);
                judge_step(&mut judge, &mut s, &cgroup2, now);
                tell_cluster(cluster.as_ref(), &s);
                drop(s);
                remediator.step(engine.firing(), now);
                health.turned();
                if !health.ready() {
                    health.set_ready();
                    let attached = probe_status.iter().filter(|p| p.attached()).count();
                    let mut status = format!("{attached} probes attached, metrics at http://{addr}/metrics");
                    if let Some(why) = &unsaveable {
                        status.push_str(&format!("; {why}"));
                    }
                    tracing::info!("ready: {status}");
                    notifier.ready(&status);
                }
            }
            // A stuck loop (a map read that never returns) stops these pings, and systemd
            // restarts the agent. None before READY: start-up is TimeoutStartSec's to judge.
            _ = watchdog.tick() => {
                if health.ready() && health.alive() {
                    notifier.watchdog();
                }
            }
            batch = exits.next_batch() => {
                let batch = batch?;
                let now = SystemTime::now();
                let mut s = snapshot.write();
                if take_exits(batch, &mut watcher, &mut jobs, &mut s, now) {
                    evaluate(&mut engine, &watcher, &mut s, &probe_status, now);
                    s.verdicts = judge.event(&s.targets, &s.gpu, now);
                    tell_cluster(cluster.as_ref(), &s);
                    drop(s);
                    remediator.step(engine.firing(), now);
                }
            }
            Some(batch) = gpu_events.recv() => {
                let now = SystemTime::now();
                let mut s = snapshot.write();
                let mut xids = false;
                for event in batch {
                    match event {
                        GpuEvent::Xid(mut record) => {
                            record.attribute_to_holder(&s.gpu.devices);
                            let seen = record.seen(&catalog);
                            tracing::info!(gpu = %seen.gpu, xid = seen.xid, action = seen.action, pid = ?seen.pid, cgroup = %seen.cgroup, detail = %seen.detail, "GPU XID");
                            s.gpu.apply_xid(seen);
                            xids = true;
                        }
                        GpuEvent::Dropped(n) => s.gpu.kmsg_dropped += n,
                        GpuEvent::Malformed(n) => s.gpu.kmsg_malformed += n,
                        GpuEvent::Attached { source, attached } => s.gpu.set_attached(source, attached),
                        GpuEvent::Devices(devices) => s.gpu.devices = devices,
                        GpuEvent::NvmlXid { gpu, xid } => s.gpu.nvml_events.xid(gpu, xid),
                        GpuEvent::NvmlEcc { gpu, kind } => s.gpu.nvml_events.ecc(gpu, kind),
                    }
                }
                if xids {
                    evaluate(&mut engine, &watcher, &mut s, &probe_status, now);
                    s.verdicts = judge.event(&s.targets, &s.gpu, now);
                    tell_cluster(cluster.as_ref(), &s);
                    drop(s);
                    remediator.step(engine.firing(), now);
                }
            }
            Some(action) = actions.recv() => {
                snapshot.write().remediations.record(action);
            }
            Some(write) = cluster_writes.recv() => {
                snapshot.write().cluster.record(write);
            }
            _ = sighup.recv() => {
                let Some(path) = &config_path else {
                    tracing::warn!("SIGHUP: nothing to reload, the agent runs on the embedded defaults");
                    continue;
                };
                let reloaded = crate::check::config_file(path).map(|c| with_listen(c, listen)).map_err(anyhow::Error::from).and_then(|new| {
                    watcher.save();
                    let parts = alerting(&new, &cgroup2, addr, &delivery)?;
                    Ok((new, parts))
                });
                let mut s = snapshot.write();
                match reloaded {
                    Ok((new, parts)) => {
                        for what in restart_needed(&config, &new) {
                            tracing::warn!("SIGHUP: {what} changed; that takes effect on restart");
                        }
                        (watcher, engine) = parts;
                        catalog = Catalog::new(&new.gpu);
                        judge.reload(&new);
                        watch_cgroups(&mut s.kernel, &new, &pod_globs);
                        identity = self::identity(&new);
                        // Rules may have changed: give everything back; the next tick
                        // throttles again what the new rules still call for.
                        remediator.reload(&new);
                        s.remediations.forget_gave_up();
                        supervisor.reload(&new);
                        if let Err(e) = probes.set_timing(&TimingPlan::from_config(&new)) {
                            tracing::error!("SIGHUP: the syscalls to time could not be changed: {e}");
                        }
                        config = new;
                        s.reloads.accepted += 1;
                        tracing::info!(path = %path.display(), "SIGHUP: config reloaded (targets, alerting, rules)");
                        notifier.status("config reloaded");
                    }
                    Err(e) => {
                        s.reloads.rejected += 1;
                        tracing::error!(path = %path.display(), "SIGHUP: the new config is rejected, the running one stays:\n{e:#}");
                    }
                }
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    notifier.stopping();
    remediator.stop("agent stopping");
    tracing::info!("stopping: saving target histories, detaching probes");
    watcher.save();
    http.abort();
    if let Some(a) = agent_check {
        a.abort();
    }
    if let Some(c) = cluster {
        c.stop();
    }
    drop(probes);
    Ok(())
}

/// Records a batch of process exits with the watcher, the jobs and the model; true if
/// one touched a target or a job (the rules should run).
fn take_exits(
    batch: Vec<crate::probes::ExitRecord>,
    watcher: &mut Watcher,
    jobs: &mut JobsStep,
    s: &mut Snapshot,
    now: SystemTime,
) -> bool {
    let mut touched = false;
    for record in batch {
        tracing::debug!(pid = record.event.pid, labels = ?record.labels, "process exit");
        touched |= watcher.on_exit(&record, now);
        touched |= jobs.exit(s, &record, now);
        s.kernel.apply_exit(record.labels);
    }
    touched
}

/// The kubelet's layout and the removed-cgroup sweep, from `[kubernetes]`.
fn identity(config: &Config) -> (Layout, Removed) {
    let k = &config.kubernetes;
    (
        Layout::new(k.log_root.clone()),
        Removed::new(k.removed_cgroup_grace.get()),
    )
}

/// Per tick: re-reads the kubelet's layout if it changed (pod-name targets follow it),
/// and drops the series of cgroups removed for the grace period; returns those, whose
/// kernel map keys go next.
fn identity_step(
    (layout, removed): &mut (Layout, Removed),
    s: &mut Snapshot,
    watcher: &mut Watcher,
    cgroup2: &std::path::Path,
    now: SystemTime,
) -> Vec<Arc<str>> {
    if let Some(pods) = layout.refresh(now) {
        s.pods = Arc::new(pods);
    }
    watcher.resolve_pods(&s.pods);
    let gone = removed.sweep(cgroup2, || s.kernel.cgroups(), std::time::Instant::now());
    for cgroup in &gone {
        s.kernel.forget_cgroup(cgroup);
    }
    gone
}

/// Globs of the cgroups of targets selected by pod (`pod_uid`, `namespace`/`pod`): they
/// follow the kubelet's layout, so the loop sets them after each refresh.
type PodGlobs = Arc<std::sync::Mutex<Vec<String>>>;

/// Tells the model which cgroups the targets' latency SLIs read, so their series never
/// fold: the targets' globs, and those of targets selected by pod as they are now.
/// Targets selected by process (comm, exe) move between cgroups and are not known here.
fn watch_cgroups(model: &mut Model, config: &Config, pods: &PodGlobs) {
    let globs: Vec<String> = config
        .targets
        .iter()
        .filter(|t| t.pod_uid.is_none())
        .flat_map(|t| t.patterns())
        .collect();
    let pods = pods.clone();
    model.watch_cgroups(move |cgroup| {
        let matches = |g: &String| crate::targets::glob_match(g, cgroup);
        globs.iter().any(matches) || crate::sync::lock(&pods).iter().any(matches)
    });
}

/// The parts that follow `[[targets]]`, `[alerting]` and `[[rules]]`: rebuilt on SIGHUP.
/// Target histories are on disk, so a rebuilt watcher carries on from them.
fn alerting(
    config: &Config,
    cgroup2: &std::path::Path,
    addr: SocketAddr,
    delivery: &Arc<DeliveryStats>,
) -> anyhow::Result<(Watcher, Engine)> {
    let endpoints = config
        .alerting
        .endpoints()
        .iter()
        .map(alertmanager)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let outbox = if endpoints.is_empty() {
        None
    } else {
        let spool = spool_dir(&config.agent.state_dir);
        let tx = Deliverer::spawn(endpoints, &spool, delivery.clone()).with_context(|| {
            format!(
                "cannot create the alert spool {} (set [agent] state_dir)",
                spool.display()
            )
        })?;
        Some(tx)
    };
    let generator_url = config
        .alerting
        .external_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}/metrics"));
    let watcher = Watcher::new(
        &config.targets,
        cgroup2.to_path_buf(),
        config.agent.state_dir.clone(),
    );
    let engine = Engine::new(
        &config.alerting,
        &config.rules,
        generator_url,
        outbox,
        delivery.clone(),
        config.agent.state_dir.join("alerts.json"),
    )
    .with_gpu(Catalog::new(&config.gpu));
    Ok((watcher, engine))
}

/// Where alert spools live: `<state_dir>/alert-spool`, or, when that cannot be created
/// (a read-only state_dir), the state_dir itself if it exists, so the agent still starts
/// and alerts; every spool write then fails and is logged, and the readiness text says
/// state cannot be saved.
fn spool_dir(state_dir: &std::path::Path) -> std::path::PathBuf {
    let spool = state_dir.join("alert-spool");
    match crate::host::durable::create_dir(&spool) {
        Ok(()) => spool,
        Err(e) if state_dir.is_dir() => {
            tracing::error!(spool = %spool.display(), error = %e, "cannot create the alert spool; alerts are sent but not spooled");
            state_dir.to_path_buf()
        }
        Err(_) => spool, // Deliverer::spawn names the failure
    }
}

/// Why state cannot be saved in `state_dir` (probed by writing and removing a file), if
/// it cannot: said at start and in the readiness text, since every later save fails.
fn state_unsaveable(state_dir: &std::path::Path) -> Option<String> {
    let probe = state_dir.join(".gimbal-write-check");
    match crate::host::durable::write_atomic(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            None
        }
        Err(e) => Some(format!(
            "STATE CANNOT BE SAVED: {} is not writable ({e})",
            state_dir.display()
        )),
    }
}

/// One Alertmanager as delivery uses it: its URL, `Authorization` header and TLS client,
/// from its settings (files read now, so a reload picks up a rotated secret or certificate).
fn alertmanager(e: &crate::config::AlertmanagerEntry) -> anyhow::Result<Endpoint> {
    let endpoint = Endpoint::parse(&e.url).map_err(anyhow::Error::msg)?;
    let field = |key: &str| format!("[alerting] {key} (for {})", e.url);
    let read = |p: &std::path::Path, key: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .with_context(|| format!("cannot read {} {}", field(key), p.display()))
    };
    let authorization = match (&e.bearer_token_file, &e.basic_auth_username) {
        (Some(p), _) => Some(format!("Bearer {}", read(p, "bearer_token_file")?)),
        (None, Some(user)) => match &e.basic_auth_password_file {
            Some(p) => Some(crate::alert::basic_auth(
                user,
                &read(p, "basic_auth_password_file")?,
            )),
            None => None,
        },
        (None, None) => None,
    };
    let tls = match (&e.tls_ca_file, endpoint.is_https()) {
        (Some(ca), true) => {
            let client = e.tls_cert_file.as_deref().zip(e.tls_key_file.as_deref());
            Some(
                crate::alert::tls_config(ca, client)
                    .map_err(|err| anyhow::anyhow!("{}: {err}", field("tls_*_file")))?,
            )
        }
        _ => None,
    };
    Ok(endpoint.with_authorization(authorization).with_tls(tls))
}

/// Settings a reload cannot change in a running agent.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.agent != new.agent {
        out.push("[agent]");
    }
    // Which syscalls are timed changes at once (the kernel's table is rewritten).
    let timed = |c: &Config| {
        let mut p = c.probes.clone();
        p.syscall_latency.timed_syscalls.clear();
        p
    };
    if timed(old) != timed(new) {
        out.push("[probes]");
    }
    if old.labels != new.labels {
        out.push("[labels]");
    }
    if old.verdict.agent_check_listen != new.verdict.agent_check_listen {
        out.push("[verdict] agent_check_listen");
    }
    if old.cluster != new.cluster {
        out.push("[cluster]");
    }
    let (o, n) = (&old.gpu, &new.gpu);
    if (
        o.kmsg,
        &o.kmsg_path,
        o.kmsg_user_records,
        o.nvml,
        o.nvml_interval,
    ) != (
        n.kmsg,
        &n.kmsg_path,
        n.kmsg_user_records,
        n.nvml,
        n.nvml_interval,
    ) {
        out.push("[gpu] kmsg, kmsg_path, kmsg_user_records, nvml or nvml_interval");
    }
    out
}

/// Starts the GPU sources that `[gpu]` enables, each off the loop: the kernel log reader
/// and NVML's poller (threads of their own). A source
/// turned off is reported not attached at once.
fn start_gpu(config: &Config, s: &mut Snapshot, reports: gpu::Reports) {
    if config.gpu.kmsg {
        let options = gpu::kmsg::Options::new(&config.gpu, &config.agent.state_dir);
        gpu::kmsg::start(options, reports.clone());
    } else {
        s.gpu.set_attached(gpu::KMSG, false);
    }
    if config.gpu.nvml {
        if !gpu::nvml::start(config.gpu.nvml_interval.get(), reports) {
            s.gpu.set_attached(gpu::NVML, false);
        }
    } else {
        s.gpu.set_attached(gpu::NVML, false);
    }
}

/// `config` with the --listen override, if any.
fn with_listen(mut config: Config, listen: Option<SocketAddr>) -> Config {
    config.agent.listen = listen.unwrap_or(config.agent.listen);
    config
}

/// Runs the rules on the targets' status, then publishes it with the alert states.
fn evaluate(
    engine: &mut Engine,
    watcher: &Watcher,
    s: &mut Snapshot,
    probes: &[ProbeStatus],
    now: SystemTime,
) {
    let targets = watcher.status(now);
    let node = NodeInputs {
        probes,
        drops: s.kernel.drops_per_probe(),
        retransmits_total: s.kernel.tcp_retransmits.series.values().sum(),
    };
    // User rules read the targets published by the evaluation before (as they always
    // have); the built-in target rules get the fresh ones.
    engine.evaluate(&targets, node, s, now);
    s.targets = targets;
    s.alerts = engine.alert_states();
}

/// The node's verdict and the watched pods' health, to the Kubernetes writer (if
/// `[cluster]` writes anything).
fn tell_cluster(cluster: Option<&crate::cluster::Writer>, s: &Snapshot) {
    use crate::cluster::{Desired, PodHealth, PodRef};
    let (Some(c), Some(node)) = (cluster, &s.verdicts.node) else {
        return;
    };
    let mut pods = std::collections::BTreeMap::new();
    for t in s.targets.iter().filter(|_| c.wants_pods()) {
        let name = &t.config.name;
        let Some(v) = s.verdicts.targets.get(name) else {
            continue;
        };
        for cgroup in &t.cgroups {
            let id = s.pods.resolve(cgroup);
            if id.namespace.is_empty() || id.pod.is_empty() {
                continue;
            }
            let pod = PodRef {
                namespace: id.namespace.to_string(),
                name: id.pod.to_string(),
            };
            let health = PodHealth {
                ready: v.state == crate::verdict::State::Up,
                why: format!("target {name}: {} ({})", v.state.name(), v.reason),
            };
            match pods.entry(pod) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(health);
                }
                std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().and(health),
            }
        }
    }
    c.set(Desired {
        draining: node.state >= crate::verdict::State::Drain,
        why: node.reason.clone(),
        pods,
    });
}

/// The training-job and stall stage of the loop: progress clocks, ranks, hangs, deaths.
struct JobsStep {
    launchers: crate::jobs::Launchers,
    /// Whether the latency probe is attached: without it no syscall is seen, and nothing
    /// may be called stalled.
    latency_attached: bool,
    /// The latency map's "full" drops at the last tick: a rise means syscalls went
    /// uncounted.
    hist_full: u64,
}

impl JobsStep {
    fn new(probes: &[ProbeStatus]) -> Self {
        Self {
            launchers: crate::jobs::Launchers::new(std::path::PathBuf::from(
                crate::host::procfs::ROOT,
            )),
            latency_attached: probes
                .iter()
                .any(|p| p.probe.name() == "syscall_latency" && p.attached()),
            hist_full: 0,
        }
    }

    /// After the watcher's tick: its progress clocks, then the ranks and the hung jobs.
    fn tick(
        &mut self,
        watcher: &mut Watcher,
        s: &mut Snapshot,
        interval: Duration,
        now: SystemTime,
    ) {
        let drops = &s.kernel.drops;
        let full = drops[gimbal_common::Drop::SyscallHistFull as usize]
            + drops[gimbal_common::Drop::SyscallCountsFull as usize];
        let seen = crate::targets::stall::Observed {
            now_ms: crate::targets::watch::unix_ms(now),
            interval,
            complete: self.latency_attached && full == self.hist_full,
        };
        self.hist_full = full;
        let counts = &s.kernel.syscalls;
        watcher.progress(&counts.series, seen, counts.folded() > 0);
        self.launchers.observe(watcher, &mut s.jobs, now);
        crate::jobs::judge_stalls(watcher, &mut s.jobs, now);
        s.jobs.prune(now);
    }

    /// Every exit: a rank's ends it; true if it was a rank's failure (the rules run).
    fn exit(
        &mut self,
        s: &mut Snapshot,
        record: &crate::probes::ExitRecord,
        now: SystemTime,
    ) -> bool {
        let [cgroup, comm, ..] = &record.labels;
        let Some(f) = s.jobs.apply_exit(&record.event, cgroup, comm, &s.gpu, now) else {
            return false;
        };
        tracing::warn!(job = %f.job, rank = f.rank, pid = f.pid, reason = f.reason, code = %f.code, cause = ?f.cause, "training rank died");
        true
    }
}

/// The verdicts from the targets just published, the GPU's faults and CPU pressure
/// (each target's cgroups on cgroup2, the host's where they have none).
fn judge_step(judge: &mut Judge, s: &mut Snapshot, cgroup2: &std::path::Path, now: SystemTime) {
    let host = crate::host::psi::host_cpu(std::path::Path::new(crate::host::procfs::ROOT));
    s.verdicts = judge.step(
        &s.targets,
        &s.gpu,
        |cgroup| crate::host::psi::cgroup_cpu(cgroup2, cgroup),
        host,
        now,
    );
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use gimbal_common::{hist::bucket, SyscallKey};

    use super::*;
    use crate::model::{HistReading, Sample, WrappedHist};

    #[test]
    fn the_cgroups_of_a_pod_target_never_fold() {
        let uid = "0f3c5a6e-2b1d-4c8e-9a7f-1e2d3c4b5a69";
        let config = Config::parse("[[targets]]\nname = \"t\"\nnamespace = \"ml\"\n", "t").unwrap();
        let globs = PodGlobs::default();
        let mut model = Model::new(1);
        watch_cgroups(&mut model, &config, &globs);
        *crate::sync::lock(&globs) = vec![format!("**/*pod{uid}/*")];
        let reading = |id: u64, cgroup: &str| {
            let mut hist = WrappedHist::default();
            hist.buckets[bucket(2_000)] = 1;
            HistReading {
                raw: SyscallKey {
                    cgroup_id: id,
                    nr: 0,
                    _pad: 0,
                },
                labels: [Arc::from("read"), Arc::from(cgroup)],
                hist,
            }
        };
        let pod = format!("kubepods/burstable/pod{uid}/{}", "a".repeat(64));
        model.apply(Sample {
            syscalls: vec![reading(1, "first"), reading(2, "second"), reading(3, &pod)],
            ..Default::default()
        });
        let cgroups: Vec<String> = model.cgroups().iter().map(|c| c.to_string()).collect();
        // The budget of 1 went to the first; the pod target's cgroup has its own anyway.
        assert_eq!(cgroups, ["first", pod.as_str(), "other"]);
    }
}
