//! The facade the binary drives: events in, reports out.
//!
//! [`Tracker::apply`] filters each event (watched ports, the agent's own sockets),
//! updates the connection table and routes what changed to the per-client table.
//! [`Tracker::report`] joins the two into a [`Report`] at a given instant.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

mod activity;

use crate::core::capacity::{self, AcceptRate, Baselines};
use crate::core::client::{ClientTable, DEFAULT_RETENTION};
use crate::core::close_cause::server_close_cause;
use crate::core::conn::{ByteDelta, ConnTable};
use crate::core::process::Joins;
use crate::core::reject::{self};
use crate::core::row_cache::{Changes, OpenConns, RowCache, client_report};
use crate::model::{
    AcceptErrors, AcceptQueue, Cidr, ClientsMode, HostSnapshot, Kind, RedisReport, RedisSnapshot,
    RejectCounts, Report, Role, ServerCloses, StackCounts, StaleList, Totals, micros,
};
use crate::model::{
    Activity, Clock, CloseKind, ConnKey, Event, Failure, FastMap, KernelCounters, Nanos, normalize,
};

/// Connections the tracker chose not to count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ignored {
    /// Connections on ports not watched (the kernel filters them; a defence only).
    pub other_port: u64,
    /// The agent's own connections (its INFO/CONFIG client).
    pub own: u64,
}

#[derive(Debug)]
pub struct Tracker {
    ports: Vec<u16>,
    /// The agent's own sockets. A handful at most: a linear scan beats hashing.
    own: Vec<SocketAddr>,
    conns: ConnTable,
    clients: ClientTable,
    counters: KernelCounters,
    ignored: Ignored,
    rejected: RejectCounts,
    server_closes: ServerCloses,
    refused: u64,
    /// Client mode: a failed connect's cause was unknown, so `refused` is too.
    refused_unknown: bool,
    /// The latest word from Redis and from /proc, and the first readings of
    /// their counters.
    redis: Option<RedisSnapshot>,
    host: Option<HostSnapshot>,
    baselines: Baselines,
    accept_rate: AcceptRate,
    /// The previous report's client rows, and the replicas they were built with.
    rows: RowCache,
    replicas: Vec<IpAddr>,
    /// Ranges whose addresses are internal (`--internal`), as replicas are.
    internal: Vec<Cidr>,
    /// Local processes' connects waiting for the server's side.
    joins: Joins,
    /// `Client`: client mode, events turned round (see `source::probe::decode`).
    role: Role,
}

impl Tracker {
    /// A tracker of connections to `ports` (an empty list watches every port),
    /// keeping quiet client addresses for [`DEFAULT_RETENTION`].
    pub fn new(ports: Vec<u16>) -> Self {
        Self::with_retention(ports, DEFAULT_RETENTION)
    }

    /// Marks the addresses of `ranges` internal (`--internal`), as replicas are.
    pub fn set_internal(&mut self, ranges: Vec<Cidr>) {
        self.internal = ranges;
    }

    /// Like [`Tracker::new`], keeping client addresses without open connections
    /// for `retention` after their last event.
    pub fn with_retention(mut ports: Vec<u16>, retention: Duration) -> Self {
        ports.sort_unstable();
        ports.dedup();
        Tracker {
            ports,
            own: Vec::new(),
            conns: ConnTable::new(),
            clients: ClientTable::new(retention),
            counters: KernelCounters::default(),
            ignored: Ignored::default(),
            rejected: RejectCounts::default(),
            server_closes: ServerCloses::default(),
            refused: 0,
            refused_unknown: false,
            redis: None,
            host: None,
            baselines: Baselines::default(),
            accept_rate: AcceptRate::default(),
            rows: RowCache::default(),
            replicas: Vec::new(),
            internal: Vec::new(),
            joins: Joins::default(),
            role: Role::Server,
        }
    }

    /// Client mode: the connections are this host's own, to remote Redis servers.
    pub fn set_role(&mut self, role: Role) {
        self.role = role;
    }

