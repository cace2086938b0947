//! Retry intervals: the gap between the end of a failed attempt (rejected, refused,
//! reset) from an address and the next attempt from the same address.
//!
//! The gaps tell a retry storm (near zero, not growing) from a client that backs off
//! (growing gaps) or retries at a fixed, sane pace. They are per address: several
//! retry loops on one host interleave, so the gaps measure the host's aggregate pace.

use std::collections::VecDeque;

use crate::core::histogram::Histogram;
use crate::model::{Nanos, Trend};

/// How many of the latest gaps are kept for the trend.
pub const RECENT_GAPS: usize = 16;
/// How many gaps at the start of a run of retries are kept: their median is the
/// pace the client started at, which tells a client that grew its gaps to a cap and
/// retries there (backoff) from one that retried at that pace from the start.
pub const START_GAPS: usize = 3;
/// A gap recorded this long after the previous one starts a new run: the earlier
/// failures were another episode.
pub const RUN_BREAK: Nanos = 5 * 60 * 1_000_000_000;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryGaps {
    /// End of the latest failed attempt not yet followed by another attempt.
    pending: Option<Nanos>,
    /// The latest gaps in µs, oldest first.
    recent: VecDeque<u64>,
    /// Every gap in µs.
    all: Histogram,
    /// Failed attempts seen.
    failures: u64,
    /// The first gaps (µs) of the current run, at most [`START_GAPS`].
    start: [u64; START_GAPS],
    start_len: usize,
    /// When the latest gap was recorded (the attempt that ended it).
    last_gap_at: Option<Nanos>,
}

impl RetryGaps {
    /// A failed attempt ended at `ts`.
    pub fn on_failure(&mut self, ts: Nanos) {
        self.failures += 1;
        self.pending = Some(self.pending.map_or(ts, |p| p.max(ts)));
    }

    /// A new attempt began at `ts`: if a failure is pending, its gap is recorded.
    pub fn on_attempt(&mut self, ts: Nanos) {
        let Some(failed_at) = self.pending.take() else {
            return;
        };
        let gap_us = ts.saturating_sub(failed_at) / 1_000;
        if self
            .last_gap_at
            .is_some_and(|last| ts.saturating_sub(last) > RUN_BREAK)
        {
            self.start_len = 0;
        }
        self.last_gap_at = Some(ts);
        if self.start_len < START_GAPS {
            self.start[self.start_len] = gap_us;
            self.start_len += 1;
        }
        self.all.record(gap_us);
        if self.recent.len() == RECENT_GAPS {
            self.recent.pop_front();
        }
        self.recent.push_back(gap_us);
    }

    pub fn failures(&self) -> u64 {
        self.failures
    }

    pub fn count(&self) -> u64 {
        self.all.count()
    }

