//! Records and constants shared by connwatch's kernel programs (`agent-ebpf`, built
//! for the BPF target) and its userspace (`agent`, built for the host). Both compile
//! this crate, so the layout checks at the bottom run in both builds.
//!
//! Everything here is `#[repr(C)]`, `Copy`, free of pointers and padded explicitly,
//! so both sides agree on the layout byte for byte. Addresses are stored as 16 bytes:
//! an IPv4 address occupies the first four bytes and `family` says which it is.
#![no_std]

use core::mem::{offset_of, size_of};

pub mod tracepoints;

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
    /// A bound socket that neither listens nor connects (kernel 6.8+).
    pub const BOUND_INACTIVE: i32 = 13;
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
    /// there (tcp:tcp_send_reset without a socket, or skb:kfree_skb with reason
    /// NO_SOCKET). Only the addresses are set.
    pub const REFUSED: u8 = 5;
    /// A [`ConnectorEvent`]: a process of this host connected to a watched port
    /// (its socket went SYN_SENT → ESTABLISHED).
    pub const CONNECTED: u8 = 6;
    /// A [`ConnectorEvent`]: a process of this host failed to connect to a watched
    /// port (SYN_SENT → CLOSE: refused, reset, timed out, or no source port left).
    pub const CONNECT_FAILED: u8 = 7;
}

/// `ConnEvent::flags`: `bytes_in`/`bytes_out` were read from the socket. Unset when
/// userspace could not find `struct tcp_sock`'s fields in the kernel's BTF, or the
/// kernel refused a read.
pub const BYTES_KNOWN: u8 = 1;

/// `ConnEvent::flags` and `ConnectorEvent::flags`: the record is of a client socket
/// of this host connecting to a remote port watched in client mode (`--remote-port`).
/// Its addresses are the socket's own (`laddr:lport` the client's end), and a close
/// record's kind names the socket's transition (`CLOSED_BY_SERVER` is
/// ESTABLISHED → FIN_WAIT1: this client closed first). With [`BYTES_KNOWN`],
/// `bytes_in` is what reached the client (`bytes_received`, read or not) and
/// `bytes_out` what it wrote (`bytes_acked` plus still queued).
pub const CLIENT_SIDE: u8 = 2;

/// Indexes into the `COUNTERS` per-CPU array.
pub mod counter {
    /// Ring-buffer records that could not be reserved (the reader fell behind).
    pub const LOST_EVENTS: u32 = 0;
    /// SYN-ACKs retransmitted by listeners on watched ports.
    pub const SYNACK_RETRANSMITS: u32 = 1;
    /// Closes whose byte counts could not be read from the socket.
    pub const BYTES_UNREADABLE: u32 = 2;
    pub const COUNT: u32 = 3;
}

/// Entries of the array of watched local ports: one per port number.
pub const PORT_COUNT: u32 = 1 << 16;
/// How many ports may be watched at once.
pub const MAX_WATCHED_PORTS: u32 = 64;
/// Capacity of the map of watched (network namespace, port) pairs.
pub const MAX_WATCHED_INSTANCES: u32 = 256;
/// Capacity of the map of pids whose failed accepts are counted.
pub const MAX_LISTENER_PIDS: u32 = 256;
/// Failed accepts are counted per errno below this bound; larger errnos go to slot 0.
pub const MAX_ERRNO: u32 = 256;
/// Failed accepts are counted per instance slot (the value of a listener pid in
/// `LISTENER_PIDS`), `MAX_ERRNO` counters each; slot 0 collects pids without one.
pub const MAX_INSTANCE_SLOTS: u32 = 32;

/// Values of the `WATCHED_PORTS` map: which connections on the port are reported.
pub mod watch_mode {
    /// In every network namespace of the host.
    pub const ANY_NETNS: u8 = 1;
    /// Only in the namespaces listed with the port in `WATCHED_INSTANCES`.
    pub const LISTED_NETNS: u8 = 2;
}

/// Key of the `WATCHED_INSTANCES` map: a port in one network namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct WatchKey {
    pub netns: u32,
    pub port: u16,
    pub _pad: u16,
}

