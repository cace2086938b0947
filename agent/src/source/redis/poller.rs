//! [`RedisPoller`] owns the one connection to Redis; [`spawn_poller`] polls it every
//! interval as a task on the agent's tokio runtime and sends each snapshot.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ::redis::Value;

use super::backoff::{BackoffPolicy, Reconnect, dur_nanos};
use super::conn::{DEFAULT_MAX_REPLY, RedisConn, error_text, kind_name};
use super::info::parse_info;
use super::replies::{
    Failure, config_value, io_failure, no_auth, no_perm_message, one_line, rejection,
    setup_io_failure, status_of_error_reply,
};
use super::stream::{self, ConnError, Stream};
use super::target::{Endpoint, Password, RedisTarget};
use super::tls::TlsClient;
use crate::model::{ConfigStatus, InfoFields, RedisConfig, RedisSnapshot, RedisStatus};
use crate::model::{Nanos, monotonic_now};
use crate::source::netns::Netns;

/// The sections each poll asks for, pipelined (see the module comment).
const INFO_COMMANDS: [&[&[u8]]; 6] = [
    &[b"INFO", b"server"],
    &[b"INFO", b"clients"],
    &[b"INFO", b"memory"],
    &[b"INFO", b"stats"],
    &[b"INFO", b"replication"],
    &[b"INFO", b"cluster"],
];

/// What CONFIG GET asks, pipelined (each name on its own: several names in one
/// CONFIG GET only exist from Redis 7.0).
const CONFIG_COMMANDS: [&[&[u8]]; 3] = [
    &[b"CONFIG", b"GET", b"maxclients"],
    &[b"CONFIG", b"GET", b"timeout"],
    // Rejections on the TLS port carry no error line: see core::reject.
    &[b"CONFIG", b"GET", b"tls-port"],
];

const CLIENT_NAME: &[u8] = b"connwatch";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollerOptions {
    /// Budget of the name lookup, and of the TCP connect.
    pub connect_timeout: Duration,
    /// Budget of each exchange: a command (or pipeline) and all its replies.
    pub io_timeout: Duration,
    pub backoff: BackoffPolicy,
    /// How often CONFIG GET is asked again when INFO does not report `maxclients`
    /// (it is also asked whenever INFO's `maxclients` changes).
    pub config_refresh: Duration,
    /// Most bytes one exchange may read (see [`conn`]).
    pub max_reply: usize,
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
            max_reply: DEFAULT_MAX_REPLY,
            seed: monotonic_now() ^ (u64::from(std::process::id()) << 32),
        }
    }
}

/// The one reply to a single command.
async fn command(conn: &mut RedisConn, args: &[&[u8]]) -> Result<Value, ConnError> {
    let mut replies = conn.exchange(&[args]).await?;
    replies
        .pop()
        .ok_or_else(|| ConnError::Protocol("no reply".to_string()))
}

