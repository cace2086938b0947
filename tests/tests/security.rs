//! The Redis password never leaves the agent: not in its command line, not in its
//! logs (even at trace level, even when Redis refuses it), not in a report, not in
//! a capture file, not in the Prometheus text. A password in a `--redis` URL is
//! refused without being echoed. Captures are 0600; the metrics endpoint has no
//! default address. Once its programs are attached the agent keeps only the
//! capabilities it still uses. Real agent, real redis-server with `--requirepass`.

use std::io::Read as _;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use connwatch_tests::prometheus::try_get;
use connwatch_tests::{Agent, Client, Redis, TempDir, connwatch_bin, free_port, pause, serial};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);
/// Distinctive, so a match is never a coincidence.
const PASSWORD: &str = "Zq7-s3cret-pw-9Xv";
const WRONG: &str = "Wk4-wr0ng-pw-2Hj";

/// The agent's command line, as every user of the host can read it.
fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).expect("read /proc/PID/cmdline");
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

/// A password file readable by its owner only.
fn password_file(dir: &TempDir, password: &str) -> String {
    let path = dir.0.join("redis-password");
    std::fs::write(&path, format!("{password}\n")).expect("write the password file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod 0600");
    path.to_str().expect("UTF-8 path").to_owned()
}

/// Panics, naming where, if `password` occurs in `text`.
fn assert_absent(text: &str, password: &str, place: &str) {
    assert!(
        !text.contains(password),
        "the password shows in {place}:\n{text}"
    );
}

/// Redis with `--requirepass PASSWORD` and three authenticated clients.
fn protected_redis() -> (Redis, Vec<Client>) {
    let redis = Redis::start_with(&["--requirepass", PASSWORD]);
    let clients = Client::many_authed("127.0.0.60", redis.addr(), 3, PASSWORD);
    (redis, clients)
}

#[test]
fn password_from_a_file_is_in_no_argv_log_or_report() {
    let _serial = serial();
    let (redis, _clients) = protected_redis();
    let dir = TempDir::new("sec-file");
    let file = password_file(&dir, PASSWORD);
    let mut agent = Agent::watch_with(&[redis.port], &["-vv", "--password-file", &file], &[]);
    let report = agent.wait_for("INFO with the password", WAIT, |r| {
        r["redis"]["status"] == "ok" && r["totals"]["open"] == 3
    });
    assert_eq!(report["redis"]["status"], "ok");

    let argv = cmdline(agent.pid());
    assert!(argv.contains("--password-file"), "{argv}");
    assert_absent(&argv, PASSWORD, "the command line");
    pause(600); // a few more intervals of trace logs and reports
    let stderr = agent.stderr();
    assert!(
        stderr.contains("TRACE") || stderr.contains("DEBUG"),
        "-vv logs at debug level and below:\n{stderr}"
    );
    assert_absent(&stderr, PASSWORD, "the -vv log");
    let (_, reports) = agent.stop();
    assert!(reports.len() >= 2);
    for r in &reports {
        assert_absent(&r.to_string(), PASSWORD, "a report line");
    }
}

#[test]
fn password_from_rediscli_auth_is_in_no_argv_log_or_report() {
    let _serial = serial();
    let (redis, _clients) = protected_redis();
    let mut agent = Agent::watch_with(&[redis.port], &["-vv"], &[("REDISCLI_AUTH", PASSWORD)]);
    agent.wait_for("INFO with the password", WAIT, |r| {
        r["redis"]["status"] == "ok" && r["totals"]["open"] == 3
    });
    assert_absent(&cmdline(agent.pid()), PASSWORD, "the command line");
    pause(600);
    assert_absent(&agent.stderr(), PASSWORD, "the -vv log");
    let (_, reports) = agent.stop();
    for r in &reports {
        assert_absent(&r.to_string(), PASSWORD, "a report line");
    }
}

#[test]
fn a_wrong_password_is_in_no_log_or_report_while_redis_refuses_it() {
    let _serial = serial();
    let (redis, _clients) = protected_redis();
    let dir = TempDir::new("sec-wrong");
    let file = password_file(&dir, WRONG);
    let mut agent = Agent::watch_with(&[redis.port], &["-vv", "--password-file", &file], &[]);
    let report = agent.wait_for("auth_failed", WAIT, |r| {
        r["redis"]["status"] == "auth_failed"
    });
    let error = report["redis"]["error"].as_str().expect("an error text");
    assert!(error.starts_with("AUTH failed: WRONGPASS"), "{error}");
    // Retries with backoff go on; let a few happen.
    pause(1500);
    let stderr = agent.stderr();
    let (_, reports) = agent.stop();
    for secret in [WRONG, PASSWORD] {
        assert_absent(&stderr, secret, "the -vv log");
        for r in &reports {
            assert_absent(&r.to_string(), secret, "a report line");
        }
    }
}

