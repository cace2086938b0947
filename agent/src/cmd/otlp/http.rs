//! The OTLP/HTTP transport: the collector's URL, and one blocking POST per request
//! over a fresh connection (plain TCP, or TLS with rustls for `https://`, trusting
//! the host's CA store). Runs on the exporter's thread only, never on the agent's
//! event loop; every step has a timeout.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::report::otlp::CONTENT_TYPE;
use crate::source::redis::{TlsClient, TlsOptions};

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one read or write may wait.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of a response read (its status line and headers): the rest is ignored.
const MAX_HEAD: usize = 16 * 1024;

/// Where the requests go: `http[s]://HOST[:PORT][/PATH]`; metrics and logs are
/// POSTed under PATH (`/v1/metrics`, `/v1/logs`), as the OpenTelemetry SDKs do with
/// `OTEL_EXPORTER_OTLP_ENDPOINT`.
#[derive(Clone)]
pub struct Endpoint {
    /// The URL as given, for messages.
    pub url: String,
    host: String,
    port: u16,
    /// The path before `/v1/...`, without a trailing slash ("" for none).
    base: String,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl Endpoint {
    /// Parses the `--otlp` URL; the error is one line for the user.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let bad = |why: &str| {
            format!("--otlp {url:?}: {why} (expected http://HOST[:PORT][/PATH] or https://…)")
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("not a URL"))?;
        let (tls, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "http" => (false, 80),
            "https" => (true, 443),
            _ => return Err(bad(&format!("scheme {scheme:?} is not http or https"))),
        };
        if rest.contains(['?', '#']) {
            return Err(bad("a query or fragment has no meaning here"));
        }
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| bad("bad host or port"))?;
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad(&format!("port {p:?} is not a number from 1 to 65535")))?,
            None => default_port,
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(bad("no host"));
        }
        let tls = if tls {
            let client =
                TlsClient::new(&TlsOptions::default(), host).map_err(|e| bad(&e.to_string()))?;
            Some(client.parts())
        } else {
            None
        };
        Ok(Endpoint {
            url: url.to_owned(),
            host: host.to_owned(),
            port,
            base: path.trim_end_matches('/').to_owned(),
            tls,
        })
    }

    /// The request path of `what` (`v1/metrics`, `v1/logs`).
    pub fn path(&self, what: &str) -> String {
        format!("{}/{what}", self.base)
    }

    /// POSTs `body` to `what` and returns the response's status code. An error is
    /// one that may pass (connection refused, a timeout): worth trying again.
    pub fn post(&self, what: &str, body: &[u8]) -> io::Result<u16> {
        let stream = self.connect()?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: connwatch/{version}\r\n\
             Content-Type: {CONTENT_TYPE}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n",
            path = self.path(what),
            host = self.host_header(),
            version = env!("CARGO_PKG_VERSION"),
            len = body.len(),
        );
        match &self.tls {
            None => exchange(stream, head.as_bytes(), body),
            Some((config, name)) => {
                let conn = ClientConnection::new(config.clone(), name.clone())
                    .map_err(io::Error::other)?;
                exchange(StreamOwned::new(conn, stream), head.as_bytes(), body)
            }
        }
    }

    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{host}:{}", self.port)
    }

    fn connect(&self) -> io::Result<TcpStream> {
        let mut last = None;
        for addr in (self.host.as_str(), self.port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    s.set_read_timeout(Some(IO_TIMEOUT))?;
                    s.set_write_timeout(Some(IO_TIMEOUT))?;
                    s.set_nodelay(true)?;
                    return Ok(s);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} has no address", self.host),
            )
        }))
    }
}

/// `host[:port]` or `[v6][:port]`.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match authority.split_once(':') {
        Some((host, port)) if !port.contains(':') => Some((host, Some(port))),
        Some(_) => None,
        None => Some((authority, None)),
    }
}

/// Writes the request and reads the status code from the response's head.
fn exchange(mut stream: impl Read + Write, head: &[u8], body: &[u8]) -> io::Result<u16> {
    stream.write_all(head)?;
    stream.write_all(body)?;
    stream.flush()?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_HEAD {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    status_code(&buf).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the collector's answer is not HTTP",
        )
    })
}

/// The code of an HTTP/1.x status line.
fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_or_say_why_on_one_line() {
        let e = Endpoint::parse("http://127.0.0.1:4318").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 4318));
        assert_eq!(e.path("v1/metrics"), "/v1/metrics");
        let e = Endpoint::parse("http://collector/otlp/").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("collector", 80));
        assert_eq!(e.path("v1/logs"), "/otlp/v1/logs");
        let e = Endpoint::parse("http://[::1]:4318/").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 4318));
        assert_eq!(e.host_header(), "[::1]:4318");
        let e = Endpoint::parse("https://otel.example:4318").unwrap();
        assert!(e.tls.is_some());
        assert_eq!(e.port, 4318);
        for (url, why) in [
            ("127.0.0.1:4318", "not a URL"),
            ("localhost", "not a URL"),
            ("ftp://x", "scheme \"ftp\""),
            ("http://:4318", "no host"),
            ("http://h:0", "port \"0\""),
            ("http://h:99999", "port \"99999\""),
            ("http://h:x", "port \"x\""),
            ("http://u:p@h", "credentials"),
            ("http://h/?a=1", "query"),
            ("http://[::1", "bad host"),
        ] {
            let err = Endpoint::parse(url).unwrap_err();
            assert!(err.contains(why), "{url}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n\r\n"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 503 Busy\r\n"), Some(503));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b""), None);
    }
}