    /// Connections whose remote address is one of the agent's own sockets are never counted.
    ///
    /// If such a connection was already counted (its open event was applied
    /// before the agent learned its own address), it is taken back.
    pub fn ignore_remote(&mut self, addr: SocketAddr) {
        let addr = normalize(addr);
        if !self.own.contains(&addr) {
            self.own.push(addr);
        }
        let counted: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(key, _)| key.remote == addr)
            .map(|(key, _)| *key)
            .collect();
        for key in counted {
            if let Some(conn) = self.conns.forget(&key) {
                self.clients.forget_open(key.remote.ip(), &conn);
                self.ignored.own += 1;
            }
        }
    }

    /// Applies one event of the stream. A `Tick` also evicts client addresses that
    /// have been quiet for longer than the retention window.
    pub fn apply(&mut self, ev: &Event) {
        match ev {
            Event::Opened { ts, key } => {
                if self.admit_new(key) {
                    self.on_opened(*ts, *key);
                }
            }
            Event::Seeded { ts, key, activity } => {
                if self.admit_new(key) {
                    self.on_seeded(*ts, *key, activity);
                }
            }
            Event::Closed {
                ts,
                key,
                how,
                activity,
            } => {
                if self.watches(key) {
                    let closed = self.conns.close(*ts, key, *how, activity.as_ref());
                    self.clients.on_closed(key.remote.ip(), *ts, &closed);
                    let owner = closed.conn.and_then(|c| c.owner);
                    let tls_port = self
                        .redis
                        .as_ref()
                        .and_then(|r| r.config)
                        .is_some_and(|c| c.is_tls_port(key.local.port()));
                    let rejected = reject::classify_for(self.role, &closed, tls_port);
                    if let Some(reason) = rejected {
                        self.rejected.add(reason);
                        self.clients.on_rejected(key.remote.ip(), *ts);
                    }
                    if rejected.is_some() || *how == CloseKind::Reset {
                        self.clients.on_failed_attempt(key.remote.ip(), *ts);
                        if let Some(pid) = owner {
                            let why = if rejected.is_some() {
                                Failure::Rejected
                            } else {
                                Failure::Reset
                            };
                            self.clients
                                .on_process_failed_pid(key.remote.ip(), *ts, pid, why);
                        }
                    }
                    let timeout = self.redis.as_ref().and_then(|r| r.config?.timeout);
                    let queued = activity.as_ref().and_then(|a| a.queued);
                    let rejected = rejected.is_some();
                    if let Some(cause) =
                        server_close_cause(&closed, *how, rejected, queued, timeout, *ts)
                    {
                        self.server_closes.add(cause);
                        self.clients.on_server_close(key.remote.ip(), cause);
                    }
                }
            }
            Event::Activity { ts, conns, gone } => {
                for (key, activity) in conns {
                    if self.watches(key) {
                        self.on_activity(*ts, key, activity);
                    }
                }
                for key in gone {
                    if let Some(closed) = self.conns.vanish(key) {
                        self.clients.on_closed(key.remote.ip(), *ts, &closed);
                    }
                }
            }
            Event::Counters { ts, counters } => {
                self.counters.clone_from(counters);
                let failed = AcceptErrors::from_kernel(&counters.accept_errors).total();
                self.accept_rate.observe(*ts, failed);
            }
            Event::Refused { ts, key } => {
                if self.watches(key) {
                    self.refused += 1;
                    self.clients.on_refused(key.remote.ip(), *ts);
                    self.joins.on_refused(*ts, key);
                }
            }
            Event::ConnectFailed { ts, key, err } => {
                if self.watches(key) {
                    let why = Failure::of_connect(*err);
                    match why {
                        Failure::Refused => self.refused += 1,
                        Failure::Unknown => self.refused_unknown = true,
                        _ => {}
                    }
                    self.clients.on_connect_failed(key.remote.ip(), *ts, why);
                    // Its connector follows, for the process's failure.
                    self.joins.on_refused(*ts, key);
                }
            }
            Event::Connector {
                ts,
                client,
                server,
                process,
                failed,
                err,
            } => {
                if !self.ports.is_empty() && !self.ports.contains(&server.port()) {
                    return;
                }
                if !*failed {
                    self.joins.on_connector(*ts, *client, *server, process);
                } else if self.joins.take_refused(*client, *server) {
                    let ip = normalize(*client).ip();
                    let why = Failure::of_connect(*err);
                    self.clients.on_process_failed(ip, *ts, process, why);
                }
            }
            Event::Redis { snapshot, .. } => {
                if let Some(own) = snapshot.own_addr {
                    self.ignore_remote(own);
                }
                self.baselines.observe(Some(snapshot), None);
                self.redis = Some(snapshot.as_ref().clone());
            }
            Event::Host { snapshot, .. } => {
                self.baselines.observe(None, Some(snapshot));
                self.host = Some(snapshot.as_ref().clone());
            }
            Event::Tick { ts } => {
                self.clients.evict_quiet(*ts);
                self.joins.expire(*ts);
            }
        }
    }

    /// Whether a connection is one to count: on a watched port, not the agent's own.
    fn watches(&self, key: &ConnKey) -> bool {
        (self.ports.is_empty() || self.ports.contains(&key.local.port()))
            && !self.own.contains(&key.remote)
    }

    /// [`Self::watches`] for a newly seen connection, counting those left out.
    /// Closes and traffic of ignored connections are dropped without counting,
    /// so each ignored connection is counted once.
    fn admit_new(&mut self, key: &ConnKey) -> bool {
        if self.own.contains(&key.remote) {
            self.ignored.own += 1;
            false
        } else if !self.watches(key) {
            self.ignored.other_port += 1;
            false
        } else {
            true
        }
    }

    fn on_opened(&mut self, ts: Nanos, key: ConnKey) {
        let ip = key.remote.ip();
        if self.conns.adopt_seeded(ts, &key) {
            self.clients.on_adopted(ip, ts);
        } else {
            if let Some(replaced) = self.conns.open(ts, key) {
                self.clients.on_closed(ip, ts, &replaced);
            }
            self.clients.on_opened(ip, ts);
        }
        // The local process that connected, if its record came first.
        if let Some(p) = self.joins.take(&key) {
            self.conns.set_owner(&key, p.pid, p.stack);
            self.clients.on_process_opened(ip, ts, &p);
        }
    }

    fn on_seeded(&mut self, ts: Nanos, key: ConnKey, activity: &Activity) {
        if self.conns.seed(ts, key, activity) {
            let bytes = self
                .conns
                .get(&key)
                .map(|c| ByteDelta {
                    bytes_in: c.bytes_in,
                    bytes_out: c.bytes_out,
                })
                .unwrap_or_default();
            self.clients.on_seeded(key.remote.ip(), ts, bytes);
        } else {
            // Seen opening already: the seed scan only brings newer traffic figures.
            self.on_activity(ts, &key, activity);
        }
    }

    fn on_activity(&mut self, ts: Nanos, key: &ConnKey, activity: &Activity) {
        if let Some(delta) = self.conns.update(key, activity) {
            self.clients.on_bytes(key.remote.ip(), ts, delta);
        }
    }

    /// The state at `now`. `clock` maps `now` to wall-clock time, and `clock.mono`
    /// — taken when the source started — is the agent's start for `uptime_s`.
    ///
    /// Client rows are rebuilt only for the addresses that changed since the
    /// previous report ([`RowCache`]), so reports are asked for in time order.
    pub fn report(&mut self, now: Nanos, clock: &Clock) -> Report {
        self.report_with(now, clock, |_, _| {})
    }

    /// [`Tracker::report`], with `finish` (the diagnoser) writing into the report
    /// before the row cache shares its rows again: writing them then costs no copy.
    pub fn report_with(
        &mut self,
        now: Nanos,
        clock: &Clock,
        finish: impl FnOnce(&Self, &mut Report),
    ) -> Report {
        let mut report = self.build_report(now, clock);
        finish(self, &mut report);
        self.rows.keep(&report.clients);
        report
    }

    /// Whether `rows` are the row cache's own (not a copy).
    #[cfg(test)]
    pub fn shares_rows(&self, rows: &crate::model::ClientRows) -> bool {
        self.rows.shares(rows)
    }

    fn build_report(&mut self, now: Nanos, clock: &Clock) -> Report {
        let open = self.open_by_address(now);
        let replicas: Vec<IpAddr> = self
            .redis
            .as_ref()
            .and_then(|r| r.info.as_ref())
            .map(|i| i.replicas.iter().map(SocketAddr::ip).collect())
            .unwrap_or_default();
        let changes = Changes {
            moved: self.clients.take_changes(),
            open: open.keys().copied().collect(),
            all: replicas != self.replicas,
        };
        let (clients, internal) = (&self.clients, &self.internal);
        let (clients, evicted) = self.rows.update(now, changes, |ip| {
            let stats = clients.get(&ip)?;
            Some(client_report(
                ip,
                stats,
                open.get(&ip),
                replicas.contains(&ip) || internal.iter().any(|r| r.contains(ip)),
            ))
        });
        self.replicas = replicas;
        let redis = match &self.redis {
            Some(r) => RedisReport::from_snapshot(r, Some(&self.baselines)),
            None => RedisReport::default(),
        };
        let limits = capacity::limits(self.redis.as_ref(), self.host.as_ref());
        let queued = self
            .host
            .as_ref()
            .and_then(|h| h.accept_queue)
            .map(|(depth, _)| depth);
        let capacity = capacity::capacity(
            self.redis.as_ref(),
            &limits,
            self.conns.len() as u64,
            queued,
        );
        Report {
            kind: Kind::Report,
            ts: wall_time(clock, now),
            uptime: micros(now.saturating_sub(clock.mono)),
            ports: self.ports.clone(),
            role: self.role,
            instance: None,
            probe: None,
            otlp: None,
            totals: self.totals(),
            redis,
            limits,
            capacity,
            verdicts: Vec::new(),
            recommendations: Vec::new(),
            clients_mode: ClientsMode::Full,
            clients_omitted: 0,
            clients_gone: Vec::new(),
            clients,
            evicted,
        }
    }

    fn totals(&self) -> Totals {
        let c = self.conns.counts();
        Totals {
            open: self.conns.len() as u64,
            opened: c.opened,
            closed: c.closed,
            closed_by_server: c.closed_by_server,
            server_closes: self.server_closes,
            closed_by_client: c.closed_by_client,
            reset: c.reset,
            clients: self.clients.len() as u64,
            lost_events: self.counters.lost_events,
            vanished: c.vanished,
            closes_without_bytes: self.counters.bytes_unreadable,
            accept_errors: Some(AcceptErrors::from_kernel(&self.counters.accept_errors)),
            evicted_clients: self.clients.evicted(),
            rejected: self.rejected.total(),
            rejected_by_reason: self.rejected,
            refused: (!self.refused_unknown).then_some(self.refused),
            accept_errors_per_s: Some(self.accept_rate.per_s),
            listen_overflows: self
                .listen_delta(|h| h.listen_overflows, self.baselines.listen_overflows),
            listen_drops: self.listen_delta(|h| h.listen_drops, self.baselines.listen_drops),
            synack_retransmits: Some(self.counters.synack_retransmits),
            accept_queue: self
                .host
                .as_ref()
                .and_then(|h| h.accept_queue)
                .map(|(depth, backlog)| AcceptQueue { depth, backlog }),
        }
    }

    fn listen_delta(
        &self,
        now: fn(&HostSnapshot) -> Option<u64>,
        base: Option<u64>,
    ) -> Option<u64> {
        Some(self.host.as_ref().and_then(now)?.saturating_sub(base?))
    }

    /// Open connections from `ip` idle at least `min_idle` at `now`, oldest (longest
    /// idle) first: the candidates a person may close after a leak verdict.
    pub fn stale_connections(&self, ip: IpAddr, now: Nanos, min_idle: Duration) -> StaleList {
        let min = u64::try_from(min_idle.as_nanos()).unwrap_or(u64::MAX);
        let mut stale: Vec<(SocketAddr, Nanos, Option<u32>)> = self
            .conns
            .iter()
            .filter(|(key, _)| key.remote.ip() == ip)
            .map(|(key, conn)| (key.remote, conn.idle(now), conn.owner))
            .filter(|&(_, idle, _)| idle >= min)
            .collect();
        stale.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        stale
            .into_iter()
            .map(|(a, idle, pid)| (a, Duration::from_nanos(idle), pid))
            .collect()
    }

    /// See [`ConnTable::owner_stacks`].
    pub fn owner_stacks(&self, ip: IpAddr, pid: u32, now: Nanos, idle: Duration) -> StackCounts {
        self.conns.owner_stacks(ip, pid, now, idle)
    }

    /// The latest word from Redis, if any.
    pub fn redis(&self) -> Option<&RedisSnapshot> {
        self.redis.as_ref()
    }

    /// Ages and idle times of open connections, grouped by client address.
    fn open_by_address(&self, now: Nanos) -> FastMap<IpAddr, OpenConns> {
        let mut by_ip: FastMap<IpAddr, OpenConns> = FastMap::default();
        for (key, conn) in self.conns.iter() {
            by_ip.entry(key.remote.ip()).or_default().add(conn, now);
        }
        for open in by_ip.values_mut() {
            open.finish();
        }
        by_ip
    }

    /// The keys of the connections open now, sorted: what a scan looks up.
    pub fn open_keys(&self) -> Vec<ConnKey> {
        let mut keys: Vec<ConnKey> = self.conns.iter().map(|(key, _)| *key).collect();
        keys.sort_unstable();
        keys
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.conns.len()
    }

    pub fn conns(&self) -> &ConnTable {
        &self.conns
    }

    pub fn clients(&self) -> &ClientTable {
        &self.clients
    }

    pub fn counters(&self) -> &KernelCounters {
        &self.counters
    }

    pub fn ignored(&self) -> Ignored {
        self.ignored
    }
}

