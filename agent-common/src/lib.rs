//! Types and names shared by the kernel programs (agent-ebpf) and the userspace agent.
//!
//! Everything here is `#[repr(C)]` with explicit padding and no `bool`: the two sides are
//! compiled by different compilers for different targets and must agree byte for byte.
//! Enum numbers and map names are part of the contract between the two sides; never renumber.
#![no_std]

pub mod hist;

/// Map and global names, used by `#[map(name = ...)]` on the kernel side and by the loader.
pub mod names {
    pub const SYSCALL_START: &str = "SYSCALL_START";
    pub const SYSCALL_HIST: &str = "SYSCALL_HIST";
    pub const SYSCALL_ERRORS: &str = "SYSCALL_ERRORS";
    pub const SYSCALL_COUNTS: &str = "SYSCALL_COUNTS";
    pub const SYSCALL_COUNT_SLOTS: &str = "SYSCALL_COUNT_SLOTS";
    pub const TIMED_SYSCALLS: &str = "TIMED_SYSCALLS";
    pub const TIMED_CGROUPS: &str = "TIMED_CGROUPS";
    pub const SAMPLE_ONE_IN: &str = "SAMPLE_ONE_IN";
    pub const TCP_RETRANS: &str = "TCP_RETRANS";
    pub const EXIT_EVENTS: &str = "EXIT_EVENTS";
    pub const OOM_VICTIMS: &str = "OOM_VICTIMS";
    pub const DROPS: &str = "DROPS";
    pub const FILTER_CGROUP_ID: &str = "FILTER_CGROUP_ID";
    pub const TASK_OFFSETS: &str = "TASK_OFFSETS";
    pub const SOCK_OFFSETS: &str = "SOCK_OFFSETS";
    pub const FLOW_OFFSETS: &str = "FLOW_OFFSETS";
    pub const EXIT_TP_ARGS: &str = "EXIT_TP_ARGS";
}

/// Program names (the Rust function names of the entry points in agent-ebpf).
pub mod programs {
    pub const SYS_ENTER: &str = "sys_enter";
    pub const SYS_EXIT: &str = "sys_exit";
    /// The same two at the kernel's syscall dispatchers (fentry, fexit), one pair per
    /// dispatcher: 64-bit, 32-bit (`int 0x80`), x32. At most 15 characters, as every
    /// program name here: the kernel keeps no more (bpftool shows what it kept).
    pub const X64_SYS_ENTER: &str = "x64_sys_enter";
    pub const X64_SYS_EXIT: &str = "x64_sys_exit";
    pub const IA32_SYS_ENTER: &str = "ia32_sys_enter";
    pub const IA32_SYS_EXIT: &str = "ia32_sys_exit";
    pub const X32_SYS_ENTER: &str = "x32_sys_enter";
    pub const X32_SYS_EXIT: &str = "x32_sys_exit";
    pub const SCHED_SWITCH: &str = "sched_switch";
    pub const TCP_RETRANSMIT: &str = "tcp_retransmit_skb";
    pub const PROCESS_EXIT: &str = "sched_process_exit";
    pub const OOM_MARK_VICTIM: &str = "oom_mark_victim";
    /// Benchmark floors only: in the object when agent-ebpf is built with its `bench`
    /// feature (see agent-ebpf probes/floor.rs), never in the shipped one.
    pub const FLOOR_SYS_ENTER: &str = "floor_sys_enter";
    pub const FLOOR_SYS_EXIT: &str = "floor_sys_exit";
    pub const CLOCK_SYS_ENTER: &str = "clock_sys_enter";
    pub const CLOCK_SYS_EXIT: &str = "clock_sys_exit";
    pub const FLOOR_X64_SYS_EXIT: &str = "floor_x64_sys_exit";
}

/// Capacity of the kernel maps whose size does not depend on the CPU count.
pub const SYSCALL_ERRORS_ENTRIES: u32 = 16_384;
/// (cgroup, syscall) pairs counted without a histogram: 8 bytes per CPU each.
pub const SYSCALL_COUNTS_ENTRIES: u32 = 16_384;
/// Syscall numbers TIMED_SYSCALLS covers; higher ones are counted, never timed.
pub const TIMED_SYSCALLS_ENTRIES: u32 = 1_024;
/// Cgroups whose `Timing::TargetCgroups` syscalls are timed (the watched targets').
pub const TIMED_CGROUPS_ENTRIES: u32 = 4_096;
pub const TCP_RETRANS_ENTRIES: u32 = 8_192;
pub const OOM_VICTIMS_ENTRIES: u32 = 1_024;
/// Default SYSCALL_HIST capacity; the loader resizes it to fit a memory budget.
pub const SYSCALL_HIST_DEFAULT_ENTRIES: u32 = 4_096;
/// Default ring buffer size for exit events (bytes, a power of two pages).
pub const EXIT_RING_DEFAULT_BYTES: u32 = 256 * 1024;

