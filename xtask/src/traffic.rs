//! The demo's traffic: one behaviour per loopback source address, so each shows up
//! as its own row in connwatch, driven through phases that exhaust the server in
//! two different ways (see [`Plan`]).
//!
//! | source     | behaviour                                                          | phases |
//! |------------|--------------------------------------------------------------------|--------|
//! | 127.0.0.2  | steady pool: 8 long-lived connections, each PINGs every 250 ms     | all    |
//! | 127.0.0.4  | calm short-lived connections: connect, PING, close, ~3 per second  | 1–3    |
//! | 127.0.0.7  | 3 idle holders: connect and never send anything                    | all    |
//! | 127.0.0.3  | leak: a new connection every 400 ms, one PING, never closed        | 2–3    |
//! | 127.0.0.8  | retry storm: reconnects at once after each rejection (≤ 200/s)     | 3      |
//! | 127.0.0.9  | exponential backoff with jitter after each rejection               | 3      |
//! | 127.0.0.10 | a few connections after the open-file limit was lowered            | 4      |
//! | 127.0.0.1  | the demo's own INFO connection (opened first, reused)              | all    |
//!
//! Phases: (1) healthy baseline; (2) the leak fills the server up to maxclients;
//! (3) once it is full, the storm and the backing-off client are turned away;
//! (4) the other new connections stop, redis-server's open-file limit is lowered to
//! its lowest free descriptor number (`prlimit`), so `accept()` fails with EMFILE
//! and 127.0.0.10's connections wait in the accept queue, uncounted by INFO.
//!
//! Everything runs on one thread, every socket has timeouts, and every loop is
//! bounded by a count and by [`Plan::end`]; the thread also stops as soon as `stop`
//! is set (the demo sets it when connwatch exits). All connections are closed
//! when the thread returns.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::redis::{command_on, info_field};

pub const ADMIN_ADDR: Ipv4Addr = Ipv4Addr::LOCALHOST;
pub const POOL_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
pub const LEAK_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
pub const CHURN_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
pub const IDLE_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 7);
pub const STORM_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 8);
pub const BACKOFF_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);
pub const WAITING_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 10);

pub const POOL_SIZE: usize = 8;
pub const IDLE_HOLDERS: usize = 3;
/// Connections 127.0.0.10 opens once the open-file limit is lowered.
pub const WAITING_CONNS: usize = 5;
const POOL_EVERY: Duration = Duration::from_millis(250);
/// Upper bound on leaked connections, whatever the run time.
const MAX_LEAKED: usize = 400;
/// Connections the storm keeps if it ever gets one (it never should: nothing frees a slot).
const MAX_STORM_HELD: usize = 4;
const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a new connection waits for Redis's rejection line before it counts as
/// accepted. Redis writes the error from its event loop as soon as it accepts.
const PROBE: Duration = Duration::from_millis(20);
/// Time for the last closes to settle before the free descriptors are counted.
const SETTLE: Duration = Duration::from_millis(300);
const TICK: Duration = Duration::from_millis(5);

const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";
const PONG: &[u8] = b"+PONG\r\n";

/// When each phase starts (relative to the start of the traffic) and how fast
/// each client goes.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Phase 2: the leak starts; before it, only the healthy clients run.
    pub leak_from: Duration,
    /// Phase 3 starts when the leak is first turned away (the server is full), or
    /// at this time at the latest.
    pub storm_by: Duration,
    /// Phase 4: the open-file limit is lowered.
    pub fd_from: Duration,
    /// The traffic stops here at the latest.
    pub end: Duration,
    pub leak_every: Duration,
    pub churn_every: Duration,
    /// The storm's minimum time between attempts (≤ 200 attempts/s at 5 ms).
    pub storm_every: Duration,
    pub backoff: Backoff,
    pub waiting_every: Duration,
}

