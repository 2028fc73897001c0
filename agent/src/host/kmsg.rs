//! `/dev/kmsg`, the kernel's log as records: each read(2) returns exactly one,
//! `prio,seq,ts_usec,flags[,more];text\n` followed by optional ` KEY=value` lines
//! (Documentation/ABI/testing/dev-kmsg). `EPIPE` means the records after the last one read
//! were overwritten before this reader got to them; the next read returns the oldest
//! record still held, so the gap in sequence numbers is what was lost.
//!
//! Parsing is pure (`parse`, `Cursor`), the device is `Kmsg`: everything a test needs
//! runs without root on bytes it built.
use std::{
    fs::File,
    io::{self, Read as _},
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    path::Path,
};

/// The host's kernel log device.
pub const DEVICE: &str = "/dev/kmsg";

/// One read's buffer: the kernel formats a record into at most 8 KiB
/// (CONSOLE_EXT_LOG_MAX) and answers EINVAL to a smaller buffer that cannot hold it.
pub const READ_BUFFER: usize = 8192;

/// The longest text kept of a record (bytes); the rest is cut at a character boundary.
/// Longer than any NVRM line, short enough that a flood of long records costs little.
pub const MAX_TEXT: usize = 1024;

/// The kernel's own facility: records printed by the kernel carry 0; anything written to
/// /dev/kmsg from user space is given a facility other than 0 (LOG_USER by default).
pub const FACILITY_KERNEL: u32 = 0;

/// One record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub facility: u32,
    pub level: u8,
    pub seq: u64,
    /// Microseconds since boot (the kernel's local clock) when it was logged.
    pub ts_usec: u64,
    /// The message, valid UTF-8 (invalid bytes become U+FFFD), at most `MAX_TEXT` bytes,
    /// without the trailing newline and the KEY=value lines.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no `;` between the header and the text")]
    NoSeparator,
    #[error("header field `{0}` missing or not a number")]
    Header(&'static str),
}

/// Parses one record as read from /dev/kmsg.
pub fn parse(raw: &[u8]) -> Result<Record, ParseError> {
    let semi = raw
        .iter()
        .position(|&b| b == b';')
        .ok_or(ParseError::NoSeparator)?;
    let mut header = raw[..semi].split(|&b| b == b',');
    let mut number = |name: &'static str| -> Result<u64, ParseError> {
        let field = header.next().ok_or(ParseError::Header(name))?;
        // At most 20 digits: u64::MAX has 20, and parse refuses the rest.
        std::str::from_utf8(field)
            .ok()
            .filter(|s| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or(ParseError::Header(name))
    };
    let prio = number("prio")?;
    let seq = number("seq")?;
    let ts_usec = number("ts_usec")?;
    // flags (`-` or `c`) and any later fields (caller=T1) are not needed.
    let prio = u32::try_from(prio).map_err(|_| ParseError::Header("prio"))?;
    let body = &raw[semi + 1..];
    let end = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
    Ok(Record {
        facility: prio >> 3,
        level: (prio & 7) as u8,
        seq,
        ts_usec,
        text: bounded_text(&body[..end]),
    })
}

/// At most `MAX_TEXT` bytes as valid UTF-8, cut at a character boundary.
fn bounded_text(bytes: &[u8]) -> String {
    let bytes = &bytes[..bytes.len().min(MAX_TEXT)];
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if text.len() > MAX_TEXT {
        let mut cut = MAX_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// Where reading stands in the sequence: which records were read before (by this process,
/// or by an earlier one whose last sequence number was saved), and how many were lost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The sequence number the next record should have; `None` before the first.
    expected: Option<u64>,
    /// Records up to this one were read by an earlier agent: skipped, never counted again.
    done_through: Option<u64>,
    /// Records lost: overwritten before they were read (gaps in the sequence).
    pub dropped: u64,
}

/// What to do with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not read before: take it.
    New,
    /// Read by an earlier agent (or a repeat): skip it.
    Seen,
}

impl Cursor {
    /// Starting where nothing was read before (the reader seeks to the end first).
    pub fn fresh() -> Self {
        Self::default()
    }

    /// Resuming after `last`, the last sequence number an earlier agent read in this boot:
    /// the reader starts at the oldest record held and skips those up to `last`.
    pub fn resume_after(last: u64) -> Self {
        Self {
            expected: last.checked_add(1),
            done_through: Some(last),
            dropped: 0,
        }
    }

