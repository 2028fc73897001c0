//! Remediation: changes the agent makes to the host to protect it, each one guarded,
//! audited and undone. So far: CPU throttling of best-effort cgroups while an alert fires
//! (`[[throttle]]`), on a limit that is journaled before it is written (`limits.rs`), so it
//! is always given back, also after the agent was killed. `[remediation] mode` is
//! `dry-run` by default: everything is decided, logged and counted, nothing changes.
mod audit;
mod guard;
mod limits;
mod throttle;

pub use limits::{Change, Limit, LimitJournal};
pub use throttle::{Counts, Throttler};
