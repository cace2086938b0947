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
}

impl Diagnoser {
    pub fn new(cfg: Thresholds) -> Self {
        Diagnoser {
            cfg,
            clients: HashMap::new(),
            host: VecDeque::new(),
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
            let failures = c.rejected + c.refused + c.reset;
            // Addresses with nothing open and no failures cannot be a leak or storm:
            // no history for them, so a fan-out of 100k addresses stays cheap.
            if c.open == 0 && failures == 0 && !self.clients.contains_key(&c.addr) {
                continue;
            }
            let h = self.clients.entry(c.addr).or_default();
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
        if self.host.back().is_none_or(|s| now >= s.ts + min_step) {
            self.host.push_back(HostSample {
                ts: now,
                rejected: t.rejected,
                fd_failures: fd,
                accept_failures: t.accept_errors.total(),
            });
        }
        while self.host.front().is_some_and(|s| s.ts < keep_from) && self.host.len() > 1 {
            self.host.pop_front();
        }
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
            self.host.back(),
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
        let failures = c.rejected + c.refused + c.reset;
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
            && trend != Trend::Growing
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
        if growth < self.cfg.leak_min_growth || c.open <= third.open || span == 0 {
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
        // Steady holders: open now equals open half a window ago (±10 %).
        let half = self.window_ns() / 2;
        let mut steady: Vec<u64> = r
            .clients
            .iter()
            .filter(|c| !c.internal && c.open >= 2)
            .filter(|c| {
                self.client_sample_at(c.addr, now, half).is_some_and(|s| {
                    now.saturating_sub(s.ts) >= half / 2 && s.open.abs_diff(c.open) * 10 <= c.open
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
