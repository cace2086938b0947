//! What Redis says of itself: the snapshot the Redis source produces each interval
//! and the core consumes. Plain data; the connection lives in `source::redis`.

use std::net::{IpAddr, SocketAddr};

/// How the poller's error message ends when a connect or a request timed out (the
/// server did not answer in time, as a stalled one does).
pub const TIMED_OUT: &str = "timed out";

/// How the agent's connection to Redis stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisStatus {
    /// INFO answered on the last poll.
    Ok,
    /// Not connected yet (first attempt under way).
    Connecting,
    /// TCP connect failed or the connection broke; retrying with backoff.
    Unreachable,
    /// The server refused our credentials (WRONGPASS / invalid password).
    AuthFailed,
    /// The server wants a password and none was given (NOAUTH).
    #[serde(rename = "noauth")]
    NoAuth,
    /// The server turned our connection away (maxclients reached, protected mode).
    Rejected,
    /// The TLS handshake failed (the server's certificate did not verify, it refused
    /// ours, or the port does not speak TLS); the error names the cause.
    TlsFailed,
    /// The ACL user may not run a command the agent needs (INFO, CONFIG GET); the
    /// error gives the rule to grant. When only CONFIG GET is denied, INFO still
    /// answers and its figures are fresh (see [`RedisSnapshot::fresh_info`]).
    #[serde(rename = "noperm")]
    NoPerm,
    /// Polling is disabled (`--no-redis`).
    Disabled,
    /// Any other error (protocol error, unexpected reply, LOADING, BUSY).
    Error,
}

named!(RedisStatus {
    Ok => "ok",
    Connecting => "connecting",
    Unreachable => "unreachable",
    AuthFailed => "auth_failed",
    NoAuth => "noauth",
    Rejected => "rejected",
    TlsFailed => "tls_failed",
    NoPerm => "noperm",
    Disabled => "disabled",
    Error => "error",
});

/// `CONFIG GET` can be renamed away or denied by ACL: the agent then degrades.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigStatus {
    Ok,
    /// CONFIG is renamed, disabled or denied; maxclients/timeout come from INFO
    /// where the server reports them there, else they are unknown.
    Unavailable,
    /// Not asked yet.
    Unknown,
}

named!(ConfigStatus {
    Ok => "ok",
    Unavailable => "unavailable",
    Unknown => "unknown",
});

/// The INFO fields connwatch uses. Every field a server version lacks is `None`,
/// never 0.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InfoFields {
    /// `redis_version` (Valkey also reports `valkey_version`, preferred when present).
    pub version: Option<String>,
    /// "redis" or "valkey" (`server_name` where reported).
    pub server: Option<String>,
    pub process_id: Option<u32>,
    pub tcp_port: Option<u16>,
    /// `role`: "master" or "slave".
    pub role: Option<String>,
    pub connected_clients: Option<u64>,
    pub blocked_clients: Option<u64>,
    /// `maxclients` from INFO clients (Redis ≥ 7.0).
    pub maxclients: Option<u64>,
    /// `cluster_connections` (Redis ≥ 7.0).
    pub cluster_connections: Option<u64>,
    pub connected_slaves: Option<u64>,
    pub rejected_connections: Option<u64>,
    pub total_connections_received: Option<u64>,
    /// `mem_clients_normal` (INFO memory): bytes held by normal clients' buffers,
    /// their unsent replies among them. Absent from captures made before it was read.
    #[serde(default)]
    pub mem_clients_normal: Option<u64>,
    /// `client_output_buffer_limit_disconnections` (INFO stats): clients the server
    /// dropped for their output buffer. Valkey 8 has it; Redis 7.0 does not (`None`).
    #[serde(default)]
    pub client_output_buffer_limit_disconnections: Option<u64>,
    /// `cluster_enabled` from INFO cluster.
    pub cluster_enabled: Option<bool>,
    /// `master_link_status` of a replica: `up` while its link to its master (a
    /// client of its own `connected_clients`) is connected. Absent from captures
    /// made before it was read.
    #[serde(default)]
    pub master_link_up: Option<bool>,
    /// Replica addresses from `slaveN:ip=…,port=…` lines (port is the replica's
    /// listening port, not its connection's source port).
    pub replicas: Vec<SocketAddr>,
}

/// `CONFIG GET maxclients`, `timeout`, `tls-port`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RedisConfig {
    pub maxclients: Option<u64>,
    /// Idle timeout in seconds (0: never).
    pub timeout: Option<u64>,
    /// The port Redis serves TLS on (0: none); `None` when unknown (CONFIG GET
    /// unavailable, or a server without TLS support). Absent from captures made
    /// before it was asked.
    #[serde(default)]
    pub tls_port: Option<u16>,
}

impl RedisConfig {
    /// Whether `port` is the server's TLS port, as far as CONFIG GET says.
    pub fn is_tls_port(&self, port: u16) -> bool {
        self.tls_port == Some(port)
    }
}

/// One poll's outcome.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RedisSnapshot {
    pub status: RedisStatus,
    /// One line saying what went wrong; never contains the password.
    pub error: Option<String>,
    pub config_status: ConfigStatus,
    /// Fresh when `status` is Ok; otherwise the last good values (or None).
    pub info: Option<InfoFields>,
    pub config: Option<RedisConfig>,
    /// The agent's own connection as the server sees it (remote address of the
    /// server-side socket), so the tracker never counts it as a client.
    pub own_addr: Option<SocketAddr>,
    /// Where the agent connects.
    pub target: Option<SocketAddr>,
}

impl RedisSnapshot {
    pub fn disabled() -> Self {
        RedisSnapshot {
            status: RedisStatus::Disabled,
            error: None,
            config_status: ConfigStatus::Unknown,
            info: None,
            config: None,
            own_addr: None,
            target: None,
        }
    }

    /// INFO as it answered on the last poll: with status `ok`, or `noperm` when only
    /// CONFIG GET is denied (the poller drops INFO's figures when INFO itself is
    /// denied). `None` when INFO did not answer (the last good values in `info` are
    /// then stale).
    pub fn fresh_info(&self) -> Option<&InfoFields> {
        match self.status {
            RedisStatus::Ok | RedisStatus::NoPerm => self.info.as_ref(),
            _ => None,
        }
    }

    /// Whether `ip` is one of the server's replicas.
    pub fn is_replica(&self, ip: IpAddr) -> bool {
        self.info
            .as_ref()
            .is_some_and(|i| i.replicas.iter().any(|r| r.ip() == ip))
    }
}
