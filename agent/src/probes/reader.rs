//! Reads the aggregated maps (latency histograms, errno counts, retransmits, drops) into a
//! `Sample`, resolving raw keys to label values on the way.
use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use gimbal_common::{names, ErrnoKey, FlowKey, LatencyHist, SyscallKey, AF_INET, DROP_KINDS};

use super::{idle::IdleKeys, ProbeError, Probes};

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
    tcp: PerCpuHashMap<MapData, FlowKey, u64>,
    drops: PerCpuArray<MapData, u64>,
    cgroups: CgroupNames,
    idle_hists: IdleKeys<SyscallKey>,
    idle_errors: IdleKeys<ErrnoKey>,
    idle_flows: IdleKeys<FlowKey>,
    /// Syscall names by number, made once: they are read every tick for every key.
    syscall_names: Vec<Arc<str>>,
    unknown: Arc<str>,
}

fn take<T>(probes: &mut Probes, name: &'static str) -> Result<T, ProbeError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = probes
        .ebpf
        .take_map(name)
        .ok_or(ProbeError::MissingMap(name))?;
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
            tcp: take(probes, names::TCP_RETRANS)?,
            drops: take(probes, names::DROPS)?,
            cgroups,
            idle_hists: IdleKeys::new(IDLE_PRUNE),
            idle_errors: IdleKeys::new(IDLE_PRUNE),
            idle_flows: IdleKeys::new(IDLE_PRUNE),
            syscall_names: (0..1024).map(|nr| Arc::from(syscall_name(nr))).collect(),
            unknown: Arc::from("unknown"),
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
        for (key, per_cpu) in hists {
            let labels = [self.syscall(key.nr), self.cgroup(key.cgroup_id)];
            let hist = WrappedHist::from_cpus(per_cpu.iter());
            self.idle_hists.observe(key, hist.fingerprint(), now);
            sample.syscalls.push(HistReading {
                raw: key,
                labels,
                hist,
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
            self.idle_errors.observe(key, value, now);
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
            self.idle_flows.observe(key, value, now);
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
        Ok(sample)
    }

    /// Deletes idle keys. An increment landing between the last read and the delete would
    /// be lost, but a key idle for the whole prune period gets none in practice.
    fn prune(&mut self, now: Instant, sample: &mut Sample) {
        for k in self.idle_hists.take_idle(now) {
            if self.hist.remove(&k).is_ok() {
                sample.pruned.syscalls.push(k);
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
