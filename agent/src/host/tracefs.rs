//! Tracefs: finding (or mounting) it, and reading tracepoint format files.
//!
//! Tracepoint record layouts differ between kernels, so the agent reads each
//! field's offset from `events/<category>/<name>/format` at load time instead
//! of hard-coding it in the eBPF programs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::mountinfo::HOST as MOUNTINFO;

/// Where tracefs is mounted on current systems, and where we mount it.
const DEFAULT_ROOT: &str = "/sys/kernel/tracing";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("reading {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mounting tracefs at {}", path.display())]
    Mount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tracepoint format{} line {line}: {reason}: {text:?}", origin(path.as_deref()))]
    Malformed {
        /// None when parsing text that did not come from a file.
        path: Option<PathBuf>,
        line: usize,
        text: String,
        reason: &'static str,
    },
    #[error("tracepoint {tracepoint} has no field `{field}`")]
    NoField { tracepoint: String, field: String },
}

fn origin(path: Option<&Path>) -> String {
    path.map(|p| format!(" {}", p.display()))
        .unwrap_or_default()
}

/// Parse the text of /sys/kernel/tracing/events/<category>/<name>/format into field name -> Field.
/// Field lines look like "\tfield:__u8 saddr[4];\toffset:34;\tsize:4;\tsigned:0;"; the name is the last identifier of the declaration before any [N]. "__data_loc char[] comm" -> name "comm".
pub fn parse_format(text: &str) -> Result<HashMap<String, Field>, TracefsError> {
    parse_format_at(text, None)
}

fn parse_format_at(
    text: &str,
    path: Option<&Path>,
) -> Result<HashMap<String, Field>, TracefsError> {
    let mut fields = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        // Other lines (name, ID, "format:", print fmt) carry nothing we need.
        let Some(rest) = line.trim_start().strip_prefix("field:") else {
            continue;
        };
        let err = |reason| TracefsError::Malformed {
            path: path.map(Path::to_path_buf),
            line: i + 1,
            text: line.to_owned(),
            reason,
        };
        let mut parts = rest.split(';').map(str::trim);
        let decl = parts.next().unwrap_or_default();
        let (mut offset, mut size) = (None, None);
        for part in parts {
            if let Some(v) = part.strip_prefix("offset:") {
                offset = Some(v.parse().map_err(|_| err("offset is not a number"))?);
            } else if let Some(v) = part.strip_prefix("size:") {
                size = Some(v.parse().map_err(|_| err("size is not a number"))?);
            }
        }
        let name = field_name(decl).ok_or_else(|| err("no field name"))?;
        let field = Field {
            offset: offset.ok_or_else(|| err("no offset"))?,
            size: size.ok_or_else(|| err("no size"))?,
        };
        fields.insert(name.to_owned(), field);
    }
    Ok(fields)
}

/// The last identifier of a C declaration, ignoring a trailing array suffix:
/// "__u8 saddr[4]" -> "saddr", "__data_loc char[] comm" -> "comm".
fn field_name(decl: &str) -> Option<&str> {
    let decl = match decl.strip_suffix(']') {
        Some(d) => &d[..d.rfind('[')?],
        None => decl,
    }
    .trim_end();
    let start = decl
        .char_indices()
        .rev()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let name = &decl[start..];
    (!name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit())).then_some(name)
}

/// Where tracefs is mounted, from the text of /proc/self/mountinfo: a `tracefs` mount, or
/// else `<debugfs>/tracing`, where debugfs automounts it.
pub fn find_mount(mountinfo: &str) -> Option<PathBuf> {
    let mut debugfs = None;
    for mount in super::mountinfo::mounts(mountinfo) {
        match mount.fstype {
            "tracefs" => return Some(mount.mount_point),
            // Only when there is no tracefs mount of its own.
            "debugfs" if debugfs.is_none() => debugfs = Some(mount.mount_point.join("tracing")),
            _ => {}
        }
    }
    debugfs
}

