//! The stream to Redis, opened by the agent itself: the one function that creates
//! the TCP socket ([`open`]), the Unix socket ([`open_unix`]), the TLS handshake
//! over the TCP stream ([`handshake`]), and what a server may send before any
//! command (a rejection: [`has_unsolicited_input`], [`read_greeting`]). The result
//! is a [`Stream`], which `conn` hands to the `redis` crate. Failures below the
//! level of a reply are [`ConnError`]s.

use crate::source::netns::Netns;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ::redis::Value;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;

use super::tls::{self, TlsClient};
use crate::model::normalize;

/// Most bytes read for a reply the server sends before any command (a rejection).
const MAX_GREETING: usize = 64 << 10;

/// Why an exchange with Redis failed below the level of its reply.
#[derive(Debug)]
pub enum ConnError {
    /// TCP connect failed (refused, timed out, unreachable).
    Connect { addr: SocketAddr, source: io::Error },
    /// A read or write failed or timed out.
    Io {
        context: &'static str,
        source: io::Error,
    },
    /// The server closed the connection.
    Closed,
    /// The server broke the protocol, or sent more than the reply limit.
    Protocol(String),
    /// The TLS handshake failed, or the TLS session did: one line naming the cause.
    Tls(String),
    /// Connecting to the Unix socket failed.
    ConnectUnix { path: PathBuf, source: io::Error },
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Connect { addr, source } => {
                write!(f, "connect to {addr}: {}", io_msg(source))
            }
            ConnError::Io { context, source } => write!(f, "{context}: {}", io_msg(source)),
            ConnError::Closed => f.write_str("connection closed by the server"),
            ConnError::Protocol(msg) => write!(f, "RESP protocol error: {msg}"),
            ConnError::Tls(msg) => f.write_str(msg),
            ConnError::ConnectUnix { path, source } => {
                write!(
                    f,
                    "connect to unix://{}: {}",
                    path.display(),
                    io_msg(source)
                )
            }
        }
    }
}

impl std::error::Error for ConnError {}

fn io_msg(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => crate::model::TIMED_OUT.to_string(),
        _ => e.to_string(),
    }
}

impl ConnError {
    /// The peer hung up (EOF, reset, broken pipe).
    pub fn is_hangup(&self) -> bool {
        match self {
            ConnError::Closed => true,
            ConnError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }

    pub(super) fn timed_out(context: &'static str) -> Self {
        ConnError::Io {
            context,
            source: io::ErrorKind::TimedOut.into(),
        }
    }
}

/// What the crate reads and writes: a plain TCP stream, TLS over one, or a Unix
/// socket.
pub enum Stream {
    Tcp(TcpStream),
    /// Boxed: a TLS session is large, and the other variants are a descriptor.
    Tls(Box<TlsStream<TcpStream>>),
    Unix(UnixStream),
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stream::Tcp(_) => "Stream::Tcp",
            Stream::Tls(_) => "Stream::Tls",
            Stream::Unix(_) => "Stream::Unix",
        })
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Opens the TCP connection within `timeout`, with TCP_NODELAY. The one place the
/// agent creates a TCP socket to Redis (TLS or not): from inside `netns` when given
/// (the socket is made there, so `127.0.0.1` is that namespace's, a container's).
pub async fn open(
    addr: SocketAddr,
    timeout: Duration,
    netns: Option<&Netns>,
) -> Result<TcpStream, ConnError> {
    let connect = async {
        let Some(netns) = netns else {
            return TcpStream::connect(addr).await;
        };
        let domain = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let fd = netns.socket(domain, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0)?;
        tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(fd))
            .connect(addr)
            .await
    };
    let stream = match tokio::time::timeout(timeout.max(Duration::from_millis(1)), connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => return Err(ConnError::Connect { addr, source }),
        Err(_) => {
            return Err(ConnError::Connect {
                addr,
                source: io::ErrorKind::TimedOut.into(),
            });
        }
    };
    stream.set_nodelay(true).map_err(|source| ConnError::Io {
        context: "setting TCP_NODELAY",
        source,
    })?;
    Ok(stream)
}

/// Connects to the Unix socket at `path` within `timeout`.
pub async fn open_unix(path: &Path, timeout: Duration) -> Result<UnixStream, ConnError> {
    let connect = UnixStream::connect(path);
    match tokio::time::timeout(timeout.max(Duration::from_millis(1)), connect).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(source)) => Err(ConnError::ConnectUnix {
            path: path.to_path_buf(),
            source,
        }),
        Err(_) => Err(ConnError::ConnectUnix {
            path: path.to_path_buf(),
            source: io::ErrorKind::TimedOut.into(),
        }),
    }
}

