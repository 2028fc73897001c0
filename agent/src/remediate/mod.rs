//! Remediation: changes the agent makes to the host to protect it. Issue 5 builds the
//! actions (restart, throttle, freeze, signal) and their guards on these parts; so far only
//! the one mechanism every temporary change shares is here: a limit that is journaled
//! before it is written and is always undone.
mod limits;

pub use limits::{Change, Limit, LimitJournal};
