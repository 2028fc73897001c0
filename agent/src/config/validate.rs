//! Checks made after deserializing: ranges, bounds, cross-field rules, files and paths.
//! Each error points at the field's own line and column (`Spans`), so check-config refuses
//! everything `run` would, where it is written.
use std::{collections::BTreeSet, time::Duration};

use super::{errors::ConfigErrors, files, spans::Spans, Config, CrossChecks, HumanDuration};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// The largest exit ring buffer: it is locked kernel memory charged to the agent's memory
/// cgroup (256 MiB under the unit), and 64 MiB holds about a million exit events between
/// two reads.
pub(super) const MAX_RING_BUFFER_KB: u32 = 64 * 1024;

pub(super) fn validate(
    config: &Config,
    spans: &Spans,
    errors: &mut ConfigErrors,
    checks: &dyn CrossChecks,
) {
    agent_and_probes(config, spans, errors);
    targets(config, spans, errors);
    rules(config, spans, errors, checks);
    alerting(config, spans, errors, checks);
    if let Some(Err(e)) = config
        .agent
        .web_config
        .as_deref()
        .map(|p| checks.web_config(p))
    {
        errors.push_path(spans, "agent.web_config", e);
    }
    throttles(config, spans, errors);
    remediation(config, spans, errors);
    restarts(config, spans, errors);
    supervise(config, spans, errors);
    signals(config, spans, errors);
    super::gpu::validate(&config.gpu, spans, errors);
    super::verdict::validate(config, spans, errors);
    super::cluster::validate(config, spans, errors);
}

/// `path` must lie within `min..=max`; the reasons say why each bound is what it is.
fn bounded(
    errors: &mut ConfigErrors,
    spans: &Spans,
    path: &str,
    d: HumanDuration,
    min: Duration,
    max: (Duration, &str),
) {
    let d = d.get();
    if d < min {
        errors.push_path(spans, path, format!("must be at least {}", human(min)));
    } else if d > max.0 {
        let msg = format!(
            "must be at most {} ({}), not {}",
            human(max.0),
            max.1,
            human(d)
        );
        errors.push_path(spans, path, msg);
    }
}

/// A duration the way the config writes it.
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".into(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

fn agent_and_probes(config: &Config, spans: &Spans, errors: &mut ConfigErrors) {
    if config.agent.interval.get() < Duration::from_millis(100) {
        let msg = "must be at least 100ms (reading maps more often costs CPU for nothing)";
        errors.push_path(spans, "agent.interval", msg.into());
    } else {
        let why = "the watchdog is pinged from the same loop, and the unit's WatchdogSec is 30s";
        let max = (Duration::from_secs(10), why);
        bounded(
            errors,
            spans,
            "agent.interval",
            config.agent.interval,
            Duration::ZERO,
            max,
        );
    }
    for (i, name) in config
        .probes
        .syscall_latency
        .timed_syscalls
        .iter()
        .enumerate()
    {
        if name != "*" && crate::names::syscall_number(name).is_none() {
            let msg = format!("`{name}` is not a syscall on this architecture (or \"*\" for all)");
            let path = format!("probes.syscall_latency.timed_syscalls[{i}]");
            errors.push_path(spans, &path, msg);
        }
    }
    let one_in = config.probes.syscall_latency.sample_one_in;
    if !(1..=MAX_SAMPLE_ONE_IN).contains(&one_in) {
        let path = "probes.syscall_latency.sample_one_in";
        let msg = format!(
            "must be from 1 (time every timed syscall) to {MAX_SAMPLE_ONE_IN}, not {one_in}"
        );
        errors.push_path(spans, path, msg);
    }
    if config.probes.syscall_latency.map_memory_mb == 0 {
        let path = "probes.syscall_latency.map_memory_mb";
        errors.push_path(spans, path, "must be at least 1".into());
    }
    if let Err(e) = ring_buffer_kb(config.probes.process_exit.ring_buffer_kb, page_size()) {
        errors.push_path(spans, "probes.process_exit.ring_buffer_kb", e);
    }
}

/// Past this, a histogram holds too few syscalls to say anything at most rates.
const MAX_SAMPLE_ONE_IN: u32 = 1_000_000;