/// The TLS handshake over `stream`, within `timeout`. A server that hangs up
/// during it gives [`ConnError::Closed`] (or a reset), as Redis does to a TLS
/// connection it turns away at maxclients; a handshake the server or our checks
/// refuse gives [`ConnError::Tls`], naming the cause.
pub async fn handshake(
    stream: TcpStream,
    client: &TlsClient,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, ConnError> {
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&client.config));
    let connect = connector.connect(client.server_name.clone(), stream);
    match tokio::time::timeout(timeout.max(Duration::from_millis(1)), connect).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(match tls::rustls_error(&e) {
            Some(err) => ConnError::Tls(format!(
                "TLS handshake failed: {}",
                tls::describe(err, client)
            )),
            None if e.kind() == io::ErrorKind::UnexpectedEof => ConnError::Closed,
            None => ConnError::Io {
                context: "TLS handshake",
                source: e,
            },
        }),
        Err(_) => Err(ConnError::Tls(format!(
            "TLS handshake failed: no answer within {} (is this the server's tls-port?)",
            humantime::format_duration(timeout)
        ))),
    }
}

/// The stream's local address: the agent's address as the server sees it (unless a
/// NAT or proxy sits in between).
pub fn local_addr(stream: &TcpStream) -> Result<SocketAddr, ConnError> {
    stream
        .local_addr()
        .map(normalize)
        .map_err(|source| ConnError::Io {
            context: "reading the local address",
            source,
        })
}

/// Whether the server has already sent something (or closed) although we asked
/// nothing: Redis rejects a connection (maxclients, protected mode) by writing an
/// error and closing right after the accept. One non-blocking peek, no waiting.
/// `Err(Closed)` on EOF.
pub fn has_unsolicited_input(stream: TcpStream) -> Result<(bool, TcpStream), ConnError> {
    let io = |context| move |source| ConnError::Io { context, source };
    // tokio's stream is non-blocking, and so is the std stream it turns into: the peek
    // returns at once. The round trip through std is how to peek without waiting for
    // the runtime's readiness events.
    let std_stream = stream.into_std().map_err(io("checking for a greeting"))?;
    let mut byte = [0u8; 1];
    let peeked = std_stream.peek(&mut byte);
    let stream = TcpStream::from_std(std_stream).map_err(io("checking for a greeting"))?;
    match peeked {
        Ok(0) => Err(ConnError::Closed),
        Ok(_) => Ok((true, stream)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok((false, stream)),
        Err(source) => Err(ConnError::Io {
            context: "checking for a greeting",
            source,
        }),
    }
}

/// [`has_unsolicited_input`] for a Unix socket, which cannot be peeked without
/// unsafe code: what is there is read (without waiting) and returned, for
/// [`read_greeting`] to go on from. `Err(Closed)` on EOF.
pub fn unix_unsolicited_input(
    stream: UnixStream,
) -> Result<(Option<Vec<u8>>, UnixStream), ConnError> {
    use std::io::Read as _;
    let io = |context| move |source| ConnError::Io { context, source };
    // As above: the std stream is non-blocking, so the read returns at once.
    let mut std_stream = stream.into_std().map_err(io("checking for a greeting"))?;
    let mut chunk = [0u8; 4096];
    let read = std_stream.read(&mut chunk);
    let stream = UnixStream::from_std(std_stream).map_err(io("checking for a greeting"))?;
    match read {
        Ok(0) => Err(ConnError::Closed),
        Ok(n) => Ok((Some(chunk[..n].to_vec()), stream)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok((None, stream)),
        Err(source) => Err(ConnError::Io {
            context: "checking for a greeting",
            source,
        }),
    }
}

/// Reads the one reply a server sent before any command, within `timeout`, going on
/// from the bytes already read (`start`).
pub async fn read_greeting<S>(
    mut stream: S,
    start: Vec<u8>,
    timeout: Duration,
) -> Result<Value, ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::AsyncReadExt as _;
    let read = async {
        if !start.is_empty()
            && let Ok(value) = ::redis::parse_redis_value(&start)
        {
            return Ok(value);
        }
        let mut buf = start;
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|source| ConnError::Io {
                    context: "reading a reply",
                    source,
                })?;
            buf.extend_from_slice(&chunk[..n]);
            match ::redis::parse_redis_value(&buf) {
                Ok(value) => return Ok(value),
                // Incomplete: the parser reports the end of its input as an I/O error.
                Err(e) if e.is_io_error() && n > 0 && buf.len() < MAX_GREETING => {}
                Err(_) if n == 0 && buf.is_empty() => return Err(ConnError::Closed),
                Err(e) if e.is_io_error() && n == 0 => return Err(ConnError::Closed),
                Err(e) if e.is_io_error() => {
                    return Err(ConnError::Protocol(format!(
                        "reply before any command longer than {MAX_GREETING} bytes"
                    )));
                }
                Err(e) => return Err(ConnError::Protocol(e.to_string())),
            }
        }
    };
    let result = match tokio::time::timeout(timeout, read).await {
        Ok(result) => result,
        Err(_) => Err(ConnError::timed_out("reading a reply")),
    };
    let _ = stream.shutdown().await;
    result
}
