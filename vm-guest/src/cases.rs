//! The smoke cases. Each uses the root integration tests' fixtures
//! (`connwatch_tests`), fails by panicking with one line first (what was expected,
//! what came) and returns an optional note for its PASS line.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use connwatch_tests::{
    Agent, Attempt, Client, Redis, TempDir, client, connwatch_bin, count, free_port, last_json,
    pause,
};
use serde_json::{Value, json};

pub type Case = fn() -> Option<String>;

pub const ALL: [(&str, Case); 7] = [
    ("watch_counts", watch_counts),
    ("maxclients_rejection", maxclients_rejection),
    ("refused", refused),
    ("accept_emfile", accept_emfile),
    ("capture_analyze", capture_analyze),
    ("capabilities", capabilities),
    ("stacks", stacks),
];

/// Generous: under TCG every step is several times slower than on the host.
const WAIT: Duration = Duration::from_secs(45);

static TRACEFS_BEFORE: AtomicBool = AtomicBool::new(true);

/// Whether tracefs was mounted before the first case (in the VM it is not, and
/// connwatch must mount it itself).
pub fn note_tracefs_before(mounted: bool) {
    TRACEFS_BEFORE.store(mounted, Ordering::SeqCst);
}

/// A report for a failure message's detail lines, compact enough for the
/// console: one line per top-level field, one per client row.
fn shown(report: &Value) -> String {
    let Some(fields) = report.as_object() else {
        return report.to_string();
    };
    let mut lines = Vec::new();
    for (key, value) in fields {
        match (key.as_str(), value.as_array()) {
            ("clients", Some(rows)) => {
                lines.push(format!("clients: {} rows", rows.len()));
                lines.extend(rows.iter().map(|row| format!("  {row}")));
            }
            _ => lines.push(format!("{key}: {value}")),
        }
    }
    lines.join("\n")
}

/// (a) N held connections and M short ones (connect, PING, close): every total and
/// both rows exact, and still exact two intervals later.
fn watch_counts() -> Option<String> {
    const HELD: u64 = 5;
    const SHORT: u64 = 20;
    let redis = Redis::start();
    pause(200); // the readiness probe's connection is gone
    let mut agent = Agent::watch(&[redis.port]);
    agent.wait_for("INFO joined", WAIT, |r| r["redis"]["status"] == "ok");
    let tracefs_mounted_by_agent = !TRACEFS_BEFORE.load(Ordering::SeqCst);
    if tracefs_mounted_by_agent {
        assert!(
            std::path::Path::new("/sys/kernel/tracing/events").is_dir(),
            "tracefs was not mounted and connwatch did not mount it"
        );
    }

    let _held = Client::many("127.0.0.2", redis.addr(), HELD as usize);
    for _ in 0..SHORT {
        Client::connect("127.0.0.3", redis.addr()).close();
    }
    let done = |r: &Value| {
        r["totals"]["opened"].as_u64() >= Some(HELD + SHORT)
            && r["totals"]["closed"].as_u64() >= Some(SHORT)
    };
    let report = agent.wait_for("every open and close counted", WAIT, done);
    check_counts(&report, HELD, SHORT);
    pause(600); // three more intervals: nothing counted twice, nothing late
    let later = agent.latest().unwrap_or(report);
    check_counts(&later, HELD, SHORT);
    // The CPUs staged these records and the agent flushed them (BPF_PROG_TEST_RUN
    // on each CPU): no fallback to a ring write per record.
    let stderr = agent.stderr();
    assert!(
        !stderr.contains("written to the ring buffer at once"),
        "record staging fell back on this kernel: {stderr}"
    );
    // The state-change program ran as a BTF tracepoint, reading the socket
    // directly (the verifier of this kernel took its loads).
    assert!(
        !stderr.contains("read from the tracepoint's record"),
        "the BTF version of the state-change program did not serve on this kernel: {stderr}"
    );
    let (status, _) = agent.stop();
    assert!(
        status.success(),
        "SIGTERM ends connwatch with 0, got {status}"
    );
    Some(format!(
        "{HELD} held + {SHORT} short exact, read from the socket (tp_btf), records staged and flushed{}",
        if tracefs_mounted_by_agent {
            "; connwatch mounted tracefs"
        } else {
            ""
        }
    ))
}

