//! `gimbal-gpu-check`: starts the agent binary next to it (built elsewhere: nothing is
//! built here) with NVML polled every second, and compares what it exports with
//! `nvidia-smi -q -x` on the same node: GPU count, UUIDs, bus ids, memory total, ECC
//! mode, temperature within 2 °C, power within 5 %, the enforced power limit within 1 W, the MIG instances, and the running processes' pids
//! joined to their cgroups. Exit 0 when all agree (or, on a node without a GPU, when the
//! agent says NVML is not attached); 1 with every disagreement listed otherwise.
//! `cargo xtask gpu-check` builds both binaries and runs it; on a GPU node, copy
//! target/release/{gimbal,gimbal-gpu-check} there and run `./gimbal-gpu-check` as root.
use std::{collections::BTreeMap, process::Command, time::Duration};

use gimbal_tests::{agent::Agent, sample, TempDir};

/// One GPU as nvidia-smi shows it.
#[derive(Debug, Clone, Default, PartialEq)]
struct SmiGpu {
    /// In the kernel log's form, as the agent labels it: "0000:3b:00".
    bus: String,
    uuid: String,
    memory_total_mib: Option<f64>,
    ecc_enabled: Option<bool>,
    temperature_c: Option<f64>,
    power_w: Option<f64>,
    power_limit_w: Option<f64>,
    /// `<mig_device>` entries (none where MIG is off).
    mig_instances: usize,
    pids: Vec<u32>,
}

fn main() {
    let smi = Command::new("nvidia-smi").args(["-q", "-x"]).output();
    let state = TempDir::new("gpu-check");
    let config = state.0.join("gimbal.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[gpu]\nnvml_interval = \"1s\"\n",
            state.0.display()
        ),
    )
    .expect("write the check's config");
    let agent = Agent::start_with(&["--config", config.to_str().expect("a UTF-8 path")]);
    let attached = wait_attached(&agent);
    let smi = match smi {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        other => {
            let why = match other {
                Ok(out) => format!(
                    "nvidia-smi failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => format!("nvidia-smi cannot be run: {e}"),
            };
            let _ = agent.stop();
            if attached == Some(false) {
                println!("gpu-check: no GPU on this node ({why}); the agent reports gimbal_gpu_source_attached{{source=\"nvml\"}} 0, as it should. The comparison with nvidia-smi needs a GPU node: copy target/release/gimbal and target/release/gimbal-gpu-check there and run ./gimbal-gpu-check as root.");
                return;
            }
            eprintln!(
                "gpu-check: FAILED: {why}, yet the agent reports NVML attached = {attached:?}"
            );
            std::process::exit(1);
        }
    };
    if attached != Some(true) {
        let _ = agent.stop();
        eprintln!("gpu-check: FAILED: nvidia-smi works, but the agent reports NVML attached = {attached:?} (its log is above)");
        std::process::exit(1);
    }
    let gpus = parse_smi(&smi);
    // Two polls after attaching, so every reading and the processes are in.
    std::thread::sleep(Duration::from_millis(2500));
    let metrics = agent.metrics();
    let problems = compare(&gpus, &metrics, cgroup_of);
    print!("{}", report(&gpus, &metrics));
    let _ = agent.stop();
    if problems.is_empty() {
        println!("gpu-check: OK: {} GPU(s) agree with nvidia-smi", gpus.len());
    } else {
        for p in &problems {
            eprintln!("gpu-check: MISMATCH: {p}");
        }
        std::process::exit(1);
    }
}

