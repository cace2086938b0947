//! Statistics per client address: how many connections it opened, held and lost,
//! who closed them, how long they lived and how much they moved.
//!
//! The table is fed the outcomes of [`crate::core::conn::ConnTable`] changes. It stays
//! bounded: an address with open connections is always kept; one without that has
//! been quiet for longer than the retention window can be evicted
//! ([`ClientTable::evict_quiet`]), and so can the longest-quiet ones when a flood
//! of new addresses reaches [`MAX_ADDRESSES`]. Evictions are counted.

use crate::model::FastMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::time::Duration;

use crate::core::conn::{ByteDelta, Closed, Conn, Origin};
use crate::core::histogram::Histogram;
use crate::core::process::ProcStats;
use crate::core::retry::RetryGaps;
use crate::model::{CloseKind, FailedBy, Failure, Nanos, Process, ServerClose, ServerCloses};

/// How long an address without open connections is kept after its last event.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(10 * 60);

/// At most this many addresses are kept: more than a Redis host has clients, few
/// enough that a flood of attempts from new addresses (a scan, a spoofed storm)
/// cannot grow the agent without bound. Addresses holding connections are kept
/// beyond it: they are bounded by the connections themselves.
pub const MAX_ADDRESSES: usize = 20_000;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Connections seen opening since the agent started.
    pub opened: u64,
    /// Connections closed, whoever closed them and whether or not their open was seen.
    pub closed: u64,
    pub closed_by_server: u64,
    /// `closed_by_server` by cause.
    pub server_closes: ServerCloses,
    pub closed_by_client: u64,
    pub reset: u64,
    /// Of the closes, those that were Redis turning the connection away.
    pub rejected: u64,
    /// Attempts the kernel refused (RST) because nothing listened on the port.
    pub refused: u64,
    /// Client mode: this host's failed connects by cause (its `refused` is
    /// `refused`).
    pub connects_failed: FailedBy,
    /// Open-to-close times of closed connections whose open was seen, in µs.
    pub lifetime_us: Histogram,
    /// Bytes read from / written to this address: closed connections plus the
    /// current figures of open ones.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Connections open now.
    pub open: u64,
    /// Of `open`, those that predate the agent.
    pub seeded_open: u64,
    /// Time of the last open, seed, close or traffic of this address.
    pub last_seen: Nanos,
    /// Gaps between a failed attempt and the next one, made at the first
    /// failure: most addresses never fail, and their stats are then 144 bytes
    /// smaller to zero, to read when forgotten, and to keep.
    retry: Option<Box<RetryGaps>>,
    /// The local processes behind this address's connections.
    pub processes: ProcStats,
    /// Touched since the last [`ClientTable::take_changes`].
    moved: bool,
}

impl ClientStats {
    /// The gaps between failed attempts and the next ones (`None`: no failure yet).
    pub fn retry(&self) -> Option<&RetryGaps> {
        self.retry.as_deref()
    }

    /// Failed attempts seen.
    pub fn failures(&self) -> u64 {
        self.retry().map_or(0, RetryGaps::failures)
    }

    /// A new attempt began at `ts` (a gap only after a failure).
    fn on_attempt(&mut self, ts: Nanos) {
        if let Some(r) = &mut self.retry {
            r.on_attempt(ts);
        }
    }

    /// A failed attempt ended at `ts`.
    fn on_failure(&mut self, ts: Nanos) {
        self.retry.get_or_insert_with(Box::default).on_failure(ts);
    }

    fn touch(&mut self, ts: Nanos) {
        self.last_seen = self.last_seen.max(ts);
    }

