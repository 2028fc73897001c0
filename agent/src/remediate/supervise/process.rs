//! One supervised process: started by the agent (a child, waited with waitpid) or adopted
//! from a previous agent (a pidfd, which pins the process so a reused PID is never hit).
use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::process::{CommandExt, ExitStatusExt},
    },
    path::Path,
    time::{Duration, Instant},
};

use tokio::io::unix::AsyncFd;

use crate::{config::SuperviseConfig, names::signal_name};

/// The PATH a supervised process gets; nothing of the agent's own environment leaks in
/// (NOTIFY_SOCKET, say, would let it speak for the agent to systemd).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct Proc {
    pub pid: u32,
    /// Clock ticks since boot (/proc/<pid>/stat field 22): with the pid, its identity.
    pub start_time: u64,
    pub started: Instant,
    running: Running,
}

enum Running {
    Child(tokio::process::Child),
    Adopted(AsyncFd<OwnedFd>),
}

/// How a run ended.
pub struct Ended {
    /// Exit status 0.
    pub success: bool,
    /// "exited with status 3", "killed by SIGKILL".
    pub how: String,
}

impl Proc {
    /// Starts `config`'s command in its own session, in `cgroup` when given.
    pub fn spawn(config: &SuperviseConfig, cgroup: Option<&Path>) -> io::Result<Self> {
        let (program, args) = config
            .command
            .split_first()
            .ok_or_else(|| io::Error::other("empty command"))?;
        let mut cmd = std::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .env("PATH", PATH)
            .envs(&config.env)
            .current_dir(&config.cwd)
            .stdin(std::process::Stdio::null());
        if let Some(user) = &config.user {
            let (uid, gid, home) = lookup_user(user)?;
            cmd.uid(uid).gid(gid).env("USER", user).env("HOME", home);
        }
        let procs = match cgroup {
            Some(dir) => Some(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join("cgroup.procs"))?,
            ),
            None => None,
        };
        let procs_fd = procs.as_ref().map(|f| f.as_raw_fd());
        // SAFETY: between fork and exec only async-signal-safe calls (setsid, write).
        unsafe {
            cmd.pre_exec(move || {
                // Its own session: the agent's terminal and process group are not its.
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(fd) = procs_fd {
                    // "0" moves the writer, before exec, so no code runs outside the cgroup.
                    if libc::write(fd, b"0".as_ptr().cast(), 1) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = tokio::process::Command::from(cmd).spawn()?;
        drop(procs);
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("exited at once"))?;
        Ok(Self {
            pid,
            start_time: start_time(pid).unwrap_or(0),
            started: Instant::now(),
            running: Running::Child(child),
        })
    }

    /// Takes over a process a previous agent started, if it is still the same process.
    pub fn adopt(pid: u32, expected_start: u64) -> Option<Self> {
        let fd = pidfd_open(pid).ok()?;
        // Checked after the pidfd pins the pid: a process that ended and whose pid was
        // reused since has another start time.
        let start = start_time(pid)?;
        if start != expected_start {
            return None;
        }
        let ran = uptime_ticks().map(|now| now.saturating_sub(start));
        let ran = ran.map(|t| Duration::from_secs_f64(t as f64 / ticks_per_sec()));
        Some(Self {
            pid,
            start_time: start,
            started: Instant::now()
                .checked_sub(ran.unwrap_or_default())
                .unwrap_or_else(Instant::now),
            // SAFETY: the OwnedFd stays open and the same for the AsyncFd's whole life.
            running: Running::Adopted(unsafe { AsyncFd::register(fd) }.ok()?),
        })
    }

    /// Until it ends.
    pub async fn wait(&mut self) -> Ended {
        match &mut self.running {
            Running::Child(child) => match child.wait().await {
                Ok(status) => describe(status),
                Err(e) => Ended {
                    success: false,
                    how: format!("cannot be waited for: {e}"),
                },
            },
            Running::Adopted(fd) => {
                // A pidfd turns readable when the process ends; its parent (init) reaps it.
                let _ = fd.readable().await;
                Ended {
                    success: false,
                    how: "ended (status unknown: started by a previous agent)".into(),
                }
            }
        }
    }

    /// Sends `sig` to this very process (never to a reused pid).
    pub fn signal(&self, sig: i32) -> io::Result<()> {
        let rc = match &self.running {
            // Not yet waited for, so its pid cannot have been reused.
            Running::Child(_) => unsafe { libc::kill(self.pid as i32, sig) },
            Running::Adopted(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.get_ref().as_raw_fd(),
                    sig,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                ) as i32
            },
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn describe(status: std::process::ExitStatus) -> Ended {
    match (status.code(), status.signal()) {
        (Some(code), _) => Ended {
            success: code == 0,
            how: format!("exited with status {code}"),
        },
        (None, Some(sig)) => Ended {
            success: false,
            how: format!(
                "killed by {}{}",
                signal_name(sig as u32),
                if status.core_dumped() {
                    " (core dumped)"
                } else {
                    ""
                }
            ),
        },
        (None, None) => Ended {
            success: false,
            how: format!("ended: {status}"),
        },
    }
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the returned fd is owned by us.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Field 22 of /proc/<pid>/stat (after the command, which may contain spaces or ')').
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
}

fn uptime_ticks() -> Option<u64> {
    let up = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = up.split_whitespace().next()?.parse().ok()?;
    Some((secs * ticks_per_sec()) as u64)
}

/// (uid, gid, home) of a user name or numeric uid.
fn lookup_user(user: &str) -> io::Result<(u32, u32, String)> {
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0u8; 16 * 1024];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    let rc = match user.parse::<u32>() {
        // SAFETY: buffers outlive the call; `out` points into `pw` on success.
        Ok(uid) => unsafe {
            libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out)
        },
        Err(_) => {
            let name = CString::new(user).map_err(io::Error::other)?;
            unsafe {
                libc::getpwnam_r(
                    name.as_ptr(),
                    &mut pw,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut out,
                )
            }
        }
    };
    if rc != 0 || out.is_null() {
        return Err(io::Error::other(format!("no user `{user}` on this host")));
    }
    // SAFETY: pw_dir is a NUL-terminated string inside `buf`.
    let home = unsafe { std::ffi::CStr::from_ptr(pw.pw_dir) }
        .to_string_lossy()
        .into_owned();
    Ok((pw.pw_uid, pw.pw_gid, home))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_read_after_a_command_with_spaces_and_parentheses() {
        let stat = "4242 (we ird) cmd) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn users_resolve_by_name_and_uid_and_unknown_ones_are_named() {
        assert_eq!(lookup_user("root").unwrap().0, 0);
        assert_eq!(lookup_user("0").unwrap().1, 0);
        let e = lookup_user("no-such-user-gimbal").unwrap_err();
        assert!(e.to_string().contains("no-such-user-gimbal"), "{e}");
    }
}
