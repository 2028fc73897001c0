//! Benchmark floors, never attached by the agent. `cargo xtask bench` attaches them to tell
//! apart what any raw tracepoint costs (`floor_*`: empty programs), what timing a syscall
//! costs (`clock_*`: a clock read at each end and a per-CPU slot), and the rest of gimbal's
//! work (cgroup id, histogram lookup and update), so BENCHMARKS.md can say where the
//! nanoseconds go. Compiled only with the `bench` feature (agent: `bench-programs`).
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{map, raw_tracepoint},
    maps::PerCpuArray,
    programs::RawTracePointContext,
};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn floor_sys_enter(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn floor_sys_exit(_ctx: RawTracePointContext) -> i32 {
    0
}

/// [start, last latency] of this CPU.
#[map(name = "BENCH_CLOCK")]
static BENCH_CLOCK: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn clock_sys_enter(_ctx: RawTracePointContext) -> i32 {
    if let Some(s) = BENCH_CLOCK.get_ptr_mut(0) {
        // SAFETY: this CPU's map value; the helper takes no arguments.
        unsafe { (*s)[0] = bpf_ktime_get_ns() };
    }
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn clock_sys_exit(_ctx: RawTracePointContext) -> i32 {
    if let Some(s) = BENCH_CLOCK.get_ptr_mut(0) {
        // SAFETY: as in clock_sys_enter.
        unsafe { (*s)[1] = bpf_ktime_get_ns().wrapping_sub((*s)[0]) };
    }
    0
}

/// The dispatcher's floor: an empty fexit on the 64-bit syscall dispatcher (dispatcher.rs).
#[cfg(not(bpf_target_arch = "aarch64"))]
#[aya_ebpf::macros::fexit(function = "x64_sys_call")]
pub fn floor_x64_sys_exit(_ctx: aya_ebpf::programs::FExitContext) -> i32 {
    0
}