/// Inflates a (possibly multi-member) gzip file.
fn gunzip(path: &std::path::Path) -> String {
    let gz = std::fs::read(path).expect("read the capture");
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .expect("the capture inflates");
    text
}

#[test]
fn a_capture_holds_no_password_and_is_private() {
    let _serial = serial();
    let (redis, _clients) = protected_redis();
    let dir = TempDir::new("sec-capture");
    let file = password_file(&dir, PASSWORD);
    let capture = dir.0.join("incident.cwcap");
    let out = Command::new(connwatch_bin())
        .args([
            "capture",
            "-p",
            &redis.port.to_string(),
            "--password-file",
            &file,
        ])
        .args([
            "--interval",
            "200ms",
            "--duration",
            "2s",
            "--format",
            "json",
        ])
        .arg("-o")
        .arg(&capture)
        .env_remove("REDISCLI_AUTH")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run connwatch capture");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_absent(&stderr, PASSWORD, "capture's log");
    assert_absent(
        &String::from_utf8_lossy(&out.stdout),
        PASSWORD,
        "capture's summary",
    );

    assert_eq!(
        std::fs::metadata(&capture)
            .expect("the capture exists")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let text = gunzip(&capture);
    // The capture did talk to Redis with the password: INFO is in it.
    let redis_ok = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .any(|ev| ev["ev"] == "redis" && ev["snapshot"]["status"] == "ok");
    assert!(redis_ok, "no successful INFO in the capture:\n{text}");
    assert_absent(&text, PASSWORD, "the decompressed capture");
    // Nor in the raw (compressed) bytes, stored blocks included.
    let raw = std::fs::read(&capture).unwrap();
    assert!(
        !raw.windows(PASSWORD.len())
            .any(|w| w == PASSWORD.as_bytes()),
        "the password shows in the raw capture file"
    );
}

/// The local addresses of the TCP listeners on `port`, from /proc/net/tcp{,6}.
fn listeners(port: u16) -> Vec<String> {
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (ip, p) = cols[1].split_once(':').unwrap();
            if cols[3] == "0A" && u16::from_str_radix(p, 16).unwrap() == port {
                found.push(ip.to_owned());
            }
        }
    }
    found
}

#[test]
fn the_metrics_text_holds_no_password_and_listens_where_told_only() {
    let _serial = serial();
    let (redis, _clients) = protected_redis();
    let dir = TempDir::new("sec-metrics");
    let file = password_file(&dir, PASSWORD);
    let metrics: SocketAddr = SocketAddr::new([127, 0, 0, 1].into(), free_port());
    let mut agent = Agent::watch_with(
        &[redis.port],
        &["--password-file", &file, "--metrics", &metrics.to_string()],
        &[],
    );
    agent.wait_for("INFO with the password", WAIT, |r| {
        r["redis"]["status"] == "ok"
    });
    let deadline = Instant::now() + WAIT;
    let body = loop {
        if let Some((200, _, body)) = try_get(metrics, "/metrics")
            && body.contains("connwatch_")
        {
            break body;
        }
        assert!(Instant::now() < deadline, "no /metrics at {metrics}");
        pause(100);
    };
    assert_absent(&body, PASSWORD, "the Prometheus text");
    // Bound to 127.0.0.1 exactly, as told: one listener, in /proc/net/tcp's
    // little-endian hex.
    assert_eq!(listeners(metrics.port()), vec!["0100007F".to_owned()]);
}

/// Runs connwatch to completion with no password in its environment.
fn run(args: &[&str]) -> Output {
    Command::new(connwatch_bin())
        .args(args)
        .env_remove("REDISCLI_AUTH")
        .output()
        .expect("run connwatch")
}

#[test]
fn a_password_in_the_url_is_refused_without_being_echoed() {
    const REFUSAL: &str = "a password in the Redis URL is not accepted: command lines are \
                           visible to every user of the host; give it with --password-file \
                           FILE or the REDISCLI_AUTH environment variable\n";
    // Refused while the arguments are read: nothing listens on this port, nothing
    // is loaded.
    let port = free_port().to_string();
    for url in [
        format!("redis://:{PASSWORD}@127.0.0.1:{port}"),
        format!("redis://default:{PASSWORD}@127.0.0.1:{port}"),
        format!("redis://default:{PASSWORD}@127.0.0.1:{port}/0"),
        format!("REDIS://:{PASSWORD}@[::1]:{port}"),
    ] {
        for (cmd, code, prefix) in [
            ("watch", 2, "connwatch: error: "),
            ("capture", 2, "connwatch: error: "),
            // `check` keeps its own exit codes: 3 is "could not check".
            ("check", 3, "connwatch: could not check: "),
        ] {
            let mut args = vec![cmd, "-p", &port, "--redis", &url];
            if cmd == "capture" {
                args.extend(["-o", "/nonexistent/never-created.cwcap"]);
            }
            let out = run(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(code), "{cmd} {url}: {stderr}");
            assert_eq!(stderr, format!("{prefix}{REFUSAL}"), "{cmd} {url}");
            assert!(out.stdout.is_empty(), "{cmd} {url}");
        }
    }
}

