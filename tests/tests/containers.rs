//! Redis where it really runs: inside network namespaces (what a container or a pod
//! looks like to the host), with its own PID and mount namespaces as a runtime
//! makes them, several on one port, beside a Redis of the host. The agent runs on
//! the host with its real probes and reaches each one's INFO from inside.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use connwatch_tests::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn host_netns() -> u64 {
    netns_inode(Path::new("/proc/self/ns/net"))
}

fn totals(r: &Value) -> (u64, u64, u64) {
    let t = &r["totals"];
    (
        t["open"].as_u64().unwrap_or(u64::MAX),
        t["opened"].as_u64().unwrap_or(u64::MAX),
        t["closed"].as_u64().unwrap_or(u64::MAX),
    )
}

#[test]
fn redis_in_a_network_namespace_is_counted_exactly_and_asked_from_inside() {
    let _serial = serial();
    let ns = NetNs::new("one");
    let port = free_port();
    let redis = Redis::start_in(&ns, port, &["--maxclients", "100"]);
    let inode = netns_inode(&ns.path());
    // Five held before the agent starts: seeded from inside the namespace.
    let early = Client::many_in(&ns.path(), redis.addr(), 5);

    let mut agent = Agent::watch(&[port]);
    agent.wait_for_instance("the five seeded", inode, WAIT, |r| totals(r).0 == 5);
    let later = Client::many_in(&ns.path(), redis.addr(), 7);
    for _ in 0..30 {
        Client::connect_in(&ns.path(), redis.addr()).close();
    }
    let r = agent.wait_for_instance("12 open, 37 opened, 30 closed", inode, WAIT, |r| {
        totals(r) == (12, 37, 30)
            && r["redis"]["status"] == "ok"
            && r["capacity"]["connected_clients"] == 13
    });
    assert_eq!(r["totals"]["vanished"], 0);
    let inst = &r["instance"];
    assert_eq!(inst["netns"], inode);
    assert_eq!(inst["host_netns"], false);
    assert_eq!(inst["pid"], redis.pid());
    // No PID namespace of its own: the same pid inside.
    assert_eq!(inst["ns_pid"], redis.pid());
    assert_eq!(inst["comm"], "redis-server");
    assert!(inst["container_id"].is_null(), "{inst}");
    // INFO and CONFIG came from this server, over 127.0.0.1 inside its namespace.
    assert_eq!(r["redis"]["target"], format!("127.0.0.1:{port}"));
    assert_eq!(r["redis"]["pid"], redis.pid());
    assert_eq!(r["limits"]["maxclients"], 100);
    assert_eq!(r["limits"]["effective_maxclients"], 100);
    assert_eq!(r["limits"]["pid"], redis.pid());
    assert_eq!(r["capacity"]["source"], "info");
    // 12 clients and the agent's own connection, which is not a client row.
    assert_eq!(r["capacity"]["connected_clients"], 13);
    assert_eq!(r["totals"]["clients"], 1);
    // The host's own namespace is reported too, as its own instance: empty.
    let home = agent
        .latest_of(host_netns())
        .expect("a report of the host's namespace");
    assert_eq!(home["instance"]["host_netns"], true);
    assert_eq!(totals(&home), (0, 0, 0));
    drop((early, later));
}

#[test]
fn contained_redis_is_pid_1_inside_and_its_limits_are_its_own() {
    let _serial = serial();
    let id = "3f1c9e2d5b7a4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6";
    let cgroup = ContainerCgroup::new(id);
    let port = free_port();
    // As a runtime starts it: new network, PID and mount namespaces, the container's
    // own fd limit, its own cgroup.
    let setup = format!(
        "ulimit -n 4000 && echo 0 > '{}/cgroup.procs' &&",
        cgroup.0.display()
    );
    let redis = Redis::start_contained(port, &setup, &[]);
    let netns = redis.netns.clone().expect("a namespace");
    let inode = netns_inode(&netns);
    assert_ne!(inode, host_netns());

    let mut agent = Agent::watch(&[port]);
    let held = Client::many_in(&netns, redis.addr(), 4);
    let r = agent.wait_for_instance("4 open, INFO joined", inode, WAIT, |r| {
        totals(r) == (4, 4, 0) && r["redis"]["status"] == "ok"
    });
    let inst = &r["instance"];
    assert_eq!(inst["pid"], redis.pid());
    assert_eq!(inst["ns_pid"], 1, "pid 1 in its own PID namespace: {inst}");
    assert_eq!(inst["container_id"], id);
    assert!(inst["pod_uid"].is_null());
    // INFO's process_id is the inner pid; /proc is read through the host's.
    assert_eq!(r["redis"]["pid"], 1);
    assert_eq!(r["limits"]["pid"], redis.pid());
    assert_eq!(r["limits"]["nofile_soft"], 4000);
    // Redis itself lowers maxclients to fit 4000 descriptors (32 kept for itself).
    assert_eq!(r["limits"]["effective_maxclients"], 4000 - 32);
    drop(held);
    drop(redis);
    drop(cgroup);
}

