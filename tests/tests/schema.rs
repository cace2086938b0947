//! docs/report.schema.json is the contract of the NDJSON output: every line the
//! library renders and every line the real agent prints must validate, and the
//! schema must be strict enough to catch a stray key or a count sent as text.
//!
//! The synthetic reports are built from the library's own pieces (the capacity
//! join, the row cache and its rates, the diagnoser) over a minute of simulated intervals, so
//! the verdict evidence validated is what the code really writes.

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, UNIX_EPOCH};

use connwatch::core::capacity::{self, Baselines};
use connwatch::core::row_cache::{Changes, RowCache};
use connwatch::diagnose::{Diagnoser, Thresholds};
use connwatch::model::{
    AcceptErrors, Age, ClientVerdict, ClientsMode, ConfigStatus, FailedBy, HostSnapshot, Idle,
    InfoFields, Kind, Lifetime, OtherProcesses, ProcessReport, RedisConfig, RedisReport,
    RedisSnapshot, RedisStatus, RejectCounts, Report, RetryReport, Role, StaleList, Totals, Trend,
    Verdict, VerdictKind,
};
use connwatch::report::render_json;
use connwatch_tests::{Client, Redis, connwatch_bin, serial};
use jsonschema::Validator;
use serde_json::{Value, json};

const SEC: u64 = 1_000_000_000;
/// Monotonic time of the first simulated report.
const T0: u64 = 1_000 * SEC;

// ---------------------------------------------------------------------------
// The schema and its validators

fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/report.schema.json");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
    })
}

fn build(schema: &Value) -> Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("the schema does not compile: {e}"))
}

/// The whole schema: `oneOf` report / verdict transition.
fn line_validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| build(schema()))
}

/// One definition of the schema alone, for errors that name the failing key (a
/// failed `oneOf` only says that no branch matched).
fn def_validator(name: &str) -> Validator {
    build(&json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": schema()["$defs"],
        "$ref": format!("#/$defs/{name}"),
    }))
}

/// The schema's complaints about one line, as `path: message`; empty when valid.
fn errors(line: &Value) -> Vec<String> {
    if line_validator().is_valid(line) {
        return Vec::new();
    }
    let branch = match line["type"].as_str() {
        Some("report") => Some(def_validator("report")),
        Some("verdict") => Some(def_validator("verdict_event")),
        _ => None,
    };
    let validator = branch.as_ref().unwrap_or(line_validator());
    let mut found: Vec<String> = validator
        .iter_errors(line)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    if found.is_empty() {
        found.push("invalid against the whole schema".to_owned());
    }
    found
}

fn assert_valid_text(text: &str) {
    let line: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not one JSON object ({e}): {text}"));
    let errs = errors(&line);
    assert!(
        errs.is_empty(),
        "line does not validate:\n  {}\n{text}",
        errs.join("\n  ")
    );
}

fn assert_invalid_at(line: &Value, path: &str) {
    let errs = errors(line);
    assert!(!errs.is_empty(), "the schema accepted {line}");
    assert!(
        errs.iter().any(|e| e.starts_with(&format!("{path}: "))),
        "expected an error at {path}, got {errs:?}"
    );
}

// ---------------------------------------------------------------------------
// Synthetic reports from the library

fn row(addr: &str) -> connwatch::model::ClientReport {
    connwatch::model::ClientReport {
        addr: addr.parse().expect("address"),
        open: 0,
        seeded: 0,
        opened: 0,
        closed: 0,
        closed_by_server: 0,
        server_closes: connwatch::model::ServerCloses::default(),
        closed_by_client: 0,
        reset: 0,
        rejected: 0,
        refused: Some(0),
        failed: 0,
        internal: false,
        verdict: ClientVerdict::Healthy,
        lifetime: None,
        age: None,
        idle: None,
        bytes_in: 0,
        bytes_out: 0,
        retry: None,
        rates: None,
        failed_connects: None,
        changed: true,
        send_queue: None,
        processes: Vec::new().into(),
        processes_other: None,
    }
}

fn lifetime(p50_us: u64) -> Option<Lifetime> {
    Some(Lifetime {
        p50: Duration::from_micros(p50_us),
        p90: Duration::from_micros(p50_us * 2),
        p99: Duration::from_micros(p50_us * 3),
        max: Duration::from_micros(p50_us * 3 + 17),
    })
}

fn held(secs: u64, lower_bound: bool) -> (Option<Age>, Option<Idle>) {
    (
        Some(Age {
            max: Duration::from_secs(secs),
            lower_bound,
        }),
        Some(Idle {
            p50: Duration::from_millis(secs * 500),
            max: Duration::from_secs(secs),
        }),
    )
}

fn retry(gaps: u64, p50_ms: f64, trend: Trend) -> Option<RetryReport> {
    Some(RetryReport {
        gaps,
        p50_ms,
        last_ms: p50_ms * 1.25,
        start_ms: p50_ms / 4.0,
        trend,
    })
}

fn redis_ok(info: InfoFields, maxclients: u64, timeout: u64) -> RedisSnapshot {
    RedisSnapshot {
        status: RedisStatus::Ok,
        error: None,
        config_status: ConfigStatus::Ok,
        info: Some(InfoFields {
            version: Some("7.2.4".into()),
            server: Some("redis".into()),
            process_id: Some(4242),
            tcp_port: Some(6379),
            role: Some("master".into()),
            cluster_enabled: Some(false),
            ..info
        }),
        config: Some(RedisConfig {
            maxclients: Some(maxclients),
            timeout: Some(timeout),
            tls_port: Some(0),
        }),
        own_addr: Some("127.0.0.1:50000".parse().expect("addr")),
        target: Some("127.0.0.1:6379".parse().expect("addr")),
    }
}

/// What one simulated interval looks like to the library.
struct Interval {
    redis: RedisSnapshot,
    host: HostSnapshot,
    totals: Totals,
    clients: Vec<connwatch::model::ClientReport>,
}

/// Runs reports 0..=`last`, one per second, through the capacity join, the row
/// cache (which fills the rates) and the diagnoser as `watch` does; returns every report. `stale(i, ip,
/// idle)` lists `ip`'s connections idle at least `idle` at second `i`.
fn simulate(
    last: u64,
    interval: impl Fn(u64) -> Interval,
    stale: impl Fn(u64, IpAddr, Duration) -> StaleList,
) -> Vec<Report> {
    simulate_with(Thresholds::default(), last, interval, stale)
}

