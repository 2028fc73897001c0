//! The Prometheus side: the exposition of the model (metric contract in docs/metrics.md)
//! and the HTTP endpoint that serves it.
mod exposition;
mod http;
mod text_format;

pub use exposition::{AgentInfo, Exposition};
pub use http::serve;
