//! Builders the tests share: synthetic events, snapshots, report rows, and a
//! simulator that drives them through the same [`Pipeline`] `watch` and `analyze`
//! use. One copy for the unit tests and, through the `test-support` feature, for
//! the root integration tests (tests/).
//!
//! Test code: it panics on input a test got wrong.

use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::Map;

use crate::diagnose::Thresholds;
use crate::diagnose::pipeline::Pipeline;
use crate::model::*;

pub const US: Nanos = 1_000;
pub const MS: Nanos = 1_000_000;
pub const SEC: Nanos = 1_000_000_000;
/// Where synthetic streams start on the monotonic clock.
pub const START: Nanos = 1_000 * SEC;
/// The wall-clock time of [`START`] in simulated reports.
pub const START_WALL_S: u64 = 1_795_986_000;
/// The watched Redis of synthetic streams.
pub const REDIS: &str = "10.0.0.1:6379";

fn parsed<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Display,
{
    match s.parse() {
        Ok(v) => v,
        Err(e) => panic!("test input {s:?}: {e}"),
    }
}

/// The connection from `addr:port` to [`REDIS`].
pub fn conn(addr: &str, port: u16) -> ConnKey {
    ConnKey::new(parsed(REDIS), SocketAddr::new(parsed(addr), port))
}

/// Local process `pid` (`comm`, in cgroup `cgroup`) connecting: the record that
/// precedes the server's open of `key`.
pub fn connector(ts: Nanos, key: ConnKey, pid: u32, comm: &str, cgroup: Option<&str>) -> Event {
    Event::Connector {
        ts,
        client: key.remote,
        server: key.local,
        process: crate::model::Process {
            pid,
            comm: comm.into(),
            stack: None,
            cgroup: cgroup.map(Into::into),
        },
        failed: false,
        err: None,
    }
}

pub fn opened(ts: Nanos, key: ConnKey) -> Event {
    Event::Opened { ts, key }
}

/// A close with the bytes Redis read and wrote over the connection's life.
pub fn closed(ts: Nanos, key: ConnKey, how: CloseKind, bytes_in: u64, bytes_out: u64) -> Event {
    Event::Closed {
        ts,
        key,
        how,
        activity: Some(Activity {
            bytes_in,
            bytes_out,
            last_active: None,
            queued: None,
        }),
    }
}

/// An attempt at `ts` that Redis turns away at maxclients: 36 bytes out, nothing
/// read, closed by the server 200 µs later. Returns when it ended.
pub fn rejected(ev: &mut Vec<Event>, ts: Nanos, key: ConnKey) -> Nanos {
    ev.push(opened(ts, key));
    ev.push(closed(ts + 200 * US, key, CloseKind::Server, 0, 36));
    ts + 200 * US
}

/// The interval-`i` scan of `keys`, each busy at `ts` (traffic grows with `i`).
pub fn busy(keys: &[ConnKey], i: u64, ts: Nanos) -> Event {
    Event::Activity {
        ts,
        conns: keys
            .iter()
            .map(|&k| {
                let a = Activity {
                    bytes_in: i * 1_000,
                    bytes_out: i * 5_000,
                    last_active: Some(ts),
                    queued: None,
                };
                (k, a)
            })
            .collect(),
        gone: Vec::new(),
    }
}

/// `n` connections from `addr` opened at `at` and busy at every interval end up
/// to `until` (interval number, 1 s intervals from [`START`]).
pub fn steady_pool(ev: &mut Vec<Event>, addr: &str, n: u16, at: Nanos, until: u64) {
    let keys: Vec<ConnKey> = (1..=n).map(|p| conn(addr, 10_000 + p)).collect();
    ev.extend(keys.iter().map(|&k| opened(at, k)));
    ev.extend((1..=until).map(|i| busy(&keys, i, START + i * SEC)));
}

