//! Why the server closed: Redis's idle `timeout` and its output-buffer limit, told
//! apart from each other and from rejections by the real agent watching a real
//! redis-server, with redis-py clients (tests/clients/). The output-buffer cases run
//! on Redis 7.0 (Debian's) and on Valkey 8 (`cargo xtask setup` installs it).

use std::time::Duration;

use connwatch_tests::{Agent, Background, Client, Redis, Server, client, pause, serial};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// A Redis started with `args`, watched by the agent once INFO has joined.
fn watched(args: &[&str]) -> (Redis, Agent) {
    watched_on(Server::Redis, args)
}

/// `server` started with `args`, watched by the agent once INFO has joined.
fn watched_on(server: Server, args: &[&str]) -> (Redis, Agent) {
    let redis = Redis::start_server(server, args);
    let mut agent = Agent::watch(&[redis.port]);
    agent.wait_for("redis.status ok", WAIT, |r| r["redis"]["status"] == "ok");
    (redis, agent)
}

/// `slow_consumer.py` from `source`: `requests` GETs of a 64 KiB value, one every
/// 10 ms, never read, its receive buffer at 64 KiB; `extra` arguments after.
fn slow_consumer(port: u16, source: &str, requests: &str, extra: &[&str]) -> Background {
    let port = port.to_string();
    let mut args = vec![
        "--port",
        &port,
        "--source",
        source,
        "--value-kb",
        "64",
        "--requests",
        requests,
        "--every",
        "0.01",
        "--rcvbuf-kb",
        "64",
    ];
    args.extend_from_slice(extra);
    Background::python("slow_consumer.py", &args)
}

fn server_closes(report: &Value, addr: &str) -> Value {
    client(report, addr).map_or(Value::Null, |c| c["server_closes"].clone())
}

/// `timeout 2`: three connections that PING once and then idle are closed by Redis
/// after 2 s, each an `idle_timeout`; a connection that keeps talking is not.
#[test]
fn idle_connections_past_redis_timeout_are_idle_timeout_closes() {
    let _serial = serial();
    let (redis, mut agent) = watched(&["--timeout", "2"]);
    let mut idle = Client::many("127.0.0.70", redis.addr(), 3);
    for c in &mut idle {
        c.ping();
    }
    let mut busy = Client::connect("127.0.0.71", redis.addr());
    // The busy client talks every 500 ms: never idle for 2 s.
    for _ in 0..40 {
        busy.ping();
        let done = agent
            .latest()
            .is_some_and(|r| server_closes(&r, "127.0.0.70")["idle_timeout"] == 3);
        if done {
            break;
        }
        pause(500);
    }
    let report = agent.wait_for("three idle-timeout closes", WAIT, |r| {
        server_closes(r, "127.0.0.70")["idle_timeout"] == 3
    });
    assert_eq!(
        server_closes(&report, "127.0.0.70"),
        serde_json::json!({"rejection": 0, "idle_timeout": 3, "output_buffer": 0, "other": 0})
    );
    let c = client(&report, "127.0.0.70").unwrap();
    assert_eq!(c["closed_by_server"], 3);
    assert_eq!(client(&report, "127.0.0.71").unwrap()["closed"], 0);
    assert_eq!(report["totals"]["server_closes"]["idle_timeout"], 3);
    drop(idle);
}

/// `client-output-buffer-limit normal 256kb 0 0`: a redis-py client asks for a
/// 64 KiB value every 10 ms and reads none of the replies, its receive buffer at
/// 64 KiB; the replies fill Redis's send queue, then pile up in Redis, which drops
/// the client. The agent calls that close `output_buffer` (the kernel still held
/// megabytes the client never acknowledged). A `CLIENT KILL` of another
/// connection is `other`.
#[test]
fn a_client_dropped_for_its_unread_replies_is_an_output_buffer_close() {
    output_buffer_close(Server::Redis);
}

