//! The host-level families: the agent, connections, capacity, limits, Redis and
//! the verdicts.

use super::exposition::{Exposition, MetricType, seconds};
use crate::model::{CapacitySource, ConfigStatus, RedisStatus, Report, Severity, VerdictKind};
use std::time::UNIX_EPOCH;

/// Accept errnos always emitted (0 until seen), so `increase()` alerts on them work
/// from the first failure.
const ALWAYS_ERRNOS: [&str; 2] = ["EMFILE", "ENFILE"];

pub(super) fn agent_families(x: &mut Exposition, r: &Report) {
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

/// The OTLP exporter's counts (`watch --otlp`); absent when the run does not export.
pub(super) fn otlp_families(x: &mut Exposition, r: &Report) {
    let Some(o) = &r.otlp else {
        return;
    };
    x.counter(
        "connwatch_otlp_sent_total",
        "OTLP export requests (metrics each interval, logs for verdict changes) the \
         collector accepted.",
        Some(o.sent),
    );
    x.counter(
        "connwatch_otlp_dropped_total",
        "OTLP export requests given up: the oldest when the queue was full (collector \
         unreachable), or refused by the collector.",
        Some(o.dropped),
    );
    x.counter(
        "connwatch_otlp_retries_total",
        "OTLP export attempts that failed and were tried again after a backoff.",
        Some(o.retries),
    );
    x.gauge(
        "connwatch_otlp_queued",
        "OTLP export requests waiting to be sent.",
        Some(o.queued),
    );
    x.gauge(
        "connwatch_otlp_failing",
        "1 while OTLP export fails (since otlp.failing_since), else 0.",
        Some(o.failing_since.is_some()),
    );
}

pub(super) fn connection_families(x: &mut Exposition, r: &Report) {
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
    let mut f = x.family(
        "connwatch_server_closes_total",
        MetricType::Counter,
        "Server-side closes by cause: rejection, idle_timeout (Redis's timeout), \
         output_buffer (a client whose replies piled up), other (CLIENT KILL, QUIT).",
    );
    let s = &t.server_closes;
    for (reason, n) in [
        ("rejection", s.rejection),
        ("idle_timeout", s.idle_timeout),
        ("output_buffer", s.output_buffer),
        ("other", s.other),
    ] {
        f.sample(&[("reason", reason)], n);
    }
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
         by reason (maxclients, protected_mode, tls, unknown).",
    );
    f.sample(&[("reason", "maxclients")], by.maxclients);
    f.sample(&[("reason", "protected_mode")], by.protected_mode);
    f.sample(&[("reason", "tls")], by.tls);
    f.sample(&[("reason", "unknown")], by.unknown);
    x.counter(
        "connwatch_connections_refused_total",
        "Connection attempts the kernel answered with a RST because nothing listened \
         on the watched port (absent where the kernel does not show them).",
        t.refused,
    );
    // Absent where the kernel does not show failed accepts.
    if let Some(errors) = &t.accept_errors {
        let mut f = x.family(
            "connwatch_accept_errors_total",
            MetricType::Counter,
            "Failed accept() calls of the processes owning the watched listeners, by \
             errno (EAGAIN and EINTR left out). EMFILE/ENFILE: out of file descriptors.",
        );
        for name in ALWAYS_ERRNOS {
            let n = errors
                .iter()
                .find(|(e, _)| *e == name)
                .map_or(0, |(_, n)| n);
            f.sample(&[("errno", name)], n);
        }
        for (name, n) in errors.iter() {
            if !ALWAYS_ERRNOS.contains(&name) {
                f.sample(&[("errno", name)], n);
            }
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
        t.synack_retransmits,
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

pub(super) fn capacity_families(x: &mut Exposition, r: &Report) {
    let c = &r.capacity;
    let mut f = x.family(
        "connwatch_capacity_source",
        MetricType::Gauge,
        "Where connwatch_capacity_used comes from: 1 for info (Redis INFO) or for \
         kernel (Redis could not be asked: the kernel's open connections).",
    );
    for source in [CapacitySource::Info, CapacitySource::Kernel] {
        f.sample(&[("source", source.as_str())], c.source == source);
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
    x.gauge(
        "connwatch_capacity_unix_clients",
        "Clients INFO counts that are no TCP connection on the watched ports (over the \
         Unix socket): slots the kernel's view cannot see. Absent without INFO.",
        c.unix_clients,
    );
}

pub(super) fn limit_families(x: &mut Exposition, r: &Report) {
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

pub(super) fn redis_families(x: &mut Exposition, r: &Report) {
    let redis = &r.redis;
    x.gauge(
        "connwatch_redis_up",
        "1 when Redis answered INFO on the last poll (capacity comes from INFO), else 0.",
        Some(r.capacity.source == CapacitySource::Info),
    );
    let mut f = x.family(
        "connwatch_redis_status",
        MetricType::Gauge,
        "The agent's connection to Redis: 1 for the current status, 0 for the others.",
    );
    for &status in RedisStatus::ALL {
        f.sample(&[("status", status.as_str())], redis.status == status);
    }
    let mut f = x.family(
        "connwatch_redis_config_status",
        MetricType::Gauge,
        "Whether CONFIG GET answers: 1 for the current status (ok, unavailable, \
         unknown), 0 for the others.",
    );
    for &status in ConfigStatus::ALL {
        f.sample(&[("status", status.as_str())], redis.config == status);
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
        "connwatch_redis_mem_clients_normal_bytes",
        "INFO memory mem_clients_normal: bytes held by normal clients' buffers (unsent replies among them).",
        redis.mem_clients_normal,
    );
    x.counter(
        "connwatch_redis_output_buffer_disconnections_total",
        "INFO stats client_output_buffer_limit_disconnections: clients dropped for their output \
         buffer (Valkey 8; absent on servers that do not count them, such as Redis 7.0).",
        redis.client_output_buffer_limit_disconnections,
    );
    x.gauge(
        "connwatch_redis_timeout_seconds",
        "CONFIG GET timeout: idle connections are closed after this (0: never).",
        redis.timeout_s,
    );
}

pub(super) fn verdict_families(x: &mut Exposition, r: &Report) {
    let mut f = x.family(
        "connwatch_recommended_setting",
        MetricType::Gauge,
        "A setting worth changing and the value suggested for it, computed from what \
         was seen (docs/DIAGNOSIS.md); absent when none is.",
    );
    for rec in &r.recommendations {
        f.sample(&[("setting", rec.setting)], rec.suggested);
    }
    let exhaustion = r
        .verdicts
        .iter()
        .filter_map(|v| v.evidence.get("exhaustion_in_s")?.as_f64())
        .min_by(f64::total_cmp);
    x.gauge(
        "connwatch_exhaustion_seconds",
        "Seconds until the connection slots left run out at the current pace: the \
         least exhaustion_in_s of the verdicts (a leak at its own pace, capacity at \
         the growth of used over the window). Absent when nothing is forecast.",
        exhaustion,
    );
    let mut f = x.family(
        "connwatch_verdict",
        MetricType::Gauge,
        "Host-level verdicts active now, by kind and severity: 1 (or the number of \
         addresses it is named for) while the rule holds, 0 otherwise. See \
         docs/DIAGNOSIS.md.",
    );
    for &kind in VerdictKind::ALL {
        for &severity in Severity::ALL {
            let n = r
                .verdicts
                .iter()
                .filter(|v| v.kind == kind && v.severity == severity)
                .count();
            f.sample(
                &[("kind", kind.as_str()), ("severity", severity.as_str())],
                n,
            );
        }
    }
}