/// Byte offsets the programs follow from a socket (or, for a reset sent without
/// one, from the packet) to its network namespace's inode number, found in the
/// running kernel's BTF like [`TcpSockOffsets`]. A zero `net_inum` means unknown:
/// the records then carry netns 0 and the programs cannot filter by namespace.
///
/// `sock → __sk_common.skc_net.net → ns.inum`;
/// `sk_buff → dev → nd_net.net → ns.inum`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetnsOffsets {
    /// `struct sock`: the `struct net *` in `__sk_common.skc_net`.
    pub sock_net: u32,
    /// `struct net`: `ns.inum`.
    pub net_inum: u32,
    /// `struct sk_buff`: `dev`.
    pub skb_dev: u32,
    /// `struct net_device`: the `struct net *` in `nd_net`.
    pub dev_net: u32,
}

/// What the refusal program on `skb:kfree_skb` needs to read a dropped packet's
/// addresses, set by userspace before load: `struct sk_buff` offsets found in the
/// kernel's BTF, and the number this kernel gives the drop reason `NO_SOCKET` (from
/// the tracepoint's format file). A zero `head` means unknown: the program then
/// reports nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketOffsets {
    /// `struct sk_buff`: `head` (the buffer the header offsets count from).
    pub head: u32,
    /// `struct sk_buff`: `network_header` (u16).
    pub network_header: u32,
    /// `struct sk_buff`: `transport_header` (u16).
    pub transport_header: u32,
    /// `enum skb_drop_reason`: the value of `SKB_DROP_REASON_NO_SOCKET`.
    pub no_socket_reason: u32,
}

/// Byte offsets of the `struct tcp_sock` fields read when a connection closes,
/// found by userspace in the running kernel's BTF and set as a global before the
/// programs load (the programs are not CO-RE). A zero `bytes_received` means
/// "unknown": the programs then send no byte counts.
///
/// From them the kernel computes what the *application* moved, which is what
/// tells a rejection (Redis read nothing, wrote one error line):
/// read = `bytes_received - (rcv_nxt - copied_seq)` (received minus still unread),
/// written = `bytes_acked + (write_seq - snd_una)` (acknowledged plus still queued).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSockOffsets {
    pub bytes_received: u32,
    pub bytes_acked: u32,
    pub rcv_nxt: u32,
    pub copied_seq: u32,
    pub write_seq: u32,
    pub snd_una: u32,
}

/// Byte offsets in `struct sock` of what the BTF version of the state-change
/// program (`inet_sock_set_state` as a `tp_btf` program) reads from the socket
/// itself, where the tracepoint's record would have carried it: found by userspace
/// in the running kernel's BTF. The program loads them directly (the verifier
/// checks each load against the kernel's types), instead of calling
/// `bpf_probe_read_kernel` for each. A zero `num` means unknown: userspace then
/// attaches the tracepoint version instead.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOffsets {
    /// `__sk_common.skc_num`: the local port, host order (u16).
    pub num: u32,
    /// `__sk_common.skc_dport`: the remote port, network order (u16).
    pub dport: u32,
    /// `__sk_common.skc_family` (u16).
    pub family: u32,
    /// `sk_protocol` (u16).
    pub protocol: u32,
    /// `__sk_common.skc_rcv_saddr`: the local IPv4 address (4 bytes).
    pub rcv_saddr: u32,
    /// `__sk_common.skc_daddr`: the remote IPv4 address (4 bytes).
    pub daddr: u32,
    /// `__sk_common.skc_v6_rcv_saddr`: the local IPv6 address (16 bytes).
    pub v6_rcv_saddr: u32,
    /// `__sk_common.skc_v6_daddr`: the remote IPv6 address (16 bytes).
    pub v6_daddr: u32,
    /// `struct inet_sock`'s `inet_sport`: the local port, network order (u16),
    /// read when `skc_num` is 0: a socket going to CLOSE has given its port back
    /// (`inet_put_port` zeroes `skc_num` before the state changes).
    pub inet_sport: u32,
}

