//! One connection to Redis on the `redis` crate, over a stream we open ourselves.
//!
//! We connect the socket (with a deadline; see `stream`), read its local address —
//! the agent's own connection as the server sees it — and only then hand the
//! stream to the crate's `MultiplexedConnection`, whose driver runs as a task on the
//! current runtime. The stream is a [`Stream`]: plain TCP, TLS over that TCP stream
//! (rustls, set up in `tls`), or a Unix socket. The crate is told no password, no database and no client-library name, so it sends
//! nothing by itself: AUTH and CLIENT SETNAME are ordinary commands of the poller,
//! whose replies it maps to statuses itself (and a password need not be UTF-8).
//!
//! Bounds, since a hostile or broken server must not make us allocate or wait
//! without limit:
//!
//! - time: the connect has `connect_timeout`; each exchange (a command or pipeline and
//!   all its replies) has `io_timeout` in total;
//! - size: the crate has no reply-size limit (a bulk string may announce any length
//!   and the codec buffers until it has arrived), so the stream it reads from is
//!   wrapped in a counter: each exchange may read at most `max_reply` bytes, past
//!   which the read fails and the connection is dropped. This bounds what one poll can
//!   make the codec buffer, whatever the replies announce. It cannot reject a huge
//!   length up front (only the bytes that really arrive count), and nesting depth is
//!   bounded by the crate's parser itself (100 levels).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisConnectionInfo, ServerError, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::stream::{ConnError, Stream};
use super::tls::{self, TlsClient};

/// Most bytes one exchange may read (32 MiB): far above anything INFO or CONFIG GET
/// return, far below what would hurt the host.
pub const DEFAULT_MAX_REPLY: usize = 32 << 20;

/// Largest single read through the counting wrapper.
const READ_CHUNK: usize = 16 << 10;

/// What the wire saw, shared by the stream wrapper (in the crate's driver task) and
/// the connection: the crate's own errors say less (an EOF becomes "broken pipe").
#[derive(Debug, Default)]
struct Wire {
    /// Bytes the current exchange may still read.
    budget: AtomicUsize,
    /// The budget ran out.
    over: AtomicBool,
    /// The server closed its side.
    eof: AtomicBool,
    /// The first I/O error of the current exchange.
    error: Mutex<Option<(&'static str, io::ErrorKind, String)>>,
    /// The first TLS failure of the session, said in one line (see `tls::describe`).
    tls_error: Mutex<Option<String>>,
}

impl Wire {
    fn reset(&self, budget: usize) {
        self.budget.store(budget, Ordering::Relaxed);
        self.over.store(false, Ordering::Relaxed);
        *self.error.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn record(&self, context: &'static str, e: &io::Error) {
        let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some((context, e.kind(), e.to_string()));
        }
    }

