//! Who launched a process as which rank of which training job, from its environment at
//! exec (`/proc/<pid>/environ`): the variables torchrun gives each worker
//! (`TORCHELASTIC_RUN_ID`, `RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `GROUP_RANK`,
//! `TORCHELASTIC_RESTART_COUNT`) and those Slurm gives each task (`SLURM_JOB_ID`,
//! `SLURM_PROCID`). Reading another user's environ needs CAP_SYS_PTRACE (PTRACE_MODE_READ).
//!
//! Every value is the process's own to choose, so hostile: the read is bounded, only the
//! listed variables are kept (nothing else of the environment, which may hold secrets,
//! leaves this function), numbers must be plain decimal, and the job id is cut to
//! [`MAX_JOB_ID`] characters with control characters replaced.
use std::{io, io::Read as _, path::Path};

use super::procfs;

/// The most of an environment read: torchrun's variables come from the launcher and sit
/// well inside it; a larger environment is cut here and its cut-off entry ignored.
pub const MAX_ENVIRON: u64 = 256 * 1024;
/// The longest job id kept, in characters (a torchrun run id is a uuid or a short name).
pub const MAX_JOB_ID: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    Torchrun,
    Slurm,
}

/// One process's place in a training job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchIdentity {
    pub launcher: Launcher,
    /// torchrun's run id (`MASTER_ADDR:MASTER_PORT` where it is absent or "none"), or
    /// `slurm-<SLURM_JOB_ID>`: stable across elastic restarts, unlike the ranks.
    pub job: String,
    pub rank: u32,
    pub local_rank: Option<u32>,
    pub world_size: Option<u32>,
    pub group_rank: Option<u32>,
    /// torchrun's restart count of the worker group (0 for Slurm).
    pub restart_count: u32,
}

/// The launch identity of `pid`, if its environment names one. Errors are the read's
/// (gone, no permission); a malformed or absent identity is `Ok(None)`.
pub fn read_identity(
    proc_root: &Path,
    pid: impl std::fmt::Display,
) -> io::Result<Option<LaunchIdentity>> {
    let file = std::fs::File::open(procfs::path(proc_root, pid, "environ"))?;
    let mut buf = Vec::new();
    file.take(MAX_ENVIRON).read_to_end(&mut buf)?;
    if buf.len() as u64 == MAX_ENVIRON {
        // The last entry may be cut ("RANK=12" read as "RANK=1"): drop it.
        let end = buf.iter().rposition(|&b| b == 0).unwrap_or(0);
        buf.truncate(end);
    }
    Ok(parse(&buf))
}

/// The identity in an environ text (NUL-separated `KEY=value` entries).
pub fn parse(environ: &[u8]) -> Option<LaunchIdentity> {
    let mut v = Vars::default();
    for entry in environ.split(|&b| b == 0) {
        let Some(eq) = entry.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (key, value) = (&entry[..eq], &entry[eq + 1..]);
        let slot = match key {
            b"TORCHELASTIC_RUN_ID" => &mut v.run_id,
            b"RANK" => &mut v.rank,
            b"LOCAL_RANK" => &mut v.local_rank,
            b"WORLD_SIZE" => &mut v.world_size,
            b"GROUP_RANK" => &mut v.group_rank,
            b"TORCHELASTIC_RESTART_COUNT" => &mut v.restart_count,
            b"MASTER_ADDR" => &mut v.master_addr,
            b"MASTER_PORT" => &mut v.master_port,
            b"SLURM_JOB_ID" => &mut v.slurm_job,
            b"SLURM_PROCID" => &mut v.slurm_procid,
            b"SLURM_LOCALID" => &mut v.slurm_localid,
            b"SLURM_NTASKS" => &mut v.slurm_ntasks,
            b"SLURM_NODEID" => &mut v.slurm_nodeid,
            _ => continue,
        };
        // The first definition is the one getenv(3) returns.
        slot.get_or_insert(value);
    }
    v.torchrun().or_else(|| v.slurm())
}

