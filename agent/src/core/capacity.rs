//! Joins what Redis says (INFO/CONFIG) with what the host says (/proc, sock_diag)
//! into the report's `redis`, `limits` and `capacity` sections.
//!
//! A figure that cannot be known (Redis unreachable, a field the server version
//! lacks, a /proc file unreadable) is absent from the JSON, never 0.

use crate::model::Nanos;
use crate::model::{
    Capacity, CapacitySource, FileNr, HostSnapshot, InfoFields, Limits, RedisReport, RedisSnapshot,
};

/// Failed accepts per second between the last two counter readings.
#[derive(Clone, Copy, Debug, Default)]
pub struct AcceptRate {
    last: Option<(Nanos, u64)>,
    pub per_s: f64,
}

impl AcceptRate {
    pub fn observe(&mut self, ts: Nanos, total: u64) {
        if let Some((then, before)) = self.last
            && ts > then
        {
            let secs = (ts - then) as f64 / 1e9;
            self.per_s = (total.saturating_sub(before) as f64 / secs * 10.0).round() / 10.0;
        }
        self.last = Some((ts, total));
    }
}

/// Baselines taken at the first good reading, for deltas since the agent started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Baselines {
    pub rejected_connections: Option<u64>,
    pub total_connections_received: Option<u64>,
    pub client_output_buffer_limit_disconnections: Option<u64>,
    pub listen_overflows: Option<u64>,
    pub listen_drops: Option<u64>,
}

impl Baselines {
    /// Records the first value seen of each counter. A counter that went backwards
    /// (Redis restarted, CONFIG RESETSTAT) starts a new baseline.
    pub fn observe(&mut self, redis: Option<&RedisSnapshot>, host: Option<&HostSnapshot>) {
        fn keep(slot: &mut Option<u64>, value: Option<u64>) {
            if let Some(v) = value
                && slot.is_none_or(|base| v < base)
            {
                *slot = Some(v);
            }
        }
        if let Some(info) = redis.and_then(RedisSnapshot::fresh_info) {
            keep(&mut self.rejected_connections, info.rejected_connections);
            keep(
                &mut self.total_connections_received,
                info.total_connections_received,
            );
            keep(
                &mut self.client_output_buffer_limit_disconnections,
                info.client_output_buffer_limit_disconnections,
            );
        }
        if let Some(h) = host {
            keep(&mut self.listen_overflows, h.listen_overflows);
            keep(&mut self.listen_drops, h.listen_drops);
        }
    }
}

fn delta(now: Option<u64>, base: Option<u64>) -> Option<u64> {
    Some(now?.saturating_sub(base?))
}

impl RedisReport {
    pub fn from_snapshot(r: &RedisSnapshot, base: Option<&Baselines>) -> Self {
        let info = r.info.as_ref();
        let field = |f: fn(&InfoFields) -> Option<u64>| info.and_then(f);
        RedisReport {
            status: r.status,
            error: r.error.clone(),
            target: r.target,
            config: r.config_status,
            server: info.and_then(|i| i.server.clone()),
            version: info.and_then(|i| i.version.clone()),
            role: info.and_then(|i| i.role.clone()),
            pid: info.and_then(|i| i.process_id),
            rejected_connections: field(|i| i.rejected_connections),
            rejected_connections_delta: delta(
                field(|i| i.rejected_connections),
                base.and_then(|b| b.rejected_connections),
            ),
            total_connections_received: field(|i| i.total_connections_received),
            total_connections_received_delta: delta(
                field(|i| i.total_connections_received),
                base.and_then(|b| b.total_connections_received),
            ),
            mem_clients_normal: field(|i| i.mem_clients_normal),
            client_output_buffer_limit_disconnections: field(|i| {
                i.client_output_buffer_limit_disconnections
            }),
            client_output_buffer_limit_disconnections_delta: delta(
                field(|i| i.client_output_buffer_limit_disconnections),
                base.and_then(|b| b.client_output_buffer_limit_disconnections),
            ),
            timeout_s: r.config.and_then(|c| c.timeout),
            cluster_enabled: info.and_then(|i| i.cluster_enabled),
        }
    }
}