/// gimbal_gpu_source_attached{source="nvml"}, once the agent has said (10 s at most).
fn wait_attached(agent: &Agent) -> Option<bool> {
    for _ in 0..100 {
        if let Some(v) = agent.metric("gimbal_gpu_source_attached{source=\"nvml\"} ") {
            return Some(v == 1.0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn cgroup_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::"))
                .map(|p| match p.trim_start_matches('/') {
                    "" => "/".to_string(),
                    rel => rel.to_string(),
                })
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The text of the first `<tag>…</tag>` in `xml`, trimmed.
fn tag<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].trim())
}

/// The leading number of "143771 MiB", "41 C", "123.45 W"; None for "N/A".
fn number(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// "00000000:3B:00.0" as the kernel log prints it: "0000:3b:00".
fn bus_of(id: &str) -> Option<String> {
    let mut parts = id.split(':');
    let domain = u32::from_str_radix(parts.next()?, 16).ok()?;
    let bus = u32::from_str_radix(parts.next()?, 16).ok()?;
    let device = u32::from_str_radix(parts.next()?.split('.').next()?, 16).ok()?;
    Some(format!("{domain:04x}:{bus:02x}:{device:02x}"))
}

/// Every `<gpu id="...">` block of `nvidia-smi -q -x`.
fn parse_smi(xml: &str) -> Vec<SmiGpu> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(at) = rest.find("<gpu id=\"") {
        let block_start = at + "<gpu id=\"".len();
        let id_end = rest[block_start..]
            .find('"')
            .map_or(block_start, |e| block_start + e);
        let id = &rest[block_start..id_end];
        let end = rest[id_end..]
            .find("</gpu>")
            .map_or(rest.len(), |e| id_end + e);
        let block = &rest[id_end..end];
        let readings = tag(block, "gpu_power_readings").or_else(|| tag(block, "power_readings"));
        let power = readings
            .and_then(|p| tag(p, "power_draw").or_else(|| tag(p, "instant_power_draw")))
            .and_then(number);
        // Drivers before 535 say `enforced_power_limit`, later ones `current_power_limit`.
        let power_limit = readings
            .and_then(|p| tag(p, "enforced_power_limit").or_else(|| tag(p, "current_power_limit")))
            .and_then(number);
        let pids = block
            .split("<process_info>")
            .skip(1)
            .filter_map(|p| tag(p, "pid").and_then(|v| v.parse().ok()))
            .collect();
        out.push(SmiGpu {
            bus: bus_of(id).unwrap_or_else(|| id.to_string()),
            uuid: tag(block, "uuid").unwrap_or_default().to_string(),
            memory_total_mib: tag(block, "fb_memory_usage")
                .and_then(|m| tag(m, "total"))
                .and_then(number),
            ecc_enabled: tag(block, "ecc_mode")
                .and_then(|m| tag(m, "current_ecc"))
                .map(|v| v == "Enabled"),
            temperature_c: tag(block, "temperature")
                .and_then(|t| tag(t, "gpu_temp"))
                .and_then(number),
            power_w: power,
            power_limit_w: power_limit,
            mig_instances: block.matches("<mig_device>").count(),
            pids,
        });
        rest = &rest[end..];
    }
    out
}

/// Every disagreement between nvidia-smi and the agent's exposition.
fn compare(gpus: &[SmiGpu], metrics: &str, cgroup_of: impl Fn(u32) -> String) -> Vec<String> {
    let mut problems = Vec::new();
    let info: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("gimbal_gpu_info{"))
        .collect();
    if info.len() != gpus.len() {
        problems.push(format!(
            "GPU count: nvidia-smi {}, gimbal_gpu_info {}",
            gpus.len(),
            info.len()
        ));
    }
    for g in gpus {
        let Some(line) = info
            .iter()
            .find(|l| l.contains(&format!("uuid=\"{}\"", g.uuid)))
        else {
            problems.push(format!("{}: no gimbal_gpu_info with this UUID", g.uuid));
            continue;
        };
        if !line.contains(&format!("gpu=\"{}\"", g.bus)) {
            problems.push(format!("{}: bus id {} not in {line}", g.uuid, g.bus));
        }
        let ids = format!("gpu=\"{}\"", g.bus);
        let value = |family: &str| -> Option<f64> {
            metrics
                .lines()
                .find(|l| l.starts_with(&format!("{family}{{")) && l.contains(&ids))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
        };
        let mut near = |what: &str,
                        smi: Option<f64>,
                        ours: Option<f64>,
                        ok: &dyn Fn(f64, f64) -> bool| {
            match (smi, ours) {
                (Some(a), Some(b)) if ok(a, b) => {}
                (None, None) => {}
                (a, b) => problems.push(format!(
                    "{}: {what}: nvidia-smi {a:?}, gimbal {b:?}",
                    g.uuid
                )),
            }
        };
        near(
            "memory total (MiB)",
            g.memory_total_mib,
            value("gimbal_gpu_memory_total_bytes").map(|b| b / 1048576.0),
            &|a, b| (a - b).abs() <= 1.0,
        );
        near(
            "ECC mode",
            g.ecc_enabled.map(f64::from),
            value("gimbal_gpu_ecc_enabled"),
            &|a, b| a == b,
        );
        near(
            "temperature (C)",
            g.temperature_c,
            value("gimbal_gpu_temperature_celsius"),
            &|a, b| (a - b).abs() <= 2.0,
        );
        near(
            "power (W)",
            g.power_w,
            value("gimbal_gpu_power_watts"),
            &|a, b| (a - b).abs() <= a.abs() * 0.05,
        );
        near(
            "enforced power limit (W)",
            g.power_limit_w,
            value("gimbal_gpu_power_limit_watts"),
            &|a, b| (a - b).abs() <= 1.0,
        );
        let migs = metrics
            .lines()
            .filter(|l| l.starts_with("gimbal_gpu_mig_instance_info{") && l.contains(&ids))
            .count();
        if migs != g.mig_instances {
            problems.push(format!(
                "{}: MIG instances: nvidia-smi {}, gimbal {migs}",
                g.uuid, g.mig_instances
            ));
        }
        // The processes: nvidia-smi's pids, joined to their cgroups here, against the
        // agent's per-cgroup counts.
        let mut want: BTreeMap<String, u64> = BTreeMap::new();
        for pid in &g.pids {
            *want.entry(cgroup_of(*pid)).or_default() += 1;
        }
        let mut got: BTreeMap<String, u64> = BTreeMap::new();
        for l in metrics
            .lines()
            .filter(|l| l.starts_with("gimbal_gpu_cgroup_processes{") && l.contains(&ids))
        {
            let cgroup = l
                .split("cgroup=\"")
                .nth(1)
                .and_then(|c| c.split("\"}").next())
                .unwrap_or_default()
                .replace("\\\"", "\"")
                .replace("\\\\", "\\");
            let n = sample(l, l.rsplit_once(' ').map_or("", |(a, _)| a)).unwrap_or(0.0);
            got.insert(cgroup, n as u64);
        }
        if want != got {
            problems.push(format!(
                "{}: processes per cgroup: nvidia-smi {want:?}, gimbal {got:?}",
                g.uuid
            ));
        }
    }
    problems
}