#[derive(Default)]
struct Vars<'a> {
    run_id: Option<&'a [u8]>,
    rank: Option<&'a [u8]>,
    local_rank: Option<&'a [u8]>,
    world_size: Option<&'a [u8]>,
    group_rank: Option<&'a [u8]>,
    restart_count: Option<&'a [u8]>,
    master_addr: Option<&'a [u8]>,
    master_port: Option<&'a [u8]>,
    slurm_job: Option<&'a [u8]>,
    slurm_procid: Option<&'a [u8]>,
    slurm_localid: Option<&'a [u8]>,
    slurm_ntasks: Option<&'a [u8]>,
    slurm_nodeid: Option<&'a [u8]>,
}

impl Vars<'_> {
    fn torchrun(&self) -> Option<LaunchIdentity> {
        let rank = number(self.rank?)?;
        // torchrun's static rendezvous runs with run id "none": the master's address is
        // then what names the job.
        let job = match self.run_id.and_then(text).filter(|id| id != "none") {
            Some(id) => id,
            None => {
                let addr = text(self.master_addr?)?;
                let port = number(self.master_port?)?;
                bounded(format!("{addr}:{port}"))
            }
        };
        let world_size = self.world_size.map(number).unwrap_or(None);
        if world_size.is_some_and(|w| rank >= w) {
            return None;
        }
        Some(LaunchIdentity {
            launcher: Launcher::Torchrun,
            job,
            rank,
            local_rank: self.local_rank.and_then(number),
            world_size,
            group_rank: self.group_rank.and_then(number),
            restart_count: self.restart_count.and_then(number).unwrap_or(0),
        })
    }

    fn slurm(&self) -> Option<LaunchIdentity> {
        let job = number(self.slurm_job?)?;
        let rank = number(self.slurm_procid?)?;
        let world_size = self.slurm_ntasks.and_then(number);
        if world_size.is_some_and(|w| rank >= w) {
            return None;
        }
        Some(LaunchIdentity {
            launcher: Launcher::Slurm,
            job: format!("slurm-{job}"),
            rank,
            local_rank: self.slurm_localid.and_then(number),
            world_size,
            group_rank: self.slurm_nodeid.and_then(number),
            restart_count: 0,
        })
    }
}