/// Redis answering INFO with `info` and CONFIG with `maxclients` (timeout 0).
pub fn redis_ok(at: Nanos, maxclients: u64, info: InfoFields) -> Event {
    Event::Redis {
        ts: at,
        snapshot: Box::new(RedisSnapshot {
            status: RedisStatus::Ok,
            config_status: ConfigStatus::Ok,
            info: Some(info),
            config: Some(RedisConfig {
                maxclients: Some(maxclients),
                timeout: Some(0),
                tls_port: Some(0),
            }),
            ..RedisSnapshot::disabled()
        }),
        instance: None,
    }
}

/// INFO with only `connected_clients`.
pub fn connected(n: u64) -> InfoFields {
    InfoFields {
        connected_clients: Some(n),
        ..InfoFields::default()
    }
}

/// The Redis process (pid 42) with an open-file limit of `nofile`.
pub fn host(at: Nanos, nofile: u64) -> Event {
    Event::Host {
        ts: at,
        snapshot: Box::new(HostSnapshot {
            nofile_soft: Some(nofile),
            nofile_hard: Some(nofile),
            pid: Some(42),
            ..HostSnapshot::default()
        }),
    }
}

/// The Redis process (pid 42, 10,032 descriptors, `open_fds` open) with `depth`
/// connections in its accept queue of 511.
pub fn accept_queue(at: Nanos, depth: u64, open_fds: u64) -> Event {
    Event::Host {
        ts: at,
        snapshot: Box::new(HostSnapshot {
            nofile_soft: Some(10_032),
            nofile_hard: Some(10_032),
            open_fds: Some(open_fds),
            pid: Some(42),
            accept_queue: Some((depth, 511)),
            ..HostSnapshot::default()
        }),
    }
}

/// INFO timing out (maxclients 10,000), with the last good figures and CONFIG
/// kept as the poller keeps them.
pub fn info_times_out(at: Nanos) -> Event {
    Event::Redis {
        ts: at,
        snapshot: Box::new(RedisSnapshot {
            status: RedisStatus::Unreachable,
            error: Some("reading a reply: timed out".into()),
            config_status: ConfigStatus::Ok,
            info: Some(connected(11)),
            config: Some(RedisConfig {
                maxclients: Some(10_000),
                timeout: Some(0),
                tls_port: Some(0),
            }),
            ..RedisSnapshot::disabled()
        }),
        instance: None,
    }
}

/// Three reports of a Redis that accepts nothing: INFO times out and 5 more
/// connections a second wait in the accept queue; the last is `not_accepting`
/// (15 waiting, 5 at 1 s).
pub fn stalled_reports() -> Vec<Report> {
    let mut ev = vec![info_times_out(START)];
    ev.extend((1..=3).map(|s| accept_queue(START + s * SEC, 5 * s, 50)));
    Sim::new(ev).run(3)
}

/// The clock of simulated runs: [`START`] is [`START_WALL_S`] seconds after the epoch.
pub fn clock() -> Clock {
    Clock {
        mono: START,
        wall: UNIX_EPOCH + Duration::from_secs(START_WALL_S),
    }
}

/// Events driven through the [`Pipeline`] as `watch` drives it: the events of each
/// interval in time order, then a tick, a report and its diagnosis.
pub struct Sim {
    pipeline: Pipeline,
    events: Vec<Event>,
    next: usize,
    now: Nanos,
    /// The interval (1 s unless a test changes it).
    pub interval: Nanos,
}

impl Sim {
    pub fn new(events: Vec<Event>) -> Self {
        Self::with(Thresholds::default(), events)
    }

    pub fn with(cfg: Thresholds, mut events: Vec<Event>) -> Self {
        events.sort_by_key(Event::ts);
        Sim {
            pipeline: Pipeline::new(vec![6379], cfg, clock()),
            events,
            next: 0,
            now: START,
            interval: SEC,
        }
    }

    /// The same, in client mode (`--remote-port`).
    pub fn client_mode(mut self) -> Self {
        self.pipeline.set_role(Role::Client);
        self
    }

    /// Ends the next interval and returns its diagnosed report.
    pub fn step(&mut self) -> Report {
        self.now += self.interval;
        let now = self.now;
        while let Some(ev) = self.events.get(self.next).filter(|e| e.ts() <= now) {
            self.pipeline.apply(ev);
            self.next += 1;
        }
        match self.pipeline.apply(&Event::Tick { ts: now }) {
            Some(report) => report,
            None => panic!("a tick gives a report"),
        }
    }

