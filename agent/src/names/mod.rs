//! Turns the raw numbers the kernel reports (syscall numbers, errno values,
//! signal numbers) into the names used as Prometheus label values.
//!
//! Labels must be names wherever a name exists, because "read" means
//! something to a reader and 0 does not (and 0 is not even "read" on
//! aarch64). Numbers without a name still get a stable label such as
//! `syscall_999`, so nothing is dropped and label cardinality stays bounded
//! by what the kernel can report.

use std::borrow::Cow;

mod errno;
mod signals;
mod syscalls;

/// The syscall table for the architecture this agent is built for. Other
/// architectures get an empty table, so every syscall falls back to
/// `syscall_<nr>` there instead of getting a wrong name.
#[cfg(target_arch = "x86_64")]
const SYSCALLS: &[(u32, &str)] = syscalls::X86_64;
#[cfg(target_arch = "aarch64")]
const SYSCALLS: &[(u32, &str)] = syscalls::AARCH64;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const SYSCALLS: &[(u32, &str)] = &[];

/// Finds `nr` in a table sorted by number.
fn lookup(table: &'static [(u32, &'static str)], nr: u32) -> Option<&'static str> {
    table
        .binary_search_by_key(&nr, |&(n, _)| n)
        .ok()
        .map(|i| table[i].1)
}

/// The name of syscall `nr` on this architecture ("read", "getppid", ...),
/// or `syscall_<nr>` if it has none.
pub fn syscall_name(nr: u32) -> Cow<'static, str> {
    match lookup(SYSCALLS, nr) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(format!("syscall_{nr}")),
    }
}

/// The number of the syscall called `name` on this architecture, the
/// inverse of [`syscall_name`] for names in the table. A linear scan is
/// fine: this serves tests and config parsing, not the event path.
pub fn syscall_number(name: &str) -> Option<u32> {
    SYSCALLS
        .iter()
        .find(|&&(_, n)| n == name)
        .map(|&(nr, _)| nr)
}

/// The name of errno value `errno` ("ENOENT"), including the kernel-internal
/// codes 512 and up ("ERESTARTSYS"), or `errno_<n>` if it has none.
pub fn errno_name(errno: u32) -> Cow<'static, str> {
    match lookup(errno::ERRNO, errno) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(format!("errno_{errno}")),
    }
}

/// The name of signal `sig` ("SIGKILL", "SIGRTMIN+1", "SIGRTMAX"), or
/// `signal_<n>` if it has none.
pub fn signal_name(sig: u32) -> Cow<'static, str> {
    match signals::lookup(sig) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(format!("signal_{sig}")),
    }
}