/// The same on Valkey 8.
#[test]
fn a_client_dropped_for_its_unread_replies_is_an_output_buffer_close_on_valkey() {
    output_buffer_close(Server::Valkey);
}

fn output_buffer_close(server: Server) {
    let _serial = serial();
    let (redis, mut agent) = watched_on(
        server,
        &["--client-output-buffer-limit", "normal 256kb 0 0"],
    );
    let mut slow = slow_consumer(redis.port, "127.0.0.72", "500", &["--seconds", "15"]);
    slow.wait_for_line("dropped", WAIT);
    let mut killed = Client::connect("127.0.0.73", redis.addr());
    killed.ping();
    let addr = killed.local_addr().to_string();
    let mut admin = Client::connect("127.0.0.74", redis.addr());
    assert_eq!(
        admin.command(&["CLIENT", "KILL", "ADDR", &addr]).unwrap(),
        ":1\r\n"
    );
    let report = agent.wait_for("the output-buffer drop and the kill", WAIT, |r| {
        server_closes(r, "127.0.0.72")["output_buffer"] == 1
            && server_closes(r, "127.0.0.73")["other"] == 1
            && (server == Server::Redis
                || r["redis"]["client_output_buffer_limit_disconnections_delta"] == 1)
    });
    // Valkey's INFO counts the drop (not the kill) as the sockets did; Redis 7.0
    // has no such counter: absent, never 0.
    let info_drops = &report["redis"]["client_output_buffer_limit_disconnections_delta"];
    match server {
        Server::Valkey => assert_eq!(*info_drops, 1),
        Server::Redis => assert_eq!(*info_drops, Value::Null),
    }
    assert_eq!(report["totals"]["server_closes"]["output_buffer"], 1);
    assert_eq!(
        server_closes(&report, "127.0.0.72"),
        serde_json::json!({"rejection": 0, "idle_timeout": 0, "output_buffer": 1, "other": 0})
    );
    assert_eq!(
        server_closes(&report, "127.0.0.73"),
        serde_json::json!({"rejection": 0, "idle_timeout": 0, "output_buffer": 0, "other": 1})
    );
    pause(100);
    slow.assert_ok();
}

fn verdict<'a>(report: &'a Value, kind: &str) -> Option<&'a Value> {
    report["verdicts"]
        .as_array()?
        .iter()
        .find(|v| v["kind"] == kind)
}

/// No output-buffer limit: a client that stops reading keeps megabytes of replies
/// queued, most of all the queued bytes, for seconds: a `slow_consumer` warning
/// naming it, its send queue in its row. Default thresholds (1 MiB, half of all
/// queued, 3 s).
#[test]
fn a_client_that_stops_reading_its_replies_is_a_slow_consumer() {
    let _serial = serial();
    let (redis, mut agent) = watched(&["--client-output-buffer-limit", "normal 0 0 0"]);
    let mut slow = slow_consumer(redis.port, "127.0.0.75", "300", &["--seconds", "12"]);
    slow.wait_for_line("started", WAIT);
    let report = agent.wait_for("a slow consumer", WAIT, |r| {
        verdict(r, "slow_consumer").is_some()
    });
    let v = verdict(&report, "slow_consumer").unwrap();
    assert_eq!(v["addr"], "127.0.0.75");
    assert_eq!(v["severity"], "warning");
    let queued = v["evidence"]["send_queue_bytes"].as_u64().unwrap();
    assert!(queued >= 1 << 20, "{v}");
    assert!(v["evidence"]["held_s"].as_f64().unwrap() >= 3.0, "{v}");
    assert!(v["evidence"]["share"].as_f64().unwrap() >= 0.5, "{v}");
    assert_eq!(v["evidence"]["output_buffer_drops"], 0);
    // INFO: what clients' buffers hold (the replies Redis could not send yet), and
    // no count of drops on Redis 7.0: null, not 0.
    let held = v["evidence"]["mem_clients_normal"].as_u64().unwrap();
    assert!(held > 0, "{v}");
    assert!(report["redis"]["mem_clients_normal"].as_u64().unwrap() > 0);
    assert_eq!(
        v["evidence"]["info_output_buffer_disconnections"],
        Value::Null
    );
    assert!(
        report["redis"]
            .get("client_output_buffer_limit_disconnections")
            .is_none()
    );
    let row = client(&report, "127.0.0.75").unwrap();
    assert_eq!(row["verdict"], "slow_consumer");
    assert_eq!(row["send_queue"]["bytes"], queued);
    assert!(row["send_queue"]["max"].as_u64().unwrap() <= queued);
}

