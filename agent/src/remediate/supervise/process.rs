//! One supervised process, always held by a pidfd (which pins it, so a reused PID is never
//! signalled): started by the agent (clone3, then waitid on the pidfd for its exit status)
//! or adopted from a previous agent (pidfd_open; its status is init's to read).
use std::{
    ffi::{CString, OsStr},
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
    time::{Duration, Instant},
};

use tokio::io::unix::AsyncFd;

use crate::{config::SuperviseConfig, host::procfs, names::signal_name};

/// The PATH a supervised process gets; nothing of the agent's own environment leaks in
/// (NOTIFY_SOCKET, say, would let it speak for the agent to systemd).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct Proc {
    pub pid: u32,
    /// Clock ticks since boot (/proc/<pid>/stat field 22): with the pid, its identity.
    pub start_time: u64,
    pub started: Instant,
    /// Readable once the process ended; signals sent through it reach this process only.
    pidfd: AsyncFd<OwnedFd>,
}

/// How a run ended.
pub struct Ended {
    /// Exit status 0.
    pub success: bool,
    /// "exited with status 3", "killed by SIGKILL".
    pub how: String,
}

impl Proc {
    /// Starts `config`'s command in its own session, born in `cgroup` when given.
    pub fn spawn(config: &SuperviseConfig, cgroup: Option<&Path>) -> io::Result<Self> {
        let exec = Exec::prepare(config)?;
        let cgroup_dir = match cgroup {
            Some(dir) => Some(OwnedFd::from(std::fs::File::open(dir)?)),
            None => None,
        };
        let (pid, pidfd) = exec.spawn(cgroup_dir.as_ref().map(|f| f.as_raw_fd()))?;
        Ok(Self {
            pid,
            start_time: start_time(pid).unwrap_or(0),
            started: Instant::now(),
            // SAFETY: the OwnedFd stays open and the same for the AsyncFd's whole life.
            pidfd: unsafe { AsyncFd::register(pidfd) }.map_err(|e| e.into_parts().1)?,
        })
    }

    /// Takes over a process a previous agent started, if it is still the same process.
    pub fn adopt(pid: u32, expected_start: u64) -> Option<Self> {
        let fd = super::super::pidfd::open(pid).ok()?;
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
            // SAFETY: as in `spawn`.
            pidfd: unsafe { AsyncFd::register(fd) }.ok()?,
        })
    }

    /// Until it ends; reaps it when it is the agent's child.
    pub async fn wait(&mut self) -> Ended {
        let _ = self.pidfd.readable().await;
        // SAFETY: siginfo is plain data, filled by waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is ours to fill; the pidfd is open for the call.
        let rc = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                self.pidfd.get_ref().as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED,
            )
        };
        if rc < 0 {
            // ECHILD: started by a previous agent; its parent now (init) reaps it.
            return Ended {
                success: false,
                how: "ended (status unknown: started by a previous agent)".into(),
            };
        }
        // SAFETY: waitid filled a CLD_* siginfo.
        let status = unsafe { info.si_status() };
        describe(info.si_code, status)
    }

    /// Sends `sig` to this very process (never to a reused pid).
    pub fn signal(&self, sig: i32) -> io::Result<()> {
        super::super::pidfd::send_signal(self.pidfd.get_ref(), sig)
    }
}

/// Everything the child needs, built before the fork: between clone and exec only
/// async-signal-safe calls on prepared memory are allowed.
struct Exec {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    /// (uid, gid) to switch to.
    user: Option<(u32, u32)>,
}

impl Exec {
    fn prepare(config: &SuperviseConfig) -> io::Result<Self> {
        let c = |s: &OsStr| CString::new(s.as_bytes()).map_err(io::Error::other);
        let mut env = vec![c(format!("PATH={PATH}").as_ref())?];
        let user = match &config.user {
            Some(user) => {
                let (uid, gid, home) = lookup_user(user)?;
                env.push(c(format!("USER={user}").as_ref())?);
                env.push(c(format!("HOME={home}").as_ref())?);
                Some((uid, gid))
            }
            None => None,
        };
        for (k, v) in &config.env {
            env.push(c(format!("{k}={v}").as_ref())?);
        }
        Ok(Self {
            program: c(config.command[0].as_ref())?,
            argv: config
                .command
                .iter()
                .map(|a| c(a.as_ref()))
                .collect::<io::Result<_>>()?,
            envp: env,
            cwd: c(config.cwd.as_os_str())?,
            user,
        })
    }

