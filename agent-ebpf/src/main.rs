//! Gimbal's kernel programs. One file per probe family under `probes/`; maps and globals
//! that more than one family uses live in `shared.rs`; every read of kernel memory goes
//! through `kernel_read.rs`. The benchmark floors (`probes/floor.rs`) are compiled only
//! with the `bench` feature, so the shipped object holds only what the agent attaches.
//!
//! Values the loader writes at load time (offsets, filters) are `aya_ebpf::Global`s, read
//! with `load()` (volatile: the compiler never folds the value compiled in). Zero initial
//! values for map inserts come from the stack, never `&0`: a promoted constant can share
//! `.rodata` bytes with a global the loader rewrites (it did: EXIT_TP_ARGS, making new TCP
//! flows start at 2^32 + 1).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod kernel_read;
#[cfg(target_arch = "bpf")]
mod probes;
#[cfg(target_arch = "bpf")]
mod shared;
#[cfg(target_arch = "bpf")]
mod task_storage;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here; this only satisfies no_std.
    loop {}
}

/// The crate only means something for bpfel-unknown-none; on the host it is an empty binary
/// so that `cargo clippy --workspace` covers the whole tree.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
