//! Why the server closed: Redis's idle `timeout` and its output-buffer limit, told
//! apart from each other and from rejections by the real agent watching a real
//! redis-server, with redis-py clients (tests/clients/).

use std::time::Duration;

use connwatch_tests::{Agent, Background, Client, Redis, client, pause, serial};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn server_closes(report: &Value, addr: &str) -> Value {
    client(report, addr).map_or(Value::Null, |c| c["server_closes"].clone())
}

/// `timeout 2`: three connections that PING once and then idle are closed by Redis
/// after 2 s, each an `idle_timeout`; a connection that keeps talking is not.
#[test]
fn idle_connections_past_redis_timeout_are_idle_timeout_closes() {
    let _serial = serial();
    let redis = Redis::start_with(&["--timeout", "2"]);
    let mut agent = Agent::watch(&[redis.port]);
    agent.wait_for("redis.status ok", WAIT, |r| r["redis"]["status"] == "ok");
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
    let _serial = serial();
    let redis = Redis::start_with(&["--client-output-buffer-limit", "normal 256kb 0 0"]);
    let mut agent = Agent::watch(&[redis.port]);
    agent.wait_for("redis.status ok", WAIT, |r| r["redis"]["status"] == "ok");
    let port = redis.port.to_string();
    let mut slow = Background::python(
        "slow_consumer.py",
        &[
            "--port",
            &port,
            "--source",
            "127.0.0.72",
            "--value-kb",
            "64",
            "--requests",
            "500",
            "--every",
            "0.01",
            "--rcvbuf-kb",
            "64",
            "--seconds",
            "15",
        ],
    );
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
    });
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
