//! What the readers (`/metrics`, the rules) see: the kernel model next to what the stages
//! around it last reported. `run.rs` is its only writer; the model itself stays pure and
//! knows nothing of targets, alerts or remediation.
//!
//! Published as an `Arc` (see [`Published`]): a reader takes the current one, in the time
//! of a pointer copy, and encodes it with no lock held; the writer changes it in place,
//! or a copy of it while a reader still holds the previous one. So a scrape never holds
//! up an exit event, and an exit event holds up a scrape only while it is applied.
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use crate::{
    identity::Kubelet,
    model::{gpu::GpuModel, jobs::JobsModel, Limits, Model},
    remediate::Ledger,
    sync::lock,
    targets::watch::TargetStatus,
    verdict::Verdicts,
};

#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Kernel-derived totals.
    pub kernel: Model,
    /// The watched targets as the watcher last saw them.
    pub targets: Vec<TargetStatus>,
    /// Active alerts per (alertname, state), as the rules last left them.
    pub alerts: BTreeMap<(String, &'static str), u64>,
    /// Remediation actions by (action, result), and what the rules report of them: the
    /// one channel back from the actuators into the rules.
    pub remediations: Ledger,
    pub reloads: Reloads,
    /// GPU faults: XIDs from the kernel log, records lost, which GPU sources are attached.
    pub gpu: GpuModel,
    /// The load-balancing verdicts (node and targets), as the loop last judged them.
    pub verdicts: Verdicts,
    /// What the Kubernetes writer did (`[cluster]`), by kind and outcome.
    pub cluster: crate::cluster::Writes,
    /// Pods and containers by name (the kubelet's /var/log layout, as last read): readers
    /// label each cgroup with its namespace, pod and container from it.
    pub pods: Arc<Kubelet>,
    /// Training jobs: their ranks, how they ended and why, which hang.
    pub jobs: JobsModel,
}

/// SIGHUP reloads of the config file.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reloads {
    pub accepted: u64,
    /// The new config was refused and the running one stayed.
    pub rejected: u64,
}

impl Snapshot {
    /// Every model drawing on one series budget (`Limits::from(n)`: a per-metric cap only).
    pub fn new(limits: impl Into<Limits>) -> Self {
        let limits: Limits = limits.into();
        Self {
            kernel: Model::new(limits.clone()),
            targets: Vec::new(),
            alerts: BTreeMap::new(),
            remediations: Ledger::default(),
            reloads: Reloads::default(),
            gpu: GpuModel::new(limits.clone()),
            verdicts: Verdicts::default(),
            cluster: crate::cluster::Writes::default(),
            pods: Arc::default(),
            jobs: JobsModel::new(limits),
        }
    }
}

/// The current snapshot, shared by its one writer and its readers.
#[derive(Debug, Clone)]
pub struct Published(Arc<Mutex<Arc<Snapshot>>>);

impl Published {
    pub fn new(snapshot: Snapshot) -> Self {
        Self(Arc::new(Mutex::new(Arc::new(snapshot))))
    }

    /// The current snapshot, to read with no lock held.
    pub fn read(&self) -> Arc<Snapshot> {
        lock(&self.0).clone()
    }

    /// The snapshot to change; readers see the change when the guard is dropped.
    pub fn write(&self) -> Writing<'_> {
        Writing(lock(&self.0))
    }
}

/// The writer's hold on the snapshot. Changing it copies it first only if a reader still
/// holds it (`Arc::make_mut`).
pub struct Writing<'a>(MutexGuard<'a, Arc<Snapshot>>);

impl std::ops::Deref for Writing<'_> {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        &self.0
    }
}

impl std::ops::DerefMut for Writing<'_> {
    fn deref_mut(&mut self) -> &mut Snapshot {
        Arc::make_mut(&mut self.0)
    }
}

