//! Verdicts: why the server is running out of connections, with the numbers that
//! prove it and the first thing to do.
//!
//! The diagnoser reads each interval's [`Report`] and keeps a short history per
//! client address (open count, failures) to see trends: a leak grows steadily with
//! idle connections, a retry storm fails and retries at once, a client that backs
//! off retries at growing intervals. Host-wide verdicts come from the joined Redis,
//! /proc and kernel figures. It is pure: the same reports give the same verdicts,
//! live or replayed. Thresholds have defaults (see [`Thresholds`]) and flags.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::event::Nanos;
use crate::report::text::human_duration;
use crate::report::{ClientReport, Report};
use crate::retry::Trend;

/// The thresholds behind every verdict. Defaults are documented in docs/DIAGNOSIS.md.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// How far back trends (leaks, pools, fan-out) look.
    pub window: Duration,
    /// A leak: open connections from one address grew by at least this many over the window…
    pub leak_min_growth: u64,
    /// …are still growing, and at least `leak_min_stale` of them idle this long.
    pub leak_idle: Duration,
    pub leak_min_stale: u64,
    /// A retry storm: at least this many failed attempts in the short window…
    pub storm_min_failures: u64,
    /// …with a median gap to the next attempt below this, not growing.
    pub storm_max_gap: Duration,
    /// How far back storms and "happening now" look: a few intervals.
    pub short_window: Duration,
    /// Retrying at least this far apart is backing off, growing or not.
    pub backoff_min_gap: Duration,
    /// An address holding this share of the limit is pool-heavy.
    pub pool_heavy_share: f64,
    /// Pool oversize: at least this many addresses hold a similar, steady number of
    /// connections that together take this share of the limit.
    pub pool_min_instances: usize,
    pub pool_share: f64,
    /// Instance fan-out: at least this many addresses, each with at most two
    /// short-lived connections, active within the window.
    pub fanout_min_addresses: usize,
    /// Slots to keep free for replicas, cluster bus and sentinels.
    pub internal_reserve: u64,
    /// Blocked clients holding this share of the limit.
    pub blocked_share: f64,
    pub capacity_warning: f64,
    pub capacity_critical: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            window: Duration::from_secs(60),
            leak_min_growth: 10,
            leak_idle: Duration::from_secs(30),
            leak_min_stale: 5,
            storm_min_failures: 10,
            storm_max_gap: Duration::from_millis(100),
            short_window: Duration::from_secs(3),
            backoff_min_gap: Duration::from_secs(1),
            pool_heavy_share: 0.25,
            pool_min_instances: 3,
            pool_share: 0.7,
            fanout_min_addresses: 100,
            internal_reserve: 100,
            blocked_share: 0.3,
            capacity_warning: 0.8,
            capacity_critical: 0.9,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Leak,
    RetryStorm,
    PoolOversize,
    MaxclientsTooLow,
    FdLimit,
    InternalHeadroom,
    BlockedClients,
    InstanceFanout,
    CapacityWarning,
    CapacityCritical,
}

/// Per client: what this address is doing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientVerdict {
    #[default]
    Healthy,
    Leak,
    RetryStorm,
    BackingOff,
    PoolHeavy,
}

/// A stale connection a person may want to close, with the command to do it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StaleConn {
    pub addr: SocketAddr,
    pub idle_s: f64,
    pub command: String,
}

impl StaleConn {
    pub fn new(addr: SocketAddr, idle: Duration) -> Self {
        StaleConn {
            addr,
            idle_s: (idle.as_millis() as f64) / 1e3,
            command: format!("CLIENT KILL ADDR {addr}"),
        }
    }
}

/// One host-level verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    pub kind: VerdictKind,
    pub severity: Severity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<IpAddr>,
    /// One sentence a person reads.
    pub summary: String,
    /// The numbers behind it.
    pub evidence: Map<String, Value>,
    /// The first check or fix. Suggested, never executed.
    pub action: String,
    /// For a leak: the idle connections, oldest first, at most 20.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stale_connections: Vec<StaleConn>,
}

/// At most this many stale connections are named in a leak's action.
pub const MAX_STALE_NAMED: usize = 20;

#[derive(Clone, Copy, Debug)]
struct Sample {
    ts: Nanos,
    open: u64,
    /// Failed attempts so far (rejected + refused + reset).
    failures: u64,
}

#[derive(Clone, Copy, Debug)]
struct HostSample {
    ts: Nanos,
    rejected: u64,
    /// EMFILE + ENFILE accept failures so far.
    fd_failures: u64,
    /// Every failed accept so far.
    accept_failures: u64,
}

/// Keeps the history verdicts need and decides them.
#[derive(Debug)]
pub struct Diagnoser {
    cfg: Thresholds,
    clients: HashMap<IpAddr, VecDeque<Sample>>,
    host: VecDeque<HostSample>,
    /// When the previous report was recorded; `None` before the first.
    last: Option<Nanos>,
    /// This report's host figures. The history is downsampled; "now" never is.
    host_now: Option<HostSample>,
}

impl Diagnoser {
    pub fn new(cfg: Thresholds) -> Self {
        Diagnoser {
            cfg,
            clients: HashMap::new(),
            host: VecDeque::new(),
            last: None,
            host_now: None,
        }
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.cfg
    }

    fn window_ns(&self) -> Nanos {
        nanos(self.cfg.window)
    }

