//! The NVIDIA driver's XID line in the kernel log, as `kernel_rc.c` prints it:
//! `NVRM: Xid (PCI:%04x:%02x:%02x): %d, pid=%s, name=%s, %s`, with MIG's
//! `(PCI:0000:3b:00 GPU-I:01 GPU-CI:02)`, `pid='<unknown>'` and `name=<unknown>` when no
//! process is to blame, and older drivers' lines without `pid=`/`name=`. Every field is
//! checked and bounded: the bus id is hex and colons, the XID a small number, the pid a
//! number, the name and the rest of the text cut short.
use crate::config::MAX_XID;

/// The longest process name kept (the kernel's comm is 15 bytes; the driver prints it).
const MAX_NAME: usize = 64;
/// The longest detail text kept.
const MAX_DETAIL: usize = 256;
/// The longest bus id (`0000:3b:00` is 10; a 32-bit domain with `.f` is 16).
const MAX_BUS: usize = 24;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xid {
    /// The PCI bus id, lower case, as the driver prints it: `0000:3b:00`.
    pub gpu: String,
    pub xid: u32,
    /// MIG: (GPU instance, compute instance).
    pub mig: Option<(u32, u32)>,
    /// `None` for `pid='<unknown>'` or a line without one: the XID is the GPU's.
    pub pid: Option<u32>,
    pub name: Option<String>,
    /// The driver's text after the fields (bounded).
    pub detail: String,
}

/// The XID in a kernel log text, if it is an NVRM Xid line.
pub fn parse(text: &str) -> Option<Xid> {
    let rest = text.trim_start().strip_prefix("NVRM: Xid (")?;
    let (inside, rest) = rest.split_once("):")?;
    let mut parts = inside.split_ascii_whitespace();
    let bus = parts.next()?;
    let bus = bus.strip_prefix("PCI:").unwrap_or(bus);
    if bus.is_empty()
        || bus.len() > MAX_BUS
        || !bus
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        || !bus.contains(':')
    {
        return None;
    }
    let mut gi = None;
    let mut ci = None;
    for p in parts {
        if let Some(v) = p.strip_prefix("GPU-I:") {
            gi = Some(small_number(v)?);
        } else if let Some(v) = p.strip_prefix("GPU-CI:") {
            ci = Some(small_number(v)?);
        } else {
            return None;
        }
    }
    let mig = match (gi, ci) {
        (Some(g), Some(c)) => Some((g, c)),
        (Some(g), None) => Some((g, u32::MAX)),
        (None, Some(_)) => return None,
        (None, None) => None,
    };
    let rest = rest.trim_start();
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 4 {
        return None;
    }
    let xid: u32 = rest[..digits].parse().ok()?;
    if !(1..=MAX_XID).contains(&xid) {
        return None;
    }
    let mut rest = rest[digits..].trim_start_matches(',').trim_start();
    let mut pid = None;
    let mut name = None;
    if let Some(after) = rest.strip_prefix("pid=") {
        let (value, after) = after.split_once(", ").unwrap_or((after, ""));
        pid = pid_value(value)?;
        rest = after;
        if let Some(after) = rest.strip_prefix("name=") {
            // A comm may hold ", " itself; the first one ends it (the name is only shown).
            let (value, after) = after.split_once(", ").unwrap_or((after, ""));
            if value != "<unknown>" && value != "'<unknown>'" {
                name = Some(cut(value, MAX_NAME));
            }
            rest = after;
        }
    }
    Some(Xid {
        gpu: bus.to_ascii_lowercase(),
        xid,
        mig,
        pid,
        name,
        detail: cut(rest.trim(), MAX_DETAIL),
    })
}

/// `Some(None)` for an unknown pid, `Some(Some(n))` for a number, `None` for anything else.
fn pid_value(v: &str) -> Option<Option<u32>> {
    match v {
        "'<unknown>'" | "<unknown>" => Some(None),
        v if !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()) => {
            Some(Some(v.parse().ok().filter(|&p| p > 0)?))
        }
        _ => None,
    }
}

