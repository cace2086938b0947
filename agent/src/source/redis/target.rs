//! Where to connect ([`RedisTarget`], parsed from a `redis://`, `rediss://` or
//! `unix://` URL, with TLS set up from redis-cli's flags) and with which password
//! ([`Password`], from a file or `REDISCLI_AUTH`, never from argv, never printed).

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::tls::{TlsClient, TlsOptions};

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

/// The Redis host name did not resolve (in time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolveError(pub String);

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ResolveError {}

pub const DEFAULT_REDIS_PORT: u16 = 6379;

/// How the agent reaches the server.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// Host name or IP address (IPv6 without brackets), and port.
    Tcp { host: String, port: u16 },
    /// A Unix socket (`unixsocket` in redis.conf).
    Unix(PathBuf),
}

/// Where the agent connects: `redis://[user@]host[:port][/db]`, `host[:port]`,
/// `[v6addr][:port]`, `rediss://…` (TLS), `unix:///path` or `unix:/path`. The db
/// number is accepted and ignored (INFO is server-wide).
#[derive(Clone, Debug)]
pub struct RedisTarget {
    pub endpoint: Endpoint,
    /// ACL user for `AUTH user password`; `None`: `AUTH password`.
    pub username: Option<String>,
    /// Speak TLS: `rediss://` or `--tls`. The options come from the flags
    /// ([`with_tls`](Self::with_tls)); a `rediss://` URL alone means the defaults.
    pub tls: Option<TlsOptions>,
    /// The TLS configuration built from `tls` by [`with_tls`](Self::with_tls) (the
    /// poller builds it on first use otherwise).
    pub(super) tls_client: Option<TlsClient>,
}

impl PartialEq for RedisTarget {
    /// Compares what was asked for; the built TLS configuration follows from it.
    fn eq(&self, other: &Self) -> bool {
        self.endpoint == other.endpoint && self.username == other.username && self.tls == other.tls
    }
}

impl Eq for RedisTarget {}

impl RedisTarget {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        RedisTarget {
            endpoint: Endpoint::Tcp {
                host: host.into(),
                port,
            },
            username: None,
            tls: None,
            tls_client: None,
        }
    }

    /// A target on a Unix socket.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        RedisTarget {
            endpoint: Endpoint::Unix(path.into()),
            username: None,
            tls: None,
            tls_client: None,
        }
    }

    /// Applies redis-cli's TLS flags: `tls` (`--tls`) turns TLS on for a
    /// `redis://` (or default) target; the options need TLS (from either). The files
    /// are read and checked now, so a bad one is a usage error at start.
    pub fn with_tls(mut self, tls: bool, opts: TlsOptions) -> Result<Self, RedisArgError> {
        let wanted = tls || self.tls.is_some();
        if let Endpoint::Unix(path) = &self.endpoint
            && wanted
        {
            return Err(arg_err(format!(
                "TLS is not used over a Unix socket (unix://{}): Redis serves its \
                 Unix socket in plain text; drop --tls and the TLS options",
                path.display()
            )));
        }
        if !wanted {
            if opts.any() {
                return Err(arg_err(format!(
                    "{} needs TLS: give --tls or a rediss:// URL",
                    opts.first_flag()
                )));
            }
            return Ok(self);
        }
        let host = match &self.endpoint {
            Endpoint::Tcp { host, .. } => host.clone(),
            Endpoint::Unix(_) => String::new(),
        };
        self.tls_client = Some(TlsClient::new(&opts, &host).map_err(|e| arg_err(e.0))?);
        self.tls = Some(opts);
        Ok(self)
    }

    /// The TCP host and port; `None` for a Unix socket.
    pub fn tcp(&self) -> Option<(&str, u16)> {
        match &self.endpoint {
            Endpoint::Tcp { host, port } => Some((host.as_str(), *port)),
            Endpoint::Unix(_) => None,
        }
    }

    pub fn parse(input: &str) -> Result<Self, RedisArgError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(arg_err("empty Redis address (expected redis://host:port)"));
        }
        if let Some(path) = unix_path(s)? {
            return Ok(RedisTarget::unix(path));
        }
        let mut tls = None;
        let rest = match s.find("://") {
            Some(i) => {
                let scheme = s[..i].to_ascii_lowercase();
                match scheme.as_str() {
                    "redis" | "valkey" => &s[i + 3..],
                    "rediss" | "valkeys" => {
                        tls = Some(TlsOptions::default());
                        &s[i + 3..]
                    }
                    _ => {
                        return Err(arg_err(format!(
                            "unsupported scheme '{scheme}://' in the Redis address \
                             (expected redis://host:port, rediss://host:port or \
                             unix:///path/to/redis.sock)"
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
            endpoint: Endpoint::Tcp {
                host: host.to_string(),
                port,
            },
            username,
            tls,
            tls_client: None,
        })
    }

    /// The first address the host name resolves to. An IP literal needs no lookup; a
    /// name is looked up on tokio's blocking pool (getaddrinfo blocks), within
    /// `timeout`, so a slow resolver never stalls the event loop.
    /// Not for a Unix socket (an error).
    pub async fn resolve(&self, timeout: Duration) -> Result<SocketAddr, ResolveError> {
        let Some((host, port)) = self.tcp() else {
            return Err(ResolveError(
                "a Unix socket has no address to resolve".into(),
            ));
        };
        if let Some(addr) = self.literal_addr() {
            return Ok(addr);
        }
        let lookup = tokio::net::lookup_host((host, port));
        let mut addrs = match tokio::time::timeout(timeout, lookup).await {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(e)) => {
                return Err(ResolveError(format!("cannot resolve {host}: {e}")));
            }
            Err(_) => {
                return Err(ResolveError(format!("cannot resolve {host}: timed out")));
            }
        };
        addrs
            .next()
            .ok_or_else(|| ResolveError(format!("{host} resolves to no address")))
    }

    /// The address when the host is an IP literal (no lookup needed).
    pub(super) fn literal_addr(&self) -> Option<SocketAddr> {
        let (host, port) = self.tcp()?;
        host.parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, port))
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
        let (host, port) = match &self.endpoint {
            Endpoint::Unix(path) => return write!(f, "unix://{}", path.display()),
            Endpoint::Tcp { host, port } => (host, port),
        };
        f.write_str(if self.tls.is_some() {
            "rediss://"
        } else {
            "redis://"
        })?;
        if let Some(user) = &self.username {
            write!(f, "{user}@")?;
        }
        if host.contains(':') {
            write!(f, "[{host}]:{port}")
        } else {
            write!(f, "{host}:{port}")
        }
    }
}

