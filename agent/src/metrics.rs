//! Prometheus: the report in the text exposition format (version 0.0.4), and a
//! tiny HTTP server that serves the latest one at `/metrics`.
//!
//! Every family is prefixed `connwatch_`; counters end in `_total`; durations are
//! in seconds. A figure the report does not know (Redis unreachable, a /proc file
//! unreadable) is not emitted at all, never as 0. Label sets that alerts select on
//! are stable: every rejection reason, every Redis status, every verdict kind and
//! severity is emitted, with 0 when it does not apply, so an alert never depends on
//! a series appearing.
//!
//! Per-address series are capped: the first `top` client rows, in the report's
//! order (worst first), each with its own `addr` label, and one `addr="other"`
//! row that sums the rest, always present. Cardinality is therefore bounded by
//! `top + 1` whatever the number of clients. A caveat of the cap: when an address
//! moves between the top rows and `other`, the `other` counters can go down, which
//! Prometheus reads as a counter reset; per-address counters only go down when an
//! address is forgotten (see `evicted_clients`) and comes back.
//!
//! The server is deliberately minimal: one request per connection (`Connection:
//! close`), request head at most 8 KiB read within 5 s, at most 16 connections at
//! once, `GET`/`HEAD /metrics` only. It holds no state but the latest text, which
//! the live loop replaces every interval with [`MetricsServer::publish`]; until the
//! first report it answers 503.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::capacity::CapacitySource;
use crate::diagnose::{ClientVerdict, Severity, VerdictKind};
use crate::redis::{ConfigStatus, RedisStatus};
use crate::report::{ClientReport, Report};

/// The media type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `addr` label of the aggregate of the addresses beyond the top N.
pub const OTHER: &str = "other";

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MetricType {
    Counter,
    Gauge,
}

impl MetricType {
    fn name(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
        }
    }
}

/// A sample value: integers print exactly, floats in Prometheus's spelling.
#[derive(Clone, Copy, Debug)]
enum Num {
    U(u64),
    I(i64),
    F(f64),
}

impl From<u64> for Num {
    fn from(v: u64) -> Self {
        Num::U(v)
    }
}

impl From<u32> for Num {
    fn from(v: u32) -> Self {
        Num::U(u64::from(v))
    }
}

impl From<i64> for Num {
    fn from(v: i64) -> Self {
        Num::I(v)
    }
}

impl From<f64> for Num {
    fn from(v: f64) -> Self {
        Num::F(v)
    }
}

impl From<bool> for Num {
    fn from(v: bool) -> Self {
        Num::U(u64::from(v))
    }
}

impl From<usize> for Num {
    fn from(v: usize) -> Self {
        Num::U(v as u64)
    }
}

fn write_num(out: &mut String, n: Num) {
    // Writing to a String cannot fail.
    let _ = match n {
        Num::U(v) => write!(out, "{v}"),
        Num::I(v) => write!(out, "{v}"),
        Num::F(v) if v.is_nan() => write!(out, "NaN"),
        Num::F(v) if v == f64::INFINITY => write!(out, "+Inf"),
        Num::F(v) if v == f64::NEG_INFINITY => write!(out, "-Inf"),
        // Rust prints f64 without an exponent and with the shortest digits that
        // read back to the same value: "0.5", "4.21", "0.000001".
        Num::F(v) => write!(out, "{v}"),
    };
}

/// A duration in seconds at microsecond resolution, the precision reports promise
/// (and the same figure as the JSON report's `_s` keys).
fn seconds(d: Duration) -> f64 {
    d.as_micros() as f64 / 1e6
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape_label(out: &mut String, value: &str) {
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Escapes HELP text: backslash and line feed.
fn escape_help(out: &mut String, text: &str) {
    for ch in text.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The text being built.
struct Exposition {
    out: String,
}

impl Exposition {
    /// A family whose HELP and TYPE lines are written with its first sample, so
    /// a family with nothing known is absent altogether.
    fn family(&mut self, name: &'static str, kind: MetricType, help: &'static str) -> Family<'_> {
        Family {
            out: &mut self.out,
            name,
            kind,
            help,
            started: false,
        }
    }

    /// A family with one unlabelled sample, or nothing when the value is unknown.
    fn single(
        &mut self,
        name: &'static str,
        kind: MetricType,
        help: &'static str,
        value: Option<impl Into<Num>>,
    ) {
        if let Some(v) = value {
            self.family(name, kind, help).sample(&[], v);
        }
    }

    fn gauge(&mut self, name: &'static str, help: &'static str, value: Option<impl Into<Num>>) {
        self.single(name, MetricType::Gauge, help, value);
    }

    fn counter(&mut self, name: &'static str, help: &'static str, value: Option<impl Into<Num>>) {
        self.single(name, MetricType::Counter, help, value);
    }
}

struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
    kind: MetricType,
    help: &'static str,
    started: bool,
}

impl Family<'_> {
    fn sample(&mut self, labels: &[(&str, &str)], value: impl Into<Num>) {
        let out = &mut *self.out;
        if !self.started {
            self.started = true;
            out.push_str("# HELP ");
            out.push_str(self.name);
            out.push(' ');
            escape_help(out, self.help);
            out.push_str("\n# TYPE ");
            out.push_str(self.name);
            out.push(' ');
            out.push_str(self.kind.name());
            out.push('\n');
        }
        out.push_str(self.name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(key);
                out.push_str("=\"");
                escape_label(out, value);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        write_num(out, value.into());
        out.push('\n');
    }
}

const VERDICT_KINDS: [VerdictKind; 10] = [
    VerdictKind::Leak,
    VerdictKind::RetryStorm,
    VerdictKind::PoolOversize,
    VerdictKind::MaxclientsTooLow,
    VerdictKind::FdLimit,
    VerdictKind::InternalHeadroom,
    VerdictKind::BlockedClients,
    VerdictKind::InstanceFanout,
    VerdictKind::CapacityWarning,
    VerdictKind::CapacityCritical,
];

/// The same names as the JSON report's (serde snake_case). The match is
/// exhaustive, so a new kind fails to compile here: add it to `VERDICT_KINDS` too.
fn kind_name(kind: VerdictKind) -> &'static str {
    match kind {
        VerdictKind::Leak => "leak",
        VerdictKind::RetryStorm => "retry_storm",
        VerdictKind::PoolOversize => "pool_oversize",
        VerdictKind::MaxclientsTooLow => "maxclients_too_low",
        VerdictKind::FdLimit => "fd_limit",
        VerdictKind::InternalHeadroom => "internal_headroom",
        VerdictKind::BlockedClients => "blocked_clients",
        VerdictKind::InstanceFanout => "instance_fanout",
        VerdictKind::CapacityWarning => "capacity_warning",
        VerdictKind::CapacityCritical => "capacity_critical",
    }
}

const SEVERITIES: [Severity; 2] = [Severity::Warning, Severity::Critical];

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

const CLIENT_VERDICTS: [ClientVerdict; 5] = [
    ClientVerdict::Healthy,
    ClientVerdict::Leak,
    ClientVerdict::RetryStorm,
    ClientVerdict::BackingOff,
    ClientVerdict::PoolHeavy,
];