/// `maxclients` as configured: CONFIG GET when it answered, else INFO (Redis ≥ 7).
pub fn configured_maxclients(r: Option<&RedisSnapshot>) -> Option<u64> {
    let r = r?;
    r.config
        .and_then(|c| c.maxclients)
        .or_else(|| r.info.as_ref().and_then(|i| i.maxclients))
}

pub fn limits(redis: Option<&RedisSnapshot>, h: Option<&HostSnapshot>) -> Limits {
    let maxclients = configured_maxclients(redis);
    let nofile_soft = h.and_then(|h| h.nofile_soft);
    let (effective_maxclients, effective_reason) = effective_maxclients(maxclients, nofile_soft);
    Limits {
        maxclients,
        effective_maxclients,
        effective_reason,
        nofile_soft,
        nofile_hard: h.and_then(|h| h.nofile_hard),
        nofile_unlimited: h.is_some_and(|h| h.nofile_unlimited),
        open_fds: h.and_then(|h| h.open_fds),
        somaxconn: h.and_then(|h| h.somaxconn),
        file_nr: h
            .and_then(|h| h.file_nr)
            .map(|(allocated, max)| FileNr { allocated, max }),
        pid: h.and_then(|h| h.pid),
    }
}

/// Capacity from INFO when Redis answered, else from the kernel's open count
/// (`kernel_open`: connections open on the watched ports, the agent's own excluded;
/// `queued`: of those, the ones still waiting in the accept queue, when known).
pub fn capacity(
    redis: Option<&RedisSnapshot>,
    limits: &Limits,
    kernel_open: u64,
    queued: Option<u64>,
) -> Capacity {
    let info = redis
        .and_then(RedisSnapshot::fresh_info)
        .filter(|i| i.connected_clients.is_some());
    let limit = limits.effective_maxclients;
    let mut cap = match info {
        Some(i) => Capacity {
            source: CapacitySource::Info,
            connected_clients: i.connected_clients,
            connected_slaves: i.connected_slaves,
            cluster_connections: i.cluster_connections,
            blocked_clients: i.blocked_clients,
            unix_clients: unix_clients(i, kernel_open.saturating_sub(queued.unwrap_or(0))),
            used: i.connected_clients.unwrap_or(0)
                + i.connected_slaves.unwrap_or(0)
                + i.cluster_connections.unwrap_or(0),
            limit,
            ratio: None,
            headroom: None,
        },
        None => Capacity {
            source: CapacitySource::Kernel,
            connected_clients: None,
            connected_slaves: None,
            cluster_connections: None,
            blocked_clients: None,
            unix_clients: None,
            used: kernel_open,
            limit,
            ratio: None,
            headroom: None,
        },
    };
    if let Some(limit) = limit {
        cap.headroom = Some(limit as i64 - cap.used as i64);
        if limit > 0 {
            // Rounded to 4 decimals: enough for thresholds, stable in tests.
            cap.ratio = Some((cap.used as f64 / limit as f64 * 1e4).round() / 1e4);
        }
    }
    cap
}

/// The clients INFO counts that the kernel's TCP view of the watched ports does not
/// see: those over the Unix socket. INFO's `connected_clients` leaves replicas out
/// (they are `connected_slaves`) but counts the agent's own connection and, on a
/// replica, its link to its master; `tcp_accepted` (the watched ports' connections
/// Redis has accepted, the agent's own excluded) counts replicas and the other
/// clients. So: connected_clients + connected_slaves − 1 (the agent) − 1 (a master
/// link that is up) − tcp_accepted, never below 0. `None` when INFO lacks
/// `connected_clients`.
pub fn unix_clients(info: &InfoFields, tcp_accepted: u64) -> Option<u64> {
    let all = info
        .connected_clients?
        .saturating_add(info.connected_slaves.unwrap_or(0));
    let not_clients = 1 + u64::from(info.master_link_up == Some(true));
    Some(all.saturating_sub(not_clients).saturating_sub(tcp_accepted))
}

/// Descriptors Redis keeps for itself beyond its clients (`CONFIG_MIN_RESERVED_FDS`):
/// it sizes its open-file limit as maxclients + 32.
pub const REDIS_RESERVED_FDS: u64 = 32;

