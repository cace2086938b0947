//! Turns the kernel's records into the core's events. Pure, so it is unit-tested.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use connwatch_ebpf::{AF_INET, AF_INET6, CONN_TRACKED, ConnEvent, ConnInfo, event_kind};

use crate::event::{Activity, CloseKind, ConnKey, Event};

fn ip(family: u16, raw: &[u8; 16]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(*raw))),
        _ => None,
    }
}

/// The connection a kernel record describes (IPv4-mapped addresses as IPv4).
pub fn key_of(info: &ConnInfo) -> Option<ConnKey> {
    let local = SocketAddr::new(ip(info.family, &info.laddr)?, info.lport);
    let remote = SocketAddr::new(ip(info.family, &info.raddr)?, info.rport);
    Some(ConnKey::new(local, remote))
}

/// Bytes and last activity of a tracked connection; `None` when the kernel did not
/// see it open (its counters would be partial).
pub fn activity_of(info: &ConnInfo) -> Option<Activity> {
    if info.flags & CONN_TRACKED == 0 {
        return None;
    }
    let last = info.last_recv_ns.max(info.last_send_ns);
    Some(Activity {
        bytes_in: info.bytes_in,
        bytes_out: info.bytes_out,
        last_active: (last != 0).then_some(last),
    })
}

/// One ring-buffer record as an event; `None` for a record we cannot interpret
/// (unknown kind or family), which the caller counts.
pub fn decode(ev: &ConnEvent) -> Option<Event> {
    let key = key_of(&ev.info)?;
    let ts = ev.ts_ns;
    let how = match ev.kind {
        event_kind::OPENED => return Some(Event::Opened { ts, key }),
        event_kind::REFUSED => return Some(Event::Refused { ts, key }),
        event_kind::CLOSED_BY_SERVER => CloseKind::Server,
        event_kind::CLOSED_BY_CLIENT => CloseKind::Client,
        event_kind::RESET => CloseKind::Reset,
        _ => return None,
    };
    Some(Event::Closed {
        ts,
        key,
        how,
        activity: activity_of(&ev.info),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(l: [u8; 4], lport: u16, r: [u8; 4], rport: u16) -> ConnInfo {
        let mut info = ConnInfo {
            family: AF_INET,
            lport,
            rport,
            flags: CONN_TRACKED,
            opened_ns: 5,
            ..ConnInfo::default()
        };
        info.laddr[..4].copy_from_slice(&l);
        info.raddr[..4].copy_from_slice(&r);
        info
    }

    #[test]
    fn decodes_an_ipv4_open() {
        let ev = ConnEvent {
            ts_ns: 42,
            sk: 7,
            kind: event_kind::OPENED,
            info: v4([127, 0, 0, 1], 6379, [127, 0, 0, 5], 40000),
            ..ConnEvent::default()
        };
        let key = ConnKey::new(
            "127.0.0.1:6379".parse().unwrap(),
            "127.0.0.5:40000".parse().unwrap(),
        );
        assert_eq!(decode(&ev), Some(Event::Opened { ts: 42, key }));
    }

    #[test]
    fn decodes_closes_with_who_closed_and_activity() {
        let mut info = v4([127, 0, 0, 1], 6379, [127, 0, 0, 5], 40000);
        info.bytes_in = 14;
        info.bytes_out = 7;
        info.last_recv_ns = 90;
        info.last_send_ns = 95;
        for (kind, how) in [
            (event_kind::CLOSED_BY_SERVER, CloseKind::Server),
            (event_kind::CLOSED_BY_CLIENT, CloseKind::Client),
            (event_kind::RESET, CloseKind::Reset),
        ] {
            let ev = ConnEvent {
                ts_ns: 100,
                kind,
                info,
                ..ConnEvent::default()
            };
            match decode(&ev) {
                Some(Event::Closed {
                    ts: 100,
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
                            last_active: Some(95)
                        }
                    );
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn untracked_close_has_no_activity() {
        let mut info = v4([127, 0, 0, 1], 6379, [127, 0, 0, 5], 40000);
        info.flags = 0;
        let ev = ConnEvent {
            ts_ns: 1,
            kind: event_kind::RESET,
            info,
            ..ConnEvent::default()
        };
        assert!(matches!(
            decode(&ev),
            Some(Event::Closed { activity: None, .. })
        ));
    }

    #[test]
    fn ipv6_and_v4_mapped() {
        let mut info = ConnInfo {
            family: AF_INET6,
            lport: 6379,
            rport: 5000,
            flags: CONN_TRACKED,
            ..ConnInfo::default()
        };
        info.laddr = "::1".parse::<Ipv6Addr>().unwrap().octets();
        info.raddr = "::1".parse::<Ipv6Addr>().unwrap().octets();
        let key = key_of(&info).unwrap();
        assert_eq!(key.remote, "[::1]:5000".parse().unwrap());

        info.raddr = "::ffff:127.0.0.9".parse::<Ipv6Addr>().unwrap().octets();
        let key = key_of(&info).unwrap();
        assert_eq!(key.remote, "127.0.0.9:5000".parse().unwrap());
    }

    #[test]
    fn unknown_kind_or_family_is_rejected() {
        let info = v4([127, 0, 0, 1], 6379, [127, 0, 0, 5], 1);
        assert_eq!(
            decode(&ConnEvent {
                kind: 99,
                info,
                ..ConnEvent::default()
            }),
            None
        );
        let bad = ConnInfo { family: 1, ..info };
        assert_eq!(
            decode(&ConnEvent {
                kind: event_kind::OPENED,
                info: bad,
                ..ConnEvent::default()
            }),
            None
        );
    }

    #[test]
    fn activity_without_traffic_has_no_last_active() {
        let info = v4([127, 0, 0, 1], 6379, [127, 0, 0, 5], 1);
        assert_eq!(
            activity_of(&info),
            Some(Activity {
                bytes_in: 0,
                bytes_out: 0,
                last_active: None
            })
        );
    }
}