fn client_verdict_name(v: ClientVerdict) -> &'static str {
    match v {
        ClientVerdict::Healthy => "healthy",
        ClientVerdict::Leak => "leak",
        ClientVerdict::RetryStorm => "retry_storm",
        ClientVerdict::BackingOff => "backing_off",
        ClientVerdict::PoolHeavy => "pool_heavy",
    }
}

fn redis_status_name(s: RedisStatus) -> &'static str {
    match s {
        RedisStatus::Ok => "ok",
        RedisStatus::Connecting => "connecting",
        RedisStatus::Unreachable => "unreachable",
        RedisStatus::AuthFailed => "auth_failed",
        RedisStatus::NoAuth => "noauth",
        RedisStatus::Rejected => "rejected",
        RedisStatus::Disabled => "disabled",
        RedisStatus::Error => "error",
    }
}

const CONFIG_STATUSES: [ConfigStatus; 3] = [
    ConfigStatus::Ok,
    ConfigStatus::Unavailable,
    ConfigStatus::Unknown,
];

fn config_status_name(s: ConfigStatus) -> &'static str {
    match s {
        ConfigStatus::Ok => "ok",
        ConfigStatus::Unavailable => "unavailable",
        ConfigStatus::Unknown => "unknown",
    }
}

fn capacity_source_name(s: CapacitySource) -> &'static str {
    match s {
        CapacitySource::Info => "info",
        CapacitySource::Kernel => "kernel",
    }
}

/// Accept errnos always emitted (0 until seen), so `increase()` alerts on them work
/// from the first failure.
const ALWAYS_ERRNOS: [&str; 2] = ["EMFILE", "ENFILE"];

/// Renders `report` in the Prometheus text exposition format 0.0.4. Per-address
/// series are limited to the first `top` client rows plus one `addr="other"`
/// aggregate of the rest.
pub fn render(report: &Report, top: usize) -> String {
    let mut x = Exposition {
        out: String::with_capacity(8 * 1024 + report.clients.len().min(top) * 1024),
    };
    agent_families(&mut x, report);
    connection_families(&mut x, report);
    capacity_families(&mut x, report);
    limit_families(&mut x, report);
    redis_families(&mut x, report);
    verdict_families(&mut x, report);
    client_families(&mut x, report, top);
    x.out
}

fn agent_families(x: &mut Exposition, r: &Report) {
    let ts =
        r.ts.duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as f64 / 1e3);
    x.gauge(
        "connwatch_report_timestamp_seconds",
        "Wall-clock time of the report these figures come from (Unix seconds); \
         a value that stops moving means the agent is stuck.",
        ts,
    );
    x.gauge(
        "connwatch_uptime_seconds",
        "Seconds since the agent started.",
        Some(seconds(r.uptime)),
    );
}

fn connection_families(x: &mut Exposition, r: &Report) {
    let t = &r.totals;
    x.gauge(
        "connwatch_open_connections",
        "Connections open now on the watched ports, as the kernel sees them \
         (including those waiting in the accept queue).",
        Some(t.open),
    );
    x.counter(
        "connwatch_connections_opened_total",
        "Connections that reached ESTABLISHED on the watched ports.",
        Some(t.opened),
    );
    x.counter(
        "connwatch_connections_closed_total",
        "Connections that began to close, including ones that predate the agent.",
        Some(t.closed),
    );
    x.counter(
        "connwatch_connections_closed_by_server_total",
        "Connections the server (Redis) closed first (ESTABLISHED to FIN_WAIT1).",
        Some(t.closed_by_server),
    );
    x.counter(
        "connwatch_connections_closed_by_client_total",
        "Connections the client closed first (ESTABLISHED to CLOSE_WAIT).",
        Some(t.closed_by_client),
    );
    x.counter(
        "connwatch_connections_reset_total",
        "Connections reset while established (an RST from either side).",
        Some(t.reset),
    );
    let by = &t.rejected_by_reason;
    let mut f = x.family(
        "connwatch_connections_rejected_total",
        MetricType::Counter,
        "Connections Redis accepted and closed at once without reading anything, \
         by reason (maxclients, protected_mode, unknown).",
    );
    f.sample(&[("reason", "maxclients")], by.maxclients);
    f.sample(&[("reason", "protected_mode")], by.protected_mode);
    f.sample(&[("reason", "unknown")], by.unknown);
    x.counter(
        "connwatch_connections_refused_total",
        "Connection attempts the kernel answered with a RST because nothing listened \
         on the watched port.",
        Some(t.refused),
    );
    let mut f = x.family(
        "connwatch_accept_errors_total",
        MetricType::Counter,
        "Failed accept() calls of the processes owning the watched listeners, by \
         errno (EAGAIN and EINTR left out). EMFILE/ENFILE: out of file descriptors.",
    );
    for name in ALWAYS_ERRNOS {
        let n = t
            .accept_errors
            .iter()
            .find(|(e, _)| *e == name)
            .map_or(0, |(_, n)| n);
        f.sample(&[("errno", name)], n);
    }
    for (name, n) in t.accept_errors.iter() {
        if !ALWAYS_ERRNOS.contains(&name) {
            f.sample(&[("errno", name)], n);
        }
    }
    x.gauge(
        "connwatch_clients",
        "Distinct client addresses known now.",
        Some(t.clients),
    );
    x.counter(
        "connwatch_lost_events_total",
        "Kernel records lost because the ring buffer was full; when it grows the \
         other figures undercount.",
        Some(t.lost_events),
    );
    x.counter(
        "connwatch_vanished_connections_total",
        "Connections whose close record was lost, found gone by the interval's \
         sock_diag scan and counted as closed then.",
        Some(t.vanished),
    );
    x.counter(
        "connwatch_closes_without_bytes_total",
        "Closes whose byte counts the kernel could not read (they cannot be told to \
         be rejections).",
        Some(t.closes_without_bytes),
    );
    x.counter(
        "connwatch_evicted_clients_total",
        "Quiet client addresses forgotten to bound memory.",
        Some(t.evicted_clients),
    );
    x.counter(
        "connwatch_listen_overflows_total",
        "Growth of TcpExt ListenOverflows since the agent started: connections dropped \
         because an accept queue was full (host-wide).",
        t.listen_overflows,
    );
    x.counter(
        "connwatch_listen_drops_total",
        "Growth of TcpExt ListenDrops since the agent started (host-wide).",
        t.listen_drops,
    );
    x.counter(
        "connwatch_synack_retransmits_total",
        "SYN-ACKs the watched listeners had to send again.",
        Some(t.synack_retransmits),
    );
    x.gauge(
        "connwatch_accept_queue_depth",
        "Connections waiting now in the watched listeners' accept queues \
         (established, not yet accepted by Redis).",
        t.accept_queue.map(|q| q.depth),
    );
    x.gauge(
        "connwatch_accept_queue_backlog",
        "Size of the watched listeners' accept queues.",
        t.accept_queue.map(|q| q.backlog),
    );
}

