//! The `/metrics` endpoint of `watch --metrics`: a tiny HTTP server that serves
//! the latest report in the Prometheus text exposition format
//! ([`crate::report::prometheus`]).
//!
//! The server is deliberately minimal: one request per connection (`Connection:
//! close`), request head at most 8 KiB read within 5 s, at most 16 connections at
//! once, `GET`/`HEAD /metrics` only. It holds no state but the latest text, which
//! the live loop replaces every interval with [`MetricsServer::publish`]; until the
//! first report it answers 503.

use crate::model::Report;
use crate::report::prometheus;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

/// Longest request head (request line and headers) read.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to take the response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 16;
/// How long, and how much, to read from a client after the response (see [`linger`]).
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;
/// Pause after a failed accept() (EMFILE…), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The endpoint's socket, bound but not served yet. Binding needs no runtime, so
/// a busy or invalid address is reported before anything else starts; serving
/// needs one.
#[derive(Debug)]
pub struct MetricsListener {
    listener: std::net::TcpListener,
    local_addr: SocketAddr,
}

impl MetricsListener {
    pub fn bind(addr: SocketAddr) -> anyhow::Result<MetricsListener> {
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("binding the metrics endpoint to {addr}"))?;
        listener
            .set_nonblocking(true)
            .context("making the metrics endpoint non-blocking")?;
        let local_addr = listener
            .local_addr()
            .context("reading the metrics endpoint's address")?;
        Ok(MetricsListener {
            listener,
            local_addr,
        })
    }

    /// The address bound (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Spawns the server task. Must be called from within a tokio runtime (any
    /// flavour, e.g. inside `block_on`); the task runs whenever the runtime's
    /// thread awaits.
    pub fn serve(self) -> anyhow::Result<(MetricsServer, JoinHandle<()>)> {
        self.serve_with(READ_TIMEOUT)
    }

    fn serve_with(self, read_timeout: Duration) -> anyhow::Result<(MetricsServer, JoinHandle<()>)> {
        let listener = TcpListener::from_std(self.listener)
            .context("registering the metrics endpoint with the event loop")?;
        let (latest, rx) = watch::channel(None);
        let task = tokio::spawn(serve(listener, rx, read_timeout));
        Ok((
            MetricsServer {
                latest,
                local_addr: self.local_addr,
            },
            task,
        ))
    }
}

/// The `/metrics` endpoint: holds the latest rendered text. Dropping it stops the
/// server task.
#[derive(Debug)]
pub struct MetricsServer {
    latest: watch::Sender<Option<Arc<str>>>,
    local_addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `addr` and spawns the server task on the current tokio runtime.
    /// Until the first [`publish`](Self::publish), `/metrics` answers 503.
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<(MetricsServer, JoinHandle<()>)> {
        MetricsListener::bind(addr)?.serve()
    }

    #[cfg(test)]
    async fn bind_with(
        addr: SocketAddr,
        read_timeout: Duration,
    ) -> anyhow::Result<(MetricsServer, JoinHandle<()>)> {
        MetricsListener::bind(addr)?.serve_with(read_timeout)
    }

    /// The address the server listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Replaces the text served at `/metrics`.
    pub fn publish(&self, text: String) {
        self.latest.send_replace(Some(Arc::from(text)));
    }

    /// Renders `report` (see [`prometheus::render`]) and serves it from now on.
    pub fn publish_report(&self, report: &Report, top: usize) {
        self.publish(prometheus::render(report, top));
    }

    /// Renders the reports of every instance (see [`prometheus::render_all`]) and
    /// serves them from now on.
    pub fn publish_reports(&self, reports: &[Report], top: usize) {
        self.publish(prometheus::render_all(reports, top));
    }
}

async fn serve(
    listener: TcpListener,
    mut latest: watch::Receiver<Option<Arc<str>>>,
    read_timeout: Duration,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = sender_dropped(&mut latest) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    log::debug!("metrics: {MAX_CONNECTIONS} connections busy, closing {peer}");
                    continue;
                };
                let latest = latest.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, latest, read_timeout).await {
                        log::debug!("metrics: {peer}: {e}");
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                log::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Resolves once the [`MetricsServer`] is dropped.
async fn sender_dropped(rx: &mut watch::Receiver<Option<Arc<str>>>) {
    while rx.changed().await.is_ok() {}
}

/// What the client sent before the blank line.
enum Head {
    Complete(Vec<u8>),
    TooLarge,
    /// The connection ended before a full head: nothing (a probe) or a fragment.
    Ended {
        empty: bool,
    },
}

async fn read_head(stream: &mut TcpStream) -> io::Result<Head> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Head::Ended {
                empty: head.is_empty(),
            });
        }
        // Look for the end of the head only where it can newly appear.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if let Some(end) = head_end(head.get(from..).unwrap_or_default()) {
            head.truncate(from + end);
            return Ok(Head::Complete(head));
        }
        if head.len() > MAX_REQUEST_HEAD {
            return Ok(Head::TooLarge);
        }
    }
}

