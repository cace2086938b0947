//! Exact lookups of known connections: the interval's scan at a cost that does
//! not grow with the host's other sockets.
//!
//! A dump of open sockets walks the kernel's whole established hash, which holds
//! every namespace's sockets, TIME_WAIT ones included (a load generator leaves
//! 100,000 of them): its cost follows the host, not what we watch. A request
//! *without* `NLM_F_DUMP`, naming one connection by its addresses and ports
//! (cookie `INET_DIAG_NOCOOKIE`), is answered from one hash lookup
//! (`inet_diag_find_one_icsk`): one `inet_diag_msg`, or an error (ENOENT).
//!
//! Many requests go in one datagram; the kernel handles them in order and
//! answers each before `sendto` returns, every reply carrying its request's
//! sequence number. Two things of the kernel's lookup matter here:
//!
//! - It searches the IPv4 table for IPv4 addresses whatever the request's family,
//!   so a connection of a dual-stack listener (an AF_INET6 socket with
//!   `::ffff:a.b.c.d`, which `ConnKey` holds as IPv4) is found by an AF_INET
//!   request, and answered as AF_INET6 (normalized back when parsed).
//! - When no connection matches, it falls back to the *listener* of the local
//!   address and answers with that; so an answer counts only if it is the
//!   connection asked for, and open. A TIME_WAIT answer is a closed one.
//!
//! The scan never falls back to the dump for a large tracked set. Both pay the
//! same per connection (its `tcp_info`, about 2–3 µs); the dump packs ~80 replies
//! per datagram and is as cheap or up to a quarter cheaper for thousands of
//! connections in a namespace that holds nothing else (8,000: 17–18 ms, against
//! 17–23 ms of lookups in our runs), but its extra cost
//! — a walk of every socket of every namespace, ~0.1 µs each — grows with what
//! the agent cannot see, and 100,000 TIME_WAIT sockets already cost it more than
//! that (tests/tests/scan_cost.rs, docs/PERFORMANCE.md). Scans of thousands run
//! every few intervals anyway.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};

use super::netlink::*;
use super::{DiagSocket, OPEN, StateMask, sorted};
use crate::model::{Activity, ConnKey, Nanos};
use crate::source::netns::Netns;

/// `INET_DIAG_NOCOOKIE`: find the socket by its addresses alone.
pub(super) const INET_DIAG_NOCOOKIE: u32 = u32::MAX;
/// A lookup request: `nlmsghdr` + `inet_diag_req_v2`, no attribute.
pub(super) const LOOKUP_REQ_LEN: usize = NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN;
/// Requests per datagram. Each reply (about 400 bytes; 1.3 KiB of receive buffer)
/// is queued before `sendto` returns: 64 fit in the usual 208 KiB receive buffer
/// with room to spare (about 160 do). With a smaller buffer the kernel drops the
/// rest and says so (ENOBUFS): those are asked again in smaller batches.
pub(super) const LOOKUP_BATCH: usize = 64;
/// Times a lookup whose reply was dropped is asked again.
pub(super) const LOOKUP_ROUNDS: usize = 4;

/// The connections looked up and what became of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lookups {
    /// The connections found open, with their traffic figures, sorted by key.
    pub conns: Vec<(ConnKey, Activity)>,
    /// Every key the kernel answered for, found or not, sorted. A key missing here
    /// got no answer (a failed lookup): neither open nor gone.
    pub answered: Vec<ConnKey>,
}

