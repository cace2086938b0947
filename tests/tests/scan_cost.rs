//! What the interval's sock_diag scan costs, against what else the host holds.
//!
//! In a network namespace of its own: a listener with 200 connections (what the
//! agent tracks), then tens of thousands of TIME_WAIT sockets, made as a load
//! generator leaves them (the client closes first; each from its own source
//! address and port, so none is reused). The scan by exact lookups
//! (`lookup_connections`, what the live loop runs) must stay flat; the dump it
//! replaced (`open_connections`) walks every socket of the kernel's established
//! hash, the TIME_WAIT ones included, and grows.
//!
//! `scan_cost_table` (ignored; `cargo xtask bench` runs it) prints the figures of
//! `docs/PERFORMANCE.md`'s section as `scan_cost …` lines.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use connwatch::model::{ConnKey, monotonic_now};
use connwatch::source::netns::Netns;
use connwatch::source::sock_diag::{lookup_connections, open_connections};
use connwatch_tests::*;
use socket2::{Domain, Socket, Type};

/// The connections the agent tracks in the asserting test.
const TRACKED: usize = 200;
/// Scans timed per figure (the median is reported).
const ROUNDS: usize = 21;
/// TIME_WAIT sockets per source address (ports 10000…).
const PER_SOURCE: usize = 50_000;

/// The server's and the client's end of each connection to one listener, made in
/// the calling thread's namespace.
struct Tracked {
    _listener: TcpListener,
    port: u16,
    conns: Vec<(TcpStream, TcpStream)>,
}

impl Tracked {
    fn new(n: usize) -> Tracked {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let conns = (0..n)
            .map(|_| {
                let client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                let (server, _) = listener.accept().expect("accept");
                (server, client)
            })
            .collect();
        Tracked {
            _listener: listener,
            port,
            conns,
        }
    }

    fn keys(&self, netns: u32) -> Vec<ConnKey> {
        let mut keys: Vec<ConnKey> = self
            .conns
            .iter()
            .map(|(s, c)| {
                ConnKey::in_netns(
                    netns,
                    s.local_addr().expect("addr"),
                    c.local_addr().expect("addr"),
                )
            })
            .collect();
        keys.sort();
        keys
    }
}

/// Makes TIME_WAIT sockets number `from`…`to` - 1 in the calling thread's
/// namespace: each client (127.1.k.1, port 10000 + i) connects to a throwaway
/// listener and closes first. Returns how many were made.
fn time_wait(from: usize, to: usize) -> usize {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let to_addr = listener.local_addr().expect("addr");
    let mut made = 0;
    for i in from..to {
        let source = SocketAddrV4::new(
            Ipv4Addr::new(127, 1, (i / PER_SOURCE) as u8, 1),
            10_000 + (i % PER_SOURCE) as u16,
        );
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        if socket.bind(&SocketAddr::V4(source).into()).is_err()
            || socket.connect(&to_addr.into()).is_err()
        {
            continue;
        }
        let client: TcpStream = socket.into();
        let (server, _) = listener.accept().expect("accept");
        drop(client);
        drop(server);
        made += 1;
    }
    made
}

/// TIME_WAIT sockets of the calling thread's namespace (`tw` of its sockstat).
fn time_wait_count() -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/net/sockstat").expect("sockstat");
    text.lines()
        .find_map(|l| l.strip_prefix("TCP: "))
        .and_then(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "tw")?;
            words.get(at + 1)?.parse().ok()
        })
        .expect("TCP tw in sockstat")
}

/// One row of the table: the median time of one scan each way.
#[derive(Debug)]
struct Cost {
    time_wait: u64,
    tracked: usize,
    dump_us: f64,
    lookup_us: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `ROUNDS` scans each way of the connections `keys` to
/// `port` in namespace `ns`, checking that both find every one.
///
/// The scans run on a thread inside the namespace, which makes the sock_diag
/// socket there directly, as for the agent's home instance. (For another
/// instance the agent enters its namespace to make the socket, which costs 1–3 ms
/// of `setns` either way.)
fn cost(ns: &NetNs, port: u16, keys: &[ConnKey]) -> Cost {
    let inode = Netns::open(&ns.path()).expect("open the namespace").inode();
    in_netns(&ns.path(), || {
        // The thread's own namespace: sockets are made here, without entering.
        let here = Netns::own().expect("own namespace");
        // Each way in its own block: a dump walks (and pulls into the caches) every
        // socket of the hash, which would slow a lookup timed right after it.
        let mut lookup = Vec::new();
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let found =
                lookup_connections(&here, inode, &[port], keys, monotonic_now()).expect("lookups");
            lookup.push(t.elapsed().as_secs_f64() * 1e6);
            assert_eq!(found.conns.len(), keys.len(), "the lookups find every one");
            assert_eq!(found.answered, keys);
        }
        let mut dump = Vec::new();
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let scan = open_connections(&here, inode, &[port], monotonic_now()).expect("dump");
            dump.push(t.elapsed().as_secs_f64() * 1e6);
            assert_eq!(scan.len(), keys.len(), "the dump finds every connection");
        }
        Cost {
            time_wait: time_wait_count(),
            tracked: keys.len(),
            dump_us: median(dump),
            lookup_us: median(lookup),
        }
    })
}

fn say(c: &Cost) {
    eprintln!(
        "scan_cost time_wait={} tracked={} dump_us={:.0} lookup_us={:.0}",
        c.time_wait, c.tracked, c.dump_us, c.lookup_us
    );
}

