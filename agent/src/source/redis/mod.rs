//! What Redis says of itself, through one persistent connection.
//!
//! The agent keeps exactly one connection to the watched Redis and asks it, once per
//! interval, for the INFO fields it needs (and, now and then, `CONFIG GET maxclients`
//! and `CONFIG GET timeout`). The pieces:
//!
//! - the snapshot types the rest of the agent consumes live in `crate::model::redis`;
//! - [`target`]: where to connect ([`RedisTarget`], parsed from a `redis://`,
//!   `rediss://` or `unix://` URL) and with which password ([`Password`], from a file
//!   or `REDISCLI_AUTH`, never from argv, never printed);
//! - [`tls`]: redis-cli's TLS flags ([`TlsOptions`]) and the rustls configuration
//!   built from them ([`TlsClient`]);
//! - [`info`]: [`parse_info`], a pure, tolerant INFO parser;
//! - [`backoff`]: [`Reconnect`], exponential backoff with full jitter plus a circuit
//!   breaker, pure and driven by an injected time so it is unit-tested
//!   deterministically;
//! - [`stream`]: the stream we open ourselves (TCP, TLS over it, or a Unix socket)
//!   and what a server sends before any command;
//! - [`conn`]: the connection, on the `redis` crate, over that stream;
//! - [`replies`]: what error replies and failures mean for the status (pure);
//! - [`poller`]: [`RedisPoller`], which owns the connection, and [`spawn_poller`],
//!   which polls it every interval as a task on the agent's tokio runtime.
//!
//! Why the `redis` crate: it is the client users trust, it speaks every reply type
//! (RESP2 and RESP3) correctly, and it brings TLS, Unix sockets and ACL users when the
//! agent needs them. What we keep from the hand-written client it replaced:
//!
//! - the agent never counts its own connection: we open the TCP stream ourselves,
//!   keep its local address (the agent's address as the server sees it, reported as
//!   [`RedisSnapshot::own_addr`] and excluded by the tracker), and hand the stream to
//!   the crate (`MultiplexedConnection::new_with_config`) — after the TLS handshake
//!   when the target speaks TLS. This holds after every reconnect, since each attempt
//!   opens its own stream. Over a Unix socket there is no TCP connection of ours to
//!   exclude;
//! - strict deadlines: the connect, and each request with its reply, have their own
//!   timeout, so a slow or hung server costs the poll a bounded time and never the
//!   event loop (the poll is a task; waiting on Redis blocks nothing);
//! - a bound on what a server may make us buffer (see [`conn`]);
//! - one persistent connection, reconnected with backoff and full jitter behind a
//!   circuit breaker;
//! - statuses mapped from the server's replies exactly as before (auth_failed,
//!   noauth, rejected, unreachable, error), plus tls_failed (a handshake our checks
//!   or the server refused) and noperm (an ACL user without a command the agent
//!   sends).
//!
//! Why INFO is asked section by section, pipelined: `INFO a b c` (several sections in
//! one call) only exists from Redis 7.0, and `INFO`/`INFO default` also computes the
//! persistence, cpu and keyspace sections we do not use. So each poll sends
//! `INFO server`, `INFO clients`, `INFO memory` (for `mem_clients_normal`),
//! `INFO stats`, `INFO replication`, `INFO cluster` as one pipeline and reads the six
//! replies: one round trip, works on every version, and the server only builds the
//! sections we read.

pub mod backoff;
pub mod conn;
pub mod info;
pub mod poller;
pub mod replies;
pub mod stream;
pub mod target;
pub mod tls;

pub use backoff::{BackoffPolicy, BreakerState, Reconnect};
pub use conn::{DEFAULT_MAX_REPLY, RedisConn};
pub use info::{InfoError, parse_info};
pub use poller::{MIN_POLL_INTERVAL, PollerOptions, RedisPoller, spawn_poller, spawn_poller_with};
pub use stream::{ConnError, Stream};
pub use target::{
    DEFAULT_REDIS_PORT, Endpoint, Password, RedisArgError, RedisTarget, ResolveError, load_password,
};
pub use tls::{TlsClient, TlsOptions, TlsSetupError};
