//! The tracepoint layouts are read from the running kernel at load: a record laid
//! out otherwise than the programs read it is caught, never read wrongly.
//!
//! Each test runs the real agent in a mount namespace of its own where one
//! tracepoint's `format` file is replaced (a bind mount of an edited copy), as a
//! kernel with another layout would publish it: the agent that counts every
//! connection from `sock:inet_sock_set_state` refuses to start; one whose
//! `tcp:tcp_send_reset` record moved runs without that program and says what it
//! cannot see.

use std::process::{Command, Stdio};
use std::time::Duration;

use connwatch_tests::{Redis, TempDir, connwatch_bin, require_root, serial};

const TRACEFS: &str = "/sys/kernel/tracing";

/// Mounts tracefs if nothing has yet (a fresh machine does not).
fn ensure_tracefs() {
    if std::path::Path::new(TRACEFS).join("events").is_dir() {
        return;
    }
    let status = Command::new("mount")
        .args(["-t", "tracefs", "tracefs", TRACEFS])
        .status()
        .expect("mount");
    assert!(status.success(), "mounting tracefs");
}

/// Runs `connwatch ARGS` with `events/EVENT/format` replaced by its text edited
/// with `edit`, in a private mount namespace; returns (exit code, stdout, stderr).
fn with_format(
    event: &str,
    edit: impl Fn(&str) -> String,
    args: &[&str],
) -> (Option<i32>, String, String) {
    ensure_tracefs();
    let real = format!("{TRACEFS}/events/{event}/format");
    let text = std::fs::read_to_string(&real).expect("format file");
    let edited = edit(&text);
    assert_ne!(edited, text, "the edit changed the format");
    let dir = TempDir::new("abi");
    let fake = dir.0.join("format");
    std::fs::write(&fake, edited).expect("write the edited format");
    let script = format!(
        "mount --bind {} {real} && exec \"$0\" \"$@\"",
        fake.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .arg(connwatch_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("unshare");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_moved_connection_field_stops_the_agent_with_one_line() {
    require_root();
    let _serial = serial();
    let (code, stdout, stderr) = with_format(
        "sock/inet_sock_set_state",
        |t| t.replace("__u16 sport;\toffset:24;", "__u16 sport;\toffset:48;"),
        &["watch", "--no-redis", "-p", "6379", "--duration", "2s"],
    );
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].contains(
            "tracepoint sock:inet_sock_set_state: field `sport` is at offset 48 (size 2) on this kernel, connwatch was built for offset 24 (size 2); connwatch cannot read this kernel's connection records"
        ),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "no report: {stdout}");
}

#[test]
fn a_moved_reset_record_is_not_attached_and_the_loss_is_said() {
    require_root();
    let _serial = serial();
    let redis = Redis::start();
    let port = redis.port.to_string();
    let (code, stdout, stderr) = with_format(
        "tcp/tcp_send_reset",
        |t| {
            t.replace(
                "saddr[28];\toffset:32;\tsize:28;",
                "saddr[4];\toffset:32;\tsize:4;",
            )
        },
        &[
            "watch",
            "--no-redis",
            "--format",
            "json",
            "--interval",
            "500ms",
            "-p",
            &port,
            "--duration",
            &format!("{}ms", Duration::from_secs(2).as_millis()),
        ],
    );
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(
        stderr.contains(
            "tracepoint tcp:tcp_send_reset: field `saddr` is at offset 32 (size 4) on this kernel, connwatch was built for offset 32 (size 28); not attached: connections refused because nothing listened (refused) will not be seen on this kernel"
        ),
        "{stderr}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("{\"type\":\"report\"")),
        "it reports: {stdout}"
    );
}
