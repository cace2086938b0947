//! `connwatch watch` against a real redis-server, with real probes and real clients
//! from distinct 127.0.0.x addresses. Counts must be exact.

use std::time::Duration;

use connwatch_tests::{Agent, Client, Redis, client, connwatch_bin, count, pause, serial};

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn counts_open_connections_per_address_exactly() {
    let _serial = serial();
    let redis = Redis::start();
    let mut agent = Agent::watch(&[redis.port]);

    let _a = Client::many("127.0.0.2", redis.addr(), 5);
    let _b = Client::many("127.0.0.3", redis.addr(), 10);
    let _c = Client::many("127.0.0.4", redis.addr(), 15);

    let report = agent.wait_for("open counts 5/10/15", WAIT, |r| {
        count(r, "127.0.0.2", "open") == 5
            && count(r, "127.0.0.3", "open") == 10
            && count(r, "127.0.0.4", "open") == 15
    });
    for (addr, n) in [("127.0.0.2", 5), ("127.0.0.3", 10), ("127.0.0.4", 15)] {
        assert_eq!(count(&report, addr, "opened"), n, "{addr} opened");
        assert_eq!(count(&report, addr, "closed"), 0, "{addr} closed");
        assert_eq!(count(&report, addr, "seeded"), 0, "{addr} seeded");
    }
    // The three busiest addresses come first, worst first.
    let order: Vec<&str> = report["clients"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["addr"].as_str())
        .collect();
    assert_eq!(&order[..3], ["127.0.0.4", "127.0.0.3", "127.0.0.2"]);
    assert_eq!(report["ports"], serde_json::json!([redis.port]));
    assert_eq!(report["totals"]["lost_events"], 0);

    let (status, reports) = agent.stop();
    assert!(
        status.success(),
        "SIGTERM ends connwatch with 0, got {status}"
    );
    assert!(!reports.is_empty());
}

#[test]
fn short_connections_are_opened_and_closed_with_plausible_lifetimes() {
    let _serial = serial();
    let redis = Redis::start();
    let mut agent = Agent::watch(&[redis.port]);
    let _holders = Client::many("127.0.0.6", redis.addr(), 3);

    for _ in 0..200 {
        let c = Client::connect("127.0.0.5", redis.addr());
        c.close();
    }

    let report = agent.wait_for("200 opened and closed", WAIT, |r| {
        count(r, "127.0.0.5", "closed") == 200
    });
    let churner = client(&report, "127.0.0.5").unwrap();
    assert_eq!(churner["opened"], 200);
    assert_eq!(churner["closed"], 200);
    assert_eq!(churner["closed_by_client"], 200);
    assert_eq!(churner["closed_by_server"], 0);
    assert_eq!(churner["reset"], 0);
    assert_eq!(churner["open"], 0);
    // Each connection lived one PING round trip on loopback: well under a second.
    let life = &churner["lifetime_ms"];
    let p50 = life["p50"].as_f64().unwrap();
    let max = life["max"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 < 1000.0, "p50 {p50} ms");
    assert!(max >= p50 && max < 2000.0, "max {max} ms");
    // Each connection sent a PING (14 bytes) and got +PONG (7 bytes).
    assert_eq!(churner["bytes_in"], 200 * 14);
    assert_eq!(churner["bytes_out"], 200 * 7);

    // The holders are unaffected.
    assert_eq!(count(&report, "127.0.0.6", "open"), 3);
    assert_eq!(count(&report, "127.0.0.6", "closed"), 0);
}

#[test]
fn tells_client_closes_server_closes_and_resets_apart() {
    let _serial = serial();
    let redis = Redis::start();
    let mut agent = Agent::watch(&[redis.port]);

    for c in Client::many("127.0.0.7", redis.addr(), 20) {
        c.close();
    }
    for c in Client::many("127.0.0.8", redis.addr(), 15) {
        c.quit();
    }
    for c in Client::many("127.0.0.9", redis.addr(), 10) {
        c.reset();
    }

    let report = agent.wait_for("45 closes", WAIT, |r| {
        count(r, "127.0.0.7", "closed") == 20
            && count(r, "127.0.0.8", "closed") == 15
            && count(r, "127.0.0.9", "closed") == 10
    });
    let triple = |addr| {
        (
            count(&report, addr, "closed_by_client"),
            count(&report, addr, "closed_by_server"),
            count(&report, addr, "reset"),
        )
    };
    assert_eq!(triple("127.0.0.7"), (20, 0, 0));
    assert_eq!(triple("127.0.0.8"), (0, 15, 0));
    assert_eq!(triple("127.0.0.9"), (0, 0, 10));
    assert_eq!(report["totals"]["closed_by_client"], 20);
    assert_eq!(report["totals"]["closed_by_server"], 15);
    assert_eq!(report["totals"]["reset"], 10);
}

