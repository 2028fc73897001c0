//! NVML, NVIDIA's management library, opened at run time (`libnvidia-ml.so.1`, through
//! nvml-wrapper, which dlopens it), so one binary runs on nodes with and without the
//! driver. A node without it reports the source not attached, with the reason logged
//! once, and nothing else changes. Where it is, a thread of its own ("gpu-nvml") reads
//! every GPU each `[gpu] nvml_interval` (`readings.rs` maps the answers to the model), and
//! a second one ("gpu-nvml-events") waits on an event set per GPU for XID and ECC events;
//! both report over the GPU channel and never touch the loop. A reading the driver
//! refuses is absent from /metrics, with the reason logged once per GPU.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use nvml_wrapper::{
    bitmasks::event::EventTypes,
    enum_wrappers::{
        device::{EccCounter, MemoryError, RetirementCause, TemperatureSensor},
        nv_link::ErrorCounter,
    },
    enums::device::UsedGpuMemory,
    enums::{device::SampleValue, event::XidError},
    error::NvmlError,
    struct_wrappers::device::{FieldValueSample, ProcessInfo},
    structs::device::FieldId,
    Device, Nvml,
};

use super::{
    readings::{self, RawDevice, RawMig, Read},
    GpuEvent, Reports, NVML,
};
use crate::host::procfs;

/// NVML_NVLINK_MAX_LINKS.
const MAX_LINKS: u32 = 18;
/// How long one event set is waited on before the next GPU's.
const EVENT_WAIT_MS: u32 = 100;

/// What opening NVML found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// NVML initialised: its driver version and GPU count.
    Attached { driver: String, gpus: u32 },
    /// Why not (the library is absent, the driver not loaded, ...).
    Absent(String),
}

/// Tries to open and initialise NVML (a dlopen and nvmlInit: run once, at start, off the
/// loop).
pub fn probe() -> Probe {
    match Nvml::init() {
        Ok(nvml) => describe(&nvml),
        Err(e) => Probe::Absent(why(&e)),
    }
}

fn describe(nvml: &Nvml) -> Probe {
    let driver = nvml
        .sys_driver_version()
        .unwrap_or_else(|e| format!("unknown ({e})"));
    match nvml.device_count() {
        Ok(gpus) => Probe::Attached { driver, gpus },
        Err(e) => Probe::Absent(format!("NVML has no device count: {}", why(&e))),
    }
}

fn why(e: &NvmlError) -> String {
    match e {
        NvmlError::LibloadingError(inner) => {
            format!("libnvidia-ml.so.1 cannot be loaded (no NVIDIA driver on this node?): {inner}")
        }
        NvmlError::DriverNotLoaded => "the NVIDIA kernel driver is not loaded".into(),
        NvmlError::LibraryNotFound => "libnvidia-ml.so.1 not found".into(),
        e => e.to_string(),
    }
}

/// The event that reports `probe`, logging it once.
pub fn report(probe: &Probe) -> GpuEvent {
    let attached = match probe {
        Probe::Attached { driver, gpus } => {
            tracing::info!(driver, gpus, "GPU source nvml attached");
            true
        }
        Probe::Absent(why) => {
            tracing::info!("GPU source nvml not attached: {why}");
            false
        }
    };
    GpuEvent::Attached {
        source: NVML,
        attached,
    }
}

/// Starts the NVML thread: it opens NVML, reports whether it is attached, then polls
/// every `interval` and waits for events until the agent stops. Returns whether the
/// thread started.
pub fn start(interval: Duration, reports: Reports) -> bool {
    let thread_reports = reports.clone();
    let spawned = std::thread::Builder::new()
        .name("gpu-nvml".into())
        .spawn(move || run(interval, &thread_reports));
    if let Err(e) = &spawned {
        tracing::error!(error = %e, "GPU source nvml not attached: cannot start its thread");
        let _ = reports.try_send(vec![report(&Probe::Absent("no thread".into()))]);
    }
    spawned.is_ok()
}

fn run(interval: Duration, reports: &Reports) {
    let nvml = match Nvml::init() {
        Ok(n) => n,
        Err(e) => {
            let _ = reports.blocking_send(vec![report(&Probe::Absent(why(&e)))]);
            return;
        }
    };
    let probe = describe(&nvml);
    let attached = matches!(probe, Probe::Attached { .. });
    if reports.blocking_send(vec![report(&probe)]).is_err() || !attached {
        return;
    }
    let stop = AtomicBool::new(false);
    let proc_root = PathBuf::from(procfs::ROOT);
    std::thread::scope(|scope| {
        let events = std::thread::Builder::new()
            .name("gpu-nvml-events".into())
            .spawn_scoped(scope, || events(&nvml, reports, &stop));
        if let Err(e) = events {
            tracing::error!(error = %e, "NVML events are not read: cannot start their thread");
        }
        let mut logged = BTreeSet::new();
        loop {
            let started = Instant::now();
            let devices = poll(&nvml, &proc_root, &mut logged);
            if reports
                .blocking_send(vec![GpuEvent::Devices(devices)])
                .is_err()
            {
                break; // the agent is stopping
            }
            std::thread::sleep(interval.saturating_sub(started.elapsed()));
        }
        stop.store(true, Ordering::Relaxed);
    });
}

