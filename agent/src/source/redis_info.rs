//! What Redis says of itself, through one persistent connection.
//!
//! The agent keeps exactly one connection to the watched Redis and asks it, once per
//! interval, for the INFO fields it needs (and, now and then, `CONFIG GET maxclients`
//! and `CONFIG GET timeout`). The pieces, in file order:
//!
//! - the snapshot types the rest of the agent consumes ([`RedisSnapshot`] …);
//! - a minimal RESP2 client on `std::net` ([`RespConn`], [`parse_resp`]). We write it
//!   ourselves rather than use the `redis` crate because we need the socket: its local
//!   address is how the tracker recognises the agent's own connection, and every read
//!   and write must have a hard deadline. Every length a server sends is bounded
//!   ([`RespLimits`]) so a hostile or broken server cannot make us allocate without
//!   limit, and a protocol error is an error, never a panic;
//! - where to connect ([`RedisTarget`], parsed from a `redis://` URL) and with which
//!   password ([`Password`], from a file or `REDISCLI_AUTH`, never from argv, never
//!   printed);
//! - [`parse_info`], a pure, tolerant INFO parser;
//! - [`Reconnect`]: exponential backoff with full jitter plus a circuit breaker, pure
//!   and driven by an injected time so it is unit-tested deterministically;
//! - [`RedisPoller`], which owns the connection, and [`spawn_poller`], which runs it on
//!   its own thread.
//!
//! Why INFO is asked section by section, pipelined: `INFO a b c` (several sections in
//! one call) only exists from Redis 7.0, and `INFO`/`INFO default` also computes the
//! memory, persistence, cpu and keyspace sections we do not use. So each poll writes
//! `INFO server`, `INFO clients`, `INFO stats`, `INFO replication`, `INFO cluster` in
//! one `write` and reads the five replies: one round trip, works on every version, and
//! the server only builds the sections we read.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::model::{
    ConfigStatus, InfoFields, Nanos, RedisConfig, RedisSnapshot, RedisStatus, monotonic_now,
    normalize,
};

// ---------------------------------------------------------------------------
// RESP2: values, limits, parser, encoder
// ---------------------------------------------------------------------------

/// Bounds on what a server may send us. The defaults are far above anything INFO or
/// CONFIG GET return, and far below what would hurt the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RespLimits {
    /// Longest bulk string accepted (default 16 MiB).
    pub max_bulk: usize,
    /// Most elements in one array (default 1 Mi).
    pub max_array: usize,
    /// Deepest array nesting (default 8).
    pub max_depth: usize,
    /// Longest simple string, error or length line (default 64 KiB).
    pub max_line: usize,
    /// Most bytes buffered for one reply (default 32 MiB).
    pub max_reply: usize,
}

impl Default for RespLimits {
    fn default() -> Self {
        RespLimits {
            max_bulk: 16 << 20,
            max_array: 1 << 20,
            max_depth: 8,
            max_line: 64 << 10,
            max_reply: 32 << 20,
        }
    }
}

/// One RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RespValue {
    Simple(String),
    /// An error reply, without its leading `-`.
    Error(String),
    Integer(i64),
    /// `None` is the null bulk string (`$-1`).
    Bulk(Option<Vec<u8>>),
    /// `None` is the null array (`*-1`).
    Array(Option<Vec<RespValue>>),
}

impl RespValue {
    fn kind_name(&self) -> &'static str {
        match self {
            RespValue::Simple(_) => "simple string",
            RespValue::Error(_) => "error",
            RespValue::Integer(_) => "integer",
            RespValue::Bulk(None) => "null bulk string",
            RespValue::Bulk(Some(_)) => "bulk string",
            RespValue::Array(None) => "null array",
            RespValue::Array(Some(_)) => "array",
        }
    }
}

/// The server broke the protocol (or one of the [`RespLimits`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RESP protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

fn perr(msg: impl Into<String>) -> ProtocolError {
    ProtocolError(msg.into())
}

/// Parses one reply from the start of `buf`. `Ok(None)`: the reply is not complete
/// yet (read more and call again with the longer buffer); `Ok(Some((value, n)))`:
/// the reply took the first `n` bytes.
pub fn parse_resp(
    buf: &[u8],
    limits: &RespLimits,
) -> Result<Option<(RespValue, usize)>, ProtocolError> {
    parse_at(buf, 0, 0, limits)
}

fn parse_at(
    buf: &[u8],
    pos: usize,
    depth: usize,
    limits: &RespLimits,
) -> Result<Option<(RespValue, usize)>, ProtocolError> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    if !matches!(kind, b'+' | b'-' | b':' | b'$' | b'*') {
        return Err(perr(format!(
            "unexpected type byte {:?} at offset {pos}",
            char::from(kind)
        )));
    }
    let Some((line, next)) = read_line(buf, pos + 1, limits.max_line)? else {
        return Ok(None);
    };
    match kind {
        b'+' => Ok(Some((
            RespValue::Simple(String::from_utf8_lossy(line).into_owned()),
            next,
        ))),
        b'-' => Ok(Some((
            RespValue::Error(String::from_utf8_lossy(line).into_owned()),
            next,
        ))),
        b':' => Ok(Some((RespValue::Integer(parse_int(line)?), next))),
        b'$' => {
            let Some(len) = parse_len(line, limits.max_bulk, "bulk string")? else {
                return Ok(Some((RespValue::Bulk(None), next)));
            };
            let end = next
                .checked_add(len)
                .ok_or_else(|| perr("bulk length overflows"))?;
            let Some(term) = buf.get(end..end.saturating_add(2)) else {
                return Ok(None);
            };
            if term.len() < 2 {
                return Ok(None);
            }
            if term != b"\r\n" {
                return Err(perr("bulk string not terminated by CRLF"));
            }
            Ok(Some((
                RespValue::Bulk(Some(buf[next..end].to_vec())),
                end + 2,
            )))
        }
        _ => {
            let Some(len) = parse_len(line, limits.max_array, "array")? else {
                return Ok(Some((RespValue::Array(None), next)));
            };
            if depth >= limits.max_depth {
                return Err(perr(format!(
                    "arrays nested deeper than {}",
                    limits.max_depth
                )));
            }
            // Never trust the announced length for the allocation.
            let mut items = Vec::with_capacity(len.min(1024));
            let mut at = next;
            for _ in 0..len {
                match parse_at(buf, at, depth + 1, limits)? {
                    Some((value, after)) => {
                        items.push(value);
                        at = after;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((RespValue::Array(Some(items)), at)))
        }
    }
}

/// The line starting at `start` (without its CRLF) and the offset after the CRLF.
fn read_line(
    buf: &[u8],
    start: usize,
    max_line: usize,
) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let rest = buf.get(start..).unwrap_or_default();
    let window = &rest[..rest.len().min(max_line.saturating_add(2))];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(i) => {
            let line = &rest[..i];
            if line.iter().any(|&b| b == b'\r' || b == b'\n') {
                return Err(perr("CR or LF inside a line"));
            }
            Ok(Some((line, start + i + 2)))
        }
        None if window.contains(&b'\n') => Err(perr("line ends with a bare LF")),
        None if rest.len() >= max_line.saturating_add(2) => {
            Err(perr(format!("line longer than {max_line} bytes")))
        }
        None => Ok(None),
    }
}

fn parse_int(line: &[u8]) -> Result<i64, ProtocolError> {
    let digits = line.strip_prefix(b"-").unwrap_or(line);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(perr(format!(
            "invalid integer {:?}",
            String::from_utf8_lossy(line)
        )));
    }
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| perr("integer out of range"))
}

/// A bulk or array length: `None` for -1 (null), an error above `max`.
fn parse_len(line: &[u8], max: usize, what: &str) -> Result<Option<usize>, ProtocolError> {
    let n = parse_int(line)?;
    if n == -1 {
        return Ok(None);
    }
    let n = usize::try_from(n).map_err(|_| perr(format!("negative {what} length {n}")))?;
    if n > max {
        return Err(perr(format!(
            "{what} length {n} exceeds the limit of {max}"
        )));
    }
    Ok(Some(n))
}

