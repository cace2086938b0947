//! `connwatch capture` and `connwatch analyze`: a replay reaches the same counts and
//! verdicts as the live run that recorded it; damaged files are clear errors.

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output, Stdio};

use connwatch_tests::{Attempt, Client, Redis, TempDir, connwatch_bin, last_json, pause, serial};
use serde_json::Value;

fn run(args: &[&str]) -> Output {
    Command::new(connwatch_bin())
        .args(args)
        .output()
        .expect("run connwatch")
}

/// `connwatch capture -p PORT ARGS… -o FILE`, its output piped.
fn spawn_capture(port: u16, args: &[&str], file: &std::path::Path) -> std::process::Child {
    Command::new(connwatch_bin())
        .args(["capture", "-p", &port.to_string()])
        .args(args)
        .arg("-o")
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start connwatch capture")
}

/// What must survive a replay: per-client counts and verdicts, host verdicts, totals.
fn conclusions(report: &Value) -> Value {
    let clients: Vec<Value> = report["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            // The capture's own stream writes rows sparse: whole again.
            let c = connwatch_tests::densify(c);
            let pick = |k: &str| c[k].clone();
            serde_json::json!({
                "addr": pick("addr"), "open": pick("open"), "opened": pick("opened"),
                "closed": pick("closed"), "closed_by_server": pick("closed_by_server"),
                "closed_by_client": pick("closed_by_client"), "reset": pick("reset"),
                "rejected": pick("rejected"), "refused": pick("refused"), "verdict": pick("verdict"),
                "bytes_in": pick("bytes_in"), "bytes_out": pick("bytes_out"),
                "processes": pick("processes"), "processes_other": pick("processes_other"),
            })
        })
        .collect();
    let verdicts: Vec<Value> = report["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| serde_json::json!({"kind": v["kind"], "severity": v["severity"], "addr": v["addr"], "summary": v["summary"]}))
        .collect();
    serde_json::json!({"clients": clients, "verdicts": verdicts, "totals": report["totals"], "capacity": report["capacity"]})
}

/// Holders fill a small server, one address storms it, another churns.
fn traffic(redis: &Redis) -> Vec<Client> {
    let mut held = Client::many("127.0.0.50", redis.addr(), 18);
    for _ in 0..60 {
        match Client::attempt("127.0.0.51", redis.addr()) {
            Attempt::Served(c) => held.push(c),
            Attempt::Rejected => {}
            Attempt::Refused => panic!("redis is down"),
        }
    }
    held
}

