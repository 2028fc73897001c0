//! The one way outside bytes become label text: a comm from the kernel, a cgroup name from
//! the filesystem. Each invalid UTF-8 sequence becomes U+FFFD, so the same bytes always
//! give the same label, and a label is always valid UTF-8 (Prometheus rejects a scrape
//! with one that is not).
use std::{borrow::Cow, ffi::OsStr, os::unix::ffi::OsStrExt};

pub fn from_bytes(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// A file name or path as label text; the same as [`from_bytes`] on its bytes.
pub fn from_os(s: &OsStr) -> Cow<'_, str> {
    from_bytes(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn invalid_sequences_become_replacement_characters() {
        assert_eq!(from_bytes(b"ok"), "ok");
        assert_eq!(from_bytes(b"a\xff\xfeb"), "a\u{fffd}\u{fffd}b");
        // A truncated multi-byte sequence (comm is cut at 15 bytes) is one replacement.
        assert_eq!(from_bytes(b"x\xe2\x82"), "x\u{fffd}");
    }

    #[test]
    fn paths_are_made_valid_the_same_way_as_bytes() {
        let raw: &[u8] = b"gimbal-\xff\xfe/q\"b\\s y\xe2\x82";
        let os = OsStr::from_bytes(raw);
        assert_eq!(from_os(os), from_bytes(raw));
        // What host/cgroupfs.rs does today gives the same text.
        assert_eq!(os.to_string_lossy(), from_bytes(raw));
    }
}