    /// Takes one record's sequence number: whether it is new, counting any gap before it
    /// as dropped.
    pub fn take(&mut self, seq: u64) -> Verdict {
        if self.done_through.is_some_and(|d| seq <= d) {
            return Verdict::Seen;
        }
        if let Some(expected) = self.expected {
            if seq < expected {
                return Verdict::Seen;
            }
            self.dropped += seq - expected;
        }
        self.expected = seq.checked_add(1);
        Verdict::New
    }

    /// The last sequence number taken (or resumed after): what a later agent resumes from.
    pub fn last(&self) -> Option<u64> {
        self.expected.map(|e| e - 1).or(self.done_through)
    }

    /// After the backlog was read: a saved position past every record the kernel holds
    /// cannot be this boot's (a file from elsewhere): forget it, so records are not
    /// skipped for good. Returns whether it was forgotten.
    pub fn backlog_read(&mut self, newest: Option<u64>) -> bool {
        match (self.done_through, newest) {
            (Some(done), Some(newest)) if done > newest => {
                self.done_through = None;
                self.expected = newest.checked_add(1);
                true
            }
            (Some(_), None) => false,
            _ => false,
        }
    }
}

/// One read of the device.
#[derive(Debug)]
pub enum Read {
    Record(Record),
    /// EPIPE: records were overwritten before they were read. The next read continues
    /// at the oldest record held; `Cursor::take` counts the gap.
    Overrun,
    /// A record that does not parse (counted by the caller, never fatal).
    Malformed(ParseError),
}

/// The kernel log device, opened for reading.
pub struct Kmsg {
    file: File,
    buf: Vec<u8>,
}

