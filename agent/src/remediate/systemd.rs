//! The few calls the agent makes on systemd's D-Bus API (org.freedesktop.systemd1 on the
//! system bus). Blocking, with every call bounded by a timeout, because they run inside
//! the agent's main loop: a hung bus must cost at most seconds, never the loop.
use std::time::Duration;

use anyhow::Context as _;
use zbus::{
    blocking::{connection, Connection},
    zvariant::OwnedObjectPath,
};

const DESTINATION: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Systemd {
    bus: Connection,
}

impl Systemd {
    /// Some when systemd is PID 1 and the system bus answers; None when systemd is not
    /// PID 1 (containers, other inits); an error when it is but the bus cannot be reached.
    pub fn connect() -> anyhow::Result<Option<Self>> {
        // sd_booted(3): how systemd itself tells.
        if !std::path::Path::new("/run/systemd/system").is_dir() {
            return Ok(None);
        }
        let bus = connection::Builder::system()
            .and_then(|b| b.method_timeout(TIMEOUT).build())
            .context("connecting to the D-Bus system bus")?;
        Ok(Some(Self { bus }))
    }

    /// Manager.RestartUnit(unit, "replace"): the path of the queued job.
    pub fn restart_unit(&self, unit: &str) -> anyhow::Result<String> {
        let reply = self
            .bus
            .call_method(
                Some(DESTINATION),
                MANAGER_PATH,
                Some(MANAGER),
                "RestartUnit",
                &(unit, "replace"),
            )
            .with_context(|| format!("RestartUnit({unit})"))?;
        let job: OwnedObjectPath = reply
            .body()
            .deserialize()
            .with_context(|| format!("RestartUnit({unit}): unexpected reply"))?;
        Ok(job.as_str().to_string())
    }
}
