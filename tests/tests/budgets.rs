//! Connection budgets (`--budget CIDR=N`) and internal addresses (`--internal
//! CIDR`), with the real agent and a real redis-server: a range over its budget is
//! named, one within it is not, and a listed address counts in the internal
//! headroom instead of being judged.

use std::time::Duration;

use connwatch_tests::{Agent, Client, Redis, client, serial};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn verdicts<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    report["verdicts"]
        .as_array()
        .map(|v| v.iter().filter(|v| v["kind"] == kind).collect())
        .unwrap_or_default()
}

#[test]
fn a_range_over_its_budget_is_named_and_an_internal_address_fills_the_reserve() {
    let _serial = serial();
    let redis = Redis::start_with(&["--maxclients", "50"]);
    let mut agent = Agent::watch_with(
        &[redis.port],
        &[
            "--budget",
            "127.0.0.90/31=5",
            "--budget",
            "127.0.0.92=10",
            "--internal",
            "127.0.0.95",
        ],
        &[],
    );
    agent.wait_for("redis.status ok", WAIT, |r| r["redis"]["status"] == "ok");
    let _a = Client::many("127.0.0.90", redis.addr(), 4);
    let _b = Client::many("127.0.0.91", redis.addr(), 4);
    let _c = Client::many("127.0.0.92", redis.addr(), 6);
    let _exporter = Client::many("127.0.0.95", redis.addr(), 3);
    let report = agent.wait_for("the budget verdict and all 17 open", WAIT, |r| {
        !verdicts(r, "budget_exceeded").is_empty() && r["totals"]["open"] == 17
    });
    let budget = verdicts(&report, "budget_exceeded");
    assert_eq!(
        budget.len(),
        1,
        "127.0.0.92 holds 6 of its 10: {}",
        report["verdicts"]
    );
    let v = budget[0];
    assert_eq!(v["severity"], "warning");
    assert!(v.get("addr").is_none());
    assert_eq!(
        v["evidence"],
        json!({
            "range": "127.0.0.90/31", "budget": 5, "open": 8, "addresses": 2,
            "top": [{"addr": "127.0.0.90", "open": 4}, {"addr": "127.0.0.91", "open": 4}]
        })
    );
    // The listed address is internal and not judged; 50 slots leave fewer than the
    // 100 to keep free, and its 3 connections are among the internal ones.
    let exporter = client(&report, "127.0.0.95").unwrap();
    assert_eq!(
        (exporter["internal"].clone(), exporter["verdict"].clone()),
        (json!(true), json!("healthy"))
    );
    assert_eq!(client(&report, "127.0.0.90").unwrap()["internal"], false);
    let headroom = verdicts(&report, "internal_headroom");
    assert_eq!(headroom.len(), 1, "{}", report["verdicts"]);
    assert_eq!(headroom[0]["evidence"]["internal_clients"], 3);
    assert_eq!(headroom[0]["evidence"]["internal"], 3);
}

#[test]
fn a_budget_flag_that_is_not_a_range_is_one_clear_line() {
    let out = std::process::Command::new(connwatch_tests::connwatch_bin())
        .args([
            "watch",
            "--no-redis",
            "-p",
            "6379",
            "--budget",
            "10.1.0.0/16",
        ])
        .output()
        .expect("run connwatch");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("a budget is CIDR=N (10.1.0.0/16=200)"),
        "{stderr}"
    );
}