/// Looks up each of `keys` (connections on `ports` in `netns`, stamped with
/// `key_netns`) and returns the open ones with their figures as of `now`: what
/// [`super::open_connections`] says of the same keys, at a cost proportional to
/// them.
///
/// As for the dump, a connection counts only if a listener holds its local
/// address (found first from the listening table, which is cheap). A lookup names
/// the listener's interface: an accepted socket is bound where its listener is
/// (a VRF). An IPv6 link-local connection is bound to the interface it came in on,
/// which no key records: those are taken from a dump of IPv6 sockets.
pub fn lookup_connections(
    netns: &Netns,
    key_netns: u32,
    ports: &[u16],
    keys: &[ConnKey],
    now: Nanos,
) -> io::Result<Lookups> {
    let ports = sorted(ports);
    let mut out = Lookups::default();
    if keys.is_empty() || ports.is_empty() {
        // Nothing to look up, or no listener: none is open.
        out.answered = keys.iter().map(|k| k.with_netns(key_netns)).collect();
        out.answered.sort_unstable();
        return Ok(out);
    }
    let mut sock = NetlinkSocket::open(netns)?;
    let mut listeners = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        sock.dump(family, &ports, StateMask::LISTEN, &mut listeners)?;
    }
    let mut targets = Vec::with_capacity(keys.len());
    let mut by_dump = HashSet::new();
    for key in keys.iter().map(|k| k.with_netns(key_netns)) {
        match listener_of(&listeners, key.local) {
            None => out.answered.push(key),
            Some(_) if link_local(&key) => {
                by_dump.insert(key);
            }
            Some(l) => targets.extend(Target::new(key, l.ifindex)),
        }
    }
    let answers = sock.lookup(&targets)?;
    let mut failed = 0;
    for (target, answer) in targets.iter().zip(answers) {
        match answer {
            Answer::Socket(s) => {
                if target.is(&s) && OPEN.contains(s.state) {
                    out.conns.push((target.key, s.activity(now)));
                }
                out.answered.push(target.key);
            }
            Answer::Error(libc::ENOENT) => out.answered.push(target.key),
            Answer::Error(_) | Answer::Pending => failed += 1,
        }
    }
    if failed > 0 {
        log::debug!("sock_diag: {failed} of {} lookups failed", targets.len());
    }
    if !by_dump.is_empty() {
        let mut v6 = Vec::new();
        sock.dump(libc::AF_INET6 as u8, &ports, OPEN, &mut v6)?;
        for s in v6 {
            let key = s.key().with_netns(key_netns);
            if by_dump.contains(&key) {
                out.conns.push((key, s.activity(now)));
            }
        }
        out.answered.extend(by_dump);
    }
    out.conns.sort_by_key(|(key, _)| *key);
    out.answered.sort_unstable();
    Ok(out)
}

/// Client mode: looks up this host's own connections to remote Redis servers.
/// Each key is turned round (the Redis is `key.local`, as the pipeline holds it):
/// the socket looked up is the client's, named by its own end first, and its
/// figures are turned round too (what the client read is what the server wrote;
/// what the client wrote, what the server's kernel took). No listener is asked
/// for: a client socket is bound to no interface but a VRF's (not supported), and
/// an IPv6 link-local one is left unanswered (neither open nor gone).
pub fn lookup_client_connections(
    netns: &Netns,
    key_netns: u32,
    keys: &[ConnKey],
    now: Nanos,
) -> io::Result<Lookups> {
    let turn = |k: ConnKey| ConnKey {
        netns: k.netns,
        local: k.remote,
        remote: k.local,
    };
    let mut out = Lookups::default();
    if keys.is_empty() {
        return Ok(out);
    }
    let mut sock = NetlinkSocket::open(netns)?;
    let mut targets = Vec::with_capacity(keys.len());
    for key in keys.iter().map(|k| k.with_netns(key_netns)) {
        if link_local(&key) {
            continue;
        }
        match Target::new(turn(key), 0) {
            Some(t) => targets.push(t),
            None => out.answered.push(key),
        }
    }
    let answers = sock.lookup(&targets)?;
    for (target, answer) in targets.iter().zip(answers) {
        let key = turn(target.key);
        match answer {
            Answer::Socket(s) => {
                if target.is(&s) && OPEN.contains(s.state) {
                    let a = s.activity(now);
                    let server_side = Activity {
                        bytes_in: a.bytes_out,
                        bytes_out: a.bytes_in,
                        last_active: a.last_active,
                        queued: None,
                    };
                    out.conns.push((key, server_side));
                }
                out.answered.push(key);
            }
            Answer::Error(libc::ENOENT) => out.answered.push(key),
            Answer::Error(_) | Answer::Pending => {}
        }
    }
    out.conns.sort_by_key(|(key, _)| *key);
    out.answered.sort_unstable();
    Ok(out)
}

/// The first listener holding local address `local`.
fn listener_of(listeners: &[DiagSocket], local: SocketAddr) -> Option<&DiagSocket> {
    listeners.iter().find(|l| {
        l.local.port() == local.port()
            && (l.local.ip().is_unspecified() || l.local.ip() == local.ip())
    })
}

