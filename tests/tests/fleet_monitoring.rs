//! The fleet-monitoring artifacts in packaging/: the Prometheus alert rules
//! (packaging/prometheus/connwatch-rules.yml) and the Grafana dashboard
//! (packaging/grafana/connwatch.json).
//!
//! - The rules pass `promtool check rules` and their unit tests
//!   (`promtool test rules packaging/prometheus/connwatch-rules.test.yml`), which
//!   give every alert a case that fires and one that must not.
//! - A real Prometheus loads the rules and scrapes a real connwatch watching a
//!   real redis-server during a leak and a retry storm (redis-py clients from
//!   tests/clients), then while Redis has no descriptor left, then after it is
//!   killed; every query of the dashboard, its variables substituted, must return
//!   series over the run, and so must the expression of every alert the run
//!   makes true. Each of the other alerts is listed with why a short run
//!   cannot make it true, and its expression must still evaluate and name only
//!   series connwatch exports.
//!
//! Everything listens on loopback; every wait and every client is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use connwatch_tests::prometheus::{PROMTOOL, Prometheus};
use connwatch_tests::{Agent, Background, Redis, count, fill, free_port, serial};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const STARTED: Duration = Duration::from_secs(10);

/// The alerts the run makes true: a leak and a retry storm against a full server,
/// then Redis out of descriptors, then Redis gone. Their expressions must return
/// series, and Prometheus must have evaluated each to pending or firing.
const FIRED_BY_THE_RUN: [&str; 11] = [
    "ConnwatchCapacityWarning",
    "ConnwatchCapacityCritical",
    "ConnwatchExhaustionForecast",
    "ConnwatchExhaustionImminent",
    "ConnwatchRejectingConnections",
    "ConnwatchRetryStorm",
    "ConnwatchLeak",
    "ConnwatchAcceptOutOfFiles",
    "ConnwatchFdLimit",
    "ConnwatchConnectionsRefused",
    "ConnwatchRedisInfoUnavailable",
];

/// The alerts this run cannot make true, and why. Their promtool unit tests make
/// each fire; here their expressions must evaluate and name exported series.
const NOT_FIRED_BY_THE_RUN: [(&str, &str); 10] = [
    (
        "ConnwatchRejectingConnectionsMisconfigured",
        "needs protected-mode or TLS rejections",
    ),
    (
        "ConnwatchAcceptErrors",
        "needs ENOMEM/ENOBUFS/ECONNABORTED from accept()",
    ),
    ("ConnwatchAcceptQueueOverflow", "needs a full accept queue"),
    ("ConnwatchNotAccepting", "needs a stopped Redis"),
    (
        "ConnwatchSlowConsumer",
        "needs a client that does not read its replies",
    ),
    (
        "ConnwatchMaxclientsTooLow",
        "never said beside a leak or a storm",
    ),
    (
        "ConnwatchSizingVerdict",
        "pool_oversize, instance_fanout, internal_headroom, blocked_clients, budget_exceeded: other loads",
    ),
    (
        "ConnwatchLostEvents",
        "needs a ring buffer overrun, which this load does not cause",
    ),
    ("ConnwatchReportsStale", "needs a stuck agent"),
    ("ConnwatchAgentDown", "needs the agent stopped"),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn rules_file() -> PathBuf {
    repo().join("packaging/prometheus/connwatch-rules.yml")
}

fn dashboard() -> Value {
    let path = repo().join("packaging/grafana/connwatch.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// `promtool ARGS…` from `dir`: (success, stdout and stderr).
fn promtool(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(PROMTOOL)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("{PROMTOOL} must be installed (cargo xtask setup installs prometheus): {e}")
        });
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The alert names of the rules file, in order (`- alert: NAME` lines).
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(|n| n.trim().to_owned())
        .collect()
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = repo().join("packaging/prometheus");
    let (ok, out) = promtool(&dir, &["check", "rules", "connwatch-rules.yml"]);
    assert!(ok, "promtool check rules:\n{out}");
    let rules = std::fs::read_to_string(rules_file()).expect("the rules file");
    let names = alert_names(&rules);
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", names.len())),
        "every rule is an alert with a `- alert:` line: {names:?}\n{out}"
    );

    let (ok, out) = promtool(&dir, &["test", "rules", "connwatch-rules.test.yml"]);
    assert!(ok, "promtool test rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");

    // Every alert has a case where it fires and one where it must not.
    let tests = std::fs::read_to_string(dir.join("connwatch-rules.test.yml")).expect("tests");
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(name) = line.strip_prefix("alertname: ") {
            match lines.get(i + 1) {
                Some(&"exp_alerts: []") => quiet.insert(name.to_owned()),
                Some(&"exp_alerts:") => fires.insert(name.to_owned()),
                other => panic!("alertname {name} followed by {other:?}"),
            };
        }
    }
    for name in &names {
        assert!(fires.contains(name), "no test case where {name} fires");
        assert!(
            quiet.contains(name),
            "no test case where {name} stays quiet"
        );
    }
    let known: BTreeSet<&String> = names.iter().collect();
    for name in fires.iter().chain(&quiet) {
        assert!(
            known.contains(name),
            "the tests name an unknown alert {name}"
        );
    }
}