impl Plan {
    /// The demo's plan for `run` of traffic: a short baseline, the leak, the storm
    /// as soon as the server is full, and the last 10 s (less in short runs) for the
    /// fd limit.
    pub fn demo(run: Duration) -> Plan {
        let leak_from = (run / 12).clamp(Duration::from_secs(2), Duration::from_secs(4));
        let fd_len = (run / 4).clamp(Duration::from_secs(3), Duration::from_secs(10));
        let fd_from = run.saturating_sub(fd_len).max(leak_from);
        Plan {
            leak_from,
            storm_by: leak_from + (fd_from - leak_from) * 3 / 4,
            fd_from,
            end: run + Duration::from_secs(5),
            // 47 free slots at 400 ms: full about 19 s after the leak starts, so
            // the storm has 10 s before the fd phase and the leak verdict (which
            // needs growth within the last third of the 60 s window) lasts ~20 s more.
            leak_every: Duration::from_millis(400),
            churn_every: Duration::from_millis(330),
            storm_every: Duration::from_millis(5),
            backoff: Backoff::DEMO,
            waiting_every: Duration::from_millis(500),
        }
    }
}

/// Exponential backoff with "equal jitter": the n-th wait after a failure is half
/// of `min(cap, base × 2ⁿ)` plus a random share of the other half, so the waits
/// grow but two clients never retry in lockstep.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    pub const DEMO: Backoff = Backoff {
        base: Duration::from_millis(250),
        cap: Duration::from_secs(4),
    };

    /// The wait after the `failures`-th failure in a row (0-based); `jitter` in [0, 1).
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let full = self
            .base
            .saturating_mul(2u32.saturating_pow(failures.min(20)))
            .min(self.cap);
        full / 2 + (full / 2).mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// A small xorshift generator for the jitter; no need for a crate.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng::new(nanos ^ (u64::from(std::process::id()) << 32))
    }

    pub fn new(seed: u64) -> Rng {
        // Zero is xorshift's one fixed point.
        Rng(seed.max(1))
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The lowest descriptor number not in `open`: the one the next `accept()` or
/// `open()` gets. An RLIMIT_NOFILE of exactly this number makes that allocation
/// fail with EMFILE (the limit bounds descriptor numbers, not their count), while
/// every descriptor already open keeps working.
pub fn lowest_free_fd(open: impl IntoIterator<Item = u32>) -> u32 {
    let open: BTreeSet<u32> = open.into_iter().collect();
    let mut want = 0;
    for fd in open {
        if fd != want {
            break;
        }
        want += 1;
    }
    want
}

/// The open descriptor numbers of process `pid`.
fn open_fds(pid: u32) -> io::Result<Vec<u32>> {
    let mut fds = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd"))? {
        if let Some(fd) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) {
            fds.push(fd);
        }
    }
    Ok(fds)
}

/// `prlimit --pid PID --nofile=N:N`.
fn lower_nofile(pid: u32, limit: u32) -> io::Result<()> {
    let out = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "prlimit failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// What the traffic thread did, for the explanation at the end.
#[derive(Debug, Default)]
pub struct Report {
    pub ran_for: Duration,
    /// When the leak was first turned away: the server was full.
    pub full_at: Option<Duration>,
    pub storm_from: Option<Duration>,
    pub fd_from: Option<Duration>,
    pub pool_open: usize,
    pub pool_pings: u64,
    pub pool_reconnects: u64,
    pub leaked: usize,
    pub leak_rejected: u64,
    pub churned: u64,
    pub churn_rejected: u64,
    pub idle_held: usize,
    pub storm_attempts: u64,
    pub storm_rejected: u64,
    pub backoff_attempts: u64,
    pub backoff_rejected: u64,
    /// The backing-off client's first waits.
    pub backoff_delays: Vec<Duration>,
    /// The RLIMIT_NOFILE given to redis-server in phase 4.
    pub nofile: Option<u32>,
    pub waiting: usize,
    /// INFO `rejected_connections` when phase 4 started and when the traffic stopped.
    pub info_rejected_before_fd: Option<u64>,
    pub info_rejected_at_end: Option<u64>,
    pub errors: u64,
    pub first_errors: Vec<String>,
}

impl Report {
    fn error(&mut self, what: &str, e: &dyn std::fmt::Display) {
        self.errors += 1;
        if self.first_errors.len() < 5 {
            self.first_errors.push(format!("{what}: {e}"));
        }
    }
}

/// The server the traffic goes to.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub port: u16,
    /// redis-server's pid, for phase 4.
    pub pid: u32,
}

