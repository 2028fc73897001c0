//! The built-in stall and training-job rules: TargetStalled (a target's processes all
//! alive, none completing a progress syscall for its `stall_for`), TrainingRankFailed (a
//! rank died: job, rank, how, and what hit it shortly before) and TrainingJobStalled
//! (every rank of a job here alive and stalled).
use std::time::{Duration, SystemTime};

use super::{Engine, Map};
use crate::{
    model::{
        gpu::GpuModel,
        gpu_devices::Device,
        jobs::{Cause, JobStall, JobsModel, RankFailure, CAUSE_WINDOW, FAILURE_MEMORY},
    },
    targets::watch::TargetStatus,
};

impl Engine {
    pub(super) fn stall_rules(&mut self, targets: &[TargetStatus], now: SystemTime) {
        for t in targets {
            let Some(stall) = &t.stall else { continue };
            let name = t.config.name.as_str();
            let labels = self.labels("TargetStalled", "warning", &[("target", name)]);
            let summary = format!(
                "{name} is stalled on {}: its {} process(es) are alive, and none completed a progress syscall for {}",
                self.instance,
                stall.processes,
                human(stall.quiet)
            );
            let description = format!(
                "No syscall of [{}] returned in the cgroups matching `{}` for {} (stall_for {}).",
                t.config.progress_syscalls.join(", "),
                t.config.selector(),
                human(stall.quiet),
                human(stall.stall_for)
            );
            let a: Map = [
                ("summary".to_string(), summary),
                ("description".to_string(), description),
            ]
            .into();
            self.alerts
                .set(labels, a, stall.stalled, Duration::ZERO, now);
        }
    }

    pub(super) fn job_rules(&mut self, jobs: &JobsModel, gpu: &GpuModel, now: SystemTime) {
        for f in &jobs.failures {
            if now.duration_since(f.at).unwrap_or_default() >= FAILURE_MEMORY {
                continue;
            }
            let rank = f.rank.to_string();
            let labels = self.labels(
                "TrainingRankFailed",
                "critical",
                &[("job", &*f.job), ("rank", &rank), ("target", &*f.target)],
            );
            let a = self.failure_annotations(f);
            // A later failure of the same rank replaces the earlier one's text.
            self.alerts.set(labels, a, true, Duration::ZERO, now);
        }
        for (job, stall) in &jobs.stalled {
            let mut extra = vec![("job", &**job)];
            extra.extend(stall.target.as_deref().map(|t| ("target", t)));
            let labels = self.labels("TrainingJobStalled", "critical", &extra);
            let ranks: Vec<String> = stall
                .ranks
                .iter()
                .map(|(rank, pid, cgroup)| format!("rank {rank} (pid {pid}, cgroup {cgroup})"))
                .collect();
            let evidence = gpu_evidence(stall, gpu, now);
            let odd = evidence
                .odd
                .as_ref()
                .map(|(rank, why)| format!("; rank {rank} is the odd one out ({why})"))
                .unwrap_or_default();
            let summary = format!(
                "job {job} is stalled on {}: all {} of its ranks here are alive, and none completed a progress syscall for {}{odd}",
                self.instance,
                stall.ranks.len(),
                human(stall.quiet)
            );
            let description = format!(
                "{} (stall_for {}). {}",
                ranks.join(", "),
                human(stall.stall_for),
                evidence.text
            );
            let mut a: Map = [
                ("summary".to_string(), summary),
                ("description".to_string(), description),
            ]
            .into();
            if let Some((rank, _)) = evidence.odd {
                a.insert("odd_rank".into(), rank.to_string());
            }
            self.alerts.set(labels, a, true, Duration::ZERO, now);
        }
    }

