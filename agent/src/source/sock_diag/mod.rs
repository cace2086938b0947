//! TCP sockets of the watched ports, as the kernel sees them right now.
//!
//! One `NETLINK_SOCK_DIAG` dump (`SOCK_DIAG_BY_FAMILY` with an `inet_diag_req_v2`)
//! per address family, written directly on libc: the request is a few dozen bytes
//! and the reply a flat list of `inet_diag_msg`s, so a netlink crate would add more
//! than it saves. What it gives that the probe cannot:
//!
//! - connections that existed before the agent started, with their traffic totals
//!   and idle times (`struct tcp_info`), turned into [`Event::Seeded`];
//! - traffic and idle times of every open connection each interval: the probes
//!   do not run per message. [`lookup_connections`] asks for the connections the
//!   agent tracks one by one (a hash lookup each, batched), so its cost does not
//!   follow the host's other sockets; [`open_connections`] dumps them all;
//! - the accept-queue depth and backlog of a listener (`idiag_rqueue`/`idiag_wqueue`
//!   of a LISTEN socket) and its inode, which [`crate::source::host`] maps to a pid.
//!
//! The kernel filters by state (`idiag_states`) and by local port (a small
//! `INET_DIAG_REQ_BYTECODE` program); userspace checks both again, so a kernel that
//! ignored a filter could cost time but never correctness.
//!
//! Parsing is separate from the syscalls and works on byte slices: every length is
//! checked, and a malformed reply is an `InvalidData` error, never a panic.

use std::io;
use std::net::SocketAddr;
use std::ops::BitOr;

use crate::model::{Activity, ConnKey, Event, Nanos};
use crate::source::netns::Netns;

mod lookup;
mod netlink;
pub use lookup::{Lookups, lookup_client_connections, lookup_connections};
use netlink::*;

/// TCP states, as in `include/net/tcp_states.h` (the values `idiag_state` carries).
pub mod state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    pub const NEW_SYN_RECV: u8 = 12;
}

/// A set of TCP states, the `idiag_states` bitmask (bit `1 << state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StateMask(u32);

impl StateMask {
    pub const NONE: StateMask = StateMask(0);
    pub const ALL: StateMask = StateMask(u32::MAX);
    pub const ESTABLISHED: StateMask = StateMask::of(state::ESTABLISHED);
    pub const CLOSE_WAIT: StateMask = StateMask::of(state::CLOSE_WAIT);
    pub const LISTEN: StateMask = StateMask::of(state::LISTEN);

    /// The set holding only `state` (empty for a state beyond the mask's 32 bits).
    pub const fn of(state: u8) -> StateMask {
        match 1u32.checked_shl(state as u32) {
            Some(bit) => StateMask(bit),
            None => StateMask(0),
        }
    }

    pub const fn union(self, other: StateMask) -> StateMask {
        StateMask(self.0 | other.0)
    }

    pub const fn contains(self, state: u8) -> bool {
        self.0 & StateMask::of(state).0 != 0
    }

    pub const fn bits(self) -> u32 {
        self.0
    }
}

impl BitOr for StateMask {
    type Output = StateMask;
    fn bitor(self, other: StateMask) -> StateMask {
        self.union(other)
    }
}

/// One TCP socket from the dump. Addresses are normalized (IPv4-mapped → IPv4).
///
/// The `tcp_info` figures are `None` when the kernel sent none (TIME_WAIT and
/// SYN_RECV mini-sockets) or a struct too short to hold them (before Linux 4.1 for
/// the byte counts). A LISTEN socket's `tcp_info` holds only its queue figures, so
/// its times and counts read 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiagSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// A [`state`] value.
    pub state: u8,
    /// Inode of the socket file; 0 while no process holds it (e.g. still in the
    /// accept queue, or a TIME_WAIT / SYN_RECV mini-socket).
    pub inode: u64,
    pub uid: u32,
    /// The interface the socket is bound to (`idiag_if`); 0 for none, as usual.
    pub ifindex: u32,
    /// Bytes not yet read; for a LISTEN socket, connections waiting in the accept queue.
    pub rqueue: u32,
    /// Bytes not yet acknowledged; for a LISTEN socket, the accept-queue limit (backlog).
    pub wqueue: u32,
    /// Milliseconds since data was last received (`tcpi_last_data_recv`).
    pub last_data_recv_ms: Option<u32>,
    /// Milliseconds since data was last sent (`tcpi_last_data_sent`).
    pub last_data_sent_ms: Option<u32>,
    /// Payload bytes received (`tcpi_bytes_received`, Linux 4.1+).
    pub bytes_received: Option<u64>,
    /// Payload bytes sent and acknowledged by the peer (`tcpi_bytes_acked`, Linux 4.1+).
    pub bytes_acked: Option<u64>,
}

impl DiagSocket {
    pub fn key(&self) -> ConnKey {
        ConnKey::new(self.local, self.remote)
    }

    /// The traffic figures of this connection as of `now`.
    ///
    /// The byte counts are what the server *application* moved, as the close
    /// record counts them: received minus still unread (`idiag_rqueue`), and
    /// acknowledged plus still queued (`idiag_wqueue`). `last_active` is the later
    /// of the last receive and the last send. For a
    /// connection that never carried data the kernel's clocks start when it was
    /// established, so `last_active` is then the time it opened: the start of its
    /// idleness, which is what the core measures. Totals missing from an old
    /// kernel's `tcp_info` count as 0.
    pub fn activity(&self, now: Nanos) -> Activity {
        let idle_ms = match (self.last_data_recv_ms, self.last_data_sent_ms) {
            (Some(r), Some(s)) => Some(r.min(s)),
            (r, s) => r.or(s),
        };
        Activity {
            bytes_in: self
                .bytes_received
                .unwrap_or(0)
                .saturating_sub(u64::from(self.rqueue)),
            bytes_out: self.bytes_acked.unwrap_or(0) + u64::from(self.wqueue),
            last_active: idle_ms.map(|ms| now.saturating_sub(u64::from(ms) * 1_000_000)),
            queued: Some(u64::from(self.wqueue)),
        }
    }
}

/// States of a server-side connection that is open for the core: accepted by the
/// kernel and not yet closed by the server.
const OPEN: StateMask = StateMask::ESTABLISHED.union(StateMask::CLOSE_WAIT);