/// The length up to and including the blank line ending a request head (CRLF, or
/// bare LF from lenient clients).
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A response: status line, extra headers, body.
struct Response {
    status: &'static str,
    content_type: &'static str,
    extra: &'static str,
    body: Arc<str>,
    /// HEAD: the headers (with the body's length) but no body.
    head_only: bool,
}

impl Response {
    fn text(status: &'static str, body: &'static str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            extra: "",
            body: Arc::from(body),
            head_only: false,
        }
    }
}

/// Decides the response to a request head.
fn route(head: &[u8], latest: Option<Arc<str>>) -> Response {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = head.get(..line_end).unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return Response::text("400 Bad Request", "bad request\n");
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Response::text("400 Bad Request", "bad request\n");
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Response::text("400 Bad Request", "bad request\n");
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path != "/metrics" {
        return Response::text("404 Not Found", "not found: try /metrics\n");
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            let mut r = Response::text("405 Method Not Allowed", "method not allowed\n");
            r.extra = "Allow: GET, HEAD\r\n";
            return r;
        }
    };
    match latest {
        Some(body) => Response {
            status: "200 OK",
            content_type: prometheus::CONTENT_TYPE,
            extra: "",
            body,
            head_only,
        },
        None => {
            let mut r = Response::text("503 Service Unavailable", "no report yet\n");
            r.extra = "Retry-After: 1\r\n";
            r.head_only = head_only;
            r
        }
    }
}

async fn handle(
    mut stream: TcpStream,
    latest: watch::Receiver<Option<Arc<str>>>,
    read_timeout: Duration,
) -> io::Result<()> {
    let response = match tokio::time::timeout(read_timeout, read_head(&mut stream)).await {
        Err(_elapsed) => Response::text("408 Request Timeout", "request timeout\n"),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(Head::Ended { empty: true })) => return Ok(()),
        Ok(Ok(Head::Ended { empty: false })) => Response::text("400 Bad Request", "bad request\n"),
        Ok(Ok(Head::TooLarge)) => Response::text(
            "431 Request Header Fields Too Large",
            "request head too large\n",
        ),
        // Read the latest text only now, so a slow client still gets the newest.
        Ok(Ok(Head::Complete(head))) => route(&head, latest.borrow().clone()),
    };
    let header = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len(),
        response.extra,
    );
    let write = async {
        stream.write_all(header.as_bytes()).await?;
        if !response.head_only {
            stream.write_all(response.body.as_bytes()).await?;
        }
        stream.shutdown().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(result) => result?,
        Err(_elapsed) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client took too long to read the response",
            ));
        }
    }
    linger(&mut stream).await;
    Ok(())
}