/// An IPv6 connection with a link-local end: its socket is bound to the interface
/// it came in on, and a lookup without that interface misses it.
fn link_local(key: &ConnKey) -> bool {
    [key.local.ip(), key.remote.ip()]
        .iter()
        .any(|ip| matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local()))
}

/// One connection to look up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) key: ConnKey,
    /// The interface its socket is bound to (`idiag_if`; 0: none).
    pub(super) ifindex: u32,
}

impl Target {
    /// `None` for a key whose two ends are of different families: no socket has it.
    pub(super) fn new(key: ConnKey, ifindex: u32) -> Option<Target> {
        (key.local.is_ipv4() == key.remote.is_ipv4()).then_some(Target { key, ifindex })
    }

    /// Whether `sock` is this connection (and not, say, its listener).
    pub(super) fn is(&self, sock: &DiagSocket) -> bool {
        sock.local == self.key.local && sock.remote == self.key.remote
    }
}

/// Appends the request looking up `target` as request `seq`.
pub(super) fn lookup_request(target: &Target, seq: u32, out: &mut Vec<u8>) {
    let family = if target.key.local.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // nlmsghdr: no NLM_F_DUMP, no NLM_F_ACK (an error is answered anyway).
    out.extend_from_slice(&(LOOKUP_REQ_LEN as u32).to_ne_bytes());
    out.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    out.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    // inet_diag_req_v2
    out.push(family as u8);
    out.push(libc::IPPROTO_TCP as u8);
    out.push(1 << (INET_DIAG_INFO - 1));
    out.push(0);
    out.extend_from_slice(&OPEN.bits().to_ne_bytes()); // a lookup ignores the states
    // inet_diag_sockid: src is the socket's own end (Redis's), dst the peer's.
    out.extend_from_slice(&target.key.local.port().to_be_bytes());
    out.extend_from_slice(&target.key.remote.port().to_be_bytes());
    out.extend_from_slice(&ip_bytes(target.key.local.ip()));
    out.extend_from_slice(&ip_bytes(target.key.remote.ip()));
    out.extend_from_slice(&target.ifindex.to_ne_bytes());
    out.extend_from_slice(&INET_DIAG_NOCOOKIE.to_ne_bytes());
    out.extend_from_slice(&INET_DIAG_NOCOOKIE.to_ne_bytes());
}

/// An address as `inet_diag_sockid` holds it: IPv4 in the first 4 bytes.
fn ip_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            b
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// What the kernel said to one lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Answer {
    /// Nothing yet (or its reply was dropped).
    Pending,
    /// A socket: the connection asked for, or (see the module) another one.
    Socket(DiagSocket),
    /// An error number (positive): ENOENT when no socket matches.
    Error(i32),
}

/// Parses one datagram of replies to the lookups numbered `first`,
/// `first + 1`, … (one per entry of `answers`), filling in the pending ones.
/// Replies of other numbers (stale) and a repeated one are skipped. Returns how
/// many were filled in.
pub(super) fn parse_answers(
    mut buf: &[u8],
    first: u32,
    answers: &mut [Answer],
) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(msg) = next_message(&mut buf)? {
        let Some(slot) = usize::try_from(msg.seq.wrapping_sub(first))
            .ok()
            .and_then(|i| answers.get_mut(i))
        else {
            continue;
        };
        let answer = match msg.kind {
            NLMSG_NOOP | NLMSG_DONE => continue,
            NLMSG_ERROR => match error_code(msg.payload)? {
                0 => continue, // an acknowledgement, which was not asked for
                errno => Answer::Error(errno),
            },
            NLMSG_OVERRUN => return Err(invalid("netlink overrun: data lost".into())),
            SOCK_DIAG_BY_FAMILY => Answer::Socket(parse_diag_msg(msg.payload)?),
            other => return Err(invalid(format!("unexpected netlink message type {other}"))),
        };
        if *slot == Answer::Pending {
            *slot = answer;
            filled += 1;
        }
    }
    Ok(filled)
}

