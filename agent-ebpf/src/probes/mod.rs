mod exit;
#[cfg(feature = "bench")]
mod floor;
mod syscall;
mod tcp;
