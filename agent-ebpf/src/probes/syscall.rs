//! Syscalls: every one counted per (cgroup, syscall) at its exit, with its errors per
//! errno; the ones asked for (TIMED_SYSCALLS, TIMED_CGROUPS: the targets' latency SLIs and
//! `timed_syscalls`) also timed from `raw_syscalls:sys_enter` to `sys_exit` into per-CPU
//! log-linear histograms. A counted syscall costs one program at its exit; a timed one a
//! clock read at each end, and the agent attaches `sys_enter` and `sched_switch` only
//! while anything is timed at all. With SAMPLE_ONE_IN, one timed syscall in N (at random)
//! is timed and the others are counted.
//!
//! Start times live in a per-CPU slot: an array lookup the verifier inlines, no hashing.
//! A thread that is switched out inside a syscall may come back on another CPU, so
//! `sched_switch` spills the slot of the outgoing thread into its task-local storage, where
//! its `sys_exit` finds it. Syscalls that do not block pay for two slot accesses and one
//! per-CPU hash lookup (the histogram); only blocking ones pay for task storage.
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_prandom_u32, bpf_get_smp_processor_id, bpf_ktime_get_ns,
    },
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use gimbal_common::{
    count_slot, hist, CountSlot, Drop, ErrnoKey, LatencyHist, SyscallKey, SyscallStart, Timing,
    COUNT_SLOTS_PER_CPU, SYSCALL_COUNTS_ENTRIES, SYSCALL_ERRORS_ENTRIES,
    SYSCALL_HIST_DEFAULT_ENTRIES, TIMED_CGROUPS_ENTRIES, TIMED_SYSCALLS_ENTRIES,
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

/// Syscalls counted without a histogram (not timed), per (cgroup, syscall).
#[map(name = "SYSCALL_COUNTS")]
static SYSCALL_COUNTS: PerCpuHashMap<SyscallKey, u64> =
    PerCpuHashMap::with_max_entries(SYSCALL_COUNTS_ENTRIES, 0);

/// The busiest pairs' counts, `COUNT_SLOTS_PER_CPU` slots per CPU (CPU-major; the loader
/// sizes it to the host's CPUs). The agent claims slots for pairs it sees busy in
/// SYSCALL_COUNTS and reads them through shared memory; a pair's count is its slot's plus
/// its SYSCALL_COUNTS value, and neither ever moves to the other.
#[map(name = "SYSCALL_COUNT_SLOTS")]
static SYSCALL_COUNT_SLOTS: Array<CountSlot> =
    Array::with_max_entries(COUNT_SLOTS_PER_CPU, BPF_F_MMAPABLE);

/// Entry 0: time one timed syscall in this many, picked at random (1 or 0: every one);
/// the others are counted as if not timed. Written by the agent
/// (`[probes.syscall_latency] sample_one_in`).
#[map(name = "SAMPLE_ONE_IN")]
static SAMPLE_ONE_IN: Array<u32> = Array::with_max_entries(1, 0);

/// Map flag: userspace may mmap the array.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// A `Timing` per syscall number, written by the agent (all `Counted` until it does).
#[map(name = "TIMED_SYSCALLS")]
static TIMED_SYSCALLS: Array<u32> = Array::with_max_entries(TIMED_SYSCALLS_ENTRIES, 0);

/// The cgroup ids where `Timing::TargetCgroups` syscalls are timed; the value is unused.
#[map(name = "TIMED_CGROUPS")]
static TIMED_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(TIMED_CGROUPS_ENTRIES, 0);

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
    on_enter(regs, nr as u32);
    0
}

/// A syscall begins: `regs` is the thread's user register frame, `nr` its number. Shared
/// by the tracepoint (`sys_enter`) and the dispatcher hooks (dispatcher.rs).
#[inline(always)]
pub(crate) fn on_enter(regs: u64, nr: u32) {
    if !timed_here(nr) {
        return;
    }
    if let Some(slot) = SYSCALL_CPU_SLOT.get_ptr_mut(0) {
        let start = SyscallStart {
            // A syscall left out of the sample still fills the slot, with no start time,
            // so that its exit knows at once that it is only counted.
            ts_ns: if sampled() {
                // SAFETY: a helper without arguments.
                unsafe { bpf_ktime_get_ns() }
            } else {
                0
            },
            nr,
            _pad: 0,
        };
        // SAFETY: a valid map value of this CPU, written only by the thread running here.
        unsafe { *slot = CpuSlot { owner: regs, start } };
    }
}

/// Whether this timed syscall is in the sample (a uniform random pick, so that no
/// periodic pattern of syscalls can hide from it).
#[inline(always)]
fn sampled() -> bool {
    match SAMPLE_ONE_IN.get(0) {
        // SAFETY: a helper without arguments.
        Some(&n) if n > 1 => (unsafe { bpf_get_prandom_u32() }) % n == 0,
        _ => true,
    }
}

/// Whether syscall `nr` of the running thread is to be timed.
#[inline(always)]
fn timed_here(nr: u32) -> bool {
    match TIMED_SYSCALLS.get(nr) {
        Some(&t) if t == Timing::AllCgroups as u32 => true,
        Some(&t) if t == Timing::TargetCgroups as u32 => {
            // SAFETY: a helper without arguments.
            let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
            // SAFETY: the value is only tested for presence.
            unsafe { TIMED_CGROUPS.get(cgroup_id) }.is_some()
        }
        _ => false,
    }
}

