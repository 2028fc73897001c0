//! The syscall programs attached to the kernel's syscall dispatchers with fentry/fexit
//! instead of the `raw_syscalls` tracepoints (x86_64 kernels with the dispatchers, 6.9 on
//! and the stable kernels that took the 2024 branch-history fix, where fentry is allowed).
//!
//! Why: attaching any syscall tracepoint switches every thread of the node onto the
//! kernel's slow syscall path; a trampoline on the dispatcher does not (whether it is
//! cheaper overall is measured in BENCHMARKS.md, "Where syscalls are hooked"). Every
//! dispatcher the kernel has is hooked (64-bit, 32-bit `int 0x80`, x32), so no syscall ABI
//! is a blind spot; the loader uses these only when it can attach the exit to all of them.
//! The bodies are the tracepoints' own (syscall.rs `on_enter`, `on_exit`).
use aya_ebpf::{
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};

use super::syscall::{on_enter, on_exit};

/// `long NAME(const struct pt_regs *regs, unsigned int nr)`: an entry program and an exit
/// program for each dispatcher.
macro_rules! dispatcher {
    ($dispatcher:literal, $entry:ident, $exit:ident) => {
        #[fentry(function = $dispatcher)]
        pub fn $entry(ctx: FEntryContext) -> i32 {
            let regs: u64 = ctx.arg(0);
            let nr: u64 = ctx.arg(1);
            on_enter(regs, nr as u32);
            0
        }

        #[fexit(function = $dispatcher)]
        pub fn $exit(ctx: FExitContext) -> i32 {
            let regs: u64 = ctx.arg(0);
            let nr: u64 = ctx.arg(1);
            // The return value follows the arguments.
            let ret: i64 = ctx.arg(2);
            on_exit(regs, nr as u32, ret);
            0
        }
    };
}

dispatcher!("x64_sys_call", x64_sys_enter, x64_sys_exit);
dispatcher!("ia32_sys_call", ia32_sys_enter, ia32_sys_exit);
dispatcher!("x32_sys_call", x32_sys_enter, x32_sys_exit);