/// Appends a command as a RESP array of bulk strings.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "*{}\r\n", args.len());
    for arg in args {
        let _ = write!(out, "${}\r\n", arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

// ---------------------------------------------------------------------------
// The connection
// ---------------------------------------------------------------------------

/// Why a request to Redis failed below the level of its reply.
#[derive(Debug)]
pub enum RedisError {
    /// The host name did not resolve.
    Resolve(String),
    /// TCP connect failed (refused, timed out, unreachable).
    Connect {
        addr: SocketAddr,
        source: io::Error,
    },
    /// A read or write failed or timed out.
    Io {
        context: &'static str,
        source: io::Error,
    },
    /// The server closed the connection.
    Closed,
    Protocol(ProtocolError),
}

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisError::Resolve(msg) => f.write_str(msg),
            RedisError::Connect { addr, source } => {
                write!(f, "connect to {addr}: {}", io_msg(source))
            }
            RedisError::Io { context, source } => write!(f, "{context}: {}", io_msg(source)),
            RedisError::Closed => f.write_str("connection closed by the server"),
            RedisError::Protocol(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RedisError {}

fn io_msg(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timed out".to_string(),
        _ => e.to_string(),
    }
}

impl RedisError {
    /// The peer hung up (EOF, reset, broken pipe).
    fn is_hangup(&self) -> bool {
        match self {
            RedisError::Closed => true,
            RedisError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }
}

/// One RESP2 connection with hard deadlines.
pub struct RespConn {
    stream: TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
    io_timeout: Duration,
    limits: RespLimits,
}

impl fmt::Debug for RespConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RespConn")
            .field("local", &self.local)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

const READ_CHUNK: usize = 16 << 10;

impl RespConn {
    /// Connects within `connect_timeout`; each later request/reply exchange has
    /// `io_timeout` for its write and, separately, for its whole reply.
    pub fn connect(
        addr: SocketAddr,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> Result<Self, RedisError> {
        let min = Duration::from_millis(1);
        let stream = TcpStream::connect_timeout(&addr, connect_timeout.max(min))
            .map_err(|source| RedisError::Connect { addr, source })?;
        let io = |context| move |source| RedisError::Io { context, source };
        let io_timeout = io_timeout.max(min);
        stream
            .set_nodelay(true)
            .map_err(io("setting TCP_NODELAY"))?;
        stream
            .set_write_timeout(Some(io_timeout))
            .map_err(io("setting the write timeout"))?;
        stream
            .set_read_timeout(Some(io_timeout))
            .map_err(io("setting the read timeout"))?;
        let local = normalize(
            stream
                .local_addr()
                .map_err(io("reading the local address"))?,
        );
        Ok(RespConn {
            stream,
            local,
            peer: normalize(addr),
            rbuf: Vec::new(),
            rpos: 0,
            wbuf: Vec::new(),
            io_timeout,
            limits: RespLimits::default(),
        })
    }

    pub fn with_limits(mut self, limits: RespLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The connection's local address: the agent's address as the server sees it
    /// (unless a NAT or proxy sits in between).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Writes several commands in one `write` (a pipeline); read one reply each.
    pub fn send(&mut self, commands: &[&[&[u8]]]) -> Result<(), RedisError> {
        self.wbuf.clear();
        for args in commands {
            encode_command(&mut self.wbuf, args);
        }
        let result = self.stream.write_all(&self.wbuf);
        // The buffer may have held AUTH's password: wipe it.
        self.wbuf.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&self.wbuf);
        self.wbuf.clear();
        result.map_err(|source| RedisError::Io {
            context: "sending a command",
            source,
        })
    }

    /// Sends one command and reads its reply.
    pub fn command(&mut self, args: &[&[u8]]) -> Result<RespValue, RedisError> {
        self.send(&[args])?;
        self.read_reply()
    }

    /// Reads one reply, within `io_timeout` in total.
    pub fn read_reply(&mut self) -> Result<RespValue, RedisError> {
        let deadline = Instant::now() + self.io_timeout;
        loop {
            if self.rpos < self.rbuf.len() {
                match parse_resp(&self.rbuf[self.rpos..], &self.limits) {
                    Ok(Some((value, used))) => {
                        self.rpos += used;
                        if self.rpos == self.rbuf.len() {
                            self.rbuf.clear();
                            self.rpos = 0;
                        }
                        return Ok(value);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(RedisError::Protocol(e)),
                }
            }
            if self.rpos > 0 {
                self.rbuf.drain(..self.rpos);
                self.rpos = 0;
            }
            if self.rbuf.len() >= self.limits.max_reply {
                return Err(RedisError::Protocol(perr(format!(
                    "reply larger than {} bytes",
                    self.limits.max_reply
                ))));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(RedisError::Io {
                    context: "reading a reply",
                    source: io::ErrorKind::TimedOut.into(),
                });
            }
            self.stream
                .set_read_timeout(Some(remaining))
                .map_err(|source| RedisError::Io {
                    context: "setting the read timeout",
                    source,
                })?;
            let mut chunk = [0u8; READ_CHUNK];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(RedisError::Closed),
                Ok(n) => self.rbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(RedisError::Io {
                        context: "reading a reply",
                        source,
                    });
                }
            }
        }
    }

    /// Whether the server has already sent something (or closed) although we asked
    /// nothing: Redis rejects a connection (maxclients, protected mode) by writing an
    /// error and closing right after the accept. `Err(Closed)` on EOF.
    fn has_unsolicited_input(&mut self) -> Result<bool, RedisError> {
        if self.rpos < self.rbuf.len() {
            return Ok(true);
        }
        let io = |context| move |source| RedisError::Io { context, source };
        self.stream
            .set_nonblocking(true)
            .map_err(io("setting non-blocking mode"))?;
        let mut byte = [0u8; 1];
        let peeked = self.stream.peek(&mut byte);
        self.stream
            .set_nonblocking(false)
            .map_err(io("setting blocking mode"))?;
        match peeked {
            Ok(0) => Err(RedisError::Closed),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(source) => Err(RedisError::Io {
                context: "checking for a greeting",
                source,
            }),
        }
    }
}

// ---------------------------------------------------------------------------
// Where to connect, and the password
// ---------------------------------------------------------------------------

/// A bad `--redis` URL or password source. The message never contains a password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisArgError(pub String);

impl fmt::Display for RedisArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedisArgError {}

fn arg_err(msg: impl Into<String>) -> RedisArgError {
    RedisArgError(msg.into())
}

pub const DEFAULT_REDIS_PORT: u16 = 6379;

/// Where the agent connects: `redis://[user@]host[:port][/db]`, `host[:port]`,
/// `[v6addr][:port]`. The db number is accepted and ignored (INFO is server-wide).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RedisTarget {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// ACL user for `AUTH user password`; `None`: `AUTH password`.
    pub username: Option<String>,
}

impl RedisTarget {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        RedisTarget {
            host: host.into(),
            port,
            username: None,
        }
    }

    pub fn parse(input: &str) -> Result<Self, RedisArgError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(arg_err("empty Redis address (expected redis://host:port)"));
        }
        let rest = match s.find("://") {
            Some(i) => {
                let scheme = s[..i].to_ascii_lowercase();
                match scheme.as_str() {
                    "redis" => &s[i + 3..],
                    "rediss" | "valkeys" => {
                        return Err(arg_err(
                            "TLS (rediss://) is not supported yet: connwatch can only poll a \
                             plain-TCP Redis port (use redis://host:port)",
                        ));
                    }
                    _ => {
                        return Err(arg_err(format!(
                            "unsupported scheme '{scheme}://' in the Redis address \
                             (expected redis://host:port)"
                        )));
                    }
                }
            }
            None => s,
        };
        // Check for a password before any message that could echo the input: the
        // userinfo ends at the last '@' of the whole remainder, so a password holding
        // a raw '/' is still recognised as one (and never quoted as a "path").
        let (userinfo, after_user) = match rest.rfind('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let (hostport, path) = match after_user.find('/') {
            Some(i) => after_user.split_at(i),
            None => (after_user, ""),
        };
        let username = match userinfo {
            Some(u) if u.contains(':') => {
                return Err(arg_err(
                    "a password in the Redis URL is not accepted: command lines are visible \
                     to every user of the host; give it with --password-file FILE or the \
                     REDISCLI_AUTH environment variable",
                ));
            }
            Some("") | None => None,
            Some(u) => Some(percent_decode(u)?),
        };
        let db = path.strip_prefix('/').unwrap_or(path);
        if !db.bytes().all(|b| b.is_ascii_digit()) {
            return Err(arg_err(format!(
                "unexpected path {path:?} in the Redis address (only an optional /db number \
                 is accepted)"
            )));
        }
        let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
            let Some((v6, after)) = inner.split_once(']') else {
                return Err(arg_err(format!(
                    "unterminated '[' in the Redis address {hostport:?}"
                )));
            };
            if v6.parse::<Ipv6Addr>().is_err() {
                return Err(arg_err(format!("invalid IPv6 address [{v6}]")));
            }
            let port = match after {
                "" => DEFAULT_REDIS_PORT,
                _ => match after.strip_prefix(':') {
                    Some(p) => parse_port(p)?,
                    None => {
                        return Err(arg_err(format!(
                            "unexpected {after:?} after [{v6}] in the Redis address"
                        )));
                    }
                },
            };
            (v6, port)
        } else if hostport.parse::<Ipv6Addr>().is_ok() {
            (hostport, DEFAULT_REDIS_PORT)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, parse_port(p)?),
                None => (hostport, DEFAULT_REDIS_PORT),
            }
        };
        if host.is_empty() {
            return Err(arg_err(format!("missing host in the Redis address {s:?}")));
        }
        if host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "[]@/?#".contains(c))
        {
            return Err(arg_err(format!(
                "invalid host {host:?} in the Redis address"
            )));
        }
        Ok(RedisTarget {
            host: host.to_string(),
            port,
            username,
        })
    }

    /// The first address the host name resolves to.
    pub fn resolve(&self) -> Result<SocketAddr, RedisError> {
        let mut addrs = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| RedisError::Resolve(format!("cannot resolve {}: {e}", self.host)))?;
        addrs
            .next()
            .ok_or_else(|| RedisError::Resolve(format!("{} resolves to no address", self.host)))
    }

    /// The address when the host is an IP literal (no lookup needed).
    fn literal_addr(&self) -> Option<SocketAddr> {
        self.host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }
}

impl FromStr for RedisTarget {
    type Err = RedisArgError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RedisTarget::parse(s)
    }
}

impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("redis://")?;
        if let Some(user) = &self.username {
            write!(f, "{user}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

fn parse_port(p: &str) -> Result<u16, RedisArgError> {
    match p.parse::<u16>() {
        Ok(port) if port != 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
        // The value is not quoted: `redis://user:secret` (a forgotten '@host')
        // would put a password here.
        _ => Err(arg_err(
            "invalid port in the Redis address (expected redis://[user@]host:port with a port of 1-65535)",
        )),
    }
}

fn percent_decode(s: &str) -> Result<String, RedisArgError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| arg_err("invalid percent-encoding in the Redis user name"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| arg_err("the Redis user name is not valid UTF-8"))
}

/// A Redis password. Its `Debug` prints `Password(<redacted>)`; it has no `Display`;
/// its bytes are overwritten when it is dropped (best effort).
pub struct Password(Vec<u8>);

impl Password {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Password(secret.into())
    }

    /// Reads the file and removes one trailing newline (`\n` or `\r\n`).
    pub fn from_file(path: &Path) -> Result<Self, RedisArgError> {
        let mut bytes = std::fs::read(path)
            .map_err(|e| arg_err(format!("cannot read password file {}: {e}", path.display())))?;
        if bytes.ends_with(b"\r\n") {
            bytes.truncate(bytes.len() - 2);
        } else if bytes.ends_with(b"\n") {
            bytes.truncate(bytes.len() - 1);
        }
        let pw = Password(bytes);
        if pw.0.is_empty() {
            return Err(arg_err(format!(
                "password file {} is empty",
                path.display()
            )));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                log::warn!(
                    "password file {} is readable by other users (mode {:o})",
                    path.display(),
                    meta.permissions().mode() & 0o777
                );
            }
        }
        Ok(pw)
    }

    fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Replaces the password wherever it appears in `text` (a server may echo a
    /// command's arguments in an error, e.g. "unknown command 'AUTH', with args …").
    fn scrub(&self, text: &str) -> String {
        match std::str::from_utf8(&self.0) {
            Ok(p) if !p.is_empty() && text.contains(p) => text.replace(p, "<redacted>"),
            _ => text.to_string(),
        }
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Drop for Password {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&self.0);
    }
}

/// The password from `file` if given (it wins), else from `REDISCLI_AUTH` (as
/// redis-cli does), else none. An empty `REDISCLI_AUTH` counts as unset.
pub fn load_password(file: Option<&Path>) -> Result<Option<Password>, RedisArgError> {
    load_password_from(file, std::env::var_os("REDISCLI_AUTH"))
}