/// Returns the tracefs root, mounting tracefs at /sys/kernel/tracing if it is not mounted anywhere (log that with tracing::info!, as it is a host change). Needs root.
pub fn ensure_mounted() -> Result<PathBuf, TracefsError> {
    let mounts = std::fs::read_to_string(MOUNTINFO).map_err(|source| TracefsError::Io {
        path: MOUNTINFO.into(),
        source,
    })?;
    if let Some(root) = find_mount(&mounts) {
        return Ok(root);
    }
    let root = PathBuf::from(DEFAULT_ROOT);
    // nosuid/nodev/noexec match how systemd mounts it; tracefs needs none of them.
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: all pointers are NUL-terminated literals that outlive the call,
    // and tracefs takes no mount data.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(TracefsError::Mount {
            path: root,
            source: std::io::Error::last_os_error(),
        });
    }
    tracing::info!(path = %root.display(), "tracefs was not mounted; mounted it");
    Ok(root)
}

/// Reads and parses <root>/events/<category>/<name>/format.
pub fn read_format(
    root: &Path,
    category: &str,
    name: &str,
) -> Result<HashMap<String, Field>, TracefsError> {
    let path = root.join("events").join(category).join(name).join("format");
    let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Io {
        path: path.clone(),
        source,
    })?;
    parse_format_at(&text, Some(&path))
}