fn page_size() -> u32 {
    // SAFETY: sysconf reads a constant of the running kernel.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(n).unwrap_or(4096)
}

/// What the kernel takes for a BPF ring buffer (a power of two and a multiple of the page
/// size), and no more than `MAX_RING_BUFFER_KB`.
pub(super) fn ring_buffer_kb(kb: u32, page: u32) -> Result<(), String> {
    let min = (page / 1024).max(4);
    if kb < min || !kb.is_power_of_two() {
        Err(format!(
            "must be a power of two of at least {min} (the page size), not {kb}"
        ))
    } else if kb > MAX_RING_BUFFER_KB {
        Err(format!(
            "must be at most {MAX_RING_BUFFER_KB} (64 MiB of locked kernel memory), not {kb}"
        ))
    } else {
        Ok(())
    }
}

/// A glob over cgroup paths: no `.` or `..` segment, nothing that is not printable.
pub(super) fn cgroup_glob(glob: &str) -> Result<(), String> {
    if let Some(c) = glob.chars().find(|c| c.is_control()) {
        return Err(format!("`{}` holds {c:?}", glob.escape_debug()));
    }
    if glob.split('/').any(|s| s == "." || s == "..") {
        return Err(format!(
            "`{glob}` has a `.` or `..` segment: cgroup globs name paths below the mount as they are"
        ));
    }
    Ok(())
}

/// One path segment (a unit name, a pod UID, a container id, a protected name).
fn segment(value: &str) -> Result<(), String> {
    if value.is_empty() || value == "." || value == ".." || value.contains('/') {
        return Err(format!(
            "`{value}` must be one cgroup name: not empty, `.` or `..`, and no `/`"
        ));
    }
    cgroup_glob(value)
}

fn targets(config: &Config, spans: &Spans, errors: &mut ConfigErrors) {
    let mut names = BTreeSet::new();
    for (n, t) in config.targets.iter().enumerate() {
        let at = spans.item("targets", n);
        if t.name.is_empty() || !names.insert(t.name.as_str()) {
            let msg = format!("`{}` must be non-empty and unique", t.name);
            errors.push_path(spans, &format!("{at}.name"), msg);
        }
        for (key, v) in [
            ("availability_objective", t.availability_objective),
            ("latency_objective", t.latency_objective),
        ] {
            if !(v > 0.0 && v < 1.0) {
                let msg = format!(
                    "of `{}` must be between 0 and 1 (exclusive), not {v}",
                    t.name
                );
                errors.push_path(spans, &format!("{at}.{key}"), msg);
            }
        }
        for (i, name) in t.latency_syscalls.iter().enumerate() {
            if crate::names::syscall_number(name).is_none() {
                let msg = format!(
                    "of `{}`: `{name}` is not a syscall on this architecture",
                    t.name
                );
                errors.push_path(spans, &format!("{at}.latency_syscalls[{i}]"), msg);
            }
        }
        for (i, name) in t.progress_syscalls.iter().enumerate() {
            if crate::names::syscall_number(name).is_none() {
                let msg = format!(
                    "of `{}`: `{name}` is not a syscall on this architecture",
                    t.name
                );
                errors.push_path(spans, &format!("{at}.progress_syscalls[{i}]"), msg);
            }
        }
        if t.stall_for.is_some() && t.progress_syscalls.is_empty() {
            let msg = format!(
                "of `{}` must name at least one syscall when stall_for is set",
                t.name
            );
            errors.push_path(spans, &format!("{at}.progress_syscalls"), msg);
        }
        if let Some(stall_for) = t.stall_for {
            let why = "a quiet day is a schedule, not a stall";
            bounded(
                errors,
                spans,
                &format!("{at}.stall_for"),
                stall_for,
                Duration::from_secs(1),
                (DAY, why),
            );
        }
        let why = "the histogram's last bucket ends at 16s";
        bounded(
            errors,
            spans,
            &format!("{at}.latency_threshold"),
            t.latency_threshold,
            Duration::ZERO,
            (MINUTE, why),
        );
        let why = "failures are remembered that long";
        bounded(
            errors,
            spans,
            &format!("{at}.crash_loop_window"),
            t.crash_loop_window,
            Duration::from_secs(1),
            (DAY, why),
        );
        selectors(t, &at, spans, errors);
    }
}