/// TCP sockets of namespace `netns`, of both address families, whose local port is
/// in `ports` and whose state is in `states`, in the kernel's order (IPv4 first).
pub fn tcp_sockets(netns: &Netns, ports: &[u16], states: StateMask) -> io::Result<Vec<DiagSocket>> {
    let ports = sorted(ports);
    if ports.is_empty() || states == StateMask::NONE {
        return Ok(Vec::new());
    }
    let mut sock = NetlinkSocket::open(netns)?;
    let mut out = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        sock.dump(family, &ports, states, &mut out)?;
    }
    Ok(out)
}

/// `ports` sorted and deduplicated, as the dump's filter wants them.
fn sorted(ports: &[u16]) -> Vec<u16> {
    let mut p = ports.to_vec();
    p.sort_unstable();
    p.dedup();
    p
}

/// One [`Event::Seeded`] per open server-side connection on `ports` in `netns`, at
/// time `now`, sorted by key (which carries `key_netns`: the namespace's inode, or 0
/// where the kernel programs cannot tell namespaces apart).
///
/// Server-side means a listener holds the connection's local address and port: a
/// client socket that happens to use a watched port as its *source* port is not a
/// connection to Redis.
pub fn seed_events(
    netns: &Netns,
    key_netns: u32,
    ports: &[u16],
    now: Nanos,
) -> io::Result<Vec<Event>> {
    let seeded = open_connections(netns, key_netns, ports, now)?
        .into_iter()
        .map(|(key, activity)| Event::Seeded {
            ts: now,
            key,
            activity,
        });
    Ok(seeded.collect())
}

/// Client mode: one [`Event::Seeded`] per connection of this host's open towards
/// one of the remote `ports` in `netns` (an ESTABLISHED client socket), turned
/// round as the pipeline holds client-mode connections (the Redis is the key's
/// `local` end; what the client wrote is what the server read, at most). Their
/// process is not known: it connected before the agent looked.
pub fn client_seed_events(
    netns: &Netns,
    key_netns: u32,
    ports: &[u16],
    now: Nanos,
) -> io::Result<Vec<Event>> {
    let ports = sorted(ports);
    let mut sockets = Vec::new();
    if !ports.is_empty() {
        let mut sock = NetlinkSocket::open(netns)?;
        for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
            sock.dump_by_peer_port(family, &ports, StateMask::ESTABLISHED, &mut sockets)?;
        }
    }
    let mut events: Vec<Event> = sockets
        .into_iter()
        .map(|s| {
            let a = s.activity(now);
            Event::Seeded {
                ts: now,
                key: ConnKey::in_netns(key_netns, s.remote, s.local),
                activity: Activity {
                    bytes_in: a.bytes_out,
                    bytes_out: a.bytes_in,
                    last_active: a.last_active,
                    queued: None,
                },
            }
        })
        .collect();
    events.sort_by_key(|e| match e {
        Event::Seeded { key, .. } => Some(*key),
        _ => None,
    });
    Ok(events)
}

/// Every open server-side connection on `ports` in `netns` with its traffic figures
/// as of `now`, sorted by key (stamped with `key_netns`): the interval's scan (see
/// `Tracker::activity_from_scan`).
///
/// Each family's dump of open sockets walks every established socket of the host
/// (the port filter runs per socket), so a family is dumped only when one of its
/// sockets listens on a watched port — found first from the listening table, which
/// is cheap. An IPv4-only Redis costs one walk, not two.
pub fn open_connections(
    netns: &Netns,
    key_netns: u32,
    ports: &[u16],
    now: Nanos,
) -> io::Result<Vec<(ConnKey, Activity)>> {
    let ports = sorted(ports);
    let mut sockets = Vec::new();
    if !ports.is_empty() {
        let mut sock = NetlinkSocket::open(netns)?;
        for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
            let before = sockets.len();
            sock.dump(family, &ports, StateMask::LISTEN, &mut sockets)?;
            if sockets.len() > before {
                sock.dump(family, &ports, OPEN, &mut sockets)?;
            }
        }
    }
    let mut conns: Vec<(ConnKey, Activity)> = server_side(&sockets)
        .map(|s| (s.key().with_netns(key_netns), s.activity(now)))
        .collect();
    conns.sort_by_key(|(key, _)| *key);
    Ok(conns)
}

/// The open connections among `sockets` whose local address is held by one of the
/// LISTEN sockets among them.
fn server_side(sockets: &[DiagSocket]) -> impl Iterator<Item = &DiagSocket> {
    let listeners: Vec<SocketAddr> = sockets
        .iter()
        .filter(|s| s.state == state::LISTEN)
        .map(|s| s.local)
        .collect();
    sockets.iter().filter(move |s| {
        OPEN.contains(s.state)
            && listeners.iter().any(|l| {
                l.port() == s.local.port() && (l.ip().is_unspecified() || l.ip() == s.local.ip())
            })
    })
}

#[cfg(test)]
mod tests {
    use super::netlink::*;
    use super::*;
    use crate::model::*;
    use std::net::IpAddr;
    use std::os::fd::AsRawFd;

    // ---- fabricated netlink buffers -------------------------------------------

    pub(super) const SEQ: u32 = 7;

    pub(super) fn nlmsg(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + payload.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&1234u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(align4(len), 0);
        m
    }