/// Starts the traffic thread. It waits `start_delay` (so connwatch can attach
/// first), then follows `plan` until `stop` is set or `plan.end` passed.
pub fn spawn(
    target: Target,
    plan: Plan,
    start_delay: Duration,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<Report>> {
    std::thread::Builder::new()
        .name("traffic".into())
        .spawn(move || run(target, &plan, start_delay, &stop))
}

/// The outcome of opening a connection to a Redis that may turn it away.
enum Attempt {
    Accepted(TcpStream),
    /// Redis's error line (`-ERR max number of clients reached`).
    Rejected(String),
}

/// Connects from `source` and waits [`PROBE`] for a rejection. Nothing is sent
/// first, so a rejected connection reads nothing and Redis's close is a FIN.
fn attempt(source: Ipv4Addr, server: SocketAddr) -> io::Result<Attempt> {
    let mut stream = connect_from(source, server)?;
    stream.set_read_timeout(Some(PROBE))?;
    let mut buf = [0u8; 128];
    match stream.read(&mut buf) {
        Ok(0) => Ok(Attempt::Rejected("closed without a reply".into())),
        Ok(n) => {
            let line = String::from_utf8_lossy(&buf[..n]).trim_end().to_owned();
            if line.starts_with('-') {
                // Wait for Redis's close before ours, as a client that reads the
                // whole reply would: closing first races Redis's close(), and a
                // rejection whose client closed first looks like a client-side close.
                for _ in 0..4 {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                Ok(Attempt::Rejected(line))
            } else {
                Err(io::Error::other(format!("unexpected greeting {line:?}")))
            }
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            stream.set_read_timeout(Some(IO_TIMEOUT))?;
            Ok(Attempt::Accepted(stream))
        }
        Err(e) => Err(e),
    }
}

/// The clients' state between ticks.
struct Clients {
    server: SocketAddr,
    admin: Option<TcpStream>,
    pool: Vec<Option<TcpStream>>,
    idle: Vec<TcpStream>,
    leaked: Vec<TcpStream>,
    storm_held: Vec<TcpStream>,
    backoff_held: Option<TcpStream>,
    backoff_failures: u32,
    backoff_next: Instant,
    waiting: Vec<TcpStream>,
    rng: Rng,
}

fn run(target: Target, plan: &Plan, start_delay: Duration, stop: &AtomicBool) -> Report {
    let mut report = Report::default();
    if !sleep_unless_stopped(start_delay, stop) {
        return report;
    }
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, target.port));
    let start = Instant::now();
    let deadline = start + plan.end;
    let mut c = Clients {
        server,
        admin: None,
        pool: Vec::with_capacity(POOL_SIZE),
        idle: Vec::with_capacity(IDLE_HOLDERS),
        leaked: Vec::new(),
        storm_held: Vec::new(),
        backoff_held: None,
        backoff_failures: 0,
        backoff_next: start,
        waiting: Vec::new(),
        rng: Rng::seeded(),
    };
    // First, while there is room: the INFO connection, the pool, the idle holders.
    match connect_from(ADMIN_ADDR, server) {
        Ok(s) => c.admin = Some(s),
        Err(e) => report.error("INFO connection", &e),
    }
    for _ in 0..POOL_SIZE {
        c.pool.push(pool_connect(server, &mut report));
    }
    for _ in 0..IDLE_HOLDERS {
        match connect_from(IDLE_ADDR, server) {
            Ok(s) => c.idle.push(s),
            Err(e) => report.error("idle connect", &e),
        }
    }
    report.idle_held = c.idle.len();

    let mut next_pool = start;
    let mut next_leak = start + plan.leak_from;
    let mut next_churn = start;
    let mut next_storm = start;
    let mut next_waiting = start;

    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let now = Instant::now();
        let t = now - start;
        if due(&mut next_pool, now, POOL_EVERY) {
            for slot in &mut c.pool {
                pool_ping(slot, server, &mut report);
            }
        }
        if t < plan.fd_from {
            if t >= plan.leak_from && due(&mut next_leak, now, plan.leak_every) {
                leak_once(&mut c, t, &mut report);
            }
            if due(&mut next_churn, now, plan.churn_every) {
                churn_once(server, &mut report);
            }
            if report.storm_from.is_none() && (report.full_at.is_some() || t >= plan.storm_by) {
                report.storm_from = Some(t);
                c.backoff_next = now;
            }
            if report.storm_from.is_some() {
                if due(&mut next_storm, now, plan.storm_every) {
                    storm_once(&mut c, &mut report);
                }
                if c.backoff_held.is_none() && now >= c.backoff_next {
                    backoff_once(&mut c, &plan.backoff, &mut report);
                }
            }
        } else {
            if report.fd_from.is_none() {
                report.fd_from = Some(t);
                lower_the_fd_limit(&mut c, target.pid, stop, &mut report);
            }
            if c.waiting.len() < WAITING_CONNS && due(&mut next_waiting, now, plan.waiting_every) {
                // The kernel completes the handshake and queues the connection;
                // redis-server cannot accept it. The PING waits unanswered.
                match connect_from(WAITING_ADDR, server).and_then(|mut s| {
                    s.write_all(PING)?;
                    Ok(s)
                }) {
                    Ok(s) => c.waiting.push(s),
                    Err(e) => report.error("waiting connect", &e),
                }
            }
        }
        std::thread::sleep(TICK);
    }

    if report.fd_from.is_some() {
        report.info_rejected_at_end = info_rejected(&mut c.admin, &mut report);
    }
    report.pool_open = c.pool.iter().flatten().count();
    report.leaked = c.leaked.len();
    report.waiting = c.waiting.len();
    report.ran_for = start.elapsed();
    report
}