/// One ring-buffer record: a connection opened or began to close, or an attempt
/// was refused. Addresses and ports are the server's (local) and the client's (remote).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnEvent {
    /// `bpf_ktime_get_ns()` of the transition (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Bytes the server application read from / wrote to the connection, at its
    /// close; valid when `flags` has [`BYTES_KNOWN`].
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub raddr: [u8; 16],
    pub laddr: [u8; 16],
    pub rport: u16,
    pub lport: u16,
    pub family: u16,
    /// One of [`event_kind`].
    pub kind: u8,
    pub flags: u8,
    /// Inode number of the socket's network namespace (`net->ns.inum`, what
    /// `stat /proc/PID/ns/net` shows); 0 when the kernel's layout is unknown.
    pub netns: u32,
    /// At a close: bytes the server had written that the client had not yet
    /// acknowledged (`write_seq - snd_una`, at most `u32::MAX`); valid with
    /// `BYTES_KNOWN`. A server that drops a client whose replies piled up closes with
    /// a full send queue.
    pub unsent: u32,
}

/// How many connection records a CPU stages before it writes them to the ring
/// buffer as one [`ConnBatch`]: one ring write for this many records. A ring write
/// was the largest part of a connection record's cost in the kernel (see
/// docs/ARCHITECTURE.md).
pub const BATCH_LEN: usize = 16;

/// Connection records staged on one CPU (a per-CPU map value). The CPU writes them
/// to the ring buffer as one record when `BATCH_LEN` are in, or when userspace runs
/// the flush program on that CPU before it drains the ring. In the ring, a batch of
/// n records is `BATCH_HEADER + n × size_of::<ConnEvent>()` bytes; a lone
/// [`ConnEvent`] (written at once while a flush runs, or before userspace turned
/// staging on) is `size_of::<ConnEvent>()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnBatch {
    /// Records in `events`, oldest first.
    pub count: u32,
    /// Set while a program of this CPU makes a record, from before it takes the
    /// record's time until the record is staged: a flush that interrupts it leaves
    /// the batch alone and says so (userspace runs it again).
    pub making: u8,
    /// Set while the flush program runs on this CPU: a program that interrupts it
    /// writes its record at once instead of staging it.
    pub flushing: u8,
    pub _pad: u16,
    pub events: [ConnEvent; BATCH_LEN],
}

/// Bytes before `ConnBatch::events`.
pub const BATCH_HEADER: usize = 8;

/// Who called `connect()` on a socket bound for a watched port, taken in the
/// caller's context at CLOSE → SYN_SENT and kept (in an LRU map keyed by the socket's
/// address) until the socket leaves SYN_SENT, when its source port is known.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Connector {
    /// `bpf_get_current_cgroup_id()`: the inode number of the caller's cgroup (v2).
    pub cgroup_id: u64,
    /// Process id (tgid) in the host's PID namespace.
    pub tgid: u32,
    /// The caller's user stack (`--stacks`), encoded as [`ConnectorEvent::stack`].
    pub stack: u32,
    /// `bpf_get_current_comm()`: the calling thread's name, NUL-padded.
    pub comm: [u8; 16],
}

/// One ring-buffer record of a local client (a process of this host, whatever its
/// network namespace) whose connection to a watched port completed or failed.
/// Addresses are the client socket's: `laddr:lport` is the client's end,
/// `raddr:rport` the server's — the 4-tuple the server's accepted connection has,
/// reversed. Told from a [`ConnEvent`] by its size.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectorEvent {
    /// `bpf_ktime_get_ns()` of the transition out of SYN_SENT.
    pub ts_ns: u64,
    pub cgroup_id: u64,
    pub raddr: [u8; 16],
    pub laddr: [u8; 16],
    pub rport: u16,
    pub lport: u16,
    pub family: u16,
    /// [`event_kind::CONNECTED`] or [`event_kind::CONNECT_FAILED`].
    pub kind: u8,
    pub flags: u8,
    /// Inode number of the client socket's network namespace (0: unknown).
    pub netns: u32,
    pub tgid: u32,
    pub comm: [u8; 16],
    /// Why a failed connect failed (`CONNECT_FAILED`): the socket's `sk_err` as
    /// the kernel left it when the socket left SYN_SENT, a positive errno:
    /// `ECONNREFUSED` (111) a reset answered the SYN, `ETIMEDOUT` (110) the kernel
    /// gave up after its SYN retries, another errno (`EHOSTUNREACH` …) an ICMP
    /// error; 0: no error, the application closed the socket while it was
    /// connecting (its own connect timeout). [`CONNECT_ERR_UNKNOWN`] when the
    /// programs could not read it (`struct sock` not found in BTF, or the read
    /// failed). 0 in a `CONNECTED` record.
    pub err: u32,
    /// The caller's user stack at `connect()` (`--stacks`): the id
    /// `bpf_get_stackid` gave it in the `STACKS` map, plus one; 0 when none was
    /// taken (`--stacks` off, or the kernel could not: the map full of other
    /// stacks, no user stack). One call path has one id, whatever the connection.
    pub stack: u32,
}

