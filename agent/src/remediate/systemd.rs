//! The few calls the agent makes on systemd's D-Bus API (org.freedesktop.systemd1 on the
//! system bus). Blocking, with every call bounded by a timeout, because they run inside
//! the agent's main loop: a hung bus must cost at most seconds, never the loop.
//!
//! zbus's blocking API on its own async-io executor and threads, not on Tokio: so it needs
//! no Tokio runtime and works from inside one (it blocks that thread for the call, no more).
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

use anyhow::{bail, Context as _};
use zbus::{
    blocking::{connection, Connection},
    message::Message,
    zvariant::{DynamicDeserialize, DynamicType, OwnedObjectPath, OwnedValue, Value},
};

const DESTINATION: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const SERVICE: &str = "org.freedesktop.systemd1.Service";
const SCOPE: &str = "org.freedesktop.systemd1.Scope";
const SLICE: &str = "org.freedesktop.systemd1.Slice";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
const NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";
/// Bounds every method call (zbus's method_timeout) and the connect itself.
const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Systemd {
    bus: Connection,
}

impl Systemd {
    /// Some when systemd is PID 1 (the directory /run/systemd/system exists) and the system
    /// bus answers; None when systemd is not PID 1 (containers, other inits); an error when
    /// it is but the bus cannot be reached.
    pub fn connect() -> anyhow::Result<Option<Self>> {
        // sd_booted(3): how systemd itself tells.
        if !std::path::Path::new("/run/systemd/system").is_dir() {
            return Ok(None);
        }
        Ok(Some(Self {
            bus: connect_bounded()?,
        }))
    }

    /// Manager.RestartUnit(unit, "replace"): the path of the queued job.
    pub fn restart_unit(&self, unit: &str) -> anyhow::Result<String> {
        self.unit_job("RestartUnit", unit)
    }

    /// The unit whose cgroup is this path relative to the cgroup2 root, e.g.
    /// "system.slice/hog.service" -> Some("hog.service"). Manager.GetUnitByControlGroup is
    /// not in all versions: the name comes from the last path segment, and the unit's
    /// ControlGroup must be that very path (a nested payload's "x.service" is not ours).
    /// None when the path is no systemd unit's cgroup.
    pub fn unit_for_cgroup(&self, path: &str) -> anyhow::Result<Option<String>> {
        let Some(unit) = cgroup_unit_candidate(path) else {
            return Ok(None);
        };
        let iface = cgroup_interface(unit).expect("a candidate has a cgroup suffix");
        // GetUnit, not LoadUnit: a unit that owns a cgroup is loaded, and LoadUnit would load
        // a "not-found" stub for every name that is not a unit.
        let what = format!("GetUnit({unit})");
        let object = match self.raw(MANAGER_PATH, MANAGER, "GetUnit", &(unit,)) {
            Ok(reply) => decode::<OwnedObjectPath>(&reply, &what)?,
            Err(zbus::Error::MethodError(name, _, _)) if name.as_str() == NO_SUCH_UNIT => {
                return Ok(None)
            }
            Err(e) => return Err(anyhow::Error::new(e).context(what)),
        };
        let cgroup: String = self.get(unit, &object, iface, "ControlGroup")?;
        let wanted = format!("/{}", path.trim_matches('/'));
        Ok((cgroup == wanted).then(|| unit.to_string()))
    }

    /// CPUQuotaPerSecUSec of a service, scope or slice; u64::MAX means no quota.
    pub fn cpu_quota_per_sec_usec(&self, unit: &str) -> anyhow::Result<u64> {
        self.property(unit, cgroup_interface_of(unit)?, "CPUQuotaPerSecUSec")
    }

    /// MemoryHigh of a service, scope or slice; u64::MAX means none ("infinity").
    pub fn memory_high(&self, unit: &str) -> anyhow::Result<u64> {
        self.property(unit, cgroup_interface_of(unit)?, "MemoryHigh")
    }

    /// Sets CPUQuotaPerSecUSec at runtime only (gone at reboot, like the agent's reason for
    /// it); u64::MAX removes the quota.
    pub fn set_cpu_quota_per_sec_usec(&self, unit: &str, usec: u64) -> anyhow::Result<()> {
        self.set_property(unit, "CPUQuotaPerSecUSec", usec)
    }

    /// Sets MemoryHigh at runtime only; u64::MAX removes the limit.
    pub fn set_memory_high(&self, unit: &str, bytes: u64) -> anyhow::Result<()> {
        self.set_property(unit, "MemoryHigh", bytes)
    }

    /// Manager.FreezeUnit (systemd >= 246): stops every process of the unit in place.
    pub fn freeze_unit(&self, unit: &str) -> anyhow::Result<()> {
        self.manager_void("FreezeUnit", unit, &(unit,))
    }

    /// Manager.ThawUnit (systemd >= 246): undoes FreezeUnit.
    pub fn thaw_unit(&self, unit: &str) -> anyhow::Result<()> {
        self.manager_void("ThawUnit", unit, &(unit,))
    }