/// Every panel of the dashboard, rows' nested panels included.
fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested);
        }
    }
    out
}

/// (panel title, refId, expr) of every query in the dashboard.
fn queries(dash: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap_or("").to_owned(),
                t["refId"].as_str().unwrap_or("").to_owned(),
                t["expr"].as_str().unwrap_or("").to_owned(),
            ));
        }
    }
    out
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_on_a_prometheus_datasource_variable() {
    let dash = dashboard();
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(
        dash["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty() && u.len() <= 40)
    );
    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["query"], "prometheus");
    let ds_ref = format!("${{{}}}", ds["name"].as_str().expect("its name"));

    let mut ids = BTreeSet::new();
    let mut n_queries = 0;
    // (title, x, y, w, h) of the panels placed so far: none may overlap another.
    let mut placed: Vec<(&str, u64, u64, u64, u64)> = Vec::new();
    for p in panels(&dash) {
        let title = p["title"].as_str().expect("every panel has a title");
        assert!(
            ids.insert(p["id"].as_u64().expect("a numeric id")),
            "id of {title} repeated"
        );
        let g = &p["gridPos"];
        let num = |k: &str| {
            g[k].as_u64()
                .unwrap_or_else(|| panic!("{title}: gridPos.{k}"))
        };
        let (x, y, w, h) = (num("x"), num("y"), num("w"), num("h"));
        assert!(x + w <= 24 && w > 0 && h > 0, "{title}: {g}");
        for (other, ox, oy, ow, oh) in &placed {
            let apart = x + w <= *ox || ox + ow <= x || y + h <= *oy || oy + oh <= y;
            assert!(apart, "{title} overlaps {other}");
        }
        placed.push((title, x, y, w, h));
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["type"], "prometheus", "{title}");
        assert_eq!(p["datasource"]["uid"], ds_ref.as_str(), "{title}");
        assert!(
            p["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{title} says what it shows"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(refs.insert(t["refId"].as_str().expect("refId")), "{title}");
            assert_eq!(t["datasource"]["uid"], ds_ref.as_str(), "{title}");
            assert!(t["expr"].as_str().is_some_and(|e| e.contains("connwatch_")));
            n_queries += 1;
        }
    }
    // What the issue asks the dashboard to show.
    let all: String = queries(&dash).iter().map(|q| q.2.clone() + "\n").collect();
    for needed in [
        "connwatch_capacity_ratio",
        "0.8 * connwatch_capacity_limit",
        "0.9 * connwatch_capacity_limit",
        "connwatch_connections_rejected_total",
        "connwatch_connections_refused_total",
        "connwatch_verdict",
        "connwatch_client_open",
        "connwatch_client_rejected_total",
        "connwatch_client_refused_total",
        "connwatch_client_idle_max_seconds",
        "connwatch_accept_errors_total",
        "connwatch_lost_events_total",
        "connwatch_redis_up",
    ] {
        assert!(all.contains(needed), "no query shows {needed}");
    }
    assert!(n_queries >= 30, "{n_queries} queries");
}

