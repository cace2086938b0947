//! Client mode (`--remote-port`, `--remote`): the agent on an application host
//! watches this host's own connections to Redis, per process, from the client's
//! sockets only: no listener, no INFO. Here the "remote" Redis is a real
//! redis-server on an ephemeral loopback port that the agent is *not* told about
//! as a local one, and the clients are real redis-py processes, each under a name
//! of its own, each from its own source address.

use std::time::Duration;

use connwatch_tests::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const STARTED: Duration = Duration::from_secs(10);

fn verdict<'a>(report: &'a Value, kind: &str, addr: &str) -> Option<&'a Value> {
    report["verdicts"]
        .as_array()?
        .iter()
        .find(|v| v["kind"] == kind && v["addr"] == addr)
}

fn first_process(report: &Value, addr: &str) -> Value {
    client(report, addr)
        .and_then(|r| r["processes"].get(0).cloned())
        .unwrap_or(Value::Null)
}

/// A leak fills a server whose maxclients is small, then a retry storm (redis-py)
/// and a client retrying at a fixed 250 ms (ioredis) hit the full server, and a
/// fourth process retries against a closed port: each verdict (leak, retry storm, no backoff)
/// and failure is the right process's, counted from its own sockets.
#[test]
fn a_leak_a_storm_and_refused_connects_are_each_attributed_to_their_process() {
    let _serial = serial();
    let redis = Redis::start_with(&["--maxclients", "20"]);
    pause(200); // the readiness probe's slot is freed
    let port = redis.port.to_string();
    let closed = free_port();
    let nowhere = format!("127.0.0.1:{closed}");
    let mut agent = Agent::watch_with(
        &[],
        &[
            "--remote-port",
            &port,
            "--remote",
            &nowhere,
            "--leak-idle",
            "3s",
            "--window",
            "20s",
        ],
        &[],
    );
    let names = TempDir::new("names");

    // The leak: 15 connections kept, one every 0.2 s.
    let mut leak = Background::python_named(
        &names,
        "cw-leak",
        "leak.py",
        &[
            "--port",
            &port,
            "--source",
            "127.0.0.5",
            "--every",
            "0.2",
            "--max",
            "15",
            "--seconds",
            "50",
        ],
    );
    leak.wait_for_line("started", STARTED);
    let report = agent.wait_for("a leak of 127.0.0.5", WAIT, |r| {
        verdict(r, "leak", "127.0.0.5").is_some()
    });
    assert_eq!(report["role"], "client");
    let mut ports = [redis.port, closed];
    ports.sort_unstable();
    assert_eq!(report["ports"], serde_json::json!(ports));
    assert_eq!(
        report["redis"]["status"], "disabled",
        "no INFO in client mode"
    );
    let v = verdict(&report, "leak", "127.0.0.5").unwrap();
    assert_eq!(v["evidence"]["pid"], leak.pid(), "{v}");
    assert_eq!(v["evidence"]["comm"], "cw-leak", "{v}");
    // Idle times come from the client's sockets: the oldest leaked connection
    // is idle for the threshold at least.
    assert!(v["evidence"]["idle_max_s"].as_f64().unwrap() >= 3.0, "{v}");
    let opened: Vec<String> = leak
        .lines()
        .iter()
        .filter_map(|l| l.strip_prefix("conn ").map(str::to_owned))
        .collect();
    let stale = v["stale_connections"].as_array().unwrap();
    assert_eq!(stale[0]["addr"].as_str(), Some(opened[0].as_str()), "{v}");
    assert_eq!(stale[0]["pid"], leak.pid());
    let row = client(&report, "127.0.0.5").unwrap();
    assert_eq!(
        row["processes"],
        serde_json::json!([{
            "pid": leak.pid(), "comm": "cw-leak", "container": null, "pod": null,
            "open": row["open"], "opened": row["opened"], "failed": 0,
            "failed_by": {"rejected": 0, "reset": 0, "refused": 0, "timed_out": 0, "abandoned": 0, "other": 0},
        }]),
        "{row}"
    );
    assert_eq!(row["closed"], 0, "{row}");
    assert!(row["open"].as_u64().unwrap() >= 10, "{row}");

    // Fill the rest of the server from this test's own process, once the leak
    // holds its 15.
    let deadline = std::time::Instant::now() + STARTED;
    while leak
        .lines()
        .iter()
        .filter(|l| l.starts_with("conn "))
        .count()
        < 15
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the leak's 15 connections"
        );
        pause(100);
    }
    let held = fill("127.0.0.40", redis.addr());
    assert!(
        held.len() >= 4,
        "the holders fill the server: {}",
        held.len()
    );

    // A fixed retry delay (ioredis's retryStrategy () => 250) beside it: no backoff.
    let mut flat = Background::node(
        "retry.js",
        &[
            "--lib",
            "ioredis",
            "--strategy",
            "flat:250",
            "--port",
            &port,
            "--sources",
            "127.0.0.32",
            "--seconds",
            "12",
        ],
    );
    flat.wait_for_line("started", STARTED);
    // The storm: retries at once against the full server.
    let mut storm = Background::python_named(
        &names,
        "cw-storm",
        "reconnect.py",
        &[
            "--port",
            &port,
            "--source",
            "127.0.0.31",
            "--mode",
            "storm",
            "--seconds",
            "6",
            "--max-attempts",
            "20000",
        ],
    );
    storm.wait_for_line("started", STARTED);
    let report = agent.wait_for("retry_storm for 127.0.0.31", WAIT, |r| {
        verdict(r, "retry_storm", "127.0.0.31").is_some()
    });
    let v = verdict(&report, "retry_storm", "127.0.0.31").unwrap();
    assert_eq!(v["evidence"]["pid"], storm.pid(), "{v}");
    assert_eq!(v["evidence"]["comm"], "cw-storm", "{v}");
    assert!(
        v["evidence"]["retry_gap_p50_ms"].as_f64().unwrap() < 100.0,
        "{v}"
    );
    let row = client(&report, "127.0.0.31").unwrap();
    let p = first_process(&report, "127.0.0.31");
    assert_eq!(
        (&p["pid"], &p["comm"]),
        (&storm.pid().into(), &"cw-storm".into()),
        "{row}"
    );
    // Every attempt was opened and turned away by Redis's error then its close.
    assert!(row["rejected"].as_u64().unwrap() >= 10, "{row}");
    assert_eq!(row["refused"], 0, "{row}");
    assert!(p["failed"].as_u64().unwrap() >= 10, "{row}");
    // Opened, then turned away: rejections (or resets), no failed connect.
    let by = &p["failed_by"];
    assert_eq!(
        by["rejected"].as_u64().unwrap() + by["reset"].as_u64().unwrap(),
        p["failed"].as_u64().unwrap(),
        "{row}"
    );
    assert_eq!(row.get("failed_connects"), None, "{row}");
    // The leak and the holders are not blamed for the storm.
    assert!(verdict(&report, "retry_storm", "127.0.0.5").is_none());

    let report = agent.wait_for("127.0.0.32 retrying without backoff", WAIT, |r| {
        client(r, "127.0.0.32").is_some_and(|c| c["verdict"] == "no_backoff")
    });
    let row = client(&report, "127.0.0.32").unwrap();
    let p = first_process(&report, "127.0.0.32");
    assert_eq!(p["pid"], flat.pid(), "{row}");
    assert!(p["failed"].as_u64().unwrap() >= 3, "{row}");
    assert_eq!(row["retry"]["trend"], "flat", "{row}");
    let p50 = row["retry"]["p50_ms"].as_f64().unwrap();
    assert!((250.0..400.0).contains(&p50), "{row}");
    assert!(verdict(&report, "retry_storm", "127.0.0.32").is_none());

    // Refused: nothing listens on the --remote address; 12 attempts, each a
    // RST to its SYN, no connection opened.
    let mut refused = Background::python_named(
        &names,
        "cw-refused",
        "reconnect.py",
        &[
            "--port",
            &closed.to_string(),
            "--source",
            "127.0.0.33",
            "--mode",
            "storm",
            "--seconds",
            "10",
            "--max-attempts",
            "12",
        ],
    );
    refused.wait_for_line("served 0 failed 12", WAIT);
    let report = agent.wait_for("12 refused connects from 127.0.0.33", WAIT, |r| {
        client(r, "127.0.0.33").is_some_and(|c| c["refused"].as_u64() >= Some(12))
    });
    let row = client(&report, "127.0.0.33").unwrap();
    assert_eq!(row["refused"], 12, "one connect per attempt: {row}");
    assert_eq!(
        row["processes"],
        serde_json::json!([{
            "pid": refused.pid(), "comm": "cw-refused", "container": null, "pod": null,
            "open": 0, "opened": 0, "failed": 12,
            "failed_by": {"rejected": 0, "reset": 0, "refused": 12, "timed_out": 0, "abandoned": 0, "other": 0},
        }]),
        "{row}"
    );
    assert_eq!(
        (&row["opened"], &row["rejected"]),
        (&0.into(), &0.into()),
        "{row}"
    );
    // Each a reset's refusal: none timed out, none abandoned.
    assert_eq!(
        row["failed_connects"],
        serde_json::json!({"refused": 12, "timed_out": 0, "abandoned": 0, "other": 0}),
        "{row}"
    );

    drop((storm, flat, refused, leak, held));
    let (status, reports) = agent.stop();
    assert!(status.success(), "{status}");
    assert!(reports.iter().all(|r| r["role"] == "client"));
}

