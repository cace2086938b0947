//! What a live run watches and asks, from its flags: the ports, the network
//! namespace (`--netns`/`--pid`) and the Redis target of each instance. Bad values
//! are usage errors, found before anything is loaded.

use crate::cmd::cli::LiveArgs;
use crate::source::netns::Netns;
use crate::source::redis::{Password, RedisArgError, RedisTarget, load_password};

pub const DEFAULT_PORT: u16 = 6379;

/// The watched ports: the flags', sorted and deduplicated, or 6379.
pub fn watched_ports(args: &LiveArgs) -> Vec<u16> {
    let mut ports = if client_mode(args) {
        remote_ports(args)
    } else if args.ports.is_empty() {
        vec![DEFAULT_PORT]
    } else {
        args.ports.clone()
    };
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// How the agent asks Redis: one target (`--redis`) for the home instance, or each
/// instance at its own `127.0.0.1:<first port>`, from inside its namespace (with
/// the TLS flags either way).
#[derive(Clone)]
pub struct RedisPlan {
    /// `--redis`; `None`: `default`, per instance.
    pub target: Option<RedisTarget>,
    /// `127.0.0.1:<first port>`, as each instance reaches its own Redis.
    pub default: RedisTarget,
    pub password: Option<Password>,
}

impl RedisPlan {
    /// The target of an instance, given whether it is the home instance.
    pub fn target_for(&self, home: bool) -> Option<RedisTarget> {
        match (&self.target, home) {
            (Some(t), true) => Some(t.clone()),
            (Some(_), false) => None,
            (None, _) => Some(self.default.clone()),
        }
    }
}

/// Whether the run is in client mode (`--remote-port`, `--remote`).
pub fn client_mode(args: &LiveArgs) -> bool {
    !args.remote_ports.is_empty() || !args.remotes.is_empty()
}

/// The remote ports of client mode, sorted: `--remote-port`'s and `--remote`'s.
pub fn remote_ports(args: &LiveArgs) -> Vec<u16> {
    let mut ports: Vec<u16> = args
        .remote_ports
        .iter()
        .copied()
        .chain(args.remotes.iter().map(|a| a.port()))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Client mode's servers: every server on a `--remote-port` port, and the
/// `--remote` addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remotes {
    ports: Vec<u16>,
    addrs: Vec<std::net::SocketAddr>,
}

impl Remotes {
    /// `None` out of client mode.
    pub fn from_args(args: &LiveArgs) -> Option<Remotes> {
        client_mode(args).then(|| Remotes {
            ports: args.remote_ports.clone(),
            addrs: args
                .remotes
                .iter()
                .map(|a| crate::model::normalize(*a))
                .collect(),
        })
    }

    /// The remote ports given with `--remote-port`.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The servers given with `--remote`.
    pub fn addrs(&self) -> &[std::net::SocketAddr] {
        &self.addrs
    }

    /// Whether this host's connection to `server` is watched: a port given by
    /// `--remote-port` takes every server; one known only from `--remote` takes
    /// only the addresses named with it (the kernel filters by port only).
    pub fn watches(&self, server: std::net::SocketAddr) -> bool {
        let server = crate::model::normalize(server);
        self.ports.contains(&server.port()) || self.addrs.contains(&server)
    }

    /// Whether `ev` is of a watched server's connection (or of none).
    pub fn admits(&self, ev: &crate::model::Event) -> bool {
        use crate::model::Event;
        let server = match ev {
            Event::Opened { key, .. }
            | Event::Closed { key, .. }
            | Event::Refused { key, .. }
            | Event::ConnectFailed { key, .. }
            | Event::Seeded { key, .. } => key.local,
            Event::Connector { server, .. } => *server,
            _ => return true,
        };
        self.watches(server)
    }
}

/// Where to ask Redis, with its password; `None` with --no-redis and in client
/// mode (which asks no Redis). Bad values are usage errors, found before anything
/// is loaded.
pub fn redis_target(args: &LiveArgs, ports: &[u16]) -> Result<Option<RedisPlan>, RedisArgError> {
    if args.no_redis || client_mode(args) {
        return Ok(None);
    }
    let tls = |t: RedisTarget| t.with_tls(args.tls.tls, args.tls.options());
    let target = match args.redis.as_deref() {
        Some(url) => Some(tls(RedisTarget::parse(url)?)?),
        None => None,
    };
    // With --redis the default is never used (see `target_for`).
    let default = match &target {
        Some(t) => t.clone(),
        None => tls(RedisTarget::new(
            "127.0.0.1",
            ports.first().copied().unwrap_or(DEFAULT_PORT),
        ))?,
    };
    let password = load_password(args.password_file.as_deref())?;
    Ok(Some(RedisPlan {
        target,
        default,
        password,
    }))
}

/// Which namespaces are watched: every one (`None`), or the one `--netns`/`--pid`
/// names. A bad path or pid is a usage error, found before anything is loaded.
pub fn scope(args: &LiveArgs) -> anyhow::Result<Option<Netns>> {
    let opened = match (&args.netns, args.pid) {
        (Some(path), _) => Netns::open(path),
        (None, Some(pid)) => Netns::of_pid(pid),
        (None, None) => return Ok(None),
    };
    opened
        .map(Some)
        .map_err(|e| anyhow::Error::new(UsageError(format!("cannot watch that namespace: {e}"))))
}

/// A bad `--netns`/`--pid`: reported as a usage error.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConnKey, Event};
    use clap::Parser as _;

    fn live(args: &[&str]) -> LiveArgs {
        let mut all = vec!["connwatch", "watch"];
        all.extend_from_slice(args);
        match crate::cmd::cli::Cli::parse_from(all).command {
            crate::cmd::cli::Command::Watch(w) => w.live,
            _ => unreachable!("a watch command"),
        }
    }

    #[test]
    fn client_mode_watches_a_port_s_every_server_and_a_remote_s_address_only() {
        assert_eq!(Remotes::from_args(&live(&["--port", "6379"])), None);
        let args = live(&["--remote-port", "6380", "--remote", "10.0.0.7:6379"]);
        assert_eq!(watched_ports(&args), [6379, 6380]);
        assert!(redis_target(&args, &[6379]).unwrap().is_none(), "no INFO");
        let r = Remotes::from_args(&args).unwrap();
        let opened = |server: &str| Event::Opened {
            ts: 1,
            key: ConnKey::new(server.parse().unwrap(), "10.0.0.1:40000".parse().unwrap()),
        };
        assert!(r.admits(&opened("10.0.0.9:6380")));
        assert!(r.admits(&opened("10.0.0.7:6379")));
        assert!(r.admits(&opened("[::ffff:10.0.0.7]:6379")));
        assert!(!r.admits(&opened("10.0.0.8:6379")));
        assert!(r.admits(&Event::Tick { ts: 1 }));
    }
}
