//! The table of open connections: when each opened, when it last moved data, and
//! how many bytes it moved.
//!
//! Every change returns what the per-client statistics ([`crate::core::client`]) need to
//! know — a byte delta or a [`Closed`] record — so the two tables stay consistent
//! without looking into each other.

use crate::model::FastMap;

use crate::model::{Activity, CloseKind, ConnKey, Nanos, StackCounts};

/// How the agent learned of a connection, which decides whether its age is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Seen reaching ESTABLISHED: `since` is its exact open time.
    Opened,
    /// Found already open when the agent started: `since` is when it was found,
    /// a lower bound of its age.
    Seeded,
}

/// One open connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    pub origin: Origin,
    /// Open time ([`Origin::Opened`]) or seed time ([`Origin::Seeded`]).
    pub since: Nanos,
    /// Last time data moved; `None` if none has since `since`.
    pub last_active: Option<Nanos>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Bytes the server wrote that the client had not acknowledged at the last
    /// scan (its send queue): replies the client has not taken.
    pub queued: u64,
    /// The pid of the local process that opened it, when known.
    pub owner: Option<u32>,
    /// The id of that process's user stack at `connect()` (`--stacks`), when known.
    pub stack: Option<u32>,
}

impl Conn {
    fn new(origin: Origin, since: Nanos) -> Self {
        Conn {
            origin,
            since,
            last_active: None,
            bytes_in: 0,
            bytes_out: 0,
            queued: 0,
            owner: None,
            stack: None,
        }
    }

    /// Time since it opened; for a seeded connection a lower bound: the time since
    /// it was seeded or since it last moved data, whichever is earlier (it existed then).
    pub fn age(&self, now: Nanos) -> Nanos {
        now.saturating_sub(self.known_since())
    }

    /// The earliest time the connection is known to have existed.
    fn known_since(&self) -> Nanos {
        match (self.origin, self.last_active) {
            (Origin::Seeded, Some(active)) => active.min(self.since),
            _ => self.since,
        }
    }

    /// Time since data last moved, or since it opened/was seeded if none has.
    ///
    /// The last activity of a seeded connection may predate its seed time
    /// (sock_diag reports how long ago data last moved); it is used as is.
    pub fn idle(&self, now: Nanos) -> Nanos {
        now.saturating_sub(self.last_active.unwrap_or(self.since))
    }

    /// Open-to-close time, known only for connections seen opening.
    pub fn lifetime(&self, closed_at: Nanos) -> Option<Nanos> {
        match self.origin {
            Origin::Opened => Some(closed_at.saturating_sub(self.since)),
            Origin::Seeded => None,
        }
    }

    /// Takes newer traffic figures and returns by how much the byte counts grew.
    ///
    /// Counts only grow: the kernel's figures are totals of the connection's whole
    /// life (sock_diag scans, the socket's counters at close), so a smaller one is
    /// an older reading. Keeping the larger figure never counts a byte twice.
    fn absorb(&mut self, activity: &Activity) -> ByteDelta {
        let delta = ByteDelta {
            bytes_in: activity.bytes_in.saturating_sub(self.bytes_in),
            bytes_out: activity.bytes_out.saturating_sub(self.bytes_out),
        };
        self.bytes_in += delta.bytes_in;
        self.bytes_out += delta.bytes_out;
        if let Some(t) = activity.last_active {
            self.last_active = Some(self.last_active.map_or(t, |old| old.max(t)));
        }
        if let Some(q) = activity.queued {
            self.queued = q;
        }
        delta
    }
}

/// Bytes a connection moved since the previous figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByteDelta {
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl ByteDelta {
    fn of(activity: &Activity) -> Self {
        ByteDelta {
            bytes_in: activity.bytes_in,
            bytes_out: activity.bytes_out,
        }
    }
}

/// What the table knows of a connection that just closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed {
    /// Who closed it; `None` when the close itself was not seen (the entry was
    /// replaced by a new connection on the same addresses).
    pub how: Option<CloseKind>,
    /// The connection as the table held it (final traffic applied); `None` when the
    /// table did not know it (opened before the agent and not seeded, or its open
    /// event was lost).
    pub conn: Option<Conn>,
    /// Open-to-close time, when known.
    pub lifetime: Option<Nanos>,
    /// Bytes not yet reported through an earlier delta.
    pub delta: ByteDelta,
}

