//! Process exits: the raw `sched_process_exit` tracepoint for the last thread of each
//! process, sent to userspace through a ring buffer; raw `mark_victim` marks OOM kills.
//!
//! Raw tracepoints attach without perf_event_open (refused without CAP_SYS_ADMIN where
//! perf_event_paranoid=3). The tracepoint runs in the exiting task, so `current` is the
//! task; its fields are read at offsets the loader found in the running kernel's BTF (Rust
//! eBPF has no CO-RE).
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
    },
    macros::{map, raw_tracepoint},
    maps::{LruHashMap, RingBuf},
    programs::RawTracePointContext,
    Global,
};
use gimbal_common::{
    Drop, ExitEvent, ExitTpArgs, TaskOffsets, EXIT_FLAG_OOM_KILLED, EXIT_RING_DEFAULT_BYTES,
    OFFSET_UNKNOWN, OOM_VICTIMS_ENTRIES,
};

use crate::{
    kernel_read::{read_at, ReadFailed},
    shared::{cgroup_wanted, count_drop},
};

/// Resized by the loader from config.
#[map(name = "EXIT_EVENTS")]
static EXIT_EVENTS: RingBuf = RingBuf::with_byte_size(EXIT_RING_DEFAULT_BYTES, 0);

/// Pids chosen by the OOM killer that have not exited yet.
#[map(name = "OOM_VICTIMS")]
static OOM_VICTIMS: LruHashMap<u32, u32> = LruHashMap::with_max_entries(OOM_VICTIMS_ENTRIES, 0);

#[no_mangle]
static TASK_OFFSETS: Global<TaskOffsets> = Global::new(TaskOffsets {
    exit_code: OFFSET_UNKNOWN,
    tgid: OFFSET_UNKNOWN,
    real_parent: OFFSET_UNKNOWN,
    group_leader: OFFSET_UNKNOWN,
    start_time: OFFSET_UNKNOWN,
    signal: OFFSET_UNKNOWN,
    signal_live: OFFSET_UNKNOWN,
    comm: OFFSET_UNKNOWN,
    pid: OFFSET_UNKNOWN,
    _pad: 0,
});

#[no_mangle]
static EXIT_TP_ARGS: Global<ExitTpArgs> = Global::new(ExitTpArgs {
    group_dead: 0,
    victim_is_task: 0,
});

/// `sched_process_exit(struct task_struct *p[, bool group_dead])`.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(ctx: RawTracePointContext) -> i32 {
    if let Err(ReadFailed) = try_exit(&ctx) {
        count_drop(Drop::ExitReadFailed);
    }
    0
}

/// `mark_victim(int pid)`, or `mark_victim(struct task_struct *task, uid_t uid)` (6.8+).
#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn oom_mark_victim(ctx: RawTracePointContext) -> i32 {
    let first: u64 = ctx.arg(0);
    let pid = if EXIT_TP_ARGS.load().victim_is_task != 0 {
        match read_at::<u32>(first, TASK_OFFSETS.load().pid) {
            Ok(pid) => pid,
            Err(ReadFailed) => {
                count_drop(Drop::OomVictimReadFailed);
                return 0;
            }
        }
    } else {
        first as u32
    };
    let _ = OOM_VICTIMS.insert(pid, 1, 0);
    0
}

fn try_exit(ctx: &RawTracePointContext) -> Result<(), ReadFailed> {
    // SAFETY: a helper without arguments, callable from any program.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    if !cgroup_wanted(cgroup_id) {
        return Ok(());
    }
    let t = TASK_OFFSETS.load();
    let tp = EXIT_TP_ARGS.load();
    // SAFETY: a helper without arguments; the pointer is only used as a read base.
    let task = unsafe { bpf_get_current_task() };
    if !is_last_thread(ctx, task, &t, &tp)? {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    let leader: u64 = read_at(task, t.group_leader)?;
    let parent: u64 = read_at(task, t.real_parent)?;
    let started: u64 = read_at(leader, t.start_time)?;
    let mut flags = 0;
    for pid in [tgid, tid] {
        // SAFETY: the reference is only tested for presence, never held across an update.
        if unsafe { OOM_VICTIMS.get(pid) }.is_some() {
            flags |= EXIT_FLAG_OOM_KILLED;
            let _ = OOM_VICTIMS.remove(pid);
        }
    }
    let event = ExitEvent {
        cgroup_id,
        // SAFETY: a helper without arguments.
        lifetime_ns: unsafe { bpf_ktime_get_ns() }.saturating_sub(started),
        pid: tgid,
        ppid: read_at(parent, t.tgid)?,
        exit_code: read_at(task, t.exit_code)?,
        flags,
        // The leader's name: the last thread's may be a worker thread's name.
        comm: read_at(leader, t.comm)?,
    };
    match EXIT_EVENTS.reserve::<ExitEvent>(0) {
        Some(mut slot) => {
            slot.write(event);
            slot.submit(0);
        }
        None => count_drop(Drop::ExitRingFull),
    }
    Ok(())
}

/// Whether the exiting thread is the last of its process (the process exits with it).
fn is_last_thread(
    ctx: &RawTracePointContext,
    task: u64,
    t: &TaskOffsets,
    tp: &ExitTpArgs,
) -> Result<bool, ReadFailed> {
    if tp.group_dead != 0 {
        // A bool in a 64-bit argument slot: only the low byte is defined.
        let dead: u64 = ctx.arg(1);
        return Ok(dead & 0xff != 0);
    }
    // Kernels before 6.16: do_exit() has already decremented signal->live.
    let signal: u64 = read_at(task, t.signal)?;
    let live: i32 = read_at(signal, t.signal_live)?;
    Ok(live == 0)
}
