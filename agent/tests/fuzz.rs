//! Property tests of the code that reads untrusted input: the INFO parser (what a
//! Redis server, or something pretending to be one, sends; the RESP framing itself is
//! the `redis` crate's), and the capture reader (a file that may be cut short, damaged or not a capture).
//!
//! Each property is checked against an exact oracle, not only "does not panic":
//! what a parser accepts, what it returns and where it stops are stated here again,
//! independently of the implementation. Memory is measured, not assumed: a
//! per-thread counting allocator records the peak of live bytes during one call,
//! so a length announced by the input can never become an allocation.
//!
//! Case counts keep the whole file under a few seconds in a debug build.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use connwatch::model::{
    Activity, Clock, CloseKind, ConfigStatus, ConnKey, Event, HostSnapshot, InfoFields,
    KernelCounters, RedisConfig, RedisSnapshot, RedisStatus, normalize,
};
use connwatch::source::capture::{self, Header, ReadError, Reader, Writer};
use connwatch::source::redis::parse_info;
use flate2::Compression;
use flate2::write::GzEncoder;
use proptest::prelude::*;
use proptest::sample::Index;

// ---------------------------------------------------------------------------
// A counting allocator: the peak of live bytes on this thread during one call
// ---------------------------------------------------------------------------

struct Counting;

thread_local! {
    // Const-initialised and without a destructor: reading them never allocates.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn grew(bytes: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add_unsigned(bytes);
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn shrank(bytes: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub_unsigned(bytes)));
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counters
// are plain thread-local cells that never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is the system allocator's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with `layout`; the caller guarantees the rest.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the most bytes it held live at once
/// (including what the result itself holds).
fn peak_bytes<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    let out = f();
    let peak = PEAK.with(Cell::get);
    (out, usize::try_from(peak).unwrap_or(0))
}

// ---------------------------------------------------------------------------
// INFO
// ---------------------------------------------------------------------------

/// What `parse_info` promises to accept: some line, once its CR is removed, that is
/// not empty, not a `#` comment, and has a non-empty `[A-Za-z0-9_.-]` key before
/// its first `:`.
fn has_field_line(text: &str) -> bool {
    text.split('\n').any(|raw| {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        !line.starts_with('#')
            && line.split_once(':').is_some_and(|(key, _)| {
                !key.is_empty()
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
            })
    })
}

/// The value of the last line with this exact key (later lines win), trimmed.
fn last_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.split('\n').rev().find_map(|raw| {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        line.split_once(':')
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.trim())
    })
}

const COUNT_KEYS: [&str; 9] = [
    "connected_clients",
    "blocked_clients",
    "maxclients",
    "cluster_connections",
    "connected_slaves",
    "rejected_connections",
    "total_connections_received",
    "mem_clients_normal",
    "client_output_buffer_limit_disconnections",
];

fn count_field(f: &InfoFields, key: &str) -> Option<u64> {
    match key {
        "connected_clients" => f.connected_clients,
        "blocked_clients" => f.blocked_clients,
        "maxclients" => f.maxclients,
        "cluster_connections" => f.cluster_connections,
        "connected_slaves" => f.connected_slaves,
        "rejected_connections" => f.rejected_connections,
        "total_connections_received" => f.total_connections_received,
        "mem_clients_normal" => f.mem_clients_normal,
        "client_output_buffer_limit_disconnections" => f.client_output_buffer_limit_disconnections,
        _ => unreachable!("not a count key: {key}"),
    }
}

/// Checks `parse_info(text)` against the oracle: accepted exactly when a field line
/// exists (else the error quotes the first 40 characters), and every integer field
/// is the last line of its key, parsed.
fn check_info(text: &str) -> Result<(), TestCaseError> {
    let start = Instant::now();
    let parsed = parse_info(text);
    let took = start.elapsed();
    prop_assert!(
        took < Duration::from_secs(1),
        "{} bytes took {took:?}",
        text.len()
    );
    if !has_field_line(text) {
        let err = parsed.expect_err("no field line, yet accepted");
        prop_assert_eq!(err.start, text.chars().take(40).collect::<String>());
        return Ok(());
    }
    let fields = match parsed {
        Ok(f) => f,
        Err(e) => return Err(TestCaseError::fail(format!("rejected: {e}"))),
    };
    for key in COUNT_KEYS {
        let want = last_value(text, key).and_then(|v| v.parse::<u64>().ok());
        prop_assert_eq!(count_field(&fields, key), want, "{}", key);
    }
    let pid = last_value(text, "process_id").and_then(|v| v.parse::<u32>().ok());
    prop_assert_eq!(fields.process_id, pid);
    let port = last_value(text, "tcp_port").and_then(|v| v.parse::<u16>().ok());
    prop_assert_eq!(fields.tcp_port, port);
    let cluster = last_value(text, "cluster_enabled").and_then(|v| match v {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    });
    prop_assert_eq!(fields.cluster_enabled, cluster);
    Ok(())
}

