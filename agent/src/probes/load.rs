//! Loading the kernel object with this kernel's offsets, and attaching each probe on its
//! own: a probe that cannot attach is reported and the others keep working.
use std::path::{Path, PathBuf};

use aya::{programs::RawTracePoint, Ebpf, EbpfLoader};
use gimbal_common::{names, programs, LatencyHist, OFFSET_UNKNOWN};

use super::{
    offsets,
    syscall_hook::{attach_counting, SyscallHook},
    ProbeError,
};
use crate::{
    config::{Config, SyscallHookChoice},
    host::{btf::Btf, tracefs},
};

/// The probe families, as named in `gimbal_probe_attached{probe}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Probe {
    SyscallLatency,
    TcpRetransmit,
    ProcessExit,
}

impl Probe {
    pub const ALL: [Probe; 3] = [
        Probe::SyscallLatency,
        Probe::TcpRetransmit,
        Probe::ProcessExit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Probe::SyscallLatency => "syscall_latency",
            Probe::TcpRetransmit => "tcp_retransmit",
            Probe::ProcessExit => "process_exit",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub syscall_latency: bool,
    pub tcp_retransmit: bool,
    pub process_exit: bool,
    pub syscall_map_memory_mb: u32,
    /// Map SYSCALL_COUNT_SLOTS and give busy pairs slots (`count_slots`).
    pub count_slots: bool,
    pub syscall_hook: SyscallHookChoice,
    pub exit_ring_bytes: u32,
    /// Record exits and retransmits of this cgroup2 id only (0: all). For tests.
    pub filter_cgroup_id: u64,
    /// Where to read tracepoint formats from instead of the mounted tracefs. For tests of
    /// a kernel that lacks a tracepoint.
    pub tracepoint_formats: Option<PathBuf>,
}

impl Default for LoadOptions {
    /// What the embedded default config asks for.
    fn default() -> Self {
        Self::from(&Config::default())
    }
}

impl From<&Config> for LoadOptions {
    fn from(c: &Config) -> Self {
        Self {
            syscall_latency: c.probes.syscall_latency.enabled,
            tcp_retransmit: c.probes.tcp_retransmit.enabled,
            process_exit: c.probes.process_exit.enabled,
            syscall_map_memory_mb: c.probes.syscall_latency.map_memory_mb,
            count_slots: c.probes.syscall_latency.count_slots,
            syscall_hook: c.probes.syscall_latency.hook,
            exit_ring_bytes: c.probes.process_exit.ring_buffer_kb * 1024,
            filter_cgroup_id: 0,
            tracepoint_formats: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProbeStatus {
    pub probe: Probe,
    pub enabled: bool,
    /// Why it is not attached, when enabled but not attached.
    pub error: Option<String>,
    /// Where the syscall programs run (`SyscallHook::name`), once attached.
    pub hook: Option<&'static str>,
}

impl ProbeStatus {
    pub fn attached(&self) -> bool {
        self.enabled && self.error.is_none()
    }
}

/// The loaded object; dropping it detaches every program.
pub struct Probes {
    pub(super) ebpf: Ebpf,
    pub status: Vec<ProbeStatus>,
    /// (cgroup, syscall) pairs the latency map holds on this host.
    pub syscall_hist_entries: u32,
    /// Possible CPUs (the per-CPU maps' and SYSCALL_COUNT_SLOTS' stride).
    pub cpus: usize,
    pub count_slots: bool,
    /// Which syscalls are timed; None when the syscall probe is not attached.
    pub(super) timer: Option<super::timing::Timer>,
}

/// Entries of SYSCALL_HIST that fit the memory budget on this many CPUs.
pub fn syscall_hist_entries(memory_mb: u32, cpus: usize) -> u32 {
    // The kernel rounds each per-CPU value up to 8 bytes.
    let per_entry = (std::mem::size_of::<LatencyHist>().div_ceil(8) * 8 * cpus.max(1)) as u64;
    let n = (memory_mb as u64 * 1024 * 1024) / per_entry;
    // The agent keeps one 400-byte histogram per entry too: 8192 bounds that at ~4 MB.
    n.clamp(64, 8_192) as u32
}

impl Probes {
    pub fn load(opts: &LoadOptions) -> Result<Self, ProbeError> {
        // The format files tell which tracepoints exist and what they pass.
        let mounted = tracefs::ensure_mounted()?;
        raise_memlock_limit();
        let tracefs_root = opts.tracepoint_formats.clone().unwrap_or(mounted);
        let btf = Btf::from_file(Path::new(Btf::VMLINUX));
        let task = btf
            .as_ref()
            .map_err(|e| e.to_string())
            .and_then(|b| offsets::task(b).map_err(|e| e.to_string()));
        let sock = btf.as_ref().map(offsets::sock).ok();
        let flow = btf
            .as_ref()
            .map_err(|e| e.to_string())
            .and_then(|b| offsets::flow(b).map_err(|e| e.to_string()));
        let tcp_tp = offsets::tcp_tracepoint(&tracefs_root)
            .map_err(|e| e.to_string())
            .and(flow.clone());
        let exit_tp = offsets::exit_tracepoints(&tracefs_root).map_err(|e| e.to_string());

        let cpus = aya::util::nr_cpus().map_err(|(_, e)| ProbeError::Cpus(e))?;
        let hist_entries = syscall_hist_entries(opts.syscall_map_memory_mb, cpus);
        let mut loader = EbpfLoader::new();
        // SYSCALL_START is task-local storage, which aya creates but has no userspace type for.
        loader
            .allow_unsupported_maps()
            .override_global(names::FILTER_CGROUP_ID, &opts.filter_cgroup_id, true)
            .map_max_entries(names::SYSCALL_HIST, hist_entries)
            .map_max_entries(
                names::SYSCALL_COUNT_SLOTS,
                cpus as u32 * gimbal_common::COUNT_SLOTS_PER_CPU,
            )
            .map_max_entries(names::EXIT_EVENTS, opts.exit_ring_bytes);
        if let Ok(t) = &task {
            loader.override_global(names::TASK_OFFSETS, t, true);
        }
        if let Some(s) = &sock {
            loader.override_global(names::SOCK_OFFSETS, s, true);
        }
        if let Ok(f) = &flow {
            loader.override_global(names::FLOW_OFFSETS, f, true);
        }
        if let Ok(t) = &exit_tp {
            loader.override_global(names::EXIT_TP_ARGS, t, true);
        }
        let mut ebpf = loader
            .load(crate::EBPF_OBJECT)
            .map_err(|e| ProbeError::Load(Box::new(e)))?;

        let mut status = Vec::new();
        let mut syscall_hook = None;
        for probe in Probe::ALL {
            let enabled = match probe {
                Probe::SyscallLatency => opts.syscall_latency,
                Probe::TcpRetransmit => opts.tcp_retransmit,
                Probe::ProcessExit => opts.process_exit,
            };
            let result = if !enabled {
                Ok(())
            } else {
                match probe {
                    Probe::SyscallLatency => aya::Btf::from_sys_fs()
                        .map_err(|e| format!("kernel BTF: {e}"))
                        .and_then(|btf| {
                            let hook = attach_counting(&mut ebpf, &btf, opts.syscall_hook)?;
                            syscall_hook = Some(hook);
                            Ok(())
                        }),
                    Probe::TcpRetransmit => tcp_tp.clone().map(drop).and_then(|()| {
                        attach_raw_tracepoint(
                            &mut ebpf,
                            programs::TCP_RETRANSMIT,
                            "tcp_retransmit_skb",
                        )
                        .map_err(|e| e.to_string())
                    }),
                    Probe::ProcessExit => task
                        .clone()
                        .map(drop)
                        .and_then(|()| exit_tp.clone().map(drop))
                        .and_then(|()| attach_exits(&mut ebpf).map_err(|e| e.to_string())),
                }
            };
            match &result {
                Ok(()) if enabled => tracing::info!(probe = probe.name(), "probe attached"),
                Ok(()) => tracing::info!(probe = probe.name(), "probe disabled by config"),
                Err(e) => {
                    tracing::error!(probe = probe.name(), error = %e, "probe not attached; the others keep running")
                }
            }
            status.push(ProbeStatus {
                probe,
                enabled,
                error: result.err(),
                hook: match probe {
                    Probe::SyscallLatency => syscall_hook.as_ref().map(SyscallHook::name),
                    _ => None,
                },
            });
        }
        if task.is_ok()
            && exit_tp
                .as_ref()
                .is_ok_and(|t| t.group_dead == OFFSET_UNKNOWN)
        {
            tracing::info!(
                "sched_process_exit has no group_dead field on this kernel; using signal->live"
            );
        }
        let timer = match syscall_hook {
            Some(hook) => Some(super::timing::Timer::new(&mut ebpf, hook)?),
            None => None,
        };
        Ok(Self {
            ebpf,
            status,
            syscall_hist_entries: hist_entries,
            cpus,
            count_slots: opts.count_slots,
            timer,
        })
    }
}

fn attach_exits(ebpf: &mut Ebpf) -> Result<(), ProbeError> {
    attach_raw_tracepoint(ebpf, programs::OOM_MARK_VICTIM, "mark_victim")?;
    attach_raw_tracepoint(ebpf, programs::PROCESS_EXIT, "sched_process_exit")
}

/// Raw tracepoints only: attaching a classic one needs perf_event_open, which kernels
/// with perf_event_paranoid=3 (Debian, Ubuntu) refuse without CAP_SYS_ADMIN.
fn attach_raw_tracepoint(
    ebpf: &mut Ebpf,
    prog: &'static str,
    tracepoint: &str,
) -> Result<(), ProbeError> {
    let p: &mut RawTracePoint = ebpf
        .program_mut(prog)
        .ok_or(ProbeError::MissingProgram(prog))?
        .try_into()
        .map_err(|e| program_error(prog, e))?;
    p.load().map_err(|e| program_error(prog, e))?;
    p.attach(tracepoint).map_err(|e| program_error(prog, e))?;
    Ok(())
}

pub(super) fn program_error(name: &'static str, e: aya::programs::ProgramError) -> ProbeError {
    ProbeError::Program {
        name,
        error: Box::new(e),
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK (often 64 KiB or 8 MiB), so lift
/// it; newer kernels charge the memory cgroup instead and ignore the limit. Failure (no
/// CAP_SYS_RESOURCE) is only logged: on a new kernel nothing depends on it.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid struct that lives across the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "cannot lift RLIMIT_MEMLOCK (only kernels before 5.11 need it)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_drop_kind_is_counted_under_a_probe_the_agent_reports() {
        // gimbal_events_dropped_total{probe} folds the kernel's drop kinds by these names;
        // one that names no probe would be a series nobody's dashboards or rules expect.
        let probes: Vec<_> = Probe::ALL.iter().map(|p| p.name()).collect();
        for name in gimbal_common::DROP_PROBES {
            assert!(probes.contains(&name), "{name} is not a probe");
        }
    }
}
