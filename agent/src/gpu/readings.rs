//! NVML's raw answers for one GPU, as plain values (`nvml.rs` fills them, one call each),
//! and the pure mapping from them to the model's `Device`: units (mW to W, % to a
//! fraction), the bus id in the kernel log's form, field values 142-145 and 230 decoded,
//! the throttle bitmask named, processes joined to their cgroups. A call the driver
//! refuses leaves its reading absent and says why, for the poller to log once.
use std::sync::Arc;

use crate::model::gpu_devices::{Device, Holder, MigInstance, RemappedRows};

/// One NVML call's answer: the value, or why there is none.
pub type Read<T> = Result<T, String>;

/// Field ids (nvml.h): rows remapped for correctable / uncorrectable errors, a remap
/// pending, a remap failed; the driver's recovery action.
pub const FI_REMAPPED_COR: u32 = 142;
pub const FI_REMAPPED_UNC: u32 = 143;
pub const FI_REMAPPED_PENDING: u32 = 144;
pub const FI_REMAPPED_FAILURE: u32 = 145;
pub const FI_RECOVERY_ACTION: u32 = 230;
/// The fields read per poll, in one nvmlDeviceGetFieldValues call.
pub const FIELDS: [u32; 5] = [
    FI_REMAPPED_COR,
    FI_REMAPPED_UNC,
    FI_REMAPPED_PENDING,
    FI_REMAPPED_FAILURE,
    FI_RECOVERY_ACTION,
];

/// nvmlClocksThrottleReason* bits and the names /metrics gives them.
pub const THROTTLE_REASONS: [(u64, &str); 9] = [
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
];

