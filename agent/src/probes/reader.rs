//! Reads the aggregated maps (latency histograms, errno counts, retransmits, drops) into a
//! `Sample`, resolving raw keys to label values on the way.
use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use gimbal_common::{names, ErrnoKey, FlowKey, LatencyHist, SyscallKey, AF_INET, DROP_KINDS};

use super::{
    count_slots::{CountSlots, PROMOTE_AT},
    idle::IdleKeys,
    ProbeError, Probes, ProgramStats,
};

/// Kernel map keys unchanged this long are deleted (their cgroup or flow is likely gone).
const IDLE_PRUNE: Duration = Duration::from_secs(600);
use crate::{
    host::cgroupfs::CgroupNames,
    model::{CounterReading, HistReading, Sample, WrappedHist},
    names::{errno_name, syscall_name},
};

pub struct MapReader {
    hist: PerCpuHashMap<MapData, SyscallKey, LatencyHist>,
    errors: PerCpuHashMap<MapData, ErrnoKey, u64>,
    counts: PerCpuHashMap<MapData, SyscallKey, u64>,
    /// The busiest pairs' counts; None where the array could not be mapped (then the
    /// kernel counts every pair in `counts`).
    count_slots: Option<CountSlots>,
    tcp: PerCpuHashMap<MapData, FlowKey, u64>,
    drops: PerCpuArray<MapData, u64>,
    cgroups: CgroupNames,
    idle_hists: IdleKeys<SyscallKey>,
    idle_errors: IdleKeys<ErrnoKey>,
    idle_counts: IdleKeys<SyscallKey>,
    idle_flows: IdleKeys<FlowKey>,
    /// Syscall names by number, made once: they are read every tick for every key.
    syscall_names: Vec<Arc<str>>,
    unknown: Arc<str>,
    /// Cgroups (as labelled) whose series left the model: their keys go at the next read.
    forgotten: std::collections::HashSet<Arc<str>>,
    programs: ProgramStats,
}

fn take<T>(probes: &mut Probes, name: &'static str) -> Result<T, ProbeError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    take_map(&mut probes.ebpf, name)
}

/// Takes map `name` out of the loaded object, typed.
pub(super) fn take_map<T>(ebpf: &mut aya::Ebpf, name: &'static str) -> Result<T, ProbeError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))?;
    T::try_from(map).map_err(|e| ProbeError::Map {
        name,
        error: Box::new(e),
    })
}

impl MapReader {
    pub fn new(probes: &mut Probes, cgroups: CgroupNames) -> Result<Self, ProbeError> {
        Ok(Self {
            hist: take(probes, names::SYSCALL_HIST)?,
            errors: take(probes, names::SYSCALL_ERRORS)?,
            counts: take(probes, names::SYSCALL_COUNTS)?,
            count_slots: count_slots(probes),
            tcp: take(probes, names::TCP_RETRANS)?,
            drops: take(probes, names::DROPS)?,
            cgroups,
            idle_hists: IdleKeys::new(IDLE_PRUNE),
            idle_errors: IdleKeys::new(IDLE_PRUNE),
            idle_counts: IdleKeys::new(IDLE_PRUNE),
            idle_flows: IdleKeys::new(IDLE_PRUNE),
            syscall_names: (0..1024).map(|nr| Arc::from(syscall_name(nr))).collect(),
            unknown: Arc::from("unknown"),
            forgotten: Default::default(),
            programs: ProgramStats::new(probes),
        })
    }

    fn syscall(&self, nr: u32) -> Arc<str> {
        self.syscall_names
            .get(nr as usize)
            .cloned()
            .unwrap_or_else(|| Arc::from(syscall_name(nr)))
    }

    fn cgroup(&mut self, id: u64) -> Arc<str> {
        if id == 0 {
            return self.unknown.clone();
        }
        self.cgroups
            .resolve(id)
            .unwrap_or_else(|| self.unknown.clone())
    }

    /// Deletes kernel map keys after `after` without change instead of the default 10 min.
    pub fn with_idle_prune(mut self, after: Duration) -> Self {
        self.idle_hists = IdleKeys::new(after);
        self.idle_errors = IdleKeys::new(after);
        self.idle_counts = IdleKeys::new(after);
        self.idle_flows = IdleKeys::new(after);
        self
    }

