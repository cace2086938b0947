//! The tracepoint layouts are read from the running kernel at load: a record laid
//! out otherwise than the programs read it is caught, never read wrongly.
//!
//! Each test runs the real agent in a mount namespace of its own where tracepoint
//! `format` files are replaced (bind mounts of edited copies), as a kernel with
//! other layouts would publish them:
//! - the agent that counts every connection from `sock:inet_sock_set_state` refuses
//!   to start when that record moved;
//! - when `tcp:tcp_send_reset` does not serve (as on 6.1, which does not report
//!   resets sent without a socket), refusals are read from `skb:kfree_skb` drops
//!   with reason NO_SOCKET, counted exactly;
//! - when neither serves, the agent runs, says what it cannot see, and reports
//!   refusals as unknown (`null`), not 0.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use connwatch_tests::{
    Agent, Attempt, Client, TempDir, connwatch_bin, count, free_port, require_root, serial,
};
use serde_json::{Value, json};

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

/// An edit of one tracepoint's format file: the event (`category/name`) and the
/// text to replace with what.
type Edit = (&'static str, &'static str, &'static str);

/// A command that runs `connwatch ARGS` with each edited `events/EVENT/format` bind
/// mounted over the real one, in a private mount namespace (kept in `dir`).
fn masked(edits: &[Edit], dir: &TempDir, args: &[String]) -> Command {
    ensure_tracefs();
    let mut script = String::new();
    for (i, (event, from, to)) in edits.iter().enumerate() {
        let real = format!("{TRACEFS}/events/{event}/format");
        let text = std::fs::read_to_string(&real).expect("format file");
        let edited = text.replace(from, to);
        assert_ne!(edited, text, "the edit of {event} changed its format");
        let fake = dir.0.join(format!("format{i}"));
        std::fs::write(&fake, edited).expect("write the edited format");
        script.push_str(&format!("mount --bind {} {real} && ", fake.display()));
    }
    script.push_str("exec \"$0\" \"$@\"");
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .arg(connwatch_bin())
        .args(args);
    cmd
}

/// `tcp:tcp_send_reset` as 6.1 publishes it: no socket-less resets, and its
/// addresses laid out otherwise.
const OLD_SEND_RESET: Edit = (
    "tcp/tcp_send_reset",
    "saddr[28];\toffset:32;\tsize:28;",
    "saddr[4];\toffset:32;\tsize:4;",
);

/// `skb:kfree_skb` with its reason where neither program reads it.
const MOVED_DROP_REASON: Edit = (
    "skb/kfree_skb",
    "reason;\toffset:36;\tsize:4;",
    "reason;\toffset:40;\tsize:4;",
);

#[test]
fn a_moved_connection_field_stops_the_agent_with_one_line() {
    require_root();
    let _serial = serial();
    let dir = TempDir::new("abi");
    let args = ["watch", "--no-redis", "-p", "6379", "--duration", "2s"].map(String::from);
    let out = masked(
        &[(
            "sock/inet_sock_set_state",
            "__u16 sport;\toffset:24;",
            "__u16 sport;\toffset:48;",
        )],
        &dir,
        &args,
    )
    .stdin(Stdio::null())
    .output()
    .expect("unshare");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {stderr}"
    );
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

const ATTEMPTS: u64 = 7;

/// Watches a port nothing listens on with the format files edited, makes
/// [`ATTEMPTS`] attempts from 127.0.0.7 (each refused), and returns the first report
/// that counts them all, or the last one after 5 s, with the agent's stderr.
fn refusals_seen(edits: &[Edit]) -> (Value, String) {
    let port = free_port();
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let dir = TempDir::new("abi");
    let args = Agent::watch_args(&[port], &["--no-redis", "-v"]);
    let agent = Agent::start(masked(edits, &dir, &args));
    for _ in 0..ATTEMPTS {
        assert!(
            matches!(Client::attempt("127.0.0.7", server), Attempt::Refused),
            "nothing listens on {port}, yet the connection was not refused"
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let latest = agent.latest().unwrap_or(Value::Null);
        if latest["totals"]["refused"].as_u64() >= Some(ATTEMPTS)
            || std::time::Instant::now() > deadline
        {
            return (latest, agent.stderr());
        }
        connwatch_tests::pause(100);
    }
}

#[test]
fn without_socketless_resets_refusals_come_from_packet_drops() {
    require_root();
    let _serial = serial();
    let (report, stderr) = refusals_seen(&[OLD_SEND_RESET]);
    let got = json!({
        "refusals": report["probe"]["features"]["refusals"],
        "refused": report["totals"]["refused"],
        "row": count(&report, "127.0.0.7", "refused"),
        "opened": count(&report, "127.0.0.7", "opened"),
    });
    let want = json!({"refusals": true, "refused": ATTEMPTS, "row": ATTEMPTS, "opened": 0});
    assert_eq!(got, want, "stderr:\n{stderr}");
    assert!(
        stderr.contains(
            "tracepoint tcp:tcp_send_reset: field `saddr` is at offset 32 (size 4) on this kernel, connwatch was built for offset 32 (size 28); refusals are read from skb:kfree_skb instead (drops with reason NO_SOCKET)"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("will not be seen"), "{stderr}");
}

#[test]
fn with_no_refusal_source_refusals_are_unknown_and_the_loss_is_said() {
    require_root();
    let _serial = serial();
    let (report, stderr) = refusals_seen(&[OLD_SEND_RESET, MOVED_DROP_REASON]);
    let row = connwatch_tests::client(&report, "127.0.0.7");
    let got = json!({
        "refusals": report["probe"]["features"]["refusals"],
        "refused": report["totals"]["refused"],
        "row": row.as_ref().map(|r| r["refused"].clone()),
    });
    // Nothing else seen from the address: no row, or one whose refused is unknown.
    let want_row = row.map(|_| Value::Null);
    let want = json!({"refusals": false, "refused": null, "row": want_row});
    assert_eq!(got, want, "stderr:\n{stderr}");
    assert!(
        stderr.contains(
            "tracepoint tcp:tcp_send_reset: field `saddr` is at offset 32 (size 4) on this kernel, connwatch was built for offset 32 (size 28); tracepoint skb:kfree_skb: field `protocol` is at offset 32 (size 2) on this kernel, connwatch was built for offset 24 (size 2); not attached: connections refused because nothing listened (refused) will not be seen on this kernel"
        ),
        "{stderr}"
    );
}
