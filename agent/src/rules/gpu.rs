//! The built-in GPU rules: each XID that alerts (the catalog says which, `[[gpu.rules]]`
//! sets count and window) fires once `count` of its records for one GPU and one cgroup fall
//! within `window`. Labels carry the GPU's bus id, the XID, its action and the cgroup of the
//! process the record names, so an XID whose action is "restart the application" alerts on
//! the pod it hit, and a GPU-wide one (79, no pid) on `cgroup="unknown"`.
use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use super::{Engine, Map};
use crate::{
    gpu::catalog::XidRule,
    model::gpu::{GpuModel, XidSeen},
    targets::watch::Kill,
};

impl Engine {
    pub(super) fn gpu_rules(&mut self, gpu: &GpuModel, now: SystemTime) {
        self.device_rules(gpu, now);
        let mut rules: BTreeMap<u32, Option<XidRule>> = BTreeMap::new();
        // (gpu, xid, cgroup) -> (records in the window, the latest)
        let mut hits: BTreeMap<(&str, u32, &str), (u32, &XidSeen)> = BTreeMap::new();
        for r in &gpu.recent {
            let rule = rules
                .entry(r.xid)
                .or_insert_with(|| self.gpu.rule(r.xid))
                .as_ref();
            let Some(rule) = rule else { continue };
            if now.duration_since(r.at).unwrap_or_default() > rule.window {
                continue;
            }
            let e = hits.entry((&r.gpu, r.xid, &r.cgroup)).or_insert((0, r));
            e.0 += 1;
            e.1 = r;
        }
        for ((gpu_id, xid, cgroup), (count, last)) in hits {
            let Some(Some(rule)) = rules.get(&xid) else {
                continue;
            };
            let xid_text = xid.to_string();
            let labels = self.labels(
                &rule.alert,
                &rule.severity,
                &[
                    ("gpu", gpu_id),
                    ("xid", &xid_text),
                    ("action", last.action),
                    ("cgroup", cgroup),
                ],
            );
            let process = match (last.pid, &last.name) {
                (Some(pid), Some(name)) => format!("pid {pid} ({name})"),
                (Some(pid), None) => format!("pid {pid}"),
                (None, _) => "no process".to_string(),
            };
            let summary = format!(
                "XID {xid} on GPU {gpu_id} of {}: {count} record(s) within {}; action: {}",
                self.instance,
                human(rule.window),
                last.action
            );
            let description = format!(
                "The last named {process} in cgroup {cgroup}: {}",
                last.detail
            );
            let annotations: Map = [
                ("summary".to_string(), summary),
                ("description".to_string(), description),
            ]
            .into();
            self.alerts.set(
                labels,
                annotations,
                count >= rule.count,
                Duration::ZERO,
                now,
            );
        }
    }
}

impl Engine {
    /// What NVML reads that needs a person: uncorrectable ECC errors since the driver
    /// loaded, a failed row remap, a recovery action other than none. Each fires while
    /// the reading holds, per GPU (labels gpu, index, uuid; the action for the last).
    fn device_rules(&mut self, gpu: &GpuModel, now: SystemTime) {
        for d in &gpu.devices {
            let index = d.index.to_string();
            let ids = [("gpu", &*d.gpu), ("index", &index), ("uuid", &*d.uuid)];
            let uncorrected = d
                .ecc_errors
                .iter()
                .find(|(e, c, _)| *e == "uncorrected" && *c == "volatile")
                .map_or(0, |(_, _, n)| *n);
            let l = self.labels("GpuUncorrectableEccError", "critical", &ids);
            let a: Map = [(
                "summary".to_string(),
                format!(
                    "GPU {} ({}) on {}: {uncorrected} uncorrectable ECC error(s) since the driver loaded (NVML)",
                    d.index, d.gpu, self.instance
                ),
            )]
            .into();
            self.alerts.set(l, a, uncorrected > 0, Duration::ZERO, now);

            let l = self.labels("GpuRowRemapFailure", "critical", &ids);
            let a: Map = [(
                "summary".to_string(),
                format!(
                    "GPU {} ({}) on {}: a memory row remap failed; the GPU needs service (NVML field 145)",
                    d.index, d.gpu, self.instance
                ),
            )]
            .into();
            let failed = d.remapped_rows.failed == Some(true);
            self.alerts.set(l, a, failed, Duration::ZERO, now);

            if let Some(action) = d.recovery_action.as_deref().filter(|a| *a != "none") {
                let mut labels = ids.to_vec();
                labels.push(("action", action));
                let l = self.labels("GpuRecoveryActionRequired", "critical", &labels);
                let a: Map = [(
                    "summary".to_string(),
                    format!(
                        "GPU {} ({}) on {}: the driver asks for {action} (NVML_FI_DEV_GET_GPU_RECOVERY_ACTION)",
                        d.index, d.gpu, self.instance
                    ),
                )]
                .into();
                self.alerts.set(l, a, true, Duration::ZERO, now);
            }
        }
    }