    /// One pass over every map. A key that vanishes mid-iteration is skipped, not an error.
    /// Keys idle for the prune period are deleted from the kernel maps and listed in
    /// `sample.pruned`; their totals live on in the model.
    pub fn read(&mut self) -> Result<Sample, ProbeError> {
        let now = Instant::now();
        let map_err = |name| {
            move |e| ProbeError::Map {
                name,
                error: Box::new(e),
            }
        };
        let mut sample = Sample::default();

        let hists: Vec<_> = self.hist.iter().filter_map(Result::ok).collect();
        let mut gone = Gone::default();
        for (key, per_cpu) in hists {
            let labels = [self.syscall(key.nr), self.cgroup(key.cgroup_id)];
            let hist = WrappedHist::from_cpus(per_cpu.iter());
            let changed = self.idle_hists.observe(key, hist.fingerprint(), now);
            if self.is_gone(key.cgroup_id, &labels[1], changed) {
                gone.syscalls.push(key);
                continue;
            }
            sample.syscalls.push(HistReading {
                raw: key,
                labels,
                hist,
            });
        }

        let counts: Vec<_> = self.counts.iter().filter_map(Result::ok).collect();
        for (key, per_cpu) in counts {
            let labels = [self.syscall(key.nr), self.cgroup(key.cgroup_id)];
            let in_hash: u64 = per_cpu.iter().sum();
            let in_slot = self.count_slots.as_ref().map_or(0, |s| s.count(&key));
            let value = in_hash.wrapping_add(in_slot);
            // Busy in the hash since the last read: give it a slot (a key's first read
            // counts from zero; a claimed key's hash value no longer grows).
            if in_hash.saturating_sub(self.idle_counts.last(&key).unwrap_or(0)) >= PROMOTE_AT {
                if let Some(s) = &mut self.count_slots {
                    s.claim(key);
                }
            }
            let changed = self.idle_counts.observe(key, value, now);
            if self.is_gone(key.cgroup_id, &labels[1], changed) {
                gone.syscall_counts.push(key);
                continue;
            }
            sample.syscall_counts.push(CounterReading {
                raw: key,
                labels,
                value,
            });
        }

        let errors: Vec<_> = self.errors.iter().filter_map(Result::ok).collect();
        for (key, per_cpu) in errors {
            let labels = [
                self.syscall(key.nr),
                self.cgroup(key.cgroup_id),
                Arc::from(errno_name(key.errno)),
            ];
            let value = per_cpu.iter().sum();
            let changed = self.idle_errors.observe(key, value, now);
            if self.is_gone(key.cgroup_id, &labels[1], changed) {
                gone.syscall_errors.push(key);
                continue;
            }
            sample.syscall_errors.push(CounterReading {
                raw: key,
                labels,
                value,
            });
        }

        let flows: Vec<_> = self.tcp.iter().filter_map(Result::ok).collect();
        for (key, per_cpu) in flows {
            let (remote, family) = remote(&key);
            let labels = [
                self.cgroup(key.cgroup_id),
                Arc::from(remote),
                Arc::from(family),
            ];
            let value = per_cpu.iter().sum();
            let changed = self.idle_flows.observe(key, value, now);
            if self.is_gone(key.cgroup_id, &labels[0], changed) {
                gone.tcp_retransmits.push(key);
                continue;
            }
            sample.tcp_retransmits.push(CounterReading {
                raw: key,
                labels,
                value,
            });
        }

        for i in 0..DROP_KINDS {
            sample.drops[i as usize] = self
                .drops
                .get(&i, 0)
                .map_err(map_err(names::DROPS))?
                .iter()
                .sum();
        }
        self.prune(now, &mut sample);
        self.prune_gone(gone, &mut sample);
        self.forgotten.clear();
        sample.programs = self.programs.read();
        sample.count_slots_used = self.count_slots_used();
        Ok(sample)
    }

    /// Deletes the keys of these cgroups (labels as resolved) at the next read: they were
    /// removed and their series left the model (`identity::Removed`).
    pub fn forget_cgroups(&mut self, labels: impl IntoIterator<Item = Arc<str>>) {
        self.forgotten.extend(labels);
    }

    /// Whether a key is of a cgroup that is gone and did not change since the last read
    /// (so deleting it loses nothing): its cgroup was forgotten (removed for the grace),
    /// or it had one (not 0: no cgroup known) whose id resolves to nothing any more. A
    /// cgroup made again under a forgotten path has new keys, which are new, so kept.
    fn is_gone(&self, cgroup_id: u64, label: &Arc<str>, changed: bool) -> bool {
        !changed
            && (self.forgotten.contains(label)
                || (cgroup_id != 0 && Arc::ptr_eq(label, &self.unknown)))
    }