/// `client-output-buffer-limit normal 256kb 0 0` and a consumer that reconnects
/// after each drop, three times, then holds its new connection: a reconnect loop of
/// exactly three output-buffer drops, named `slow_consumer` (critical), not a leak
/// and not a retry storm; on Valkey, INFO's drop count grew by the same three.
#[test]
fn a_consumer_dropped_again_and_again_is_a_slow_consumer_in_a_loop() {
    slow_consumer_loop(Server::Redis);
}

/// The same on Valkey 8.
#[test]
fn a_consumer_dropped_again_and_again_is_a_slow_consumer_in_a_loop_on_valkey() {
    slow_consumer_loop(Server::Valkey);
}

fn slow_consumer_loop(server: Server) {
    let _serial = serial();
    let (redis, mut agent) = watched_on(
        server,
        &["--client-output-buffer-limit", "normal 256kb 0 0"],
    );
    let mut slow = slow_consumer(
        redis.port,
        "127.0.0.76",
        "500",
        &["--loops", "3", "--then-idle", "--seconds", "20"],
    );
    slow.wait_for_line("started", WAIT);
    // Three drops, each seen by the sockets (and, on Valkey, counted by INFO).
    let report = agent.wait_for(
        "three output-buffer drops, a slow consumer in a loop",
        WAIT,
        |r| {
            server_closes(r, "127.0.0.76")["output_buffer"] == 3
                && verdict(r, "slow_consumer").is_some_and(|v| {
                    v["severity"] == "critical" && v["evidence"]["output_buffer_drops"] == 3
                })
                && (server == Server::Redis
                    || r["redis"]["client_output_buffer_limit_disconnections_delta"] == 3)
        },
    );
    let v = verdict(&report, "slow_consumer").unwrap();
    assert_eq!(v["addr"], "127.0.0.76");
    assert_eq!(
        server_closes(&report, "127.0.0.76"),
        serde_json::json!({"rejection": 0, "idle_timeout": 0, "output_buffer": 3, "other": 0})
    );
    assert_eq!(report["totals"]["server_closes"]["output_buffer"], 3);
    assert_eq!(v["evidence"]["host_output_buffer_closes"], 3);
    match server {
        // Valkey counts the drops: its INFO delta equals what the sockets showed.
        Server::Valkey => {
            assert_eq!(
                report["redis"]["client_output_buffer_limit_disconnections_delta"],
                3
            );
            assert_eq!(v["evidence"]["info_output_buffer_disconnections"], 3);
            assert!(
                v["summary"].as_str().unwrap().contains(
                    "(INFO counts 3 output-buffer disconnections since connwatch started)"
                ),
                "{v}"
            );
        }
        // Redis 7.0 does not: unknown, not 0.
        Server::Redis => {
            assert!(
                report["redis"]
                    .get("client_output_buffer_limit_disconnections_delta")
                    .is_none()
            );
            assert_eq!(
                v["evidence"]["info_output_buffer_disconnections"],
                Value::Null
            );
        }
    }
    assert!(v["evidence"]["mem_clients_normal"].is_u64(), "{v}");
    let (_, reports) = agent.stop();
    for r in &reports {
        for k in ["leak", "retry_storm"] {
            assert!(verdict(r, k).is_none(), "{k}: {}", r["verdicts"]);
        }
    }
    slow.assert_ok();
}

