//! When to restart again: like Kubernetes' CrashLoopBackOff. The first failure after a
//! healthy run is restarted at once; each further quick failure waits twice as long
//! (`backoff` .. `backoff_max`); after `give_up_after` restarts in a row that all failed
//! quickly, the agent stops trying and says so (GimbalRemediationGaveUp). Pure: callers
//! pass how long the last run lasted.
use std::time::Duration;

use crate::config::RemediationConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub backoff: Duration,
    pub backoff_max: Duration,
    pub stable_after: Duration,
    pub give_up_after: u32,
}

impl Policy {
    pub fn from_config(c: &RemediationConfig) -> Self {
        Self {
            backoff: c.backoff.get(),
            backoff_max: c.backoff_max.get(),
            stable_after: c.stable_after.get(),
            give_up_after: c.give_up_after,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Restart after this delay (zero: at once).
    RestartAfter(Duration),
    /// Too many quick failures in a row: stop restarting.
    GiveUp,
}

/// Failures in a row of one target.
#[derive(Debug, Default, Clone)]
pub struct Backoff {
    quick_failures: u32,
}

impl Backoff {
    /// The decision for a failure that ended a run of `ran_for`.
    pub fn on_failure(&mut self, ran_for: Duration, policy: &Policy) -> Next {
        if ran_for >= policy.stable_after {
            self.quick_failures = 0;
        }
        self.quick_failures += 1;
        if self.quick_failures > policy.give_up_after {
            return Next::GiveUp;
        }
        let doublings = self.quick_failures.saturating_sub(2).min(31);
        let delay = match self.quick_failures {
            1 => Duration::ZERO,
            _ => policy
                .backoff
                .saturating_mul(1 << doublings)
                .min(policy.backoff_max),
        };
        Next::RestartAfter(delay)
    }

    /// Restarts in a row so far without a healthy run.
    pub fn failures(&self) -> u32 {
        self.quick_failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        backoff: Duration::from_secs(10),
        backoff_max: Duration::from_secs(300),
        stable_after: Duration::from_secs(600),
        give_up_after: 8,
    };

    #[test]
    fn first_failure_restarts_at_once_then_doubles_from_10s_to_5m_then_gives_up() {
        let mut b = Backoff::default();
        let quick = Duration::from_secs(1);
        let delays: Vec<Next> = (0..9).map(|_| b.on_failure(quick, &POLICY)).collect();
        let secs = |s| Next::RestartAfter(Duration::from_secs(s));
        assert_eq!(
            delays,
            [
                secs(0),
                secs(10),
                secs(20),
                secs(40),
                secs(80),
                secs(160),
                secs(300),
                secs(300),
                Next::GiveUp
            ]
        );
    }

    #[test]
    fn a_healthy_run_starts_the_backoff_over() {
        let mut b = Backoff::default();
        for _ in 0..5 {
            b.on_failure(Duration::from_secs(1), &POLICY);
        }
        assert_eq!(
            b.on_failure(Duration::from_secs(600), &POLICY),
            Next::RestartAfter(Duration::ZERO)
        );
        assert_eq!(b.failures(), 1);
    }
}
