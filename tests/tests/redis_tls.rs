//! TLS, Unix sockets and ACL users for the INFO connection, against a real
//! redis-server (built with TLS), real probes and real clients; the certificates are
//! made by the test with `openssl`.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use connwatch_tests::{
    Agent, Background, Client, Redis, TempDir, TlsCerts, connwatch_bin, count, free_port, pause,
    serial,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `tests/clients/tls.py` from `source` against the TLS port.
fn tls_clients(certs: &TlsCerts, port: u16, source: &str, hold: u32, attempts: u32) -> Background {
    let path = |p: &std::path::Path| p.display().to_string();
    let args = [
        "--port".to_owned(),
        port.to_string(),
        "--seconds".to_owned(),
        "30".to_owned(),
        "--source".to_owned(),
        source.to_owned(),
        "--cacert".to_owned(),
        path(&certs.ca),
        "--cert".to_owned(),
        path(&certs.client_cert),
        "--key".to_owned(),
        path(&certs.client_key),
        "--hold".to_owned(),
        hold.to_string(),
        "--attempts".to_owned(),
        attempts.to_string(),
    ];
    Background::python("tls.py", &strs(&args))
}

#[test]
fn info_over_tls_with_the_ca_and_a_client_certificate_is_ok() {
    let _serial = serial();
    let certs = TlsCerts::make();
    // tls-auth-clients yes (Redis's default): the agent must show its certificate.
    let redis = Redis::start_tls(&certs, &[]);
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let mut args = vec!["--redis".to_owned(), url];
    args.extend(certs.agent_args());
    let mut agent = Agent::watch_with(&[redis.port], &strs(&args), &[]);
    let report = agent.wait_for("INFO over TLS", WAIT, |r| r["redis"]["status"] == "ok");
    assert_eq!(report["redis"].get("error"), None);
    assert_eq!(
        report["redis"]["target"],
        format!("127.0.0.1:{}", redis.port)
    );
    assert_eq!(report["redis"]["config"], "ok");
    assert_eq!(report["redis"]["server"], "redis");
    assert_eq!(report["capacity"]["source"], "info");
    // Only the agent is connected; its own TLS connection is not a client.
    assert_eq!(report["capacity"]["connected_clients"], 1);
    assert_eq!(report["capacity"]["unix_clients"], 0);
    assert_eq!(report["totals"]["open"], 0);
    assert_eq!(
        certs
            .redis_cli(redis.port, &["CLIENT", "LIST"])
            .map(|l| l.contains("name=connwatch")),
        Some(true),
        "the agent's connection is the one named connwatch"
    );
}

#[test]
fn a_wrong_ca_is_tls_failed_in_one_line_while_the_kernel_figures_flow() {
    let _serial = serial();
    let certs = TlsCerts::make();
    let redis = Redis::start_tls(&certs, &[]);
    // --tls with the default target (redis://127.0.0.1:<port>), and the wrong CA.
    let wrong = certs.wrong_ca.display().to_string();
    let cert = certs.client_cert.display().to_string();
    let key = certs.client_key.display().to_string();
    let args = ["--tls", "--cacert", &wrong, "--cert", &cert, "--key", &key];
    let mut agent = Agent::watch_with(&[redis.port], &args, &[]);
    let report = agent.wait_for("tls_failed", WAIT, |r| r["redis"]["status"] == "tls_failed");
    let error = format!(
        "TLS handshake failed: the server's certificate is not signed by a CA in --cacert \
         {wrong} (unknown issuer)"
    );
    assert_eq!(report["redis"]["error"], error.as_str());
    assert_eq!(report["capacity"]["source"], "kernel");
    assert!(
        agent.stderr().lines().any(|l| l.ends_with(&error)),
        "the error is one log line:\n{}",
        agent.stderr()
    );

    // Three TLS clients connect and stay: the kernel's view has them all.
    let mut clients = tls_clients(&certs, redis.port, "127.0.0.31", 3, 0);
    clients.wait_for_line("served 0 rejected 0", WAIT);
    let report = agent.wait_for("the clients in the kernel's view", WAIT, |r| {
        count(r, "127.0.0.31", "open") == 3
    });
    assert_eq!(count(&report, "127.0.0.31", "opened"), 3);
    assert_eq!(report["totals"]["open"], 3);
    assert_eq!(report["totals"]["opened"], 3);
    assert_eq!(
        report["totals"]["rejected"], 0,
        "the agent's own attempts are not counted"
    );
    assert_eq!(report["redis"]["status"], "tls_failed");
    assert_eq!(report["redis"]["error"], error.as_str());
    assert_eq!(report["capacity"]["used"], 3, "from the kernel");
}