fn load_password_from(
    file: Option<&Path>,
    env: Option<OsString>,
) -> Result<Option<Password>, RedisArgError> {
    if let Some(path) = file {
        return Password::from_file(path).map(Some);
    }
    use std::os::unix::ffi::OsStringExt;
    match env.map(OsStringExt::into_vec) {
        Some(v) if !v.is_empty() => Ok(Some(Password(v))),
        _ => Ok(None),
    }
}

// ---------------------------------------------------------------------------
// INFO
// ---------------------------------------------------------------------------

/// The reply was not INFO text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoError {
    /// The first bytes of the text, for the log.
    pub start: String,
}

impl fmt::Display for InfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "reply is not INFO text (no key:value line; starts with {:?})",
            self.start
        )
    }
}

impl std::error::Error for InfoError {}

/// Parses INFO text (one or several sections, CRLF or LF). Unknown keys are ignored;
/// a value that does not parse leaves its field `None`. Fails only when there is
/// no `key:value` line at all.
pub fn parse_info(text: &str) -> Result<InfoFields, InfoError> {
    let mut f = InfoFields::default();
    let mut lines = 0usize;
    let mut redis_version = None;
    let mut valkey_version = None;
    let mut server_name = None;
    for raw in text.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            continue;
        }
        lines += 1;
        let value = value.trim();
        let text = || (!value.is_empty()).then(|| value.to_string());
        let num = || value.parse::<u64>().ok();
        match key {
            "redis_version" => redis_version = text(),
            "valkey_version" => valkey_version = text(),
            "server_name" => server_name = text(),
            "process_id" => f.process_id = value.parse().ok(),
            "tcp_port" => f.tcp_port = value.parse().ok(),
            "role" => f.role = text(),
            "connected_clients" => f.connected_clients = num(),
            "blocked_clients" => f.blocked_clients = num(),
            "maxclients" => f.maxclients = num(),
            "cluster_connections" => f.cluster_connections = num(),
            "connected_slaves" => f.connected_slaves = num(),
            "rejected_connections" => f.rejected_connections = num(),
            "total_connections_received" => f.total_connections_received = num(),
            "cluster_enabled" => {
                f.cluster_enabled = match value {
                    "0" => Some(false),
                    "1" => Some(true),
                    _ => None,
                }
            }
            _ => {
                if let Some(n) = key.strip_prefix("slave")
                    && !n.is_empty()
                    && n.bytes().all(|b| b.is_ascii_digit())
                    && let Some(addr) = parse_replica(value)
                {
                    f.replicas.push(addr);
                }
            }
        }
    }
    if lines == 0 {
        return Err(InfoError {
            start: text.chars().take(40).collect(),
        });
    }
    f.server = server_name.or_else(|| {
        if valkey_version.is_some() {
            Some("valkey".to_string())
        } else {
            redis_version.as_ref().map(|_| "redis".to_string())
        }
    });
    f.version = valkey_version.or(redis_version);
    Ok(f)
}

/// `ip=10.0.0.2,port=6380,state=online,offset=…,lag=0` → 10.0.0.2:6380.
fn parse_replica(value: &str) -> Option<SocketAddr> {
    let mut ip = None;
    let mut port = None;
    for part in value.split(',') {
        match part.split_once('=') {
            Some(("ip", v)) => ip = v.parse::<IpAddr>().ok(),
            Some(("port", v)) => port = v.parse::<u16>().ok(),
            _ => {}
        }
    }
    Some(normalize(SocketAddr::new(ip?, port?)))
}

// ---------------------------------------------------------------------------
// Backoff and circuit breaker
// ---------------------------------------------------------------------------

/// Reconnect pacing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Ceiling of the first delay; it doubles per consecutive failure…
    pub base: Duration,
    /// …up to this.
    pub cap: Duration,
    /// Consecutive failures that open the breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker allows no attempt at all.
    pub breaker_open: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            breaker_threshold: 5,
            breaker_open: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Attempts allowed, paced by backoff.
    Closed,
    /// No attempt before `until`.
    Open { until: Nanos },
    /// One trial attempt allowed; its outcome closes or reopens the breaker.
    HalfOpen,
}

/// A small, seedable PRNG (SplitMix64): jitter needs no more.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max`.
    fn up_to(&mut self, max: u64) -> u64 {
        let range = u128::from(max) + 1;
        ((u128::from(self.next()) * range) >> 64) as u64
    }
}

fn dur_nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// When the next connection attempt may happen. Pure: time comes in as `now`.
///
/// Closed: after the n-th consecutive failure the next attempt waits a uniformly
/// random delay in `[0, min(cap, base·2ⁿ⁻¹)]` ("full jitter", so a fleet of agents
/// does not reconnect in step). At `breaker_threshold` consecutive failures the
/// breaker opens: no attempt for `breaker_open`. Then one trial (half-open): success
/// closes it and resets the count, failure reopens it for another `breaker_open`.
#[derive(Clone, Debug)]
pub struct Reconnect {
    policy: BackoffPolicy,
    failures: u32,
    retry_at: Option<Nanos>,
    state: BreakerState,
    trial_taken: bool,
    rng: SplitMix64,
}

impl Reconnect {
    pub fn new(policy: BackoffPolicy, seed: u64) -> Self {
        Reconnect {
            policy,
            failures: 0,
            retry_at: None,
            state: BreakerState::Closed,
            trial_taken: false,
            rng: SplitMix64(seed),
        }
    }

    /// Whether an attempt may start at `now`; if so, the caller makes exactly one and
    /// reports it with [`on_success`](Self::on_success) or
    /// [`on_failure`](Self::on_failure).
    pub fn try_acquire(&mut self, now: Nanos) -> bool {
        match self.state {
            BreakerState::Closed => self.retry_at.is_none_or(|t| now >= t),
            BreakerState::Open { until } => {
                if now >= until {
                    self.state = BreakerState::HalfOpen;
                    self.trial_taken = true;
                    true
                } else {
                    false
                }
            }
            BreakerState::HalfOpen => !std::mem::replace(&mut self.trial_taken, true),
        }
    }

    pub fn on_success(&mut self) {
        self.failures = 0;
        self.retry_at = None;
        self.state = BreakerState::Closed;
        self.trial_taken = false;
    }

    pub fn on_failure(&mut self, now: Nanos) {
        self.failures = self.failures.saturating_add(1);
        let open = match self.state {
            BreakerState::Closed => self.failures >= self.policy.breaker_threshold,
            BreakerState::Open { .. } | BreakerState::HalfOpen => true,
        };
        if open {
            let until = now.saturating_add(dur_nanos(self.policy.breaker_open));
            self.state = BreakerState::Open { until };
            self.retry_at = Some(until);
            self.trial_taken = false;
        } else {
            let ceiling = dur_nanos(self.ceiling(self.failures));
            self.retry_at = Some(now.saturating_add(self.rng.up_to(ceiling)));
        }
    }

    /// The largest delay after `failures` consecutive failures.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.policy.base.saturating_mul(factor).min(self.policy.cap)
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The earliest time of the next attempt (`None`: now).
    pub fn retry_at(&self) -> Option<Nanos> {
        self.retry_at
    }
}

// ---------------------------------------------------------------------------
// The poller
// ---------------------------------------------------------------------------

/// The sections each poll asks for, pipelined (see the module comment).
const INFO_COMMANDS: [&[&[u8]]; 5] = [
    &[b"INFO", b"server"],
    &[b"INFO", b"clients"],
    &[b"INFO", b"stats"],
    &[b"INFO", b"replication"],
    &[b"INFO", b"cluster"],
];

const CLIENT_NAME: &[u8] = b"connwatch";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollerOptions {
    pub connect_timeout: Duration,
    /// Budget of each write, and of each reply.
    pub io_timeout: Duration,
    pub backoff: BackoffPolicy,
    /// How often CONFIG GET is asked again when INFO does not report `maxclients`
    /// (it is also asked whenever INFO's `maxclients` changes).
    pub config_refresh: Duration,
    pub limits: RespLimits,
    /// Seed of the backoff jitter.
    pub seed: u64,
}

impl Default for PollerOptions {
    fn default() -> Self {
        PollerOptions {
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(1),
            backoff: BackoffPolicy::default(),
            config_refresh: Duration::from_secs(60),
            limits: RespLimits::default(),
            seed: monotonic_now() ^ (u64::from(std::process::id()) << 32),
        }
    }
}

/// Why the connection is down, and what that means.
#[derive(Debug)]
struct Failure {
    status: RedisStatus,
    message: String,
}

impl Failure {
    fn new(status: RedisStatus, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }
}

/// The status an error reply means, when it means more than "error".
fn status_of_error_reply(msg: &str) -> Option<RedisStatus> {
    if msg.starts_with("WRONGPASS")
        || msg.starts_with("ERR invalid password")
        || msg.starts_with("ERR invalid username-password pair")
    {
        Some(RedisStatus::AuthFailed)
    } else if msg.starts_with("NOAUTH") {
        Some(RedisStatus::NoAuth)
    } else if msg.starts_with("ERR max number of clients") || msg.starts_with("DENIED") {
        Some(RedisStatus::Rejected)
    } else {
        None
    }
}

/// One line, at most 300 characters.
fn one_line(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    if s.chars().count() > 300 {
        out.push('…');
    }
    out
}

/// An I/O failure on a connection that was working: it is gone.
fn io_failure(e: RedisError) -> Failure {
    let status = match e {
        RedisError::Protocol(_) => RedisStatus::Error,
        _ => RedisStatus::Unreachable,
    };
    Failure::new(status, e.to_string())
}

/// Owns the one connection to Redis; call [`poll`](Self::poll) once per interval
/// from a thread that may block (each call blocks at most for the connect timeout
/// plus a few I/O timeouts).
#[derive(Debug)]
pub struct RedisPoller {
    target: RedisTarget,
    password: Option<Password>,
    opts: PollerOptions,
    conn: Option<RespConn>,
    reconnect: Reconnect,
    attempts: u64,
    status: RedisStatus,
    error: Option<String>,
    config_status: ConfigStatus,
    info: Option<InfoFields>,
    config: Option<RedisConfig>,
    own_addr: Option<SocketAddr>,
    resolved: Option<SocketAddr>,
    config_asked_at: Option<Nanos>,
    config_disabled: bool,
}

impl RedisPoller {
    pub fn new(target: RedisTarget, password: Option<Password>) -> Self {
        Self::with_options(target, password, PollerOptions::default())
    }

    pub fn with_options(
        target: RedisTarget,
        password: Option<Password>,
        opts: PollerOptions,
    ) -> Self {
        RedisPoller {
            resolved: target.literal_addr(),
            target,
            password,
            reconnect: Reconnect::new(opts.backoff, opts.seed),
            opts,
            conn: None,
            attempts: 0,
            status: RedisStatus::Connecting,
            error: None,
            config_status: ConfigStatus::Unknown,
            info: None,
            config: None,
            own_addr: None,
            config_asked_at: None,
            config_disabled: false,
        }
    }