/// (g) `watch --stacks` loads on this kernel (the verifier keeps its
/// `bpf_get_stackid` call), and a leak of this runner's own connections says where
/// they were opened: the C library's connect() innermost. The runner is built
/// without frame pointers, so the frames past it are not checked.
fn stacks() -> Option<String> {
    let redis = Redis::start();
    pause(200);
    let agent = Agent::watch_with(
        &[redis.port],
        &[
            "--stacks",
            "--no-redis",
            "--window",
            "6s",
            "--leak-idle",
            "1s",
            "--leak-min-growth",
            "3",
            "--leak-min-stale",
            "3",
        ],
        &[],
    );
    let leak_of = |r: &Value| {
        r["verdicts"]
            .as_array()
            .and_then(|all| {
                all.iter().find(|v| {
                    v["kind"] == "leak"
                        && v["addr"] == "127.0.0.6"
                        && v["evidence"]["stacks"].is_array()
                })
            })
            .cloned()
    };
    let started = Instant::now();
    let mut held = Vec::new();
    let leak = loop {
        held.push(Client::connect("127.0.0.6", redis.addr()));
        pause(250);
        if let Some(v) = agent.latest().as_ref().and_then(leak_of) {
            break v;
        }
        assert!(
            held.len() < 200 && started.elapsed() < WAIT,
            "no leak with stacks after {} connections; last report:\n{}",
            held.len(),
            agent.latest().as_ref().map(shown).unwrap_or_default()
        );
    };
    let e = &leak["evidence"];
    assert_eq!(e["pid"], std::process::id(), "the runner's pid: {e}");
    let first = e["stacks"][0]["frames"][0].as_str().unwrap_or_default();
    assert!(
        first.starts_with("libc.so.6!connect+0x"),
        "innermost frame {first:?}, want libc.so.6!connect+0x…: {e}"
    );
    let count = e["stacks"][0]["count"].as_u64().unwrap_or(0);
    assert!(count >= 3, "at least the 3 stale connections: {e}");
    let (status, _) = agent.stop();
    assert!(
        status.success(),
        "SIGTERM ends connwatch with 0, got {status}"
    );
    Some(format!(
        "leak of {} connections, {count} from {first}",
        held.len()
    ))
}

fn check_counts(r: &Value, held: u64, short: u64) {
    let got = json!({
        "totals": {
            "open": r["totals"]["open"], "opened": r["totals"]["opened"],
            "closed": r["totals"]["closed"], "lost_events": r["totals"]["lost_events"],
        },
        "127.0.0.2": row(r, "127.0.0.2"),
        "127.0.0.3": row(r, "127.0.0.3"),
    });
    let want = json!({
        "totals": {"open": held, "opened": held + short, "closed": short, "lost_events": 0},
        "127.0.0.2": {"open": held, "opened": held, "closed": 0, "closed_by_client": 0,
                      "closed_by_server": 0, "reset": 0, "bytes_in": held * 14, "bytes_out": held * 7},
        "127.0.0.3": {"open": 0, "opened": short, "closed": short, "closed_by_client": short,
                      "closed_by_server": 0, "reset": 0, "bytes_in": short * 14, "bytes_out": short * 7},
    });
    assert_eq!(got, want, "counts {got} (want {want})\n{}", shown(r));
}

/// The counters of one client row that the cases check exactly. Bytes: each
/// connection sent one PING (14 bytes) and got +PONG (7).
fn row(r: &Value, addr: &str) -> Value {
    let Some(c) = client(r, addr) else {
        return Value::Null;
    };
    let pick = |k: &str| c[k].clone();
    json!({
        "open": pick("open"), "opened": pick("opened"), "closed": pick("closed"),
        "closed_by_client": pick("closed_by_client"), "closed_by_server": pick("closed_by_server"),
        "reset": pick("reset"), "bytes_in": pick("bytes_in"), "bytes_out": pick("bytes_out"),
    })
}

