//! Telling a rejection from an ordinary close.
//!
//! When Redis turns a connection away (maxclients reached, protected mode) it has
//! already accepted it: it writes one error line without reading anything, then
//! closes. The kernel sees a server-side close (a FIN, or a RST when the client had
//! already sent data that Redis never read) of a connection that read zero bytes and
//! lived a moment — or a client-side close, when a fast client read the error and
//! closed before Redis's close landed; Redis wrote to it without being asked. An ordinary server-side close of a connection that never sent a
//! command (the `timeout` idle kill, CLIENT KILL) lives at least a second: Redis's
//! smallest `timeout` is 1 s.
//!
//! On Redis's TLS port no error line is readable: Redis turns a TLS connection away
//! before the handshake, so it writes nothing and closes. That is a server-side
//! close of a connection that read and wrote nothing — or a reset, when the
//! client's ClientHello had arrived unread (the kernel answers a close with unread
//! data with a RST). When the poller's `CONFIG GET tls-port` names the port, both
//! count, with the reason `tls`.

use std::time::Duration;

use crate::core::conn::{Closed, Origin};
use crate::model::{CloseKind, RejectReason, Role};

/// A server-side close faster than this, of a connection Redis never read from, is
/// a rejection. Generous, because the kernel's ESTABLISHED time precedes Redis's
/// accept() by however long the connection waited in the accept queue.
pub const REJECT_MAX_LIFETIME: Duration = Duration::from_secs(1);

/// `-ERR max number of clients reached\r\n`
pub const MAXCLIENTS_REPLY: u64 = 36;
/// The same error in cluster mode carries more text; protected mode's reply is ~1 KB.
const MAXCLIENTS_REPLY_MAX: u64 = 64;
const PROTECTED_MODE_REPLY_MIN: u64 = 512;

/// Whether a closed connection was a rejection, and why. `tls_port`: the connection
/// was to Redis's TLS port.
pub fn classify(closed: &Closed, tls_port: bool) -> Option<RejectReason> {
    classify_with(closed, tls_port, true)
}

/// [`classify`] for a connection seen from the client's socket (client mode). Its
/// `bytes_in` is what the client wrote, which the server's kernel took whether or
/// not Redis read it (redis-py sends its handshake before reading the error), so
/// the rejection is told by the rest: a fast close *by Redis* (a FIN or a reset:
/// Redis closes as it writes the error, before the client can read it) after it
/// wrote. A client's own fast close after a reply is ordinary churn here.
pub fn classify_from_client(closed: &Closed, tls_port: bool) -> Option<RejectReason> {
    classify_with(closed, tls_port, false)
}

/// [`classify`] or [`classify_from_client`], as `role` says.
pub fn classify_for(role: Role, closed: &Closed, tls_port: bool) -> Option<RejectReason> {
    classify_with(closed, tls_port, role == Role::Server)
}