/// What NVML said about one GPU.
#[derive(Debug, Clone)]
pub struct RawDevice {
    pub index: u32,
    pub uuid: String,
    /// nvmlPciInfo_t: domain, bus, device.
    pub pci: (u32, u32, u32),
    pub name: Read<String>,
    /// nvmlDeviceGetMigMode: current mode enabled.
    pub mig: Read<bool>,
    pub temperature_c: Read<u32>,
    pub power_mw: Read<u32>,
    /// nvmlDeviceGetEnforcedPowerLimit, mW.
    pub power_limit_mw: Read<u32>,
    /// nvmlDeviceGetUtilizationRates: (gpu %, memory %).
    pub utilization: Read<(u32, u32)>,
    /// nvmlDeviceGetMemoryInfo: (used, total) bytes.
    pub memory: Read<(u64, u64)>,
    pub ecc_enabled: Read<bool>,
    /// nvmlDeviceGetTotalEccErrors per (error, counter).
    pub ecc: Vec<(&'static str, &'static str, Read<u64>)>,
    /// nvmlDeviceGetRetiredPages per cause: the number of pages.
    pub retired: Vec<(&'static str, Read<u64>)>,
    pub retired_pending: Read<bool>,
    /// nvmlDeviceGetFieldValues for FIELDS: (field id, value).
    pub fields: Vec<(u32, Read<i64>)>,
    pub pcie_replays: Read<u32>,
    /// nvmlDeviceGetNvLinkErrorCounter per active link and counter.
    pub nvlink: Vec<(u32, &'static str, Read<u64>)>,
    pub throttle: Read<u64>,
    /// nvmlDeviceGetComputeRunningProcesses: (pid, used GPU memory where known).
    pub processes: Read<Vec<(u32, Option<u64>)>>,
    /// The MIG instances, where MIG is enabled (empty otherwise).
    pub mig_instances: Read<Vec<RawMig>>,
}

/// One MIG instance (nvmlDeviceGetMigDeviceHandleByIndex) and what NVML said of it.
#[derive(Debug, Clone)]
pub struct RawMig {
    pub index: u32,
    pub uuid: Read<String>,
    /// nvmlDeviceGetMemoryInfo on the instance: (used, total) bytes.
    pub memory: Read<(u64, u64)>,
    /// nvmlDeviceGetComputeRunningProcesses on the instance.
    pub processes: Read<Vec<(u32, Option<u64>)>>,
}

/// MIG instances kept per GPU (an H100/H200 has at most 7).
pub const MAX_MIG: u32 = 16;

/// The longest product name kept (NVML's buffer is 96 bytes).
const MAX_NAME: usize = 96;

/// Cgroups listed per GPU at most; more fold into `other`.
pub const MAX_HOLDERS: usize = 64;

/// The bus id as the NVIDIA driver prints it in an XID record: `%04x:%02x:%02x`.
pub fn bus_id(domain: u32, bus: u32, device: u32) -> String {
    format!("{domain:04x}:{bus:02x}:{device:02x}")
}

/// The model's view of `raw`, and (reading, why) for each reading that is absent.
/// `cgroup_of` names the cgroup of a pid ("unknown" when it cannot be read).
pub fn device(
    raw: &RawDevice,
    cgroup_of: impl Fn(u32) -> Arc<str>,
) -> (Device, Vec<(String, String)>) {
    let mut absent = Vec::new();
    let mut d = Device {
        gpu: Arc::from(bus_id(raw.pci.0, raw.pci.1, raw.pci.2)),
        index: raw.index,
        uuid: Arc::from(raw.uuid.as_str()),
        ..Device::default()
    };
    d.name = got(&mut absent, "name", &raw.name)
        .map(|n| n.chars().take(MAX_NAME).collect())
        .unwrap_or_default();
    d.mig = match &raw.mig {
        Ok(true) => "enabled",
        Ok(false) => "disabled",
        Err(_) => "", // most GPUs have no MIG: not worth a log line
    };
    d.temperature_celsius = got(&mut absent, "temperature", &raw.temperature_c).map(f64::from);
    d.power_watts = got(&mut absent, "power", &raw.power_mw).map(|mw| f64::from(mw) / 1000.0);
    d.power_limit_watts =
        got(&mut absent, "power limit", &raw.power_limit_mw).map(|mw| f64::from(mw) / 1000.0);
    if let Some((gpu, mem)) = got(&mut absent, "utilization", &raw.utilization) {
        d.utilization = Some(f64::from(gpu.min(100)) / 100.0);
        d.memory_utilization = Some(f64::from(mem.min(100)) / 100.0);
    }
    if let Some((used, total)) = got(&mut absent, "memory", &raw.memory) {
        d.memory_used_bytes = Some(used);
        d.memory_total_bytes = Some(total);
    }
    d.ecc_enabled = got(&mut absent, "ecc mode", &raw.ecc_enabled);
    for (error, counter, r) in &raw.ecc {
        if let Some(n) = got(&mut absent, &format!("ecc {error} {counter}"), r) {
            d.ecc_errors.push((error, counter, n));
        }
    }
    for (cause, r) in &raw.retired {
        if let Some(n) = got(&mut absent, &format!("retired pages {cause}"), r) {
            d.retired_pages.push((cause, n));
        }
    }
    d.retired_pages_pending = got(&mut absent, "retired pages pending", &raw.retired_pending);
    let field = |absent: &mut Vec<(String, String)>, id: u32| -> Option<i64> {
        match raw.fields.iter().find(|(f, _)| *f == id) {
            Some((_, r)) => got(absent, &format!("field {id}"), r),
            None => None,
        }
    };
    let count = |v: i64| u64::try_from(v).ok();
    d.remapped_rows = RemappedRows {
        correctable: field(&mut absent, FI_REMAPPED_COR).and_then(count),
        uncorrectable: field(&mut absent, FI_REMAPPED_UNC).and_then(count),
        pending: field(&mut absent, FI_REMAPPED_PENDING).map(|v| v != 0),
        failed: field(&mut absent, FI_REMAPPED_FAILURE).map(|v| v != 0),
    };
    d.recovery_action = field(&mut absent, FI_RECOVERY_ACTION).map(recovery_action);
    d.pcie_replays = got(&mut absent, "pcie replays", &raw.pcie_replays).map(u64::from);
    for (link, error, r) in &raw.nvlink {
        if let Some(n) = got(&mut absent, &format!("nvlink {link} {error}"), r) {
            d.nvlink_errors.push((*link, error, n));
        }
    }
    if let Some(bits) = got(&mut absent, "throttle reasons", &raw.throttle) {
        d.throttle_read = true;
        d.throttle_reasons = THROTTLE_REASONS
            .iter()
            .filter(|(bit, _)| bits & bit != 0)
            .map(|(_, name)| *name)
            .collect();
    }
    if let Some(procs) = got(&mut absent, "processes", &raw.processes) {
        d.holders = holders(&procs, &cgroup_of);
    }
    for m in got(&mut absent, "mig instances", &raw.mig_instances).unwrap_or_default() {
        let what = |r: &str| format!("mig {} {r}", m.index);
        let memory = got(&mut absent, &what("memory"), &m.memory);
        d.mig_instances.push(MigInstance {
            index: m.index,
            uuid: Arc::from(got(&mut absent, &what("uuid"), &m.uuid).unwrap_or_default()),
            memory_used_bytes: memory.map(|(used, _)| used),
            memory_total_bytes: memory.map(|(_, total)| total),
            holders: got(&mut absent, &what("processes"), &m.processes)
                .map(|p| holders(&p, &cgroup_of))
                .unwrap_or_default(),
        });
    }
    (d, absent)
}

/// The value of `r`, or None with (what, why) noted.
fn got<T: Clone>(absent: &mut Vec<(String, String)>, what: &str, r: &Read<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v.clone()),
        Err(why) => {
            absent.push((what.to_string(), why.clone()));
            None
        }
    }
}