/// (b) Redis at maxclients turns attempts away: each rejection counted, with the reason.
fn maxclients_rejection() -> Option<String> {
    let redis = Redis::start_with(&["--maxclients", "10"]);
    pause(200);
    let mut agent = Agent::watch(&[redis.port]);
    agent.wait_for("INFO joined", WAIT, |r| r["redis"]["status"] == "ok");
    // The agent's INFO connection holds one slot: 9 are left for 15 attempts.
    let mut served = Vec::new();
    let mut rejected = 0u64;
    for _ in 0..15 {
        match Client::attempt("127.0.0.4", redis.addr()) {
            Attempt::Served(c) => served.push(c),
            Attempt::Rejected => rejected += 1,
            Attempt::Refused => panic!("redis-server is not listening"),
        }
    }
    assert_eq!(
        (served.len(), rejected),
        (9, 6),
        "15 attempts for 9 free slots"
    );
    let report = agent.wait_for("6 rejections", WAIT, |r| {
        r["totals"]["rejected"].as_u64() >= Some(6)
            && r["redis"]["rejected_connections_delta"].as_u64() >= Some(6)
    });
    let got = json!({
        "rejected": report["totals"]["rejected"],
        "maxclients": report["totals"]["rejected_by_reason"]["maxclients"],
        "row": count(&report, "127.0.0.4", "rejected"),
        "info": report["redis"]["rejected_connections_delta"],
        "open": report["totals"]["open"],
    });
    let want = json!({"rejected": 6, "maxclients": 6, "row": 6, "info": 6, "open": 9});
    assert_eq!(
        got,
        want,
        "rejections {got} (want {want})\n{}",
        shown(&report)
    );
    None
}