    /// The GPU fault that preceded `kill`: the latest XID on its pid (or, for a record
    /// naming no process, its cgroup) within `[gpu] kill_cause_window` before it, as
    /// "XID 79 on GPU 0000:3b:00 (reboot-node), 2.0 s before".
    pub(super) fn kill_cause(&self, gpu: &GpuModel, kill: &Kill) -> Option<String> {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(kill.at_ms);
        let x = gpu.xid_before(kill.pid, &kill.cgroup, at, self.gpu.kill_cause_window)?;
        let before = at.duration_since(x.at).unwrap_or_default();
        Some(format!(
            "XID {} on GPU {} ({}), {} before",
            x.xid,
            x.gpu,
            x.action,
            seconds(before)
        ))
    }
}

/// "2.0 s" below a minute, "75 s" above.
fn seconds(d: Duration) -> String {
    if d < Duration::from_secs(60) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} s", d.as_secs())
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::gpu::XidSeen;

    fn seen(xid: u32, action: &'static str, cgroup: &str, at: SystemTime) -> XidSeen {
        XidSeen {
            gpu: Arc::from("0000:3b:00"),
            xid,
            action,
            cgroup: Arc::from(cgroup),
            pid: Some(42),
            name: Some("python3".into()),
            detail: "d".into(),
            at,
        }
    }

    fn engine(config: &str, dir: &std::path::Path) -> Engine {
        super::super::test_engine(config, dir)
    }

    fn firing(e: &Engine) -> Vec<Vec<(String, String)>> {
        e.firing()
            .into_iter()
            .map(|l| l.into_iter().filter(|(k, _)| k != "instance").collect())
            .collect()
    }

    #[test]
    fn xids_fire_per_gpu_and_cgroup_at_their_count_within_their_window() {
        let dir = std::env::temp_dir().join(format!("gimbal-rules-gpu-{}", std::process::id()));
        let mut e = engine(
            "[[gpu.rules]]\nxids = [13]\ncount = 2\nwindow = \"1m\"\n",
            &dir,
        );
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut m = GpuModel::new(10);
        m.apply_xid(seen(79, "reboot-node", "unknown", t0));
        m.apply_xid(seen(13, "restart-application", "pod-a", t0));
        m.apply_xid(seen(63, "none", "pod-a", t0));
        e.gpu_rules(&m, t0);
        e.alerts.sweep(t0);
        let s = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            firing(&e),
            vec![s(&[
                ("action", "reboot-node"),
                ("alertname", "GpuFallenOffBus"),
                ("cgroup", "unknown"),
                ("gpu", "0000:3b:00"),
                ("severity", "critical"),
                ("xid", "79"),
            ])],
            "79 at once; 13 waits for its second record; 63 (none) never"
        );
        // A second 13 in another cgroup does not add up with pod-a's.
        m.apply_xid(seen(
            13,
            "restart-application",
            "pod-b",
            t0 + Duration::from_secs(10),
        ));
        e.gpu_rules(&m, t0 + Duration::from_secs(10));
        e.alerts.sweep(t0 + Duration::from_secs(10));
        assert_eq!(firing(&e).len(), 1);
        m.apply_xid(seen(
            13,
            "restart-application",
            "pod-a",
            t0 + Duration::from_secs(30),
        ));
        e.gpu_rules(&m, t0 + Duration::from_secs(30));
        e.alerts.sweep(t0 + Duration::from_secs(30));
        let f = firing(&e);
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f.contains(&s(&[
            ("action", "restart-application"),
            ("alertname", "GpuApplicationXid"),
            ("cgroup", "pod-a"),
            ("gpu", "0000:3b:00"),
            ("severity", "warning"),
            ("xid", "13"),
        ])));
        // Past the 13's window (1m after its first record) it resolves; 79's is 10m.
        let later = t0 + Duration::from_secs(61);
        e.gpu_rules(&m, later);
        e.alerts.sweep(later);
        let f = firing(&e);
        assert_eq!(f.len(), 1, "{f:?}");
        let much_later = t0 + Duration::from_secs(601);
        e.gpu_rules(&m, much_later);
        e.alerts.sweep(much_later);
        assert!(firing(&e).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_kill_names_the_xid_on_its_process_within_the_window() {
        let dir = std::env::temp_dir().join(format!("gimbal-rules-kill-{}", std::process::id()));
        let e = engine("[gpu]\nkill_cause_window = \"30s\"\n", &dir);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut m = GpuModel::new(10);
        m.apply_xid(seen(79, "reboot-node", "job", t0));
        let kill = |pid, after_ms: u64| Kill {
            at_ms: 1_000_000_000 + after_ms,
            reason: "signaled".into(),
            code: "SIGKILL".into(),
            pid,
            cgroup: "job".into(),
        };
        assert_eq!(
            e.kill_cause(&m, &kill(42, 2_000)).as_deref(),
            Some("XID 79 on GPU 0000:3b:00 (reboot-node), 2.0 s before")
        );
        assert_eq!(e.kill_cause(&m, &kill(43, 2_000)), None, "another process");
        assert_eq!(e.kill_cause(&m, &kill(42, 31_000)), None, "past the window");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn nvml_readings_fire_for_uncorrectable_ecc_a_failed_remap_and_a_recovery_action() {
        use crate::model::gpu_devices::{Device, RemappedRows};
        let dir = std::env::temp_dir().join(format!("gimbal-rules-nvml-{}", std::process::id()));
        let mut e = engine("", &dir);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let healthy = Device {
            gpu: Arc::from("0000:3b:00"),
            index: 0,
            uuid: Arc::from("GPU-a"),
            ecc_errors: vec![
                ("uncorrected", "volatile", 0),
                ("uncorrected", "aggregate", 5),
            ],
            remapped_rows: RemappedRows {
                failed: Some(false),
                ..Default::default()
            },
            recovery_action: Some(Arc::from("none")),
            ..Default::default()
        };
        let mut m = GpuModel::new(10);
        m.devices = vec![healthy.clone()];
        e.gpu_rules(&m, t0);
        e.alerts.sweep(t0);
        assert!(
            firing(&e).is_empty(),
            "aggregate errors of the GPU's past do not fire"
        );
        let mut sick = healthy;
        sick.ecc_errors[0].2 = 1;
        sick.remapped_rows.failed = Some(true);
        sick.recovery_action = Some(Arc::from("gpu_reset"));
        m.devices = vec![sick];
        e.gpu_rules(&m, t0);
        e.alerts.sweep(t0);
        let names: Vec<String> = firing(&e)
            .iter()
            .map(|l| l.iter().find(|(k, _)| k == "alertname").unwrap().1.clone())
            .collect();
        assert_eq!(
            names,
            [
                "GpuRecoveryActionRequired",
                "GpuRowRemapFailure",
                "GpuUncorrectableEccError"
            ]
        );
        assert!(firing(&e)[0].contains(&("action".to_string(), "gpu_reset".to_string())));
        assert!(firing(&e)[0].contains(&("uuid".to_string(), "GPU-a".to_string())));
        // Healthy again (a reset): all three resolve.
        m.devices[0].ecc_errors[0].2 = 0;
        m.devices[0].remapped_rows.failed = Some(false);
        m.devices[0].recovery_action = Some(Arc::from("none"));
        e.gpu_rules(&m, t0 + Duration::from_secs(1));
        e.alerts.sweep(t0 + Duration::from_secs(1));
        assert!(firing(&e).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
