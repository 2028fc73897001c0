//! What a process exit means: the kernel's wait status decoded into the labels a user reads.
use std::borrow::Cow;

use gimbal_common::{ExitEvent, EXIT_FLAG_OOM_KILLED};

use crate::names::signal_name;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitReason {
    /// "exited", "signaled" or "oom_killed".
    pub reason: &'static str,
    /// The exit code ("3") or the signal's name ("SIGKILL").
    pub code: Cow<'static, str>,
    pub core_dumped: bool,
}

impl ExitReason {
    /// A kill, not an exit or a polite stop: an OOM kill, or a signal other than SIGTERM,
    /// SIGINT or SIGHUP. What the built-in kill alerts report.
    pub fn is_kill(&self) -> bool {
        match self.reason {
            "oom_killed" => true,
            "signaled" => !matches!(&*self.code, "SIGTERM" | "SIGINT" | "SIGHUP"),
            _ => false,
        }
    }
}

/// Decodes `task->exit_code` the way waitpid(2) does: low 7 bits the signal, bit 7 the
/// core-dump flag, bits 8..16 the exit status.
pub fn decode(event: &ExitEvent) -> ExitReason {
    let status = event.exit_code;
    let signal = status & 0x7f;
    let core_dumped = status & 0x80 != 0;
    if event.flags & EXIT_FLAG_OOM_KILLED != 0 {
        return ExitReason {
            reason: "oom_killed",
            code: signal_name(signal),
            core_dumped,
        };
    }
    if signal == 0 {
        let code = (status >> 8) & 0xff;
        return ExitReason {
            reason: "exited",
            code: Cow::Owned(code.to_string()),
            core_dumped: false,
        };
    }
    ExitReason {
        reason: "signaled",
        code: signal_name(signal),
        core_dumped,
    }
}

/// The comm as text: NUL-terminated bytes, made valid UTF-8 by [`super::text`].
pub fn comm(event: &ExitEvent) -> String {
    let end = event
        .comm
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(event.comm.len());
    super::text::from_bytes(&event.comm[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kills_are_oom_kills_and_impolite_signals_only() {
        let kill = |status, flags| decode(&event(status, flags)).is_kill();
        assert!(kill(9, 0), "SIGKILL");
        assert!(kill(6 | 0x80, 0), "SIGABRT with a core");
        assert!(kill(9, EXIT_FLAG_OOM_KILLED), "OOM kill");
        assert!(!kill(15, 0), "SIGTERM is a polite stop");
        assert!(!kill(2, 0) && !kill(1, 0), "SIGINT, SIGHUP");
        assert!(!kill(3 << 8, 0), "exit 3");
    }

    fn event(exit_code: u32, flags: u32) -> ExitEvent {
        ExitEvent {
            cgroup_id: 1,
            lifetime_ns: 0,
            pid: 1,
            ppid: 0,
            exit_code,
            flags,
            comm: *b"sleep\0\0\0\0\0\0\0\0\0\0\0",
        }
    }

    #[test]
    fn decodes_like_waitpid() {
        assert_eq!(
            decode(&event(3 << 8, 0)),
            ExitReason {
                reason: "exited",
                code: "3".into(),
                core_dumped: false
            }
        );
        assert_eq!(
            decode(&event(9, 0)),
            ExitReason {
                reason: "signaled",
                code: "SIGKILL".into(),
                core_dumped: false
            }
        );
        assert_eq!(
            decode(&event(11 | 0x80, 0)),
            ExitReason {
                reason: "signaled",
                code: "SIGSEGV".into(),
                core_dumped: true
            }
        );
        assert_eq!(
            decode(&event(9, EXIT_FLAG_OOM_KILLED)),
            ExitReason {
                reason: "oom_killed",
                code: "SIGKILL".into(),
                core_dumped: false
            }
        );
        assert_eq!(comm(&event(0, 0)), "sleep");
    }
}
