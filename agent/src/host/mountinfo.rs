//! `/proc/self/mountinfo`, the one mount table the agent reads (for the cgroup2 mount and
//! for tracefs). Each line reads `id parent major:minor root mount-point options
//! [optional fields...] - fstype source super-options`; the optional fields vary in
//! number, so the fstype is found after the " - " separator. Paths carry the kernel's
//! octal escapes (`\040` for a space), undone here for every reader.
use std::{ffi::OsString, os::unix::ffi::OsStringExt as _, path::PathBuf};

/// The agent's own mount table.
pub const HOST: &str = "/proc/self/mountinfo";

/// One line of the table, as far as the agent needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount<'a> {
    /// The mounted directory of the filesystem: "/" for a whole one, a subtree for a bind
    /// mount (still escaped: only compared).
    pub root: &'a str,
    /// Where it is mounted, unescaped.
    pub mount_point: PathBuf,
    pub fstype: &'a str,
}

/// The mounts of a mountinfo text, in its order; malformed lines are skipped.
pub fn mounts(text: &str) -> impl Iterator<Item = Mount<'_>> {
    text.lines().filter_map(|line| {
        let (mount, fs_info) = line.split_once(" - ")?;
        let fstype = fs_info.split_whitespace().next()?;
        let mut fields = mount.split_whitespace().skip(3);
        let (root, mount_point) = (fields.next()?, fields.next()?);
        Some(Mount {
            root,
            mount_point: unescape(mount_point),
            fstype,
        })
    })
}

/// Undoes the octal escapes (`\040` for a space, ...) the kernel writes for whitespace and
/// backslashes in mount paths. A malformed escape is kept as is rather than rejected,
/// since the path may still be usable.
pub fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let value = match bytes.get(i..i + 4) {
            Some(&[b'\\', a, b, c]) => octal_byte([a, b, c]),
            _ => None,
        };
        match value {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// The byte written as three octal digits, or `None` if they are not octal digits or
/// exceed a byte ("777"), so the caller keeps them literally.
fn octal_byte(digits: [u8; 3]) -> Option<u8> {
    let mut value = 0u32;
    for digit in digits {
        if !(b'0'..=b'7').contains(&digit) {
            return None;
        }
        value = value * 8 + u32::from(digit - b'0');
    }
    u8::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_around_a_varying_number_of_optional_fields() {
        let text = "\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
50 1 0:38 /docker/abc /mnt/my\\040sub rw - cgroup2 cgroup2 rw
garbage
1 2 - cgroup2 x
";
        let found: Vec<_> = mounts(text).collect();
        assert_eq!(
            found,
            [
                Mount {
                    root: "/",
                    mount_point: "/".into(),
                    fstype: "ext4"
                },
                Mount {
                    root: "/docker/abc",
                    mount_point: "/mnt/my sub".into(),
                    fstype: "cgroup2"
                },
            ]
        );
    }

    #[test]
    fn escapes_are_undone_and_malformed_ones_kept() {
        assert_eq!(
            unescape("/mnt/my\\040cgroup\\134x"),
            PathBuf::from("/mnt/my cgroup\\x")
        );
        assert_eq!(unescape("a\\9b\\777\\"), PathBuf::from("a\\9b\\777\\"));
        // Bytes that are not UTF-8 stay the bytes the path has.
        assert_eq!(
            unescape("/mnt/\\377").into_os_string().into_vec(),
            b"/mnt/\xff"
        );
    }
}