/// How a syscall number is handled, the value of TIMED_SYSCALLS: whether its latency
/// goes into a histogram (which costs a clock read at each end and a program on every
/// context switch) or it is only counted at its exit.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timing {
    /// Counted (with its errors), never timed.
    Counted = 0,
    /// Timed in every cgroup.
    AllCgroups = 1,
    /// Timed in the cgroups of TIMED_CGROUPS, counted elsewhere.
    TargetCgroups = 2,
}

/// Why the kernel side could not record something: index into the `DROPS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// SYSCALL_HIST full: a new (cgroup, syscall) pair could not be added.
    SyscallHistFull = 0,
    /// SYSCALL_ERRORS full.
    SyscallErrorsFull = 1,
    /// TCP_RETRANS full: a new flow could not be added.
    TcpFlowsFull = 2,
    /// EXIT_EVENTS ring buffer had no room for an exit event.
    ExitRingFull = 3,
    /// A read of the exiting task (parent, leader, exit code, comm...) failed: the exit
    /// event was not sent.
    ExitReadFailed = 4,
    /// `mark_victim` could not read the victim's pid: its exit will not say `oom_killed`.
    OomVictimReadFailed = 5,
    /// A read of the retransmitting socket's flow failed: the retransmit was not counted.
    TcpFlowReadFailed = 6,
    /// A read of the socket's owner cgroup failed: the retransmit was counted under the
    /// `unknown` cgroup.
    TcpCgroupReadFailed = 7,
    /// `sched_switch` could not get the outgoing thread's task storage (out of memory):
    /// its pending syscall is not timed.
    SyscallSpillFailed = 8,
    /// SYSCALL_COUNTS full: a new (cgroup, syscall) pair could not be counted.
    SyscallCountsFull = 9,
}
pub const DROP_KINDS: u32 = 10;
/// The probe whose loss each `Drop` counts, by index (the `probe` label).
pub const DROP_PROBES: [&str; DROP_KINDS as usize] = [
    "syscall_latency",
    "syscall_latency",
    "tcp_retransmit",
    "process_exit",
    "process_exit",
    "process_exit",
    "tcp_retransmit",
    "tcp_retransmit",
    "syscall_latency",
    "syscall_latency",
];

/// Key of SYSCALL_HIST: one latency histogram per (cgroup, syscall).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SyscallKey {
    /// cgroup2 id (the inode number of the cgroup's directory).
    pub cgroup_id: u64,
    pub nr: u32,
    pub _pad: u32,
}

/// Value of SYSCALL_START: when the current syscall of a thread began.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallStart {
    /// bpf_ktime_get_ns() at sys_enter; 0 once consumed by sys_exit.
    pub ts_ns: u64,
    pub nr: u32,
    pub _pad: u32,
}

/// Per-CPU latency histogram. Buckets are u32 to halve memory on many-CPU hosts; userspace
/// reads them far more often than one bucket of one CPU can wrap, and takes wrapping deltas.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LatencyHist {
    pub sum_ns: u64,
    pub buckets: [u32; hist::BUCKETS],
}

/// Slots per CPU in SYSCALL_COUNT_SLOTS (a power of two): the busiest (cgroup, syscall)
/// pairs, which the agent places there, are counted by an array access instead of a
/// hash lookup.
pub const COUNT_SLOTS_PER_CPU: u32 = 1 << COUNT_SLOTS_BITS;
const COUNT_SLOTS_BITS: u32 = 10;

/// One slot of SYSCALL_COUNT_SLOTS (a shared-memory array, CPU-major). Free while
/// `cgroup_id` is 0 or `nr` is `FREE_SLOT_NR`; the kernel counts a syscall into it only
/// when both match, and only the agent writes the two.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CountSlot {
    pub cgroup_id: u64,
    pub nr: u32,
    pub _pad: u32,
    /// Syscalls of (cgroup_id, nr) on this CPU since the slot was claimed.
    pub count: u64,
}

/// `nr` of a free slot: no syscall has this number.
pub const FREE_SLOT_NR: u32 = u32::MAX;

