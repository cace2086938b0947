//! The worst figures a verdict reached while it was shown, kept beside its last
//! ones: a storm that ended is described by its last report, often a quiet
//! second, so `analyze` and the HTML page also say how bad it got, and when.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::model::Verdict;

/// Evidence keys whose largest value is the worst: counts and rates of what went
/// wrong. Thresholds, limits and gaps (where smaller is worse) are not here.
pub const PEAK_KEYS: &[&str] = &[
    "accept_errors_per_s",
    "addresses",
    "blocked_clients",
    "failures_per_s",
    "failures_recent",
    "fd_accept_failures_recent",
    "growth",
    "growth_per_min",
    "instances",
    "internal",
    "open",
    "ratio",
    "rejected_recent",
    "stale",
    "total",
    "used",
];

/// The largest value of each [`PEAK_KEYS`] key over a verdict's reports, with the
/// time of the report that first had it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Peaks(BTreeMap<&'static str, (f64, SystemTime)>);

impl Peaks {
    /// Takes `v`'s evidence, seen in the report of `ts`.
    pub fn observe(&mut self, v: &Verdict, ts: SystemTime) {
        for &key in PEAK_KEYS {
            let Some(x) = v.evidence.get(key).and_then(serde_json::Value::as_f64) else {
                continue;
            };
            let slot = self.0.entry(key).or_insert((x, ts));
            if x > slot.0 {
                *slot = (x, ts);
            }
        }
    }

    /// The peak of `key`, and when.
    pub fn get(&self, key: &str) -> Option<(f64, SystemTime)> {
        self.0.get(key).copied()
    }

    /// The keys whose peak is above their value in `last` (the verdict as last
    /// shown), with the peak and when, in key order.
    pub fn above<'a>(
        &'a self,
        last: &'a Verdict,
    ) -> impl Iterator<Item = (&'static str, f64, SystemTime)> + 'a {
        self.0.iter().filter_map(move |(&key, &(peak, ts))| {
            let now = last.evidence.get(key).and_then(serde_json::Value::as_f64);
            now.is_none_or(|now| peak > now).then_some((key, peak, ts))
        })
    }
}

/// A figure as the evidence writes it: integers without a fraction.
pub fn figure(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Severity, VerdictKind};
    use serde_json::{Map, json};
    use std::time::{Duration, UNIX_EPOCH};

    fn storm(per_s: f64, recent: u64, gap_ms: f64) -> Verdict {
        let mut evidence = Map::new();
        evidence.insert("failures_per_s".into(), json!(per_s));
        evidence.insert("failures_recent".into(), json!(recent));
        evidence.insert("retry_gap_p50_ms".into(), json!(gap_ms));
        evidence.insert("window_s".into(), json!(3.0));
        Verdict {
            kind: VerdictKind::RetryStorm,
            severity: Severity::Critical,
            addr: None,
            summary: String::new(),
            evidence,
            action: String::new(),
            stale_connections: Vec::new(),
        }
    }

    #[test]
    fn the_worst_values_are_kept_with_when_and_compared_with_the_last() {
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        let mut p = Peaks::default();
        p.observe(&storm(10.0, 30, 1.0), at(1));
        p.observe(&storm(80.0, 240, 0.5), at(2));
        p.observe(&storm(80.0, 240, 0.2), at(3));
        let last = storm(2.0, 6, 3.0);
        p.observe(&last, at(4));
        assert_eq!(p.get("failures_per_s"), Some((80.0, at(2))));
        assert_eq!(p.get("failures_recent"), Some((240.0, at(2))));
        // Not a peak key: a gap is worse when smaller; a window is a setting.
        assert_eq!(p.get("retry_gap_p50_ms"), None);
        assert_eq!(p.get("window_s"), None);
        let above: Vec<_> = p.above(&last).collect();
        assert_eq!(
            above,
            [
                ("failures_per_s", 80.0, at(2)),
                ("failures_recent", 240.0, at(2))
            ]
        );
        // Shown at its peak: nothing above it.
        assert_eq!(p.above(&storm(80.0, 240, 1.0)).count(), 0);
        assert_eq!(figure(240.0), "240");
        assert_eq!(figure(0.85), "0.85");
    }
}