fn classify_with(closed: &Closed, tls_port: bool, server_read_known: bool) -> Option<RejectReason> {
    let conn = closed.conn.as_ref()?;
    // Only connections seen opening: a seeded one predates us, its bytes are partial.
    if conn.origin != Origin::Opened {
        return None;
    }
    let lifetime = Duration::from_nanos(closed.lifetime?);
    if lifetime > REJECT_MAX_LIFETIME || (server_read_known && conn.bytes_in != 0) {
        return None;
    }
    match closed.how? {
        CloseKind::Client if !server_read_known => return None,
        CloseKind::Server => {}
        // A client close or a reset only counts when Redis wrote something first:
        // Redis never speaks before a command, except to turn a connection away,
        // and a fast client may read that error and close before Redis's own close
        // lands. A client that simply connects and leaves has received nothing.
        CloseKind::Reset | CloseKind::Client if conn.bytes_out > 0 => {}
        // Over TLS Redis writes nothing: its close of the unread ClientHello is the
        // reset. (A client that resets a TLS connection before its first byte — some
        // TCP health checks do — looks the same: INFO's rejected_connections tells.)
        CloseKind::Reset if tls_port => {}
        CloseKind::Reset | CloseKind::Client => return None,
    }
    Some(match conn.bytes_out {
        MAXCLIENTS_REPLY..=MAXCLIENTS_REPLY_MAX => RejectReason::MaxClients,
        n if n >= PROTECTED_MODE_REPLY_MIN => RejectReason::ProtectedMode,
        0 if tls_port => RejectReason::Tls,
        _ => RejectReason::Unknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::conn::{ByteDelta, Conn};
    use crate::model::*;

    fn closed(
        how: CloseKind,
        origin: Origin,
        lifetime_ms: u64,
        bytes_in: u64,
        bytes_out: u64,
    ) -> Closed {
        Closed {
            how: Some(how),
            conn: Some(Conn {
                origin,
                since: 0,
                last_active: None,
                bytes_in,
                bytes_out,
                queued: 0,
                owner: None,
                stack: None,
            }),
            lifetime: Some(lifetime_ms * 1_000_000),
            delta: ByteDelta::default(),
        }
    }

    #[test]
    fn maxclients_rejection_is_a_fast_server_close_that_read_nothing() {
        let c = closed(CloseKind::Server, Origin::Opened, 0, 0, 36);
        assert_eq!(classify(&c, false), Some(RejectReason::MaxClients));
        // The client had sent data: the close becomes a RST, still a rejection.
        let c = closed(CloseKind::Reset, Origin::Opened, 0, 0, 36);
        assert_eq!(classify(&c, false), Some(RejectReason::MaxClients));
    }

    #[test]
    fn a_client_that_reads_the_error_and_closes_first_was_still_rejected() {
        let c = closed(CloseKind::Client, Origin::Opened, 0, 0, 36);
        assert_eq!(classify(&c, false), Some(RejectReason::MaxClients));
        // …but not one that sent a command and got its reply.
        assert_eq!(
            classify(&closed(CloseKind::Client, Origin::Opened, 0, 14, 7), false),
            None
        );
    }

    #[test]
    fn from_the_client_a_rejection_is_the_error_then_a_fast_close_whatever_it_wrote() {
        // redis-py wrote its handshake (acknowledged, never read by Redis), read
        // the 36-byte error, and Redis's close came first or as a reset.
        for how in [CloseKind::Server, CloseKind::Reset] {
            let c = closed(how, Origin::Opened, 0, 120, 36);
            assert_eq!(
                classify_from_client(&c, false),
                Some(RejectReason::MaxClients)
            );
            assert_eq!(classify(&c, false), None);
        }
        // A command answered, then a fast close by the client: ordinary churn.
        let c = closed(CloseKind::Client, Origin::Opened, 0, 14, 36);
        assert_eq!(classify_from_client(&c, false), None);
        // A long-lived connection closed by the server (timeout): not a rejection.
        let c = closed(CloseKind::Server, Origin::Opened, 2_000, 14, 36);
        assert_eq!(classify_from_client(&c, false), None);
    }

    #[test]
    fn protected_mode_and_unknown_replies() {
        assert_eq!(
            classify(
                &closed(CloseKind::Server, Origin::Opened, 2, 0, 1020),
                false
            ),
            Some(RejectReason::ProtectedMode)
        );
        assert_eq!(
            classify(&closed(CloseKind::Server, Origin::Opened, 2, 0, 0), false),
            Some(RejectReason::Unknown)
        );
        assert_eq!(
            classify(&closed(CloseKind::Server, Origin::Opened, 2, 0, 200), false),
            Some(RejectReason::Unknown)
        );
    }

    #[test]
    fn on_the_tls_port_a_silent_close_or_reset_is_a_tls_rejection() {
        // Redis closed before the ClientHello arrived: a FIN, nothing written.
        let c = closed(CloseKind::Server, Origin::Opened, 1, 0, 0);
        assert_eq!(classify(&c, true), Some(RejectReason::Tls));
        assert_eq!(classify(&c, false), Some(RejectReason::Unknown));
        // The ClientHello had arrived unread: the close is a reset.
        let c = closed(CloseKind::Reset, Origin::Opened, 1, 0, 0);
        assert_eq!(classify(&c, true), Some(RejectReason::Tls));
        assert_eq!(classify(&c, false), None);
        // A TLS client served and gone: Redis read its handshake.
        let c = closed(CloseKind::Reset, Origin::Opened, 3, 517, 1420);
        assert_eq!(classify(&c, true), None);
        let c = closed(CloseKind::Server, Origin::Opened, 3, 517, 1420);
        assert_eq!(classify(&c, true), None);
        // A client that connects and leaves without a byte either way.
        let c = closed(CloseKind::Client, Origin::Opened, 0, 0, 0);
        assert_eq!(classify(&c, true), None);
        // Long-lived, or predating the agent: not a rejection there either.
        let c = closed(CloseKind::Reset, Origin::Opened, 5_000, 0, 0);
        assert_eq!(classify(&c, true), None);
        let c = closed(CloseKind::Reset, Origin::Seeded, 1, 0, 0);
        assert_eq!(classify(&c, true), None);
        // Sizes still tell the plain-text replies apart.
        let c = closed(CloseKind::Server, Origin::Opened, 0, 0, 36);
        assert_eq!(classify(&c, true), Some(RejectReason::MaxClients));
    }

    #[test]
    fn ordinary_closes_are_not_rejections() {
        // The client read and wrote: a normal QUIT.
        assert_eq!(
            classify(&closed(CloseKind::Server, Origin::Opened, 1, 14, 5), false),
            None
        );
        // An idle connection killed by `timeout` lived for seconds.
        assert_eq!(
            classify(
                &closed(CloseKind::Server, Origin::Opened, 5_000, 0, 0),
                false
            ),
            None
        );
        // The client closed first without having been sent anything.
        assert_eq!(
            classify(&closed(CloseKind::Client, Origin::Opened, 0, 0, 0), false),
            None
        );
        // A client abort before Redis wrote anything.
        assert_eq!(
            classify(&closed(CloseKind::Reset, Origin::Opened, 0, 0, 0), false),
            None
        );
        // A connection that predates the agent.
        assert_eq!(
            classify(&closed(CloseKind::Server, Origin::Seeded, 0, 0, 36), false),
            None
        );
        // Unknown to the table.
        let unknown = Closed {
            how: Some(CloseKind::Server),
            conn: None,
            lifetime: None,
            delta: ByteDelta::default(),
        };
        assert_eq!(classify(&unknown, false), None);
    }

    #[test]
    fn counts_by_reason() {
        let mut counts = RejectCounts::default();
        counts.add(RejectReason::MaxClients);
        counts.add(RejectReason::MaxClients);
        counts.add(RejectReason::Unknown);
        counts.add(RejectReason::Tls);
        assert_eq!(
            counts,
            RejectCounts {
                maxclients: 2,
                protected_mode: 0,
                tls: 1,
                unknown: 1
            }
        );
        assert_eq!(counts.total(), 4);
    }
}