    /// clone3 with CLONE_INTO_CGROUP: the child is born in its cgroup, so no migration
    /// (which waits for an RCU grace period, 10-20 ms here) delays the restart; and
    /// CLONE_PIDFD, so every later wait and signal goes through a pidfd.
    fn spawn(&self, cgroup: Option<i32>) -> io::Result<(u32, OwnedFd)> {
        let argv: Vec<*const libc::c_char> = self
            .argv
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        let envp: Vec<*const libc::c_char> = self
            .envp
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        // The child reports a failure before exec (its errno) through this pipe; a pipe
        // closed by a successful exec reads as empty.
        let mut fds = [0; 2];
        // SAFETY: plain syscall into a local array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both fds were just created and are ours.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let mut pidfd: libc::c_int = -1;
        let mut args = CloneArgs {
            flags: CLONE_PIDFD,
            pidfd: &mut pidfd as *mut libc::c_int as u64,
            exit_signal: libc::SIGCHLD as u64,
            ..CloneArgs::default()
        };
        if let Some(fd) = cgroup {
            args.flags |= CLONE_INTO_CGROUP;
            args.cgroup = fd as u64;
        }
        // SAFETY: clone3 with a valid, fully initialised argument struct and no stack (a
        // fork); the child branch below only makes async-signal-safe calls.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: the child: async-signal-safe calls only, then exec or _exit.
            unsafe { self.child(write_end.as_raw_fd(), &argv, &envp) }
        }
        drop(write_end);
        // SAFETY: the kernel wrote a new pidfd for the child.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        let mut errno = [0u8; 4];
        let n = loop {
            // SAFETY: reading into a local buffer.
            let n = unsafe { libc::read(read_end.as_raw_fd(), errno.as_mut_ptr().cast(), 4) };
            if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break n;
            }
        };
        if n == 4 {
            // The child could not exec and exits at once; reap it.
            // SAFETY: waiting for our own child by pid.
            unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0) };
            return Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)));
        }
        Ok((pid as u32, pidfd))
    }

    unsafe fn child(
        &self,
        report: i32,
        argv: &[*const libc::c_char],
        envp: &[*const libc::c_char],
    ) -> ! {
        let fail = || {
            // SAFETY: errno is this thread's; write and _exit are async-signal-safe.
            unsafe {
                let errno = *libc::__errno_location();
                libc::write(report, errno.to_ne_bytes().as_ptr().cast(), 4);
                libc::_exit(127)
            }
        };
        // SAFETY: between clone and exec, only async-signal-safe libc calls with pointers
        // to memory prepared before the clone (argv, envp, the program and cwd strings).
        unsafe {
            // Exec keeps ignored signals ignored (Rust ignores SIGPIPE) and the mask.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            // Its own session: the agent's terminal and process group are not its.
            if libc::setsid() < 0 {
                fail();
            }
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            if null < 0 || libc::dup2(null, 0) < 0 {
                fail();
            }
            if let Some((uid, gid)) = self.user {
                if libc::setgroups(0, std::ptr::null()) < 0
                    || libc::setgid(gid) < 0
                    || libc::setuid(uid) < 0
                {
                    fail();
                }
            }
            if libc::chdir(self.cwd.as_ptr()) < 0 {
                fail();
            }
            libc::execve(self.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
        }
        fail()
    }
}

const CLONE_PIDFD: u64 = 0x1000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` (linux/sched.h), up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

fn describe(code: i32, status: i32) -> Ended {
    match code {
        libc::CLD_EXITED => Ended {
            success: status == 0,
            how: format!("exited with status {status}"),
        },
        libc::CLD_KILLED | libc::CLD_DUMPED => Ended {
            success: false,
            how: format!(
                "killed by {}{}",
                signal_name(status as u32),
                if code == libc::CLD_DUMPED {
                    " (core dumped)"
                } else {
                    ""
                }
            ),
        },
        other => Ended {
            success: false,
            how: format!("ended (si_code {other}, status {status})"),
        },
    }
}

/// Field 22 of /proc/<pid>/stat (after the command, which may contain spaces or ')').
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = procfs::stat(Path::new(procfs::ROOT), pid).ok()?;
    parse_start_time(&stat)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    procfs::stat_field(stat, 22)?.parse().ok()
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
    // SAFETY: passwd is plain data (integers and pointers), valid all-zero.
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
            // SAFETY: as above; `name` is NUL-terminated and outlives the call.
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
