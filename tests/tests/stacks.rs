//! Where a leaking process opens its connections (`watch --stacks`): the kernel
//! takes the caller's user stack at `connect()`, and the leak verdict names the
//! functions. A real C program built here with frame pointers, redis-py for an
//! interpreted runtime, a real redis-server, the real probes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use connwatch_tests::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const STARTED: Duration = Duration::from_secs(10);
const SOURCE: &str = "127.0.0.5";

/// Opens a connection per iteration from `open_leaked_connection` (called from
/// `leak_loop`) and keeps it; opens and closes another from `churn_connection`.
/// Both go through `dial`, which calls connect(). Prints "conn IP:PORT" for each
/// kept connection.
const LEAKER_C: &str = r#"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int dial(const char *source, int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in src = {0}, dst = {0};
    src.sin_family = AF_INET;
    dst.sin_family = AF_INET;
    dst.sin_port = htons(port);
    char buf[64];
    if (fd < 0 || inet_pton(AF_INET, source, &src.sin_addr) != 1
        || inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr) != 1
        || bind(fd, (struct sockaddr *)&src, sizeof src) < 0
        || connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0
        || write(fd, "PING\r\n", 6) != 6 || read(fd, buf, sizeof buf) <= 0) {
        perror("dial");
        exit(2);
    }
    return fd;
}

int open_leaked_connection(const char *source, int port) {
    int fd = dial(source, port);
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    char ip[32];
    getsockname(fd, (struct sockaddr *)&a, &len);
    inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip);
    printf("conn %s:%d\n", ip, ntohs(a.sin_port));
    fflush(stdout);
    return fd;
}

void churn_connection(const char *source, int port) {
    close(dial(source, port));
}

void leak_loop(const char *source, int port, int max, int every_ms) {
    struct timespec pause = {every_ms / 1000, (every_ms % 1000) * 1000000L};
    for (int i = 0; i < max; i++) {
        open_leaked_connection(source, port);
        churn_connection(source, port);
        nanosleep(&pause, NULL);
    }
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s SOURCE PORT MAX EVERY_MS SECONDS\n", argv[0]);
        return 2;
    }
    printf("started\n");
    fflush(stdout);
    time_t start = time(NULL);
    leak_loop(argv[1], atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
    while (time(NULL) - start < atoi(argv[5]))
        sleep(1);
    printf("done\n");
    return 0;
}
"#;

/// The leaking program, compiled in `dir` as `cw-native` with frame pointers.
fn build_leaker(dir: &TempDir) -> PathBuf {
    let source = dir.0.join("leaker.c");
    std::fs::write(&source, LEAKER_C).expect("write leaker.c");
    let binary = dir.0.join("cw-native");
    let out = Command::new("gcc")
        .args(["-O0", "-fno-omit-frame-pointer", "-g", "-o"])
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("gcc must be installed");
    assert!(
        out.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    binary
}

fn run_leaker(binary: &Path, port: u16) -> Background {
    let port = port.to_string();
    let mut leak = Background::command(
        binary.to_str().expect("a UTF-8 path"),
        &[SOURCE, &port, "150", "200", "45"],
    );
    leak.wait_for_line("started", STARTED);
    leak
}

fn leak_of(report: &Value) -> Option<&Value> {
    report["verdicts"]
        .as_array()?
        .iter()
        .find(|v| v["kind"] == "leak" && v["addr"] == SOURCE)
}

/// The agent's stack-trace map (type 7) as its fdinfo says: (map id, max_entries).
fn stack_map_of(agent_pid: u32) -> (u64, u64) {
    let dir = format!("/proc/{agent_pid}/fdinfo");
    for entry in std::fs::read_dir(&dir).expect("the agent's fdinfo") {
        let Ok(text) = std::fs::read_to_string(entry.expect("fdinfo entry").path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if field("map_type:") == Some(7) {
            return (
                field("map_id:").expect("map_id"),
                field("max_entries:").expect("max_entries"),
            );
        }
    }
    panic!("the agent holds no stack-trace map");
}

/// The number of stacks in the kernel map `id` (bpftool).
fn stacks_in_map(id: u64) -> usize {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "id", &id.to_string()])
        .output()
        .expect("bpftool must be installed");
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump: Value = serde_json::from_slice(&out.stdout).expect("bpftool's JSON");
    dump.as_array().map_or(0, Vec::len)
}