    fn add_bytes(&mut self, delta: ByteDelta) {
        self.bytes_in = self.bytes_in.saturating_add(delta.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(delta.bytes_out);
    }

    fn count_close(&mut self, how: Option<CloseKind>) {
        self.closed += 1;
        match how {
            Some(CloseKind::Server) => self.closed_by_server += 1,
            Some(CloseKind::Client) => self.closed_by_client += 1,
            Some(CloseKind::Reset) => self.reset += 1,
            None => {}
        }
    }

    fn release(&mut self, conn: &Conn, forget: bool) {
        let origin = conn.origin;
        if let Some(pid) = conn.owner {
            self.processes.on_released(pid, forget);
        }
        self.open = self.open.saturating_sub(1);
        if origin == Origin::Seeded {
            self.seeded_open = self.seeded_open.saturating_sub(1);
        }
    }

    /// Nothing left that was ever counted: the entry carries no information.
    fn is_blank(&self) -> bool {
        self.opened == 0 && self.closed == 0 && self.open == 0
    }

    /// Resets plus server-side closes: the connections this client lost rather than ended.
    pub fn lost(&self) -> u64 {
        self.reset + self.closed_by_server
    }
}

#[derive(Clone, Debug)]
pub struct ClientTable {
    /// Stats boxed: a full table evicts an eighth of itself at once and refills,
    /// which makes the map rehash in place every few rounds; it then moves
    /// 16-byte slots instead of ~500-byte stats (this was a fifth of the agent's
    /// time under a flood of one-shot addresses).
    clients: FastMap<IpAddr, Slot>,
    retention: Nanos,
    max_addresses: usize,
    evicted: u64,
    /// No address can be quiet past the retention window before this: the
    /// earliest eviction the last pass left (every address touched since ends
    /// its quiet later). Spares the walk of every address at each tick.
    next_evict: Nanos,
    /// Addresses touched or dropped since the last [`ClientTable::take_changes`]
    /// (each once while it stays known; a dropped one may repeat).
    changes: Vec<IpAddr>,
}

/// A known address: its stats, and beside the pointer to them what a full
/// table's eviction orders addresses by, so that its walk of every address reads
/// no stats (each a cache miss: a tenth of the agent's time under a flood).
#[derive(Clone, Debug, Default)]
struct Slot {
    /// The address's `last_seen` as of the last [`ClientTable::take_changes`], if
    /// it held nothing open then and was not touched since; [`ACTIVE`] otherwise.
    quiet_since: Nanos,
    stats: Box<ClientStats>,
}

/// [`Slot::quiet_since`] of an address touched since the last report, or holding
/// connections at it.
const ACTIVE: Nanos = Nanos::MAX;

impl Default for ClientTable {
    fn default() -> Self {
        Self::new(DEFAULT_RETENTION)
    }
}

impl ClientTable {
    pub fn new(retention: Duration) -> Self {
        Self::with_max_addresses(retention, MAX_ADDRESSES)
    }

    /// A table that keeps at most `max_addresses` (at least 8) addresses without
    /// open connections.
    pub fn with_max_addresses(retention: Duration, max_addresses: usize) -> Self {
        ClientTable {
            clients: FastMap::default(),
            retention: u64::try_from(retention.as_nanos()).unwrap_or(u64::MAX),
            max_addresses: max_addresses.max(8),
            evicted: 0,
            next_evict: 0,
            changes: Vec::new(),
        }
    }

    fn entry(&mut self, ip: IpAddr, ts: Nanos) -> &mut ClientStats {
        if self.clients.len() >= self.max_addresses && !self.clients.contains_key(&ip) {
            self.make_room();
        }
        let slot = self.clients.entry(ip).or_default();
        slot.quiet_since = ACTIVE;
        let stats = &mut *slot.stats;
        stats.touch(ts);
        if !stats.moved {
            stats.moved = true;
            self.changes.push(ip);
        }
        stats
    }

    /// The addresses touched, dropped or evicted since the last call: the rows a
    /// report must build again (those no longer known are gone from it).
    pub fn take_changes(&mut self) -> Vec<IpAddr> {
        let changes = std::mem::take(&mut self.changes);
        for ip in &changes {
            if let Some(slot) = self.clients.get_mut(ip) {
                slot.stats.moved = false;
                slot.quiet_since = if slot.stats.open > 0 {
                    ACTIVE
                } else {
                    slot.stats.last_seen
                };
            }
        }
        changes
    }

    /// A connection from `ip` was seen opening.
    pub fn on_opened(&mut self, ip: IpAddr, ts: Nanos) {
        let stats = self.entry(ip, ts);
        stats.opened += 1;
        stats.open += 1;
        stats.on_attempt(ts);
    }

    /// A connection from `ip` counted as seeded turned out to have opened at `ts`,
    /// after the agent started (see `ConnTable::adopt_seeded`).
    pub fn on_adopted(&mut self, ip: IpAddr, ts: Nanos) {
        let stats = self.entry(ip, ts);
        stats.seeded_open = stats.seeded_open.saturating_sub(1);
        stats.opened += 1;
        stats.on_attempt(ts);
    }

