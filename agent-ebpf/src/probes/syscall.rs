//! Syscall latency: `raw_syscalls:sys_enter` -> `sys_exit`, aggregated in the kernel into
//! per-CPU log-linear histograms per (cgroup, syscall) and error counts per errno.
//!
//! Raw tracepoints, because they cost least: no argument copying into a trace record.
//!
//! Start times live in a per-CPU slot: an array lookup the verifier inlines, no hashing.
//! A thread that is switched out inside a syscall may come back on another CPU, so
//! `sched_switch` spills the slot of the outgoing thread into its task-local storage, where
//! its `sys_exit` finds it. Syscalls that do not block pay for two slot accesses and one
//! per-CPU hash lookup (the histogram); only blocking ones pay for task storage.
use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use gimbal_common::{
    hist, Drop, ErrnoKey, LatencyHist, SyscallKey, SyscallStart, SYSCALL_ERRORS_ENTRIES,
    SYSCALL_HIST_DEFAULT_ENTRIES,
};

use crate::{
    shared::{count_drop, per_cpu_slot},
    task_storage::{TaskStorage, TaskStruct},
};

/// The syscall the thread running on this CPU is in.
///
/// A filled slot always belongs to the running thread: another thread can only run here
/// after a context switch, and `sched_switch` empties the slot into the outgoing thread's
/// task storage. `owner` is a cheap consistency check on top: the address of the thread's
/// user register frame (the raw tracepoints' first argument), unique per live thread and
/// free to read, unlike a helper call.
#[repr(C)]
#[derive(Clone, Copy)]
struct CpuSlot {
    /// `struct pt_regs *` of the thread; 0 when the slot is empty.
    owner: u64,
    start: SyscallStart,
}

#[map(name = "SYSCALL_CPU_SLOT")]
static SYSCALL_CPU_SLOT: PerCpuArray<CpuSlot> = PerCpuArray::with_max_entries(1, 0);

/// Start of the syscall of each thread that was switched out inside one. Task-local
/// storage: a pointer from the task, no hashing, and a dead thread's slot goes with it.
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
    let regs: u64 = ctx.arg(0);
    let nr: i64 = ctx.arg(1);
    if let Some(slot) = SYSCALL_CPU_SLOT.get_ptr_mut(0) {
        let start = SyscallStart {
            // SAFETY: a helper without arguments.
            ts_ns: unsafe { bpf_ktime_get_ns() },
            nr: nr as u32,
            _pad: 0,
        };
        // SAFETY: a valid map value of this CPU, written only by the thread running here.
        unsafe { *slot = CpuSlot { owner: regs, start } };
    }
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct pt_regs *regs, long ret)
    let regs: u64 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    let Some(start) = take_start(regs) else {
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

/// The current thread's syscall start, from this CPU's slot or, if the thread was switched
/// out meanwhile, from its task storage; consumed so it is counted once.
#[inline(always)]
fn take_start(regs: u64) -> Option<SyscallStart> {
    let slot = SYSCALL_CPU_SLOT.get_ptr_mut(0)?;
    // SAFETY: `slot` is this CPU's map value and `spilled` the current thread's storage;
    // only the running thread touches either (see CpuSlot).
    unsafe {
        if (*slot).owner == regs {
            (*slot).owner = 0;
            return Some((*slot).start);
        }
        let spilled = SYSCALL_START.current_if_any()?;
        if (*spilled).ts_ns == 0 {
            return None;
        }
        let start = *spilled;
        (*spilled).ts_ns = 0;
        Some(start)
    }
}

/// Moves the outgoing thread's pending syscall start from this CPU's slot into its task
/// storage, since it may resume on another CPU.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next, ...)
    let prev: *mut TaskStruct = ctx.arg(1);
    let Some(slot) = SYSCALL_CPU_SLOT.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: `slot` is this CPU's map value; `p` is prev's task storage, which only prev
    // (not running now) and this switch touch.
    unsafe {
        if (*slot).owner == 0 {
            return 0;
        }
        // The slot is prev's: only the running thread fills it (see CpuSlot).
        match SYSCALL_START.task_or_create(prev) {
            Some(p) => *p = (*slot).start,
            None => count_drop(Drop::SyscallSpillFailed),
        }
        (*slot).owner = 0;
    }
    0
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
