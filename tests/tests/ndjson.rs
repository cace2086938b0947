//! The NDJSON stream of `connwatch watch --format json` against a real
//! redis-server: by default a report writes only the client rows that changed,
//! every row in the first report and every `--full-every`; `--clients all` writes
//! every row every time. 200 quiet clients from distinct 127.0.1.x addresses hold
//! one connection each; 127.0.9.9 connects, PINGs and closes every 20 ms.
//! `--no-redis`: the agent's own INFO connection would be one more row.

use std::collections::BTreeSet;
use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use connwatch_tests::{Client, Rebuilt, Redis, connwatch_bin, densify, pause, serial};
use serde_json::{Value, json};

const HOLDERS: usize = 200;
const CHURNER: &str = "127.0.9.9";

fn holder(i: usize) -> String {
    format!("127.0.1.{}", i + 1)
}

/// A free port below the ephemeral range (32768–60999 by default), for Redis. The
/// agent counts a port's connections by number; on a shared machine another
/// process's client socket may take an ephemeral-range port as its source port
/// (bound to another loopback address), and its close would count as one more
/// client of that port (seen once here: 127.0.0.1, closed "by the server").
fn port_below_ephemeral() -> u16 {
    let offset = (std::process::id() % 10_000) as u16;
    (0..10_000u16)
        .map(|i| 20_000 + (offset + i) % 10_000)
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port in 20000–29999")
}

/// The 200 holders' connections, each answered PING.
fn hold(redis: &Redis) -> Vec<Client> {
    (0..HOLDERS)
        .map(|i| Client::connect(&holder(i), redis.addr()))
        .collect()
}

/// connect, PING, close from [`CHURNER`] every 20 ms until dropped (at most 60 s).
struct Churner {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<u32>>,
}

impl Churner {
    fn start(redis: &Redis) -> Churner {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let server = redis.addr();
        let thread = thread::spawn(move || {
            let started = Instant::now();
            let mut made = 0;
            while !flag.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
                Client::connect(CHURNER, server).close();
                made += 1;
                pause(20);
            }
            made
        });
        // Its first connections are made before the agent starts.
        pause(100);
        Churner {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops it; returns how many connections it made.
    fn stop(mut self) -> u32 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .map(|t| t.join().expect("the churner panicked"))
            .unwrap_or(0)
    }
}

