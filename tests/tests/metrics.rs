//! `connwatch watch --metrics 127.0.0.1:PORT` against a real redis-server and real
//! clients from distinct 127.0.0.x addresses: the per-client series are exact, the
//! text passes `promtool check metrics`, and a real Prometheus server (Debian's
//! package) scrapes it. Everything listens on loopback; every wait is bounded.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use connwatch_tests::prometheus::{PROMTOOL, Prometheus, try_get};
use connwatch_tests::{Agent, Client, Redis, count, free_port, pause, serial};

const WAIT: Duration = Duration::from_secs(15);

/// The agent's `/metrics` text; panics unless it answers 200 with the exposition
/// format's content type.
fn scrape(addr: SocketAddr) -> String {
    let (status, head, body) =
        try_get(addr, "/metrics").unwrap_or_else(|| panic!("no answer from http://{addr}/metrics"));
    assert_eq!(status, 200, "GET /metrics: {head}\n{body}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "content type: {head}"
    );
    body
}

/// The value of one series in the text, e.g. `connwatch_client_open{addr="127.0.0.2"}`.
fn value<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
}

/// Scrapes until every `(series, value)` holds, and returns that text.
fn wait_for_series(addr: SocketAddr, expected: &[(&str, &str)]) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = try_get(addr, "/metrics")
            .filter(|(status, _, _)| *status == 200)
            .map(|(_, _, body)| body)
            .unwrap_or_default();
        if expected
            .iter()
            .all(|(series, v)| value(&text, series) == Some(v))
        {
            return text;
        }
        if Instant::now() > deadline {
            let wrong: Vec<String> = expected
                .iter()
                .filter(|(series, v)| value(&text, series) != Some(v))
                .map(|(series, v)| format!("{series}: want {v}, got {:?}", value(&text, series)))
                .collect();
            panic!(
                "/metrics never matched:\n{}\nlast text:\n{text}",
                wrong.join("\n")
            );
        }
        pause(100);
    }
}

/// `promtool check metrics` with the text on stdin: (success, its output).
fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{PROMTOOL} must be installed (cargo xtask setup installs prometheus): {e}")
        });
    let mut stdin = child.stdin.take().expect("stdin");
    let input = text.to_owned();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().expect("wait for promtool");
    writer.join().expect("stdin writer");
    let output =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), output)
}

/// Starts the agent on `redis` with `--metrics 127.0.0.1:<free port>` (and `extra`
/// arguments), and returns it with the metrics address.
fn agent_with_metrics(redis: &Redis, extra: &[&str]) -> (Agent, SocketAddr) {
    let metrics = SocketAddr::new([127, 0, 0, 1].into(), free_port());
    let flag = metrics.to_string();
    let mut args = vec!["--metrics", flag.as_str()];
    args.extend_from_slice(extra);
    let agent = Agent::watch_with(&[redis.port], &args, &[]);
    (agent, metrics)
}