/// [`Clock::wall_time`] without its panics on overflow.
fn wall_time(clock: &Clock, ts: Nanos) -> SystemTime {
    let shifted = if ts >= clock.mono {
        clock
            .wall
            .checked_add(Duration::from_nanos(ts - clock.mono))
    } else {
        clock
            .wall
            .checked_sub(Duration::from_nanos(clock.mono - ts))
    };
    shifted.unwrap_or(clock.wall)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use crate::model::{Activity, CloseKind};
    use serde_json::Value;
    use std::collections::HashSet;
    use std::time::UNIX_EPOCH;

    const US: Nanos = 1_000;
    const MS: Nanos = 1_000_000;
    const SEC: Nanos = 1_000_000_000;
    /// The monotonic time the agent started.
    const START: Nanos = 1_000 * SEC;

    fn clock() -> Clock {
        Clock {
            mono: START,
            wall: UNIX_EPOCH + Duration::from_secs(1_795_986_000),
        }
    }

    fn key(local: &str, remote: &str) -> ConnKey {
        ConnKey::new(local.parse().unwrap(), remote.parse().unwrap())
    }

    fn redis(remote: &str) -> ConnKey {
        key("10.0.0.1:6379", remote)
    }

    fn opened(ts: Nanos, k: ConnKey) -> Event {
        Event::Opened { ts, key: k }
    }

    fn closed(ts: Nanos, k: ConnKey, how: CloseKind) -> Event {
        Event::Closed {
            ts,
            key: k,
            how,
            activity: None,
        }
    }

    fn seeded(ts: Nanos, k: ConnKey, last_active: Option<Nanos>) -> Event {
        Event::Seeded {
            ts,
            key: k,
            activity: Activity {
                bytes_in: 0,
                bytes_out: 0,
                last_active,
                queued: None,
            },
        }
    }

    fn activity(ts: Nanos, conns: &[(ConnKey, u64, u64, Option<Nanos>)]) -> Event {
        Event::Activity {
            ts,
            conns: conns
                .iter()
                .map(|&(k, bytes_in, bytes_out, last_active)| {
                    (
                        k,
                        Activity {
                            bytes_in,
                            bytes_out,
                            last_active,
                            queued: None,
                        },
                    )
                })
                .collect(),
            gone: Vec::new(),
        }
    }

    #[test]
    fn server_closes_are_told_apart_by_cause() {
        let timeout = |t: u64| Event::Redis {
            ts: START,
            snapshot: Box::new(RedisSnapshot {
                status: RedisStatus::Ok,
                config_status: ConfigStatus::Ok,
                config: Some(RedisConfig {
                    maxclients: Some(100),
                    timeout: Some(t),
                    tls_port: Some(0),
                }),
                ..RedisSnapshot::disabled()
            }),
            instance: None,
        };
        let close = |ts, k, queued, bytes_out| Event::Closed {
            ts,
            key: k,
            how: CloseKind::Server,
            activity: Some(Activity {
                bytes_in: 14,
                bytes_out,
                last_active: None,
                queued: Some(queued),
            }),
        };
        let (idle, piled, killed) = (
            redis("10.0.0.2:1"),
            redis("10.0.0.2:2"),
            redis("10.0.0.2:3"),
        );
        let mut t = tracker(&[
            timeout(3),
            opened(START, idle),
            opened(START, piled),
            opened(START, killed),
            // The PING and its reply, counted by a scan at 1 s.
            Event::Activity {
                ts: START + SEC,
                conns: [idle, piled, killed]
                    .map(|k| {
                        let a = Activity {
                            bytes_in: 14,
                            bytes_out: 7,
                            last_active: Some(START + SEC),
                            queued: Some(0),
                        };
                        (k, a)
                    })
                    .to_vec(),
                gone: Vec::new(),
            },
            // Idle 3 s with timeout 3: closed by it.
            close(START + 4 * SEC + 100 * MS, idle, 0, 7),
            // 4 MB of replies, 3 MB unread: the output buffer limit.
            close(START + 2 * SEC, piled, 3 << 20, 4 << 20),
            // Idle 1 s: killed (CLIENT KILL).
            close(START + 2 * SEC, killed, 0, 7),
        ]);
        // A rejection (36 bytes out, nothing read, at once).
        let rejected = redis("10.0.0.3:1");
        t.apply(&opened(START + 5 * SEC, rejected));
        t.apply(&Event::Closed {
            ts: START + 5 * SEC + MS,
            key: rejected,
            how: CloseKind::Server,
            activity: Some(Activity {
                bytes_in: 0,
                bytes_out: 36,
                last_active: None,
                queued: Some(0),
            }),
        });
        let r = t.report(START + 6 * SEC, &clock());
        let want = ServerCloses {
            rejection: 0,
            idle_timeout: 1,
            output_buffer: 1,
            other: 1,
        };
        assert_eq!(client(&r, "10.0.0.2").server_closes, want);
        assert_eq!(client(&r, "10.0.0.3").server_closes.rejection, 1);
        assert_eq!(
            r.totals.server_closes,
            ServerCloses {
                rejection: 1,
                ..want
            }
        );
        assert_eq!(r.totals.server_closes.total(), r.totals.closed_by_server);
    }

    fn tracker(events: &[Event]) -> Tracker {
        let mut t = Tracker::new(vec![6379]);
        for ev in events {
            t.apply(ev);
        }
        t
    }

    fn client<'a>(r: &'a Report, addr: &str) -> &'a ClientReport {
        let ip: IpAddr = addr.parse().unwrap();
        r.clients
            .iter()
            .find(|c| c.addr == ip)
            .unwrap_or_else(|| panic!("no row for {addr}"))
    }

    /// The rows a report builds from the cache are those a full rebuild gives,
    /// whatever happens between reports: one-shot clients, holders, traffic,
    /// closes by either side, refusals, evictions and addresses coming back.
    #[test]
    fn cached_rows_are_the_rows_a_full_rebuild_gives() {
        let mut cached = Tracker::with_retention(vec![6379], Duration::from_secs(5));
        let mut seed = 7u64;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % n
        };
        let mut open: Vec<ConnKey> = Vec::new();
        let mut rebuilt = 0;
        let mut gone = 0;
        let mut held: HashSet<IpAddr> = HashSet::new();
        for i in 1..=40u64 {
            let mut events = Vec::new();
            for j in 0..30 {
                let ts = START + (i - 1) * SEC + j * 10 * MS;
                let k = redis(&format!(
                    "10.0.{}.{}:{}",
                    next(3),
                    next(40) + 1,
                    20_000 + i * 40 + j
                ));
                match next(6) {
                    0 | 1 => {
                        events.push(opened(ts, k));
                        events.push(closed(ts + MS, k, CloseKind::Client));
                    }
                    2 => {
                        events.push(opened(ts, k));
                        open.push(k);
                    }
                    3 if !open.is_empty() => {
                        let k = open.swap_remove(next(open.len() as u64) as usize);
                        let how = [CloseKind::Client, CloseKind::Server, CloseKind::Reset];
                        events.push(closed(ts, k, how[next(3) as usize]));
                    }
                    4 => events.push(Event::Refused { ts, key: k }),
                    _ => {
                        let conns: Vec<_> = open
                            .iter()
                            .map(|&k| (k, i * 100, i * 50, Some(ts)))
                            .collect();
                        events.push(activity(ts, &conns));
                    }
                }
            }
            events.push(Event::Tick {
                ts: START + i * SEC,
            });
            for ev in &events {
                cached.apply(ev);
            }
            let now = START + i * SEC;
            let a = cached.report(now, &clock());
            // Every row built anew from the table, and sorted.
            let open = cached.open_by_address(now);
            let mut full: Vec<ClientReport> = cached
                .clients
                .iter()
                .map(|(ip, s)| client_report(*ip, s, open.get(ip), false))
                .collect();
            full.sort_by(worst_first);
            let strip = |c: &ClientReport| ClientReport {
                rates: None,
                changed: true,
                ..c.clone()
            };
            assert_eq!(
                a.clients.iter().map(strip).collect::<Vec<_>>(),
                full,
                "interval {i}"
            );
            // Evicted: exactly the addresses of the previous report not in this one.
            let now_held: HashSet<IpAddr> = a.clients.iter().map(|c| c.addr).collect();
            let mut left: Vec<IpAddr> = held.difference(&now_held).copied().collect();
            let mut evicted = a.evicted.clone();
            left.sort();
            evicted.sort();
            assert_eq!(evicted, left, "interval {i}");
            gone += evicted.len();
            held = now_held;
            rebuilt += a.clients.iter().filter(|c| c.changed).count();
            if i > 1 {
                assert!(a.clients.iter().all(|c| c.rates.is_some() || c.changed));
            }
        }
        assert!(gone > 0, "evictions were exercised");
        assert_eq!(gone as u64, cached.clients.evicted());
        assert!(
            rebuilt < 40 * cached.clients.len(),
            "rows were reused: {rebuilt}"
        );
    }

    #[test]
    fn exact_lifetimes_of_short_connections() {
        // Lifetimes below 64 µs are exact in the histogram.
        let a = redis("10.0.0.2:1");
        let b = redis("10.0.0.2:2");
        let c = redis("10.0.0.2:3");
        let mut t = tracker(&[
            opened(START + SEC, a),
            closed(START + SEC + 20 * US, a, CloseKind::Server),
            opened(START + SEC, b),
            closed(START + SEC + 40 * US, b, CloseKind::Server),
            opened(START + SEC, c),
            closed(START + SEC + 63 * US + 999, c, CloseKind::Server),
        ]);
        let r = t.report(START + 2 * SEC, &clock());
        let row = client(&r, "10.0.0.2");
        let l = row.lifetime.unwrap();
        assert_eq!(l.p50, Duration::from_micros(40));
        assert_eq!(l.p90, Duration::from_micros(63));
        assert_eq!(l.p99, Duration::from_micros(63));
        assert_eq!(l.max, Duration::from_micros(63));
        assert_eq!((row.open, row.opened, row.closed_by_server), (0, 3, 3));
        assert_eq!(row.age, None);
        assert_eq!(row.idle, None);
    }

    #[test]
    fn long_lifetimes_within_bound_and_exact_max() {
        let mut events = Vec::new();
        // 100 connections living 1 ms, 2 ms, … 100 ms.
        for i in 1..=100u64 {
            let k = redis(&format!("10.0.0.2:{i}"));
            events.push(opened(START, k));
            events.push(closed(START + i * MS, k, CloseKind::Client));
        }
        let r = tracker(&events).report(START + SEC, &clock());
        let l = client(&r, "10.0.0.2").lifetime.unwrap();
        let within = |got: Duration, exact_ms: u64| {
            let exact = exact_ms as f64 * 1000.0;
            let err = (got.as_micros() as f64 - exact).abs();
            assert!(err <= exact / 64.0, "{got:?} vs {exact_ms} ms");
        };
        within(l.p50, 50);
        within(l.p90, 90);
        within(l.p99, 99);
        assert_eq!(l.max, Duration::from_millis(100));
        assert_eq!(r.totals.closed_by_client, 100);
    }

    #[test]
    fn who_closed_first_and_resets_per_client_and_total() {
        let a = redis("10.0.0.2:1");
        let b = redis("10.0.0.2:2");
        let c = redis("10.0.0.3:1");
        let d = redis("10.0.0.3:2");
        let mut t = tracker(&[
            opened(START, a),
            opened(START, b),
            opened(START, c),
            opened(START, d),
            closed(START + SEC, a, CloseKind::Server),
            closed(START + SEC, b, CloseKind::Reset),
            closed(START + SEC, c, CloseKind::Client),
            closed(START + SEC, d, CloseKind::Reset),
        ]);
        let r = t.report(START + 2 * SEC, &clock());
        let x = client(&r, "10.0.0.2");
        assert_eq!(
            (x.closed, x.closed_by_server, x.closed_by_client, x.reset),
            (2, 1, 0, 1)
        );
        let y = client(&r, "10.0.0.3");
        assert_eq!(
            (y.closed, y.closed_by_server, y.closed_by_client, y.reset),
            (2, 0, 1, 1)
        );
        let tot = &r.totals;
        assert_eq!(
            (tot.opened, tot.closed, tot.open, tot.clients),
            (4, 4, 0, 2)
        );
        assert_eq!(
            (tot.closed_by_server, tot.closed_by_client, tot.reset),
            (1, 1, 2)
        );
        // Same open count: more lost connections (resets + server closes) first.
        assert_eq!(r.clients[0].addr.to_string(), "10.0.0.2");
    }

    #[test]
    fn idle_comes_from_activity_events() {
        let a = redis("10.0.0.2:1");
        let b = redis("10.0.0.2:2");
        let c = redis("10.0.0.2:3");
        let mut t = tracker(&[
            opened(START, a),
            opened(START, b),
            opened(START + 4 * SEC, c),
            activity(
                START + 6 * SEC,
                &[
                    (a, 100, 200, Some(START + 9 * SEC)),
                    (b, 10, 20, Some(START + 2 * SEC)),
                ],
            ),
        ]);
        let r = t.report(START + 10 * SEC, &clock());
        let row = client(&r, "10.0.0.2");
        // Idle: a 1 s, b 8 s, c 6 s (no activity: since it opened).
        assert_eq!(
            row.idle,
            Some(Idle {
                p50: Duration::from_secs(6),
                max: Duration::from_secs(8)
            })
        );
        assert_eq!(
            row.age,
            Some(Age {
                max: Duration::from_secs(10),
                lower_bound: false
            })
        );
        assert_eq!((row.bytes_in, row.bytes_out), (110, 220));
        assert_eq!(row.open, 3);
    }

    #[test]
    fn seeded_connections_have_lower_bound_age_and_idle() {
        let old = redis("10.0.0.2:1");
        let new = redis("10.0.0.2:2");
        let mut t = tracker(&[
            opened(START + SEC, new),
            seeded(START + 2 * SEC, old, Some(START - 30 * SEC)),
        ]);
        let r = t.report(START + 62 * SEC, &clock());
        let row = client(&r, "10.0.0.2");
        assert_eq!((row.open, row.seeded, row.opened), (2, 1, 1));
        // The seeded one moved data 30 s before the agent started: it is at least
        // 92 s old, and may be older.
        assert_eq!(
            row.age,
            Some(Age {
                max: Duration::from_secs(92),
                lower_bound: true
            })
        );
        // Idle: new 61 s (no activity), old 92 s (last data 30 s before start).
        assert_eq!(
            row.idle,
            Some(Idle {
                p50: Duration::from_secs(61),
                max: Duration::from_secs(92)
            })
        );
        assert_eq!(r.totals.open, 2);
        assert_eq!(r.totals.opened, 1);
    }

    fn figures(bytes_in: u64, bytes_out: u64, last_active: Option<Nanos>) -> Activity {
        Activity {
            bytes_in,
            bytes_out,
            last_active,
            queued: None,
        }
    }

    #[test]
    fn a_scan_keeps_what_moved_and_finds_what_vanished() {
        let (idle, busy, lost) = (
            redis("10.0.0.2:1"),
            redis("10.0.0.2:2"),
            redis("10.0.0.3:3"),
        );
        let (young, stranger) = (redis("10.0.0.2:4"), redis("10.0.0.9:9"));
        let mut t = tracker(&[
            opened(START, idle),
            opened(START, busy),
            opened(START, lost),
            activity(START + SEC, &[(idle, 5, 9, Some(START + SEC))]),
        ]);
        let scan_at = START + 2 * SEC;
        // Opened after the scan began: its absence from the scan means nothing.
        t.apply(&opened(scan_at + 1, young));
        let scan = [
            // Read again with sock_diag's jitter: nothing new.
            (idle, figures(5, 9, Some(START + SEC + 3_000_000))),
            (busy, figures(10, 20, Some(scan_at))),
            // Not ours: no figures for it.
            (stranger, figures(1, 1, Some(scan_at))),
        ];
        let ev = t.activity_from_scan(scan_at, &scan);
        assert_eq!(
            ev,
            Event::Activity {
                ts: scan_at,
                conns: vec![(busy, figures(10, 20, Some(scan_at)))],
                gone: vec![lost],
            }
        );
        t.apply(&ev);
        let c = t.conns().counts();
        assert_eq!((c.closed, c.vanished), (1, 1));
        let r = t.report(scan_at, &clock());
        assert_eq!(
            (r.totals.open, r.totals.closed, r.totals.vanished),
            (3, 1, 1)
        );
        let row = client(&r, "10.0.0.3");
        assert_eq!((row.open, row.closed), (0, 1));
        // The same figures again change nothing.
        let mut scan = scan.to_vec();
        scan.push((young, figures(0, 0, None)));
        let again = t.activity_from_scan(scan_at + SEC, &scan);
        assert_eq!(
            again,
            Event::Activity {
                ts: scan_at + SEC,
                conns: vec![],
                gone: vec![],
            }
        );
    }

    #[test]
    fn lookups_of_every_key_make_the_event_a_dump_makes_and_only_answered_keys_go() {
        let (idle, busy, lost, failed) = (
            redis("10.0.0.2:1"),
            redis("10.0.0.2:2"),
            redis("10.0.0.3:3"),
            redis("10.0.0.3:4"),
        );
        let late = redis("10.0.0.2:5");
        let mut t = tracker(&[
            opened(START, idle),
            opened(START, busy),
            opened(START, lost),
            opened(START, failed),
            activity(START + SEC, &[(idle, 5, 9, Some(START + SEC))]),
        ]);
        let scan_at = START + 2 * SEC;
        assert_eq!(t.open_keys(), vec![idle, busy, lost, failed]);
        let found = [
            (idle, figures(5, 9, Some(START + SEC))),
            (busy, figures(10, 20, Some(scan_at))),
        ];
        // Every key answered: what a dump holding the same two sockets makes.
        let every = t.open_keys();
        let dump = t.activity_from_scan(scan_at, &found);
        assert_eq!(
            dump,
            Event::Activity {
                ts: scan_at,
                conns: vec![(busy, figures(10, 20, Some(scan_at)))],
                gone: vec![lost, failed],
            }
        );
        assert_eq!(t.activity_from_lookups(scan_at, &every, &found), dump);
        // Opened before the scan but applied after the keys were taken (so never
        // asked for), and a lookup that failed: neither is gone.
        t.apply(&opened(scan_at - 1, late));
        let answered = [idle, busy, lost];
        assert_eq!(
            t.activity_from_lookups(scan_at, &answered, &found),
            Event::Activity {
                ts: scan_at,
                conns: vec![(busy, figures(10, 20, Some(scan_at)))],
                gone: vec![lost],
            }
        );
        assert_eq!(
            t.activity_from_scan(scan_at, &found),
            Event::Activity {
                ts: scan_at,
                conns: vec![(busy, figures(10, 20, Some(scan_at)))],
                gone: vec![late, lost, failed],
            },
            "a dump would call it gone"
        );
        assert_eq!(
            t.activity_from_lookups(scan_at, &[], &[]),
            Event::Activity {
                ts: scan_at,
                conns: vec![],
                gone: vec![],
            }
        );
    }

    #[test]
    fn age_is_a_lower_bound_when_any_open_connection_is_seeded() {
        let old = redis("10.0.0.2:1");
        let new = redis("10.0.0.2:2");
        let mut t = tracker(&[opened(START + SEC, new), seeded(START + 2 * SEC, old, None)]);
        let r = t.report(START + 62 * SEC, &clock());
        // The measured maximum is the new connection's 61 s, but the seeded one
        // predates the agent, so the true maximum may be larger.
        assert_eq!(
            client(&r, "10.0.0.2").age,
            Some(Age {
                max: Duration::from_secs(61),
                lower_bound: true
            })
        );
    }

    #[test]
    fn seeded_connection_closing_has_no_lifetime() {
        let old = redis("10.0.0.2:1");
        let mut t = tracker(&[
            seeded(START, old, None),
            closed(START + 5 * SEC, old, CloseKind::Client),
        ]);
        let r = t.report(START + 6 * SEC, &clock());
        let row = client(&r, "10.0.0.2");
        assert_eq!(
            (row.open, row.seeded, row.closed, row.closed_by_client),
            (0, 0, 1, 1)
        );
        assert_eq!(row.lifetime, None);
        assert_eq!(row.age, None);
    }

    #[test]
    fn seeding_a_connection_already_seen_opening_keeps_it_exact() {
        let k = redis("10.0.0.2:1");
        let mut t = tracker(&[
            opened(START + SEC, k),
            Event::Seeded {
                ts: START + 2 * SEC,
                key: k,
                activity: Activity {
                    bytes_in: 64,
                    bytes_out: 8,
                    last_active: Some(START + 2 * SEC),
                    queued: None,
                },
            },
        ]);
        let r = t.report(START + 3 * SEC, &clock());
        let row = client(&r, "10.0.0.2");
        assert_eq!((row.open, row.seeded, row.opened), (1, 0, 1));
        assert_eq!(
            row.age.map(|a| (a.max, a.lower_bound)),
            Some((Duration::from_secs(2), false))
        );
        assert_eq!(row.idle.map(|i| i.max), Some(Duration::from_secs(1)));
        assert_eq!((row.bytes_in, row.bytes_out), (64, 8));
    }

    /// The other order: the seed scan finds the connection before its open record
    /// is drained (it opened while the agent started). One connection, opened at
    /// its record's time; no close is counted for the seed it replaces.
    #[test]
    fn an_open_record_drained_after_the_seed_is_the_same_connection() {
        let k = redis("10.0.0.2:1");
        let mut t = tracker(&[
            Event::Seeded {
                ts: START + 2 * SEC,
                key: k,
                activity: Activity {
                    bytes_in: 64,
                    bytes_out: 8,
                    last_active: Some(START + 2 * SEC),
                    queued: None,
                },
            },
            opened(START + SEC, k),
        ]);
        let r = t.report(START + 3 * SEC, &clock());
        let row = client(&r, "10.0.0.2");
        assert_eq!((row.open, row.seeded, row.opened, row.closed), (1, 0, 1, 0));
        assert_eq!((r.totals.open, r.totals.opened, r.totals.closed), (1, 1, 0));
        assert_eq!(
            row.age.map(|a| (a.max, a.lower_bound)),
            Some((Duration::from_secs(2), false))
        );
        assert_eq!((row.bytes_in, row.bytes_out), (64, 8));
        // Its close later is an ordinary one, with a lifetime.
        t.apply(&closed(START + 4 * SEC, k, CloseKind::Client));
        let r = t.report(START + 5 * SEC, &clock());
        let row = client(&r, "10.0.0.2");
        assert_eq!((row.open, row.closed, row.closed_by_client), (0, 1, 1));
        assert_eq!(row.lifetime.map(|l| l.max), Some(Duration::from_secs(3)));
    }

    #[test]
    fn closing_an_unknown_connection_counts_without_lifetime() {
        let k = redis("10.0.0.9:5555");
        let mut t = tracker(&[Event::Closed {
            ts: START + SEC,
            key: k,
            how: CloseKind::Reset,
            activity: Some(Activity {
                bytes_in: 7,
                bytes_out: 0,
                last_active: None,
                queued: None,
            }),
        }]);
        let r = t.report(START + 2 * SEC, &clock());
        let row = client(&r, "10.0.0.9");
        assert_eq!((row.open, row.opened, row.closed, row.reset), (0, 0, 1, 1));
        assert_eq!(row.lifetime, None);
        assert_eq!(row.bytes_in, 7);
        assert_eq!((r.totals.open, r.totals.closed, r.totals.reset), (0, 1, 1));
        assert_eq!(t.conns().counts().closed_untracked, 1);
    }

    /// A local process's connect joins the open with the same two ends, also one
    /// the seed scan found first; its close releases the process's count.
    #[test]
    fn a_connector_joins_its_open_and_the_close_releases_it() {
        let k = key("127.0.0.1:6379", "127.0.0.5:40000");
        let seeded_first = key("127.0.0.1:6379", "127.0.0.5:40001");
        let other = key("127.0.0.1:6379", "127.0.0.5:40002");
        let proc = |pid| crate::model::Process {
            pid,
            comm: "app".into(),
            stack: None,
            cgroup: None,
        };
        let connector = |ts, k: ConnKey, pid| Event::Connector {
            ts,
            client: k.remote,
            server: k.local,
            process: proc(pid),
            failed: false,
            err: None,
        };
        let mut t = tracker(&[
            seeded(START, seeded_first, None),
            connector(START + 1, k, 42),
            opened(START + 2, k),
            connector(START + 3, seeded_first, 42),
            opened(START + 4, seeded_first),
            connector(START + 5, key("127.0.0.1:6380", "127.0.0.5:40003"), 7),
            opened(START + 6, other),
        ]);
        let r = t.report(START + SEC, &clock());
        let c = client(&r, "127.0.0.5");
        assert_eq!(c.open, 3);
        let p: Vec<(u32, u64, u64)> = c
            .processes
            .iter()
            .map(|p| (p.pid, p.open, p.opened))
            .collect();
        assert_eq!(p, [(42, 2, 2)]);
        t.apply(&closed(START + SEC + 1, k, CloseKind::Client));
        let r = t.report(START + 2 * SEC, &clock());
        let p = &client(&r, "127.0.0.5").processes[0];
        assert_eq!((p.pid, p.open, p.opened, p.failed), (42, 1, 2, 0));
        // Reset: a failure of its process.
        t.apply(&closed(START + 2 * SEC + 1, seeded_first, CloseKind::Reset));
        let r = t.report(START + 3 * SEC, &clock());
        let p = &client(&r, "127.0.0.5").processes[0];
        assert_eq!((p.open, p.failed), (0, 1));
    }

    /// A failed connect counts against its process when this instance refused
    /// that very attempt, not otherwise (another host's port, a timeout).
    #[test]
    fn a_refused_connect_is_its_process_failure() {
        let tried = key("127.0.0.1:6379", "127.0.0.5:40000");
        let elsewhere = key("127.0.0.1:6379", "127.0.0.5:40001");
        let failed = |ts, k: ConnKey| Event::Connector {
            ts,
            client: k.remote,
            server: k.local,
            process: crate::model::Process {
                pid: 9,
                stack: None,
                comm: "retry".into(),
                cgroup: None,
            },
            failed: true,
            err: Some(111),
        };
        let mut t = tracker(&[
            Event::Refused {
                ts: START,
                key: tried,
            },
            failed(START + 1, tried),
            failed(START + 2, elsewhere),
        ]);
        let r = t.report(START + SEC, &clock());
        let c = client(&r, "127.0.0.5");
        assert_eq!(c.refused, Some(1));
        let p: Vec<(u32, u64, u64, u64)> = c
            .processes
            .iter()
            .map(|p| (p.pid, p.open, p.opened, p.failed))
            .collect();
        assert_eq!(p, [(9, 0, 0, 1)]);
        assert_eq!(c.processes[0].failed_by.known().map(|f| f.refused), Some(1));
        // Server side: connects are the clients' own, never split on the row.
        assert_eq!(c.failed_connects, None);
    }

    /// Client mode: a failed connect is an attempt and a failure of its address
    /// and its process, by the socket's error; only a reset's refusal is `refused`,
    /// and a cause not known makes `refused` unknown too.
    #[test]
    fn client_mode_splits_failed_connects_by_cause() {
        let mut t = Tracker::new(vec![6379]);
        t.set_role(Role::Client);
        let attempt = |port: u16, err: Option<u32>, pid: u32| {
            let k = key("10.0.0.9:6379", &format!("127.0.0.5:{port}"));
            [
                Event::ConnectFailed {
                    ts: START + u64::from(port),
                    key: k,
                    err,
                },
                Event::Connector {
                    ts: START + u64::from(port),
                    client: k.remote,
                    server: k.local,
                    process: crate::model::Process {
                        pid,
                        comm: "app".into(),
                        cgroup: None,
                        stack: None,
                    },
                    failed: true,
                    err,
                },
            ]
        };
        let causes = [
            (Some(111), 1),
            (Some(110), 1),
            (Some(110), 1),
            (Some(0), 1),
            (Some(113), 2),
        ];
        for (port, (err, pid)) in (40_000..).zip(causes) {
            for ev in attempt(port, err, pid) {
                t.apply(&ev);
            }
        }
        let r = t.report(START + SEC, &clock());
        assert_eq!(r.totals.refused, Some(1));
        let c = client(&r, "127.0.0.5");
        assert_eq!(c.refused, Some(1));
        assert_eq!(
            c.failed_connects,
            Some(Some(crate::model::ConnectFailures {
                refused: 1,
                timed_out: 2,
                abandoned: 1,
                other: 1,
            }))
        );
        assert_eq!(c.failed, 5, "each an attempt that failed");
        let by = |pid: u32| {
            let p = c.processes.iter().find(|p| p.pid == pid).unwrap();
            (p.failed, p.failed_by.known().copied())
        };
        assert_eq!(
            by(1),
            (
                4,
                Some(FailedBy {
                    refused: 1,
                    timed_out: 2,
                    abandoned: 1,
                    ..FailedBy::default()
                })
            )
        );
        assert_eq!(
            by(2),
            (
                1,
                Some(FailedBy {
                    other: 1,
                    ..FailedBy::default()
                })
            )
        );
        // Without the socket's error (no BTF, an older capture): unknown, not 0.
        for ev in attempt(50_000, None, 2) {
            t.apply(&ev);
        }
        let r = t.report(START + 2 * SEC, &clock());
        let c = client(&r, "127.0.0.5");
        assert_eq!((r.totals.refused, c.refused), (None, None));
        assert_eq!(c.failed_connects, Some(None));
        let p = c.processes.iter().find(|p| p.pid == 2).unwrap();
        assert_eq!((p.failed, p.failed_by.known()), (2, None));
    }

    #[test]
    fn duplicate_open_is_not_a_double_open() {
        let k = redis("10.0.0.2:1");
        let mut t = tracker(&[opened(START, k), opened(START + 5 * SEC, k)]);
        let r = t.report(START + 6 * SEC, &clock());
        let row = client(&r, "10.0.0.2");
        assert_eq!((row.open, row.opened, row.closed), (1, 2, 1));
        assert_eq!(row.closed_by_server + row.closed_by_client + row.reset, 0);
        assert_eq!(row.lifetime, None);
        assert_eq!(row.age.map(|a| a.max), Some(Duration::from_secs(1)));
        assert_eq!((r.totals.open, r.totals.opened, r.totals.closed), (1, 2, 1));
    }

    #[test]
    fn ipv6_and_ipv4_mapped_addresses() {
        let v6 = key("[2001:db8::100]:6379", "[2001:db8::7]:40000");
        let mapped = key("[::ffff:10.0.0.1]:6379", "[::ffff:192.168.1.9]:40000");
        let mut t = tracker(&[
            opened(START, v6),
            opened(START, mapped),
            closed(
                START + SEC,
                key("10.0.0.1:6379", "192.168.1.9:40000"),
                CloseKind::Client,
            ),
        ]);
        let r = t.report(START + 2 * SEC, &clock());
        assert_eq!(r.clients.len(), 2);
        assert_eq!(client(&r, "2001:db8::7").open, 1);
        let v4 = client(&r, "192.168.1.9");
        assert_eq!((v4.open, v4.closed), (0, 1));
        assert_eq!(v4.lifetime.map(|l| l.max), Some(Duration::from_secs(1)));
        let json: Value = serde_json::from_str(&crate::report::render_json(&r).unwrap()).unwrap();
        let addrs: Vec<&str> = json["clients"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["addr"].as_str())
            .collect();
        assert_eq!(addrs, ["2001:db8::7", "192.168.1.9"]);
    }

    #[test]
    fn agent_own_connection_is_ignored() {
        let own: SocketAddr = "10.0.0.1:51000".parse().unwrap();
        let mut t = Tracker::new(vec![6379]);
        t.ignore_remote(own);
        let k = redis("10.0.0.1:51000");
        t.apply(&opened(START, k));
        t.apply(&activity(START + SEC, &[(k, 10, 10, Some(START + SEC))]));
        t.apply(&opened(START, redis("10.0.0.1:51001")));
        t.apply(&closed(START + 2 * SEC, k, CloseKind::Client));
        let r = t.report(START + 3 * SEC, &clock());
        assert_eq!(r.totals.open, 1);
        assert_eq!(r.totals.opened, 1);
        assert_eq!(r.totals.closed, 0);
        assert_eq!(client(&r, "10.0.0.1").opened, 1);
        assert_eq!(
            t.ignored(),
            Ignored {
                other_port: 0,
                own: 1
            }
        );
    }

    #[test]
    fn own_connection_recognised_late_is_taken_back() {
        let mut t = Tracker::new(vec![6379]);
        let k = redis("[::ffff:127.0.0.1]:51000");
        t.apply(&opened(START, k));
        t.ignore_remote("[::ffff:127.0.0.1]:51000".parse().unwrap());
        t.apply(&closed(START + SEC, k, CloseKind::Client));
        let r = t.report(START + 2 * SEC, &clock());
        assert_eq!((r.totals.open, r.totals.opened, r.totals.closed), (0, 0, 0));
        assert!(r.clients.is_empty());
        assert_eq!(t.ignored().own, 1);
    }

    #[test]
    fn other_ports_are_ignored_and_counted() {
        let other = key("10.0.0.1:6380", "10.0.0.2:1");
        let mut t = tracker(&[
            opened(START, other),
            activity(START + SEC, &[(other, 5, 5, Some(START + SEC))]),
            closed(START + SEC, other, CloseKind::Reset),
            seeded(START, key("10.0.0.1:22", "10.0.0.2:2"), None),
        ]);
        let r = t.report(START + 2 * SEC, &clock());
        assert_eq!(
            r.totals,
            Totals {
                refused: Some(0),
                ..Totals::default()
            }
        );
        assert!(r.clients.is_empty());
        assert_eq!(
            t.ignored(),
            Ignored {
                other_port: 2,
                own: 0
            }
        );
    }

    #[test]
    fn clients_ordered_worst_first() {
        let mut t = tracker(&[
            // .5: one open. .6: one open, one reset. .7: nothing open, five opened.
            // .8: nothing open, three opened. ::1 same as .8: address decides.
            opened(START, redis("10.0.0.5:1")),
            opened(START, redis("10.0.0.6:1")),
            opened(START, redis("10.0.0.6:2")),
            closed(START, redis("10.0.0.6:2"), CloseKind::Reset),
            opened(START, redis("10.0.0.7:1")),
            opened(START, redis("10.0.0.7:1")),
            opened(START, redis("10.0.0.7:1")),
            opened(START, redis("10.0.0.7:1")),
            opened(START, redis("10.0.0.7:1")),
            closed(START, redis("10.0.0.7:1"), CloseKind::Client),
            opened(START, redis("[::1]:1")),
            opened(START, redis("[::1]:2")),
            opened(START, redis("[::1]:3")),
            closed(START, redis("[::1]:1"), CloseKind::Client),
            closed(START, redis("[::1]:2"), CloseKind::Client),
            closed(START, redis("[::1]:3"), CloseKind::Client),
            opened(START, redis("10.0.0.8:1")),
            opened(START, redis("10.0.0.8:2")),
            opened(START, redis("10.0.0.8:3")),
            closed(START, redis("10.0.0.8:1"), CloseKind::Client),
            closed(START, redis("10.0.0.8:2"), CloseKind::Client),
            closed(START, redis("10.0.0.8:3"), CloseKind::Client),
            opened(START, redis("10.0.0.4:1")),
            opened(START, redis("10.0.0.4:2")),
        ]);
        let r = t.report(START + SEC, &clock());
        let order: Vec<String> = r.clients.iter().map(|c| c.addr.to_string()).collect();
        assert_eq!(
            order,
            [
                "10.0.0.4", "10.0.0.6", "10.0.0.5", "10.0.0.7", "10.0.0.8", "::1"
            ]
        );
    }

    #[test]
    fn counters_are_reported_as_latest_totals() {
        let mut t = Tracker::new(vec![6379]);
        let counters = |lost, emfile| Event::Counters {
            ts: START,
            counters: KernelCounters {
                instance: None,
                lost_events: lost,
                bytes_unreadable: 2,
                synack_retransmits: 0,
                accept_errors: vec![(libc::EAGAIN, 50_000), (libc::EMFILE, emfile)],
            },
        };
        t.apply(&counters(3, 100));
        t.apply(&counters(5, 812));
        let r = t.report(START + SEC, &clock());
        assert_eq!(r.totals.lost_events, 5);
        assert_eq!(r.totals.closes_without_bytes, 2);
        let errors: Vec<(&str, u64)> = r.totals.accept_errors.as_ref().unwrap().iter().collect();
        assert_eq!(errors, [("EMFILE", 812)]);
    }

    #[test]
    fn ticks_evict_quiet_clients_and_count_them() {
        let mut t = Tracker::with_retention(vec![6379], Duration::from_secs(60));
        let gone = redis("10.0.0.2:1");
        let stays = redis("10.0.0.3:1");
        t.apply(&opened(START, gone));
        t.apply(&closed(START + SEC, gone, CloseKind::Client));
        t.apply(&opened(START, stays));
        t.apply(&Event::Tick {
            ts: START + 61 * SEC,
        });
        assert_eq!(t.report(START + 61 * SEC, &clock()).totals.clients, 2);
        t.apply(&Event::Tick {
            ts: START + 62 * SEC,
        });
        let r = t.report(START + 62 * SEC, &clock());
        assert_eq!(r.totals.clients, 1);
        assert_eq!(r.totals.evicted_clients, 1);
        // Totals outlive the evicted client.
        assert_eq!((r.totals.opened, r.totals.closed, r.totals.open), (2, 1, 1));
        assert_eq!(r.clients[0].addr.to_string(), "10.0.0.3");
    }

    #[test]
    fn report_time_and_uptime() {
        let mut t = Tracker::new(vec![6380, 6379, 6379]);
        let r = t.report(START + 42 * SEC + 123_456_789, &clock());
        assert_eq!(r.ports, [6379, 6380]);
        assert_eq!(r.uptime, Duration::from_micros(42_123_456));
        let json: Value = serde_json::from_str(&crate::report::render_json(&r).unwrap()).unwrap();
        assert_eq!(json["ts"], "2026-11-29T21:00:42.123Z");
        assert_eq!(json["uptime_s"], 42.123456);
        assert_eq!(json["clients"], Value::Array(Vec::new()));
    }

    #[test]
    fn report_before_the_clock_does_not_panic() {
        let mut t = tracker(&[opened(START, redis("10.0.0.2:1"))]);
        let r = t.report(0, &clock());
        assert_eq!(r.uptime, Duration::ZERO);
        assert_eq!(r.clients[0].age.map(|a| a.max), Some(Duration::ZERO));
        let far = Clock {
            mono: 0,
            wall: UNIX_EPOCH,
        };
        let r = t.report(u64::MAX, &far);
        assert!(crate::report::render_json(&r).is_ok());
    }

    #[test]
    fn full_stream_end_to_end_json_and_text() {
        let rejected = redis("10.0.0.2:1");
        let worker = redis("10.0.0.3:1");
        let legacy = redis("[::ffff:10.0.0.4]:1");
        let mut t = Tracker::new(vec![6379]);
        for ev in [
            seeded(START + 10 * MS, legacy, Some(START)),
            opened(START + SEC, rejected),
            Event::Closed {
                ts: START + SEC + 45 * US,
                key: rejected,
                how: CloseKind::Server,
                activity: Some(Activity {
                    bytes_in: 0,
                    bytes_out: 36,
                    last_active: Some(START + SEC + 40 * US),
                    queued: None,
                }),
            },
            opened(START + 2 * SEC, worker),
            activity(
                START + 3 * SEC,
                &[(worker, 1_229, 56_832, Some(START + 3 * SEC))],
            ),
            Event::Counters {
                ts: START + 3 * SEC,
                counters: KernelCounters {
                    instance: None,
                    lost_events: 0,
                    bytes_unreadable: 0,
                    synack_retransmits: 0,
                    accept_errors: vec![(libc::EMFILE, 812)],
                },
            },
        ] {
            t.apply(&ev);
        }
        let r = t.report(START + 5 * SEC, &clock());
        let json: Value = serde_json::from_str(&crate::report::render_json(&r).unwrap()).unwrap();
        assert_eq!(json["totals"]["open"], 2);
        assert_eq!(json["totals"]["accept_errors"]["EMFILE"], 812);
        // Both hold one connection and lost none: the one that opened more comes first.
        assert_eq!(json["clients"][0]["addr"], "10.0.0.3");
        assert_eq!(json["clients"][0]["idle_s"]["p50"], 2.0);
        assert_eq!(json["clients"][0]["bytes_out"], 56_832);
        assert_eq!(json["clients"][1]["addr"], "10.0.0.4");
        assert_eq!(json["clients"][1]["seeded"], 1);
        // Last data at the agent's start: at least 5 s old, though seeded at 10 ms.
        assert_eq!(json["clients"][1]["age_s"]["max"], 5.0);
        assert_eq!(json["clients"][1]["age_s"]["lower_bound"], true);
        assert_eq!(json["clients"][1]["idle_s"]["max"], 5.0);
        let rej = &json["clients"][2];
        assert_eq!(rej["addr"], "10.0.0.2");
        assert_eq!(rej["lifetime_ms"]["p50"], 0.045);
        assert_eq!(rej["lifetime_ms"]["max"], 0.045);
        assert_eq!(rej["closed_by_server"], 1);
        assert_eq!(rej["bytes_out"], 36);
        assert_eq!(
            rej["rejected"], 1,
            "read nothing, got 36 bytes, closed by the server at once"
        );
        assert_eq!(json["totals"]["rejected_by_reason"]["maxclients"], 1);
        assert!(rej["idle_s"].is_null());

        let text = crate::report::render_text(&r, 20, None);
        let rows: Vec<&str> = text.lines().skip(5).collect();
        assert_eq!(rows.len(), 3, "{text}");
        assert!(rows[0].starts_with("10.0.0.3 "), "{text}");
        assert!(rows[0].contains("1.2KiB/55.5KiB"), "{text}");
        assert!(rows[1].starts_with("10.0.0.4 "), "{text}");
        assert!(rows[1].contains("≥5.0s"), "{text}");
        assert!(rows[2].contains("1 (1/0/0)"), "{text}");
        assert!(rows[2].contains("45µs/45µs"), "{text}");
        assert!(text.contains("accept errors 0/s EMFILE 812"), "{text}");
    }

    fn closed_with(ts: Nanos, k: ConnKey, how: CloseKind, bytes_in: u64, bytes_out: u64) -> Event {
        Event::Closed {
            ts,
            key: k,
            how,
            activity: Some(Activity {
                bytes_in,
                bytes_out,
                last_active: None,
                queued: None,
            }),
        }
    }

    #[test]
    fn rejections_are_counted_per_address_and_by_reason() {
        let mut events = Vec::new();
        // 127.0.0.2: three maxclients rejections (one a RST: it had sent data).
        for (i, how) in [CloseKind::Server, CloseKind::Server, CloseKind::Reset]
            .into_iter()
            .enumerate()
        {
            let k = redis(&format!("127.0.0.2:{}", 40_000 + i));
            events.push(opened(START, k));
            events.push(closed_with(START + 200_000, k, how, 0, 36));
        }
        // 127.0.0.3: one protected-mode refusal, one normal QUIT.
        let k = redis("127.0.0.3:40000");
        events.push(opened(START, k));
        events.push(closed_with(START + 300_000, k, CloseKind::Server, 0, 1040));
        let k = redis("127.0.0.3:40001");
        events.push(opened(START, k));
        events.push(closed_with(START + SEC / 10, k, CloseKind::Server, 14, 5));
        let r = tracker(&events).report(START + SEC, &clock());
        assert_eq!(client(&r, "127.0.0.2").rejected, 3);
        assert_eq!(client(&r, "127.0.0.2").closed, 3);
        // The RST one is both a rejection and a reset, but one failed attempt.
        assert_eq!(client(&r, "127.0.0.2").reset, 1);
        assert_eq!(client(&r, "127.0.0.2").failed, 3);
        assert_eq!(client(&r, "127.0.0.3").failed, 1);
        assert_eq!(client(&r, "127.0.0.3").rejected, 1);
        assert_eq!(client(&r, "127.0.0.3").closed_by_server, 2);
        assert_eq!(r.totals.rejected, 4);
        assert_eq!(
            r.totals.rejected_by_reason,
            RejectCounts {
                maxclients: 3,
                protected_mode: 1,
                tls: 0,
                unknown: 0
            }
        );
    }

    #[test]
    fn refusals_are_counted_per_address_on_watched_ports_only() {
        let events = [
            Event::Refused {
                ts: START,
                key: redis("127.0.0.4:5000"),
            },
            Event::Refused {
                ts: START + 1,
                key: redis("127.0.0.4:5001"),
            },
            Event::Refused {
                ts: START + 2,
                key: key("10.0.0.1:7000", "127.0.0.5:5000"),
            },
        ];
        let r = tracker(&events).report(START + SEC, &clock());
        assert_eq!(client(&r, "127.0.0.4").refused, Some(2));
        assert!(r.clients.iter().all(|c| c.addr.to_string() != "127.0.0.5"));
        assert_eq!(r.totals.refused, Some(2));
    }

    #[test]
    fn accept_error_rate_between_counter_readings() {
        let counters = |ts, emfile| Event::Counters {
            ts,
            counters: KernelCounters {
                instance: None,
                accept_errors: vec![(libc::EAGAIN, 9_999), (libc::EMFILE, emfile)],
                ..KernelCounters::default()
            },
        };
        let r = tracker(&[counters(START, 1_000), counters(START + 2 * SEC, 41_000)])
            .report(START + 2 * SEC, &clock());
        assert_eq!(r.totals.accept_errors_per_s, Some(20_000.0));
    }

    #[test]
    fn redis_snapshot_marks_replicas_internal_and_ignores_the_agent() {
        let own = redis("127.0.0.1:50000");
        let replica = redis("127.0.0.9:41000");
        let snapshot = RedisSnapshot {
            status: RedisStatus::Ok,
            own_addr: Some("127.0.0.1:50000".parse().unwrap()),
            info: Some(InfoFields {
                connected_clients: Some(1),
                connected_slaves: Some(1),
                rejected_connections: Some(10),
                replicas: vec!["127.0.0.9:6380".parse().unwrap()],
                ..InfoFields::default()
            }),
            ..RedisSnapshot::disabled()
        };
        let events = [
            opened(START, own),
            opened(START, replica),
            Event::Redis {
                ts: START + 1,
                snapshot: Box::new(snapshot.clone()),
                instance: None,
            },
        ];
        let mut t = tracker(&events);
        let mut later = snapshot;
        if let Some(info) = later.info.as_mut() {
            info.rejected_connections = Some(14);
        }
        t.apply(&Event::Redis {
            ts: START + 2,
            snapshot: Box::new(later),
            instance: None,
        });
        let r = t.report(START + SEC, &clock());
        assert!(
            r.clients.iter().all(|c| c.addr.to_string() != "127.0.0.1"),
            "own connection ignored"
        );
        assert!(client(&r, "127.0.0.9").internal);
        assert_eq!(r.totals.open, 1);
        assert_eq!(r.redis.rejected_connections_delta, Some(4));
        assert_eq!(r.capacity.used, 2);
    }
}