impl NetlinkSocket {
    /// Looks up every target; the answers are in the targets' order. A lookup whose
    /// reply the kernel dropped is asked again, in smaller batches, up to
    /// [`LOOKUP_ROUNDS`] times; after that its answer stays `Pending`.
    pub(super) fn lookup(&mut self, targets: &[Target]) -> io::Result<Vec<Answer>> {
        let mut answers = vec![Answer::Pending; targets.len()];
        let mut batch = LOOKUP_BATCH;
        let mut msg = Vec::with_capacity(batch * LOOKUP_REQ_LEN);
        for _ in 0..LOOKUP_ROUNDS {
            let pending: Vec<usize> = (0..targets.len())
                .filter(|&i| answers[i] == Answer::Pending)
                .collect();
            if pending.is_empty() {
                break;
            }
            let mut at = 0;
            while at < pending.len() {
                let chunk = &pending[at..pending.len().min(at + batch)];
                at += chunk.len();
                let first = self.seq.wrapping_add(1);
                msg.clear();
                for &i in chunk {
                    self.seq = self.seq.wrapping_add(1);
                    lookup_request(&targets[i], self.seq, &mut msg);
                }
                self.send(&msg)?;
                let mut got = vec![Answer::Pending; chunk.len()];
                if self.read_answers(first, &mut got)? {
                    batch = (batch / 2).max(1);
                }
                for (&i, answer) in chunk.iter().zip(got) {
                    answers[i] = answer;
                }
            }
        }
        Ok(answers)
    }