/// [`simulate`] with other thresholds.
fn simulate_with(
    cfg: Thresholds,
    last: u64,
    interval: impl Fn(u64) -> Interval,
    stale: impl Fn(u64, IpAddr, Duration) -> StaleList,
) -> Vec<Report> {
    let mut base = Baselines::default();
    let mut rows = RowCache::default();
    let mut diagnoser = Diagnoser::new(cfg);
    let mut reports = Vec::new();
    for i in 0..=last {
        let now = T0 + i * SEC;
        let Interval {
            redis,
            host,
            mut totals,
            clients,
        } = interval(i);
        base.observe(Some(&redis), Some(&host));
        totals.open = clients.iter().map(|c| c.open).sum();
        totals.clients = clients.len() as u64;
        let limits = capacity::limits(Some(&redis), Some(&host));
        let capacity = capacity::capacity(
            Some(&redis),
            &limits,
            totals.open,
            totals.accept_queue.map(|q| q.depth),
        );
        let mut report = Report {
            kind: Kind::Report,
            ts: UNIX_EPOCH + Duration::from_millis(1_795_986_000_123 + i * 1_000),
            uptime: Duration::from_micros(i * 1_000_000 + 1_234),
            ports: vec![6379],
            role: Role::Server,
            instance: instance_of(i),
            probe: None,
            otlp: otlp_of(i),
            totals,
            redis: RedisReport::from_snapshot(&redis, Some(&base)),
            limits,
            capacity,
            verdicts: Vec::new(),
            recommendations: Vec::new(),
            clients_mode: ClientsMode::Full,
            clients_omitted: 0,
            clients_gone: Vec::new(),
            clients: Vec::new().into(),
            evicted: Vec::new(),
        };
        let changes = Changes {
            moved: clients.iter().map(|c| c.addr).collect(),
            open: Vec::new(),
            all: false,
        };
        let by_addr = |ip| clients.iter().find(|c| c.addr == ip).cloned();
        (report.clients, report.evicted) = rows.update(now, changes, by_addr);
        diagnoser.diagnose(now, &mut report, &|ip, idle| stale(i, ip, idle));
        // As the tracker does: the cache keeps the diagnosed rows for the next.
        rows.keep(&report.clients);
        // As the live loop does: refusals unknown where the kernel lacks them.
        report.set_probe(probe_of(i));
        reports.push(report);
    }
    reports
}

/// A leak (10.0.0.66, one more idle connection a second) beside a retry storm
/// (10.0.0.77, 50 rejections a second retried after 2.5 ms), a client that
/// predates the agent over IPv6, one that came and went, and one new this interval.
/// What synthetic report `i` says of the OTLP exporter: not exporting, sending,
/// or failing since the report before, in turn.
fn otlp_of(i: u64) -> Option<connwatch::model::OtlpStatus> {
    use connwatch::model::OtlpStatus;
    match i % 3 {
        0 => None,
        1 => Some(OtlpStatus {
            sent: i,
            ..OtlpStatus::default()
        }),
        _ => Some(OtlpStatus {
            sent: i - 1,
            dropped: 1,
            retries: 3,
            queued: 2,
            failing_since: Some(
                UNIX_EPOCH + Duration::from_millis(1_795_986_000_123 + (i - 1) * 1_000),
            ),
            error: Some("Connection refused (os error 111)".into()),
        }),
    }
}

/// What synthetic report `i` says of the probe: unknown, every source, or a kernel
/// without the reset program, in turn.
fn probe_of(i: u64) -> Option<connwatch::model::ProbeReport> {
    use connwatch::model::{Features, ProbeReport};
    match i % 3 {
        0 => None,
        1 => Some(ProbeReport {
            kernel: Some("6.18.0".into()),
            features: Features::ALL,
        }),
        _ => Some(ProbeReport {
            kernel: Some("6.1.0-28-cloud-amd64".into()),
            features: Features {
                refusals: false,
                synack_retransmits: false,
                ..Features::ALL
            },
        }),
    }
}

/// The instance of synthetic report `i`: unknown, the host's own Redis, or one in
/// a pod's container, in turn.
fn instance_of(i: u64) -> Option<connwatch::model::Instance> {
    use connwatch::model::{Instance, InstanceKey};
    match i % 3 {
        0 => None,
        1 => Some(Instance {
            pid: Some(1545),
            ns_pid: Some(1545),
            comm: Some("redis-server".into()),
            ..Instance::bare(
                InstanceKey {
                    netns: 4_026_531_840,
                },
                true,
            )
        }),
        _ => Some(Instance {
            pid: Some(81_234),
            ns_pid: Some(1),
            comm: Some("redis-server".into()),
            container_id: Some("3f1c9e2d5b7a".repeat(5) + "0a1b"),
            pod_uid: Some("0b7c9b2e-5d1f-4a7e-9c3b-2e8f1a6d4c90".into()),
            ..Instance::bare(
                InstanceKey {
                    netns: 4_026_532_500,
                },
                false,
            )
        }),
    }
}