#[test]
fn reports_connections_that_existed_before_the_agent_started() {
    let _serial = serial();
    let redis = Redis::start();
    let old = Client::many("127.0.0.10", redis.addr(), 7);
    pause(1500); // they sit idle before the agent starts

    let mut agent = Agent::watch(&[redis.port]);
    let report = agent.wait_for("7 seeded", WAIT, |r| count(r, "127.0.0.10", "open") == 7);
    let c = client(&report, "127.0.0.10").unwrap();
    assert_eq!(c["seeded"], 7);
    assert_eq!(c["opened"], 0, "they were not opened while we watched");
    assert_eq!(c["age_s"]["lower_bound"], true);
    let idle_max = c["idle_s"]["max"].as_f64().unwrap();
    assert!(
        idle_max >= 1.4,
        "idle {idle_max}s must include the 1.5 s before the agent started"
    );

    for cl in old {
        cl.close();
    }
    let report = agent.wait_for("7 closed", WAIT, |r| count(r, "127.0.0.10", "closed") == 7);
    assert_eq!(count(&report, "127.0.0.10", "open"), 0);
    assert_eq!(count(&report, "127.0.0.10", "closed_by_client"), 7);
}

#[test]
fn observes_a_listener_on_ipv6_loopback() {
    let _serial = serial();
    let redis = Redis::start();
    let mut agent = Agent::watch(&[redis.port]);
    let server6 = std::net::SocketAddr::new("::1".parse().unwrap(), redis.port);
    let held = Client::many("::1", server6, 4);
    let _v4 = Client::many("127.0.0.11", redis.addr(), 2);

    let report = agent.wait_for("4 over ::1", WAIT, |r| {
        count(r, "::1", "open") == 4 && count(r, "127.0.0.11", "open") == 2
    });
    assert_eq!(count(&report, "::1", "opened"), 4);
    for c in held {
        c.close();
    }
    agent.wait_for("::1 closed", WAIT, |r| {
        count(r, "::1", "closed") == 4 && count(r, "::1", "open") == 0
    });
}

#[test]
fn ignores_connections_to_other_ports() {
    let _serial = serial();
    let watched = Redis::start();
    let other = Redis::start();
    let mut agent = Agent::watch(&[watched.port]);

    let _elsewhere = Client::many("127.0.0.12", other.addr(), 6);
    let _here = Client::many("127.0.0.13", watched.addr(), 2);
    for _ in 0..20 {
        Client::connect("127.0.0.12", other.addr()).close();
    }

    let report = agent.wait_for("2 on the watched port", WAIT, |r| {
        count(r, "127.0.0.13", "open") == 2
    });
    pause(600); // a few more intervals: nothing from the other port may show up
    let report = agent.latest().unwrap_or(report);
    assert!(
        client(&report, "127.0.0.12").is_none(),
        "127.0.0.12 only talked to another port"
    );
    assert_eq!(report["totals"]["open"], 2);
    assert_eq!(report["totals"]["opened"], 2);
}

#[test]
fn duration_stops_the_agent_with_a_final_report() {
    let _serial = serial();
    let redis = Redis::start();
    let out = std::process::Command::new(connwatch_bin())
        .args([
            "watch",
            "--format",
            "json",
            "--interval",
            "10s",
            "--duration",
            "1s",
            "--port",
        ])
        .arg(redis.port.to_string())
        .output()
        .expect("run connwatch");
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "one final report before the first 10 s interval"
    );
    let report: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(report["type"], "report");
}

#[test]
fn bad_usage_and_missing_privileges_are_one_clear_line() {
    let _serial = serial();
    let bad = std::process::Command::new(connwatch_bin())
        .args(["watch", "--interval", "soon"])
        .output()
        .expect("run connwatch");
    assert_eq!(bad.status.code(), Some(2));

    // As an unprivileged user: exit 3 and one line naming what is missing.
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(connwatch_bin())
        .args(["watch", "--duration", "1s", "--format", "json"])
        .output()
        .expect("run setpriv (util-linux)");
    assert_eq!(
        out.status.code(),
        Some(3),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("needs root"), "{stderr}");
}

#[test]
fn sighup_reopens_the_output_file_for_logrotate() {
    let _serial = serial();
    let redis = Redis::start();
    let dir = connwatch_tests::TempDir::new("rotate");
    let file = dir.0.join("connwatch.ndjson");
    let rotated = dir.0.join("connwatch.ndjson.1");
    let mut child = std::process::Command::new(connwatch_bin())
        .args([
            "watch",
            "--no-redis",
            "--interval",
            "100ms",
            "--port",
            &redis.port.to_string(),
            "-o",
        ])
        .arg(&file)
        .spawn()
        .expect("start connwatch");
    let lines = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + WAIT;
    while lines(&file) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "no reports in {}",
            file.display()
        );
        pause(50);
    }
    std::fs::rename(&file, &rotated).unwrap();
    // SAFETY: a pid we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    while lines(&file) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no reports after SIGHUP"
        );
        pause(50);
    }
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    for path in [&rotated, &file] {
        let text = std::fs::read_to_string(path).unwrap();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["type"], "report");
        }
        // Each file can be read alone: its first report holds every client row.
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["clients_mode"], "full", "{}", path.display());
    }
}
