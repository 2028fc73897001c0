//! Writing records into the real kernel log (/dev/kmsg, root), as the NVIDIA driver would.
//! Records from user space carry the user facility, which the agent counts only with
//! `[gpu] kmsg_user_records = true` (no process can forge an XID on a real node).
use std::io::Write as _;

/// Writes one record at `level` (4 warning, 6 info). Each open of /dev/kmsg has its own
/// rate limit (10 records per 5 s), so every record gets a fresh one.
pub fn log_at(level: u8, text: &str) {
    let mut kmsg = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .expect("open /dev/kmsg for writing (root)");
    kmsg.write_all(format!("<{level}>{text}\n").as_bytes())
        .expect("write a record to /dev/kmsg");
}

/// A warning, as the driver logs its XIDs.
pub fn log(text: &str) {
    log_at(4, text);
}

/// A PCI bus id of this test process's own (its pid as the domain), so the counters it
/// checks are its alone.
pub fn own_bus() -> String {
    format!("{:04x}:3b:00", std::process::id() & 0xffff)
}

/// XID 79 (the GPU fell off the bus; the catalog says reboot-node) on `own_bus()`, in the
/// driver's format for a record that names no process; `marker` keeps it apart.
pub fn gpu_fell_off_the_bus(marker: &str) {
    let bus = own_bus();
    log(&format!(
        "NVRM: Xid (PCI:{bus}): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus. {marker}"
    ));
}
