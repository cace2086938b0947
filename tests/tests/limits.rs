//! Rejections, refusals and limits: the kernel's view joined with Redis INFO and
//! /proc, against a real redis-server, real probes and real clients.

use std::net::SocketAddr;
use std::time::Duration;

use connwatch_tests::{Agent, Attempt, Client, Redis, TempDir, client, count, pause, serial};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

/// `n` attempts from `source`: the clients Redis served, and how many it turned away.
fn attempts(source: &str, server: SocketAddr, n: usize) -> (Vec<Client>, u64) {
    let mut served = Vec::new();
    let mut rejected = 0;
    for _ in 0..n {
        match Client::attempt(source, server) {
            Attempt::Served(c) => served.push(c),
            Attempt::Rejected => rejected += 1,
            Attempt::Refused => panic!("redis-server is not listening"),
        }
    }
    (served, rejected)
}

#[test]
fn rejections_at_maxclients_are_exact_per_address_and_match_info() {
    let _serial = serial();
    let redis = Redis::start_with(&["--maxclients", "20"]);
    pause(200); // the readiness probe's slot is freed
    let mut agent = Agent::watch(&[redis.port]);
    agent.wait_for("INFO joined", WAIT, |r| r["redis"]["status"] == "ok");

    // The agent holds one slot: 19 are left for 30 clients.
    let (_a, rej_a) = attempts("127.0.0.2", redis.addr(), 10);
    let (_b, rej_b) = attempts("127.0.0.3", redis.addr(), 10);
    let (_c, rej_c) = attempts("127.0.0.4", redis.addr(), 10);
    assert_eq!(rej_a + rej_b + rej_c, 11, "30 clients for 19 free slots");

    let report = agent.wait_for("11 rejections seen and counted by INFO", WAIT, |r| {
        r["totals"]["rejected"] == 11 && r["redis"]["rejected_connections_delta"] == 11
    });
    assert_eq!(count(&report, "127.0.0.2", "rejected"), rej_a);
    assert_eq!(count(&report, "127.0.0.3", "rejected"), rej_b);
    assert_eq!(count(&report, "127.0.0.4", "rejected"), rej_c);
    assert_eq!(report["totals"]["rejected_by_reason"]["maxclients"], 11);
    assert_eq!(report["limits"]["maxclients"], 20);
    assert_eq!(report["capacity"]["source"], "info");
    assert_eq!(report["capacity"]["used"], 20);
    assert_eq!(report["capacity"]["ratio"], 1.0);
    // The agent's own INFO connection is not a client.
    assert_eq!(report["totals"]["open"], 19);
}

#[test]
fn accept_failures_from_a_lowered_fd_limit_are_reported_while_info_counts_nothing() {
    let _serial = serial();
    let redis = Redis::start();
    let _held = Client::many("127.0.0.5", redis.addr(), 10);
    let mut agent = Agent::watch(&[redis.port]);
    agent.wait_for("INFO joined", WAIT, |r| r["redis"]["status"] == "ok");

    let limit = redis.leave_no_free_descriptor();

    // Five connections the kernel completes but Redis cannot accept: they wait.
    let server = redis.addr();
    let waiting: Vec<std::net::TcpStream> = (0..5)
        .map(|_| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.bind(&SocketAddr::new("127.0.0.6".parse().unwrap(), 0).into())
                .unwrap();
            s.connect(&server.into()).unwrap();
            s.into()
        })
        .collect();

    // All five wait, and the report's depth is the kernel's (/proc/net/tcp's rx_queue of the listener).
    let report = agent.wait_for("EMFILE failures with connections queued", WAIT, |r| {
        r["totals"]["accept_errors"]["EMFILE"].as_u64().unwrap_or(0) > 0
            && r["totals"]["accept_errors_per_s"].as_f64().unwrap_or(0.0) > 0.0
            && r["totals"]["accept_queue"]["depth"] == 5
    });
    let depth = report["totals"]["accept_queue"]["depth"].as_u64().unwrap();
    assert_eq!(
        depth,
        listen_queue_depth(redis.port),
        "the report's depth is the kernel's"
    );
    assert_eq!(
        report["redis"]["rejected_connections_delta"], 0,
        "INFO counts nothing"
    );
    assert_eq!(report["limits"]["nofile_soft"], limit);
    assert_eq!(
        report["limits"]["effective_maxclients"],
        limit.saturating_sub(32)
    );
    assert!(
        report["limits"]["effective_reason"]
            .as_str()
            .unwrap()
            .contains(&limit.to_string())
    );
    assert_eq!(
        count(&report, "127.0.0.6", "open"),
        5,
        "the kernel established them"
    );
    let fd_limit = report["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["kind"] == "fd_limit");
    assert_eq!(
        fd_limit.map(|v| v["severity"].clone()),
        Some("critical".into()),
        "{report}"
    );
    drop(waiting);
}

