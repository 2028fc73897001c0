//! NVML, NVIDIA's management library, opened at run time (`libnvidia-ml.so.1`, through
//! nvml-wrapper, which dlopens it), so one binary runs on nodes with and without the
//! driver. Today it only says whether NVML is there: a node without it reports the source
//! not attached, with the reason logged once, and nothing else changes. The readings
//! (ECC, remapped rows, events, utilisation) are not built yet: none could be checked
//! against a GPU here.
use nvml_wrapper::{error::NvmlError, Nvml};

use super::{GpuEvent, NVML};

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
        Ok(nvml) => {
            let driver = nvml
                .sys_driver_version()
                .unwrap_or_else(|e| format!("unknown ({e})"));
            match nvml.device_count() {
                Ok(gpus) => Probe::Attached { driver, gpus },
                Err(e) => Probe::Absent(format!("NVML has no device count: {}", why(&e))),
            }
        }
        Err(e) => Probe::Absent(why(&e)),
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