/// The first of the two slots, `s` and `s ^ 1`, where the pair may be cached
/// (Fibonacci hashing: one multiply, no loop, the same on both sides).
#[inline(always)]
pub fn count_slot(cgroup_id: u64, nr: u32) -> u32 {
    let x = (cgroup_id ^ ((nr as u64) << 48)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> (64 - COUNT_SLOTS_BITS)) as u32
}

/// Key of SYSCALL_ERRORS.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrnoKey {
    pub cgroup_id: u64,
    pub nr: u32,
    /// Positive errno (e.g. 2 for ENOENT).
    pub errno: u32,
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Key of TCP_RETRANS: one counter per flow and owning cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// cgroup2 id of the socket's owner, 0 when it cannot be known.
    pub cgroup_id: u64,
    pub family: u16,
    /// Host byte order.
    pub sport: u16,
    pub dport: u16,
    pub _pad: u16,
    /// IPv4 addresses use the first 4 bytes.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// `ExitEvent::flags` bits.
pub const EXIT_FLAG_OOM_KILLED: u32 = 1;

/// One whole-process exit, sent through the EXIT_EVENTS ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitEvent {
    pub cgroup_id: u64,
    /// Nanoseconds from the process's start to its exit.
    pub lifetime_ns: u64,
    pub pid: u32,
    pub ppid: u32,
    /// The kernel's wait status: exit code << 8, or signal | 0x80 when a core was dumped.
    pub exit_code: u32,
    pub flags: u32,
    pub comm: [u8; 16],
}

/// Offset that is unknown on this kernel; the kernel side then skips the read.
pub const OFFSET_UNKNOWN: u32 = u32::MAX;

/// `task_struct` / `signal_struct` field offsets from the running kernel's BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskOffsets {
    pub exit_code: u32,
    pub tgid: u32,
    pub real_parent: u32,
    pub group_leader: u32,
    pub start_time: u32,
    pub signal: u32,
    /// `signal_struct.live`: used to find the last thread when the tracepoint has no group_dead.
    pub signal_live: u32,
    pub comm: u32,
    pub pid: u32,
    pub _pad: u32,
}

/// Offsets of the path from a `struct sock` to its cgroup2 id, from BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockOffsets {
    /// `sock.sk_cgrp_data` + `sock_cgroup_data.cgroup`.
    pub sk_cgroup: u32,
    /// `cgroup.kn`.
    pub cgroup_kn: u32,
    /// `kernfs_node.id`.
    pub kn_id: u32,
    pub _pad: u32,
}

/// The flow of a `struct sock` (fields of its `sock_common`), from BTF: the raw
/// `tcp_retransmit_skb` tracepoint hands over the socket, not the formatted fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowOffsets {
    pub family: u32,
    /// `skc_num`: the local port, host byte order.
    pub num: u32,
    /// `skc_dport`: the remote port, network byte order.
    pub dport: u32,
    pub rcv_saddr: u32,
    pub daddr: u32,
    pub v6_rcv_saddr: u32,
    pub v6_daddr: u32,
    pub _pad: u32,
}

/// How this kernel's exit tracepoints pass their arguments (raw tracepoint `args[]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitTpArgs {
    /// 1 when `sched_process_exit` passes `group_dead` as its second argument (6.16+);
    /// older kernels are read through `signal->live`.
    pub group_dead: u32,
    /// 1 when `oom:mark_victim` passes the victim's task (6.8+), 0 when its pid.
    pub victim_is_task: u32,
}

// SAFETY (each impl below): the type is repr(C) and Copy, with explicit padding fields and
// only integer fields, so every bit pattern the kernel writes is a valid value.
#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: see above.
    unsafe impl aya::Pod for SyscallKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for SyscallStart {}
    // SAFETY: see above.
    unsafe impl aya::Pod for LatencyHist {}
    // SAFETY: see above.
    unsafe impl aya::Pod for ErrnoKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for FlowKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for ExitEvent {}
    // SAFETY: see above.
    unsafe impl aya::Pod for TaskOffsets {}
    // SAFETY: see above.
    unsafe impl aya::Pod for SockOffsets {}
    // SAFETY: see above.
    unsafe impl aya::Pod for FlowOffsets {}
    // SAFETY: see above.
    unsafe impl aya::Pod for ExitTpArgs {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drop_kind_has_a_probe_and_the_numbers_are_dense() {
        // DROPS is indexed by the enum's number: a gap or a kind past DROP_KINDS would be
        // counted nowhere (the kernel's lookup fails) or read nowhere (userspace stops early).
        let last = Drop::SyscallCountsFull as u32;
        assert_eq!(last + 1, DROP_KINDS);
        assert_eq!(DROP_PROBES.len(), DROP_KINDS as usize);
    }
}