    /// The latest gaps in µs, oldest first.
    pub fn recent(&self) -> impl Iterator<Item = u64> + '_ {
        self.recent.iter().copied()
    }

    /// Median of the latest gaps, in µs.
    pub fn recent_median(&self) -> Option<u64> {
        let mut sorted: Vec<u64> = self.recent.iter().copied().collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_unstable();
        Some(sorted[sorted.len() / 2])
    }

    /// Median of the first gaps of the current run (µs): the pace the client
    /// started retrying at.
    pub fn start_median(&self) -> Option<u64> {
        let mut first = self.start;
        let first = &mut first[..self.start_len];
        if first.is_empty() {
            return None;
        }
        first.sort_unstable();
        Some(first[first.len() / 2])
    }

    pub fn last(&self) -> Option<u64> {
        self.recent.back().copied()
    }

    pub fn histogram(&self) -> &Histogram {
        &self.all
    }

    /// Compares the mean of the later half of the recent gaps with the earlier half.
    pub fn trend(&self) -> Trend {
        let n = self.recent.len();
        if n < 4 {
            return Trend::Unknown;
        }
        let half = n / 2;
        let mean = |it: &mut dyn Iterator<Item = &u64>, len: usize| {
            it.map(|&g| g as f64).sum::<f64>() / len as f64
        };
        let early = mean(&mut self.recent.iter().take(half), half);
        let late = mean(&mut self.recent.iter().skip(n - half), half);
        // Near-zero gaps (< 1 ms) are flat whatever their ratio: jitter of microseconds.
        if late < 1_000.0 && early < 1_000.0 {
            Trend::Flat
        } else if late >= 1.5 * early {
            Trend::Growing
        } else if late * 1.5 <= early {
            Trend::Shrinking
        } else {
            Trend::Flat
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    const MS: Nanos = 1_000_000;

    /// Failure at each `at`, next attempt `gap` later.
    fn gaps(gaps_ms: &[u64]) -> RetryGaps {
        let mut r = RetryGaps::default();
        let mut t = 1_000 * MS;
        for &g in gaps_ms {
            r.on_failure(t);
            t += g * MS;
            r.on_attempt(t);
            t += MS;
        }
        r
    }

    #[test]
    fn gap_runs_from_the_failure_to_the_next_attempt() {
        let r = gaps(&[3, 3, 3]);
        assert_eq!(r.recent().collect::<Vec<_>>(), vec![3_000, 3_000, 3_000]);
        assert_eq!(r.failures(), 3);
        assert_eq!(r.recent_median(), Some(3_000));
        assert_eq!(r.last(), Some(3_000));
    }

    #[test]
    fn an_attempt_without_a_pending_failure_records_nothing() {
        let mut r = RetryGaps::default();
        r.on_attempt(5 * MS);
        assert_eq!(r.count(), 0);
        r.on_failure(10 * MS);
        r.on_attempt(12 * MS);
        r.on_attempt(50 * MS);
        assert_eq!(r.recent().collect::<Vec<_>>(), vec![2_000]);
    }

    #[test]
    fn trends() {
        assert_eq!(gaps(&[1, 2, 3]).trend(), Trend::Unknown);
        assert_eq!(gaps(&[10, 20, 40, 80, 160, 320]).trend(), Trend::Growing);
        assert_eq!(gaps(&[100, 110, 95, 105, 100, 98]).trend(), Trend::Flat);
        assert_eq!(gaps(&[400, 300, 100, 50]).trend(), Trend::Shrinking);
        // Sub-millisecond gaps are flat, however they wobble.
        let mut r = RetryGaps::default();
        for (i, g) in [50u64, 80, 300, 600].iter().enumerate() {
            let t = (i as u64 + 1) * 10 * MS;
            r.on_failure(t);
            r.on_attempt(t + g * 1_000);
        }
        assert_eq!(r.trend(), Trend::Flat);
    }

    #[test]
    fn the_start_of_a_run_is_kept_until_a_long_pause() {
        // node-redis's default: min(retries × 50, 500) ms, then 500 ms for good.
        let capped: Vec<u64> = (1..=40).map(|n| (n * 50).min(500)).collect();
        let r = gaps(&capped);
        assert_eq!(r.start_median(), Some(100_000));
        assert_eq!(r.recent_median(), Some(500_000));
        assert_eq!(r.trend(), Trend::Flat);
        // A flat retry starts where it stays.
        let flat = gaps(&[250; 40]);
        assert_eq!(flat.start_median(), Some(250_000));
        assert_eq!(flat.recent_median(), Some(250_000));
        // After a pause longer than RUN_BREAK the next failures are a new run.
        let mut r = gaps(&[50, 100, 150, 500, 500]);
        let t = 3_600 * 1_000 * MS;
        for i in 0..4 {
            r.on_failure(t + i * 300 * MS);
            r.on_attempt(t + i * 300 * MS + 250 * MS);
        }
        assert_eq!(r.start_median(), Some(250_000));
        assert_eq!(RetryGaps::default().start_median(), None);
    }

    #[test]
    fn keeps_only_the_latest_gaps() {
        let many: Vec<u64> = (1..=40).collect();
        let r = gaps(&many);
        assert_eq!(r.recent().count(), RECENT_GAPS);
        assert_eq!(r.recent().next(), Some(25_000));
        assert_eq!(r.count(), 40);
    }
}
