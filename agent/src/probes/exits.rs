//! Drains exit events from the kernel's ring buffer as they arrive.
use std::sync::Arc;

use aya::maps::{MapData, RingBuf};
use gimbal_common::{names, ExitEvent};
use tokio::io::unix::AsyncFd;

use super::{ProbeError, Probes};
use crate::{
    host::cgroupfs::CgroupNames,
    model::{exits, Labels},
};

/// One exit with the labels it is counted under.
#[derive(Debug, Clone)]
pub struct ExitRecord {
    pub event: ExitEvent,
    /// [cgroup, comm, reason, code]
    pub labels: Labels<4>,
}

pub struct ExitReader {
    ring: AsyncFd<RingBuf<MapData>>,
    cgroups: CgroupNames,
}

impl ExitReader {
    /// Must be called inside a tokio runtime.
    pub fn new(probes: &mut Probes, cgroups: CgroupNames) -> Result<Self, ProbeError> {
        let name = names::EXIT_EVENTS;
        let map = probes
            .ebpf
            .take_map(name)
            .ok_or(ProbeError::MissingMap(name))?;
        let ring = RingBuf::try_from(map).map_err(|e| ProbeError::Map {
            name,
            error: Box::new(e),
        })?;
        // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for as long as the
        // AsyncFd owns the RingBuf.
        let ring = unsafe { AsyncFd::register(ring) }.map_err(|e| ProbeError::Map {
            name,
            error: Box::new(std::io::Error::from(e).into()),
        })?;
        Ok(Self { ring, cgroups })
    }

    /// Waits for at least one event and returns all that are ready.
    pub async fn next_batch(&mut self) -> Result<Vec<ExitRecord>, ProbeError> {
        loop {
            let mut guard = self
                .ring
                .readable_mut()
                .await
                .map_err(|e| ProbeError::Map {
                    name: names::EXIT_EVENTS,
                    error: Box::new(e.into()),
                })?;
            let events = drain(guard.get_inner_mut());
            guard.clear_ready();
            if !events.is_empty() {
                return Ok(events.into_iter().map(|e| self.record(e)).collect());
            }
        }
    }

    /// Everything in the ring now, without waiting (tests drain after a burst).
    pub fn drain_now(&mut self) -> Vec<ExitRecord> {
        let events = drain(self.ring.get_mut());
        events.into_iter().map(|e| self.record(e)).collect()
    }

    fn record(&mut self, event: ExitEvent) -> ExitRecord {
        let reason = exits::decode(&event);
        let cgroup = self
            .cgroups
            .resolve(event.cgroup_id)
            .unwrap_or_else(|| Arc::from("unknown"));
        ExitRecord {
            labels: [
                cgroup,
                Arc::from(exits::comm(&event)),
                Arc::from(reason.reason),
                Arc::from(reason.code),
            ],
            event,
        }
    }
}

fn drain(ring: &mut RingBuf<MapData>) -> Vec<ExitEvent> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        if item.len() >= std::mem::size_of::<ExitEvent>() {
            // SAFETY: the kernel wrote a whole ExitEvent (size checked); read_unaligned
            // because ring buffer records are only 8-byte aligned by contract.
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<ExitEvent>()) });
        }
    }
    out
}