/// The TIME_WAIT sockets of the host's own namespace (the dump walks them too:
/// the established hash is shared by every namespace).
fn host_time_wait() -> u64 {
    std::thread::scope(|s| s.spawn(time_wait_count).join().expect("thread"))
}

#[test]
fn the_scan_by_lookups_stays_flat_while_the_dump_grows_with_time_wait_sockets() {
    let _serial = serial();
    // The suites before this one leave up to 100k TIME_WAIT sockets in the host's
    // share of the hash; they expire 60 s after they were made. Wait for them (at
    // most 65 s), so the hash holds mostly this test's sockets.
    let drained = Instant::now() + Duration::from_secs(65);
    while host_time_wait() > 5_000 && Instant::now() < drained {
        std::thread::sleep(Duration::from_millis(500));
    }
    let ns = NetNs::new("scan");
    let netns = Netns::open(&ns.path()).expect("open the namespace");
    let tracked = in_netns(&ns.path(), || Tracked::new(TRACKED));
    let keys = tracked.keys(netns.inode());
    let host_before = host_time_wait();
    let before = cost(&ns, tracked.port, &keys);
    say(&before);

    let t = Instant::now();
    let made = in_netns(&ns.path(), || time_wait(0, PER_SOURCE));
    let count = in_netns(&ns.path(), time_wait_count);
    let host_after = host_time_wait();
    eprintln!(
        "made {made} TIME_WAIT sockets in {:?}; the namespace holds {count}, the host's own {host_before} -> {host_after}",
        t.elapsed(),
    );
    assert_eq!((made, count), (PER_SOURCE, PER_SOURCE as u64));
    assert!(
        t.elapsed() < Duration::from_secs(50),
        "they expire after 60 s"
    );
    let after = cost(&ns, tracked.port, &keys);
    say(&after);
    // The host's own may expire while the second measurement runs: a burst left by
    // an earlier test expires all at once, 60 s after it was made.
    let host_end = host_time_wait();

    // Flat: 50,000 more sockets in the namespace cost the lookups next to nothing
    // (a hash chain a little longer)…
    assert!(
        after.lookup_us < 1.5 * before.lookup_us + 300.0,
        "lookups grew: {before:?} → {after:?}"
    );
    // …while the dump walks each socket of the shared hash, the host's own
    // TIME_WAIT ones included. Earlier tests leave tens of thousands there, which
    // expire while this one runs (CI saw 100k+ fall to 65k; here 88k fell while
    // the second dump was measured), so growth is asked for only when the hash as
    // a whole, at its smallest during the second measurement, grew by half the
    // namespace's sockets.
    // And only when the test's own sockets are most of the hash: behind 100k of
    // the host's (the suites before this one leave that many) the dump's time
    // moved by 0.5 ms for 50k more, within its noise.
    let host_least = host_after.min(host_end);
    let grown = (host_least + PER_SOURCE as u64) as i64 - host_before as i64;
    if grown >= (PER_SOURCE / 2) as i64 && host_least <= PER_SOURCE as u64 {
        assert!(
            after.dump_us > before.dump_us + 500.0,
            "the dump did not grow with {grown} more sockets in the hash: {before:?} → {after:?}"
        );
    } else {
        eprintln!(
            "the hash grew by {grown} sockets, the host's own at least {host_least}: the dump's growth is not judged"
        );
    }
    assert!(after.dump_us > 2.0 * after.lookup_us, "{after:?}");
}

/// The figures of docs/PERFORMANCE.md's "scan time vs TIME_WAIT count": 200
/// tracked connections at 0, 50,000 and 100,000 TIME_WAIT sockets, and 2,000 and
/// 8,000 tracked connections with none (as many as the open-file limit allows).
#[test]
#[ignore = "a measurement: cargo xtask bench runs it"]
fn scan_cost_table() {
    let _serial = serial();
    // Many tracked connections first, each level in a fresh namespace with no
    // TIME_WAIT socket (before the namespace with 100,000 of them is torn down in
    // the background). Two descriptors per connection: both ends are ours.
    let room = (raise_nofile().saturating_sub(100) / 2) as usize;
    let mut many = Vec::new();
    for n in [2_000, 8_000].into_iter().filter(|n| *n <= room) {
        let fresh = NetNs::new("scanmany");
        let inode = Netns::open(&fresh.path())
            .expect("open the namespace")
            .inode();
        let tracked = in_netns(&fresh.path(), || Tracked::new(n));
        many.push(cost(&fresh, tracked.port, &tracked.keys(inode)));
    }
    let ns = NetNs::new("scantable");
    let netns = Netns::open(&ns.path()).expect("open the namespace");
    let tracked = in_netns(&ns.path(), || Tracked::new(TRACKED));
    let keys = tracked.keys(netns.inode());
    for level in 0..3 {
        if level > 0 {
            let (from, to) = ((level - 1) * PER_SOURCE, level * PER_SOURCE);
            in_netns(&ns.path(), || time_wait(from, to));
        }
        say(&cost(&ns, tracked.port, &keys));
    }
    eprintln!("scan_cost host_time_wait={}", host_time_wait());
    many.iter().for_each(say);
}

/// Raises the soft open-file limit to the hard one; returns it.
fn raise_nofile() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit to fill in.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `limit` is a valid rlimit that outlives the call.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
    limit.rlim_cur
}