/// nvmlDeviceGpuRecoveryAction_t as a label value.
pub fn recovery_action(v: i64) -> Arc<str> {
    Arc::from(match v {
        0 => "none",
        1 => "gpu_reset",
        2 => "node_reboot",
        3 => "drain_p2p",
        4 => "drain_and_reset",
        n => return Arc::from(format!("unknown_{}", n.clamp(-1, 9999))),
    })
}

/// Processes grouped by cgroup: (cgroup, how many, their GPU memory where every one of
/// them reported it).
fn holders(procs: &[(u32, Option<u64>)], cgroup_of: &impl Fn(u32) -> Arc<str>) -> Vec<Holder> {
    let mut by: std::collections::BTreeMap<Arc<str>, (u64, Option<u64>)> = Default::default();
    for (pid, mem) in procs {
        let e = by.entry(cgroup_of(*pid)).or_insert((0, Some(0)));
        e.0 += 1;
        e.1 = e.1.zip(*mem).map(|(a, b)| a.saturating_add(b));
    }
    if by.len() > MAX_HOLDERS {
        // Past the cap, the rest fold into `other` (the totals stay whole).
        let rest: Vec<Arc<str>> = by.keys().skip(MAX_HOLDERS - 1).cloned().collect();
        let mut other = (0, Some(0));
        for k in rest {
            let (n, m) = by.remove(&k).expect("listed");
            other.0 += n;
            other.1 = other.1.zip(m).map(|(a, b): (u64, u64)| a.saturating_add(b));
        }
        by.insert(Arc::from(crate::model::OTHER), other);
    }
    by.into_iter()
        .map(|(cgroup, (processes, memory_bytes))| Holder {
            cgroup,
            processes,
            memory_bytes,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawDevice {
        RawDevice {
            index: 1,
            uuid: "GPU-8d5c2b47-0000-1111-2222-333344445555".into(),
            pci: (0, 0x3b, 0),
            name: Ok("NVIDIA H200".into()),
            mig: Ok(false),
            temperature_c: Ok(41),
            power_mw: Ok(123_456),
            power_limit_mw: Ok(700_000),
            utilization: Ok((87, 140)),
            memory: Ok((1 << 30, 141 << 30)),
            ecc_enabled: Ok(true),
            ecc: vec![
                ("uncorrected", "volatile", Ok(2)),
                ("corrected", "aggregate", Err("Not supported".into())),
            ],
            retired: vec![("double_bit", Ok(1))],
            retired_pending: Ok(false),
            fields: vec![
                (FI_REMAPPED_COR, Ok(3)),
                (FI_REMAPPED_UNC, Ok(-1)),
                (FI_REMAPPED_FAILURE, Ok(1)),
                (FI_RECOVERY_ACTION, Ok(2)),
            ],
            pcie_replays: Ok(7),
            nvlink: vec![(0, "crc_flit", Ok(9))],
            throttle: Ok(0x4 | 0x40 | 0x8000),
            processes: Ok(vec![
                (10, Some(100)),
                (11, Some(50)),
                (12, None),
                (13, Some(5)),
            ]),
            mig_instances: Ok(Vec::new()),
        }
    }

    #[test]
    fn mig_instances_keep_their_own_memory_and_holders() {
        let mut r = raw();
        r.mig = Ok(true);
        r.mig_instances = Ok(vec![
            RawMig {
                index: 0,
                uuid: Ok("MIG-aaaa".into()),
                memory: Ok((1 << 20, 18 << 30)),
                processes: Ok(vec![(10, Some(7)), (11, Some(8))]),
            },
            RawMig {
                index: 3,
                uuid: Err("Unknown Error".into()),
                memory: Err("Not supported".into()),
                processes: Ok(vec![(12, None)]),
            },
        ]);
        let cgroup = |pid: u32| Arc::from(format!("pod-{pid}").as_str());
        let (d, absent) = device(&r, cgroup);
        assert_eq!(d.mig, "enabled");
        assert_eq!(d.mig_instances.len(), 2);
        let [a, b] = [&d.mig_instances[0], &d.mig_instances[1]];
        assert_eq!((a.index, &*a.uuid), (0, "MIG-aaaa"));
        assert_eq!(
            (a.memory_used_bytes, a.memory_total_bytes),
            (Some(1 << 20), Some(18 << 30))
        );
        assert_eq!(
            a.holders
                .iter()
                .map(|h| (&*h.cgroup, h.processes, h.memory_bytes))
                .collect::<Vec<_>>(),
            vec![("pod-10", 1, Some(7)), ("pod-11", 1, Some(8))]
        );
        assert_eq!((b.index, &*b.uuid, b.memory_used_bytes), (3, "", None));
        assert_eq!(b.holders[0].cgroup.as_ref(), "pod-12");
        assert!(absent.contains(&("mig 3 uuid".into(), "Unknown Error".into())));
        assert!(absent.contains(&("mig 3 memory".into(), "Not supported".into())));
    }

    #[test]
    fn readings_map_to_the_model_in_base_units() {
        let cgroup = |pid: u32| {
            Arc::from(if pid < 12 {
                "kubepods/pod-a"
            } else {
                "unknown"
            })
        };
        let (d, absent) = device(&raw(), cgroup);
        assert_eq!(
            &*d.gpu, "0000:3b:00",
            "the kernel log's form, joinable with XIDs"
        );
        assert_eq!(
            (d.index, d.name.as_str(), d.mig),
            (1, "NVIDIA H200", "disabled")
        );
        assert_eq!(d.temperature_celsius, Some(41.0));
        assert_eq!(d.power_watts, Some(123.456));
        assert_eq!(d.power_limit_watts, Some(700.0));
        assert_eq!(
            (d.utilization, d.memory_utilization),
            (Some(0.87), Some(1.0))
        );
        assert_eq!(d.memory_total_bytes, Some(141 << 30));
        assert_eq!(d.ecc_errors, vec![("uncorrected", "volatile", 2)]);
        assert_eq!(d.retired_pages, vec![("double_bit", 1)]);
        assert_eq!(
            d.remapped_rows,
            RemappedRows {
                correctable: Some(3),
                uncorrectable: None, // a negative count is no count
                pending: None,       // not read: absent, not false
                failed: Some(true),
            }
        );
        assert_eq!(d.recovery_action.as_deref(), Some("node_reboot"));
        assert_eq!(d.pcie_replays, Some(7));
        assert_eq!(d.nvlink_errors, vec![(0, "crc_flit", 9)]);
        assert_eq!(
            d.throttle_reasons,
            vec!["sw_power_cap", "hw_thermal_slowdown"],
            "unknown bits dropped"
        );
        assert_eq!(
            d.holders,
            vec![
                Holder {
                    cgroup: Arc::from("kubepods/pod-a"),
                    processes: 2,
                    memory_bytes: Some(150)
                },
                Holder {
                    cgroup: Arc::from("unknown"),
                    processes: 2,
                    memory_bytes: None
                },
            ]
        );
        assert_eq!(
            absent,
            vec![(
                "ecc corrected aggregate".to_string(),
                "Not supported".to_string()
            )]
        );
        let mut long = raw();
        long.name = Ok("é".repeat(500));
        assert_eq!(device(&long, cgroup).0.name.chars().count(), MAX_NAME);
    }

    #[test]
    fn a_driver_that_refuses_everything_leaves_every_reading_absent() {
        let no = || Err::<u32, String>("Not supported".into());
        let r = RawDevice {
            index: 0,
            uuid: "GPU-x".into(),
            pci: (0x10000, 0xff, 0x1f),
            name: Err("x".into()),
            mig: Err("Not supported".into()),
            temperature_c: no(),
            power_mw: no(),
            power_limit_mw: no(),
            utilization: Err("x".into()),
            memory: Err("x".into()),
            ecc_enabled: Err("x".into()),
            ecc: vec![],
            retired: vec![],
            retired_pending: Err("x".into()),
            fields: vec![
                (FI_RECOVERY_ACTION, Err("Not supported".into())),
                (FI_REMAPPED_COR, Ok(0)),
            ],
            pcie_replays: no(),
            nvlink: vec![],
            throttle: Err("x".into()),
            processes: Err("x".into()),
            mig_instances: Err("x".into()),
        };
        let (d, absent) = device(&r, |_| Arc::from("unknown"));
        assert_eq!(&*d.gpu, "10000:ff:1f");
        assert_eq!(d.mig, "");
        assert!(
            d.temperature_celsius.is_none()
                && d.power_watts.is_none()
                && d.power_limit_watts.is_none()
                && d.recovery_action.is_none()
        );
        assert!(d.holders.is_empty() && d.throttle_reasons.is_empty());
        assert_eq!(d.remapped_rows.correctable, Some(0));
        assert_eq!(absent.len(), 13, "{absent:?}");
        assert!(absent.contains(&("power limit".into(), "Not supported".into())));
        assert!(absent.contains(&("field 230".into(), "Not supported".into())));
        assert_eq!(recovery_action(99).as_ref(), "unknown_99");
        assert_eq!(recovery_action(i64::MIN).as_ref(), "unknown_-1");
    }
}