    /// Records `report` (taken at monotonic time `now`) and fills in its verdicts.
    /// `stale` lists an address's open connections idle at least the given time,
    /// oldest first (from the connection table).
    pub fn diagnose(
        &mut self,
        now: Nanos,
        report: &mut Report,
        stale: &dyn Fn(IpAddr, Duration) -> Vec<(SocketAddr, Duration)>,
    ) {
        self.record(now, report);
        let limit = report.capacity.limit;
        let mut verdicts = Vec::new();
        for c in report.clients.iter_mut() {
            let (verdict, host_verdict) = self.judge_client(now, c, limit, stale);
            c.verdict = verdict;
            verdicts.extend(host_verdict);
        }
        let misbehaving = verdicts
            .iter()
            .any(|v: &Verdict| matches!(v.kind, VerdictKind::Leak | VerdictKind::RetryStorm));
        verdicts.extend(self.fd_limit(now, report));
        verdicts.extend(self.maxclients_too_low(now, report, misbehaving));
        verdicts.extend(self.pool_oversize(now, report));
        verdicts.extend(self.instance_fanout(report));
        verdicts.extend(self.internal_headroom(report));
        verdicts.extend(self.blocked_clients(report));
        verdicts.extend(self.capacity(now, report));
        verdicts.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(a.kind.cmp(&b.kind))
                .then(a.addr.cmp(&b.addr))
        });
        report.verdicts = verdicts;
    }

    /// Appends this interval's samples and drops what fell out of the window.
    fn record(&mut self, now: Nanos, report: &Report) {
        let keep_from = now.saturating_sub(self.window_ns());
        // At most ~120 samples per address whatever the interval: bounded memory.
        let min_step = self.window_ns() / 120;
        for c in &report.clients {
            let failures = c.failed;
            // Addresses with nothing open and no failures cannot be a leak or storm:
            // no history for them (and none kept once they are back to that), so a
            // fan-out of 100k addresses stays cheap. Should one come back, the
            // baseline below (zero at the previous report) is exact.
            if c.open == 0 && failures == 0 {
                self.clients.remove(&c.addr);
                continue;
            }
            let h = self.clients.entry(c.addr).or_insert_with(|| {
                // New to the history: at the previous report it had nothing open and
                // no failures (or it would have been recorded). Starting from that
                // zero, rather than from now, lets a storm or a leak that begins
                // between two reports count from its first interval. Before the first
                // report nothing is known: the history starts now.
                self.last
                    .map(|ts| Sample {
                        ts,
                        open: 0,
                        failures: 0,
                    })
                    .into_iter()
                    .collect()
            });
            if h.back().is_none_or(|s| now >= s.ts + min_step) {
                h.push_back(Sample {
                    ts: now,
                    open: c.open,
                    failures,
                });
            }
        }
        let present: std::collections::HashSet<IpAddr> =
            report.clients.iter().map(|c| c.addr).collect();
        self.clients.retain(|ip, h| {
            while h.front().is_some_and(|s| s.ts < keep_from) && h.len() > 1 {
                h.pop_front();
            }
            present.contains(ip)
        });
        let t = &report.totals;
        let fd = t
            .accept_errors
            .iter()
            .filter(|(n, _)| *n == "EMFILE" || *n == "ENFILE")
            .map(|(_, n)| n)
            .sum();
        let sample = HostSample {
            ts: now,
            rejected: t.rejected,
            fd_failures: fd,
            accept_failures: t.accept_errors.total(),
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

    /// The sample closest to `ago` before `now` (or the oldest one kept).
    fn client_sample_at(&self, ip: IpAddr, now: Nanos, ago: Nanos) -> Option<Sample> {
        let h = self.clients.get(&ip)?;
        let at = now.saturating_sub(ago);
        h.iter().rev().find(|s| s.ts <= at).or(h.front()).copied()
    }

    fn host_delta(&self, now: Nanos, ago: Duration, f: fn(&HostSample) -> u64) -> u64 {
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

    fn judge_client(
        &self,
        now: Nanos,
        c: &ClientReport,
        limit: Option<u64>,
        stale: &dyn Fn(IpAddr, Duration) -> Vec<(SocketAddr, Duration)>,
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
        // Leak: steady growth of idle connections.
        if let Some(v) = self.leak_verdict(now, c, stale) {
            return (ClientVerdict::Leak, Some(v));
        }
        if window_failures >= 3
            && (trend == Trend::Growing || gap.is_some_and(|g| g >= self.cfg.backoff_min_gap))
        {
            return (ClientVerdict::BackingOff, None);
        }
        if let Some(limit) = limit.filter(|&l| l > 0)
            && c.open as f64 >= self.cfg.pool_heavy_share * limit as f64
        {
            return (ClientVerdict::PoolHeavy, None);
        }
        (ClientVerdict::Healthy, None)
    }

    fn storm_verdict(&self, c: &ClientReport, recent: u64, gap: Duration, trend: Trend) -> Verdict {
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
        Verdict {
            kind: VerdictKind::RetryStorm,
            severity: Severity::Critical,
            addr: Some(c.addr),
            summary: format!(
                "{} retries every {} with no backoff ({:.0} failed attempts/s): a retry storm",
                c.addr,
                human_duration(gap),
                recent as f64 / secs
            ),
            evidence,
            action: format!(
                "Make the client on {} retry with exponential backoff and jitter (and a cap on attempts); until then it keeps the server saturated",
                c.addr
            ),
            stale_connections: Vec::new(),
        }
    }

    fn leak_verdict(
        &self,
        now: Nanos,
        c: &ClientReport,
        stale: &dyn Fn(IpAddr, Duration) -> Vec<(SocketAddr, Duration)>,
    ) -> Option<Verdict> {
        let start = self.client_sample_at(c.addr, now, self.window_ns())?;
        let third = self.client_sample_at(c.addr, now, self.window_ns() / 3)?;
        let growth = c.open.saturating_sub(start.open);
        let span = now.saturating_sub(start.ts);
        // Still growing — or held at the limit: a leak that filled the server can
        // grow no more, and its new attempts are turned away instead.
        let failed_lately = c.failed > start.failures;
        if growth < self.cfg.leak_min_growth
            || (c.open <= third.open && !failed_lately)
            || span == 0
        {
            return None;
        }
        let idle = stale(c.addr, self.cfg.leak_idle);
        if (idle.len() as u64) < self.cfg.leak_min_stale {
            return None;
        }
        let per_min = round1(growth as f64 * 60e9 / span as f64);
        let named: Vec<StaleConn> = idle
            .iter()
            .take(MAX_STALE_NAMED)
            .map(|&(a, d)| StaleConn::new(a, d))
            .collect();
        let mut action = format!(
            "Find the code path on {} that opens connections without closing them (a client or pool created per request). To free slots now, review and run, oldest first:",
            c.addr
        );
        for s in &named {
            let _ = write!(
                action,
                "\n  {}   # idle {}",
                s.command,
                human_duration(Duration::from_millis((s.idle_s * 1e3) as u64))
            );
        }
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
        Some(Verdict {
            kind: VerdictKind::Leak,
            severity: Severity::Warning,
            addr: Some(c.addr),
            summary: format!(
                "{} holds {} connections, {} idle for over {}, growing {}/min: a connection leak",
                c.addr,
                c.open,
                idle.len(),
                human_duration(self.cfg.leak_idle),
                per_min
            ),
            evidence,
            action,
            stale_connections: named,
        })
    }

    fn fd_limit(&self, now: Nanos, r: &Report) -> Option<Verdict> {
        let fd_failures = self.host_delta(now, self.cfg.short_window, |s| s.fd_failures);
        let l = &r.limits;
        let lowered = matches!((l.maxclients, l.effective_maxclients), (Some(m), Some(e)) if e < m);
        if fd_failures == 0 && !lowered {
            return None;
        }
        let mut evidence = Map::new();
        evidence.insert(
            "accept_errors_per_s".into(),
            json!(r.totals.accept_errors_per_s),
        );
        evidence.insert("fd_accept_failures_recent".into(), json!(fd_failures));
        insert_opt(&mut evidence, "maxclients", l.maxclients);
        insert_opt(
            &mut evidence,
            "effective_maxclients",
            l.effective_maxclients,
        );
        insert_opt(&mut evidence, "nofile_soft", l.nofile_soft);
        insert_opt(&mut evidence, "open_fds", l.open_fds);
        insert_opt(
            &mut evidence,
            "rejected_connections_delta",
            r.redis.rejected_connections_delta,
        );
        if let Some(q) = r.totals.accept_queue {
            evidence.insert("accept_queue".into(), json!(q.depth));
        }
        let (severity, summary) = if fd_failures > 0 {
            let queued = r.totals.accept_queue.map_or(0, |q| q.depth);
            (
                Severity::Critical,
                format!(
                    "Redis is out of file descriptors: accept() fails with EMFILE/ENFILE {}/s, {queued} connections wait in the accept queue, and INFO counts none of it",
                    r.totals.accept_errors_per_s
                ),
            )
        } else {
            (
                Severity::Warning,
                format!(
                    "effective maxclients is {}, not {}: {}",
                    l.effective_maxclients.unwrap_or(0),
                    l.maxclients.unwrap_or(0),
                    l.effective_reason
                        .clone()
                        .unwrap_or_else(|| "the open-file limit binds".into())
                ),
            )
        };
        Some(Verdict {
            kind: VerdictKind::FdLimit,
            severity,
            addr: None,
            summary,
            evidence,
            action: "Raise the Redis process's open-file limit (LimitNOFILE= in its systemd unit, or ulimit -n) to at least maxclients + 32, then restart it; check `cat /proc/PID/limits`".into(),
            stale_connections: Vec::new(),
        })
    }

    fn maxclients_too_low(&self, now: Nanos, r: &Report, misbehaving: bool) -> Option<Verdict> {
        let rejected = self.host_delta(now, self.cfg.short_window, |s| s.rejected);
        if rejected == 0 || misbehaving {
            return None;
        }
        let mut evidence = Map::new();
        evidence.insert("rejected_recent".into(), json!(rejected));
        evidence.insert(
            "window_s".into(),
            json!(self.cfg.short_window.as_secs_f64()),
        );
        insert_opt(&mut evidence, "maxclients", r.limits.maxclients);
        insert_opt(
            &mut evidence,
            "effective_maxclients",
            r.limits.effective_maxclients,
        );
        evidence.insert("used".into(), json!(r.capacity.used));
        Some(Verdict {
            kind: VerdictKind::MaxclientsTooLow,
            severity: Severity::Critical,
            addr: None,
            summary: format!(
                "Redis turned away {rejected} connections in the last {} while no client leaks or storms: maxclients ({}) is too low for the load",
                human_duration(self.cfg.short_window),
                r.limits.maxclients.map_or_else(|| "unknown".to_owned(), |m| m.to_string())
            ),
            evidence,
            action: "Raise maxclients (CONFIG SET maxclients N, and in redis.conf) with the open-file limit to match, or reduce the clients' pool sizes".into(),
            stale_connections: Vec::new(),
        })
    }

    fn pool_oversize(&self, now: Nanos, r: &Report) -> Option<Verdict> {
        let limit = r.capacity.limit.filter(|&l| l > 0)?;
        // Steady holders: open now equals open half a window ago (±10 %). The sample
        // must really be that old: a younger history is not yet steady.
        let half = self.window_ns() / 2;
        let mut steady: Vec<u64> = r
            .clients
            .iter()
            .filter(|c| !c.internal && c.open >= 2)
            .filter(|c| {
                self.client_sample_at(c.addr, now, half).is_some_and(|s| {
                    now.saturating_sub(s.ts) >= half && s.open.abs_diff(c.open) * 10 <= c.open
                })
            })
            .map(|c| c.open)
            .collect();
        if steady.len() < self.cfg.pool_min_instances {
            return None;
        }
        steady.sort_unstable();
        let median = steady[steady.len() / 2];
        let similar = steady
            .iter()
            .filter(|&&n| n.abs_diff(median) * 4 <= median)
            .count();
        let total: u64 = steady.iter().sum();
        if similar * 5 < steady.len() * 4 || (total as f64) < self.cfg.pool_share * limit as f64 {
            return None;
        }
        let mut evidence = Map::new();
        evidence.insert("instances".into(), json!(steady.len()));
        evidence.insert("per_instance".into(), json!(median));
        evidence.insert("total".into(), json!(total));
        evidence.insert("limit".into(), json!(limit));
        let severity = if r
            .capacity
            .ratio
            .is_some_and(|x| x >= self.cfg.capacity_critical)
        {
            Severity::Critical
        } else {
            Severity::Warning
        };
        Some(Verdict {
            kind: VerdictKind::PoolOversize,
            severity,
            addr: None,
            summary: format!(
                "{} client hosts each hold about {median} connections ({total} together) of a limit of {limit}: the pools are sized too large for this server",
                steady.len()
            ),
            evidence,
            action: format!(
                "Shrink the per-instance pool size (max connections per client) so instances × pool stays well below {limit}, or put a proxy in front"
            ),
            stale_connections: Vec::new(),
        })
    }

    fn instance_fanout(&self, r: &Report) -> Option<Verdict> {
        let short_lived = |c: &&ClientReport| {
            !c.internal
                && c.open <= 2
                && c.opened >= 1
                && c.lifetime.is_some_and(|l| l.p50 < Duration::from_secs(1))
        };
        let n = r.clients.iter().filter(short_lived).count();
        if n < self.cfg.fanout_min_addresses {
            return None;
        }
        let opened: u64 = r.clients.iter().filter(short_lived).map(|c| c.opened).sum();
        let mut evidence = Map::new();
        evidence.insert("addresses".into(), json!(n));
        evidence.insert("opened".into(), json!(opened));
        // A fan-out past the client table's limit: the forgotten addresses are
        // not in `addresses`.
        if r.totals.evicted_clients > 0 {
            evidence.insert(
                "addresses_forgotten".into(),
                json!(r.totals.evicted_clients),
            );
        }
        Some(Verdict {
            kind: VerdictKind::InstanceFanout,
            severity: Severity::Warning,
            addr: None,
            summary: format!(
                "{n} distinct addresses each open one or two short-lived connections: a connection per instance or per request (serverless-style)"
            ),
            evidence,
            action: "Share connections: a pool per process reused across requests, or a proxy (e.g. twemproxy, Envoy) in front of Redis; a bigger maxclients only delays this".into(),
            stale_connections: Vec::new(),
        })
    }

    fn internal_headroom(&self, r: &Report) -> Option<Verdict> {
        let c = &r.capacity;
        let internal = c.connected_slaves.unwrap_or(0) + c.cluster_connections.unwrap_or(0);
        let headroom = c.headroom?;
        if internal == 0 || headroom >= self.cfg.internal_reserve as i64 {
            return None;
        }
        let mut evidence = Map::new();
        evidence.insert("internal".into(), json!(internal));
        evidence.insert("headroom".into(), json!(headroom));
        evidence.insert("reserve".into(), json!(self.cfg.internal_reserve));
        insert_opt(&mut evidence, "limit", c.limit);
        Some(Verdict {
            kind: VerdictKind::InternalHeadroom,
            severity: Severity::Warning,
            addr: None,
            summary: format!(
                "{internal} replica/cluster connections share the limit and only {headroom} slots are left: a reconnecting replica or a failover could be turned away"
            ),
            evidence,
            action: format!(
                "Keep at least {} slots free for replicas, cluster bus and sentinels: raise maxclients by that much or cap the clients' pools",
                self.cfg.internal_reserve
            ),
            stale_connections: Vec::new(),
        })
    }

    fn blocked_clients(&self, r: &Report) -> Option<Verdict> {
        let blocked = r.capacity.blocked_clients?;
        let limit = r.capacity.limit.filter(|&l| l > 0)?;
        if (blocked as f64) < self.cfg.blocked_share * limit as f64 {
            return None;
        }
        let mut evidence = Map::new();
        evidence.insert("blocked_clients".into(), json!(blocked));
        evidence.insert("limit".into(), json!(limit));
        Some(Verdict {
            kind: VerdictKind::BlockedClients,
            severity: Severity::Warning,
            addr: None,
            summary: format!(
                "{blocked} clients are blocked (BLPOP, XREAD BLOCK, WAIT …), {:.0}% of the limit of {limit}: each holds a connection while it waits",
                blocked as f64 * 100.0 / limit as f64
            ),
            evidence,
            action: "Give blocking consumers timeouts and a small dedicated pool, or move them to fewer connections (one blocking call can watch several keys)".into(),
            stale_connections: Vec::new(),
        })
    }

    fn capacity(&self, now: Nanos, r: &Report) -> Option<Verdict> {
        let ratio = r.capacity.ratio;
        let failing = self.host_delta(now, self.cfg.short_window, |s| s.rejected) > 0
            || self.host_delta(now, self.cfg.short_window, |s| s.accept_failures) > 0;
        let (kind, severity) = if failing || ratio.is_some_and(|x| x >= self.cfg.capacity_critical)
        {
            (VerdictKind::CapacityCritical, Severity::Critical)
        } else if ratio.is_some_and(|x| x > self.cfg.capacity_warning) {
            (VerdictKind::CapacityWarning, Severity::Warning)
        } else {
            return None;
        };
        let mut evidence = Map::new();
        evidence.insert("used".into(), json!(r.capacity.used));
        insert_opt(&mut evidence, "limit", r.capacity.limit);
        if let Some(x) = ratio {
            evidence.insert("ratio".into(), json!(x));
        }
        evidence.insert("failing".into(), json!(failing));
        let pct = ratio.map_or_else(|| "?".to_owned(), |x| format!("{:.0}%", x * 100.0));
        Some(Verdict {
            kind,
            severity,
            addr: None,
            summary: if failing {
                format!("connections are being turned away; {pct} of the real limit is in use")
            } else {
                format!("{pct} of the real connection limit is in use ({} of {})", r.capacity.used, r.capacity.limit.unwrap_or(0))
            },
            evidence,
            action: "Look at the other verdicts for the cause; if none, raise maxclients and the open-file limit together".into(),
            stale_connections: Vec::new(),
        })
    }
}

fn nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1e3
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn insert_opt(m: &mut Map<String, Value>, key: &str, v: Option<u64>) {
    if let Some(v) = v {
        m.insert(key.into(), json!(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Activity, Clock, CloseKind, ConnKey, Event, KernelCounters};
    use crate::host::HostSnapshot;
    use crate::redis::{ConfigStatus, InfoFields, RedisConfig, RedisSnapshot, RedisStatus};
    use crate::tracker::Tracker;
    use std::time::UNIX_EPOCH;

    const US: Nanos = 1_000;
    const MS: Nanos = 1_000_000;
    const SEC: Nanos = 1_000_000_000;
    /// The monotonic time the agent started; interval `n` ends at `START + n s`.
    const START: Nanos = 1_000 * SEC;

    /// A tracker and a diagnoser driven as `watch` drives them: the events of each
    /// 1 s interval in time order, then a Tick, a report and a diagnosis.
    struct Sim {
        tracker: Tracker,
        diagnoser: Diagnoser,
        events: Vec<Event>,
        next: usize,
        now: Nanos,
        interval: Nanos,
    }

    impl Sim {
        fn new(events: Vec<Event>) -> Self {
            Self::with(Thresholds::default(), events)
        }

        fn with(cfg: Thresholds, mut events: Vec<Event>) -> Self {
            events.sort_by_key(Event::ts);
            Sim {
                tracker: Tracker::new(vec![6379]),
                diagnoser: Diagnoser::new(cfg),
                events,
                next: 0,
                now: START,
                interval: SEC,
            }
        }

        /// Ends the next interval and returns its diagnosed report.
        fn step(&mut self) -> Report {
            self.now += self.interval;
            let now = self.now;
            while let Some(ev) = self.events.get(self.next).filter(|e| e.ts() <= now) {
                self.tracker.apply(ev);
                self.next += 1;
            }
            self.tracker.apply(&Event::Tick { ts: now });
            let clock = Clock {
                mono: START,
                wall: UNIX_EPOCH + Duration::from_secs(1_795_986_000),
            };
            let mut report = self.tracker.report(now, &clock);
            let tracker = &self.tracker;
            self.diagnoser.diagnose(now, &mut report, &|ip, idle| {
                tracker.stale_connections(ip, now, idle)
            });
            report
        }

        /// Reports of intervals 1..=n, index i holding interval i + 1.
        fn run(&mut self, n: usize) -> Vec<Report> {
            (0..n).map(|_| self.step()).collect()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn conn(addr: &str, port: u16) -> ConnKey {
        ConnKey::new(
            "10.0.0.1:6379".parse().unwrap(),
            SocketAddr::new(ip(addr), port),
        )
    }

    fn opened(ts: Nanos, key: ConnKey) -> Event {
        Event::Opened { ts, key }
    }

    fn closed(ts: Nanos, key: ConnKey, how: CloseKind, bytes_in: u64, bytes_out: u64) -> Event {
        Event::Closed {
            ts,
            key,
            how,
            activity: Some(Activity {
                bytes_in,
                bytes_out,
                last_active: None,
            }),
        }
    }

    /// An attempt at `ts` that Redis turns away at maxclients: 36 bytes out, nothing
    /// read, closed by the server 200 µs later. Returns when it ended.
    fn rejected(ev: &mut Vec<Event>, ts: Nanos, key: ConnKey) -> Nanos {
        ev.push(opened(ts, key));
        ev.push(closed(ts + 200 * US, key, CloseKind::Server, 0, 36));
        ts + 200 * US
    }

    /// `n` connections from `addr` opened at `at` and busy at every interval end
    /// up to `until` (interval number).
    fn steady_pool(ev: &mut Vec<Event>, addr: &str, n: u16, at: Nanos, until: u64) {
        let keys: Vec<ConnKey> = (1..=n).map(|p| conn(addr, 10_000 + p)).collect();
        ev.extend(keys.iter().map(|&k| opened(at, k)));
        for i in 1..=until {
            let ts = START + i * SEC;
            ev.push(Event::Activity {
                ts,
                conns: keys
                    .iter()
                    .map(|&k| {
                        let a = Activity {
                            bytes_in: i * 1_000,
                            bytes_out: i * 5_000,
                            last_active: Some(ts),
                        };
                        (k, a)
                    })
                    .collect(),
                gone: Vec::new(),
            });
        }
    }

    fn redis(at: Nanos, maxclients: u64, info: InfoFields) -> Event {
        Event::Redis {
            ts: at,
            snapshot: Box::new(RedisSnapshot {
                status: RedisStatus::Ok,
                config_status: ConfigStatus::Ok,
                info: Some(info),
                config: Some(RedisConfig {
                    maxclients: Some(maxclients),
                    timeout: Some(0),
                }),
                ..RedisSnapshot::disabled()
            }),
        }
    }

    fn connected(n: u64) -> InfoFields {
        InfoFields {
            connected_clients: Some(n),
            ..InfoFields::default()
        }
    }

    fn host(at: Nanos, nofile: u64) -> Event {
        Event::Host {
            ts: at,
            snapshot: Box::new(HostSnapshot {
                nofile_soft: Some(nofile),
                nofile_hard: Some(nofile),
                pid: Some(42),
                ..HostSnapshot::default()
            }),
        }
    }

    fn kinds(r: &Report) -> Vec<(VerdictKind, Severity, Option<IpAddr>)> {
        r.verdicts
            .iter()
            .map(|v| (v.kind, v.severity, v.addr))
            .collect()
    }

    fn verdict(r: &Report, kind: VerdictKind) -> &Verdict {
        r.verdicts
            .iter()
            .find(|v| v.kind == kind)
            .unwrap_or_else(|| panic!("no {kind:?} in {:?}", kinds(r)))
    }

    fn client_verdict(r: &Report, addr: &str) -> ClientVerdict {
        r.clients
            .iter()
            .find(|c| c.addr == ip(addr))
            .unwrap_or_else(|| panic!("no row for {addr}"))
            .verdict
    }

    fn evidence(v: &Verdict, key: &str) -> Value {
        v.evidence
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("no evidence {key} in {:?}", v.evidence))
    }

    /// The first interval (1-based) whose report satisfies `f`.
    fn first(reports: &[Report], f: impl Fn(&Report) -> bool) -> Option<usize> {
        reports.iter().position(f).map(|i| i + 1)
    }

    use VerdictKind as K;
    const CRIT: Severity = Severity::Critical;
    const WARN: Severity = Severity::Warning;

    // ---- leak ------------------------------------------------------------------

    #[test]
    fn leak_is_named_for_the_leaker_only_and_clears_when_its_connections_close() {
        const LEAKER: &str = "10.0.0.66";
        const POOL: &str = "10.0.0.10";
        let mut ev = Vec::new();
        steady_pool(&mut ev, POOL, 10, START + 100 * MS, 70);
        // One connection a second, opened at k + 0.5 s, never used, never closed…
        for k in 0..60u16 {
            let at = START + u64::from(k) * SEC + 500 * MS;
            ev.push(opened(at, conn(LEAKER, 40_000 + k)));
        }
        // …until someone closes them all at 60.2 s.
        for k in 0..60u16 {
            let at = START + 60 * SEC + 200 * MS;
            ev.push(closed(
                at,
                conn(LEAKER, 40_000 + k),
                CloseKind::Client,
                0,
                0,
            ));
        }
        let mut sim = Sim::new(ev);
        let reports = sim.run(62);

        // Five connections idle for 30 s (leak_min_stale, leak_idle) first exist at
        // 35 s: the ones opened at 0.5 … 4.5 s. Growth (34) is long past 10 by then.
        let named = first(&reports, |r| !r.verdicts.is_empty());
        assert_eq!(named, Some(35));
        for (i, r) in reports.iter().enumerate().take(60) {
            let t = i + 1;
            assert_eq!(client_verdict(r, POOL), ClientVerdict::Healthy, "t={t}");
            if t < 35 {
                assert_eq!(kinds(r), [], "t={t}");
                assert_eq!(client_verdict(r, LEAKER), ClientVerdict::Healthy, "t={t}");
            } else {
                assert_eq!(kinds(r), [(K::Leak, WARN, Some(ip(LEAKER)))], "t={t}");
                assert_eq!(client_verdict(r, LEAKER), ClientVerdict::Leak, "t={t}");
            }
        }

        let r = &reports[59]; // t = 60 s
        let v = verdict(r, K::Leak);
        assert_eq!(evidence(v, "open"), 60);
        // From the first sample (1 s, one open) to 60 s.
        assert_eq!(evidence(v, "growth"), 59);
        assert_eq!(evidence(v, "window_s"), 59.0);
        assert_eq!(evidence(v, "growth_per_min"), 60.0);
        assert_eq!(evidence(v, "idle_over_s"), 30.0);
        // Opened at 0.5 … 29.5 s: idle at least 30 s.
        assert_eq!(evidence(v, "stale"), 30);
        assert_eq!(evidence(v, "idle_max_s"), 59.5);
        assert_eq!(v.stale_connections.len(), MAX_STALE_NAMED);
        for (k, s) in v.stale_connections.iter().enumerate() {
            let addr = SocketAddr::new(ip(LEAKER), 40_000 + k as u16);
            assert_eq!(s.addr, addr);
            assert_eq!(s.idle_s, 59.5 - k as f64);
            assert_eq!(s.command, format!("CLIENT KILL ADDR {addr}"));
        }
        let kills: Vec<&str> = v
            .action
            .lines()
            .filter_map(|l| l.trim().strip_prefix("CLIENT KILL ADDR "))
            .map(|l| l.split_whitespace().next().unwrap_or(""))
            .collect();
        let expected: Vec<String> = (0..20)
            .map(|k| format!("{LEAKER}:{}", 40_000 + k))
            .collect();
        assert_eq!(kills, expected, "oldest first, at most 20:\n{}", v.action);
        assert_eq!(
            v.action.lines().nth(1),
            Some("  CLIENT KILL ADDR 10.0.0.66:40000   # idle 1m00s")
        );
        assert_eq!(
            v.summary,
            "10.0.0.66 holds 60 connections, 30 idle for over 30s, growing 60/min: a connection leak"
        );

        // Closed at 60.2 s: the verdict clears at the next report.
        for r in &reports[60..] {
            assert_eq!(kinds(r), []);
            assert_eq!(client_verdict(r, LEAKER), ClientVerdict::Healthy);
        }
    }

    #[test]
    fn a_leak_that_filled_the_server_stays_a_leak_while_its_attempts_are_turned_away() {
        const LEAKER: &str = "10.0.0.66";
        let mut ev = Vec::new();
        // One connection a second for 40 s, never used again; from then on the
        // server is full and each new attempt, every 2 s, is rejected.
        for k in 0..40u16 {
            ev.push(opened(
                START + u64::from(k) * SEC + 500 * MS,
                conn(LEAKER, 40_000 + k),
            ));
        }
        for k in 0..20u16 {
            let at = START + 40 * SEC + u64::from(k) * 2 * SEC + 300 * MS;
            rejected(&mut ev, at, conn(LEAKER, 50_000 + k));
        }
        let reports = Sim::new(ev).run(80);
        // Growth stopped at 40 s; a third of the window later it still is a leak.
        for t in [45usize, 60, 79] {
            assert_eq!(
                client_verdict(&reports[t - 1], LEAKER),
                ClientVerdict::Leak,
                "t={t}"
            );
        }
    }

    #[test]
    fn busy_growing_connections_are_not_a_leak() {
        // Growth alone is not a leak: these connections all carry traffic.
        const GROWING: &str = "10.0.0.67";
        let mut ev = Vec::new();
        for k in 0..60u16 {
            let at = START + u64::from(k) * SEC + 500 * MS;
            ev.push(opened(at, conn(GROWING, 40_000 + k)));
        }
        for i in 1..=60u64 {
            let ts = START + i * SEC;
            let conns = (0..i.min(60) as u16)
                .map(|k| {
                    let a = Activity {
                        bytes_in: i,
                        bytes_out: i,
                        last_active: Some(ts),
                    };
                    (conn(GROWING, 40_000 + k), a)
                })
                .collect();
            ev.push(Event::Activity {
                ts,
                conns,
                gone: Vec::new(),
            });
        }
        let reports = Sim::new(ev).run(60);
        for r in &reports {
            assert_eq!(kinds(r), []);
            assert_eq!(client_verdict(r, GROWING), ClientVerdict::Healthy);
        }
    }

    // ---- retry storm and backoff ---------------------------------------------

    const CALM: &str = "10.0.0.10";

    /// 50 attempts a second from `addr`, each 1 ms after the previous rejection,
    /// in the seconds `from..to`, 300 ms into each.
    fn storm(ev: &mut Vec<Event>, addr: &str, from: u64, to: u64) {
        let mut port = 20_000u16;
        for s in from..to {
            let mut at = START + s * SEC + 300 * MS;
            for _ in 0..50 {
                let end = rejected(ev, at, conn(addr, port));
                port += 1;
                at = end + MS;
            }
        }
    }

    /// Attempts from `addr` from `from`, each rejected, the next one after an
    /// exponential backoff from 20 ms doubling to a 2 s cap, with ±10 % jitter.
    fn backing_off(ev: &mut Vec<Event>, addr: &str, from: Nanos, until: Nanos) {
        // A fixed jitter sequence keeps the test deterministic.
        const JITTER: [i64; 7] = [0, 7, -4, 10, -9, 3, -6];
        let mut at = from;
        let mut base = 20 * MS;
        let mut port = 30_000u16;
        let mut i = 0;
        while at < until {
            let end = rejected(ev, at, conn(addr, port));
            port += 1;
            let jitter = base as i64 * JITTER[i % JITTER.len()] / 100;
            at = end + (base as i64 + jitter) as u64;
            base = (base * 2).min(2 * SEC);
            i += 1;
        }
    }

    #[test]
    fn retry_storm_is_named_at_its_first_interval_and_clears() {
        const STORM: &str = "10.0.0.20";
        let mut ev = Vec::new();
        steady_pool(&mut ev, CALM, 5, START + 100 * MS, 20);
        // Storm from 5.3 s to 9.36 s: five bursts of 50.
        storm(&mut ev, STORM, 5, 10);
        let reports = Sim::new(ev).run(14);
        for r in &reports[..5] {
            assert_eq!(kinds(r), []);
        }
        // Named in the interval it began (6 s), with capacity critical (rejections
        // happening); maxclients_too_low is not raised since a client storms.
        for (i, r) in reports.iter().enumerate().take(12).skip(5) {
            assert_eq!(
                kinds(r),
                [
                    (K::RetryStorm, CRIT, Some(ip(STORM))),
                    (K::CapacityCritical, CRIT, None)
                ],
                "t={}",
                i + 1
            );
            assert_eq!(client_verdict(r, STORM), ClientVerdict::RetryStorm);
            assert_eq!(client_verdict(r, CALM), ClientVerdict::Healthy);
        }
        let v = verdict(&reports[5], K::RetryStorm);
        assert_eq!(evidence(v, "failures_recent"), 50);
        let v = verdict(&reports[7], K::RetryStorm); // 8 s: three bursts in 3 s
        assert_eq!(evidence(v, "failures_recent"), 150);
        assert_eq!(evidence(v, "failures_per_s"), 50.0);
        assert_eq!(evidence(v, "retry_gap_p50_ms"), 1.0);
        assert_eq!(evidence(v, "retry_trend"), "flat");
        assert_eq!(evidence(v, "rejected"), 150);
        assert_eq!(evidence(v, "refused"), 0);
        assert_eq!(evidence(v, "reset"), 0);
        assert!(v.action.contains("exponential backoff"), "{}", v.action);
        let retry = reports[7]
            .clients
            .iter()
            .find(|c| c.addr == ip(STORM))
            .and_then(|c| c.retry);
        assert_eq!(
            retry.map(|r| (r.p50_ms, r.last_ms, r.trend)),
            Some((1.0, 1.0, Trend::Flat))
        );
        // The last burst was at 9.3 s; by 13 s the short window holds no failure.
        assert_eq!(kinds(&reports[12]), [], "t=13");
        assert_eq!(client_verdict(&reports[12], STORM), ClientVerdict::Healthy);
    }

    #[test]
    fn a_storm_of_an_address_seen_at_the_first_report_is_named_by_the_second() {
        // Nothing is known before the first report: its failures are the baseline.
        const STORM: &str = "10.0.0.21";
        let mut ev = Vec::new();
        storm(&mut ev, STORM, 0, 3);
        let reports = Sim::new(ev).run(3);
        assert_eq!(client_verdict(&reports[0], STORM), ClientVerdict::Healthy);
        assert_eq!(
            client_verdict(&reports[1], STORM),
            ClientVerdict::RetryStorm
        );
        assert_eq!(
            client_verdict(&reports[2], STORM),
            ClientVerdict::RetryStorm
        );
    }

    fn backoff_never_storms(cfg: Thresholds) {
        const SLOW: &str = "10.0.0.30";
        let mut ev = Vec::new();
        steady_pool(&mut ev, CALM, 5, START + 100 * MS, 70);
        backing_off(&mut ev, SLOW, START + 5 * SEC + 300 * MS, START + 70 * SEC);
        let reports = Sim::with(cfg, ev).run(70);
        for (i, r) in reports.iter().enumerate() {
            let t = i + 1;
            assert!(
                r.verdicts.iter().all(|v| v.kind != K::RetryStorm),
                "t={t}: {:?}",
                kinds(r)
            );
            let expected = if t <= 5 {
                ClientVerdict::Healthy
            } else {
                ClientVerdict::BackingOff
            };
            if t > 5 {
                assert_eq!(client_verdict(r, SLOW), expected, "t={t}");
                // Well-behaved clients turned away: the limit is too low.
                assert_eq!(
                    kinds(r),
                    [
                        (K::MaxclientsTooLow, CRIT, None),
                        (K::CapacityCritical, CRIT, None)
                    ],
                    "t={t}"
                );
            } else {
                assert_eq!(kinds(r), [], "t={t}");
            }
            assert_eq!(client_verdict(r, CALM), ClientVerdict::Healthy);
        }
        // First interval: five gaps from 20 to 320 ms, growing.
        let retry = |r: &Report| {
            r.clients
                .iter()
                .find(|c| c.addr == ip(SLOW))
                .and_then(|c| c.retry)
        };
        assert_eq!(
            retry(&reports[5]).map(|r| (r.gaps, r.trend)),
            Some((5, Trend::Growing))
        );
        // At the cap the gaps are flat, but over a second: still backing off.
        let late = retry(&reports[69]).unwrap();
        assert_eq!(late.trend, Trend::Flat);
        assert!(late.p50_ms >= 1_800.0 && late.p50_ms <= 2_200.0, "{late:?}");
    }

    #[test]
    fn exponential_backoff_with_jitter_is_backing_off_never_a_storm() {
        backoff_never_storms(Thresholds::default());
    }

    #[test]
    fn backoff_is_no_storm_even_when_failures_would_count_as_one() {
        // With few enough failures to qualify, the growing gaps still tell it apart.
        backoff_never_storms(Thresholds {
            storm_min_failures: 3,
            ..Thresholds::default()
        });
    }

    // ---- pools, fan-out ---------------------------------------------------------

    #[test]
    fn pool_oversize_after_half_a_window_of_steady_pools() {
        let mut ev = vec![redis(START, 100, connected(90)), host(START, 1_000_000)];
        let addrs: Vec<String> = (1..=5).map(|i| format!("10.0.1.{i}")).collect();
        for a in &addrs {
            steady_pool(&mut ev, a, 18, START + 100 * MS, 40);
        }
        let reports = Sim::new(ev).run(40);
        // 90 of 100 in use: capacity critical from the start; the pools are first
        // sampled at 1 s and are steady from 31 s.
        for (i, r) in reports.iter().enumerate() {
            let t = i + 1;
            if t < 31 {
                assert_eq!(kinds(r), [(K::CapacityCritical, CRIT, None)], "t={t}");
            } else {
                assert_eq!(
                    kinds(r),
                    [
                        (K::PoolOversize, CRIT, None),
                        (K::CapacityCritical, CRIT, None)
                    ],
                    "t={t}"
                );
            }
            for a in &addrs {
                // 18 < 25 % of 100: not pool-heavy on its own.
                assert_eq!(client_verdict(r, a), ClientVerdict::Healthy, "t={t}");
            }
        }
        let v = verdict(&reports[30], K::PoolOversize);
        assert_eq!(evidence(v, "instances"), 5);
        assert_eq!(evidence(v, "per_instance"), 18);
        assert_eq!(evidence(v, "total"), 90);
        assert_eq!(evidence(v, "limit"), 100);
    }

    #[test]
    fn pool_oversize_needs_pools_taking_the_share_of_the_limit() {
        // The same pools under a limit of 1000 take 9 %: nothing to say.
        let mut ev = vec![redis(START, 1000, connected(90)), host(START, 1_000_000)];
        for i in 1..=5 {
            steady_pool(&mut ev, &format!("10.0.1.{i}"), 18, START + 100 * MS, 40);
        }
        for r in Sim::new(ev).run(40) {
            assert_eq!(kinds(&r), []);
        }
    }

    #[test]
    fn pool_heavy_client() {
        let mut ev = vec![redis(START, 100, connected(40)), host(START, 1_000_000)];
        steady_pool(&mut ev, "10.0.1.9", 25, START + 100 * MS, 3);
        steady_pool(&mut ev, "10.0.1.8", 15, START + 100 * MS, 3);
        let r = &Sim::new(ev).run(3)[2];
        assert_eq!(client_verdict(r, "10.0.1.9"), ClientVerdict::PoolHeavy);
        assert_eq!(client_verdict(r, "10.0.1.8"), ClientVerdict::Healthy);
        assert_eq!(kinds(r), []);
    }

    /// `n` addresses each opening a connection every 4 s, 7 ms + 20 ms × i into
    /// the cycle, used and closed by the client 5 ms later.
    fn fanout(n: u32, seconds: u64) -> Vec<Event> {
        let mut ev = Vec::new();
        for i in 0..n {
            let addr = format!("10.1.{}.{}", i / 250, i % 250 + 1);
            let mut port = 50_000u16;
            let mut at = START + 7 * MS + u64::from(i) * 20 * MS % (4 * SEC);
            while at < START + seconds * SEC {
                let k = conn(&addr, port);
                ev.push(opened(at, k));
                ev.push(closed(at + 5 * MS, k, CloseKind::Client, 40, 12));
                port += 1;
                at += 4 * SEC;
            }
        }
        ev
    }

    #[test]
    fn instance_fanout_from_hundreds_of_short_lived_addresses() {
        let reports = Sim::new(fanout(200, 20)).run(20);
        // 50 addresses have opened by 1 s, 100 by 2 s, all 200 by 4 s.
        assert_eq!(kinds(&reports[0]), []);
        for r in &reports[1..] {
            assert_eq!(kinds(r), [(K::InstanceFanout, WARN, None)]);
            assert!(
                r.clients
                    .iter()
                    .all(|c| c.verdict == ClientVerdict::Healthy)
            );
        }
        assert_eq!(
            evidence(verdict(&reports[1], K::InstanceFanout), "addresses"),
            100
        );
        let v = verdict(&reports[3], K::InstanceFanout);
        assert_eq!(evidence(v, "addresses"), 200);
        assert_eq!(evidence(v, "opened"), 200);
        assert_eq!(
            evidence(verdict(&reports[19], K::InstanceFanout), "opened"),
            1000
        );
    }

    #[test]
    fn fifty_short_lived_addresses_are_no_fanout() {
        for r in Sim::new(fanout(50, 30)).run(30) {
            assert_eq!(kinds(&r), []);
            assert!(
                r.clients
                    .iter()
                    .all(|c| c.verdict == ClientVerdict::Healthy)
            );
        }
    }

    // ---- limits -----------------------------------------------------------------

    /// Three addresses each turned away every 2 s, staggered, from 1.5 s.
    fn polite_rejections(ev: &mut Vec<Event>, until: u64) {
        for j in 0..3u64 {
            let addr = format!("10.0.2.{}", j + 1);
            let mut at = START + 1_500 * MS + j * 667 * MS;
            let mut port = 30_000u16;
            while at < START + until * SEC {
                rejected(ev, at, conn(&addr, port));
                port += 1;
                at += 2 * SEC;
            }
        }
    }

    #[test]
    fn maxclients_too_low_when_clients_behave() {
        let mut ev = vec![redis(START, 100, connected(100)), host(START, 1_000_000)];
        steady_pool(&mut ev, CALM, 5, START + 100 * MS, 20);
        polite_rejections(&mut ev, 20);
        let reports = Sim::new(ev).run(20);
        assert_eq!(kinds(&reports[0]), [(K::CapacityCritical, CRIT, None)]);
        for r in &reports[1..] {
            assert_eq!(
                kinds(r),
                [
                    (K::MaxclientsTooLow, CRIT, None),
                    (K::CapacityCritical, CRIT, None)
                ]
            );
        }
        let r = &reports[19];
        let v = verdict(r, K::MaxclientsTooLow);
        // In (17 s, 20 s]: 17.5, 19.5 / 18.167 / 18.834.
        assert_eq!(evidence(v, "rejected_recent"), 4);
        assert_eq!(evidence(v, "maxclients"), 100);
        assert_eq!(evidence(v, "used"), 100);
        assert_eq!(evidence(verdict(r, K::CapacityCritical), "failing"), true);
        for j in 1..=3 {
            assert_eq!(
                client_verdict(r, &format!("10.0.2.{j}")),
                ClientVerdict::BackingOff
            );
        }
    }

    #[test]
    fn a_storm_is_blamed_instead_of_maxclients() {
        const STORM: &str = "10.0.0.20";
        let mut ev = vec![redis(START, 100, connected(100)), host(START, 1_000_000)];
        polite_rejections(&mut ev, 20);
        storm(&mut ev, STORM, 5, 20);
        let reports = Sim::new(ev).run(20);
        assert_eq!(
            kinds(&reports[4]),
            [
                (K::MaxclientsTooLow, CRIT, None),
                (K::CapacityCritical, CRIT, None)
            ]
        );
        for r in &reports[5..] {
            assert_eq!(
                kinds(r),
                [
                    (K::RetryStorm, CRIT, Some(ip(STORM))),
                    (K::CapacityCritical, CRIT, None)
                ]
            );
        }
        assert_eq!(
            client_verdict(&reports[19], "10.0.2.1"),
            ClientVerdict::BackingOff
        );
    }

    fn emfile(ts: Nanos, n: u64) -> Event {
        Event::Counters {
            ts,
            counters: KernelCounters {
                accept_errors: vec![(libc::EAGAIN, 5 * n), (libc::EMFILE, n)],
                ..KernelCounters::default()
            },
        }
    }

    #[test]
    fn fd_limit_is_critical_at_the_first_report_that_sees_failures_even_between_history_samples() {
        // 200 ms intervals: the history keeps a sample every 500 ms (window / 120),
        // but "now" must always be this report's figures.
        let ev = vec![emfile(START, 0), emfile(START + 1_100 * MS, 4_000)];
        let mut sim = Sim::new(ev);
        sim.interval = 200 * MS;
        let reports = sim.run(8);
        let first = first(&reports, |r| !kinds(r).is_empty()).unwrap();
        assert_eq!(first, 6, "interval 6 (1.2 s), the first after the failures");
        assert_eq!(
            kinds(&reports[first - 1]),
            [(K::FdLimit, CRIT, None), (K::CapacityCritical, CRIT, None)]
        );
    }

    #[test]
    fn fd_limit_critical_on_emfile_and_clears_when_it_stops() {
        let mut ev = Vec::new();
        // EMFILE grows 20,000/s until 10 s, then stays.
        for i in 0..=20 {
            ev.push(emfile(START + i * SEC, 20_000 * i.min(10)));
        }
        let reports = Sim::new(ev).run(20);
        // The first report is the baseline.
        assert_eq!(kinds(&reports[0]), []);
        for r in &reports[1..12] {
            assert_eq!(
                kinds(r),
                [(K::FdLimit, CRIT, None), (K::CapacityCritical, CRIT, None)]
            );
        }
        let v = verdict(&reports[3], K::FdLimit);
        assert_eq!(evidence(v, "accept_errors_per_s"), 20_000.0);
        assert_eq!(evidence(v, "fd_accept_failures_recent"), 60_000);
        assert!(v.summary.contains("EMFILE/ENFILE 20000/s"), "{}", v.summary);
        // Nothing new since 10 s: gone once the 3 s window has moved past it.
        assert_eq!(kinds(&reports[12]), [], "t=13");
    }

    #[test]
    fn fd_limit_warning_when_the_open_file_limit_lowers_maxclients() {
        let ev = vec![redis(START, 10_000, connected(10)), host(START, 4096)];
        let r = &Sim::new(ev).run(2)[1];
        assert_eq!(kinds(r), [(K::FdLimit, WARN, None)]);
        let v = verdict(r, K::FdLimit);
        assert_eq!(evidence(v, "maxclients"), 10_000);
        assert_eq!(evidence(v, "effective_maxclients"), 4064);
        assert_eq!(evidence(v, "nofile_soft"), 4096);
        assert_eq!(evidence(v, "fd_accept_failures_recent"), 0);
        assert!(
            v.summary
                .starts_with("effective maxclients is 4064, not 10000"),
            "{}",
            v.summary
        );
        // Room for all of maxclients: nothing.
        let ev = vec![redis(START, 10_000, connected(10)), host(START, 10_032)];
        assert_eq!(kinds(&Sim::new(ev).run(2)[1]), []);
    }

    fn snapshot_verdicts(maxclients: u64, info: InfoFields) -> Report {
        let ev = vec![redis(START, maxclients, info), host(START, 1_000_000)];
        Sim::new(ev).run(2).swap_remove(1)
    }

    #[test]
    fn blocked_clients_from_30_percent_of_the_limit() {
        let blocked = |n| InfoFields {
            connected_clients: Some(400),
            blocked_clients: Some(n),
            ..InfoFields::default()
        };
        let r = snapshot_verdicts(1000, blocked(300));
        assert_eq!(kinds(&r), [(K::BlockedClients, WARN, None)]);
        let v = verdict(&r, K::BlockedClients);
        assert_eq!(evidence(v, "blocked_clients"), 300);
        assert_eq!(evidence(v, "limit"), 1000);
        assert_eq!(kinds(&snapshot_verdicts(1000, blocked(299))), []);
    }

    #[test]
    fn internal_headroom_below_the_reserve_with_a_replica() {
        let with = |clients, slaves| InfoFields {
            connected_clients: Some(clients),
            connected_slaves: Some(slaves),
            ..InfoFields::default()
        };
        // 150 − (59 + 1) = 90 slots left, under the 100 reserved.
        let r = snapshot_verdicts(150, with(59, 1));
        assert_eq!(kinds(&r), [(K::InternalHeadroom, WARN, None)]);
        let v = verdict(&r, K::InternalHeadroom);
        assert_eq!(evidence(v, "internal"), 1);
        assert_eq!(evidence(v, "headroom"), 90);
        assert_eq!(evidence(v, "reserve"), 100);
        assert_eq!(evidence(v, "limit"), 150);
        // Exactly the reserve left, or no replica: nothing.
        assert_eq!(kinds(&snapshot_verdicts(150, with(49, 1))), []);
        assert_eq!(kinds(&snapshot_verdicts(150, with(60, 0))), []);
    }

    #[test]
    fn capacity_warning_and_critical_by_ratio() {
        let r = snapshot_verdicts(1000, connected(850));
        assert_eq!(kinds(&r), [(K::CapacityWarning, WARN, None)]);
        let v = verdict(&r, K::CapacityWarning);
        assert_eq!(
            (
                evidence(v, "used"),
                evidence(v, "limit"),
                evidence(v, "ratio")
            ),
            (850.into(), 1000.into(), 0.85.into())
        );
        assert_eq!(evidence(v, "failing"), false);
        let r = snapshot_verdicts(1000, connected(950));
        assert_eq!(kinds(&r), [(K::CapacityCritical, CRIT, None)]);
        assert_eq!(evidence(verdict(&r, K::CapacityCritical), "ratio"), 0.95);
        // Boundaries: warning above 0.8, critical from 0.9.
        assert_eq!(kinds(&snapshot_verdicts(1000, connected(800))), []);
        assert_eq!(
            kinds(&snapshot_verdicts(1000, connected(900))),
            [(K::CapacityCritical, CRIT, None)]
        );
    }

    #[test]
    fn capacity_critical_while_rejections_happen_at_a_low_ratio() {
        let mut ev = vec![redis(START, 1000, connected(100)), host(START, 1_000_000)];
        rejected(&mut ev, START + 1_500 * MS, conn("10.0.2.1", 30_000));
        let reports = Sim::new(ev).run(5);
        assert_eq!(kinds(&reports[0]), []);
        for r in &reports[1..4] {
            assert!(
                r.verdicts.iter().any(|v| v.kind == K::CapacityCritical),
                "{:?}",
                kinds(r)
            );
            let v = verdict(r, K::CapacityCritical);
            assert_eq!(
                (evidence(v, "ratio"), evidence(v, "failing")),
                (0.1.into(), true.into())
            );
        }
        // One rejection at 1.5 s: out of the 3 s window at 5 s.
        assert_eq!(kinds(&reports[4]), []);
    }

    // ---- no false alarms, bounded memory ------------------------------------------

    #[test]
    fn healthy_traffic_raises_nothing_in_60_s() {
        let mut ev = vec![redis(START, 10_000, connected(16)), host(START, 65_536)];
        steady_pool(&mut ev, "10.0.3.1", 10, START + 100 * MS, 60);
        steady_pool(&mut ev, "10.0.3.2", 5, START + 100 * MS, 60);
        // Short-lived connections, 5 a second, each used and closed by the client
        // after 2 ms.
        for n in 0..300u64 {
            let k = conn("10.0.3.3", 20_000 + n as u16);
            let at = START + 50 * MS + n * 200 * MS;
            ev.push(opened(at, k));
            ev.push(closed(at + 2 * MS, k, CloseKind::Client, 30, 10));
        }
        let reports = Sim::new(ev).run(60);
        for (i, r) in reports.iter().enumerate() {
            assert_eq!(kinds(r), [], "t={}", i + 1);
            assert_eq!(r.clients.len(), 3);
            assert!(
                r.clients
                    .iter()
                    .all(|c| c.verdict == ClientVerdict::Healthy),
                "t={}",
                i + 1
            );
        }
        assert_eq!(
            reports[59].clients.iter().map(|c| c.opened).sum::<u64>(),
            315
        );
    }

    #[test]
    fn history_stays_bounded() {
        // 100,000 addresses, 10,000 a second, each opening and closing once.
        let mut ev = Vec::with_capacity(200_000);
        for i in 0..100_000u32 {
            let [_, a, b, c] = i.to_be_bytes();
            let k = ConnKey::new(
                "10.0.0.1:6379".parse().unwrap(),
                SocketAddr::new(IpAddr::from([10, a, b, c]), 40_000),
            );
            let at = START + u64::from(i) * 100 * US;
            ev.push(opened(at, k));
            ev.push(closed(at + 5 * MS, k, CloseKind::Client, 10, 10));
        }
        // And one address that holds a connection throughout.
        ev.push(opened(START + MS, conn("192.168.0.1", 1)));
        let mut sim = Sim::new(ev);
        sim.run(4);
        // At 5 s, the 50 opened in the last 5 ms are open: only they have a history.
        sim.step();
        assert_eq!(sim.diagnoser.clients.len(), 51);
        let reports = sim.run(6);
        let last = &reports[5];
        // The client table keeps at most MAX_ADDRESSES; the rest are counted.
        let kept = last.clients.len();
        assert!(kept <= crate::client::MAX_ADDRESSES, "{kept}");
        assert_eq!(kept as u64 + last.totals.evicted_clients, 100_001);
        assert!(last.clients.iter().any(|c| c.addr == ip("192.168.0.1")));
        assert_eq!(
            evidence(verdict(last, K::InstanceFanout), "addresses"),
            kept as u64 - 1
        );
        assert_eq!(
            evidence(verdict(last, K::InstanceFanout), "addresses_forgotten"),
            last.totals.evicted_clients
        );
        // Only the one holding a connection has a history.
        let kept: Vec<IpAddr> = sim.diagnoser.clients.keys().copied().collect();
        assert_eq!(kept, [ip("192.168.0.1")]);
    }

    #[test]
    fn a_long_lived_address_keeps_one_window_of_samples() {
        let mut ev = Vec::new();
        steady_pool(&mut ev, "192.168.0.1", 3, START + MS, 200);
        let mut sim = Sim::new(ev);
        sim.run(200);
        // One sample per report from 140 s to 200 s: the window, both ends included.
        let h = &sim.diagnoser.clients[&ip("192.168.0.1")];
        assert_eq!(h.len(), 61);
        assert_eq!(h.front().map(|s| s.ts), Some(START + 140 * SEC));
        assert_eq!(sim.diagnoser.host.len(), 61);
    }
}