fn leak_and_storm() -> Vec<Report> {
    let interval = |i: u64| {
        let mut leak = row("10.0.0.66");
        leak.open = i;
        leak.opened = i;
        (leak.age, leak.idle) = if i > 0 { held(i, false) } else { (None, None) };
        leak.bytes_in = 14;
        leak.bytes_out = 7;
        // Two local processes: the leaker, in a Kubernetes pod, and a quiet one;
        // a third summed as other.
        leak.processes = vec![
            ProcessReport {
                pid: 4_242,
                comm: "gunicorn".into(),
                container: Some("3f2a".repeat(16).into()),
                pod: Some("0b6f1c2e-3d4a-4b5c-8d9e-0f1a2b3c4d5e".into()),
                open: i,
                opened: i,
                failed: 0,
                failed_by: FailedBy::default(),
            },
            ProcessReport {
                pid: 77,
                comm: "cron".into(),
                container: None,
                pod: None,
                open: 0,
                opened: 3,
                failed: 1,
                failed_by: FailedBy {
                    timed_out: 1,
                    ..FailedBy::default()
                },
            },
        ]
        .into();
        leak.processes_other = Some(Box::new(OtherProcesses {
            open: 0,
            opened: 1,
            failed: 1,
            failed_by: FailedBy {
                unknown: 1,
                ..FailedBy::default()
            },
        }));
        // Client mode's failed connects by cause on one row, unknown on another.
        leak.failed_connects = Some(Some(connwatch::model::ConnectFailures {
            refused: 0,
            timed_out: 1,
            abandoned: 0,
            other: 0,
        }));

        let mut storm = row("10.0.0.77");
        storm.opened = 50 * i;
        storm.closed = 50 * i;
        storm.closed_by_server = 50 * i;
        storm.rejected = 50 * i;
        storm.failed = 50 * i;
        storm.bytes_out = 36 * 50 * i;
        storm.lifetime = lifetime(80);
        storm.retry = if i > 0 {
            retry(50 * i - 1, 2.5, Trend::Flat)
        } else {
            None
        };

        let mut seeded = row("2001:db8::7");
        seeded.open = 2;
        seeded.seeded = 2;
        (seeded.age, seeded.idle) = held(90 + i, true);
        seeded.bytes_in = 1_000 + i;
        seeded.bytes_out = 2_000 + i;
        seeded.failed_connects = Some(None);

        let mut gone = row("10.0.0.9");
        gone.opened = 5;
        gone.closed = 5;
        gone.closed_by_client = 5;
        gone.lifetime = lifetime(412);

        let mut clients = vec![leak, seeded, storm, gone];
        if i == 61 {
            let mut new = row("10.0.0.200");
            new.open = 1;
            new.opened = 1;
            (new.age, new.idle) = held(0, false);
            clients.push(new);
        }
        clients.sort_by(connwatch::model::worst_first);
        let open: u64 = clients.iter().map(|c| c.open).sum();
        Interval {
            redis: redis_ok(
                InfoFields {
                    connected_clients: Some(open),
                    blocked_clients: Some(0),
                    maxclients: Some(1_000),
                    cluster_connections: Some(0),
                    connected_slaves: Some(0),
                    rejected_connections: Some(100 + 50 * i),
                    total_connections_received: Some(5_000 + 51 * i),
                    ..InfoFields::default()
                },
                1_000,
                0,
            ),
            host: HostSnapshot {
                pid: Some(4242),
                nofile_soft: Some(100_000),
                nofile_hard: Some(100_000),
                open_fds: Some(40 + open),
                file_nr: Some((3_000, 9_223_372_036_854_775_807)),
                somaxconn: Some(4_096),
                accept_queue: Some((0, 511)),
                listen_overflows: Some(17),
                listen_drops: Some(17 + i),
                ..HostSnapshot::default()
            },
            totals: Totals {
                opened: 51 * i + 5,
                closed: 50 * i + 5,
                closed_by_server: 50 * i,
                closed_by_client: 5,
                rejected: 50 * i,
                rejected_by_reason: RejectCounts {
                    maxclients: 50 * i,
                    protected_mode: 0,
                    tls: 0,
                    unknown: 0,
                },
                accept_errors: Some(AcceptErrors::from_kernel(&[(libc::EAGAIN, 9_000)])),
                listen_overflows: Some(0),
                listen_drops: Some(i),
                accept_queue: Some(connwatch::model::AcceptQueue {
                    depth: 0,
                    backlog: 511,
                }),
                ..Totals::default()
            },
            clients,
        }
    };
    // The leak's connections idle 30 s or more, oldest first: the one opened at
    // second k is idle (i − k) s at second i.
    let stale = |i: u64, ip: IpAddr, idle: Duration| -> StaleList {
        if ip != "10.0.0.66".parse::<IpAddr>().expect("ip") {
            return Vec::new();
        }
        (0..i)
            .map(|k| {
                (
                    SocketAddr::new(ip, 40_000 + k as u16),
                    Duration::from_secs(i - k),
                    Some(4_242),
                )
            })
            .filter(|&(_, d, _)| d >= idle)
            .collect()
    };
    simulate(61, interval, stale)
}

fn no_stale(_: u64, _: IpAddr, _: Duration) -> StaleList {
    Vec::new()
}

/// Redis at its fd limit: maxclients 10000 but RLIMIT_NOFILE 4096, EMFILE on
/// every accept, five fixed pools filling the server, a replica, blocked
/// consumers, a client that backs off and one whose retries speed up.
fn host_limits() -> Vec<Report> {
    let interval = |i: u64| {
        let mut clients = Vec::new();
        for (n, open) in [(1, 800), (2, 800), (3, 800), (4, 800), (5, 1_100)] {
            let mut pool = row(&format!("10.0.1.{n}"));
            pool.open = open;
            pool.seeded = open;
            (pool.age, pool.idle) = held(600 + i, true);
            clients.push(pool);
        }
        let mut replica = row("10.0.0.2");
        replica.open = 1;
        replica.opened = 1;
        replica.internal = true;
        (replica.age, replica.idle) = held(i, false);
        clients.push(replica);

        let mut backoff = row("10.0.0.30");
        backoff.refused = Some(i / 2);
        backoff.failed = i / 2;
        backoff.retry = if i >= 2 {
            retry(i / 2 - 1, 1_500.0, Trend::Growing)
        } else {
            None
        };
        clients.push(backoff);

        let mut faster = row("10.0.0.88");
        faster.opened = 2;
        faster.closed = 2;
        faster.reset = 1;
        faster.closed_by_client = 1;
        faster.lifetime = lifetime(20_000);
        faster.retry = retry(1, 300.0, Trend::Shrinking);
        clients.push(faster);
        clients.sort_by(connwatch::model::worst_first);

        Interval {
            redis: redis_ok(
                InfoFields {
                    connected_clients: Some(4_300),
                    blocked_clients: Some(1_500),
                    maxclients: Some(10_000),
                    cluster_connections: Some(0),
                    connected_slaves: Some(2),
                    rejected_connections: Some(5 * i),
                    total_connections_received: Some(9_000 + 5 * i),
                    replicas: vec!["10.0.0.2:6379".parse().expect("addr")],
                    ..InfoFields::default()
                },
                10_000,
                300,
            ),
            host: HostSnapshot {
                pid: Some(777),
                nofile_soft: Some(4_096),
                nofile_hard: Some(4_096),
                open_fds: Some(4_096),
                file_nr: Some((12_000, 400_000)),
                somaxconn: Some(4_096),
                accept_queue: Some((511, 511)),
                listen_overflows: Some(1_000 + 10 * i),
                listen_drops: Some(1_000 + 10 * i),
                ..HostSnapshot::default()
            },
            totals: Totals {
                opened: 2 + 5 * i,
                closed: 2 + 5 * i,
                closed_by_server: 5 * i,
                closed_by_client: 1,
                reset: 1,
                rejected: 5 * i,
                rejected_by_reason: RejectCounts {
                    maxclients: 5 * i - i / 2,
                    protected_mode: 0,
                    tls: 0,
                    unknown: i / 2,
                },
                refused: Some(i / 2),
                accept_errors: Some(AcceptErrors::from_kernel(&[
                    (libc::EMFILE, 2_000 * i),
                    (libc::ENFILE, i),
                    (libc::EAGAIN, 5),
                ])),
                accept_errors_per_s: Some(if i > 0 { 2_001.0 } else { 0.0 }),
                listen_overflows: Some(10 * i),
                listen_drops: Some(10 * i),
                synack_retransmits: Some(i),
                accept_queue: Some(connwatch::model::AcceptQueue {
                    depth: 511,
                    backlog: 511,
                }),
                ..Totals::default()
            },
            clients,
        }
    };
    simulate(61, interval, no_stale)
}