    /// An attempt from `ip` failed at `ts` (rejected, refused, reset).
    pub fn on_failed_attempt(&mut self, ip: IpAddr, ts: Nanos) {
        self.entry(ip, ts).on_failure(ts);
    }

    /// A connection from `ip` was found open at the agent's start, with `bytes` so far.
    pub fn on_seeded(&mut self, ip: IpAddr, ts: Nanos, bytes: ByteDelta) {
        let stats = self.entry(ip, ts);
        stats.open += 1;
        stats.seeded_open += 1;
        stats.add_bytes(bytes);
    }

    /// A connection from `ip` closed (or was replaced, `how: None`).
    pub fn on_closed(&mut self, ip: IpAddr, ts: Nanos, closed: &Closed) {
        let stats = self.entry(ip, ts);
        stats.count_close(closed.how);
        if let Some(conn) = &closed.conn {
            stats.release(conn, false);
        }
        if let Some(lifetime) = closed.lifetime {
            stats.lifetime_us.record(lifetime / 1_000);
        }
        stats.add_bytes(closed.delta);
    }

    /// The server closed a connection of `ip`, for `cause` (counted in
    /// [`Self::on_closed`] too).
    pub fn on_server_close(&mut self, ip: IpAddr, cause: ServerClose) {
        if let Some(slot) = self.clients.get_mut(&ip) {
            slot.stats.server_closes.add(cause);
        }
    }

    /// A close of `ip` was a rejection by Redis (counted in [`Self::on_closed`] too).
    pub fn on_rejected(&mut self, ip: IpAddr, ts: Nanos) {
        self.entry(ip, ts).rejected += 1;
    }

    /// Local process `p` opened a connection from `ip` (already counted by
    /// [`Self::on_opened`]).
    pub fn on_process_opened(&mut self, ip: IpAddr, ts: Nanos, p: &Process) {
        self.entry(ip, ts).processes.on_opened(p, ts);
    }

    /// Local process `p` failed to connect from `ip`.
    pub fn on_process_failed(&mut self, ip: IpAddr, ts: Nanos, p: &Process, why: Failure) {
        self.entry(ip, ts).processes.on_failed(p, ts, why);
    }

    /// A connection from `ip` of the local process `pid` failed (rejected, reset).
    pub fn on_process_failed_pid(&mut self, ip: IpAddr, ts: Nanos, pid: u32, why: Failure) {
        self.entry(ip, ts).processes.on_failed_pid(pid, why);
    }

    /// Client mode: a connect from `ip` failed, for `why`: an attempt, and its
    /// failure; a refusal only when a reset answered it.
    pub fn on_connect_failed(&mut self, ip: IpAddr, ts: Nanos, why: Failure) {
        let stats = self.entry(ip, ts);
        if why == Failure::Refused {
            stats.refused += 1;
        }
        stats.connects_failed.count(why);
        stats.on_attempt(ts);
        stats.on_failure(ts);
    }

    /// An attempt from `ip` found nothing listening: an attempt, and its failure.
    pub fn on_refused(&mut self, ip: IpAddr, ts: Nanos) {
        let stats = self.entry(ip, ts);
        stats.refused += 1;
        stats.on_attempt(ts);
        stats.on_failure(ts);
    }

    /// An open connection from `ip` moved more bytes.
    pub fn on_bytes(&mut self, ip: IpAddr, ts: Nanos, delta: ByteDelta) {
        if delta == ByteDelta::default() {
            return;
        }
        self.entry(ip, ts).add_bytes(delta);
    }

    /// Takes back an open connection that should never have been counted (the
    /// agent's own, recognised late). Drops the address if nothing else was seen of it.
    pub fn forget_open(&mut self, ip: IpAddr, conn: &Conn) {
        let Entry::Occupied(mut entry) = self.clients.entry(ip) else {
            return;
        };
        let slot = entry.get_mut();
        slot.quiet_since = ACTIVE;
        let stats = &mut *slot.stats;
        stats.release(conn, true);
        if stats.open == 0 {
            // Quiet from its last event, not from now (see `next_evict`).
            let quiet_ends = stats.last_seen.saturating_add(self.retention);
            self.next_evict = self.next_evict.min(quiet_ends.saturating_add(1));
        }
        if conn.origin == Origin::Opened {
            stats.opened = stats.opened.saturating_sub(1);
        }
        stats.bytes_in = stats.bytes_in.saturating_sub(conn.bytes_in);
        stats.bytes_out = stats.bytes_out.saturating_sub(conn.bytes_out);
        if !stats.moved {
            stats.moved = true;
            self.changes.push(ip);
        }
        if stats.is_blank() {
            entry.remove();
        }
    }