#[test]
fn bad_certificate_files_are_one_line_usage_errors() {
    let dir = TempDir::new("bad-certs");
    let garbage = dir.0.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let missing = dir.0.join("missing.pem");
    let run = |command: &str, flags: &[&str]| {
        let out = Command::new(connwatch_bin())
            .arg(command)
            .args(flags)
            .env_remove("REDISCLI_AUTH")
            .stdin(Stdio::null())
            .output()
            .expect("run connwatch");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let missing_s = missing.display().to_string();
    let garbage_s = garbage.display().to_string();
    for (command, code, prefix) in [
        ("watch", Some(2), "connwatch: error: "),
        ("capture", Some(2), "connwatch: error: "),
        // check's own code for "could not check", as for a bad password file.
        ("check", Some(3), "connwatch: could not check: "),
    ] {
        let mut flags = vec!["--tls", "--cacert", missing_s.as_str()];
        if command == "capture" {
            flags.extend(["-o", "/nonexistent/x.cwcap"]);
        }
        let (got, stderr) = run(command, &flags);
        assert_eq!(got, code, "{command}: {stderr}");
        assert_eq!(
            stderr,
            format!("{prefix}--cacert {missing_s}: no such file\n")
        );
    }
    let (code, stderr) = run(
        "watch",
        &["--redis", "rediss://127.0.0.1:1", "--cacert", &garbage_s],
    );
    assert_eq!(code, Some(2));
    assert_eq!(
        stderr,
        format!("connwatch: error: --cacert {garbage_s}: no PEM certificate in it\n")
    );
    let (code, stderr) = run("watch", &["--cacert", &garbage_s]);
    assert_eq!(code, Some(2));
    assert_eq!(
        stderr,
        "connwatch: error: --cacert needs TLS: give --tls or a rediss:// URL\n"
    );
}

#[test]
fn rejections_on_the_tls_port_have_reason_tls_and_match_info() {
    let _serial = serial();
    let certs = TlsCerts::make();
    let redis = Redis::start_tls(&certs, &["--maxclients", "5"]);
    pause(200); // the readiness probe's slot is freed
    let mut args = vec![
        "--redis".to_owned(),
        format!("rediss://127.0.0.1:{}", redis.port),
    ];
    args.extend(certs.agent_args());
    let mut agent = Agent::watch_with(&[redis.port], &strs(&args), &[]);
    // The first poll asks CONFIG GET tls-port: from then on the port is a TLS port.
    agent.wait_for("INFO joined", WAIT, |r| r["redis"]["status"] == "ok");

    // The agent holds one slot, four TLS clients the rest; six more are turned away.
    let mut clients = tls_clients(&certs, redis.port, "127.0.0.32", 4, 6);
    clients.wait_for_line("served 0 rejected 6", WAIT);
    let report = agent.wait_for("6 rejections seen and counted by INFO", WAIT, |r| {
        r["totals"]["rejected"] == 6 && r["redis"]["rejected_connections_delta"] == 6
    });
    let by_reason = &report["totals"]["rejected_by_reason"];
    assert_eq!(by_reason["tls"], 6, "{by_reason}");
    assert_eq!(by_reason["maxclients"], 0);
    assert_eq!(by_reason["protected_mode"], 0);
    assert_eq!(by_reason["unknown"], 0);
    assert_eq!(count(&report, "127.0.0.32", "rejected"), 6);
    assert_eq!(count(&report, "127.0.0.32", "open"), 4);
    assert_eq!(count(&report, "127.0.0.32", "opened"), 10);
    assert_eq!(report["limits"]["maxclients"], 5);
    assert_eq!(report["capacity"]["used"], 5);
    assert_eq!(report["capacity"]["ratio"], 1.0);
}

/// One connection over the Unix socket, its PING answered.
fn unix_client(path: &std::path::Path) -> UnixStream {
    let mut s = UnixStream::connect(path).expect("connect to the unix socket");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"PING\r\n").expect("PING");
    let mut reply = [0u8; 7];
    s.read_exact(&mut reply).expect("+PONG");
    assert_eq!(&reply, b"+PONG\r\n");
    s
}

/// The agent's `/metrics` text.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    text
}

#[test]
fn clients_on_the_unix_socket_are_capacity_unix_clients() {
    let _serial = serial();
    let dir = TempDir::new("unix");
    let socket = dir.0.join("redis.sock");
    let socket_s = socket.display().to_string();
    let redis = Redis::start_with(&["--unixsocket", &socket_s, "--unixsocketperm", "777"]);
    let mut unix: Vec<UnixStream> = (0..4).map(|_| unix_client(&socket)).collect();
    let _tcp = Client::many("127.0.0.33", redis.addr(), 3);

    // The agent itself asks INFO over the Unix socket.
    let metrics = SocketAddr::new([127, 0, 0, 1].into(), free_port());
    let url = format!("unix://{socket_s}");
    let flag = metrics.to_string();
    let args = ["--redis", url.as_str(), "--metrics", flag.as_str()];
    let mut agent = Agent::watch_with(&[redis.port], &args, &[]);
    let report = agent.wait_for("4 clients over the unix socket", WAIT, |r| {
        r["capacity"]["unix_clients"] == 4 && count(r, "127.0.0.33", "open") == 3
    });
    assert_eq!(report["redis"]["status"], "ok");
    assert_eq!(report["redis"].get("target"), None, "no TCP address");
    // 4 over the socket, 3 over TCP, and the agent (over the socket too).
    assert_eq!(report["capacity"]["connected_clients"], 8);
    assert_eq!(report["totals"]["open"], 3);
    let text = scrape(metrics);
    assert!(
        text.lines()
            .any(|l| l == "connwatch_capacity_unix_clients 4"),
        "{text}"
    );

    // Two leave: exactly two remain.
    unix.truncate(2);
    let report = agent.wait_for("2 clients over the unix socket", WAIT, |r| {
        r["capacity"]["unix_clients"] == 2
    });
    assert_eq!(report["capacity"]["connected_clients"], 6);
    drop(agent);

    // `check` says it too, asking over TCP this time.
    let out = Command::new(connwatch_bin())
        .args(["check", "--format", "text", "--sample", "2s"])
        .args(["--port", &redis.port.to_string()])
        .env_remove("REDISCLI_AUTH")
        .stdin(Stdio::null())
        .output()
        .expect("run connwatch check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(
            "  unix socket       2 clients hold slots over the Unix socket (not in the \
             kernel's TCP view)\n"
        ),
        "{stdout}"
    );
}

