//! Turns the kernel's records into the core's events. Pure, so it is unit-tested.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use connwatch_common::{
    AF_INET, AF_INET6, BATCH_HEADER, BYTES_KNOWN, CLIENT_SIDE, CONNECT_ERR_UNKNOWN, ConnEvent,
    ConnectorEvent, event_kind,
};

use crate::model::{Activity, CloseKind, ConnKey, Event, FastMap, Process};

fn ip(family: u16, raw: &[u8; 16]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(*raw))),
        _ => None,
    }
}

/// The connection a kernel record describes (IPv4-mapped addresses as IPv4), as
/// the server's side has it: a client-mode record (`CLIENT_SIDE`, the client's own
/// socket) is turned round, so the remote Redis is `local` and this host's client
/// `remote`, and both modes share one pipeline.
pub fn key_of(ev: &ConnEvent) -> Option<ConnKey> {
    let local = SocketAddr::new(ip(ev.family, &ev.laddr)?, ev.lport);
    let remote = SocketAddr::new(ip(ev.family, &ev.raddr)?, ev.rport);
    Some(if ev.flags & CLIENT_SIDE != 0 {
        ConnKey::in_netns(ev.netns, remote, local)
    } else {
        ConnKey::in_netns(ev.netns, local, remote)
    })
}

/// One ring-buffer record as an event; `None` for a record we cannot interpret
/// (unknown kind or family), which the caller counts.
pub fn decode(ev: &ConnEvent) -> Option<Event> {
    let key = key_of(ev)?;
    let ts = ev.ts_ns;
    let client_side = ev.flags & CLIENT_SIDE != 0;
    let how = match (ev.kind, client_side) {
        (event_kind::OPENED, false) => return Some(Event::Opened { ts, key }),
        (event_kind::REFUSED, false) => return Some(Event::Refused { ts, key }),
        // The client's socket: FIN_WAIT1 is its own close, CLOSE_WAIT the server's.
        (event_kind::CLOSED_BY_SERVER, true) | (event_kind::CLOSED_BY_CLIENT, false) => {
            CloseKind::Client
        }
        (event_kind::CLOSED_BY_SERVER, false) | (event_kind::CLOSED_BY_CLIENT, true) => {
            CloseKind::Server
        }
        (event_kind::RESET, _) => CloseKind::Reset,
        _ => return None,
    };
    // The close record carries byte totals read from the socket; when data last
    // moved is known from the latest sock_diag poll, not from the close.
    // From the client's socket: what the server wrote is what reached the client,
    // what it read is (at most) what the client wrote; the client's own unsent
    // bytes say nothing of the server's queue.
    let activity = (ev.flags & BYTES_KNOWN != 0).then_some(if client_side {
        Activity {
            bytes_in: ev.bytes_out,
            bytes_out: ev.bytes_in,
            last_active: None,
            queued: None,
        }
    } else {
        Activity {
            bytes_in: ev.bytes_in,
            bytes_out: ev.bytes_out,
            last_active: None,
            queued: Some(u64::from(ev.unsent)),
        }
    });
    Some(Event::Closed {
        ts,
        key,
        how,
        activity,
    })
}

/// A local client's connect as events, its cgroup path found by `cgroup`, appended
/// to `out`; false for a record we cannot interpret. A client-mode record
/// (`CLIENT_SIDE`) also opens its connection (after the connector, which the open
/// joins) or, failed, is a failed connect with its cause (before the connector,
/// which it joins).
pub fn decode_connector_into(
    ev: &ConnectorEvent,
    cgroup: impl FnOnce(u64) -> Option<Arc<str>>,
    out: &mut Vec<Event>,
) -> bool {
    let Some(connector) = decode_connector(ev, cgroup) else {
        return false;
    };
    let Event::Connector {
        ts,
        client,
        server,
        failed,
        err,
        ..
    } = &connector
    else {
        return false;
    };
    if ev.flags & CLIENT_SIDE == 0 {
        out.push(connector);
        return true;
    }
    let (ts, key) = (*ts, ConnKey::in_netns(ev.netns, *server, *client));
    if *failed {
        out.push(Event::ConnectFailed { ts, key, err: *err });
        out.push(connector);
    } else {
        out.push(connector);
        out.push(Event::Opened { ts, key });
    }
    true
}

/// Names already made, by the kernel's 16 bytes: a process connecting again
/// shares its name instead of allocating it per connection. Cleared when full.
const MAX_NAMES: usize = 4096;

