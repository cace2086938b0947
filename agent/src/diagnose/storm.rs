//! Retry storms across clients: many addresses that each retry at a flat pace
//! (`no_backoff`) and together keep a full server failing. Each one alone may fail only a few times a second (an ioredis client
//! with `retryStrategy: () => 250` fails four times a second); twenty of them are
//! the storm, and raising maxclients only feeds it.
//!
//! The same figures decide whether `maxclients_too_low` may be said: only when the
//! clients that fail back off.

use std::net::IpAddr;

use serde_json::{Map, json};

use super::{Diagnoser, nanos, round1};
use crate::model::{ClientReport, ClientVerdict, Nanos, Severity, Verdict, VerdictKind};

/// How many of the flat-retrying addresses the evidence names.
pub const TOP_NAMED: usize = 5;

/// An address that failed within the fleet window, as judged this interval.
#[derive(Clone, Copy, Debug)]
pub(super) struct Failing {
    pub(super) addr: IpAddr,
    pub(super) verdict: ClientVerdict,
    /// Failed attempts per second over the fleet window.
    pub(super) per_s: f64,
    /// Median retry gap, ms.
    pub(super) gap_ms: Option<f64>,
}

impl Failing {
    /// Retries without backoff, at a pace no one address storms at: flat gaps from
    /// the start. An address storming alone is named by its own `retry_storm`; it
    /// does not make a storm across clients of one slow flat retrier beside it (the
    /// agent's own INFO poll, turned away by a full server, is one).
    fn flat(&self) -> bool {
        self.verdict == ClientVerdict::NoBackoff
    }
}

impl Diagnoser {
    /// `c`'s failures over the fleet window, if it had any.
    pub(super) fn failing(
        &self,
        now: Nanos,
        c: &ClientReport,
        verdict: ClientVerdict,
    ) -> Option<Failing> {
        let since = self.client_sample_at(c.addr, now, nanos(self.cfg.fleet_storm_window))?;
        let failures = c.failed.saturating_sub(since.failures);
        let span = now.saturating_sub(since.ts);
        if failures == 0 || span == 0 {
            return None;
        }
        Some(Failing {
            addr: c.addr,
            verdict,
            per_s: failures as f64 * 1e9 / span as f64,
            gap_ms: c.retry.map(|r| r.p50_ms),
        })
    }

    /// The share of the failing addresses' failures that come from addresses
    /// `which` picks; `None` when nothing failed.
    pub(super) fn share(failing: &[Failing], which: impl Fn(&Failing) -> bool) -> Option<f64> {
        let all: f64 = failing.iter().map(|f| f.per_s).sum();
        let picked: f64 = failing.iter().filter(|f| which(f)).map(|f| f.per_s).sum();
        (all > 0.0).then(|| picked / all)
    }

    /// A retry storm across clients: at least `fleet_storm_min_addresses` addresses
    /// retrying without backoff that together fail at least `fleet_storm_min_rate`
    /// times a second over the fleet window.
    pub(super) fn fleet_storm(&self, failing: &[Failing]) -> Option<Verdict> {
        let mut flat: Vec<Failing> = failing.iter().filter(|f| f.flat()).copied().collect();
        let rate: f64 = flat.iter().map(|f| f.per_s).sum();
        if flat.len() < self.cfg.fleet_storm_min_addresses || rate < self.cfg.fleet_storm_min_rate {
            return None;
        }
        flat.sort_by(|a, b| b.per_s.total_cmp(&a.per_s).then(a.addr.cmp(&b.addr)));
        let mut gaps: Vec<f64> = flat.iter().filter_map(|f| f.gap_ms).collect();
        gaps.sort_by(f64::total_cmp);
        let gap = gaps.get(gaps.len() / 2).copied();
        let share = Self::share(failing, Failing::flat).unwrap_or(0.0);
        let top: Vec<_> = flat
            .iter()
            .take(TOP_NAMED)
            .map(|f| {
                json!({
                    "addr": f.addr,
                    "failures_per_s": round1(f.per_s),
                    "retry_gap_p50_ms": f.gap_ms.map(round1),
                })
            })
            .collect();
        let mut evidence = Map::new();
        evidence.insert("addresses".into(), json!(flat.len()));
        evidence.insert("failures_per_s".into(), json!(round1(rate)));
        evidence.insert(
            "window_s".into(),
            json!(self.cfg.fleet_storm_window.as_secs_f64()),
        );
        if let Some(g) = gap {
            evidence.insert("retry_gap_p50_ms".into(), json!(round1(g)));
        }
        evidence.insert("share".into(), json!((share * 100.0).round() / 100.0));
        evidence.insert("top".into(), json!(top));
        let names: Vec<String> = flat
            .iter()
            .take(TOP_NAMED)
            .map(|f| f.addr.to_string())
            .collect();
        let more = flat.len().saturating_sub(TOP_NAMED);
        Some(Verdict {
            kind: VerdictKind::RetryStorm,
            severity: Severity::Critical,
            addr: None,
            summary: format!(
                "{} client addresses retry without backoff{}, together {:.0} failed attempts/s ({:.0} % of all failures): a retry storm across clients",
                flat.len(),
                gap.map(|g| format!(" (median gap {})", super::human_ms(g)))
                    .unwrap_or_default(),
                rate,
                share * 100.0
            ),
            evidence,
            action: format!(
                "Make the clients on {}{} retry with exponential backoff and jitter, capped (a flat retry at any period keeps a full server full); raising maxclients feeds the storm. When it has passed, kill idle connections to make room",
                names.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ),
            stale_connections: Vec::new(),
        })
    }
}