/// An INFO reply as Redis 7.2 sends it for the five sections the agent asks for.
const REAL_INFO: &str = "# Server\r\n\
redis_version:7.2.4\r\nredis_git_sha1:00000000\r\nredis_mode:standalone\r\n\
os:Linux 6.1.0-18-amd64 x86_64\r\nprocess_id:4242\r\ntcp_port:6379\r\n\
uptime_in_seconds:86400\r\nexecutable:/usr/bin/redis-server\r\n\r\n\
# Clients\r\nconnected_clients:9876\r\ncluster_connections:0\r\nmaxclients:10000\r\n\
client_recent_max_input_buffer:20480\r\nblocked_clients:3\r\ntracking_clients:0\r\n\r\n\
# Stats\r\ntotal_connections_received:1234567\r\ntotal_commands_processed:99999999\r\n\
rejected_connections:4321\r\nsync_full:1\r\n\r\n\
# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
slave0:ip=10.0.0.2,port=6380,state=online,offset=123,lag=0\r\n\
slave1:ip=::1,port=6381,state=online,offset=123,lag=1\r\n\
master_repl_offset:123\r\n\r\n\
# Cluster\r\ncluster_enabled:0\r\n";

/// Fragments real INFO texts are made of, to build texts that look like INFO.
const INFO_PIECES: &[&str] = &[
    "connected_clients",
    "maxclients",
    "rejected_connections",
    "total_connections_received",
    "process_id",
    "tcp_port",
    "cluster_enabled",
    "slave0",
    "redis_version",
    "role",
    ":",
    "::",
    "\r\n",
    "\n",
    "\r",
    "# Clients",
    "0",
    "1",
    "42",
    "-1",
    "+7",
    "18446744073709551615",
    "18446744073709551616",
    "65536",
    " ",
    "\t",
    "ip=10.0.0.2,port=6380",
    "ip=::ffff:1.2.3.4,port=1",
    ",",
    "=",
    "é",
    "\u{0}",
];

#[derive(Clone, Debug)]
enum Mutation {
    /// Removes up to `len` bytes at a position.
    Delete(Index, usize),
    /// Inserts bytes at a position.
    Insert(Index, Vec<u8>),
    /// XORs one byte with a non-zero mask.
    Flip(Index, u8),
    /// Cuts the text at a position.
    Truncate(Index),
    /// Repeats a range of the text at its end.
    Repeat(Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1..40usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (
            any::<Index>(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..12),
                prop::sample::select(INFO_PIECES).prop_map(|s| s.as_bytes().to_vec()),
            ]
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<Index>(), 1..=255u8).prop_map(|(i, m)| Mutation::Flip(i, m)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), 1..200usize).prop_map(|(i, n)| Mutation::Repeat(i, n)),
    ]
}

fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for m in mutations {
        let at = |i: &Index, bytes: &Vec<u8>| i.index(bytes.len() + 1);
        match m {
            Mutation::Delete(i, n) => {
                let a = at(i, &bytes);
                let b = (a + n).min(bytes.len());
                bytes.drain(a..b);
            }
            Mutation::Insert(i, ins) => {
                let a = at(i, &bytes);
                bytes.splice(a..a, ins.iter().copied());
            }
            Mutation::Flip(i, mask) if !bytes.is_empty() => {
                let a = i.index(bytes.len());
                bytes[a] ^= mask;
            }
            Mutation::Flip(..) => {}
            Mutation::Truncate(i) => {
                let a = at(i, &bytes);
                bytes.truncate(a);
            }
            Mutation::Repeat(i, n) => {
                let a = at(i, &bytes);
                let b = (a + n).min(bytes.len());
                let piece = bytes[a..b].to_vec();
                bytes.extend_from_slice(&piece);
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// One line of a generated INFO text.
#[derive(Clone, Debug)]
enum InfoLine {
    Count(&'static str, u64),
    Pid(u32),
    Port(u16),
    Cluster(bool),
    Role(&'static str),
    Version(String),
    Replica(SocketAddr),
    /// A key connwatch does not read.
    Other(String, String),
    Comment(String),
    Blank,
    /// A line without a colon: ignored.
    NoColon(String),
}

impl InfoLine {
    fn text(&self) -> String {
        match self {
            InfoLine::Count(k, v) => format!("{k}:{v}"),
            InfoLine::Pid(v) => format!("process_id:{v}"),
            InfoLine::Port(v) => format!("tcp_port:{v}"),
            InfoLine::Cluster(v) => format!("cluster_enabled:{}", u8::from(*v)),
            InfoLine::Role(r) => format!("role:{r}"),
            InfoLine::Version(v) => format!("redis_version:{v}"),
            InfoLine::Replica(a) => format!(
                "slave{}:ip={},port={},state=online,offset=987,lag=0",
                a.port() % 7,
                a.ip(),
                a.port()
            ),
            InfoLine::Other(k, v) => format!("x_{k}:{v}"),
            InfoLine::Comment(c) => format!("# {c}"),
            InfoLine::Blank => String::new(),
            InfoLine::NoColon(s) => s.clone(),
        }
    }
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<u32>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<u128>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
        // IPv4-mapped IPv6, which the agent reports as IPv4.
        (any::<u32>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(
            IpAddr::V6(Ipv4Addr::from(ip).to_ipv6_mapped()),
            port
        )),
    ]
}

fn info_line() -> impl Strategy<Value = InfoLine> {
    prop_oneof![
        4 => (prop::sample::select(COUNT_KEYS.to_vec()), any::<u64>())
            .prop_map(|(k, v)| InfoLine::Count(k, v)),
        1 => any::<u32>().prop_map(InfoLine::Pid),
        1 => any::<u16>().prop_map(InfoLine::Port),
        1 => any::<bool>().prop_map(InfoLine::Cluster),
        1 => prop::sample::select(vec!["master", "slave"]).prop_map(InfoLine::Role),
        1 => "[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,3}".prop_map(InfoLine::Version),
        2 => socket_addr().prop_map(InfoLine::Replica),
        2 => ("[a-z_]{1,12}", "[ -~]{0,20}").prop_map(|(k, v)| InfoLine::Other(k, v)),
        1 => "[A-Za-z ]{0,12}".prop_map(InfoLine::Comment),
        1 => Just(InfoLine::Blank),
        1 => "[a-z _]{1,12}".prop_map(InfoLine::NoColon),
    ]
}

/// The fields `lines` must parse to (later lines win), or `None` when no line is a
/// field line.
fn expected_fields(lines: &[InfoLine]) -> Option<InfoFields> {
    let mut f = InfoFields::default();
    let mut any = false;
    for line in lines {
        any |= !matches!(
            line,
            InfoLine::Comment(_) | InfoLine::Blank | InfoLine::NoColon(_)
        );
        match line {
            InfoLine::Count(k, v) => {
                let slot = match *k {
                    "connected_clients" => &mut f.connected_clients,
                    "blocked_clients" => &mut f.blocked_clients,
                    "maxclients" => &mut f.maxclients,
                    "cluster_connections" => &mut f.cluster_connections,
                    "connected_slaves" => &mut f.connected_slaves,
                    "rejected_connections" => &mut f.rejected_connections,
                    "mem_clients_normal" => &mut f.mem_clients_normal,
                    "client_output_buffer_limit_disconnections" => {
                        &mut f.client_output_buffer_limit_disconnections
                    }
                    _ => &mut f.total_connections_received,
                };
                *slot = Some(*v);
            }
            InfoLine::Pid(v) => f.process_id = Some(*v),
            InfoLine::Port(v) => f.tcp_port = Some(*v),
            InfoLine::Cluster(v) => f.cluster_enabled = Some(*v),
            InfoLine::Role(r) => f.role = Some((*r).to_owned()),
            InfoLine::Version(v) => {
                f.version = Some(v.clone());
                f.server = Some("redis".to_owned());
            }
            InfoLine::Replica(a) => f.replicas.push(normalize(*a)),
            InfoLine::Other(..) | InfoLine::Comment(_) | InfoLine::Blank | InfoLine::NoColon(_) => {
            }
        }
    }
    any.then_some(f)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn info_on_arbitrary_strings_matches_the_oracle(text in any::<String>()) {
        check_info(&text)?;
    }

    #[test]
    fn info_on_info_like_strings_matches_the_oracle(
        pieces in prop::collection::vec(prop::sample::select(INFO_PIECES), 0..60),
    ) {
        check_info(&pieces.concat())?;
    }

    #[test]
    fn info_on_mutated_real_replies_matches_the_oracle(
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        check_info(&mutate(REAL_INFO, &mutations))?;
    }

    #[test]
    fn info_fields_round_trip(
        lines in prop::collection::vec(info_line(), 0..40),
        crlf in any::<bool>(),
        pad in prop::sample::select(vec!["", " ", "\t", " \t "]),
    ) {
        let eol = if crlf { "\r\n" } else { "\n" };
        let text: String = lines
            .iter()
            .map(|l| {
                let t = l.text();
                // Blanks around a value are trimmed; comments stay as they are.
                match (l, t.split_once(':')) {
                    (InfoLine::Comment(_), _) | (_, None) => t + eol,
                    (_, Some((k, v))) => format!("{k}:{pad}{v}{pad}{eol}"),
                }
            })
            .collect();
        match expected_fields(&lines) {
            Some(want) => prop_assert_eq!(parse_info(&text).expect("accepted"), want),
            None => prop_assert!(parse_info(&text).is_err(), "{:?}", text),
        }
    }
}

#[test]
fn info_parses_the_real_reply_exactly() {
    let f = parse_info(REAL_INFO).unwrap();
    assert_eq!(
        f,
        InfoFields {
            version: Some("7.2.4".into()),
            server: Some("redis".into()),
            process_id: Some(4242),
            tcp_port: Some(6379),
            role: Some("master".into()),
            connected_clients: Some(9876),
            blocked_clients: Some(3),
            maxclients: Some(10000),
            cluster_connections: Some(0),
            connected_slaves: Some(2),
            rejected_connections: Some(4321),
            total_connections_received: Some(1_234_567),
            cluster_enabled: Some(false),
            master_link_up: None,
            mem_clients_normal: None,
            client_output_buffer_limit_disconnections: None,
            replicas: vec![
                "10.0.0.2:6380".parse().unwrap(),
                "[::1]:6381".parse().unwrap()
            ],
        }
    );
}

#[test]
fn info_on_megabytes_is_linear() {
    // One 1 MiB line, 1 MiB of colons, a quarter million short lines: each well
    // under a second in a debug build.
    let texts = [
        "a".repeat(1 << 20),
        ":".repeat(1 << 20),
        "connected_clients:".to_owned() + &"9".repeat(1 << 20),
        "x:1\r\n".repeat(1 << 18),
        "\n".repeat(1 << 20),
    ];
    for text in &texts {
        let start = Instant::now();
        let parsed = parse_info(text);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(parsed.is_ok(), has_field_line(text));
    }
    let f = parse_info(&texts[2]).unwrap();
    assert_eq!(
        f.connected_clients, None,
        "a value beyond u64 is unknown, not 0"
    );
}

// ---------------------------------------------------------------------------
// Capture files
// ---------------------------------------------------------------------------

fn temp_path(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!(
        "connwatch-fuzz-{tag}-{}-{n}.cwcap",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    path
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn header() -> Header {
    Header::new(vec![6379], &Clock::now(), Duration::from_millis(200), false)
}

/// Reads events until the end or the first error; never more than `cap` (a reader
/// that does not stop would fail the test instead of hanging it).
fn read_all(r: &mut Reader, cap: usize) -> (Vec<Event>, Option<ReadError>) {
    let mut out = Vec::new();
    while out.len() <= cap {
        match r.next_event() {
            Ok(Some(ev)) => out.push(ev),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
    panic!("more than {cap} events");
}

fn reader(bytes: Vec<u8>) -> anyhow::Result<Reader> {
    Reader::from_read(Box::new(io::Cursor::new(bytes)), false)
}

fn conn_key() -> impl Strategy<Value = ConnKey> {
    (
        prop::sample::select(vec!["127.0.0.1:6379", "[::1]:6379", "10.1.2.3:6380"]),
        socket_addr(),
    )
        .prop_map(|(local, remote)| ConnKey {
            netns: 0,
            local: local.parse().unwrap(),
            remote,
        })
}

fn activity() -> impl Strategy<Value = Activity> {
    (any::<u64>(), any::<u64>(), any::<Option<u64>>()).prop_map(|(i, o, l)| Activity {
        bytes_in: i,
        bytes_out: o,
        last_active: l,
        queued: None,
    })
}

fn redis_snapshot() -> impl Strategy<Value = RedisSnapshot> {
    let status = prop::sample::select(RedisStatus::ALL.to_vec());
    let info = (
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        prop::collection::vec(socket_addr(), 0..3),
        any::<Option<String>>(),
    )
        .prop_map(
            |(clients, maxclients, rejected, replicas, version)| InfoFields {
                version,
                connected_clients: clients,
                maxclients,
                rejected_connections: rejected,
                replicas,
                ..InfoFields::default()
            },
        );
    (
        status,
        any::<Option<String>>(),
        proptest::option::of(info),
        any::<(Option<u64>, Option<u64>, Option<u16>)>(),
        proptest::option::of(socket_addr()),
    )
        .prop_map(
            |(status, error, info, (maxclients, timeout, tls_port), own)| RedisSnapshot {
                status,
                error,
                config_status: ConfigStatus::Ok,
                info,
                config: Some(RedisConfig {
                    maxclients,
                    timeout,
                    tls_port,
                }),
                own_addr: own,
                target: Some("127.0.0.1:6379".parse().unwrap()),
            },
        )
}

fn event() -> impl Strategy<Value = Event> {
    let how = prop::sample::select(vec![CloseKind::Server, CloseKind::Client, CloseKind::Reset]);
    prop_oneof![
        3 => (any::<u64>(), conn_key()).prop_map(|(ts, key)| Event::Opened { ts, key }),
        3 => (any::<u64>(), conn_key(), how, proptest::option::of(activity()))
            .prop_map(|(ts, key, how, activity)| Event::Closed { ts, key, how, activity }),
        1 => (any::<u64>(), conn_key(), activity())
            .prop_map(|(ts, key, activity)| Event::Seeded { ts, key, activity }),
        1 => (
            any::<u64>(),
            prop::collection::vec((conn_key(), activity()), 0..4),
            prop::collection::vec(conn_key(), 0..3),
        )
            .prop_map(|(ts, conns, gone)| Event::Activity { ts, conns, gone }),
        2 => (any::<u64>(), conn_key()).prop_map(|(ts, key)| Event::Refused { ts, key }),
        1 => (any::<u64>(), redis_snapshot())
            .prop_map(|(ts, s)| Event::Redis { ts, snapshot: Box::new(s), instance: None }),
        1 => (any::<u64>(), any::<Option<u32>>(), any::<Option<(u64, u64)>>()).prop_map(
            |(ts, pid, accept_queue)| Event::Host {
                ts,
                snapshot: Box::new(HostSnapshot { pid, accept_queue, ..HostSnapshot::default() }),
            }
        ),
        1 => (any::<u64>(), any::<u64>(), prop::collection::vec(any::<(i32, u64)>(), 0..3))
            .prop_map(|(ts, lost, accept_errors)| Event::Counters {
                ts,
                counters: KernelCounters {
                    lost_events: lost,
                    accept_errors,
                    ..KernelCounters::default()
                },
            }),
        2 => any::<u64>().prop_map(|ts| Event::Tick { ts }),
    ]
}

/// A capture as `connwatch capture` writes it, with where its flush points are:
/// `(compressed bytes in the file, events before that point)` after every tick.
struct Written {
    bytes: Vec<u8>,
    events: Vec<Event>,
    flushed: Vec<(u64, usize)>,
}

fn write_capture(events: &[Event]) -> Written {
    let path = temp_path("write");
    let mut w = Writer::create(&path, &header()).unwrap();
    let mut flushed = Vec::new();
    for (i, ev) in events.iter().enumerate() {
        w.write(ev).unwrap();
        if matches!(ev, Event::Tick { .. }) {
            flushed.push((w.bytes(), i + 1));
        }
    }
    w.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    Written {
        bytes,
        events: events.to_vec(),
        flushed,
    }
}

impl Written {
    /// How many events the file holds whole in its first `n` bytes (all flushed
    /// before byte `n`).
    fn events_within(&self, n: usize) -> usize {
        self.flushed
            .iter()
            .take_while(|(bytes, _)| *bytes <= n as u64)
            .last()
            .map_or(0, |(_, events)| *events)
    }

    /// Whether the header line is whole in the first `n` bytes.
    fn header_within(&self, n: usize) -> bool {
        self.flushed.first().is_some_and(|(b, _)| *b <= n as u64)
    }
}

/// A stream of events with a tick every few events, as a live run writes.
fn event_stream() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec((prop::collection::vec(event(), 0..6), any::<u64>()), 1..12).prop_map(
        |chunks| {
            chunks
                .into_iter()
                .flat_map(|(mut evs, ts)| {
                    evs.push(Event::Tick { ts });
                    evs
                })
                .collect()
        },
    )
}

/// What a reader must make of `header line + body` (decompressed): the events of
/// the whole lines that parse, up to the first line that does not (1-based line
/// number, offset, and whether the reason is a cut).
fn expected_reading(header_len: usize, body: &str) -> (Vec<Event>, Option<(u64, u64, bool)>) {
    let mut events = Vec::new();
    let mut offset = header_len as u64;
    for (i, piece) in body.split_inclusive('\n').enumerate() {
        let line_no = i as u64 + 2;
        if !piece.ends_with('\n') {
            return (events, Some((line_no, offset, true)));
        }
        match serde_json::from_str::<Event>(piece) {
            Ok(ev) => events.push(ev),
            Err(_) => return (events, Some((line_no, offset, false))),
        }
        offset += piece.len() as u64;
    }
    (events, None)
}

/// A body line: an event as JSON, the same damaged, or any text.
fn body_line() -> impl Strategy<Value = String> {
    let json = || event().prop_map(|ev| serde_json::to_string(&ev).unwrap());
    prop_oneof![
        4 => json(),
        2 => (json(), any::<Index>(), "[ -~]{0,3}").prop_map(|(j, i, ins)| {
            let mut j = j.into_bytes();
            let at = i.index(j.len() + 1);
            j.splice(at..(at + 1).min(j.len()), ins.into_bytes());
            String::from_utf8_lossy(&j).into_owned()
        }),
        1 => "[^\n]{0,40}",
        1 => Just(String::new()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn capture_reader_on_arbitrary_bytes_is_an_error_not_a_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        gz_magic in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if gz_magic {
            bytes.splice(0..0, [0x1f, 0x8b]);
        }
        let starts_gzip = bytes.starts_with(&[0x1f, 0x8b]);
        match reader(bytes) {
            Ok(mut r) => {
                prop_assert!(starts_gzip);
                let _ = read_all(&mut r, 10_000);
            }
            Err(e) => {
                if !starts_gzip {
                    prop_assert!(e.to_string().starts_with("no gzip header"), "{e}");
                }
            }
        }
    }

    #[test]
    fn capture_reader_on_gzipped_arbitrary_text_opens_only_with_a_header(
        text in any::<String>(),
        raw in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        for bytes in [text.as_bytes(), raw.as_slice()] {
            let first = bytes.iter().position(|&b| b == b'\n').map(|i| &bytes[..=i]);
            let valid = first
                .and_then(|l| serde_json::from_slice::<Header>(l).ok())
                .is_some_and(|h| h.format == capture::FORMAT && h.version == capture::VERSION);
            match reader(gzip(bytes)) {
                Ok(mut r) => {
                    prop_assert!(valid);
                    let _ = read_all(&mut r, 10_000);
                }
                Err(_) => prop_assert!(!valid),
            }
        }
    }

    #[test]
    fn capture_reader_reads_every_good_line_and_stops_at_the_first_bad_one(
        lines in prop::collection::vec(body_line(), 0..30),
        last_newline in any::<bool>(),
    ) {
        let head = serde_json::to_string(&header()).unwrap() + "\n";
        let mut body = lines.join("\n");
        if last_newline && !lines.is_empty() {
            body.push('\n');
        }
        let (want, want_err) = expected_reading(head.len(), &body);
        let mut r = reader(gzip((head + &body).as_bytes())).expect("a valid header");
        let (got, err) = read_all(&mut r, 10_000);
        prop_assert_eq!(got, want);
        match (err, want_err) {
            (None, None) => {}
            (Some(e), Some((line, offset, cut))) => {
                prop_assert_eq!((e.line, e.offset), (line, offset));
                if cut {
                    prop_assert_eq!(e.reason, "the file ends in the middle of a record (cut short)");
                } else {
                    prop_assert!(e.reason.starts_with("not an event: "), "{}", e.reason);
                }
            }
            (e, w) => prop_assert!(false, "error {:?}, expected {:?}", e, w),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(80))]

    #[test]
    fn capture_cut_short_reads_the_written_prefix_up_to_its_last_flush(
        events in event_stream(),
        cuts in prop::collection::vec(any::<Index>(), 1..8),
    ) {
        let w = write_capture(&events);
        // The whole file reads back exactly.
        let mut r = reader(w.bytes.clone()).expect("the whole capture opens");
        prop_assert_eq!(read_all(&mut r, events.len()), (events.clone(), None));

        for cut in cuts.iter().map(|c| c.index(w.bytes.len())) {
            let opened = reader(w.bytes[..cut].to_vec());
            let Ok(mut r) = opened else {
                prop_assert!(!w.header_within(cut), "header flushed, yet unreadable at {cut}");
                continue;
            };
            let (got, err) = read_all(&mut r, events.len());
            prop_assert_eq!(&got[..], &w.events[..got.len()], "cut at {}", cut);
            prop_assert!(got.len() >= w.events_within(cut), "cut at {cut}: lost flushed events");
            let err = err.expect("a file cut short must not read as complete");
            prop_assert!(err.line >= 2, "{err}");
        }
    }

    #[test]
    fn capture_with_a_flipped_byte_reads_the_written_prefix_before_the_damage(
        events in event_stream(),
        flips in prop::collection::vec((any::<Index>(), 1..=255u8), 1..8),
    ) {
        let w = write_capture(&events);
        for (at, mask) in flips {
            let at = at.index(w.bytes.len());
            let mut bytes = w.bytes.clone();
            bytes[at] ^= mask;
            let Ok(mut r) = reader(bytes) else { continue };
            let (got, err) = read_all(&mut r, 100_000);
            // Everything flushed before the damaged byte decodes as written.
            let sound = w.events_within(at).min(got.len());
            prop_assert_eq!(&got[..sound], &w.events[..sound], "flip at {}", at);
            // The damage is noticed (the gzip CRC at the latest), unless it hit bits
            // that mean nothing (the gzip header's time stamp, padding).
            if err.is_none() {
                prop_assert_eq!(&got, &w.events, "flip at {} went unnoticed", at);
            }
        }
    }
}

#[test]
fn capture_line_longer_than_a_mebibyte_stops_the_reader() {
    let head = serde_json::to_string(&header()).unwrap() + "\n";
    let tick = "{\"ev\":\"tick\",\"ts\":7}\n";
    let text = format!("{head}{tick}{}\n{tick}", "x".repeat(3 << 20));
    let mut r = reader(gzip(text.as_bytes())).unwrap();
    let (got, err) = peak_bytes(|| read_all(&mut r, 10)).0;
    assert_eq!(got, vec![Event::Tick { ts: 7 }]);
    let err = err.unwrap();
    assert_eq!(
        (err.line, err.offset, err.reason.as_str()),
        (
            3,
            (head.len() + tick.len()) as u64,
            "a line longer than 1 MiB"
        )
    );
    // It held at most the limit and a buffer's worth, not the 3 MiB line.
    let compressed = gzip(text.as_bytes());
    let (_, peak) = peak_bytes(|| {
        let mut r = reader(compressed).unwrap();
        read_all(&mut r, 10)
    });
    assert!(peak < 3 << 20, "{peak} bytes");
}
