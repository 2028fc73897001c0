//! Where the syscall programs run (`[probes.syscall_latency] hook`): the `raw_syscalls`
//! tracepoints, or the kernel's syscall dispatchers (fentry/fexit) where the kernel allows
//! it.
//!
//! The dispatchers were meant to be the cheaper hook, since any syscall tracepoint puts
//! every thread of the node on the kernel's slow syscall path; measured, the trampoline
//! costs as much as what it avoids (BENCHMARKS.md, "Where syscalls are hooked"), so the
//! tracepoints stay the default. Every dispatcher the kernel has is hooked, or none is, so
//! that no syscall ABI (`int 0x80`, x32) becomes a blind spot.
use aya::{
    programs::{
        fentry::FEntryLinkId, raw_trace_point::RawTracePointLinkId, BtfTracePoint, FEntry, FExit,
        ProgramError, RawTracePoint,
    },
    BtfError, Ebpf,
};
use gimbal_common::programs;

use super::{chain, load::program_error, ProbeError};
use crate::config::SyscallHookChoice;

/// One of the kernel's syscall dispatchers, `long f(const struct pt_regs *, unsigned int nr)`,
/// and the two programs that hook it.
#[derive(Debug, PartialEq, Eq)]
pub struct Dispatcher {
    pub function: &'static str,
    entry: &'static str,
    exit: &'static str,
}

/// The 64-bit one first: without it the dispatchers are not used at all.
const DISPATCHERS: [Dispatcher; 3] = [
    Dispatcher {
        function: "x64_sys_call",
        entry: programs::X64_SYS_ENTER,
        exit: programs::X64_SYS_EXIT,
    },
    Dispatcher {
        function: "ia32_sys_call",
        entry: programs::IA32_SYS_ENTER,
        exit: programs::IA32_SYS_EXIT,
    },
    Dispatcher {
        function: "x32_sys_call",
        entry: programs::X32_SYS_ENTER,
        exit: programs::X32_SYS_EXIT,
    },
];

/// Every syscall program, for the BPF run-time statistics.
pub const ALL_PROGRAMS: [&str; 8] = [
    programs::SYS_ENTER,
    programs::SYS_EXIT,
    programs::X64_SYS_ENTER,
    programs::X64_SYS_EXIT,
    programs::IA32_SYS_ENTER,
    programs::IA32_SYS_EXIT,
    programs::X32_SYS_ENTER,
    programs::X32_SYS_EXIT,
];

/// The hook in use, chosen at start.
#[derive(Debug, PartialEq, Eq)]
pub enum SyscallHook {
    /// fentry/fexit on these dispatchers.
    Dispatchers(Vec<&'static Dispatcher>),
    Tracepoints,
}

impl SyscallHook {
    /// As in `gimbal_syscall_hook_info{hook}`.
    pub fn name(&self) -> &'static str {
        match self {
            SyscallHook::Dispatchers(_) => "dispatcher",
            SyscallHook::Tracepoints => "tracepoints",
        }
    }

    /// The program that notes a timed 64-bit syscall's start.
    pub fn enter_program(&self) -> &'static str {
        match self {
            SyscallHook::Dispatchers(hooked) => hooked[0].entry,
            SyscallHook::Tracepoints => programs::SYS_ENTER,
        }
    }
}

