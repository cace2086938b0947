//! Which local process opened the connections: the kernel notes the caller of
//! `connect()` towards a watched port, and the agent joins it to the accepted
//! connection by its 4-tuple. Real processes (redis-py, each under a name of its
//! own), a real redis-server, the real probes.

use std::path::Path;
use std::time::Duration;

use connwatch_tests::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const STARTED: Duration = Duration::from_secs(10);

fn row(report: &Value, addr: &str) -> Value {
    client(report, addr).unwrap_or_else(|| panic!("no row for {addr} in {report}"))
}

fn processes(row: &Value) -> Vec<Value> {
    row["processes"].as_array().cloned().unwrap_or_default()
}

fn leak_of<'a>(report: &'a Value, addr: &str) -> Option<&'a Value> {
    report["verdicts"]
        .as_array()?
        .iter()
        .find(|v| v["kind"] == "leak" && v["addr"] == addr)
}

/// Two processes from the same source address: one leaks (a new redis-py client
/// per request, kept), one holds a steady, busy pool of five. The address is
/// called a leak, and the leak is the leaking process's: its pid and name in the
/// verdict, its connections as the stale ones; the pool is counted as the other
/// process's, exactly.
#[test]
fn a_leak_is_attributed_to_the_leaking_process_and_the_pool_to_the_other() {
    let _serial = serial();
    let redis = Redis::start();
    let port = redis.port.to_string();
    let mut agent = Agent::watch_with(
        &[redis.port],
        &["--leak-idle", "3s", "--window", "20s"],
        &[],
    );
    let names = TempDir::new("names");
    let source = "127.0.0.5";
    let mut pool = Background::python_named(
        &names,
        "cw-pool",
        "pool.py",
        &[
            "--port",
            &port,
            "--source",
            source,
            "--size",
            "5",
            "--ping-every",
            "0.5",
            "--seconds",
            "45",
        ],
    );
    pool.wait_for_line("ready 5", STARTED);
    let mut leak = Background::python_named(
        &names,
        "cw-leak",
        "leak.py",
        &[
            "--port",
            &port,
            "--source",
            source,
            "--every",
            "0.2",
            "--max",
            "150",
            "--seconds",
            "45",
        ],
    );
    leak.wait_for_line("started", STARTED);
    let report = agent.wait_for("a leak of 127.0.0.5", WAIT, |r| {
        leak_of(r, source).is_some()
    });
    pool.assert_ok();
    leak.assert_ok();
    let (leaker, pooler) = (leak.pid(), pool.pid());

    // The row: the leaker first (most open), then the pool, exactly.
    let r = row(&report, source);
    let procs = processes(&r);
    assert_eq!(procs.len(), 2, "{r}");
    assert_eq!(procs[0]["pid"], leaker);
    assert_eq!(procs[0]["comm"], "cw-leak");
    assert!(procs[0]["container"].is_null() && procs[0]["pod"].is_null());
    assert_eq!(procs[0]["failed"], 0);
    assert_eq!(procs[0]["open"], procs[0]["opened"]);
    let leaked = procs[0]["open"].as_u64().unwrap();
    assert!(leaked >= 10, "{r}");
    assert_eq!(procs[1]["pid"], pooler);
    assert_eq!(procs[1]["comm"], "cw-pool");
    assert_eq!(
        (&procs[1]["open"], &procs[1]["opened"], &procs[1]["failed"]),
        (&Value::from(5), &Value::from(5), &Value::from(0))
    );
    assert!(r.get("processes_other").is_none(), "{r}");
    // Every open connection of the address is one of the two's.
    assert_eq!(r["open"].as_u64().unwrap(), leaked + 5, "{r}");

    // The verdict names the leaker, and its stale connections are the leaker's:
    // the first ones the script opened, each with its pid.
    let v = leak_of(&report, source).unwrap();
    assert_eq!(v["evidence"]["pid"], leaker);
    assert_eq!(v["evidence"]["comm"], "cw-leak");
    let summary = v["summary"].as_str().unwrap();
    assert!(
        summary.starts_with(&format!("pid {leaker} (cw-leak) on {source} holds ")),
        "{summary}"
    );
    let opened: Vec<String> = leak
        .lines()
        .iter()
        .filter_map(|l| l.strip_prefix("conn ").map(str::to_owned))
        .collect();
    let stale = v["stale_connections"].as_array().unwrap();
    assert!(!stale.is_empty());
    for (k, s) in stale.iter().enumerate() {
        assert_eq!(s["pid"], leaker, "{s}");
        assert_eq!(s["addr"].as_str(), Some(opened[k].as_str()), "oldest first");
    }
    assert_eq!(
        v["evidence"]["process_stale"].as_u64(),
        v["evidence"]["stale"].as_u64()
    );
    let action = v["action"].as_str().unwrap();
    assert!(
        action.contains(&format!(
            "\n  pid {leaker} (cw-leak):\n    CLIENT KILL ADDR {}",
            opened[0]
        )),
        "{action}"
    );
    assert!(!action.contains(&format!("pid {pooler}")), "{action}");
    drop((pool, leak));
    agent.stop();
}

/// A client as a container runs it: in its own network and PID namespaces (pid 1
/// inside) and its own cgroup, beside a Redis in the same network namespace (a
/// sidecar). Its connections carry the container id its cgroup path names, and
/// its host pid.
#[test]
fn a_contained_client_is_reported_with_its_container_id() {
    let _serial = serial();
    let id = "5e0d2c4b6a8f1e3d5c7b9a0f2e4d6c8b1a3f5e7d9c0b2a4f6e8d1c3b5a7f9e0d";
    let cgroup = ContainerCgroup::new(id);
    let ns = NetNs::new("box");
    let port = free_port();
    let redis = Redis::start_in(&ns, port, &[]);
    let inode = netns_inode(&ns.path());
    let mut agent = Agent::watch(&[port]);
    let names = TempDir::new("names");
    let python = names.0.join("cw-box");
    std::os::unix::fs::symlink(PYTHON, &python).expect("link python3");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/pool.py");
    let run = format!(
        "echo $$ > '{}/cgroup.procs' && exec ip netns exec {} unshare --fork --pid --mount-proc '{}' -u -B '{}' --port {port} --source 127.0.0.1 --size 3 --seconds 40",
        cgroup.0.display(),
        ns.name,
        python.display(),
        script.display()
    );
    let mut boxed = Background::command("sh", &["-c", &run]);
    boxed.wait_for_line("ready 3", STARTED);
    let inner = cgroup
        .pids()
        .into_iter()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "cw-box")
        })
        .expect("the client's host pid, in its cgroup");
    let status = std::fs::read_to_string(format!("/proc/{inner}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(
        nspid.ends_with("\t1"),
        "pid 1 in its own PID namespace: {nspid}"
    );

    let r = agent.wait_for_instance("the contained pool's three", inode, WAIT, |r| {
        client(r, "127.0.0.1").is_some_and(|c| !processes(&c).is_empty() && c["open"] == 3)
    });
    let procs = processes(&row(&r, "127.0.0.1"));
    assert_eq!(
        procs,
        [serde_json::json!({
            "pid": inner,
            "comm": "cw-box",
            "container": id,
            "pod": null,
            "open": 3,
            "opened": 3,
            "failed": 0,
            "failed_by": {"rejected": 0, "reset": 0, "refused": 0, "timed_out": 0, "abandoned": 0, "other": 0},
        })]
    );
    boxed.assert_ok();
    drop(boxed);
    agent.stop();
    drop(redis);
    drop(cgroup);
}
