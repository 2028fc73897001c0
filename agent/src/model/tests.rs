use super::*;
use gimbal_common::hist::{bucket, BUCKETS};

fn labels<const N: usize>(v: [&str; N]) -> Labels<N> {
    v.map(Arc::from)
}

fn hist(ns: u64, n: u32) -> WrappedHist {
    let mut h = WrappedHist::default();
    h.buckets[bucket(ns)] = n;
    h.sum_ns = ns * n as u64;
    h
}

fn key(cgroup_id: u64, nr: u32) -> SyscallKey {
    SyscallKey {
        cgroup_id,
        nr,
        _pad: 0,
    }
}

#[test]
fn cumulative_readings_become_totals() {
    let mut m = Model::new(10);
    for n in [3, 3, 10] {
        m.apply(Sample {
            syscalls: vec![HistReading {
                raw: key(7, 110),
                labels: labels(["getppid", "a"]),
                hist: hist(2_000, n),
            }],
            ..Default::default()
        });
    }
    let t = m.syscall_latency.series[&labels(["getppid", "a"])];
    assert_eq!(t.count(), 10);
    assert_eq!(t.sum_ns, 20_000);
    assert_eq!(t.buckets.len(), BUCKETS);
}

#[test]
fn series_past_the_budget_fold_into_other_and_are_counted() {
    let mut m = Model::new(1);
    let reading = |flow: u16, remote: &str, v| CounterReading {
        raw: FlowKey {
            cgroup_id: 1,
            family: 2,
            sport: flow,
            dport: 80,
            _pad: 0,
            saddr: [0; 16],
            daddr: [0; 16],
        },
        labels: labels(["a", remote, "ipv4"]),
        value: v,
    };
    m.apply(Sample {
        tcp_retransmits: vec![
            reading(1, "10.0.0.1:80", 2),
            reading(2, "10.0.0.2:80", 5),
            reading(3, "10.0.0.3:80", 1),
        ],
        ..Default::default()
    });
    assert_eq!(
        m.tcp_retransmits.series[&labels(["a", "10.0.0.1:80", "ipv4"])],
        2
    );
    assert_eq!(m.tcp_retransmits.series[&labels([OTHER, OTHER, OTHER])], 6);
    assert_eq!(m.tcp_retransmits.folded(), 2);
    // Nothing is lost: the exported total equals the kernel's.
    assert_eq!(m.tcp_retransmits.series.values().sum::<u64>(), 8);
}

#[test]
fn forgotten_keys_start_again_from_zero() {
    let mut m = Model::new(10);
    let s = |n| Sample {
        syscalls: vec![HistReading {
            raw: key(1, 0),
            labels: labels(["read", "/"]),
            hist: hist(5_000, n),
        }],
        ..Default::default()
    };
    let mut pruned = s(4);
    pruned.pruned.syscalls.push(key(1, 0));
    m.apply(pruned);
    m.apply(s(1));
    assert_eq!(m.syscall_latency.series[&labels(["read", "/"])].count(), 5);
}

#[test]
fn exits_are_counted_per_label_set() {
    let mut m = Model::new(10);
    m.apply_exit(labels(["a", "sleep", "signaled", "SIGKILL"]));
    m.apply_exit(labels(["a", "sleep", "signaled", "SIGKILL"]));
    assert_eq!(
        m.process_exits.series[&labels(["a", "sleep", "signaled", "SIGKILL"])],
        2
    );
}