/// Convenience: the offset of `field`, or TracefsError::NoField{tracepoint, field}.
pub fn offset(
    fields: &HashMap<String, Field>,
    tracepoint: &str,
    field: &str,
) -> Result<u32, TracefsError> {
    fields
        .get(field)
        .map(|f| f.offset)
        .ok_or_else(|| TracefsError::NoField {
            tracepoint: tracepoint.to_owned(),
            field: field.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Copied from a 6.18 kernel's /sys/kernel/tracing/events/.
    const TCP_RETRANSMIT_SKB: &str = r#"name: tcp_retransmit_skb
ID: 2281
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:unsigned char common_flags;	offset:2;	size:1;	signed:0;
	field:unsigned char common_preempt_count;	offset:3;	size:1;	signed:0;
	field:int common_pid;	offset:4;	size:4;	signed:1;

	field:const void * skbaddr;	offset:8;	size:8;	signed:0;
	field:const void * skaddr;	offset:16;	size:8;	signed:0;
	field:int state;	offset:24;	size:4;	signed:1;
	field:__u16 sport;	offset:28;	size:2;	signed:0;
	field:__u16 dport;	offset:30;	size:2;	signed:0;
	field:__u16 family;	offset:32;	size:2;	signed:0;
	field:__u8 saddr[4];	offset:34;	size:4;	signed:0;
	field:__u8 daddr[4];	offset:38;	size:4;	signed:0;
	field:__u8 saddr_v6[16];	offset:42;	size:16;	signed:0;
	field:__u8 daddr_v6[16];	offset:58;	size:16;	signed:0;
	field:int err;	offset:76;	size:4;	signed:1;

print fmt: "skbaddr=%p skaddr=%p family=%s sport=%hu dport=%hu saddr=%pI4 daddr=%pI4 saddrv6=%pI6c daddrv6=%pI6c state=%s err=%d", REC->skbaddr, REC->skaddr, __print_symbolic(REC->family, { 2, "AF_INET" }, { 10, "AF_INET6" }), REC->sport, REC->dport, REC->saddr, REC->daddr, REC->saddr_v6, REC->daddr_v6, __print_symbolic(REC->state, { TCP_ESTABLISHED, "TCP_ESTABLISHED" }, { TCP_SYN_SENT, "TCP_SYN_SENT" }, { TCP_SYN_RECV, "TCP_SYN_RECV" }, { TCP_FIN_WAIT1, "TCP_FIN_WAIT1" }, { TCP_FIN_WAIT2, "TCP_FIN_WAIT2" }, { TCP_TIME_WAIT, "TCP_TIME_WAIT" }, { TCP_CLOSE, "TCP_CLOSE" }, { TCP_CLOSE_WAIT, "TCP_CLOSE_WAIT" }, { TCP_LAST_ACK, "TCP_LAST_ACK" }, { TCP_LISTEN, "TCP_LISTEN" }, { TCP_CLOSING, "TCP_CLOSING" }, { TCP_NEW_SYN_RECV, "TCP_NEW_SYN_RECV" }), REC->err
"#;

    const SCHED_PROCESS_EXIT: &str = r#"name: sched_process_exit
ID: 369
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:unsigned char common_flags;	offset:2;	size:1;	signed:0;
	field:unsigned char common_preempt_count;	offset:3;	size:1;	signed:0;
	field:int common_pid;	offset:4;	size:4;	signed:1;

	field:char comm[16];	offset:8;	size:16;	signed:0;
	field:pid_t pid;	offset:24;	size:4;	signed:1;
	field:int prio;	offset:28;	size:4;	signed:1;
	field:bool group_dead;	offset:32;	size:1;	signed:0;

print fmt: "comm=%s pid=%d prio=%d group_dead=%s", REC->comm, REC->pid, REC->prio, REC->group_dead ? "true" : "false"
"#;

    const MARK_VICTIM: &str = r#"name: mark_victim
ID: 609
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:unsigned char common_flags;	offset:2;	size:1;	signed:0;
	field:unsigned char common_preempt_count;	offset:3;	size:1;	signed:0;
	field:int common_pid;	offset:4;	size:4;	signed:1;

	field:int pid;	offset:8;	size:4;	signed:1;
	field:__data_loc char[] comm;	offset:12;	size:4;	signed:0;
	field:unsigned long total_vm;	offset:16;	size:8;	signed:0;
	field:unsigned long anon_rss;	offset:24;	size:8;	signed:0;
	field:unsigned long file_rss;	offset:32;	size:8;	signed:0;
	field:unsigned long shmem_rss;	offset:40;	size:8;	signed:0;
	field:uid_t uid;	offset:48;	size:4;	signed:0;
	field:unsigned long pgtables;	offset:56;	size:8;	signed:0;
	field:short oom_score_adj;	offset:64;	size:2;	signed:1;

print fmt: "pid=%d comm=%s total-vm=%lukB anon-rss=%lukB file-rss:%lukB shmem-rss:%lukB uid=%u pgtables=%lukB oom_score_adj=%hd", REC->pid, __get_str(comm), REC->total_vm, REC->anon_rss, REC->file_rss, REC->shmem_rss, REC->uid, REC->pgtables, REC->oom_score_adj
"#;

    fn field(offset: u32, size: u32) -> Field {
        Field { offset, size }
    }

    #[test]
    fn tcp_retransmit_skb() {
        let f = parse_format(TCP_RETRANSMIT_SKB).expect("parse");
        assert_eq!(f.len(), 15);
        assert_eq!(f["common_pid"], field(4, 4));
        assert_eq!(f["skaddr"], field(16, 8));
        assert_eq!(f["state"], field(24, 4));
        assert_eq!(f["saddr"], field(34, 4));
        assert_eq!(f["daddr_v6"], field(58, 16));
        assert_eq!(f["err"], field(76, 4));
        assert_eq!(
            offset(&f, "tcp/tcp_retransmit_skb", "family").ok(),
            Some(32)
        );
    }

    #[test]
    fn sched_process_exit() {
        let f = parse_format(SCHED_PROCESS_EXIT).expect("parse");
        assert_eq!(f.len(), 8);
        assert_eq!(f["comm"], field(8, 16));
        assert_eq!(f["pid"], field(24, 4));
        assert_eq!(f["group_dead"], field(32, 1));
    }

    #[test]
    fn mark_victim() {
        let f = parse_format(MARK_VICTIM).expect("parse");
        assert_eq!(f.len(), 13);
        assert_eq!(f["comm"], field(12, 4));
        assert_eq!(f["pid"], field(8, 4));
        assert_eq!(f["oom_score_adj"], field(64, 2));
        let err = offset(&f, "oom/mark_victim", "nope").expect_err("missing field");
        assert!(
            matches!(err, TracefsError::NoField { ref tracepoint, ref field }
            if tracepoint == "oom/mark_victim" && field == "nope")
        );
    }

    #[test]
    fn malformed_lines() {
        let cases = [
            (
                "name: x\n\tfield:int a;\tsize:4;\tsigned:1;\n",
                2,
                "no offset",
            ),
            (
                "\tfield:int a;\toffset:0;\tsize:4;\n\tfield:int b;\toffset:x;\tsize:4;\n",
                2,
                "offset is not a number",
            ),
            ("\n\n\tfield:int a[4];\toffset:0;\n", 3, "no size"),
            ("\tfield:;\toffset:0;\tsize:4;\n", 1, "no field name"),
            ("\tfield:int 4;\toffset:0;\tsize:4;\n", 1, "no field name"),
            (
                "\tfield:int \u{e9};\toffset:0;\tsize:4;\n",
                1,
                "no field name",
            ),
        ];
        for (text, want_line, want_reason) in cases {
            match parse_format(text) {
                Err(TracefsError::Malformed { line, reason, .. }) => {
                    assert_eq!((line, reason), (want_line, want_reason), "{text:?}")
                }
                other => panic!("{text:?}: expected Malformed, got {other:?}"),
            }
        }
        let err =
            parse_format_at("field:int a;", Some(Path::new("/t/format"))).expect_err("no offset");
        assert_eq!(
            err.to_string(),
            "tracepoint format /t/format line 1: no offset: \"field:int a;\""
        );
    }

    #[test]
    fn mounts() {
        let tracefs = "\
21 26 0:20 / /sys rw,nosuid shared:7 - sysfs sysfs rw
33 21 0:28 / /sys/kernel/tracing rw,relatime shared:14 - tracefs tracefs rw
";
        assert_eq!(
            find_mount(tracefs),
            Some(PathBuf::from("/sys/kernel/tracing"))
        );

        let debugfs = "32 21 0:7 / /sys/kernel/debug rw shared:13 - debugfs debugfs rw\n";
        assert_eq!(
            find_mount(debugfs),
            Some(PathBuf::from("/sys/kernel/debug/tracing"))
        );

        // A tracefs mount wins over debugfs whichever comes first.
        let both = "\
32 21 0:7 / /sys/kernel/debug rw - debugfs debugfs rw
40 1 0:28 / /mnt/tr rw - tracefs none rw
";
        assert_eq!(find_mount(both), Some(PathBuf::from("/mnt/tr")));

        let escaped = "40 1 0:28 / /mnt/my\\040trace rw - tracefs tracefs rw\n";
        assert_eq!(find_mount(escaped), Some(PathBuf::from("/mnt/my trace")));

        assert_eq!(
            find_mount("25 1 0:22 / /proc rw - proc proc rw\n\ngarbage\n"),
            None
        );
        assert_eq!(find_mount(""), None);
    }

    /// Reads a real format file when tracefs is already mounted (never mounts).
    #[test]
    fn live_format() {
        let Some(root) = std::fs::read_to_string(MOUNTINFO)
            .ok()
            .and_then(|m| find_mount(&m))
        else {
            println!("skipping: tracefs is not mounted");
            return;
        };
        match read_format(&root, "sched", "sched_process_exit") {
            Ok(f) => assert!(offset(&f, "sched/sched_process_exit", "pid").is_ok()),
            Err(e) => println!("skipping: {e}"),
        }
    }
}