impl Kmsg {
    /// Opens `path` (`DEVICE` on the host). Blocking reads: the caller runs on a thread of
    /// its own. Needs CAP_SYSLOG where kernel.dmesg_restrict is 1.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        Ok(Self {
            file,
            buf: vec![0; READ_BUFFER],
        })
    }

    /// Skips every record held now: only records logged from here on are read.
    pub fn seek_end(&mut self) -> io::Result<()> {
        // SAFETY: lseek on a descriptor this struct owns; no memory is passed.
        let r = unsafe { libc::lseek(self.file.as_raw_fd(), 0, libc::SEEK_END) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether a record can be read without blocking, waiting up to `timeout_ms`.
    pub fn ready(&self, timeout_ms: i32) -> io::Result<bool> {
        let mut fds = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: one pollfd that lives on this stack frame for the call.
            let n = unsafe { libc::poll(&mut fds, 1, timeout_ms) };
            if n >= 0 {
                return Ok(n > 0);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Reads one record, blocking until there is one.
    pub fn read(&mut self) -> io::Result<Read> {
        loop {
            match self.file.read(&mut self.buf) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Ok(n) => {
                    return Ok(match parse(&self.buf[..n]) {
                        Ok(r) => Read::Record(r),
                        Err(e) => Read::Malformed(e),
                    })
                }
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => return Ok(Read::Overrun),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`): sequence numbers start again at
/// every boot, so a saved one is only good for the boot it was read in.
pub fn boot_id(proc_root: &Path) -> io::Result<String> {
    let text = std::fs::read_to_string(proc_root.join("sys/kernel/random/boot_id"))?;
    Ok(text.trim().chars().take(64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_with_continuation_lines_and_extra_header_fields() {
        let raw = b"4,1234,5678901,-,caller=T42;NVRM: Xid (PCI:0000:3b:00): 79, pid=1, name=x, y\n SUBSYSTEM=pci\n DEVICE=+pci:0000:3b:00.0\n";
        let r = parse(raw).unwrap();
        assert_eq!(
            (r.facility, r.level, r.seq, r.ts_usec),
            (0, 4, 1234, 5678901)
        );
        assert_eq!(r.text, "NVRM: Xid (PCI:0000:3b:00): 79, pid=1, name=x, y");
        // A userspace-written record: facility LOG_USER (1), level 6.
        let r = parse(b"14,9,10,-;hello").unwrap();
        assert_eq!((r.facility, r.level, r.text.as_str()), (1, 6, "hello"));
    }

    #[test]
    fn hostile_records_are_refused_or_bounded() {
        assert_eq!(parse(b"no separator"), Err(ParseError::NoSeparator));
        assert_eq!(parse(b""), Err(ParseError::NoSeparator));
        assert_eq!(parse(b";text"), Err(ParseError::Header("prio")));
        assert_eq!(parse(b"6;text"), Err(ParseError::Header("seq")));
        assert_eq!(parse(b"6,1;text"), Err(ParseError::Header("ts_usec")));
        assert_eq!(parse(b"6,-1,0,-;x"), Err(ParseError::Header("seq")));
        assert_eq!(parse(b"6,+1,0,-;x"), Err(ParseError::Header("seq")));
        assert_eq!(
            parse(b"6,99999999999999999999999,0,-;x"),
            Err(ParseError::Header("seq"))
        );
        assert_eq!(
            parse(b"99999999999,1,0,-;x"),
            Err(ParseError::Header("prio"))
        );
        assert_eq!(parse(b"6,\xff,0,-;x"), Err(ParseError::Header("seq")));
        // Bad UTF-8 in the text is replaced, never refused.
        let r = parse(b"6,1,2,-;a\xffb\xe2\x82").unwrap();
        assert_eq!(r.text, "a\u{fffd}b\u{fffd}");
        // A huge line is cut to MAX_TEXT bytes at a character boundary.
        let mut huge = b"6,1,2,-;".to_vec();
        huge.extend(
            std::iter::repeat_n(0xE2u8, 1)
                .chain([0x82, 0xAC])
                .cycle()
                .take(100_000),
        );
        let r = parse(&huge).unwrap();
        assert!(
            r.text.len() <= MAX_TEXT && r.text.len() > MAX_TEXT - 4,
            "{}",
            r.text.len()
        );
        assert!(r.text.chars().all(|c| c == '€'));
        // NUL bytes and a text without newline are kept as text.
        assert_eq!(parse(b"6,1,2,-;a\0b").unwrap().text, "a\0b");
    }

    #[test]
    fn the_cursor_counts_gaps_as_dropped_and_skips_what_was_read() {
        let mut c = Cursor::fresh();
        assert_eq!(c.last(), None);
        assert_eq!(
            c.take(100),
            Verdict::New,
            "the first record after seeking to the end"
        );
        assert_eq!(c.take(101), Verdict::New);
        // EPIPE: 102..=109 were overwritten; the next read gives 110.
        assert_eq!(c.take(110), Verdict::New);
        assert_eq!(c.dropped, 8);
        assert_eq!(c.last(), Some(110));
        assert_eq!(c.take(110), Verdict::Seen, "never twice");

        // A restart: the earlier agent read through 110; the buffer starts at 50.
        let mut c = Cursor::resume_after(110);
        assert_eq!(c.last(), Some(110));
        for seq in 50..=110 {
            assert_eq!(c.take(seq), Verdict::Seen, "{seq}");
        }
        assert_eq!(c.take(111), Verdict::New);
        assert_eq!(c.dropped, 0);
        // Records written while it was down and overwritten before it came back are lost.
        let mut c = Cursor::resume_after(110);
        assert_eq!(c.take(150), Verdict::New);
        assert_eq!(c.dropped, 39);
    }

    #[test]
    fn a_saved_position_past_the_newest_record_is_forgotten() {
        let mut c = Cursor::resume_after(1_000_000);
        assert_eq!(c.take(5), Verdict::Seen);
        assert_eq!(c.take(6), Verdict::Seen);
        assert!(c.backlog_read(Some(6)));
        assert_eq!(c.take(7), Verdict::New);
        assert_eq!(c.dropped, 0);
        let mut c = Cursor::resume_after(10);
        assert!(!c.backlog_read(Some(12)));
        assert!(!c.backlog_read(None));
    }

    #[test]
    fn boot_id_is_read_under_the_root() {
        let root = std::env::temp_dir().join(format!("gimbal-kmsg-{}", std::process::id()));
        std::fs::create_dir_all(root.join("sys/kernel/random")).unwrap();
        std::fs::write(root.join("sys/kernel/random/boot_id"), "abc-123\n").unwrap();
        assert_eq!(boot_id(&root).unwrap(), "abc-123");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
