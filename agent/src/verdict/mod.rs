//! The load-balancing verdict: per watched target and for the node, `up`, `degraded` with
//! a weight (a share of full load), `drain` (finish what you have, take nothing new) or
//! `down`, with a short reason. A pure reader of what the snapshot holds (the targets'
//! status, the GPU's recent XIDs) and of CPU pressure; it has no loop of its own: `run.rs`
//! calls [`Judge::step`] each tick and publishes the result in the snapshot, where the
//! HTTP health endpoint, the agent-check listener and `/metrics` read it.
//!
//! - `signals.rs`: what the signals alone say now (the raw verdict of one target).
//! - `machine.rs`: anti-flap: rise/fall counts, the floor, a bounded step per tick.
//! - `node.rs`: the node's own verdict (GPU faults that need a reset or a reboot).
//! - `score.rs`: the node's load score in [0, 1], for the descheduler.
//! - `judge.rs`: all targets each tick, the node-wide drain cap, changes logged and counted.
//! - `agent_check.rs`: HAProxy's agent-check request and reply.
//! - `health.rs`: the HTTP health answer (status, `x-envoy-degraded`, JSON body).
pub mod agent_check;
pub mod health;
mod judge;
mod machine;
mod node;
mod score;
mod signals;

use std::{collections::BTreeMap, sync::Arc};

pub use judge::Judge;
pub use machine::Machine;
pub use signals::{raw, Inputs};

/// The four states, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    Up,
    Degraded,
    Drain,
    Down,
}

impl State {
    pub const ALL: [State; 4] = [State::Up, State::Degraded, State::Drain, State::Down];

    pub fn name(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Degraded => "degraded",
            State::Drain => "drain",
            State::Down => "down",
        }
    }
}

/// One verdict: the state, the weight in percent of full load (100 when up, 0 when
/// draining or down) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub state: State,
    pub weight: u8,
    pub reason: String,
}

impl Verdict {
    pub fn up() -> Self {
        Self {
            state: State::Up,
            weight: 100,
            reason: "ok".into(),
        }
    }

    pub fn new(state: State, weight: u8, reason: impl Into<String>) -> Self {
        let weight = match state {
            State::Up => 100,
            State::Degraded => weight.clamp(1, 99),
            State::Drain | State::Down => 0,
        };
        Self {
            state,
            weight,
            reason: reason.into(),
        }
    }
}

/// What the readers see: the node's verdict, each target's (the worse of its own and the
/// node's), and the changes counted per target (`node` for the node's).
#[derive(Debug, Clone, Default)]
pub struct Verdicts {
    pub node: Option<Verdict>,
    pub targets: BTreeMap<String, Verdict>,
    pub changes: BTreeMap<String, u64>,
    /// The node's load score, once a verdict was judged.
    pub load: Option<NodeLoad>,
}

/// The node's load score (`score.rs`) and the node name it is exported under.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeLoad {
    pub node: Arc<str>,
    pub score: f64,
}

impl Verdicts {
    /// The verdict asked for: a target by name, the node by an empty name.
    pub fn lookup(&self, name: &str) -> Option<Verdict> {
        if name.is_empty() {
            return Some(self.node.clone().unwrap_or_else(Verdict::up));
        }
        self.targets.get(name).cloned()
    }
}
