//! What a sock_diag scan says of the tracked connections: the traffic that
//! moved, and the connections gone without a close record.

use std::collections::HashSet;

use super::Tracker;
use crate::core::conn::Conn;
use crate::model::{Activity, ConnKey, Event, Nanos};

impl Tracker {
    /// Turns a sock_diag scan of every open connection on the watched ports (keys
    /// normalized, as sock_diag gives them), begun at `ts`, into the interval's [`Event::Activity`]: the figures of the
    /// connections the table holds whose traffic moved (so idle connections cost
    /// nothing in a capture), and the connections the table holds that opened
    /// before the scan but are not in it — their close record was lost.
    ///
    /// The caller applies every kernel record queued before the scan first, so a
    /// connection closed just before it is closed in the table, not gone.
    pub fn activity_from_scan(&self, ts: Nanos, scan: &[(ConnKey, Activity)]) -> Event {
        self.activity(ts, scan, |_| true)
    }

    /// The same for a scan that looked connections up one by one: `found` are the
    /// open ones with their figures, `answered` every key the kernel answered for
    /// (found or not). Only those can be gone: a connection not asked for (opened
    /// after the keys were taken) or not answered (a failed lookup) is neither.
    /// Given every key the table holds, the event is the one
    /// [`Tracker::activity_from_scan`] makes of a dump of the same sockets.
    pub fn activity_from_lookups(
        &self,
        ts: Nanos,
        answered: &[ConnKey],
        found: &[(ConnKey, Activity)],
    ) -> Event {
        let answered: HashSet<&ConnKey> = answered.iter().collect();
        self.activity(ts, found, |key| answered.contains(key))
    }

    fn activity(
        &self,
        ts: Nanos,
        scan: &[(ConnKey, Activity)],
        asked: impl Fn(&ConnKey) -> bool,
    ) -> Event {
        let mut conns = Vec::new();
        let mut found = HashSet::with_capacity(scan.len());
        for (key, activity) in scan {
            found.insert(*key);
            if let Some(conn) = self.conns.get(key)
                && moved(conn, activity)
            {
                conns.push((*key, *activity));
            }
        }
        let mut gone: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(key, conn)| conn.since < ts && !found.contains(key) && asked(key))
            .map(|(key, _)| *key)
            .collect();
        conns.sort_by_key(|(key, _)| *key);
        gone.sort_unstable();
        Event::Activity { ts, conns, gone }
    }
}

/// sock_diag times data movement in jiffies (up to 10 ms) and reports it as "ms
/// ago", so one instant read twice can differ by this much.
const ACTIVITY_JITTER: Nanos = 10_000_000;

/// Whether `activity` says more than the table knows of `conn`.
fn moved(conn: &Conn, activity: &Activity) -> bool {
    activity.bytes_in > conn.bytes_in
        || activity.bytes_out > conn.bytes_out
        || activity.queued.is_some_and(|q| q != conn.queued)
        || match (activity.last_active, conn.last_active) {
            (Some(new), Some(old)) => new > old + ACTIVITY_JITTER,
            (Some(_), None) => true,
            (None, _) => false,
        }
}
