//! Per-address rules: a leak (idle connections that keep growing), a retry storm
//! (failures retried without backoff), a client that backs off, a heavy pool.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Map, json};

use super::{Diagnoser, millis, nanos, round1};
use crate::model::{
    ClientReport, ClientVerdict, MAX_STALE_NAMED, Nanos, ProcessReport, Severity, StaleConn,
    StaleList, Trend, Verdict, VerdictKind, human_duration,
};

/// `pid`'s label from the row's processes (`pid 4242 (gunicorn) in container …`),
/// or the bare pid when the row summed it as `other`.
fn label_of(c: &ClientReport, pid: u32) -> String {
    c.processes
        .iter()
        .find(|p| p.pid == pid)
        .map_or_else(|| format!("pid {pid}"), ProcessReport::label)
}

/// Adds the process's pid, name, container and pod to a verdict's evidence.
pub(super) fn process_evidence(
    evidence: &mut Map<String, serde_json::Value>,
    c: &ClientReport,
    pid: u32,
) {
    evidence.insert("pid".into(), json!(pid));
    if let Some(p) = c.processes.iter().find(|p| p.pid == pid) {
        evidence.insert("comm".into(), json!(p.comm));
        evidence.insert("container".into(), json!(p.container));
        evidence.insert("pod".into(), json!(p.pod));
    }
}

