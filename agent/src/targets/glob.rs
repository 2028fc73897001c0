//! Globs over cgroup paths (relative to the mount, like the `cgroup` label):
//! `system.slice/trainer.service`, `kubepods.slice/*/*`, `**/ssh.service`. `*` matches
//! within one path segment, `?` one character, `**` any number of segments. Pure: what
//! the globs match on the host is `confine`'s.

/// Whether `path` (segments separated by '/') matches `pattern` segment by segment.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let p: Vec<_> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let s: Vec<_> = path.split('/').filter(|s| !s.is_empty()).collect();
    segments_match(&p, &s)
}

fn segments_match(p: &[&str], s: &[&str]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(&"**") => segments_match(&p[1..], s) || (!s.is_empty() && segments_match(p, &s[1..])),
        Some(first) => {
            !s.is_empty()
                && segment_match(first.as_bytes(), s[0].as_bytes())
                && segments_match(&p[1..], &s[1..])
        }
    }
}

/// `*` matches any run of characters, `?` one character; everything else itself.
pub(super) fn segment_match(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            segment_match(&p[1..], s) || (!s.is_empty() && segment_match(p, &s[1..]))
        }
        (Some(b'?'), Some(_)) => segment_match(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => segment_match(&p[1..], &s[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_segments() {
        assert!(glob_match(
            "system.slice/trainer.service",
            "system.slice/trainer.service"
        ));
        assert!(glob_match(
            "system.slice/*.service",
            "system.slice/ssh.service"
        ));
        assert!(glob_match(
            "kubepods.slice/*/*",
            "kubepods.slice/pod1/cri-abc"
        ));
        assert!(
            !glob_match("kubepods.slice/*", "kubepods.slice/pod1/cri-abc"),
            "* stays in its segment"
        );
        assert!(glob_match("a/b?d", "a/bcd"));
        assert!(!glob_match(
            "system.slice/*.service",
            "system.slice/ssh.socket"
        ));
        assert!(glob_match("*", "x"));
        assert!(glob_match("**/ssh.service", "system.slice/ssh.service"));
        assert!(glob_match("**/ssh.service", "ssh.service"));
        assert!(glob_match(
            "kubepods.slice/**/*pod1234*",
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice"
        ));
        assert!(!glob_match(
            "**/ssh.service",
            "system.slice/ssh.service/child"
        ));
    }
}
