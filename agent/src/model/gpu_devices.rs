//! What NVML last read of each GPU: gauges as read, and the driver's own cumulative
//! counters (ECC, PCIe replays, NVLink errors) as it keeps them (they restart at a driver
//! reload, which Prometheus' rate() takes as a counter reset). Replaced whole at each
//! poll; a reading the driver does not have is `None` (absent from /metrics), never 0.
use std::sync::Arc;

/// One GPU (a physical one; its MIG instances, where enabled, in `mig_instances`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Device {
    /// The PCI bus id as the kernel log's XID records print it ("0000:3b:00"), so the
    /// NVML families join the XID counters on `gpu`.
    pub gpu: Arc<str>,
    pub index: u32,
    pub uuid: Arc<str>,
    pub name: String,
    /// "enabled", "disabled", or "" where MIG is not supported.
    pub mig: &'static str,
    pub temperature_celsius: Option<f64>,
    pub power_watts: Option<f64>,
    /// The power limit the driver enforces now (a hung collective draws far below it).
    pub power_limit_watts: Option<f64>,
    /// Fraction of the last sample period a kernel ran (nvmlDeviceGetUtilizationRates.gpu).
    pub utilization: Option<f64>,
    /// Fraction of it device memory was read or written (….memory).
    pub memory_utilization: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub ecc_enabled: Option<bool>,
    /// (error "corrected"/"uncorrected", counter "volatile"/"aggregate", count).
    pub ecc_errors: Vec<(&'static str, &'static str, u64)>,
    /// (cause "single_bit"/"double_bit", pages).
    pub retired_pages: Vec<(&'static str, u64)>,
    pub retired_pages_pending: Option<bool>,
    pub remapped_rows: RemappedRows,
    pub pcie_replays: Option<u64>,
    /// (link, error "replay"/"recovery"/"crc_flit"/"crc_data", count), active links only.
    pub nvlink_errors: Vec<(u32, &'static str, u64)>,
    /// The clock throttle reasons active now (names as in docs/metrics.md).
    pub throttle_reasons: Vec<&'static str>,
    /// Whether the throttle reasons were read (none active is not the same as unknown).
    pub throttle_read: bool,
    /// NVML_FI_DEV_GET_GPU_RECOVERY_ACTION: "none", "gpu_reset", "node_reboot",
    /// "drain_p2p", "drain_and_reset" (or "unknown_<n>").
    pub recovery_action: Option<Arc<str>>,
    /// The cgroups whose processes hold it: (cgroup, processes, GPU memory bytes).
    pub holders: Vec<Holder>,
    /// Its MIG instances (none unless MIG is enabled), each with its own holders.
    pub mig_instances: Vec<MigInstance>,
}

/// One MIG instance of a GPU: a slice with its own memory, held by its own processes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MigInstance {
    /// NVML's index of the instance on its GPU.
    pub index: u32,
    /// "MIG-…" (what CUDA_VISIBLE_DEVICES and the device plugin name it by).
    pub uuid: Arc<str>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub holders: Vec<Holder>,
}

/// Fields 142-145 (nvmlDeviceGetFieldValues): rows remapped for correctable and
/// uncorrectable errors, a remap pending (a GPU reset applies it), a remap that failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemappedRows {
    pub correctable: Option<u64>,
    pub uncorrectable: Option<u64>,
    pub pending: Option<bool>,
    pub failed: Option<bool>,
}

/// A cgroup holding a GPU: its processes on it and the GPU memory they use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Relative to the cgroup2 mount, "/" for the root, "unknown" when the pid was gone.
    pub cgroup: Arc<str>,
    pub processes: u64,
    /// None where the driver does not say (a process of another container, some MIG).
    pub memory_bytes: Option<u64>,
}

/// NVML's events (nvmlEventSetWait), counted per GPU.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NvmlEvents {
    /// (gpu bus id, xid) -> events of nvmlEventTypeXidCriticalError.
    pub xids: std::collections::BTreeMap<(Arc<str>, u32), u64>,
    /// (gpu bus id, "single_bit"/"double_bit") -> ECC events.
    pub ecc: std::collections::BTreeMap<(Arc<str>, &'static str), u64>,
}

/// At most this many distinct (gpu, xid) pairs are kept; a flood folds into xid 0.
pub const MAX_EVENT_SERIES: usize = 1024;

impl NvmlEvents {
    pub fn xid(&mut self, gpu: Arc<str>, xid: u32) {
        let key = if self.xids.len() >= MAX_EVENT_SERIES
            && !self.xids.contains_key(&(gpu.clone(), xid))
        {
            (Arc::from(super::OTHER), 0)
        } else {
            (gpu, xid)
        };
        *self.xids.entry(key).or_default() += 1;
    }

    pub fn ecc(&mut self, gpu: Arc<str>, kind: &'static str) {
        let key =
            if self.ecc.len() >= MAX_EVENT_SERIES && !self.ecc.contains_key(&(gpu.clone(), kind)) {
                (Arc::from(super::OTHER), kind)
            } else {
                (gpu, kind)
            };
        *self.ecc.entry(key).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_counts_stay_bounded() {
        let mut e = NvmlEvents::default();
        for i in 0..(MAX_EVENT_SERIES as u32 + 10) {
            e.xid(Arc::from(format!("{i:04x}:00:00")), 79);
        }
        e.xid(Arc::from("0000:00:00"), 79);
        assert_eq!(e.xids.len(), MAX_EVENT_SERIES + 1);
        assert_eq!(e.xids[&(Arc::from(crate::model::OTHER), 0)], 10);
        assert_eq!(e.xids[&(Arc::from("0000:00:00"), 79)], 2);
    }
}
