mod exit;
mod syscall;
mod tcp;