/// The start of the kernel's `struct pt_regs`, up to the syscall number the thread
/// entered with; the verifier checks the access against the kernel's own type (BTF).
/// x86_64's, also where no target architecture is given (clippy on the bpf target).
#[cfg(not(bpf_target_arch = "aarch64"))]
#[repr(C)]
pub struct PtRegs {
    _gprs: [u64; 15],
    orig_ax: u64,
}

#[cfg(not(bpf_target_arch = "aarch64"))]
impl PtRegs {
    #[inline(always)]
    fn nr(&self) -> u32 {
        self.orig_ax as u32
    }
}

/// arm64 (Grace Hopper nodes): `user_regs` (x0-x30, sp, pc, pstate), `orig_x0`, then
/// `syscallno`.
#[cfg(bpf_target_arch = "aarch64")]
#[repr(C)]
pub struct PtRegs {
    _user_regs_and_orig_x0: [u64; 35],
    syscallno: i32,
}

#[cfg(bpf_target_arch = "aarch64")]
impl PtRegs {
    #[inline(always)]
    fn nr(&self) -> u32 {
        self.syscallno as u32
    }
}

/// A typed tracepoint (not raw) so that the syscall number is a plain load from the
/// thread's registers: a counted syscall never had a `sys_enter` that noted it.
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(struct pt_regs *regs, long ret)
    let regs: *const PtRegs = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    // SAFETY: `regs` is the tracepoint's own argument, which the kernel passes non-null;
    // the verifier checks the load against pt_regs' layout. The kernel's own `id` of this
    // event: -1 after rt_sigreturn restored the registers, or a syscall skipped by ptrace.
    let exit_nr = unsafe { (*regs).nr() };
    on_exit(regs as u64, exit_nr, ret);
    0
}

/// A syscall returns `ret`: counted, and timed if its start was noted. `nr` is the number
/// it is counted under when it was not timed. Shared like `on_enter`.
#[inline(always)]
pub(crate) fn on_exit(regs: u64, exit_nr: u32, ret: i64) {
    // SAFETY: a helper without arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let nr = match take_start(regs, exit_nr) {
        Some(start) => {
            // SAFETY: as above.
            let latency = unsafe { bpf_ktime_get_ns() }.saturating_sub(start.ts_ns);
            // The number it entered with, as its histogram has always been keyed.
            let key = SyscallKey {
                cgroup_id,
                nr: start.nr,
                _pad: 0,
            };
            record_latency(key, latency);
            start.nr
        }
        None => {
            record_count(SyscallKey {
                cgroup_id,
                nr: exit_nr,
                _pad: 0,
            });
            exit_nr
        }
    };
    if (-MAX_ERRNO..0).contains(&ret) {
        record_error(ErrnoKey {
            cgroup_id,
            nr,
            errno: (-ret) as u32,
        });
    }
}

/// The current thread's syscall start, from this CPU's slot or, if the thread was switched
/// out meanwhile, from its task storage; consumed so it is counted once. None for a
/// syscall that was not timed (or whose enter came before the agent attached).
#[inline(always)]
fn take_start(regs: u64, nr: u32) -> Option<SyscallStart> {
    let slot = SYSCALL_CPU_SLOT.get_ptr_mut(0)?;
    // SAFETY: `slot` is this CPU's map value and `spilled` the current thread's storage;
    // only the running thread touches either (see CpuSlot).
    unsafe {
        if (*slot).owner == regs {
            (*slot).owner = 0;
            let start = (*slot).start;
            // No start time: timed but left out of the sample, so only counted.
            return (start.ts_ns != 0).then_some(start);
        }
        // Task storage only for syscalls that may have been timed: a counted one skips it.
        if TIMED_SYSCALLS
            .get(nr)
            .is_none_or(|&t| t == Timing::Counted as u32)
        {
            return None;
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
        // Left out of the sample: nothing to carry (its exit, finding no start, counts it).
        if (*slot).start.ts_ns == 0 {
            (*slot).owner = 0;
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
fn record_count(key: SyscallKey) {
    if count_in_slot(&key) {
        return;
    }
    // A stack zero, not `&0` (see main.rs: promoted constants can alias loader globals).
    let zero = 0u64;
    if let Some(n) = per_cpu_slot(&SYSCALL_COUNTS, &key, &zero, Drop::SyscallCountsFull) {
        // SAFETY: a valid per-CPU map value, written by this CPU only.
        unsafe { *n += 1 };
    }
}

/// Counts the syscall in this CPU's slot for its pair, if the agent gave it one.
#[inline(always)]
fn count_in_slot(key: &SyscallKey) -> bool {
    // SAFETY: a helper without arguments.
    let base = unsafe { bpf_get_smp_processor_id() } * COUNT_SLOTS_PER_CPU;
    let first = count_slot(key.cgroup_id, key.nr);
    for way in [first, first ^ 1] {
        if let Some(s) = SYSCALL_COUNT_SLOTS.get_ptr_mut(base + way) {
            // SAFETY: a valid map value. This CPU's slots are counted only here; the agent
            // writes the key fields, and only of a slot it freed or has not yet claimed.
            unsafe {
                if (*s).cgroup_id == key.cgroup_id && (*s).nr == key.nr {
                    (*s).count += 1;
                    return true;
                }
            }
        }
    }
    false
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
