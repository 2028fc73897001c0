mod exit;
mod floor;
mod syscall;
mod tcp;
