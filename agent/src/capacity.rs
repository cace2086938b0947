//! Joins what Redis says (INFO/CONFIG) with what the host says (/proc, sock_diag)
//! into the report's `redis`, `limits` and `capacity` sections.
//!
//! A figure that cannot be known (Redis unreachable, a field the server version
//! lacks, a /proc file unreadable) is absent from the JSON, never 0.

use std::net::SocketAddr;

use serde::Serialize;

use crate::host::{self, HostSnapshot};
use crate::redis::{ConfigStatus, RedisSnapshot, RedisStatus};

/// The `redis` section: the connection's status and the INFO counters used.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RedisReport {
    pub status: RedisStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<SocketAddr>,
    pub config: ConfigStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_connections: Option<u64>,
    /// Growth of `rejected_connections` since the agent first read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_connections_delta: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_connections_received: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_connections_received_delta: Option<u64>,
    /// `timeout` (seconds; 0 = idle connections are never closed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_enabled: Option<bool>,
}

impl Default for RedisReport {
    fn default() -> Self {
        RedisReport::from_snapshot(&RedisSnapshot::disabled(), None)
    }
}

/// The `limits` section.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// `maxclients` as configured (CONFIG GET, else INFO clients).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maxclients: Option<u64>,
    /// What the server can really hold: min(maxclients, nofile_soft − 32).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_maxclients: Option<u64>,
    /// Why `effective_maxclients` differs from `maxclients`, in one sentence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nofile_soft: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nofile_hard: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub nofile_unlimited: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_fds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub somaxconn: Option<u32>,
    /// System-wide file handles allocated and the maximum (`/proc/sys/fs/file-nr`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_nr: Option<FileNr>,
    /// The process behind the watched listeners.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FileNr {
    pub allocated: u64,
    pub max: u64,
}

/// Where the `capacity` figures come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CapacitySource {
    /// INFO clients / replication / stats.
    Info,
    /// Redis could not be asked: `used` is the kernel's count of open connections
    /// on the watched ports.
    Kernel,
}

/// The `capacity` section: how much of the real limit is in use.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Capacity {
    pub source: CapacitySource,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected_clients: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected_slaves: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_connections: Option<u64>,
    /// A subset of `connected_clients`: shown, not added to `used`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_clients: Option<u64>,
    /// connected_clients + connected_slaves + cluster_connections: what Redis
    /// compares with maxclients when it accepts a connection.
    pub used: u64,
    /// The effective limit `used` is measured against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// limit − used; negative when the limit was lowered below current use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headroom: Option<i64>,
}

/// Baselines taken at the first good reading, for deltas since the agent started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Baselines {
    pub rejected_connections: Option<u64>,
    pub total_connections_received: Option<u64>,
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
        if let Some(info) = redis
            .filter(|r| r.status == RedisStatus::Ok)
            .and_then(|r| r.info.as_ref())
        {
            keep(&mut self.rejected_connections, info.rejected_connections);
            keep(
                &mut self.total_connections_received,
                info.total_connections_received,
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
        let field = |f: fn(&crate::redis::InfoFields) -> Option<u64>| info.and_then(f);
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
    let (effective_maxclients, effective_reason) =
        host::effective_maxclients(maxclients, nofile_soft);
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

/// Capacity from INFO when Redis answered, else from the kernel's open count.
pub fn capacity(redis: Option<&RedisSnapshot>, limits: &Limits, kernel_open: u64) -> Capacity {
    let info = redis
        .filter(|r| r.status == RedisStatus::Ok)
        .and_then(|r| r.info.as_ref())
        .filter(|i| i.connected_clients.is_some());
    let limit = limits.effective_maxclients;
    let mut cap = match info {
        Some(i) => Capacity {
            source: CapacitySource::Info,
            connected_clients: i.connected_clients,
            connected_slaves: i.connected_slaves,
            cluster_connections: i.cluster_connections,
            blocked_clients: i.blocked_clients,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::{InfoFields, RedisConfig};

    fn redis(info: InfoFields, maxclients: Option<u64>) -> RedisSnapshot {
        RedisSnapshot {
            status: RedisStatus::Ok,
            config_status: ConfigStatus::Ok,
            info: Some(info),
            config: Some(RedisConfig {
                maxclients,
                timeout: Some(0),
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
        let c = capacity(Some(&r), &l, 999);
        assert_eq!(c.source, CapacitySource::Info);
        assert_eq!(
            c.used, 100,
            "blocked clients are a subset of connected_clients"
        );
        assert_eq!(c.ratio, Some(0.5));
        assert_eq!(c.headroom, Some(100));
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
        let c = capacity(Some(&r), &l, 75);
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
}
