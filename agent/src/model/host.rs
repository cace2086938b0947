//! Facts about the host behind the watched listeners, read from `/proc` and
//! sock_diag each interval by `source::host`. Plain data.

use std::net::SocketAddr;

/// A listening socket on a watched port and the processes holding it (several after
/// a fork, or none that we can see — another PID namespace, or no permission).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Listener {
    pub port: u16,
    pub addr: SocketAddr,
    pub inode: u64,
    /// Sorted ascending.
    pub pids: Vec<u32>,
}

/// Limits and queues of the host and of the process behind the watched listeners,
/// read each interval.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostSnapshot {
    /// The instance this snapshot was read for (its namespace, port and process);
    /// `None`: every watched listener of the agent's namespace, as one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<super::Instance>,
    /// The watched listeners and their owners.
    pub listeners: Vec<Listener>,
    /// The process that owns the listeners (the lowest pid when several do).
    pub pid: Option<u32>,
    /// RLIMIT_NOFILE of `pid`; `None` when unknown or unlimited (see `nofile_unlimited`).
    pub nofile_soft: Option<u64>,
    pub nofile_hard: Option<u64>,
    /// The limits were read and one of them is unlimited: that one is the `None`.
    pub nofile_unlimited: bool,
    /// Open file descriptors of `pid`.
    pub open_fds: Option<u64>,
    /// `/proc/sys/fs/file-nr`: allocated file handles and the system maximum.
    pub file_nr: Option<(u64, u64)>,
    pub somaxconn: Option<u32>,
    /// Connections waiting in the watched listeners' accept queues (summed), and
    /// the sum of their backlogs. `None` when the dump failed or nothing listens.
    pub accept_queue: Option<(u64, u64)>,
    /// TcpExt ListenOverflows / ListenDrops from /proc/net/netstat: host-wide
    /// totals since boot (the tracker reports deltas).
    pub listen_overflows: Option<u64>,
    pub listen_drops: Option<u64>,
}