    /// Polls now (CLOCK_MONOTONIC).
    pub fn poll(&mut self) -> RedisSnapshot {
        self.poll_at(monotonic_now())
    }

    /// Polls with `now` as the current time (nanoseconds of a monotonic clock), which
    /// drives the backoff, the breaker and the CONFIG refresh.
    ///
    /// With a working connection: one pipelined INFO round trip (plus CONFIG GET when
    /// due). If the connection broke, one immediate reconnect attempt. Without a
    /// connection: one attempt if the backoff and breaker allow it, else an immediate
    /// return with the current status and the last good values.
    pub fn poll_at(&mut self, now: Nanos) -> RedisSnapshot {
        if self.conn.is_some() {
            match self.poll_connected(now) {
                Ok(()) => return self.snapshot(),
                Err(f) => {
                    self.conn = None;
                    self.fail(f);
                }
            }
        }
        if !self.reconnect.try_acquire(now) {
            return self.snapshot();
        }
        self.attempts += 1;
        match self.establish() {
            Ok(conn) => {
                self.conn = Some(conn);
                self.config_disabled = false;
                self.config_asked_at = None;
                match self.poll_connected(now) {
                    Ok(()) => self.reconnect.on_success(),
                    Err(f) => {
                        self.conn = None;
                        self.reconnect.on_failure(now);
                        self.fail(f);
                    }
                }
            }
            Err(f) => {
                self.reconnect.on_failure(now);
                self.fail(f);
            }
        }
        self.snapshot()
    }

    /// The current state, without polling.
    pub fn snapshot(&self) -> RedisSnapshot {
        RedisSnapshot {
            status: self.status,
            error: self.error.clone(),
            config_status: self.config_status,
            info: self.info.clone(),
            config: self.config,
            own_addr: self.own_addr,
            target: self.resolved,
        }
    }

    /// Connection attempts made so far (TCP connects started).
    pub fn connect_attempts(&self) -> u64 {
        self.attempts
    }

    /// The backoff and breaker state.
    pub fn reconnect(&self) -> &Reconnect {
        &self.reconnect
    }

    pub fn target(&self) -> &RedisTarget {
        &self.target
    }

    fn set_status(&mut self, status: RedisStatus, error: Option<String>) {
        if status != self.status || error != self.error {
            match (&error, status) {
                (None, RedisStatus::Ok) if self.status != RedisStatus::Connecting => {
                    log::info!("redis {}: INFO answers again", self.target)
                }
                (None, _) => log::debug!("redis {}: {status:?}", self.target),
                (Some(e), _) => log::warn!("redis {}: {status:?}: {e}", self.target),
            }
        }
        self.status = status;
        self.error = error;
    }

    fn fail(&mut self, f: Failure) {
        let message = match &self.password {
            Some(p) => p.scrub(&f.message),
            None => f.message,
        };
        self.set_status(f.status, Some(one_line(&message)));
    }

    /// Connect, AUTH, CLIENT SETNAME.
    fn establish(&mut self) -> Result<RespConn, Failure> {
        let addr = self
            .target
            .resolve()
            .map_err(|e| Failure::new(RedisStatus::Unreachable, e.to_string()))?;
        self.resolved = Some(addr);
        let mut conn = RespConn::connect(addr, self.opts.connect_timeout, self.opts.io_timeout)
            .map_err(|e| Failure::new(RedisStatus::Unreachable, e.to_string()))?
            .with_limits(self.opts.limits);
        // Our own attempt shows in the kernel's view too, rejected or not.
        self.own_addr = Some(conn.local_addr());

        // A rejection (maxclients, protected mode) arrives unasked, right after the
        // accept: read it before sending anything, the password least of all.
        match conn.has_unsolicited_input() {
            Ok(false) => {}
            Ok(true) => {
                return Err(match conn.read_reply() {
                    Ok(RespValue::Error(msg)) => rejection(&msg),
                    Ok(other) => Failure::new(
                        RedisStatus::Error,
                        format!("unexpected {} before any command", other.kind_name()),
                    ),
                    Err(e) => setup_io_failure(e, true),
                });
            }
            Err(e) => return Err(setup_io_failure(e, true)),
        }

        let mut first = true;
        if let Some(pw) = &self.password {
            let reply = match &self.target.username {
                Some(user) => conn.command(&[b"AUTH", user.as_bytes(), pw.expose()]),
                None => conn.command(&[b"AUTH", pw.expose()]),
            };
            match reply {
                Ok(RespValue::Simple(_)) => {}
                Ok(RespValue::Error(msg)) if msg.contains("without any password configured") => {
                    log::warn!(
                        "redis {}: a password was given but the server has none: {}",
                        self.target,
                        one_line(&msg)
                    );
                }
                Ok(RespValue::Error(msg)) => {
                    let status = status_of_error_reply(&msg).unwrap_or(RedisStatus::Error);
                    return Err(match status {
                        RedisStatus::Rejected => rejection(&msg),
                        _ => Failure::new(status, format!("AUTH failed: {msg}")),
                    });
                }
                Ok(other) => {
                    return Err(Failure::new(
                        RedisStatus::Error,
                        format!("unexpected {} in reply to AUTH", other.kind_name()),
                    ));
                }
                Err(e) => return Err(setup_io_failure(e, first)),
            }
            first = false;
        }

        match conn.command(&[b"CLIENT", b"SETNAME", CLIENT_NAME]) {
            Ok(RespValue::Error(msg)) => match status_of_error_reply(&msg) {
                Some(RedisStatus::Rejected) => return Err(rejection(&msg)),
                Some(RedisStatus::NoAuth) => return Err(no_auth(&msg)),
                Some(status) => return Err(Failure::new(status, msg)),
                // Renamed or denied: the name only helps people reading CLIENT LIST.
                None => log::debug!("redis {}: CLIENT SETNAME: {}", self.target, one_line(&msg)),
            },
            Ok(_) => {}
            Err(e) => return Err(setup_io_failure(e, first)),
        }
        Ok(conn)
    }

    /// One INFO round trip, and CONFIG GET when due. `Err`: drop the connection.
    fn poll_connected(&mut self, now: Nanos) -> Result<(), Failure> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(Failure::new(RedisStatus::Unreachable, "not connected"));
        };
        conn.send(&INFO_COMMANDS).map_err(io_failure)?;
        let mut text = String::new();
        let mut bad_reply = None;
        // Read every reply, even after an error, to stay in step with the server.
        for _ in INFO_COMMANDS {
            match conn.read_reply().map_err(io_failure)? {
                RespValue::Bulk(Some(body)) => {
                    text.push_str(&String::from_utf8_lossy(&body));
                    text.push('\n');
                }
                RespValue::Error(msg) => {
                    bad_reply.get_or_insert(msg);
                }
                other => {
                    bad_reply.get_or_insert_with(|| format!("unexpected {}", other.kind_name()));
                }
            }
        }
        if let Some(msg) = bad_reply {
            return match status_of_error_reply(&msg) {
                Some(RedisStatus::NoAuth) => Err(no_auth(&msg)),
                Some(RedisStatus::Rejected) => Err(rejection(&msg)),
                Some(status) => Err(Failure::new(status, format!("INFO: {msg}"))),
                // LOADING, BUSY, an ACL that denies INFO…: the connection is fine.
                None => {
                    self.set_status(RedisStatus::Error, Some(one_line(&format!("INFO: {msg}"))));
                    Ok(())
                }
            };
        }
        let info = match parse_info(&text) {
            Ok(info) => info,
            Err(e) => {
                self.set_status(RedisStatus::Error, Some(one_line(&e.to_string())));
                return Ok(());
            }
        };
        let result = self.refresh_config(now, &info);
        self.info = Some(info);
        match result {
            Ok(()) => {
                self.set_status(RedisStatus::Ok, None);
                Ok(())
            }
            Err(f) => Err(f),
        }
    }

    fn refresh_config(&mut self, now: Nanos, info: &InfoFields) -> Result<(), Failure> {
        if self.config_disabled {
            self.config = Some(RedisConfig {
                maxclients: info.maxclients,
                timeout: None,
            });
            return Ok(());
        }
        let changed = self
            .info
            .as_ref()
            .is_some_and(|old| old.maxclients != info.maxclients);
        let due = match self.config_asked_at {
            None => true,
            Some(t) => changed || now.saturating_sub(t) >= dur_nanos(self.opts.config_refresh),
        };
        if !due {
            return Ok(());
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(Failure::new(RedisStatus::Unreachable, "not connected"));
        };
        conn.send(&[
            &[b"CONFIG", b"GET", b"maxclients"],
            &[b"CONFIG", b"GET", b"timeout"],
        ])
        .map_err(io_failure)?;
        let maxclients = conn.read_reply().map_err(io_failure)?;
        let timeout = conn.read_reply().map_err(io_failure)?;
        self.config_asked_at = Some(now);
        match (
            config_value(&maxclients, "maxclients"),
            config_value(&timeout, "timeout"),
        ) {
            (Ok(maxclients), Ok(timeout)) => {
                self.config = Some(RedisConfig {
                    maxclients,
                    timeout,
                });
                self.config_status = ConfigStatus::Ok;
            }
            (Err(reason), _) | (_, Err(reason)) => {
                log::debug!(
                    "redis {}: CONFIG GET unavailable ({}); using INFO's maxclients, not \
                     asking again on this connection",
                    self.target,
                    one_line(&reason)
                );
                self.config_disabled = true;
                self.config_status = ConfigStatus::Unavailable;
                self.config = Some(RedisConfig {
                    maxclients: info.maxclients,
                    timeout: None,
                });
            }
        }
        Ok(())
    }
}

/// `CONFIG GET name` → `[name, value]`; an empty array: the server has no such
/// parameter.
fn config_value(reply: &RespValue, name: &str) -> Result<Option<u64>, String> {
    match reply {
        RespValue::Error(msg) => Err(msg.clone()),
        RespValue::Array(Some(items)) if items.is_empty() => Ok(None),
        RespValue::Array(Some(items)) => match items.as_slice() {
            [_, RespValue::Bulk(Some(v))] => Ok(std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse().ok())),
            _ => Err(format!("unexpected reply to CONFIG GET {name}")),
        },
        other => Err(format!(
            "unexpected {} in reply to CONFIG GET {name}",
            other.kind_name()
        )),
    }
}

fn rejection(msg: &str) -> Failure {
    Failure::new(RedisStatus::Rejected, format!("connection rejected: {msg}"))
}