    fn unit_job(&self, method: &str, unit: &str) -> anyhow::Result<String> {
        let what = format!("{method}({unit})");
        let reply = self
            .raw(MANAGER_PATH, MANAGER, method, &(unit, "replace"))
            .with_context(|| what.clone())?;
        let job: OwnedObjectPath = decode(&reply, &what)?;
        Ok(job.as_str().to_string())
    }

    fn set_property(&self, unit: &str, name: &str, value: u64) -> anyhow::Result<()> {
        self.manager_void(
            "SetUnitProperties",
            unit,
            &set_properties_body(unit, name, value),
        )
    }

    fn manager_void<B>(&self, method: &str, unit: &str, body: &B) -> anyhow::Result<()>
    where
        B: serde::Serialize + DynamicType,
    {
        self.raw(MANAGER_PATH, MANAGER, method, body)
            .with_context(|| format!("{method}({unit})"))?;
        Ok(())
    }

    /// Manager.LoadUnit: the unit's object path, also for a unit that is not running.
    fn unit_path(&self, unit: &str) -> anyhow::Result<OwnedObjectPath> {
        let what = format!("LoadUnit({unit})");
        let reply = self
            .raw(MANAGER_PATH, MANAGER, "LoadUnit", &(unit,))
            .with_context(|| what.clone())?;
        decode(&reply, &what)
    }

    fn property<T>(&self, unit: &str, iface: &str, name: &str) -> anyhow::Result<T>
    where
        T: TryFrom<OwnedValue, Error = zbus::zvariant::Error>,
    {
        let object = self.unit_path(unit)?;
        self.get(unit, &object, iface, name)
    }

    /// Properties.Get(iface, name) on the unit's object.
    fn get<T>(
        &self,
        unit: &str,
        object: &OwnedObjectPath,
        iface: &str,
        name: &str,
    ) -> anyhow::Result<T>
    where
        T: TryFrom<OwnedValue, Error = zbus::zvariant::Error>,
    {
        let what = format!("Get({unit}, {iface}.{name})");
        let reply = self
            .raw(object.as_str(), PROPERTIES, "Get", &(iface, name))
            .with_context(|| what.clone())?;
        let value: OwnedValue = decode(&reply, &what)?;
        T::try_from(value).with_context(|| format!("{what}: unexpected type"))
    }

    /// One method call on systemd; bounded by the connection's method_timeout.
    fn raw<B>(&self, path: &str, iface: &str, method: &str, body: &B) -> zbus::Result<Message>
    where
        B: serde::Serialize + DynamicType,
    {
        self.bus
            .call_method(Some(DESTINATION), path, Some(iface), method, body)
    }
}

/// Builds the system bus connection on a thread of its own and waits at most TIMEOUT for it:
/// zbus's method_timeout does not cover the connect, authentication and Hello, which a hung
/// bus never answers. A connect still stuck from an earlier try is not doubled (no thread
/// pile-up); it fails at once until that one ends.
fn connect_bounded() -> anyhow::Result<Connection> {
    static PENDING: AtomicBool = AtomicBool::new(false);
    const WHAT: &str = "connecting to the D-Bus system bus";
    if PENDING.swap(true, Ordering::AcqRel) {
        bail!("{WHAT}: an earlier connect is still waiting for the bus");
    }
    let (tx, rx) = mpsc::sync_channel(1);
    let spawned = thread::Builder::new()
        .name("gimbal-dbus-connect".into())
        .spawn(move || {
            let bus = connection::Builder::system().and_then(|b| b.method_timeout(TIMEOUT).build());
            PENDING.store(false, Ordering::Release);
            // The receiver is gone when the wait timed out: the late connection is dropped.
            let _ = tx.send(bus);
        });
    if let Err(e) = spawned {
        PENDING.store(false, Ordering::Release);
        return Err(anyhow::Error::new(e).context(WHAT));
    }
    match rx.recv_timeout(TIMEOUT) {
        Ok(bus) => bus.context(WHAT),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            bail!("{WHAT}: no answer within {}s", TIMEOUT.as_secs())
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => bail!("{WHAT}: the connect thread died"),
    }
}

/// A reply's body as `R`, the error naming the call.
fn decode<R>(reply: &Message, what: &str) -> anyhow::Result<R>
where
    R: for<'d> DynamicDeserialize<'d>,
{
    reply
        .body()
        .deserialize()
        .with_context(|| format!("{what}: unexpected reply"))
}

/// SetUnitProperties's arguments, (s name, b runtime, a(sv) properties): runtime only, so a
/// limit never outlives a reboot.
fn set_properties_body<'a>(
    unit: &'a str,
    name: &'a str,
    value: u64,
) -> (&'a str, bool, Vec<(&'a str, Value<'static>)>) {
    (unit, true, vec![(name, Value::U64(value))])
}

