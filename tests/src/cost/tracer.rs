//! The tracers a cost benchmark compares: none, the real agent (embedded defaults, or the
//! every-syscall-timed config in tests/bench/gimbal-full.toml), bpftrace keeping the
//! same (cgroup, syscall) histogram as the `syscalls` section, an empty `sys_exit`
//! program (the floor), and every syscall timed with one in 16 sampled
//! (tests/bench/gimbal-sampled.toml).
use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{agent::Agent, sibling_binary, Proc, TempDir};

/// The bpftrace program of `cargo xtask bench --only syscalls`: the same per (cgroup,
/// syscall) latency histogram the agent keeps.
pub const BPFTRACE_HIST: &str = include_str!("../../bench/syscall-hist.bt");

/// The file the "every syscall timed" rows run with, unless the bench is given another.
pub const FULL_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/gimbal-full.toml");

/// The file the "one in 16 sampled" rows run with.
pub const SAMPLED_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/gimbal-sampled.toml");

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Config {
    None,
    Defaults,
    Full,
    Bpftrace,
    /// An empty program on `sys_exit` alone: the floor under any per-syscall count.
    EmptyExit,
    /// Every syscall timed, one in 16 sampled.
    Sampled,
}

impl Config {
    pub const ALL: [Config; 6] = [
        Config::None,
        Config::Defaults,
        Config::Full,
        Config::Bpftrace,
        Config::EmptyExit,
        Config::Sampled,
    ];
}

/// What the "every syscall timed" rows run with.
pub struct FullMode {
    /// The config file's text, without the state directory the bench adds.
    pub text: String,
    pub path: PathBuf,
}

impl FullMode {
    pub fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("the full-mode config {}: {e}", path.display()));
        Self {
            text,
            path: path.to_path_buf(),
        }
    }

    /// True when the file sets nothing, i.e. "full" is the embedded defaults.
    pub fn is_defaults(&self) -> bool {
        self.text
            .lines()
            .map(str::trim)
            .all(|l| l.is_empty() || l.starts_with('#'))
    }

    /// The file with `state_dir` added under its `[agent]` table (created if absent).
    fn with_state_dir(&self, state: &Path) -> String {
        let line = format!("state_dir = \"{}\"", state.display());
        let mut out = String::new();
        let mut added = false;
        for l in self.text.lines() {
            out += l;
            out.push('\n');
            if !added && l.trim() == "[agent]" {
                out += &line;
                out.push('\n');
                added = true;
            }
        }
        if added {
            out
        } else {
            format!("[agent]\n{line}\n{out}")
        }
    }
}

/// A running tracer; stopped (and checked) by `stop`, killed if dropped (the agent and
/// bpftrace kill themselves on drop, the state directory removes itself).
pub enum Tracer {
    None,
    Gimbal(Agent, TempDir),
    /// bpftrace, or the bench's own floor program.
    Other(Proc),
}

impl Tracer {
    /// Starts `config` and returns once it is attached.
    pub fn start(config: Config, full: &FullMode) -> Self {
        match config {
            Config::None => Tracer::None,
            Config::Defaults => gimbal(None),
            Config::Full => gimbal(Some(full)),
            Config::Bpftrace => Tracer::Other(bpftrace()),
            Config::EmptyExit => Tracer::Other(empty_exit()),
            Config::Sampled => gimbal(Some(&FullMode::read(Path::new(SAMPLED_CONFIG)))),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        match self {
            Tracer::None => None,
            Tracer::Gimbal(a, _) => Some(a.child.id()),
            Tracer::Other(c) => Some(c.id()),
        }
    }

    /// Stops the tracer; panics if the agent did not exit cleanly (a crash under load is a
    /// finding, not noise).
    pub fn stop(self) {
        match self {
            Tracer::None => {}
            Tracer::Gimbal(agent, _state) => {
                let status = agent.stop();
                assert_eq!(
                    status, 0,
                    "gimbal exited with wait status {status} after the load"
                );
            }
            Tracer::Other(mut child) => interrupt(&mut child),
        }
    }
}

/// The agent at its embedded defaults (only a state directory of its own), or with `full`.
fn gimbal(full: Option<&FullMode>) -> Tracer {
    let state = TempDir::new("bench-cost-agent");
    let text = match full {
        Some(f) => f.with_state_dir(&state.0),
        None => format!("[agent]\nstate_dir = \"{}\"\n", state.0.display()),
    };
    let config = state.0.join("gimbal.toml");
    std::fs::write(&config, text).unwrap();
    // Warnings only: the bench's own output stays readable.
    let agent = Agent::start_with_env(
        &["--config", config.to_str().unwrap()],
        &[("GIMBAL_LOG", "warn"), ("NO_COLOR", "1")],
    );
    Tracer::Gimbal(agent, state)
}

/// `gimbal-bench-floor exit` (built with the bench feature beside the bench binaries),
/// once it says its program is attached.
fn empty_exit() -> Proc {
    let mut child = Proc::spawn(
        Command::new(sibling_binary("gimbal-bench-floor"))
            .arg("exit")
            .stdout(Stdio::piped()),
    );
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("the floor's stdout");
    assert_eq!(
        line.trim(),
        "attached",
        "the empty sys_exit floor did not attach"
    );
    child
}

fn bpftrace() -> Proc {
    let mut child = Proc::spawn(
        Command::new("bpftrace")
            .args(["-e", BPFTRACE_HIST.trim()])
            // "Attaching N probes" comes before the attach; this line after every probe is in.
            .env("__BPFTRACE_NOTIFY_PROBES_ATTACHED", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    // bpftrace prints the notice on stdout or stderr depending on its version: read both,
    // and keep draining so it never blocks on a full pipe (it prints every map at exit).
    let pipes: [Box<dyn std::io::Read + Send>; 2] = [
        Box::new(child.stdout.take().unwrap()),
        Box::new(child.stderr.take().unwrap()),
    ];
    for pipe in pipes {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("__BPFTRACE_NOTIFY_PROBES_ATTACHED") => return child,
            Ok(_) => {}
            // The guard kills it.
            Err(_) => panic!("bpftrace did not report it was attached within 60 s"),
        }
    }
}

/// SIGINT until it exits (bpftrace can miss one that lands just before it sleeps); SIGKILL
/// after 20 s.
fn interrupt(child: &mut Child) {
    for _ in 0..100 {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("tracer pid {} ignored SIGINT for 20 s: SIGKILL", child.id());
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(text: &str) -> FullMode {
        FullMode {
            text: text.into(),
            path: PathBuf::from("x.toml"),
        }
    }

    #[test]
    fn the_state_dir_goes_under_an_existing_agent_table_or_a_new_one() {
        let s = Path::new("/tmp/s");
        assert_eq!(
            full("[probes.syscall_latency]\nx = 1\n").with_state_dir(s),
            "[agent]\nstate_dir = \"/tmp/s\"\n[probes.syscall_latency]\nx = 1\n"
        );
        assert_eq!(
            full("# c\n[agent]\ninterval = \"1s\"\n").with_state_dir(s),
            "# c\n[agent]\nstate_dir = \"/tmp/s\"\ninterval = \"1s\"\n"
        );
    }

    #[test]
    fn a_file_of_comments_is_the_defaults_and_a_setting_is_not() {
        assert!(full("# only\n\n  # comments\n").is_defaults());
        assert!(!full("# c\n[probes.syscall_latency]\n").is_defaults());
    }
}
