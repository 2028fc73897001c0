//! The GPU source: NVIDIA XIDs from the kernel log (`kmsg.rs`, a thread of its own with
//! blocking reads) and NVML where the driver's library is installed (`nvml.rs`). Both
//! report over one channel to run.rs, which folds their events into the snapshot's
//! `GpuModel`, as it does the probes' exit events; the rules count recent XIDs there.
//! `xid.rs` parses the driver's line, `catalog.rs` says what each XID calls for.
pub mod catalog;
pub mod kmsg;
pub mod nvml;
pub mod readings;
pub mod xid;

use std::{sync::Arc, time::SystemTime};

use crate::model::gpu::XidSeen;

pub use catalog::Catalog;

/// The source names of `gimbal_gpu_source_attached{source}`.
pub const KMSG: &str = "kmsg";
pub const NVML: &str = "nvml";

/// What the GPU sources report.
#[derive(Debug, Clone, PartialEq)]
pub enum GpuEvent {
    /// An XID record, attributed to the cgroup of its pid.
    Xid(XidRecord),
    /// Kernel log records lost (overwritten before they were read) since the last report.
    Dropped(u64),
    /// Kernel log records that did not parse, since the last report.
    Malformed(u64),
    /// NVML's readings of every GPU it could open (replacing the last).
    Devices(Vec<crate::model::gpu_devices::Device>),
    /// An XID event from NVML (nvmlEventTypeXidCriticalError; 0 when it gave none).
    NvmlXid { gpu: Arc<str>, xid: u32 },
    /// An ECC event from NVML: "single_bit" or "double_bit".
    NvmlEcc { gpu: Arc<str>, kind: &'static str },
    /// A source is attached (true) or not (false: its reason is in the log).
    Attached {
        source: &'static str,
        attached: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XidRecord {
    pub xid: xid::Xid,
    /// The cgroup of `xid.pid` when the record was read ("unknown" without one).
    pub cgroup: Arc<str>,
    /// When the kernel logged it (wall clock, from the record's boot-relative time).
    pub at: SystemTime,
}

impl XidRecord {
    /// A record that names no process is the GPU's: where NVML shows exactly one cgroup
    /// holding that GPU (the usual training node: a pod per GPU), it is that cgroup's.
    /// With several holders, or without NVML, it stays `unknown`.
    pub fn attribute_to_holder(&mut self, devices: &[crate::model::gpu_devices::Device]) {
        if self.xid.pid.is_some() || &*self.cgroup != "unknown" {
            return;
        }
        let Some(d) = devices.iter().find(|d| *d.gpu == *self.xid.gpu) else {
            return;
        };
        let mut holders = d
            .holders
            .iter()
            .filter(|h| !matches!(&*h.cgroup, "unknown" | crate::model::OTHER));
        if let (Some(only), None) = (holders.next(), holders.next()) {
            self.cgroup = only.cgroup.clone();
        }
    }

    /// The record as the model counts it, with the action `catalog` gives its XID.
    pub fn seen(&self, catalog: &Catalog) -> XidSeen {
        XidSeen {
            gpu: Arc::from(self.xid.gpu.as_str()),
            xid: self.xid.xid,
            action: catalog.action(self.xid.xid).name(),
            cgroup: self.cgroup.clone(),
            pid: self.xid.pid,
            name: self.xid.name.clone(),
            detail: self.xid.detail.clone(),
            at: self.at,
        }
    }
}

/// The sending end the sources report through (batches, bounded).
pub type Reports = tokio::sync::mpsc::Sender<Vec<GpuEvent>>;

/// Capacity of the report channel, in batches; a full channel makes the kmsg thread wait
/// (the kernel holds the records meanwhile, and counts what it overwrites).
pub const CHANNEL_BATCHES: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gpu_devices::{Device, Holder};

    fn record(pid: Option<u32>, cgroup: &str) -> XidRecord {
        XidRecord {
            xid: xid::parse(&match pid {
                Some(p) => format!("NVRM: Xid (PCI:0000:3b:00): 79, pid={p}, name=x, y"),
                None => "NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, y".into(),
            })
            .unwrap(),
            cgroup: Arc::from(cgroup),
            at: SystemTime::UNIX_EPOCH,
        }
    }

    fn gpu(holders: &[&str]) -> Device {
        Device {
            gpu: Arc::from("0000:3b:00"),
            holders: holders
                .iter()
                .map(|c| Holder {
                    cgroup: Arc::from(*c),
                    processes: 1,
                    memory_bytes: None,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_gpu_wide_xid_goes_to_the_one_cgroup_holding_that_gpu() {
        let attributed = |r: XidRecord, devices: &[Device]| {
            let mut r = r;
            r.attribute_to_holder(devices);
            r.cgroup.to_string()
        };
        assert_eq!(
            attributed(record(None, "unknown"), &[gpu(&["pod-a", "unknown"])]),
            "pod-a"
        );
        assert_eq!(
            attributed(record(None, "unknown"), &[gpu(&["pod-a", "pod-b"])]),
            "unknown"
        );
        assert_eq!(
            attributed(record(None, "unknown"), &[]),
            "unknown",
            "no NVML"
        );
        let mut other_bus = gpu(&["pod-a"]);
        other_bus.gpu = Arc::from("0000:86:00");
        assert_eq!(attributed(record(None, "unknown"), &[other_bus]), "unknown");
        assert_eq!(
            attributed(record(Some(7), "unknown"), &[gpu(&["pod-a"])]),
            "unknown",
            "a named process that was gone is not the holder's"
        );
        assert_eq!(
            attributed(record(Some(7), "pod-b"), &[gpu(&["pod-a"])]),
            "pod-b"
        );
    }
}