/// Totals of what the table has seen since the agent started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnCounts {
    pub opened: u64,
    pub seeded: u64,
    /// Every close, including [`Self::closed_untracked`] and [`Self::replaced`].
    pub closed: u64,
    pub closed_by_server: u64,
    pub closed_by_client: u64,
    pub reset: u64,
    /// Closes of connections the table did not know.
    pub closed_untracked: u64,
    /// Entries replaced by a new connection on the same addresses: their close was
    /// lost, so they count as closed, by nobody in particular.
    pub replaced: u64,
    /// Entries the interval's sock_diag scan no longer found: their close record was
    /// lost, so they count as closed, by nobody in particular.
    pub vanished: u64,
}

#[derive(Clone, Debug, Default)]
pub struct ConnTable {
    conns: FastMap<ConnKey, Conn>,
    counts: ConnCounts,
}

impl ConnTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// A connection reached ESTABLISHED. If the table already held one on the same
    /// addresses, its close was lost and the socket reused: the old entry is
    /// returned as closed (`how: None`, no lifetime) and replaced.
    pub fn open(&mut self, ts: Nanos, key: ConnKey) -> Option<Closed> {
        self.counts.opened += 1;
        let old = self.conns.insert(key, Conn::new(Origin::Opened, ts))?;
        self.counts.closed += 1;
        self.counts.replaced += 1;
        Some(Closed {
            how: None,
            conn: Some(old),
            // When it really closed is unknown, so is how long it lived.
            lifetime: None,
            delta: ByteDelta::default(),
        })
    }

    /// An open record of a connection the seed scan found first: the probes attach
    /// before the scan, so a connection opened around it is seen both ways, and its
    /// record may be drained after the scan. Two open connections cannot share a
    /// key, so it is the same connection, now known to have opened at `ts`:
    /// returns `true` and changes it into an opened one (counted as opened, no
    /// longer as seeded). (Were the seeded one's close record lost, the new
    /// connection takes its place without a close counted: `lost_events` says so.)
    /// `false` for anything else.
    pub fn adopt_seeded(&mut self, ts: Nanos, key: &ConnKey) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        if conn.origin != Origin::Seeded {
            return false;
        }
        conn.origin = Origin::Opened;
        conn.since = ts;
        self.counts.seeded = self.counts.seeded.saturating_sub(1);
        self.counts.opened += 1;
        true
    }

    /// A connection found open at the agent's start. Returns `false` and changes
    /// nothing when the table already knows it: the probes attach before the seed
    /// scan, so a connection opened in between is seen both ways, and its open
    /// event carries the exact open time.
    pub fn seed(&mut self, ts: Nanos, key: ConnKey, activity: &Activity) -> bool {
        if self.conns.contains_key(&key) {
            return false;
        }
        let mut conn = Conn::new(Origin::Seeded, ts);
        conn.absorb(activity);
        self.conns.insert(key, conn);
        self.counts.seeded += 1;
        true
    }

    /// A connection began to close. `activity` holds its final traffic figures
    /// when the kernel tracked it.
    pub fn close(
        &mut self,
        ts: Nanos,
        key: &ConnKey,
        how: CloseKind,
        activity: Option<&Activity>,
    ) -> Closed {
        self.count_close(how);
        match self.conns.remove(key) {
            Some(mut conn) => {
                let delta = activity.map(|a| conn.absorb(a)).unwrap_or_default();
                Closed {
                    how: Some(how),
                    lifetime: conn.lifetime(ts),
                    conn: Some(conn),
                    delta,
                }
            }
            None => {
                self.counts.closed_untracked += 1;
                Closed {
                    how: Some(how),
                    conn: None,
                    lifetime: None,
                    delta: activity.map(ByteDelta::of).unwrap_or_default(),
                }
            }
        }
    }

    /// A connection the kernel no longer holds although its close was never seen
    /// (its record was lost). Returned as closed like a replaced entry; `None` when
    /// the table did not hold it.
    /// Notes the local process that opened `key`, and its stack at `connect()`.
    pub fn set_owner(&mut self, key: &ConnKey, pid: u32, stack: Option<u32>) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.owner = Some(pid);
            conn.stack = stack;
        }
    }

    pub fn vanish(&mut self, key: &ConnKey) -> Option<Closed> {
        let conn = self.conns.remove(key)?;
        self.counts.closed += 1;
        self.counts.vanished += 1;
        Some(Closed {
            how: None,
            conn: Some(conn),
            lifetime: None,
            delta: ByteDelta::default(),
        })
    }

    /// Newer traffic figures of an open connection. `None` when the table does not
    /// know it (it is not ours to start tracking from a traffic report).
    pub fn update(&mut self, key: &ConnKey, activity: &Activity) -> Option<ByteDelta> {
        self.conns.get_mut(key).map(|conn| conn.absorb(activity))
    }

    /// Forgets an open connection as if it had never been seen, undoing its
    /// open/seed count. For connections found to be the agent's own after the fact.
    pub fn forget(&mut self, key: &ConnKey) -> Option<Conn> {
        let conn = self.conns.remove(key)?;
        match conn.origin {
            Origin::Opened => self.counts.opened = self.counts.opened.saturating_sub(1),
            Origin::Seeded => self.counts.seeded = self.counts.seeded.saturating_sub(1),
        }
        Some(conn)
    }

    fn count_close(&mut self, how: CloseKind) {
        self.counts.closed += 1;
        match how {
            CloseKind::Server => self.counts.closed_by_server += 1,
            CloseKind::Client => self.counts.closed_by_client += 1,
            CloseKind::Reset => self.counts.reset += 1,
        }
    }

    pub fn get(&self, key: &ConnKey) -> Option<&Conn> {
        self.conns.get(key)
    }

    /// The user stacks at `connect()` (`--stacks`) of `pid`'s open connections from
    /// `ip` idle at least `min_idle` at `now`: each stack id (`None`: no stack
    /// known) with how many, most first (ties: the lower id).
    pub fn owner_stacks(
        &self,
        ip: std::net::IpAddr,
        pid: u32,
        now: Nanos,
        min_idle: std::time::Duration,
    ) -> StackCounts {
        let min = u64::try_from(min_idle.as_nanos()).unwrap_or(u64::MAX);
        let mut counts: StackCounts = Vec::new();
        for (key, conn) in self.iter() {
            if key.remote.ip() != ip || conn.owner != Some(pid) || conn.idle(now) < min {
                continue;
            }
            match counts.iter_mut().find(|c| c.0 == conn.stack) {
                Some(c) => c.1 += 1,
                None => counts.push((conn.stack, 1)),
            }
        }
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        counts
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ConnKey, &Conn)> {
        self.conns.iter()
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub fn counts(&self) -> &ConnCounts {
        &self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use std::net::SocketAddr;

    const MS: Nanos = 1_000_000;
    const SEC: Nanos = 1_000_000_000;

    fn key(remote: &str) -> ConnKey {
        let local: SocketAddr = "10.0.0.1:6379".parse().unwrap();
        ConnKey::new(local, remote.parse().unwrap())
    }

    fn activity(bytes_in: u64, bytes_out: u64, last_active: Option<Nanos>) -> Activity {
        Activity {
            bytes_in,
            bytes_out,
            last_active,
            queued: None,
        }
    }

    #[test]
    fn open_then_close_gives_exact_lifetime_and_kind() {
        let mut t = ConnTable::new();
        let k = key("10.0.0.2:40000");
        assert_eq!(t.open(5 * SEC, k), None);
        assert_eq!(t.len(), 1);
        let closed = t.close(5 * SEC + 250 * MS, &k, CloseKind::Server, None);
        assert_eq!(closed.how, Some(CloseKind::Server));
        assert_eq!(closed.lifetime, Some(250 * MS));
        assert_eq!(closed.conn.map(|c| c.origin), Some(Origin::Opened));
        assert!(t.is_empty());
        let c = t.counts();
        assert_eq!((c.opened, c.closed, c.closed_by_server), (1, 1, 1));
        assert_eq!((c.closed_by_client, c.reset, c.closed_untracked), (0, 0, 0));
    }

    #[test]
    fn close_kinds_are_counted_separately() {
        let mut t = ConnTable::new();
        let kinds = [
            CloseKind::Client,
            CloseKind::Client,
            CloseKind::Reset,
            CloseKind::Server,
        ];
        for (i, how) in kinds.into_iter().enumerate() {
            let k = key(&format!("10.0.0.2:{}", 40000 + i));
            t.open(SEC, k);
            t.close(2 * SEC, &k, how, None);
        }
        let c = t.counts();
        assert_eq!(c.closed, 4);
        assert_eq!(c.closed_by_client, 2);
        assert_eq!(c.reset, 1);
        assert_eq!(c.closed_by_server, 1);
    }

    #[test]
    fn closing_unknown_connection_is_counted_without_lifetime() {
        let mut t = ConnTable::new();
        let k = key("10.0.0.2:40000");
        let closed = t.close(
            SEC,
            &k,
            CloseKind::Reset,
            Some(&activity(10, 20, Some(SEC))),
        );
        assert_eq!(closed.conn, None);
        assert_eq!(closed.lifetime, None);
        assert_eq!(closed.how, Some(CloseKind::Reset));
        // The kernel tracked it, so its bytes still count.
        assert_eq!(
            closed.delta,
            ByteDelta {
                bytes_in: 10,
                bytes_out: 20
            }
        );
        let c = t.counts();
        assert_eq!(
            (c.opened, c.closed, c.reset, c.closed_untracked),
            (0, 1, 1, 1)
        );
        assert!(t.is_empty());
    }

    #[test]
    fn duplicate_open_replaces_and_counts_old_as_closed_unknown() {
        let mut t = ConnTable::new();
        let k = key("10.0.0.2:40000");
        t.open(SEC, k);
        t.update(&k, &activity(100, 0, Some(2 * SEC)));
        let replaced = t.open(10 * SEC, k);
        let replaced = replaced.unwrap();
        assert_eq!(replaced.how, None);
        assert_eq!(replaced.lifetime, None);
        assert_eq!(
            replaced.conn.map(|c| (c.since, c.bytes_in)),
            Some((SEC, 100))
        );
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.get(&k).map(|c| (c.since, c.bytes_in)),
            Some((10 * SEC, 0))
        );
        let c = t.counts();
        assert_eq!((c.opened, c.closed, c.replaced), (2, 1, 1));
        assert_eq!(c.closed_by_server + c.closed_by_client + c.reset, 0);
        // Closing the new one measures from the new open.
        let closed = t.close(11 * SEC, &k, CloseKind::Client, None);
        assert_eq!(closed.lifetime, Some(SEC));
    }

    #[test]
    fn seeded_connection_has_lower_bound_age_and_no_lifetime() {
        let mut t = ConnTable::new();
        let k = key("[2001:db8::7]:50000");
        assert!(t.seed(100 * SEC, k, &activity(5, 6, None)));
        let conn = t.get(&k).copied().unwrap();
        assert_eq!(conn.origin, Origin::Seeded);
        assert_eq!(conn.age(160 * SEC), 60 * SEC);
        // No activity yet: idle since it was seeded.
        assert_eq!(conn.idle(160 * SEC), 60 * SEC);
        let closed = t.close(200 * SEC, &k, CloseKind::Client, None);
        assert_eq!(closed.lifetime, None);
        assert_eq!(closed.conn.map(|c| c.bytes_in), Some(5));
        assert_eq!(t.counts().seeded, 1);
        assert_eq!(t.counts().opened, 0);
        assert_eq!(t.counts().closed_untracked, 0);
    }

    #[test]
    fn seeded_idle_uses_activity_from_before_the_seed() {
        let mut t = ConnTable::new();
        let k = key("10.0.0.2:40000");
        // sock_diag saw its last data 30 s before the scan at 100 s.
        t.seed(100 * SEC, k, &activity(0, 0, Some(70 * SEC)));
        assert_eq!(t.get(&k).map(|c| c.idle(100 * SEC)), Some(30 * SEC));
        // It existed when it last moved data: its age is at least 30 s.
        assert_eq!(t.get(&k).map(|c| c.age(100 * SEC)), Some(30 * SEC));
    }

    #[test]
    fn seeding_a_known_connection_keeps_exact_open_time() {
        let mut t = ConnTable::new();
        let k = key("10.0.0.2:40000");
        t.open(SEC, k);
        assert!(!t.seed(2 * SEC, k, &activity(0, 0, None)));
        assert_eq!(
            t.get(&k).map(|c| (c.origin, c.since)),
            Some((Origin::Opened, SEC))
        );
        assert_eq!(t.counts().seeded, 0);
    }

    #[test]
    fn activity_sets_idle_and_yields_byte_deltas() {
        let mut t = ConnTable::new();
        let k = key("10.0.0.2:40000");
        t.open(SEC, k);
        assert_eq!(t.get(&k).map(|c| c.idle(4 * SEC)), Some(3 * SEC));
        let d1 = t.update(&k, &activity(100, 40, Some(2 * SEC)));
        assert_eq!(
            d1,
            Some(ByteDelta {
                bytes_in: 100,
                bytes_out: 40
            })
        );
        let d2 = t.update(&k, &activity(150, 40, Some(3 * SEC)));
        assert_eq!(
            d2,
            Some(ByteDelta {
                bytes_in: 50,
                bytes_out: 0
            })
        );
        assert_eq!(t.get(&k).map(|c| c.idle(10 * SEC)), Some(7 * SEC));
        // Figures that went backwards (another source) neither shrink bytes nor age activity.
        let d3 = t.update(&k, &activity(20, 10, Some(2 * SEC)));
        assert_eq!(d3, Some(ByteDelta::default()));
        let conn = t.get(&k).copied().unwrap();
        assert_eq!((conn.bytes_in, conn.bytes_out), (150, 40));
        assert_eq!(conn.last_active, Some(3 * SEC));
        // Final figures at close add the remainder.
        let closed = t.close(
            11 * SEC,
            &k,
            CloseKind::Server,
            Some(&activity(160, 1040, Some(11 * SEC))),
        );
        assert_eq!(
            closed.delta,
            ByteDelta {
                bytes_in: 10,
                bytes_out: 1000
            }
        );
    }

    #[test]
    fn activity_of_unknown_connection_is_ignored() {
        let mut t = ConnTable::new();
        assert_eq!(
            t.update(&key("10.0.0.2:40000"), &activity(1, 1, Some(SEC))),
            None
        );
        assert!(t.is_empty());
    }

    #[test]
    fn forget_undoes_the_open_count() {
        let mut t = ConnTable::new();
        let k = key("10.0.0.2:40000");
        t.open(SEC, k);
        assert!(t.forget(&k).is_some());
        assert!(t.is_empty());
        assert_eq!(t.counts().opened, 0);
        assert_eq!(t.forget(&k), None);
    }

    #[test]
    fn ipv4_mapped_keys_match_plain_ipv4() {
        let mut t = ConnTable::new();
        t.open(SEC, key("[::ffff:10.0.0.2]:40000"));
        let closed = t.close(2 * SEC, &key("10.0.0.2:40000"), CloseKind::Client, None);
        assert_eq!(closed.lifetime, Some(SEC));
    }

    #[test]
    fn clock_going_backwards_does_not_underflow() {
        let mut t = ConnTable::new();
        let k = key("10.0.0.2:40000");
        t.open(10 * SEC, k);
        let conn = t.get(&k).copied().unwrap();
        assert_eq!(conn.age(5 * SEC), 0);
        assert_eq!(conn.idle(5 * SEC), 0);
        assert_eq!(
            t.close(5 * SEC, &k, CloseKind::Client, None).lifetime,
            Some(0)
        );
    }

    #[test]
    fn a_vanished_connection_counts_as_closed_by_nobody() {
        let mut t = ConnTable::new();
        let k = key("10.0.0.2:40000");
        t.open(SEC, k);
        let closed = t.vanish(&k).unwrap();
        assert_eq!((closed.how, closed.lifetime), (None, None));
        assert_eq!(closed.conn.map(|c| c.since), Some(SEC));
        assert!(t.is_empty());
        let c = t.counts();
        assert_eq!(
            (c.opened, c.closed, c.vanished, c.closed_untracked),
            (1, 1, 1, 0)
        );
        assert_eq!(t.vanish(&k), None, "only once");
        assert_eq!(t.counts().closed, 1);
    }
}