impl Drop for Churner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// `connwatch watch --format json --no-redis --interval 500ms --duration D` with
/// `args`; every report line, as text (bounded: 60 s).
fn watch(port: u16, duration: &str, args: &[&str]) -> Vec<String> {
    let mut child = Command::new(connwatch_bin())
        .args(["watch", "--format", "json", "--no-redis"])
        .args(["--interval", "500ms", "--duration", duration])
        .args(["--port", &port.to_string()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start connwatch");
    let out = child.stdout.take().expect("stdout");
    let reader = thread::spawn(move || {
        std::io::BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for connwatch") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("connwatch ran past its --duration {duration}");
        }
        pause(50);
    };
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
    }
    assert!(status.success(), "connwatch exited {status}: {stderr}");
    let lines = reader.join().expect("reader thread");
    // --no-redis and no verdict: report lines only.
    for line in &lines {
        assert!(line.starts_with(r#"{"type":"report""#), "{line}");
    }
    lines
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).expect("a JSON line")
}

fn addrs(report: &Value) -> BTreeSet<String> {
    report["clients"]
        .as_array()
        .expect("clients[]")
        .iter()
        .map(|c| c["addr"].as_str().expect("addr").to_owned())
        .collect()
}

/// The rows of addresses the test did not connect from, for messages.
fn strangers(report: &Value) -> Vec<&Value> {
    let ours = everyone();
    report["clients"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter(|c| !c["addr"].as_str().is_some_and(|a| ours.contains(a)))
                .collect()
        })
        .unwrap_or_default()
}

fn everyone() -> BTreeSet<String> {
    (0..HOLDERS)
        .map(holder)
        .chain([CHURNER.to_owned()])
        .collect()
}

#[test]
fn quiet_clients_are_written_in_full_reports_only() {
    let _serial = serial();
    let redis = Redis::start_on(port_below_ephemeral(), &[]);
    let held = hold(&redis);
    let churner = Churner::start(&redis);
    // The last report 250 ms after the last interval's: the churner moved in it.
    let lines = watch(redis.port, "4750ms", &["--full-every", "1750ms"]);
    let made = churner.stop();

    let reports: Vec<Value> = lines.iter().map(|l| parse(l)).collect();
    // 4.75 s at 500 ms, and the last report (fewer when a loaded machine delays ticks).
    assert!(
        (6..=12).contains(&reports.len()),
        "{} reports",
        reports.len()
    );
    // Full at the first report and once 1.75 s of uptime have passed since the
    // last full one; recomputed here from the reports' own uptimes (µs).
    let mut last_full: Option<i64> = None;
    let mut expected_modes = Vec::new();
    for r in &reports {
        let uptime = (r["uptime_s"].as_f64().expect("uptime_s") * 1e6).round() as i64;
        let full = last_full.is_none_or(|t| uptime - t >= 1_750_000);
        if full {
            last_full = Some(uptime);
        }
        expected_modes.push(if full { "full" } else { "changed" });
    }
    let modes: Vec<&str> = reports
        .iter()
        .map(|r| r["clients_mode"].as_str().expect("clients_mode"))
        .collect();
    assert_eq!(modes, expected_modes);
    // Reports come every 500 ms for 4.75 s: full at the first (t), the fourth after
    // it (t + 2 s) and the eighth (t + 4 s); the last report, at t + 4.25 s, is not.
    assert_eq!(
        modes.iter().filter(|&&m| m == "full").count(),
        3,
        "{modes:?}"
    );

    let mut rebuilt = Rebuilt::default();
    for (i, r) in reports.iter().enumerate() {
        assert_eq!(
            r["totals"]["clients"],
            201,
            "report {i}: {:?}",
            strangers(r)
        );
        assert_eq!(r["clients_gone"], json!([]), "report {i}");
        if modes[i] == "full" {
            // Every row: the 200 holders, healthy and unchanged, and the churner.
            assert_eq!(addrs(r), everyone(), "report {i}");
            assert_eq!(r["clients_omitted"], 0, "report {i}");
            for c in r["clients"].as_array().expect("clients[]") {
                if c["addr"] != CHURNER {
                    // Sparse: a holder's zeros are left out (the reader puts
                    // the defaults back), its figures written.
                    for zero in ["opened", "closed", "reset", "rejected", "server_closes"] {
                        assert!(c.get(zero).is_none(), "report {i}: {zero} in {c}");
                    }
                    assert_eq!((&c["open"], &c["seeded"]), (&json!(1), &json!(1)), "{c}");
                }
                let c = &densify(c);
                if c["addr"] != CHURNER {
                    // Seeded (older than the agent), one PING and its +PONG.
                    let figures = [
                        "open",
                        "seeded",
                        "opened",
                        "closed",
                        "bytes_in",
                        "bytes_out",
                    ]
                    .map(|k| c[k].as_u64());
                    let want = [1, 1, 0, 0, 14, 7].map(Some);
                    assert_eq!(figures, want, "report {i}: {c}");
                    assert_eq!(c["verdict"], "healthy", "report {i}: {c}");
                }
            }
        } else {
            // Only the churner moved: the 200 holders are left out.
            assert_eq!(addrs(r), BTreeSet::from([CHURNER.to_owned()]), "report {i}");
            assert_eq!(r["clients_omitted"], 200, "report {i}");
            // A fraction of a full line.
            assert!(
                lines[i].len() * 20 < lines[0].len(),
                "report {i}: {} bytes against {} for every row",
                lines[i].len(),
                lines[0].len()
            );
        }
        // A reader rebuilds all 201 rows from either form.
        assert_eq!(addrs(&rebuilt.apply(r)), everyone(), "report {i}");
    }
    // The churner's last row counts what it did while watched.
    let churned = rebuilt.apply(reports.last().expect("a report"));
    let row = churned["clients"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["addr"] == CHURNER))
        .expect("the churner's row");
    let opened = row["opened"].as_u64().expect("opened");
    assert!(
        opened > 100 && opened <= u64::from(made),
        "opened {opened} of {made}"
    );
    eprintln!(
        "full line {} bytes, changed lines {:?} bytes",
        lines[0].len(),
        lines
            .iter()
            .zip(&modes)
            .filter(|(_, m)| **m == "changed")
            .map(|(l, _)| l.len())
            .collect::<Vec<_>>()
    );
    drop(held);
}

#[test]
fn clients_all_writes_every_row_every_time() {
    let _serial = serial();
    let redis = Redis::start_on(port_below_ephemeral(), &[]);
    let held = hold(&redis);
    let churner = Churner::start(&redis);
    let lines = watch(
        redis.port,
        "3s",
        &["--clients", "all", "--full-every", "1s"],
    );
    churner.stop();

    // 3 s at 500 ms, and the last report (fewer when a loaded machine delays ticks).
    assert!((3..=8).contains(&lines.len()), "{} reports", lines.len());
    for (i, line) in lines.iter().enumerate() {
        let r = parse(line);
        assert_eq!(r["clients_mode"], "full", "report {i}");
        assert_eq!(r["clients_omitted"], 0, "report {i}");
        assert_eq!(r["clients_gone"], json!([]), "report {i}");
        assert_eq!(
            r["totals"]["clients"],
            201,
            "report {i}: {:?}",
            strangers(&r)
        );
        assert_eq!(addrs(&r), everyone(), "report {i}");
    }
    drop(held);
}