/// A PromQL string literal's regex for exactly `s` (Grafana escapes a variable's
/// value the same way in a `=~` matcher).
fn regex_literal(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push_str("\\\\");
        }
        out.push(c);
    }
    out
}

/// `expr` with the dashboard's variables and Grafana's built-ins replaced by
/// concrete values; panics on any `$` left, so a new variable needs a value here.
fn substitute(expr: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut names: Vec<&&str> = vars.keys().collect();
    // Longest first, so `$__rate_interval` is not cut by a shorter name.
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = expr.to_owned();
    for name in names {
        let value = &vars[*name];
        out = out
            .replace(&format!("${{{name}:regex}}"), value)
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    assert!(!out.contains('$'), "unsubstituted variable in {out}");
    out
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// The metric names an expression selects (`connwatch_…` identifiers).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("connwatch_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

/// A redis-py client that retries at once after every failure (a rejection, a
/// refusal, a PING unanswered for `timeout` seconds), bounded.
fn storm(port: u16, source: &str, seconds: u32, timeout: &str) -> Background {
    Background::python(
        "reconnect.py",
        &[
            "--port",
            &port.to_string(),
            "--source",
            source,
            "--mode",
            "storm",
            "--seconds",
            &seconds.to_string(),
            "--max-attempts",
            "20000",
            "--timeout",
            timeout,
        ],
    )
}

/// `--leak-idle 3s --window 30s` stand for the defaults 30 s and 60 s, as in
/// tests/tests/diagnose.rs: 5 leaked connections a second are named a leak within
/// seconds, and stay one a third of the window after they stop growing. The leak
/// stops at 30 connections of maxclients 40; holders then take the free slots and
/// a client retrying at once is turned away. Then the server's open-file limit
/// leaves it no descriptor (accept() fails with EMFILE), and last it is killed
/// (refusals, INFO unreachable).
#[test]
fn every_dashboard_query_and_firing_alert_returns_data_from_a_leak_and_storm_scrape() {
    let _serial = serial();
    let started = Instant::now();
    let mut redis = Redis::start_with(&["--maxclients", "40"]);
    let metrics = SocketAddr::new([127, 0, 0, 1].into(), free_port());
    let metrics_flag = metrics.to_string();
    let mut agent = Agent::watch_with(
        &[redis.port],
        &[
            "--metrics",
            &metrics_flag,
            "--leak-idle",
            "3s",
            "--window",
            "30s",
        ],
        &[],
    );
    agent.wait_for("redis.status ok", WAIT, |r| r["redis"]["status"] == "ok");
    let rules = rules_file();
    let mut prometheus = Prometheus::start_with_rules(metrics, &[&rules]);
    prometheus.wait_for(r#"up{job="connwatch"}"#, "1");
    let run_start = now_s() - 5.0;

    let port = redis.port.to_string();
    let mut leak = Background::python(
        "leak.py",
        &[
            "--port",
            &port,
            "--source",
            "127.0.0.30",
            "--every",
            "0.2",
            "--max",
            "30",
            "--seconds",
            "90",
        ],
    );
    leak.wait_for_line("started", STARTED);
    agent.wait_for("30 leaked connections", WAIT, |r| {
        count(r, "127.0.0.30", "open") == 30
    });
    let held = fill("127.0.0.40", redis.addr());
    assert!(!held.is_empty() && held.len() < 10, "held {}", held.len());
    let mut storming = storm(redis.port, "127.0.0.31", 20, "2");
    storming.wait_for_line("started", STARTED);
    let has = |r: &Value, kind: &str| {
        r["verdicts"]
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v["kind"] == kind))
    };
    agent.wait_for("a retry storm", WAIT, |r| has(r, "retry_storm"));
    // The leak was named while it grew (and holds a third of a window after).
    if !agent.reports().iter().any(|r| has(r, "leak")) {
        agent.wait_for("a leak", WAIT, |r| has(r, "leak"));
    }
    // Prometheus has scraped both, and has evaluated the rules on them.
    for (promql, want) in [
        (
            r#"max_over_time(connwatch_verdict{kind="leak",severity="warning"}[5m])"#,
            "1",
        ),
        (
            r#"max_over_time(connwatch_verdict{kind="retry_storm",severity="critical"}[5m])"#,
            "1",
        ),
        (
            r#"count(ALERTS{alertname="ConnwatchRetryStorm"}) > bool 0"#,
            "1",
        ),
        (r#"count(ALERTS{alertname="ConnwatchLeak"}) > bool 0"#, "1"),
    ] {
        prometheus.wait_for(promql, want);
    }
    leak.assert_ok();
    storming.assert_ok();

    // Then Redis runs out of descriptors: accept() fails with EMFILE while a
    // client waits in the accept queue and retries after each 1 s timeout.
    redis.leave_no_free_descriptor();
    let mut waiting = storm(redis.port, "127.0.0.32", 30, "1");
    waiting.wait_for_line("started", STARTED);
    agent.wait_for("fd_limit", WAIT, |r| has(r, "fd_limit"));
    for alert in ["ConnwatchAcceptOutOfFiles", "ConnwatchFdLimit"] {
        prometheus.wait_for(
            &format!("count(ALERTS{{alertname=\"{alert}\"}}) > bool 0"),
            "1",
        );
    }

    // Last, Redis goes away: the client's attempts are refused, INFO unreachable.
    redis.kill();
    agent.wait_for("INFO unreachable", WAIT, |r| {
        r["redis"]["status"] == "unreachable"
    });
    for alert in [
        "ConnwatchConnectionsRefused",
        "ConnwatchRedisInfoUnavailable",
    ] {
        prometheus.wait_for(
            &format!("count(ALERTS{{alertname=\"{alert}\"}}) > bool 0"),
            "1",
        );
    }
    waiting.assert_ok();
    prometheus.assert_running();
    // One step past now: the last step of a range query may fall before a rule
    // evaluation that the waits above already saw.
    let run_end = now_s() + 1.0;
    let range = |q: &str| prometheus.range(q, run_start, run_end, 1);

    // The dashboard's variables: each must list what was scraped.
    let dash = dashboard();
    let instance = metrics.to_string();
    let job = "connwatch".to_owned();
    let mut vars: BTreeMap<&str, String> = BTreeMap::new();
    vars.insert("job", regex_literal(&job));
    vars.insert("instance", regex_literal(&instance));
    vars.insert("__rate_interval", "5s".into());
    vars.insert("__interval", "1s".into());
    vars.insert("__range", format!("{}s", (run_end - run_start).ceil()));
    for v in dash["templating"]["list"].as_array().expect("variables") {
        let name = v["name"].as_str().expect("a variable's name");
        match v["type"].as_str() {
            Some("datasource") => {}
            Some("custom") => {
                let value = v["current"]["value"].as_str().expect("a current value");
                assert!(
                    v["query"]
                        .as_str()
                        .is_some_and(|q| q.split(',').any(|o| o == value)),
                    "{name}: {v}"
                );
                vars.insert(name, value.to_owned());
            }
            Some("query") => {
                // label_values(SELECTOR, LABEL)
                // A string, or Grafana 10's {query, refId}.
                let q = v["query"]
                    .as_str()
                    .or_else(|| v["query"]["query"].as_str())
                    .expect("the variable's query");
                let inner = q
                    .strip_prefix("label_values(")
                    .and_then(|q| q.strip_suffix(')'))
                    .unwrap_or_else(|| panic!("{name}: not label_values(): {q}"));
                let (selector, label) = inner.rsplit_once(',').expect("selector, label");
                let selector = substitute(selector.trim(), &vars);
                let values = prometheus
                    .api(&format!(
                        "/api/v1/label/{}/values?match[]={}&start={run_start:.3}&end={run_end:.3}",
                        label.trim(),
                        connwatch_tests::prometheus::url_encode(&selector)
                    ))
                    .unwrap_or_else(|e| panic!("variable {name}: {e}"));
                let want = if name == "job" { &job } else { &instance };
                assert!(
                    values
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x == want.as_str())),
                    "variable {name} ({q}) lists {values}, not {want}"
                );
            }
            other => panic!("variable {name} of type {other:?}: give it a value here"),
        }
    }

    let exported: BTreeSet<String> = prometheus
        .api("/api/v1/label/__name__/values")
        .expect("metric names")
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();

    let mut empty = Vec::new();
    let all_queries = queries(&dash);
    for (title, ref_id, expr) in &all_queries {
        let promql = substitute(expr, &vars);
        match range(&promql) {
            Ok(series) if !series.is_empty() => {}
            Ok(_) => empty.push(format!("{title} [{ref_id}]: {promql}: no series")),
            Err(e) => empty.push(format!("{title} [{ref_id}]: {e}")),
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data over the run:\n{}",
        empty.join("\n")
    );

    // The rules as Prometheus loaded them: all evaluate without error.
    let groups = prometheus.api("/api/v1/rules").expect("rules");
    let mut loaded = BTreeMap::new();
    for g in groups["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            let name = r["name"].as_str().expect("a name").to_owned();
            assert_eq!(r["health"], "ok", "{name}: {}", r["lastError"]);
            loaded.insert(name, r["query"].as_str().expect("a query").to_owned());
        }
    }
    let classified: BTreeSet<&str> = FIRED_BY_THE_RUN
        .iter()
        .copied()
        .chain(NOT_FIRED_BY_THE_RUN.iter().map(|(n, _)| *n))
        .collect();
    assert_eq!(
        loaded.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        classified,
        "every alert is listed as fired by this run or not (with why)"
    );
    let mut failures = Vec::new();
    for (name, expr) in &loaded {
        for metric in metric_names(expr) {
            if !exported.contains(&metric) {
                failures.push(format!(
                    "{name}: {metric} is not a series connwatch exports"
                ));
            }
        }
        let series = match range(expr) {
            Ok(series) => series,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        if FIRED_BY_THE_RUN.contains(&name.as_str()) {
            if series.is_empty() {
                failures.push(format!("{name}: {expr} returned nothing over the run"));
            }
            // Prometheus evaluated the rule itself: pending or firing.
            let alerts = range(&format!("ALERTS{{alertname=\"{name}\"}}")).unwrap_or_default();
            if alerts.is_empty() {
                failures.push(format!("{name}: never pending nor firing"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "alert rules against the run:\n{}",
        failures.join("\n")
    );
    // The instance they name is the scraped agent.
    let storm_alert = prometheus
        .instant(r#"ALERTS{alertname="ConnwatchRetryStorm"}"#)
        .expect("ALERTS");
    assert!(
        storm_alert
            .iter()
            .any(|a| a["metric"]["instance"] == instance.as_str()
                && a["metric"]["severity"] == "critical"),
        "{storm_alert:?}"
    );

    drop(storming);
    drop(leak);
    drop(held);
    drop(prometheus);
    let (status, _) = agent.stop();
    assert!(status.success(), "connwatch ends with 0, got {status}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the run took {:?}",
        started.elapsed()
    );
    eprintln!(
        "{} dashboard queries and {} alert expressions checked in {:?}",
        all_queries.len(),
        loaded.len(),
        started.elapsed()
    );
}