/// Reads every GPU once; a GPU NVML cannot open is left out, logged once.
fn poll(
    nvml: &Nvml,
    proc_root: &Path,
    logged: &mut BTreeSet<(u32, String)>,
) -> Vec<crate::model::gpu_devices::Device> {
    let count = nvml.device_count().unwrap_or(0);
    let mut out = Vec::new();
    for index in 0..count {
        let raw = match nvml.device_by_index(index).and_then(|d| read(&d, index)) {
            Ok(raw) => raw,
            Err(e) => {
                if logged.insert((index, "device".into())) {
                    tracing::warn!(index, error = %e, "NVML cannot open this GPU; it is left out");
                }
                continue;
            }
        };
        let (device, absent) = readings::device(&raw, |pid| cgroup_of(proc_root, pid));
        for (what, reason) in absent {
            if logged.insert((index, what.clone())) {
                tracing::info!(index, uuid = %device.uuid, "NVML reading {what} absent: {reason}");
            }
        }
        out.push(device);
    }
    out
}

/// The cgroup of `pid`, relative to the mount, as the XID records attribute it.
fn cgroup_of(proc_root: &Path, pid: u32) -> Arc<str> {
    procfs::cgroup_v2_path(proc_root, pid)
        .ok()
        .flatten()
        .map(|p| {
            let rel = p.trim_start_matches('/');
            Arc::from(if rel.is_empty() { "/" } else { rel })
        })
        .unwrap_or_else(|| Arc::from("unknown"))
}

fn r<T>(v: Result<T, NvmlError>) -> Read<T> {
    v.map_err(|e| e.to_string())
}

/// One call per reading; the identity (UUID, bus id) must be there.
fn read(d: &Device, index: u32) -> Result<RawDevice, NvmlError> {
    let uuid = d.uuid()?;
    let pci = d.pci_info()?;
    let mig_enabled = d.mig_mode().map(|m| m.current == 1);
    let mig_instances = match mig_enabled {
        Ok(true) => r(mig_instances(d)),
        _ => Ok(Vec::new()),
    };
    let mut ecc = Vec::new();
    for (error, e) in [
        ("corrected", MemoryError::Corrected),
        ("uncorrected", MemoryError::Uncorrected),
    ] {
        for (counter, c) in [
            ("volatile", EccCounter::Volatile),
            ("aggregate", EccCounter::Aggregate),
        ] {
            ecc.push((error, counter, r(d.total_ecc_errors(e, c))));
        }
    }
    let retired = [
        ("single_bit", RetirementCause::MultipleSingleBitEccErrors),
        ("double_bit", RetirementCause::DoubleBitEccError),
    ]
    .into_iter()
    .map(|(name, cause)| (name, r(d.retired_pages(cause).map(|p| p.len() as u64))))
    .collect();
    let ids: Vec<FieldId> = readings::FIELDS.iter().map(|&f| FieldId(f)).collect();
    let fields = match d.field_values_for(&ids) {
        Ok(values) => readings::FIELDS
            .iter()
            .zip(values)
            .map(|(&id, v)| (id, field_value(v)))
            .collect(),
        Err(e) => readings::FIELDS
            .iter()
            .map(|&id| (id, Err(e.to_string())))
            .collect(),
    };
    let mut nvlink = Vec::new();
    for link in 0..MAX_LINKS {
        let l = d.link_wrapper_for(link);
        if !l.is_active().unwrap_or(false) {
            continue;
        }
        for (name, c) in [
            ("replay", ErrorCounter::DlReplay),
            ("recovery", ErrorCounter::DlRecovery),
            ("crc_flit", ErrorCounter::DlCrcFlit),
            ("crc_data", ErrorCounter::DlCrcData),
        ] {
            nvlink.push((link, name, r(l.error_counter(c))));
        }
    }
    Ok(RawDevice {
        index,
        uuid,
        pci: (pci.domain, pci.bus, pci.device),
        name: r(d.name()),
        mig: r(mig_enabled),
        temperature_c: r(d.temperature(TemperatureSensor::Gpu)),
        power_mw: r(d.power_usage()),
        power_limit_mw: r(d.enforced_power_limit()),
        utilization: r(d.utilization_rates().map(|u| (u.gpu, u.memory))),
        memory: r(d.memory_info().map(|m| (m.used, m.total))),
        ecc_enabled: r(d.is_ecc_enabled().map(|m| m.currently_enabled)),
        ecc,
        retired,
        retired_pending: r(d.are_pages_pending_retired()),
        fields,
        pcie_replays: r(d.pcie_replay_counter()),
        nvlink,
        throttle: r(d.current_throttle_reasons().map(|t| t.bits())),
        processes: r(d.running_compute_processes().map(processes)),
        mig_instances,
    })
}

