//! The node's own verdict: a GPU whose last XIDs call for a reset or a reboot means the
//! node drains (hardware faults are not a weight), for `gpu_window` after the record; so
//! does a GPU whose driver asks for a recovery action (NVML field 230), while it asks.
use std::time::{Duration, SystemTime};

use super::{State, Verdict};
use crate::model::gpu::GpuModel;

/// The catalog actions that drain the node.
const DRAINING_ACTIONS: [&str; 3] = ["reset-gpu", "reboot-node", "restart-vm"];

pub fn verdict(gpu: &GpuModel, window: Duration, now: SystemTime) -> Verdict {
    let asked = gpu.devices.iter().find_map(|d| {
        let action = d.recovery_action.as_deref().filter(|a| *a != "none")?;
        Some(format!("GPU {} recovery action {action} (NVML)", d.gpu))
    });
    if let Some(reason) = asked {
        return Verdict::new(State::Drain, 0, reason);
    }
    let fault = gpu.recent.iter().rev().find(|x| {
        DRAINING_ACTIONS.contains(&x.action)
            && now.duration_since(x.at).unwrap_or_default() <= window
    });
    match fault {
        Some(x) => Verdict::new(
            State::Drain,
            0,
            format!("GPU {} XID {} ({})", x.gpu, x.xid, x.action),
        ),
        None => Verdict::up(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::gpu::XidSeen;

    fn xid(xid: u32, action: &'static str, at: SystemTime) -> XidSeen {
        XidSeen {
            gpu: Arc::from("0000:3b:00"),
            xid,
            action,
            cgroup: Arc::from("unknown"),
            pid: None,
            name: None,
            detail: String::new(),
            at,
        }
    }

    #[test]
    fn a_gpu_that_needs_a_reset_drains_the_node_for_the_window() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let window = Duration::from_secs(600);
        let mut gpu = GpuModel::new(10);
        gpu.apply_xid(xid(13, "restart-application", t0));
        assert_eq!(
            verdict(&gpu, window, t0).state,
            State::Up,
            "an application XID is not the node's"
        );
        gpu.apply_xid(xid(79, "reboot-node", t0));
        let v = verdict(&gpu, window, t0 + Duration::from_secs(60));
        assert_eq!((v.state, v.weight), (State::Drain, 0));
        assert_eq!(v.reason, "GPU 0000:3b:00 XID 79 (reboot-node)");
        assert_eq!(
            verdict(&gpu, window, t0 + Duration::from_secs(601)).state,
            State::Up
        );
    }

    #[test]
    fn a_gpu_whose_driver_asks_for_recovery_drains_the_node_while_it_asks() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut gpu = GpuModel::new(10);
        gpu.devices.push(crate::model::gpu_devices::Device {
            gpu: Arc::from("0000:3b:00"),
            recovery_action: Some(Arc::from("none")),
            ..Default::default()
        });
        assert_eq!(
            verdict(&gpu, Duration::from_secs(600), now).state,
            State::Up
        );
        gpu.devices[0].recovery_action = Some(Arc::from("gpu_reset"));
        let v = verdict(&gpu, Duration::from_secs(600), now);
        assert_eq!((v.state, v.weight), (State::Drain, 0));
        assert_eq!(v.reason, "GPU 0000:3b:00 recovery action gpu_reset (NVML)");
    }
}