/// Connections waiting in the accept queues of `port`'s listeners, as the kernel
/// shows them in /proc/net/tcp{,6}: a LISTEN row's rx_queue is its queue depth.
fn listen_queue_depth(port: u16) -> u64 {
    let mut depth = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local_port = cols[1].rsplit(':').next().unwrap();
            let (_, rx_queue) = cols[4].split_once(':').unwrap();
            if cols[3] == "0A" && u16::from_str_radix(local_port, 16).unwrap() == port {
                depth += u64::from_str_radix(rx_queue, 16).unwrap();
            }
        }
    }
    depth
}

#[test]
fn attempts_while_redis_is_down_are_refused_per_address() {
    let _serial = serial();
    let mut redis = Redis::start();
    let server = redis.addr();
    let mut agent = Agent::watch_with(&[redis.port], &["--no-redis"], &[]);
    redis.kill();
    for _ in 0..7 {
        assert!(matches!(
            Client::attempt("127.0.0.7", server),
            Attempt::Refused
        ));
    }
    for _ in 0..3 {
        assert!(matches!(
            Client::attempt("127.0.0.8", server),
            Attempt::Refused
        ));
    }
    let report = agent.wait_for("10 refusals", WAIT, |r| r["totals"]["refused"] == 10);
    assert_eq!(count(&report, "127.0.0.7", "refused"), 7);
    assert_eq!(count(&report, "127.0.0.8", "refused"), 3);
    assert_eq!(count(&report, "127.0.0.7", "opened"), 0);
    assert_eq!(report["redis"]["status"], "disabled");
}

#[test]
fn a_replica_is_internal_and_counted_in_connected_slaves() {
    let _serial = serial();
    let primary = Redis::start();
    let mut agent = Agent::watch(&[primary.port]);
    let _replica = Redis::start_with(&[
        "--bind-source-addr",
        "127.0.0.20",
        "--replicaof",
        "127.0.0.1",
        &primary.port.to_string(),
    ]);
    let _app = Client::many("127.0.0.21", primary.addr(), 2);
    let report = agent.wait_for("the replica attached", WAIT, |r| {
        r["capacity"]["connected_slaves"] == 1
            && client(r, "127.0.0.20").is_some_and(|c| c["internal"] == true)
    });
    assert_eq!(client(&report, "127.0.0.21").unwrap()["internal"], false);
    assert_eq!(count(&report, "127.0.0.20", "open"), 1);
    assert_eq!(
        report["capacity"]["used"],
        2 + 1 + 1,
        "two clients, the agent, the replica"
    );
}

#[test]
fn requirepass_right_password_joins_info_wrong_one_says_so() {
    let _serial = serial();
    let redis = Redis::start_with(&["--requirepass", "s3cret-pw"]);
    let _app = Client::many_authed("127.0.0.22", redis.addr(), 3, "s3cret-pw");

    let mut good = Agent::watch_with(&[redis.port], &[], &[("REDISCLI_AUTH", "s3cret-pw")]);
    let report = good.wait_for("INFO with the password", WAIT, |r| {
        r["redis"]["status"] == "ok"
    });
    assert_eq!(report["limits"]["maxclients"], 10000);
    drop(good);

    let dir = TempDir::new("pw");
    let file = dir.0.join("password");
    std::fs::write(&file, "wrong-pw\n").unwrap();
    let mut bad = Agent::watch_with(
        &[redis.port],
        &["--password-file", file.to_str().unwrap()],
        &[],
    );
    let report = bad.wait_for("auth_failed and the kernel view", WAIT, |r| {
        r["redis"]["status"] == "auth_failed" && count(r, "127.0.0.22", "open") == 3
    });
    assert!(report["redis"]["error"].as_str().is_some());
    let line = serde_json::to_string(&report).unwrap();
    assert!(
        !line.contains("wrong-pw") && !bad.stderr().contains("wrong-pw"),
        "the password never shows"
    );

    let mut none = Agent::watch(&[redis.port]);
    none.wait_for("noauth", WAIT, |r| r["redis"]["status"] == "noauth");
}

#[test]
fn an_agent_started_at_maxclients_reports_the_rejection_and_every_connection() {
    let _serial = serial();
    let redis = Redis::start_with(&["--maxclients", "5"]);
    pause(200); // the readiness probe's slot is freed
    let _full = Client::many("127.0.0.23", redis.addr(), 5);
    let mut agent = Agent::watch(&[redis.port]);
    let report: Value = agent.wait_for("rejected status with 5 seen", WAIT, |r| {
        r["redis"]["status"] == "rejected" && count(r, "127.0.0.23", "open") == 5
    });
    assert!(
        report["redis"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("max number of clients")
    );
    assert_eq!(count(&report, "127.0.0.23", "seeded"), 5);
    assert_eq!(report["capacity"]["source"], "kernel");
    pause(300);
}