    pub fn diagnoser(&self) -> &crate::diagnose::Diagnoser {
        self.pipeline.diagnoser()
    }

    /// Reports of intervals 1..=n, index i holding interval i + 1.
    pub fn run(&mut self, n: usize) -> Vec<Report> {
        (0..n).map(|_| self.step()).collect()
    }
}

/// A report of `clients` with plausible totals, for rendering tests.
pub fn report_with(clients: Vec<ClientReport>) -> Report {
    Report {
        kind: Kind::Report,
        ts: UNIX_EPOCH + Duration::from_millis(1_795_986_000_123),
        uptime: Duration::from_secs(310),
        ports: vec![6379],
        role: Role::Server,
        instance: None,
        probe: None,
        otlp: None,
        totals: Totals {
            open: 3,
            opened: 10,
            closed: 7,
            closed_by_server: 1,
            closed_by_client: 5,
            reset: 1,
            clients: clients.len() as u64,
            refused: Some(0),
            ..Totals::default()
        },
        redis: RedisReport::default(),
        limits: Limits::default(),
        capacity: crate::core::capacity::capacity(None, &Limits::default(), 3, None),
        verdicts: Vec::new(),
        recommendations: Vec::new(),
        clients_mode: ClientsMode::Full,
        clients_omitted: 0,
        clients_gone: Vec::new(),
        clients: clients.into(),
        evicted: Vec::new(),
    }
}

/// A client row with counts only, for ordering and rendering tests.
pub fn client(addr: &str, open: u64, lost: u64, opened: u64) -> ClientReport {
    ClientReport {
        processes: Vec::new().into(),
        processes_other: None,
        failed_connects: None,
        rejected: 0,
        refused: Some(0),
        failed: 0,
        internal: false,
        verdict: ClientVerdict::Healthy,
        retry: None,
        rates: None,
        changed: true,
        addr: parsed(addr),
        open,
        seeded: 0,
        opened,
        closed: lost,
        closed_by_server: lost,
        server_closes: crate::model::ServerCloses {
            other: lost,
            ..Default::default()
        },
        closed_by_client: 0,
        reset: 0,
        lifetime: None,
        age: None,
        idle: None,
        bytes_in: 0,
        bytes_out: 0,
        send_queue: None,
    }
}

/// A local process of a client row: no container or pod, no failed connects.
pub fn process(pid: u32, comm: &str, open: u64, opened: u64) -> crate::model::ProcessReport {
    crate::model::ProcessReport {
        pid,
        comm: comm.into(),
        container: None,
        pod: None,
        open,
        opened,
        failed: 0,
        failed_by: crate::model::FailedBy::default(),
    }
}

/// A lifetime whose quantiles are all `d` (one connection, or all alike).
pub fn flat_lifetime(d: std::time::Duration) -> crate::model::Lifetime {
    crate::model::Lifetime {
        p50: d,
        p90: d,
        p99: d,
        max: d,
    }
}

/// A verdict with no words, for output tests.
pub fn verdict(kind: VerdictKind, severity: Severity, addr: Option<&str>) -> Verdict {
    Verdict {
        kind,
        severity,
        addr: addr.map(parsed),
        summary: String::new(),
        evidence: Map::new(),
        action: String::new(),
        stale_connections: Vec::new(),
    }
}

