//! Gimbal, the userspace agent. Data flows one way, each stage a module:
//!
//! ```text
//! probes (aya: load, attach, read maps) -> model (pure) -> metrics (exposition, HTTP)
//!                                        -> watch (targets) -> alert (Alertmanager)
//! ```
//! `run` wires the stages together; `main.rs` only parses the command line.
pub mod alert;
pub mod btf;
pub mod cgroups;
pub mod config;
pub mod durable;
pub mod metrics;
pub mod model;
pub mod names;
pub mod probes;
pub mod procstat;
pub mod remediate;
pub mod rules;
pub mod run;
pub mod service;
pub mod slo;
pub mod targets;
pub mod tracefs;
pub mod watch;

/// The kernel programs, built from agent-ebpf by build.rs.
pub const EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gimbal"));
