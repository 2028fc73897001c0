//! User rules (`[[rules]]`): a condition on any exported series, with `for`, severity,
//! labels and annotations. Each matching series that holds the condition is one alert.
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use super::{
    expr::{self, Expr, Func},
    series::{is_known, series},
};
use crate::{config::RuleConfig, snapshot::Snapshot};

type Map = BTreeMap<String, String>;

pub struct UserRule {
    pub config: RuleConfig,
    expr: Expr,
    /// Samples per series for rate() and increase(): (unix ms, value).
    history: HashMap<Map, VecDeque<(u64, f64)>>,
    /// Series labels that held last time, so their alerts resolve when a series vanishes.
    active: BTreeSet<Map>,
    /// Whether it has run before: a counter series that appears after that started at 0
    /// (its first event must count), unlike series already there at start-up.
    started: bool,
}

impl UserRule {
    /// Fails only on a config that `Config::parse` would have rejected already.
    pub fn new(config: &RuleConfig) -> Result<Self, String> {
        Ok(Self {
            expr: expr::parse(&config.expr, &is_known)?,
            config: config.clone(),
            history: HashMap::new(),
            active: BTreeSet::new(),
            started: false,
        })
    }

    /// (series labels, condition) for every series seen now or holding last time.
    pub fn evaluate(&mut self, snapshot: &Snapshot, now_ms: u64) -> Vec<(Map, bool)> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for (labels, value) in series(snapshot, &self.expr.metric) {
            let selected =
                self.expr.matchers.iter().all(|(k, v, eq)| {
                    (labels.get(k).map(String::as_str).unwrap_or("") == v) == *eq
                });
            if !selected {
                continue;
            }
            let value = match self.expr.func {
                Func::Value => Some(value),
                Func::Rate(w) | Func::Increase(w) => {
                    let started = self.started;
                    let h = self.history.entry(labels.clone()).or_insert_with(|| {
                        VecDeque::from(if started { vec![(now_ms, 0.0)] } else { vec![] })
                    });
                    h.push_back((now_ms, value));
                    while h
                        .front()
                        .is_some_and(|(t, _)| now_ms - t > w.as_millis() as u64)
                    {
                        h.pop_front();
                    }
                    let (t0, v0) = *h.front().expect("just pushed");
                    let increase = (value - v0).max(0.0);
                    match self.expr.func {
                        Func::Rate(_) if now_ms > t0 => {
                            Some(increase / ((now_ms - t0) as f64 / 1000.0))
                        }
                        Func::Rate(_) => None,
                        _ => Some(increase),
                    }
                }
            };
            let holds = value.is_some_and(|v| self.expr.op.holds(v, self.expr.threshold));
            seen.insert(labels.clone());
            out.push((labels, holds));
        }
        for gone in self.active.difference(&seen) {
            out.push((gone.clone(), false));
        }
        self.history.retain(|l, _| seen.contains(l));
        self.started = true;
        self.active = out
            .iter()
            .filter(|(_, h)| *h)
            .map(|(l, _)| l.clone())
            .collect();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn rule(expr: &str) -> UserRule {
        let c: RuleConfig = toml::from_str(&format!("alert = \"X\"\nexpr = '{expr}'\n")).unwrap();
        UserRule::new(&c).unwrap()
    }

    #[test]
    fn a_counter_that_appears_after_start_counts_from_zero() {
        let mut r = rule(r#"increase(gimbal_process_exits_total{cgroup="a",code="42"}[5m]) > 0"#);
        let mut m = Snapshot::new(100);
        assert!(r.evaluate(&m, 1_000).is_empty());
        m.kernel
            .apply_exit(["a", "w", "exited", "42"].map(Arc::from));
        let out = r.evaluate(&m, 2_000);
        assert_eq!(out.len(), 1);
        assert!(out[0].1, "{out:?}");
        assert!(
            !r.evaluate(&m, 400_000)[0].1,
            "no increase once the window has passed"
        );
    }

    #[test]
    fn values_compare_per_series_and_vanished_series_resolve() {
        let mut r = rule(r#"gimbal_process_exits_total{reason!="exited"} >= 2"#);
        let mut m = Snapshot::new(100);
        for _ in 0..2 {
            m.kernel
                .apply_exit(["a", "w", "signaled", "SIGKILL"].map(Arc::from));
        }
        m.kernel
            .apply_exit(["a", "w", "exited", "0"].map(Arc::from));
        let out = r.evaluate(&m, 1_000);
        assert_eq!(out.len(), 1, "the exited series is not selected: {out:?}");
        assert!(out[0].1);
        let empty = Snapshot::new(100);
        let out = r.evaluate(&empty, 2_000);
        assert_eq!(out.len(), 1);
        assert!(!out[0].1, "a vanished series resolves its alert");
    }
}
