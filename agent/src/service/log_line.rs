//! One log record, one line. Process names, cgroup paths and kernel text reach log fields
//! and messages; a line feed in one would forge a record in the journal or a log shipper.
//! The formatter writes each record with a single write ending in a line feed, so every
//! control character before that one is escaped here, the one place all logging passes.
use std::io::{self, Write};

/// Stderr, with control characters inside a record escaped (`\n`, `\r`, `\x1b`...).
/// `keep_escapes` keeps ESC for colour codes on a terminal.
#[derive(Clone, Copy)]
pub struct EscapedStderr {
    pub keep_escapes: bool,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for EscapedStderr {
    type Writer = Escaping<io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        Escaping {
            inner: io::stderr(),
            keep_escapes: self.keep_escapes,
        }
    }
}

pub struct Escaping<W> {
    inner: W,
    keep_escapes: bool,
}

/// `record` with every control character but tab (and ESC if kept) escaped, except a
/// final line feed.
pub fn escape_record(record: &[u8], keep_escapes: bool) -> Vec<u8> {
    let (body, end) = match record.split_last() {
        Some((b'\n', body)) => (body, &b"\n"[..]),
        _ => (record, &b""[..]),
    };
    let mut out = Vec::with_capacity(record.len() + 8);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.push(b),
            0x1b if keep_escapes => out.push(b),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.extend_from_slice(end);
    out
}

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner
            .write_all(&escape_record(buf, self.keep_escapes))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_stays_one_line_whatever_its_fields_hold() {
        let forged = b"INFO comm=evil\nERROR forged record\r\x1b[2J\x07 done\n";
        let out = escape_record(forged, false);
        assert_eq!(
            out,
            b"INFO comm=evil\\nERROR forged record\\r\\x1b[2J\\x07 done\n".to_vec()
        );
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(
            escape_record(b"a\tb\x1b[1m\n", true),
            b"a\tb\x1b[1m\n".to_vec()
        );
    }

    #[test]
    fn the_tracing_formatter_writes_one_record_per_write() {
        // The escaping relies on it: a record split over two writes would keep its
        // inner line feed at the split.
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);
        impl Write for Writes {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().push(buf.to_vec());
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let writes = Writes::default();
        let w = writes.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(comm = %"a\nb", "message\nwith a line feed");
        });
        let writes = writes.0.lock().unwrap();
        assert_eq!(writes.len(), 1, "{writes:?}");
        assert!(writes[0].ends_with(b"\n"));
    }
}