fn selectors(t: &super::TargetConfig, at: &str, spans: &Spans, errors: &mut ConfigErrors) {
    // comm and exe, alone or together, are one (process) selector.
    let process = t.comm.clone().or_else(|| t.exe.clone());
    let process_key = if t.comm.is_some() { "comm" } else { "exe" };
    // pod and namespace, alone or together, are one (pod name) selector.
    let by_name = t.pod.clone().or_else(|| t.namespace.clone());
    let by_name_key = if t.pod.is_some() { "pod" } else { "namespace" };
    let selectors = [
        ("cgroup", &t.cgroup),
        ("unit", &t.unit),
        ("pod_uid", &t.pod_uid),
        ("container_id", &t.container_id),
        (process_key, &process),
        (by_name_key, &by_name),
    ];
    let set: Vec<(&str, &String)> = selectors
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (*k, v)))
        .collect();
    for (key, value) in &set {
        let path = format!("{at}.{key}");
        let check = match *key {
            "cgroup" => cgroup_glob(value),
            "unit" | "pod_uid" | "container_id" => segment(value),
            _ => Ok(()),
        };
        if let Err(e) = check {
            errors.push_path(spans, &path, format!("of `{}`: {e}", t.name));
        }
    }
    // Both may be set; each is checked where it is written.
    for (key, glob) in [("namespace", &t.namespace), ("pod", &t.pod)] {
        if let Some(Err(e)) = glob.as_deref().map(name_glob) {
            errors.push_path(
                spans,
                &format!("{at}.{key}"),
                format!("of `{}`: {e}", t.name),
            );
        }
    }
    match set.as_slice() {
        [(key, value)]
            if !matches!(*key, "pod" | "namespace")
                && value.trim_matches(['/', '*']).is_empty() =>
        {
            let msg = format!(
                "of `{}` must select something below the root cgroup",
                t.name
            );
            errors.push_path(spans, &format!("{at}.{key}"), msg);
        }
        [_] => {}
        _ => {
            let msg = format!(
                "`{}` needs exactly one selector: cgroup, unit, pod_uid, container_id, comm/exe, or pod/namespace",
                t.name
            );
            errors.push_path(spans, &format!("{at}.name"), msg);
        }
    }
}

/// A glob over Kubernetes names (namespaces, pods): what those may hold, and `*`.
fn name_glob(glob: &str) -> Result<(), String> {
    if glob.is_empty() || glob.len() > 253 {
        return Err("must be 1 to 253 characters".into());
    }
    if let Some(c) = glob
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '*')))
    {
        return Err(format!(
            "{:?} is not in a Kubernetes name: lowercase letters, digits, `-`, `.`, and `*` as a glob",
            c
        ));
    }
    Ok(())
}

fn rules(config: &Config, spans: &Spans, errors: &mut ConfigErrors, checks: &dyn CrossChecks) {
    let mut alerts = BTreeSet::new();
    for (n, r) in config.rules.iter().enumerate() {
        let at = spans.item("rules", n);
        if r.alert.is_empty()
            || !r
                .alert
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || !alerts.insert(&r.alert)
        {
            let msg = format!(
                "`{}` must be a unique name of letters, digits and _",
                r.alert
            );
            errors.push_path(spans, &format!("{at}.alert"), msg);
        }
        if let Err(e) = checks.rule_expr(&r.expr) {
            errors.push_path(
                spans,
                &format!("{at}.expr"),
                format!("of `{}`: {e}", r.alert),
            );
        }
        let why = "a condition that must hold longer never fires in practice";
        bounded(
            errors,
            spans,
            &format!("{at}.for"),
            r.hold,
            Duration::ZERO,
            (DAY, why),
        );
    }
}