/// While syscalls are timed: the links of the programs that note their starts.
pub(super) enum EnterLinks {
    Tracepoint(RawTracePointLinkId),
    Dispatchers(Vec<(&'static str, FEntryLinkId)>),
}

/// Loads the syscall programs (so that the verifier's verdict on each is known at start)
/// and attaches the exit, which counts every syscall, where `choice` says. The programs
/// that time (the enter, `sched_switch`) are attached by `attach_enters` when asked.
pub(super) fn attach_counting(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    choice: SyscallHookChoice,
) -> Result<SyscallHook, String> {
    load_btf_tracepoint(ebpf, programs::SCHED_SWITCH, "sched_switch", btf)
        .map_err(|e| e.to_string())?;
    if choice != SyscallHookChoice::Tracepoints {
        match attach_dispatchers(ebpf, btf) {
            Ok(hooked) => {
                let functions: Vec<_> = hooked.iter().map(|d| d.function).collect();
                tracing::info!(
                    functions = functions.join(","),
                    "syscalls hooked at the kernel's syscall dispatchers (fentry/fexit): no syscall tracepoint"
                );
                return Ok(SyscallHook::Dispatchers(hooked));
            }
            Err(reason) if choice == SyscallHookChoice::Auto => tracing::info!(
                %reason,
                "syscalls hooked at the raw_syscalls tracepoints: the syscall dispatchers cannot be hooked on this kernel"
            ),
            Err(reason) => return Err(format!("hook = \"dispatcher\": {reason}")),
        }
    }
    attach_tracepoints(ebpf, btf).map_err(|e| e.to_string())?;
    Ok(SyscallHook::Tracepoints)
}

/// Loads the entry and exit programs of every dispatcher the kernel has and attaches the
/// exits; on any failure detaches what it attached and says why.
fn attach_dispatchers(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<Vec<&'static Dispatcher>, String> {
    if !cfg!(target_arch = "x86_64") {
        return Err("the syscall dispatchers are hooked on x86_64 only".to_string());
    }
    let mut attached = Vec::new();
    let result = (|| {
        for d in &DISPATCHERS {
            match load_dispatcher(ebpf, d, btf) {
                Ok(()) => {}
                // A kernel without 32-bit or x32 syscalls has no dispatcher for them.
                Err(Missing) if d.function != "x64_sys_call" => continue,
                Err(Missing) => {
                    return Err(
                        "the kernel has no x64_sys_call (x86_64 kernels have it from 6.9 and \
                         in the stable series that took the 2024 branch-history fix)"
                            .to_string(),
                    )
                }
                Err(Failed(e)) => return Err(e),
            }
            let link = exit(ebpf, d)
                .map_err(|e| e.to_string())?
                .attach()
                .map_err(|e| format!("{}: {}", d.exit, chain(&e)))?;
            attached.push((d, link));
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(attached.into_iter().map(|(d, _)| d).collect()),
        Err(reason) => {
            for (d, link) in attached {
                if let Ok(p) = exit(ebpf, d) {
                    let _ = p.detach(link);
                }
            }
            Err(reason)
        }
    }
}

enum LoadFailure {
    /// The kernel has no such function.
    Missing,
    Failed(String),
}
use LoadFailure::{Failed, Missing};

fn load_dispatcher(ebpf: &mut Ebpf, d: &Dispatcher, btf: &aya::Btf) -> Result<(), LoadFailure> {
    let failed = |name: &str, e: ProgramError| match e {
        ProgramError::Btf(BtfError::UnknownBtfTypeName { .. }) => Missing,
        e => Failed(format!("{name}: {}", chain(&e))),
    };
    entry(ebpf, d)
        .map_err(|e| Failed(e.to_string()))?
        .load(d.function, btf)
        .map_err(|e| failed(d.entry, e))?;
    exit(ebpf, d)
        .map_err(|e| Failed(e.to_string()))?
        .load(d.function, btf)
        .map_err(|e| failed(d.exit, e))
}

fn attach_tracepoints(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<(), ProbeError> {
    load_btf_tracepoint(ebpf, programs::SYS_EXIT, "sys_exit", btf)?;
    tracepoint_enter(ebpf)?
        .load()
        .map_err(|e| program_error(programs::SYS_ENTER, e))?;
    let exit: &mut BtfTracePoint = ebpf
        .program_mut(programs::SYS_EXIT)
        .ok_or(ProbeError::MissingProgram(programs::SYS_EXIT))?
        .try_into()
        .map_err(|e| program_error(programs::SYS_EXIT, e))?;
    exit.attach()
        .map_err(|e| program_error(programs::SYS_EXIT, e))?;
    Ok(())
}

/// Attaches the programs that note each timed syscall's start.
pub(super) fn attach_enters(ebpf: &mut Ebpf, hook: &SyscallHook) -> Result<EnterLinks, ProbeError> {
    match hook {
        SyscallHook::Tracepoints => Ok(EnterLinks::Tracepoint(
            tracepoint_enter(ebpf)?
                .attach("sys_enter")
                .map_err(|e| program_error(programs::SYS_ENTER, e))?,
        )),
        SyscallHook::Dispatchers(hooked) => {
            let mut links = Vec::new();
            for d in hooked {
                match entry(ebpf, d)?.attach() {
                    Ok(link) => links.push((d.entry, link)),
                    Err(e) => {
                        detach_enters(ebpf, EnterLinks::Dispatchers(links))?;
                        return Err(program_error(d.entry, e));
                    }
                }
            }
            Ok(EnterLinks::Dispatchers(links))
        }
    }
}

pub(super) fn detach_enters(ebpf: &mut Ebpf, links: EnterLinks) -> Result<(), ProbeError> {
    match links {
        EnterLinks::Tracepoint(link) => tracepoint_enter(ebpf)?
            .detach(link)
            .map_err(|e| program_error(programs::SYS_ENTER, e)),
        EnterLinks::Dispatchers(links) => {
            for (name, link) in links {
                program::<FEntry>(ebpf, name)?
                    .detach(link)
                    .map_err(|e| program_error(name, e))?;
            }
            Ok(())
        }
    }
}

fn tracepoint_enter(ebpf: &mut Ebpf) -> Result<&mut RawTracePoint, ProbeError> {
    program(ebpf, programs::SYS_ENTER)
}

fn entry<'a>(ebpf: &'a mut Ebpf, d: &Dispatcher) -> Result<&'a mut FEntry, ProbeError> {
    program(ebpf, d.entry)
}

fn exit<'a>(ebpf: &'a mut Ebpf, d: &Dispatcher) -> Result<&'a mut FExit, ProbeError> {
    program(ebpf, d.exit)
}

fn program<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, ProbeError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(ProbeError::MissingProgram(name))?
        .try_into()
        .map_err(|e| program_error(name, e))
}

pub(super) fn load_btf_tracepoint(
    ebpf: &mut Ebpf,
    prog: &'static str,
    tracepoint: &str,
    btf: &aya::Btf,
) -> Result<(), ProbeError> {
    program::<BtfTracePoint>(ebpf, prog)?
        .load(tracepoint, btf)
        .map_err(|e| program_error(prog, e))
}
