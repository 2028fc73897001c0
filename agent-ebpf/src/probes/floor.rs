//! The benchmark's floor: an empty raw-tracepoint pair on sys_enter/sys_exit. Never attached
//! by the agent; `cargo xtask bench` attaches it to measure what any raw tracepoint costs,
//! so gimbal's own work can be told apart from the kernel's dispatch.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn floor_sys_enter(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn floor_sys_exit(_ctx: RawTracePointContext) -> i32 {
    0
}
