//! connwatch's Redis poller (`connwatch::source::redis`) against a real redis-server: status
//! mapping, the agent's own address, CONFIG fallback, rejection, reconnect and the
//! polling task. The side queries go through redis-cli, a real client.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use connwatch::model::{ConfigStatus, RedisConfig, RedisStatus};
use connwatch::source::redis::{Password, PollerOptions, RedisPoller, RedisTarget, spawn_poller};
use connwatch_tests::{Client, Redis, Server};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn opts(seed: u64) -> PollerOptions {
    PollerOptions {
        connect_timeout: Duration::from_secs(1),
        io_timeout: Duration::from_secs(2),
        seed,
        ..PollerOptions::default()
    }
}

fn target(server: &Redis) -> RedisTarget {
    RedisTarget::new("127.0.0.1", server.port)
}

/// `redis-cli` on the server, with its whole reply.
fn cli(server: &Redis, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (installed with redis-server)");
    assert!(out.status.success(), "redis-cli {args:?} failed");
    String::from_utf8(out.stdout).expect("UTF-8 reply")
}

fn info_field(server: &Redis, section: &str, key: &str) -> String {
    let text = cli(server, &["INFO", section]);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in INFO {section}"))
        .trim()
        .to_string()
}

/// Valkey 8 (from `cargo xtask setup`): named valkey with its own version, and
/// its count of clients dropped for their output buffer read (0 here).
#[test]
fn real_valkey_counts_output_buffer_disconnections() {
    let server = Redis::start_server(Server::Valkey, &[]);
    let rt = runtime();
    let mut p = RedisPoller::with_options(target(&server), None, opts(5));
    let s = rt.block_on(p.poll_at(SEC));
    assert_eq!(s.status, RedisStatus::Ok, "{:?}", s.error);
    let info = s.info.unwrap();
    assert_eq!(info.server.as_deref(), Some("valkey"));
    assert_eq!(info.version.as_deref(), Some("8.1.8"));
    assert_eq!(info.client_output_buffer_limit_disconnections, Some(0));
    assert!(info.mem_clients_normal.is_some());
    assert_eq!(info.process_id, Some(server.pid()));
}

#[test]
fn real_server_plain() {
    let server = Redis::start_with(&["--maxclients", "1234", "--timeout", "77"]);
    let rt = runtime();
    let mut p = RedisPoller::with_options(target(&server), None, opts(3));
    let s = rt.block_on(p.poll_at(SEC));
    assert_eq!(s.status, RedisStatus::Ok, "{:?}", s.error);
    assert_eq!(s.error, None);
    assert_eq!(s.config_status, ConfigStatus::Ok);
    assert_eq!(
        s.config,
        Some(RedisConfig {
            maxclients: Some(1234),
            timeout: Some(77),
            // No TLS port configured.
            tls_port: Some(0),
        })
    );
    let info = s.info.clone().unwrap();
    assert_eq!(info.connected_clients, Some(1));
    assert_eq!(info.tcp_port, Some(server.port));
    assert_eq!(info.role.as_deref(), Some("master"));
    assert_eq!(info.server.as_deref(), Some("redis"));
    assert_eq!(info.cluster_enabled, Some(false));
    assert_eq!(info.rejected_connections, Some(0));
    assert_eq!(info.process_id, Some(server.pid()));
    assert_eq!(s.target, Some(server.addr()));
    // INFO memory is asked too (a redis-cli here would add a connection the
    // checks below count); Redis 7.0 has no count of output-buffer drops.
    assert!(info.mem_clients_normal.is_some());
    assert_eq!(info.client_output_buffer_limit_disconnections, None);

    // The address Redis reports for the connection named connwatch is own_addr.
    let list = cli(&server, &["CLIENT", "LIST"]);
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
    let s2 = rt.block_on(p.poll_at(2 * SEC));
    let s3 = rt.block_on(p.poll_at(3 * SEC));
    assert_eq!(s3.status, RedisStatus::Ok);
    assert_eq!(p.connect_attempts(), 1);
    assert_eq!(s2.own_addr, s.own_addr);
    // +1: the redis-cli connection above.
    assert_eq!(s3.info.unwrap().total_connections_received, Some(total + 1));
}