/// Reads what the client still sends (a body we did not want, the rest of an
/// oversized head) until it closes, for a short while: closing a socket with
/// unread data sends a RST, which can destroy the response before the client
/// reads it.
async fn linger(stream: &mut TcpStream) {
    let mut sink = [0u8; 1024];
    let mut left = LINGER_BYTES;
    let drain = async {
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;
    use crate::report::prometheus::render;
    use crate::testing::full_report;

    /// Sends `request` raw and returns the whole response (until the server closes).
    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    async fn fetch(addr: SocketAddr, request: &'static [u8]) -> String {
        tokio::task::spawn_blocking(move || exchange(addr, request))
            .await
            .unwrap()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[test]
    fn serves_the_latest_text_at_metrics_and_404_elsewhere() {
        runtime().block_on(async {
            let (server, task) = MetricsServer::bind(loopback()).await.unwrap();
            let addr = server.local_addr();
            assert_ne!(addr.port(), 0);

            let early = fetch(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
            assert!(early.starts_with("HTTP/1.1 503 "), "{early}");
            assert!(early.ends_with("\r\n\r\nno report yet\n"), "{early}");

            server.publish_report(&full_report(), 2);
            let expected = render(&full_report(), 2);
            let ok = fetch(
                addr,
                b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n",
            )
            .await;
            let (head, body) = ok.split_once("\r\n\r\n").unwrap();
            let head: Vec<&str> = head.split("\r\n").collect();
            assert_eq!(head[0], "HTTP/1.1 200 OK");
            assert!(head.contains(&"Content-Type: text/plain; version=0.0.4; charset=utf-8"));
            assert!(head.contains(&format!("Content-Length: {}", expected.len()).as_str()));
            assert!(head.contains(&"Connection: close"));
            assert_eq!(body, expected);

            // Replaced by the next publish; a query string is ignored.
            server.publish("connwatch_up 1\n".to_owned());
            let next = fetch(addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").await;
            assert!(next.ends_with("\r\n\r\nconnwatch_up 1\n"), "{next}");

            let head_only = fetch(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
            assert!(head_only.starts_with("HTTP/1.1 200 OK\r\n"));
            assert!(head_only.contains("Content-Length: 15\r\n"));
            assert!(head_only.ends_with("\r\n\r\n"), "{head_only}");

            let nope = fetch(addr, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").await;
            assert!(nope.starts_with("HTTP/1.1 404 Not Found\r\n"), "{nope}");
            let root = fetch(addr, b"GET / HTTP/1.1\r\n\r\n").await;
            assert!(root.starts_with("HTTP/1.1 404 "), "{root}");
            let post = fetch(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
            assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
            assert!(post.contains("Allow: GET, HEAD\r\n"));
            let lenient = fetch(addr, b"GET /metrics HTTP/1.1\n\n").await;
            assert!(lenient.starts_with("HTTP/1.1 200 "), "{lenient}");

            // Dropping the server ends its task.
            drop(server);
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("the server task ends when the server is dropped")
                .unwrap();
        });
    }

    #[test]
    fn bad_requests_get_an_error_never_a_panic() {
        runtime().block_on(async {
            let (server, _task) = MetricsServer::bind(loopback()).await.unwrap();
            server.publish("x 1\n".to_owned());
            let addr = server.local_addr();
            for bad in [
                &b"garbage\r\n\r\n"[..],
                b"GET /metrics\r\n\r\n",
                b"GET metrics HTTP/1.1\r\n\r\n",
                b"GET /metrics SMTP/1.0\r\n\r\n",
                b"GET  /metrics HTTP/1.1\r\n\r\n",
                b"\xff\xfe /metrics HTTP/1.1\r\n\r\n",
                b"\r\n\r\n",
            ] {
                let response = fetch(addr, bad).await;
                assert!(
                    response.starts_with("HTTP/1.1 400 Bad Request\r\n"),
                    "{bad:?}: {response}"
                );
            }
            // A head without its blank line, then EOF.
            let cut = tokio::task::spawn_blocking(move || {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
                s.shutdown(std::net::Shutdown::Write).unwrap();
                let mut r = String::new();
                s.read_to_string(&mut r).unwrap();
                r
            })
            .await
            .unwrap();
            assert!(cut.starts_with("HTTP/1.1 400 "), "{cut}");
            // A head larger than the limit.
            let huge = tokio::task::spawn_blocking(move || {
                let mut request = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
                request.resize(request.len() + 3 * MAX_REQUEST_HEAD, b'a');
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                // The server may close before taking it all: only the reply matters.
                let _ = s.write_all(&request);
                let mut r = Vec::new();
                let _ = s.read_to_end(&mut r);
                String::from_utf8_lossy(&r).into_owned()
            })
            .await
            .unwrap();
            assert!(huge.starts_with("HTTP/1.1 431 "), "{huge}");
            // A probe that connects and leaves gets nothing, and the server goes on.
            drop(std::net::TcpStream::connect(addr).unwrap());
            let ok = fetch(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
            assert!(ok.ends_with("\r\n\r\nx 1\n"), "{ok}");
        });
    }

    #[test]
    fn a_silent_client_is_timed_out() {
        runtime().block_on(async {
            let (server, _task) = MetricsServer::bind_with(loopback(), Duration::from_millis(200))
                .await
                .unwrap();
            let addr = server.local_addr();
            let started = std::time::Instant::now();
            let response = fetch(addr, b"GET /metr").await;
            assert!(response.starts_with("HTTP/1.1 408 "), "{response}");
            assert!(started.elapsed() < Duration::from_secs(5));
        });
    }

    #[test]
    fn a_listener_bound_before_the_runtime_serves_inside_it() {
        let listener = MetricsListener::bind(loopback()).unwrap();
        let addr = listener.local_addr();
        runtime().block_on(async move {
            let (server, _task) = listener.serve().unwrap();
            assert_eq!(server.local_addr(), addr);
            server.publish("y 2\n".to_owned());
            let ok = fetch(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
            assert!(ok.ends_with("\r\n\r\ny 2\n"), "{ok}");
        });
    }

    #[test]
    fn binding_a_busy_address_is_an_error_naming_it() {
        runtime().block_on(async {
            let (server, _task) = MetricsServer::bind(loopback()).await.unwrap();
            let taken = server.local_addr();
            let err = MetricsServer::bind(taken).await.unwrap_err();
            assert!(format!("{err:#}").contains(&taken.to_string()), "{err:#}");
        });
    }
}