fn no_auth(msg: &str) -> Failure {
    Failure::new(
        RedisStatus::NoAuth,
        format!("{msg} (give the password with --password-file FILE or REDISCLI_AUTH)"),
    )
}

/// An I/O failure while setting the connection up. A hang-up before the first reply
/// is how Redis turns a client away when its error did not reach us.
fn setup_io_failure(e: RedisError, first_exchange: bool) -> Failure {
    if first_exchange && e.is_hangup() {
        Failure::new(
            RedisStatus::Rejected,
            format!(
                "connection closed by the server right after connect, before any reply \
                 (maxclients reached or protected mode?): {e}"
            ),
        )
    } else {
        io_failure(e)
    }
}

// ---------------------------------------------------------------------------
// The poller thread
// ---------------------------------------------------------------------------

/// Shortest interval [`spawn_poller`] accepts (shorter ones are raised to it).
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Snapshots waiting for the consumer; when it falls behind, new ones are dropped.
const SNAPSHOT_QUEUE: usize = 4;

/// How quickly the thread notices that the receiver was dropped.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// Polls `target` every `interval` on a thread of its own and sends each snapshot.
/// The thread ends (closing the connection) within ~50 ms once the receiver is
/// dropped. The receiver is a tokio channel: `recv().await` it on the runtime, or
/// `blocking_recv()` it from a plain thread.
pub fn spawn_poller(
    target: RedisTarget,
    password: Option<Password>,
    interval: Duration,
) -> io::Result<(
    tokio::sync::mpsc::Receiver<RedisSnapshot>,
    std::thread::JoinHandle<()>,
)> {
    spawn_poller_with(RedisPoller::new(target, password), interval)
}

/// [`spawn_poller`] with a poller built by the caller (options, seed).
pub fn spawn_poller_with(
    poller: RedisPoller,
    interval: Duration,
) -> io::Result<(
    tokio::sync::mpsc::Receiver<RedisSnapshot>,
    std::thread::JoinHandle<()>,
)> {
    let interval = interval.max(MIN_POLL_INTERVAL);
    let (tx, rx) = tokio::sync::mpsc::channel(SNAPSHOT_QUEUE);
    let handle = std::thread::Builder::new()
        .name("connwatch-redis".to_string())
        .spawn(move || run_poller(poller, tx, interval))?;
    Ok((rx, handle))
}