/// The interface that holds a unit's cgroup properties (ControlGroup, CPUQuotaPerSecUSec,
/// MemoryHigh), by the unit's suffix; None for unit types the agent does not manage.
fn cgroup_interface(unit: &str) -> Option<&'static str> {
    let (_, suffix) = unit.rsplit_once('.')?;
    match suffix {
        "service" => Some(SERVICE),
        "scope" => Some(SCOPE),
        "slice" => Some(SLICE),
        _ => None,
    }
}

fn cgroup_interface_of(unit: &str) -> anyhow::Result<&'static str> {
    cgroup_interface(unit).with_context(|| format!("{unit}: not a .service, .scope or .slice unit"))
}

/// The unit name a cgroup path (relative to the cgroup2 root) would belong to: its last
/// segment, if that looks like a service, scope or slice name. systemd escapes a cgroup
/// name that starts with "_" (cg_escape), so one leading "_" is dropped, as cg_unescape does.
fn cgroup_unit_candidate(path: &str) -> Option<&str> {
    let last = path.trim_matches('/').rsplit('/').next()?;
    let name = last.strip_prefix('_').unwrap_or(last);
    let (stem, _) = name.rsplit_once('.')?;
    let valid = |c: char| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c);
    if stem.is_empty() || name.len() > 255 || !name.chars().all(valid) {
        return None;
    }
    cgroup_interface(name).map(|_| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_is_the_last_segment_with_a_cgroup_suffix() {
        let cases = [
            ("system.slice/hog.service", Some("hog.service")),
            ("/system.slice/hog.service/", Some("hog.service")),
            ("system.slice", Some("system.slice")),
            ("init.scope", Some("init.scope")),
            (
                "system.slice/docker-0123abcd.scope",
                Some("docker-0123abcd.scope"),
            ),
            (
                "system.slice/system-getty.slice/getty@tty1.service",
                Some("getty@tty1.service"),
            ),
            ("user.slice/user-1000.slice", Some("user-1000.slice")),
            ("system.slice/_x.service", Some("x.service")),
            // Inside a unit's cgroup (delegation), or not a unit at all.
            ("system.slice/trainer.service/payload", None),
            ("system.slice/sshd.socket", None),
            ("system.slice/.service", None),
            ("system.slice/hog service.service", None),
            ("", None),
            ("/", None),
            ("service", None),
        ];
        for (path, want) in cases {
            assert_eq!(cgroup_unit_candidate(path), want, "{path:?}");
        }
    }

    #[test]
    fn interface_by_suffix() {
        assert_eq!(cgroup_interface("hog.service"), Some(SERVICE));
        assert_eq!(cgroup_interface("getty@tty1.service"), Some(SERVICE));
        assert_eq!(cgroup_interface("session-3.scope"), Some(SCOPE));
        assert_eq!(cgroup_interface("system.slice"), Some(SLICE));
        assert_eq!(cgroup_interface("-.slice"), Some(SLICE));
        assert_eq!(cgroup_interface("sshd.socket"), None);
        assert_eq!(cgroup_interface("service"), None);
        let err = cgroup_interface_of("tmp.mount").unwrap_err();
        assert!(err.to_string().contains("tmp.mount"), "{err}");
    }

    #[test]
    fn set_unit_properties_has_systemds_signature() {
        let body = set_properties_body("hog.service", "CPUQuotaPerSecUSec", 200_000);
        let msg = Message::method_call(MANAGER_PATH, "SetUnitProperties")
            .unwrap()
            .interface(MANAGER)
            .unwrap()
            .build(&body)
            .unwrap();
        // As on the wire: the header field drops the outer parentheses.
        assert_eq!(msg.body().signature().to_string_no_parens(), "sba(sv)");
        let (unit, runtime, props): (String, bool, Vec<(String, OwnedValue)>) =
            msg.body().deserialize().unwrap();
        assert_eq!((unit.as_str(), runtime), ("hog.service", true));
        assert_eq!(props.len(), 1);
        assert_eq!(props[0].0, "CPUQuotaPerSecUSec");
        assert_eq!(
            u64::try_from(props[0].1.try_clone().unwrap()).unwrap(),
            200_000
        );
    }

    #[test]
    fn a_properties_get_reply_decodes_to_its_value() {
        // The reply of Properties.Get is one variant ("v").
        let reply = Message::method_call("/org/freedesktop/systemd1/unit/hog_2eservice", "Get")
            .unwrap()
            .build(&(Value::new(u64::MAX),))
            .unwrap();
        assert_eq!(reply.body().signature().to_string_no_parens(), "v");
        let value: OwnedValue = decode(&reply, "Get").unwrap();
        assert_eq!(u64::try_from(value).unwrap(), u64::MAX);
        let value: OwnedValue = decode(&reply, "Get").unwrap();
        let err = String::try_from(value).unwrap_err();
        assert!(matches!(err, zbus::zvariant::Error::IncorrectType), "{err}");
        let err = decode::<OwnedObjectPath>(&reply, "LoadUnit(hog.service)").unwrap_err();
        assert!(
            format!("{err:#}").starts_with("LoadUnit(hog.service): unexpected reply"),
            "{err:#}"
        );
    }
}