/// Redis unreachable (CONFIG's last answer kept), capacity from the kernel, an
/// unlimited hard fd limit, 120 addresses with one short connection each, and
/// one address holding most of the limit.
fn unreachable_fanout() -> Vec<Report> {
    let interval = |i: u64| {
        let mut heavy = row("10.0.2.1");
        heavy.open = 850;
        heavy.opened = 850;
        (heavy.age, heavy.idle) = held(30 + i, false);
        let mut clients = vec![heavy];
        for n in 1..=120 {
            let mut one = row(&format!("10.0.3.{n}"));
            one.opened = 1;
            one.closed = 1;
            one.closed_by_client = 1;
            one.lifetime = lifetime(2_000);
            clients.push(one);
        }
        let mut unsure = row("10.0.2.9");
        unsure.opened = 2;
        unsure.closed = 2;
        unsure.reset = 2;
        unsure.lifetime = lifetime(700);
        unsure.retry = retry(1, 40.0, Trend::Unknown);
        clients.push(unsure);
        clients.sort_by(connwatch::model::worst_first);
        Interval {
            redis: RedisSnapshot {
                status: RedisStatus::Unreachable,
                error: Some("connect to 127.0.0.1:6379: Connection refused (os error 111)".into()),
                config_status: ConfigStatus::Ok,
                info: None,
                config: Some(RedisConfig {
                    maxclients: Some(1_000),
                    timeout: Some(300),
                    tls_port: Some(6380),
                }),
                own_addr: None,
                target: Some("[::1]:6379".parse().expect("addr")),
            },
            host: HostSnapshot {
                pid: Some(4243),
                nofile_soft: Some(1_000),
                nofile_hard: None,
                nofile_unlimited: true,
                ..HostSnapshot::default()
            },
            totals: Totals {
                opened: 972,
                closed: 122,
                closed_by_client: 120,
                reset: 2,
                ..Totals::default()
            },
            clients,
        }
    };
    simulate(3, interval, no_stale)
}

/// Redis stalled (stopped, or stuck in a slow command): INFO times out while
/// connections pile up in its accept queue, 10 at first and 8 more a second; the
/// kernel counts them open.
fn stalled() -> Vec<Report> {
    let interval = |i: u64| {
        let waiting = 10 + 8 * i;
        let mut queued = row("10.0.4.1");
        queued.open = waiting;
        queued.opened = waiting;
        (queued.age, queued.idle) = held(i, false);
        Interval {
            redis: RedisSnapshot {
                status: RedisStatus::Unreachable,
                error: Some("reading a reply: timed out".into()),
                config_status: ConfigStatus::Ok,
                info: None,
                config: Some(RedisConfig {
                    maxclients: Some(10_000),
                    timeout: Some(0),
                    tls_port: Some(0),
                }),
                own_addr: Some("127.0.0.1:50000".parse().expect("addr")),
                target: Some("127.0.0.1:6379".parse().expect("addr")),
            },
            host: HostSnapshot {
                pid: Some(4244),
                nofile_soft: Some(10_032),
                nofile_hard: Some(10_032),
                open_fds: Some(60),
                accept_queue: Some((waiting, 511)),
                ..HostSnapshot::default()
            },
            totals: Totals {
                opened: waiting,
                accept_queue: Some(connwatch::model::AcceptQueue {
                    depth: waiting,
                    backlog: 511,
                }),
                ..Totals::default()
            },
            clients: vec![queued],
        }
    };
    simulate(4, interval, no_stale)
}

/// 300 addresses each keeping one idle connection, 301 of maxclients 320 with the
/// agent's: a kept fan-out once they have held it half a window (30 s).
fn kept_fanout() -> Vec<Report> {
    let interval = |i: u64| {
        let mut clients: Vec<_> = (0..300u64)
            .map(|n| {
                let mut one = row(&format!("10.0.{}.{}", 5 + n / 250, n % 250 + 1));
                one.open = 1;
                one.opened = 1;
                (one.age, one.idle) = held(30 + i, false);
                one
            })
            .collect();
        clients.sort_by(connwatch::model::worst_first);
        Interval {
            redis: redis_ok(
                InfoFields {
                    connected_clients: Some(301),
                    maxclients: Some(320),
                    ..InfoFields::default()
                },
                320,
                0,
            ),
            host: HostSnapshot {
                pid: Some(4245),
                nofile_soft: Some(10_032),
                ..HostSnapshot::default()
            },
            totals: Totals {
                opened: 300,
                ..Totals::default()
            },
            clients,
        }
    };
    simulate(31, interval, no_stale)
}

