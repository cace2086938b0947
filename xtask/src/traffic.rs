//! The demo's traffic: a recognizable mix of Redis clients, one behaviour per
//! loopback source address, so each shows up as its own row in connwatch.
//!
//! | source     | behaviour                                                      |
//! |------------|----------------------------------------------------------------|
//! | 127.0.0.2  | steady pool: 8 long-lived connections, each PINGs every 250 ms |
//! | 127.0.0.3  | leak: one new connection every 500 ms, never closed            |
//! | 127.0.0.4  | churn: connect, PING, close, 20 per second (client closes)     |
//! | 127.0.0.5  | QUIT once a second: Redis closes first (server-side close)     |
//! | 127.0.0.6  | PING then close with SO_LINGER 0 once a second: a RST         |
//! | 127.0.0.7  | 3 idle holders: connect and never send anything                |
//!
//! Everything runs on one thread, every socket has timeouts, and every loop is
//! bounded by a count and by `max_run`; the thread also stops as soon as `stop`
//! is set (the demo sets it when connwatch exits). All connections are closed
//! when the thread returns.

use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

pub const POOL_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
pub const LEAK_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
pub const CHURN_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
pub const SERVER_CLOSE_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
pub const RESET_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
pub const IDLE_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 7);

pub const POOL_SIZE: usize = 8;
pub const IDLE_HOLDERS: usize = 3;
const POOL_EVERY: Duration = Duration::from_millis(250);
const LEAK_EVERY: Duration = Duration::from_millis(500);
const CHURN_EVERY: Duration = Duration::from_millis(50);
const SERVER_CLOSE_EVERY: Duration = Duration::from_secs(1);
const RESET_EVERY: Duration = Duration::from_secs(1);
/// Upper bound on leaked connections, whatever the run time.
const MAX_LEAKED: usize = 400;
const IO_TIMEOUT: Duration = Duration::from_secs(1);
const TICK: Duration = Duration::from_millis(10);

const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";
const PONG: &[u8] = b"+PONG\r\n";
const QUIT: &[u8] = b"*1\r\n$4\r\nQUIT\r\n";
const OK: &[u8] = b"+OK\r\n";

/// What the traffic thread did, for the explanation at the end.
#[derive(Debug, Default)]
pub struct Report {
    pub ran_for: Duration,
    pub pool_open: usize,
    pub pool_pings: u64,
    pub pool_reconnects: u64,
    pub leaked: usize,
    pub churned: u64,
    pub server_closed: u64,
    pub resets: u64,
    pub idle_held: usize,
    pub errors: u64,
    pub first_errors: Vec<String>,
}

impl Report {
    fn error(&mut self, what: &str, e: &io::Error) {
        self.errors += 1;
        if self.first_errors.len() < 5 {
            self.first_errors.push(format!("{what}: {e}"));
        }
    }
}

/// Starts the traffic thread against 127.0.0.1:`port`. It waits `start_delay`
/// (so connwatch can attach first), then runs until `stop` is set or `max_run` passed.
pub fn spawn(
    port: u16,
    start_delay: Duration,
    max_run: Duration,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<Report>> {
    std::thread::Builder::new()
        .name("traffic".into())
        .spawn(move || run(port, start_delay, max_run, &stop))
}

fn run(port: u16, start_delay: Duration, max_run: Duration, stop: &AtomicBool) -> Report {
    let mut report = Report::default();
    let delay_until = Instant::now() + start_delay;
    while Instant::now() < delay_until {
        if stop.load(Ordering::SeqCst) {
            return report;
        }
        std::thread::sleep(TICK);
    }
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let start = Instant::now();
    let deadline = start + max_run;

    let mut pool: Vec<Option<TcpStream>> = (0..POOL_SIZE)
        .map(|_| match connect_from(POOL_ADDR, server) {
            Ok(s) => Some(s),
            Err(e) => {
                report.error("pool connect", &e);
                None
            }
        })
        .collect();
    let mut idle: Vec<TcpStream> = Vec::with_capacity(IDLE_HOLDERS);
    for _ in 0..IDLE_HOLDERS {
        match connect_from(IDLE_ADDR, server) {
            Ok(s) => idle.push(s),
            Err(e) => report.error("idle connect", &e),
        }
    }
    report.idle_held = idle.len();
    let mut leaked: Vec<TcpStream> = Vec::new();

    let mut next_pool = start;
    let mut next_leak = start;
    let mut next_churn = start;
    let mut next_server_close = start;
    let mut next_reset = start;

    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let now = Instant::now();
        if due(&mut next_pool, now, POOL_EVERY) {
            for slot in &mut pool {
                pool_ping(slot, server, &mut report);
            }
        }
        if due(&mut next_leak, now, LEAK_EVERY) && leaked.len() < MAX_LEAKED {
            match connect_from(LEAK_ADDR, server).and_then(|mut s| ping(&mut s).map(|()| s)) {
                Ok(s) => leaked.push(s),
                Err(e) => report.error("leak", &e),
            }
        }
        if due(&mut next_churn, now, CHURN_EVERY) {
            // Dropping the stream closes it: the client sends the first FIN.
            match connect_from(CHURN_ADDR, server).and_then(|mut s| ping(&mut s)) {
                Ok(()) => report.churned += 1,
                Err(e) => report.error("churn", &e),
            }
        }
        if due(&mut next_server_close, now, SERVER_CLOSE_EVERY) {
            match connect_from(SERVER_CLOSE_ADDR, server).and_then(|mut s| quit(&mut s)) {
                Ok(()) => report.server_closed += 1,
                Err(e) => report.error("quit", &e),
            }
        }
        if due(&mut next_reset, now, RESET_EVERY) {
            match reset_once(server) {
                Ok(()) => report.resets += 1,
                Err(e) => report.error("reset", &e),
            }
        }
        std::thread::sleep(TICK);
    }

    report.pool_open = pool.iter().flatten().count();
    report.leaked = leaked.len();
    report.ran_for = start.elapsed();
    report
}