    fn take_error(&self) -> Option<(&'static str, io::ErrorKind, String)> {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// The stream as the crate sees it: reads count against the exchange's budget,
/// and every failure is noted in the [`Wire`].
struct Counted {
    inner: Stream,
    wire: Arc<Wire>,
    /// Describes a TLS failure (`Some` for a TLS stream).
    tls: Option<TlsClient>,
}

impl Counted {
    fn note(&self, context: &'static str, e: &io::Error) {
        self.wire.record(context, e);
        if let (Some(client), Some(err)) = (&self.tls, tls::rustls_error(e)) {
            let mut slot = self
                .wire
                .tls_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            slot.get_or_insert_with(|| tls::describe(err, client));
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let budget = self.wire.budget.load(Ordering::Relaxed);
        if budget == 0 {
            self.wire.over.store(true, Ordering::Relaxed);
            return Poll::Ready(Err(io::Error::other("reply size limit reached")));
        }
        let mut chunk = [0u8; READ_CHUNK];
        let want = buf.remaining().min(budget).min(READ_CHUNK);
        let mut part = ReadBuf::new(&mut chunk[..want]);
        match Pin::new(&mut self.inner).poll_read(cx, &mut part) {
            Poll::Ready(Ok(())) => {
                let got = part.filled();
                if got.is_empty() && want > 0 {
                    self.wire.eof.store(true, Ordering::Relaxed);
                }
                self.wire
                    .budget
                    .store(budget.saturating_sub(got.len()), Ordering::Relaxed);
                buf.put_slice(got);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                self.note("reading a reply", &e);
                Poll::Ready(Err(e))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Err(e)) = &result {
            self.note("sending a command", e);
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        if let Poll::Ready(Err(e)) = &result {
            self.note("sending a command", e);
        }
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One connection, on the crate's multiplexed connection over our own stream. Only one
/// exchange is in flight at a time. Dropping it closes the socket.
pub struct RedisConn {
    conn: MultiplexedConnection,
    driver: tokio::task::JoinHandle<()>,
    wire: Arc<Wire>,
    io_timeout: Duration,
    max_reply: usize,
}

impl fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConn")
            .field("io_timeout", &self.io_timeout)
            .field("max_reply", &self.max_reply)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisConn {
    fn drop(&mut self) {
        // The driver owns the socket: ending it closes the connection now.
        self.driver.abort();
    }
}

impl RedisConn {
    /// Hands `stream` to the crate. Sends nothing: no AUTH, SELECT, HELLO or CLIENT
    /// SETINFO (the caller authenticates). Must run inside a tokio runtime (the
    /// crate's driver is spawned on it).
    /// `tls` describes the failures of a TLS stream.
    pub async fn over(
        stream: Stream,
        tls: Option<TlsClient>,
        io_timeout: Duration,
        max_reply: usize,
    ) -> Result<Self, ConnError> {
        let wire = Arc::new(Wire::default());
        wire.reset(max_reply);
        let counted = Counted {
            inner: stream,
            wire: Arc::clone(&wire),
            tls,
        };
        let info = RedisConnectionInfo::default().set_skip_set_lib_name();
        // Our own deadline covers each exchange (see `exchange`); the crate's would
        // only duplicate it with another message.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(None)
            .set_response_timeout(None);
        let (conn, driver) = MultiplexedConnection::new_with_config(&info, counted, config)
            .await
            .map_err(|e| ConnError::Protocol(e.to_string()))?;
        Ok(RedisConn {
            conn,
            driver: tokio::spawn(driver),
            wire,
            io_timeout: io_timeout.max(Duration::from_millis(1)),
            max_reply,
        })
    }

    /// Sends `commands` as one pipeline (one write) and reads one reply each, all
    /// within the I/O timeout and the reply limit. Error replies come back as
    /// [`Value::ServerError`] in their place; `Err` means the connection is unusable.
    pub async fn exchange(&mut self, commands: &[&[&[u8]]]) -> Result<Vec<Value>, ConnError> {
        let mut pipe = Pipeline::with_capacity(commands.len());
        for args in commands {
            let mut cmd = Cmd::new();
            for arg in *args {
                cmd.arg(*arg);
            }
            pipe.add_command(cmd);
        }
        self.wire.reset(self.max_reply);
        let sent = self.conn.send_packed_commands(&pipe, 0, commands.len());
        let result = tokio::time::timeout(self.io_timeout, sent).await;
        drop(pipe);
        let values = match result {
            Err(_) => return Err(ConnError::timed_out("reading a reply")),
            Ok(Err(e)) => return Err(self.why(&e)),
            Ok(Ok(values)) => values,
        };
        if values.len() != commands.len() {
            return Err(ConnError::Protocol(format!(
                "{} replies to {} commands",
                values.len(),
                commands.len()
            )));
        }
        Ok(values)
    }

    /// What the crate's error means, with what the wire saw.
    fn why(&self, e: &::redis::RedisError) -> ConnError {
        if self.wire.over.load(Ordering::Relaxed) {
            return ConnError::Protocol(format!("reply larger than {} bytes", self.max_reply));
        }
        if let Some(msg) = self
            .wire
            .tls_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return ConnError::Tls(format!("TLS: {msg}"));
        }
        if let Some((context, kind, msg)) = self.wire.take_error() {
            return ConnError::Io {
                context,
                source: io::Error::new(kind, msg),
            };
        }
        if self.wire.eof.load(Ordering::Relaxed) {
            return ConnError::Closed;
        }
        match e.kind() {
            // The wire saw no failure, yet the crate ended the connection: its codec
            // gave up on what the server sent. (Inside a pipeline the crate drops the
            // parse error itself and reports the ended connection.)
            ::redis::ErrorKind::Io => ConnError::Protocol("unparsable reply".to_string()),
            _ => ConnError::Protocol(e.to_string()),
        }
    }
}

/// An error reply as the server wrote it (`ERR max number of clients reached`).
pub fn error_text(e: &ServerError) -> String {
    match e.details() {
        Some(detail) => format!("{} {detail}", e.code()),
        None => e.code().to_string(),
    }
}

/// What kind of reply `v` is, for messages.
pub fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Okay | Value::SimpleString(_) => "simple string",
        Value::ServerError(_) => "error",
        Value::Int(_) => "integer",
        Value::Nil => "null",
        Value::BulkString(_) => "bulk string",
        Value::Array(_) => "array",
        _ => "RESP3 value",
    }
}