#[test]
fn two_containers_on_one_port_and_the_host_beside_them_are_told_apart() {
    let _serial = serial();
    let port = free_port();
    let host = Redis::start_on(port, &[]);
    let (a, b) = (NetNs::new("a"), NetNs::new("b"));
    let ra = Redis::start_in(&a, port, &[]);
    let rb = Redis::start_in(&b, port, &[]);
    let (ia, ib) = (netns_inode(&a.path()), netns_inode(&b.path()));

    let mut agent = Agent::watch(&[port]);
    let _h = Client::many("127.0.0.61", host.addr(), 5);
    let _x = Client::many_in(&a.path(), ra.addr(), 3);
    let _y = Client::many_in(&b.path(), rb.addr(), 4);
    for _ in 0..6 {
        Client::connect_in(&b.path(), rb.addr()).close();
    }
    let ok =
        |want: (u64, u64, u64)| move |r: &Value| totals(r) == want && r["redis"]["status"] == "ok";
    let rh = agent.wait_for_instance("host: 5 open", host_netns(), WAIT, ok((5, 5, 0)));
    let ra_r = agent.wait_for_instance("A: 3 open", ia, WAIT, ok((3, 3, 0)));
    let rb_r = agent.wait_for_instance("B: 4 open, 6 closed", ib, WAIT, ok((4, 10, 6)));
    // Each one's INFO came from its own server.
    assert_eq!(rh["redis"]["pid"], host.pid());
    assert_eq!(ra_r["redis"]["pid"], ra.pid());
    assert_eq!(rb_r["redis"]["pid"], rb.pid());
    // Inside, every client is 127.0.0.1: one address per instance, no cross-talk.
    assert_eq!(count(&ra_r, "127.0.0.1", "open"), 3);
    assert_eq!(count(&rb_r, "127.0.0.1", "open"), 4);
    assert_eq!(count(&rh, "127.0.0.61", "open"), 5);
    assert!(client(&rh, "127.0.0.1").is_none(), "{rh}");

    // Its INFO connections would be clients of the agents below.
    drop(agent);
    // --netns: that namespace only, and nothing else reported.
    let a_path = a.path().display().to_string();
    let mut only_a = Agent::watch_with(&[port], &["--netns", &a_path], &[]);
    only_a.wait_for_instance("A alone: 3 open", ia, WAIT, |r| {
        totals(r).0 == 3 && r["redis"]["status"] == "ok"
    });
    // --pid: the namespace of that process.
    let pid_b = rb.pid().to_string();
    let mut only_b = Agent::watch_with(&[port], &["--pid", &pid_b], &[]);
    only_b.wait_for_instance("B alone: 4 open", ib, WAIT, |r| totals(r).0 == 4);
    // More churn in A: only A's agent sees it.
    for _ in 0..2 {
        Client::connect_in(&a.path(), ra.addr()).close();
    }
    only_a.wait_for_instance("A alone: 2 closed", ia, WAIT, |r| totals(r) == (3, 2, 2));
    pause(500);
    let netns_of = |reports: Vec<Value>| -> Vec<u64> {
        let mut seen: Vec<u64> = reports
            .iter()
            .filter_map(|r| r["instance"]["netns"].as_u64())
            .collect();
        seen.sort_unstable();
        seen.dedup();
        seen
    };
    assert_eq!(netns_of(only_a.reports()), vec![ia]);
    assert_eq!(netns_of(only_b.reports()), vec![ib]);
    let r = only_b.latest_of(ib).expect("a report of B");
    assert_eq!(
        totals(&r),
        (4, 0, 0),
        "A's churn never reaches B's agent: {r}"
    );
    assert_eq!(r["redis"]["pid"], rb.pid());
}

#[test]
fn a_namespace_that_cannot_be_opened_is_a_usage_error() {
    let _serial = serial();
    for args in [
        ["--netns", "/nonexistent/netns"],
        ["--pid", "4999999"],
        ["--netns", "/proc/self/status"],
    ] {
        let out = Command::new(connwatch_bin())
            .args(["watch", "--format", "json", "--duration", "1s"])
            .args(args)
            .output()
            .expect("run connwatch");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains("cannot watch that namespace"), "{err}");
        assert!(out.stdout.is_empty());
    }
}

