//! `connwatch check`: one command, a short sample, an exit code a script can use.

use std::process::Command;

use connwatch_tests::{Client, Redis, connwatch_bin, pause, serial};
use serde_json::Value;

fn check(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(connwatch_bin())
        .arg("check")
        .args(args)
        .output()
        .expect("run connwatch check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_quiet_server_is_ok_and_a_full_one_is_critical() {
    let _serial = serial();
    let quiet = Redis::start();
    let _a = Client::many("127.0.0.60", quiet.addr(), 3);
    let (code, out, err) = check(&[
        "-p",
        &quiet.port.to_string(),
        "--sample",
        "2s",
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let line: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(line["type"], "check");
    assert_eq!(line["status"], "ok");
    assert_eq!(
        line["report"]["capacity"]["used"], 4,
        "three clients and the agent"
    );

    let full = Redis::start_with(&["--maxclients", "10"]);
    pause(200);
    let _b = Client::many("127.0.0.61", full.addr(), 8);
    let (code, out, err) = check(&[
        "-p",
        &full.port.to_string(),
        "--sample",
        "2s",
        "--format",
        "text",
    ]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(out.contains("used 9 of 10 (90%)"), "{out}");
    assert!(out.contains("result: CRITICAL (exit 2)"), "{out}");
}

#[test]
fn without_privileges_it_could_not_check() {
    let _serial = serial();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(connwatch_bin())
        .args(["check", "--no-redis", "--sample", "1s"])
        .output()
        .expect("setpriv");
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("connwatch: could not check:") && stderr.lines().count() == 1,
        "{stderr}"
    );
}