    /// Reads the replies to one batch, which the kernel queued before `sendto`
    /// returned. Returns whether some were dropped (the receive buffer was full).
    fn read_answers(&mut self, first: u32, got: &mut [Answer]) -> io::Result<bool> {
        let mut left = got.len();
        let mut dropped = false;
        while left > 0 {
            match recv_queued(&self.fd, &mut self.buf)? {
                Received::Datagram(n) => {
                    let chunk = self.buf.get(..n).ok_or_else(|| {
                        invalid(format!("sock_diag reply of {n} bytes overflows the buffer"))
                    })?;
                    left = left.saturating_sub(parse_answers(chunk, first, got)?);
                }
                Received::Overrun => dropped = true,
                // Everything queued is read: the missing replies were dropped.
                Received::Nothing => return Ok(true),
            }
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::sock_diag::state;
    use crate::source::sock_diag::tests::live::{listen, my_uid};
    use crate::source::sock_diag::tests::{
        NLM_F_MULTI_FLAG, attr, diag, done, error, nlmsg, own, sock, tcp_info,
    };
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    fn key(local: &str, remote: &str) -> ConnKey {
        ConnKey::new(local.parse().unwrap(), remote.parse().unwrap())
    }

    fn target(local: &str, remote: &str, ifindex: u32) -> Target {
        Target::new(key(local, remote), ifindex).unwrap()
    }

    // ---- the request ----------------------------------------------------------

    /// `nlmsghdr` of a lookup: 72 bytes, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST only.
    fn header(seq: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&72u32.to_ne_bytes());
        h.extend_from_slice(&20u16.to_ne_bytes());
        h.extend_from_slice(&1u16.to_ne_bytes());
        h.extend_from_slice(&seq.to_ne_bytes());
        h.extend_from_slice(&0u32.to_ne_bytes());
        h
    }

    #[test]
    fn a_lookup_is_an_inet_diag_req_v2_naming_one_connection_without_dump() {
        let mut got = Vec::new();
        lookup_request(&target("10.0.0.1:6379", "10.0.0.2:40000", 0), 9, &mut got);
        let mut want = header(9);
        // AF_INET, TCP, INET_DIAG_INFO, pad; states ESTABLISHED | CLOSE_WAIT.
        want.extend_from_slice(&[2, 6, 0b10, 0]);
        want.extend_from_slice(&0x0102u32.to_ne_bytes());
        // sport 6379 (0x18eb), dport 40000 (0x9c40), big-endian.
        want.extend_from_slice(&[0x18, 0xeb, 0x9c, 0x40]);
        want.extend_from_slice(&[10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&0u32.to_ne_bytes()); // interface
        want.extend_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
        assert_eq!(got, want);
        assert_eq!(got.len(), LOOKUP_REQ_LEN);

        // IPv6, bound to interface 3, appended after the first.
        lookup_request(&target("[fd00::1]:6379", "[fd00::2]:1", 3), 10, &mut got);
        want.extend(header(10));
        want.extend_from_slice(&[10, 6, 0b10, 0]);
        want.extend_from_slice(&0x0102u32.to_ne_bytes());
        want.extend_from_slice(&[0x18, 0xeb, 0, 1]);
        want.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        want.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        want.extend_from_slice(&3u32.to_ne_bytes());
        want.extend_from_slice(&[0xff; 8]);
        assert_eq!(got, want);
    }

    #[test]
    fn keys_no_socket_can_have_and_link_local_ones() {
        assert_eq!(Target::new(key("10.0.0.1:6379", "[fd00::2]:1"), 0), None);
        assert_eq!(Target::new(key("[fd00::1]:6379", "10.0.0.2:1"), 0), None);
        // IPv4-mapped ends are IPv4 in a key: an AF_INET lookup.
        let mapped = target("[::ffff:10.0.0.1]:6379", "[::ffff:10.0.0.2]:1", 0);
        let mut req = Vec::new();
        lookup_request(&mapped, 1, &mut req);
        assert_eq!(req[NLMSG_HDRLEN], libc::AF_INET as u8);
        assert_eq!(&req[NLMSG_HDRLEN + 12..][..4], &[10, 0, 0, 1]);

        assert!(link_local(&key("[fe80::1]:6379", "[fd00::2]:1")));
        assert!(link_local(&key("[fd00::1]:6379", "[fe80::2]:1")));
        assert!(!link_local(&key("[fd00::1]:6379", "[fd00::2]:1")));
        assert!(!link_local(&key("10.0.0.1:6379", "169.254.0.1:1")));
    }

    #[test]
    fn a_key_is_looked_up_through_the_listener_of_its_local_address() {
        let listeners = [
            DiagSocket {
                ifindex: 0,
                ..sock(state::LISTEN, "0.0.0.0:6379", "0.0.0.0:0", (0, 128), 1)
            },
            // Bound to interface 4 (a VRF): its connections are too.
            DiagSocket {
                ifindex: 4,
                ..sock(state::LISTEN, "127.0.0.1:6380", "0.0.0.0:0", (0, 128), 2)
            },
            sock(state::LISTEN, "[::]:6381", "[::]:0", (0, 128), 3),
        ];
        let of = |local: &str| {
            listener_of(&listeners, local.parse().unwrap()).map(|l| (l.inode, l.ifindex))
        };
        assert_eq!(of("10.0.0.1:6379"), Some((1, 0)));
        assert_eq!(of("127.0.0.1:6380"), Some((2, 4)));
        assert_eq!(of("10.0.0.1:6380"), None, "another address");
        assert_eq!(of("10.0.0.1:6381"), Some((3, 0)), "a dual-stack listener");
        assert_eq!(of("[fd00::1]:6381"), Some((3, 0)));
        assert_eq!(of("10.0.0.1:6382"), None);

        // idiag_if, at offset 40 of inet_diag_msg, is read into `ifindex`.
        let mut payload = diag(
            libc::AF_INET,
            state::LISTEN,
            "127.0.0.1:6380",
            "0.0.0.0:0",
            (0, 128),
            (1000, 2),
            &[],
        );
        payload[40..44].copy_from_slice(&4u32.to_ne_bytes());
        assert_eq!(parse_diag_msg(&payload).unwrap().ifindex, 4);
    }

    // ---- the replies ----------------------------------------------------------

    /// A reply to lookup `seq`: the socket `local`–`remote` in `state`, with
    /// tcp_info (sent 1 ms ago, received 2 ms ago, 3 bytes acknowledged, 4 received).
    fn reply(seq: u32, state: u8, local: &str, remote: &str) -> Vec<u8> {
        let info = tcp_info(232, state, 1, 2, 3, 4);
        let payload = diag(
            libc::AF_INET,
            state,
            local,
            remote,
            (0, 0),
            (1000, 7),
            &attr(INET_DIAG_INFO, &info),
        );
        nlmsg(SOCK_DIAG_BY_FAMILY, 0, seq, &payload)
    }

    fn socket(state: u8, local: &str, remote: &str) -> DiagSocket {
        DiagSocket {
            last_data_sent_ms: Some(1),
            last_data_recv_ms: Some(2),
            bytes_acked: Some(3),
            bytes_received: Some(4),
            ..sock(state, local, remote, (0, 0), 7)
        }
    }

    #[test]
    fn replies_fill_their_own_lookup_by_sequence_number() {
        let first = 100;
        let mut buf = Vec::new();
        buf.extend(reply(
            first + 1,
            state::ESTABLISHED,
            "10.0.0.1:6379",
            "10.0.0.2:2",
        ));
        buf.extend(error(first, libc::ENOENT));
        // An acknowledgement (not asked for), a stale reply, one past the batch.
        buf.extend(error(first + 2, 0));
        buf.extend(reply(
            first - 1,
            state::ESTABLISHED,
            "10.0.0.1:6379",
            "10.0.0.2:9",
        ));
        buf.extend(reply(
            first + 3,
            state::ESTABLISHED,
            "10.0.0.1:6379",
            "10.0.0.2:9",
        ));
        buf.extend(done(first + 2));
        let mut answers = vec![Answer::Pending; 3];
        assert_eq!(parse_answers(&buf, first, &mut answers).unwrap(), 2);
        assert_eq!(
            answers,
            vec![
                Answer::Error(libc::ENOENT),
                Answer::Socket(socket(state::ESTABLISHED, "10.0.0.1:6379", "10.0.0.2:2")),
                Answer::Pending,
            ]
        );
        // A second reply to an answered lookup changes nothing.
        let again = reply(first, state::LISTEN, "10.0.0.1:6379", "0.0.0.0:0");
        assert_eq!(parse_answers(&again, first, &mut answers).unwrap(), 0);
        assert_eq!(answers[0], Answer::Error(libc::ENOENT));
        // The listener the kernel answers with when the connection is gone.
        let listener = reply(first + 2, state::LISTEN, "10.0.0.1:6379", "0.0.0.0:0");
        assert_eq!(parse_answers(&listener, first, &mut answers).unwrap(), 1);
        let asked = target("10.0.0.1:6379", "10.0.0.2:3", 0);
        let Answer::Socket(l) = &answers[2] else {
            panic!("{:?}", answers[2])
        };
        assert!(!asked.is(l), "the listener is not the connection asked for");
        assert!(target("10.0.0.1:6379", "10.0.0.2:2", 0).is(&socket(
            state::ESTABLISHED,
            "10.0.0.1:6379",
            "10.0.0.2:2"
        )));
    }

    #[test]
    fn sequence_numbers_wrap_around() {
        let first = u32::MAX;
        let mut buf = reply(0, state::ESTABLISHED, "10.0.0.1:6379", "10.0.0.2:2");
        buf.extend(error(u32::MAX, libc::EINVAL));
        let mut answers = vec![Answer::Pending; 2];
        assert_eq!(parse_answers(&buf, first, &mut answers).unwrap(), 2);
        assert_eq!(
            answers,
            vec![
                Answer::Error(libc::EINVAL),
                Answer::Socket(socket(state::ESTABLISHED, "10.0.0.1:6379", "10.0.0.2:2")),
            ]
        );
    }

    #[test]
    fn bad_replies_are_errors_not_panics() {
        let mut answers = vec![Answer::Pending; 2];
        let mut parse = |buf: &[u8]| match parse_answers(buf, 5, &mut answers) {
            Err(e) if e.kind() == io::ErrorKind::InvalidData => e.to_string(),
            other => panic!("expected InvalidData, got {other:?}"),
        };
        assert!(parse(&nlmsg(NLMSG_OVERRUN, 0, 5, &[])).contains("overrun"));
        assert!(parse(&nlmsg(99, 0, 5, &[])).contains("type 99"));
        assert!(parse(&nlmsg(NLMSG_ERROR, 0, 5, &[1, 2])).contains("without an error code"));
        assert!(parse(&nlmsg(SOCK_DIAG_BY_FAMILY, 0, 5, &[0; 40])).contains("truncated"));

        // Cut anywhere: whole messages parse, anything else is InvalidData.
        let mut buf = reply(5, state::ESTABLISHED, "10.0.0.1:6379", "10.0.0.2:2");
        let boundary = buf.len();
        buf.extend(error(6, libc::ENOENT));
        for cut in 0..buf.len() {
            let mut answers = vec![Answer::Pending; 2];
            let result = parse_answers(&buf[..cut], 5, &mut answers);
            match cut {
                0 => assert_eq!(result.unwrap(), 0),
                c if c == boundary => assert_eq!(result.unwrap(), 1),
                _ => assert_eq!(
                    result.unwrap_err().kind(),
                    io::ErrorKind::InvalidData,
                    "cut at {cut}"
                ),
            }
        }
        assert_eq!(
            parse_answers(&buf, 5, &mut vec![Answer::Pending; 2]).unwrap(),
            2
        );
    }

    #[test]
    fn a_multipart_flag_or_noop_is_no_answer() {
        let mut buf = nlmsg(NLMSG_NOOP, 0, 5, &[]);
        buf.extend(nlmsg(NLMSG_DONE, NLM_F_MULTI_FLAG, 5, &0i32.to_ne_bytes()));
        let mut answers = vec![Answer::Pending];
        assert_eq!(parse_answers(&buf, 5, &mut answers).unwrap(), 0);
        assert_eq!(answers, vec![Answer::Pending]);
    }

    // ---- the real kernel ------------------------------------------------------

    /// A client and the server's end of one connection to `listener`.
    struct Pair {
        client: TcpStream,
        server: TcpStream,
    }

    impl Pair {
        /// Connects; the client sends `sent` bytes, which the server reads, and the
        /// server answers with `answered` bytes, which the client reads.
        fn new(listener: &TcpListener, to: SocketAddr, sent: usize, answered: usize) -> Pair {
            let mut client = TcpStream::connect(to).unwrap();
            let (mut server, peer) = listener.accept().unwrap();
            assert_eq!(crate::model::normalize(peer), client.local_addr().unwrap());
            client.write_all(&vec![b'x'; sent]).unwrap();
            server.read_exact(&mut vec![0; sent]).unwrap();
            server.write_all(&vec![b'y'; answered]).unwrap();
            client.read_exact(&mut vec![0; answered]).unwrap();
            Pair { client, server }
        }

        fn key(&self) -> ConnKey {
            ConnKey::new(
                self.server.local_addr().unwrap(),
                self.client.local_addr().unwrap(),
            )
        }
    }

    /// Looks up `keys` until `want` holds (a closed socket takes a moment to leave
    /// its last states), at most 3 s; returns the last lookups.
    fn lookups_until(ports: &[u16], keys: &[ConnKey], want: impl Fn(&Lookups) -> bool) -> Lookups {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let now = crate::model::monotonic_now();
            let got = lookup_connections(&own(), 0, ports, keys, now).unwrap();
            if want(&got) || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn figures(l: &Lookups) -> Vec<(ConnKey, u64, u64)> {
        l.conns
            .iter()
            .map(|(k, a)| (*k, a.bytes_in, a.bytes_out))
            .collect()
    }

    #[test]
    fn lookups_find_exactly_the_open_connections_asked_for_with_their_figures() {
        let listener = listen("127.0.0.1:0", 256);
        let addr = listener.local_addr().unwrap();
        // More than two batches; connection i sent i % 5 bytes and got i % 3.
        let n = 2 * LOOKUP_BATCH + 22;
        let mut pairs: Vec<Pair> = (0..n)
            .map(|i| Pair::new(&listener, addr, i % 5, i % 3))
            .collect();
        // Ten closed: the client first (the server's socket is freed: the kernel
        // answers with the listener) or the server first (its socket waits in
        // TIME_WAIT).
        let closed: Vec<ConnKey> = pairs
            .drain(..10)
            .enumerate()
            .map(|(i, p)| {
                let key = p.key();
                let Pair { client, server } = p;
                if i % 2 == 0 {
                    drop(client);
                    drop(server);
                } else {
                    drop(server);
                    drop(client);
                }
                key
            })
            .collect();
        let never = ConnKey::new(addr, "127.0.0.1:1".parse().unwrap());
        let unheard = listen("127.0.0.1:0", 1);
        let other_port = ConnKey::new(
            unheard.local_addr().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let mixed = ConnKey::new(addr, "[::1]:3".parse().unwrap());

        let mut keys: Vec<ConnKey> = pairs.iter().map(Pair::key).collect();
        keys.extend(&closed);
        keys.extend([never, other_port, mixed]);
        let mut want: Vec<(ConnKey, u64, u64)> = (10..n)
            .zip(&pairs)
            .map(|(i, p)| (p.key(), (i % 5) as u64, (i % 3) as u64))
            .collect();
        want.sort();
        let got = lookups_until(&[addr.port()], &keys, |l| figures(l) == want);
        assert_eq!(figures(&got), want);
        let now = crate::model::monotonic_now();
        assert!(
            got.conns
                .iter()
                .all(|(_, a)| a.last_active.is_some_and(|t| t <= now))
        );
        // Every key but the one no socket can have was answered.
        let mut answered: Vec<ConnKey> = keys.iter().copied().filter(|k| *k != mixed).collect();
        answered.sort();
        assert_eq!(got.answered, answered);

        // The dump says the same of the same connections.
        let dumped = super::super::open_connections(&own(), 0, &[addr.port()], now).unwrap();
        let dumped: Vec<ConnKey> = dumped.into_iter().map(|(k, _)| k).collect();
        let found: Vec<ConnKey> = got.conns.iter().map(|(k, _)| *k).collect();
        assert_eq!(dumped, found);
        // Keys stamped with the instance's namespace; nothing asked, nothing said.
        let stamped = lookup_connections(&own(), 77, &[addr.port()], &keys[..1], now).unwrap();
        assert_eq!(stamped.answered, vec![keys[0].with_netns(77)]);
        assert_eq!(stamped.conns[0].0, keys[0].with_netns(77));
        assert_eq!(
            lookup_connections(&own(), 0, &[addr.port()], &[], now).unwrap(),
            Lookups::default()
        );
    }

    #[test]
    fn a_dual_stack_listener_s_ipv4_clients_are_found_by_their_ipv4_keys() {
        let listener = listen("[::]:0", 16);
        let port = listener.local_addr().unwrap().port();
        let v4 = Pair::new(&listener, SocketAddr::from(([127, 0, 0, 1], port)), 3, 2);
        let v6 = Pair::new(
            &listener,
            SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port)),
            1,
            1,
        );
        let gone = Pair::new(&listener, SocketAddr::from(([127, 0, 0, 1], port)), 0, 0);
        let gone_key = gone.key();
        drop(gone);
        // The server's end is an AF_INET6 socket of ::ffff:127.0.0.1; the key says
        // 127.0.0.1.
        assert_eq!(
            v4.server.local_addr().unwrap().ip().to_string(),
            "::ffff:127.0.0.1"
        );
        assert_eq!(v4.key().local, SocketAddr::from(([127, 0, 0, 1], port)));
        let keys = [v4.key(), v6.key(), gone_key];
        let mut want = vec![(v4.key(), 3, 2), (v6.key(), 1, 1)];
        want.sort();
        let got = lookups_until(&[port], &keys, |l| figures(l) == want);
        assert_eq!(figures(&got), want);
        let mut answered = keys.to_vec();
        answered.sort();
        assert_eq!(got.answered, answered);
    }

    #[test]
    fn replies_a_full_receive_buffer_dropped_are_asked_for_again() {
        let listener = listen("127.0.0.1:0", 128);
        let addr = listener.local_addr().unwrap();
        let pairs: Vec<Pair> = (0..100).map(|_| Pair::new(&listener, addr, 1, 1)).collect();
        let targets: Vec<Target> = pairs
            .iter()
            .map(|p| Target::new(p.key(), 0).unwrap())
            .collect();
        let mut sock = NetlinkSocket::open(&own()).unwrap();
        // Room for about 25 replies (the kernel doubles what it is given).
        let size: libc::c_int = 16 * 1024;
        // SAFETY: `size` is a valid c_int that outlives the call; the length passed
        // is its exact size.
        let rc = unsafe {
            libc::setsockopt(
                sock.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw const size).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());

        // One batch of 64 does not fit: some replies are dropped, and the kernel
        // says so.
        let mut msg = Vec::new();
        for (i, t) in targets[..LOOKUP_BATCH].iter().enumerate() {
            lookup_request(t, 1000 + i as u32, &mut msg);
        }
        sock.send(&msg).unwrap();
        let mut got = vec![Answer::Pending; LOOKUP_BATCH];
        assert!(sock.read_answers(1000, &mut got).unwrap(), "dropped");
        let answered = got.iter().filter(|a| **a != Answer::Pending).count();
        assert!((1..LOOKUP_BATCH).contains(&answered), "{answered} answered");

        // The lookup asks again in smaller batches until each is answered.
        let answers = sock.lookup(&targets).unwrap();
        assert_eq!(answers.len(), targets.len());
        for (t, a) in targets.iter().zip(&answers) {
            match a {
                Answer::Socket(s) => {
                    assert!(t.is(s) && s.state == state::ESTABLISHED, "{t:?}: {s:?}");
                    assert_eq!(s.uid, my_uid());
                    assert_eq!((s.bytes_received, s.bytes_acked), (Some(1), Some(1)));
                }
                other => panic!("{t:?}: {other:?}"),
            }
        }
    }
}
