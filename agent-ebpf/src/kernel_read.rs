//! The one way the programs read kernel memory: a fallible copy at a base plus an offset
//! the loader found in BTF. Safe to call: `bpf_probe_read_kernel` copies through the
//! kernel's fault-handling path, so a bad address is an error, never a fault, and the
//! types it may produce accept every bit pattern.

use aya_ebpf::helpers::bpf_probe_read_kernel;

/// A kernel read failed; the caller counts it in `DROPS` under its own `Drop` kind.
#[derive(Clone, Copy)]
pub struct ReadFailed;

/// Plain data that any bytes copied from the kernel form a valid value of.
pub trait KernelPlain: Copy + sealed::Sealed {}

mod sealed {
    pub trait Sealed {}
}

macro_rules! plain {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl KernelPlain for $t {}
    )*};
}
plain!(u16, u32, i32, u64, [u8; 4], [u8; 16]);

/// The `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read_at<T: KernelPlain>(base: u64, offset: u32) -> Result<T, ReadFailed> {
    let addr = base.wrapping_add(u64::from(offset)) as *const T;
    // SAFETY: the helper never dereferences `addr` itself (a bad one is an error), and
    // `KernelPlain` types are valid for any bytes it copies.
    unsafe { bpf_probe_read_kernel(addr) }.map_err(|_| ReadFailed)
}
