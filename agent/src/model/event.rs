//! The event stream the core consumes.
//!
//! Every source — the live kernel probe, the `/proc` and sock_diag pollers, later a
//! capture file — turns what it sees into these values. The core (`conn`, `client`)
//! is a pure function of this stream, so anything it concludes can be replayed and
//! unit-tested without root.
//!
//! Times are nanoseconds of CLOCK_MONOTONIC (the clock `bpf_ktime_get_ns()` reads),
//! so kernel records and userspace snapshots share one time line. Reports convert to
//! wall-clock time with a [`Clock`] taken when the source started.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Nanoseconds of CLOCK_MONOTONIC.
pub type Nanos = u64;

pub const NANOS_PER_SEC: u64 = 1_000_000_000;

/// One server-side TCP connection: its network namespace, the listener's address
/// and the client's. IPv4-mapped IPv6 addresses are stored as IPv4 (see
/// [`normalize`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConnKey {
    /// Inode of the network namespace (0: unknown, or a capture from before
    /// connwatch knew namespaces).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub netns: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl ConnKey {
    /// A connection in an unknown (or the only) network namespace.
    pub fn new(local: SocketAddr, remote: SocketAddr) -> Self {
        Self::in_netns(0, local, remote)
    }

    pub fn in_netns(netns: u32, local: SocketAddr, remote: SocketAddr) -> Self {
        ConnKey {
            netns,
            local: normalize(local),
            remote: normalize(remote),
        }
    }

    /// The same connection, in namespace `netns`.
    pub fn with_netns(self, netns: u32) -> Self {
        ConnKey { netns, ..self }
    }

    /// The instance the connection belongs to.
    pub fn instance(&self) -> super::InstanceKey {
        super::InstanceKey { netns: self.netns }
    }
}

/// Reports an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it carries.
pub fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// Who ended an established connection first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseKind {
    /// The server (Redis) closed first: ESTABLISHED → FIN_WAIT1.
    Server,
    /// The client closed first: ESTABLISHED → CLOSE_WAIT.
    Client,
    /// Reset while established: ESTABLISHED → CLOSE.
    Reset,
}

/// What the kernel knows of one connection's traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Last time data moved in either direction; `None` if none has since it opened.
    pub last_active: Option<Nanos>,
    /// Bytes the server wrote that the client has not acknowledged yet (the
    /// socket's send queue): at a close, from the kernel; in a scan, from sock_diag.
    /// `None` when not read (captures made before connwatch recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<u64>,
}

/// Counters the kernel keeps in maps, read as totals since the probes were attached.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelCounters {
    /// Ring-buffer records that could not be reserved.
    pub lost_events: u64,
    /// Closes whose byte counts the kernel could not read from the socket.
    #[serde(default)]
    pub bytes_unreadable: u64,
    /// SYN-ACKs retransmitted by watched listeners (the handshake is not completing:
    /// a full accept queue, or a lossy path).
    pub synack_retransmits: u64,
    /// Failed `accept`/`accept4` calls of the listeners' processes, by errno
    /// (positive errno values; EAGAIN included, the core decides what matters).
    /// With `instance` set, those of that instance's process only.
    pub accept_errors: Vec<(i32, u64)>,
    /// The instance these counters are read for; the other counters are the
    /// same for every instance. `None`: every watched listener (one instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<super::InstanceKey>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// A client connection reached ESTABLISHED on a watched port.
    Opened { ts: Nanos, key: ConnKey },
    /// An established connection began to close. `activity` is `None` when the
    /// kernel did not track it (it predates the agent, or was evicted).
    Closed {
        ts: Nanos,
        key: ConnKey,
        how: CloseKind,
        activity: Option<Activity>,
    },
    /// A connection that already existed when the agent started (from sock_diag).
    /// Its age is unknown: the agent's start is a lower bound of it.
    Seeded {
        ts: Nanos,
        key: ConnKey,
        activity: Activity,
    },
    /// The interval's sock_diag scan of the open connections: the figures of those
    /// whose traffic changed, and the connections the table held that the scan no
    /// longer found although they opened before it (their close record was lost).
    Activity {
        ts: Nanos,
        conns: Vec<(ConnKey, Activity)>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        gone: Vec<ConnKey>,
    },
    /// The kernel answered a connection attempt to a watched port with a RST because
    /// nothing listened there (Redis down or restarting). `key.local` is the port
    /// that was tried.
    Refused { ts: Nanos, key: ConnKey },
    /// Client mode: a connect of this host to a watched remote port failed (the
    /// client's socket went SYN_SENT → CLOSE), with the socket's error: 111
    /// (ECONNREFUSED) refused, 110 (ETIMEDOUT) timed out, 0 abandoned by the
    /// application, another errno otherwise; `None`: unknown. `key` as the server
    /// has it (`local` = the server tried).
    ConnectFailed {
        ts: Nanos,
        key: ConnKey,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        err: Option<u32>,
    },
    /// What Redis says of itself (INFO/CONFIG over the agent's one connection), or
    /// why it cannot be asked.
    Redis {
        ts: Nanos,
        snapshot: Box<super::redis::RedisSnapshot>,
        /// The instance asked; `None`: the one `--redis` names (see `Fleet`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<super::InstanceKey>,
    },
    /// Limits and queues of the host and of the process behind the listeners.
    Host {
        ts: Nanos,
        snapshot: Box<super::host::HostSnapshot>,
    },
    /// Totals of the kernel's counters.
    Counters { ts: Nanos, counters: KernelCounters },
    /// A process of this host connected to a watched port (its socket left
    /// SYN_SENT), or failed to (`failed`: refused, reset, timed out). `client` and
    /// `server` are the two ends as the client's socket sees them: the accepted
    /// connection's key has them the other way round (`local` = `server`).
    Connector {
        ts: Nanos,
        client: SocketAddr,
        server: SocketAddr,
        process: super::process::Process,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        failed: bool,
        /// A failed connect's cause, the socket's error (see `ConnectFailed`);
        /// `None`: unknown (and in captures made before it was recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        err: Option<u32>,
    },
    /// The end of an interval: a report is due.
    Tick { ts: Nanos },
}

impl Event {
    pub fn ts(&self) -> Nanos {
        match self {
            Event::Opened { ts, .. }
            | Event::Closed { ts, .. }
            | Event::Seeded { ts, .. }
            | Event::Activity { ts, .. }
            | Event::Refused { ts, .. }
            | Event::ConnectFailed { ts, .. }
            | Event::Redis { ts, .. }
            | Event::Host { ts, .. }
            | Event::Counters { ts, .. }
            | Event::Connector { ts, .. }
            | Event::Tick { ts } => *ts,
        }
    }
}

/// Maps CLOCK_MONOTONIC nanoseconds to wall-clock time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// A monotonic reading and the wall-clock time taken right after it.
    pub mono: Nanos,
    pub wall: SystemTime,
}

impl Clock {
    pub fn wall_time(&self, ts: Nanos) -> SystemTime {
        if ts >= self.mono {
            self.wall + Duration::from_nanos(ts - self.mono)
        } else {
            self.wall - Duration::from_nanos(self.mono - ts)
        }
    }
}

/// Reads CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_now() -> Nanos {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_MONOTONIC always exists,
    // so clock_gettime only writes into it.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * NANOS_PER_SEC + ts.tv_nsec as u64
}

impl Clock {
    pub fn now() -> Self {
        Clock {
            mono: monotonic_now(),
            wall: SystemTime::now(),
        }
    }
}
