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
fn every_syscall_is_counted_whether_timed_or_only_counted() {
    let mut m = Model::new(10);
    // The same pair first counted (nothing timed), then timed: one running total.
    for (counted, timed) in [(5, 0), (8, 0), (8, 4)] {
        m.apply(Sample {
            syscall_counts: vec![CounterReading {
                raw: key(7, 0),
                labels: labels(["read", "a"]),
                value: counted,
            }],
            syscalls: vec![HistReading {
                raw: key(7, 0),
                labels: labels(["read", "a"]),
                hist: hist(2_000, timed),
            }],
            ..Default::default()
        });
    }
    assert_eq!(m.syscalls.series[&labels(["read", "a"])], 12);
    assert_eq!(m.syscall_latency.series[&labels(["read", "a"])].count(), 4);
    // A counted-only pair has no histogram series.
    m.apply(Sample {
        syscall_counts: vec![CounterReading {
            raw: key(7, 39),
            labels: labels(["getpid", "a"]),
            value: 3,
        }],
        ..Default::default()
    });
    assert_eq!(m.syscalls.series[&labels(["getpid", "a"])], 3);
    assert!(!m
        .syscall_latency
        .series
        .contains_key(&labels(["getpid", "a"])));
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
    // `family` is bounded (ipv4, ipv6), so it stays exact in the folded series.
    assert_eq!(m.tcp_retransmits.series[&labels([OTHER, OTHER, "ipv4"])], 6);
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

#[test]
fn folded_exits_keep_their_reason_and_code() {
    let mut m = Model::new(2);
    for comm in ["a", "b", "c", "d"] {
        m.apply_exit(labels(["cg", comm, "exited", "0"]));
    }
    m.apply_exit(labels(["cg", "hog", "oom_killed", "SIGKILL"]));
    m.apply_exit(labels(["other-cg", "x", "signaled", "SIGKILL"]));
    let folded = |reason, code| m.process_exits.series[&labels([OTHER, OTHER, reason, code])];
    assert_eq!(folded("exited", "0"), 2);
    assert_eq!(folded("oom_killed", "SIGKILL"), 1);
    assert_eq!(folded("signaled", "SIGKILL"), 1);
    assert_eq!(m.process_exits.folded(), 4);
    assert_eq!(m.process_exits.series.values().sum::<u64>(), 6);
}

#[test]
fn folded_syscalls_keep_their_name_within_a_budget_of_their_own() {
    // A process can pass any syscall number, so the kept names are bounded too.
    let mut m = Model::new(1);
    let reading = |nr: u32, syscall: &str, cgroup: &str| HistReading {
        raw: key(nr as u64 + 100, nr),
        labels: labels([syscall, cgroup]),
        hist: hist(2_000, 1),
    };
    m.apply(Sample {
        syscalls: vec![
            reading(0, "read", "a"),
            reading(1, "write", "b"),
            reading(2, "write", "c"),
            reading(3, "syscall_99999", "d"),
        ],
        ..Default::default()
    });
    let count = |l: [&str; 2]| m.syscall_latency.series[&labels(l)].count();
    assert_eq!(count(["read", "a"]), 1);
    assert_eq!(count(["write", OTHER]), 2);
    assert_eq!(count([OTHER, OTHER]), 1);
    assert_eq!(m.syscall_latency.series.len(), 3);
}

#[test]
fn a_watched_cgroups_latency_never_folds_whatever_filled_the_budget() {
    let mut m = Model::new(2);
    m.watch_cgroups(|cgroup| cgroup == "app.slice/svc.service");
    let reading = |id: u64, cgroup: &str| HistReading {
        raw: key(id, 0),
        labels: labels(["read", cgroup]),
        hist: hist(2_000, 1),
    };
    // A flood of other cgroups takes the whole budget first.
    let mut syscalls: Vec<_> = (0..10).map(|i| reading(i, &format!("flood-{i}"))).collect();
    syscalls.push(reading(99, "app.slice/svc.service"));
    m.apply(Sample {
        syscalls,
        ..Default::default()
    });
    assert_eq!(
        m.syscall_latency.series[&labels(["read", "app.slice/svc.service"])].count(),
        1,
        "the watched cgroup keeps its own series"
    );
    assert_eq!(
        m.syscall_latency.series[&labels(["read", OTHER])].count(),
        8
    );
    assert_eq!(
        m.syscall_latency.folded(),
        8 + 1 - 1,
        "the watched one took no share"
    );
}

/// The agent's limits: 500 label sets per metric, `max` series in all, a latency label
/// set costing 25 series (the default classic buckets).
fn pooled(max: usize) -> Limits {
    Limits {
        per_metric: 500,
        pool: SeriesPool::new(max),
        histogram_series: 25,
    }
}

/// Series the model exports for the families the budget covers.
fn series_of(m: &Model) -> usize {
    m.syscall_latency.series.len() * 25
        + m.syscalls.series.len()
        + m.syscall_errors.series.len()
        + m.tcp_retransmits.series.len()
        + m.process_exits.series.len()
}

/// One tick of `pairs` busy (cgroup, syscall) pairs: 10 syscalls in each of pairs/10
/// cgroups, each pair with `n` timed calls so far.
fn busy(pairs: u64, n: u32) -> Sample {
    const NAMES: [&str; 10] = [
        "read",
        "write",
        "openat",
        "close",
        "futex",
        "epoll_wait",
        "sendto",
        "recvfrom",
        "mmap",
        "ioctl",
    ];
    let syscalls = (0..pairs)
        .map(|i| HistReading {
            raw: key(i / 10, (i % 10) as u32),
            labels: labels([NAMES[(i % 10) as usize], &format!("pod-{}", i / 10)]),
            hist: hist(3_000, n),
        })
        .collect();
    Sample {
        syscalls,
        ..Default::default()
    }
}

#[test]
fn a_busy_node_stays_within_the_series_budget_with_exact_totals_per_syscall() {
    let mut m = Model::new(pooled(4_000));
    m.apply(busy(500, 3));
    let first: Vec<_> = m.syscall_latency.series.keys().cloned().collect();
    m.apply(busy(500, 7));
    // Sticky: the second tick made no new series and moved none.
    assert_eq!(
        m.syscall_latency.series.keys().cloned().collect::<Vec<_>>(),
        first
    );
    // Within budget: own series take at most 4,000; the folded ones keep their syscall
    // (10 of them) and are inside it too.
    // ... plus one all-`other` series per family.
    assert!(m.pool.used() <= 4_000, "{} used", m.pool.used());
    assert!(series_of(&m) <= 4_000 + 26, "{} series", series_of(&m));
    assert!(m.syscall_latency.folded() > 0 && m.syscalls.folded() > 0);
    // Far fewer than the 500 x 26 unbudgeted; own series used their 3/4 of the budget.
    assert!(series_of(&m) > 3_000, "{} series", series_of(&m));
    // The syscall label stays exact: each syscall's counts over its own and folded
    // series are the kernel's, 50 cgroups x 7 calls.
    for name in ["read", "ioctl"] {
        let total: u64 = m
            .syscall_latency
            .series
            .iter()
            .filter(|(l, _)| &*l[0] == name)
            .map(|(_, t)| t.count())
            .sum();
        assert_eq!(total, 50 * 7, "{name}");
        assert!(m
            .syscall_latency
            .series
            .contains_key(&labels([name, OTHER])));
        let counted: u64 = m
            .syscalls
            .series
            .iter()
            .filter(|(l, _)| &*l[0] == name)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(counted, 50 * 7, "{name} counted");
    }
}

#[test]
fn a_watched_cgroup_keeps_its_series_when_the_pool_is_spent() {
    let mut m = Model::new(pooled(300));
    m.watch_cgroups(|cgroup| cgroup == "app.slice/svc.service");
    m.apply(busy(500, 1));
    let used = m.pool.used();
    assert!(used <= 300);
    let mut s = busy(0, 0);
    s.syscalls.push(HistReading {
        raw: key(9_999, 0),
        labels: labels(["read", "app.slice/svc.service"]),
        hist: hist(2_000, 4),
    });
    m.apply(s);
    assert_eq!(
        m.syscall_latency.series[&labels(["read", "app.slice/svc.service"])].count(),
        4
    );
    assert_eq!(m.pool.used(), used, "the watched cgroup took no share");
}

#[test]
fn a_removed_cgroup_gives_its_series_back_to_the_pool() {
    // 260 of their own and 86 for the folded series.
    let mut m = Model::new(pooled(346));
    m.apply(busy(20, 1));
    // pod-0's 10 pairs took 10 x (25 + 1) = 260: pod-1 folded.
    let own = 260;
    let folded_in_use = m.pool.used() - own;
    assert!(!m
        .syscall_latency
        .series
        .contains_key(&labels(["read", "pod-1"])));
    m.forget_cgroup("pod-0");
    assert_eq!(m.pool.used(), folded_in_use, "pod-0's series given back");
    // pod-0's kernel keys went with it: only pod-1 is read.
    let mut next = busy(20, 2);
    next.syscalls.retain(|r| r.raw.cgroup_id == 1);
    m.apply(next);
    assert!(m
        .syscall_latency
        .series
        .contains_key(&labels(["read", "pod-1"])));
}

#[test]
fn the_gpu_and_jobs_models_draw_on_the_same_pool() {
    // 27 series of their own (36 less the reserve).
    let limits = pooled(36);
    let mut m = Model::new(limits.clone());
    let mut gpu = gpu::GpuModel::new(limits);
    m.apply(busy(1, 1));
    assert_eq!(m.pool.used(), 26);
    let xid = |gpu_id: &str| gpu::XidSeen {
        gpu: Arc::from(gpu_id),
        xid: 79,
        action: "reset-gpu",
        cgroup: Arc::from("/"),
        pid: None,
        name: None,
        detail: String::new(),
        at: std::time::SystemTime::UNIX_EPOCH,
    };
    gpu.apply_xid(xid("0000:3b:00"));
    // One series left: the per-GPU counter took it, the per-cgroup one folded (keeping
    // its XID, in the reserve).
    assert_eq!(m.pool.used(), 28);
    assert_eq!(gpu.xid_errors.folded(), 0);
    assert_eq!(gpu.xid_by_cgroup.folded(), 1);
    assert!(gpu
        .xid_by_cgroup
        .series
        .contains_key(&labels([OTHER, "79", "reset-gpu"])));
}