fn connwatch(args: &[&str]) -> std::process::Output {
    Command::new(connwatch_bin())
        .args(args)
        .env_remove("REDISCLI_AUTH")
        .output()
        .expect("run connwatch")
}

/// `GET /metrics` of a running agent.
fn scrape(addr: std::net::SocketAddr) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .expect("connect to the metrics listener");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("send GET");
    let mut body = String::new();
    stream.read_to_string(&mut body).expect("read the answer");
    body
}

#[test]
fn every_output_names_the_instance_and_a_replay_keeps_them_apart() {
    let _serial = serial();
    let port = free_port();
    let host = Redis::start_on(port, &[]);
    let ns = NetNs::new("out");
    let boxed = Redis::start_in(&ns, port, &["--maxclients", "10"]);
    let inode = netns_inode(&ns.path());
    let _h = Client::many("127.0.0.62", host.addr(), 2);
    // The container is full: 9 of 10 with the agent's own connection.
    let _b = Client::many_in(&ns.path(), boxed.addr(), 8);
    let p = port.to_string();

    // Text: one block per instance, the container's named.
    let out = connwatch(&[
        "watch",
        "-p",
        &p,
        "--format",
        "text",
        "--duration",
        "1500ms",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let label = format!("redis-server (netns {inode})");
    assert!(text.contains(&label), "{text}");
    assert!(
        text.lines()
            .filter(|l| l.starts_with("connwatch  "))
            .count()
            >= 2,
        "{text}"
    );

    // check: one line per instance, the worst decides the exit code.
    let out = connwatch(&["check", "-p", &p, "--sample", "1500ms", "--format", "json"]);
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let of = |netns: u64| {
        lines
            .iter()
            .find(|l| l["report"]["instance"]["netns"] == netns)
            .unwrap_or_else(|| panic!("no check line of netns {netns}: {lines:?}"))
    };
    assert_eq!(of(host_netns())["status"], "ok");
    assert_eq!(of(inode)["status"], "critical", "{}", of(inode));
    assert_eq!(of(inode)["report"]["capacity"]["used"], 9);
    assert_eq!(out.status.code(), Some(2));

    // Prometheus: the container's series carry redis_instance, the host's none.
    let metrics_port = free_port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let mut agent = Agent::watch_with(&[port], &["--metrics", &listen], &[]);
    agent.wait_for_instance("the container's INFO", inode, WAIT, |r| {
        r["redis"]["status"] == "ok"
    });
    pause(600);
    let body = scrape(listen.parse().expect("an address"));
    let tag = format!("redis_instance=\"netns:{inode}\"");
    let has = |line: &str| body.lines().any(|l| l == line);
    assert!(
        has(&format!("connwatch_capacity_used{{{tag}}} 9")),
        "{body}"
    );
    assert!(
        has(&format!("connwatch_open_connections{{{tag}}} 8")),
        "{body}"
    );
    assert!(has("connwatch_open_connections 2"), "{body}");
    assert_eq!(
        body.matches("# HELP connwatch_open_connections ").count(),
        1
    );
    drop(agent);

    // A capture replays into the same instances with the same counts.
    let dir = TempDir::new("containers-capture");
    let file = dir.0.join("cap.ndjson.gz");
    let file = file.to_str().expect("a UTF-8 path");
    let out = connwatch(&[
        "capture",
        "-p",
        &p,
        "--duration",
        "1500ms",
        "-o",
        file,
        "--format",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let live: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let out = connwatch(&["analyze", file, "--format", "json"]);
    let replay: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "report")
        .collect();
    for netns in [host_netns(), inode] {
        let last_live = live
            .iter()
            .rfind(|r| r["instance"]["netns"] == netns)
            .unwrap_or_else(|| panic!("the capture's last report of {netns}"));
        let last_replay = replay
            .iter()
            .rfind(|r| r["instance"]["netns"] == netns)
            .unwrap_or_else(|| panic!("the replay's last report of {netns}"));
        assert_eq!(last_live["totals"], last_replay["totals"], "netns {netns}");
        assert_eq!(last_live["instance"], last_replay["instance"]);
    }
    assert_eq!(
        totals(
            live.iter()
                .rfind(|r| r["instance"]["netns"] == inode)
                .unwrap()
        )
        .0,
        8
    );
}