#[test]
fn a_replay_reaches_the_same_counts_and_verdicts_as_the_live_capture() {
    let _serial = serial();
    let redis = Redis::start_with(&["--maxclients", "20"]);
    pause(200);
    let dir = TempDir::new("capture");
    let file = dir.0.join("incident.cwcap");
    let child = spawn_capture(
        redis.port,
        &[
            "--interval",
            "200ms",
            "--duration",
            "3s",
            "--format",
            "json",
        ],
        &file,
    );
    pause(1000); // the probes are attached
    let _held = traffic(&redis);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let live = last_json(&out.stdout);
    assert!(
        live["totals"]["rejected"].as_u64().unwrap() > 0,
        "the test needs rejections: {live}"
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Every row in every line, as the capture's own last report has them.
    let replay = run(&[
        "analyze",
        file.to_str().unwrap(),
        "--format",
        "json",
        "--clients",
        "all",
    ]);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let replayed = last_json(&replay.stdout);
    assert_eq!(conclusions(&replayed), conclusions(&live));
    // The clients are this test's process: its connections, and its rejected
    // attempts as its failures, carried by the capture.
    let me = std::process::id();
    let holders = connwatch_tests::client(&live, "127.0.0.50").expect("the holders' row");
    let procs = holders["processes"].as_array().expect("processes");
    assert_eq!(procs.len(), 1, "{holders}");
    assert_eq!(procs[0]["pid"], me);
    assert_eq!(procs[0]["open"], holders["open"]);
    assert_eq!(procs[0]["opened"], holders["opened"]);
    let storm = connwatch_tests::client(&live, "127.0.0.51").expect("the storm's row");
    let procs = storm["processes"].as_array().expect("processes");
    assert_eq!(procs[0]["pid"], me);
    assert_eq!(procs[0]["failed"], storm["rejected"], "{storm}");
    // What the probe could see travels in the capture's header.
    assert_eq!(replayed["probe"], live["probe"]);
    assert_eq!(live["probe"]["features"]["refusals"], true, "{live}");
    assert_eq!(
        replayed["ts"], live["ts"],
        "the same interval, the same wall-clock time"
    );

    // The text view names the verdicts seen during the capture.
    let text = run(&["analyze", file.to_str().unwrap()]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("127.0.0.50"), "{text}");
    assert!(text.contains(&format!("ports [{}]", redis.port)), "{text}");
}

#[test]
fn damaged_truncated_and_foreign_files_are_clear_errors_and_what_came_before_is_analysed() {
    let _serial = serial();
    let redis = Redis::start();
    let dir = TempDir::new("damaged");
    let file = dir.0.join("good.cwcap");
    let child = spawn_capture(
        redis.port,
        &["--no-redis", "--interval", "100ms", "--duration", "2s"],
        &file,
    );
    pause(700);
    let _c = Client::many("127.0.0.52", redis.addr(), 3);
    assert!(child.wait_with_output().unwrap().status.success());

    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.0.join("cut.cwcap");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let out = run(&["analyze", cut.to_str().unwrap(), "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("damaged at record") && stderr.contains("analysed what came before"),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).lines().count() >= 1,
        "reports before the cut"
    );

    let foreign = dir.0.join("foreign.cwcap");
    std::fs::write(&foreign, b"GET / HTTP/1.1\r\n").unwrap();
    let out = run(&["analyze", foreign.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a readable connwatch capture"),
        "{stderr}"
    );

    let missing = run(&["analyze", dir.0.join("nope").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(1));

    // A capture never overwrites a file.
    let again = run(&[
        "capture",
        "-p",
        &redis.port.to_string(),
        "--no-redis",
        "--duration",
        "1s",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
}

#[test]
fn a_redacted_capture_holds_no_client_address_and_sigint_leaves_a_whole_file() {
    let _serial = serial();
    let redis = Redis::start();
    let dir = TempDir::new("redact");
    let file = dir.0.join("shared.cwcap");
    let child = spawn_capture(
        redis.port,
        &["--no-redis", "--redact", "--interval", "100ms"],
        &file,
    );
    pause(700);
    let _c = Client::many("127.0.0.53", redis.addr(), 4);
    pause(500);
    // SAFETY: a pid we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());

    let mut raw = Vec::new();
    flate2_decode(&std::fs::read(&file).unwrap(), &mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert!(
        !text.contains("127.0.0.53"),
        "client addresses are redacted"
    );
    assert!(text.contains("198.18.0."), "pseudonyms instead");

    let out = run(&[
        "analyze",
        file.to_str().unwrap(),
        "--format",
        "json",
        "--clients",
        "all",
    ]);
    assert!(
        out.status.success(),
        "SIGINT ended the file cleanly: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = last_json(&out.stdout);
    let pseudonym = last["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["open"] == 4)
        .expect("the 4 holders");
    assert!(pseudonym["addr"].as_str().unwrap().starts_with("198.18.0."));
}

#[test]
fn max_size_stops_a_capture_with_a_clear_line() {
    let _serial = serial();
    let redis = Redis::start();
    let dir = TempDir::new("maxsize");
    let file = dir.0.join("small.cwcap");
    let out = Command::new(connwatch_bin())
        .args([
            "capture",
            "-p",
            &redis.port.to_string(),
            "--no-redis",
            "--interval",
            "50ms",
            "--max-size",
            "1K",
            "--duration",
            "20s",
            "-o",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("stopped at --max-size"));
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size < 16 * 1024, "stopped near 1 KiB, got {size}");
    let replay = run(&["analyze", file.to_str().unwrap(), "--format", "json"]);
    assert!(replay.status.success());
}

fn flate2_decode(gz: &[u8], out: &mut Vec<u8>) {
    let mut d = flate2::read::MultiGzDecoder::new(gz);
    d.read_to_end(out).unwrap();
}

/// A storm that ended: its last report is a quiet one, so `analyze` (text and HTML)
/// also says how bad it got and when.
#[test]
fn analyze_shows_a_storm_that_ended_at_its_peak() {
    let _serial = serial();
    let redis = Redis::start_with(&["--maxclients", "5"]);
    pause(200);
    let dir = TempDir::new("capture");
    let file = dir.0.join("storm.cwcap");
    let child = spawn_capture(
        redis.port,
        &["--interval", "200ms", "--duration", "8s", "--no-redis"],
        &file,
    );
    pause(1000); // the probes are attached
    let mut held = Vec::new();
    while let Attempt::Served(c) = Client::attempt("127.0.0.60", redis.addr()) {
        held.push(c);
        assert!(held.len() <= 5, "maxclients 5");
    }
    // 2 s of retries 1 ms apart, then nothing. The short window (3 s) slides off
    // the storm in steps of the history's 0.5 s: the last reports of the verdict
    // hold a quarter of it or less.
    let until = std::time::Instant::now() + std::time::Duration::from_millis(2_000);
    let mut attempts = 0;
    while std::time::Instant::now() < until && attempts < 3_000 {
        assert!(matches!(
            Client::attempt("127.0.0.61", redis.addr()),
            Attempt::Rejected
        ));
        attempts += 1;
        pause(1);
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let text = run(&["analyze", file.to_str().unwrap()]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("retry_storm") && l.contains("127.0.0.61"))
        .unwrap_or_else(|| panic!("no storm line:\n{text}"));
    let last: f64 = lines[at]
        .split(" failed attempts/s")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rate in {}", lines[at]));
    let peak_line = lines.get(at + 1).copied().unwrap_or_default();
    let peak: f64 = peak_line
        .split("failures_per_s ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no peak line after the storm:\n{text}"));
    assert!(peak_line.trim_start().starts_with("peak: "), "{peak_line}");
    // Hundreds of attempts a second at its height, a trickle in its last report.
    assert!(
        peak > 100.0 && peak > 2.0 * last,
        "peak {peak}, last {last}:\n{text}"
    );
    assert!(peak <= attempts as f64, "{peak} of {attempts} attempts");

    let html = run(&["analyze", file.to_str().unwrap(), "--format", "html"]);
    assert!(html.status.success());
    let html = String::from_utf8_lossy(&html.stdout);
    assert!(
        html.contains("<td class=\"peak\">peak "),
        "no peak in the HTML"
    );
    drop(held);
}