    /// Deletes at once the keys of cgroups that are gone and that did not change since the
    /// last read: nothing is lost (their counts were read; the model forgets their last
    /// values, so a key made again counts from zero), and a node churning pods does not
    /// fill the maps with dead cgroups' keys for the ten minutes of the idle prune.
    fn prune_gone(&mut self, gone: Gone, sample: &mut Sample) {
        for k in gone.syscalls {
            self.idle_hists.forget(&k);
            if self.hist.remove(&k).is_ok() {
                sample.pruned.syscalls.push(k);
            }
        }
        for k in gone.syscall_counts {
            self.idle_counts.forget(&k);
            self.release_slot(&k);
            if self.counts.remove(&k).is_ok() {
                sample.pruned.syscall_counts.push(k);
            }
        }
        for k in gone.syscall_errors {
            self.idle_errors.forget(&k);
            if self.errors.remove(&k).is_ok() {
                sample.pruned.syscall_errors.push(k);
            }
        }
        for k in gone.tcp_retransmits {
            self.idle_flows.forget(&k);
            if self.tcp.remove(&k).is_ok() {
                sample.pruned.tcp_retransmits.push(k);
            }
        }
    }

    /// Deletes idle keys. An increment landing between the last read and the delete would
    /// be lost, but a key idle for the whole prune period gets none in practice.
    fn prune(&mut self, now: Instant, sample: &mut Sample) {
        for k in self.idle_hists.take_idle(now) {
            if self.hist.remove(&k).is_ok() {
                sample.pruned.syscalls.push(k);
            }
        }
        for k in self.idle_counts.take_idle(now) {
            self.release_slot(&k);
            if self.counts.remove(&k).is_ok() {
                sample.pruned.syscall_counts.push(k);
            }
        }
        for k in self.idle_errors.take_idle(now) {
            if self.errors.remove(&k).is_ok() {
                sample.pruned.syscall_errors.push(k);
            }
        }
        for k in self.idle_flows.take_idle(now) {
            if self.tcp.remove(&k).is_ok() {
                sample.pruned.tcp_retransmits.push(k);
            }
        }
    }
}

impl MapReader {
    fn release_slot(&mut self, key: &SyscallKey) {
        if let Some(s) = &mut self.count_slots {
            s.release(key);
        }
    }

    /// A pair's count as the kernel holds it now: (in SYSCALL_COUNTS, in its slot).
    pub fn count_split(&self, key: &SyscallKey) -> (u64, u64) {
        let in_hash = self
            .counts
            .get(key, 0)
            .map_or(0, |per_cpu| per_cpu.iter().sum());
        let in_slot = self.count_slots.as_ref().map_or(0, |s| s.count(key));
        (in_hash, in_slot)
    }

    /// Count slots claimed, of `COUNT_SLOTS_PER_CPU`.
    pub fn count_slots_used(&self) -> usize {
        self.count_slots.as_ref().map_or(0, CountSlots::used)
    }
}

/// SYSCALL_COUNT_SLOTS mapped, or None (said in the log) where it cannot be.
fn count_slots(probes: &mut Probes) -> Option<CountSlots> {
    if !probes.count_slots {
        tracing::info!("count_slots = false: every syscall is counted in the hash");
        return None;
    }
    let map = match probes.ebpf.take_map(names::SYSCALL_COUNT_SLOTS) {
        Some(aya::maps::Map::Array(m)) => m,
        _ => {
            tracing::warn!(
                "the kernel object has no SYSCALL_COUNT_SLOTS array: every syscall is counted in the hash"
            );
            return None;
        }
    };
    match CountSlots::new(map, probes.cpus) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot map SYSCALL_COUNT_SLOTS: every syscall is counted in the hash");
            None
        }
    }
}

/// Keys of removed cgroups found in one read.
type Gone = crate::model::Pruned;

/// "addr:port" of the flow's remote end ("[v6]:port" for IPv6) and the family label.
pub fn remote(key: &FlowKey) -> (String, &'static str) {
    if key.family == AF_INET {
        let a: [u8; 4] = [key.daddr[0], key.daddr[1], key.daddr[2], key.daddr[3]];
        (format!("{}:{}", IpAddr::from(a), key.dport), "ipv4")
    } else {
        (
            format!("[{}]:{}", IpAddr::from(key.daddr), key.dport),
            "ipv6",
        )
    }
}