    /// Drops addresses with no open connection and no event for longer than the
    /// retention window; returns how many.
    pub fn evict_quiet(&mut self, now: Nanos) -> u64 {
        if now < self.next_evict {
            return 0;
        }
        let retention = self.retention;
        let before = self.clients.len();
        let changes = &mut self.changes;
        // An address open now or touched later is quiet from then on.
        let mut next = now.saturating_add(retention).saturating_add(1);
        self.clients.retain(|ip, slot| {
            let s = &slot.stats;
            let keep = s.open > 0 || now.saturating_sub(s.last_seen) <= retention;
            if !keep {
                changes.push(*ip);
            } else if s.open == 0 {
                next = next.min(s.last_seen.saturating_add(retention).saturating_add(1));
            }
            keep
        });
        self.next_evict = next;
        let evicted = (before - self.clients.len()) as u64;
        self.evicted += evicted;
        evicted
    }

    /// The table is full: forgets the longest-quiet addresses without open
    /// connections, down to 7/8 of the limit, so the sort is paid once per
    /// limit/8 new addresses, not once per address. The candidates are the
    /// addresses quiet since the last report (their slots say since when);
    /// should they not make enough room, the addresses touched since are too.
    fn make_room(&mut self) {
        let keep = self.max_addresses - self.max_addresses / 8;
        let excess = self.clients.len().saturating_sub(keep);
        if excess == 0 {
            return;
        }
        let mut quiet: Vec<(Nanos, IpAddr)> = self
            .clients
            .iter()
            .filter(|(_, s)| s.quiet_since != ACTIVE)
            .map(|(ip, s)| (s.quiet_since, *ip))
            .collect();
        if quiet.len() < excess {
            quiet = self
                .clients
                .iter()
                .filter(|(_, s)| s.stats.open == 0)
                .map(|(ip, s)| (s.stats.last_seen, *ip))
                .collect();
        }
        if quiet.is_empty() {
            return;
        }
        if quiet.len() > excess {
            quiet.select_nth_unstable(excess - 1);
            quiet.truncate(excess);
        }
        for (_, ip) in quiet {
            self.clients.remove(&ip);
            self.changes.push(ip);
            self.evicted += 1;
        }
    }

    pub fn get(&self, ip: &IpAddr) -> Option<&ClientStats> {
        self.clients.get(ip).map(|s| &*s.stats)
    }

    /// All known addresses, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&IpAddr, &ClientStats)> {
        self.clients.iter().map(|(ip, s)| (ip, &*s.stats))
    }

    /// Distinct addresses known now.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Addresses evicted since the start.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::conn::ConnTable;
    use crate::model::*;
    use crate::model::{Activity, ConnKey};
    use std::net::SocketAddr;

    const MS: Nanos = 1_000_000;
    const SEC: Nanos = 1_000_000_000;