/// Capacity of the map of user stacks at `connect()` with `--stacks` (distinct
/// call paths; each entry holds 127 frames, the kernel's `PERF_MAX_STACK_DEPTH`).
/// Without `--stacks` the map is created with one entry, unused.
pub const MAX_STACKS: u32 = 1024;

/// `ConnectorEvent::err` when the socket's error could not be read.
pub const CONNECT_ERR_UNKNOWN: u32 = u32::MAX;

/// Capacity of the map of sockets in SYN_SENT towards a watched port.
pub const MAX_CONNECTING: u32 = 16_384;

/// The `log` target of the kernel programs' diagnostics (aya-log), which userspace
/// forwards at debug level when `--debug-probes` is on.
pub const KERNEL_LOG_TARGET: &str = "connwatch::kernel";

// Layout checks, at compile time in both builds: a field moved, resized or
// reordered on one side fails the build instead of garbling records.
const _: () = {
    assert!(size_of::<ConnEvent>() == 72);
    assert!(offset_of!(ConnEvent, ts_ns) == 0);
    assert!(offset_of!(ConnEvent, bytes_in) == 8);
    assert!(offset_of!(ConnEvent, bytes_out) == 16);
    assert!(offset_of!(ConnEvent, raddr) == 24);
    assert!(offset_of!(ConnEvent, laddr) == 40);
    assert!(offset_of!(ConnEvent, rport) == 56);
    assert!(offset_of!(ConnEvent, lport) == 58);
    assert!(offset_of!(ConnEvent, family) == 60);
    assert!(offset_of!(ConnEvent, kind) == 62);
    assert!(offset_of!(ConnEvent, flags) == 63);
    assert!(offset_of!(ConnEvent, netns) == 64);
    assert!(offset_of!(ConnEvent, unsent) == 68);

    assert!(size_of::<Connector>() == 32);
    assert!(offset_of!(Connector, tgid) == 8);
    assert!(offset_of!(Connector, stack) == 12);
    assert!(offset_of!(Connector, comm) == 16);

    assert!(size_of::<ConnectorEvent>() == 88);
    assert!(offset_of!(ConnectorEvent, cgroup_id) == 8);
    assert!(offset_of!(ConnectorEvent, raddr) == 16);
    assert!(offset_of!(ConnectorEvent, laddr) == 32);
    assert!(offset_of!(ConnectorEvent, rport) == 48);
    assert!(offset_of!(ConnectorEvent, lport) == 50);
    assert!(offset_of!(ConnectorEvent, family) == 52);
    assert!(offset_of!(ConnectorEvent, kind) == 54);
    assert!(offset_of!(ConnectorEvent, netns) == 56);
    assert!(offset_of!(ConnectorEvent, tgid) == 60);
    assert!(offset_of!(ConnectorEvent, comm) == 64);
    assert!(offset_of!(ConnectorEvent, err) == 80);
    assert!(offset_of!(ConnectorEvent, stack) == 84);
    // The reader tells the records apart by their size.
    assert!(size_of::<ConnectorEvent>() != size_of::<ConnEvent>());
    // A batch of n ≥ 1 records is BATCH_HEADER + n × 72 bytes: never a lone record's
    // 72 or a connect record's 88.
    assert!(offset_of!(ConnBatch, making) == 4);
    assert!(offset_of!(ConnBatch, flushing) == 5);
    assert!(offset_of!(ConnBatch, events) == BATCH_HEADER);
    assert!(size_of::<ConnBatch>() == BATCH_HEADER + BATCH_LEN * size_of::<ConnEvent>());
    assert!(!BATCH_HEADER.is_multiple_of(size_of::<ConnEvent>()));
    assert!(!(size_of::<ConnectorEvent>() - BATCH_HEADER).is_multiple_of(size_of::<ConnEvent>()));
    assert!(BATCH_LEN.is_power_of_two());

    assert!(size_of::<WatchKey>() == 8);
    assert!(offset_of!(WatchKey, netns) == 0);
    assert!(offset_of!(WatchKey, port) == 4);
    assert!(size_of::<NetnsOffsets>() == 16);

    assert!(size_of::<PacketOffsets>() == 16);
    assert!(offset_of!(PacketOffsets, no_socket_reason) == 12);

    assert!(size_of::<TcpSockOffsets>() == 24);
    assert!(size_of::<SockOffsets>() == 36);
    assert!(offset_of!(TcpSockOffsets, bytes_received) == 0);
    assert!(offset_of!(TcpSockOffsets, bytes_acked) == 4);
    assert!(offset_of!(TcpSockOffsets, rcv_nxt) == 8);
    assert!(offset_of!(TcpSockOffsets, copied_seq) == 12);
    assert!(offset_of!(TcpSockOffsets, write_seq) == 16);
    assert!(offset_of!(TcpSockOffsets, snd_una) == 20);
};