/// Whether a periodic action is due; if so, schedules the next one (without
/// catching up on missed periods after a stall).
fn due(next: &mut Instant, now: Instant, every: Duration) -> bool {
    if now < *next {
        return false;
    }
    *next = (*next + every).max(now);
    true
}

/// A TCP connection from `source` (port chosen by the kernel) to `server`, with
/// timeouts, as a std stream.
pub fn connect_from(source: Ipv4Addr, server: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SockAddr::from(SocketAddr::from((source, 0))))?;
    socket.connect_timeout(&SockAddr::from(server), IO_TIMEOUT)?;
    socket.set_nodelay(true)?;
    socket.set_read_timeout(Some(IO_TIMEOUT))?;
    socket.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(socket.into())
}

fn expect_reply(stream: &mut TcpStream, expected: &[u8]) -> io::Result<()> {
    let mut reply = vec![0; expected.len()];
    stream.read_exact(&mut reply)?;
    if reply != expected {
        return Err(io::Error::other(format!(
            "expected {:?}, got {:?}",
            String::from_utf8_lossy(expected),
            String::from_utf8_lossy(&reply)
        )));
    }
    Ok(())
}

/// `PING` → `+PONG`.
pub fn ping(stream: &mut TcpStream) -> io::Result<()> {
    stream.write_all(PING)?;
    expect_reply(stream, PONG)
}

/// `QUIT` → `+OK`, then waits for Redis to close the connection (EOF) before we do.
fn quit(stream: &mut TcpStream) -> io::Result<()> {
    stream.write_all(QUIT)?;
    expect_reply(stream, OK)?;
    let mut rest = [0u8; 64];
    for _ in 0..16 {
        if stream.read(&mut rest)? == 0 {
            return Ok(());
        }
    }
    Err(io::Error::other("redis did not close after QUIT"))
}

/// Connect, PING, then close with SO_LINGER 0: the kernel sends a RST, not a FIN.
fn reset_once(server: SocketAddr) -> io::Result<()> {
    let mut stream = connect_from(RESET_ADDR, server)?;
    ping(&mut stream)?;
    Socket::from(stream).set_linger(Some(Duration::ZERO))
    // dropped here → close(2) with linger 0 → RST
}

fn pool_ping(slot: &mut Option<TcpStream>, server: SocketAddr, report: &mut Report) {
    if slot.is_none() {
        match connect_from(POOL_ADDR, server) {
            Ok(s) => {
                report.pool_reconnects += 1;
                *slot = Some(s);
            }
            Err(e) => {
                report.error("pool reconnect", &e);
                return;
            }
        }
    }
    if let Some(stream) = slot {
        match ping(stream) {
            Ok(()) => report.pool_pings += 1,
            Err(e) => {
                report.error("pool ping", &e);
                *slot = None;
            }
        }
    }
}

