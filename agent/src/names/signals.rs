//! Signal number to name table for Linux on x86_64 and the asm-generic
//! architectures (aarch64 included), which share these numbers.
//!
//! Written by hand: the numbers are ABI and have not changed in decades, and
//! the real-time range is named the way `kill -l` names it.

/// Standard signals, indexed by number minus one.
const STANDARD: [&str; 31] = [
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];

/// glibc keeps kernel signals 32 and 33 for itself, so the SIGRTMIN that
/// users see (and that `kill -l` prints) is 34.
pub(super) const SIGRTMIN: u32 = 34;
pub(super) const SIGRTMAX: u32 = 64;

/// Real-time signals SIGRTMIN..=SIGRTMAX, indexed by number minus SIGRTMIN.
/// Spelled out so every known signal has a `&'static str` and naming one
/// never allocates.
const REALTIME: [&str; 31] = [
    "SIGRTMIN",
    "SIGRTMIN+1",
    "SIGRTMIN+2",
    "SIGRTMIN+3",
    "SIGRTMIN+4",
    "SIGRTMIN+5",
    "SIGRTMIN+6",
    "SIGRTMIN+7",
    "SIGRTMIN+8",
    "SIGRTMIN+9",
    "SIGRTMIN+10",
    "SIGRTMIN+11",
    "SIGRTMIN+12",
    "SIGRTMIN+13",
    "SIGRTMIN+14",
    "SIGRTMIN+15",
    "SIGRTMIN+16",
    "SIGRTMIN+17",
    "SIGRTMIN+18",
    "SIGRTMIN+19",
    "SIGRTMIN+20",
    "SIGRTMIN+21",
    "SIGRTMIN+22",
    "SIGRTMIN+23",
    "SIGRTMIN+24",
    "SIGRTMIN+25",
    "SIGRTMIN+26",
    "SIGRTMIN+27",
    "SIGRTMIN+28",
    "SIGRTMIN+29",
    "SIGRTMAX",
];

/// The name of `sig`, or `None` if it has none (0, 32, 33, above 64).
pub(super) fn lookup(sig: u32) -> Option<&'static str> {
    match sig {
        1..=31 => STANDARD.get(sig as usize - 1).copied(),
        SIGRTMIN..=SIGRTMAX => REALTIME.get((sig - SIGRTMIN) as usize).copied(),
        _ => None,
    }
}