/// Sleeps `total` in ticks; false when `stop` was set meanwhile.
fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + total;
    while Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(TICK);
    }
    !stop.load(Ordering::SeqCst)
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

fn leak_once(c: &mut Clients, t: Duration, report: &mut Report) {
    if c.leaked.len() >= MAX_LEAKED {
        return;
    }
    match attempt(LEAK_ADDR, c.server) {
        Ok(Attempt::Accepted(mut s)) => match ping(&mut s) {
            // Used once, kept forever: the leak.
            Ok(()) => c.leaked.push(s),
            Err(e) => report.error("leak ping", &e),
        },
        Ok(Attempt::Rejected(_)) => {
            report.leak_rejected += 1;
            report.full_at.get_or_insert(t);
        }
        Err(e) => report.error("leak", &e),
    }
}

fn churn_once(server: SocketAddr, report: &mut Report) {
    match attempt(CHURN_ADDR, server) {
        // Dropping the stream closes it: the client sends the first FIN.
        Ok(Attempt::Accepted(mut s)) => match ping(&mut s) {
            Ok(()) => report.churned += 1,
            Err(e) => report.error("churn ping", &e),
        },
        Ok(Attempt::Rejected(_)) => report.churn_rejected += 1,
        Err(e) => report.error("churn", &e),
    }
}

/// One attempt of the storm; the next follows one `storm_every` later, however it went.
fn storm_once(c: &mut Clients, report: &mut Report) {
    report.storm_attempts += 1;
    match attempt(STORM_ADDR, c.server) {
        Ok(Attempt::Accepted(s)) => {
            if c.storm_held.len() < MAX_STORM_HELD {
                c.storm_held.push(s);
            }
        }
        Ok(Attempt::Rejected(_)) => report.storm_rejected += 1,
        Err(e) => report.error("storm", &e),
    }
}

/// One attempt of the well-behaved client: after a failure it waits longer each time.
fn backoff_once(c: &mut Clients, backoff: &Backoff, report: &mut Report) {
    report.backoff_attempts += 1;
    let failed = match attempt(BACKOFF_ADDR, c.server) {
        Ok(Attempt::Accepted(mut s)) => match ping(&mut s) {
            Ok(()) => {
                c.backoff_held = Some(s);
                c.backoff_failures = 0;
                false
            }
            Err(e) => {
                report.error("backoff ping", &e);
                true
            }
        },
        Ok(Attempt::Rejected(_)) => {
            report.backoff_rejected += 1;
            true
        }
        Err(e) => {
            report.error("backoff", &e);
            true
        }
    };
    if failed {
        let wait = backoff.delay(c.backoff_failures, c.rng.next_f64());
        c.backoff_failures = c.backoff_failures.saturating_add(1);
        c.backoff_next = Instant::now() + wait;
        if report.backoff_delays.len() < 8 {
            report.backoff_delays.push(wait);
        }
    }
}

