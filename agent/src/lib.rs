//! Gimbal, the userspace agent. Data flows one way, each stage a module:
//!
//! ```text
//! probes (aya: load, attach, read maps) -> model (pure) ─┐
//! targets (globs, membership, watch, SLOs) ──────────────┼─> snapshot -> metrics (HTTP)
//! gpu (XIDs from /dev/kmsg on a thread, NVML) ───────────┘           -> rules -> alert
//!                                                                          │ firing
//! snapshot's ledger <─ ActionEvents (one channel) <─ remediate (own thread) <┘
//! jobs (the targets' ranks: launch identity from /proc/<pid>/environ, hangs) ─> snapshot
//! verdict (targets' status, GPU faults, CPU pressure -> up/degraded/drain/down) ─> snapshot
//!   -> /health/<target>, HAProxy agent-check, /metrics
//!   -> cluster (node condition, taint: its own task, told the node's verdict)
//! ```
//! Below them all, `host` reads the pseudo-filesystems (/proc, cgroupfs, mountinfo,
//! tracefs, BTF) and the state files, each in one place. `run` wires the stages together;
//! `main.rs` only parses the command line. The layers (which module may import which) are
//! in ARCHITECTURE.md and tested by `layering`.
pub mod alert;
pub mod catalog;
pub mod check;
pub mod cluster;
pub mod config;
pub mod gpu;
pub mod host;
pub mod identity;
pub mod jobs;
pub mod kubeapi;
pub mod metrics;
pub mod model;
pub mod names;
pub mod probes;
pub mod remediate;
pub mod rules;
pub mod run;
pub mod service;
pub mod snapshot;
pub mod sync;
pub mod targets;
pub mod units;
pub mod verdict;

#[cfg(test)]
mod layering;

/// The kernel programs, built from agent-ebpf by build.rs.
pub const EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gimbal"));