/// The GPU's MIG instances: every index up to its maximum, skipping empty ones.
fn mig_instances(d: &Device) -> Result<Vec<RawMig>, NvmlError> {
    let mut out = Vec::new();
    for i in 0..d.mig_device_count()?.min(readings::MAX_MIG) {
        let m = match d.mig_device_by_index(i) {
            Ok(m) => m,
            Err(NvmlError::NotFound) => continue,
            Err(e) => return Err(e),
        };
        out.push(RawMig {
            index: i,
            uuid: r(m.uuid()),
            memory: r(m.memory_info().map(|x| (x.used, x.total))),
            processes: r(m.running_compute_processes().map(processes)),
        });
    }
    Ok(out)
}

/// (pid, GPU memory where the driver says) of each process.
fn processes(ps: Vec<ProcessInfo>) -> Vec<(u32, Option<u64>)> {
    ps.into_iter()
        .map(|p| {
            let mem = match p.used_gpu_memory {
                UsedGpuMemory::Used(b) => Some(b),
                UsedGpuMemory::Unavailable => None,
            };
            (p.pid, mem)
        })
        .collect()
}

fn field_value(v: Result<FieldValueSample, NvmlError>) -> Read<i64> {
    match v.and_then(|s| s.value) {
        Ok(SampleValue::U32(n)) => Ok(i64::from(n)),
        Ok(SampleValue::U64(n)) => Ok(i64::try_from(n).unwrap_or(i64::MAX)),
        Ok(SampleValue::I64(n)) => Ok(n),
        Ok(SampleValue::F64(f)) => Ok(f as i64),
        Err(e) => Err(e.to_string()),
    }
}

/// Waits on an event set per GPU (one GPU that refuses events costs only its own), and
/// reports XID and ECC events until `stop`.
fn events(nvml: &Nvml, reports: &Reports, stop: &AtomicBool) {
    let wanted = EventTypes::CRITICAL_XID_ERROR
        | EventTypes::SINGLE_BIT_ECC_ERROR
        | EventTypes::DOUBLE_BIT_ECC_ERROR;
    let mut sets = Vec::new();
    for index in 0..nvml.device_count().unwrap_or(0) {
        let registered = nvml
            .device_by_index(index)
            .map_err(Into::into)
            .and_then(|d| {
                let bus = d
                    .pci_info()
                    .map(|p| readings::bus_id(p.domain, p.bus, p.device))?;
                let types = d.supported_event_types()? & wanted;
                let set = nvml.create_event_set()?;
                Ok::<_, nvml_wrapper::error::NvmlErrorWithSource>((
                    Arc::<str>::from(bus),
                    d.register_events(types, set)?,
                ))
            });
        match registered {
            Ok(s) => sets.push(s),
            Err(e) => {
                tracing::warn!(index, error = %e.error, "NVML events of this GPU are not read")
            }
        }
    }
    if sets.is_empty() {
        return;
    }
    tracing::info!(gpus = sets.len(), "NVML events (XID, ECC) are read");
    while !stop.load(Ordering::Relaxed) {
        let mut batch = Vec::new();
        for (bus, set) in &sets {
            match set.wait(EVENT_WAIT_MS) {
                Ok(e) => {
                    if e.event_type.contains(EventTypes::CRITICAL_XID_ERROR) {
                        let xid = match e.event_data {
                            Some(XidError::Value(v)) => u32::try_from(v).unwrap_or(0),
                            _ => 0,
                        };
                        batch.push(GpuEvent::NvmlXid {
                            gpu: bus.clone(),
                            xid,
                        });
                    }
                    for (t, kind) in [
                        (EventTypes::SINGLE_BIT_ECC_ERROR, "single_bit"),
                        (EventTypes::DOUBLE_BIT_ECC_ERROR, "double_bit"),
                    ] {
                        if e.event_type.contains(t) {
                            batch.push(GpuEvent::NvmlEcc {
                                gpu: bus.clone(),
                                kind,
                            });
                        }
                    }
                }
                Err(NvmlError::Timeout) => {}
                Err(e) => {
                    tracing::warn!(gpu = %bus, error = %e, "waiting for NVML events failed");
                    std::thread::sleep(Duration::from_millis(EVENT_WAIT_MS.into()));
                }
            }
        }
        if !batch.is_empty() && reports.blocking_send(batch).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine has no NVIDIA driver: NVML is absent, and says why. (On a GPU node it
    /// is attached; either way the probe returns instead of failing.)
    #[test]
    fn probing_returns_attached_or_a_reason() {
        match probe() {
            Probe::Attached { gpus, .. } => assert!(gpus < 1024),
            Probe::Absent(why) => assert!(!why.is_empty()),
        }
        let e = report(&Probe::Absent("x".into()));
        assert_eq!(
            e,
            GpuEvent::Attached {
                source: NVML,
                attached: false
            }
        );
    }
}