/// Twenty addresses retrying 250 ms after each rejection against a full server,
/// four failures a second each: a retry storm across clients; beside them a
/// client that holds 3 MiB of replies it does not read: a slow consumer, and over
/// its budget of none.
fn flat_fleet() -> Vec<Report> {
    let interval = |i: u64| {
        let mut clients: Vec<_> = (1..=20)
            .map(|n| {
                let mut c = row(&format!("10.0.4.{n}"));
                c.opened = 4 * i;
                c.closed = 4 * i;
                c.closed_by_server = 4 * i;
                c.rejected = 4 * i;
                c.failed = 4 * i;
                c.bytes_out = 36 * 4 * i;
                c.lifetime = if i > 0 { lifetime(200) } else { None };
                c.retry = if i > 1 {
                    retry(4 * i - 1, 250.0, Trend::Flat).map(|r| RetryReport {
                        start_ms: 250.0,
                        ..r
                    })
                } else {
                    None
                };
                c
            })
            .collect();
        let mut slow = row("10.0.4.99");
        slow.open = 1;
        slow.opened = 1;
        (slow.age, slow.idle) = held(i, false);
        slow.bytes_in = 40;
        slow.bytes_out = 5 << 20;
        slow.send_queue = Some(connwatch::model::SendQueue {
            bytes: 3 << 20,
            max: 3 << 20,
        });
        clients.push(slow);
        clients.sort_by(connwatch::model::worst_first);
        Interval {
            redis: redis_ok(
                InfoFields {
                    connected_clients: Some(100),
                    blocked_clients: Some(0),
                    maxclients: Some(100),
                    cluster_connections: Some(0),
                    connected_slaves: Some(0),
                    rejected_connections: Some(80 * i),
                    total_connections_received: Some(100 + 80 * i),
                    // A Valkey 8: it counts output-buffer drops.
                    mem_clients_normal: Some(3 << 20),
                    client_output_buffer_limit_disconnections: Some(2),
                    ..InfoFields::default()
                },
                100,
                0,
            ),
            host: HostSnapshot {
                pid: Some(4244),
                nofile_soft: Some(100_000),
                ..HostSnapshot::default()
            },
            totals: Totals {
                opened: 80 * i,
                closed: 80 * i,
                closed_by_server: 80 * i,
                rejected: 80 * i,
                ..Totals::default()
            },
            clients,
        }
    };
    // The slow consumer's one connection is over a budget of none.
    let cfg = Thresholds {
        budgets: vec!["10.0.4.99=0".parse().expect("budget")],
        ..Thresholds::default()
    };
    simulate_with(cfg, 12, interval, no_stale)
}

/// `--no-redis`, nothing read from /proc, no client yet.
fn bare() -> Vec<Report> {
    let interval = |_| Interval {
        redis: RedisSnapshot::disabled(),
        host: HostSnapshot::default(),
        totals: Totals::default(),
        clients: Vec::new(),
    };
    simulate(0, interval, no_stale)
}

