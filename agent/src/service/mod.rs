//! How the agent reports its own state to whoever runs it: systemd (sd_notify readiness
//! and watchdog) and Kubernetes or any HTTP prober (/healthz, /readyz).
pub mod fd_limit;
mod health;
pub mod log_line;
mod notify;

pub use health::Health;
pub use notify::Notifier;
