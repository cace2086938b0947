//! Diagnosis end to end: real clients (redis-py scripts in tests/clients/, run by
//! Debian's python3 with python3-redis; ioredis and node-redis in
//! tests/clients/node/, run by Node.js; and redis-benchmark) against a real
//! redis-server, watched by the real agent; the verdicts in its NDJSON reports must
//! name the cause, and only the cause.
//!
//! Time scale. The agent reports every 200 ms here (`AGENT_INTERVAL`). Where a rule
//! looks back over a long window by default, the test shortens the window with the
//! agent's threshold flags and keeps every count threshold at its default, so the
//! test exercises the same rule on a shorter clock; each test says which.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use connwatch_tests::{Agent, Background, Client, Redis, client, count, fill, pause, serial};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);
const STARTED: Duration = Duration::from_secs(10);

/// The verdicts of a report as (kind, addr) pairs, in report order.
fn verdicts(report: &Value) -> Vec<(String, Option<String>)> {
    report["verdicts"]
        .as_array()
        .expect("verdicts[] is an array")
        .iter()
        .map(|v| {
            (
                v["kind"].as_str().expect("kind").to_owned(),
                v["addr"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// The set of verdict kinds in a report.
fn kinds(report: &Value) -> BTreeSet<String> {
    verdicts(report).into_iter().map(|(k, _)| k).collect()
}

/// The verdict of `kind` (for `addr`, when given).
fn verdict<'a>(report: &'a Value, kind: &str, addr: Option<&str>) -> Option<&'a Value> {
    report["verdicts"]
        .as_array()?
        .iter()
        .find(|v| v["kind"] == kind && addr.is_none_or(|a| v["addr"] == a))
}

fn has(report: &Value, kind: &str, addr: Option<&str>) -> bool {
    verdict(report, kind, addr).is_some()
}

/// `clients[].verdict` of `addr` ("absent" if the address is not in the report).
fn client_verdict(report: &Value, addr: &str) -> String {
    client(report, addr)
        .and_then(|c| c["verdict"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "absent".into())
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn ev(v: &Value, key: &str) -> u64 {
    v["evidence"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("evidence.{key} is not a count in {v}"))
}

/// Waits until the agent has joined Redis INFO: the verdicts that need the real
/// limit (`capacity.limit` from maxclients) or INFO's counts depend on it.
fn wait_for_info(agent: &mut Agent) {
    agent.wait_for("redis.status ok (the INFO poller joined)", WAIT, |r| {
        r["redis"]["status"] == "ok"
    });
}

/// Healthy steady traffic: redis-benchmark with 5 keep-alive connections (from
/// 127.0.0.1: it cannot bind a source address), bounded by a request count and by
/// `seconds`, niced so it does not starve the agent on a two-core machine. The
/// count is the bound a runaway would hit, not the one that ends a run: a quiet
/// machine serves two million of each in under a minute, so `seconds` must.
fn benchmark(port: u16, seconds: u32) -> Background {
    Background::command(
        "timeout",
        &[
            &seconds.to_string(),
            "nice",
            "-n",
            "10",
            "redis-benchmark",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-k",
            "1",
            "-c",
            "5",
            "-n",
            "50000000",
            "-r",
            "1000",
            "-t",
            "set,get",
            "-q",
        ],
    )
}

/// One redis-py instance holding a checked-out pool of `size` from `source`.
fn pool(port: u16, source: &str, size: u32, seconds: u32) -> Background {
    let mut p = Background::python(
        "pool.py",
        &[
            "--port",
            &port.to_string(),
            "--source",
            source,
            "--size",
            &size.to_string(),
            "--seconds",
            &seconds.to_string(),
        ],
    );
    p.wait_for_line(&format!("ready {size}"), STARTED);
    p
}

/// A redis-py client that retries after each failure, at once (`storm`) or with
/// exponential backoff and jitter (`backoff`).
fn reconnect(port: u16, source: &str, mode: &str, seconds: u32, extra: &[&str]) -> Background {
    let port = port.to_string();
    let seconds = seconds.to_string();
    let mut args = vec![
        "--port",
        &port,
        "--source",
        source,
        "--mode",
        mode,
        "--seconds",
        &seconds,
    ];
    args.extend_from_slice(extra);
    Background::python("reconnect.py", &args)
}

/// Leak: `--leak-idle 3s --window 20s` stand for the defaults 30s and 60s. By
/// default one leaked connection per second is named within 60 s: 10 connections of
/// growth (`--leak-min-growth` 10) and 5 idle for 30 s (`--leak-min-stale` 5) take
/// about 35 s. Here 5 leaked connections per second, idle for 3 s, with the same
/// counts, are named within a few seconds.
#[test]
fn a_client_that_never_closes_is_a_leak_and_the_benchmark_beside_it_is_not() {
    let _serial = serial();
    let redis = Redis::start();
    let port = redis.port.to_string();
    let mut agent = Agent::watch_with(
        &[redis.port],
        &["--leak-idle", "3s", "--window", "20s"],
        &[],
    );
    let mut bench = benchmark(redis.port, 40);
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
            "150",
            "--seconds",
            "40",
        ],
    );
    leak.wait_for_line("started", STARTED);

    let report = agent.wait_for("a leak verdict", WAIT, |r| has(r, "leak", None));
    leak.assert_ok();
    bench.assert_ok();
    assert_eq!(
        verdicts(&report),
        [("leak".to_owned(), Some("127.0.0.30".to_owned()))],
        "one verdict: the leak, for 127.0.0.30 only"
    );
    assert_eq!(client_verdict(&report, "127.0.0.30"), "leak");
    assert_eq!(client_verdict(&report, "127.0.0.1"), "healthy");
    assert!(
        count(&report, "127.0.0.1", "open") >= 5,
        "redis-benchmark's 5 connections are open beside the leak"
    );

    let leak_v = verdict(&report, "leak", Some("127.0.0.30")).unwrap();
    assert_eq!(leak_v["severity"], "warning");
    assert!(ev(leak_v, "growth") >= 10, "{leak_v}");
    assert!(ev(leak_v, "stale") >= 5, "{leak_v}");
    assert_eq!(leak_v["evidence"]["idle_over_s"], 3.0);

    // The stale connections are the leaked ones, oldest first: exactly the first
    // connections the script opened, in order, each with its CLIENT KILL command.
    let opened: Vec<String> = leak
        .lines()
        .iter()
        .filter_map(|l| l.strip_prefix("conn ").map(str::to_owned))
        .collect();
    let stale = leak_v["stale_connections"].as_array().unwrap();
    assert!(
        (5..=20).contains(&stale.len()),
        "5 to 20 named: {}",
        stale.len()
    );
    let named: Vec<&str> = stale.iter().map(|s| s["addr"].as_str().unwrap()).collect();
    assert_eq!(named, opened[..stale.len()], "oldest first");
    let mut last_idle = f64::MAX;
    for s in stale {
        let addr = s["addr"].as_str().unwrap();
        assert_eq!(s["command"], format!("CLIENT KILL ADDR {addr}"));
        let idle = s["idle_s"].as_f64().unwrap();
        assert!(
            idle >= 3.0 && idle <= last_idle,
            "idle {idle} after {last_idle}"
        );
        last_idle = idle;
        assert!(
            leak_v["action"].as_str().unwrap().contains(addr),
            "the action names {addr}"
        );
    }

    // The command works as written: Redis kills exactly one client (the filter form
    // of CLIENT KILL answers with the number killed), and the agent sees that very
    // connection closed by the server.
    let mut admin = Client::connect("127.0.0.29", redis.addr());
    assert_eq!(
        admin
            .command(&["CLIENT", "KILL", "ADDR", named[0]])
            .unwrap(),
        ":1\r\n"
    );
    agent.wait_for("the killed connection closed by the server", WAIT, |r| {
        count(r, "127.0.0.30", "closed_by_server") == 1
    });

    let (_, reports) = agent.stop();
    for r in &reports {
        assert!(
            verdicts(r)
                .iter()
                .all(|(_, a)| a.as_deref() == Some("127.0.0.30")),
            "only 127.0.0.30 is ever blamed: {:?}",
            verdicts(r)
        );
        let bench_verdict = client_verdict(r, "127.0.0.1");
        assert!(
            bench_verdict == "healthy" || bench_verdict == "absent",
            "redis-benchmark judged {bench_verdict}"
        );
    }
}

/// Retry storm vs backoff, default thresholds: a storm is at least 10 failures in
/// the short window (3 s) retried with a median gap under 100 ms, not growing;
/// backing off is growing gaps or gaps of 1 s and more.
#[test]
fn immediate_reconnects_are_a_retry_storm_and_exponential_backoff_is_not() {
    let _serial = serial();
    let redis = Redis::start_with(&["--maxclients", "20"]);
    pause(200); // the readiness probe's slot is freed
    let mut agent = Agent::watch(&[redis.port]);
    pause(1000); // the agent's INFO connection, if it makes one, takes its slot first
    let held = fill("127.0.0.40", redis.addr());
    assert!(
        held.len() >= 19,
        "the holders fill the server: {}",
        held.len()
    );

    let mut backoff = reconnect(
        redis.port,
        "127.0.0.32",
        "backoff",
        30,
        &["--base", "0.05", "--cap", "2", "--max-attempts", "100"],
    );
    backoff.wait_for_line("started", STARTED);
    let mut storm = reconnect(
        redis.port,
        "127.0.0.31",
        "storm",
        6,
        &["--max-attempts", "20000"],
    );
    storm.wait_for_line("started", STARTED);
    let started_at = agent.report_count();

    let report = agent.wait_for("retry_storm for 127.0.0.31", WAIT, |r| {
        has(r, "retry_storm", Some("127.0.0.31"))
    });
    let first = agent
        .reports()
        .iter()
        .position(|r| has(r, "retry_storm", Some("127.0.0.31")))
        .unwrap();
    assert!(
        first >= started_at && first < started_at + 3,
        "the storm is named within 3 intervals of its start: report {first}, storm began before report {started_at}"
    );
    let v = verdict(&report, "retry_storm", Some("127.0.0.31")).unwrap();
    assert_eq!(v["severity"], "critical");
    assert!(ev(v, "failures_recent") >= 10, "{v}");
    assert!(
        v["evidence"]["retry_gap_p50_ms"].as_f64().unwrap() < 100.0,
        "{v}"
    );
    assert_ne!(v["evidence"]["retry_trend"], "growing");
    // The storming process of this host is named, with its rejections as failures.
    assert_eq!(v["evidence"]["pid"], storm.pid(), "{v}");
    assert_eq!(v["evidence"]["comm"], "python3", "{v}");
    let summary = v["summary"].as_str().unwrap();
    assert!(
        summary.starts_with(&format!(
            "pid {} (python3) on 127.0.0.31 retries every",
            storm.pid()
        )),
        "{summary}"
    );
    let row = client(&report, "127.0.0.31").unwrap();
    assert_eq!(row["processes"][0]["pid"], storm.pid(), "{row}");
    assert!(
        row["processes"][0]["failed"].as_u64().unwrap() >= 10,
        "{row}"
    );
    assert_eq!(client_verdict(&report, "127.0.0.31"), "retry_storm");
    assert!(!has(&report, "retry_storm", Some("127.0.0.32")));

    let report = agent.wait_for("127.0.0.32 backing off", WAIT, |r| {
        client_verdict(r, "127.0.0.32") == "backing_off"
    });
    assert!(count(&report, "127.0.0.32", "rejected") >= 3);
    backoff.assert_ok();

    // The storm ends by itself; its verdict clears once the short window passes.
    assert!(
        storm.wait(Duration::from_secs(15)).success(),
        "{}",
        storm.stderr()
    );
    agent.wait_for("the storm verdict cleared", WAIT, |r| {
        !has(r, "retry_storm", None) && client_verdict(r, "127.0.0.31") != "retry_storm"
    });
    backoff.assert_ok();

    let (_, reports) = agent.stop();
    for r in &reports {
        let storms: Vec<_> = verdicts(r)
            .into_iter()
            .filter(|(k, _)| k == "retry_storm")
            .collect();
        assert!(
            storms
                .iter()
                .all(|(_, a)| a.as_deref() == Some("127.0.0.31")),
            "only 127.0.0.31 ever storms: {storms:?}"
        );
        assert_ne!(client_verdict(r, "127.0.0.32"), "retry_storm");
    }
    drop(held);
}

/// Pool oversize, `--window 10s` for the default 60 s: a pool is steady when its open
/// count is the same half a window ago (here 5 s).
#[test]
fn four_instances_with_pools_of_twenty_oversize_a_limit_of_one_hundred() {
    let _serial = serial();
    let redis = Redis::start_with(&["--maxclients", "100"]);
    let mut agent = Agent::watch_with(&[redis.port], &["--window", "10s"], &[]);
    wait_for_info(&mut agent);
    let instances = ["127.0.0.33", "127.0.0.34", "127.0.0.35", "127.0.0.36"];
    let mut pools: Vec<Background> = instances
        .iter()
        .map(|src| pool(redis.port, src, 20, 40))
        .collect();

    let report = agent.wait_for("pool_oversize", WAIT, |r| has(r, "pool_oversize", None));
    for p in &mut pools {
        p.assert_ok();
    }
    let v = verdict(&report, "pool_oversize", None).unwrap();
    assert_eq!(ev(v, "instances"), 4, "{v}");
    assert_eq!(ev(v, "per_instance"), 20, "{v}");
    assert_eq!(ev(v, "total"), 80, "{v}");
    assert_eq!(ev(v, "limit"), 100, "{v}");
    assert!(v.get("addr").is_none(), "a host verdict");
    // 80 pooled + the agent's INFO connection: 81 % of the limit is a warning too.
    assert_eq!(report["capacity"]["used"], 81);
    assert_eq!(kinds(&report), set(&["pool_oversize", "capacity_warning"]));
    assert_eq!(v["severity"], "warning");
    for src in instances {
        assert_eq!(count(&report, src, "open"), 20, "{src}");
        assert_eq!(client_verdict(&report, src), "healthy", "{src}");
    }
    // The guide's sizing with the numbers seen: 4 steady instances × a pool of 20
    // + 100 slots of internal headroom = 180, with the margin of filling at most
    // 80 % of the limit (the capacity warning), rounded up to a hundred: 300. The
    // open-file limit already has room for it: no other recommendation.
    assert_eq!(
        report["recommendations"],
        serde_json::json!([{
            "setting": "maxclients",
            "current": 100,
            "suggested": 300,
            "why": "4 instances × 20 connections + 100 reserved for replicas, cluster bus \
                    and sentinels = 180, used at most 80 % of the limit"
        }])
    );
}

/// Instance fan-out, default thresholds: at least 100 addresses with at most two
/// short-lived connections each.
#[test]
fn two_hundred_addresses_each_opening_one_short_connection_are_a_fanout() {
    let _serial = serial();
    let redis = Redis::start();
    let mut agent = Agent::watch(&[redis.port]);
    let mut churn = Background::python(
        "churn.py",
        &[
            "--port",
            &redis.port.to_string(),
            "--first",
            "127.0.1.1",
            "--addresses",
            "200",
            "--rate",
            "400",
            "--rounds",
            "40",
            "--seconds",
            "30",
        ],
    );
    churn.wait_for_line("round 1", WAIT);

    let report = agent.wait_for("instance_fanout over all 200 addresses", WAIT, |r| {
        verdict(r, "instance_fanout", None).is_some_and(|v| v["evidence"]["addresses"] == 200)
    });
    churn.assert_ok();
    let v = verdict(&report, "instance_fanout", None).unwrap();
    assert_eq!(v["severity"], "warning");
    assert!(ev(v, "opened") >= 200, "{v}");
    assert_eq!(kinds(&report), set(&["instance_fanout"]));
    for i in 1..=200 {
        let addr = format!("127.0.1.{i}");
        let c = client(&report, &addr).unwrap_or_else(|| panic!("{addr} reported"));
        assert!(c["opened"].as_u64().unwrap() >= 1, "{addr}");
        assert!(c["open"].as_u64().unwrap() <= 1, "{addr}");
        assert_eq!(c["verdict"], "healthy", "{addr}");
    }
}

/// No false alarms, default thresholds, for the 60 s the issue asks: steady
/// redis-benchmark traffic and a calm client opening 5 short connections a second.
#[test]
fn steady_benchmark_and_calm_short_connections_raise_nothing_in_sixty_seconds() {
    const RUN: Duration = Duration::from_secs(60);
    let _serial = serial();
    let redis = Redis::start();
    let mut agent = Agent::watch(&[redis.port]);
    wait_for_info(&mut agent);
    let mut bench = benchmark(redis.port, 75);
    let mut calm = Background::python(
        "churn.py",
        &[
            "--port",
            &redis.port.to_string(),
            "--first",
            "127.0.0.37",
            "--rate",
            "5",
            "--rounds",
            "400",
            "--seconds",
            "75",
        ],
    );
    calm.wait_for_line("started", STARTED);
    let start = Instant::now();
    let first = agent.report_count();
    while start.elapsed() < RUN {
        pause(1000);
        bench.assert_ok();
        calm.assert_ok();
        let r = agent.latest().unwrap();
        assert!(
            verdicts(&r).is_empty(),
            "a false alarm after {:?}: {}",
            start.elapsed(),
            serde_json::to_string_pretty(&r["verdicts"]).unwrap()
        );
    }
    // Both loads ran the whole minute.
    assert!(bench.running(), "redis-benchmark ran for the whole 60 s");
    assert!(calm.running(), "the calm client ran for the whole 60 s");
    let last = agent.latest().unwrap();
    assert!(
        count(&last, "127.0.0.37", "opened") >= 250,
        "5 connections/s for 60 s: {}",
        count(&last, "127.0.0.37", "opened")
    );
    assert!(count(&last, "127.0.0.1", "bytes_in") > 1_000_000);

    let (_, reports) = agent.stop();
    assert!(reports.len() - first >= 250, "a report every 200 ms");
    for (i, r) in reports.iter().enumerate() {
        assert!(verdicts(r).is_empty(), "report {i}: {:?}", verdicts(r));
        for c in r["clients"].as_array().unwrap() {
            assert_eq!(c["verdict"], "healthy", "report {i}: {c}");
        }
    }
}

/// Rejections while every client behaves: the holders are steady and the others back
/// off, so the limit is the cause. Default thresholds.
#[test]
fn rejections_of_clients_that_back_off_mean_maxclients_is_too_low() {
    let _serial = serial();
    let redis = Redis::start_with(&["--maxclients", "30"]);
    pause(200); // the readiness probe's slot is freed
    let mut agent = Agent::watch(&[redis.port]);
    wait_for_info(&mut agent);
    let held = fill("127.0.0.40", redis.addr());
    assert_eq!(held.len(), 29, "30 slots, one is the agent's");
    let mut a = reconnect(redis.port, "127.0.0.38", "backoff", 30, &["--cap", "2"]);
    let mut b = reconnect(redis.port, "127.0.0.39", "backoff", 30, &["--cap", "2"]);
    a.wait_for_line("started", STARTED);
    b.wait_for_line("started", STARTED);

    let report = agent.wait_for(
        "maxclients_too_low with both clients backing off",
        WAIT,
        |r| {
            has(r, "maxclients_too_low", None)
                && client_verdict(r, "127.0.0.38") == "backing_off"
                && client_verdict(r, "127.0.0.39") == "backing_off"
        },
    );
    a.assert_ok();
    b.assert_ok();
    let v = verdict(&report, "maxclients_too_low", None).unwrap();
    assert_eq!(v["severity"], "critical");
    assert_eq!(ev(v, "maxclients"), 30);
    assert_eq!(ev(v, "used"), 30);
    assert!(ev(v, "rejected_recent") >= 1);
    assert_eq!(
        kinds(&report),
        set(&["maxclients_too_low", "capacity_critical"])
    );
    // 29 of 30 slots from one address is a heavy pool, not a misbehaving one.
    assert_eq!(client_verdict(&report, "127.0.0.40"), "pool_heavy");

    let (_, reports) = agent.stop();
    for r in &reports {
        assert!(
            !has(r, "retry_storm", None) && !has(r, "leak", None),
            "{:?}",
            verdicts(r)
        );
    }
    drop(held);
}

/// A lowered open-file limit (prlimit on the running server): the kernel completes
/// connections Redis cannot accept; accept() fails with EMFILE. No INFO needed.
#[test]
fn a_lowered_fd_limit_is_a_critical_fd_limit_verdict() {
    let _serial = serial();
    let redis = Redis::start();
    let mut agent = Agent::watch_with(&[redis.port], &["--no-redis"], &[]);
    let _app = pool(redis.port, "127.0.0.41", 10, 40);

    let fds = redis.leave_no_free_descriptor();
    // A client that times out on PING (its connection waits in the accept queue) and
    // retries with backoff.
    let mut waiting = reconnect(
        redis.port,
        "127.0.0.43",
        "backoff",
        30,
        &["--timeout", "1", "--base", "0.2", "--cap", "1"],
    );
    waiting.wait_for_line("started", STARTED);

    // The queue depth is sampled just before the failure counters, so the first
    // report with a failure may not show the connection queued yet.
    let report = agent.wait_for("fd_limit with the connection queued", WAIT, |r| {
        verdict(r, "fd_limit", None)
            .is_some_and(|v| v["evidence"]["accept_queue"].as_u64() >= Some(1))
    });
    waiting.assert_ok();
    let v = verdict(&report, "fd_limit", None).unwrap();
    assert_eq!(v["severity"], "critical");
    assert!(ev(v, "fd_accept_failures_recent") > 0, "{v}");
    assert_eq!(ev(v, "nofile_soft"), fds);
    assert!(v["summary"].as_str().unwrap().contains("EMFILE"));
    assert_eq!(kinds(&report), set(&["fd_limit", "capacity_critical"]));
}

/// Blocked clients, default share 0.3: 40 BLPOP consumers on a limit of 100.
#[test]
fn forty_blpop_consumers_on_a_limit_of_one_hundred_are_blocked_clients() {
    let _serial = serial();
    let redis = Redis::start_with(&["--maxclients", "100"]);
    let mut agent = Agent::watch(&[redis.port]);
    wait_for_info(&mut agent);
    let mut consumers = Background::python(
        "blocked.py",
        &[
            "--port",
            &redis.port.to_string(),
            "--source",
            "127.0.0.42",
            "--clients",
            "40",
            "--block",
            "5",
            "--seconds",
            "40",
        ],
    );
    consumers.wait_for_line("ready 40", STARTED);

    let report = agent.wait_for("blocked_clients with all 40 blocked", WAIT, |r| {
        verdict(r, "blocked_clients", None).is_some_and(|v| v["evidence"]["blocked_clients"] == 40)
    });
    consumers.assert_ok();
    let v = verdict(&report, "blocked_clients", None).unwrap();
    assert_eq!(v["severity"], "warning");
    assert_eq!(ev(v, "limit"), 100);
    assert_eq!(report["capacity"]["blocked_clients"], 40);
    assert_eq!(kinds(&report), set(&["blocked_clients"]));
    assert_eq!(count(&report, "127.0.0.42", "open"), 40);
    // 40 of 100 slots from one address: more than the pool-heavy share (0.25).
    assert_eq!(client_verdict(&report, "127.0.0.42"), "pool_heavy");
}

/// Internal headroom, default reserve 100: a replica on a primary whose limit is 50.
#[test]
fn a_replica_on_a_limit_of_fifty_leaves_too_little_internal_headroom() {
    let _serial = serial();
    let primary = Redis::start_with(&["--maxclients", "50"]);
    let mut agent = Agent::watch(&[primary.port]);
    wait_for_info(&mut agent);
    let _replica = Redis::start_with(&[
        "--bind-source-addr",
        "127.0.0.20",
        "--replicaof",
        "127.0.0.1",
        &primary.port.to_string(),
    ]);
    let _app = pool(primary.port, "127.0.0.44", 10, 40);

    let report = agent.wait_for(
        "internal_headroom with the replica and the app",
        WAIT,
        // INFO is read once an interval: wait until it counts the app's connections too.
        |r| {
            has(r, "internal_headroom", None)
                && count(r, "127.0.0.44", "open") == 10
                && r["capacity"]["used"] == 12
        },
    );
    let v = verdict(&report, "internal_headroom", None).unwrap();
    assert_eq!(v["severity"], "warning");
    assert_eq!(ev(v, "internal"), 1);
    assert_eq!(ev(v, "reserve"), 100);
    assert_eq!(ev(v, "limit"), 50);
    // 12 used: the app's 10, the agent, the replica.
    assert_eq!(v["evidence"]["headroom"], 50 - 12);
    assert_eq!(kinds(&report), set(&["internal_headroom"]));
    let replica = client(&report, "127.0.0.20").expect("the replica is reported");
    assert_eq!(replica["internal"], true);
    assert_eq!(replica["verdict"], "healthy");
}

/// Kept fan-out, `--window 10s` for the default 60 s (steady: the same count half a
/// window, 5 s, ago); the other thresholds at their defaults (100 addresses, 70 %
/// of the limit): 300 addresses each keeping one idle connection, as kept-warm
/// serverless instances do, against maxclients 320.
#[test]
fn three_hundred_addresses_each_keeping_one_connection_are_a_kept_fanout() {
    let _serial = serial();
    let redis = Redis::start_with(&["--maxclients", "320"]);
    let mut agent = Agent::watch_with(&[redis.port], &["--window", "10s"], &[]);
    wait_for_info(&mut agent);
    let addrs: Vec<String> = (0..300u32)
        .map(|i| format!("127.0.{}.{}", 4 + i / 250, i % 250 + 1))
        .collect();
    // 100 instances a second.
    let mut held = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        held.push(Client::connect(a, redis.addr()));
        if i % 10 == 9 {
            pause(100);
        }
    }

    let report = agent.wait_for("instance_fanout over all 300 instances", WAIT, |r| {
        verdict(r, "instance_fanout", None).is_some_and(|v| v["evidence"]["instances"] == 300)
    });
    let v = verdict(&report, "instance_fanout", None).unwrap();
    assert_eq!(v["evidence"]["form"], "kept", "{v}");
    assert_eq!(ev(v, "per_instance"), 1, "{v}");
    assert_eq!(ev(v, "total"), 300, "{v}");
    assert_eq!(ev(v, "limit"), 320, "{v}");
    assert_eq!(ev(v, "reserved_headroom"), 100, "{v}");
    // The runbook's sizing: instances × connections_per_instance + reserved_headroom.
    assert_eq!(ev(v, "maxclients_needed"), 300 + 100, "{v}");
    assert!(
        v["action"].as_str().unwrap().starts_with(
            "Size for the instances: 300 instances × 1 connection + 100 reserved = 400 slots against a limit of 320;"
        ),
        "{v}"
    );
    // 300 held + the agent's INFO connection: 94 % of the limit, critical.
    assert_eq!(report["capacity"]["used"], 301);
    assert_eq!(v["severity"], "critical");
    assert_eq!(
        kinds(&report),
        set(&["instance_fanout", "capacity_critical"])
    );
    for a in &addrs {
        assert_eq!(count(&report, a, "open"), 1, "{a}");
        assert_eq!(client_verdict(&report, a), "healthy", "{a}");
    }
    let (_, reports) = agent.stop();
    for r in &reports {
        assert!(!has(r, "pool_oversize", None), "{:?}", verdicts(r));
    }
    drop(held);
}

/// Not accepting: redis-server frozen (SIGSTOP) for about 4 s while 30 connections
/// arrive, each sending PING into the accept queue. INFO's poll gives up after its
/// 1 s I/O timeout and a reconnect that times out too (about 2 s): the verdict must
/// come within 3 intervals of the first report whose INFO status says so, and
/// clear within 3 intervals of SIGCONT.
///
/// The burst after the stall: `--leak-idle 1s --window 10s` (for 30 s and 60 s)
/// would make the queued connections a leak (growing, idle over 1 s) were the stall
/// not named; and a client that retries at once after a 0.3 s timeout leaves about
/// ten abandoned connections in the queue, which Redis accepts all at once on
/// resume. Neither may raise a leak or a retry storm, then or after.
#[test]
fn a_frozen_redis_is_not_accepting_and_the_burst_after_raises_no_leak_or_storm() {
    const WAITING: &str = "127.0.0.50";
    const RETRYING: &str = "127.0.0.51";
    let _serial = serial();
    let redis = Redis::start();
    let mut agent = Agent::watch_with(
        &[redis.port],
        &["--leak-idle", "1s", "--window", "10s"],
        &[],
    );
    wait_for_info(&mut agent);
    let mut retrying = reconnect(
        redis.port,
        RETRYING,
        "storm",
        20,
        &["--timeout", "0.3", "--pause", "0.2"],
    );
    retrying.wait_for_line("started", STARTED);
    pause(1000);

    let stopped_at = agent.report_count();
    redis.stop_process();
    let mut waiting = Vec::new();
    for _ in 0..30 {
        waiting.push(Client::send_only(WAITING, redis.addr(), &["PING"]));
        pause(100);
    }
    let report = agent.wait_for("not_accepting with all 30 queued", WAIT, |r| {
        has(r, "not_accepting", None) && count(r, WAITING, "open") == 30
    });
    let v = verdict(&report, "not_accepting", None).unwrap();
    assert_eq!(v["severity"], "critical");
    // Also queued: the retrying client's attempts, and the agent's own.
    assert!(ev(v, "waiting") >= 30, "{v}");
    assert_eq!(
        ev(v, "waiting"),
        report["totals"]["accept_queue"]["depth"].as_u64().unwrap(),
        "{v}"
    );
    assert_eq!(
        ev(v, "backlog"),
        report["totals"]["accept_queue"]["backlog"]
            .as_u64()
            .unwrap()
    );
    assert!(ev(v, "waiting_at_start") >= 1, "{v}");
    assert!(v["evidence"]["stalled_s"].as_f64().unwrap() > 0.0, "{v}");
    assert!(
        v["evidence"]["since"].as_str().unwrap() < report["ts"].as_str().unwrap(),
        "{v}"
    );
    assert_eq!(v["evidence"]["info"], "unreachable", "{v}");
    assert_eq!(report["redis"]["status"], "unreachable");
    assert!(
        v["evidence"]["info_error"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{v}"
    );
    assert!(v["action"].as_str().unwrap().contains("SLOWLOG GET"), "{v}");
    assert_eq!(kinds(&report), set(&["not_accepting"]));

    // Named within 3 intervals of INFO's timeout.
    let reports = agent.reports();
    let info_failed = (stopped_at..reports.len())
        .find(|&i| reports[i]["redis"]["status"] != "ok")
        .expect("INFO stopped answering");
    let named = (stopped_at..reports.len())
        .find(|&i| has(&reports[i], "not_accepting", None))
        .expect("named");
    assert!(
        named >= info_failed && named < info_failed + 3,
        "INFO failed at report {info_failed}, not_accepting first at {named}"
    );

    // Resumed: every queued connection is served, and the verdict clears.
    let resumed_at = agent.report_count();
    redis.continue_process();
    for c in &mut waiting {
        assert_eq!(c.reply().expect("the reply after the stall"), "+PONG\r\n");
    }
    for c in waiting {
        c.close();
    }
    agent.wait_for("not_accepting cleared", WAIT, |r| {
        !has(r, "not_accepting", None)
    });
    let reports = agent.reports();
    let cleared = (resumed_at..reports.len())
        .find(|&i| !has(&reports[i], "not_accepting", None))
        .expect("cleared");
    assert!(
        cleared < resumed_at + 3,
        "resumed before report {resumed_at}, cleared at {cleared}"
    );
    eprintln!(
        "reports: stopped before {stopped_at}, INFO failed at {info_failed}, named at {named}, resumed before {resumed_at}, cleared at {cleared}"
    );
    // The burst after: Redis accepts the abandoned connections, and they end.
    let report = agent.wait_for(
        "the retrying client's abandoned connections ended",
        WAIT,
        |r| count(r, RETRYING, "open") <= 1,
    );
    eprintln!(
        "{RETRYING} after the stall: {}",
        client(&report, RETRYING).unwrap()
    );
    pause(3000);
    retrying.assert_ok();

    let (_, reports) = agent.stop();
    for (i, r) in reports.iter().enumerate().skip(stopped_at) {
        assert!(
            !has(r, "leak", None) && !has(r, "retry_storm", None),
            "report {i}: {:?}",
            verdicts(r)
        );
        for a in [WAITING, RETRYING] {
            let c = client_verdict(r, a);
            assert!(c != "leak" && c != "retry_storm", "report {i}: {a} {c}");
        }
    }
}

// ---- backoff across a fleet (Node.js clients) -----------------------------------

/// Twenty client hosts (loopback aliases 127.0.1.1–20), one Node.js client each.
fn fleet_sources(n: u8) -> Vec<String> {
    (1..=n).map(|i| format!("127.0.1.{i}")).collect()
}

/// `tests/clients/node/retry.js`: one `lib` client per source, reconnecting by
/// `strategy`, for `seconds`.
fn node_fleet(
    port: u16,
    lib: &str,
    strategy: &str,
    sources: &[String],
    seconds: u32,
) -> Background {
    let port = port.to_string();
    let sources = sources.join(",");
    let seconds = seconds.to_string();
    let mut b = Background::node(
        "retry.js",
        &[
            "--lib",
            lib,
            "--strategy",
            strategy,
            "--port",
            &port,
            "--sources",
            &sources,
            "--seconds",
            &seconds,
        ],
    );
    b.wait_for_line("started", STARTED);
    b
}

/// A full server (30 slots, 29 held by one address) and the agent with INFO joined.
fn full_server() -> (Redis, Agent, Vec<Client>) {
    let redis = Redis::start_with(&["--maxclients", "30"]);
    pause(200); // the readiness probe's slot is freed
    let mut agent = Agent::watch(&[redis.port]);
    wait_for_info(&mut agent);
    let held = fill("127.0.0.40", redis.addr());
    assert_eq!(held.len(), 29, "30 slots, one is the agent's");
    (redis, agent, held)
}

/// ioredis with `retryStrategy: () => 250` on twenty hosts against a full server:
/// each fails about four times a second, no one address storms, together they are
/// the storm. The host verdict is a retry storm across clients, each address is
/// `no_backoff`, and maxclients is never blamed. Default thresholds.
#[test]
fn twenty_ioredis_clients_retrying_flat_are_a_storm_not_a_low_limit() {
    let _serial = serial();
    let (redis, mut agent, held) = full_server();
    let sources = fleet_sources(20);
    let mut fleet = node_fleet(redis.port, "ioredis", "flat:250", &sources, 20);

    // Named within a few seconds…
    agent.wait_for("a retry storm across the twenty clients", WAIT, |r| {
        verdict(r, "retry_storm", None).is_some_and(|v| v["addr"].is_null())
            && sources.iter().all(|s| client_verdict(r, s) == "no_backoff")
    });
    // …and looked at once its 10 s window holds only the storm.
    let started = Instant::now();
    let report = agent.wait_for("the storm 11 s on", WAIT, |_| {
        started.elapsed() >= Duration::from_secs(11)
    });
    let v = verdict(&report, "retry_storm", None).unwrap();
    assert!(v["addr"].is_null(), "{v}");
    assert_eq!(v["severity"], "critical");
    assert_eq!(ev(v, "addresses"), 20, "{v}");
    // A 250 ms wait plus the time to be turned away: each address fails once a gap,
    // and the combined rate is twenty of those.
    let gap = v["evidence"]["retry_gap_p50_ms"].as_f64().unwrap();
    assert!((250.0..300.0).contains(&gap), "{v}");
    let rate = v["evidence"]["failures_per_s"].as_f64().unwrap();
    let expected = 20.0 * 1_000.0 / gap;
    assert!(
        (rate - expected).abs() <= 0.1 * expected,
        "{rate} vs {expected}: {v}"
    );
    // Only they fail, but for the one attempt that found the server full when
    // `fill` took the last slot (127.0.0.40).
    let share = v["evidence"]["share"].as_f64().unwrap();
    assert!((0.98..=1.0).contains(&share), "{v}");
    let top = v["evidence"]["top"].as_array().unwrap();
    assert_eq!(top.len(), 5);
    for t in top {
        assert!(sources.iter().any(|s| t["addr"] == s.as_str()), "{t}");
    }
    assert_eq!(kinds(&report), set(&["retry_storm", "capacity_critical"]));
    for s in &sources {
        let retry = &client(&report, s).unwrap()["retry"];
        assert_eq!(retry["trend"], "flat", "{s}: {retry}");
        let start = retry["start_ms"].as_f64().unwrap();
        assert!((250.0..300.0).contains(&start), "{s}: {retry}");
    }

    pause(3_000);
    let (_, reports) = agent.stop();
    fleet.assert_ok();
    for r in &reports {
        assert!(!has(r, "maxclients_too_low", None), "{:?}", verdicts(r));
        // No one address storms: the per-address rule needs gaps under 100 ms.
        assert!(
            verdicts(r)
                .iter()
                .all(|(k, a)| k != "retry_storm" || a.is_none()),
            "{:?}",
            verdicts(r)
        );
    }
    drop(held);
}

/// The same twenty hosts, ioredis backing off exponentially (100 ms doubling to a
/// 2 s cap, with equal jitter): every address is `backing_off`, the limit is too
/// low, and there is no storm. Default thresholds.
#[test]
fn the_same_fleet_backing_off_means_maxclients_is_too_low() {
    let _serial = serial();
    let (redis, mut agent, held) = full_server();
    let sources = fleet_sources(20);
    let mut fleet = node_fleet(redis.port, "ioredis", "exp", &sources, 20);

    let report = agent.wait_for("maxclients_too_low, every client backing off", WAIT, |r| {
        has(r, "maxclients_too_low", None)
            && sources
                .iter()
                .all(|s| client_verdict(r, s) == "backing_off")
    });
    assert_eq!(
        kinds(&report),
        set(&["maxclients_too_low", "capacity_critical"])
    );
    pause(3_000);
    let (_, reports) = agent.stop();
    fleet.assert_ok();
    for r in &reports {
        assert!(!has(r, "retry_storm", None), "{:?}", verdicts(r));
        for s in &sources {
            assert_ne!(client_verdict(r, s), "no_backoff", "{s}");
        }
    }
    drop(held);
}

/// node-redis 4's own reconnect strategy, min(retries × 50, 500) ms: the gaps grow
/// to 500 ms in about 3 s and stay there. Flat at the cap, still `backing_off`: it
/// started at 50 ms. Default thresholds.
#[test]
fn node_redis_default_reconnect_is_backing_off_at_its_cap() {
    let _serial = serial();
    let (redis, mut agent, held) = full_server();
    let sources = fleet_sources(3);
    let mut fleet = node_fleet(redis.port, "node-redis", "default", &sources, 16);

    // Ten gaps grow, then eight or more at the cap: the latest 16 look flat.
    let report = agent.wait_for("node-redis flat at its cap, backing off", WAIT, |r| {
        sources.iter().all(|s| {
            client(r, s).is_some_and(|c| {
                c["retry"]["trend"] == "flat" && c["retry"]["gaps"].as_u64() >= Some(20)
            })
        })
    });
    for s in &sources {
        let c = client(&report, s).unwrap();
        assert_eq!(c["verdict"], "backing_off", "{c}");
        let retry = &c["retry"];
        let p50 = retry["p50_ms"].as_f64().unwrap();
        let start = retry["start_ms"].as_f64().unwrap();
        assert!((500.0..560.0).contains(&p50), "{retry}");
        assert!(start < 120.0, "{retry}");
    }
    assert!(
        has(&report, "maxclients_too_low", None),
        "{:?}",
        verdicts(&report)
    );
    let (_, reports) = agent.stop();
    fleet.assert_ok();
    for r in &reports {
        assert!(!has(r, "retry_storm", None), "{:?}", verdicts(r));
    }
    drop(held);
}

/// A slow leak beside a warm pool, on a clock ten times faster than the defaults:
/// `--leak-slow-window 6m` (1 h), `--window 6s` (60 s), `--leak-idle 3s` (30 s);
/// the counts stay at their defaults. One leaked connection a second stands for
/// six a minute, which the defaults name about 2 minutes after the first, well
/// within 5; here within 30 s. The pool (redis-py, 20 connections, 3 busy, the rest
/// idle) warmed up at once and holds: never a leak. The verdict forecasts when the
/// slots left run out at the leak's pace.
#[test]
fn a_slow_leak_beside_a_warm_pool_is_named_with_its_exhaustion() {
    let _serial = serial();
    let redis = Redis::start_with(&["--maxclients", "200"]);
    pause(200);
    let mut agent = Agent::watch_with(
        &[redis.port],
        &[
            "--leak-slow-window",
            "6m",
            "--window",
            "6s",
            "--leak-idle",
            "3s",
        ],
        &[],
    );
    wait_for_info(&mut agent);
    let port = redis.port.to_string();
    let mut warm = Background::python(
        "pool.py",
        &[
            "--port",
            &port,
            "--source",
            "127.0.0.51",
            "--size",
            "20",
            "--busy",
            "3",
            "--seconds",
            "45",
        ],
    );
    warm.wait_for_line("ready 20", STARTED);
    let mut leak = Background::python(
        "leak.py",
        &[
            "--port",
            &port,
            "--source",
            "127.0.0.50",
            "--every",
            "1",
            "--max",
            "40",
            "--seconds",
            "45",
        ],
    );
    leak.wait_for_line("started", STARTED);
    let started = Instant::now();
    let report = agent.wait_for("a slow leak of 127.0.0.50", Duration::from_secs(30), |r| {
        has(r, "leak", Some("127.0.0.50"))
    });
    let after = started.elapsed();
    // The slow rule needs a span of 12 s (6 min / 30) from the first connection.
    assert!(after >= Duration::from_secs(11), "named after {after:?}");
    assert_eq!(
        verdicts(&report),
        [("leak".to_owned(), Some("127.0.0.50".to_owned()))]
    );
    assert_eq!(client_verdict(&report, "127.0.0.51"), "healthy");
    let v = verdict(&report, "leak", Some("127.0.0.50")).unwrap();
    let growth = ev(v, "growth") as f64;
    let span = v["evidence"]["window_s"].as_f64().unwrap();
    assert!(growth >= 3.0 && span >= 12.0, "{v}");
    // About one a second, judged over the span.
    assert!((growth / span - 1.0).abs() < 0.2, "{v}");
    // The slots left at that pace.
    let used = report["capacity"]["used"].as_f64().unwrap();
    let forecast = v["evidence"]["exhaustion_in_s"].as_f64().unwrap();
    let expected = (200.0 - used) * span / growth;
    assert!(
        (forecast - expected).abs() <= 1.0,
        "{forecast} vs {expected}: {v}"
    );
    assert!(
        v["summary"]
            .as_str()
            .unwrap()
            .contains("the limit is reached in"),
        "{v}"
    );

    pause(5_000);
    let (_, reports) = agent.stop();
    warm.assert_ok();
    leak.assert_ok();
    for r in &reports {
        assert_ne!(client_verdict(r, "127.0.0.51"), "leak", "{:?}", verdicts(r));
    }
}