/// A plain decimal u32 ("3"; not "+3", " 3", "0x3" or 11 digits).
fn number(v: &[u8]) -> Option<u32> {
    if v.is_empty() || v.len() > 10 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A job id as label text: valid UTF-8, no control characters, at most MAX_JOB_ID
/// characters; None when empty.
fn text(v: &[u8]) -> Option<String> {
    let s = bounded(String::from_utf8_lossy(v).into_owned());
    (!s.trim().is_empty()).then_some(s)
}

fn bounded(s: String) -> String {
    s.chars()
        .take(MAX_JOB_ID)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in vars {
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        }
        out
    }

    #[test]
    fn torchrun_workers_are_keyed_on_the_run_id() {
        let id = parse(&env(&[
            "PATH=/usr/bin",
            "TORCHELASTIC_RUN_ID=llama-7b",
            "RANK=3",
            "LOCAL_RANK=1",
            "WORLD_SIZE=8",
            "GROUP_RANK=1",
            "TORCHELASTIC_RESTART_COUNT=2",
            "AWS_SECRET_ACCESS_KEY=never-kept",
        ]))
        .unwrap();
        assert_eq!(
            id,
            LaunchIdentity {
                launcher: Launcher::Torchrun,
                job: "llama-7b".into(),
                rank: 3,
                local_rank: Some(1),
                world_size: Some(8),
                group_rank: Some(1),
                restart_count: 2,
            }
        );
        let none = parse(&env(&[
            "TORCHELASTIC_RUN_ID=none",
            "RANK=0",
            "MASTER_ADDR=10.0.0.5",
            "MASTER_PORT=29500",
        ]))
        .unwrap();
        assert_eq!(none.job, "10.0.0.5:29500", "the static rendezvous' run id");
        assert_eq!(parse(&env(&["PATH=/bin", "HOME=/root"])), None);
        assert_eq!(
            parse(&env(&["TORCHELASTIC_RUN_ID=x"])),
            None,
            "the launcher itself (no RANK) is no rank"
        );
    }

    #[test]
    fn slurm_tasks_are_keyed_on_the_job_id() {
        let id = parse(&env(&[
            "SLURM_JOB_ID=4242",
            "SLURM_PROCID=5",
            "SLURM_LOCALID=1",
            "SLURM_NTASKS=16",
        ]))
        .unwrap();
        assert_eq!(
            (id.launcher, id.job.as_str(), id.rank, id.world_size),
            (Launcher::Slurm, "slurm-4242", 5, Some(16))
        );
        // torchrun under Slurm: the worker's own torchrun identity wins.
        let both = parse(&env(&[
            "SLURM_JOB_ID=4242",
            "SLURM_PROCID=0",
            "TORCHELASTIC_RUN_ID=j",
            "RANK=7",
        ]))
        .unwrap();
        assert_eq!((both.job.as_str(), both.rank), ("j", 7));
    }

    #[test]
    fn hostile_values_are_refused_or_bounded_never_a_panic() {
        for rank in [
            "-1",
            "+3",
            " 3",
            "3 ",
            "0x3",
            "99999999999",
            "",
            "٣",
            "4294967296",
        ] {
            let e = env(&["TORCHELASTIC_RUN_ID=j", &format!("RANK={rank}")]);
            assert_eq!(parse(&e), None, "RANK={rank:?}");
        }
        assert_eq!(
            parse(&env(&["TORCHELASTIC_RUN_ID=j", "RANK=8", "WORLD_SIZE=8"])),
            None,
            "a rank outside the world"
        );
        let long = format!("TORCHELASTIC_RUN_ID={}\n\u{1b}[2J", "x".repeat(10_000));
        let id = parse(&env(&[&long, "RANK=0"])).unwrap();
        assert_eq!(id.job.chars().count(), MAX_JOB_ID);
        let odd = parse(b"TORCHELASTIC_RUN_ID=a\xffb\n\0RANK=0\0RANK=1").unwrap();
        assert_eq!(odd.job, "a\u{fffd}b?");
        assert_eq!(odd.rank, 0, "the first definition, as getenv reads it");
        for garbage in [
            &b""[..],
            b"\0\0\0",
            b"=",
            b"RANK",
            b"=RANK=1\0",
            &[0xff; 64],
        ] {
            let _ = parse(garbage);
        }
    }

    #[test]
    fn the_read_is_bounded_and_a_cut_entry_ignored() {
        let root = std::env::temp_dir().join(format!("gimbal-environ-{}", std::process::id()));
        std::fs::create_dir_all(root.join("9")).unwrap();
        // 22 bytes of run id entry, the pad, its NUL and "RANK=1": exactly the bound.
        let pad = format!("PAD={}", "p".repeat(MAX_ENVIRON as usize - 33));
        // The entry that straddles the bound reads "RANK=1" where it says "RANK=12".
        let text = env(&["TORCHELASTIC_RUN_ID=j", &pad, "RANK=12"]);
        assert!(text.len() as u64 > MAX_ENVIRON);
        std::fs::write(root.join("9/environ"), &text).unwrap();
        assert_eq!(read_identity(&root, 9).unwrap(), None);
        std::fs::write(
            root.join("9/environ"),
            env(&["TORCHELASTIC_RUN_ID=j", "RANK=12"]),
        )
        .unwrap();
        assert_eq!(read_identity(&root, 9).unwrap().map(|i| i.rank), Some(12));
        assert!(
            read_identity(&root, 10).is_err(),
            "gone is an error, not None"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