fn alerting(config: &Config, spans: &Spans, errors: &mut ConfigErrors, checks: &dyn CrossChecks) {
    let a = &config.alerting;
    endpoint_settings(spans, errors, checks, "alerting", &a.defaults());
    let resolved = a.endpoints();
    for (i, (entry, resolved)) in a.alertmanagers.iter().zip(&resolved).enumerate() {
        let path = format!("alerting.alertmanagers[{i}]");
        let url = &entry.url;
        endpoint_settings(spans, errors, checks, &path, entry);
        // Each Alertmanager has one delivery lane and one spool file: a URL listed twice
        // would have two lanes writing one spool.
        if a.alertmanagers[..i].iter().any(|e| e.url == *url) {
            errors.push_path(spans, &path, format!("`{url}` is listed twice"));
        }
        match checks.alertmanager_is_https(url) {
            Err(e) => errors.push_path(spans, &path, e),
            Ok(true) if resolved.tls_ca_file.is_none() => {
                let msg = format!(
                    "`{url}` is https: set [alerting] tls_ca_file to the CA that signed it (or the entry's own)"
                );
                errors.push_path(spans, &path, msg);
            }
            Ok(_) => {}
        }
        let tls = [
            &entry.tls_ca_file,
            &entry.tls_cert_file,
            &entry.tls_key_file,
        ];
        if url.starts_with("http://") && tls.iter().any(|f| f.is_some()) {
            let msg = format!("`{url}` is plain http: its TLS settings would be unused");
            errors.push_path(spans, &path, msg);
        }
    }
    // endsAt is now + 4 x resend_interval: longer, and an agent that dies leaves its alerts
    // firing for more than 4 hours before Alertmanager resolves them.
    let why = "endsAt is 4 resend intervals ahead: a dead agent's alerts would linger";
    bounded(
        errors,
        spans,
        "alerting.resend_interval",
        a.resend_interval,
        Duration::from_secs(1),
        (HOUR, why),
    );
    let why = "a hold that long never fires in practice";
    bounded(
        errors,
        spans,
        "alerting.target_down_for",
        a.target_down_for,
        Duration::ZERO,
        (DAY, why),
    );
    bounded(
        errors,
        spans,
        "alerting.latency_for",
        a.latency_for,
        Duration::ZERO,
        (DAY, why),
    );
    if !(a.tcp_retransmit_rate.is_finite() && a.tcp_retransmit_rate >= 0.0) {
        let msg = format!(
            "must be a number of at least 0, not {}",
            a.tcp_retransmit_rate
        );
        errors.push_path(spans, "alerting.tcp_retransmit_rate", msg);
    }
    if config.labels.max_series_per_metric == 0 {
        errors.push_path(
            spans,
            "labels.max_series_per_metric",
            "must be at least 1".into(),
        );
    }
    let one_histogram = config.labels.histogram_series();
    if config.labels.max_series < one_histogram {
        let msg = format!(
            "must be at least {one_histogram} (one latency histogram's series with these \
             classic_buckets), not {}",
            config.labels.max_series
        );
        errors.push_path(spans, "labels.max_series", msg);
    }
    for (place, why) in config.labels.classic_buckets.problems() {
        let path = format!("labels.classic_buckets[{place}]");
        errors.push_path(spans, &path, why.clone());
    }
}

