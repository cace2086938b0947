//! The time axis every time chart shares.

use crate::model::Report;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where each report sits on the time axis: seconds since the first report, from
/// the agent's monotonic uptime (wall clocks can jump), labelled in wall time.
pub(super) struct Timeline {
    t0: SystemTime,
    pub(super) xs: Vec<f64>,
    pub(super) lo: f64,
    pub(super) hi: f64,
}

impl Timeline {
    pub(super) fn new(reports: &[Report]) -> Self {
        let first = reports.first();
        let t0 = first.map_or(UNIX_EPOCH, |r| r.ts);
        let base = first.map_or(0.0, |r| r.uptime.as_secs_f64());
        let xs: Vec<f64> = reports
            .iter()
            .map(|r| r.uptime.as_secs_f64() - base)
            .collect();
        let mut lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let mut hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !lo.is_finite() || !hi.is_finite() {
            (lo, hi) = (0.0, 0.0);
        }
        // One report (or several at one instant): a two-second axis around it.
        if hi - lo < 2.0 {
            let mid = (lo + hi) / 2.0;
            (lo, hi) = (mid - 1.0, mid + 1.0);
        }
        Timeline { t0, xs, lo, hi }
    }

    pub(super) fn wall(&self, x: f64) -> SystemTime {
        let d = Duration::from_secs_f64(x.abs().min(1e12));
        if x >= 0.0 {
            self.t0 + d
        } else {
            self.t0.checked_sub(d).unwrap_or(UNIX_EPOCH)
        }
    }

    /// Ticks on whole wall-clock steps (every 10 s at :00, :10, …), at most ~8.
    pub(super) fn ticks(&self) -> Vec<f64> {
        const STEPS: [f64; 18] = [
            1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
            7200.0, 10800.0, 21600.0, 43200.0, 86400.0,
        ];
        let span = self.hi - self.lo;
        let step = STEPS
            .iter()
            .copied()
            .find(|s| span / s <= 8.0)
            .unwrap_or_else(|| (span / 8.0).ceil().max(1.0));
        let epoch = self
            .t0
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut t = ((epoch + self.lo) / step).ceil() * step - epoch;
        let mut ticks = Vec::new();
        while t <= self.hi + 1e-9 && ticks.len() < 64 {
            ticks.push(t);
            t += step;
        }
        ticks
    }

    /// The interval that ends at report `i`, for shading: from the previous report
    /// (or one typical interval earlier for the first one).
    pub(super) fn interval(&self, i: usize) -> (f64, f64) {
        let x = self.xs.get(i).copied().unwrap_or(0.0);
        let prev = match i.checked_sub(1).and_then(|j| self.xs.get(j)) {
            Some(&p) => p,
            None => {
                let typical = match (self.xs.first(), self.xs.get(1)) {
                    (Some(a), Some(b)) if b > a => b - a,
                    _ => 1.0,
                };
                x - typical
            }
        };
        (prev, x)
    }
}