#[cfg(feature = "user")]
mod user {
    // SAFETY: both types are #[repr(C)], Copy, made only of integers and byte arrays
    // with no implicit padding (tested below), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::ConnEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnectorEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Connector {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TcpSockOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NetnsOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SockOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PacketOffsets {}
    // SAFETY: as above (its padding is an explicit field, always written as 0).
    unsafe impl aya::Pod for super::WatchKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        // The sum of the fields' sizes: any padding would make the record larger.
        assert_eq!(size_of::<ConnEvent>(), 3 * 8 + 32 + 3 * 2 + 2 + 2 * 4);
        assert_eq!(size_of::<WatchKey>(), 4 + 2 + 2);
        assert_eq!(size_of::<Connector>(), 8 + 4 + 4 + 16);
        assert_eq!(
            size_of::<ConnectorEvent>(),
            2 * 8 + 32 + 3 * 2 + 2 + 2 * 4 + 16 + 2 * 4
        );
        assert_eq!(size_of::<TcpSockOffsets>(), 6 * 4);
    }

    #[test]
    fn records_are_laid_out_as_the_kernel_writes_them() {
        let ev = ConnEvent {
            ts_ns: 0x0102_0304_0506_0708,
            bytes_in: 7,
            bytes_out: 9,
            raddr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            laddr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            rport: 40_000,
            lport: 6379,
            family: AF_INET,
            kind: event_kind::CLOSED_BY_CLIENT,
            flags: BYTES_KNOWN,
            netns: 4_026_531_840,
            unsent: 65_536,
        };
        // SAFETY: ConnEvent is #[repr(C)] with no padding (checked above), so all
        // of its 72 bytes are initialized and may be viewed as bytes.
        let bytes: [u8; 72] = unsafe { core::mem::transmute(ev) };
        assert_eq!(bytes[..8], 0x0102_0304_0506_0708u64.to_ne_bytes());
        assert_eq!(bytes[8..16], 7u64.to_ne_bytes());
        assert_eq!(bytes[16..24], 9u64.to_ne_bytes());
        assert_eq!(bytes[24..28], [10, 0, 0, 2]);
        assert_eq!(bytes[40..44], [10, 0, 0, 1]);
        assert_eq!(bytes[56..58], 40_000u16.to_ne_bytes());
        assert_eq!(bytes[58..60], 6379u16.to_ne_bytes());
        assert_eq!(bytes[60..62], 2u16.to_ne_bytes());
        assert_eq!(bytes[62], 3);
        assert_eq!(bytes[63], 1);
        assert_eq!(bytes[64..68], 4_026_531_840u32.to_ne_bytes());
        assert_eq!(bytes[68..72], 65_536u32.to_ne_bytes());
    }
}