thread_local! {
    static NAMES: RefCell<FastMap<[u8; 16], Arc<str>>> = RefCell::new(FastMap::default());
}

/// The process name of `comm` (its bytes up to the NUL: `name`), shared.
fn comm_name(comm: &[u8; 16], name: &[u8]) -> Arc<str> {
    NAMES.with(|names| {
        let mut names = names.borrow_mut();
        if let Some(n) = names.get(comm) {
            return Arc::clone(n);
        }
        if names.len() >= MAX_NAMES {
            names.clear();
        }
        // Any process picks its own name: no control character (a terminal
        // escape) reaches an output.
        let n: Arc<str> = String::from_utf8_lossy(name)
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect::<String>()
            .into();
        names.insert(*comm, Arc::clone(&n));
        n
    })
}

/// A local client's connect as an event, its cgroup path found by `cgroup`;
/// `None` for a record we cannot interpret.
pub fn decode_connector(
    ev: &ConnectorEvent,
    cgroup: impl FnOnce(u64) -> Option<Arc<str>>,
) -> Option<Event> {
    let failed = match ev.kind {
        event_kind::CONNECTED => false,
        event_kind::CONNECT_FAILED => true,
        _ => return None,
    };
    let client = SocketAddr::new(ip(ev.family, &ev.laddr)?, ev.lport);
    let server = SocketAddr::new(ip(ev.family, &ev.raddr)?, ev.rport);
    let name = ev.comm.split(|&b| b == 0).next().unwrap_or_default();
    Some(Event::Connector {
        ts: ev.ts_ns,
        client: crate::model::normalize(client),
        server: crate::model::normalize(server),
        process: Process {
            pid: ev.tgid,
            comm: comm_name(&ev.comm, name),
            cgroup: cgroup(ev.cgroup_id),
            // Encoded as the id plus one, 0 for none.
            stack: ev.stack.checked_sub(1),
        },
        failed,
        // The socket's error, for a failed connect only.
        err: (failed && ev.err != CONNECT_ERR_UNKNOWN).then_some(ev.err),
    })
}

/// A record as events appended to `out` (false: not interpretable): a
/// [`ConnEvent`], a [`ConnectorEvent`] or a batch of connection records
/// ([`connwatch_common::ConnBatch`], as many as its `count`), told apart by their
/// sizes (asserted different in `connwatch_common`). A batch with a record that
/// cannot be interpreted still appends the others.
pub fn parse_record(
    bytes: &[u8],
    cgroup: impl FnOnce(u64) -> Option<Arc<str>>,
    out: &mut Vec<Event>,
) -> bool {
    const CONN: usize = size_of::<ConnEvent>();
    if bytes.len() == size_of::<ConnectorEvent>() {
        // SAFETY: the slice holds exactly size_of::<ConnectorEvent>() bytes,
        // ConnectorEvent is a #[repr(C)] plain-old-data type valid for any bit
        // pattern, and read_unaligned makes no alignment assumption.
        let ev = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<ConnectorEvent>()) };
        return decode_connector_into(&ev, cgroup, out);
    }
    if bytes.len() == CONN {
        return push_conn(bytes, out);
    }
    let Some(records) = bytes.get(BATCH_HEADER..) else {
        return false;
    };
    let count = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    if records.is_empty() || records.len() % CONN != 0 || records.len() / CONN != count {
        return false;
    }
    // Every record, even after one that cannot be interpreted.
    let mut all = true;
    for record in records.chunks_exact(CONN) {
        all &= push_conn(record, out);
    }
    all
}

/// One connection record (`size_of::<ConnEvent>()` bytes) appended to `out` as an
/// event (false: not interpretable).
fn push_conn(bytes: &[u8], out: &mut Vec<Event>) -> bool {
    if bytes.len() != size_of::<ConnEvent>() {
        return false;
    }
    // SAFETY: the slice holds size_of::<ConnEvent>() bytes, ConnEvent is a
    // #[repr(C)] plain-old-data type valid for any bit pattern, and read_unaligned
    // makes no alignment assumption about the ring buffer's memory.
    let ev = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<ConnEvent>()) };
    match decode(&ev) {
        Some(e) => {
            out.push(e);
            true
        }
        None => false,
    }
}