fn capacity_families(x: &mut Exposition, r: &Report) {
    let c = &r.capacity;
    let mut f = x.family(
        "connwatch_capacity_source",
        MetricType::Gauge,
        "Where connwatch_capacity_used comes from: 1 for info (Redis INFO) or for \
         kernel (Redis could not be asked: the kernel's open connections).",
    );
    for source in [CapacitySource::Info, CapacitySource::Kernel] {
        f.sample(
            &[("source", capacity_source_name(source))],
            c.source == source,
        );
    }
    x.gauge(
        "connwatch_capacity_used",
        "Connections Redis compares with maxclients: connected_clients + \
         connected_slaves + cluster_connections.",
        Some(c.used),
    );
    x.gauge(
        "connwatch_capacity_limit",
        "The effective limit used is measured against (connwatch_effective_maxclients).",
        c.limit,
    );
    x.gauge("connwatch_capacity_ratio", "used / limit.", c.ratio);
    x.gauge(
        "connwatch_capacity_headroom",
        "limit - used; negative when the limit was lowered below what is in use.",
        c.headroom,
    );
}

fn limit_families(x: &mut Exposition, r: &Report) {
    let l = &r.limits;
    x.gauge(
        "connwatch_maxclients",
        "maxclients as configured (CONFIG GET, else INFO).",
        l.maxclients,
    );
    x.gauge(
        "connwatch_effective_maxclients",
        "Connections the server can really hold: min(maxclients, nofile soft limit - 32).",
        l.effective_maxclients,
    );
    // With the limits readable, a missing figure is an unlimited one.
    let unlimited = l.nofile_unlimited.then_some(f64::INFINITY);
    x.gauge(
        "connwatch_nofile_soft_limit",
        "RLIMIT_NOFILE soft limit of the process owning the watched listeners.",
        l.nofile_soft.map(|v| v as f64).or(unlimited),
    );
    x.gauge(
        "connwatch_nofile_hard_limit",
        "RLIMIT_NOFILE hard limit of the process owning the watched listeners.",
        l.nofile_hard.map(|v| v as f64).or(unlimited),
    );
    x.gauge(
        "connwatch_open_fds",
        "Open file descriptors of the process owning the watched listeners.",
        l.open_fds,
    );
    x.gauge(
        "connwatch_somaxconn",
        "net.core.somaxconn, the cap on every accept queue.",
        l.somaxconn,
    );
    x.gauge(
        "connwatch_file_handles_allocated",
        "System-wide file handles allocated (/proc/sys/fs/file-nr).",
        l.file_nr.map(|f| f.allocated),
    );
    x.gauge(
        "connwatch_file_handles_max",
        "System-wide maximum of file handles (/proc/sys/fs/file-nr).",
        l.file_nr.map(|f| f.max),
    );
}

fn redis_families(x: &mut Exposition, r: &Report) {
    let redis = &r.redis;
    x.gauge(
        "connwatch_redis_up",
        "1 when Redis answered INFO on the last poll, else 0.",
        Some(redis.status == RedisStatus::Ok),
    );
    let mut f = x.family(
        "connwatch_redis_status",
        MetricType::Gauge,
        "The agent's connection to Redis: 1 for the current status, 0 for the others.",
    );
    for status in RedisStatus::ALL {
        f.sample(
            &[("status", redis_status_name(status))],
            redis.status == status,
        );
    }
    let mut f = x.family(
        "connwatch_redis_config_status",
        MetricType::Gauge,
        "Whether CONFIG GET answers: 1 for the current status (ok, unavailable, \
         unknown), 0 for the others.",
    );
    for status in CONFIG_STATUSES {
        f.sample(
            &[("status", config_status_name(status))],
            redis.config == status,
        );
    }
    if redis.server.is_some() || redis.version.is_some() || redis.role.is_some() {
        x.family(
            "connwatch_redis_info",
            MetricType::Gauge,
            "Always 1; labels say what INFO server/replication reports.",
        )
        .sample(
            &[
                ("server", redis.server.as_deref().unwrap_or("")),
                ("version", redis.version.as_deref().unwrap_or("")),
                ("role", redis.role.as_deref().unwrap_or("")),
            ],
            1u64,
        );
    }
    let c = &r.capacity;
    x.gauge(
        "connwatch_redis_connected_clients",
        "INFO clients connected_clients.",
        c.connected_clients,
    );
    x.gauge(
        "connwatch_redis_connected_slaves",
        "INFO replication connected_slaves.",
        c.connected_slaves,
    );
    x.gauge(
        "connwatch_redis_cluster_connections",
        "INFO clients cluster_connections.",
        c.cluster_connections,
    );
    x.gauge(
        "connwatch_redis_blocked_clients",
        "INFO clients blocked_clients (a subset of connected_clients).",
        c.blocked_clients,
    );
    x.counter(
        "connwatch_redis_rejected_connections_total",
        "INFO stats rejected_connections (resets when Redis restarts).",
        redis.rejected_connections,
    );
    x.counter(
        "connwatch_redis_connections_received_total",
        "INFO stats total_connections_received (resets when Redis restarts).",
        redis.total_connections_received,
    );
    x.gauge(
        "connwatch_redis_timeout_seconds",
        "CONFIG GET timeout: idle connections are closed after this (0: never).",
        redis.timeout_s,
    );
}

fn verdict_families(x: &mut Exposition, r: &Report) {
    let mut f = x.family(
        "connwatch_verdict",
        MetricType::Gauge,
        "Host-level verdicts active now, by kind and severity: 1 (or the number of \
         addresses it is named for) while the rule holds, 0 otherwise. See \
         docs/DIAGNOSIS.md.",
    );
    for kind in VERDICT_KINDS {
        for severity in SEVERITIES {
            let n = r
                .verdicts
                .iter()
                .filter(|v| v.kind == kind && v.severity == severity)
                .count();
            f.sample(
                &[
                    ("kind", kind_name(kind)),
                    ("severity", severity_name(severity)),
                ],
                n,
            );
        }
    }
}

/// A per-client count and how to read it from a row.
struct ClientCount {
    name: &'static str,
    kind: MetricType,
    help: &'static str,
    get: fn(&ClientReport) -> u64,
}

const CLIENT_COUNTS: [ClientCount; 5] = [
    ClientCount {
        name: "connwatch_client_open",
        kind: MetricType::Gauge,
        help: "Connections open now from this client address (top addresses, worst \
               first; addr=\"other\" sums the rest).",
        get: |c| c.open,
    },
    ClientCount {
        name: "connwatch_client_opened_total",
        kind: MetricType::Counter,
        help: "Connections opened from this client address.",
        get: |c| c.opened,
    },
    ClientCount {
        name: "connwatch_client_closed_total",
        kind: MetricType::Counter,
        help: "Connections from this client address that began to close.",
        get: |c| c.closed,
    },
    ClientCount {
        name: "connwatch_client_rejected_total",
        kind: MetricType::Counter,
        help: "Connections from this client address Redis turned away at once \
               (maxclients, protected mode).",
        get: |c| c.rejected,
    },
    ClientCount {
        name: "connwatch_client_refused_total",
        kind: MetricType::Counter,
        help: "Attempts from this client address refused because nothing listened.",
        get: |c| c.refused,
    },
];

