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

use std::time::Duration;

use crate::core::conn::{Closed, Origin};
use crate::model::{CloseKind, RejectReason};

/// A server-side close faster than this, of a connection Redis never read from, is
/// a rejection. Generous, because the kernel's ESTABLISHED time precedes Redis's
/// accept() by however long the connection waited in the accept queue.
pub const REJECT_MAX_LIFETIME: Duration = Duration::from_secs(1);

/// `-ERR max number of clients reached\r\n`
pub const MAXCLIENTS_REPLY: u64 = 36;
/// The same error in cluster mode carries more text; protected mode's reply is ~1 KB.
const MAXCLIENTS_REPLY_MAX: u64 = 64;
const PROTECTED_MODE_REPLY_MIN: u64 = 512;

/// Whether a closed connection was a rejection, and why.
pub fn classify(closed: &Closed) -> Option<RejectReason> {
    let conn = closed.conn.as_ref()?;
    // Only connections seen opening: a seeded one predates us, its bytes are partial.
    if conn.origin != Origin::Opened {
        return None;
    }
    let lifetime = Duration::from_nanos(closed.lifetime?);
    if lifetime > REJECT_MAX_LIFETIME || conn.bytes_in != 0 {
        return None;
    }
    match closed.how? {
        CloseKind::Server => {}
        // A client close or a reset only counts when Redis wrote something first:
        // Redis never speaks before a command, except to turn a connection away,
        // and a fast client may read that error and close before Redis's own close
        // lands. A client that simply connects and leaves has received nothing.
        CloseKind::Reset | CloseKind::Client if conn.bytes_out > 0 => {}
        CloseKind::Reset | CloseKind::Client => return None,
    }
    Some(match conn.bytes_out {
        MAXCLIENTS_REPLY..=MAXCLIENTS_REPLY_MAX => RejectReason::MaxClients,
        n if n >= PROTECTED_MODE_REPLY_MIN => RejectReason::ProtectedMode,
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
            }),
            lifetime: Some(lifetime_ms * 1_000_000),
            delta: ByteDelta::default(),
        }
    }

    #[test]
    fn maxclients_rejection_is_a_fast_server_close_that_read_nothing() {
        let c = closed(CloseKind::Server, Origin::Opened, 0, 0, 36);
        assert_eq!(classify(&c), Some(RejectReason::MaxClients));
        // The client had sent data: the close becomes a RST, still a rejection.
        let c = closed(CloseKind::Reset, Origin::Opened, 0, 0, 36);
        assert_eq!(classify(&c), Some(RejectReason::MaxClients));
    }

    #[test]
    fn a_client_that_reads_the_error_and_closes_first_was_still_rejected() {
        let c = closed(CloseKind::Client, Origin::Opened, 0, 0, 36);
        assert_eq!(classify(&c), Some(RejectReason::MaxClients));
        // …but not one that sent a command and got its reply.
        assert_eq!(
            classify(&closed(CloseKind::Client, Origin::Opened, 0, 14, 7)),
            None
        );
    }

    #[test]
    fn protected_mode_and_unknown_replies() {
        assert_eq!(
            classify(&closed(CloseKind::Server, Origin::Opened, 2, 0, 1020)),
            Some(RejectReason::ProtectedMode)
        );
        assert_eq!(
            classify(&closed(CloseKind::Server, Origin::Opened, 2, 0, 0)),
            Some(RejectReason::Unknown)
        );
        assert_eq!(
            classify(&closed(CloseKind::Server, Origin::Opened, 2, 0, 200)),
            Some(RejectReason::Unknown)
        );
    }

    #[test]
    fn ordinary_closes_are_not_rejections() {
        // The client read and wrote: a normal QUIT.
        assert_eq!(
            classify(&closed(CloseKind::Server, Origin::Opened, 1, 14, 5)),
            None
        );
        // An idle connection killed by `timeout` lived for seconds.
        assert_eq!(
            classify(&closed(CloseKind::Server, Origin::Opened, 5_000, 0, 0)),
            None
        );
        // The client closed first without having been sent anything.
        assert_eq!(
            classify(&closed(CloseKind::Client, Origin::Opened, 0, 0, 0)),
            None
        );
        // A client abort before Redis wrote anything.
        assert_eq!(
            classify(&closed(CloseKind::Reset, Origin::Opened, 0, 0, 0)),
            None
        );
        // A connection that predates the agent.
        assert_eq!(
            classify(&closed(CloseKind::Server, Origin::Seeded, 0, 0, 36)),
            None
        );
        // Unknown to the table.
        let unknown = Closed {
            how: Some(CloseKind::Server),
            conn: None,
            lifetime: None,
            delta: ByteDelta::default(),
        };
        assert_eq!(classify(&unknown), None);
    }

    #[test]
    fn counts_by_reason() {
        let mut counts = RejectCounts::default();
        counts.add(RejectReason::MaxClients);
        counts.add(RejectReason::MaxClients);
        counts.add(RejectReason::Unknown);
        assert_eq!(
            counts,
            RejectCounts {
                maxclients: 2,
                protected_mode: 0,
                unknown: 1
            }
        );
        assert_eq!(counts.total(), 3);
    }
}