/// What was compared, for BENCHMARKS.md or the docs.
fn report(gpus: &[SmiGpu], metrics: &str) -> String {
    let mut out = String::new();
    for g in gpus {
        out.push_str(&format!("nvidia-smi: {g:?}\n"));
    }
    for l in metrics.lines().filter(|l| l.starts_with("gimbal_gpu_")) {
        if !l.starts_with("gimbal_gpu_throttle_reason") || l.ends_with(" 1") {
            out.push_str(&format!("gimbal: {l}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of `nvidia-smi -q -x` (trimmed; written from NVIDIA's DTD and sample
    /// outputs, not captured on this machine, which has no GPU).
    const SMI: &str = r#"<?xml version="1.0" ?>
<nvidia_smi_log>
    <driver_version>550.54.15</driver_version>
    <attached_gpus>1</attached_gpus>
    <gpu id="00000000:3B:00.0">
        <product_name>NVIDIA H200</product_name>
        <uuid>GPU-8d5c2b47-0000-1111-2222-333344445555</uuid>
        <fb_memory_usage>
            <total>143771 MiB</total>
            <reserved>512 MiB</reserved>
            <used>1024 MiB</used>
        </fb_memory_usage>
        <ecc_mode>
            <current_ecc>Enabled</current_ecc>
            <pending_ecc>Enabled</pending_ecc>
        </ecc_mode>
        <temperature>
            <gpu_temp>41 C</gpu_temp>
        </temperature>
        <gpu_power_readings>
            <power_state>P0</power_state>
            <power_draw>120.00 W</power_draw>
            <current_power_limit>700.00 W</current_power_limit>
        </gpu_power_readings>
        <processes>
            <process_info>
                <pid>1234</pid>
                <type>C</type>
            </process_info>
            <process_info>
                <pid>1235</pid>
            </process_info>
        </processes>
    </gpu>
</nvidia_smi_log>
"#;

    fn metrics(power: f64, procs: u64) -> String {
        let ids = r#"gpu="0000:3b:00",index="0",uuid="GPU-8d5c2b47-0000-1111-2222-333344445555""#;
        format!(
            "gimbal_gpu_info{{{ids},name=\"NVIDIA H200\",mig=\"disabled\"}} 1\n\
             gimbal_gpu_memory_total_bytes{{{ids}}} {}\n\
             gimbal_gpu_ecc_enabled{{{ids}}} 1\n\
             gimbal_gpu_temperature_celsius{{{ids}}} 42.0\n\
             gimbal_gpu_power_watts{{{ids}}} {power}\n\
             gimbal_gpu_power_limit_watts{{{ids}}} 700.0\n\
             gimbal_gpu_cgroup_processes{{{ids},cgroup=\"kubepods/pod-a\"}} {procs}\n",
            143771u64 * 1048576
        )
    }

    #[test]
    fn nvidia_smi_is_read_and_compared() {
        let gpus = parse_smi(SMI);
        assert_eq!(
            gpus,
            vec![SmiGpu {
                bus: "0000:3b:00".into(),
                uuid: "GPU-8d5c2b47-0000-1111-2222-333344445555".into(),
                memory_total_mib: Some(143771.0),
                ecc_enabled: Some(true),
                temperature_c: Some(41.0),
                power_w: Some(120.0),
                power_limit_w: Some(700.0),
                mig_instances: 0,
                pids: vec![1234, 1235],
            }]
        );
        let pod = |_| "kubepods/pod-a".to_string();
        assert_eq!(
            compare(&gpus, &metrics(123.0, 2), pod),
            Vec::<String>::new()
        );
        let p = compare(&gpus, &metrics(130.0, 1), pod);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].contains("power") && p[1].contains("processes"),
            "{p:?}"
        );
        assert_eq!(
            compare(&[], &metrics(120.0, 2), pod).len(),
            1,
            "the GPU count"
        );
        assert_eq!(bus_of("00000000:3B:00.0").as_deref(), Some("0000:3b:00"));
    }
}