#[test]
fn real_server_password() {
    let server = Redis::start_with(&["--requirepass", "s3cret"]);
    let rt = runtime();
    let poll = |pw: Option<&str>, user: Option<&str>| {
        let mut t = target(&server);
        t.username = user.map(String::from);
        let mut p = RedisPoller::with_options(t, pw.map(Password::new), opts(2));
        let s = rt.block_on(p.poll_at(SEC));
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
    rt.block_on(p.poll_at(at - 1));
    assert_eq!(p.connect_attempts(), 1);

    let (s, _) = poll(None, None);
    assert_eq!(s.status, RedisStatus::NoAuth);
    let e = s.error.unwrap();
    assert!(e.starts_with("NOAUTH Authentication required."), "{e}");
    assert!(e.contains("--password-file"), "{e}");
}

#[test]
fn real_server_without_config() {
    let server = Redis::start_with(&["--rename-command", "CONFIG", "", "--maxclients", "321"]);
    let rt = runtime();
    let mut p = RedisPoller::with_options(target(&server), None, opts(4));
    let s = rt.block_on(p.poll_at(SEC));
    assert_eq!(s.status, RedisStatus::Ok, "{:?}", s.error);
    assert_eq!(s.config_status, ConfigStatus::Unavailable);
    // INFO reports maxclients since 7.0.
    let version = s.info.as_ref().and_then(|i| i.version.clone()).unwrap();
    let from_info = (!version.starts_with("6.")).then_some(321);
    assert_eq!(
        s.config,
        Some(RedisConfig {
            maxclients: from_info,
            timeout: None,
            tls_port: None,
        })
    );
    // Not asked again, even after the refresh period: the error count stays.
    let errors = info_field(&server, "stats", "total_error_replies");
    assert_eq!(errors, "3"); // the three CONFIG GETs
    for t in [2, 70, 200] {
        assert_eq!(rt.block_on(p.poll_at(t * SEC)).status, RedisStatus::Ok);
    }
    assert_eq!(info_field(&server, "stats", "total_error_replies"), "3");
}

#[test]
fn real_server_full_rejects() {
    let server = Redis::start_with(&["--maxclients", "1"]);
    let rt = runtime();
    let holder = Client::connect("127.0.0.1", server.addr());
    let mut p = RedisPoller::with_options(target(&server), None, opts(6));
    let s = rt.block_on(p.poll_at(SEC));
    assert_eq!(s.status, RedisStatus::Rejected);
    assert_eq!(
        s.error.as_deref(),
        Some("connection rejected: ERR max number of clients reached")
    );
    // The attempt's own address is reported: the tracker must not blame it.
    assert!(s.own_addr.is_some());
    // Slot freed: after the backoff the poller gets in.
    holder.close();
    let at = p.reconnect().retry_at().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let s = rt.block_on(p.poll_at(at));
    assert_eq!(s.status, RedisStatus::Ok, "{:?}", s.error);
    assert_eq!(p.connect_attempts(), 2);
    assert_eq!(s.info.unwrap().rejected_connections, Some(1));
}

#[test]
fn real_server_killed_then_back() {
    let mut server = Redis::start();
    let rt = runtime();
    let mut p = RedisPoller::with_options(target(&server), None, opts(8));
    let s = rt.block_on(p.poll_at(SEC));
    assert_eq!(s.status, RedisStatus::Ok, "{:?}", s.error);
    let old = s.info.clone().unwrap();
    let old_own = s.own_addr;

    server.kill();
    let s = rt.block_on(p.poll_at(2 * SEC));
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

    let server = Redis::start_on(server.port, &[]);
    // Before the delay: no attempt, although the server is back.
    let s = rt.block_on(p.poll_at(at - 1));
    assert_eq!(s.status, RedisStatus::Unreachable);
    assert_eq!(p.connect_attempts(), 2);
    let s = rt.block_on(p.poll_at(at));
    assert_eq!(s.status, RedisStatus::Ok, "{:?}", s.error);
    assert_eq!(p.connect_attempts(), 3);
    assert_ne!(s.info.unwrap().process_id, old.process_id);
    // The new connection's own address is the one the server sees, not the old one.
    assert_ne!(s.own_addr, old_own);
    let list = cli(&server, &["CLIENT", "LIST"]);
    let own = s.own_addr.unwrap().to_string();
    assert!(
        list.lines()
            .any(|l| l.contains("name=connwatch") && l.contains(&format!("addr={own} "))),
        "{own} not in {list}"
    );
}

#[test]
fn real_server_spawned_poller_stops_when_the_receiver_drops() {
    let server = Redis::start();
    let rt = runtime();
    rt.block_on(async {
        let (mut rx, handle) =
            spawn_poller(target(&server), None, Duration::from_millis(20)).unwrap();
        let first = rx.recv().await.unwrap();
        assert_eq!(first.status, RedisStatus::Ok, "{:?}", first.error);
        let second = rx.recv().await.unwrap();
        assert_eq!(second.status, RedisStatus::Ok);
        assert_eq!(second.own_addr, first.own_addr);
        drop(rx);
        let start = Instant::now();
        tokio::time::timeout(Duration::from_secs(1), handle)
            .await
            .expect("the task ends within a second")
            .unwrap();
        assert!(start.elapsed() < Duration::from_secs(1));
    });
    // Its connection is closed: only redis-cli's own remains.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let n = info_field(&server, "clients", "connected_clients");
        if n == "1" {
            break;
        }
        assert!(Instant::now() < deadline, "connected_clients stays {n}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