/// The socket path of `unix:///path` or `unix:/path` (redis-cli's `-s`); `None` for
/// any other scheme.
fn unix_path(s: &str) -> Result<Option<PathBuf>, RedisArgError> {
    let Some(scheme_end) = s.find(':') else {
        return Ok(None);
    };
    if !s[..scheme_end].eq_ignore_ascii_case("unix") {
        return Ok(None);
    }
    let rest = &s[scheme_end + 1..];
    // unix:///path (an empty authority) or unix:/path; unix://host/… names a host,
    // which a Unix socket has none of.
    let path = match rest.strip_prefix("//") {
        Some(p) if p.starts_with('/') => p,
        Some(_) => {
            return Err(arg_err(
                "a unix:// address takes an absolute path: unix:///path/to/redis.sock \
                 (three slashes) or unix:/path/to/redis.sock",
            ));
        }
        None => rest,
    };
    if !path.starts_with('/') {
        // `unix:6379`: a host that happens to be called "unix".
        return Ok(None);
    }
    if path.contains('?') || path.contains('#') {
        return Err(arg_err(
            "a unix:// address takes no query: only the socket's path",
        ));
    }
    Ok(Some(PathBuf::from(path)))
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
#[derive(Clone)]
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

    pub(super) fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Replaces the password wherever it appears in `text` (a server may echo a
    /// command's arguments in an error, e.g. "unknown command 'AUTH', with args …").
    pub(super) fn scrub(&self, text: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn target(host: &str, port: u16, user: Option<&str>) -> RedisTarget {
        RedisTarget {
            username: user.map(String::from),
            ..RedisTarget::new(host, port)
        }
    }

    fn tls_target(host: &str, port: u16, user: Option<&str>) -> RedisTarget {
        RedisTarget {
            tls: Some(TlsOptions::default()),
            ..target(host, port, user)
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
            ("valkey://h:7", target("h", 7, None)),
            ("rediss://h:6380", tls_target("h", 6380, None)),
            ("REDISS://alice@h", tls_target("h", 6379, Some("alice"))),
            ("rediss://[::1]:6390/0", tls_target("::1", 6390, None)),
            ("valkeys://h", tls_target("h", 6379, None)),
            (
                "unix:///run/redis/redis.sock",
                RedisTarget::unix("/run/redis/redis.sock"),
            ),
            ("unix:/tmp/r.sock", RedisTarget::unix("/tmp/r.sock")),
            ("UNIX:///tmp/r.sock", RedisTarget::unix("/tmp/r.sock")),
            // A host called "unix", not a socket.
            ("unix:6380", target("unix", 6380, None)),
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
        assert_eq!(
            RedisTarget::parse("rediss://bob@h:7").unwrap().to_string(),
            "rediss://bob@h:7"
        );
        assert_eq!(
            RedisTarget::parse("unix:/tmp/r.sock").unwrap().to_string(),
            "unix:///tmp/r.sock"
        );
        let unix = RedisTarget::parse("unix:///tmp/r.sock").unwrap();
        assert_eq!(unix.tcp(), None);
        assert_eq!(unix.endpoint, Endpoint::Unix("/tmp/r.sock".into()));
        assert_eq!(
            RedisTarget::parse("rediss://h:1").unwrap().tcp(),
            Some(("h", 1))
        );
    }

    #[test]
    fn url_bad() {
        let cases = [
            ("", "empty"),
            ("http://h:6379", "unsupported scheme 'http://'"),
            ("unix://host/tmp/redis.sock", "takes an absolute path"),
            ("unix://tmp/redis.sock", "takes an absolute path"),
            ("unix:///tmp/redis.sock?db=1", "takes no query"),
            ("rediss://h:0", "invalid port"),
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
            "rediss://user:hunter2@h:6380",
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
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let resolve =
            |t: RedisTarget| rt.block_on(async move { t.resolve(Duration::from_secs(5)).await });
        assert_eq!(
            resolve(target("localhost", 6390, None)).unwrap().port(),
            6390
        );
        assert_eq!(
            resolve(target("::1", 6390, None)).unwrap(),
            "[::1]:6390".parse().unwrap()
        );
        let e = resolve(target("no-such-host.invalid", 1, None)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot resolve no-such-host.invalid"),
            "{e}"
        );
    }

    #[test]
    fn tls_flags_turn_tls_on_and_need_it() {
        let opts = TlsOptions {
            insecure: true,
            ..TlsOptions::default()
        };
        // --tls on a redis:// (or default) target.
        let t = target("127.0.0.1", 6380, None)
            .with_tls(true, opts.clone())
            .unwrap();
        assert_eq!(t.tls, Some(opts.clone()));
        assert!(t.tls_client.is_some());
        assert_eq!(t.to_string(), "rediss://127.0.0.1:6380");
        // rediss:// needs no --tls.
        let t = RedisTarget::parse("rediss://127.0.0.1:6380")
            .unwrap()
            .with_tls(false, opts.clone())
            .unwrap();
        assert_eq!(t.tls, Some(opts.clone()));
        // Plain stays plain without TLS flags.
        let t = target("h", 1, None)
            .with_tls(false, TlsOptions::default())
            .unwrap();
        assert_eq!(t.tls, None);
        assert!(t.tls_client.is_none());
        // TLS options without TLS are a mistake, named.
        let e = target("h", 1, None)
            .with_tls(
                false,
                TlsOptions {
                    ca_file: Some("/etc/ca.pem".into()),
                    ..TlsOptions::default()
                },
            )
            .unwrap_err();
        assert_eq!(e.0, "--cacert needs TLS: give --tls or a rediss:// URL");
        // No TLS over a Unix socket.
        let e = RedisTarget::unix("/tmp/r.sock")
            .with_tls(true, TlsOptions::default())
            .unwrap_err();
        assert!(
            e.0.starts_with("TLS is not used over a Unix socket (unix:///tmp/r.sock)"),
            "{e}"
        );
        assert!(
            RedisTarget::unix("/tmp/r.sock")
                .with_tls(false, TlsOptions::default())
                .is_ok()
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
        let poller =
            crate::source::redis::RedisPoller::new(target("127.0.0.1", 1, Some("u")), Some(pw));
        let dbg = format!("{poller:?}");
        assert!(dbg.contains("Password(<redacted>)"), "{dbg}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
    }
}