    /// "rank 3 of job X died on node-7: SIGABRT, 2 s after XID 79 on GPU 0000:3b:00".
    fn failure_annotations(&self, f: &RankFailure) -> Map {
        let how = match f.reason {
            "exited" => format!("exit code {}", f.code),
            "oom_killed" => format!("OOM-killed ({})", f.code),
            _ if f.core_dumped => format!("{} (core dumped)", f.code),
            _ => f.code.clone(),
        };
        let cause = match (&f.cause, f.reason) {
            (
                Some(Cause::Xid {
                    xid,
                    gpu,
                    named: true,
                    ..
                }),
                _,
            ) => {
                format!("XID {xid} on GPU {gpu}")
            }
            (
                Some(Cause::Xid {
                    xid,
                    gpu,
                    named: false,
                    ..
                }),
                _,
            ) => {
                format!("XID {xid} on GPU {gpu} (the record names no process)")
            }
            (Some(Cause::OomKill { pid, comm, .. }), _) => {
                format!("an OOM kill of {comm} (pid {pid}) in its cgroup")
            }
            (None, "oom_killed") => "OOM kill".to_string(),
            (None, _) => String::new(),
        };
        let after = match &f.cause {
            Some(Cause::Xid { after, .. } | Cause::OomKill { after, .. }) => {
                format!(", {} after {cause}", human(*after))
            }
            None => String::new(),
        };
        let summary = format!(
            "rank {} of job {} died on {}: {how}{after}",
            f.rank, f.job, self.instance
        );
        let world = f.world_size.map(|w| format!(" of {w}")).unwrap_or_default();
        let description = format!(
            "pid {} ({}) in cgroup {} (target {}), rank {}{world}, restart {} of the job.",
            f.pid, f.comm, f.cgroup, f.target, f.rank, f.restart_count
        );
        [
            ("summary".to_string(), summary),
            ("description".to_string(), description),
            ("cause".to_string(), cause),
        ]
        .into()
    }
}

/// What the GPU readings (NVML, where attached) and the XIDs say of a stalled job.
struct Evidence {
    text: String,
    /// (rank, why) of the rank unlike the others: its GPUs idle while the others' are
    /// busy, or an XID on it.
    odd: Option<(u32, String)>,
}

/// A GPU counts as busy at this utilization (a NCCL kernel spinning in a hung collective
/// keeps it near 100 %), as idle under the other.
const BUSY: f64 = 0.95;
const IDLE: f64 = 0.05;
/// A busy GPU draws near idle power under this share of its enforced limit: a kernel
/// spinning on a flag in a hung collective keeps "utilization" at 100 % while its SMs do
/// almost no arithmetic, so it draws near its idle power (an H100/H200 idles near 70-100 W
/// of 700 W), where real training draws most of the limit.
const NEAR_IDLE_POWER: f64 = 0.3;