/// The native leaker's one stack, innermost first: the C library's connect(),
/// then `open_leaked_connection` (the caller of `dial`, which has no frame of its
/// own at the system call: the library's wrapper keeps none), `leak_loop`, `main`;
/// as many connections as the process's stale ones; no trace of the churn.
fn assert_native_stack(e: &Value) {
    let stacks = e["stacks"].as_array().unwrap();
    assert_eq!(stacks.len(), 1, "one call path: {e}");
    assert_eq!(stacks[0]["count"], e["process_stale"], "{e}");
    let frames: Vec<&str> = stacks[0]["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(frames.len() >= 4, "{frames:?}");
    assert!(frames[0].starts_with("libc.so.6!connect+0x"), "{frames:?}");
    for (at, function) in ["open_leaked_connection", "leak_loop", "main"]
        .iter()
        .enumerate()
    {
        assert!(
            frames[at + 1].starts_with(&format!("cw-native!{function}+0x")),
            "{function} at {}: {frames:?}",
            at + 1
        );
    }
    assert!(!frames.iter().any(|f| f.contains("churn_connection")));
}

/// A native leaker built with frame pointers: the leak verdict names its pid and
/// the stack its leaked connections were opened from (see
/// [`assert_native_stack`]). All its leaked connections share the one stack; the
/// connections `churn_connection` opened and closed are not among them.
#[test]
fn a_native_leak_names_the_function_that_opens_its_connections() {
    let _serial = serial();
    let redis = Redis::start();
    let mut agent = Agent::watch_with(
        &[redis.port],
        // No INFO connection: the agent's own connect would be a third stack.
        &[
            "--stacks",
            "--no-redis",
            "--leak-idle",
            "3s",
            "--window",
            "20s",
        ],
        &[],
    );
    let (map_id, capacity) = stack_map_of(agent.pid());
    assert_eq!(capacity, 1024, "--stacks sizes the map");
    let dir = TempDir::new("stacks");
    let binary = build_leaker(&dir);
    let mut leak = run_leaker(&binary, redis.port);
    let report = agent.wait_for("a leak of 127.0.0.5 with its stacks", WAIT, |r| {
        leak_of(r).is_some_and(|v| v["evidence"]["stacks"].is_array())
    });
    leak.assert_ok();
    let v = leak_of(&report).unwrap();
    let e = &v["evidence"];
    assert_eq!(e["pid"], leak.pid());
    assert_eq!(e["comm"], "cw-native");
    assert_eq!(e["interpreter"], Value::Null);
    assert_eq!(e["stacks_missing"], 0);
    assert_eq!(e["stacks_note"], Value::Null, "{e}");
    assert_eq!(
        e["cmdline"].as_str(),
        Some(format!("{} {SOURCE} {} 150 200 45", binary.display(), redis.port).as_str())
    );
    assert_native_stack(e);
    // One entry per call path in the kernel's map, however many connections: the
    // leak's and the churn's.
    assert_eq!(stacks_in_map(map_id), 2);
    drop(leak);
    agent.stop();
}

/// Client mode (`--remote-port`, on an application host) with `--stacks`: the
/// same leak, seen from the client's sockets, names the same stack.
#[test]
fn client_mode_names_the_stack_too() {
    let _serial = serial();
    let redis = Redis::start();
    let port = redis.port.to_string();
    let mut agent = Agent::watch_with(
        &[],
        &[
            "--remote-port",
            &port,
            "--stacks",
            "--leak-idle",
            "3s",
            "--window",
            "20s",
        ],
        &[],
    );
    let dir = TempDir::new("stacks");
    let binary = build_leaker(&dir);
    let mut leak = run_leaker(&binary, redis.port);
    let report = agent.wait_for("a leak of 127.0.0.5 with its stacks", WAIT, |r| {
        leak_of(r).is_some_and(|v| v["evidence"]["stacks"].is_array())
    });
    leak.assert_ok();
    assert_eq!(report["role"], "client");
    let e = &leak_of(&report).unwrap()["evidence"];
    assert_eq!(e["pid"], leak.pid());
    assert_native_stack(e);
    drop(leak);
    agent.stop();
}

/// An interpreted runtime (redis-py): the stack at connect() is the interpreter's,
/// so the report says so and shows the command line (with the script's name)
/// instead of frames.
#[test]
fn an_interpreted_leak_says_so_and_shows_its_command_line() {
    let _serial = serial();
    let redis = Redis::start();
    let port = redis.port.to_string();
    let mut agent = Agent::watch_with(
        &[redis.port],
        &["--stacks", "--leak-idle", "3s", "--window", "20s"],
        &[],
    );
    let names = TempDir::new("names");
    let mut leak = Background::python_named(
        &names,
        "cw-leak",
        "leak.py",
        &[
            "--port",
            &port,
            "--source",
            SOURCE,
            "--every",
            "0.2",
            "--max",
            "150",
            "--seconds",
            "45",
        ],
    );
    leak.wait_for_line("started", STARTED);
    let report = agent.wait_for("a leak of 127.0.0.5 with its process", WAIT, |r| {
        leak_of(r).is_some_and(|v| v["evidence"].get("interpreter").is_some())
    });
    leak.assert_ok();
    let e = &leak_of(&report).unwrap()["evidence"];
    assert_eq!(e["pid"], leak.pid());
    assert_eq!(e["interpreter"], "python");
    assert_eq!(e["stacks"], Value::Null);
    let cmdline = e["cmdline"].as_str().unwrap();
    assert!(
        cmdline.contains("clients/leak.py --port") && cmdline.contains("cw-leak -u -B "),
        "{cmdline}"
    );
    let note = e["stacks_note"].as_str().unwrap();
    assert!(note.starts_with("interpreted (python): "), "{note}");
    drop(leak);
    agent.stop();
}

/// Without --stacks: the same native leak has no stack fields, and the kernel's
/// stack map is the one-entry placeholder, empty.
#[test]
fn without_stacks_the_leak_has_no_stack_and_the_kernel_takes_none() {
    let _serial = serial();
    let redis = Redis::start();
    let mut agent = Agent::watch_with(
        &[redis.port],
        &["--leak-idle", "3s", "--window", "20s"],
        &[],
    );
    let (map_id, capacity) = stack_map_of(agent.pid());
    assert_eq!(capacity, 1);
    let dir = TempDir::new("stacks");
    let binary = build_leaker(&dir);
    let mut leak = run_leaker(&binary, redis.port);
    let report = agent.wait_for("a leak of 127.0.0.5", WAIT, |r| leak_of(r).is_some());
    leak.assert_ok();
    let e = &leak_of(&report).unwrap()["evidence"];
    assert_eq!(e["pid"], leak.pid());
    for field in [
        "stacks",
        "stacks_missing",
        "interpreter",
        "cmdline",
        "stacks_note",
    ] {
        assert!(e.get(field).is_none(), "{field} without --stacks: {e}");
    }
    assert_eq!(stacks_in_map(map_id), 0);
    drop(leak);
    agent.stop();
}

/// `capture --stacks` is refused with one line (stacks are read from the live
/// processes, which a replay does not have), and so is `--stacks` with
/// `--no-processes` (no process is noted at connect(), so no stack either).
#[test]
fn capture_and_no_processes_refuse_stacks() {
    let dir = TempDir::new("capture-stacks");
    let out = Command::new(connwatch_bin())
        .args(["capture", "-p", "6379", "--stacks", "-o"])
        .arg(dir.0.join("c.cwcap"))
        .output()
        .expect("run connwatch");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("capture does not record stacks (--stacks): they are read from the live processes; use `connwatch watch --stacks`"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!dir.0.join("c.cwcap").exists());
    let out = Command::new(connwatch_bin())
        .args(["watch", "-p", "6379", "--stacks", "--no-processes"])
        .output()
        .expect("run connwatch");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("'--stacks' cannot be used with '--no-processes'"),
        "{err}"
    );
}