/// Owns the one connection to Redis; call [`poll`](Self::poll) once per interval. Each
/// call waits at most for the connect timeout plus a few I/O timeouts, and blocks
/// nothing while it waits.
#[derive(Debug)]
pub struct RedisPoller {
    target: RedisTarget,
    password: Option<Password>,
    opts: PollerOptions,
    conn: Option<RedisConn>,
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
    /// CONFIG GET was denied by the ACL on this connection: the NOPERM message, with
    /// the rule to grant.
    config_denied: Option<String>,
    /// The network namespace TCP connections are made in; `None`: the agent's own.
    netns: Option<Arc<Netns>>,
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
            config_denied: None,
            netns: None,
        }
    }

    /// Connects from inside `netns`, where `127.0.0.1` is the container's own.
    pub fn in_netns(mut self, netns: Arc<Netns>) -> Self {
        self.netns = Some(netns);
        self
    }

    /// Polls now (CLOCK_MONOTONIC).
    pub async fn poll(&mut self) -> RedisSnapshot {
        self.poll_at(monotonic_now()).await
    }

    /// Polls with `now` as the current time (nanoseconds of a monotonic clock), which
    /// drives the backoff, the breaker and the CONFIG refresh.
    ///
    /// With a working connection: one pipelined INFO round trip (plus CONFIG GET when
    /// due). If the connection broke, one immediate reconnect attempt. Without a
    /// connection: one attempt if the backoff and breaker allow it, else an immediate
    /// return with the current status and the last good values.
    pub async fn poll_at(&mut self, now: Nanos) -> RedisSnapshot {
        if self.conn.is_some() {
            match self.poll_connected(now).await {
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
        match self.establish().await {
            Ok(conn) => {
                self.conn = Some(conn);
                self.config_disabled = false;
                self.config_denied = None;
                self.config_asked_at = None;
                match self.poll_connected(now).await {
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

    /// Whether a connection is held now.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
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

    /// Connect (and the TLS handshake), AUTH, CLIENT SETNAME.
    async fn establish(&mut self) -> Result<RedisConn, Failure> {
        let (stream, tls) = match self.target.endpoint.clone() {
            Endpoint::Unix(path) => (self.open_unix(&path).await?, None),
            Endpoint::Tcp { .. } => self.open_tcp().await?,
        };
        let mut conn = RedisConn::over(stream, tls, self.opts.io_timeout, self.opts.max_reply)
            .await
            .map_err(|e| setup_io_failure(e, true))?;

        let mut first = true;
        if let Some(pw) = &self.password {
            // Our own copy of the password is wiped on drop (see `Password`); the
            // crate's copies of the AUTH command (its packed request, the codec's
            // write buffer) are not: best effort stops at the crate's boundary.
            let reply = match &self.target.username {
                Some(user) => command(&mut conn, &[b"AUTH", user.as_bytes(), pw.expose()]).await,
                None => command(&mut conn, &[b"AUTH", pw.expose()]).await,
            };
            match reply {
                Ok(Value::Okay | Value::SimpleString(_)) => {}
                Ok(Value::ServerError(e)) => {
                    let msg = error_text(&e);
                    if msg.contains("without any password configured") {
                        log::warn!(
                            "redis {}: a password was given but the server has none: {}",
                            self.target,
                            one_line(&pw.scrub(&msg))
                        );
                    } else {
                        let status = status_of_error_reply(&msg).unwrap_or(RedisStatus::Error);
                        return Err(match status {
                            RedisStatus::Rejected => rejection(&msg),
                            _ => Failure::new(status, format!("AUTH failed: {msg}")),
                        });
                    }
                }
                Ok(other) => {
                    return Err(Failure::new(
                        RedisStatus::Error,
                        format!("unexpected {} in reply to AUTH", kind_name(&other)),
                    ));
                }
                Err(e) => return Err(setup_io_failure(e, first)),
            }
            first = false;
        }

        match command(&mut conn, &[b"CLIENT", b"SETNAME", CLIENT_NAME]).await {
            Ok(Value::ServerError(e)) => {
                let msg = error_text(&e);
                match status_of_error_reply(&msg) {
                    Some(RedisStatus::Rejected) => return Err(rejection(&msg)),
                    Some(RedisStatus::NoAuth) => return Err(no_auth(&msg)),
                    // Renamed or denied: the name only helps people reading CLIENT LIST.
                    Some(RedisStatus::NoPerm) | None => {
                        log::debug!("redis {}: CLIENT SETNAME: {}", self.target, one_line(&msg))
                    }
                    Some(status) => return Err(Failure::new(status, msg)),
                }
            }
            Ok(_) => {}
            Err(e) => return Err(setup_io_failure(e, first)),
        }
        Ok(conn)
    }

    /// The TCP connection, and TLS over it when asked for.
    async fn open_tcp(&mut self) -> Result<(Stream, Option<TlsClient>), Failure> {
        let addr = self
            .target
            .resolve(self.opts.connect_timeout)
            .await
            .map_err(|e| Failure::new(RedisStatus::Unreachable, e.to_string()))?;
        self.resolved = Some(addr);
        let stream = stream::open(addr, self.opts.connect_timeout, self.netns.as_deref())
            .await
            .map_err(|e| Failure::new(RedisStatus::Unreachable, e.to_string()))?;
        // Our own attempt shows in the kernel's view too, rejected or not.
        self.own_addr = Some(
            stream::local_addr(&stream)
                .map_err(|e| Failure::new(RedisStatus::Unreachable, e.to_string()))?,
        );
        if let Some(client) = self.tls_client()? {
            // Redis writes nothing on a TLS connection before the handshake, not even
            // its maxclients error: it closes it. A hang-up here is that rejection.
            let tls = stream::handshake(stream, &client, self.opts.io_timeout)
                .await
                .map_err(|e| match e {
                    ConnError::Tls(msg) => Failure::new(RedisStatus::TlsFailed, msg),
                    e if e.is_hangup() => Failure::new(
                        RedisStatus::Rejected,
                        format!(
                            "connection closed by the server during the TLS handshake \
                             (maxclients reached?): {e}"
                        ),
                    ),
                    e => io_failure(e),
                })?;
            return Ok((Stream::Tls(Box::new(tls)), Some(client)));
        }
        // A rejection (maxclients, protected mode) arrives unasked, right after the
        // accept: read it before sending anything, the password least of all.
        match stream::has_unsolicited_input(stream) {
            Ok((false, stream)) => Ok((Stream::Tcp(stream), None)),
            Ok((true, stream)) => Err(self.greeting(stream, Vec::new()).await),
            Err(e) => Err(setup_io_failure(e, true)),
        }
    }

    /// The Unix socket (no address of ours the kernel's TCP view could count).
    async fn open_unix(&mut self, path: &Path) -> Result<Stream, Failure> {
        self.own_addr = None;
        self.resolved = None;
        let stream = stream::open_unix(path, self.opts.connect_timeout)
            .await
            .map_err(|e| Failure::new(RedisStatus::Unreachable, e.to_string()))?;
        match stream::unix_unsolicited_input(stream) {
            Ok((None, stream)) => Ok(Stream::Unix(stream)),
            Ok((Some(start), stream)) => Err(self.greeting(stream, start).await),
            Err(e) => Err(setup_io_failure(e, true)),
        }
    }

    /// What a reply sent before any command means: a rejection, normally.
    async fn greeting<S>(&self, stream: S, start: Vec<u8>) -> Failure
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        match stream::read_greeting(stream, start, self.opts.io_timeout).await {
            Ok(Value::ServerError(e)) => rejection(&error_text(&e)),
            Ok(other) => Failure::new(
                RedisStatus::Error,
                format!("unexpected {} before any command", kind_name(&other)),
            ),
            Err(e) => setup_io_failure(e, true),
        }
    }

    /// The TLS configuration, when the target speaks TLS: the one built from the
    /// flags at start, else (a `rediss://` target built in code) one built now with
    /// the default options, kept for the next attempts.
    fn tls_client(&mut self) -> Result<Option<TlsClient>, Failure> {
        if let Some(client) = &self.target.tls_client {
            return Ok(Some(client.clone()));
        }
        let (Some(opts), Some((host, _))) = (&self.target.tls, self.target.tcp()) else {
            return Ok(None);
        };
        let client = TlsClient::new(opts, host)
            .map_err(|e| Failure::new(RedisStatus::TlsFailed, e.to_string()))?;
        self.target.tls_client = Some(client.clone());
        Ok(Some(client))
    }

    /// One INFO round trip, and CONFIG GET when due. `Err`: drop the connection.
    async fn poll_connected(&mut self, now: Nanos) -> Result<(), Failure> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(Failure::new(RedisStatus::Unreachable, "not connected"));
        };
        let replies = conn.exchange(&INFO_COMMANDS).await.map_err(io_failure)?;
        let mut text = String::new();
        let mut bad_reply = None;
        for reply in replies {
            match reply {
                Value::BulkString(body) => {
                    text.push_str(&String::from_utf8_lossy(&body));
                    text.push('\n');
                }
                Value::ServerError(e) => {
                    bad_reply.get_or_insert(error_text(&e));
                }
                other => {
                    bad_reply.get_or_insert_with(|| format!("unexpected {}", kind_name(&other)));
                }
            }
        }
        if let Some(msg) = bad_reply {
            return match status_of_error_reply(&msg) {
                Some(RedisStatus::NoAuth) => Err(no_auth(&msg)),
                Some(RedisStatus::Rejected) => Err(rejection(&msg)),
                // The ACL denies INFO: the connection is fine, but nothing INFO said
                // before holds now (unknown, not stale).
                Some(RedisStatus::NoPerm) => {
                    self.info = None;
                    let user = self.target.username.as_deref();
                    let message = no_perm_message("INFO", &msg, user);
                    self.set_status(RedisStatus::NoPerm, Some(message));
                    Ok(())
                }
                Some(status) => Err(Failure::new(status, format!("INFO: {msg}"))),
                // LOADING, BUSY…: the connection is fine.
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
        let result = self.refresh_config(now, &info).await;
        self.info = Some(info);
        result?;
        // INFO answered; an ACL that denies CONFIG GET still wants a word.
        match self.config_denied.clone() {
            Some(message) => self.set_status(RedisStatus::NoPerm, Some(message)),
            None => self.set_status(RedisStatus::Ok, None),
        }
        Ok(())
    }

    async fn refresh_config(&mut self, now: Nanos, info: &InfoFields) -> Result<(), Failure> {
        if self.config_disabled {
            self.config = Some(RedisConfig {
                maxclients: info.maxclients,
                ..RedisConfig::default()
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
        let replies = conn.exchange(&CONFIG_COMMANDS).await.map_err(io_failure)?;
        self.config_asked_at = Some(now);
        let (maxclients, timeout, tls_port) = match replies.as_slice() {
            [m, t, p] => (
                config_value(m, "maxclients"),
                config_value(t, "timeout"),
                config_value(p, "tls-port"),
            ),
            _ => {
                let e = Err("unexpected number of replies to CONFIG GET".to_string());
                (e.clone(), e.clone(), e)
            }
        };
        match (maxclients, timeout, tls_port) {
            (Ok(maxclients), Ok(timeout), Ok(tls_port)) => {
                self.config = Some(RedisConfig {
                    maxclients,
                    timeout,
                    tls_port: tls_port.and_then(|p| u16::try_from(p).ok()),
                });
                self.config_status = ConfigStatus::Ok;
            }
            (Err(reason), _, _) | (_, Err(reason), _) | (_, _, Err(reason)) => {
                log::debug!(
                    "redis {}: CONFIG GET unavailable ({}); using INFO's maxclients, not \
                     asking again on this connection",
                    self.target,
                    one_line(&reason)
                );
                if status_of_error_reply(&reason) == Some(RedisStatus::NoPerm) {
                    let user = self.target.username.as_deref();
                    self.config_denied = Some(no_perm_message("CONFIG GET", &reason, user));
                }
                self.config_disabled = true;
                self.config_status = ConfigStatus::Unavailable;
                self.config = Some(RedisConfig {
                    maxclients: info.maxclients,
                    ..RedisConfig::default()
                });
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The polling task
// ---------------------------------------------------------------------------

/// Shortest interval [`spawn_poller`] accepts (shorter ones are raised to it).
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Snapshots waiting for the consumer; when it falls behind, new ones are dropped.
const SNAPSHOT_QUEUE: usize = 4;

/// Polls `target` every `interval` as a task on the current tokio runtime (no thread
/// of its own: it only waits on sockets and timers) and sends each snapshot. The task
/// ends, closing the connection, as soon as the receiver is dropped, even in the middle
/// of a poll. Must be called from within a runtime; otherwise an error.
pub fn spawn_poller(
    target: RedisTarget,
    password: Option<Password>,
    interval: Duration,
) -> io::Result<(
    tokio::sync::mpsc::Receiver<RedisSnapshot>,
    tokio::task::JoinHandle<()>,
)> {
    spawn_poller_with(RedisPoller::new(target, password), interval)
}

/// [`spawn_poller`] with a poller built by the caller (options, seed).
pub fn spawn_poller_with(
    poller: RedisPoller,
    interval: Duration,
) -> io::Result<(
    tokio::sync::mpsc::Receiver<RedisSnapshot>,
    tokio::task::JoinHandle<()>,
)> {
    let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
    let interval = interval.max(MIN_POLL_INTERVAL);
    let (tx, rx) = tokio::sync::mpsc::channel(SNAPSHOT_QUEUE);
    let handle = runtime.spawn(run_poller(poller, tx, interval));
    Ok((rx, handle))
}

async fn run_poller(
    mut poller: RedisPoller,
    tx: tokio::sync::mpsc::Sender<RedisSnapshot>,
    interval: Duration,
) {
    use tokio::sync::mpsc::error::TrySendError;
    let mut ticks = tokio::time::interval(interval);
    // A poll that overran: skip the missed ticks rather than poll in a burst.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let snapshot = tokio::select! {
            _ = tx.closed() => return,
            snapshot = async {
                ticks.tick().await;
                poller.poll().await
            } => snapshot,
        };
        // try_send, not send().await: a slow consumer must not stall the polls (and
        // let Redis's idle timeout close our connection).
        match tx.try_send(snapshot) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => log::debug!("redis snapshot dropped: consumer behind"),
            Err(TrySendError::Closed(_)) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::redis::BreakerState;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Instant;

    const SEC: Nanos = 1_000_000_000;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn target(host: &str, port: u16, user: Option<&str>) -> RedisTarget {
        RedisTarget {
            username: user.map(String::from),
            ..RedisTarget::new(host, port)
        }
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
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let poll_at = |p: &mut RedisPoller, t| rt.block_on(p.poll_at(t));
        let mut now = 100 * SEC;
        for n in 1..=5u64 {
            let s = poll_at(&mut p, now);
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
                poll_at(&mut p, at - 1);
                assert_eq!(p.connect_attempts(), n, "attempt before the backoff delay");
            }
            now = at;
        }
        // Five failures: the breaker is open for 60 s; no attempt in between.
        let opened = now - 60 * SEC;
        assert_eq!(p.reconnect().state(), BreakerState::Open { until: now });
        for t in [opened, opened + SEC, now - 1] {
            assert_eq!(poll_at(&mut p, t).status, RedisStatus::Unreachable);
        }
        assert_eq!(p.connect_attempts(), 5);
        // Half-open trial, fails: 60 s more.
        poll_at(&mut p, now);
        assert_eq!(p.connect_attempts(), 6);
        poll_at(&mut p, now + 59 * SEC);
        assert_eq!(p.connect_attempts(), 6);
        assert_eq!(
            p.reconnect().state(),
            BreakerState::Open {
                until: now + 60 * SEC
            }
        );
    }

    // ---- fake servers: rejection, timeouts and hostile replies ----

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

    fn poll_fake_with(
        script: impl FnOnce(TcpStream) + Send + 'static,
        password: Option<Password>,
        opts: PollerOptions,
    ) -> (RedisSnapshot, RedisPoller) {
        let (addr, server) = fake_server(script);
        let mut p =
            RedisPoller::with_options(target("127.0.0.1", addr.port(), None), password, opts);
        let s = block_on(async {
            let s = p.poll_at(SEC).await;
            // Close our side before the server thread is joined.
            p.conn = None;
            s
        });
        server.join().unwrap();
        (s, p)
    }

    fn poll_fake(
        script: impl FnOnce(TcpStream) + Send + 'static,
        password: Option<Password>,
    ) -> (RedisSnapshot, RedisPoller) {
        poll_fake_with(script, password, opts(1))
    }

    #[test]
    fn commands_go_out_as_one_pipeline_and_replies_sent_byte_by_byte_are_reassembled() {
        let (s, p) = poll_fake(
            |mut st| {
                assert_eq!(
                    read_some(&mut st),
                    b"*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$9\r\nconnwatch\r\n"
                );
                st.write_all(b"+OK\r\n").unwrap();
                let mut pipeline = Vec::new();
                for section in [
                    "server",
                    "clients",
                    "memory",
                    "stats",
                    "replication",
                    "cluster",
                ] {
                    pipeline.extend_from_slice(
                        format!("*2\r\n$4\r\nINFO\r\n${}\r\n{section}\r\n", section.len())
                            .as_bytes(),
                    );
                }
                assert_eq!(read_some(&mut st), pipeline);
                let bodies = [
                    "# Server\r\nredis_version:7.0.15\r\n",
                    "# Clients\r\nconnected_clients:12\r\nmaxclients:100\r\n",
                    "# Memory\r\nmem_clients_normal:20504\r\n",
                    "# Stats\r\nrejected_connections:3\r\n",
                    "# Replication\r\nrole:master\r\n",
                    "",
                ];
                let mut replies = Vec::new();
                for body in bodies {
                    replies.extend_from_slice(format!("${}\r\n{body}\r\n", body.len()).as_bytes());
                }
                for b in replies {
                    st.write_all(&[b]).unwrap();
                    std::thread::sleep(Duration::from_millis(1));
                }
                let _ = read_some(&mut st); // CONFIG GET maxclients, timeout, tls-port
                st.write_all(
                    b"*2\r\n$10\r\nmaxclients\r\n$3\r\n100\r\n*2\r\n$7\r\ntimeout\r\n$1\r\n0\r\n\
                      *2\r\n$8\r\ntls-port\r\n$4\r\n6380\r\n",
                )
                .unwrap();
                let _ = read_some(&mut st);
            },
            None,
        );
        assert_eq!(s.status, RedisStatus::Ok, "{:?}", s.error);
        let info = s.info.unwrap();
        assert_eq!(info.version.as_deref(), Some("7.0.15"));
        assert_eq!(info.connected_clients, Some(12));
        assert_eq!(info.maxclients, Some(100));
        assert_eq!(info.rejected_connections, Some(3));
        assert_eq!(info.mem_clients_normal, Some(20504));
        assert_eq!(info.client_output_buffer_limit_disconnections, None);
        assert_eq!(info.role.as_deref(), Some("master"));
        assert_eq!(s.config_status, ConfigStatus::Ok);
        assert_eq!(
            s.config,
            Some(RedisConfig {
                maxclients: Some(100),
                timeout: Some(0),
                tls_port: Some(6380),
            })
        );
        assert_eq!(p.connect_attempts(), 1);
    }

    #[test]
    fn times_out_on_a_dribbling_server() {
        let (addr, server) = fake_server(|mut st| {
            let _ = read_some(&mut st); // CLIENT SETNAME
            st.write_all(b"+OK\r\n").unwrap();
            let _ = read_some(&mut st); // the INFO pipeline
            // A bulk that never completes, one byte every 50 ms.
            let _ = st.write_all(b"$100\r\n");
            for _ in 0..40 {
                if st.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let opts = PollerOptions {
            io_timeout: Duration::from_millis(300),
            ..opts(2)
        };
        let mut p = RedisPoller::with_options(target("127.0.0.1", addr.port(), None), None, opts);
        let (s, took) = block_on(async {
            let start = Instant::now();
            let s = p.poll_at(SEC).await;
            (s, start.elapsed())
        });
        assert_eq!(s.status, RedisStatus::Unreachable);
        assert_eq!(s.error.as_deref(), Some("reading a reply: timed out"));
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_millis(800),
            "{took:?}"
        );
        assert!(!p.is_connected());
        drop(p);
        server.join().unwrap();
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
        // A bulk string announcing 999,999,999,999 bytes, then more bytes than the
        // reply limit allows: the read stops at the limit.
        let limited = PollerOptions {
            max_reply: 64 << 10,
            ..opts(3)
        };
        let (s, p) = poll_fake_with(
            |mut st| {
                let _ = read_some(&mut st); // CLIENT SETNAME
                st.write_all(b"+OK\r\n").unwrap();
                let _ = read_some(&mut st); // the INFO pipeline
                let _ = st.write_all(b"$999999999999\r\n");
                let _ = st.write_all(&[b'x'; 256 << 10]);
                let _ = read_some(&mut st);
            },
            None,
            limited,
        );
        assert_eq!(s.status, RedisStatus::Error);
        assert_eq!(
            s.error.as_deref(),
            Some("RESP protocol error: reply larger than 65536 bytes")
        );
        assert!(
            !p.is_connected(),
            "a desynchronised connection must be dropped"
        );

        // Bytes that are no RESP at all.
        let (s, p) = poll_fake(
            |mut st| {
                let _ = read_some(&mut st); // CLIENT SETNAME
                st.write_all(b"+OK\r\n").unwrap();
                let _ = read_some(&mut st); // the INFO pipeline
                let _ = st.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
                let _ = read_some(&mut st);
            },
            None,
        );
        assert_eq!(s.status, RedisStatus::Error);
        assert_eq!(
            s.error.as_deref(),
            Some("RESP protocol error: unparsable reply")
        );
        assert!(
            !p.is_connected(),
            "a desynchronised connection must be dropped"
        );
    }

    #[test]
    fn a_poll_in_flight_is_dropped_with_its_receiver() {
        // A server that accepts and never answers: the task ends at once when the
        // receiver goes, without waiting for the I/O timeout.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let slow = PollerOptions {
            io_timeout: Duration::from_secs(30),
            ..opts(4)
        };
        let poller = RedisPoller::with_options(target("127.0.0.1", port, None), None, slow);
        block_on(async {
            let (rx, handle) = spawn_poller_with(poller, Duration::from_millis(20)).unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            let start = Instant::now();
            drop(rx);
            tokio::time::timeout(Duration::from_secs(1), handle)
                .await
                .expect("the task ends")
                .unwrap();
            assert!(start.elapsed() < Duration::from_millis(500));
        });
        let (mut st, _) = listener.accept().unwrap();
        // Its connection is closed: EOF after the CLIENT SETNAME it sent.
        st.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut all = Vec::new();
        st.read_to_end(&mut all).unwrap();
        assert_eq!(
            all,
            b"*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$9\r\nconnwatch\r\n"
        );
    }

    /// The six INFO replies of a fake server, as one write.
    fn info_replies(bodies: [&str; 6]) -> Vec<u8> {
        let mut out = Vec::new();
        for body in bodies {
            out.extend_from_slice(format!("${}\r\n{body}\r\n", body.len()).as_bytes());
        }
        out
    }

    const NOPERM_INFO: &[u8] =
        b"-NOPERM this user has no permissions to run the 'info' command\r\n";

    #[test]
    fn an_acl_user_without_info_is_noperm_with_the_rule_to_grant() {
        let (addr, server) = fake_server(|mut st| {
            let _ = read_some(&mut st); // AUTH
            st.write_all(b"+OK\r\n").unwrap();
            let _ = read_some(&mut st); // CLIENT SETNAME: denied too, only logged
            st.write_all(
                b"-NOPERM this user has no permissions to run the 'client|setname' command\r\n",
            )
            .unwrap();
            for _ in 0..2 {
                let _ = read_some(&mut st); // the INFO pipeline
                st.write_all(&NOPERM_INFO.repeat(6)).unwrap();
            }
            let _ = read_some(&mut st);
        });
        let mut p = RedisPoller::with_options(
            target("127.0.0.1", addr.port(), Some("watcher")),
            Some(Password::new("pw")),
            opts(10),
        );
        let (first, second) = block_on(async {
            let first = p.poll_at(SEC).await;
            let second = p.poll_at(2 * SEC).await;
            p.conn = None;
            (first, second)
        });
        server.join().unwrap();
        for s in [&first, &second] {
            assert_eq!(s.status, RedisStatus::NoPerm);
            assert_eq!(
                s.error.as_deref(),
                Some(
                    "INFO: NOPERM this user has no permissions to run the 'info' command; \
                     grant user watcher what connwatch sends: ACL SETUSER watcher +info \
                     +config|get +client|setname"
                )
            );
            assert_eq!(s.info, None, "unknown, not 0");
            assert_eq!(s.fresh_info(), None);
        }
        // The connection is fine: kept, one connect only.
        assert_eq!(p.connect_attempts(), 1);
    }

    #[test]
    fn an_acl_user_without_config_get_is_noperm_and_info_still_counts() {
        let (s, p) = poll_fake(
            |mut st| {
                let _ = read_some(&mut st); // CLIENT SETNAME
                st.write_all(b"+OK\r\n").unwrap();
                let _ = read_some(&mut st); // the INFO pipeline
                st.write_all(&info_replies([
                    "# Server\r\nredis_version:7.0.15\r\n",
                    "# Clients\r\nconnected_clients:3\r\nmaxclients:50\r\n",
                    "",
                    "",
                    "",
                    "",
                ]))
                .unwrap();
                let _ = read_some(&mut st); // CONFIG GET …
                let denied =
                    b"-NOPERM this user has no permissions to run the 'config|get' command\r\n";
                st.write_all(&denied.repeat(3)).unwrap();
                let _ = read_some(&mut st);
            },
            None,
        );
        assert_eq!(s.status, RedisStatus::NoPerm);
        assert_eq!(
            s.error.as_deref(),
            Some(
                "CONFIG GET: NOPERM this user has no permissions to run the 'config|get' \
                 command; grant user default what connwatch sends: ACL SETUSER default +info \
                 +config|get +client|setname"
            )
        );
        assert_eq!(s.config_status, ConfigStatus::Unavailable);
        assert_eq!(s.config.and_then(|c| c.maxclients), Some(50), "from INFO");
        assert_eq!(s.fresh_info().and_then(|i| i.connected_clients), Some(3));
        assert_eq!(p.connect_attempts(), 1);
    }

    #[test]
    fn the_acl_rule_names_exactly_the_commands_the_poller_sends() {
        use crate::source::redis::replies::ACL_RULE;
        let mut sent: Vec<String> = INFO_COMMANDS
            .iter()
            .chain(CONFIG_COMMANDS.iter())
            .chain([&[b"CLIENT".as_slice(), b"SETNAME", CLIENT_NAME][..]].iter())
            .map(|args| {
                let name = String::from_utf8_lossy(args[0]).to_lowercase();
                match name.as_str() {
                    // Commands with subcommands are granted per subcommand.
                    "config" | "client" => {
                        format!(
                            "+{name}|{}",
                            String::from_utf8_lossy(args[1]).to_lowercase()
                        )
                    }
                    _ => format!("+{name}"),
                }
            })
            .collect();
        sent.sort();
        sent.dedup();
        let mut rule: Vec<String> = ACL_RULE.split(' ').map(str::to_owned).collect();
        rule.sort();
        assert_eq!(rule, sent);
    }

    fn tls_target(port: u16) -> RedisTarget {
        target("127.0.0.1", port, None)
            .with_tls(
                true,
                crate::source::redis::TlsOptions {
                    insecure: true,
                    ..Default::default()
                },
            )
            .unwrap()
    }

    fn poll_tls_fake(script: impl FnOnce(TcpStream) + Send + 'static) -> RedisSnapshot {
        let (addr, server) = fake_server(script);
        let mut p = RedisPoller::with_options(tls_target(addr.port()), None, opts(6));
        let s = block_on(p.poll_at(SEC));
        drop(p);
        server.join().unwrap();
        s
    }

    #[test]
    fn a_hang_up_during_the_tls_handshake_is_a_rejection() {
        // Redis at maxclients closes a TLS connection unread, without a word.
        let s = poll_tls_fake(|st| {
            std::thread::sleep(Duration::from_millis(50));
            drop(st);
        });
        assert_eq!(s.status, RedisStatus::Rejected, "{:?}", s.error);
        let e = s.error.unwrap();
        assert!(
            e.starts_with(
                "connection closed by the server during the TLS handshake (maxclients reached?)"
            ),
            "{e}"
        );
        assert!(s.own_addr.is_some(), "the attempt's own address is known");
    }

    #[test]
    fn a_plain_text_port_fails_the_tls_handshake_with_its_cause() {
        let s = poll_tls_fake(|mut st| {
            let _ = read_some(&mut st); // the ClientHello
            let _ = st.write_all(b"-ERR Protocol error: invalid multibulk length\r\n");
            std::thread::sleep(Duration::from_millis(100));
        });
        assert_eq!(s.status, RedisStatus::TlsFailed, "{:?}", s.error);
        let e = s.error.unwrap();
        assert!(
            e.starts_with("TLS handshake failed: the server does not speak TLS here ("),
            "{e}"
        );
        assert!(e.ends_with("is this its tls-port?"), "{e}");
    }

    #[test]
    fn a_silent_server_times_the_tls_handshake_out() {
        let quick = PollerOptions {
            io_timeout: Duration::from_millis(200),
            ..opts(7)
        };
        let (addr, server) = fake_server(|mut st| {
            let _ = read_some(&mut st);
            std::thread::sleep(Duration::from_millis(600));
        });
        let mut p = RedisPoller::with_options(tls_target(addr.port()), None, quick);
        let s = block_on(p.poll_at(SEC));
        drop(p);
        server.join().unwrap();
        assert_eq!(s.status, RedisStatus::TlsFailed);
        assert_eq!(
            s.error.as_deref(),
            Some("TLS handshake failed: no answer within 200ms (is this the server's tls-port?)")
        );
    }

    /// A one-shot server on a Unix socket running `script`; the path is removed after.
    fn poll_unix_fake(
        script: impl FnOnce(std::os::unix::net::UnixStream) + Send + 'static,
    ) -> (RedisSnapshot, RedisPoller) {
        let dir = crate::source::redis::tls::tests::temp_dir("unix");
        let path = dir.join("redis.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            script(stream);
        });
        let mut p = RedisPoller::with_options(RedisTarget::unix(&path), None, opts(8));
        let s = block_on(async {
            let s = p.poll_at(SEC).await;
            p.conn = None;
            s
        });
        server.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        (s, p)
    }

    #[test]
    fn polls_over_a_unix_socket() {
        let (s, p) = poll_unix_fake(|mut st| {
            st.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 4096];
            let _ = st.read(&mut buf); // CLIENT SETNAME
            st.write_all(b"+OK\r\n").unwrap();
            let _ = st.read(&mut buf); // the INFO pipeline
            let bodies = [
                "# Server\r\nredis_version:7.0.15\r\n",
                "# Clients\r\nconnected_clients:4\r\n",
                "",
                "",
                "",
                "",
            ];
            for body in bodies {
                st.write_all(format!("${}\r\n{body}\r\n", body.len()).as_bytes())
                    .unwrap();
            }
            let _ = st.read(&mut buf); // CONFIG GET
            st.write_all(b"*0\r\n*0\r\n*0\r\n").unwrap();
            let _ = st.read(&mut buf);
        });
        assert_eq!(s.status, RedisStatus::Ok, "{:?}", s.error);
        assert_eq!(s.info.unwrap().connected_clients, Some(4));
        assert_eq!(s.own_addr, None, "no TCP connection of ours to exclude");
        assert_eq!(s.target, None);
        assert_eq!(p.connect_attempts(), 1);
    }

    #[test]
    fn a_rejection_on_a_unix_socket_is_read_before_any_command() {
        let (s, _) = poll_unix_fake(|mut st| {
            st.write_all(b"-ERR max number of clients reached\r\n")
                .unwrap();
            std::thread::sleep(Duration::from_millis(50));
        });
        assert_eq!(s.status, RedisStatus::Rejected);
        assert_eq!(
            s.error.as_deref(),
            Some("connection rejected: ERR max number of clients reached")
        );
    }

    #[test]
    fn a_missing_unix_socket_is_unreachable() {
        let dir = crate::source::redis::tls::tests::temp_dir("nosock");
        let path = dir.join("none.sock");
        let mut p = RedisPoller::with_options(RedisTarget::unix(&path), None, opts(9));
        let s = block_on(p.poll_at(SEC));
        assert_eq!(s.status, RedisStatus::Unreachable);
        assert_eq!(
            s.error,
            Some(format!(
                "connect to unix://{}: No such file or directory (os error 2)",
                path.display()
            ))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn spawning_outside_a_runtime_is_an_error() {
        let e =
            spawn_poller(target("127.0.0.1", 1, None), None, Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("reactor"), "{e}");
    }
}
