//! The agent's file-descriptor budget. Every cgroup, /proc and state read needs a
//! descriptor; running out turns a healthy service into an unreadable one. At start the
//! soft RLIMIT_NOFILE is raised to the hard limit (as Go's runtime does), so the HTTP
//! connection cap (metrics::MAX_CONNECTIONS) is a small share of what the agent may open.

/// The soft limit after raising it to the hard limit; the old one if that fails.
pub fn raise() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur >= lim.rlim_max {
        return lim.rlim_cur;
    }
    let raised = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!(soft = lim.rlim_cur, hard = lim.rlim_max, error = %e, "cannot raise the open-file limit");
        return lim.rlim_cur;
    }
    lim.rlim_max
}