#[test]
fn metrics_count_clients_exactly_pass_promtool_and_are_scraped_by_prometheus() {
    let _serial = serial();
    let redis = Redis::start();
    let (mut agent, metrics) = agent_with_metrics(&redis, &[]);

    let _a = Client::many("127.0.0.2", redis.addr(), 4);
    let _b = Client::many("127.0.0.3", redis.addr(), 2);
    for c in Client::many("127.0.0.4", redis.addr(), 6) {
        c.close();
    }
    // The JSON report and the metrics come from the same report each interval.
    agent.wait_for("open 4/2 and 6 closed", WAIT, |r| {
        count(r, "127.0.0.2", "open") == 4
            && count(r, "127.0.0.3", "open") == 2
            && count(r, "127.0.0.4", "closed") == 6
    });
    let text = wait_for_series(
        metrics,
        &[
            (r#"connwatch_client_open{addr="127.0.0.2"}"#, "4"),
            (r#"connwatch_client_open{addr="127.0.0.3"}"#, "2"),
            (r#"connwatch_client_open{addr="127.0.0.4"}"#, "0"),
            (r#"connwatch_client_closed_total{addr="127.0.0.4"}"#, "6"),
            ("connwatch_redis_up", "1"),
        ],
    );
    // Nothing moves any more: one more scrape, with its headers checked.
    assert_eq!(scrape(metrics).lines().count(), text.lines().count());
    for (series, want) in [
        (r#"connwatch_client_opened_total{addr="127.0.0.2"}"#, "4"),
        (r#"connwatch_client_opened_total{addr="127.0.0.3"}"#, "2"),
        (r#"connwatch_client_opened_total{addr="127.0.0.4"}"#, "6"),
        (r#"connwatch_client_closed_total{addr="127.0.0.2"}"#, "0"),
        (r#"connwatch_client_rejected_total{addr="127.0.0.2"}"#, "0"),
        (r#"connwatch_client_refused_total{addr="127.0.0.4"}"#, "0"),
        (
            r#"connwatch_client_verdict{addr="127.0.0.2",verdict="healthy"}"#,
            "1",
        ),
        (
            r#"connwatch_client_verdict{addr="127.0.0.2",verdict="leak"}"#,
            "0",
        ),
        (r#"connwatch_client_open{addr="other"}"#, "0"),
        (r#"connwatch_redis_status{status="ok"}"#, "1"),
        (r#"connwatch_redis_status{status="unreachable"}"#, "0"),
        (
            r#"connwatch_connections_rejected_total{reason="maxclients"}"#,
            "0",
        ),
        (r#"connwatch_accept_errors_total{errno="EMFILE"}"#, "0"),
        (r#"connwatch_verdict{kind="leak",severity="warning"}"#, "0"),
        ("connwatch_lost_events_total", "0"),
    ] {
        assert_eq!(value(&text, series), Some(want), "{series} in:\n{text}");
    }
    // Still-open connections have an idle time; the closed ones a lifetime.
    assert!(
        value(
            &text,
            r#"connwatch_client_idle_max_seconds{addr="127.0.0.2"}"#
        )
        .is_some()
    );
    assert!(
        value(
            &text,
            r#"connwatch_client_lifetime_p99_seconds{addr="127.0.0.4"}"#
        )
        .is_some()
    );
    assert!(
        value(
            &text,
            r#"connwatch_client_lifetime_p99_seconds{addr="127.0.0.2"}"#
        )
        .is_none()
    );

    let (ok, output) = promtool_check(&text);
    assert!(
        ok,
        "promtool check metrics failed:\n{output}\ntext:\n{text}"
    );
    assert!(output.trim().is_empty(), "promtool lint: {output}");

    let (status, _, _) = try_get(metrics, "/nope").expect("an answer to /nope");
    assert_eq!(status, 404);

    let mut prometheus = Prometheus::start(metrics);
    prometheus.wait_for(r#"up{job="connwatch"}"#, "1");
    prometheus.wait_for(r#"connwatch_client_open{addr="127.0.0.2"}"#, "4");
    prometheus.wait_for(r#"connwatch_client_opened_total{addr="127.0.0.4"}"#, "6");
    drop(prometheus);

    let (status, _) = agent.stop();
    assert!(
        status.success(),
        "SIGTERM ends connwatch with 0, got {status}"
    );
}

#[test]
fn metrics_cap_addresses_to_top_plus_other() {
    let _serial = serial();
    let redis = Redis::start();
    let (mut agent, metrics) = agent_with_metrics(&redis, &["--top", "1"]);

    let _a = Client::many("127.0.0.2", redis.addr(), 3);
    let _b = Client::many("127.0.0.3", redis.addr(), 2);
    let _c = Client::many("127.0.0.4", redis.addr(), 1);
    agent.wait_for("open 3/2/1", WAIT, |r| {
        count(r, "127.0.0.2", "open") == 3
            && count(r, "127.0.0.3", "open") == 2
            && count(r, "127.0.0.4", "open") == 1
    });
    let text = wait_for_series(
        metrics,
        &[
            (r#"connwatch_client_open{addr="127.0.0.2"}"#, "3"),
            (r#"connwatch_client_open{addr="other"}"#, "3"),
            (r#"connwatch_client_opened_total{addr="other"}"#, "3"),
        ],
    );
    assert!(
        !text.contains(r#"addr="127.0.0.3""#) && !text.contains(r#"addr="127.0.0.4""#),
        "only the worst address is named:\n{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"connwatch_client_verdict{addr="other",verdict="healthy"}"#
        ),
        Some("2")
    );
    let named: std::collections::HashSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once("addr=\"")?.1.split_once('"').map(|(a, _)| a))
        .collect();
    assert_eq!(named, ["127.0.0.2", "other"].into_iter().collect());
    let (ok, output) = promtool_check(&text);
    assert!(ok, "promtool check metrics failed:\n{output}");
    drop(agent);
}