/// Phase 4: no other new connections, then RLIMIT_NOFILE = the lowest free
/// descriptor number of redis-server.
fn lower_the_fd_limit(c: &mut Clients, pid: u32, stop: &AtomicBool, report: &mut Report) {
    // Let the last rejected connections close, so no lower descriptor frees up later.
    sleep_unless_stopped(SETTLE, stop);
    report.info_rejected_before_fd = info_rejected(&mut c.admin, report);
    let limit = match open_fds(pid) {
        Ok(fds) => lowest_free_fd(fds),
        Err(e) => {
            report.error(&format!("reading /proc/{pid}/fd"), &e);
            return;
        }
    };
    match lower_nofile(pid, limit) {
        Ok(()) => report.nofile = Some(limit),
        Err(e) => report.error("lowering the open-file limit", &e),
    }
}

fn info_rejected(admin: &mut Option<TcpStream>, report: &mut Report) -> Option<u64> {
    let stream = admin.as_mut()?;
    match command_on(stream, &["INFO", "stats"]) {
        Ok(info) => info_field(&info, "rejected_connections"),
        Err(e) => {
            report.error("INFO stats", &e);
            *admin = None;
            None
        }
    }
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

fn pool_connect(server: SocketAddr, report: &mut Report) -> Option<TcpStream> {
    match attempt(POOL_ADDR, server) {
        Ok(Attempt::Accepted(s)) => Some(s),
        Ok(Attempt::Rejected(line)) => {
            report.error("pool connect", &line);
            None
        }
        Err(e) => {
            report.error("pool connect", &e);
            None
        }
    }
}

fn pool_ping(slot: &mut Option<TcpStream>, server: SocketAddr, report: &mut Report) {
    if slot.is_none() {
        *slot = pool_connect(server, report);
        if slot.is_none() {
            return;
        }
        report.pool_reconnects += 1;
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

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// What the viewer saw, one line per address, naming connwatch's verdicts.
/// Times are shown on connwatch's clock (its `up` figure): traffic time + `offset`.
pub fn explain(
    r: &Report,
    maxclients: u32,
    leak_idle: &str,
    window: &str,
    offset: Duration,
) -> String {
    let ran = r.ran_for.as_secs_f64();
    let mut lines = vec![format!(
        "What you just watched: {ran:.0} s of traffic against a scratch Redis with maxclients {maxclients}, one behaviour per address."
    )];
    lines.push(format!(
        "  127.0.0.2  a steady pool of {POOL_SIZE} connections ({} PINGs answered): healthy all along, even when Redis was full, because its connections were already in.",
        r.pool_pings
    ));
    lines.push(format!(
        "  127.0.0.4  calm short-lived connections, connect-PING-close about 3 a second ({} done): healthy; once Redis was full its new connections were turned away too ({} rejected), but at its calm pace that is no storm.",
        r.churned, r.churn_rejected
    ));
    lines.push(format!(
        "  127.0.0.7  {} connections that never send a command: idle time equals age, but the count does not grow, so healthy.",
        r.idle_held
    ));
    let full = r.full_at.map_or_else(
        || "it never filled the server".to_owned(),
        |t| {
            format!(
                "it filled the server to maxclients at up {}",
                secs(t + offset)
            )
        },
    );
    lines.push(format!(
        "  127.0.0.3  the LEAK: a new connection every 400 ms, used once, never closed ({} left open); {full}, and its later attempts were turned away ({} rejected). Verdict `leak`: its open count grew while its connections sat idle over {leak_idle}; the action lists each stale connection with its CLIENT KILL ADDR command. (The rule wants the count still growing over the last third of the {window} window, so once the leak can no longer grow the verdict fades and the row reads pool-heavy.)",
        r.leaked, r.leak_rejected
    ));
    lines.push(format!(
        "  127.0.0.8  the RETRY STORM: once Redis was full it reconnected at once after each rejection, {} attempts, {} rejected. Verdict `retry_storm` (critical): many failures, near-zero gaps, not growing.",
        r.storm_attempts, r.storm_rejected
    ));
    let waits: Vec<String> = r.backoff_delays.iter().map(|d| secs(*d)).collect();
    lines.push(format!(
        "  127.0.0.9  the same rejections ({} of {} attempts), but it backed off exponentially with jitter (waits {}): `backing_off`, never `retry_storm`. Same failure, different behaviour: that is how a storm is told apart from a client that behaves.",
        r.backoff_rejected,
        r.backoff_attempts,
        if waits.is_empty() {
            "none".to_owned()
        } else {
            waits.join(", ")
        }
    ));
    let fd = match (r.fd_from, r.nofile) {
        (Some(t), Some(n)) => format!(
            "from up {}, redis-server's open-file limit was lowered to {n} (prlimit; {n} was its lowest free descriptor number), so every accept() failed with EMFILE. Its {} connections waited in the accept queue, neither served nor rejected, and INFO rejected_connections stayed {}. Verdict `fd_limit` (critical): only the kernel sees this.",
            secs(t + offset),
            r.waiting,
            match (r.info_rejected_before_fd, r.info_rejected_at_end) {
                (Some(a), Some(b)) if a == b => format!("at {a}"),
                (Some(a), Some(b)) => format!("at {a}… no, it moved to {b}"),
                _ => "unread".to_owned(),
            }
        ),
        (Some(_), None) => "the open-file limit could not be lowered (see the errors below), so no fd_limit case this time.".to_owned(),
        (None, _) => "the run ended before the fd-limit phase (it takes the last 10 s of a 45 s run).".to_owned(),
    };
    lines.push(format!("  127.0.0.10 {fd}"));
    lines.push(
        "  127.0.0.1  the demo's own INFO connection (connwatch's own is not shown). While clients were turned away connwatch also said `capacity_critical`; `maxclients_too_low` stays silent while a leak or a storm is to blame."
            .to_owned(),
    );
    if r.pool_reconnects > 0 {
        lines.push(format!(
            "  The pool had to reconnect {} times.",
            r.pool_reconnects
        ));
    }
    if r.errors > 0 {
        lines.push(format!(
            "  The traffic generator saw {} errors, first: {}.",
            r.errors,
            r.first_errors.join("; ")
        ));
    }
    let mut out = String::new();
    for line in &lines {
        out.push_str(&wrap(line, WRAP_AT, 13));
        out.push('\n');
    }
    out.pop();
    out
}

/// Where the explanation's lines are wrapped.
const WRAP_AT: usize = 110;

/// Wraps `text` at spaces to lines of at most `width` characters (a longer word
/// stays whole); continuation lines are indented by `indent` spaces.
pub fn wrap(text: &str, width: usize, indent: usize) -> String {
    let words = text.trim_start_matches(' ');
    let lead = text.len() - words.len();
    let mut out = " ".repeat(lead);
    let mut len = lead;
    for (i, word) in words.split(' ').enumerate() {
        let n = word.chars().count();
        if i > 0 && len + 1 + n > width {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            len = indent;
        } else if i > 0 {
            out.push(' ');
            len += 1;
        }
        out.push_str(word);
        len += n;
    }
    out
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
    fn wrapping_keeps_words_whole_and_indents() {
        assert_eq!(wrap("", 10, 2), "");
        assert_eq!(wrap("short line", 10, 2), "short line");
        assert_eq!(wrap("  a bb ccc dddd", 8, 2), "  a bb\n  ccc\n  dddd");
        assert_eq!(
            wrap("x averyveryverylongword y", 8, 1),
            "x\n averyveryverylongword\n y"
        );
        for line in wrap(&"word ".repeat(100), 30, 4).lines() {
            assert!(line.chars().count() <= 30, "{line:?}");
        }
    }

    #[test]
    fn lowest_free_fd_is_the_first_gap() {
        assert_eq!(lowest_free_fd([]), 0);
        assert_eq!(lowest_free_fd([0, 1, 2]), 3);
        assert_eq!(lowest_free_fd([2, 0, 1, 5, 3]), 4);
        assert_eq!(lowest_free_fd([1, 2, 3]), 0);
        assert_eq!(lowest_free_fd([0, 0, 1, 1]), 2);
        assert_eq!(lowest_free_fd(0..70), 70);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let b = Backoff::DEMO;
        let ms = |d: Duration| d.as_millis();
        assert_eq!(ms(b.delay(0, 0.0)), 125);
        assert_eq!(ms(b.delay(0, 0.999_999)), 249);
        assert_eq!(ms(b.delay(1, 0.0)), 250);
        assert_eq!(ms(b.delay(2, 0.5)), 750);
        assert_eq!(ms(b.delay(4, 0.0)), 2000);
        assert_eq!(ms(b.delay(5, 0.0)), 2000);
        assert_eq!(ms(b.delay(u32::MAX, 1.0)), 4000);
        // Out-of-range jitter is clamped.
        assert_eq!(ms(b.delay(0, -3.0)), 125);
        // The lowest wait of each step is at least the highest of the one before
        // the previous: the waits grow whatever the jitter.
        for n in 2..5 {
            assert!(b.delay(n, 0.0) >= b.delay(n - 2, 1.0));
        }
    }

    #[test]
    fn jitter_is_uniform_enough_and_in_range() {
        let mut rng = Rng::new(0);
        let draws: Vec<f64> = (0..10_000).map(|_| rng.next_f64()).collect();
        assert!(draws.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((0.45..0.55).contains(&mean), "{mean}");
    }

    #[test]
    fn demo_plan_keeps_the_last_10_s_for_the_fd_limit() {
        let p = Plan::demo(Duration::from_millis(43_500));
        assert_eq!(p.fd_from, Duration::from_millis(33_500));
        assert!(p.leak_from >= Duration::from_secs(2) && p.leak_from <= Duration::from_secs(4));
        assert!(p.leak_from < p.storm_by && p.storm_by < p.fd_from);
        assert_eq!(p.end, Duration::from_millis(48_500));
        // ≤ 200 storm attempts per second.
        assert!(p.storm_every >= Duration::from_millis(5));
        // Short runs keep the phases in order.
        for s in [1, 5, 10, 20, 3600] {
            let p = Plan::demo(Duration::from_secs(s));
            assert!(
                p.leak_from <= p.storm_by && p.storm_by <= p.fd_from,
                "{s}: {p:?}"
            );
            assert!(p.end > Duration::from_secs(s));
        }
    }

    #[test]
    fn explanation_names_every_address_and_verdict() {
        let text = explain(&Report::default(), 60, "5s", "60s", Duration::ZERO);
        for addr in [
            ADMIN_ADDR,
            POOL_ADDR,
            LEAK_ADDR,
            CHURN_ADDR,
            IDLE_ADDR,
            STORM_ADDR,
            BACKOFF_ADDR,
            WAITING_ADDR,
        ] {
            assert!(text.contains(&addr.to_string()), "{addr} missing in {text}");
        }
        let report = Report {
            fd_from: Some(Duration::from_secs(33)),
            nofile: Some(71),
            info_rejected_before_fd: Some(900),
            info_rejected_at_end: Some(900),
            ..Report::default()
        };
        let text = explain(&report, 60, "5s", "60s", Duration::from_millis(1500));
        for verdict in ["`leak`", "`retry_storm`", "`backing_off`", "`fd_limit`"] {
            assert!(text.contains(verdict), "{verdict} missing in {text}");
        }
        assert!(text.contains("stayed at 900"), "{text}");
        assert!(text.contains("from up 34.5 s"), "{text}");
    }

    /// Counts CLIENT LIST entries per source address.
    fn clients_from(client_list: &str, source: Ipv4Addr) -> usize {
        let needle = format!("addr={source}:");
        client_list
            .lines()
            .filter(|l| l.split_whitespace().any(|f| f.starts_with(&needle)))
            .count()
    }

    #[test]
    fn baseline_reaches_redis_from_distinct_addresses() {
        let redis = ScratchRedis::start().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let target = Target {
            port: redis.port(),
            pid: redis.pid(),
        };
        let plan = Plan {
            leak_from: Duration::from_millis(500),
            storm_by: Duration::from_secs(30),
            fd_from: Duration::from_secs(30),
            ..Plan::demo(Duration::from_secs(30))
        };
        let handle = spawn(target, plan, Duration::ZERO, Arc::clone(&stop)).unwrap();
        std::thread::sleep(Duration::from_millis(2600));
        let list = command(redis.port(), &["CLIENT", "LIST"]).unwrap();
        stop.store(true, Ordering::SeqCst);
        let report = handle.join().unwrap();

        assert_eq!(clients_from(&list, POOL_ADDR), POOL_SIZE, "{list}");
        assert!(clients_from(&list, LEAK_ADDR) >= 4, "{list}");
        assert_eq!(clients_from(&list, IDLE_ADDR), IDLE_HOLDERS, "{list}");
        assert_eq!(clients_from(&list, ADMIN_ADDR), 2, "{list}"); // ours and CLIENT LIST's
        assert_eq!(clients_from(&list, STORM_ADDR), 0, "{list}");
        assert!(list.contains(&format!("addr={IDLE_ADDR}:")) && list.contains("cmd=NULL"));
        assert_eq!(report.errors, 0, "{:?}", report.first_errors);
        assert_eq!(report.idle_held, IDLE_HOLDERS);
        assert!(report.leaked >= 6, "{report:?}");
        assert!(report.churned >= 5, "{report:?}");
        assert!(report.pool_pings >= 60, "{report:?}");
        assert_eq!(
            (report.full_at, report.storm_from, report.fd_from),
            (None, None, None)
        );
        assert!(report.ran_for < Duration::from_secs(5), "{report:?}");
    }

    /// All four phases, compressed: a server of 24 slots fills up in under a
    /// second, the storm and the backing-off client are turned away, then the
    /// open-file limit is lowered and new connections wait in the accept queue.
    #[test]
    fn phases_fill_the_server_then_run_it_out_of_descriptors() {
        let redis = ScratchRedis::start_with(&["--maxclients", "24"]).unwrap();
        let target = Target {
            port: redis.port(),
            pid: redis.pid(),
        };
        let plan = Plan {
            leak_from: Duration::from_millis(300),
            storm_by: Duration::from_secs(3),
            fd_from: Duration::from_millis(3500),
            end: Duration::from_millis(5500),
            leak_every: Duration::from_millis(50),
            churn_every: Duration::from_millis(200),
            storm_every: Duration::from_millis(5),
            backoff: Backoff::DEMO,
            waiting_every: Duration::from_millis(100),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let report = spawn(target, plan, Duration::ZERO, stop)
            .unwrap()
            .join()
            .unwrap();
        eprintln!("{report:?}");

        assert_eq!(report.errors, 0, "{:?}", report.first_errors);
        // 24 = INFO + 8 pool + 3 idle + 12 leaked (± one churn connection).
        assert!((11..=12).contains(&report.leaked), "{report:?}");
        let full = report.full_at.unwrap();
        assert!(full < Duration::from_secs(2), "{report:?}");
        assert_eq!(report.storm_from, Some(full));
        assert!(report.storm_rejected >= 100, "{report:?}");
        assert_eq!(report.storm_rejected, report.storm_attempts);
        // 2.5 s of backoff: waits of 0.125–0.25, 0.25–0.5, 0.5–1, 1–2 s.
        assert!((3..=5).contains(&report.backoff_rejected), "{report:?}");
        assert!(
            report.backoff_delays.windows(3).all(|w| w[2] > w[0]),
            "{report:?}"
        );
        assert!(report.nofile.is_some_and(|n| n > 24), "{report:?}");
        assert_eq!(report.waiting, WAITING_CONNS);
        // Nothing was accepted, so nothing was rejected: INFO does not move.
        assert!(report.info_rejected_before_fd.is_some_and(|n| n >= 100));
        assert_eq!(report.info_rejected_before_fd, report.info_rejected_at_end);
        assert!(report.pool_pings >= 8 * 20, "{report:?}");
        assert_eq!(report.pool_reconnects, 0, "{report:?}");
        let limits = fs::read_to_string(format!("/proc/{}/limits", redis.pid())).unwrap();
        let nofile = report.nofile.unwrap().to_string();
        assert!(
            limits
                .lines()
                .any(|l| l.starts_with("Max open files") && l.contains(&nofile)),
            "{limits}"
        );
    }
}