    pub(super) fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let len = 4 + payload.len();
        let mut a = Vec::new();
        a.extend_from_slice(&(len as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(payload);
        a.resize(align4(len), 0);
        a
    }

    /// A `tcp_info` of `len` bytes with the fields we read filled in.
    pub(super) fn tcp_info(
        len: usize,
        state: u8,
        sent_ms: u32,
        recv_ms: u32,
        acked: u64,
        received: u64,
    ) -> Vec<u8> {
        let mut t = vec![0u8; len.max(TCPI_BYTES_RECEIVED + 8)];
        t[0] = state;
        t[TCPI_LAST_DATA_SENT..][..4].copy_from_slice(&sent_ms.to_ne_bytes());
        t[TCPI_LAST_DATA_RECV..][..4].copy_from_slice(&recv_ms.to_ne_bytes());
        t[TCPI_BYTES_ACKED..][..8].copy_from_slice(&acked.to_ne_bytes());
        t[TCPI_BYTES_RECEIVED..][..8].copy_from_slice(&received.to_ne_bytes());
        t.truncate(len);
        t
    }

    pub(super) fn ip_bytes(ip: IpAddr) -> [u8; 16] {
        let mut b = [0u8; 16];
        match ip {
            IpAddr::V4(v4) => b[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => b = v6.octets(),
        }
        b
    }

    /// The payload of a SOCK_DIAG_BY_FAMILY message: `inet_diag_msg` + `attrs`.
    pub(super) fn diag(
        family: i32,
        state: u8,
        local: &str,
        remote: &str,
        queues: (u32, u32),
        (uid, inode): (u32, u32),
        attrs: &[u8],
    ) -> Vec<u8> {
        let local: SocketAddr = local.parse().unwrap();
        let remote: SocketAddr = remote.parse().unwrap();
        let mut p = vec![family as u8, state, 0, 0];
        p.extend_from_slice(&local.port().to_be_bytes());
        p.extend_from_slice(&remote.port().to_be_bytes());
        p.extend_from_slice(&ip_bytes(local.ip()));
        p.extend_from_slice(&ip_bytes(remote.ip()));
        p.extend_from_slice(&[0u8; 12]); // interface, cookie
        p.extend_from_slice(&0u32.to_ne_bytes()); // expires
        for v in [queues.0, queues.1, uid, inode] {
            p.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(p.len(), INET_DIAG_MSG_LEN);
        p.extend_from_slice(attrs);
        p
    }

    pub(super) fn sock(
        state: u8,
        local: &str,
        remote: &str,
        queues: (u32, u32),
        inode: u64,
    ) -> DiagSocket {
        DiagSocket {
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            state,
            inode,
            uid: 1000,
            ifindex: 0,
            rqueue: queues.0,
            wqueue: queues.1,
            last_data_recv_ms: None,
            last_data_sent_ms: None,
            bytes_received: None,
            bytes_acked: None,
        }
    }

    /// A dump datagram: a LISTEN socket, an IPv4 connection, a v4-mapped IPv6
    /// connection and a native IPv6 one, each with full tcp_info.
    fn sample_chunk(flags: u16) -> (Vec<u8>, Vec<DiagSocket>) {
        let info = |state, s, r, a, b| attr(INET_DIAG_INFO, &tcp_info(232, state, s, r, a, b));
        let mut buf = Vec::new();
        buf.extend(nlmsg(
            SOCK_DIAG_BY_FAMILY,
            flags,
            SEQ,
            &diag(
                libc::AF_INET,
                state::LISTEN,
                "0.0.0.0:6379",
                "0.0.0.0:0",
                (3, 511),
                (1000, 555),
                &info(state::LISTEN, 9, 9, 0, 0),
            ),
        ));
        buf.extend(nlmsg(
            SOCK_DIAG_BY_FAMILY,
            flags,
            SEQ,
            &diag(
                libc::AF_INET,
                state::ESTABLISHED,
                "10.0.0.1:6379",
                "10.0.0.2:40000",
                (5, 0),
                (1000, 556),
                &info(state::ESTABLISHED, 250, 1500, 11, 5),
            ),
        ));
        // Another attribute before INET_DIAG_INFO must be skipped over.
        let mut attrs = attr(1, &[1, 2, 3]); // INET_DIAG_MEMINFO, odd length: padded
        attrs.extend(info(state::CLOSE_WAIT, 7, 8, 1 << 40, 3));
        buf.extend(nlmsg(
            SOCK_DIAG_BY_FAMILY,
            flags,
            SEQ,
            &diag(
                libc::AF_INET6,
                state::CLOSE_WAIT,
                "[::ffff:10.0.0.1]:6379",
                "[::ffff:10.0.0.3]:40001",
                (0, 0),
                (1000, 0),
                &attrs,
            ),
        ));
        // No tcp_info at all (a mini-socket).
        buf.extend(nlmsg(
            SOCK_DIAG_BY_FAMILY,
            flags,
            SEQ,
            &diag(
                libc::AF_INET6,
                state::TIME_WAIT,
                "[fd00::1]:6379",
                "[fd00::2]:40002",
                (0, 0),
                (1000, 0),
                &[],
            ),
        ));
        let expected = vec![
            DiagSocket {
                last_data_sent_ms: Some(9),
                last_data_recv_ms: Some(9),
                bytes_acked: Some(0),
                bytes_received: Some(0),
                ..sock(state::LISTEN, "0.0.0.0:6379", "0.0.0.0:0", (3, 511), 555)
            },
            DiagSocket {
                last_data_sent_ms: Some(250),
                last_data_recv_ms: Some(1500),
                bytes_acked: Some(11),
                bytes_received: Some(5),
                ..sock(
                    state::ESTABLISHED,
                    "10.0.0.1:6379",
                    "10.0.0.2:40000",
                    (5, 0),
                    556,
                )
            },
            DiagSocket {
                last_data_sent_ms: Some(7),
                last_data_recv_ms: Some(8),
                bytes_acked: Some(1 << 40),
                bytes_received: Some(3),
                ..sock(
                    state::CLOSE_WAIT,
                    "10.0.0.1:6379",
                    "10.0.0.3:40001",
                    (0, 0),
                    0,
                )
            },
            sock(
                state::TIME_WAIT,
                "[fd00::1]:6379",
                "[fd00::2]:40002",
                (0, 0),
                0,
            ),
        ];
        (buf, expected)
    }

    pub(super) fn done(seq: u32) -> Vec<u8> {
        nlmsg(NLMSG_DONE, NLM_F_MULTI_FLAG, seq, &0i32.to_ne_bytes())
    }

    pub(super) const NLM_F_MULTI_FLAG: u16 = 0x2;

    pub(super) fn error(seq: u32, errno: i32) -> Vec<u8> {
        let mut p = (-errno).to_ne_bytes().to_vec();
        p.extend_from_slice(&[0u8; NLMSG_HDRLEN]);
        nlmsg(NLMSG_ERROR, 0, seq, &p)
    }

    fn parse(buf: &[u8]) -> io::Result<(ChunkStatus, Vec<DiagSocket>)> {
        let mut out = Vec::new();
        let status = parse_chunk(buf, SEQ, &mut out)?;
        Ok((status, out))
    }

    fn invalid_data(result: io::Result<(ChunkStatus, Vec<DiagSocket>)>) -> String {
        match result {
            Err(e) if e.kind() == io::ErrorKind::InvalidData => e.to_string(),
            other => panic!("expected InvalidData, got {other:?}"),
        }
    }

    // ---- parsing ------------------------------------------------------------

    #[test]
    fn parses_a_multipart_dump_across_datagrams() {
        let (first, expected) = sample_chunk(NLM_F_MULTI_FLAG);
        let (status, got) = parse(&first).unwrap();
        assert_eq!(
            status,
            ChunkStatus::default(),
            "no DONE yet: more datagrams follow"
        );
        assert_eq!(got, expected);

        let (status, got) = parse(&done(SEQ)).unwrap();
        assert_eq!(
            status,
            ChunkStatus {
                done: true,
                interrupted: false
            }
        );
        assert!(got.is_empty());
    }

    #[test]
    fn done_ends_the_chunk_even_with_bytes_after_it() {
        let (mut buf, expected) = sample_chunk(NLM_F_MULTI_FLAG);
        buf.extend(done(SEQ));
        buf.extend(nlmsg(SOCK_DIAG_BY_FAMILY, NLM_F_MULTI_FLAG, SEQ, &[0u8; 3])); // never read
        let (status, got) = parse(&buf).unwrap();
        assert!(status.done);
        assert_eq!(got, expected);
    }

    #[test]
    fn messages_of_other_requests_are_skipped() {
        let (chunk, _) = sample_chunk(NLM_F_MULTI_FLAG);
        let mut stale = Vec::new();
        let mut out = Vec::new();
        stale.extend(&chunk);
        stale.extend(done(SEQ));
        let status = parse_chunk(&stale, SEQ + 1, &mut out).unwrap();
        assert_eq!(status, ChunkStatus::default());
        assert!(out.is_empty());
    }

    #[test]
    fn dump_intr_flag_is_reported() {
        let (buf, expected) = sample_chunk(NLM_F_MULTI_FLAG | NLM_F_DUMP_INTR);
        let (status, got) = parse(&buf).unwrap();
        assert_eq!(
            status,
            ChunkStatus {
                done: false,
                interrupted: true
            }
        );
        assert_eq!(got, expected);
    }

    #[test]
    fn nlmsg_error_is_the_errno_and_an_ack_is_ignored() {
        let err = parse(&error(SEQ, libc::EPERM)).unwrap_err();
        assert_eq!(err.raw_os_error(), None, "wrapped with context");
        assert_eq!(err.kind(), io::Error::from_raw_os_error(libc::EPERM).kind());
        assert!(err.to_string().contains("sock_diag dump"), "{err}");

        let mut buf = error(SEQ, 0);
        buf.extend(done(SEQ));
        let (status, got) = parse(&buf).unwrap();
        assert!(status.done);
        assert!(got.is_empty());
    }

    #[test]
    fn done_with_a_negative_status_is_an_error() {
        let buf = nlmsg(
            NLMSG_DONE,
            NLM_F_MULTI_FLAG,
            SEQ,
            &(-libc::ENOBUFS).to_ne_bytes(),
        );
        let err = parse(&buf).unwrap_err();
        assert!(
            err.to_string()
                .contains(&io::Error::from_raw_os_error(libc::ENOBUFS).to_string()),
            "{err}"
        );
        // A DONE without the status word (old kernels) is a plain end.
        let (status, _) = parse(&nlmsg(NLMSG_DONE, NLM_F_MULTI_FLAG, SEQ, &[])).unwrap();
        assert!(status.done);
    }

    #[test]
    fn noop_is_skipped_and_overrun_or_unknown_types_are_errors() {
        let mut buf = nlmsg(NLMSG_NOOP, 0, SEQ, &[]);
        buf.extend(done(SEQ));
        assert!(parse(&buf).unwrap().0.done);

        assert!(invalid_data(parse(&nlmsg(NLMSG_OVERRUN, 0, SEQ, &[]))).contains("overrun"));
        assert!(invalid_data(parse(&nlmsg(99, 0, SEQ, &[]))).contains("type 99"));
    }

    #[test]
    fn tcp_info_fields_follow_its_length() {
        let parse_info = |len| {
            let payload = diag(
                libc::AF_INET,
                state::ESTABLISHED,
                "10.0.0.1:6379",
                "10.0.0.2:40000",
                (0, 0),
                (1000, 1),
                &attr(
                    INET_DIAG_INFO,
                    &tcp_info(len, state::ESTABLISHED, 100, 200, 300, 400),
                ),
            );
            let s = parse_diag_msg(&payload).unwrap();
            (
                s.last_data_sent_ms,
                s.last_data_recv_ms,
                s.bytes_acked,
                s.bytes_received,
            )
        };
        assert_eq!(parse_info(0), (None, None, None, None));
        assert_eq!(parse_info(47), (None, None, None, None));
        assert_eq!(parse_info(48), (Some(100), None, None, None));
        assert_eq!(parse_info(56), (Some(100), Some(200), None, None));
        // Linux 3.x: the struct ended after tcpi_max_pacing_rate.
        assert_eq!(parse_info(120), (Some(100), Some(200), None, None));
        assert_eq!(parse_info(128), (Some(100), Some(200), Some(300), None));
        assert_eq!(
            parse_info(136),
            (Some(100), Some(200), Some(300), Some(400))
        );
        // Newer kernels append fields; they are ignored.
        assert_eq!(
            parse_info(300),
            (Some(100), Some(200), Some(300), Some(400))
        );
    }

    #[cfg(target_env = "gnu")]
    #[test]
    fn tcp_info_offsets_match_the_c_struct() {
        use std::mem::offset_of;
        assert_eq!(
            offset_of!(libc::tcp_info, tcpi_last_data_sent),
            TCPI_LAST_DATA_SENT
        );
        assert_eq!(
            offset_of!(libc::tcp_info, tcpi_last_data_recv),
            TCPI_LAST_DATA_RECV
        );
        assert_eq!(
            offset_of!(libc::tcp_info, tcpi_bytes_acked),
            TCPI_BYTES_ACKED
        );
        assert_eq!(
            offset_of!(libc::tcp_info, tcpi_bytes_received),
            TCPI_BYTES_RECEIVED
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let (buf, _) = sample_chunk(NLM_F_MULTI_FLAG);
        // Where whole messages end: cutting there is a shorter, valid datagram.
        let mut boundaries = vec![0];
        let mut at = 0;
        while at < buf.len() {
            at += align4(u32_at(&buf, at).unwrap() as usize);
            boundaries.push(at);
        }
        assert_eq!(boundaries.len(), 5);
        for cut in 0..buf.len() {
            let result = parse(&buf[..cut]);
            if boundaries.contains(&cut) {
                assert!(result.is_ok(), "cut at {cut}: {result:?}");
            } else {
                invalid_data(result);
            }
        }
    }

    #[test]
    fn a_message_cut_inside_fixes_its_own_length() {
        // The same messages with their nlmsg_len shrunk: now the inet_diag_msg or
        // an attribute is cut, which the inner checks must catch.
        let full = nlmsg(
            SOCK_DIAG_BY_FAMILY,
            0,
            SEQ,
            &diag(
                libc::AF_INET,
                1,
                "1.2.3.4:5",
                "5.6.7.8:9",
                (0, 0),
                (0, 0),
                &attr(INET_DIAG_INFO, &tcp_info(136, 1, 1, 2, 3, 4)),
            ),
        );
        let attr_start = NLMSG_HDRLEN + INET_DIAG_MSG_LEN;
        for len in NLMSG_HDRLEN..full.len() {
            let mut m = full[..len].to_vec();
            m[..4].copy_from_slice(&(len as u32).to_ne_bytes());
            let result = parse(&m);
            match len {
                l if l < attr_start => {
                    assert!(invalid_data(result).contains("inet_diag_msg truncated"))
                }
                l if l == attr_start => {
                    assert_eq!(result.unwrap().1.len(), 1, "no attributes is fine")
                }
                l if l < attr_start + 4 => {
                    assert!(invalid_data(result).contains("attribute header truncated"))
                }
                _ => assert!(invalid_data(result).contains("attribute length")),
            }
        }
    }

    #[test]
    fn bad_lengths_and_families_are_errors() {
        let mut short = nlmsg(SOCK_DIAG_BY_FAMILY, 0, SEQ, &[]);
        short[..4].copy_from_slice(&15u32.to_ne_bytes());
        assert!(invalid_data(parse(&short)).contains("length 15"));

        let mut long = nlmsg(SOCK_DIAG_BY_FAMILY, 0, SEQ, &[]);
        long[..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(invalid_data(parse(&long)).contains("out of range"));

        let mut zero_attr = diag(
            libc::AF_INET,
            1,
            "1.2.3.4:5",
            "5.6.7.8:9",
            (0, 0),
            (0, 0),
            &[0, 0, 2, 0],
        );
        assert!(
            parse_diag_msg(&zero_attr)
                .unwrap_err()
                .to_string()
                .contains("attribute length 0")
        );
        zero_attr[INET_DIAG_MSG_LEN..][..2].copy_from_slice(&200u16.to_ne_bytes());
        assert!(
            parse_diag_msg(&zero_attr)
                .unwrap_err()
                .to_string()
                .contains("attribute length 200")
        );

        let unix = diag(
            libc::AF_UNIX,
            1,
            "1.2.3.4:5",
            "5.6.7.8:9",
            (0, 0),
            (0, 0),
            &[],
        );
        assert!(
            parse_diag_msg(&unix)
                .unwrap_err()
                .to_string()
                .contains("family 1")
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        // A fixed-seed xorshift: random garbage, and valid datagrams with random
        // bytes flipped. Anything may come out except a panic.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (valid, _) = sample_chunk(NLM_F_MULTI_FLAG);
        for round in 0..20_000 {
            let buf: Vec<u8> = if round % 2 == 0 {
                let len = (next() % 300) as usize;
                (0..len).map(|_| next() as u8).collect()
            } else {
                let mut b = valid.clone();
                for _ in 0..(next() % 4 + 1) {
                    let i = (next() as usize) % b.len();
                    b[i] = next() as u8;
                }
                b
            };
            let mut out = Vec::new();
            let _ = parse_chunk(&buf, u32_at(&buf, 8).unwrap_or(SEQ), &mut out);
        }
    }

    // ---- request and port filter ---------------------------------------------

    #[test]
    fn request_layout() {
        let states = StateMask::ESTABLISHED | StateMask::LISTEN;
        let req = request(libc::AF_INET6 as u8, states, &[6379, 6380], 42);
        let bc_len = 2 * BC_PER_PORT;
        assert_eq!(req.len(), NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN + 4 + bc_len);
        assert_eq!(u32_at(&req, 0), Some(req.len() as u32));
        assert_eq!(u16_at(&req, 4), Some(SOCK_DIAG_BY_FAMILY));
        assert_eq!(u16_at(&req, 6), Some(NLM_F_REQUEST | NLM_F_DUMP));
        assert_eq!(u32_at(&req, 8), Some(42));
        let r = &req[NLMSG_HDRLEN..];
        assert_eq!(
            &r[..4],
            &[libc::AF_INET6 as u8, libc::IPPROTO_TCP as u8, 0b10, 0]
        );
        assert_eq!(u32_at(r, 4), Some((1 << 1) | (1 << 10)));
        assert_eq!(u16_at(r, INET_DIAG_REQ_V2_LEN), Some((4 + bc_len) as u16));
        assert_eq!(
            u16_at(r, INET_DIAG_REQ_V2_LEN + 2),
            Some(INET_DIAG_REQ_BYTECODE)
        );
        assert_eq!(
            &r[INET_DIAG_REQ_V2_LEN + 4..],
            &port_filter(&[6379, 6380]).unwrap()[..]
        );
    }

    /// `inet_diag_bc_audit` + `valid_cc` of net/ipv4/inet_diag.c, for the ops we emit.
    fn kernel_audit(bc: &[u8]) -> bool {
        let valid_cc = |cc: usize| {
            let (mut len, mut at) = (bc.len() as isize, 0usize);
            while len >= 0 {
                if cc as isize > len {
                    return false;
                }
                if cc as isize == len {
                    return true;
                }
                let yes = bc[at + 1] as isize;
                if yes < 4 || yes & 3 != 0 {
                    return false;
                }
                len -= yes;
                at += yes as usize;
            }
            false
        };
        let (mut len, mut at) = (bc.len() as isize, 0usize);
        while len > 0 {
            let min_len = match bc[at] {
                BC_JMP => 4,
                BC_S_GE | BC_S_LE | BC_D_GE | BC_D_LE if len >= 8 => 8,
                _ => return false,
            };
            let yes = bc[at + 1] as isize;
            let no = u16::from_ne_bytes([bc[at + 2], bc[at + 3]]) as isize;
            for jump in [yes, no] {
                if jump < min_len || jump > len + 4 || jump & 3 != 0 {
                    return false;
                }
            }
            if no < len && !valid_cc((len - no) as usize) {
                return false;
            }
            at += yes as usize;
            len -= yes;
        }
        len == 0
    }

    /// `inet_diag_bc_run` for a socket whose local port is `sport`, its peer's `dport`.
    fn kernel_run(bc: &[u8], sport: u16, dport: u16) -> bool {
        let (mut len, mut at) = (bc.len() as isize, 0usize);
        while len > 0 {
            let arg = |at: usize| u16::from_ne_bytes([bc[at + 6], bc[at + 7]]);
            let yes = match bc[at] {
                BC_JMP => false,
                BC_S_GE => sport >= arg(at),
                BC_S_LE => sport <= arg(at),
                BC_D_GE => dport >= arg(at),
                BC_D_LE => dport <= arg(at),
                other => panic!("op {other}"),
            };
            let step = if yes {
                bc[at + 1] as isize
            } else {
                u16::from_ne_bytes([bc[at + 2], bc[at + 3]]) as isize
            };
            len -= step;
            at = at.wrapping_add(step as usize);
        }
        len == 0
    }

    #[test]
    fn port_filter_passes_the_kernel_audit_and_accepts_exactly_its_ports() {
        for ports in [
            vec![6379],
            vec![1, 2, 3],
            vec![0, 6379, 6380, 65535],
            (1000..1000 + MAX_FILTER_PORTS as u16).collect(),
        ] {
            let bc = port_filter(&ports).unwrap();
            assert_eq!(bc.len(), ports.len() * BC_PER_PORT);
            assert!(kernel_audit(&bc), "{ports:?}");
            for sport in 0..=u16::MAX {
                assert_eq!(
                    kernel_run(&bc, sport, 6379),
                    ports.contains(&sport),
                    "port {sport} with {ports:?}"
                );
            }
        }
    }

    #[test]
    fn a_peer_port_filter_accepts_exactly_its_peers_ports() {
        let ports = [6379, 6380];
        let bc = port_filter_of(&ports, true).unwrap();
        assert!(kernel_audit(&bc));
        for port in 0..=u16::MAX {
            assert_eq!(
                kernel_run(&bc, 40_000, port),
                ports.contains(&port),
                "{port}"
            );
            // Its own port is not looked at.
            assert!(!kernel_run(&bc, port, 40_000), "{port}");
        }
    }

    #[test]
    fn port_filter_only_for_a_few_ports() {
        assert_eq!(port_filter(&[]), None);
        let most: Vec<u16> = (0..MAX_FILTER_PORTS as u16).collect();
        assert!(port_filter(&most).is_some_and(|bc| kernel_audit(&bc)));
        let too_many: Vec<u16> = (0..=MAX_FILTER_PORTS as u16).collect();
        assert!(port_filter(&too_many).is_none());
    }

    // ---- pure helpers ---------------------------------------------------------

    #[test]
    fn state_mask() {
        let m = StateMask::ESTABLISHED | StateMask::CLOSE_WAIT;
        assert_eq!(m.bits(), (1 << 1) | (1 << 8));
        assert!(m.contains(state::ESTABLISHED) && m.contains(state::CLOSE_WAIT));
        assert!(!m.contains(state::LISTEN));
        assert_eq!(StateMask::of(32), StateMask::NONE);
        assert!(!StateMask::ALL.contains(200));
        assert!(StateMask::ALL.contains(state::NEW_SYN_RECV));
    }

    #[test]
    fn activity_uses_the_latest_of_send_and_receive() {
        let now: Nanos = 100 * 1_000_000_000;
        let base = DiagSocket {
            bytes_received: Some(5),
            bytes_acked: Some(11),
            last_data_recv_ms: Some(3_000),
            last_data_sent_ms: Some(2_000),
            ..sock(
                state::ESTABLISHED,
                "10.0.0.1:6379",
                "10.0.0.2:40000",
                (0, 0),
                1,
            )
        };
        let a = base.activity(now);
        assert_eq!(
            a,
            Activity {
                bytes_in: 5,
                bytes_out: 11,
                last_active: Some(98 * 1_000_000_000),
                queued: Some(0)
            }
        );

        let only_recv = DiagSocket {
            last_data_sent_ms: None,
            ..base.clone()
        };
        assert_eq!(
            only_recv.activity(now).last_active,
            Some(97 * 1_000_000_000)
        );

        let old_kernel = DiagSocket {
            bytes_received: None,
            bytes_acked: None,
            last_data_recv_ms: None,
            last_data_sent_ms: None,
            ..base.clone()
        };
        assert_eq!(
            old_kernel.activity(now),
            Activity {
                bytes_in: 0,
                bytes_out: 0,
                last_active: None,
                queued: Some(0)
            }
        );

        let idle_beyond_boot = DiagSocket {
            last_data_recv_ms: Some(u32::MAX),
            last_data_sent_ms: Some(u32::MAX),
            ..base
        };
        assert_eq!(idle_beyond_boot.activity(now).last_active, Some(0));
    }

    #[test]
    fn server_side_needs_a_listener_on_the_local_address() {
        let sockets = vec![
            sock(state::LISTEN, "0.0.0.0:6379", "0.0.0.0:0", (0, 128), 1),
            sock(state::LISTEN, "127.0.0.1:6380", "0.0.0.0:0", (0, 128), 2),
            sock(state::ESTABLISHED, "10.0.0.1:6379", "10.0.0.2:1", (0, 0), 3),
            sock(
                state::CLOSE_WAIT,
                "127.0.0.1:6380",
                "127.0.0.1:2",
                (0, 0),
                4,
            ),
            // Source port 6380 on another address: a client socket, not Redis's.
            sock(
                state::ESTABLISHED,
                "10.0.0.1:6380",
                "10.0.0.9:7000",
                (0, 0),
                5,
            ),
            // Not open.
            sock(state::FIN_WAIT1, "10.0.0.1:6379", "10.0.0.2:3", (0, 0), 6),
            sock(state::ESTABLISHED, "10.0.0.1:6381", "10.0.0.2:4", (0, 0), 7),
        ];
        let inodes: Vec<u64> = server_side(&sockets).map(|s| s.inode).collect();
        assert_eq!(inodes, vec![3, 4]);
    }

    // ---- the real kernel -----------------------------------------------------

    pub(super) mod live {
        use super::*;
        use socket2::{Domain, Socket, Type};
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        use std::os::unix::fs::MetadataExt;
        use std::time::{Duration, Instant};

        pub(crate) fn listen(addr: &str, backlog: i32) -> TcpListener {
            let addr: SocketAddr = addr.parse().unwrap();
            let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
            if addr.is_ipv6() {
                s.set_only_v6(false).unwrap();
            }
            s.bind(&addr.into()).unwrap();
            s.listen(backlog).unwrap();
            s.into()
        }

        pub(crate) fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
            let source: SocketAddr = source.parse().unwrap();
            let s = Socket::new(Domain::for_address(source), Type::STREAM, None).unwrap();
            s.bind(&source.into()).unwrap();
            s.connect(&to.into()).unwrap();
            s.into()
        }

        pub(crate) fn inode_of(fd: &impl AsRawFd) -> u64 {
            std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .unwrap()
                .ino()
        }

        pub(crate) fn my_uid() -> u32 {
            std::fs::metadata("/proc/self").unwrap().uid()
        }

        /// Dumps until `want` holds (the kernel finishes handshakes and delivers
        /// data asynchronously), at most 3 s, and returns the last dump.
        fn dump_until(
            ports: &[u16],
            states: StateMask,
            want: impl Fn(&[DiagSocket]) -> bool,
        ) -> Vec<DiagSocket> {
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                // The fixtures close nothing, so they have no TIME_WAIT socket; one in
                // the dump is a leftover of another test's client whose ephemeral
                // port happens to equal a fixture's port (load tests leave thousands).
                let got: Vec<DiagSocket> = tcp_sockets(&own(), ports, states)
                    .unwrap()
                    .into_iter()
                    .filter(|s| s.state != state::TIME_WAIT)
                    .collect();
                if want(&got) || Instant::now() > deadline {
                    return got;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }

        /// Idle times vary; checks they are present and recent, then drops them.
        fn without_times(mut sockets: Vec<DiagSocket>) -> Vec<DiagSocket> {
            for s in &mut sockets {
                assert!(has_recent_times(s), "{s:?}");
                s.last_data_recv_ms = None;
                s.last_data_sent_ms = None;
            }
            sockets.sort_by_key(|s| (s.state, s.remote));
            sockets
        }

        fn has_recent_times(s: &DiagSocket) -> bool {
            let recent = |ms: Option<u32>| ms.is_some_and(|ms| ms < 60_000);
            recent(s.last_data_recv_ms) && recent(s.last_data_sent_ms)
        }

        /// 127.0.0.1 listener with backlog 7; three clients (one from 127.0.0.2)
        /// sending 5, 7 and 0 bytes; only the first is accepted, and answered with
        /// 11 bytes. A second listener with a client of its own is not watched.
        struct V4 {
            listener: TcpListener,
            port: u16,
            clients: Vec<TcpStream>,
            accepted: TcpStream,
            _other: (TcpListener, TcpStream),
        }

        impl V4 {
            fn new() -> V4 {
                let listener = listen("127.0.0.1:0", 7);
                let addr = listener.local_addr().unwrap();
                let mut clients = vec![
                    TcpStream::connect(addr).unwrap(),
                    connect_from("127.0.0.2:0", addr),
                    TcpStream::connect(addr).unwrap(),
                ];
                clients[0].write_all(b"hello").unwrap();
                clients[1].write_all(b"1234567").unwrap();
                let (mut accepted, peer) = listener.accept().unwrap();
                assert_eq!(peer, clients[0].local_addr().unwrap(), "accept is FIFO");
                // The server reads 3 of the 5 bytes: 2 stay unread.
                accepted.read_exact(&mut [0u8; 3]).unwrap();
                accepted.write_all(b"hello world").unwrap();
                let mut reply = [0u8; 11];
                clients[0].read_exact(&mut reply).unwrap();

                let other = listen("127.0.0.1:0", 7);
                let other_client = TcpStream::connect(other.local_addr().unwrap()).unwrap();
                V4 {
                    port: addr.port(),
                    listener,
                    clients,
                    accepted,
                    _other: (other, other_client),
                }
            }

            fn addr(&self) -> SocketAddr {
                self.listener.local_addr().unwrap()
            }

            fn client(&self, i: usize) -> SocketAddr {
                self.clients[i].local_addr().unwrap()
            }

            fn key(&self, i: usize) -> ConnKey {
                ConnKey::new(self.addr(), self.client(i))
            }

            /// What the dump must say, sorted by (state, remote), without times.
            fn expected(&self) -> Vec<DiagSocket> {
                let uid = my_uid();
                let conn = |i: usize, queues, inode, received, acked| DiagSocket {
                    uid,
                    bytes_received: Some(received),
                    bytes_acked: Some(acked),
                    ..sock(
                        state::ESTABLISHED,
                        &self.addr().to_string(),
                        &self.client(i).to_string(),
                        queues,
                        inode,
                    )
                };
                let mut conns = vec![
                    // Accepted, 2 of its 5 bytes unread, its reply acknowledged.
                    conn(0, (2, 0), inode_of(&self.accepted), 5, 11),
                    // Still in the accept queue: no file, so no inode.
                    conn(1, (7, 0), 0, 7, 0),
                    conn(2, (0, 0), 0, 0, 0),
                ];
                conns.sort_by_key(|s| s.remote);
                let listen = DiagSocket {
                    uid,
                    bytes_received: Some(0),
                    bytes_acked: Some(0),
                    // rqueue: the two connections not accepted; wqueue: the backlog.
                    ..sock(
                        state::LISTEN,
                        &self.addr().to_string(),
                        "0.0.0.0:0",
                        (2, 7),
                        inode_of(&self.listener),
                    )
                };
                conns.push(listen);
                conns
            }
        }

        #[test]
        fn v4_listener_and_its_connections() {
            let f = V4::new();
            let expected = f.expected();
            let got = dump_until(&[f.port], StateMask::ALL, |got| {
                got.iter().all(has_recent_times) && without_times(got.to_vec()) == expected
            });
            assert_eq!(without_times(got), expected);
            assert_eq!(f.client(1).ip(), "127.0.0.2".parse::<IpAddr>().unwrap());
        }

        #[test]
        fn state_filter_is_applied() {
            let f = V4::new();
            let expected: Vec<DiagSocket> = f
                .expected()
                .into_iter()
                .filter(|s| s.state == state::LISTEN)
                .collect();
            let got = dump_until(&[f.port], StateMask::LISTEN, |got| {
                got.first().is_some_and(|l| l.rqueue == 2)
            });
            assert_eq!(without_times(got), expected);
        }

        #[test]
        fn several_ports_in_one_dump() {
            let a = listen("127.0.0.1:0", 3);
            let b = listen("[::1]:0", 4);
            let _c = listen("127.0.0.1:0", 5); // not asked for
            let ports = [
                a.local_addr().unwrap().port(),
                b.local_addr().unwrap().port(),
            ];
            let mut got: Vec<(SocketAddr, u32)> = tcp_sockets(&own(), &ports, StateMask::LISTEN)
                .unwrap()
                .into_iter()
                .map(|s| (s.local, s.wqueue))
                .collect();
            got.sort();
            let mut want = vec![(a.local_addr().unwrap(), 3), (b.local_addr().unwrap(), 4)];
            want.sort();
            assert_eq!(got, want);
            // Too many ports for the kernel-side filter: userspace filters alone.
            let mut many: Vec<u16> = (1..=MAX_FILTER_PORTS as u16 + 1).collect();
            many.extend(ports);
            assert!(port_filter(&many).is_none());
            let all = tcp_sockets(&own(), &many, StateMask::LISTEN).unwrap();
            assert!(
                all.iter().all(|s| many.contains(&s.local.port())),
                "{all:?}"
            );
            let mut got_many: Vec<(SocketAddr, u32)> = all
                .into_iter()
                .filter(|s| ports.contains(&s.local.port()))
                .map(|s| (s.local, s.wqueue))
                .collect();
            got_many.sort();
            assert_eq!(got_many, want);
            assert_eq!(tcp_sockets(&own(), &[], StateMask::ALL).unwrap(), vec![]);
            assert_eq!(
                tcp_sockets(&own(), &ports, StateMask::NONE).unwrap(),
                vec![]
            );
        }

        #[test]
        fn v6_loopback() {
            let listener = listen("[::1]:0", 5);
            let addr = listener.local_addr().unwrap();
            let mut clients = [
                TcpStream::connect(addr).unwrap(),
                TcpStream::connect(addr).unwrap(),
            ];
            clients[1].write_all(b"abc").unwrap();
            let uid = my_uid();
            let conn = |c: &TcpStream, rq, received| DiagSocket {
                uid,
                bytes_received: Some(received),
                bytes_acked: Some(0),
                ..sock(
                    state::ESTABLISHED,
                    &addr.to_string(),
                    &c.local_addr().unwrap().to_string(),
                    (rq, 0),
                    0,
                )
            };
            let mut expected = vec![conn(&clients[0], 0, 0), conn(&clients[1], 3, 3)];
            expected.sort_by_key(|s| s.remote);
            expected.push(DiagSocket {
                uid,
                bytes_received: Some(0),
                bytes_acked: Some(0),
                ..sock(
                    state::LISTEN,
                    &addr.to_string(),
                    "[::]:0",
                    (2, 5),
                    inode_of(&listener),
                )
            });
            let got = dump_until(&[addr.port()], StateMask::ALL, |got| {
                got.iter()
                    .any(|s| s.state == state::LISTEN && s.rqueue == 2)
                    && got.iter().any(|s| s.bytes_received == Some(3))
            });
            assert_eq!(without_times(got), expected);
        }

        #[test]
        fn dual_stack_listener_reports_ipv4_clients_as_ipv4() {
            let listener = listen("[::]:0", 5);
            let port = listener.local_addr().unwrap().port();
            let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let got = dump_until(&[port], StateMask::ESTABLISHED, |got| got.len() == 1);
            let pairs: Vec<(SocketAddr, SocketAddr)> =
                got.iter().map(|s| (s.local, s.remote)).collect();
            assert_eq!(
                pairs,
                vec![(
                    SocketAddr::from(([127, 0, 0, 1], port)),
                    client.local_addr().unwrap()
                )]
            );

            let seeded = seed_events(&own(), 0, &[port], 1_000_000_000_000).unwrap();
            let keys: Vec<ConnKey> = seeded
                .iter()
                .map(|e| match e {
                    Event::Seeded { key, .. } => *key,
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(keys, vec![ConnKey::new(pairs[0].0, pairs[0].1)]);
        }

        #[test]
        fn seed_events_are_the_server_side_connections() {
            let f = V4::new();
            // A client that uses the watched port as its source port, on another
            // address, talking to some other server: not a Redis connection.
            let elsewhere = listen("127.0.0.3:0", 5);
            let impostor = connect_from(
                &format!("127.0.0.2:{}", f.port),
                elsewhere.local_addr().unwrap(),
            );
            let impostor_key = ConnKey::new(
                impostor.local_addr().unwrap(),
                elsewhere.local_addr().unwrap(),
            );
            // Make sure the kernel has settled: every figure in place.
            let expected = f.expected();
            dump_until(&[f.port], StateMask::ALL, |got| {
                got.iter()
                    .any(|s| s.state == state::LISTEN && s.rqueue == 2)
                    && expected.iter().all(|e| {
                        got.iter().any(|g| {
                            g.remote == e.remote
                                && g.bytes_received == e.bytes_received
                                && g.bytes_acked == e.bytes_acked
                        })
                    })
            });
            let est = tcp_sockets(&own(), &[f.port], StateMask::ESTABLISHED).unwrap();
            assert!(
                est.iter().any(|s| s.key() == impostor_key),
                "the dump itself has it"
            );

            let now = crate::model::monotonic_now();
            let events = seed_events(&own(), 0, &[f.port], now).unwrap();
            let mut want: Vec<(ConnKey, u64, u64)> =
                // What the server application read and wrote: 3 of 5 bytes read;
                // the accept-queued one received 7 that nobody read.
                vec![(f.key(0), 3, 11), (f.key(1), 0, 0), (f.key(2), 0, 0)];
            want.sort();
            assert_eq!(events.len(), 3, "{events:?}");
            for (event, (key, bytes_in, bytes_out)) in events.iter().zip(want) {
                let Event::Seeded {
                    ts,
                    key: k,
                    activity,
                } = event
                else {
                    panic!("{event:?}")
                };
                assert_eq!(
                    (*ts, *k, activity.bytes_in, activity.bytes_out),
                    (now, key, bytes_in, bytes_out)
                );
                let last = activity.last_active.unwrap();
                assert!(
                    last <= now && now - last < 60 * 1_000_000_000,
                    "{last} vs {now}"
                );
            }
        }

        #[test]
        fn open_connections_are_every_server_side_one_with_its_figures() {
            let f = V4::new();
            dump_until(&[f.port], StateMask::ESTABLISHED, |got| {
                got.iter().any(|s| s.bytes_received == Some(7))
                    && got.iter().any(|s| s.bytes_acked == Some(11))
            });
            let now = crate::model::monotonic_now();
            let scan = open_connections(&own(), 0, &[f.port], now).unwrap();
            let got: Vec<(ConnKey, u64, u64)> = scan
                .iter()
                .map(|(k, a)| (*k, a.bytes_in, a.bytes_out))
                .collect();
            let mut want = vec![(f.key(0), 3, 11), (f.key(1), 0, 0), (f.key(2), 0, 0)];
            want.sort();
            assert_eq!(got, want);
            assert!(
                scan.iter()
                    .all(|(_, a)| a.last_active.is_some_and(|t| t <= now))
            );
            assert_eq!(open_connections(&own(), 0, &[], now).unwrap(), vec![]);
        }
    }

    pub(super) fn own() -> Netns {
        Netns::own().unwrap()
    }
}