/// How many clients Redis can really hold: `maxclients`, or fewer when its
/// open-file limit (`nofile_soft`) leaves room for fewer, since each client is a
/// descriptor and Redis keeps [`REDIS_RESERVED_FDS`] for itself. The second value
/// explains, in one sentence, when the fd limit is what binds (including when
/// maxclients is unknown); it is `None` when maxclients binds or nothing is known.
pub fn effective_maxclients(
    maxclients: Option<u64>,
    nofile_soft: Option<u64>,
) -> (Option<u64>, Option<String>) {
    let Some(soft) = nofile_soft else {
        return (maxclients, None);
    };
    let room = soft.saturating_sub(REDIS_RESERVED_FDS);
    let limit = format!(
        "the process's open-file limit (ulimit -n) is {soft}, which leaves room for {room} clients"
    );
    match maxclients {
        Some(max) if max <= room => (Some(max), None),
        Some(max) => (
            Some(room),
            Some(format!("{limit}, fewer than maxclients {max}")),
        ),
        None => (Some(room), Some(format!("maxclients is unknown; {limit}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn redis(info: InfoFields, maxclients: Option<u64>) -> RedisSnapshot {
        RedisSnapshot {
            status: RedisStatus::Ok,
            config_status: ConfigStatus::Ok,
            info: Some(info),
            config: Some(RedisConfig {
                maxclients,
                timeout: Some(0),
                tls_port: Some(0),
            }),
            ..RedisSnapshot::disabled()
        }
    }

    fn host(nofile_soft: u64) -> HostSnapshot {
        HostSnapshot {
            nofile_soft: Some(nofile_soft),
            nofile_hard: Some(nofile_soft),
            pid: Some(42),
            ..HostSnapshot::default()
        }
    }

    #[test]
    fn capacity_counts_what_redis_compares_with_maxclients() {
        let info = InfoFields {
            connected_clients: Some(90),
            connected_slaves: Some(2),
            cluster_connections: Some(8),
            blocked_clients: Some(40),
            ..InfoFields::default()
        };
        let r = redis(info, Some(200));
        let l = limits(Some(&r), Some(&host(100_000)));
        assert_eq!(l.effective_maxclients, Some(200));
        let c = capacity(Some(&r), &l, 999, None);
        assert_eq!(c.source, CapacitySource::Info);
        assert_eq!(
            c.used, 100,
            "blocked clients are a subset of connected_clients"
        );
        assert_eq!(c.ratio, Some(0.5));
        assert_eq!(c.headroom, Some(100));
    }

    #[test]
    fn unix_clients_are_what_info_counts_beyond_the_tcp_connections() {
        // 10 clients (the agent among them) and 2 replicas; the kernel sees 6 TCP
        // connections accepted on the watched port, the replicas' 2 among them.
        let info = InfoFields {
            connected_clients: Some(10),
            connected_slaves: Some(2),
            ..InfoFields::default()
        };
        assert_eq!(unix_clients(&info, 6), Some(10 + 2 - 1 - 6));
        // On a replica, its link to its master is one of connected_clients too.
        let replica = InfoFields {
            master_link_up: Some(true),
            ..info.clone()
        };
        assert_eq!(unix_clients(&replica, 6), Some(4));
        let down = InfoFields {
            master_link_up: Some(false),
            ..info.clone()
        };
        assert_eq!(unix_clients(&down, 6), Some(5));
        // Never negative (INFO and the kernel were read at different instants).
        assert_eq!(unix_clients(&info, 50), Some(0));
        assert_eq!(unix_clients(&InfoFields::default(), 0), None);

        // In the capacity section: connections still in the accept queue are not
        // clients yet; without INFO the figure is unknown.
        let r = redis(info, Some(100));
        let l = limits(Some(&r), None);
        assert_eq!(capacity(Some(&r), &l, 8, Some(2)).unix_clients, Some(5));
        assert_eq!(capacity(Some(&r), &l, 8, None).unix_clients, Some(3));
        let mut down = r.clone();
        down.status = RedisStatus::Unreachable;
        let c = capacity(Some(&down), &l, 8, None);
        assert_eq!(c.unix_clients, None);
        assert!(
            serde_json::to_value(&c)
                .unwrap()
                .get("unix_clients")
                .is_none()
        );
    }

    #[test]
    fn fd_limit_lowers_the_effective_limit() {
        let r = redis(
            InfoFields {
                connected_clients: Some(10),
                ..InfoFields::default()
            },
            Some(10_000),
        );
        let l = limits(Some(&r), Some(&host(4096)));
        assert_eq!(l.maxclients, Some(10_000));
        assert_eq!(l.effective_maxclients, Some(4064));
        assert!(l.effective_reason.as_deref().unwrap_or("").contains("4096"));
    }

    #[test]
    fn without_redis_capacity_comes_from_the_kernel() {
        let mut r = RedisSnapshot::disabled();
        r.status = RedisStatus::Unreachable;
        let l = limits(Some(&r), Some(&host(132)));
        assert_eq!(l.maxclients, None);
        assert_eq!(l.effective_maxclients, Some(100));
        let c = capacity(Some(&r), &l, 75, None);
        assert_eq!(c.source, CapacitySource::Kernel);
        assert_eq!(c.used, 75);
        assert_eq!(c.ratio, Some(0.75));
        let json = serde_json::to_value(&c).unwrap();
        assert!(
            json.get("connected_clients").is_none(),
            "unknown fields are absent, not 0"
        );
    }

    #[test]
    fn deltas_start_at_the_first_good_reading() {
        let mut base = Baselines::default();
        let first = redis(
            InfoFields {
                rejected_connections: Some(7),
                ..InfoFields::default()
            },
            None,
        );
        base.observe(Some(&first), None);
        let later = redis(
            InfoFields {
                rejected_connections: Some(19),
                ..InfoFields::default()
            },
            None,
        );
        base.observe(Some(&later), None);
        let report = RedisReport::from_snapshot(&later, Some(&base));
        assert_eq!(report.rejected_connections, Some(19));
        assert_eq!(report.rejected_connections_delta, Some(12));
        // A restart resets the counter: a new baseline, never a negative delta.
        let restarted = redis(
            InfoFields {
                rejected_connections: Some(2),
                ..InfoFields::default()
            },
            None,
        );
        base.observe(Some(&restarted), None);
        assert_eq!(
            RedisReport::from_snapshot(&restarted, Some(&base)).rejected_connections_delta,
            Some(0)
        );
    }

    #[test]
    fn fd_limit_binds_below_maxclients() {
        assert_eq!(
            effective_maxclients(Some(10000), Some(4096)),
            (
                Some(4064),
                Some(
                    "the process's open-file limit (ulimit -n) is 4096, which leaves room \
                     for 4064 clients, fewer than maxclients 10000"
                        .to_string()
                )
            )
        );
    }

    #[test]
    fn maxclients_binds_when_the_fd_limit_has_room() {
        assert_eq!(
            effective_maxclients(Some(10000), Some(10032)),
            (Some(10000), None)
        );
        assert_eq!(
            effective_maxclients(Some(10000), Some(1_048_576)),
            (Some(10000), None)
        );
        // Exactly one short of room: the fd limit binds.
        assert_eq!(
            effective_maxclients(Some(10000), Some(10031)),
            (
                Some(9999),
                Some(
                    "the process's open-file limit (ulimit -n) is 10031, which leaves room \
                     for 9999 clients, fewer than maxclients 10000"
                        .to_string()
                )
            )
        );
    }

    #[test]
    fn effective_maxclients_with_unknowns() {
        assert_eq!(effective_maxclients(Some(10000), None), (Some(10000), None));
        assert_eq!(effective_maxclients(None, None), (None, None));
        assert_eq!(
            effective_maxclients(None, Some(1024)),
            (
                Some(992),
                Some(
                    "maxclients is unknown; the process's open-file limit (ulimit -n) is \
                     1024, which leaves room for 992 clients"
                        .to_string()
                )
            )
        );
    }

    #[test]
    fn tiny_fd_limit_leaves_no_room() {
        assert_eq!(
            effective_maxclients(Some(10000), Some(20)),
            (
                Some(0),
                Some(
                    "the process's open-file limit (ulimit -n) is 20, which leaves room \
                     for 0 clients, fewer than maxclients 10000"
                        .to_string()
                )
            )
        );
        assert_eq!(effective_maxclients(Some(0), Some(32)), (Some(0), None));
        assert_eq!(effective_maxclients(None, Some(0)).0, Some(0));
    }
}