/// One paragraph telling the viewer which address did what.
pub fn explain(r: &Report) -> String {
    let secs = r.ran_for.as_secs_f64();
    let mut text = format!(
        "What you just watched ({secs:.0} s of traffic against the scratch Redis): \
         127.0.0.2 is a healthy connection pool, {POOL_SIZE} long-lived connections \
         answering {} PINGs in total, so its open count stays flat and nothing is opened \
         or closed after the start; \
         127.0.0.3 leaks, opening a new connection every 500 ms and never closing one \
         ({} left open), so its open count climbs steadily with growing idle times — \
         the row to look at when Redis runs out of maxclients; \
         127.0.0.4 churns, {} short connect-PING-close cycles (about 20 a second) that \
         the client closes first, so it has a high open/close rate but almost nothing open \
         at any moment; \
         127.0.0.5 sent QUIT {} times, so Redis (the server) closed each of those \
         connections first; \
         127.0.0.6 reset {} connections (SO_LINGER 0, so a RST instead of a FIN); \
         127.0.0.7 holds {} connections that never sent a single command, so their idle \
         time equals their age.",
        r.pool_pings, r.leaked, r.churned, r.server_closed, r.resets, r.idle_held
    );
    if r.pool_reconnects > 0 {
        text.push_str(&format!(
            " The pool had to reconnect {} times.",
            r.pool_reconnects
        ));
    }
    if r.errors > 0 {
        text.push_str(&format!(
            " The traffic generator saw {} errors, first: {}.",
            r.errors,
            r.first_errors.join("; ")
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::{ScratchRedis, command};

    #[test]
    fn periodic_actions_do_not_catch_up_after_a_stall() {
        let t0 = Instant::now();
        let mut next = t0;
        assert!(due(&mut next, t0, Duration::from_millis(100)));
        assert_eq!(next, t0 + Duration::from_millis(100));
        assert!(!due(
            &mut next,
            t0 + Duration::from_millis(50),
            Duration::from_millis(100)
        ));
        let late = t0 + Duration::from_secs(5);
        assert!(due(&mut next, late, Duration::from_millis(100)));
        assert_eq!(next, late);
    }

    #[test]
    fn explanation_names_every_address() {
        let text = explain(&Report::default());
        for addr in [
            POOL_ADDR,
            LEAK_ADDR,
            CHURN_ADDR,
            SERVER_CLOSE_ADDR,
            RESET_ADDR,
            IDLE_ADDR,
        ] {
            assert!(text.contains(&addr.to_string()), "{addr} missing in {text}");
        }
    }

    /// Counts CLIENT LIST entries per source address.
    fn clients_from(client_list: &str, source: Ipv4Addr) -> usize {
        let needle = format!("addr={source}:");
        client_list.lines().filter(|l| l.contains(&needle)).count()
    }

    #[test]
    fn traffic_mix_reaches_redis_from_distinct_addresses() {
        let redis = ScratchRedis::start().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let handle = spawn(
            redis.port(),
            Duration::ZERO,
            Duration::from_secs(30),
            Arc::clone(&stop),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(2600));
        let list = command(redis.port(), &["CLIENT", "LIST"]).unwrap();
        stop.store(true, Ordering::SeqCst);
        let report = handle.join().unwrap();
        let stats = command(redis.port(), &["INFO", "stats"]).unwrap();

        assert_eq!(clients_from(&list, POOL_ADDR), POOL_SIZE, "{list}");
        assert!(clients_from(&list, LEAK_ADDR) >= 4, "{list}");
        assert_eq!(clients_from(&list, IDLE_ADDR), IDLE_HOLDERS, "{list}");
        assert!(list.contains(&format!("addr={IDLE_ADDR}:")) && list.contains("cmd=NULL"));
        assert_eq!(report.errors, 0, "{:?}", report.first_errors);
        assert_eq!(report.idle_held, IDLE_HOLDERS);
        assert!(report.leaked >= 5, "{report:?}");
        assert!(report.churned >= 30, "{report:?}");
        assert!(report.server_closed >= 2, "{report:?}");
        assert!(report.resets >= 2, "{report:?}");
        assert!(report.pool_pings >= 80, "{report:?}");
        assert!(report.ran_for < Duration::from_secs(5), "{report:?}");
        // total_connections_received counts every accept: pool + idle + leaks + churn + …
        let accepted: u64 = stats
            .lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        assert!(accepted >= 50, "{stats}");
        eprintln!("CLIENT LIST while the traffic ran:\n{list}");
        eprintln!("{report:?}");
    }
}
