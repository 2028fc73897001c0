//! Watched services ("targets"): which processes belong to each, whether it is up, and the
//! service-level figures kept from that.
//!
//! A target is selected by globs over cgroup2 paths (`glob.rs`; systemd units and
//! Kubernetes pods and containers through the paths their managers give their cgroups,
//! which config turns into globs), expanded on the cgroup mount and confined to it
//! (`confine.rs`); its members are read from the matched cgroups' `cgroup.procs`
//! (`members.rs`). `watch.rs` keeps every target's membership and up/down history (`slo/`,
//! pure, persisted crash-safely) and the status the rules and `/metrics` read; `stall.rs`
//! when each watched cgroup last made progress (TargetStalled).
mod confine;
mod glob;
mod members;
mod pods;
pub mod slo;
pub mod stall;
pub mod watch;

pub use confine::{
    confine, confine_absolute, expand, expand_all, expand_checked, segments, PathError,
};
pub use glob::glob_match;
pub use members::{members, members_where, process_members, Members, ProcessMatch};
