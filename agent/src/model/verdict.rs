//! Verdicts: what the diagnosis concludes, host-wide and per client address.
//! Plain data with one name per variant (`as_str`, `ALL`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

named!(Severity {
    Warning => "warning",
    Critical => "critical",
});

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    NotAccepting,
    Leak,
    RetryStorm,
    SlowConsumer,
    PoolOversize,
    MaxclientsTooLow,
    FdLimit,
    InternalHeadroom,
    BlockedClients,
    InstanceFanout,
    BudgetExceeded,
    CapacityWarning,
    CapacityCritical,
}

named!(VerdictKind {
    NotAccepting => "not_accepting",
    Leak => "leak",
    RetryStorm => "retry_storm",
    SlowConsumer => "slow_consumer",
    PoolOversize => "pool_oversize",
    MaxclientsTooLow => "maxclients_too_low",
    FdLimit => "fd_limit",
    InternalHeadroom => "internal_headroom",
    BlockedClients => "blocked_clients",
    InstanceFanout => "instance_fanout",
    BudgetExceeded => "budget_exceeded",
    CapacityWarning => "capacity_warning",
    CapacityCritical => "capacity_critical",
});

/// Per client: what this address is doing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientVerdict {
    #[default]
    Healthy,
    Leak,
    RetryStorm,
    BackingOff,
    /// Retries after failures at a flat pace (any period) that never grew.
    NoBackoff,
    PoolHeavy,
    /// Holds many replies it has not taken, or is dropped for them again and again.
    SlowConsumer,
}

named!(ClientVerdict {
    Healthy => "healthy",
    Leak => "leak",
    RetryStorm => "retry_storm",
    BackingOff => "backing_off",
    NoBackoff => "no_backoff",
    SlowConsumer => "slow_consumer",
    PoolHeavy => "pool_heavy",
});

/// A stale connection a person may want to close, with the command to do it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StaleConn {
    pub addr: SocketAddr,
    pub idle_s: f64,
    pub command: String,
    /// The local process that opened it, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// An address's open connections idle at least some time, oldest first: the
/// client's end, how long it has been idle, and the pid of the local process
/// that opened it when known.
pub type StaleList = Vec<(SocketAddr, Duration, Option<u32>)>;

/// How many of a process's connections have each user stack at `connect()`
/// (`--stacks`; `None`: no stack known), most first.
pub type StackCounts = Vec<(Option<u32>, u64)>;

impl StaleConn {
    pub fn new(addr: SocketAddr, idle: Duration) -> Self {
        StaleConn {
            addr,
            idle_s: (idle.as_millis() as f64) / 1e3,
            command: format!("CLIENT KILL ADDR {addr}"),
            pid: None,
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
