//! The stall check's added CPU at N targets (`cargo xtask bench --only stall`): N real
//! cgroups with a sleeping process each, one `[[targets]]` each with `stall_for`, and a
//! model holding their latency histograms (3 syscalls each, some moving every tick). Times
//! the watcher's tick alone (the loop without the check) against the tick plus what this
//! check adds (progress clocks, training-job identities, job stalls), interleaved round by
//! round, and prints a Markdown table.
use std::{
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use gimbal::{
    config::Config,
    jobs::{judge_stalls, Launchers},
    model::{jobs::JobsModel, HistReading, Model, Sample, WrappedHist},
    targets::{stall::Observed, watch::Watcher},
};
use gimbal_common::{hist::bucket, SyscallKey};
use gimbal_tests::{require_root, Proc, TempDir, TestCgroup};

const ROUNDS: usize = 7;
const TICKS: usize = 10;

fn main() {
    if !require_root("gimbal-bench-stall") {
        std::process::exit(1);
    }
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    eprintln!("creating {n} cgroups with a sleeping process each");
    let cgroups: Vec<TestCgroup> = (0..n).map(|_| TestCgroup::new("stall-bench")).collect();
    let _procs: Vec<Proc> = cgroups
        .iter()
        .map(|c| {
            let mut cmd = Command::new("sleep");
            cmd.arg("3600").stdout(Stdio::null());
            c.spawn_into(&mut cmd)
        })
        .collect();
    let mut text = String::new();
    for (i, c) in cgroups.iter().enumerate() {
        text += &format!(
            "[[targets]]\nname = \"t{i}\"\ncgroup = \"{}\"\nstall_for = \"1m\"\n",
            c.name
        );
    }
    let config = Config::parse(&text, "bench").expect("a valid config");
    let state = TempDir::new("stall-bench-state");
    let root = gimbal::host::cgroupfs::CgroupNames::from_host()
        .expect("cgroup2")
        .root()
        .to_path_buf();
    let mut watcher = Watcher::new(&config.targets, root, state.0.clone());
    let mut launchers = Launchers::new("/proc".into());
    let mut jobs = JobsModel::new(500);
    let mut model = Model::new(10 * n);
    let mut hists: Vec<WrappedHist> = vec![WrappedHist::default(); 3 * n];

    // Per round: the tick alone (ms/tick), and the check alone, timed apart, in the
    // rounds that run it (the loop's own time varies by more than the check costs).
    let mut ticks = Vec::new();
    let mut checks = Vec::new();
    let mut now = SystemTime::now();
    for round in 0..ROUNDS {
        for check in [false, true] {
            let (mut tick_time, mut check_time) = (Duration::ZERO, Duration::ZERO);
            for tick in 0..TICKS {
                // A tenth of the cgroups write each tick.
                let mut sample = Sample::default();
                for (i, c) in cgroups.iter().enumerate() {
                    for (k, syscall) in ["write", "read", "epoll_wait"].into_iter().enumerate() {
                        let h = &mut hists[3 * i + k];
                        if (i + tick) % 10 == 0 {
                            h.buckets[bucket(2_000)] += 1;
                            h.sum_ns += 2_000;
                        }
                        sample.syscalls.push(HistReading {
                            raw: SyscallKey {
                                cgroup_id: c.id,
                                nr: k as u32,
                                _pad: 0,
                            },
                            labels: [Arc::from(syscall), Arc::from(c.name.as_str())],
                            hist: *h,
                        });
                    }
                }
                model.apply(sample);
                now += Duration::from_secs(1);
                let t0 = Instant::now();
                watcher.tick(now, &model.syscall_latency.series);
                tick_time += t0.elapsed();
                if check {
                    let t1 = Instant::now();
                    let seen = Observed {
                        now_ms: gimbal::targets::watch::unix_ms(now),
                        interval: Duration::from_secs(1),
                        complete: true,
                    };
                    watcher.progress(&model.syscalls.series, seen, false);
                    launchers.observe(&watcher, &mut jobs, now);
                    judge_stalls(&watcher, &mut jobs, now);
                    jobs.prune(now);
                    check_time += t1.elapsed();
                }
            }
            let ms = |d: Duration| d.as_secs_f64() * 1000.0 / TICKS as f64;
            eprintln!(
                "round {}/{ROUNDS}: tick {:.2} ms, check {:.3} ms",
                round + 1,
                ms(tick_time),
                ms(check_time)
            );
            ticks.push(ms(tick_time));
            if check {
                checks.push(ms(check_time));
            }
        }
    }
    let (t, c) = (median(ticks), median(checks));
    println!("| part | ms per tick (median over {ROUNDS} rounds of {TICKS} ticks) | share of one core at a 1 s tick |");
    println!("|---|---|---|");
    println!("| the watcher's tick, {n} targets (membership, SLO histories, latency SLIs): the loop without the check | {t:.2} | {:.2} % |", t / 10.0);
    println!("| the stall check (progress clocks, training-job identities, job stalls) | {c:.3} | {:.3} % |", c / 10.0);
    println!(
        "\nThe check adds {c:.3} ms per tick ({:.3} % of a core): {:.3} x the loop without it (ratio (tick + check) / tick).",
        c / 10.0,
        (t + c) / t
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