fn run_poller(
    mut poller: RedisPoller,
    tx: tokio::sync::mpsc::Sender<RedisSnapshot>,
    interval: Duration,
) {
    use tokio::sync::mpsc::error::TrySendError;
    let mut next = Instant::now();
    loop {
        if tx.is_closed() {
            return;
        }
        // try_send, not blocking_send: a slow consumer must not stall the polls
        // (and let Redis's idle timeout close our connection).
        match tx.try_send(poller.poll()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => log::debug!("redis snapshot dropped: consumer behind"),
            Err(TrySendError::Closed(_)) => return,
        }
        next += interval;
        let now = Instant::now();
        if next < now {
            // A poll overran: skip the missed ticks rather than poll in a burst.
            next = now + interval;
        }
        loop {
            if tx.is_closed() {
                return;
            }
            let now = Instant::now();
            if now >= next {
                break;
            }
            std::thread::sleep((next - now).min(STOP_CHECK));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use std::net::TcpListener;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicU32, Ordering};

    const MS: Nanos = 1_000_000;
    const SEC: Nanos = 1_000_000_000;

    fn parse(bytes: &[u8]) -> Result<Option<(RespValue, usize)>, ProtocolError> {
        parse_resp(bytes, &RespLimits::default())
    }

    fn bulk(s: &str) -> RespValue {
        RespValue::Bulk(Some(s.as_bytes().to_vec()))
    }

    // ---- RESP ----

    #[test]
    fn resp_parses_every_type() {
        let cases: Vec<(&[u8], RespValue)> = vec![
            (b"+OK\r\n", RespValue::Simple("OK".into())),
            (b"-ERR bad\r\n", RespValue::Error("ERR bad".into())),
            (b":-42\r\n", RespValue::Integer(-42)),
            (b":0\r\n", RespValue::Integer(0)),
            (b"$3\r\nfoo\r\n", bulk("foo")),
            (b"$0\r\n\r\n", bulk("")),
            (b"$4\r\na\r\nb\r\n", bulk("a\r\nb")),
            (b"$-1\r\n", RespValue::Bulk(None)),
            (b"*-1\r\n", RespValue::Array(None)),
            (b"*0\r\n", RespValue::Array(Some(vec![]))),
            (
                b"*2\r\n*1\r\n:1\r\n$-1\r\n",
                RespValue::Array(Some(vec![
                    RespValue::Array(Some(vec![RespValue::Integer(1)])),
                    RespValue::Bulk(None),
                ])),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse(input),
                Ok(Some((want, input.len()))),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn resp_pipelined_replies_parse_one_at_a_time() {
        let buf = b"+OK\r\n:7\r\n";
        assert_eq!(parse(buf), Ok(Some((RespValue::Simple("OK".into()), 5))));
        assert_eq!(parse(&buf[5..]), Ok(Some((RespValue::Integer(7), 4))));
    }

    #[test]
    fn resp_every_truncation_is_incomplete_not_an_error() {
        let full: &[u8] = b"*3\r\n$5\r\nhello\r\n*2\r\n:1\r\n-ERR x\r\n+OK\r\n";
        assert!(matches!(parse(full), Ok(Some((_, n))) if n == full.len()));
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn resp_rejects_huge_lengths() {
        let e = parse(b"$16777217\r\n").unwrap_err();
        assert!(e.0.contains("exceeds the limit of 16777216"), "{e}");
        // At the limit: allowed, waits for the data.
        assert_eq!(parse(b"$16777216\r\n"), Ok(None));
        assert!(parse(b"*1048577\r\n").is_err());
        assert_eq!(parse(b"*1048576\r\n"), Ok(None));
        assert!(parse(b"$99999999999999999999999\r\n").is_err());
        assert!(parse(b"$-2\r\n").is_err());
        assert!(parse(b"*-5\r\n").is_err());
    }

    #[test]
    fn resp_rejects_deep_nesting() {
        let nested = |n: usize| {
            let mut v = b"*1\r\n".repeat(n);
            v.extend_from_slice(b":1\r\n");
            v
        };
        assert!(matches!(parse(&nested(8)), Ok(Some(_))));
        let e = parse(&nested(9)).unwrap_err();
        assert!(e.0.contains("nested deeper than 8"), "{e}");
        // Far deeper input fails the same way, without recursing further.
        assert!(parse(&nested(100_000)).is_err());
    }

    #[test]
    fn resp_rejects_garbage() {
        let bad: &[&[u8]] = &[
            b"HTTP/1.1 400 Bad Request\r\n",
            b"hello\n",
            b"+OK\n",
            b"$3\r\nfooXX",
            b":12a\r\n",
            b":\r\n",
            b":-\r\n",
            b":+5\r\n",
            b"$ 3\r\nfoo\r\n",
            b"+a\rb\r\n",
            b"\x00\x01",
            b"%2\r\n", // RESP3 map: we never ask for RESP3
        ];
        for input in bad {
            assert!(
                parse(input).is_err(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let limits = RespLimits {
            max_line: 16,
            ..RespLimits::default()
        };
        let long = b"+"
            .iter()
            .chain([b'a'; 40].iter())
            .copied()
            .collect::<Vec<u8>>();
        assert!(
            parse_resp(&long, &limits)
                .unwrap_err()
                .0
                .contains("longer than 16")
        );
    }

    #[test]
    fn resp_random_bytes_never_panic() {
        let mut rng = SplitMix64(7);
        let alphabet = b"*$+-:\r\n0123456789-1abc";
        let mut outcomes = [0usize; 3];
        for _ in 0..20_000 {
            let len = rng.up_to(40) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.up_to(alphabet.len() as u64 - 1) as usize])
                .collect();
            match parse(&input) {
                Ok(Some((_, n))) => {
                    assert!(n <= input.len());
                    outcomes[0] += 1
                }
                Ok(None) => outcomes[1] += 1,
                Err(_) => outcomes[2] += 1,
            }
        }
        // The generator reaches all three outcomes.
        assert!(outcomes.iter().all(|&n| n > 0), "{outcomes:?}");
    }

    #[test]
    fn encode_is_an_array_of_bulk_strings() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"CONFIG", b"GET", b"maxclients"]);
        assert_eq!(
            out,
            b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$10\r\nmaxclients\r\n"
        );
    }

    /// A one-shot TCP server running `script` on its first connection.
    fn fake_server(
        script: impl FnOnce(TcpStream) + Send + 'static,
    ) -> (SocketAddr, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            script(stream);
        });
        (addr, handle)
    }

    fn read_some(stream: &mut TcpStream) -> Vec<u8> {
        let mut buf = [0u8; 4096];
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = stream.read(&mut buf).unwrap_or(0);
        buf[..n].to_vec()
    }

    #[test]
    fn conn_reassembles_a_reply_sent_byte_by_byte() {
        let (addr, server) = fake_server(|mut s| {
            assert_eq!(read_some(&mut s), b"*1\r\n$4\r\nPING\r\n");
            for b in b"*2\r\n$3\r\nfoo\r\n:12\r\n" {
                s.write_all(&[*b]).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = read_some(&mut s);
        });
        let mut conn =
            RespConn::connect(addr, Duration::from_secs(1), Duration::from_secs(2)).unwrap();
        assert_eq!(
            conn.command(&[b"PING"]).unwrap(),
            RespValue::Array(Some(vec![bulk("foo"), RespValue::Integer(12)]))
        );
        assert_eq!(conn.peer_addr(), addr);
        drop(conn);
        server.join().unwrap();
    }

    #[test]
    fn conn_times_out_on_a_dribbling_server() {
        let (addr, server) = fake_server(|mut s| {
            let _ = read_some(&mut s);
            // A bulk that never completes, one byte every 50 ms.
            let _ = s.write_all(b"$100\r\n");
            for _ in 0..40 {
                if s.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let mut conn =
            RespConn::connect(addr, Duration::from_secs(1), Duration::from_millis(300)).unwrap();
        let start = Instant::now();
        let err = conn.command(&[b"PING"]).unwrap_err();
        let took = start.elapsed();
        assert!(err.to_string().contains("timed out"), "{err}");
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_millis(800),
            "{took:?}"
        );
        drop(conn);
        server.join().unwrap();
    }

    // ---- INFO ----

    const INFO_REDIS_62: &str = "# Server\r\nredis_version:6.2.14\r\nredis_mode:standalone\r\n\
        os:Linux 6.1.0 x86_64\r\nprocess_id:4242\r\ntcp_port:6379\r\nuptime_in_seconds:99\r\n\
        \r\n# Clients\r\nconnected_clients:17\r\ncluster_connections:oops\r\n\
        client_recent_max_input_buffer:16\r\nblocked_clients:2\r\ntracking_clients:0\r\n\
        \r\n# Stats\r\ntotal_connections_received:1234\r\ntotal_commands_processed:99999\r\n\
        rejected_connections:7\r\n\r\n# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
        slave0:ip=10.0.0.5,port=6380,state=online,offset=123,lag=0\r\n\
        slave1:ip=::1,port=6381,state=wait_bgsave,offset=0,lag=1\r\n\
        master_failover_state:no-failover\r\nmaster_repl_offset:123\r\n\
        \r\n# Cluster\r\ncluster_enabled:0\r\n";

    #[test]
    fn info_redis_6_2() {
        let info = parse_info(INFO_REDIS_62).unwrap();
        assert_eq!(
            info,
            InfoFields {
                version: Some("6.2.14".into()),
                server: Some("redis".into()),
                process_id: Some(4242),
                tcp_port: Some(6379),
                role: Some("master".into()),
                connected_clients: Some(17),
                blocked_clients: Some(2),
                // Redis 6.2 has no maxclients in INFO; the malformed value is None.
                maxclients: None,
                cluster_connections: None,
                connected_slaves: Some(2),
                rejected_connections: Some(7),
                total_connections_received: Some(1234),
                cluster_enabled: Some(false),
                replicas: vec![
                    "10.0.0.5:6380".parse().unwrap(),
                    "[::1]:6381".parse().unwrap()
                ],
            }
        );
        // LF-only line ends give the same result.
        assert_eq!(
            parse_info(&INFO_REDIS_62.replace("\r\n", "\n")).unwrap(),
            info
        );
    }

    #[test]
    fn info_redis_7_0_replica() {
        let text = "# Server\nredis_version:7.0.15\nprocess_id:1\ntcp_port:7000\n\n# Clients\n\
            connected_clients:3\ncluster_connections:4\nmaxclients:10000\n\
            client_recent_max_output_buffer:0\nblocked_clients:0\n\n# Stats\n\
            total_connections_received:5\nrejected_connections:0\n\n# Replication\n\
            role:slave\nmaster_host:10.0.0.1\nmaster_port:7000\nslave_read_only:1\n\
            slave_priority:100\nslave_repl_offset:555\nconnected_slaves:0\n\n# Cluster\n\
            cluster_enabled:1\n";
        let info = parse_info(text).unwrap();
        assert_eq!(info.version.as_deref(), Some("7.0.15"));
        assert_eq!(info.server.as_deref(), Some("redis"));
        assert_eq!(info.role.as_deref(), Some("slave"));
        assert_eq!(info.maxclients, Some(10000));
        assert_eq!(info.cluster_connections, Some(4));
        assert_eq!(info.connected_clients, Some(3));
        assert_eq!(info.connected_slaves, Some(0));
        assert_eq!(info.cluster_enabled, Some(true));
        assert_eq!(info.tcp_port, Some(7000));
        // slave_read_only, slave_priority… are not replica lines.
        assert!(info.replicas.is_empty());
    }

    #[test]
    fn info_valkey_8() {
        let text = "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\n\
            valkey_version:8.0.2\r\nvalkey_release_stage:ga\r\nprocess_id:77\r\n\r\n\
            # Clients\r\nconnected_clients:1\r\nmaxclients:4064\r\n\r\n# Replication\r\n\
            role:master\r\nconnected_slaves:1\r\n\
            slave0:ip=192.168.1.9,port=6379,state=online,offset=1,lag=0,type=replica\r\n";
        let info = parse_info(text).unwrap();
        assert_eq!(info.version.as_deref(), Some("8.0.2"));
        assert_eq!(info.server.as_deref(), Some("valkey"));
        assert_eq!(info.maxclients, Some(4064));
        assert_eq!(info.process_id, Some(77));
        assert_eq!(
            info.replicas,
            vec!["192.168.1.9:6379".parse::<SocketAddr>().unwrap()]
        );
        assert!(
            RedisSnapshot {
                info: Some(info),
                ..RedisSnapshot::disabled()
            }
            .is_replica("192.168.1.9".parse().unwrap())
        );
    }

    #[test]
    fn info_malformed_values_are_none_not_errors() {
        let text = "connected_clients:-3\nprocess_id:99999999999\ntcp_port:70000\n\
            cluster_enabled:yes\nrejected_connections:\nblocked_clients: 4 \n\
            slave0:ip=not-an-ip,port=1\nslave1:port=5\nslave2:ip=10.1.1.1,port=x\n\
            no colon here\nbad key:1\n";
        let info = parse_info(text).unwrap();
        assert_eq!(info.connected_clients, None);
        assert_eq!(info.process_id, None);
        assert_eq!(info.tcp_port, None);
        assert_eq!(info.cluster_enabled, None);
        assert_eq!(info.rejected_connections, None);
        assert_eq!(info.blocked_clients, Some(4));
        assert!(info.replicas.is_empty());
        assert_eq!(info.version, None);
        assert_eq!(info.server, None);
    }

    #[test]
    fn info_rejects_text_that_is_not_info() {
        for text in [
            "",
            "\r\n",
            "# Server\r\n",
            "hello world\n",
            "<html>\n<body>oops</body>\n",
        ] {
            assert!(parse_info(text).is_err(), "{text:?}");
        }
        let e = parse_info("not info at all").unwrap_err();
        assert_eq!(e.start, "not info at all");
    }

    // ---- URL and password ----

    fn target(host: &str, port: u16, user: Option<&str>) -> RedisTarget {
        RedisTarget {
            host: host.into(),
            port,
            username: user.map(String::from),
        }
    }

    #[test]
    fn url_good() {
        let cases = [
            ("redis://localhost:6380", target("localhost", 6380, None)),
            ("redis://localhost", target("localhost", 6379, None)),
            ("REDIS://h:1/", target("h", 1, None)),
            ("redis://h:1/3", target("h", 1, None)),
            ("10.0.0.1:7000", target("10.0.0.1", 7000, None)),
            ("myhost", target("myhost", 6379, None)),
            ("redis://alice@h:6379", target("h", 6379, Some("alice"))),
            ("redis://al%40ce@h", target("h", 6379, Some("al@ce"))),
            ("redis://@h:5", target("h", 5, None)),
            ("redis://[::1]:6379", target("::1", 6379, None)),
            ("redis://[::1]", target("::1", 6379, None)),
            ("[fe80::1]:9", target("fe80::1", 9, None)),
            ("::1", target("::1", 6379, None)),
        ];
        for (input, want) in cases {
            assert_eq!(RedisTarget::parse(input), Ok(want), "{input}");
        }
        assert_eq!(
            RedisTarget::parse("redis://[::1]:7").unwrap().to_string(),
            "redis://[::1]:7"
        );
        assert_eq!(
            "redis://bob@h:7"
                .parse::<RedisTarget>()
                .unwrap()
                .to_string(),
            "redis://bob@h:7"
        );
    }

    #[test]
    fn url_bad() {
        let cases = [
            ("", "empty"),
            ("rediss://h:6379", "TLS (rediss://) is not supported yet"),
            ("http://h:6379", "unsupported scheme 'http://'"),
            ("unix:///tmp/redis.sock", "unsupported scheme 'unix://'"),
            ("redis://h:0", "invalid port"),
            ("redis://h:65536", "invalid port"),
            ("redis://h:+5", "invalid port"),
            ("redis://h:", "invalid port"),
            ("redis://:6379", "missing host"),
            ("redis://[::1", "unterminated"),
            ("redis://[nope]:1", "invalid IPv6"),
            ("redis://[::1]x", "unexpected"),
            ("redis://h:1/db?x=1", "unexpected path"),
            ("redis://a%zz@h", "percent-encoding"),
        ];
        for (input, want) in cases {
            let e = RedisTarget::parse(input).unwrap_err();
            assert!(e.0.contains(want), "{input}: {e}");
        }
    }

    #[test]
    fn url_with_password_is_rejected_without_echoing_it() {
        for input in [
            "redis://user:hunter2@h:6379",
            "redis://:hunter2@h",
            ":hunter2@h:6379",
            "redis://u:hun@ter2@h:1",
            "redis://u:hunter2@h:notaport",
        ] {
            let e = RedisTarget::parse(input).unwrap_err();
            assert!(e.0.contains("--password-file"), "{input}: {e}");
            assert!(e.0.contains("REDISCLI_AUTH"), "{input}: {e}");
            assert!(
                !e.0.contains("hunter") && !e.0.contains("ter2"),
                "{input}: {e}"
            );
        }
    }

    #[test]
    fn url_resolves_names_and_literals() {
        assert_eq!(
            target("localhost", 6390, None).resolve().unwrap().port(),
            6390
        );
        assert_eq!(
            target("::1", 6390, None).resolve().unwrap(),
            "[::1]:6390".parse().unwrap()
        );
        let e = target("no-such-host.invalid", 1, None)
            .resolve()
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot resolve no-such-host.invalid"),
            "{e}"
        );
    }

    fn temp_dir(tag: &str) -> PathBuf {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "connwatch-redis-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn password_from_file_and_env() {
        let dir = temp_dir("pw");
        let write = |name: &str, content: &[u8]| {
            let p = dir.join(name);
            std::fs::write(&p, content).unwrap();
            p
        };
        let lf = write("lf", b"s3cret\n");
        let crlf = write("crlf", b"s3cret\r\n");
        let two = write("two", b"s3cret\n\n");
        let bare = write("bare", b"s3cret");
        let empty = write("empty", b"\n");
        assert_eq!(Password::from_file(&lf).unwrap().expose(), b"s3cret");
        assert_eq!(Password::from_file(&crlf).unwrap().expose(), b"s3cret");
        assert_eq!(Password::from_file(&two).unwrap().expose(), b"s3cret\n");
        assert_eq!(Password::from_file(&bare).unwrap().expose(), b"s3cret");
        let e = Password::from_file(&empty).unwrap_err();
        assert!(e.0.contains("is empty"), "{e}");
        let missing = dir.join("missing");
        let e = Password::from_file(&missing).unwrap_err();
        assert!(
            e.0.starts_with(&format!(
                "cannot read password file {}: ",
                missing.display()
            )),
            "{e}"
        );

        // The file wins over the environment; an empty variable counts as unset.
        let env = Some(OsString::from("fromenv"));
        let pw = load_password_from(Some(&lf), env.clone()).unwrap().unwrap();
        assert_eq!(pw.expose(), b"s3cret");
        let pw = load_password_from(None, env).unwrap().unwrap();
        assert_eq!(pw.expose(), b"fromenv");
        assert!(
            load_password_from(None, Some(OsString::new()))
                .unwrap()
                .is_none()
        );
        assert!(load_password_from(None, None).unwrap().is_none());
        assert!(load_password_from(Some(&missing), Some("x".into())).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn password_is_redacted() {
        let pw = Password::new("s3cret");
        assert_eq!(format!("{pw:?}"), "Password(<redacted>)");
        assert_eq!(
            pw.scrub("ERR unknown command 'AUTH', with args beginning with: 's3cret'"),
            "ERR unknown command 'AUTH', with args beginning with: '<redacted>'"
        );
        let poller = RedisPoller::new(target("127.0.0.1", 1, Some("u")), Some(pw));
        let dbg = format!("{poller:?}");
        assert!(dbg.contains("Password(<redacted>)"), "{dbg}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
    }

    // ---- backoff and breaker ----

    fn policy() -> BackoffPolicy {
        BackoffPolicy::default()
    }

    #[test]
    fn backoff_ceilings_double_up_to_the_cap() {
        let r = Reconnect::new(policy(), 1);
        let ms = |n| r.ceiling(n).as_millis();
        assert_eq!(
            [
                ms(1),
                ms(2),
                ms(3),
                ms(4),
                ms(5),
                ms(6),
                ms(7),
                ms(8),
                ms(40),
                ms(u32::MAX)
            ],
            [
                500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000
            ]
        );
    }

    #[test]
    fn backoff_full_jitter_spans_zero_to_ceiling() {
        // High threshold so the breaker stays closed; look at the first delay.
        let p = BackoffPolicy {
            breaker_threshold: u32::MAX,
            ..policy()
        };
        for failures in [1u32, 3, 10] {
            let ceiling = dur_nanos(Reconnect::new(p, 0).ceiling(failures));
            let (mut lo, mut hi) = (u64::MAX, 0);
            for seed in 0..2000 {
                let mut r = Reconnect::new(p, seed);
                for _ in 0..failures {
                    r.on_failure(1000 * SEC);
                }
                let delay = r.retry_at().unwrap() - 1000 * SEC;
                assert!(delay <= ceiling, "{delay} > {ceiling}");
                lo = lo.min(delay);
                hi = hi.max(delay);
            }
            assert!(lo < ceiling / 50, "failures {failures}: min {lo}");
            assert!(hi > ceiling - ceiling / 50, "failures {failures}: max {hi}");
        }
        // Same seed, same delays; another seed, other delays.
        let delays = |seed| {
            let mut r = Reconnect::new(p, seed);
            (0..6)
                .map(|_| {
                    r.on_failure(0);
                    r.retry_at().unwrap()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(delays(42), delays(42));
        assert_ne!(delays(42), delays(43));
    }

    #[test]
    fn breaker_opens_half_opens_and_closes() {
        let mut r = Reconnect::new(policy(), 9);
        let mut now = 10 * SEC;
        assert!(r.try_acquire(now));
        for n in 1..=4 {
            r.on_failure(now);
            assert_eq!(r.state(), BreakerState::Closed);
            assert_eq!(r.failures(), n);
            let at = r.retry_at().unwrap();
            assert!(at >= now && at - now <= dur_nanos(r.ceiling(n)));
            if at > now {
                assert!(!r.try_acquire(at - 1), "attempt before the delay");
            }
            assert!(r.try_acquire(at));
            now = at;
        }
        r.on_failure(now);
        let until = now + 60 * SEC;
        assert_eq!(r.state(), BreakerState::Open { until });
        assert_eq!(r.retry_at(), Some(until));
        assert!(!r.try_acquire(now));
        assert!(!r.try_acquire(until - 1));
        // Half-open: exactly one trial.
        assert!(r.try_acquire(until));
        assert_eq!(r.state(), BreakerState::HalfOpen);
        assert!(!r.try_acquire(until));
        assert!(!r.try_acquire(until + 100 * SEC));
        // The trial fails: open again for the full period.
        r.on_failure(until + SEC);
        let until2 = until + 61 * SEC;
        assert_eq!(r.state(), BreakerState::Open { until: until2 });
        assert!(!r.try_acquire(until2 - 1));
        assert!(r.try_acquire(until2));
        // The trial succeeds: closed, count reset, attempts free.
        r.on_success();
        assert_eq!(r.state(), BreakerState::Closed);
        assert_eq!(r.failures(), 0);
        assert_eq!(r.retry_at(), None);
        assert!(r.try_acquire(until2));
        // A new failure starts from the base delay again.
        r.on_failure(until2);
        assert!(r.retry_at().unwrap() - until2 <= 500 * MS);
    }

    /// A port with nothing listening.
    fn closed_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn opts(seed: u64) -> PollerOptions {
        PollerOptions {
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(2),
            seed,
            ..PollerOptions::default()
        }
    }

    #[test]
    fn poller_paces_attempts_to_an_unreachable_server() {
        let port = closed_port();
        let mut p = RedisPoller::with_options(target("127.0.0.1", port, None), None, opts(5));
        assert_eq!(p.snapshot().status, RedisStatus::Connecting);
        let mut now = 100 * SEC;
        for n in 1..=5u64 {
            let s = p.poll_at(now);
            assert_eq!(s.status, RedisStatus::Unreachable);
            assert_eq!(p.connect_attempts(), n);
            let e = s.error.unwrap();
            assert!(
                e.starts_with(&format!("connect to 127.0.0.1:{port}: ")),
                "{e}"
            );
            assert_eq!(s.target, Some(SocketAddr::from(([127, 0, 0, 1], port))));
            let at = p.reconnect().retry_at().unwrap();
            if at > now {
                p.poll_at(at - 1);
                assert_eq!(p.connect_attempts(), n, "attempt before the backoff delay");
            }
            now = at;
        }
        // Five failures: the breaker is open for 60 s; no attempt in between.
        let opened = now - 60 * SEC;
        assert_eq!(p.reconnect().state(), BreakerState::Open { until: now });
        for t in [opened, opened + SEC, now - 1] {
            assert_eq!(p.poll_at(t).status, RedisStatus::Unreachable);
        }
        assert_eq!(p.connect_attempts(), 5);
        // Half-open trial, fails: 60 s more.
        p.poll_at(now);
        assert_eq!(p.connect_attempts(), 6);
        p.poll_at(now + 59 * SEC);
        assert_eq!(p.connect_attempts(), 6);
        assert_eq!(
            p.reconnect().state(),
            BreakerState::Open {
                until: now + 60 * SEC
            }
        );
    }

    // ---- fake servers: rejection and hostile replies ----

    fn poll_fake(
        script: impl FnOnce(TcpStream) + Send + 'static,
        password: Option<Password>,
    ) -> (RedisSnapshot, RedisPoller) {
        let (addr, server) = fake_server(script);
        let mut p =
            RedisPoller::with_options(target("127.0.0.1", addr.port(), None), password, opts(1));
        let s = p.poll_at(SEC);
        server.join().unwrap();
        (s, p)
    }

    #[test]
    fn rejection_sent_at_accept_is_rejected() {
        let (s, _) = poll_fake(
            |mut st| {
                st.write_all(b"-ERR max number of clients reached\r\n")
                    .unwrap();
                std::thread::sleep(Duration::from_millis(50));
            },
            Some(Password::new("pw")),
        );
        assert_eq!(s.status, RedisStatus::Rejected);
        assert_eq!(
            s.error.as_deref(),
            Some("connection rejected: ERR max number of clients reached")
        );
        let (s, _) = poll_fake(
            |mut st| {
                st.write_all(b"-DENIED Redis is running in protected mode because ...\r\n")
                    .unwrap();
            },
            None,
        );
        assert_eq!(s.status, RedisStatus::Rejected);
        assert!(
            s.error
                .unwrap()
                .starts_with("connection rejected: DENIED Redis is running in protected mode")
        );
    }

    #[test]
    fn rejection_as_reply_to_the_first_command_is_rejected() {
        let (s, p) = poll_fake(
            |mut st| {
                let _ = read_some(&mut st);
                st.write_all(b"-ERR max number of clients reached\r\n")
                    .unwrap();
            },
            None,
        );
        assert_eq!(s.status, RedisStatus::Rejected);
        assert_eq!(
            s.error.as_deref(),
            Some("connection rejected: ERR max number of clients reached")
        );
        // The attempt's own address is reported: the tracker must not blame it.
        assert!(s.own_addr.is_some());
        assert_eq!(p.reconnect().failures(), 1);
    }

    #[test]
    fn close_right_after_connect_is_rejected() {
        let (s, _) = poll_fake(
            |st| {
                let _ = st.shutdown(std::net::Shutdown::Both);
            },
            None,
        );
        assert_eq!(s.status, RedisStatus::Rejected);
        assert!(
            s.error
                .unwrap()
                .starts_with("connection closed by the server right after connect")
        );
    }

    #[test]
    fn echoed_password_is_scrubbed_from_errors() {
        let (s, p) = poll_fake(
            |mut st| {
                let _ = read_some(&mut st);
                st.write_all(
                    b"-ERR unknown command 'AUTH', with args beginning with: 'hunter2'\r\n",
                )
                .unwrap();
            },
            Some(Password::new("hunter2")),
        );
        assert_eq!(s.status, RedisStatus::Error);
        assert_eq!(
            s.error.as_deref(),
            Some("AUTH failed: ERR unknown command 'AUTH', with args beginning with: '<redacted>'")
        );
        assert!(!format!("{s:?}{p:?}").contains("hunter2"));
    }

    #[test]
    fn hostile_reply_is_an_error_not_a_panic() {
        let (s, p) = poll_fake(
            |mut st| {
                let _ = read_some(&mut st); // CLIENT SETNAME
                st.write_all(b"+OK\r\n").unwrap();
                let _ = read_some(&mut st); // the INFO pipeline
                st.write_all(b"$999999999999\r\n").unwrap();
                let _ = read_some(&mut st);
            },
            None,
        );
        assert_eq!(s.status, RedisStatus::Error);
        let e = s.error.unwrap();
        assert!(
            e.starts_with("RESP protocol error: bulk string length 999999999999 exceeds"),
            "{e}"
        );
        assert!(
            p.conn.is_none(),
            "a desynchronised connection must be dropped"
        );
    }

    // ---- a real redis-server ----

    struct RedisServer {
        child: Option<Child>,
        port: u16,
        dir: PathBuf,
        args: Vec<String>,
    }

    impl RedisServer {
        fn start(extra: &[&str]) -> Self {
            for _ in 0..5 {
                let port = closed_port();
                if let Some(s) = Self::start_on(port, extra) {
                    return s;
                }
            }
            panic!("could not start redis-server");
        }

        fn start_on(port: u16, extra: &[&str]) -> Option<Self> {
            let dir = temp_dir("server");
            let mut args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir.to_string_lossy(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(extra.iter().map(|s| s.to_string()));
            let child = Command::new("redis-server")
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is installed");
            let mut server = RedisServer {
                child: Some(child),
                port,
                dir,
                args,
            };
            server.wait_ready().then_some(server)
        }

        fn wait_ready(&mut self) -> bool {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Some(child) = self.child.as_mut()
                    && child.try_wait().unwrap().is_some()
                {
                    return false;
                }
                if let Ok(mut c) =
                    RespConn::connect(self.addr(), Duration::from_secs(1), Duration::from_secs(1))
                    && let Ok(RespValue::Simple(_) | RespValue::Error(_)) = c.command(&[b"PING"])
                {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        }

        fn addr(&self) -> SocketAddr {
            SocketAddr::from(([127, 0, 0, 1], self.port))
        }

        fn target(&self) -> RedisTarget {
            target("127.0.0.1", self.port, None)
        }

        /// A side connection, for checking what the server says.
        fn client(&self) -> RespConn {
            RespConn::connect(self.addr(), Duration::from_secs(1), Duration::from_secs(2)).unwrap()
        }

        fn kill(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }

        /// Starts the same server again, same port and options.
        fn restart(&mut self) {
            self.kill();
            let child = Command::new("redis-server")
                .args(&self.args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            self.child = Some(child);
            assert!(self.wait_ready(), "redis-server did not restart");
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            self.kill();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn info_field(conn: &mut RespConn, section: &str, key: &str) -> String {
        let RespValue::Bulk(Some(body)) = conn.command(&[b"INFO", section.as_bytes()]).unwrap()
        else {
            panic!("INFO did not answer a bulk string");
        };
        let text = String::from_utf8(body).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no {key} in INFO {section}"))
            .to_string()
    }

    #[test]
    fn real_server_plain() {
        let server = RedisServer::start(&["--maxclients", "1234", "--timeout", "77"]);
        let mut p = RedisPoller::with_options(server.target(), None, opts(3));
        let s = p.poll_at(SEC);
        assert_eq!(s.status, RedisStatus::Ok, "{:?}", s.error);
        assert_eq!(s.error, None);
        assert_eq!(s.config_status, ConfigStatus::Ok);
        assert_eq!(
            s.config,
            Some(RedisConfig {
                maxclients: Some(1234),
                timeout: Some(77)
            })
        );
        let info = s.info.clone().unwrap();
        assert_eq!(info.connected_clients, Some(1));
        assert_eq!(info.tcp_port, Some(server.port));
        assert_eq!(info.role.as_deref(), Some("master"));
        assert_eq!(info.server.as_deref(), Some("redis"));
        assert_eq!(info.cluster_enabled, Some(false));
        assert_eq!(info.rejected_connections, Some(0));
        assert_eq!(info.process_id, server.child.as_ref().map(|c| c.id()));
        assert_eq!(s.target, Some(server.addr()));

        // The address Redis reports for the connection named connwatch is own_addr.
        let mut side = server.client();
        let RespValue::Bulk(Some(list)) = side.command(&[b"CLIENT", b"LIST"]).unwrap() else {
            panic!("CLIENT LIST did not answer a bulk string");
        };
        let list = String::from_utf8(list).unwrap();
        let line = list
            .lines()
            .find(|l| l.split(' ').any(|f| f == "name=connwatch"))
            .unwrap_or_else(|| panic!("no connwatch client in {list}"));
        let addr: SocketAddr = line
            .split(' ')
            .find_map(|f| f.strip_prefix("addr="))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(s.own_addr, Some(addr));

        // The next polls reuse the connection: no new connection reaches the server.
        let total = info.total_connections_received.unwrap();
        let s2 = p.poll_at(2 * SEC);
        let s3 = p.poll_at(3 * SEC);
        assert_eq!(s3.status, RedisStatus::Ok);
        assert_eq!(p.connect_attempts(), 1);
        assert_eq!(s2.own_addr, s.own_addr);
        // +1: the side connection above.
        assert_eq!(s3.info.unwrap().total_connections_received, Some(total + 1));
    }

    #[test]
    fn real_server_password() {
        let server = RedisServer::start(&["--requirepass", "s3cret"]);
        let poll = |pw: Option<&str>, user: Option<&str>| {
            let mut t = server.target();
            t.username = user.map(String::from);
            let mut p = RedisPoller::with_options(t, pw.map(Password::new), opts(2));
            let s = p.poll_at(SEC);
            let dbg = format!("{s:?} {p:?}");
            assert!(!dbg.contains("s3cret") && !dbg.contains("wr0ng"), "{dbg}");
            (s, p)
        };

        let (s, _) = poll(Some("s3cret"), None);
        assert_eq!(s.status, RedisStatus::Ok, "{:?}", s.error);
        assert_eq!(s.info.unwrap().connected_clients, Some(1));
        let (s, _) = poll(Some("s3cret"), Some("default"));
        assert_eq!(s.status, RedisStatus::Ok, "{:?}", s.error);

        let (s, mut p) = poll(Some("wr0ng"), None);
        assert_eq!(s.status, RedisStatus::AuthFailed);
        let e = s.error.unwrap();
        assert!(e.starts_with("AUTH failed: WRONGPASS"), "{e}");
        assert_eq!(s.info, None);
        // Wrong passwords back off like any failure.
        let at = p.reconnect().retry_at().unwrap();
        assert!(at > SEC);
        p.poll_at(at - 1);
        assert_eq!(p.connect_attempts(), 1);

        let (s, _) = poll(None, None);
        assert_eq!(s.status, RedisStatus::NoAuth);
        let e = s.error.unwrap();
        assert!(e.starts_with("NOAUTH Authentication required."), "{e}");
        assert!(e.contains("--password-file"), "{e}");
    }

    #[test]
    fn real_server_without_config() {
        let server = RedisServer::start(&["--rename-command", "CONFIG", "", "--maxclients", "321"]);
        let mut p = RedisPoller::with_options(server.target(), None, opts(4));
        let s = p.poll_at(SEC);
        assert_eq!(s.status, RedisStatus::Ok, "{:?}", s.error);
        assert_eq!(s.config_status, ConfigStatus::Unavailable);
        // INFO reports maxclients since 7.0.
        let version = s.info.as_ref().and_then(|i| i.version.clone()).unwrap();
        let from_info = (!version.starts_with("6.")).then_some(321);
        assert_eq!(
            s.config,
            Some(RedisConfig {
                maxclients: from_info,
                timeout: None
            })
        );
        // Not asked again, even after the refresh period: the error count stays.
        let mut side = server.client();
        let errors = info_field(&mut side, "stats", "total_error_replies");
        assert_eq!(errors, "2"); // the two CONFIG GETs
        for t in [2, 70, 200] {
            assert_eq!(p.poll_at(t * SEC).status, RedisStatus::Ok);
        }
        assert_eq!(info_field(&mut side, "stats", "total_error_replies"), "2");
    }

    #[test]
    fn real_server_full_rejects() {
        let server = RedisServer::start(&["--maxclients", "1"]);
        let mut holder = server.client();
        assert_eq!(
            holder.command(&[b"PING"]).unwrap(),
            RespValue::Simple("PONG".into())
        );
        let mut p = RedisPoller::with_options(server.target(), None, opts(6));
        let s = p.poll_at(SEC);
        assert_eq!(s.status, RedisStatus::Rejected);
        assert_eq!(
            s.error.as_deref(),
            Some("connection rejected: ERR max number of clients reached")
        );
        assert_eq!(
            info_field(&mut holder, "stats", "rejected_connections"),
            "1"
        );
        // Slot freed: after the backoff the poller gets in.
        drop(holder);
        let at = p.reconnect().retry_at().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let s = p.poll_at(at);
        assert_eq!(s.status, RedisStatus::Ok, "{:?}", s.error);
        assert_eq!(p.connect_attempts(), 2);
    }

    #[test]
    fn real_server_killed_then_back() {
        let mut server = RedisServer::start(&[]);
        let mut p = RedisPoller::with_options(server.target(), None, opts(8));
        let s = p.poll_at(SEC);
        assert_eq!(s.status, RedisStatus::Ok, "{:?}", s.error);
        let old = s.info.clone().unwrap();

        server.kill();
        let s = p.poll_at(2 * SEC);
        assert_eq!(s.status, RedisStatus::Unreachable);
        let e = s.error.clone().unwrap();
        assert!(
            e.starts_with(&format!("connect to {}: ", server.addr())),
            "{e}"
        );
        // The last good INFO is kept.
        assert_eq!(s.info, Some(old.clone()));
        // The broken connection got one immediate reconnect attempt, no more.
        assert_eq!(p.connect_attempts(), 2);
        let at = p.reconnect().retry_at().unwrap();
        assert!(at > 2 * SEC && at <= 2 * SEC + 500 * MS, "{at}");

        server.restart();
        // Before the delay: no attempt, although the server is back.
        let s = p.poll_at(at - 1);
        assert_eq!(s.status, RedisStatus::Unreachable);
        assert_eq!(p.connect_attempts(), 2);
        let s = p.poll_at(at);
        assert_eq!(s.status, RedisStatus::Ok, "{:?}", s.error);
        assert_eq!(p.connect_attempts(), 3);
        assert_ne!(s.info.unwrap().process_id, old.process_id);
    }

    #[test]
    fn real_server_spawned_poller_stops_when_the_receiver_drops() {
        let server = RedisServer::start(&[]);
        let (mut rx, handle) =
            spawn_poller(server.target(), None, Duration::from_millis(20)).unwrap();
        let first = rx.blocking_recv().unwrap();
        assert_eq!(first.status, RedisStatus::Ok, "{:?}", first.error);
        let second = rx.blocking_recv().unwrap();
        assert_eq!(second.status, RedisStatus::Ok);
        assert_eq!(second.own_addr, first.own_addr);
        drop(rx);
        let start = Instant::now();
        handle.join().unwrap();
        assert!(start.elapsed() < Duration::from_secs(1));
        // Its connection is closed: only the side connection remains.
        let mut side = server.client();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let n = info_field(&mut side, "clients", "connected_clients");
            if n == "1" {
                break;
            }
            assert!(Instant::now() < deadline, "connected_clients stays {n}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