/// A report with every section filled in and four clients, worst first (also
/// served by the `/metrics` endpoint's tests).
pub fn full_report() -> Report {
    let mut leaker = client("10.0.0.5", 30, 0, 30);
    leaker.verdict = ClientVerdict::Leak;
    leaker.idle = Some(Idle {
        p50: Duration::from_secs(40),
        max: Duration::from_micros(95_250_000),
    });
    let mut stormer = client("2001:db8::7", 1, 200, 400);
    stormer.verdict = ClientVerdict::RetryStorm;
    stormer.rejected = 150;
    stormer.refused = Some(50);
    stormer.lifetime = Some(Lifetime {
        p50: Duration::from_micros(410),
        p90: Duration::from_micros(655),
        p99: Duration::from_micros(1_204),
        max: Duration::from_micros(1_216),
    });
    stormer.idle = Some(Idle {
        p50: Duration::from_millis(2),
        max: Duration::from_millis(3),
    });
    let mut small = client("10.0.0.9", 1, 3, 4);
    small.rejected = 2;
    small.refused = Some(1);
    small.idle = Some(Idle {
        p50: Duration::from_secs(1),
        max: Duration::from_micros(7_500_000),
    });
    let mut smaller = client("10.0.0.10", 0, 5, 5);
    smaller.verdict = ClientVerdict::BackingOff;
    smaller.rejected = 5;
    let mut clients = vec![small, leaker, smaller, stormer];
    clients.sort_by(worst_first);

    let redis = RedisReport {
        status: RedisStatus::Ok,
        config: ConfigStatus::Ok,
        server: Some("redis".into()),
        version: Some("7.0.15".into()),
        role: Some("master".into()),
        rejected_connections: Some(207),
        rejected_connections_delta: Some(157),
        total_connections_received: Some(1_000),
        total_connections_received_delta: Some(439),
        mem_clients_normal: Some(20_504),
        timeout_s: Some(0),
        cluster_enabled: Some(false),
        ..RedisReport::default()
    };
    Report {
        kind: Kind::Report,
        ts: UNIX_EPOCH + Duration::from_millis(1_795_986_000_123),
        uptime: Duration::from_micros(12_500_000),
        ports: vec![6379],
        role: Role::Server,
        instance: None,
        probe: None,
        otlp: None,
        totals: Totals {
            open: 32,
            opened: 439,
            closed: 408,
            closed_by_server: 150,
            server_closes: crate::model::ServerCloses {
                rejection: 120,
                idle_timeout: 20,
                output_buffer: 4,
                other: 6,
            },
            closed_by_client: 200,
            reset: 58,
            clients: 4,
            lost_events: 3,
            vanished: 0,
            closes_without_bytes: 0,
            accept_errors: Some(AcceptErrors::from_kernel(&[
                (libc::EMFILE, 812),
                (libc::ECONNABORTED, 2),
            ])),
            evicted_clients: 1,
            rejected: 157,
            rejected_by_reason: RejectCounts {
                maxclients: 148,
                protected_mode: 0,
                tls: 2,
                unknown: 7,
            },
            refused: Some(51),
            accept_errors_per_s: Some(20_000.0),
            listen_overflows: Some(4),
            listen_drops: Some(4),
            synack_retransmits: Some(9),
            accept_queue: Some(AcceptQueue {
                depth: 5,
                backlog: 511,
            }),
        },
        redis,
        limits: Limits {
            maxclients: Some(10_000),
            effective_maxclients: Some(32),
            effective_reason: Some("fd limit".into()),
            nofile_soft: Some(64),
            nofile_hard: Some(524_288),
            nofile_unlimited: false,
            open_fds: Some(63),
            somaxconn: Some(4096),
            file_nr: Some(FileNr {
                allocated: 2_048,
                max: 9_223_372_036_854_775_807,
            }),
            pid: Some(42),
        },
        capacity: Capacity {
            source: CapacitySource::Info,
            connected_clients: Some(31),
            connected_slaves: Some(1),
            cluster_connections: Some(0),
            blocked_clients: Some(0),
            unix_clients: Some(4),
            used: 32,
            limit: Some(32),
            ratio: Some(1.0),
            headroom: Some(0),
        },
        verdicts: vec![
            verdict(VerdictKind::FdLimit, Severity::Critical, None),
            verdict(VerdictKind::Leak, Severity::Warning, Some("10.0.0.5")),
        ],
        clients_mode: ClientsMode::Full,
        clients_omitted: 0,
        clients_gone: Vec::new(),
        clients: clients.into(),
        evicted: Vec::new(),
        recommendations: Vec::new(),
    }
}