/// A raw `/` in the password makes the parser take the rest for a path, and its
/// error quotes that path: the end of the password. (RFC 3986 wants `/` in a
/// userinfo percent-encoded, but a secret must not be echoed even from a
/// malformed URL.)
#[test]
fn a_password_with_a_slash_in_the_url_is_refused_without_being_echoed() {
    let tail = "Zq7-s3cret-tail";
    for url in [
        format!("redis://:ab/{tail}@127.0.0.1:6379"),
        format!("redis://user:{tail}/x@127.0.0.1:6379"),
        // A forgotten '@host': the password lands where the port goes.
        format!("redis://default:{tail}"),
    ] {
        let out = run(&["watch", "-p", "6379", "--redis", &url]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {stderr}");
        assert_absent(&stderr, tail, "the URL error");
        assert_absent(&stderr, "/x@", "the URL error");
    }
}

#[test]
fn metrics_need_an_explicit_address_and_the_help_says_loopback() {
    let out = run(&["watch", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let section: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("--metrics <ADDR>"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    let text = section.join(" ");
    assert!(
        text.contains("e.g. 127.0.0.1:9187")
            && text.contains(
                "Give a loopback address unless the metrics must be reachable from other hosts"
            ),
        "--metrics help: {text}"
    );
    assert!(!text.contains("[default"), "no default address: {text}");

    // The flag needs its value: there is no address to fall back on.
    let out = run(&["watch", "-p", "6379", "--metrics"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .starts_with("error: a value is required for '--metrics <ADDR>' but none was supplied"),
        "{stderr}"
    );
    // A host name is not an address either (nothing is resolved to decide where to listen).
    let out = run(&["watch", "-p", "6379", "--metrics", "localhost:9187"]);
    assert_eq!(out.status.code(), Some(2));
}

/// A `Cap…:` mask of /proc/PID/status.
fn cap_mask(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"));
    u64::from_str_radix(hex.trim(), 16).expect("a hex mask")
}

#[test]
fn once_attached_the_agent_keeps_only_the_capabilities_it_still_needs() {
    let _serial = serial();
    let redis = Redis::start();
    // Watching every network namespace (the default), it keeps CAP_SYS_ADMIN (21)
    // besides, for entering containers' namespaces.
    let every = Agent::watch(&[redis.port]);
    let with_setns = (1u64 << 2) | (1u64 << 19) | (1u64 << 21);
    assert_eq!(
        cap_mask(every.pid(), "CapEff"),
        with_setns,
        "effective, every namespace"
    );
    assert_eq!(
        cap_mask(every.pid(), "CapPrm"),
        with_setns,
        "permitted, every namespace"
    );
    drop(every);
    // The host's namespace only: not even that.
    let mut agent = Agent::watch_with(&[redis.port], &["--netns", "/proc/self/ns/net"], &[]);
    agent.wait_for("INFO joined", WAIT, |r| r["redis"]["status"] == "ok");
    // CAP_DAC_READ_SEARCH (2) and CAP_SYS_PTRACE (19): Redis's /proc entries.
    let kept = (1u64 << 2) | (1u64 << 19);
    let pid = agent.pid();
    assert_eq!(cap_mask(pid, "CapEff"), kept, "effective");
    assert_eq!(cap_mask(pid, "CapPrm"), kept, "permitted");
    assert_eq!(cap_mask(pid, "CapAmb"), 0, "ambient");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    // Every thread, the Redis poller's included.
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid: u32 = task.unwrap().file_name().to_str().unwrap().parse().unwrap();
        let eff = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
        assert!(
            eff.contains("CapEff:\t0000000000080004"),
            "thread {tid}: {eff}"
        );
    }

    // And it still does its work: new connections, Redis's fd count from /proc,
    // the listener pid (whose failed accepts are counted) through its maps.
    let _clients = Client::many("127.0.0.4", redis.addr(), 3);
    let report = agent.wait_for("three connections and the fd count", WAIT, |r| {
        r["totals"]["open"] == 3 && r["limits"]["open_fds"].as_u64().is_some_and(|n| n >= 4)
    });
    assert_eq!(report["limits"]["pid"], redis.pid());
    let (status, _) = agent.stop();
    assert!(status.success(), "{status}");
}
