//! Alerts: a Prometheus-like state machine per alert (pending -> firing -> resolved) and
//! delivery straight to Alertmanager, without waiting for a scrape and a rule evaluation.
mod alertmanager;
mod client;
mod error;
mod lifecycle;
mod spool;
mod time;

pub use alertmanager::{basic_auth, Deliverer, DeliveryStats, Endpoint};
pub use client::{check_client_certificate, tls_config};
pub use error::{DeliveryError, TlsError, UrlError};
pub use lifecycle::{AlertLabels, Alerts, Notification, Snapshot, State};
pub use time::rfc3339;
