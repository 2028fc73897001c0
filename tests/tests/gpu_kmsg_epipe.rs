//! Kernel log records lost to overrun, end to end: the agent is stopped (SIGSTOP, its
//! reader thread with it) just after it read a marker record, the kernel log's ring is
//! overfilled, and after SIGCONT the agent counts the records it never saw as dropped
//! (EPIPE on /dev/kmsg), exactly the gap in sequence numbers the kernel shows: from the
//! record after the one it read last to the oldest record the ring still holds.
use std::{io::Read as _, os::unix::fs::OpenOptionsExt as _, time::Duration};

use gimbal_tests::{agent::Agent, require_root, sample, unique, wait_until, TempDir};

/// Writes one record at the info level.
fn log(text: &str) {
    gimbal_tests::kmsg::log_at(6, text);
}

/// Every record the kernel holds now: (sequence number, text), oldest first.
fn held() -> Vec<(u64, String)> {
    let mut kmsg = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .expect("open /dev/kmsg for reading (root)");
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match kmsg.read(&mut buf) {
            Ok(n) => {
                let rec = String::from_utf8_lossy(&buf[..n]).into_owned();
                let Some((head, text)) = rec.split_once(';') else {
                    continue;
                };
                let seq = head.split(',').nth(1).and_then(|s| s.parse().ok());
                if let Some(seq) = seq {
                    out.push((seq, text.lines().next().unwrap_or("").to_string()));
                }
            }
            // Overwritten while this reader read: go on from the oldest held.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return out,
            Err(e) => panic!("reading /dev/kmsg: {e}"),
        }
    }
}

/// Whether every thread of `pid` is in state T (stopped).
fn all_stopped(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the agent's threads")
        .all(|t| {
            let stat = std::fs::read_to_string(t.unwrap().path().join("stat")).unwrap_or_default();
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T'))
        })
}

fn seq_of(marker: &str) -> u64 {
    held()
        .into_iter()
        .find(|(_, t)| t.contains(marker))
        .map(|(s, _)| s)
        .unwrap_or_else(|| panic!("{marker} is not in the kernel log"))
}

fn xids(agent: &Agent, bus: &str) -> Option<f64> {
    sample(
        &agent.metrics(),
        &format!("gimbal_gpu_xid_errors_total{{gpu=\"{bus}\",xid=\"43\",action=\"none\"}} "),
    )
}

#[test]
fn records_overwritten_while_the_reader_is_stopped_are_the_kernels_sequence_gap() {
    if !require_root!() {
        return;
    }
    // SAFETY: klogctl(SYSLOG_ACTION_SIZE_BUFFER) only returns a size.
    let ring = unsafe { libc::klogctl(10, std::ptr::null_mut(), 0) };
    assert!(ring > 0, "the kernel log's size: {ring}");
    let marker = unique("epipe");
    let bus = format!("{:04x}:af:00", std::process::id() & 0xffff);
    let state = TempDir::new("gpu-epipe");
    let config = state.0.join("gimbal.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[gpu]\nkmsg_user_records = true\nnvml = false\n",
            state.0.display()
        ),
    )
    .unwrap();
    let agent = Agent::start_with(&["--config", config.to_str().unwrap()]);
    wait_until("kmsg attached", Duration::from_secs(20), || {
        agent.metric("gimbal_gpu_source_attached{source=\"kmsg\"} ") == Some(1.0)
    });
    let dropped = || {
        agent
            .metric("gimbal_gpu_kmsg_records_dropped_total ")
            .unwrap_or(0.0) as u64
    };
    let before = dropped();

    // The agent reads a marker XID; then it is stopped, and the newest record the kernel
    // holds is the last it can have read.
    let first =
        format!("NVRM: Xid (PCI:{bus}): 43, pid='<unknown>', name=<unknown>, first {marker}");
    log(&first);
    wait_until("the first marker counted", Duration::from_secs(20), || {
        xids(&agent, &bus) == Some(1.0)
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGSTOP) };
    // A stop is delivered, not done, when kill returns: wait until every thread is
    // stopped, or the reader could still take the next record.
    wait_until(
        "every agent thread stopped",
        Duration::from_secs(10),
        || all_stopped(agent.child.id()),
    );
    let read_at_least = seq_of(&format!("first {marker}"));
    let read_at_most = held().last().expect("records held").0;

    // Three times the ring's bytes in records of ~200 bytes: every record after the marker
    // is overwritten (and the descriptor ring, 1 per 32 bytes, overflows too).
    let filler = "x".repeat(160);
    let records = 3 * ring as usize / 200 + 100;
    for i in 0..records {
        log(&format!("gimbal-test overrun {i} {filler} {marker}"));
    }
    let oldest = held().first().expect("records held").0;
    assert!(
        oldest > read_at_most + 1,
        "the ring was not overrun: oldest {oldest}, read up to {read_at_most}"
    );
    // SAFETY: as above.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGCONT) };
    // Let the reader catch up before anything else is logged (a new record now would
    // overwrite one more of the oldest and widen the gap it finds).
    std::thread::sleep(Duration::from_secs(2));
    log(&format!(
        "NVRM: Xid (PCI:{bus}): 43, pid='<unknown>', name=<unknown>, last {marker}"
    ));
    wait_until("the last marker counted", Duration::from_secs(20), || {
        xids(&agent, &bus) == Some(2.0)
    });
    let counted = dropped() - before;
    // The kernel's gap: from the record after the last one the agent read to the oldest
    // held. Exact on a quiet machine; records others logged between the first marker and
    // the stop widen the bounds by as many.
    let (low, high) = (oldest - read_at_most - 1, oldest - read_at_least - 1);
    eprintln!(
        "ring {ring} bytes, {records} records written; agent counted {counted} dropped, kernel gap {low}..={high}"
    );
    assert!(
        (low..=high).contains(&counted),
        "dropped {counted}, the kernel's sequence gap {low}..={high}"
    );
    assert_eq!(agent.stop(), 0);
}