fn gpu_evidence(stall: &JobStall, gpu: &GpuModel, now: SystemTime) -> Evidence {
    // Each rank's GPUs: those whose holders include the rank's cgroup.
    let per_rank: Vec<(u32, Vec<&Device>)> = stall
        .ranks
        .iter()
        .map(|(rank, _, cgroup)| {
            let held = gpu
                .devices
                .iter()
                .filter(|d| d.holders.iter().any(|h| h.cgroup == *cgroup))
                .collect();
            (*rank, held)
        })
        .collect();
    let xid = stall.ranks.iter().find_map(|(rank, pid, cgroup)| {
        gpu.xid_before(*pid, cgroup, now, CAUSE_WINDOW)
            .map(|x| (*rank, format!("XID {} on GPU {}", x.xid, x.gpu)))
    });
    if per_rank.iter().all(|(_, d)| d.is_empty()) {
        let text = "No GPU readings for its ranks (NVML not attached, or they hold no GPU): \
                    the busy-GPU signature of a hang in a collective is not checked."
            .to_string();
        return Evidence { text, odd: xid };
    }
    let busy = |d: &&Device| d.utilization.is_some_and(|u| u >= BUSY);
    let idle = |d: &&Device| d.utilization.is_some_and(|u| u < IDLE);
    let readings: Vec<String> = per_rank
        .iter()
        .flat_map(|(rank, ds)| {
            ds.iter().map(move |d| {
                let util = d
                    .utilization
                    .map_or("?".into(), |u| format!("{:.0} %", u * 100.0));
                let power = match (d.power_watts, d.power_limit_watts) {
                    (Some(w), Some(limit)) => format!("{w:.0} W of {limit:.0} W"),
                    (Some(w), None) => format!("{w:.0} W"),
                    (None, _) => "? W".into(),
                };
                format!("rank {rank}: GPU {} {util} busy, {power}", d.gpu)
            })
        })
        .collect();
    let all_busy = per_rank
        .iter()
        .all(|(_, ds)| !ds.is_empty() && ds.iter().all(busy));
    let odd = xid.or_else(|| {
        let others_busy = per_rank.iter().any(|(_, ds)| ds.iter().any(busy));
        per_rank
            .iter()
            .find(|(_, ds)| others_busy && !ds.is_empty() && ds.iter().all(idle))
            .map(|(rank, ds)| {
                (
                    *rank,
                    format!("its GPU {} idle while the others spin", ds[0].gpu),
                )
            })
    });
    let all = || per_rank.iter().flat_map(|(_, ds)| ds.iter().copied());
    let verdict = if !all_busy {
        "Not every GPU of its ranks is busy."
    } else if all().all(near_idle_power) {
        "Every GPU of its ranks is busy at near-idle power while none makes progress: the signature of a hang in a collective (NCCL)."
    } else if all().any(|d| power_share(d).is_some_and(|p| p >= NEAR_IDLE_POWER)) {
        "Every GPU of its ranks is busy, and some draw real power: they may be computing, not hung in a collective."
    } else {
        "Every GPU of its ranks is busy while none makes progress (their power against its limit was not read): likely a hang in a collective (NCCL)."
    };
    Evidence {
        text: format!("{} {verdict}", readings.join("; ")),
        odd,
    }
}

/// The GPU's draw as a share of its enforced power limit, where both were read.
fn power_share(d: &Device) -> Option<f64> {
    match (d.power_watts, d.power_limit_watts) {
        (Some(w), Some(limit)) if limit > 0.0 => Some(w / limit),
        _ => None,
    }
}

fn near_idle_power(d: &Device) -> bool {
    power_share(d).is_some_and(|p| p < NEAR_IDLE_POWER)
}

