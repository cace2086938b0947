//! Why the server closed a connection: it turned it away (a rejection), the client
//! sat idle past Redis's `timeout`, Redis dropped a client whose replies piled up
//! (its output buffer limit), or something else (`CLIENT KILL`, `QUIT`, a restart).
//!
//! An output-buffer kill leaves the socket's send queue full: Redis only queues
//! replies in its own buffer once the kernel's is, so at the close the kernel still
//! holds many bytes the client never acknowledged. An ordinary close leaves a few at
//! most. The `timeout` kill comes from Redis's cron, which looks at the idle clients
//! in slices several times a second: the connection has moved nothing for about
//! `timeout` seconds when it is closed.

use std::time::Duration;

use crate::core::conn::Closed;
use crate::model::{CloseKind, Nanos, ServerClose};

/// A server-side close with at least this many bytes still unacknowledged is an
/// output-buffer kill: more than a reply in flight, a send queue that filled.
pub const OUTPUT_BUFFER_MIN_QUEUED: u64 = 16 * 1024;

/// A server-side close of a connection idle at least `timeout` minus this is the
/// idle timeout. Redis compares whole seconds (`unixtime - lastinteraction >
/// timeout`), so the idle time at its close is above `timeout - 1 s`; the agent's
/// idle time is exact (the kernel's last data time, and no byte moved since).
pub const IDLE_TIMEOUT_SLACK: Duration = Duration::from_secs(1);

/// Why the server closed `closed` (ended `how`) at `ts`; `None` when the server did
/// not close it. `rejected`: the close was classified as a rejection; `queued`: the
/// bytes unacknowledged at the close (from the kernel); `timeout_s`: Redis's
/// `timeout` setting, when known.
///
/// A server-side close (FIN) always has a cause. A reset has one only when it is an
/// output-buffer drop: Redis's close turns into a reset when the client had
/// pipelined commands Redis never read, as a client that does not read its replies
/// often has; the full send queue tells it.
pub fn server_close_cause(
    closed: &Closed,
    how: CloseKind,
    rejected: bool,
    queued: Option<u64>,
    timeout_s: Option<u64>,
    ts: Nanos,
) -> Option<ServerClose> {
    let piled_up = queued.is_some_and(|q| q >= OUTPUT_BUFFER_MIN_QUEUED);
    match how {
        CloseKind::Server => {}
        CloseKind::Reset if piled_up && !rejected => return Some(ServerClose::OutputBuffer),
        CloseKind::Reset | CloseKind::Client => return None,
    }
    if rejected {
        return Some(ServerClose::Rejection);
    }
    if piled_up {
        return Some(ServerClose::OutputBuffer);
    }
    let idle_timeout = match (timeout_s.filter(|&t| t > 0), &closed.conn) {
        // Nothing moved since the agent last looked (the close's final counts added
        // nothing), for about `timeout`.
        (Some(t), Some(conn)) if closed.delta.bytes_in == 0 && closed.delta.bytes_out == 0 => {
            let idle = Duration::from_nanos(conn.idle(ts));
            idle + IDLE_TIMEOUT_SLACK >= Duration::from_secs(t)
        }
        _ => false,
    };
    Some(if idle_timeout {
        ServerClose::IdleTimeout
    } else {
        ServerClose::Other
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::conn::{ByteDelta, Conn, Origin};

    const SEC: Nanos = 1_000_000_000;

    /// A connection opened at 0, last active at `active_s`, closed at `at_s` with
    /// `moved` bytes more than the agent had seen.
    fn closed(active_s: Option<u64>, moved: u64) -> Closed {
        let conn = Conn {
            origin: Origin::Opened,
            since: 0,
            last_active: active_s.map(|s| s * SEC),
            bytes_in: 0,
            bytes_out: 0,
            queued: 0,
            owner: None,
            stack: None,
        };
        Closed {
            how: Some(crate::model::CloseKind::Server),
            conn: Some(conn),
            lifetime: None,
            delta: ByteDelta {
                bytes_in: moved,
                bytes_out: 0,
            },
        }
    }

    #[test]
    fn each_cause_by_its_sign() {
        let at = 40 * SEC;
        let cause = |c: &Closed, rejected, queued, timeout| {
            server_close_cause(c, CloseKind::Server, rejected, queued, timeout, at)
                .expect("a server close has a cause")
        };
        // A rejection is a rejection, whatever else.
        assert_eq!(
            cause(&closed(None, 0), true, Some(1 << 20), Some(3)),
            ServerClose::Rejection
        );
        // A full send queue: the output buffer limit.
        assert_eq!(
            cause(&closed(Some(39), 0), false, Some(262_144), None),
            ServerClose::OutputBuffer
        );
        assert_eq!(
            cause(
                &closed(Some(39), 0),
                false,
                Some(OUTPUT_BUFFER_MIN_QUEUED - 1),
                None
            ),
            ServerClose::Other
        );
        // Idle 30 s with timeout 30 (or 31, within the slack): the idle timeout.
        assert_eq!(
            cause(&closed(Some(10), 0), false, Some(0), Some(30)),
            ServerClose::IdleTimeout
        );
        assert_eq!(
            cause(&closed(Some(10), 0), false, Some(0), Some(31)),
            ServerClose::IdleTimeout
        );
        // Idle 30 s but timeout 32 or 60, or no timeout, or unknown: something else.
        assert_eq!(
            cause(&closed(Some(10), 0), false, Some(0), Some(32)),
            ServerClose::Other
        );
        assert_eq!(
            cause(&closed(Some(10), 0), false, Some(0), Some(60)),
            ServerClose::Other
        );
        assert_eq!(
            cause(&closed(Some(10), 0), false, Some(0), Some(0)),
            ServerClose::Other
        );
        assert_eq!(
            cause(&closed(Some(10), 0), false, Some(0), None),
            ServerClose::Other
        );
        // Never active: idle since it opened (40 s).
        assert_eq!(
            cause(&closed(None, 0), false, None, Some(40)),
            ServerClose::IdleTimeout
        );
        // Bytes moved since the agent's last look: not idle.
        assert_eq!(
            cause(&closed(Some(10), 5), false, Some(0), Some(30)),
            ServerClose::Other
        );
        // A reset: an output-buffer drop only with a full send queue, never a rejection.
        let reset = |queued, rejected| {
            server_close_cause(
                &closed(Some(39), 0),
                CloseKind::Reset,
                rejected,
                Some(queued),
                Some(3),
                at,
            )
        };
        assert_eq!(reset(1 << 20, false), Some(ServerClose::OutputBuffer));
        assert_eq!(reset(100, false), None);
        assert_eq!(reset(1 << 20, true), None);
        // A client's close is never the server's.
        assert_eq!(
            server_close_cause(
                &closed(None, 0),
                CloseKind::Client,
                false,
                Some(1 << 20),
                Some(3),
                at
            ),
            None
        );
    }
}
