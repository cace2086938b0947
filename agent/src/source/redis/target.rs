//! Where to connect ([`RedisTarget`], parsed from a `redis://` URL) and with which
//! password ([`Password`], from a file or `REDISCLI_AUTH`, never from argv, never
//! printed).

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

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

    /// The first address the host name resolves to. An IP literal needs no lookup; a
    /// name is looked up on tokio's blocking pool (getaddrinfo blocks), within
    /// `timeout`, so a slow resolver never stalls the event loop.
    pub async fn resolve(&self, timeout: Duration) -> Result<SocketAddr, ResolveError> {
        if let Some(addr) = self.literal_addr() {
            return Ok(addr);
        }
        let lookup = tokio::net::lookup_host((self.host.as_str(), self.port));
        let mut addrs = match tokio::time::timeout(timeout, lookup).await {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(e)) => {
                return Err(ResolveError(format!("cannot resolve {}: {e}", self.host)));
            }
            Err(_) => {
                return Err(ResolveError(format!(
                    "cannot resolve {}: timed out",
                    self.host
                )));
            }
        };
        addrs
            .next()
            .ok_or_else(|| ResolveError(format!("{} resolves to no address", self.host)))
    }

    /// The address when the host is an IP literal (no lookup needed).
    pub(super) fn literal_addr(&self) -> Option<SocketAddr> {
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