/// (c) Attempts on a watched port nothing listens on: counted exactly in
/// `totals.refused`. From 5.17 every kernel has a refusal source (socket-less
/// resets on `tcp:tcp_send_reset`, or `skb:kfree_skb` drops with reason
/// NO_SOCKET); before, `null` (said in `probe.features`) passes. A 0 is the failure.
fn refused() -> Option<String> {
    const ATTEMPTS: u64 = 7;
    let port = free_port();
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let agent = Agent::watch_with(&[port], &["--no-redis"], &[]);
    for _ in 0..ATTEMPTS {
        assert!(
            matches!(Client::attempt("127.0.0.7", server), Attempt::Refused),
            "nothing listens on {port}, yet the connection was not refused"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        let latest = agent.latest().unwrap_or(Value::Null);
        let refused = &latest["totals"]["refused"];
        if refused.is_null() && !latest.is_null() {
            let features = &latest["probe"]["features"];
            let release = crate::system::kernel_release();
            assert!(
                !has_drop_reasons(&release),
                "totals.refused is null on {release}, which reports drops with reason NO_SOCKET; probe.features {features}"
            );
            return Some(format!(
                "totals.refused is null: the refusal source is unavailable on this kernel; probe.features {}",
                serde_json::to_string(features).unwrap_or_default()
            ));
        }
        if refused.as_u64() >= Some(ATTEMPTS) || Instant::now() > deadline {
            break latest;
        }
        pause(100);
    };
    let got = json!({
        "refused": report["totals"]["refused"],
        "row": count(&report, "127.0.0.7", "refused"),
        "opened": count(&report, "127.0.0.7", "opened"),
    });
    let want = json!({"refused": ATTEMPTS, "row": ATTEMPTS, "opened": 0});
    assert_eq!(
        got,
        want,
        "{ATTEMPTS} refused attempts reported as {got} (want {want}, or refused: null when the source is unavailable){}\n{}",
        if report["totals"]["refused"] == 0 {
            ": a silent 0"
        } else {
            ""
        },
        shown(&report)
    );
    Some(format!("{ATTEMPTS} refusals counted"))
}

/// (d) Redis with no free file descriptor: accept() fails with EMFILE, the agent
/// names it in `totals.accept_errors`, and the connections wait in the queue.
fn accept_emfile() -> Option<String> {
    let redis = Redis::start();
    let _held = Client::many("127.0.0.5", redis.addr(), 3);
    let mut agent = Agent::watch(&[redis.port]);
    agent.wait_for("INFO joined", WAIT, |r| r["redis"]["status"] == "ok");
    let limit = redis.leave_no_free_descriptor();
    let server = redis.addr();
    let _waiting: Vec<std::net::TcpStream> = (0..3)
        .map(|_| {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket");
            s.bind(&SocketAddr::from(([127, 0, 0, 6], 0)).into())
                .expect("bind 127.0.0.6");
            s.connect(&server.into()).expect("connect");
            s.into()
        })
        .collect();
    let report = agent.wait_for("EMFILE named with 3 connections queued", WAIT, |r| {
        r["totals"]["accept_errors"]["EMFILE"].as_u64().unwrap_or(0) > 0
            && r["totals"]["accept_queue"]["depth"] == 3
    });
    let emfile = report["totals"]["accept_errors"]["EMFILE"]
        .as_u64()
        .unwrap_or(0);
    let got = json!({
        "depth": report["totals"]["accept_queue"]["depth"],
        "open_waiting": count(&report, "127.0.0.6", "open"),
        "nofile_soft": report["limits"]["nofile_soft"],
        "info_rejected": report["redis"]["rejected_connections_delta"],
    });
    let want = json!({"depth": 3, "open_waiting": 3, "nofile_soft": limit, "info_rejected": 0});
    assert_eq!(
        got,
        want,
        "accept failures {got} (want {want})\n{}",
        shown(&report)
    );
    Some(format!("{emfile} EMFILE accept failures at nofile {limit}"))
}

/// (e) `connwatch capture`, then `connwatch analyze` of the file: the replay's last
/// report reaches the live run's counts.
fn capture_analyze() -> Option<String> {
    let redis = Redis::start();
    pause(200);
    let dir = TempDir::new("capture");
    let file = dir.0.join("vm.cwcap");
    let mut child = std::process::Command::new(connwatch_bin())
        .args(["capture", "-p", &redis.port.to_string()])
        .args([
            "--interval",
            "200ms",
            "--duration",
            "8s",
            "--format",
            "json",
        ])
        .arg("-o")
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start connwatch capture");
    // connwatch creates the file once its probes are attached, before it seeds the
    // connections that exist from sock_diag: the traffic below starts at once, so
    // connections open while the seeding runs must be counted once, too.
    let deadline = Instant::now() + WAIT;
    while !file.exists() {
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let out = child.wait_with_output().expect("capture's output");
            panic!(
                "connwatch capture made no file within {WAIT:?}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        pause(50);
    }
    let _held = Client::many("127.0.0.50", redis.addr(), 4);
    for _ in 0..10 {
        Client::connect("127.0.0.51", redis.addr()).close();
    }
    let out = wait_output(child, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "capture exited with {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let live = last_json(&out.stdout);
    let replay = std::process::Command::new(connwatch_bin())
        .arg("analyze")
        .arg(&file)
        .args(["--format", "json", "--clients", "all"])
        .output()
        .expect("run connwatch analyze");
    assert!(
        replay.status.success(),
        "analyze exited with {}\n{}",
        replay.status,
        String::from_utf8_lossy(&replay.stderr)
    );
    let replayed = last_json(&replay.stdout);
    let want = json!({
        "open": 4, "opened": 14, "closed": 10,
        "127.0.0.50": {"open": 4, "opened": 4, "closed": 0},
        "127.0.0.51": {"open": 0, "opened": 10, "closed": 10},
    });
    let counts = |r: &Value| {
        let short = |addr| {
            json!({"open": count(r, addr, "open"), "opened": count(r, addr, "opened"),
                   "closed": count(r, addr, "closed")})
        };
        json!({
            "open": r["totals"]["open"], "opened": r["totals"]["opened"],
            "closed": r["totals"]["closed"],
            "127.0.0.50": short("127.0.0.50"), "127.0.0.51": short("127.0.0.51"),
        })
    };
    let got = counts(&live);
    assert_eq!(
        got,
        want,
        "the live capture's last report counts {got} (want {want})\n{}",
        shown(&live)
    );
    assert_eq!(
        conclusions(&replayed),
        conclusions(&live),
        "the replay differs from the live capture\nlive:\n{}\nreplayed:\n{}",
        shown(&conclusions(&live)),
        shown(&conclusions(&replayed))
    );
    Some("live and replay: 4 open, 14 opened, 10 closed".into())
}

/// Waits for a child's exit and output, killing it after `timeout`.
fn wait_output(mut child: std::process::Child, timeout: Duration) -> std::process::Output {
    let deadline = Instant::now() + timeout;
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("the child's output");
            panic!(
                "still running after {timeout:?}; killed\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        pause(100);
    }
    child.wait_with_output().expect("the child's output")
}

/// What a replay must reach, as tests/tests/capture.rs compares it: per-client
/// counts and verdicts, host verdicts, totals and capacity.
fn conclusions(report: &Value) -> Value {
    let clients: Vec<Value> = report["clients"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|c| {
                    // The live capture's stream writes its rows sparse.
                    let c = connwatch_tests::densify(c);
                    let mut kept = serde_json::Map::new();
                    for k in [
                        "addr",
                        "open",
                        "opened",
                        "closed",
                        "closed_by_server",
                        "closed_by_client",
                        "reset",
                        "rejected",
                        "refused",
                        "verdict",
                        "bytes_in",
                        "bytes_out",
                    ] {
                        kept.insert(k.into(), c[k].clone());
                    }
                    Value::Object(kept)
                })
                .collect()
        })
        .unwrap_or_default();
    let verdicts: Vec<Value> = report["verdicts"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .map(|v| json!({"kind": v["kind"], "severity": v["severity"], "addr": v["addr"], "summary": v["summary"]}))
                .collect()
        })
        .unwrap_or_default();
    json!({"clients": clients, "verdicts": verdicts, "totals": report["totals"], "capacity": report["capacity"]})
}