fn kinds(r: &Report) -> Vec<(String, String)> {
    r.verdicts
        .iter()
        .map(|v| {
            let v = serde_json::to_value(v).expect("verdict");
            (
                v["kind"].as_str().unwrap_or("").to_owned(),
                v["severity"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn client_verdicts(r: &Report) -> Vec<(String, String)> {
    r.clients
        .iter()
        .filter(|c| c.verdict != ClientVerdict::Healthy)
        .map(|c| {
            (
                c.addr.to_string(),
                serde_json::to_value(c.verdict)
                    .expect("verdict")
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

/// A `"type":"verdict"` transition line for a library verdict.
fn transition(event: &str, ts: &str, v: &Verdict) -> Value {
    let mut line = json!({
        "type": "verdict",
        "ts": ts,
        "event": event,
        "kind": v.kind,
        "severity": v.severity,
        "summary": v.summary,
        "role": "server",
    });
    if let Some(addr) = v.addr {
        line["addr"] = json!(addr);
    }
    line
}

#[test]
fn the_schema_is_valid_draft_2020_12() {
    jsonschema::meta::validate(schema())
        .unwrap_or_else(|e| panic!("docs/report.schema.json is not a valid schema: {e}"));
    assert_eq!(
        schema()["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
}

#[test]
fn synthetic_reports_of_every_shape_validate() {
    let storm = leak_and_storm();
    let limits = host_limits();
    let fanout = unreachable_fanout();
    let bare = bare();
    let stalled = stalled();
    let kept = kept_fanout();
    let fleet = flat_fleet();
    // Client mode: the storm's rows as an application host reports them (role
    // client; the listener's figures unknown).
    let mut client_side = storm.last().expect("report").clone();
    client_side.role = Role::Client;
    client_side.set_probe(client_side.probe.clone());
    assert_eq!(client_side.totals.synack_retransmits, None);

    // The scenarios reach the verdicts they were built for.
    let last = storm.last().expect("report");
    assert_eq!(
        kinds(last),
        pairs(&[
            ("retry_storm", "critical"),
            ("capacity_critical", "critical"),
            ("leak", "warning"),
        ])
    );
    assert_eq!(
        client_verdicts(last),
        pairs(&[("10.0.0.66", "leak"), ("10.0.0.77", "retry_storm")])
    );
    let leak = last.verdicts.last().expect("leak");
    assert_eq!(leak.stale_connections.len(), 20);
    assert_eq!(
        leak.stale_connections[0].command,
        "CLIENT KILL ADDR 10.0.0.66:40000"
    );
    let last = limits.last().expect("report");
    assert_eq!(
        kinds(last),
        pairs(&[
            ("pool_oversize", "critical"),
            ("maxclients_too_low", "critical"),
            ("fd_limit", "critical"),
            ("capacity_critical", "critical"),
            ("internal_headroom", "warning"),
            ("blocked_clients", "warning"),
        ])
    );
    assert_eq!(
        client_verdicts(last),
        pairs(&[("10.0.1.5", "pool_heavy"), ("10.0.0.30", "backing_off")])
    );
    assert_eq!(last.capacity.headroom, Some(-238));
    let last = fanout.last().expect("report");
    assert_eq!(
        kinds(last),
        pairs(&[
            ("fd_limit", "warning"),
            ("instance_fanout", "warning"),
            ("capacity_warning", "warning"),
        ])
    );
    assert_eq!(client_verdicts(last), pairs(&[("10.0.2.1", "pool_heavy")]));
    assert_eq!(kinds(&bare[0]), pairs(&[]));
    let last = fleet.last().expect("report");
    assert_eq!(
        kinds(last),
        pairs(&[
            ("retry_storm", "critical"),
            ("capacity_critical", "critical"),
            ("slow_consumer", "warning"),
            ("budget_exceeded", "warning"),
        ])
    );
    assert_eq!(last.verdicts[0].addr, None);
    for c in last.clients.iter() {
        let want = if c.addr.to_string() == "10.0.4.99" {
            connwatch::model::ClientVerdict::SlowConsumer
        } else {
            connwatch::model::ClientVerdict::NoBackoff
        };
        assert_eq!(c.verdict, want, "{}", c.addr);
    }
    assert_eq!(kinds(&stalled[0]), pairs(&[]));
    assert_eq!(
        kinds(stalled.last().expect("report")),
        pairs(&[("not_accepting", "critical")])
    );
    assert_eq!(
        kinds(kept.last().expect("report")),
        pairs(&[
            ("instance_fanout", "critical"),
            ("capacity_critical", "critical"),
        ])
    );

    // Every line of every scenario validates.
    let all: Vec<&Report> = storm
        .iter()
        .chain(&limits)
        .chain(&fanout)
        .chain(&bare)
        .chain(&stalled)
        .chain(&kept)
        .chain(&fleet)
        .chain(std::iter::once(&client_side))
        .collect();
    assert_eq!(all.len(), 62 + 62 + 4 + 1 + 5 + 32 + 13 + 1);
    let mut lines = Vec::new();
    for r in &all {
        let text = render_json(r).expect("render");
        assert_valid_text(&text);
        lines.push(serde_json::from_str::<Value>(&text).expect("json"));
    }

    // …and between them they hold every optional part of the schema.
    let present = |pointer: &str, want: Value| {
        assert!(
            lines.iter().any(|l| l.pointer(pointer) == Some(&want)),
            "no synthetic line has {pointer} = {want}"
        );
    };
    for (status, config) in [("ok", "ok"), ("unreachable", "ok"), ("disabled", "unknown")] {
        present("/redis/status", json!(status));
        present("/redis/config", json!(config));
    }
    present("/role", json!("server"));
    present("/role", json!("client"));
    present("/totals/synack_retransmits", Value::Null);
    present("/capacity/source", json!("info"));
    present("/capacity/source", json!("kernel"));
    present("/limits/nofile_unlimited", json!(true));
    present("/limits", json!({}));
    present("/totals/accept_errors", json!({}));
    present(
        "/totals/accept_errors",
        json!({"EMFILE": 122_000, "ENFILE": 61}),
    );
    present("/redis/target", json!("[::1]:6379"));
    present("/clients", json!([]));
    present("/verdicts", json!([]));
    let keys_seen = |section: &str| -> Vec<String> {
        let mut keys: Vec<String> = lines
            .iter()
            .filter_map(|l| l[section].as_object())
            .flat_map(|o| o.keys().cloned())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    };
    let def_keys = |def: &str| -> Vec<String> {
        let mut keys: Vec<String> = schema()["$defs"][def]["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    };
    for section in ["totals", "redis", "limits", "capacity"] {
        assert_eq!(keys_seen(section), def_keys(section), "keys of {section}");
    }
    let verdict_keys: Vec<String> = {
        let mut k: Vec<String> = lines
            .iter()
            .flat_map(|l| l["verdicts"].as_array().cloned().unwrap_or_default())
            .flat_map(|v| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()))
            .flatten()
            .collect();
        k.sort();
        k.dedup();
        k
    };
    assert_eq!(verdict_keys, def_keys("verdict"));
    let values_at = |f: &dyn Fn(&Value) -> Vec<Value>| -> Vec<String> {
        let mut seen: Vec<String> = lines
            .iter()
            .flat_map(f)
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        seen.sort();
        seen.dedup();
        seen
    };
    let enum_of = |def: &str| -> Vec<String> {
        let mut e: Vec<String> = schema()["$defs"][def]["enum"]
            .as_array()
            .expect("enum")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        e.sort();
        e
    };
    let each = |l: &Value, list: &str, key: &str| -> Vec<Value> {
        l[list]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x.pointer(key).cloned().unwrap_or(Value::Null))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        values_at(&|l| each(l, "verdicts", "/kind")),
        enum_of("verdict_kind")
    );
    assert_eq!(
        values_at(&|l| each(l, "verdicts", "/severity")),
        enum_of("severity")
    );
    assert_eq!(
        values_at(&|l| each(l, "clients", "/verdict")),
        enum_of("client_verdict")
    );
    assert_eq!(
        values_at(&|l| each(l, "clients", "/retry/trend")),
        enum_of("trend")
    );
    // Each nullable client object is seen both null and filled.
    for key in ["lifetime_ms", "age_s", "idle_s", "retry", "rates"] {
        let kinds: Vec<bool> = lines
            .iter()
            .flat_map(|l| each(l, "clients", &format!("/{key}")))
            .map(|v| v.is_null())
            .collect();
        assert!(kinds.contains(&true), "{key} never null");
        assert!(kinds.contains(&false), "{key} never filled");
    }
}

#[test]
fn both_forms_of_the_stream_validate() {
    use connwatch::model::ClientsMode;
    use connwatch::report::rows::RowFilter;
    let scenarios = [
        leak_and_storm(),
        host_limits(),
        unreachable_fanout(),
        bare(),
        stalled(),
        kept_fanout(),
    ];
    // (mode, rows left out) of every line, per form.
    let mut seen: Vec<(bool, ClientsMode, u64)> = Vec::new();
    for all in [false, true] {
        for scenario in &scenarios {
            let mut filter = if all {
                RowFilter::all()
            } else {
                RowFilter::changed(Duration::from_secs(10))
            };
            for r in scenario {
                let line = filter.select(r);
                assert_valid_text(&render_json(&line).expect("render"));
                assert_eq!(
                    line.clients.len() as u64 + line.clients_omitted,
                    r.totals.clients
                );
                seen.push((all, line.clients_mode, line.clients_omitted));
            }
        }
    }
    let count = |all, mode, left_out: bool| {
        seen.iter()
            .filter(|&&(a, m, o)| a == all && m == mode && (o > 0) == left_out)
            .count()
    };
    // --clients all: every line full. changed: a full line per instance and
    // cadence, and changed lines that leave rows out.
    assert_eq!(count(true, ClientsMode::Full, false), 129 + 5 + 32);
    assert!(count(false, ClientsMode::Full, false) >= 3);
    assert!(count(false, ClientsMode::Changed, true) >= 10);
    assert_eq!(
        seen.iter().filter(|s| !s.0).count(),
        seen.iter().filter(|s| s.0).count()
    );

    // An address evicted between two lines is named in clients_gone.
    let mut filter = RowFilter::changed(Duration::from_secs(300));
    let before = leak_and_storm().swap_remove(10);
    filter.select(&before);
    let mut after = before.clone();
    after.uptime += Duration::from_secs(1);
    let evicted = after.clients.pop().expect("a row");
    after.evicted = vec![evicted.addr];
    after.totals.clients -= 1;
    let line = filter.select(&after);
    assert_eq!(line.clients_gone, vec![evicted.addr]);
    assert_eq!(line.clients_mode, ClientsMode::Changed);
    assert_valid_text(&render_json(&line).expect("render"));
}

#[test]
fn verdict_transition_lines_validate() {
    let storm = leak_and_storm();
    let limits = host_limits();
    let fanout = unreachable_fanout();
    let stalled = stalled();
    let kept = kept_fanout();
    let mut checked = 0;
    for r in [&storm, &limits, &fanout, &stalled, &kept].map(|s| s.last().expect("report")) {
        let ts = serde_json::to_value(r).expect("report")["ts"].clone();
        let ts = ts.as_str().expect("ts");
        for v in &r.verdicts {
            for event in ["raised", "cleared"] {
                let line = transition(event, ts, v);
                assert_valid_text(&serde_json::to_string(&line).expect("json"));
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 2 * (3 + 6 + 3 + 1 + 2));
}

/// A leak's stacks (`watch --stacks`) as the agent writes them, native and
/// interpreted, validate; a frame that is no string, a fourth stack, or the stacks
/// without their companion keys do not.
#[test]
fn a_leaks_stacks_validate() {
    use connwatch::source::stacks::ProcessStacks;
    let mut report = leak_and_storm().pop().expect("report");
    let at = report
        .verdicts
        .iter()
        .position(|v| v.kind == VerdictKind::Leak)
        .expect("a leak");
    report.verdicts[at]
        .evidence
        .insert("pid".into(), json!(4242));
    let frames = std::sync::Arc::new(vec![
        "libc.so.6!connect+0x10".to_owned(),
        "cw-native!open_leaked_connection+0x20".to_owned(),
    ]);
    let line = |stacks: &ProcessStacks| {
        let mut r = report.clone();
        stacks.add_to(&mut r.verdicts[at].evidence);
        serde_json::to_value(&r).expect("json")
    };
    let native = line(&ProcessStacks {
        stacks: Some(vec![(40, frames.clone()), (2, frames.clone())]),
        missing: 1,
        interpreter: None,
        cmdline: Some("./cw-native 6379".into()),
        note: Some("1 of the connections have no stack".into()),
    });
    assert!(errors(&native).is_empty(), "{:?}", errors(&native));
    let interpreted = line(&ProcessStacks {
        interpreter: Some("python"),
        cmdline: None,
        note: Some("interpreted (python): …".into()),
        ..ProcessStacks::default()
    });
    assert!(
        errors(&interpreted).is_empty(),
        "{:?}",
        errors(&interpreted)
    );
    let evidence = format!("/verdicts/{at}/evidence");
    let mut bad = native.clone();
    bad.pointer_mut(&format!("{evidence}/stacks/0/frames/0"))
        .map(|f| *f = json!(7))
        .expect("a frame");
    assert!(!errors(&bad).is_empty(), "a frame that is a number");
    let mut bad = native.clone();
    bad.pointer_mut(&format!("{evidence}/stacks"))
        .and_then(Value::as_array_mut)
        .map(|s| s.extend([s[0].clone(), s[0].clone()]))
        .expect("stacks");
    assert!(!errors(&bad).is_empty(), "four stacks");
    let mut bad = native;
    bad.pointer_mut(&evidence)
        .and_then(Value::as_object_mut)
        .map(|e| e.remove("cmdline"))
        .expect("evidence");
    assert!(!errors(&bad).is_empty(), "stacks without cmdline");
}

#[test]
fn the_schema_rejects_what_the_code_never_writes() {
    let report = serde_json::to_value(host_limits().last().expect("report")).expect("json");
    assert!(errors(&report).is_empty(), "{:?}", errors(&report));

    // The report with the key at `pointer` set (added if absent).
    let with = |pointer: &str, value: Value| {
        let mut line = report.clone();
        let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
        line.pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("no object at {parent}"))
            .insert(key.to_owned(), value);
        line
    };
    // An unknown top-level key.
    assert_invalid_at(&with("/extra", json!(1)), "");
    // A count sent as a string.
    assert_invalid_at(&with("/totals/open", json!("4303")), "/totals/open");
    // …and a few more a careless change could introduce.
    assert_invalid_at(&with("/clients/0/open_now", json!(1)), "/clients/0");
    assert_invalid_at(&with("/clients/0/open", json!(-1)), "/clients/0/open");
    assert_invalid_at(
        &with("/clients/0/verdict", json!("angry")),
        "/clients/0/verdict",
    );
    assert_invalid_at(
        &with("/clients/0/lifetime_ms", json!(0)),
        "/clients/0/lifetime_ms",
    );
    assert_invalid_at(&with("/ts", json!("2026-11-29T21:00:00Z")), "/ts");
    assert_invalid_at(&with("/redis/status", json!("down")), "/redis/status");
    // INFO figures under a kernel count.
    assert_invalid_at(
        &with("/capacity/source", json!("kernel")),
        "/capacity/connected_clients",
    );
    assert_invalid_at(&with("/verdicts/0/kind", json!("doom")), "/verdicts/0/kind");
    assert_invalid_at(
        &with("/verdicts/0/evidence/instances", json!("5")),
        "/verdicts/0/evidence/instances",
    );
    assert_invalid_at(
        &with("/verdicts/0/addr", json!("10.0.0.1")),
        "/verdicts/0/addr",
    );
    assert_invalid_at(
        &with("/totals/accept_errors/EMFILE", json!(0)),
        "/totals/accept_errors/EMFILE",
    );
    // The client rows' form: a known mode; nothing left out or gone when full.
    assert_invalid_at(&with("/clients_mode", json!("partial")), "/clients_mode");
    assert_invalid_at(&with("/clients_omitted", json!(3)), "/clients_omitted");
    assert_invalid_at(&with("/clients_gone", json!(["10.0.0.1"])), "/clients_gone");
    let mut changed = with("/clients_mode", json!("changed"));
    changed["clients_omitted"] = json!(3);
    changed["clients_gone"] = json!(["10.0.0.1", "2001:db8::1"]);
    assert!(errors(&changed).is_empty(), "{:?}", errors(&changed));
    changed["clients_gone"] = json!(["10.0.0.1", "nowhere"]);
    assert_invalid_at(&changed, "/clients_gone/1");
    changed["clients_gone"] = json!(["10.0.0.1", "10.0.0.1"]);
    assert_invalid_at(&changed, "/clients_gone");
    changed["clients_gone"] = json!([]);
    changed["clients_omitted"] = json!(-1);
    assert_invalid_at(&changed, "/clients_omitted");
    let mut no_mode = report.clone();
    no_mode
        .as_object_mut()
        .expect("report")
        .remove("clients_mode");
    assert_invalid_at(&no_mode, "");

    let mut missing = report.clone();
    missing["totals"]
        .as_object_mut()
        .expect("totals")
        .remove("refused");
    assert_invalid_at(&missing, "/totals");

    let raised = json!({
        "type": "verdict", "ts": "2026-11-29T21:14:11.412Z", "event": "raised",
        "kind": "retry_storm", "severity": "critical", "addr": "10.0.0.77",
        "summary": "10.0.0.77 retries every 2.5ms with no backoff", "role": "client",
    });
    assert!(errors(&raised).is_empty(), "{:?}", errors(&raised));
    let mut bad = raised.clone();
    bad["role"] = json!("proxy");
    assert_invalid_at(&bad, "/role");
    let mut bad = raised.clone();
    bad["event"] = json!("started");
    assert_invalid_at(&bad, "/event");
    let mut bad = raised.clone();
    bad["evidence"] = json!({});
    assert_invalid_at(&bad, "");
    let mut bad = raised.clone();
    bad["type"] = json!("alert");
    assert!(!errors(&bad).is_empty());
}

#[test]
fn the_schema_knows_every_redis_status_and_rejection_reason() {
    let names = |v: &Value| -> Vec<String> {
        let mut n: Vec<String> = v
            .as_array()
            .expect("an array")
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect();
        n.sort();
        n
    };
    let mut statuses: Vec<String> = RedisStatus::ALL
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    statuses.sort();
    assert_eq!(
        names(&schema()["$defs"]["redis"]["properties"]["status"]["enum"]),
        statuses
    );
    let reasons = serde_json::to_value(RejectCounts::default()).expect("serialize");
    let mut keys: Vec<String> = reasons
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect();
    keys.sort();
    let by_reason = &schema()["$defs"]["totals"]["properties"]["rejected_by_reason"];
    assert_eq!(names(&by_reason["required"]), keys);
}

#[test]
fn the_examples_in_report_md_validate() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/REPORT.md");
    let doc = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let blocks: Vec<&str> = doc
        .split("```json\n")
        .skip(1)
        .map(|rest| rest.split("\n```").next().unwrap_or(""))
        .collect();
    let types: Vec<Value> = blocks
        .iter()
        .map(|block| {
            // Wrapped for reading: one JSON value over several lines.
            let line: Value = serde_json::from_str(block)
                .unwrap_or_else(|e| panic!("example is not JSON ({e}):\n{block}"));
            assert_valid_text(&line.to_string());
            line["type"].clone()
        })
        .collect();
    assert_eq!(types, [json!("report"), json!("verdict")]);
}

// ---------------------------------------------------------------------------
// The real agent

/// Runs `connwatch watch --format json --duration 3s` with `args`; `during` runs
/// once the first line is out (the probes are attached). Returns every stdout line.
fn run_agent(port: u16, args: &[&str], during: impl FnOnce()) -> Vec<String> {
    let mut child = Command::new(connwatch_bin())
        .args(["watch", "--format", "json", "--duration", "3s"])
        .args(["--interval", "200ms", "--port", &port.to_string()])
        .args(args)
        .env_remove("REDISCLI_AUTH")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start connwatch");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        use std::io::BufRead as _;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(());
            lines.push(line);
        }
        lines
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("connwatch printed its first line within 20 s");
    during();
    let output = child.wait_with_output().expect("wait for connwatch");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "connwatch exited with {}; stderr:\n{stderr}",
        output.status
    );
    reader.join().expect("reader thread")
}

fn check_every_line(lines: &[String]) -> Vec<Value> {
    // 3 s at 200 ms: about 15 interval reports and the last one.
    assert!(lines.len() >= 10, "only {} lines: {lines:?}", lines.len());
    for line in lines {
        assert!(
            line.starts_with(r#"{"type":""#),
            "type is not first: {line}"
        );
        assert_valid_text(line);
    }
    lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

fn last_report(lines: &[Value]) -> &Value {
    lines
        .iter()
        .rev()
        .find(|l| l["type"] == "report")
        .expect("a report line")
}

#[test]
fn every_line_of_a_real_run_validates() {
    let _serial = serial();
    let redis = Redis::start();
    let mut held = Vec::new();
    let lines = run_agent(redis.port, &[], || {
        held = Client::many("127.0.0.2", redis.addr(), 3);
        for _ in 0..20 {
            let mut c = Client::connect("127.0.0.3", redis.addr());
            c.ping();
            c.close();
        }
        let mut reset = Client::connect("127.0.0.4", redis.addr());
        reset.ping();
        reset.reset();
    });
    let lines = check_every_line(&lines);
    // The default stream: every row first, then the rows that changed.
    let reports: Vec<&Value> = lines.iter().filter(|l| l["type"] == "report").collect();
    assert_eq!(reports[0]["clients_mode"], "full");
    assert!(
        reports
            .iter()
            .any(|r| r["clients_mode"] == "changed" && r["clients_omitted"].as_u64() > Some(0)),
        "no line left a row out"
    );
    // The figures below are what a reader rebuilds from it.
    let mut rebuilt = connwatch_tests::Rebuilt::default();
    let whole: Vec<Value> = reports.iter().map(|r| rebuilt.apply(r)).collect();
    let last = last_report(&whole);
    assert_eq!(last["redis"]["status"], "ok");
    assert_eq!(last["capacity"]["source"], "info");
    let row = |addr: &str| {
        last["clients"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["addr"] == addr))
            .unwrap_or_else(|| panic!("{addr} missing from {last}"))
            .clone()
    };
    let holder = row("127.0.0.2");
    assert_eq!(
        (holder["open"].clone(), holder["opened"].clone()),
        (json!(3), json!(3))
    );
    let churn = row("127.0.0.3");
    assert_eq!(
        (
            churn["opened"].clone(),
            churn["closed_by_client"].clone(),
            churn["open"].clone()
        ),
        (json!(20), json!(20), json!(0))
    );
    assert_eq!(row("127.0.0.4")["reset"], 1);
    drop(held);
}

#[test]
fn every_line_of_a_run_without_redis_validates() {
    let _serial = serial();
    let redis = Redis::start();
    let mut held = Vec::new();
    let lines = run_agent(redis.port, &["--no-redis", "--clients", "all"], || {
        held = Client::many("127.0.0.5", redis.addr(), 2);
    });
    let lines = check_every_line(&lines);
    // --clients all: every row in every report.
    for r in lines.iter().filter(|l| l["type"] == "report") {
        assert_eq!(r["clients_mode"], "full");
        assert_eq!(
            r["clients"].as_array().map(|c| c.len() as u64),
            r["totals"]["clients"].as_u64()
        );
    }
    let last = last_report(&lines);
    assert_eq!(
        last["redis"],
        json!({"status": "disabled", "config": "unknown"})
    );
    assert_eq!(last["capacity"]["source"], "kernel");
    assert_eq!(last["capacity"]["used"], 2);
    drop(held);
}