/// `timeout 3` and a redis-py leak (leak.py: a new client every 500 ms, one INCR,
/// kept and never closed): Redis closes each abandoned connection once it has sat
/// idle 3 s, so the leak holds about 7 open and never grows, yet it is named a
/// leak, held down by the timeout. Beside it a warm redis-py pool of 5 (3 busy)
/// loses its 2 idle members to the timeout once and is healthy all along.
#[test]
fn a_leak_held_down_by_redis_timeout_is_still_a_leak() {
    let _serial = serial();
    let redis = Redis::start_with(&["--timeout", "3"]);
    let mut agent = Agent::watch_with(&[redis.port], &["--window", "12s"], &[]);
    agent.wait_for("redis.status ok", WAIT, |r| r["redis"]["status"] == "ok");
    let port = redis.port.to_string();
    let mut pool = Background::python(
        "pool.py",
        &[
            "--port",
            &port,
            "--source",
            "127.0.0.78",
            "--size",
            "5",
            "--busy",
            "3",
            "--ping-every",
            "0.5",
            "--seconds",
            "45",
        ],
    );
    pool.wait_for_line("ready 5", WAIT);
    let mut leak = Background::python(
        "leak.py",
        &[
            "--port",
            &port,
            "--source",
            "127.0.0.77",
            "--every",
            "0.5",
            "--max",
            "80",
            "--seconds",
            "45",
        ],
    );
    leak.wait_for_line("started", WAIT);
    let held = |r: &Value| {
        verdict(r, "leak").is_some_and(|v| v["evidence"]["held_down_by_timeout"] == true)
    };
    let report = agent.wait_for("a leak held down by timeout", Duration::from_secs(40), held);
    leak.assert_ok();
    pool.assert_ok();
    let v = verdict(&report, "leak").unwrap();
    assert_eq!(v["addr"], "127.0.0.77");
    let e = &v["evidence"];
    assert_eq!(e["timeout_s"], 3);
    // The history kept covers the window but for at most an interval.
    let window = e["window_s"].as_f64().unwrap();
    assert!((10.8..=12.0).contains(&window), "{v}");
    assert_eq!(e["idle_over_s"], 1.5);
    // Two a second for 12 s: 24 opened and about as many timed out.
    let per_min = |k: &str| e[k].as_f64().unwrap();
    assert!((108.0..=132.0).contains(&per_min("opened_per_min")), "{v}");
    assert!(
        (90.0..=150.0).contains(&per_min("idle_timeout_closes_per_min")),
        "{v}"
    );
    // Held at rate × (3 s and up to a second of Redis's cron): 6 to 9 open.
    let open = e["open"].as_u64().unwrap();
    assert!((5..=9).contains(&open), "{v}");
    // Held: over the window it grew by at most half of what it holds.
    assert!(e["growth"].as_u64().unwrap() * 2 <= open, "{v}");
    assert!(
        v["summary"]
            .as_str()
            .unwrap()
            .ends_with("a connection leak held down by timeout"),
        "{v}"
    );
    // Every close of the leak is Redis's idle timeout; none is the client's.
    let row = client(&report, "127.0.0.77").unwrap();
    assert_eq!(row["verdict"], "leak");
    assert_eq!(row["closed_by_client"], 0);
    assert_eq!(
        server_closes(&report, "127.0.0.77"),
        serde_json::json!({
            "rejection": 0, "idle_timeout": row["closed"], "output_buffer": 0, "other": 0
        })
    );
    // The pool lost its two idle members to the timeout, and is no leak.
    let pool_row = client(&report, "127.0.0.78").unwrap();
    assert_eq!(pool_row["server_closes"]["idle_timeout"], 2);
    assert_eq!(pool_row["open"], 3);
    let (_, reports) = agent.stop();
    for r in &reports {
        if let Some(row) = client(r, "127.0.0.78") {
            assert_eq!(row["verdict"], "healthy", "{}", r["verdicts"]);
        }
    }
}
