//! `connwatch watch --otlp URL` against a real redis-server, a real redis-py leak and
//! a local OTLP/HTTP receiver (tests/clients/otlp/otlp_receiver.py) that decodes
//! every request with the OpenTelemetry project's own protobuf definitions (the
//! pinned `opentelemetry-proto` package `cargo xtask setup` installs). What arrives
//! is checked against the same run's NDJSON: metric names, values and types, the
//! verdict transitions as log records; then a collector that hangs and later comes
//! up: the agent's reports keep their pace, drops and retries are counted exactly,
//! and the queued data arrives. Loopback only; every wait is bounded.

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use connwatch::model::format_ts;
use connwatch_tests::{
    Agent, Background, Redis, TlsCerts, client, connwatch_bin, free_port, pause, serial,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// A verdict transition as both sides tell it: time, event, kind, severity text,
/// severity number, client address, summary.
type Transition = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
);

/// The receiver, its JSON lines parsed.
struct Receiver {
    process: Background,
}

impl Receiver {
    fn start(port: u16) -> Receiver {
        Receiver::start_with(port, &[])
    }

    fn start_with(port: u16, extra: &[&str]) -> Receiver {
        let pylib =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/otlp/pylib/opentelemetry/proto");
        assert!(
            pylib.is_dir(),
            "{} is missing: cargo xtask setup installs opentelemetry-proto there",
            pylib.display()
        );
        let port_arg = port.to_string();
        let mut args = vec!["--port", &port_arg, "--seconds", "120"];
        args.extend_from_slice(extra);
        let mut process = Background::python("otlp/otlp_receiver.py", &args);
        process.wait_for_line(&format!("listening {port}"), Duration::from_secs(20));
        Receiver { process }
    }

    /// Every request so far (`path`, `content_type`, `request`), in arrival order;
    /// panics on one the receiver could not decode.
    fn requests(&self) -> Vec<Value> {
        self.process
            .lines()
            .iter()
            .filter(|l| l.starts_with('{'))
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("receiver line is JSON");
                assert!(v.get("error").is_none(), "the receiver refused: {v}");
                assert_eq!(v["content_type"], "application/x-protobuf", "{v}");
                v
            })
            .collect()
    }

    fn of(&self, path: &str) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["path"] == path)
            .map(|r| r["request"].clone())
            .collect()
    }

    fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Receiver) -> bool) {
        let deadline = std::time::Instant::now() + timeout;
        while !pred(self) {
            assert!(
                std::time::Instant::now() < deadline,
                "the receiver did not get {what} within {timeout:?}; it got {} requests; stderr:\n{}",
                self.requests().len(),
                self.process.stderr()
            );
            pause(50);
        }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

/// The string value of attribute `key` in an OTLP attribute list (JSON mapping).
fn attr<'a>(attrs: &'a Value, key: &str) -> Option<&'a Value> {
    attrs
        .as_array()?
        .iter()
        .find(|kv| kv["key"] == key)
        .map(|kv| &kv["value"])
}

fn attr_str(attrs: &Value, key: &str) -> Option<String> {
    attr(attrs, key)?["string_value"]
        .as_str()
        .map(str::to_owned)
}

/// protobuf's JSON mapping writes 64-bit integers as strings.
fn int64(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// A data point's value as f64 (`as_int` or `as_double`).
fn point_value(p: &Value) -> f64 {
    if let Some(i) = int64(&p["as_int"]) {
        return i as f64;
    }
    match &p["as_double"] {
        Value::Number(n) => n.as_f64().unwrap(),
        Value::String(s) if s == "Infinity" => f64::INFINITY,
        other => panic!("no value in {p} ({other})"),
    }
}

/// An RFC 3339 time (as the NDJSON writes it) of a `time_unix_nano`.
fn ts_of(nanos: &Value) -> String {
    let n = int64(nanos).expect("a time") as u64;
    format_ts(UNIX_EPOCH + Duration::from_nanos(n)).to_string()
}

/// The one resource's metrics of a request, by name.
fn metrics(request: &Value) -> (&Value, Vec<&Value>) {
    let rms = request["resource_metrics"].as_array().unwrap();
    assert_eq!(rms.len(), 1, "one instance, one resource");
    let list = rms[0]["scope_metrics"][0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    (&rms[0]["resource"]["attributes"], list)
}

fn metric<'a>(list: &[&'a Value], name: &str) -> Option<&'a Value> {
    list.iter().copied().find(|m| m["name"] == name)
}

