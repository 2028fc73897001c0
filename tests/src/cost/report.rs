//! The cost benchmarks' Markdown: medians and spread per configuration, ratios against the
//! no-agent baseline of the same run, gimbal's added cost as a share of bpftrace's, and the
//! per-program breakdown.
use super::{Breakdown, Config, FullMode, Sample, Section};

pub fn name(config: Config, full: &FullMode) -> String {
    match config {
        Config::None => "no agent".into(),
        Config::Defaults => "gimbal, embedded defaults".into(),
        Config::Full if full.is_defaults() => {
            "gimbal, every syscall timed (= defaults today)".into()
        }
        Config::Full => "gimbal, every syscall timed".into(),
        Config::Bpftrace => "bpftrace, same histogram".into(),
        Config::EmptyExit => "empty sys_exit program (floor of any count)".into(),
        Config::Sampled => "gimbal, every syscall timed, one in 16 sampled".into(),
    }
}

/// Median, min and max.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

pub fn spread(mut v: Vec<f64>) -> Spread {
    assert!(!v.is_empty(), "no samples");
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Spread {
        median,
        min: v[0],
        max: v[n - 1],
    }
}

fn rate(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

fn pct(ratio: f64) -> String {
    format!("{:.3} ({:+.1} %)", ratio, (ratio - 1.0) * 100.0)
}

pub fn render(
    section: &Section,
    samples: &[Sample],
    breakdowns: &[(Config, Breakdown)],
    foreign_rounds: u32,
) -> String {
    let of = |c: Config| samples.iter().filter(move |s| s.config == c);
    let tput = |c: Config| spread(of(c).map(|s| s.load.throughput).collect());
    let cpu = |c: Config| spread(of(c).map(|s| s.load.cpu_per_request_us()).collect());
    let (base_t, base_c) = (tput(Config::None).median, cpu(Config::None).median);
    let unit = section.unit;
    let mut s = format!(
        "{}\n{} interleaved rounds of each configuration; medians (min-max over the rounds), \
         ratios of medians against the no-agent rows of the same run.\n\nCommand: `{}`\n\n\
         | configuration | throughput ({unit}s/s) | vs no agent | server CPU per {unit} (µs) | vs no agent | added µs per {unit} | tracer CPU (share of a core) |\n\
         |---|---|---|---|---|---|---|\n",
        section.what, section.rounds, section.command
    );
    for c in Config::ALL {
        let (t, u) = (tput(c), cpu(c));
        let tracer: Vec<f64> = of(c).filter_map(|s| s.tracer_cpu).collect();
        s += &format!(
            "| {} | {} ({}-{}) | {} | {:.2} ({:.2}-{:.2}) | {} | {:+.2} | {} |\n",
            name(c, &section.full),
            rate(t.median),
            rate(t.min),
            rate(t.max),
            pct(t.median / base_t),
            u.median,
            u.min,
            u.max,
            pct(u.median / base_c),
            u.median - base_c,
            if tracer.is_empty() {
                "-".into()
            } else {
                format!("{:.1} %", spread(tracer).median * 100.0)
            },
        );
    }
    let loss = |c: Config| 1.0 - tput(c).median / base_t;
    let added = |c: Config| cpu(c).median - base_c;
    let (bl, ba) = (loss(Config::Bpftrace), added(Config::Bpftrace));
    s += &format!(
        "\ngimbal's added cost as a share of bpftrace's (bpftrace: {:.1} % throughput lost, {:+.2} µs CPU per {unit}):\n\n\
         | configuration | throughput lost | x bpftrace's | CPU per {unit} added | x bpftrace's |\n|---|---|---|---|---|\n",
        bl * 100.0,
        ba
    );
    for c in [Config::Defaults, Config::Full, Config::Sampled] {
        s += &format!(
            "| {} | {:.1} % | {:.2} | {:+.2} µs | {:.2} |\n",
            name(c, &section.full),
            loss(c) * 100.0,
            loss(c) / bl,
            added(c),
            added(c) / ba
        );
    }
    s += &format!(
        "\nAn empty program on `sys_exit` alone loses {:.1} % throughput and adds {:+.2} µs CPU \
         per {unit}: what any per-syscall count pays on this kernel before it does anything; \
         gimbal's defaults add {:.2} x that.\n",
        loss(Config::EmptyExit) * 100.0,
        added(Config::EmptyExit),
        added(Config::Defaults) / added(Config::EmptyExit),
    );
    if section.full.is_defaults() {
        s += &format!(
            "\n(The two gimbal rows run the same configuration: {} sets nothing yet, so their \
             difference is this machine's noise.)\n",
            section.full.path.display()
        );
    }
    if foreign_rounds > 0 {
        s += &format!(
            "\nIn {foreign_rounds} of {} rounds another tracer of syscalls or context switches \
             was loaded on the node (another agent or bpftrace): it slowed every configuration \
             of those rounds.\n",
            section.rounds
        );
    }
    for (c, b) in breakdowns {
        s += &render_breakdown(b, &name(*c, &section.full), unit, added(*c));
    }
    s
}

fn render_breakdown(b: &Breakdown, config: &str, unit: &str, server_added_us: f64) -> String {
    let reqs = b.load.requests.max(1) as f64;
    // (runs, ns) of the programs whose name `keep` accepts.
    let of = |keep: &dyn Fn(&str) -> bool| {
        b.programs
            .iter()
            .filter(|(n, _, _)| keep(n))
            .fold((0u64, 0u64), |(r, t), (_, pr, pt)| (r + pr, t + pt))
    };
    let mut s = format!(
        "\nWhere the cost of \"{config}\" goes: one more round with the kernel's BPF \
         run-time statistics on (BPF_ENABLE_STATS, the switch behind kernel.bpf_stats_enabled, \
         off again after the round), {} {unit}s. Runs are node-wide (the load generator's \
         syscalls too), and each run's time includes the statistics' own two clock reads.\n\n\
         | program | runs | runs per {unit} | ns per run | ns per {unit} |\n|---|---|---|---|---|\n",
        b.load.requests
    );
    let mut programs = b.programs.clone();
    programs.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    let (mut runs, mut ns) = (0u64, 0u64);
    for (name, r, t) in &programs {
        runs += r;
        ns += t;
        s += &format!(
            "| {name} | {r} | {:.2} | {} | {:.0} |\n",
            *r as f64 / reqs,
            if *r > 0 {
                format!("{:.0}", *t as f64 / *r as f64)
            } else {
                "-".into()
            },
            *t as f64 / reqs
        );
    }
    s += &format!(
        "| all | {runs} | {:.2} | - | {:.0} |\n",
        runs as f64 / reqs,
        ns as f64 / reqs
    );
    // An exit program runs for every syscall in every configuration; the enter only while
    // something is timed.
    // At either hook: the tracepoints' `sys_exit`, or a dispatcher's `x64_sys_exit` (and its
    // 32-bit siblings).
    let (syscalls, exit_ns) = of(&|n| is_syscall_program(n) && n.ends_with("sys_exit"));
    let (switches, switch_ns) = of(&|n| n == "sched_switch");
    let pair = of(&|n| is_syscall_program(n) && n.ends_with("sys_enter")).1 + exit_ns;
    let per = |ns: u64, what: u64| {
        if what == 0 {
            "-".to_string()
        } else {
            format!("{:.0} ns", ns as f64 / what as f64)
        }
    };
    let switch_cost = if switches == 0 {
        "no program runs per context switch".to_string()
    } else {
        format!(
            "{:.2} context switches per {unit} (sched_switch runs), {} each",
            switches as f64 / reqs,
            per(switch_ns, switches)
        )
    };
    s += &format!(
        "\nPer {unit}: {:.1} syscalls (sys_exit runs), node-wide. The syscall programs (sys_enter, \
         when attached, + sys_exit): {} per syscall; {switch_cost}. All of gimbal's programs: \
         {:.2} µs per {unit}, against the server's own CPU per {unit} grown by {:+.2} µs in this \
         configuration (median of the rounds above; the server's share of the syscalls only).\n",
        syscalls as f64 / reqs,
        per(pair, syscalls),
        ns as f64 / reqs / 1000.0,
        server_added_us
    );
    s
}

/// A program of gimbal's that runs on every syscall (enter or exit), at either hook.
pub fn is_syscall_program(name: &str) -> bool {
    let base = ["x64_", "ia32_", "x32_"]
        .iter()
        .find_map(|abi| name.strip_prefix(abi))
        .unwrap_or(name);
    base == "sys_enter" || base == "sys_exit"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_programs_are_known_at_both_hooks() {
        for n in [
            "sys_exit",
            "sys_enter",
            "x64_sys_exit",
            "ia32_sys_enter",
            "x32_sys_exit",
        ] {
            assert!(is_syscall_program(n), "{n}");
        }
        for n in ["sched_switch", "my_sys_exit", "sys_exit2"] {
            assert!(!is_syscall_program(n), "{n}");
        }
    }

    #[test]
    fn spread_takes_the_middle_of_odd_and_even_counts() {
        assert_eq!(
            spread(vec![3.0, 1.0, 2.0]),
            Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
        assert_eq!(spread(vec![4.0, 1.0, 2.0, 3.0]).median, 2.5);
    }
}
