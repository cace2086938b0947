//! The `redis`, `limits` and `capacity` sections of a report. Plain data; the
//! joins that fill them live in `core::capacity`.

use std::net::SocketAddr;

use serde::Serialize;

use super::redis::{ConfigStatus, RedisSnapshot, RedisStatus};

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
    /// INFO memory `mem_clients_normal`: bytes held by normal clients' buffers
    /// (absent when unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_clients_normal: Option<u64>,
    /// INFO stats `client_output_buffer_limit_disconnections`: clients dropped for
    /// their output buffer. Absent where the server does not count them (Redis 7.0):
    /// unknown, never 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_output_buffer_limit_disconnections: Option<u64>,
    /// Its growth since the agent first read it (present only with the counter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_output_buffer_limit_disconnections_delta: Option<u64>,
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

named!(CapacitySource {
    Info => "info",
    Kernel => "kernel",
});

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
    /// Clients INFO counts that are no TCP connection on the watched ports: over
    /// the Unix socket (or on a port of this Redis not watched). They hold slots the
    /// kernel's TCP view cannot see. Never negative; `None` without fresh INFO.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unix_clients: Option<u64>,
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