fn client_families(x: &mut Exposition, r: &Report, top: usize) {
    let (shown, rest) = r.clients.split_at(top.min(r.clients.len()));
    let addrs: Vec<String> = shown.iter().map(|c| c.addr.to_string()).collect();
    let rows = || shown.iter().zip(addrs.iter().map(String::as_str));

    for count in &CLIENT_COUNTS {
        let mut f = x.family(count.name, count.kind, count.help);
        for (c, addr) in rows() {
            f.sample(&[("addr", addr)], (count.get)(c));
        }
        let sum = rest
            .iter()
            .fold(0u64, |acc, c| acc.saturating_add((count.get)(c)));
        f.sample(&[("addr", OTHER)], sum);
    }

    let mut f = x.family(
        "connwatch_client_idle_max_seconds",
        MetricType::Gauge,
        "Longest idle time of the open connections from this client address (absent \
         when none is open).",
    );
    for (c, addr) in rows() {
        if let Some(idle) = c.idle {
            f.sample(&[("addr", addr)], seconds(idle.max));
        }
    }
    if let Some(max) = rest.iter().filter_map(|c| c.idle.map(|i| i.max)).max() {
        f.sample(&[("addr", OTHER)], seconds(max));
    }

    // Percentiles do not add up, so "other" has no lifetime series.
    let mut f = x.family(
        "connwatch_client_lifetime_p99_seconds",
        MetricType::Gauge,
        "99th percentile of the lifetimes of closed connections from this client \
         address (absent before one closed; none for addr=\"other\").",
    );
    for (c, addr) in rows() {
        if let Some(life) = c.lifetime {
            f.sample(&[("addr", addr)], seconds(life.p99));
        }
    }

    let mut f = x.family(
        "connwatch_client_verdict",
        MetricType::Gauge,
        "What this client address is doing: 1 for its verdict, 0 for the others; \
         for addr=\"other\", how many of the remaining addresses have each verdict.",
    );
    for (c, addr) in rows() {
        for v in CLIENT_VERDICTS {
            f.sample(
                &[("addr", addr), ("verdict", client_verdict_name(v))],
                c.verdict == v,
            );
        }
    }
    for v in CLIENT_VERDICTS {
        let n = rest.iter().filter(|c| c.verdict == v).count();
        f.sample(&[("addr", OTHER), ("verdict", client_verdict_name(v))], n);
    }
}

// ---------------------------------------------------------------------------
// The HTTP endpoint
// ---------------------------------------------------------------------------

/// Longest request head (request line and headers) read.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to take the response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 16;
/// How long, and how much, to read from a client after the response (see [`linger`]).
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;
/// Pause after a failed accept() (EMFILE…), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The endpoint's socket, bound but not served yet. Binding needs no runtime, so
/// a busy or invalid address is reported before anything else starts; serving
/// needs one.
#[derive(Debug)]
pub struct MetricsListener {
    listener: std::net::TcpListener,
    local_addr: SocketAddr,
}

impl MetricsListener {
    pub fn bind(addr: SocketAddr) -> anyhow::Result<MetricsListener> {
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("binding the metrics endpoint to {addr}"))?;
        listener
            .set_nonblocking(true)
            .context("making the metrics endpoint non-blocking")?;
        let local_addr = listener
            .local_addr()
            .context("reading the metrics endpoint's address")?;
        Ok(MetricsListener {
            listener,
            local_addr,
        })
    }

    /// The address bound (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Spawns the server task. Must be called from within a tokio runtime (any
    /// flavour, e.g. inside `block_on`); the task runs whenever the runtime's
    /// thread awaits.
    pub fn serve(self) -> anyhow::Result<(MetricsServer, JoinHandle<()>)> {
        self.serve_with(READ_TIMEOUT)
    }

    fn serve_with(self, read_timeout: Duration) -> anyhow::Result<(MetricsServer, JoinHandle<()>)> {
        let listener = TcpListener::from_std(self.listener)
            .context("registering the metrics endpoint with the event loop")?;
        let (latest, rx) = watch::channel(None);
        let task = tokio::spawn(serve(listener, rx, read_timeout));
        Ok((
            MetricsServer {
                latest,
                local_addr: self.local_addr,
            },
            task,
        ))
    }
}

/// The `/metrics` endpoint: holds the latest rendered text. Dropping it stops the
/// server task.
#[derive(Debug)]
pub struct MetricsServer {
    latest: watch::Sender<Option<Arc<str>>>,
    local_addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `addr` and spawns the server task on the current tokio runtime.
    /// Until the first [`publish`](Self::publish), `/metrics` answers 503.
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<(MetricsServer, JoinHandle<()>)> {
        MetricsListener::bind(addr)?.serve()
    }

    #[cfg(test)]
    async fn bind_with(
        addr: SocketAddr,
        read_timeout: Duration,
    ) -> anyhow::Result<(MetricsServer, JoinHandle<()>)> {
        MetricsListener::bind(addr)?.serve_with(read_timeout)
    }

    /// The address the server listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Replaces the text served at `/metrics`.
    pub fn publish(&self, text: String) {
        self.latest.send_replace(Some(Arc::from(text)));
    }

    /// Renders `report` (see [`render`]) and serves it from now on.
    pub fn publish_report(&self, report: &Report, top: usize) {
        self.publish(render(report, top));
    }
}

async fn serve(
    listener: TcpListener,
    mut latest: watch::Receiver<Option<Arc<str>>>,
    read_timeout: Duration,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = sender_dropped(&mut latest) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    log::debug!("metrics: {MAX_CONNECTIONS} connections busy, closing {peer}");
                    continue;
                };
                let latest = latest.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, latest, read_timeout).await {
                        log::debug!("metrics: {peer}: {e}");
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                log::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Resolves once the [`MetricsServer`] is dropped.
async fn sender_dropped(rx: &mut watch::Receiver<Option<Arc<str>>>) {
    while rx.changed().await.is_ok() {}
}

/// What the client sent before the blank line.
enum Head {
    Complete(Vec<u8>),
    TooLarge,
    /// The connection ended before a full head: nothing (a probe) or a fragment.
    Ended {
        empty: bool,
    },
}

async fn read_head(stream: &mut TcpStream) -> io::Result<Head> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Head::Ended {
                empty: head.is_empty(),
            });
        }
        // Look for the end of the head only where it can newly appear.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if let Some(end) = head_end(head.get(from..).unwrap_or_default()) {
            head.truncate(from + end);
            return Ok(Head::Complete(head));
        }
        if head.len() > MAX_REQUEST_HEAD {
            return Ok(Head::TooLarge);
        }
    }
}

/// The length up to and including the blank line ending a request head (CRLF, or
/// bare LF from lenient clients).
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A response: status line, extra headers, body.
struct Response {
    status: &'static str,
    content_type: &'static str,
    extra: &'static str,
    body: Arc<str>,
    /// HEAD: the headers (with the body's length) but no body.
    head_only: bool,
}

impl Response {
    fn text(status: &'static str, body: &'static str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            extra: "",
            body: Arc::from(body),
            head_only: false,
        }
    }
}