/// The data points of a metric (gauge or sum).
fn points(m: &Value) -> &Vec<Value> {
    m["gauge"]["data_points"]
        .as_array()
        .or(m["sum"]["data_points"].as_array())
        .unwrap_or_else(|| panic!("no data points in {m}"))
}

/// The value of the point of `name` whose attributes are `labels`.
fn value_of(list: &[&Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let m = metric(list, name)?;
    points(m)
        .iter()
        .find(|p| {
            let n = p["attributes"].as_array().map_or(0, Vec::len);
            n == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| attr_str(&p["attributes"], k).as_deref() == Some(*v))
        })
        .map(point_value)
}

/// The report time of a metrics request (its points' `time_unix_nano`).
fn request_ts(request: &Value) -> String {
    let (_, list) = metrics(request);
    let m = metric(&list, "connwatch_open_connections").expect("open connections");
    ts_of(&points(m)[0]["time_unix_nano"])
}

fn otlp_count(report: &Value, field: &str) -> u64 {
    report["otlp"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("otlp.{field} in {}", report["otlp"]))
}

/// Each report's status counts every request made before it: sent + dropped +
/// queued (in flight included) is exactly the number of requests queued so far:
/// one metrics request per earlier report, plus one logs request per earlier
/// report that had verdict transitions.
fn assert_every_request_is_accounted_for(reports: &[Value], verdict_lines: &[Value]) {
    let mut made = 0u64;
    for r in reports {
        let o = &r["otlp"];
        let seen = otlp_count(r, "sent") + otlp_count(r, "dropped") + otlp_count(r, "queued");
        assert_eq!(seen, made, "otlp {o} at {} after {made} requests", r["ts"]);
        made += 1;
        if verdict_lines.iter().any(|l| l["ts"] == r["ts"]) {
            made += 1;
        }
    }
}

