#[cfg(not(bpf_target_arch = "aarch64"))]
mod dispatcher;
mod exit;
#[cfg(feature = "bench")]
mod floor;
mod syscall;
mod tcp;
