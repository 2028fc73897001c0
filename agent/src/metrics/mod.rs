//! The Prometheus side: the exposition of the model (metric contract in docs/metrics.md)
//! and the HTTP endpoint that serves it (with the verdicts' /health), and the HAProxy
//! agent-check listener.
pub mod agent_check;
mod coding;
mod conn;
mod escape;
mod exposition;
mod families;
mod http;
mod native;
mod negotiate;
mod proto;
mod protobuf;
mod routes;
mod slots;
mod text_format;
pub mod web;

#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod http_tests;
#[cfg(test)]
mod identity_tests;
#[cfg(test)]
mod strict;
#[cfg(test)]
mod web_tests;

pub use exposition::{AgentInfo, Exposition};
pub use http::serve;
pub use routes::Routes;
