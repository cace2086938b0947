//! `--debug-probes`: the kernel programs log, through aya-log, what they could not
//! handle. The one condition a test can cause for real is a full ring buffer: the
//! agent is stopped (SIGSTOP) while a bounded burst of connections sends it more
//! records than the ring holds. With the flag the loss is logged; without it the
//! same loss logs nothing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use connwatch_tests::{Agent, Redis, burst, pause, serial};

const WAIT: Duration = Duration::from_secs(15);

/// Connections made while the agent is stopped: two records each (open, close),
/// 80,000 records of 72 bytes, where 4 MiB holds about 57,400 in batches of 16 (a
/// record header per batch) and 52,000 written alone.
const STOPPED_CONNECTIONS: u32 = 40_000;
const STOPPED_THREADS: u32 = 4;

/// The log target of the programs' lines.
const KERNEL_TARGET: &str = "connwatch::kernel";
/// Records a CPU writes to the ring buffer at once (a batch): what one failed write
/// loses.
const BATCH: u64 = 16;

/// Stops the agent, opens and closes [`STOPPED_CONNECTIONS`] connections from
/// addresses under 127.`base`, and lets the agent go on.
fn burst_while_stopped(agent: &Agent, server: SocketAddr, base: u8) {
    let pid = agent.pid() as libc::pid_t;
    // SAFETY: kill(2) on the agent's pid, our own child, still running.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let made = burst(server, base, STOPPED_THREADS, STOPPED_CONNECTIONS);
    assert_eq!(made, STOPPED_CONNECTIONS, "the burst finished in time");
    pause(200);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
}

/// The agent's log lines from the kernel programs.
fn kernel_lines(agent: &Agent) -> Vec<String> {
    agent
        .stderr()
        .lines()
        .filter(|l| l.contains(KERNEL_TARGET))
        .map(str::to_owned)
        .collect()
}

/// The number a "… N lost on this CPU so far" line reports.
fn lost_so_far(line: &str) -> u64 {
    let (_, rest) = line
        .split_once("records dropped, ")
        .unwrap_or_else(|| panic!("not a ring-full line: {line}"));
    rest.strip_suffix(" lost on this CPU so far")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a ring-full line: {line}"))
}

/// Instructions the verifier walked in the agent's programs, from
/// /proc/PID/fdinfo (`verified_insns`, kernel 5.16+).
fn verified_insns(agent: &Agent) -> u64 {
    let dir = format!("/proc/{}/fdinfo", agent.pid());
    let mut total = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let Ok(text) = std::fs::read_to_string(entry.expect("fdinfo entry").path()) else {
            continue;
        };
        // A link's fdinfo names its program too.
        if text.contains("link_id:") || !text.contains("prog_id:") {
            continue;
        }
        total += text
            .lines()
            .find_map(|l| {
                l.strip_prefix("verified_insns:")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no verified_insns in a program's fdinfo:\n{text}"));
    }
    total
}

#[test]
fn a_full_ring_buffer_is_logged_with_debug_probes_and_silent_without() {
    let _serial = serial();
    let redis = Redis::start();
    let server = redis.addr();

    // With the flag: a line each time a CPU's losses reach 1, 2, 4, 8 …, at debug
    // level under the kernel's target, shown without -v.
    let mut agent = Agent::watch_with(&[redis.port], &["--no-redis", "--debug-probes"], &[]);
    let insns_on = verified_insns(&agent);
    burst_while_stopped(&agent, server, 30);
    let report = agent.wait_for("records lost", WAIT, |r| {
        r["totals"]["lost_events"].as_u64().unwrap_or(0) > 0
    });
    let lost = report["totals"]["lost_events"].as_u64().unwrap();
    let deadline = Instant::now() + WAIT;
    // The first loss on a CPU: one record, or one batch.
    while !kernel_lines(&agent)
        .iter()
        .any(|l| (1..=BATCH).contains(&lost_so_far(l)))
    {
        assert!(
            Instant::now() < deadline,
            "no line for a CPU's first loss; stderr:\n{}",
            agent.stderr()
        );
        pause(50);
    }
    let lines = kernel_lines(&agent);
    for line in &lines {
        assert!(
            line.contains(&format!(
                " DEBUG {KERNEL_TARGET}] ring buffer EVENTS full: "
            )),
            "{line}"
        );
        // The total once it reached a power of two: past it by less than a batch.
        let n = lost_so_far(line);
        let reached = 1u64 << (u64::BITS - 1 - n.leading_zeros());
        assert!(n - reached < BATCH && n <= lost, "{line} (lost: {lost})");
    }
    // At most one line per power of two per CPU: a flood stays a few lines.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_cpu = u64::BITS - lost.leading_zeros();
    assert!(
        lines.len() <= cpus * per_cpu as usize,
        "{} lines for {lost} lost records on {cpus} CPUs:\n{}",
        lines.len(),
        lines.join("\n")
    );
    let (status, _) = agent.stop();
    assert!(status.success(), "{status}");

    // Without it: the same loss, counted, and not one line from the kernel. The
    // verifier saw the diagnostics' code was dead and did not even walk it (it
    // removes such code from what runs).
    let mut agent = Agent::watch_with(&[redis.port], &["--no-redis"], &[]);
    let insns_off = verified_insns(&agent);
    assert!(
        insns_off * 2 < insns_on,
        "verified instructions: {insns_off} without --debug-probes, {insns_on} with"
    );
    burst_while_stopped(&agent, server, 40);
    agent.wait_for("records lost", WAIT, |r| {
        r["totals"]["lost_events"].as_u64().unwrap_or(0) > 0
    });
    pause(500); // several drains of the (absent) log ring
    assert_eq!(kernel_lines(&agent), Vec::<String>::new());
    let (status, _) = agent.stop();
    assert!(status.success(), "{status}");
}