/// The local process holding most of `stale` (ties: the lower pid), with how many.
fn leak_owner(stale: &StaleList) -> Option<(u32, usize)> {
    let mut counts: Vec<(u32, usize)> = Vec::new();
    for pid in stale.iter().filter_map(|s| s.2) {
        match counts.iter_mut().find(|c| c.0 == pid) {
            Some(c) => c.1 += 1,
            None => counts.push((pid, 1)),
        }
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
}

/// The local process with most failed attempts from this address, if any failed.
fn storm_owner(c: &ClientReport) -> Option<&ProcessReport> {
    c.processes
        .iter()
        .filter(|p| p.failed > 0)
        .max_by(|a, b| a.failed.cmp(&b.failed).then(b.pid.cmp(&a.pid)))
}

/// Whether an address that fails backs off, from the shape of its retry gaps: yes
/// when they grow now, or grew to a cap (the latest median at least twice, and 50
/// ms more than, the pace the run of retries started at: node-redis's
/// `min(retries × 50, 500)` ms is flat at 500 ms after ten retries); no when they
/// stay flat (or shrink) from the start, whatever the period (ioredis with
/// `retryStrategy: () => 250`); `None` before 4 gaps.
pub(super) fn backs_off(c: &ClientReport) -> Option<bool> {
    let r = c.retry?;
    match r.trend {
        Trend::Unknown => None,
        Trend::Growing => Some(true),
        Trend::Flat | Trend::Shrinking => {
            Some(r.p50_ms >= 2.0 * r.start_ms && r.p50_ms >= r.start_ms + 50.0)
        }
    }
}

/// A leak's stale connections to name (at most [`MAX_STALE_NAMED`], oldest first,
/// each with the pid that opened it when known), and the action: `head` (given
/// where to look: `in pid 4242 (gunicorn) on 10.0.0.66`, or `on 10.0.0.66` when no
/// local process is known) followed by their `CLIENT KILL` commands, one a line,
/// grouped under their process when processes are known. Also the process holding
/// most of them, with how many.
pub(super) fn stale_action(
    c: &ClientReport,
    head: impl FnOnce(&str) -> String,
    idle: &StaleList,
) -> (Vec<StaleConn>, String, Option<(u32, usize)>) {
    let named: Vec<StaleConn> = idle
        .iter()
        .take(MAX_STALE_NAMED)
        .map(|&(a, d, pid)| StaleConn {
            pid,
            ..StaleConn::new(a, d)
        })
        .collect();
    let owner = leak_owner(idle);
    let mut action = match owner {
        Some((pid, _)) => head(&format!("in {} on {}", label_of(c, pid), c.addr)),
        None => head(&format!("on {}", c.addr)),
    };
    let mut groups: Vec<Option<u32>> = Vec::new();
    for s in &named {
        if !groups.contains(&s.pid) {
            groups.push(s.pid);
        }
    }
    for group in groups {
        let indent = if owner.is_some() {
            let head = group.map_or_else(|| "process unknown".to_string(), |p| label_of(c, p));
            let _ = write!(action, "\n  {head}:");
            "    "
        } else {
            "  "
        };
        for s in named.iter().filter(|s| s.pid == group) {
            let _ = write!(
                action,
                "\n{indent}{}   # idle {}",
                s.command,
                human_duration(Duration::from_millis((s.idle_s * 1e3) as u64))
            );
        }
    }
    (named, action, owner)
}

impl Diagnoser {
    pub(super) fn judge_client(
        &self,
        now: Nanos,
        c: &ClientReport,
        limit: Option<u64>,
        used: u64,
        stalled: bool,
        stale: &dyn Fn(IpAddr, Duration) -> StaleList,
    ) -> (ClientVerdict, Option<Verdict>) {
        if c.internal {
            return (ClientVerdict::Healthy, None);
        }
        let failures = c.failed;
        let short = nanos(self.cfg.short_window);
        let recent_failures = self
            .client_sample_at(c.addr, now, short)
            .map_or(0, |s| failures.saturating_sub(s.failures));
        let window_failures = self
            .client_sample_at(c.addr, now, self.window_ns())
            .map_or(0, |s| failures.saturating_sub(s.failures));
        let gap = c
            .retry
            .as_ref()
            .map(|r| Duration::from_micros((r.p50_ms * 1e3) as u64));
        let trend = c.retry.as_ref().map_or(Trend::Unknown, |r| r.trend);

        // Retry storm: many failures just now, retried at once, gaps not growing.
        if recent_failures >= self.cfg.storm_min_failures
            && gap.is_some_and(|g| g < self.cfg.storm_max_gap)
            // "Not growing" must be known from enough gaps: the first retries of a
            // client that backs off are short, and full jitter can make a handful of
            // them look flat. A storm makes ten gaps in a fraction of a second.
            && c.retry.as_ref().is_some_and(|r| r.gaps >= self.cfg.storm_min_failures)
            && matches!(trend, Trend::Flat | Trend::Shrinking)
        {
            return (
                ClientVerdict::RetryStorm,
                Some(self.storm_verdict(c, recent_failures, gap.unwrap_or_default(), trend)),
            );
        }
        // Leak: steady growth of idle connections — unless Redis accepts nothing:
        // then the connections wait in its accept queue, not in a client's pool.
        if !stalled && let Some(v) = self.leak_verdict(now, c, limit, used, stale) {
            return (ClientVerdict::Leak, Some(v));
        }
        // A leak whose count Redis's idle timeout holds flat.
        if !stalled && let Some(v) = self.held_leak_verdict(now, c, stale) {
            return (ClientVerdict::Leak, Some(v));
        }
        // Replies piling up unread, or dropped for them again and again.
        if let Some(v) = self.slow_consumer_verdict(now, c) {
            return (ClientVerdict::SlowConsumer, Some(v));
        }
        // Failing and retrying: backing off or not, by the shape of the gaps. Said
        // while it still fails: within the short window, or within 2.5 gaps of a
        // client that retries slowly.
        let lately = gap.map_or(short, |g| nanos(g.mul_f64(2.5)).max(short));
        let failing_lately = self
            .client_sample_at(c.addr, now, lately)
            .is_some_and(|s| failures > s.failures);
        if window_failures >= 3 && failing_lately {
            match backs_off(c) {
                Some(true) => return (ClientVerdict::BackingOff, None),
                Some(false) => return (ClientVerdict::NoBackoff, None),
                // Too few gaps to see a shape: only a slow pace tells.
                None if gap.is_some_and(|g| g >= self.cfg.backoff_min_gap) => {
                    return (ClientVerdict::BackingOff, None);
                }
                None => {}
            }
        }
        if let Some(limit) = limit.filter(|&l| l > 0)
            && c.open as f64 >= self.cfg.pool_heavy_share * limit as f64
        {
            return (ClientVerdict::PoolHeavy, None);
        }
        (ClientVerdict::Healthy, None)
    }

    pub(super) fn storm_verdict(
        &self,
        c: &ClientReport,
        recent: u64,
        gap: Duration,
        trend: Trend,
    ) -> Verdict {
        let secs = self.cfg.short_window.as_secs_f64();
        let mut evidence = Map::new();
        evidence.insert("failures_recent".into(), json!(recent));
        evidence.insert("window_s".into(), json!(secs));
        evidence.insert("failures_per_s".into(), json!(round1(recent as f64 / secs)));
        evidence.insert("retry_gap_p50_ms".into(), json!(millis(gap)));
        evidence.insert("retry_trend".into(), json!(trend));
        evidence.insert("rejected".into(), json!(c.rejected));
        evidence.insert("refused".into(), json!(c.refused));
        evidence.insert("reset".into(), json!(c.reset));
        // Client mode: connects that got no answer are not refusals. A storm of
        // them is a server that is down or unreachable (or too busy to answer
        // SYNs), not one that turns connections away.
        let mut unanswered = String::new();
        if let Some(Some(f)) = c.failed_connects {
            evidence.insert("timed_out".into(), json!(f.timed_out));
            evidence.insert("abandoned".into(), json!(f.abandoned));
            evidence.insert("connect_other".into(), json!(f.other));
            if f.timed_out + f.abandoned > 0 {
                unanswered = format!(
                    "; {} of its connects got no answer ({} timed out, {} abandoned by the client): the server is unreachable or not answering, not refusing",
                    f.timed_out + f.abandoned,
                    f.timed_out,
                    f.abandoned
                );
            }
        }
        let who = match storm_owner(c) {
            Some(p) => {
                process_evidence(&mut evidence, c, p.pid);
                format!("{} on {}", p.label(), c.addr)
            }
            None => c.addr.to_string(),
        };
        Verdict {
            kind: VerdictKind::RetryStorm,
            severity: Severity::Critical,
            addr: Some(c.addr),
            summary: format!(
                "{who} retries every {} with no backoff ({:.0} failed attempts/s): a retry storm{unanswered}",
                human_duration(gap),
                recent as f64 / secs
            ),
            evidence,
            action: format!(
                "Make the client {} {who} retry with exponential backoff and jitter (and a cap on attempts); until then it keeps the server saturated",
                if who.starts_with("pid ") { "of" } else { "on" }
            ),
            stale_connections: Vec::new(),
        }
    }

    /// Growth of `c`'s open connections that makes a leak, as (growth, span, the
    /// stale connections needed): over the window, at least `leak_min_growth` and
    /// still growing (or held at the limit, failing); else over up to
    /// `leak_slow_window`, at least `leak_slow_min_growth` and grown in each third.
    fn leak_growth(&self, now: Nanos, c: &ClientReport) -> Option<(u64, Nanos, u64)> {
        let start = self.client_sample_at(c.addr, now, self.window_ns())?;
        let third = self.client_sample_at(c.addr, now, self.window_ns() / 3)?;
        let growth = c.open.saturating_sub(start.open);
        let span = now.saturating_sub(start.ts);
        // Still growing — or held at the limit: a leak that filled the server can
        // grow no more, and its new attempts are turned away instead.
        let failed_lately = c.failed > start.failures;
        if growth >= self.cfg.leak_min_growth && (c.open > third.open || failed_lately) && span > 0
        {
            return Some((growth, span, self.cfg.leak_min_stale));
        }
        // Slow: a few connections a minute, or an hour, never given back. Growth in
        // every third of the span tells it from a pool that warmed up and holds.
        let window = nanos(self.cfg.leak_slow_window);
        let span = now.saturating_sub(self.long_since(c.addr)?).min(window);
        if span < window / 30 {
            return None;
        }
        let [base, one, two] =
            [span, span * 2 / 3, span / 3].map(|ago| self.long_open_at(c.addr, now, ago));
        let (base, one, two) = (base?, one?, two?);
        let growth = c.open.saturating_sub(base);
        if growth < self.cfg.leak_slow_min_growth || !(base < one && one < two && two < c.open) {
            return None;
        }
        Some((growth, span, self.cfg.leak_min_stale.min(growth)))
    }

    pub(super) fn leak_verdict(
        &self,
        now: Nanos,
        c: &ClientReport,
        limit: Option<u64>,
        used: u64,
        stale: &dyn Fn(IpAddr, Duration) -> StaleList,
    ) -> Option<Verdict> {
        let (growth, span, min_stale) = self.leak_growth(now, c)?;
        let idle = stale(c.addr, self.cfg.leak_idle);
        if (idle.len() as u64) < min_stale {
            return None;
        }
        let per_min = round1(growth as f64 * 60e9 / span as f64);
        let (named, action, owner) = stale_action(
            c,
            |at| {
                format!(
                    "Find the code path {at} that opens connections without closing them (a client or pool created per request). To free slots now, review and run, oldest first:"
                )
            },
            &idle,
        );
        let mut evidence = Map::new();
        evidence.insert("open".into(), json!(c.open));
        evidence.insert("growth".into(), json!(growth));
        evidence.insert("window_s".into(), json!(round1(span as f64 / 1e9)));
        evidence.insert("growth_per_min".into(), json!(per_min));
        evidence.insert(
            "idle_over_s".into(),
            json!(self.cfg.leak_idle.as_secs_f64()),
        );
        evidence.insert("stale".into(), json!(idle.len()));
        if let Some(i) = c.idle {
            evidence.insert("idle_max_s".into(), json!(i.max.as_secs_f64()));
        }
        if let Some((pid, held)) = owner {
            process_evidence(&mut evidence, c, pid);
            evidence.insert("process_stale".into(), json!(held));
        }
        // At this pace, the slots left are gone in…
        let exhaustion =
            limit.map(|l| l.saturating_sub(used) as f64 * span as f64 / 1e9 / growth as f64);
        if let Some(s) = exhaustion {
            evidence.insert("exhaustion_in_s".into(), json!(s.round()));
        }
        Some(Verdict {
            kind: VerdictKind::Leak,
            severity: Severity::Warning,
            addr: Some(c.addr),
            summary: format!(
                "{} holds {} connections, {} idle for over {}, growing {}/min: a connection leak{}",
                owner.map_or_else(
                    || c.addr.to_string(),
                    |(pid, held)| format!(
                        "{} on {} holds {held} idle connections; {}",
                        label_of(c, pid),
                        c.addr,
                        c.addr
                    )
                ),
                c.open,
                idle.len(),
                human_duration(self.cfg.leak_idle),
                per_min,
                exhaustion.map_or_else(String::new, |s| format!(
                    "; the limit is reached in {} at this pace",
                    human_duration(Duration::from_secs_f64(s.max(0.0)))
                ))
            ),
            evidence,
            action,
            stale_connections: named,
        })
    }
}