/// The TLS and auth settings of `[alerting]` (`at` = "alerting") or of one alertmanagers
/// entry, each file checked the way delivery reads it, errors at the field.
fn endpoint_settings(
    spans: &Spans,
    errors: &mut ConfigErrors,
    checks: &dyn CrossChecks,
    at: &str,
    e: &crate::config::AlertmanagerEntry,
) {
    if e.bearer_token_file.is_some() && e.basic_auth_username.is_some() {
        let msg = "and basic_auth_username are exclusive: choose one".into();
        errors.push_path(spans, &format!("{at}.bearer_token_file"), msg);
    }
    if e.basic_auth_username.is_some() != e.basic_auth_password_file.is_some() {
        let msg = "needs basic_auth_password_file too (and the other way round)".into();
        errors.push_path(spans, &format!("{at}.basic_auth_username"), msg);
    }
    if let Some(user) = &e.basic_auth_username {
        if user.is_empty() || user.contains(':') || user.chars().any(|c| c.is_control()) {
            let msg = format!(
                "`{}` must be non-empty, without `:` or control characters (RFC 7617)",
                user.escape_debug()
            );
            errors.push_path(spans, &format!("{at}.basic_auth_username"), msg);
        }
    }
    if e.tls_cert_file.is_some() != e.tls_key_file.is_some() {
        let msg = "needs tls_key_file too (and the other way round)".into();
        errors.push_path(spans, &format!("{at}.tls_cert_file"), msg);
    }
    type Check<'c> = &'c dyn Fn(&std::path::Path) -> Result<(), String>;
    let check_ca = |p: &std::path::Path| files::check_ca(p, checks);
    let file_checks: [(&str, &Option<std::path::PathBuf>, Check); 5] = [
        (
            "bearer_token_file",
            &e.bearer_token_file,
            &files::check_token,
        ),
        (
            "basic_auth_password_file",
            &e.basic_auth_password_file,
            &files::check_password,
        ),
        ("tls_ca_file", &e.tls_ca_file, &check_ca),
        ("tls_cert_file", &e.tls_cert_file, &files::check_readable),
        ("tls_key_file", &e.tls_key_file, &files::check_readable),
    ];
    let mut readable = true;
    for (field, file, check) in file_checks {
        if let Some(Err(msg)) = file.as_deref().map(check) {
            errors.push_path(spans, &format!("{at}.{field}"), msg);
            if field == "tls_cert_file" || field == "tls_key_file" {
                readable = false;
            }
        }
    }
    // The pair as delivery loads it: PEM, a key, and a key that belongs to the certificate.
    if let (true, Some(cert), Some(key)) = (readable, &e.tls_cert_file, &e.tls_key_file) {
        if let Err((field, msg)) = checks.tls_client(cert, key) {
            errors.push_path(spans, &format!("{at}.{field}"), msg);
        }
    }
}

fn throttles(config: &Config, spans: &Spans, errors: &mut ConfigErrors) {
    for (n, t) in config.throttles.iter().enumerate() {
        let at = spans.item("throttle", n);
        if t.cpu.is_some_and(|cpu| !(cpu >= 0.01 && cpu.is_finite())) {
            let msg = format!(
                "[[throttle]] `{}`: cpu must be at least 0.01 (CPUs)",
                t.name
            );
            errors.push_path(spans, &format!("{at}.cpu"), msg);
        }
        if t.memory_high.is_some_and(|b| b.0 < 1 << 20) {
            let msg = format!("[[throttle]] `{}`: memory_high must be at least 1M", t.name);
            errors.push_path(spans, &format!("{at}.memory_high"), msg);
        }
        let limits = t.cpu.is_some() || t.memory_high.is_some();
        if limits == t.freeze {
            let msg = format!(
                "[[throttle]] `{}`: set cpu and/or memory_high, or freeze = true (not both)",
                t.name
            );
            errors.push_path(spans, &format!("{at}.name"), msg);
        }
        cgroup_list("throttle", &t.name, &t.cgroups, &at, spans, errors);
        let why = "a throttle outliving its cause by more is a misconfiguration";
        bounded(
            errors,
            spans,
            &format!("{at}.ttl"),
            t.ttl,
            Duration::from_secs(1),
            (DAY, why),
        );
    }
}

fn cgroup_list(
    section: &str,
    name: &str,
    globs: &[String],
    at: &str,
    spans: &Spans,
    errors: &mut ConfigErrors,
) {
    if globs.is_empty() {
        let msg = format!("[[{section}]] `{name}`: cgroups lists no glob");
        errors.push_path(spans, &format!("{at}.cgroups"), msg);
    }
    for (i, glob) in globs.iter().enumerate() {
        if let Err(e) = cgroup_glob(glob) {
            let msg = format!("[[{section}]] `{name}`: {e}");
            errors.push_path(spans, &format!("{at}.cgroups[{i}]"), msg);
        }
    }
}