/// "2 s", "850 ms", "5m 3s".
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{} s", (ms + 500) / 1000),
        _ => format!("{}m {}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use gimbal_common::ExitEvent;

    use super::*;
    use crate::model::{
        gpu::{GpuModel, XidSeen},
        jobs::RankSeen,
    };

    fn engine(dir: &std::path::Path) -> Engine {
        super::super::test_engine("", dir)
    }

    #[test]
    fn a_failure_reads_like_an_sre_would_write_it() {
        let dir = std::env::temp_dir().join(format!("gimbal-rules-jobs-{}", std::process::id()));
        let mut e = engine(&dir);
        e.instance = "node-7".into();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut jobs = JobsModel::new(10);
        let mut gpu = GpuModel::new(10);
        jobs.rank_seen(
            RankSeen {
                job: Arc::from("llama"),
                rank: 3,
                local_rank: Some(3),
                world_size: Some(8),
                restart_count: 0,
                pid: 42,
                comm: "python3".into(),
                cgroup: Arc::from("job/r3"),
                target: Arc::from("trainer"),
            },
            t0,
        );
        gpu.apply_xid(XidSeen {
            gpu: Arc::from("0000:3b:00"),
            xid: 79,
            action: "reboot-node",
            cgroup: Arc::from("job/r3"),
            pid: Some(42),
            name: None,
            detail: String::new(),
            at: t0 + Duration::from_secs(8),
        });
        let event = ExitEvent {
            cgroup_id: 1,
            lifetime_ns: 0,
            pid: 42,
            ppid: 1,
            exit_code: 6,
            flags: 0,
            comm: *b"python3\0\0\0\0\0\0\0\0\0",
        };
        let at = t0 + Duration::from_secs(10);
        jobs.apply_exit(&event, &Arc::from("job/r3"), "python3", &gpu, at);
        e.job_rules(&jobs, &gpu, at);
        e.alerts.sweep(at);
        let firing = e.alerts.firing();
        assert_eq!(firing.len(), 1);
        assert_eq!(firing[0]["job"], "llama");
        assert_eq!(firing[0]["rank"], "3");
        let a = e.failure_annotations(&jobs.failures[0]);
        assert_eq!(
            a["summary"],
            "rank 3 of job llama died on node-7: SIGABRT, 2 s after XID 79 on GPU 0000:3b:00"
        );
        assert_eq!(a["cause"], "XID 79 on GPU 0000:3b:00");
        // Past FAILURE_MEMORY it resolves.
        let later = at + FAILURE_MEMORY;
        e.job_rules(&jobs, &gpu, later);
        e.alerts.sweep(later);
        assert!(e.alerts.firing().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_stalled_job_names_its_busy_gpus_and_the_odd_rank_out() {
        use crate::model::gpu_devices::Holder;
        let cg = |r: u32| Arc::<str>::from(format!("job/r{r}"));
        let stall = JobStall {
            quiet: Duration::from_secs(400),
            stall_for: Duration::from_secs(300),
            ranks: (0..3).map(|r| (r, 100 + r, cg(r))).collect(),
            target: None,
        };
        let mut gpu = GpuModel::new(10);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let none = gpu_evidence(&stall, &gpu, now);
        assert!(
            none.text.contains("not checked") && none.odd.is_none(),
            "{}",
            none.text
        );
        for (r, util) in [(0, 0.99), (1, 0.98), (2, 0.0)] {
            gpu.devices.push(Device {
                gpu: Arc::from(format!("0000:3{r}:00")),
                utilization: Some(util),
                power_watts: Some(70.0),
                holders: vec![Holder {
                    cgroup: cg(r),
                    processes: 1,
                    memory_bytes: None,
                }],
                ..Default::default()
            });
        }
        let e = gpu_evidence(&stall, &gpu, now);
        assert_eq!(
            e.odd,
            Some((2, "its GPU 0000:32:00 idle while the others spin".into()))
        );
        assert!(
            e.text.contains("rank 0: GPU 0000:30:00 99 % busy, 70 W"),
            "{}",
            e.text
        );
        assert!(
            e.text.ends_with("Not every GPU of its ranks is busy."),
            "{}",
            e.text
        );
        gpu.devices[2].utilization = Some(0.97);
        let e = gpu_evidence(&stall, &gpu, now);
        assert!(
            e.odd.is_none() && e.text.contains("limit was not read): likely a hang"),
            "{}",
            e.text
        );
        // The whole signature: busy at near-idle power.
        for d in &mut gpu.devices {
            d.power_limit_watts = Some(700.0);
        }
        let e = gpu_evidence(&stall, &gpu, now);
        assert!(
            e.text
                .contains("rank 0: GPU 0000:30:00 99 % busy, 70 W of 700 W")
                && e.text
                    .contains("busy at near-idle power while none makes progress"),
            "{}",
            e.text
        );
        // One GPU drawing most of its limit: computing, perhaps, not hung.
        gpu.devices[1].power_watts = Some(560.0);
        let e = gpu_evidence(&stall, &gpu, now);
        assert!(
            e.text
                .contains("some draw real power: they may be computing"),
            "{}",
            e.text
        );
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human(Duration::from_millis(850)), "850 ms");
        assert_eq!(human(Duration::from_millis(2_400)), "2 s");
        assert_eq!(human(Duration::from_secs(303)), "5m 3s");
    }
}