/// Decides the response to a request head.
fn route(head: &[u8], latest: Option<Arc<str>>) -> Response {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = head.get(..line_end).unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return Response::text("400 Bad Request", "bad request\n");
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Response::text("400 Bad Request", "bad request\n");
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Response::text("400 Bad Request", "bad request\n");
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path != "/metrics" {
        return Response::text("404 Not Found", "not found: try /metrics\n");
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            let mut r = Response::text("405 Method Not Allowed", "method not allowed\n");
            r.extra = "Allow: GET, HEAD\r\n";
            return r;
        }
    };
    match latest {
        Some(body) => Response {
            status: "200 OK",
            content_type: CONTENT_TYPE,
            extra: "",
            body,
            head_only,
        },
        None => {
            let mut r = Response::text("503 Service Unavailable", "no report yet\n");
            r.extra = "Retry-After: 1\r\n";
            r.head_only = head_only;
            r
        }
    }
}

async fn handle(
    mut stream: TcpStream,
    latest: watch::Receiver<Option<Arc<str>>>,
    read_timeout: Duration,
) -> io::Result<()> {
    let response = match tokio::time::timeout(read_timeout, read_head(&mut stream)).await {
        Err(_elapsed) => Response::text("408 Request Timeout", "request timeout\n"),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(Head::Ended { empty: true })) => return Ok(()),
        Ok(Ok(Head::Ended { empty: false })) => Response::text("400 Bad Request", "bad request\n"),
        Ok(Ok(Head::TooLarge)) => Response::text(
            "431 Request Header Fields Too Large",
            "request head too large\n",
        ),
        // Read the latest text only now, so a slow client still gets the newest.
        Ok(Ok(Head::Complete(head))) => route(&head, latest.borrow().clone()),
    };
    let header = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len(),
        response.extra,
    );
    let write = async {
        stream.write_all(header.as_bytes()).await?;
        if !response.head_only {
            stream.write_all(response.body.as_bytes()).await?;
        }
        stream.shutdown().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(result) => result?,
        Err(_elapsed) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client took too long to read the response",
            ));
        }
    }
    linger(&mut stream).await;
    Ok(())
}