fn remediation(config: &Config, spans: &Spans, errors: &mut ConfigErrors) {
    let r = &config.remediation;
    if r.give_up_after == 0 {
        errors.push_path(
            spans,
            "remediation.give_up_after",
            "must be at least 1".into(),
        );
    }
    if r.max_concurrent == 0 {
        let msg = "must be at least 1 (dry-run is how to act on nothing)".into();
        errors.push_path(spans, "remediation.max_concurrent", msg);
    }
    if r.backoff.get() > r.backoff_max.get() {
        let msg = "must not be longer than backoff_max".into();
        errors.push_path(spans, "remediation.backoff", msg);
    }
    let why = "restarts further apart are given up on";
    bounded(
        errors,
        spans,
        "remediation.backoff_max",
        r.backoff_max,
        Duration::ZERO,
        (DAY, why),
    );
    let why = "a run that long is healthy";
    bounded(
        errors,
        spans,
        "remediation.stable_after",
        r.stable_after,
        Duration::from_secs(1),
        (DAY, why),
    );
    for (i, name) in r.protected.iter().enumerate() {
        if let Err(e) = segment(name) {
            errors.push_path(spans, &format!("remediation.protected[{i}]"), e);
        }
    }
    let dir = &r.supervised_cgroup;
    if dir.is_empty()
        || dir.starts_with('/')
        || dir
            .split('/')
            .any(|s| s.is_empty() || s == ".." || s == ".")
        || cgroup_glob(dir).is_err()
    {
        let msg = format!(
            "`{}` must be a relative cgroup path below the root, like \"gimbal.supervised\"",
            dir.escape_debug()
        );
        errors.push_path(spans, "remediation.supervised_cgroup", msg);
    }
}

fn restarts(config: &Config, spans: &Spans, errors: &mut ConfigErrors) {
    for (n, restart) in config.restarts.iter().enumerate() {
        let target = config.targets.iter().find(|t| t.name == restart.target);
        let problem = match target {
            None => Some("is not a [[targets]] name".to_string()),
            Some(t) if t.pod_uid.is_some() || t.by_pod_name() => {
                (!config.cluster.evictions).then(|| {
                    "selects a pod: set [cluster] evictions = true to restart it by an eviction \
                     through the API (the kubelet restarts its containers itself)"
                        .into()
                })
            }
            Some(t) if t.unit.is_none() => Some(if t.container_id.is_some() {
                "selects a container: the kubelet restarts those, the agent only alerts".into()
            } else {
                "does not select a systemd `unit` or a pod; only those can be restarted".into()
            }),
            Some(_) => None,
        };
        if let Some(problem) = problem {
            let msg = format!("`{}` {problem}", restart.target);
            errors.push_path(spans, &format!("{}.target", spans.item("restart", n)), msg);
        }
    }
}

fn supervise(config: &Config, spans: &Spans, errors: &mut ConfigErrors) {
    let mut names = BTreeSet::new();
    for (n, s) in config.supervise.iter().enumerate() {
        let at = spans.item("supervise", n);
        let valid = !s.name.is_empty()
            && s.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !s.name.starts_with('.');
        if !valid || !names.insert(s.name.as_str()) {
            let msg = format!(
                "`{}` must be a unique name of letters, digits, '-', '_' and '.'",
                s.name
            );
            errors.push_path(spans, &format!("{at}.name"), msg);
        }
        match s.command.first() {
            Some(program) if program.starts_with('/') => {}
            _ => {
                let msg = format!(
                    "of `{}` must start with the program's absolute path",
                    s.name
                );
                errors.push_path(spans, &format!("{at}.command"), msg);
            }
        }
        if !s.cwd.is_absolute() {
            let msg = format!("of `{}` must be an absolute path", s.name);
            errors.push_path(spans, &format!("{at}.cwd"), msg);
        }
    }
}

fn signals(config: &Config, spans: &Spans, errors: &mut ConfigErrors) {
    for (n, s) in config.signals.iter().enumerate() {
        let at = spans.item("signal", n);
        if crate::names::signal_number(&s.signal).is_none() {
            let msg = format!(
                "of `{}`: `{}` is not a signal name, like \"SIGUSR1\"",
                s.name, s.signal
            );
            errors.push_path(spans, &format!("{at}.signal"), msg);
        }
        cgroup_list("signal", &s.name, &s.cgroups, &at, spans, errors);
    }
}