    /// A conn table and a client table fed together, as the tracker does.
    struct Fixture {
        conns: ConnTable,
        clients: ClientTable,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                conns: ConnTable::new(),
                clients: ClientTable::new(Duration::from_secs(600)),
            }
        }

        fn open(&mut self, ts: Nanos, remote: &str) {
            let k = key(remote);
            if let Some(old) = self.conns.open(ts, k) {
                self.clients.on_closed(k.remote.ip(), ts, &old);
            }
            self.clients.on_opened(k.remote.ip(), ts);
        }

        fn seed(&mut self, ts: Nanos, remote: &str, bytes_in: u64) {
            let k = key(remote);
            let a = Activity {
                bytes_in,
                bytes_out: 0,
                last_active: None,
                queued: None,
            };
            if self.conns.seed(ts, k, &a) {
                let bytes = ByteDelta {
                    bytes_in,
                    bytes_out: 0,
                };
                self.clients.on_seeded(k.remote.ip(), ts, bytes);
            }
        }

        fn close(&mut self, ts: Nanos, remote: &str, how: CloseKind) {
            let k = key(remote);
            let closed = self.conns.close(ts, &k, how, None);
            self.clients.on_closed(k.remote.ip(), ts, &closed);
        }

        fn traffic(&mut self, ts: Nanos, remote: &str, bytes_in: u64, bytes_out: u64) {
            let k = key(remote);
            let a = Activity {
                bytes_in,
                bytes_out,
                last_active: Some(ts),
                queued: None,
            };
            if let Some(delta) = self.conns.update(&k, &a) {
                self.clients.on_bytes(k.remote.ip(), ts, delta);
            }
        }

        fn stats(&self, ip: &str) -> ClientStats {
            self.clients
                .get(&ip.parse().unwrap())
                .cloned()
                .unwrap_or_else(|| panic!("no stats for {ip}"))
        }
    }

    fn key(remote: &str) -> ConnKey {
        let local: SocketAddr = "10.0.0.1:6379".parse().unwrap();
        ConnKey::new(local, remote.parse().unwrap())
    }

    #[test]
    fn counts_opens_closes_and_who_closed() {
        let mut f = Fixture::new();
        for port in 1..=5 {
            f.open(SEC, &format!("10.0.0.2:{port}"));
        }
        f.close(2 * SEC, "10.0.0.2:1", CloseKind::Server);
        f.close(2 * SEC, "10.0.0.2:2", CloseKind::Client);
        f.close(2 * SEC, "10.0.0.2:3", CloseKind::Client);
        f.close(2 * SEC, "10.0.0.2:4", CloseKind::Reset);
        let s = f.stats("10.0.0.2");
        assert_eq!((s.opened, s.open, s.closed), (5, 1, 4));
        assert_eq!((s.closed_by_server, s.closed_by_client, s.reset), (1, 2, 1));
        assert_eq!(s.lost(), 2);
        assert_eq!(s.lifetime_us.count(), 4);
        assert_eq!(s.lifetime_us.quantile(0.5), Some(1_000_000));
    }

    #[test]
    fn retry_gaps_are_kept_only_from_an_addresss_first_failure() {
        let mut f = Fixture::new();
        f.open(SEC, "10.0.0.2:1");
        f.close(2 * SEC, "10.0.0.2:1", CloseKind::Client);
        let s = f.stats("10.0.0.2");
        assert!(s.retry().is_none(), "never failed: nothing kept");
        assert_eq!(s.failures(), 0);
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        f.clients.on_failed_attempt(ip, 3 * SEC);
        f.clients.on_opened(ip, 3 * SEC + 250_000_000);
        let s = f.stats("10.0.0.2");
        assert_eq!(s.failures(), 1);
        // The attempt 250 ms after the failure is its gap.
        assert_eq!(
            s.retry().map(|r| (r.count(), r.last())),
            Some((1, Some(250_000)))
        );
    }

    #[test]
    fn lifetimes_are_recorded_in_microseconds() {
        let mut f = Fixture::new();
        // A maxclients rejection: accepted and closed by the server 45 µs later.
        f.open(SEC, "10.0.0.2:1");
        f.close(SEC + 45_000, "10.0.0.2:1", CloseKind::Server);
        f.open(SEC, "10.0.0.2:2");
        f.close(SEC + 12 * MS, "10.0.0.2:2", CloseKind::Client);
        let s = f.stats("10.0.0.2");
        assert_eq!(s.lifetime_us.quantile(0.0), Some(45));
        assert_eq!(s.lifetime_us.max(), Some(12_000));
    }

    #[test]
    fn addresses_are_kept_apart_ipv6_and_mapped_ipv4() {
        let mut f = Fixture::new();
        f.open(SEC, "[2001:db8::1]:1000");
        f.open(SEC, "[::ffff:192.168.1.9]:1000");
        f.open(SEC, "192.168.1.9:1001");
        assert_eq!(f.clients.len(), 2);
        assert_eq!(f.stats("192.168.1.9").open, 2);
        assert_eq!(f.stats("2001:db8::1").open, 1);
    }

    #[test]
    fn unknown_close_counts_but_does_not_touch_open_or_lifetime() {
        let mut f = Fixture::new();
        f.open(SEC, "10.0.0.2:1");
        f.close(2 * SEC, "10.0.0.2:99", CloseKind::Reset);
        let s = f.stats("10.0.0.2");
        assert_eq!((s.opened, s.open, s.closed, s.reset), (1, 1, 1, 1));
        assert!(s.lifetime_us.is_empty());
    }

    #[test]
    fn replaced_connection_counts_as_closed_not_double_open() {
        let mut f = Fixture::new();
        f.open(SEC, "10.0.0.2:1");
        f.open(5 * SEC, "10.0.0.2:1");
        let s = f.stats("10.0.0.2");
        assert_eq!((s.opened, s.open, s.closed), (2, 1, 1));
        assert_eq!(s.closed_by_server + s.closed_by_client + s.reset, 0);
        assert!(s.lifetime_us.is_empty());
    }

    #[test]
    fn seeded_connections_count_as_open_not_opened() {
        let mut f = Fixture::new();
        f.seed(SEC, "10.0.0.2:1", 500);
        f.seed(SEC, "10.0.0.2:2", 0);
        let s = f.stats("10.0.0.2");
        assert_eq!(
            (s.opened, s.open, s.seeded_open, s.bytes_in),
            (0, 2, 2, 500)
        );
        f.close(9 * SEC, "10.0.0.2:1", CloseKind::Client);
        let s = f.stats("10.0.0.2");
        assert_eq!((s.open, s.seeded_open, s.closed), (1, 1, 1));
        // Its age was unknown, so no lifetime.
        assert!(s.lifetime_us.is_empty());
    }

    #[test]
    fn bytes_cover_closed_and_open_connections() {
        let mut f = Fixture::new();
        f.open(SEC, "10.0.0.2:1");
        f.open(SEC, "10.0.0.2:2");
        f.traffic(2 * SEC, "10.0.0.2:1", 100, 1000);
        f.traffic(2 * SEC, "10.0.0.2:2", 7, 3);
        f.traffic(3 * SEC, "10.0.0.2:1", 150, 1000);
        f.close(4 * SEC, "10.0.0.2:1", CloseKind::Client);
        let s = f.stats("10.0.0.2");
        assert_eq!((s.bytes_in, s.bytes_out), (157, 1003));
    }

    #[test]
    fn quiet_addresses_without_open_connections_are_evicted() {
        let mut f = Fixture::new();
        f.open(SEC, "10.0.0.2:1");
        f.close(2 * SEC, "10.0.0.2:1", CloseKind::Client);
        f.open(SEC, "10.0.0.3:1"); // still open, quiet for ages
        f.open(SEC, "10.0.0.4:1");
        f.close(500 * SEC, "10.0.0.4:1", CloseKind::Client);
        // 600 s after the last event is still within the window.
        assert_eq!(f.clients.evict_quiet(602 * SEC), 0);
        assert_eq!(f.clients.evict_quiet(603 * SEC), 1);
        assert_eq!(f.clients.get(&"10.0.0.2".parse().unwrap()), None);
        assert_eq!(f.clients.evict_quiet(5000 * SEC), 1);
        assert_eq!(f.clients.len(), 1);
        assert_eq!(f.stats("10.0.0.3").open, 1);
        assert_eq!(f.clients.evicted(), 2);

        // The holder closes late: quiet from then, evicted at its own time although
        // the last pass had found nothing to evict for another 600 s.
        f.close(5100 * SEC, "10.0.0.3:1", CloseKind::Client);
        assert_eq!(f.clients.evict_quiet(5700 * SEC), 0);
        assert_eq!(f.clients.evict_quiet(5701 * SEC), 1);
        assert!(f.clients.is_empty());
    }

    #[test]
    fn a_flood_of_new_addresses_evicts_the_longest_quiet_ones() {
        let mut t = ClientTable::with_max_addresses(Duration::from_secs(600), 16);
        let ip = |i: u32| IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]);
        // Address 0 holds a connection: never evicted.
        t.on_opened(ip(0), 0);
        for i in 1..16 {
            t.on_refused(ip(i), u64::from(i) * SEC);
        }
        assert_eq!((t.len(), t.evicted()), (16, 0));
        // The 17th: down to 14 (7/8 of 16), the two quietest without connections go.
        t.on_refused(ip(100), 100 * SEC);
        assert_eq!((t.len(), t.evicted()), (15, 2));
        assert!(t.get(&ip(1)).is_none() && t.get(&ip(2)).is_none());
        assert!(t.get(&ip(0)).is_some() && t.get(&ip(3)).is_some());
        // Known addresses never evict anything.
        t.on_refused(ip(3), 101 * SEC);
        assert_eq!((t.len(), t.evicted()), (15, 2));
        // A flood of 1,000 more stays bounded, every eviction counted.
        for i in 1_000..2_000 {
            t.on_refused(ip(i), u64::from(i) * SEC);
        }
        assert!(t.len() <= 16, "{}", t.len());
        assert_eq!(t.len() as u64 + t.evicted(), 1 + 15 + 1 + 1_000);
        assert_eq!(t.get(&ip(0)).map(|s| s.open), Some(1));
    }

    #[test]
    fn between_reports_the_longest_quiet_go_first_and_addresses_touched_since_stay() {
        let mut t = ClientTable::with_max_addresses(Duration::from_secs(600), 16);
        let ip = |i: u32| IpAddr::from([10, 1, (i / 256) as u8, (i % 256) as u8]);
        for i in 0..16 {
            t.on_refused(ip(i), u64::from(i + 1) * SEC);
        }
        t.take_changes();
        // Touched after the report: the oldest, but active since.
        t.on_refused(ip(0), 50 * SEC);
        t.on_opened(ip(1), 51 * SEC);
        t.on_refused(ip(100), 52 * SEC);
        // Down to 14: the two longest quiet of those not touched since go.
        assert_eq!((t.len(), t.evicted()), (15, 2));
        assert!(t.get(&ip(2)).is_none() && t.get(&ip(3)).is_none());
        assert!(t.get(&ip(0)).is_some() && t.get(&ip(1)).is_some());
        // After the next report ip 0 is quiet again, since 50 s: later than 4..15.
        t.take_changes();
        for i in 200..202 {
            t.on_refused(ip(i), u64::from(i) * SEC);
        }
        assert_eq!((t.len(), t.evicted()), (15, 4));
        assert!(t.get(&ip(4)).is_none() && t.get(&ip(5)).is_none());
        assert!(t.get(&ip(0)).is_some() && t.get(&ip(6)).is_some());
        // Only addresses touched since the report left: they go too, holders never.
        let mut u = ClientTable::with_max_addresses(Duration::from_secs(600), 8);
        u.on_opened(ip(0), SEC);
        for i in 1..40 {
            u.on_refused(ip(i), u64::from(i) * SEC);
        }
        assert!(u.len() <= 8 && u.get(&ip(0)).is_some(), "{}", u.len());
    }

    #[test]
    fn when_every_address_holds_connections_none_is_evicted() {
        let mut t = ClientTable::with_max_addresses(Duration::from_secs(600), 8);
        for i in 0..12u8 {
            t.on_opened(IpAddr::from([10, 0, 0, i]), 0);
        }
        assert_eq!((t.len(), t.evicted()), (12, 0));
    }

    #[test]
    fn forgetting_the_only_connection_drops_the_address() {
        let mut f = Fixture::new();
        f.open(SEC, "10.0.0.2:1");
        f.traffic(2 * SEC, "10.0.0.2:1", 10, 20);
        let conn = f.conns.forget(&key("10.0.0.2:1")).unwrap();
        f.clients.forget_open("10.0.0.2".parse().unwrap(), &conn);
        assert!(f.clients.is_empty());
    }

    #[test]
    fn forgetting_one_of_several_keeps_the_rest() {
        let mut f = Fixture::new();
        f.open(SEC, "10.0.0.2:1");
        f.open(SEC, "10.0.0.2:2");
        f.traffic(2 * SEC, "10.0.0.2:1", 10, 20);
        f.traffic(2 * SEC, "10.0.0.2:2", 1, 2);
        let conn = f.conns.forget(&key("10.0.0.2:1")).unwrap();
        f.clients.forget_open("10.0.0.2".parse().unwrap(), &conn);
        let s = f.stats("10.0.0.2");
        assert_eq!((s.opened, s.open, s.bytes_in, s.bytes_out), (1, 1, 1, 2));
    }
}