/// A snapshot with rows in every family it feeds, for tests that pin what its readers
/// make of it (the exposition text, the rules' series).
#[cfg(test)]
pub fn filled() -> Snapshot {
    use std::{sync::Arc, time::Duration};

    use gimbal_common::{hist::bucket, ErrnoKey, FlowKey, SyscallKey};

    use crate::{
        model::{CounterReading, HistReading, Sample, WrappedHist},
        remediate::{ActionEvent, Kind, Outcome},
    };

    let mut s = Snapshot::new(10);
    let mut hist = WrappedHist::default();
    hist.buckets[bucket(2_000)] = 3;
    hist.buckets[bucket(5_000_000)] = 1;
    hist.sum_ns = 5_006_000;
    s.kernel.apply(Sample {
        syscalls: vec![HistReading {
            raw: SyscallKey {
                cgroup_id: 7,
                nr: 0,
                _pad: 0,
            },
            labels: ["read", "svc"].map(Arc::from),
            hist,
        }],
        syscall_errors: vec![CounterReading {
            raw: ErrnoKey {
                cgroup_id: 7,
                nr: 2,
                errno: 2,
            },
            labels: ["openat", "svc", "ENOENT"].map(Arc::from),
            value: 4,
        }],
        tcp_retransmits: vec![CounterReading {
            raw: FlowKey {
                cgroup_id: 7,
                family: 2,
                sport: 1,
                dport: 80,
                _pad: 0,
                saddr: [0; 16],
                daddr: [0; 16],
            },
            labels: ["svc", "10.0.0.1:80", "ipv4"].map(Arc::from),
            value: 2,
        }],
        programs: vec![(
            "sys_enter",
            crate::model::ProgramRuns {
                runs: 1000,
                run_ns: 81_500,
            },
        )],
        ..Default::default()
    });
    s.kernel.drops[0] = 5;
    s.kernel
        .apply_exit(["svc", "a \"q\"\n", "signaled", "SIGKILL"].map(Arc::from));
    let config = crate::config::Config::parse(
        "[[targets]]\nname = \"svc\"\ncgroup = \"svc.service\"\n",
        "test",
    )
    .expect("a valid config");
    s.targets.push(TargetStatus {
        config: config.targets[0].clone(),
        up: true,
        availability: vec![("5m", Some(0.5)), ("1h", None), ("30d", Some(1.0))],
        reliability: vec![("5m", Some(0.25))],
        failures_total: 3,
        failures_recent: 1,
        mttr: Some(Duration::from_millis(1500)),
        latency: vec![("5m", Some((0.75, 1234.5))), ("1h", None)],
        burn: [(None, None), (None, None)],
        last_exit: None,
        recent_kill: None,
        read_failures_total: 2,
        cgroups: vec!["svc.service".into()],
        stall: Some(crate::targets::watch::StallStatus {
            stall_for: Duration::from_secs(300),
            quiet: Duration::from_millis(301_500),
            processes: 2,
            stalled: true,
        }),
    });
    for (rank, pid) in [(0, 40), (1, 41)] {
        s.jobs.rank_seen(
            crate::model::jobs::RankSeen {
                job: Arc::from("llama \"7b\"\n"),
                rank,
                local_rank: Some(rank),
                world_size: Some(2),
                restart_count: 1,
                pid,
                comm: "python3".into(),
                cgroup: Arc::from("svc"),
                target: Arc::from("svc"),
            },
            std::time::UNIX_EPOCH,
        );
    }
    let abort = gimbal_common::ExitEvent {
        cgroup_id: 7,
        lifetime_ns: 0,
        pid: 41,
        ppid: 1,
        exit_code: 6,
        flags: 0,
        comm: *b"python3\0\0\0\0\0\0\0\0\0",
    };
    let gpu = s.gpu.clone();
    s.jobs.apply_exit(
        &abort,
        &Arc::from("svc"),
        "python3",
        &gpu,
        std::time::UNIX_EPOCH,
    );
    s.alerts.insert(("TargetDown".into(), "firing"), 1);
    s.alerts.insert(("Slow".into(), "pending"), 2);
    s.remediations.record(ActionEvent {
        action: Kind::Restart,
        target: "svc".into(),
        result: Outcome::DryRun,
        detail: String::new(),
        at: std::time::UNIX_EPOCH,
    });
    s.reloads = Reloads {
        accepted: 2,
        rejected: 1,
    };
    s.gpu.apply_xid(crate::model::gpu::XidSeen {
        gpu: Arc::from("0000:3b:00"),
        xid: 79,
        action: "reboot-node",
        cgroup: Arc::from("pod \"a\"\n"),
        pid: Some(7),
        name: Some("python3".into()),
        detail: "GPU has fallen off the bus.".into(),
        at: std::time::UNIX_EPOCH,
    });
    s.gpu.devices.push(crate::model::gpu_devices::Device {
        gpu: Arc::from("0000:3b:00"),
        index: 0,
        uuid: Arc::from("GPU-8d5c2b47-0000-1111-2222-333344445555"),
        name: "NVIDIA H200 \"x\"\n".into(),
        mig: "disabled",
        temperature_celsius: Some(41.0),
        power_watts: Some(123.456),
        power_limit_watts: Some(700.0),
        utilization: Some(0.87),
        memory_utilization: Some(0.25),
        memory_used_bytes: Some(1 << 30),
        memory_total_bytes: Some(141 << 30),
        ecc_enabled: Some(true),
        ecc_errors: vec![("uncorrected", "volatile", 1)],
        retired_pages: vec![("double_bit", 2)],
        retired_pages_pending: Some(false),
        remapped_rows: crate::model::gpu_devices::RemappedRows {
            correctable: Some(3),
            uncorrectable: Some(0),
            pending: Some(false),
            failed: Some(false),
        },
        pcie_replays: Some(7),
        nvlink_errors: vec![(2, "crc_flit", 9)],
        throttle_reasons: vec!["sw_power_cap"],
        throttle_read: true,
        recovery_action: Some(Arc::from("none")),
        holders: vec![crate::model::gpu_devices::Holder {
            cgroup: Arc::from("kubepods/pod \"b\""),
            processes: 2,
            memory_bytes: Some(1 << 20),
        }],
        mig_instances: vec![crate::model::gpu_devices::MigInstance {
            index: 1,
            uuid: Arc::from("MIG-0d5c2b47-aaaa-bbbb-cccc-ddddeeeeffff"),
            memory_used_bytes: Some(1 << 20),
            memory_total_bytes: Some(18 << 30),
            holders: vec![crate::model::gpu_devices::Holder {
                cgroup: Arc::from("kubepods/pod \"b\""),
                processes: 1,
                memory_bytes: None,
            }],
        }],
    });
    s.gpu.nvml_events.xid(Arc::from("0000:3b:00"), 79);
    s.gpu.nvml_events.ecc(Arc::from("0000:3b:00"), "double_bit");
    s.gpu.kmsg_dropped = 3;
    s.gpu.set_attached("kmsg", true);
    s.gpu.set_attached("nvml", false);
    s.verdicts.node = Some(crate::verdict::Verdict::up());
    s.verdicts.targets.insert(
        "svc".into(),
        crate::verdict::Verdict::new(crate::verdict::State::Degraded, 40, "slow"),
    );
    s.verdicts.changes.insert(String::new(), 0);
    s.verdicts.changes.insert("svc".into(), 2);
    s.cluster.record(crate::cluster::Write {
        kind: crate::cluster::Kind::Taint,
        outcome: crate::cluster::Outcome::DryRun,
    });
    s.verdicts.load = Some(crate::verdict::NodeLoad {
        node: Arc::from("gpu-node-7"),
        score: 0.375,
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_keeps_what_it_took_and_the_writer_copies_only_while_it_is_held() {
        let published = Published::new(Snapshot::new(10));
        let held = published.read();
        published.write().reloads.accepted = 1;
        assert_eq!(
            held.reloads.accepted, 0,
            "the reader's snapshot did not move"
        );
        assert_eq!(
            published.read().reloads.accepted,
            1,
            "new readers see the change"
        );
        drop(held);
        let before = published.read();
        let address = Arc::as_ptr(&before);
        drop(before);
        published.write().reloads.accepted = 2;
        assert!(
            std::ptr::eq(Arc::as_ptr(&published.read()), address),
            "no reader held it: changed in place, not copied"
        );
    }
}
