//! The short history the verdicts need: per-address samples of open connections
//! and failures, and the host's rejection and accept-failure counters, kept over
//! one window and downsampled so memory stays bounded whatever the interval.

use std::net::IpAddr;
use std::time::Duration;

use super::{Diagnoser, nanos};
use crate::model::{AcceptErrors, Nanos, Report};

#[derive(Clone, Copy, Debug)]
pub(super) struct Sample {
    pub(super) ts: Nanos,
    pub(super) open: u64,
    /// Failed attempts so far (rejected + refused + reset).
    pub(super) failures: u64,
    /// Connections opened so far.
    pub(super) opened: u64,
    /// Connections Redis closed for their idle `timeout` so far.
    pub(super) idle_timeouts: u64,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct HostSample {
    pub(super) ts: Nanos,
    pub(super) rejected: u64,
    /// EMFILE + ENFILE accept failures so far.
    pub(super) fd_failures: u64,
    /// Every failed accept so far.
    pub(super) accept_failures: u64,
    /// Slots in use (`capacity.used`).
    pub(super) used: u64,
}

impl Diagnoser {
    /// Appends this interval's samples and drops what fell out of the window.
    pub(super) fn record(&mut self, now: Nanos, report: &Report) {
        let keep_from = now.saturating_sub(self.window_ns());
        // At most ~120 samples per address whatever the interval: bounded memory.
        let min_step = self.window_ns() / 120;
        // A quiet row (not yielded) has nothing open, no failure and no change.
        for c in report.clients.notable() {
            let failures = c.failed;
            // Addresses with nothing open and no failures cannot be a leak or storm:
            // no history for them (and none kept once they are back to that), so a
            // fan-out of 100k addresses stays cheap. Should one come back, the
            // baseline below (zero at the previous report) is exact. A row that did
            // not change has no history to drop: it had none at its last change.
            if c.open == 0 && failures == 0 {
                if c.changed {
                    self.clients.remove(&c.addr);
                }
                continue;
            }
            let h = self.clients.entry(c.addr).or_insert_with(|| {
                // New to the history: at the previous report it had nothing open and
                // no failures (or it would have been recorded). Starting from that
                // zero, rather than from now, lets a storm or a leak that begins
                // between two reports count from its first interval. Before the first
                // report nothing is known: the history starts now. (What it opened
                // and had timed out before is not known: counted from now.)
                self.last
                    .map(|ts| Sample {
                        ts,
                        open: 0,
                        failures: 0,
                        opened: c.opened,
                        idle_timeouts: c.server_closes.idle_timeout,
                    })
                    .into_iter()
                    .collect()
            });
            if h.back().is_none_or(|s| now >= s.ts + min_step) {
                h.push_back(Sample {
                    ts: now,
                    open: c.open,
                    failures,
                    opened: c.opened,
                    idle_timeouts: c.server_closes.idle_timeout,
                });
            }
        }
        for ip in &report.evicted {
            self.clients.remove(ip);
        }
        for h in self.clients.values_mut() {
            while h.front().is_some_and(|s| s.ts < keep_from) && h.len() > 1 {
                h.pop_front();
            }
        }
        let t = &report.totals;
        // Unknown failed accepts (a kernel without them) count as none here.
        let fd = t
            .accept_errors
            .iter()
            .flat_map(AcceptErrors::iter)
            .filter(|(n, _)| *n == "EMFILE" || *n == "ENFILE")
            .map(|(_, n)| n)
            .sum();
        let sample = HostSample {
            ts: now,
            rejected: t.rejected,
            fd_failures: fd,
            accept_failures: t.accept_errors.as_ref().map_or(0, AcceptErrors::total),
            used: report.capacity.used,
        };
        self.host_now = Some(sample);
        if self.host.back().is_none_or(|s| now >= s.ts + min_step) {
            self.host.push_back(sample);
        }
        while self.host.front().is_some_and(|s| s.ts < keep_from) && self.host.len() > 1 {
            self.host.pop_front();
        }
        self.last = Some(now);
    }

    /// The open counts of addresses holding connections, over the slow-leak window:
    /// a sample when the count moved, at most every window / 360, so a steady pool
    /// keeps one and a leak at most 360.
    pub(super) fn record_long(&mut self, now: Nanos, report: &Report) {
        let window = nanos(self.cfg.leak_slow_window);
        let step = window / 360;
        for c in report.clients.notable() {
            if c.open == 0 {
                if c.changed {
                    self.long.remove(&c.addr);
                }
                continue;
            }
            let h = self.long.entry(c.addr).or_default();
            if h.back()
                .is_none_or(|&(ts, open)| open != c.open && now >= ts + step)
            {
                h.push_back((now, c.open));
            }
            while h.len() > 1 && h.get(1).is_some_and(|&(ts, _)| ts + window <= now) {
                h.pop_front();
            }
        }
        for ip in &report.evicted {
            self.long.remove(ip);
        }
    }

    /// The open count of `ip` at `ago` before `now`, from the slow-leak history: the
    /// latest sample at or before then (`None` if the history starts later).
    pub(super) fn long_open_at(&self, ip: IpAddr, now: Nanos, ago: Nanos) -> Option<u64> {
        let at = now.checked_sub(ago)?;
        self.long
            .get(&ip)?
            .iter()
            .rev()
            .find(|&&(ts, _)| ts <= at)
            .map(|&(_, open)| open)
    }

    /// When the slow-leak history of `ip` starts.
    pub(super) fn long_since(&self, ip: IpAddr) -> Option<Nanos> {
        self.long.get(&ip)?.front().map(|&(ts, _)| ts)
    }

    /// The sample closest to `ago` before `now` (or the oldest one kept).
    pub(super) fn client_sample_at(&self, ip: IpAddr, now: Nanos, ago: Nanos) -> Option<Sample> {
        let h = self.clients.get(&ip)?;
        let at = now.saturating_sub(ago);
        h.iter().rev().find(|s| s.ts <= at).or(h.front()).copied()
    }

    /// When the slots left run out if `used` keeps growing as it did over the
    /// window: seconds, or `None` when it did not grow (or no limit is known).
    pub(super) fn exhaustion_in(&self, now: Nanos, limit: Option<u64>) -> Option<f64> {
        let (last, first) = (
            self.host_now.as_ref()?,
            self.host
                .iter()
                .find(|s| s.ts + self.window_ns() >= now)
                .or(self.host.front())?,
        );
        let grew = last.used.checked_sub(first.used).filter(|&g| g > 0)?;
        let span = now.checked_sub(first.ts).filter(|&s| s > 0)?;
        Some(limit?.saturating_sub(last.used) as f64 * span as f64 / 1e9 / grew as f64)
    }

    pub(super) fn host_delta(&self, now: Nanos, ago: Duration, f: fn(&HostSample) -> u64) -> u64 {
        let at = now.saturating_sub(nanos(ago));
        let (Some(last), Some(first)) = (
            self.host_now.as_ref(),
            self.host
                .iter()
                .rev()
                .find(|s| s.ts <= at)
                .or(self.host.front()),
        ) else {
            return 0;
        };
        f(last).saturating_sub(f(first))
    }
}