/// An ACL user `name` with password `s3cret` and `rules`, as redis-server arguments.
fn acl_user<'a>(name: &'a str, rules: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--user", name, "on", ">s3cret"];
    args.extend_from_slice(rules);
    args
}

fn agent_as(redis: &Redis, user: &str) -> Agent {
    let url = format!("redis://{user}@127.0.0.1:{}", redis.port);
    Agent::watch_with(
        &[redis.port],
        &["--redis", &url],
        &[("REDISCLI_AUTH", "s3cret")],
    )
}

#[test]
fn acl_users_with_and_without_the_needed_permissions() {
    let _serial = serial();
    let mut args = acl_user("watcher", &["+info", "+config|get", "+client|setname"]);
    args.extend(acl_user("infoonly", &["+info"]));
    args.extend(acl_user("pinger", &["+ping"]));
    let redis = Redis::start_with(&args);
    let rule = "+info +config|get +client|setname";

    // The rule connwatch names is enough.
    let mut agent = agent_as(&redis, "watcher");
    let report = agent.wait_for("ok as watcher", WAIT, |r| r["redis"]["status"] == "ok");
    assert_eq!(report["redis"]["config"], "ok");
    assert_eq!(report["capacity"]["source"], "info");
    assert_eq!(report["limits"]["maxclients"], 10000);
    drop(agent);

    // No INFO at all: noperm, the rule in the report and on stderr, kernel figures.
    let mut agent = agent_as(&redis, "pinger");
    let report = agent.wait_for("noperm as pinger", WAIT, |r| {
        r["redis"]["status"] == "noperm"
    });
    let error = format!(
        "INFO: NOPERM this user has no permissions to run the 'info' command; grant user \
         pinger what connwatch sends: ACL SETUSER pinger {rule}"
    );
    assert_eq!(report["redis"]["error"], error.as_str());
    assert_eq!(report["capacity"]["source"], "kernel");
    assert_eq!(report["redis"].get("version"), None, "unknown, not stale");
    assert!(
        agent.stderr().lines().any(|l| l.ends_with(&error)),
        "{}",
        agent.stderr()
    );
    drop(agent);

    // INFO but no CONFIG GET: noperm too, and INFO's figures still count.
    let mut agent = agent_as(&redis, "infoonly");
    let report = agent.wait_for("noperm as infoonly", WAIT, |r| {
        r["redis"]["status"] == "noperm"
    });
    let error = format!(
        "CONFIG GET: NOPERM this user has no permissions to run the 'config|get' command; \
         grant user infoonly what connwatch sends: ACL SETUSER infoonly {rule}"
    );
    assert_eq!(report["redis"]["error"], error.as_str());
    assert_eq!(report["redis"]["config"], "unavailable");
    assert_eq!(report["capacity"]["source"], "info");
    assert_eq!(report["capacity"]["connected_clients"], 1);
    assert_eq!(report["limits"]["maxclients"], 10000, "from INFO");
    assert!(
        agent.stderr().lines().any(|l| l.ends_with(&error)),
        "{}",
        agent.stderr()
    );
}

#[test]
fn check_and_the_report_agree_on_the_tls_status() {
    // The JSON `check` line carries the same report, status included.
    let _serial = serial();
    let certs = TlsCerts::make();
    let redis = Redis::start_tls(&certs, &[]);
    let mut flags = vec![
        "check".to_owned(),
        "--format".to_owned(),
        "json".to_owned(),
        "--sample".to_owned(),
        "2s".to_owned(),
        "--port".to_owned(),
        redis.port.to_string(),
        "--tls".to_owned(),
    ];
    flags.extend(certs.agent_args());
    let out = Command::new(connwatch_bin())
        .args(&flags)
        .env_remove("REDISCLI_AUTH")
        .stdin(Stdio::null())
        .output()
        .expect("run connwatch check");
    let line: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(line["report"]["redis"]["status"], "ok", "{line}");
    assert_eq!(line["report"]["capacity"]["unix_clients"], 0);
    assert_eq!(line["exit_code"], 0);
}
