//! The kernel programs' own cost, the way the kernel counts it: run count and run time per
//! program from `/proc/self/fdinfo/<fd>` of each program's fd (`run_cnt`, `run_time_ns`),
//! which grow only while the kernel's BPF statistics are on (`kernel.bpf_stats_enabled`).
use std::os::fd::{AsFd, AsRawFd};

use aya::programs::ProgramFd;
use gimbal_common::programs;

use super::Probes;
use crate::model::ProgramRuns;

/// The agent's own loaded programs, each by a duplicate of its fd (valid while held).
pub struct ProgramStats {
    programs: Vec<(&'static str, ProgramFd)>,
}

impl ProgramStats {
    pub fn new(probes: &Probes) -> Self {
        let names = super::syscall_hook::ALL_PROGRAMS.into_iter().chain([
            programs::SCHED_SWITCH,
            programs::TCP_RETRANSMIT,
            programs::PROCESS_EXIT,
            programs::OOM_MARK_VICTIM,
        ]);
        let programs = names
            .filter_map(|name| {
                // A program not loaded (its probe disabled or failed) has no fd: not listed.
                let fd = probes.ebpf.program(name)?.fd().ok()?.try_clone().ok()?;
                Some((name, fd))
            })
            .collect();
        Self { programs }
    }

    /// Each loaded program's counts; a program whose fdinfo cannot be read is left out.
    pub fn read(&self) -> Vec<(&'static str, ProgramRuns)> {
        self.programs
            .iter()
            .filter_map(|(name, fd)| {
                let path = format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd());
                let text = std::fs::read_to_string(path).ok()?;
                Some((*name, parse_fdinfo(&text)))
            })
            .collect()
    }
}

/// `run_time_ns:` and `run_cnt:` of a BPF program's fdinfo (absent fields read as 0).
fn parse_fdinfo(text: &str) -> ProgramRuns {
    let mut runs = ProgramRuns::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let Ok(value) = value.trim().parse() else {
            continue;
        };
        match key.trim() {
            "run_time_ns" => runs.run_ns = value,
            "run_cnt" => runs.runs = value,
            _ => {}
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_run_time_and_count_from_a_programs_fdinfo() {
        // As 6.x prints it for a raw tracepoint program.
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t2073\nprog_type:\t17\n\
                    prog_jited:\t1\nprog_tag:\tf9bce9e8d4733240\nmemlock:\t4096\nprog_id:\t131\n\
                    run_time_ns:\t81234567\nrun_cnt:\t421337\nrecursion_misses:\t0\n\
                    verified_insns:\t180\n";
        assert_eq!(
            parse_fdinfo(text),
            ProgramRuns {
                runs: 421_337,
                run_ns: 81_234_567
            }
        );
        // An old kernel without the fields: zero, not an error.
        assert_eq!(
            parse_fdinfo("pos:\t0\nprog_id:\t3\n"),
            ProgramRuns::default()
        );
    }
}