#[test]
fn metrics_and_verdict_changes_reach_the_collector_as_the_ndjson_tells_them() {
    let _serial = serial();
    let redis = Redis::start_with(&["--maxclients", "50"]);
    let receiver_port = free_port();
    let receiver = Receiver::start(receiver_port);
    let url = format!("http://127.0.0.1:{receiver_port}");
    let mut agent = Agent::watch_with(
        &[redis.port],
        &["--otlp", &url, "--leak-idle", "3s", "--window", "20s"],
        &[],
    );
    let port = redis.port.to_string();
    // 40 leaked connections (and the agent's own INFO connection) of 50: a leak, and
    // capacity past 0.8.
    let mut leak = Background::python(
        "leak.py",
        &[
            "--port",
            &port,
            "--source",
            "127.0.0.30",
            "--every",
            "0.1",
            "--max",
            "40",
            "--seconds",
            "40",
        ],
    );
    leak.wait_for_line("started", WAIT);
    let kinds = |r: &Value| -> Vec<String> {
        r["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    agent.wait_for("a leak and capacity_warning", WAIT, |r| {
        let k = kinds(r);
        k.contains(&"leak".to_owned()) && k.contains(&"capacity_warning".to_owned())
    });
    drop(leak);
    agent.wait_for("every verdict cleared", WAIT, |r| kinds(r).is_empty());
    let verdict_lines = agent.verdict_lines();
    let (status, reports) = agent.stop();
    assert!(status.success(), "{status}");
    // The last report goes out as the agent exits.
    let last_ts = reports.last().unwrap()["ts"].clone();
    receiver.wait_for("the last report", Duration::from_secs(10), |r| {
        r.of("/v1/metrics")
            .iter()
            .any(|m| request_ts(m) == last_ts.as_str().unwrap())
    });

    // --- metrics: one request per report, with its figures ---
    let requests = receiver.of("/v1/metrics");
    assert_eq!(
        requests.iter().map(request_ts).collect::<Vec<_>>(),
        reports
            .iter()
            .map(|r| r["ts"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>(),
        "one metrics request per report, in order"
    );
    let host = host_name();
    let mut leak_seen = false;
    for (request, report) in requests.iter().zip(&reports) {
        let (resource, list) = metrics(request);
        assert_eq!(
            attr_str(resource, "service.name").as_deref(),
            Some("connwatch")
        );
        assert_eq!(attr_str(resource, "host.name"), Some(host.clone()));
        assert_eq!(
            attr_str(resource, "service.instance.id"),
            Some(format!("{host}:{port}"))
        );
        let get = |name: &str| value_of(&list, name, &[]);
        let num = |v: &Value| v.as_f64();
        assert_eq!(
            get("connwatch_open_connections"),
            num(&report["totals"]["open"])
        );
        assert_eq!(
            get("connwatch_capacity_used"),
            num(&report["capacity"]["used"])
        );
        assert_eq!(
            get("connwatch_capacity_limit"),
            num(&report["capacity"]["limit"])
        );
        assert_eq!(get("connwatch_maxclients"), Some(50.0));
        assert_eq!(
            get("connwatch_redis_connected_clients"),
            num(&report["capacity"]["connected_clients"])
        );
        assert_eq!(
            get("connwatch_otlp_sent_total"),
            num(&report["otlp"]["sent"])
        );
        assert_eq!(get("connwatch_otlp_dropped_total"), Some(0.0));
        assert_eq!(
            get("connwatch_uptime_seconds"),
            num(&report["uptime_s"]),
            "{}",
            report["ts"]
        );
        let leaker = client(report, "127.0.0.30").map_or(0.0, |c| c["open"].as_f64().unwrap());
        if leaker > 0.0 {
            assert_eq!(
                value_of(&list, "connwatch_client_open", &[("addr", "127.0.0.30")]),
                Some(leaker)
            );
        }
        let leaks = report["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["kind"] == "leak" && v["severity"] == "warning")
            .count();
        leak_seen |= leaks > 0;
        assert_eq!(
            value_of(
                &list,
                "connwatch_verdict",
                &[("kind", "leak"), ("severity", "warning")]
            ),
            Some(leaks as f64)
        );
        // Counters: cumulative, monotonic, from the agent's start.
        let opened = metric(&list, "connwatch_connections_opened_total").unwrap();
        assert_eq!(opened["sum"]["is_monotonic"], true);
        assert_eq!(
            opened["sum"]["aggregation_temporality"],
            "AGGREGATION_TEMPORALITY_CUMULATIVE"
        );
        let p = &points(opened)[0];
        assert_eq!(point_value(p), report["totals"]["opened"].as_f64().unwrap());
        let span =
            int64(&p["time_unix_nano"]).unwrap() - int64(&p["start_time_unix_nano"]).unwrap();
        let uptime_ns = report["uptime_s"].as_f64().unwrap() * 1e9;
        assert!(
            (span as f64 - uptime_ns).abs() < 1e6,
            "start time = report time - uptime: {span} vs {uptime_ns}"
        );
        let uptime = metric(&list, "connwatch_uptime_seconds").unwrap();
        assert_eq!(uptime["unit"], "s");
        assert!(uptime.get("gauge").is_some(), "{uptime}");
    }
    assert!(leak_seen, "the leak was in some report");
    let last = reports.last().unwrap();
    assert_eq!(otlp_count(last, "dropped"), 0);
    assert_eq!(otlp_count(last, "retries"), 0);
    assert!(last["otlp"]["failing_since"].is_null());
    assert_every_request_is_accounted_for(&reports, &verdict_lines);

    // --- the verdict transitions, as log records ---
    let records: Vec<Value> = receiver
        .of("/v1/logs")
        .iter()
        .flat_map(|req| {
            let rl = &req["resource_logs"][0];
            assert_eq!(
                attr_str(&rl["resource"]["attributes"], "service.instance.id"),
                Some(format!("{host}:{port}"))
            );
            rl["scope_logs"][0]["log_records"]
                .as_array()
                .unwrap()
                .clone()
        })
        .collect();
    let got: Vec<Transition> = records
        .iter()
        .map(|r| {
            let a = &r["attributes"];
            (
                ts_of(&r["time_unix_nano"]),
                attr_str(a, "connwatch.event").unwrap(),
                attr_str(a, "connwatch.verdict.kind").unwrap(),
                r["severity_text"].as_str().unwrap().to_owned(),
                r["severity_number"].as_str().unwrap().to_owned(),
                attr_str(a, "client.address"),
                r["body"]["string_value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<Transition> = verdict_lines
        .iter()
        .map(|l| {
            let event = l["event"].as_str().unwrap();
            let severity = l["severity"].as_str().unwrap();
            let (text, number) = match (event, severity) {
                ("cleared", _) => ("cleared", "SEVERITY_NUMBER_INFO"),
                ("raised", "warning") => ("warning", "SEVERITY_NUMBER_WARN"),
                ("raised", "critical") => ("critical", "SEVERITY_NUMBER_ERROR"),
                other => panic!("{other:?}"),
            };
            (
                l["ts"].as_str().unwrap().to_owned(),
                event.to_owned(),
                l["kind"].as_str().unwrap().to_owned(),
                text.to_owned(),
                number.to_owned(),
                l["addr"].as_str().map(str::to_owned),
                l["summary"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got, want,
        "one log record per NDJSON verdict line, in order"
    );
    for (kind, event) in [
        ("leak", "raised"),
        ("capacity_warning", "raised"),
        ("leak", "cleared"),
        ("capacity_warning", "cleared"),
    ] {
        assert!(
            want.iter().any(|w| w.1 == event && w.2 == kind),
            "{kind} {event} in {want:?}"
        );
    }
    // The raised leak's evidence is in its attributes, as the report has it.
    let (record, line) = records
        .iter()
        .zip(&verdict_lines)
        .find(|(_, l)| l["kind"] == "leak" && l["event"] == "raised")
        .unwrap();
    let report = reports.iter().find(|r| r["ts"] == line["ts"]).unwrap();
    let verdict = report["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["kind"] == "leak")
        .unwrap();
    assert_eq!(
        attr_str(&record["attributes"], "client.address").as_deref(),
        Some("127.0.0.30")
    );
    assert_eq!(record["event_name"], "connwatch.verdict");
    for key in ["growth", "stale"] {
        let a = attr(&record["attributes"], &format!("connwatch.evidence.{key}"))
            .unwrap_or_else(|| panic!("evidence {key} in {record}"));
        assert_eq!(
            int64(&a["int_value"]),
            verdict["evidence"][key].as_i64(),
            "{key}"
        );
    }
    assert_eq!(
        attr(&record["attributes"], "connwatch.evidence.idle_over_s").unwrap()["double_value"],
        3.0
    );
}

#[test]
fn a_hung_then_absent_collector_never_slows_the_reports_and_the_queue_arrives_once_it_is_up() {
    let _serial = serial();
    let redis = Redis::start();
    let port = free_port();
    // A collector that accepts connections (the kernel does, into the backlog) and
    // never answers: each attempt waits for its read timeout.
    let hung = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let mut agent = Agent::watch_with(&[redis.port], &["--otlp", &url, "--otlp-queue", "4"], &[]);
    let stalled = agent.wait_for("a failed attempt and drops", WAIT, |r| {
        r["otlp"]["failing_since"].is_string()
            && r["otlp"]["retries"].as_u64() >= Some(1)
            && r["otlp"]["dropped"].as_u64() >= Some(5)
    });
    assert!(stalled["otlp"]["error"].is_string(), "{}", stalled["otlp"]);
    assert!(
        stalled["otlp"]["queued"].as_u64() <= Some(5),
        "{}",
        stalled["otlp"]
    );
    // The reports kept their pace (200 ms) while every attempt hung for 5 s: a gap
    // of 2 s allows for two shared cores, and is less than half of one hang.
    let uptimes: Vec<f64> = agent
        .reports()
        .iter()
        .map(|r| r["uptime_s"].as_f64().unwrap())
        .collect();
    let worst = uptimes.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(uptimes.len() >= 20, "{} reports", uptimes.len());
    assert!(worst < 2.0, "a report came {worst} s after the one before");

    // Now nothing listens (connection refused), then the receiver comes up.
    drop(hung);
    pause(1_000);
    let refused = agent.latest().unwrap();
    assert!(refused["otlp"]["failing_since"].is_string());
    let up_at = SystemTime::now();
    let receiver = Receiver::start(port);
    receiver.wait_for("a metrics request", Duration::from_secs(20), |r| {
        !r.of("/v1/metrics").is_empty()
    });
    let recovered = agent.wait_for("the export working again", WAIT, |r| {
        r["otlp"]["failing_since"].is_null() && r["otlp"]["sent"].as_u64() >= Some(4)
    });
    assert!(recovered["otlp"]["error"].is_null());
    // What waited in the queue arrived: reports made before the receiver was up.
    let up_ts = format_ts(up_at).to_string();
    let early = receiver
        .of("/v1/metrics")
        .iter()
        .filter(|m| request_ts(m) < up_ts)
        .count();
    assert!(
        (1..=5).contains(&early),
        "{early} queued reports from before {up_ts} (at most the queue and the one in flight)"
    );
    // Once it flows, nothing more is dropped; every request is accounted for.
    let dropped = otlp_count(&recovered, "dropped");
    agent.wait_for("two more sent", WAIT, |r| {
        r["otlp"]["sent"].as_u64() >= Some(otlp_count(&recovered, "sent") + 2)
    });
    let (_, reports) = agent.stop();
    assert_eq!(otlp_count(reports.last().unwrap(), "dropped"), dropped);
    assert_every_request_is_accounted_for(&reports, &[]);
}

/// `https://`: the collector's certificate is checked against the host's CA store
/// (here the test CA, through `SSL_CERT_FILE`, which the store honours); a
/// certificate the store does not trust is a failure the report names.
#[test]
fn https_collectors_are_verified_against_the_ca_store() {
    let _serial = serial();
    let certs = TlsCerts::make();
    let redis = Redis::start();
    let port = free_port();
    let cert = certs.server_cert.to_str().unwrap().to_owned();
    let key = certs.server_key.to_str().unwrap().to_owned();
    let receiver = Receiver::start_with(port, &["--certfile", &cert, "--keyfile", &key]);
    let url = format!("https://127.0.0.1:{port}");
    let ca = certs.ca.to_str().unwrap().to_owned();

    let mut agent = Agent::watch_with(&[redis.port], &["--otlp", &url], &[("SSL_CERT_FILE", &ca)]);
    let sent = agent.wait_for("two requests sent over TLS", WAIT, |r| {
        r["otlp"]["sent"].as_u64() >= Some(2)
    });
    assert!(sent["otlp"]["failing_since"].is_null(), "{}", sent["otlp"]);
    let got = receiver.of("/v1/metrics");
    assert!(got.len() >= 2, "{} requests", got.len());
    let (_, list) = metrics(&got[0]);
    assert!(metric(&list, "connwatch_open_connections").is_some());
    drop(agent);

    // Another CA: the handshake fails, and the report says why.
    let wrong = certs.wrong_ca.to_str().unwrap().to_owned();
    let mut agent = Agent::watch_with(
        &[redis.port],
        &["--otlp", &url],
        &[("SSL_CERT_FILE", &wrong)],
    );
    let failing = agent.wait_for("a failed handshake", WAIT, |r| {
        r["otlp"]["failing_since"].is_string()
    });
    let error = failing["otlp"]["error"].as_str().unwrap();
    assert!(error.contains("certificate"), "{error}");
    assert_eq!(failing["otlp"]["sent"], 0);
}

#[test]
fn a_bad_otlp_url_is_one_line_and_exit_2() {
    for (url, why) in [
        ("ftp://127.0.0.1:4318", "is not http or https"),
        ("127.0.0.1:4318", "not a URL"),
        ("http://127.0.0.1:70000", "port"),
    ] {
        let out = std::process::Command::new(connwatch_bin())
            .args(["watch", "--port", "6379", "--otlp", url])
            .output()
            .expect("run connwatch");
        assert_eq!(out.status.code(), Some(2), "{url}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("--otlp") && err.contains(why), "{err}");
    }
    assert!(Path::new(&connwatch_bin()).exists());
}
