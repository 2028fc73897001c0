//! Remediation off the agent's loop. The rule-bound actions run on a thread of their own:
//! a D-Bus call to a hung systemd (up to its 5 s timeout), a slow cgroup write or an fsync
//! of the audit log never delays a scrape, an exit event or a watchdog ping. The loop posts
//! what fires (the latest set replaces one not yet taken: it is state, not a queue of
//! events) and control messages (reload, release, stop, in order); what was done comes back
//! as `ActionEvent`s over the recorder's channel.
use std::{
    collections::VecDeque,
    path::PathBuf,
    sync::{Arc, Condvar, Mutex},
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

use super::{Recorder, RuleActions};
use crate::{alert::AlertLabels, config::Config, sync::lock};

/// How long a stopping agent waits for the thread to give every throttle back; past it,
/// the limit journal gives them back at the next start.
const STOP_WAIT: Duration = Duration::from_secs(10);

pub struct Remediator {
    mailbox: Arc<Mailbox>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Mailbox {
    post: Mutex<Post>,
    posted: Condvar,
}

#[derive(Default)]
struct Post {
    /// The alerts firing at the latest evaluation, not yet acted on.
    firing: Option<(Vec<AlertLabels>, SystemTime)>,
    control: VecDeque<Control>,
}

enum Control {
    /// Give everything back, then act by the new config.
    Reload(Box<Config>),
    /// Give everything back and end the thread.
    Stop(&'static str),
}

impl Remediator {
    /// Gives back what a killed predecessor left throttled, before the agent is ready (so
    /// on the caller's thread), then starts the thread.
    pub fn start(config: &Config, cgroup2: PathBuf, recorder: Recorder) -> std::io::Result<Self> {
        let mailbox = Arc::new(Mailbox::default());
        let actions = RuleActions::new(config, &cgroup2, &recorder);
        let thread = std::thread::Builder::new()
            .name("remediation".into())
            .spawn({
                let mailbox = mailbox.clone();
                move || run(actions, &cgroup2, &recorder, &mailbox)
            })?;
        Ok(Self {
            mailbox,
            thread: Some(thread),
        })
    }

    /// The alerts firing now; never waits for an action in progress.
    pub fn step(&self, firing: Vec<AlertLabels>, now: SystemTime) {
        lock(&self.mailbox.post).firing = Some((firing, now));
        self.mailbox.posted.notify_one();
    }

    /// Rules may have changed: everything is given back and the next step acts anew.
    pub fn reload(&self, config: &Config) {
        self.control(Control::Reload(Box::new(config.clone())));
    }

    /// Gives every throttle back and ends the thread, waiting for that at most STOP_WAIT.
    pub fn stop(mut self, why: &'static str) {
        self.control(Control::Stop(why));
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = std::time::Instant::now() + STOP_WAIT;
        while !thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        match thread.is_finished() {
            true => {
                let _ = thread.join();
            }
            false => tracing::error!(
                "remediation did not finish within {STOP_WAIT:?}; the limit journal gives its throttles back at the next start"
            ),
        }
    }

    fn control(&self, c: Control) {
        lock(&self.mailbox.post).control.push_back(c);
        self.mailbox.posted.notify_one();
    }
}

fn run(
    mut actions: RuleActions,
    cgroup2: &std::path::Path,
    recorder: &Recorder,
    mailbox: &Mailbox,
) {
    loop {
        let (control, firing) = {
            let mut post = lock(&mailbox.post);
            while post.firing.is_none() && post.control.is_empty() {
                post = mailbox
                    .posted
                    .wait(post)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            (std::mem::take(&mut post.control), post.firing.take())
        };
        for c in control {
            match c {
                Control::Reload(new) => {
                    actions.release_all("config reloaded");
                    let recorder = recorder.with_mode(new.remediation.mode);
                    actions = RuleActions::new(&new, cgroup2, &recorder);
                }
                Control::Stop(why) => {
                    actions.release_all(why);
                    return;
                }
            }
        }
        if let Some((firing, now)) = firing {
            actions.step(&firing, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remediate::{ActionEvent, AuditLog, Kind, Outcome};

    fn firing(alert: &str) -> Vec<AlertLabels> {
        vec![[("alertname".to_string(), alert.to_string())]
            .into_iter()
            .collect()]
    }

    /// The next event from the thread, within 10 s.
    fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<ActionEvent>) -> ActionEvent {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(e) = rx.try_recv() {
                return e;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no event from the thread"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn acts_on_its_thread_reports_over_the_channel_and_reloads_in_order() {
        let dir = std::env::temp_dir().join(format!("gimbal-actor-{}", std::process::id()));
        let job = dir.join("cg/job");
        std::fs::create_dir_all(&job).unwrap();
        std::fs::write(job.join("cgroup.procs"), "").unwrap();
        let config = |signal: &str| {
            Config::parse(
                &format!(
                    "[agent]\nstate_dir = \"{}\"\n[[signal]]\nname = \"ckpt\"\nwhen = \"Slow\"\n\
                     cgroups = [\"job\"]\nsignal = \"{signal}\"\n",
                    dir.join("state").display()
                ),
                "t",
            )
            .unwrap()
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let first = config("SIGUSR1");
        let recorder = Recorder::new(
            Arc::new(AuditLog::new(&first.agent.state_dir)),
            first.remediation.mode,
            tx,
        );
        let r = Remediator::start(&first, dir.join("cg"), recorder).unwrap();
        let t0 = SystemTime::now();
        r.step(firing("Slow"), t0);
        let e = next(&mut rx);
        assert_eq!((e.action, e.result), (Kind::Signal, Outcome::DryRun));
        assert!(e.detail.contains("SIGUSR1"), "{}", e.detail);
        // Sent once per firing; a reload gives a fresh start, acted on with the new rule.
        r.step(firing("Slow"), t0 + Duration::from_secs(1));
        r.reload(&config("SIGUSR2"));
        r.step(firing("Slow"), t0 + Duration::from_secs(2));
        let e = next(&mut rx);
        assert!(e.detail.contains("SIGUSR2"), "{}", e.detail);
        r.stop("test over");
        assert!(rx.try_recv().is_err(), "nothing else was done");
        let audit = std::fs::read_to_string(dir.join("state/remediation/audit.jsonl")).unwrap();
        assert_eq!(
            audit.lines().count(),
            4,
            "intent and outcome, twice:\n{audit}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