/// The number of a signal named "SIGUSR1" (or "USR1"), standard or real-time.
pub fn signal_number(name: &str) -> Option<u32> {
    let name = name.trim();
    let full = if name.starts_with("SIG") {
        name.to_string()
    } else {
        format!("SIG{name}")
    };
    (1..=64).find(|&n| signals::lookup(n) == Some(full.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_numbers_by_name_with_or_without_the_sig_prefix() {
        assert_eq!(signal_number("SIGUSR1"), Some(10));
        assert_eq!(signal_number("TERM"), Some(15));
        assert_eq!(signal_number("SIGRTMIN+2"), Some(36));
        assert_eq!(signal_number("SIGNOPE"), None);
    }

    fn assert_sorted_and_unique(table: &[(u32, &str)]) {
        assert!(table.windows(2).all(|w| w[0].0 < w[1].0), "not sorted");
        let mut names: Vec<&str> = table.iter().map(|&(_, n)| n).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate name");
    }

    #[test]
    fn tables_are_sorted_without_duplicates() {
        assert_sorted_and_unique(syscalls::X86_64);
        assert_sorted_and_unique(syscalls::AARCH64);
        assert_sorted_and_unique(errno::ERRNO);
    }

    #[test]
    fn x86_64_table_known_values() {
        let t = syscalls::X86_64;
        assert_eq!(lookup(t, 0), Some("read"));
        assert_eq!(lookup(t, 1), Some("write"));
        assert_eq!(lookup(t, 59), Some("execve"));
        assert_eq!(lookup(t, 110), Some("getppid"));
        assert_eq!(lookup(t, 231), Some("exit_group"));
        assert_eq!(lookup(t, 257), Some("openat"));
        assert_eq!(lookup(t, 262), Some("newfstatat"));
        assert_eq!(lookup(t, 435), Some("clone3"));
        // The gap between the x86_64-only range and the shared 424+ range.
        assert_eq!(lookup(t, 400), None);
    }

    #[test]
    fn aarch64_table_known_values() {
        let t = syscalls::AARCH64;
        assert_eq!(lookup(t, 25), Some("fcntl"));
        assert_eq!(lookup(t, 44), Some("fstatfs"));
        assert_eq!(lookup(t, 56), Some("openat"));
        assert_eq!(lookup(t, 57), Some("close"));
        assert_eq!(lookup(t, 62), Some("lseek"));
        assert_eq!(lookup(t, 63), Some("read"));
        assert_eq!(lookup(t, 64), Some("write"));
        assert_eq!(lookup(t, 79), Some("newfstatat"));
        assert_eq!(lookup(t, 80), Some("fstat"));
        assert_eq!(lookup(t, 94), Some("exit_group"));
        assert_eq!(lookup(t, 173), Some("getppid"));
        assert_eq!(lookup(t, 220), Some("clone"));
        assert_eq!(lookup(t, 221), Some("execve"));
        assert_eq!(lookup(t, 222), Some("mmap"));
        assert_eq!(lookup(t, 435), Some("clone3"));
        // 244..=259 are reserved for arch-specific calls; arm64 has none.
        assert_eq!(lookup(t, 244), None);
        // Legacy calls aarch64 never had.
        for gone in ["open", "stat", "fork", "mmap2", "fcntl64", "llseek"] {
            assert!(t.iter().all(|&(_, n)| n != gone), "{gone} in aarch64 table");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn native_table_matches_libc() {
        assert_eq!(syscall_number("read"), Some(libc::SYS_read as u32));
        assert_eq!(syscall_number("getppid"), Some(libc::SYS_getppid as u32));
        assert_eq!(syscall_number("openat"), Some(libc::SYS_openat as u32));
        assert_eq!(
            syscall_number("newfstatat"),
            Some(libc::SYS_newfstatat as u32)
        );
    }

    #[test]
    fn syscall_round_trip_for_every_entry() {
        for &(nr, name) in SYSCALLS {
            assert_eq!(syscall_name(nr), name);
            assert_eq!(syscall_number(name), Some(nr), "{name}");
        }
    }

    #[test]
    fn syscall_fallbacks() {
        assert_eq!(syscall_name(9999), "syscall_9999");
        assert_eq!(syscall_name(u32::MAX), "syscall_4294967295");
        assert_eq!(syscall_number("no_such_syscall"), None);
        assert_eq!(syscall_number(""), None);
        // The fallback label is not a name, so it does not parse back.
        assert_eq!(syscall_number("syscall_9999"), None);
    }

    #[test]
    fn errno_known_values() {
        assert_eq!(errno_name(1), "EPERM");
        assert_eq!(errno_name(2), "ENOENT");
        assert_eq!(errno_name(libc::EAGAIN as u32), "EAGAIN");
        assert_eq!(errno_name(libc::EDEADLK as u32), "EDEADLK");
        assert_eq!(errno_name(libc::EOPNOTSUPP as u32), "EOPNOTSUPP");
        assert_eq!(errno_name(libc::ENOTSUP as u32), "EOPNOTSUPP");
        assert_eq!(errno_name(libc::ETIMEDOUT as u32), "ETIMEDOUT");
        assert_eq!(errno_name(libc::EHWPOISON as u32), "EHWPOISON");
        let internal = [
            "ERESTARTSYS",
            "ERESTARTNOINTR",
            "ERESTARTNOHAND",
            "ENOIOCTLCMD",
            "ERESTART_RESTARTBLOCK",
        ];
        for (errno, name) in (512..=516).zip(internal) {
            assert_eq!(errno_name(errno), name);
        }
        assert_eq!(errno_name(524), "ENOTSUPP");
    }

    #[test]
    fn errno_fallbacks() {
        assert_eq!(errno_name(0), "errno_0");
        assert_eq!(errno_name(41), "errno_41"); // unused between ELOOP and ENOMSG
        assert_eq!(errno_name(520), "errno_520");
        assert_eq!(errno_name(4095), "errno_4095");
    }

    #[test]
    fn signal_known_values_match_libc() {
        let libc_signals = [
            (libc::SIGHUP, "SIGHUP"),
            (libc::SIGINT, "SIGINT"),
            (libc::SIGQUIT, "SIGQUIT"),
            (libc::SIGILL, "SIGILL"),
            (libc::SIGTRAP, "SIGTRAP"),
            (libc::SIGABRT, "SIGABRT"),
            (libc::SIGBUS, "SIGBUS"),
            (libc::SIGFPE, "SIGFPE"),
            (libc::SIGKILL, "SIGKILL"),
            (libc::SIGUSR1, "SIGUSR1"),
            (libc::SIGSEGV, "SIGSEGV"),
            (libc::SIGUSR2, "SIGUSR2"),
            (libc::SIGPIPE, "SIGPIPE"),
            (libc::SIGALRM, "SIGALRM"),
            (libc::SIGTERM, "SIGTERM"),
            (libc::SIGSTKFLT, "SIGSTKFLT"),
            (libc::SIGCHLD, "SIGCHLD"),
            (libc::SIGCONT, "SIGCONT"),
            (libc::SIGSTOP, "SIGSTOP"),
            (libc::SIGTSTP, "SIGTSTP"),
            (libc::SIGTTIN, "SIGTTIN"),
            (libc::SIGTTOU, "SIGTTOU"),
            (libc::SIGURG, "SIGURG"),
            (libc::SIGXCPU, "SIGXCPU"),
            (libc::SIGXFSZ, "SIGXFSZ"),
            (libc::SIGVTALRM, "SIGVTALRM"),
            (libc::SIGPROF, "SIGPROF"),
            (libc::SIGWINCH, "SIGWINCH"),
            (libc::SIGIO, "SIGIO"),
            (libc::SIGPWR, "SIGPWR"),
            (libc::SIGSYS, "SIGSYS"),
        ];
        for (sig, name) in libc_signals {
            assert_eq!(signal_name(sig as u32), name);
        }
        assert_eq!(signal_name(7), "SIGBUS");
        assert_eq!(signal_name(10), "SIGUSR1");
        assert_eq!(signal_name(16), "SIGSTKFLT");
    }

    #[test]
    fn signal_realtime_range() {
        assert_eq!(signal_name(34), "SIGRTMIN");
        assert_eq!(signal_name(35), "SIGRTMIN+1");
        assert_eq!(signal_name(63), "SIGRTMIN+29");
        assert_eq!(signal_name(64), "SIGRTMAX");
        assert_eq!(libc::SIGRTMIN() as u32, signals::SIGRTMIN);
        assert_eq!(libc::SIGRTMAX() as u32, signals::SIGRTMAX);
        for sig in signals::SIGRTMIN + 1..signals::SIGRTMAX {
            let offset = sig - signals::SIGRTMIN;
            assert_eq!(signal_name(sig), format!("SIGRTMIN+{offset}"));
        }
    }

    #[test]
    fn signal_fallbacks() {
        assert_eq!(signal_name(0), "signal_0");
        assert_eq!(signal_name(32), "signal_32");
        assert_eq!(signal_name(33), "signal_33");
        assert_eq!(signal_name(65), "signal_65");
        assert_eq!(signal_name(u32::MAX), "signal_4294967295");
    }
}
