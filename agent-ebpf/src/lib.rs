//! Records and constants shared by connwatch's kernel programs and its userspace.
//!
//! Everything here is `#[repr(C)]`, `Copy`, free of pointers and padded explicitly,
//! so both sides agree on the layout byte for byte. Addresses are stored as 16 bytes:
//! an IPv4 address occupies the first four bytes and `family` says which it is.
#![no_std]

/// `AF_INET` and `AF_INET6`, as the tracepoints report them.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// TCP states, numbered as in the kernel's `include/net/tcp_states.h`.
pub mod tcp_state {
    pub const ESTABLISHED: i32 = 1;
    pub const SYN_SENT: i32 = 2;
    pub const SYN_RECV: i32 = 3;
    pub const FIN_WAIT1: i32 = 4;
    pub const FIN_WAIT2: i32 = 5;
    pub const TIME_WAIT: i32 = 6;
    pub const CLOSE: i32 = 7;
    pub const CLOSE_WAIT: i32 = 8;
    pub const LAST_ACK: i32 = 9;
    pub const LISTEN: i32 = 10;
    pub const CLOSING: i32 = 11;
    pub const NEW_SYN_RECV: i32 = 12;
}

/// What a [`ConnEvent`] reports.
pub mod event_kind {
    /// A server-side connection on a watched port reached ESTABLISHED (SYN_RECV → ESTABLISHED).
    pub const OPENED: u8 = 1;
    /// The server closed first (ESTABLISHED → FIN_WAIT1).
    pub const CLOSED_BY_SERVER: u8 = 2;
    /// The client closed first (ESTABLISHED → CLOSE_WAIT).
    pub const CLOSED_BY_CLIENT: u8 = 3;
    /// The connection was reset while established (ESTABLISHED → CLOSE).
    pub const RESET: u8 = 4;
    /// The kernel answered an attempt to a watched port with a RST: nothing listens
    /// there (tcp:tcp_send_reset without a socket). Only the addresses are set.
    pub const REFUSED: u8 = 5;
}

/// `ConnInfo::flags`: the connection was opened while the probes were attached, so
/// `opened_ns`, the byte counts and the activity times are complete.
pub const CONN_TRACKED: u8 = 1;

/// Indexes into the `COUNTERS` per-CPU array.
pub mod counter {
    /// Ring-buffer records that could not be reserved (the reader fell behind).
    pub const LOST_EVENTS: u32 = 0;
    /// New connections that could not be inserted into `CONNS`.
    pub const CONN_INSERT_FAILED: u32 = 1;
    /// Close transitions of connections `CONNS` did not hold (opened before the
    /// agent started, or evicted from the LRU map).
    pub const CLOSED_UNTRACKED: u32 = 2;
    /// SYN-ACKs retransmitted by listeners on watched ports.
    pub const SYNACK_RETRANSMITS: u32 = 3;
    pub const COUNT: u32 = 4;
}

/// Capacity of the map of watched local ports.
pub const MAX_WATCHED_PORTS: u32 = 64;
/// Capacity of the map of pids whose failed accepts are counted.
pub const MAX_LISTENER_PIDS: u32 = 64;
/// Default capacity of the per-connection LRU map; userspace may change it at load time.
pub const DEFAULT_MAX_CONNS: u32 = 65_536;
/// Failed accepts are counted per errno below this bound; larger errnos go to slot 0.
pub const MAX_ERRNO: u32 = 256;

/// Per-connection state the kernel keeps, keyed by the socket's address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnInfo {
    /// `bpf_ktime_get_ns()` when the connection reached ESTABLISHED.
    pub opened_ns: u64,
    /// Last time the server read data from the client (0: never).
    pub last_recv_ns: u64,
    /// Last time the server wrote data to the client (0: never).
    pub last_send_ns: u64,
    /// Bytes the server read from / wrote to this connection.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub raddr: [u8; 16],
    pub laddr: [u8; 16],
    pub rport: u16,
    pub lport: u16,
    pub family: u16,
    pub flags: u8,
    pub _pad: [u8; 1],
}

/// One ring-buffer record: a connection opened or began to close.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnEvent {
    /// `bpf_ktime_get_ns()` of the transition (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Kernel address of the socket; identifies the connection while it lives.
    pub sk: u64,
    /// One of [`event_kind`].
    pub kind: u8,
    pub _pad: [u8; 7],
    /// The connection's state. For a close of an untracked connection only the
    /// addresses, ports and family are set and `flags` lacks [`CONN_TRACKED`].
    pub info: ConnInfo,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: both types are #[repr(C)], Copy, made only of integers and byte arrays,
    // with explicit padding, so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::ConnInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<ConnInfo>(), 5 * 8 + 32 + 8);
        assert_eq!(
            core::mem::size_of::<ConnEvent>(),
            8 + 8 + 8 + core::mem::size_of::<ConnInfo>()
        );
    }
}