fn small_number(v: &str) -> Option<u32> {
    if v.is_empty() || v.len() > 3 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_driver_forms() {
        let x = parse(
            "NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python3, GPU has fallen off the bus.",
        )
        .unwrap();
        assert_eq!(
            x,
            Xid {
                gpu: "0000:3b:00".into(),
                xid: 79,
                mig: None,
                pid: Some(1234),
                name: Some("python3".into()),
                detail: "GPU has fallen off the bus.".into(),
            }
        );
        let x = parse("NVRM: Xid (PCI:0000:3B:00 GPU-I:01 GPU-CI:02): 43, pid='<unknown>', name=<unknown>, Ch 00000008").unwrap();
        assert_eq!(
            (x.gpu.as_str(), x.xid, x.mig, x.pid, x.name),
            ("0000:3b:00", 43, Some((1, 2)), None, None)
        );
        assert_eq!(x.detail, "Ch 00000008");
        // An older driver: no pid or name.
        let x = parse("NVRM: Xid (0000:18:00): 48, An uncorrectable double bit error").unwrap();
        assert_eq!((x.gpu.as_str(), x.xid, x.pid), ("0000:18:00", 48, None));
        assert_eq!(x.detail, "An uncorrectable double bit error");
        // NVLink5's extended form keeps its text.
        let x = parse("NVRM: Xid (PCI:0008:01:00): 145, pid=<unknown>, name=<unknown>, NETIR_LINK_EVT Fatal XC0 i0 Link 08 (0x1 0x2)").unwrap();
        assert_eq!((x.xid, x.pid), (145, None));
        assert!(x.detail.starts_with("NETIR_LINK_EVT"));
    }

    #[test]
    fn other_lines_and_hostile_fields_are_refused() {
        for text in [
            "",
            "NVRM: GPU 0000:18:00.0: GPU has fallen off the bus.",
            "NVRM: loading NVIDIA UNIX x86_64 Kernel Module",
            "xNVRM: Xid (PCI:0000:3b:00): 79, pid=1, name=a, b",
            "NVRM: Xid (PCI:0000:3b:00: 79, pid=1",
            "NVRM: Xid (): 79, pid=1",
            "NVRM: Xid (PCI:zz:3b:00): 79, pid=1",
            "NVRM: Xid (PCI:0000:3b:00\"}\n): 79",
            "NVRM: Xid (PCI:0000:3b:00 GPU-CI:02): 43, pid=1",
            "NVRM: Xid (PCI:0000:3b:00 evil): 43, pid=1",
            "NVRM: Xid (PCI:0000:3b:00): , pid=1",
            "NVRM: Xid (PCI:0000:3b:00): 0, pid=1",
            "NVRM: Xid (PCI:0000:3b:00): 99999, pid=1",
            "NVRM: Xid (PCI:0000:3b:00): 79, pid=-1, name=a, b",
            "NVRM: Xid (PCI:0000:3b:00): 79, pid=0, name=a, b",
            "NVRM: Xid (PCI:0000:3b:00): 79, pid=99999999999, name=a, b",
            "NVRM: Xid (PCI:0000:3b:00): 79, pid=12a, name=a, b",
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
        let long = format!("NVRM: Xid (PCI:{}): 79", "0".repeat(100));
        assert_eq!(parse(&long), None);
        // A name with ", " inside: the first one ends it; everything stays bounded.
        let name = "é".repeat(100);
        let text = format!(
            "NVRM: Xid (PCI:0000:3b:00): 13, pid=7, name={name}, {}",
            "x".repeat(5000)
        );
        let x = parse(&text).unwrap();
        assert!(x.name.as_ref().unwrap().len() <= MAX_NAME);
        assert!(x.detail.len() <= MAX_DETAIL);
        let x = parse("NVRM: Xid (PCI:0000:3b:00): 13, pid=7, name=a, b, c").unwrap();
        assert_eq!((x.name.as_deref(), x.detail.as_str()), (Some("a"), "b, c"));
        // A bare line: pid and name absent.
        let x = parse("NVRM: Xid (PCI:0000:3b:00): 13").unwrap();
        assert_eq!((x.pid, x.detail.as_str()), (None, ""));
    }
}