/// Reads what the client still sends (a body we did not want, the rest of an
/// oversized head) until it closes, for a short while: closing a socket with
/// unread data sends a RST, which can destroy the response before the client
/// reads it.
async fn linger(stream: &mut TcpStream) {
    let mut sink = [0u8; 1024];
    let mut left = LINGER_BYTES;
    let drain = async {
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::io::{Read as _, Write as _};
    use std::net::IpAddr;

    use serde_json::Map;

    use super::*;
    use crate::capacity::{Capacity, FileNr, Limits, RedisReport};
    use crate::diagnose::Verdict;
    use crate::reject::RejectCounts;
    use crate::report::tests::client;
    use crate::report::{AcceptErrors, AcceptQueue, Idle, Kind, Lifetime, Totals, worst_first};

    fn verdict(kind: VerdictKind, severity: Severity, addr: Option<&str>) -> Verdict {
        Verdict {
            kind,
            severity,
            addr: addr.map(|a| a.parse().unwrap()),
            summary: String::new(),
            evidence: Map::new(),
            action: String::new(),
            stale_connections: Vec::new(),
        }
    }

    /// A report with every section filled in and four clients, worst first.
    fn full_report() -> Report {
        let mut leaker = client("10.0.0.5", 30, 0, 30);
        leaker.verdict = ClientVerdict::Leak;
        leaker.idle = Some(Idle {
            p50: Duration::from_secs(40),
            max: Duration::from_micros(95_250_000),
        });
        let mut stormer = client("2001:db8::7", 1, 200, 400);
        stormer.verdict = ClientVerdict::RetryStorm;
        stormer.rejected = 150;
        stormer.refused = 50;
        stormer.lifetime = Some(Lifetime {
            p50: Duration::from_micros(410),
            p90: Duration::from_micros(655),
            p99: Duration::from_micros(1_204),
            max: Duration::from_micros(1_216),
        });
        stormer.idle = Some(Idle {
            p50: Duration::from_millis(2),
            max: Duration::from_millis(3),
        });
        let mut small = client("10.0.0.9", 1, 3, 4);
        small.rejected = 2;
        small.refused = 1;
        small.idle = Some(Idle {
            p50: Duration::from_secs(1),
            max: Duration::from_micros(7_500_000),
        });
        let mut smaller = client("10.0.0.10", 0, 5, 5);
        smaller.verdict = ClientVerdict::BackingOff;
        smaller.rejected = 5;
        let mut clients = vec![small, leaker, smaller, stormer];
        clients.sort_by(worst_first);

        let redis = RedisReport {
            status: RedisStatus::Ok,
            config: ConfigStatus::Ok,
            server: Some("redis".into()),
            version: Some("7.0.15".into()),
            role: Some("master".into()),
            rejected_connections: Some(207),
            rejected_connections_delta: Some(157),
            total_connections_received: Some(1_000),
            total_connections_received_delta: Some(439),
            timeout_s: Some(0),
            cluster_enabled: Some(false),
            ..RedisReport::default()
        };
        Report {
            kind: Kind::Report,
            ts: UNIX_EPOCH + Duration::from_millis(1_795_986_000_123),
            uptime: Duration::from_micros(12_500_000),
            ports: vec![6379],
            totals: Totals {
                open: 32,
                opened: 439,
                closed: 408,
                closed_by_server: 150,
                closed_by_client: 200,
                reset: 58,
                clients: 4,
                lost_events: 3,
                vanished: 0,
                closes_without_bytes: 0,
                accept_errors: AcceptErrors::from_kernel(&[
                    (libc::EMFILE, 812),
                    (libc::ECONNABORTED, 2),
                ]),
                evicted_clients: 1,
                rejected: 157,
                rejected_by_reason: RejectCounts {
                    maxclients: 150,
                    protected_mode: 0,
                    unknown: 7,
                },
                refused: 51,
                accept_errors_per_s: 20_000.0,
                listen_overflows: Some(4),
                listen_drops: Some(4),
                synack_retransmits: 9,
                accept_queue: Some(AcceptQueue {
                    depth: 5,
                    backlog: 511,
                }),
            },
            redis,
            limits: Limits {
                maxclients: Some(10_000),
                effective_maxclients: Some(32),
                effective_reason: Some("fd limit".into()),
                nofile_soft: Some(64),
                nofile_hard: Some(524_288),
                nofile_unlimited: false,
                open_fds: Some(63),
                somaxconn: Some(4096),
                file_nr: Some(FileNr {
                    allocated: 2_048,
                    max: 9_223_372_036_854_775_807,
                }),
                pid: Some(42),
            },
            capacity: Capacity {
                source: CapacitySource::Info,
                connected_clients: Some(31),
                connected_slaves: Some(1),
                cluster_connections: Some(0),
                blocked_clients: Some(0),
                used: 32,
                limit: Some(32),
                ratio: Some(1.0),
                headroom: Some(0),
            },
            verdicts: vec![
                verdict(VerdictKind::FdLimit, Severity::Critical, None),
                verdict(VerdictKind::Leak, Severity::Warning, Some("10.0.0.5")),
            ],
            clients,
        }
    }

    /// A report of a host that knows nothing: no Redis, /proc unreadable.
    fn bare_report() -> Report {
        Report {
            kind: Kind::Report,
            ts: UNIX_EPOCH + Duration::from_secs(1),
            uptime: Duration::ZERO,
            ports: vec![6379],
            totals: Totals::default(),
            redis: RedisReport::default(),
            limits: Limits::default(),
            capacity: Capacity {
                source: CapacitySource::Kernel,
                connected_clients: None,
                connected_slaves: None,
                cluster_connections: None,
                blocked_clients: None,
                used: 0,
                limit: None,
                ratio: None,
                headroom: None,
            },
            verdicts: Vec::new(),
            clients: Vec::new(),
        }
    }

    #[track_caller]
    fn has(text: &str, line: &str) {
        assert!(
            text.lines().any(|l| l == line),
            "missing line {line:?} in:\n{text}"
        );
    }

    #[track_caller]
    fn lacks(text: &str, prefix: &str) {
        assert!(
            !text.lines().any(|l| l.starts_with(prefix)),
            "unexpected {prefix:?} in:\n{text}"
        );
    }

    /// The structure the format requires: HELP then TYPE then the samples of each
    /// family, families contiguous and never repeated, names and label syntax
    /// valid, every line ending in a newline.
    #[track_caller]
    fn check_format(text: &str) {
        assert!(text.ends_with('\n'));
        let mut seen = HashSet::new();
        let mut current: Option<&str> = None;
        let mut typed = false;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(seen.insert(name), "family {name} repeated");
                assert!(name.starts_with("connwatch_"), "{name}");
                assert!(
                    name.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                    "{name}"
                );
                current = Some(name);
                typed = false;
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(Some(name), current, "TYPE right after HELP");
                assert!(kind == "counter" || kind == "gauge");
                assert_eq!(
                    name.ends_with("_total"),
                    kind == "counter",
                    "{name}: _total on counters only"
                );
                typed = true;
            } else {
                let name_end = line.find(['{', ' ']).unwrap();
                assert_eq!(
                    Some(&line[..name_end]),
                    current,
                    "sample outside its family"
                );
                assert!(typed);
                let value = line.rsplit(' ').next().unwrap();
                assert!(
                    value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
                    "value {value:?}"
                );
            }
        }
    }

    #[test]
    fn host_series_have_exact_values() {
        let text = render(&full_report(), 2);
        check_format(&text);
        has(&text, "# TYPE connwatch_open_connections gauge");
        has(&text, "connwatch_open_connections 32");
        has(&text, "# TYPE connwatch_connections_opened_total counter");
        has(&text, "connwatch_connections_opened_total 439");
        has(&text, "connwatch_connections_closed_total 408");
        has(&text, "connwatch_connections_closed_by_server_total 150");
        has(&text, "connwatch_connections_closed_by_client_total 200");
        has(&text, "connwatch_connections_reset_total 58");
        has(
            &text,
            r#"connwatch_connections_rejected_total{reason="maxclients"} 150"#,
        );
        has(
            &text,
            r#"connwatch_connections_rejected_total{reason="protected_mode"} 0"#,
        );
        has(
            &text,
            r#"connwatch_connections_rejected_total{reason="unknown"} 7"#,
        );
        has(&text, "connwatch_connections_refused_total 51");
        has(
            &text,
            r#"connwatch_accept_errors_total{errno="EMFILE"} 812"#,
        );
        has(&text, r#"connwatch_accept_errors_total{errno="ENFILE"} 0"#);
        has(
            &text,
            r#"connwatch_accept_errors_total{errno="ECONNABORTED"} 2"#,
        );
        has(&text, "connwatch_lost_events_total 3");
        has(&text, "connwatch_listen_overflows_total 4");
        has(&text, "connwatch_listen_drops_total 4");
        has(&text, "connwatch_synack_retransmits_total 9");
        has(&text, "connwatch_accept_queue_depth 5");
        has(&text, "connwatch_accept_queue_backlog 511");
        has(&text, "connwatch_report_timestamp_seconds 1795986000.123");
        has(&text, "connwatch_uptime_seconds 12.5");
        // Capacity and limits.
        has(&text, r#"connwatch_capacity_source{source="info"} 1"#);
        has(&text, r#"connwatch_capacity_source{source="kernel"} 0"#);
        has(&text, "connwatch_capacity_used 32");
        has(&text, "connwatch_capacity_limit 32");
        has(&text, "connwatch_capacity_ratio 1");
        has(&text, "connwatch_capacity_headroom 0");
        has(&text, "connwatch_maxclients 10000");
        has(&text, "connwatch_effective_maxclients 32");
        has(&text, "connwatch_nofile_soft_limit 64");
        has(&text, "connwatch_nofile_hard_limit 524288");
        has(&text, "connwatch_open_fds 63");
        has(&text, "connwatch_somaxconn 4096");
        has(&text, "connwatch_file_handles_max 9223372036854775807");
        // Redis.
        has(&text, "connwatch_redis_up 1");
        has(&text, r#"connwatch_redis_status{status="ok"} 1"#);
        has(&text, r#"connwatch_redis_status{status="unreachable"} 0"#);
        has(&text, r#"connwatch_redis_config_status{status="ok"} 1"#);
        has(
            &text,
            r#"connwatch_redis_info{server="redis",version="7.0.15",role="master"} 1"#,
        );
        has(&text, "connwatch_redis_connected_clients 31");
        has(&text, "connwatch_redis_rejected_connections_total 207");
        has(&text, "connwatch_redis_connections_received_total 1000");
        has(&text, "connwatch_redis_timeout_seconds 0");
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("connwatch_redis_status{"))
                .count(),
            8
        );
    }

    #[test]
    fn verdicts_are_a_gauge_per_kind_and_severity() {
        let text = render(&full_report(), 2);
        has(
            &text,
            r#"connwatch_verdict{kind="fd_limit",severity="critical"} 1"#,
        );
        has(
            &text,
            r#"connwatch_verdict{kind="fd_limit",severity="warning"} 0"#,
        );
        has(
            &text,
            r#"connwatch_verdict{kind="leak",severity="warning"} 1"#,
        );
        has(
            &text,
            r#"connwatch_verdict{kind="retry_storm",severity="warning"} 0"#,
        );
        has(
            &text,
            r#"connwatch_verdict{kind="capacity_critical",severity="critical"} 0"#,
        );
        let series = text
            .lines()
            .filter(|l| l.starts_with("connwatch_verdict{"))
            .count();
        assert_eq!(series, VERDICT_KINDS.len() * SEVERITIES.len());
        // Nothing active: every series is there, at 0.
        let bare = render(&bare_report(), 2);
        assert_eq!(
            bare.lines()
                .filter(|l| l.starts_with("connwatch_verdict{") && l.ends_with(" 0"))
                .count(),
            series
        );
    }

    #[test]
    fn label_names_match_the_json_report() {
        for kind in VERDICT_KINDS {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind_name(kind));
        }
        let distinct: HashSet<_> = VERDICT_KINDS.iter().map(|k| kind_name(*k)).collect();
        assert_eq!(distinct.len(), VERDICT_KINDS.len());
        for s in SEVERITIES {
            assert_eq!(serde_json::to_value(s).unwrap(), severity_name(s));
        }
        for v in CLIENT_VERDICTS {
            assert_eq!(serde_json::to_value(v).unwrap(), client_verdict_name(v));
        }
        for s in RedisStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), redis_status_name(s));
        }
        for s in CONFIG_STATUSES {
            assert_eq!(serde_json::to_value(s).unwrap(), config_status_name(s));
        }
    }

    #[test]
    fn clients_are_capped_to_the_top_n_plus_other() {
        let report = full_report();
        let order: Vec<String> = report.clients.iter().map(|c| c.addr.to_string()).collect();
        assert_eq!(order, ["10.0.0.5", "2001:db8::7", "10.0.0.9", "10.0.0.10"]);
        let text = render(&report, 2);
        check_format(&text);
        // The two worst, by name.
        has(&text, r#"connwatch_client_open{addr="10.0.0.5"} 30"#);
        has(&text, r#"connwatch_client_open{addr="2001:db8::7"} 1"#);
        has(
            &text,
            r#"connwatch_client_opened_total{addr="2001:db8::7"} 400"#,
        );
        has(
            &text,
            r#"connwatch_client_closed_total{addr="2001:db8::7"} 200"#,
        );
        has(
            &text,
            r#"connwatch_client_rejected_total{addr="2001:db8::7"} 150"#,
        );
        has(
            &text,
            r#"connwatch_client_refused_total{addr="2001:db8::7"} 50"#,
        );
        has(
            &text,
            r#"connwatch_client_idle_max_seconds{addr="10.0.0.5"} 95.25"#,
        );
        has(
            &text,
            r#"connwatch_client_lifetime_p99_seconds{addr="2001:db8::7"} 0.001204"#,
        );
        has(
            &text,
            r#"connwatch_client_verdict{addr="10.0.0.5",verdict="leak"} 1"#,
        );
        has(
            &text,
            r#"connwatch_client_verdict{addr="10.0.0.5",verdict="healthy"} 0"#,
        );
        has(
            &text,
            r#"connwatch_client_verdict{addr="2001:db8::7",verdict="retry_storm"} 1"#,
        );
        // The other two, summed.
        lacks(&text, r#"connwatch_client_open{addr="10.0.0.9"}"#);
        lacks(&text, r#"connwatch_client_open{addr="10.0.0.10"}"#);
        has(&text, r#"connwatch_client_open{addr="other"} 1"#);
        has(&text, r#"connwatch_client_opened_total{addr="other"} 9"#);
        has(&text, r#"connwatch_client_closed_total{addr="other"} 8"#);
        has(&text, r#"connwatch_client_rejected_total{addr="other"} 7"#);
        has(&text, r#"connwatch_client_refused_total{addr="other"} 1"#);
        has(
            &text,
            r#"connwatch_client_idle_max_seconds{addr="other"} 7.5"#,
        );
        lacks(
            &text,
            r#"connwatch_client_lifetime_p99_seconds{addr="other"}"#,
        );
        has(
            &text,
            r#"connwatch_client_verdict{addr="other",verdict="healthy"} 1"#,
        );
        has(
            &text,
            r#"connwatch_client_verdict{addr="other",verdict="backing_off"} 1"#,
        );
        has(
            &text,
            r#"connwatch_client_verdict{addr="other",verdict="leak"} 0"#,
        );
        // Bounded: top + 1 addresses per family.
        let open = text
            .lines()
            .filter(|l| l.starts_with("connwatch_client_open{"))
            .count();
        assert_eq!(open, 3);
        let verdicts = text
            .lines()
            .filter(|l| l.starts_with("connwatch_client_verdict{"))
            .count();
        assert_eq!(verdicts, 3 * CLIENT_VERDICTS.len());
    }

    #[test]
    fn top_zero_and_top_beyond_the_clients() {
        let report = full_report();
        let none = render(&report, 0);
        check_format(&none);
        has(&none, r#"connwatch_client_open{addr="other"} 32"#);
        has(&none, r#"connwatch_client_opened_total{addr="other"} 439"#);
        has(
            &none,
            r#"connwatch_client_idle_max_seconds{addr="other"} 95.25"#,
        );
        let all = render(&report, 100);
        check_format(&all);
        has(&all, r#"connwatch_client_open{addr="10.0.0.10"} 0"#);
        has(&all, r#"connwatch_client_open{addr="other"} 0"#);
        lacks(&all, r#"connwatch_client_idle_max_seconds{addr="other"}"#);
        lacks(
            &all,
            r#"connwatch_client_idle_max_seconds{addr="10.0.0.10"}"#,
        );
    }

    #[test]
    fn unknown_values_are_not_emitted() {
        let text = render(&bare_report(), 20);
        check_format(&text);
        for absent in [
            "connwatch_listen_overflows_total",
            "connwatch_listen_drops_total",
            "connwatch_accept_queue_depth",
            "connwatch_accept_queue_backlog",
            "connwatch_capacity_limit",
            "connwatch_capacity_ratio",
            "connwatch_capacity_headroom",
            "connwatch_maxclients",
            "connwatch_effective_maxclients",
            "connwatch_nofile_soft_limit",
            "connwatch_nofile_hard_limit",
            "connwatch_open_fds",
            "connwatch_somaxconn",
            "connwatch_file_handles_",
            "connwatch_redis_info",
            "connwatch_redis_connected_clients",
            "connwatch_redis_rejected_connections_total",
            "connwatch_redis_timeout_seconds",
            "connwatch_client_idle_max_seconds",
            "connwatch_client_lifetime_p99_seconds",
            // No HELP/TYPE for a family without samples either.
            "# HELP connwatch_client_idle_max_seconds",
            "# TYPE connwatch_accept_queue_depth",
        ] {
            lacks(&text, absent);
        }
        has(&text, "connwatch_capacity_used 0");
        has(&text, "connwatch_redis_up 0");
        has(&text, r#"connwatch_redis_status{status="disabled"} 1"#);
        has(
            &text,
            r#"connwatch_redis_config_status{status="unknown"} 1"#,
        );
        has(&text, r#"connwatch_accept_errors_total{errno="EMFILE"} 0"#);
        has(&text, r#"connwatch_client_open{addr="other"} 0"#);
    }

    #[test]
    fn unlimited_fd_limits_are_infinite() {
        let mut report = bare_report();
        report.limits.nofile_unlimited = true;
        report.limits.nofile_hard = Some(4096);
        let text = render(&report, 1);
        check_format(&text);
        has(&text, "connwatch_nofile_soft_limit +Inf");
        has(&text, "connwatch_nofile_hard_limit 4096");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut report = bare_report();
        report.redis.server = Some("va\"lk\\ey\nx".into());
        report.redis.version = Some("8.0".into());
        let text = render(&report, 1);
        check_format(&text);
        has(
            &text,
            r#"connwatch_redis_info{server="va\"lk\\ey\nx",version="8.0",role=""} 1"#,
        );
        let mut help = String::new();
        escape_help(&mut help, "a\\b\nc \"d\"");
        assert_eq!(help, r#"a\\b\nc "d""#);
    }

    #[test]
    fn numbers_in_prometheus_spelling() {
        let mut out = String::new();
        for n in [
            Num::U(u64::MAX),
            Num::I(-3),
            Num::F(0.5),
            Num::F(1e-6),
            Num::F(2.0),
            Num::F(f64::INFINITY),
            Num::F(f64::NEG_INFINITY),
            Num::F(f64::NAN),
        ] {
            write_num(&mut out, n);
            out.push(' ');
        }
        assert_eq!(out, "18446744073709551615 -3 0.5 0.000001 2 +Inf -Inf NaN ");
    }

    #[test]
    fn ipv6_clients_and_empty_reports_render() {
        let mut report = bare_report();
        report.clients = vec![client("::1", 2, 0, 2)];
        let addr: IpAddr = "::1".parse().unwrap();
        assert_eq!(report.clients[0].addr, addr);
        let text = render(&report, 5);
        check_format(&text);
        has(&text, r#"connwatch_client_open{addr="::1"} 2"#);
    }

    // --- HTTP ---

    /// Sends `request` raw and returns the whole response (until the server closes).
    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    async fn fetch(addr: SocketAddr, request: &'static [u8]) -> String {
        tokio::task::spawn_blocking(move || exchange(addr, request))
            .await
            .unwrap()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[test]
    fn serves_the_latest_text_at_metrics_and_404_elsewhere() {
        runtime().block_on(async {
            let (server, task) = MetricsServer::bind(loopback()).await.unwrap();
            let addr = server.local_addr();
            assert_ne!(addr.port(), 0);

            let early = fetch(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
            assert!(early.starts_with("HTTP/1.1 503 "), "{early}");
            assert!(early.ends_with("\r\n\r\nno report yet\n"), "{early}");

            server.publish_report(&full_report(), 2);
            let expected = render(&full_report(), 2);
            let ok = fetch(
                addr,
                b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n",
            )
            .await;
            let (head, body) = ok.split_once("\r\n\r\n").unwrap();
            let head: Vec<&str> = head.split("\r\n").collect();
            assert_eq!(head[0], "HTTP/1.1 200 OK");
            assert!(head.contains(&"Content-Type: text/plain; version=0.0.4; charset=utf-8"));
            assert!(head.contains(&format!("Content-Length: {}", expected.len()).as_str()));
            assert!(head.contains(&"Connection: close"));
            assert_eq!(body, expected);

            // Replaced by the next publish; a query string is ignored.
            server.publish("connwatch_up 1\n".to_owned());
            let next = fetch(addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").await;
            assert!(next.ends_with("\r\n\r\nconnwatch_up 1\n"), "{next}");

            let head_only = fetch(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
            assert!(head_only.starts_with("HTTP/1.1 200 OK\r\n"));
            assert!(head_only.contains("Content-Length: 15\r\n"));
            assert!(head_only.ends_with("\r\n\r\n"), "{head_only}");

            let nope = fetch(addr, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").await;
            assert!(nope.starts_with("HTTP/1.1 404 Not Found\r\n"), "{nope}");
            let root = fetch(addr, b"GET / HTTP/1.1\r\n\r\n").await;
            assert!(root.starts_with("HTTP/1.1 404 "), "{root}");
            let post = fetch(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
            assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
            assert!(post.contains("Allow: GET, HEAD\r\n"));
            let lenient = fetch(addr, b"GET /metrics HTTP/1.1\n\n").await;
            assert!(lenient.starts_with("HTTP/1.1 200 "), "{lenient}");

            // Dropping the server ends its task.
            drop(server);
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("the server task ends when the server is dropped")
                .unwrap();
        });
    }

    #[test]
    fn bad_requests_get_an_error_never_a_panic() {
        runtime().block_on(async {
            let (server, _task) = MetricsServer::bind(loopback()).await.unwrap();
            server.publish("x 1\n".to_owned());
            let addr = server.local_addr();
            for bad in [
                &b"garbage\r\n\r\n"[..],
                b"GET /metrics\r\n\r\n",
                b"GET metrics HTTP/1.1\r\n\r\n",
                b"GET /metrics SMTP/1.0\r\n\r\n",
                b"GET  /metrics HTTP/1.1\r\n\r\n",
                b"\xff\xfe /metrics HTTP/1.1\r\n\r\n",
                b"\r\n\r\n",
            ] {
                let response = fetch(addr, bad).await;
                assert!(
                    response.starts_with("HTTP/1.1 400 Bad Request\r\n"),
                    "{bad:?}: {response}"
                );
            }
            // A head without its blank line, then EOF.
            let cut = tokio::task::spawn_blocking(move || {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
                s.shutdown(std::net::Shutdown::Write).unwrap();
                let mut r = String::new();
                s.read_to_string(&mut r).unwrap();
                r
            })
            .await
            .unwrap();
            assert!(cut.starts_with("HTTP/1.1 400 "), "{cut}");
            // A head larger than the limit.
            let huge = tokio::task::spawn_blocking(move || {
                let mut request = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
                request.resize(request.len() + 3 * MAX_REQUEST_HEAD, b'a');
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                // The server may close before taking it all: only the reply matters.
                let _ = s.write_all(&request);
                let mut r = Vec::new();
                let _ = s.read_to_end(&mut r);
                String::from_utf8_lossy(&r).into_owned()
            })
            .await
            .unwrap();
            assert!(huge.starts_with("HTTP/1.1 431 "), "{huge}");
            // A probe that connects and leaves gets nothing, and the server goes on.
            drop(std::net::TcpStream::connect(addr).unwrap());
            let ok = fetch(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
            assert!(ok.ends_with("\r\n\r\nx 1\n"), "{ok}");
        });
    }

    #[test]
    fn a_silent_client_is_timed_out() {
        runtime().block_on(async {
            let (server, _task) = MetricsServer::bind_with(loopback(), Duration::from_millis(200))
                .await
                .unwrap();
            let addr = server.local_addr();
            let started = std::time::Instant::now();
            let response = fetch(addr, b"GET /metr").await;
            assert!(response.starts_with("HTTP/1.1 408 "), "{response}");
            assert!(started.elapsed() < Duration::from_secs(5));
        });
    }

    #[test]
    fn a_listener_bound_before_the_runtime_serves_inside_it() {
        let listener = MetricsListener::bind(loopback()).unwrap();
        let addr = listener.local_addr();
        runtime().block_on(async move {
            let (server, _task) = listener.serve().unwrap();
            assert_eq!(server.local_addr(), addr);
            server.publish("y 2\n".to_owned());
            let ok = fetch(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
            assert!(ok.ends_with("\r\n\r\ny 2\n"), "{ok}");
        });
    }

    #[test]
    fn binding_a_busy_address_is_an_error_naming_it() {
        runtime().block_on(async {
            let (server, _task) = MetricsServer::bind(loopback()).await.unwrap();
            let taken = server.local_addr();
            let err = MetricsServer::bind(taken).await.unwrap_err();
            assert!(format!("{err:#}").contains(&taken.to_string()), "{err:#}");
        });
    }
}