/// Client mode takes no local port, no Redis URL and no password: a mix is one
/// clear line and the usage exit code; `check` refuses it.
#[test]
fn client_mode_refuses_server_side_flags() {
    for extra in [["--port", "6379"], ["--redis", "redis://127.0.0.1:6379"]] {
        for cmd in ["watch", "capture"] {
            let dir = TempDir::new("capture");
            let file = dir.0.join("x.cwcap");
            let out = std::process::Command::new(connwatch_bin())
                .args([cmd, "--remote-port", "6379"])
                .args(extra)
                .args(if cmd == "capture" { vec!["-o"] } else { vec![] })
                .args(if cmd == "capture" {
                    vec![file.clone()]
                } else {
                    vec![]
                })
                .output()
                .expect("run connwatch");
            assert_eq!(out.status.code(), Some(2), "{cmd} {extra:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("cannot be used with"), "{err}");
            assert!(!file.exists());
        }
    }
    // check is not for client mode: one line, nothing loaded.
    let out = std::process::Command::new(connwatch_bin())
        .args(["check", "--remote-port", "6379"])
        .output()
        .expect("run connwatch");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("check runs on the Redis host"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// Connections this host opened before the agent started are found at its start
/// (seeded, with their idle times) without a process: it connected before the
/// agent looked. One opened afterwards has its process.
#[test]
fn connections_open_before_the_start_are_seeded_without_a_process() {
    let _serial = serial();
    let redis = Redis::start();
    let port = redis.port.to_string();
    let mut before = Background::python(
        "pool.py",
        &[
            "--port",
            &port,
            "--source",
            "127.0.0.7",
            "--size",
            "3",
            "--busy",
            "0",
            "--seconds",
            "30",
        ],
    );
    before.wait_for_line("ready 3", STARTED);
    let mut agent = Agent::watch_with(&[], &["--remote-port", &port], &[]);
    let after = Client::connect("127.0.0.7", redis.addr());
    let report = agent.wait_for("three seeded and one opened", WAIT, |r| {
        client(r, "127.0.0.7").is_some_and(|c| c["open"] == 4 && !c["idle_s"].is_null())
    });
    let row = client(&report, "127.0.0.7").unwrap();
    assert_eq!(
        (&row["seeded"], &row["opened"]),
        (&3.into(), &1.into()),
        "{row}"
    );
    assert_eq!(
        row["processes"],
        serde_json::json!([{
            "pid": std::process::id(), "comm": row["processes"][0]["comm"], "container": null,
            "pod": null, "open": 1, "opened": 1, "failed": 0,
            "failed_by": {"rejected": 0, "reset": 0, "refused": 0, "timed_out": 0, "abandoned": 0, "other": 0},
        }]),
        "only the connection opened after the start has a process: {row}"
    );
    before.assert_ok();
    drop((after, before));
    agent.stop();
}

/// A capture of client mode says so in its header and replays as a client's: the
/// live run's leak verdict, with its pid and process name, is the replay's, in
/// JSON, in the text summary and in the HTML report.
#[test]
fn a_client_mode_capture_replays_as_the_client_it_recorded() {
    let _serial = serial();
    let redis = Redis::start();
    let port = redis.port.to_string();
    let dir = TempDir::new("client-capture");
    let file = dir.0.join("app.cwcap");
    let names = TempDir::new("names");
    let capture = std::process::Command::new(connwatch_bin())
        .args(["capture", "--remote-port", &port])
        .args([
            "--leak-idle",
            "2s",
            "--window",
            "20s",
            "--interval",
            "500ms",
        ])
        .args(["--duration", "9s", "--format", "json", "-o"])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start connwatch capture");
    pause(1500); // the probes are attached
    // The leak: 10 connections kept, one every 0.1 s, then idle.
    let mut leak = Background::python_named(
        &names,
        "cw-cap-leak",
        "leak.py",
        &[
            "--port",
            &port,
            "--source",
            "127.0.0.6",
            "--every",
            "0.1",
            "--max",
            "10",
            "--seconds",
            "30",
        ],
    );
    leak.wait_for_line("started", STARTED);
    let out = capture.wait_with_output().expect("capture ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let live = last_json(&out.stdout);
    assert_eq!(live["role"], "client", "{live}");
    let v = verdict(&live, "leak", "127.0.0.6").unwrap_or_else(|| panic!("live leak: {live}"));
    assert_eq!(
        (&v["evidence"]["pid"], &v["evidence"]["comm"]),
        (&leak.pid().into(), &"cw-cap-leak".into()),
        "{v}"
    );
    let live_row = client(&live, "127.0.0.6").unwrap().clone();
    assert_eq!(live_row["opened"], 10, "{live_row}");

    // The header says which end was recorded.
    let mut header = String::new();
    std::io::Read::read_to_string(&mut decompressed(&file), &mut header).unwrap();
    let header: Value = serde_json::from_str(header.lines().next().unwrap()).unwrap();
    assert_eq!(
        (&header["role"], &header["remote_ports"], &header["ports"]),
        (
            &"client".into(),
            &serde_json::json!([redis.port]),
            &serde_json::json!([redis.port])
        ),
        "{header}"
    );

    let analyze = |format: &str| {
        let out = std::process::Command::new(connwatch_bin())
            .args([
                "analyze",
                "--leak-idle",
                "2s",
                "--window",
                "20s",
                "--clients",
                "all",
            ])
            .arg(&file)
            .args(["--format", format])
            .output()
            .expect("run connwatch analyze");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    // JSON: the same last report, role, verdict and process.
    let replay = last_json(&analyze("json"));
    assert_eq!(replay["role"], "client", "{replay}");
    let rv = verdict(&replay, "leak", "127.0.0.6").unwrap_or_else(|| panic!("{replay}"));
    assert_eq!(
        (&rv["evidence"], &rv["summary"], &rv["stale_connections"]),
        (&v["evidence"], &v["summary"], &v["stale_connections"]),
        "{rv}"
    );
    let row = client(&replay, "127.0.0.6").unwrap();
    for k in [
        "open",
        "opened",
        "closed",
        "refused",
        "rejected",
        "processes",
        "verdict",
    ] {
        assert_eq!(row[k], live_row[k], "{k}: {row}");
    }
    // Text: the summary says client mode and names the process.
    let text = String::from_utf8(analyze("text")).unwrap();
    assert!(
        text.contains(&format!("client mode, remote ports [{}]", redis.port)),
        "{text}"
    );
    assert!(text.contains(&format!("pid {}", leak.pid())), "{text}");
    // HTML: the header says client mode, the leak names the pid.
    let html = String::from_utf8(analyze("html")).unwrap();
    assert!(html.contains("Remote port (client mode)"), "{html}");
    assert!(
        html.contains(&format!("pid {}", leak.pid())),
        "pid in the HTML"
    );
    drop(leak);
}

/// The decompressed text of a capture (gzip, read by the agent's own format).
fn decompressed(path: &std::path::Path) -> impl std::io::Read {
    let bytes = std::fs::read(path).expect("read the capture");
    flate2::read::MultiGzDecoder::new(std::io::Cursor::new(bytes))
}

/// `ip … args` in the namespace `ns`, which must succeed.
fn ip_in(ns: &NetNs, args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(["-n", &ns.name])
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip -n {} {args:?}: {}",
        ns.name,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Why a connect failed, from the socket's error as it leaves SYN_SENT. In a
/// namespace of the test's own, an application host: 10.77.0.2 is a neighbour
/// whose frames go nowhere (a veth whose peer drops them: SYNs vanish, as with a
/// blackholed or unreachable Redis host), with one SYN retry so the kernel gives
/// up after ~3 s; 10.77.0.3 never answers ARP (EHOSTUNREACH at once); nothing
/// listens on the loopback port. Each process's failures are exactly its own
/// attempts, under their cause, and only the reset ones are `refused`.
#[test]
fn failed_connects_are_told_apart_refused_timed_out_abandoned_and_other() {
    let _serial = serial();
    let ns = NetNs::new("connfail");
    ip_in(
        &ns,
        &["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
    );
    ip_in(&ns, &["addr", "add", "10.77.0.1/24", "dev", "v0"]);
    ip_in(&ns, &["link", "set", "v0", "up"]);
    ip_in(&ns, &["link", "set", "v1", "up"]);
    ip_in(
        &ns,
        &[
            "neigh",
            "add",
            "10.77.0.2",
            "lladdr",
            "02:00:00:00:00:02",
            "dev",
            "v0",
            "nud",
            "permanent",
        ],
    );
    let sysctl = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "sysctl", "-qw"])
        .args([
            "net.ipv4.tcp_syn_retries=1",
            "net.ipv4.neigh.v0.mcast_solicit=1",
            "net.ipv4.neigh.v0.retrans_time_ms=100",
        ])
        .status()
        .expect("run sysctl");
    assert!(sysctl.success(), "sysctl in {}", ns.name);
    let inode = netns_inode(&ns.path());
    let port = free_port().to_string();
    let mut agent = Agent::watch_with(&[], &["--remote-port", &port], &[]);
    let names = TempDir::new("names");
    let run = |comm: &str, host: &str, count: &str, lib: &str| {
        Background::python_named_in(
            &ns,
            &names,
            comm,
            "connect_fail.py",
            &[
                "--host",
                host,
                "--port",
                &port,
                "--count",
                count,
                "--lib",
                lib,
                "--seconds",
                "10",
            ],
        )
    };
    let mut timed_out = run("cw-timeout", "10.77.0.2", "3", "socket");
    let mut abandoned = run("cw-abandon", "10.77.0.2", "4", "redis-py");
    let mut unreachable = run("cw-unreach", "10.77.0.3", "2", "socket");
    let mut refused = run("cw-refuse", "127.0.0.1", "5", "socket");
    let done = Duration::from_secs(15);
    // Each attempt failed as the application saw it (errno, or redis-py's timeout).
    for (b, what, n) in [
        (&mut timed_out, "errno 110", 3),
        (&mut abandoned, "timeout", 4),
        (&mut unreachable, "errno 113", 2),
        (&mut refused, "errno 111", 5),
    ] {
        b.wait_for_line(&format!("done {n}"), done);
        let failed: Vec<String> = b
            .lines()
            .iter()
            .filter_map(|l| l.strip_prefix("failed ").map(str::to_owned))
            .collect();
        assert_eq!(failed, vec![what.to_owned(); n], "{}", b.pid());
    }
    let failed_of = |r: &Value, addr: &str, pid: u32| {
        client(r, addr).and_then(|c| {
            c["processes"]
                .as_array()?
                .iter()
                .find(|p| p["pid"] == pid)
                .map(|p| p["failed"].as_u64())
        })
    };
    let report = agent.wait_for_instance("every failed connect", inode, WAIT, |r| {
        failed_of(r, "10.77.0.1", timed_out.pid()) == Some(Some(3))
            && failed_of(r, "10.77.0.1", abandoned.pid()) == Some(Some(4))
            && failed_of(r, "10.77.0.1", unreachable.pid()) == Some(Some(2))
            && failed_of(r, "127.0.0.1", refused.pid()) == Some(Some(5))
    });
    assert_eq!(report["role"], "client");
    let by = |timed_out: u64, abandoned: u64, other: u64, refused: u64| {
        serde_json::json!({
            "rejected": 0, "reset": 0, "refused": refused, "timed_out": timed_out,
            "abandoned": abandoned, "other": other,
        })
    };
    let row = client(&report, "10.77.0.1").unwrap();
    let process = |pid: u32| {
        row["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pid"] == pid)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        (
            &process(timed_out.pid())["comm"],
            &process(timed_out.pid())["failed_by"]
        ),
        (&"cw-timeout".into(), &by(3, 0, 0, 0)),
        "{row}"
    );
    assert_eq!(
        process(abandoned.pid())["failed_by"],
        by(0, 4, 0, 0),
        "{row}"
    );
    assert_eq!(
        process(unreachable.pid())["failed_by"],
        by(0, 0, 2, 0),
        "{row}"
    );
    // None of them was refused: no reset answered them.
    assert_eq!(row["refused"], 0, "{row}");
    assert_eq!(
        row["failed_connects"],
        serde_json::json!({"refused": 0, "timed_out": 3, "abandoned": 4, "other": 2}),
        "{row}"
    );
    assert_eq!((&row["opened"], &row["rejected"]), (&0.into(), &0.into()));
    let row = client(&report, "127.0.0.1").unwrap();
    assert_eq!(row["refused"], 5, "{row}");
    assert_eq!(
        row["failed_connects"],
        serde_json::json!({"refused": 5, "timed_out": 0, "abandoned": 0, "other": 0}),
        "{row}"
    );
    assert_eq!(row["processes"][0]["failed_by"], by(0, 0, 0, 5), "{row}");
    assert_eq!(report["totals"]["refused"], 5, "{report}");
    drop((timed_out, abandoned, unreachable, refused));
    agent.stop();
}
