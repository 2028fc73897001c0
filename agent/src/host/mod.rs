//! The host wing: the kernel's pseudo-filesystems and the agent's own state files, each
//! parsed in one place so no stage re-reads `/proc`, a cgroup mount or mountinfo its own
//! way. Every reader takes the root it reads under (`/proc`, the cgroup2 mount, tracefs, a
//! state directory) or the text it parses, so tests point it at a tree or a table they
//! built; the host's own paths are constants beside them (`procfs::ROOT`,
//! `mountinfo::HOST`, `Btf::VMLINUX`).
//!
//! - `procfs`: `/proc/<pid>/stat` fields and the cgroup2 line of `/proc/<pid>/cgroup`.
//! - `mountinfo`: the mount table, read for the cgroup2 mount and for tracefs.
//! - `cgroupfs`: cgroup ids to paths below the cgroup2 mount, `cgroup.procs`.
//! - `tracefs`: finding or mounting tracefs, tracepoint format files.
//! - `btf`: the struct member offsets the kernel programs need, from `/sys/kernel/btf`.
//! - `environ`: a process's training-job identity (torchrun, Slurm) from its environment.
//! - `kmsg`: the kernel log's records (`/dev/kmsg`), their sequence and what was lost.
//! - `node`: the node's name ($NODE_NAME, else the hostname).
//! - `psi`: CPU pressure (`cpu.pressure`, some avg10) of a cgroup or of the host.
//! - `durable`: crash-safe state files (temp file, fsync, rename, fsync of the directory).
pub mod btf;
pub mod cgroupfs;
pub mod durable;
pub mod environ;
pub mod kmsg;
pub mod mountinfo;
pub mod node;
pub mod procfs;
pub mod psi;
pub mod tracefs;

/// Whether a failed read means the thing is gone (a process or cgroup that ended between
/// listing and reading it) rather than that it could not be read: unknown is not empty.
pub fn is_gone(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
        || matches!(e.raw_os_error(), Some(libc::ESRCH | libc::ENODEV))
}