/// A `Cap…:` mask of /proc/PID/status (`None` when absent).
fn cap_mask(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Whether kernel `release` (`uname -r`) reports why it drops packets (5.17+).
fn has_drop_reasons(release: &str) -> bool {
    connwatch::source::probe::kernel_version(release).is_some_and(|v| v >= (5, 17))
}

/// (f) Once attached, connwatch keeps only what it still needs: CAP_DAC_READ_SEARCH
/// and CAP_SYS_PTRACE (Redis's /proc entries), plus CAP_SYS_ADMIN while it
/// watches every network namespace (setns); and sets no_new_privs.
fn capabilities() -> Option<String> {
    const DAC_READ_SEARCH_AND_PTRACE: u64 = (1 << 2) | (1 << 19);
    const SYS_ADMIN: u64 = 1 << 21;
    // Before 5.19, with unprivileged BPF disabled, bpf(2) checks CAP_BPF on every
    // command: the agent keeps it there to read its counters (not on 6.1).
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let disabled = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled").ok();
    let bpf =
        if connwatch::source::probe::map_reads_need_cap_bpf(release.trim(), disabled.as_deref()) {
            connwatch::source::probe::MAP_READ_CAPS
        } else {
            0
        };
    let kept = DAC_READ_SEARCH_AND_PTRACE | bpf;
    let ours = cap_mask(std::process::id(), "CapEff").expect("our own CapEff");
    let redis = Redis::start();

    let mut agent = Agent::watch_with(&[redis.port], &["--netns", "/proc/self/ns/net"], &[]);
    agent.wait_for("INFO joined", WAIT, |r| r["redis"]["status"] == "ok");
    // It does its work with what it kept, its counters read every interval
    // (they need CAP_BPF before 5.19): checked first, so a failure says why.
    let _clients = Client::many("127.0.0.8", redis.addr(), 3);
    agent.wait_for("three connections", WAIT, |r| r["totals"]["open"] == 3);
    let stderr = agent.stderr();
    assert!(
        !stderr.contains("reading kernel counter"),
        "counter reads failed after the drop: {stderr}"
    );
    let pid = agent.pid();
    let own = (
        cap_mask(pid, "CapEff"),
        cap_mask(pid, "CapPrm"),
        cap_mask(pid, "CapAmb"),
    );
    assert_eq!(
        own,
        (Some(kept), Some(kept), Some(0)),
        "own namespace: CapEff/CapPrm/CapAmb {own:x?} (ours {ours:016x})"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    assert!(status.contains("NoNewPrivs:\t1"), "no_new_privs not set");
    // Every thread, the Redis poller's included.
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the agent's tasks");
    for task in tasks.flatten() {
        let tid = task.file_name().to_string_lossy().into_owned();
        let eff =
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap_or_default();
        assert!(
            eff.contains(&format!("CapEff:\t{kept:016x}")),
            "thread {tid} kept more than {kept:016x}"
        );
    }
    drop(agent);
    let every = Agent::watch(&[redis.port]);
    let every_eff = cap_mask(every.pid(), "CapEff");
    let every_prm = cap_mask(every.pid(), "CapPrm");
    drop(every);
    assert_eq!(
        (every_eff, every_prm),
        (Some(kept | SYS_ADMIN), Some(kept | SYS_ADMIN)),
        "every namespace: CapEff/CapPrm {every_eff:x?}/{every_prm:x?} (ours {ours:016x})"
    );

    Some(format!(
        "CapEff {:016x} every namespace, {kept:016x} own namespace; before: {ours:016x}",
        kept | SYS_ADMIN,
    ))
}

#[cfg(test)]
mod tests {
    use super::has_drop_reasons;

    #[test]
    fn drop_reasons_from_5_17() {
        assert!(!has_drop_reasons("4.19.0-27-amd64"));
        assert!(!has_drop_reasons("5.15.0-91-generic"));
        assert!(!has_drop_reasons("5.14.0-427.el9.x86_64"));
        assert!(has_drop_reasons("5.17.0"));
        assert!(has_drop_reasons("6.1.0-57-cloud-amd64"));
        assert!(has_drop_reasons("6.18.0"));
    }
}
