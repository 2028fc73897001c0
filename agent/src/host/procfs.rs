//! /proc, read under a root (`/proc` on the host, a tree a test built): a process's stat
//! line, read past the command name (which may hold spaces and parentheses), and its
//! cgroup2 path, the `0::` line of `/proc/<pid>/cgroup`. A process is named by its pid or
//! by `self`, as /proc names them.
use std::{
    fmt::Display,
    io,
    path::{Path, PathBuf},
};

/// The host's /proc.
pub const ROOT: &str = "/proc";

/// `<proc_root>/<pid>/<file>`, for a reader that says which file failed.
pub fn path(proc_root: &Path, pid: impl Display, file: &str) -> PathBuf {
    proc_root.join(pid.to_string()).join(file)
}

/// The stat line of `pid`.
pub fn stat(proc_root: &Path, pid: impl Display) -> io::Result<String> {
    std::fs::read_to_string(path(proc_root, pid, "stat"))
}

/// Field `n` of a stat line, numbered as proc(5) numbers them; fields from 3 (the state)
/// on, since the first two (pid and command) are not split by white space.
pub fn stat_field(stat: &str, n: usize) -> Option<&str> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(n.checked_sub(3)?)
}

/// The cgroup2 path of `pid` as the kernel writes it ("/system.slice/x.service", "/" for
/// the root cgroup); `None` when its cgroup file has no cgroup2 line (a v1-only host).
pub fn cgroup_v2_path(proc_root: &Path, pid: impl Display) -> io::Result<Option<String>> {
    let text = std::fs::read_to_string(path(proc_root, pid, "cgroup"))?;
    Ok(cgroup_v2_of_text(&text).map(String::from))
}

/// The path on the cgroup2 line ("0::/path") of a `/proc/<pid>/cgroup` text.
pub fn cgroup_v2_of_text(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The path on the cgroup v1 line whose controllers include `controller`
/// ("4:cpu,cpuacct:/path") of a `/proc/<pid>/cgroup` text: hybrid hosts.
pub fn cgroup_v1_of_text<'a>(text: &'a str, controller: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then_some(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_counted_after_a_command_with_spaces_and_parentheses() {
        let stat = "4242 (we ird) cmd) S 1 4242 4242 0 -1 4194560 100";
        assert_eq!(stat_field(stat, 3), Some("S"));
        assert_eq!(stat_field(stat, 4), Some("1"));
        assert_eq!(stat_field(stat, 9), Some("4194560"));
        assert_eq!(stat_field(stat, 2), None, "the command is not a field here");
        assert_eq!(stat_field("garbage", 3), None);
    }

    #[test]
    fn a_v1_controller_line_is_found_by_its_controller() {
        let text = "5:cpu,cpuacct:/a.slice\n1:name=systemd:/b\n0::/c\n";
        assert_eq!(cgroup_v1_of_text(text, "cpu"), Some("/a.slice"));
        assert_eq!(cgroup_v1_of_text(text, "cpuacct"), Some("/a.slice"));
        assert_eq!(cgroup_v1_of_text(text, "memory"), None);
        assert_eq!(cgroup_v2_of_text(text), Some("/c"));
    }

    #[test]
    fn the_cgroup2_line_is_found_among_v1_lines() {
        let hybrid = "12:cpu,cpuacct:/user.slice\n1:name=systemd:/user.slice/x\n0::/user.slice/x\n";
        assert_eq!(cgroup_v2_of_text(hybrid), Some("/user.slice/x"));
        assert_eq!(cgroup_v2_of_text("0::/\n"), Some("/"));
        assert_eq!(cgroup_v2_of_text("4:memory:/a\n"), None, "v1 only");
        assert_eq!(cgroup_v2_of_text(""), None);
    }

    #[test]
    fn readers_take_the_proc_root() {
        let root = std::env::temp_dir().join(format!("gimbal-procfs-{}", std::process::id()));
        std::fs::create_dir_all(root.join("42")).unwrap();
        std::fs::write(root.join("42/cgroup"), "0::/a/b\n").unwrap();
        std::fs::write(root.join("42/stat"), "42 (x) S 1").unwrap();
        assert_eq!(cgroup_v2_path(&root, 42).unwrap().as_deref(), Some("/a/b"));
        assert_eq!(stat(&root, 42).unwrap(), "42 (x) S 1");
        assert!(cgroup_v2_path(&root, 43).is_err());
        // The host's own: this process is in some cgroup.
        assert!(cgroup_v2_path(Path::new(ROOT), "self").is_ok());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
