//! Syscall latency: `raw_syscalls:sys_enter` -> `sys_exit`, aggregated in the kernel into
//! per-CPU log-linear histograms per (cgroup, syscall) and error counts per errno.
//!
//! Raw tracepoints, because they cost least: no argument copying into a trace record.
//!
//! Start times live in the thread's task-local storage: a pointer from the task, no
//! hashing, created at the thread's first syscall and freed by the kernel with the thread.
//! A thread switched out inside a syscall finds its start wherever it resumes, so nothing
//! runs per context switch. (A per-CPU slot spilled to task storage at `sched_switch` cost
//! the same per syscall, added a program to every context switch of the host, and had
//! `sched_switch` allocate task storage under the scheduler's locks.)
use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
    macros::{map, raw_tracepoint},
    maps::PerCpuHashMap,
    programs::RawTracePointContext,
};
use gimbal_common::{
    hist, Drop, ErrnoKey, LatencyHist, SyscallKey, SyscallStart, SYSCALL_ERRORS_ENTRIES,
    SYSCALL_HIST_DEFAULT_ENTRIES,
};

use crate::{
    shared::{count_drop, per_cpu_slot},
    task_storage::TaskStorage,
};

/// Start of each thread's current syscall; `ts_ns == 0` once its exit consumed it.
#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "SYSCALL_START")]
static SYSCALL_START: TaskStorage<SyscallStart> = TaskStorage::new();

/// Resized by the loader to fit its memory budget on this host's CPU count.
#[map(name = "SYSCALL_HIST")]
static SYSCALL_HIST: PerCpuHashMap<SyscallKey, LatencyHist> =
    PerCpuHashMap::with_max_entries(SYSCALL_HIST_DEFAULT_ENTRIES, 0);

#[map(name = "SYSCALL_ERRORS")]
static SYSCALL_ERRORS: PerCpuHashMap<ErrnoKey, u64> =
    PerCpuHashMap::with_max_entries(SYSCALL_ERRORS_ENTRIES, 0);

/// Largest errno the kernel returns to userspace (include/linux/err.h MAX_ERRNO).
const MAX_ERRNO: i64 = 4095;

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct pt_regs *regs, long id)
    let nr: i64 = ctx.arg(1);
    let Some(start) = SYSCALL_START.current_or_create() else {
        count_drop(Drop::SyscallStartFailed);
        return 0;
    };
    // SAFETY: the current thread's own storage; only this thread writes it (its exit reads).
    unsafe {
        *start = SyscallStart {
            // SAFETY: a helper without arguments.
            ts_ns: bpf_ktime_get_ns(),
            nr: nr as u32,
            _pad: 0,
        };
    }
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct pt_regs *regs, long ret)
    let ret: i64 = ctx.arg(1);
    let Some(start) = take_start() else {
        // No matching enter: attached mid-syscall, or a new thread's first return (clone).
        return 0;
    };
    // SAFETY: helpers without arguments.
    let latency = unsafe { bpf_ktime_get_ns() }.saturating_sub(start.ts_ns);
    // SAFETY: as above.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    record_latency(
        SyscallKey {
            cgroup_id,
            nr: start.nr,
            _pad: 0,
        },
        latency,
    );
    if (-MAX_ERRNO..0).contains(&ret) {
        record_error(ErrnoKey {
            cgroup_id,
            nr: start.nr,
            errno: (-ret) as u32,
        });
    }
    0
}

/// The current thread's syscall start, consumed so it is counted once.
#[inline(always)]
fn take_start() -> Option<SyscallStart> {
    let p = SYSCALL_START.current_if_any()?;
    // SAFETY: the current thread's own storage (see sys_enter).
    unsafe {
        if (*p).ts_ns == 0 {
            return None;
        }
        let start = *p;
        (*p).ts_ns = 0;
        Some(start)
    }
}

/// All-zero histogram to insert for a new key; lives in .rodata, not on the 512-byte stack.
static ZERO_HIST: LatencyHist = LatencyHist {
    sum_ns: 0,
    buckets: [0; hist::BUCKETS],
};

#[inline(always)]
fn record_latency(key: SyscallKey, latency_ns: u64) {
    let Some(h) = per_cpu_slot(&SYSCALL_HIST, &key, &ZERO_HIST, Drop::SyscallHistFull) else {
        return;
    };
    let i = hist::bucket(latency_ns);
    // SAFETY: a valid per-CPU map value: only this CPU writes it, so plain adds are
    // race-free. u32 buckets wrap; userspace takes wrapping deltas.
    unsafe {
        (*h).sum_ns = (*h).sum_ns.wrapping_add(latency_ns);
        if let Some(b) = (*h).buckets.get_mut(i) {
            *b = b.wrapping_add(1);
        }
    }
}

#[inline(always)]
fn record_error(key: ErrnoKey) {
    // A stack zero, not `&0` (see main.rs: promoted constants can alias loader globals).
    let zero = 0u64;
    if let Some(n) = per_cpu_slot(&SYSCALL_ERRORS, &key, &zero, Drop::SyscallErrorsFull) {
        // SAFETY: a valid per-CPU map value, written by this CPU only.
        unsafe { *n += 1 };
    }
}