/// Kernel events waiting to be applied in time order. A CPU stages its connection
/// records and writes them in batches, so the ring buffer holds them in time order
/// per CPU only, and a connection's open and close may be on different CPUs. Once
/// every CPU has been flushed, every record stamped before the flush began is in
/// the ring: [`Pending::release`] hands out those, oldest first, and keeps the
/// later ones for the next drain, when the records they must follow are in too.
#[derive(Debug, Default)]
pub struct Pending {
    events: Vec<Event>,
}

impl Pending {
    /// Where records read from the ring buffer go.
    pub fn inbox(&mut self) -> &mut Vec<Event> {
        &mut self.events
    }

    /// Appends to `out`, in time order, the events stamped before `before` (when
    /// the flush began), and keeps the rest.
    pub fn release(&mut self, before: u64, out: &mut Vec<Event>) {
        // Runs of ordered records, one per CPU's batches: a stable sort merges them
        // in about linear time, and keeps records of equal times in ring order.
        self.events.sort_by_key(Event::ts);
        let ready = self.events.partition_point(|e| e.ts() < before);
        out.extend(self.events.drain(..ready));
    }

    /// Events held for a later drain.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn v4(kind: u8, l: [u8; 4], lport: u16, r: [u8; 4], rport: u16) -> ConnEvent {
        let mut ev = ConnEvent {
            ts_ns: 42,
            family: AF_INET,
            lport,
            rport,
            kind,
            ..ConnEvent::default()
        };
        ev.laddr[..4].copy_from_slice(&l);
        ev.raddr[..4].copy_from_slice(&r);
        ev
    }

    #[test]
    fn decodes_an_ipv4_open_and_refusal() {
        let key = ConnKey::new(
            "127.0.0.1:6379".parse().unwrap(),
            "127.0.0.5:40000".parse().unwrap(),
        );
        let ev = v4(
            event_kind::OPENED,
            [127, 0, 0, 1],
            6379,
            [127, 0, 0, 5],
            40000,
        );
        assert_eq!(decode(&ev), Some(Event::Opened { ts: 42, key }));
        let ev = v4(
            event_kind::REFUSED,
            [127, 0, 0, 1],
            6379,
            [127, 0, 0, 5],
            40000,
        );
        assert_eq!(decode(&ev), Some(Event::Refused { ts: 42, key }));
    }

    #[test]
    fn decodes_closes_with_who_closed_and_bytes() {
        for (kind, how) in [
            (event_kind::CLOSED_BY_SERVER, CloseKind::Server),
            (event_kind::CLOSED_BY_CLIENT, CloseKind::Client),
            (event_kind::RESET, CloseKind::Reset),
        ] {
            let mut ev = v4(kind, [127, 0, 0, 1], 6379, [127, 0, 0, 5], 40000);
            ev.bytes_in = 14;
            ev.bytes_out = 7;
            ev.unsent = 3;
            ev.flags = BYTES_KNOWN;
            match decode(&ev) {
                Some(Event::Closed {
                    ts: 42,
                    how: got,
                    activity: Some(a),
                    ..
                }) => {
                    assert_eq!(got, how);
                    assert_eq!(
                        a,
                        Activity {
                            bytes_in: 14,
                            bytes_out: 7,
                            last_active: None,
                            queued: Some(3)
                        }
                    );
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn a_close_without_byte_counts_has_no_activity() {
        let mut ev = v4(
            event_kind::RESET,
            [127, 0, 0, 1],
            6379,
            [127, 0, 0, 5],
            40000,
        );
        ev.bytes_out = 36; // not flagged as read: ignored
        assert!(matches!(
            decode(&ev),
            Some(Event::Closed { activity: None, .. })
        ));
    }

    #[test]
    fn ipv6_and_v4_mapped() {
        let mut ev = ConnEvent {
            family: AF_INET6,
            lport: 6379,
            rport: 5000,
            ..ConnEvent::default()
        };
        ev.laddr = "::1".parse::<Ipv6Addr>().unwrap().octets();
        ev.raddr = "::1".parse::<Ipv6Addr>().unwrap().octets();
        let key = key_of(&ev).unwrap();
        assert_eq!(key.remote, "[::1]:5000".parse().unwrap());

        ev.raddr = "::ffff:127.0.0.9".parse::<Ipv6Addr>().unwrap().octets();
        let key = key_of(&ev).unwrap();
        assert_eq!(key.remote, "127.0.0.9:5000".parse().unwrap());
    }

    #[test]
    fn decodes_a_local_client_connect_and_its_failure() {
        let mut ev = ConnectorEvent {
            ts_ns: 7,
            cgroup_id: 1234,
            lport: 40000,
            rport: 6379,
            family: AF_INET,
            kind: event_kind::CONNECTED,
            tgid: 4242,
            ..ConnectorEvent::default()
        };
        ev.laddr[..4].copy_from_slice(&[127, 0, 0, 5]);
        ev.raddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        ev.comm[..8].copy_from_slice(b"gunicorn");
        let path = |id: u64| (id == 1234).then(|| "/system.slice/x.service".into());
        let want = Event::Connector {
            ts: 7,
            client: "127.0.0.5:40000".parse().unwrap(),
            server: "127.0.0.1:6379".parse().unwrap(),
            process: Process {
                pid: 4242,
                comm: "gunicorn".into(),
                stack: None,
                cgroup: Some("/system.slice/x.service".into()),
            },
            failed: false,
            err: None,
        };
        assert_eq!(decode_connector(&ev, path), Some(want));
        ev.kind = event_kind::CONNECT_FAILED;
        ev.comm = *b"a-full-16-byte-n";
        // The socket's error as the kernel sent it; unknown stays unknown.
        for (raw, err) in [
            (111, Some(111)),
            (110, Some(110)),
            (0, Some(0)),
            (113, Some(113)),
            (CONNECT_ERR_UNKNOWN, None),
        ] {
            ev.err = raw;
            match decode_connector(&ev, |_| None) {
                Some(Event::Connector {
                    failed: true,
                    process,
                    err: got,
                    ..
                }) => assert_eq!(
                    (&*process.comm, process.cgroup, got),
                    ("a-full-16-byte-n", None, err)
                ),
                other => panic!("unexpected {other:?}"),
            }
        }
        // A completed connect has no cause, whatever the field holds.
        ev.kind = event_kind::CONNECTED;
        ev.err = 111;
        assert!(matches!(
            decode_connector(&ev, |_| None),
            Some(Event::Connector { err: None, .. })
        ));
        ev.kind = event_kind::CONNECT_FAILED;
        ev.comm = [0; 16];
        ev.comm[..6].copy_from_slice(b"\x1b[2Jx\n");
        match decode_connector(&ev, |_| None) {
            Some(Event::Connector { process, .. }) => assert_eq!(&*process.comm, "?[2Jx?"),
            other => panic!("unexpected {other:?}"),
        }
        // The stack is its id plus one; 0 is none, and the id u32::MAX - 1 survives.
        for (raw, want) in [
            (0, None),
            (1, Some(0)),
            (8, Some(7)),
            (u32::MAX, Some(u32::MAX - 1)),
        ] {
            ev.stack = raw;
            match decode_connector(&ev, |_| None) {
                Some(Event::Connector { process, .. }) => assert_eq!(process.stack, want),
                other => panic!("unexpected {other:?}"),
            }
        }
        ev.kind = event_kind::OPENED;
        assert_eq!(decode_connector(&ev, |_| None), None);
    }

    #[test]
    fn a_client_side_close_is_turned_round_with_who_closed_and_bytes() {
        for (kind, how) in [
            (event_kind::CLOSED_BY_SERVER, CloseKind::Client),
            (event_kind::CLOSED_BY_CLIENT, CloseKind::Server),
            (event_kind::RESET, CloseKind::Reset),
        ] {
            // The client's socket: 127.0.0.5:40000 → Redis at 127.0.0.1:6379.
            let mut ev = v4(kind, [127, 0, 0, 5], 40000, [127, 0, 0, 1], 6379);
            ev.netns = 9;
            ev.bytes_in = 36; // reached the client
            ev.bytes_out = 14; // the client wrote
            ev.unsent = 2;
            ev.flags = BYTES_KNOWN | CLIENT_SIDE;
            let want = Event::Closed {
                ts: 42,
                key: ConnKey::in_netns(
                    9,
                    "127.0.0.1:6379".parse().unwrap(),
                    "127.0.0.5:40000".parse().unwrap(),
                ),
                how,
                activity: Some(Activity {
                    bytes_in: 14,
                    bytes_out: 36,
                    last_active: None,
                    queued: None,
                }),
            };
            assert_eq!(decode(&ev), Some(want));
        }
        // A client-side record opens nothing by itself.
        let mut ev = v4(event_kind::OPENED, [127, 0, 0, 5], 1, [127, 0, 0, 1], 6379);
        ev.flags = CLIENT_SIDE;
        assert_eq!(decode(&ev), None);
    }

    #[test]
    fn a_client_side_connect_opens_its_connection_and_a_failed_one_carries_its_cause() {
        let mut ev = ConnectorEvent {
            ts_ns: 7,
            lport: 40000,
            rport: 6379,
            family: AF_INET,
            kind: event_kind::CONNECTED,
            flags: CLIENT_SIDE,
            netns: 9,
            tgid: 4242,
            ..ConnectorEvent::default()
        };
        ev.laddr[..4].copy_from_slice(&[127, 0, 0, 5]);
        ev.raddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        ev.comm[..6].copy_from_slice(b"worker");
        let key = ConnKey::in_netns(
            9,
            "127.0.0.1:6379".parse().unwrap(),
            "127.0.0.5:40000".parse().unwrap(),
        );
        let connector = |failed: bool| Event::Connector {
            ts: 7,
            client: "127.0.0.5:40000".parse().unwrap(),
            server: "127.0.0.1:6379".parse().unwrap(),
            process: Process {
                pid: 4242,
                stack: None,
                comm: "worker".into(),
                cgroup: None,
            },
            failed,
            err: failed.then_some(110),
        };
        let mut out = Vec::new();
        assert!(decode_connector_into(&ev, |_| None, &mut out));
        assert_eq!(out, [connector(false), Event::Opened { ts: 7, key }]);
        out.clear();
        ev.kind = event_kind::CONNECT_FAILED;
        ev.err = 110;
        assert!(decode_connector_into(&ev, |_| None, &mut out));
        assert_eq!(
            out,
            [
                Event::ConnectFailed {
                    ts: 7,
                    key,
                    err: Some(110)
                },
                connector(true)
            ]
        );
        // Server-side (part 1) records stay one connector.
        out.clear();
        ev.flags = 0;
        assert!(decode_connector_into(&ev, |_| None, &mut out));
        assert_eq!(out, [connector(true)]);
        ev.kind = 99;
        assert!(!decode_connector_into(&ev, |_| None, &mut out));
    }

    /// A failed client-mode connect as the kernel writes it, byte by byte: the
    /// cause is the u32 at offset 80, `CONNECT_ERR_UNKNOWN` is unknown.
    #[test]
    fn a_raw_failed_connect_record_carries_its_cause_at_offset_80() {
        let mut raw = [0u8; 88];
        raw[0..8].copy_from_slice(&5u64.to_ne_bytes()); // ts_ns
        raw[16..20].copy_from_slice(&[10, 0, 0, 7]); // raddr: the server
        raw[32..36].copy_from_slice(&[10, 0, 0, 1]); // laddr: this host
        raw[48..50].copy_from_slice(&6379u16.to_ne_bytes()); // rport
        raw[50..52].copy_from_slice(&40000u16.to_ne_bytes()); // lport
        raw[52..54].copy_from_slice(&AF_INET.to_ne_bytes());
        raw[54] = event_kind::CONNECT_FAILED;
        raw[55] = CLIENT_SIDE;
        raw[56..60].copy_from_slice(&9u32.to_ne_bytes()); // netns
        raw[60..64].copy_from_slice(&77u32.to_ne_bytes()); // tgid
        raw[64..68].copy_from_slice(b"app\0");
        for (err, want) in [
            (110u32, Some(110)),
            (0, Some(0)),
            (CONNECT_ERR_UNKNOWN, None),
        ] {
            raw[80..84].copy_from_slice(&err.to_ne_bytes());
            let mut out = Vec::new();
            assert!(parse_record(&raw, |_| None, &mut out));
            let key = ConnKey::in_netns(
                9,
                "10.0.0.7:6379".parse().unwrap(),
                "10.0.0.1:40000".parse().unwrap(),
            );
            assert_eq!(
                out[0],
                Event::ConnectFailed {
                    ts: 5,
                    key,
                    err: want
                }
            );
            assert!(
                matches!(&out[1], Event::Connector { failed: true, err, process, .. } if *err == want && process.pid == 77 && &*process.comm == "app"),
                "{out:?}"
            );
        }
    }

    #[test]
    fn unknown_kind_or_family_is_rejected() {
        let ev = v4(99, [127, 0, 0, 1], 6379, [127, 0, 0, 5], 1);
        assert_eq!(decode(&ev), None);
        let ev = ConnEvent {
            family: 1,
            ..v4(event_kind::OPENED, [127, 0, 0, 1], 6379, [127, 0, 0, 5], 1)
        };
        assert_eq!(decode(&ev), None);
    }

    /// Records as the kernel writes a batch of them: the count, 4 bytes of flags
    /// (unread), then the records.
    fn batch_bytes(count: u32, records: &[ConnEvent]) -> Vec<u8> {
        let mut raw = count.to_ne_bytes().to_vec();
        raw.extend_from_slice(&[1, 0, 0, 0]);
        for ev in records {
            // SAFETY: ConnEvent is #[repr(C)] plain old data without padding
            // (asserted in connwatch_common): all its bytes are initialised.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (ev as *const ConnEvent).cast::<u8>(),
                    size_of::<ConnEvent>(),
                )
            };
            raw.extend_from_slice(bytes);
        }
        raw
    }

    #[test]
    fn a_batch_is_its_records_in_order_and_a_malformed_one_is_rejected() {
        let server = [127, 0, 0, 1];
        let records = [
            ConnEvent {
                ts_ns: 10,
                ..v4(event_kind::OPENED, server, 6379, [127, 0, 0, 5], 40000)
            },
            ConnEvent {
                ts_ns: 20,
                ..v4(event_kind::REFUSED, server, 6379, [127, 0, 0, 6], 40001)
            },
            ConnEvent {
                ts_ns: 30,
                ..v4(event_kind::OPENED, server, 6379, [127, 0, 0, 7], 40002)
            },
        ];
        let each: Vec<Event> = records.iter().filter_map(decode).collect();
        assert_eq!(each.len(), 3);
        let mut out = Vec::new();
        assert!(parse_record(&batch_bytes(3, &records), |_| None, &mut out));
        assert_eq!(out, each);
        // A full batch, as BATCH_LEN records make it.
        out.clear();
        let full = [records[0]; connwatch_common::BATCH_LEN];
        let raw = batch_bytes(full.len() as u32, &full);
        assert_eq!(raw.len(), size_of::<connwatch_common::ConnBatch>());
        assert!(parse_record(&raw, |_| None, &mut out));
        assert_eq!(out.len(), connwatch_common::BATCH_LEN);
        // A count that disagrees with the size, an empty batch, a torn record: nothing.
        out.clear();
        assert!(!parse_record(&batch_bytes(2, &records), |_| None, &mut out));
        assert!(!parse_record(&batch_bytes(0, &[]), |_| None, &mut out));
        let mut torn = batch_bytes(3, &records);
        torn.pop();
        assert!(!parse_record(&torn, |_| None, &mut out));
        assert_eq!(out, []);
        // A record that cannot be interpreted is counted; the others still apply.
        let mut bad = records;
        bad[1].kind = 99;
        assert!(!parse_record(&batch_bytes(3, &bad), |_| None, &mut out));
        assert_eq!(out, [each[0].clone(), each[2].clone()]);
    }

    #[test]
    fn pending_releases_what_came_before_the_flush_in_time_order_and_holds_the_rest() {
        let key = |port| {
            ConnKey::new(
                "127.0.0.1:6379".parse().unwrap(),
                SocketAddr::new([127, 0, 0, 5].into(), port),
            )
        };
        let open = |ts, port| Event::Opened { ts, key: key(port) };
        let refused = |ts, port| Event::Refused { ts, key: key(port) };
        let mut pending = Pending::default();
        // CPU 0's batch reaches the ring first, with a close (here a refusal) of a
        // connection CPU 1 opened earlier; then CPU 1's batch; then CPU 0's next.
        pending
            .inbox()
            .extend([refused(25, 1), open(40, 3), open(15, 1), open(30, 2)]);
        let mut out = Vec::new();
        pending.release(30, &mut out);
        assert_eq!(out, [open(15, 1), refused(25, 1)]);
        assert_eq!(pending.held(), 2);
        // The next drain brings a record stamped between the held ones.
        out.clear();
        pending.inbox().push(open(35, 4));
        pending.release(100, &mut out);
        assert_eq!(out, [open(30, 2), open(35, 4), open(40, 3)]);
        assert_eq!(pending.held(), 0);
        // Equal times keep their ring order (a connect's two events share a time).
        pending.inbox().extend([open(50, 9), refused(50, 9)]);
        out.clear();
        pending.release(51, &mut out);
        assert_eq!(out, [open(50, 9), refused(50, 9)]);
    }
}
