//! `cargo xtask bench`: what connwatch costs Redis, measured side by side in one run.
//!
//! 1. redis-benchmark throughput and p99 with the agent attached vs detached, and
//!    with a bpftrace script doing the same per-connection tracing (the peer for
//!    kernel-side cost), with keep-alive (`-k 1`) and with a new connection per
//!    request (`-k 0`), in rounds of the three in rotating order; medians. Whether
//!    each target is met, and why not, is written from the figures.
//! 2. The alternative: with 5,000 and 10,000 idle connections, redis-benchmark p99
//!    while nothing watches, while a poller sends `CLIENT LIST` once per second,
//!    and while connwatch watches; plus one `CLIENT LIST` against one `INFO clients`.
//! 3. Churn: connect/PING/close from several threads for 10 s, detached and
//!    attached; connections/s, connwatch's `lost_events`, its CPU per 10,000 conn/s.
//! 4. Memory: connwatch's RSS with no, 5,000 and 10,000 idle connections, and the
//!    kernel memory of its maps.
//! 5. 100,000 connections from as many distinct addresses: peak RSS, addresses
//!    kept and evicted, events lost.
//! 6. Time from a connection opening to the first report that names it.
//! 7. What one connection event costs: each kernel program's ns per run beside the
//!    bpftrace peer's (each alone on the same churn, bpf_stats), and the agent's CPU
//!    per connection and per 10,000 connections/s, with their targets: over
//!    sections 3 and 5, and under the soak mix (200 held, a new random address per
//!    connection at 2,000/s, Redis connected) with the default and the unit's flags.
//! 8. The NDJSON stream's size, `--clients changed` (the default) against
//!    `--clients all`: 1,000 quiet clients, and a soak-like churn from random
//!    addresses; runnable alone with `cargo xtask bench --only ndjson`.
//! 9. Client mode (`watch --remote-port`) on an application host: the same churn
//!    detached, under server mode and under client mode; throughput ratio, the
//!    kernel program's ns/run, the agent's CPU per connection; runnable alone with
//!    `cargo xtask bench --only client-mode`.
//!
//! `--only kernel` and `--only soak` print part 7's kernel table or its agent rows
//! with many addresses (part 5's load and the soak mix)
//! alone, for iterating on either cost (docs/PERFORMANCE.md is left alone).
//!
//! Plus one keep-alive run with `kernel.bpf_stats_enabled=1` for the kernel-side cost.
//!
//! Everything runs on loopback against a scratch redis-server; connwatch runs as
//! `target/release/connwatch watch --format json --interval 1s --no-redis`.
//! The results, with the exact commands, go to stdout and docs/PERFORMANCE.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use socket2::{Domain, Socket, Type};

use crate::process;
use crate::redis::{self, ScratchRedis};

mod client_mode;
mod cost;

/// Requests per keep-alive redis-benchmark run, and per churn (`-k 0`) run.
const KEEPALIVE_REQUESTS: u32 = 200_000;
const CHURN_REQUESTS: u32 = 20_000;
const CLIENTS: u32 = 50;
/// How long one redis-benchmark run may take before it is killed.
const BENCH_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the churn phase runs, with how many client threads, and at most how
/// many connections each makes.
const CHURN_TIME: Duration = Duration::from_secs(10);
const CHURN_THREADS: u8 = 4;
const CHURN_PER_THREAD: u32 = 5_000_000;
/// Part 5: connections from distinct addresses, per thread, and the time bound.
const DISTINCT_PER_THREAD: u32 = 25_000;
const DISTINCT_TIME: Duration = Duration::from_secs(60);
/// connwatch's `client::MAX_ADDRESSES`, for the text (a test keeps them equal).
const MAX_ADDRESSES_DOC: usize = 20_000;
/// Part 6: connections timed from open to report.
const LATENCY_SAMPLES: u8 = 20;
/// How long connwatch may take to write its first report, and to exit on SIGINT.
const AGENT_READY: Duration = Duration::from_secs(30);
const AGENT_EXIT: Duration = Duration::from_secs(10);
/// Idle connections come from this many distinct 127.0.x.y addresses.
const IDLE_ADDRS: usize = 500;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Options {
    pub rounds: usize,
    pub idle: Vec<usize>,
    /// Run only this part (and splice its section into docs/PERFORMANCE.md).
    pub only: Option<Part>,
}

/// A part of the bench that can run alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Part 8: the NDJSON stream's size.
    Ndjson,
    /// Part 7's rows of the agent's CPU with many addresses (part 5's load and the
    /// soak mix; printed only, for iterating on the agent's cost;
    /// docs/PERFORMANCE.md is left alone).
    Soak,
    /// Part 7's kernel table (printed only, for iterating on the programs' cost).
    Kernel,
    /// Part 9: client mode's cost on an application host.
    ClientMode,
}

/// What runs beside Redis during a part-1 round.
#[derive(Clone, Copy, Debug)]
enum Cond {
    Detached,
    Attached,
    Bpftrace,
}

impl Cond {
    fn name(self) -> &'static str {
        match self {
            Cond::Detached => "detached",
            Cond::Attached => "connwatch",
            Cond::Bpftrace => "bpftrace",
        }
    }
}

/// The peer for kernel-side cost: the per-connection tracing a bpftrace user would
/// write for the same question (tcplife-style lifetimes, closes per client address,
/// failed accepts by errno), on the same tracepoints, filtered to the port.
pub fn bpftrace_script(port: u16) -> String {
    format!(
        "tracepoint:sock:inet_sock_set_state /args->protocol == 6 && args->sport == {port}/ {{\n\
         \x20 if (args->oldstate == 3 && args->newstate == 1) {{ @start[args->skaddr] = nsecs; @opened[ntop(args->daddr)] = count(); }}\n\
         \x20 if (args->oldstate == 1 && (args->newstate == 4 || args->newstate == 8 || args->newstate == 7)) {{\n\
         \x20   if (@start[args->skaddr]) {{ @life_us = hist((nsecs - @start[args->skaddr]) / 1000); delete(@start[args->skaddr]); }}\n\
         \x20   @closed[ntop(args->daddr), args->newstate] = count();\n\
         \x20 }}\n\
         }}\n\
         tracepoint:syscalls:sys_exit_accept4 /args->ret < 0/ {{ @accept_errors[-args->ret] = count(); }}\n\
         interval:s:1 {{ print(@opened); }}\n"
    )
}

/// bpftrace running [`bpftrace_script`]; SIGKILLed on drop.
struct Bpftrace {
    guard: Guard,
    pid: u32,
}

impl Bpftrace {
    fn start(port: u16, out: &Path) -> anyhow::Result<Self> {
        let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let child = Command::new("bpftrace")
            .args(["-e", &bpftrace_script(port)])
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting bpftrace (cargo xtask setup installs it)")?;
        let peer = Bpftrace {
            pid: child.id(),
            guard: Guard(Some(child)),
        };
        let start = Instant::now();
        while !fs::read_to_string(out)
            .unwrap_or_default()
            .contains("Attaching")
        {
            if start.elapsed() > AGENT_READY || process::interrupted() {
                bail!("bpftrace did not attach within {AGENT_READY:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // "Attaching N probes..." precedes the attachment itself.
        std::thread::sleep(Duration::from_millis(500));
        Ok(peer)
    }

    /// Stops it; returns its peak RSS (KiB).
    fn stop(mut self) -> anyhow::Result<Option<u64>> {
        let hwm = fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|s| status_field_kib(&s, "VmHWM"));
        if let Ok(pid) = libc::pid_t::try_from(self.pid) {
            // SAFETY: kill(2) on our own child's pid, which we have not waited for yet.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let start = Instant::now();
        if let Some(child) = self.guard.0.as_mut() {
            while child.try_wait()?.is_none() && start.elapsed() < AGENT_EXIT {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(hwm)
    }
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    if !process::is_root() {
        bail!("cargo xtask bench needs root (connwatch loads BPF programs); run it with sudo");
    }
    process::catch_interrupts()?;
    let started = Instant::now();
    let nofile = raise_nofile()?;
    let max_idle = opts.idle.iter().copied().max().unwrap_or(0);
    if max_idle + 200 > usize::try_from(nofile).unwrap_or(usize::MAX) {
        bail!("{max_idle} idle connections need more than the open-file limit {nofile}");
    }
    process::build_agent(true)?;
    let bin = process::target_dir().join("release").join("connwatch");
    if !bin.is_file() {
        bail!("{} is missing after the build", bin.display());
    }
    let redis = ScratchRedis::start_with(&["--maxclients", "16000"])
        .context("starting the scratch redis-server")?;
    let port = redis.port();
    say(&format!(
        "bench: scratch redis-server (pid {}) on 127.0.0.1:{port}, open-file limit {nofile}",
        redis.pid()
    ));
    if opts.only == Some(Part::Ndjson) {
        let section = ndjson(&bin, port, redis.dir())?.markdown();
        drop(redis);
        println!("{section}");
        let path = process::repo_root().join("docs").join("PERFORMANCE.md");
        let doc = fs::read_to_string(&path).unwrap_or_default();
        fs::write(&path, splice_section(&doc, NDJSON_HEADING, &section))
            .with_context(|| format!("writing {}", path.display()))?;
        say(&format!(
            "bench: wrote section 8 of {} ({:.0} s)",
            path.display(),
            started.elapsed().as_secs_f64()
        ));
        return Ok(());
    }
    if opts.only == Some(Part::Soak) {
        let d = distinct(&bin, port, redis.dir().join("connwatch-distinct.ndjson"))?;
        let rate = d.rate();
        match cost::agent_cost(d.cpu, rate) {
            Some((us, per10k)) => println!(
                "part 5 (every connection from a new address): {rate:.0} conn/s, {:.1} % of a core, {us:.2} µs per connection, {per10k:.2} % per 10k conn/s; opened {}, lost events {}",
                d.cpu.unwrap_or(0.0) * 100.0,
                num(d.opened.map(|n| n as f64), 0),
                num(d.lost.map(|n| n as f64), 0),
            ),
            None => println!("part 5: no CPU figure"),
        }
        let file = || redis.dir().join("connwatch-soak.ndjson");
        for c in soak_cpu_rounds(&bin, port, file)? {
            match cost::agent_cost(c.cpu, c.rate) {
                Some((us, per10k)) => println!(
                    "{}: {:.0} conn/s, {:.1} % of a core, {us:.2} µs per connection (rounds: {}), {per10k:.2} % per 10k conn/s; idle after: {:.2} % of a core",
                    c.label,
                    c.rate,
                    c.cpu.unwrap_or(0.0) * 100.0,
                    c.rounds(),
                    c.idle.unwrap_or(0.0) * 100.0
                ),
                None => println!("{}: no CPU figure", c.label),
            }
        }
        return Ok(());
    }
    if opts.only == Some(Part::Kernel) {
        let mut seq = 0u32;
        let k = cost::measure_kernel(&bin, port, opts.rounds, || {
            seq += 1;
            redis.dir().join(format!("connwatch-k{seq}.ndjson"))
        })?;
        let mut s = String::new();
        k.table(&mut s);
        println!("{s}");
        return Ok(());
    }
    if opts.only == Some(Part::ClientMode) {
        let mut seq = 0u32;
        let section = client_mode::measure(&bin, port, opts.rounds, || {
            seq += 1;
            redis.dir().join(format!("connwatch-c{seq}.ndjson"))
        })?
        .markdown();
        drop(redis);
        println!("{section}");
        let path = process::repo_root().join("docs").join("PERFORMANCE.md");
        let doc = fs::read_to_string(&path).unwrap_or_default();
        fs::write(&path, splice_section(&doc, client_mode::HEADING, &section))
            .with_context(|| format!("writing {}", path.display()))?;
        say(&format!("bench: wrote section 9 of {}", path.display()));
        return Ok(());
    }
    let mut out = Results {
        nofile,
        ..Results::default()
    };
    let mut seq = 0u32;
    let mut agent_file = |dir: &Path| {
        seq += 1;
        dir.join(format!("connwatch-{seq}.ndjson"))
    };

    // 1. Detached vs connwatch vs a bpftrace peer, in rotating order per round.
    let conds = [Cond::Detached, Cond::Attached, Cond::Bpftrace];
    for round in 0..opts.rounds {
        for i in 0..conds.len() {
            check_interrupted()?;
            let cond = conds[(i + round) % conds.len()];
            say(&format!(
                "bench: part 1 round {} ({})",
                round + 1,
                cond.name()
            ));
            let agent = match cond {
                Cond::Attached => Some(Agent::start(&bin, port, agent_file(redis.dir()))?),
                _ => None,
            };
            let peer = match cond {
                Cond::Bpftrace => Some(Bpftrace::start(port, &agent_file(redis.dir()))?),
                _ => None,
            };
            let ticks0 = agent.as_ref().and_then(|a| cpu_ticks(a.pid()));
            let t0 = Instant::now();
            let keep = redis_benchmark(port, &["-t", "ping,set"], 1, KEEPALIVE_REQUESTS)?;
            let ticks1 = agent.as_ref().and_then(|a| cpu_ticks(a.pid()));
            let t1 = Instant::now();
            let churn_rows = redis_benchmark(port, &["-t", "ping,set"], 0, CHURN_REQUESTS)?;
            let ticks2 = agent.as_ref().and_then(|a| cpu_ticks(a.pid()));
            let cpu = |a: Option<u64>, b: Option<u64>, since: Instant| {
                a.zip(b).map(|(a, b)| {
                    b.saturating_sub(a) as f64 / clock_ticks() / since.elapsed().as_secs_f64()
                })
            };
            if let Some(c) = cpu(ticks0, ticks1, t0) {
                out.agent_cpu_keepalive.push(c);
            }
            if let Some(c) = cpu(ticks1, ticks2, t1) {
                out.agent_cpu_churn.push(c);
            }
            let runs = match cond {
                Cond::Detached => &mut out.detached,
                Cond::Attached => &mut out.attached,
                Cond::Bpftrace => &mut out.bpftrace,
            };
            runs.push_runs("keep-alive", &keep);
            runs.push_runs("churn", &churn_rows);
            if let Some(agent) = agent {
                if let Some(rss) = agent.rss_kib() {
                    out.rss_base.push(rss as f64);
                }
                if let Some(kib) = map_memlock_kib(agent.pid()) {
                    out.map_kib = Some(kib);
                }
                let ndjson = agent.stop()?;
                out.lost_part1 += max_field(&ndjson, "lost_events").unwrap_or(0);
            }
            if let Some(peer) = peer
                && let Some(kib) = peer.stop()?
            {
                out.bpftrace_hwm_kib.push(kib as f64);
            }
        }
    }

    // Kernel-side cost: one extra keep-alive run with kernel.bpf_stats_enabled=1 (not
    // counted above: the statistics themselves cost a little per program run).
    check_interrupted()?;
    say("bench: kernel-side cost of connwatch's BPF programs (bpf_stats, one keep-alive run)");
    {
        let stats = BpfStats::enable()?;
        let agent = Agent::start(&bin, port, agent_file(redis.dir()))?;
        let before = prog_stats(agent.pid());
        let t0 = Instant::now();
        let rows = redis_benchmark(port, &["-t", "ping,set"], 1, KEEPALIVE_REQUESTS)?;
        let secs = t0.elapsed().as_secs_f64();
        let after = prog_stats(agent.pid());
        agent.stop()?;
        drop(stats);
        out.bpf = Some(BpfCost {
            runs: after.1.saturating_sub(before.1),
            ns: after.0.saturating_sub(before.0),
            secs,
            requests: u64::from(KEEPALIVE_REQUESTS) * rows.len() as u64,
        });
    }

    // 7. Per-event costs in the kernel: connwatch and the peer, each alone.
    check_interrupted()?;
    out.kernel = Some(cost::measure_kernel(&bin, port, opts.rounds, || {
        agent_file(redis.dir())
    })?);

    // 3. Churn, detached then attached.
    for attached in [false, true] {
        check_interrupted()?;
        say(&format!(
            "bench: part 3 churn for {} s ({})",
            CHURN_TIME.as_secs(),
            if attached { "attached" } else { "detached" }
        ));
        let agent = if attached {
            Some(Agent::start(&bin, port, agent_file(redis.dir()))?)
        } else {
            None
        };
        let ticks0 = agent.as_ref().and_then(|a| cpu_ticks(a.pid()));
        let t0 = Instant::now();
        let (ok, errors) = churn(port, CHURN_TIME, CHURN_PER_THREAD, churn_source)?;
        let secs = t0.elapsed().as_secs_f64();
        let ticks1 = agent.as_ref().and_then(|a| cpu_ticks(a.pid()));
        let rate = ok as f64 / secs;
        let time_wait = fs::read_to_string("/proc/net/sockstat")
            .ok()
            .and_then(|t| sockstat_time_wait(&t));
        if let Some(agent) = agent {
            // One more report after the churn, so the totals cover all of it.
            std::thread::sleep(Duration::from_millis(1500));
            let ndjson = agent.stop()?;
            out.churn_attached = Some(ChurnResult {
                rate,
                errors,
                lost: max_field(&ndjson, "lost_events"),
                opened: max_field(&ndjson, "opened"),
                connections: ok,
                time_wait,
                cpu: ticks0
                    .zip(ticks1)
                    .map(|(a, b)| (b.saturating_sub(a)) as f64 / clock_ticks() / secs),
            });
        } else {
            out.churn_detached = Some(ChurnResult {
                rate,
                errors,
                connections: ok,
                ..ChurnResult::default()
            });
        }
    }

    // 4's baseline: a fresh agent with no connection to watch.
    {
        let agent = Agent::start(&bin, port, agent_file(redis.dir()))?;
        out.rss_fresh = agent.rss_kib();
        agent.stop()?;
    }

    // 2 and 4. Idle connections: nothing vs CLIENT LIST poller vs connwatch.
    let mut idle: Vec<TcpStream> = Vec::new();
    let mut levels = opts.idle.clone();
    levels.sort_unstable();
    for n in levels {
        check_interrupted()?;
        say(&format!("bench: part 2 opening idle connections up to {n}"));
        open_idle(port, n, &mut idle)?;
        wait_clients(port, n)?;
        let mut level = IdleLevel {
            conns: n,
            ..IdleLevel::default()
        };
        redis::command(port, &["CONFIG", "RESETSTAT"])?;
        for _ in 0..10 {
            level
                .client_list_us
                .push(time_command(port, &["CLIENT", "LIST"])?);
            level
                .info_clients_us
                .push(time_command(port, &["INFO", "clients"])?);
        }
        let stats = redis::command(port, &["INFO", "commandstats"])?;
        level.client_list_usec_per_call = usec_per_call(&stats, "client|list");
        level.info_usec_per_call = usec_per_call(&stats, "info");
        let conds = ["none", "poller", "connwatch"];
        for round in 0..opts.rounds {
            for i in 0..conds.len() {
                check_interrupted()?;
                let cond = conds[(i + round) % conds.len()];
                say(&format!(
                    "bench: part 2, {n} idle, round {}: {cond}",
                    round + 1
                ));
                let rows = match cond {
                    "poller" => {
                        let poller = Poller::start(port)?;
                        let rows = redis_benchmark(port, &["-t", "ping"], 1, KEEPALIVE_REQUESTS);
                        level.poll_us.extend(poller.stop());
                        rows?
                    }
                    "connwatch" => {
                        let agent = Agent::start(&bin, port, agent_file(redis.dir()))?;
                        let ticks0 = cpu_ticks(agent.pid());
                        let t0 = Instant::now();
                        let rows = redis_benchmark(port, &["-t", "ping"], 1, KEEPALIVE_REQUESTS)?;
                        if let Some((a, b)) = ticks0.zip(cpu_ticks(agent.pid())) {
                            level.agent_cpu.push(
                                b.saturating_sub(a) as f64
                                    / clock_ticks()
                                    / t0.elapsed().as_secs_f64(),
                            );
                        }
                        if let Some(rss) = agent.rss_kib() {
                            level.rss.push(rss as f64);
                        }
                        let ndjson = agent.stop()?;
                        level.agent_open = level.agent_open.max(max_field(&ndjson, "open"));
                        level.lost += max_field(&ndjson, "lost_events").unwrap_or(0);
                        rows
                    }
                    _ => redis_benchmark(port, &["-t", "ping"], 1, KEEPALIVE_REQUESTS)?,
                };
                level.runs.entry(cond).or_default().push_runs("ping", &rows);
            }
        }
        out.idle.push(level);
    }
    drop(idle);

    // 5. Connection attempts from many distinct addresses: bounded memory.
    check_interrupted()?;
    say(&format!(
        "bench: part 5, up to {} connections from as many distinct addresses",
        DISTINCT_PER_THREAD as usize * CHURN_THREADS as usize
    ));
    out.distinct = Some(distinct(&bin, port, agent_file(redis.dir()))?);

    // 6. From a connection opening to the first report that shows it.
    check_interrupted()?;
    say("bench: part 6, time from a connection to its report");
    {
        let agent = Agent::start(&bin, port, agent_file(redis.dir()))?;
        for i in 0..LATENCY_SAMPLES {
            check_interrupted()?;
            let source = Ipv4Addr::new(127, 0, 201, i + 1);
            let needle = format!("\"addr\":\"{source}\"");
            let conn = connect_from(source, port)?;
            let t0 = Instant::now();
            loop {
                let text = fs::read_to_string(&agent.file).unwrap_or_default();
                if text.contains(&needle) {
                    out.latency_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
                    break;
                }
                if t0.elapsed() > Duration::from_secs(10) {
                    bail!("no report showed {source} within 10 s");
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            drop(conn);
            // The next sample starts at another point of the interval.
            std::thread::sleep(Duration::from_millis(137));
        }
        agent.stop()?;
    }

    // 7. The agent's CPU under the soak mix (section 7's table).
    out.soak_cpu = soak_cpu_rounds(&bin, port, || agent_file(redis.dir()))?;

    // 8. The NDJSON stream's size.
    check_interrupted()?;
    out.ndjson = Some(ndjson(&bin, port, redis.dir())?);

    // 9. Client mode on an application host.
    check_interrupted()?;
    // Parts 7 and 8 leave up to the host's bound of TIME_WAIT sockets; part 9's
    // first churn from 127.0.0.1 failed after them once.
    settle_time_wait()?;
    out.client_mode = Some(client_mode::measure(&bin, port, opts.rounds, || {
        agent_file(redis.dir())
    })?);

    drop(redis);
    out.elapsed = started.elapsed();

    let report = out.markdown();
    let report = report + "\n" + &scan_time_section();
    println!("{report}");
    let path = process::repo_root().join("docs").join("PERFORMANCE.md");
    fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    say(&format!("bench: wrote {}", path.display()));
    Ok(())
}

fn say(msg: &str) {
    eprintln!("{msg}");
}

fn check_interrupted() -> anyhow::Result<()> {
    if process::interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; children (redis-server) inherit it.
fn raise_nofile() -> anyhow::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid resource and a valid pointer to an rlimit we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: as above; raising the soft limit up to the hard one needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
    }
    Ok(lim.rlim_cur)
}

// ---------------------------------------------------------------------------
// Pure parts: parsing and statistics.

/// One line of `redis-benchmark --csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub test: String,
    pub rps: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Parses `redis-benchmark --csv` output: a header naming the columns, then one
/// quoted line per test. Lines that are not rows (warnings) are skipped.
pub fn parse_csv(text: &str) -> anyhow::Result<Vec<Row>> {
    let split = |line: &str| -> Vec<String> {
        line.trim()
            .split(',')
            .map(|f| f.trim().trim_matches('"').to_owned())
            .collect()
    };
    let mut lines = text.lines().filter(|l| l.trim_start().starts_with('"'));
    let header = split(
        lines
            .next()
            .ok_or_else(|| anyhow!("no CSV header in {text:?}"))?,
    );
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| anyhow!("no column {name:?} in the CSV header {header:?}"))
    };
    let (test_i, rps_i, p99_i) = (col("test")?, col("rps")?, col("p99_latency_ms")?);
    let max_i = col("max_latency_ms")?;
    let mut rows = Vec::new();
    for line in lines {
        let fields = split(line);
        let get = |i: usize| {
            fields
                .get(i)
                .ok_or_else(|| anyhow!("short CSV line {line:?}"))
        };
        let num = |i: usize| -> anyhow::Result<f64> {
            get(i)?
                .parse()
                .with_context(|| format!("bad number in CSV line {line:?}"))
        };
        rows.push(Row {
            test: get(test_i)?.clone(),
            rps: num(rps_i)?,
            p99_ms: num(p99_i)?,
            max_ms: num(max_i)?,
        });
    }
    if rows.is_empty() {
        bail!("no results in redis-benchmark output {text:?}");
    }
    Ok(rows)
}

/// The median; the mean of the middle two for an even count; None when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

/// `a / b` with three decimals, or "n/a".
/// (max − min) / 2 / median of `values`; `None` for fewer than two.
pub fn spread(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    median(values)
        .filter(|m| *m > 0.0)
        .map(|m| (max - min) / 2.0 / m)
}

pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.3}", a / b),
        _ => "n/a".to_owned(),
    }
}

/// A number with `decimals` decimals, or "n/a".
pub fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.decimals$}"))
}

/// The largest value of the integer field `"key":N` over all lines of NDJSON
/// (the totals are cumulative, so the largest is the last).
pub fn max_field(ndjson: &str, key: &str) -> Option<u64> {
    ndjson.lines().filter_map(|line| field_of(line, key)).max()
}

/// The first integer `"key":N` of the last NDJSON line that has one.
pub fn last_field(ndjson: &str, key: &str) -> Option<u64> {
    ndjson.lines().rev().find_map(|line| field_of(line, key))
}

fn field_of(line: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let rest = &line[line.find(&pat)? + pat.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse::<u64>().ok()
}

/// utime + stime (clock ticks) from the text of /proc/PID/stat.
pub fn stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS in KiB from the text of /proc/PID/status.
pub fn status_rss_kib(status: &str) -> Option<u64> {
    status_field_kib(status, "VmRSS")
}

/// A `Vm…:` figure (KiB) of /proc/PID/status.
pub fn status_field_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// `usec_per_call` of one command from `INFO commandstats`.
pub fn usec_per_call(info: &str, command: &str) -> Option<f64> {
    let prefix = format!("cmdstat_{command}:");
    info.lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))?
        .split(',')
        .find_map(|kv| kv.strip_prefix("usec_per_call="))
        .and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------------------
// Results.

/// Per (mode, test): the throughputs and p99s of every run.
#[derive(Debug, Default)]
struct Runs(BTreeMap<(String, String), Samples>);

/// Throughputs, p99s and maxima, one per run.
type Samples = (Vec<f64>, Vec<f64>, Vec<f64>);

impl Runs {
    fn push_runs(&mut self, mode: &str, rows: &[Row]) {
        for row in rows {
            let e = self
                .0
                .entry((mode.to_owned(), row.test.clone()))
                .or_default();
            e.0.push(row.rps);
            e.1.push(row.p99_ms);
            e.2.push(row.max_ms);
        }
    }

    fn rps(&self, mode: &str, test: &str) -> Option<f64> {
        self.0
            .get(&(mode.to_owned(), test.to_owned()))
            .and_then(|e| median(&e.0))
    }

    fn p99(&self, mode: &str, test: &str) -> Option<f64> {
        self.0
            .get(&(mode.to_owned(), test.to_owned()))
            .and_then(|e| median(&e.1))
    }

    fn max(&self, mode: &str, test: &str) -> Option<f64> {
        self.0
            .get(&(mode.to_owned(), test.to_owned()))
            .and_then(|e| median(&e.2))
    }

    /// Half the range of the throughputs over their median: how much runs of one
    /// condition differ from each other (the noise a ratio has to beat).
    fn spread(&self, mode: &str, test: &str) -> Option<f64> {
        let e = self.0.get(&(mode.to_owned(), test.to_owned()))?;
        spread(&e.0)
    }

    /// The median over rounds of this condition's throughput over `base`'s in the
    /// same round (runs are pushed one per round, in round order).
    fn paired_ratio(&self, base: &Runs, mode: &str, test: &str) -> Option<f64> {
        let key = (mode.to_owned(), test.to_owned());
        let (mine, theirs) = (&self.0.get(&key)?.0, &base.0.get(&key)?.0);
        let ratios: Vec<f64> = mine
            .iter()
            .zip(theirs)
            .filter(|(_, b)| **b > 0.0)
            .map(|(a, b)| a / b)
            .collect();
        median(&ratios)
    }

    /// The lowest and highest throughput over the runs.
    fn range(&self, mode: &str, test: &str) -> Option<(f64, f64)> {
        let e = self.0.get(&(mode.to_owned(), test.to_owned()))?;
        let min = e.0.iter().copied().reduce(f64::min)?;
        let max = e.0.iter().copied().reduce(f64::max)?;
        Some((min, max))
    }

    fn count(&self, mode: &str, test: &str) -> usize {
        self.0
            .get(&(mode.to_owned(), test.to_owned()))
            .map_or(0, |e| e.0.len())
    }

    fn keys(&self) -> Vec<(String, String)> {
        self.0.keys().cloned().collect()
    }
}

/// What connwatch's BPF programs cost during one keep-alive run (bpf_stats).
#[derive(Debug)]
struct BpfCost {
    runs: u64,
    ns: u64,
    secs: f64,
    requests: u64,
}

#[derive(Debug, Default)]
struct ChurnResult {
    rate: f64,
    errors: u64,
    connections: u64,
    lost: Option<u64>,
    opened: Option<u64>,
    /// TIME_WAIT sockets on the host at the end (/proc/net/sockstat).
    time_wait: Option<u64>,
    /// CPU seconds per second of wall time.
    cpu: Option<f64>,
}

#[derive(Debug, Default)]
struct IdleLevel {
    conns: usize,
    client_list_us: Vec<f64>,
    info_clients_us: Vec<f64>,
    client_list_usec_per_call: Option<f64>,
    info_usec_per_call: Option<f64>,
    poll_us: Vec<f64>,
    runs: BTreeMap<&'static str, Runs>,
    rss: Vec<f64>,
    /// connwatch's CPU during its runs (seconds per second).
    agent_cpu: Vec<f64>,
    agent_open: Option<u64>,
    lost: u64,
}

/// Part 5: connections from as many distinct addresses, with the agent attached.
fn distinct(bin: &Path, port: u16, file: PathBuf) -> anyhow::Result<DistinctResult> {
    let agent = Agent::start(bin, port, file)?;
    let before = agent.hwm_kib();
    let ticks0 = cpu_ticks(agent.pid());
    let t0 = Instant::now();
    let (ok, errors) = churn(port, DISTINCT_TIME, DISTINCT_PER_THREAD, distinct_source)?;
    let secs = t0.elapsed().as_secs_f64();
    // The agent drains and reports what the churn left after it ends: its CPU is
    // counted up to the report after the last connection (the idle floor of these
    // 1.5 s, a few ms, is in it too).
    std::thread::sleep(Duration::from_millis(1500));
    let ticks1 = cpu_ticks(agent.pid());
    let after = agent.hwm_kib();
    let maps = map_memlock_kib(agent.pid());
    let ndjson = agent.stop()?;
    Ok(DistinctResult {
        connections: ok,
        errors,
        secs,
        hwm_before_kib: before,
        hwm_after_kib: after,
        map_kib: maps,
        clients: last_field(&ndjson, "clients"),
        evicted: last_field(&ndjson, "evicted_clients"),
        opened: last_field(&ndjson, "opened"),
        lost: last_field(&ndjson, "lost_events"),
        cpu: ticks0
            .zip(ticks1)
            .map(|(a, b)| b.saturating_sub(a) as f64 / clock_ticks() / secs),
    })
}

/// Part 5: many distinct addresses.
#[derive(Debug, Default)]
struct DistinctResult {
    connections: u64,
    errors: u64,
    secs: f64,
    hwm_before_kib: Option<u64>,
    hwm_after_kib: Option<u64>,
    map_kib: Option<u64>,
    clients: Option<u64>,
    evicted: Option<u64>,
    opened: Option<u64>,
    lost: Option<u64>,
    /// connwatch's CPU seconds from the churn's start to the report after its
    /// end (1.5 s later), per second of churn.
    cpu: Option<f64>,
}

impl DistinctResult {
    /// Connections a second over the churn (0 if it took no time).
    fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.connections as f64 / self.secs
        } else {
            0.0
        }
    }
}

#[derive(Debug, Default)]
struct Results {
    /// Part 7: the kernel programs' ns/run, connwatch and the peer each alone.
    kernel: Option<cost::KernelCosts>,
    /// Part 9: client mode's cost.
    client_mode: Option<client_mode::ClientModeCosts>,
    nofile: u64,
    detached: Runs,
    attached: Runs,
    bpftrace: Runs,
    /// bpftrace's peak RSS per round (KiB).
    bpftrace_hwm_kib: Vec<f64>,
    /// Kernel memory of connwatch's maps (KiB).
    map_kib: Option<u64>,
    distinct: Option<DistinctResult>,
    /// Part 6: open-to-report times (ms).
    latency_ms: Vec<f64>,
    lost_part1: u64,
    /// connwatch's CPU (seconds per second) during the attached keep-alive and churn runs.
    agent_cpu_keepalive: Vec<f64>,
    agent_cpu_churn: Vec<f64>,
    bpf: Option<BpfCost>,
    rss_base: Vec<f64>,
    /// A fresh agent's RSS with no connection open (KiB).
    rss_fresh: Option<u64>,
    churn_detached: Option<ChurnResult>,
    churn_attached: Option<ChurnResult>,
    idle: Vec<IdleLevel>,
    /// Part 8.
    ndjson: Option<NdjsonResult>,
    /// Part 7: the agent's CPU under the soak mix, as a new user runs it and as
    /// the packaged unit does.
    soak_cpu: Vec<SoakCpu>,
    elapsed: Duration,
}

/// A part-1 throughput ratio under its target, with what it is judged against.
struct Miss {
    what: String,
    keepalive: bool,
    ratio: f64,
    target: f64,
    /// The bpftrace peer's ratio on the same runs.
    peer: Option<f64>,
    /// Lowest and highest throughput of the detached and the connwatch runs.
    detached: Option<(f64, f64)>,
    attached: Option<(f64, f64)>,
}

impl Miss {
    /// Whether the connwatch runs' throughputs overlap the detached runs': then
    /// this run cannot tell the two apart.
    fn overlaps(&self) -> bool {
        match (self.detached, self.attached) {
            (Some((d_min, d_max)), Some((a_min, a_max))) => a_max >= d_min && a_min <= d_max,
            _ => false,
        }
    }
}

fn met(r: Option<f64>, target: f64) -> &'static str {
    match r {
        Some(r) if r >= target => "met",
        Some(_) => "NOT met",
        None => "n/a",
    }
}

impl Results {
    /// What the part-1 targets came to in this run, and for each miss what the
    /// measurements say about it: within the run-to-run noise, shared with the
    /// bpftrace peer (the cost of tracing the transitions at all), or connwatch's own.
    fn targets_paragraph(&self, misses: &[Miss]) -> String {
        if misses.is_empty() {
            return "**Targets:** every throughput ratio meets its target in this run \
                    (≥ 0.99 with keep-alive, ≥ 0.97 under churn).\n"
                .to_owned();
        }
        let mut s = String::from("**Targets missed in this run, and why:**\n\n");
        let per_request = self
            .bpf
            .as_ref()
            .map(|b| b.runs as f64 / b.requests.max(1) as f64);
        for m in misses {
            let _ = write!(s, "- {}: {:.3} against ≥ {}.", m.what, m.ratio, m.target);
            if let (true, Some((d0, d1)), Some((a0, a1))) = (m.overlaps(), m.detached, m.attached) {
                let _ = write!(
                    s,
                    " Its runs overlap the detached ones (connwatch {a0:.0}–{a1:.0} rps, detached \
                     {d0:.0}–{d1:.0}): this run cannot tell them apart from run-to-run noise; more \
                     rounds (`--rounds`) narrow it."
                );
            }
            if m.keepalive {
                let _ = write!(
                    s,
                    " With keep-alive no connection opens or closes, so connwatch does nothing per \
                     request (its programs ran {} times per request; its process used {} % of a core)",
                    num(per_request, 4),
                    num(median(&self.agent_cpu_keepalive).map(|c| c * 100.0), 1),
                );
                match m.peer {
                    Some(peer) => {
                        let _ = write!(s, "; the bpftrace peer, as idle, measured {peer:.3}.");
                    }
                    None => s.push('.'),
                }
            } else {
                match m.peer {
                    Some(peer) if peer <= m.ratio + 0.01 => {
                        let _ = write!(
                            s,
                            " The bpftrace peer, tracing the same transitions, measured {peer:.3}: \
                             the cost is that of tracing connections at all on this 2-core VM, where \
                             the programs, Redis and the load generator share the cores."
                        );
                    }
                    Some(peer) => {
                        let _ = write!(
                            s,
                            " The bpftrace peer measured {peer:.3}: the difference is connwatch's own \
                             work per connection (two records, read by its process, which used {} % \
                             of a core during these runs).",
                            num(median(&self.agent_cpu_churn).map(|c| c * 100.0), 1),
                        );
                    }
                    None => {}
                }
            }
            s.push('\n');
        }
        if misses.iter().any(|m| !m.keepalive) {
            let tw = self
                .churn_attached
                .as_ref()
                .and_then(|c| c.time_wait)
                .map_or_else(|| "n/a".to_owned(), |n| n.to_string());
            let _ = writeln!(
                s,
                "\n**Plan for churn.** (1) The peer shows the floor here: tracing every connection's \
                 state changes costs this much on two cores that Redis, the load generator and the \
                 programs share (the programs run on the CPUs where the connections change state). \
                 Measure with the load coming from another machine, as it does in production, before \
                 optimizing further. (2) connwatch's own share is its process (section 3), and most of \
                 that is the sock_diag scan each interval, which walks every socket of the host — the \
                 load generator's TIME_WAIT sockets too ({tw} at the end of section 3's churn). On a \
                 Redis host those sit on the client machines; to make the scan independent of them, \
                 look up the known connections exactly (a sock_diag request per connection) or walk \
                 only the watched ports with a BPF socket iterator."
            );
        }
        if let Some(b) = &self.bpf {
            let _ = writeln!(
                s,
                "\nMeasured: the kernel programs cost {:.2} µs per keep-alive request ({:.2} runs per request); \
                 connwatch's process used {} % of a core during the churn runs. Under churn each connection \
                 costs one record at its open and one at its close, and one sock_diag scan per interval \
                 covers every open connection; nothing runs per message.",
                b.ns as f64 / 1e3 / b.requests.max(1) as f64,
                b.runs as f64 / b.requests.max(1) as f64,
                num(median(&self.agent_cpu_churn).map(|c| c * 100.0), 1),
            );
        }
        s
    }

    fn markdown(&self) -> String {
        let mut s = String::new();
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let _ = writeln!(s, "# connwatch performance\n");
        let _ = writeln!(
            s,
            "Generated by `sudo cargo xtask bench` (xtask/src/bench.rs) in {:.0} s on a **2-core VM** \
             (kernel {}, {}; open-file limit {}). Everything runs on loopback against a scratch \
             `redis-server` (`--maxclients 16000`, no persistence) on a free port (`PORT` below), \
             with the load generators on the same two cores, so absolute numbers are small and noisy; \
             the ratios are measured side by side in one run (interleaved rounds, medians).\n",
            self.elapsed.as_secs_f64(),
            kernel.trim(),
            redis_version(),
            self.nofile,
        );
        let _ = writeln!(
            s,
            "connwatch (attached) runs as `target/release/connwatch watch --format json --interval 1s \
             --no-redis -p PORT -o FILE` (built with `cargo build --release -p connwatch`), as root; \
             detached means not running (its programs are attached only while it runs).\n"
        );

        // Part 1.
        let _ = writeln!(
            s,
            "## 1. Redis with connwatch attached vs detached, and a bpftrace peer\n"
        );
        let _ = writeln!(
            s,
            "Commands, in rounds of detached, connwatch, bpftrace in rotating order ({} of each):\n\n\
             ```sh\nredis-benchmark -p PORT -t ping,set -q --csv --precision 3 -k 1 -c {CLIENTS} -n {KEEPALIVE_REQUESTS}   # keep-alive\n\
             redis-benchmark -p PORT -t ping,set -q --csv --precision 3 -k 0 -c {CLIENTS} -n {CHURN_REQUESTS}    # a new connection per request\n```\n\n\
             rps and p99 are medians over the rounds; **ratio** is the median over the rounds of the \
             throughput with connwatch (or bpftrace) over the detached run of the same round, which \
             cancels the machine's drift between rounds.\n",
            self.detached.count("keep-alive", "SET"),
        );
        let _ = writeln!(
            s,
            "| mode | test | rps detached | rps connwatch | **ratio** | rps bpftrace | ratio bpftrace | detached run-to-run ± | p99 ms detached | p99 ms connwatch | p99 ratio | target |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        let mut misses = Vec::new();
        for (mode, test) in self.detached.keys() {
            let d = self.detached.rps(&mode, &test);
            let a = self.attached.rps(&mode, &test);
            let b = self.bpftrace.rps(&mode, &test);
            let noise = self.detached.spread(&mode, &test);
            let target = if mode == "keep-alive" { 0.99 } else { 0.97 };
            // Each round runs the three conditions back to back: the ratio within a
            // round cancels the machine's slow drift, and the median over rounds
            // its outliers.
            let r = self.attached.paired_ratio(&self.detached, &mode, &test);
            let rb = self.bpftrace.paired_ratio(&self.detached, &mode, &test);
            if r.is_some_and(|r| r < target) {
                misses.push(Miss {
                    what: format!("{mode} {test}"),
                    keepalive: mode == "keep-alive",
                    ratio: r.unwrap_or(0.0),
                    target,
                    peer: rb,
                    detached: self.detached.range(&mode, &test),
                    attached: self.attached.range(&mode, &test),
                });
            }
            let _ = writeln!(
                s,
                "| {mode} | {test} | {} | {} | **{}** | {} | {} | {} | {} | {} | {} | ≥ {target} {} |",
                num(d, 0),
                num(a, 0),
                num(r, 3),
                num(b, 0),
                num(rb, 3),
                noise.map_or_else(|| "n/a".to_owned(), |n| format!("{:.1} %", n * 100.0)),
                num(self.detached.p99(&mode, &test), 3),
                num(self.attached.p99(&mode, &test), 3),
                ratio(
                    self.attached.p99(&mode, &test),
                    self.detached.p99(&mode, &test)
                ),
                met(r, target),
            );
        }
        let _ = writeln!(
            s,
            "\nconnwatch `totals.lost_events` over the attached rounds: {}. connwatch's own CPU \
             (utime+stime, median over the rounds) during the keep-alive runs: {} % of a core, \
             during the churn runs: {} %.\n",
            self.lost_part1,
            num(median(&self.agent_cpu_keepalive).map(|c| c * 100.0), 1),
            num(median(&self.agent_cpu_churn).map(|c| c * 100.0), 1),
        );

        if let Some(b) = &self.bpf {
            let per_run = if b.runs > 0 {
                b.ns as f64 / b.runs as f64
            } else {
                0.0
            };
            let _ = writeln!(
                s,
                "Kernel side, from one extra keep-alive run with `sysctl kernel.bpf_stats_enabled=1` \
                 (run_cnt and run_time_ns of connwatch's programs in /proc/PID/fdinfo; not part of the \
                 ratios): the programs ran {} times for {} requests ({:.2} runs per request), {:.0} ns per run, \
                 {:.0} ms in all over {:.1} s = {:.1} % of one core, {:.2} µs per request.\n",
                b.runs,
                b.requests,
                b.runs as f64 / b.requests.max(1) as f64,
                per_run,
                b.ns as f64 / 1e6,
                b.secs,
                b.ns as f64 / 1e9 / b.secs.max(1e-9) * 100.0,
                b.ns as f64 / 1e3 / b.requests.max(1) as f64,
            );
        }
        let _ = writeln!(
            s,
            "The bpftrace peer runs `bpftrace -e SCRIPT` with the script below: what a bpftrace \
             user would write for the same question (tcplife-style lifetimes, opens and closes per \
             client address in kernel maps, failed accepts by errno), on the same tracepoint and \
             port filter as connwatch. Its peak RSS (bpftrace compiles the script with LLVM at \
             start): {} MiB; connwatch's RSS after the same runs: {} MiB.\n\n```\n{}```\n",
            num(median(&self.bpftrace_hwm_kib).map(|k| k / 1024.0), 1),
            num(median(&self.rss_base).map(|k| k / 1024.0), 1),
            bpftrace_script(0).replace("== 0/", "== PORT/")
        );
        let _ = writeln!(s, "{}", self.targets_paragraph(&misses));

        // Part 2.
        let _ = writeln!(
            s,
            "## 2. The alternative: polling `CLIENT LIST` with many idle clients\n"
        );
        let _ = writeln!(
            s,
            "The bench opens N idle connections from {IDLE_ADDRS} source addresses 127.0.10.1 … \
             (plain sockets, nothing sent), then, in rotating order per round, runs\n\n\
             ```sh\nredis-benchmark -p PORT -t ping -q --csv --precision 3 -k 1 -c {CLIENTS} -n {KEEPALIVE_REQUESTS}\n```\n\n\
             while (none) nothing else runs, (poller) one connection sends `CLIENT LIST` once per second, \
             (connwatch) connwatch watches. Ratios are against `none`; p99 is the median over the rounds \
             of redis-benchmark's p99 (PING_MBULK). One `CLIENT LIST` / `INFO clients` is timed from the \
             client (round trip incl. reading the reply, median of 10) and by Redis (`INFO commandstats` usec_per_call).\n"
        );
        let _ = writeln!(
            s,
            "| idle conns | p99 ms none | p99 ms poller | p99 ms connwatch | p99 ratio poller | p99 ratio connwatch | rps ratio poller | rps ratio connwatch | CLIENT LIST (client ms / redis µs) | INFO clients (client ms / redis µs) |\n\
             |---|---|---|---|---|---|---|---|---|---|"
        );
        for l in &self.idle {
            let get = |c: &str, p99: bool| {
                l.runs.get(c).and_then(|r| {
                    if p99 {
                        r.p99("ping", "PING_MBULK")
                    } else {
                        r.rps("ping", "PING_MBULK")
                    }
                })
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} / {} |",
                l.conns,
                num(get("none", true), 3),
                num(get("poller", true), 3),
                num(get("connwatch", true), 3),
                ratio(get("poller", true), get("none", true)),
                ratio(get("connwatch", true), get("none", true)),
                ratio(get("poller", false), get("none", false)),
                ratio(get("connwatch", false), get("none", false)),
                num(median(&l.client_list_us).map(|u| u / 1000.0), 2),
                num(l.client_list_usec_per_call, 0),
                num(median(&l.info_clients_us).map(|u| u / 1000.0), 3),
                num(l.info_usec_per_call, 1),
            );
        }
        let _ = writeln!(
            s,
            "\nredis-benchmark is a closed loop (50 clients, one request each in flight), so a request \
             stalled behind a blocking `CLIENT LIST` is one of only 50 and barely moves p99; the stall \
             shows in the maximum latency (median over the rounds of redis-benchmark's max):\n\n\
             | idle conns | max ms none | max ms poller | max ms connwatch |\n|---|---|---|---|"
        );
        for l in &self.idle {
            let max = |c: &str| l.runs.get(c).and_then(|r| r.max("ping", "PING_MBULK"));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                l.conns,
                num(max("none"), 3),
                num(max("poller"), 3),
                num(max("connwatch"), 3)
            );
        }
        let costlier: Vec<String> = self
            .idle
            .iter()
            .filter(|l| {
                let p99 = |c: &str| l.runs.get(c).and_then(|r| r.p99("ping", "PING_MBULK"));
                matches!((p99("connwatch"), p99("poller")), (Some(c), Some(p)) if c > p)
            })
            .map(|l| l.conns.to_string())
            .collect();
        if !costlier.is_empty() {
            let _ = writeln!(
                s,
                "\nAt {} idle connections connwatch's p99 is above the poller's, while its maximum stays \
                 near none's: no stall, but work spread over the run — its process used {} % of a core \
                 (median, per level: {}), for the report each interval and a sock_diag scan reading \
                 `tcp_info` of every connection every 1 + N/2,000 intervals. On two shared cores that \
                 is within the noise of section 1; the plan there (exact lookups instead of a walk) \
                 applies here too.",
                costlier.join(" and "),
                num(
                    median(
                        &self
                            .idle
                            .iter()
                            .flat_map(|l| l.agent_cpu.iter().copied())
                            .collect::<Vec<_>>()
                    )
                    .map(|c| c * 100.0),
                    1
                ),
                self.idle
                    .iter()
                    .map(|l| format!(
                        "{} % at {}",
                        num(median(&l.agent_cpu).map(|c| c * 100.0), 1),
                        l.conns
                    ))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
        for l in &self.idle {
            let _ = writeln!(
                s,
                "\nWith {} idle: the poller's `CLIENT LIST` round trips during the runs: median {} ms, max {} ms \
                 ({} calls); connwatch reported up to {} open connections; lost_events {}.",
                l.conns,
                num(median(&l.poll_us).map(|u| u / 1000.0), 2),
                num(
                    l.poll_us
                        .iter()
                        .copied()
                        .reduce(f64::max)
                        .map(|u| u / 1000.0),
                    2
                ),
                l.poll_us.len(),
                l.agent_open
                    .map_or_else(|| "n/a".to_owned(), |o| o.to_string()),
                l.lost,
            );
        }

        // Part 3.
        let _ = writeln!(s, "\n## 3. Connection churn\n");
        let _ = writeln!(
            s,
            "{CHURN_THREADS} threads in the bench process loop for {} s: connect (from 127.0.100+t.x, \
             1,000 source addresses), send PING, read +PONG, close; once with connwatch detached, once attached. \
             CPU is connwatch's utime+stime from /proc/PID/stat over the churn.\n",
            CHURN_TIME.as_secs()
        );
        let _ = writeln!(
            s,
            "| | conn/s | connections | errors | connwatch opened | lost_events | connwatch CPU | CPU per 10,000 conn/s |\n|---|---|---|---|---|---|---|---|"
        );
        for (name, c) in [
            ("detached", &self.churn_detached),
            ("attached", &self.churn_attached),
        ] {
            if let Some(c) = c {
                let opt = |v: Option<u64>| v.map_or_else(|| "—".to_owned(), |v| v.to_string());
                let _ = writeln!(
                    s,
                    "| {name} | {:.0} | {} | {} | {} | {} | {} | {} |",
                    c.rate,
                    c.connections,
                    c.errors,
                    opt(c.opened),
                    opt(c.lost),
                    c.cpu
                        .map_or_else(|| "—".to_owned(), |v| format!("{:.1} %", v * 100.0)),
                    c.cpu.filter(|_| c.rate > 0.0).map_or_else(
                        || "—".to_owned(),
                        |v| format!("{:.1} % of a core", v * 100.0 / (c.rate / 10_000.0))
                    ),
                );
            }
        }
        if let (Some(d), Some(a)) = (&self.churn_detached, &self.churn_attached) {
            let _ = writeln!(
                s,
                "\nChurn rate attached/detached: {}.",
                ratio(Some(a.rate), Some(d.rate))
            );
        }

        // Part 4.
        let _ = writeln!(s, "\n## 4. Memory (connwatch RSS)\n");
        let _ = writeln!(
            s,
            "VmRSS from /proc/PID/status of an agent started with the connections already open, \
             after a redis-benchmark run (median over the rounds), against a fresh agent with none. \
             Kernel memory of connwatch's BPF maps (the sum of `memlock` over its map descriptors in \
             /proc/PID/fdinfo): {} KiB, whatever the number of connections — the kernel keeps no \
             per-connection state (the ring buffer is most of it).\n\n\
             | open connections | RSS MiB | per connection over the baseline |\n|---|---|---|",
            self.map_kib
                .map_or_else(|| "n/a".to_owned(), |k| k.to_string())
        );
        let base = self.rss_fresh.map(|k| k as f64);
        let _ = writeln!(
            s,
            "| 0 (fresh agent) | {} | — |\n| ~50, after part 1's churn | {} | — |",
            num(base.map(|k| k / 1024.0), 1),
            num(median(&self.rss_base).map(|k| k / 1024.0), 1)
        );
        for l in &self.idle {
            let rss = median(&l.rss);
            let per = rss
                .zip(base)
                .map(|(r, b)| (r - b) * 1024.0 / l.conns as f64);
            let _ = writeln!(
                s,
                "| {} | {} | {} bytes |",
                l.conns,
                num(rss.map(|k| k / 1024.0), 1),
                num(per, 0)
            );
        }
        let largest = self
            .idle
            .iter()
            .filter_map(|l| Some((l.conns, median(&l.rss)?)))
            .max_by_key(|(n, _)| *n);
        if let (Some((n, rss)), Some(b)) = (largest, base) {
            let per = (rss - b) * 1024.0 / n as f64;
            let _ = writeln!(
                s,
                "\nAt {per:.0} bytes per connection (the {n} level), 100,000 open connections would add \
                 about {:.0} MiB to the agent; the kernel side stays at the figure above.",
                per * 100_000.0 / 1024.0 / 1024.0
            );
        }

        // Part 5.
        if let Some(d) = &self.distinct {
            let opt = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |v| v.to_string());
            let _ = writeln!(s, "\n## 5. Connections from many distinct addresses\n");
            let _ = writeln!(
                s,
                "{CHURN_THREADS} threads connect, PING and close, each connection from a new address \
                 127.20+t.x.y (at most {} in all, at most {} s), with connwatch attached. The agent \
                 keeps at most {} client addresses: past that it forgets the longest-quiet addresses \
                 that hold no connection, and counts them in `evicted_clients`.\n\n\
                 | connections | errors | seconds | connwatch opened | lost_events | addresses kept | evicted_clients | peak RSS MiB before → after | kernel maps KiB |\n\
                 |---|---|---|---|---|---|---|---|---|\n\
                 | {} | {} | {:.1} | {} | {} | {} | {} | {} → {} | {} |",
                DISTINCT_PER_THREAD as usize * CHURN_THREADS as usize,
                DISTINCT_TIME.as_secs(),
                MAX_ADDRESSES_DOC,
                d.connections,
                d.errors,
                d.secs,
                opt(d.opened),
                opt(d.lost),
                opt(d.clients),
                opt(d.evicted),
                num(d.hwm_before_kib.map(|k| k as f64 / 1024.0), 1),
                num(d.hwm_after_kib.map(|k| k as f64 / 1024.0), 1),
                opt(d.map_kib),
            );
        }

        // Part 6.
        if !self.latency_ms.is_empty() {
            let max = self.latency_ms.iter().copied().fold(0.0, f64::max);
            let _ = writeln!(s, "\n## 6. From a connection to its report\n");
            let _ = writeln!(
                s,
                "{} times, at different points of the interval: open a connection from a new address \
                 127.0.201.i, then read connwatch's output file every 2 ms until a report names that \
                 address. Reports are written at the end of each `--interval` (1 s here), so the wait \
                 is bounded by it: median {} ms, max {:.0} ms. The kernel-to-agent part (ring buffer, \
                 drained every 100 ms) is not the bound; the interval is — lower it for faster reports.",
                self.latency_ms.len(),
                num(median(&self.latency_ms), 0),
                max,
            );
        }
        self.costs_section(&mut s);

        // Part 8.
        if let Some(n) = &self.ndjson {
            s.push('\n');
            s.push_str(&n.markdown());
        }
        // Part 9.
        if let Some(c) = &self.client_mode {
            s.push('\n');
            s.push_str(&c.markdown());
        }
        s
    }

    /// Part 7: the per-event figures, each with its target.
    fn costs_section(&self, s: &mut String) {
        let _ = writeln!(s, "\n## 7. What one connection event costs\n");
        if let Some(k) = &self.kernel {
            let _ = writeln!(
                s,
                "**Kernel.** `redis-benchmark -p PORT -t ping -c {CLIENTS} -n {} -k 0` (a new connection \
                 per request) with `kernel.bpf_stats_enabled=1`, under connwatch alone, connwatch \
                 `--no-processes` alone and the bpftrace peer (section 1's script) alone, in rotating \
                 order, {} rounds; \
                 run_time_ns / run_cnt of each program from the process's /proc/PID/fdinfo (its \
                 `prog_id`s; names from bpftool), medians over the rounds. Each side runs alone because \
                 two programs on one tracepoint run in turn and the first pays the cold caches of the \
                 record for both. `inet_sock_set_state` runs for every TCP state change of the host \
                 (both ends of each connection), so most runs are of connections it drops at once. \
                 By default connwatch also notes which process connects when a client on this host \
                 connects to a watched port (its pid, name and cgroup at CLOSE→SYN_SENT, in an LRU \
                 map, sent when the socket leaves SYN_SENT: `clients[].processes`); the load \
                 generator here is such a client, so every connection of this churn pays for it, \
                 where clients on other hosts pay nothing. The peer does the server side's work \
                 only, as `--no-processes` does: the target compares those two.\n",
                cost::KERNEL_CHURN_REQUESTS,
                k.rounds,
            );
            k.table(s);
        }
        let _ = writeln!(
            s,
            "\n**Agent.** connwatch's CPU (utime+stime of its process) over the churn, per connection \
             and per 10,000 connections/s; target ≤ {} % of a core per 10,000 connections/s.\n\n\
             | load | connections/s | agent CPU % of a core | µs per connection | % of a core per 10k conn/s | target |\n\
             |---|---|---|---|---|---|",
            cost::AGENT_TARGET_PCT_PER_10K,
        );
        let mut row = |what: &str, rate: f64, cpu: Option<f64>| {
            let cost = cost::agent_cost(cpu, rate);
            let met = match cost {
                Some((_, pct)) if pct <= cost::AGENT_TARGET_PCT_PER_10K => "met",
                Some(_) => "NOT met",
                None => "n/a",
            };
            let _ = writeln!(
                s,
                "| {what} | {rate:.0} | {} | {} | {} | ≤ {} %: {met} |",
                num(cpu.map(|c| c * 100.0), 1),
                num(cost.map(|c| c.0), 2),
                num(cost.map(|c| c.1), 2),
                cost::AGENT_TARGET_PCT_PER_10K,
            );
        };
        if let Some(c) = &self.churn_attached {
            row("section 3's churn (a few addresses)", c.rate, c.cpu);
        }
        if let Some(d) = &self.distinct {
            let rate = d.rate();
            row(
                "section 5 (every connection from a new address; CPU up to the report after the last)",
                rate,
                d.cpu,
            );
        }
        for c in &self.soak_cpu {
            let label = format!(
                "{} (median of {} rounds, µs per connection each: {})",
                c.label,
                c.rounds_us.len(),
                c.rounds()
            );
            row(&label, c.rate, c.cpu);
        }
        if !self.soak_cpu.is_empty() {
            let _ = writeln!(
                s,
                "\nThe same agents idle, over {} s from {} s after the churn stopped (the same table, the \
                 {SOAK_CPU_HELD} held connections, nothing connecting; medians of the rounds): the \
                 floor per interval that the soak's connections share.\n\n\
                 | run | idle CPU % of a core | soak CPU minus idle, µs per connection |\n|---|---|---|",
                SOAK_CPU_IDLE.as_secs(),
                SOAK_CPU_SETTLE.as_secs()
            );
            for c in &self.soak_cpu {
                let marginal = c
                    .cpu
                    .zip(c.idle)
                    .filter(|_| c.rate > 0.0)
                    .map(|(busy, idle)| (busy - idle).max(0.0) * 1e6 / c.rate);
                let _ = writeln!(
                    s,
                    "| {} | {} | {} |",
                    c.label,
                    num(c.idle.map(|c| c * 100.0), 2),
                    num(marginal, 2)
                );
            }
            let _ = writeln!(
                s,
                "\nThe soak mix: {SOAK_CPU_HELD} connections held from 127.0.40.x while \
                 {NDJSON_SOAK_THREADS} threads connect, PING and close from a new random 127.x.y.z \
                 address each time, paced at {SOAK_CPU_RATE}/s, for {} s with Redis connected; the \
                 agent writes NDJSON to a file; CPU over the last {} s (the address table full, \
                 its longest-quiet 1/8 evicted every ~1.3 s, as in a long soak). Each connection \
                 here is a new address: a row built, merged into the 20,000 kept in order, \
                 judged and written to the NDJSON stream (a sparse row, about 230 bytes), and \
                 an address evicted; and at this rate the per-interval floor above (the \
                 sock_diag look-ups of the held connections, /proc, INFO, the rows that move) \
                 weighs on every connection. Where the rest goes (`perf record` of the agent \
                 in this mix): building new addresses' rows and merging them into the kept \
                 ones in order, about a third (the merge moves every kept row once per report, \
                 a tenth of the agent's time on its own); the client table, a fifth (an \
                 address made and one forgotten per connection); the NDJSON stream, an eighth; \
                 the ring buffer, the scans and /proc, the rest. Each is memory-bound: \
                 ~450-byte rows and ~350-byte stats per address, 20,000 of each. (Boxing the \
                 rows, so that the merge moves pointers, and moving runs of rows with one copy \
                 each were tried: neither made a live agent cheaper.)",
                SOAK_CPU_TIME.as_secs(),
                SOAK_CPU_STEADY.as_secs(),
            );
        }
    }
}

fn redis_version() -> String {
    process::query("redis-server", &["--version"])
        .ok()
        .flatten()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Processes.

/// A child killed on drop unless waited for.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The host's TIME_WAIT sockets.
fn time_wait_count() -> Option<u64> {
    sockstat_time_wait(&fs::read_to_string("/proc/net/sockstat").ok()?)
}

/// Waits, up to the 60 s a TIME_WAIT socket lives and a little more, for those
/// the previous parts left to expire (below 1,000), so that a churn from
/// 127.0.0.1 starts on a host as quiet as part 1's.
fn settle_time_wait() -> anyhow::Result<()> {
    let start = Instant::now();
    let Some(first) = time_wait_count() else {
        return Ok(());
    };
    while let Some(n) = time_wait_count() {
        if n < 1_000 || start.elapsed() > Duration::from_secs(65) {
            say(&format!(
                "bench: {first} TIME_WAIT sockets at the end of the last part, {n} after {:.0} s",
                start.elapsed().as_secs_f64()
            ));
            break;
        }
        check_interrupted()?;
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok(())
}

/// Runs redis-benchmark (bounded by [`BENCH_TIMEOUT`]) and parses its CSV.
fn redis_benchmark(port: u16, tests: &[&str], keepalive: u8, n: u32) -> anyhow::Result<Vec<Row>> {
    let mut cmd = Command::new("redis-benchmark");
    cmd.args(["-p", &port.to_string()])
        .args(tests)
        .args(["-q", "--csv", "--precision", "3"])
        .args(["-k", &keepalive.to_string()])
        .args(["-c", &CLIENTS.to_string(), "-n", &n.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // A few lines at most (a refused connect): read after it exits.
        .stderr(Stdio::piped());
    let shown = process::display(&cmd);
    let child = cmd
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    let mut guard = Guard(Some(child));
    let start = Instant::now();
    let mut stdout = String::new();
    let child = guard
        .0
        .as_mut()
        .ok_or_else(|| anyhow!("redis-benchmark vanished"))?;
    // The CSV is a few hundred bytes: it fits in the pipe until the child exits.
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > BENCH_TIMEOUT || process::interrupted() {
            bail!("{shown} did not finish within {BENCH_TIMEOUT:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout)?;
    }
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr)?;
    }
    guard.0 = None;
    if !status.success() {
        // What it said, last lines first in mind: the cause is at the end.
        let said: Vec<&str> = stdout.lines().chain(stderr.lines()).collect();
        let tail = said[said.len().saturating_sub(5)..].join(" | ");
        bail!("{shown}: {}: {tail}", process::describe_status(status));
    }
    parse_csv(&stdout).with_context(|| shown.clone())
}

/// connwatch watching the port, writing NDJSON to a file; SIGKILLed on drop.
struct Agent {
    guard: Guard,
    pid: u32,
    file: PathBuf,
}

impl Agent {
    fn start(bin: &Path, port: u16, file: PathBuf) -> anyhow::Result<Self> {
        Agent::start_args(bin, port, file, &["--no-redis"])
    }

    /// `connwatch watch --format json --interval 1s ARGS -p PORT -q -o FILE` (ARGS
    /// may name another `--interval`).
    fn start_args(bin: &Path, port: u16, file: PathBuf, args: &[&str]) -> anyhow::Result<Self> {
        Agent::spawn(bin, "-p", port, file, args)
    }

    /// Client mode: `connwatch watch --format json --interval 1s --remote-port
    /// PORT -q -o FILE`: this host's connections to `PORT`, from the client's end.
    fn start_client(bin: &Path, port: u16, file: PathBuf) -> anyhow::Result<Self> {
        Agent::spawn(bin, "--remote-port", port, file, &[])
    }

    fn spawn(
        bin: &Path,
        port_flag: &str,
        port: u16,
        file: PathBuf,
        args: &[&str],
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.args(["watch", "--format", "json"]);
        if !args.contains(&"--interval") {
            cmd.args(["--interval", "1s"]);
        }
        cmd.args(args)
            .args([port_flag, &port.to_string(), "-q", "-o"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        let mut agent = Agent {
            guard: Guard(Some(child)),
            pid,
            file,
        };
        let start = Instant::now();
        loop {
            let text = fs::read_to_string(&agent.file).unwrap_or_default();
            if text.contains("\"type\":\"report\"") {
                return Ok(agent);
            }
            if let Some(child) = agent.guard.0.as_mut()
                && let Some(status) = child.try_wait()?
            {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                agent.guard.0 = None;
                bail!(
                    "connwatch exited at startup ({}): {err}",
                    process::describe_status(status)
                );
            }
            if start.elapsed() > AGENT_READY || process::interrupted() {
                bail!("connwatch wrote no report within {AGENT_READY:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    fn rss_kib(&self) -> Option<u64> {
        status_rss_kib(&fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?)
    }

    /// Peak RSS (VmHWM).
    fn hwm_kib(&self) -> Option<u64> {
        status_field_kib(
            &fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?,
            "VmHWM",
        )
    }

    /// SIGINT, wait for its last report (killed after [`AGENT_EXIT`]); returns the NDJSON.
    fn stop(mut self) -> anyhow::Result<String> {
        if let Ok(pid) = libc::pid_t::try_from(self.pid) {
            // SAFETY: kill(2) on our own child's pid, which we have not waited for yet.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let start = Instant::now();
        if let Some(child) = self.guard.0.as_mut() {
            while child.try_wait()?.is_none() {
                if start.elapsed() > AGENT_EXIT {
                    say("bench: warning: connwatch did not exit on SIGINT; killing it");
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        drop(std::mem::replace(&mut self.guard, Guard(None)));
        fs::read_to_string(&self.file).with_context(|| format!("reading {}", self.file.display()))
    }
}

/// Sets `kernel.bpf_stats_enabled` to 1; puts the old value back on drop.
struct BpfStats(String);

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> anyhow::Result<Self> {
        let old = fs::read_to_string(BPF_STATS).with_context(|| format!("reading {BPF_STATS}"))?;
        fs::write(BPF_STATS, "1").with_context(|| format!("writing {BPF_STATS}"))?;
        Ok(BpfStats(old.trim().to_owned()))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS, &self.0);
    }
}

/// The `tw` figure of the `TCP:` line of /proc/net/sockstat.
pub fn sockstat_time_wait(sockstat: &str) -> Option<u64> {
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == "tw" {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// (run_time_ns, run_cnt) of one BPF program from the text of /proc/PID/fdinfo/FD.
pub fn fdinfo_prog_stats(fdinfo: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        fdinfo
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some((field("run_time_ns")?, field("run_cnt")?))
}

/// The `memlock:` of a BPF map from the text of /proc/PID/fdinfo/FD (bytes the
/// kernel charges for it); `None` for other descriptors.
pub fn fdinfo_map_memlock(fdinfo: &str) -> Option<u64> {
    if !fdinfo.lines().any(|l| l.starts_with("map_type:")) {
        return None;
    }
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Kernel memory of the BPF maps a process holds, in KiB.
fn map_memlock_kib(pid: u32) -> Option<u64> {
    let dir = fs::read_dir(format!("/proc/{pid}/fdinfo")).ok()?;
    let bytes: u64 = dir
        .flatten()
        .take(10_000)
        .filter_map(|e| fdinfo_map_memlock(&fs::read_to_string(e.path()).ok()?))
        .sum();
    Some(bytes / 1024)
}

/// The sums of run_time_ns and run_cnt over the BPF programs a process holds.
fn prog_stats(pid: u32) -> (u64, u64) {
    let mut total = (0, 0);
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return total;
    };
    for entry in dir.flatten().take(10_000) {
        if let Some((ns, cnt)) = fs::read_to_string(entry.path())
            .ok()
            .and_then(|t| fdinfo_prog_stats(&t))
        {
            total.0 += ns;
            total.1 += cnt;
        }
    }
    total
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    stat_ticks(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

// ---------------------------------------------------------------------------
// Load.

/// Opens idle connections until `conns` holds `n`, from [`IDLE_ADDRS`] addresses.
fn open_idle(port: u16, n: usize, conns: &mut Vec<TcpStream>) -> anyhow::Result<()> {
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let start = Instant::now();
    while conns.len() < n {
        let j = conns.len() % IDLE_ADDRS;
        let src = Ipv4Addr::new(127, 0, 10 + (j / 250) as u8, 1 + (j % 250) as u8);
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        sock.bind(&SocketAddr::from((src, 0)).into())
            .with_context(|| format!("binding {src}"))?;
        sock.connect_timeout(&server.into(), IO_TIMEOUT)
            .with_context(|| format!("connecting from {src} (connection {})", conns.len()))?;
        conns.push(sock.into());
        if start.elapsed() > Duration::from_secs(120) {
            bail!("opening {n} idle connections took over 2 minutes");
        }
    }
    Ok(())
}

/// Waits until Redis counts at least `n` clients (bounded: 30 s).
fn wait_clients(port: u16, n: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let info = redis::command(port, &["INFO", "clients"])?;
        let have = redis::info_field(&info, "connected_clients").unwrap_or(0);
        if have >= n as u64 {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("Redis has {have} clients, expected {n}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One command on a fresh connection, timed around the request and the whole reply
/// (the connection is set up before the clock starts); microseconds.
fn time_command(port: u16, args: &[&str]) -> anyhow::Result<f64> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let t = Instant::now();
    redis::command_on(&mut stream, args)?;
    Ok(t.elapsed().as_secs_f64() * 1e6)
}

/// A thread sending `CLIENT LIST` once per second over one connection.
struct Poller {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<f64>>>,
}

impl Poller {
    fn start(port: u16) -> anyhow::Result<Self> {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("client-list-poller".into())
            .spawn(move || {
                let mut times = Vec::new();
                // At most 10 minutes of polls.
                for _ in 0..600 {
                    let t = Instant::now();
                    if redis::command_on(&mut stream, &["CLIENT", "LIST"]).is_err() {
                        break;
                    }
                    times.push(t.elapsed().as_secs_f64() * 1e6);
                    let next = t + Duration::from_secs(1);
                    while Instant::now() < next {
                        if flag.load(Ordering::SeqCst) {
                            return times;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                times
            })?;
        Ok(Poller {
            stop,
            handle: Some(handle),
        })
    }

    fn stop(mut self) -> Vec<f64> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Part 3's sources: 250 addresses per thread, 127.0.100+t.1 …
fn churn_source(thread: u8, i: u32) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 100 + thread, 1 + (i % 250) as u8)
}

/// Part 5's sources: a new address for every connection, 127.20+t.x.y.
pub fn distinct_source(thread: u8, i: u32) -> Ipv4Addr {
    Ipv4Addr::new(127, 20 + thread, (i / 250 % 250) as u8, 1 + (i % 250) as u8)
}

/// A connection to Redis from `source`.
fn connect_from(source: Ipv4Addr, port: u16) -> anyhow::Result<TcpStream> {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    sock.bind(&SocketAddr::from((source, 0)).into())?;
    let server: socket2::SockAddr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into();
    sock.connect_timeout(&server, IO_TIMEOUT)
        .with_context(|| format!("connecting from {source}"))?;
    Ok(sock.into())
}

/// connect/PING/close loops from [`CHURN_THREADS`] threads for `time`, at most
/// `per_thread` each, from the addresses `source(thread, i)`;
/// returns (completed connections, errors).
/// One connection from `src`: connect, PING, read the PONG, close. With
/// `bind_no_port` the source port is chosen at connect time
/// (IP_BIND_ADDRESS_NO_PORT), so many sources share the ephemeral range.
fn ping_once(
    src: Ipv4Addr,
    server: &socket2::SockAddr,
    bind_no_port: bool,
    ping: &[u8],
    buf: &mut [u8; 16],
) -> std::io::Result<()> {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    if bind_no_port {
        let one: libc::c_int = 1;
        // SAFETY: a valid socket fd and a pointer to an int of the given size.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&raw const one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    sock.bind(&SocketAddr::from((src, 0)).into())?;
    sock.connect_timeout(server, IO_TIMEOUT)?;
    let mut stream: TcpStream = sock.into();
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(ping)?;
    let n = stream.read(buf)?;
    if !buf[..n].starts_with(b"+PONG") {
        return Err(std::io::Error::other("no PONG"));
    }
    Ok(())
}

fn churn(
    port: u16,
    time: Duration,
    per_thread: u32,
    source: fn(u8, u32) -> Ipv4Addr,
) -> anyhow::Result<(u64, u64)> {
    let server: socket2::SockAddr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into();
    let deadline = Instant::now() + time;
    let mut handles = Vec::new();
    for t in 0..CHURN_THREADS {
        let server = server.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("churn-{t}"))
                .spawn(move || {
                    let (mut ok, mut errors) = (0u64, 0u64);
                    let ping = redis::encode_command(&["PING"]);
                    let mut buf = [0u8; 16];
                    // Bounded by the deadline and by a count.
                    for i in 0..per_thread {
                        if Instant::now() >= deadline || process::interrupted() {
                            break;
                        }
                        let src = source(t, i);
                        match ping_once(src, &server, true, &ping, &mut buf) {
                            Ok(()) => ok += 1,
                            Err(_) => errors += 1,
                        }
                    }
                    (ok, errors)
                })?,
        );
    }
    let mut total = (0, 0);
    for h in handles {
        let (ok, errors) = h.join().map_err(|_| anyhow!("a churn thread panicked"))?;
        total.0 += ok;
        total.1 += errors;
    }
    Ok(total)
}

// ---- Scan time vs TIME_WAIT count ---------------------------------------------------

/// The command that measures the interval's sock_diag scan (tests/tests/scan_cost.rs,
/// `scan_cost_table`: 200 tracked connections at 0, 50,000 and 100,000 TIME_WAIT
/// sockets, then 2,000 and 10,000 tracked with none), in a release build.
const SCAN_COST_ARGS: [&str; 13] = [
    "test",
    "--release",
    "-p",
    "connwatch-tests",
    "--test",
    "scan_cost",
    "--",
    "--ignored",
    "--exact",
    "scan_cost_table",
    "--nocapture",
    "--test-threads",
    "1",
];

/// The lookups are flat if, at the most TIME_WAIT sockets, they take at most this
/// factor of their time with none, plus `SCAN_FLAT_SLACK_US` (as the test asserts).
const SCAN_FLAT_FACTOR: f64 = 1.5;
const SCAN_FLAT_SLACK_US: f64 = 300.0;

/// One `scan_cost` line of the measurement: median µs of one scan each way.
#[derive(Clone, Debug, PartialEq)]
pub struct ScanCost {
    pub time_wait: u64,
    pub tracked: u64,
    pub dump_us: f64,
    pub lookup_us: f64,
}

/// The `scan_cost time_wait=… tracked=… dump_us=… lookup_us=…` lines of the
/// measurement's output, and its `scan_cost host_time_wait=…` line.
pub fn parse_scan_cost(output: &str) -> (Vec<ScanCost>, Option<u64>) {
    let mut rows = Vec::new();
    let mut host = None;
    for line in output.lines() {
        let Some(rest) = line.trim().strip_prefix("scan_cost ") else {
            continue;
        };
        let fields: BTreeMap<&str, &str> = rest
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .collect();
        if let Some(n) = fields.get("host_time_wait").and_then(|v| v.parse().ok()) {
            host = Some(n);
            continue;
        }
        let num = |k: &str| fields.get(k).and_then(|v| v.parse::<f64>().ok());
        let int = |k: &str| fields.get(k).and_then(|v| v.parse::<u64>().ok());
        if let (Some(time_wait), Some(tracked), Some(dump_us), Some(lookup_us)) = (
            int("time_wait"),
            int("tracked"),
            num("dump_us"),
            num("lookup_us"),
        ) {
            rows.push(ScanCost {
                time_wait,
                tracked,
                dump_us,
                lookup_us,
            });
        }
    }
    (rows, host)
}

/// The section's markdown from the measurement's rows (or why there are none).
pub fn scan_cost_markdown(
    rows: &[ScanCost],
    host_time_wait: Option<u64>,
    failure: Option<&str>,
) -> String {
    let mut s = String::from("## Scan time vs TIME_WAIT count\n\n");
    let _ = writeln!(
        s,
        "Each interval the agent reads the traffic and idle figures of the connections it tracks \
         from sock_diag, and finds those whose close record was lost. It looks each one up \
         (one `SOCK_DIAG_BY_FAMILY` request without `NLM_F_DUMP`, a hash lookup in the kernel, 64 \
         per datagram); it used to dump the namespace's open sockets, a walk of the kernel's whole \
         established hash, which holds every namespace's sockets, TIME_WAIT ones included. \
         Measured with `cargo {}` (tests/tests/scan_cost.rs): in a network namespace of its own, \
         a listener with 200 connections, then TIME_WAIT sockets made as a load generator leaves \
         them (the client closes first; 50,000 per step); the time of one scan each way, median of \
         21, on a thread inside the namespace (as for the agent's home instance).\n",
        SCAN_COST_ARGS.join(" ")
    );
    if let Some(why) = failure {
        let _ = writeln!(s, "Not measured in this run: {why}.\n");
        return s;
    }
    let _ = writeln!(
        s,
        "| TIME_WAIT sockets | tracked connections | dump (before) | lookups (now) | dump / lookups |\n\
         |---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} ms | {:.2} ms | {:.1} |",
            r.time_wait,
            r.tracked,
            r.dump_us / 1000.0,
            r.lookup_us / 1000.0,
            r.dump_us / r.lookup_us.max(1.0)
        );
    }
    if let Some(host) = host_time_wait {
        let _ = writeln!(
            s,
            "\nThe host's own namespace held {host} TIME_WAIT sockets meanwhile (the dump walks them \
             too)."
        );
    }
    let _ = writeln!(
        s,
        "\nThe rows with more tracked connections and no TIME_WAIT socket show where a dump could be \
         as cheap: both pay a `tcp_info` per connection, and the dump packs about 80 replies per \
         datagram. The agent still never dumps: the dump's extra cost follows every socket of every \
         namespace on the host, which it cannot see, while the lookups' follows only what it tracks; \
         and scans of thousands of connections run every few intervals."
    );
    // Flat: the fewest tracked connections, none against the most TIME_WAIT sockets.
    let fewest = rows.iter().map(|r| r.tracked).min();
    let level: Vec<&ScanCost> = rows.iter().filter(|r| Some(r.tracked) == fewest).collect();
    let base = level.iter().min_by_key(|r| r.time_wait);
    let most = level.iter().max_by_key(|r| r.time_wait);
    match (base, most) {
        (Some(b), Some(m)) if m.time_wait > b.time_wait => {
            let limit = SCAN_FLAT_FACTOR * b.lookup_us + SCAN_FLAT_SLACK_US;
            let verdict = if m.lookup_us <= limit {
                "met"
            } else {
                "NOT met"
            };
            let _ = writeln!(
                s,
                "\n**Target:** the scan flat whatever else the host holds (lookups at {} TIME_WAIT \
                 sockets within {SCAN_FLAT_FACTOR}× their time at {} plus {:.1} ms): **{verdict}** \
                 ({:.2} ms against {:.2} ms; the dump went from {:.2} ms to {:.2} ms).",
                m.time_wait,
                b.time_wait,
                SCAN_FLAT_SLACK_US / 1000.0,
                m.lookup_us / 1000.0,
                b.lookup_us / 1000.0,
                b.dump_us / 1000.0,
                m.dump_us / 1000.0,
            );
        }
        _ => {
            let _ = writeln!(
                s,
                "\n**Target:** the scan flat: n/a (too few rows measured)."
            );
        }
    }
    s
}

/// Measures the interval's scan against the host's TIME_WAIT sockets and returns the
/// section "Scan time vs TIME_WAIT count" (never fails: a failure is said in it).
fn scan_time_section() -> String {
    say("bench: scan time vs TIME_WAIT count");
    let mut cmd = process::cargo();
    cmd.args(SCAN_COST_ARGS).stdin(Stdio::null());
    let failure = match cmd.output() {
        Ok(out) if out.status.success() => {
            // libtest prints the test's stderr (where the lines go) as it runs.
            let text = String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout);
            let (rows, host) = parse_scan_cost(&text);
            if !rows.is_empty() {
                return scan_cost_markdown(&rows, host, None);
            }
            "the measurement printed no `scan_cost` line".to_owned()
        }
        Ok(out) => format!(
            "`cargo {}` failed ({})",
            SCAN_COST_ARGS.join(" "),
            process::describe_status(out.status)
        ),
        Err(e) => format!("cargo could not run: {e}"),
    };
    say(&format!("bench: scan time not measured: {failure}"));
    scan_cost_markdown(&[], None, Some(&failure))
}

#[cfg(test)]
mod scan_cost_tests {
    use super::*;

    #[test]
    fn scan_cost_lines_are_parsed_and_others_ignored() {
        let out = "running 1 test\n\
                   scan_cost time_wait=0 tracked=200 dump_us=3404 lookup_us=412\n\
                   scan_cost time_wait=100000 tracked=200 dump_us=11373 lookup_us=455\n\
                   scan_cost time_wait=7 tracked=x dump_us=1 lookup_us=1\n\
                   scan_cost host_time_wait=593\n\
                   test scan_cost_table ... ok\n";
        let (rows, host) = parse_scan_cost(out);
        assert_eq!(
            rows,
            vec![
                ScanCost {
                    time_wait: 0,
                    tracked: 200,
                    dump_us: 3404.0,
                    lookup_us: 412.0
                },
                ScanCost {
                    time_wait: 100_000,
                    tracked: 200,
                    dump_us: 11373.0,
                    lookup_us: 455.0
                },
            ]
        );
        assert_eq!(host, Some(593));
    }

    #[test]
    fn the_target_is_met_when_lookups_stay_flat() {
        let row = |time_wait, tracked, dump_us, lookup_us| ScanCost {
            time_wait,
            tracked,
            dump_us,
            lookup_us,
        };
        let flat = [
            row(0, 200, 3404.0, 412.0),
            row(100_000, 200, 11373.0, 455.0),
            row(0, 10_000, 20_000.0, 30_000.0),
        ];
        let md = scan_cost_markdown(&flat, Some(5), None);
        assert!(
            md.contains("| 100000 | 200 | 11.37 ms | 0.46 ms | 25.0 |"),
            "{md}"
        );
        assert!(
            md.contains("| 0 | 10000 | 20.00 ms | 30.00 ms | 0.7 |"),
            "{md}"
        );
        assert!(
            md.contains(
                "**met** (0.46 ms against 0.41 ms; the dump went from 3.40 ms to 11.37 ms)"
            ),
            "{md}"
        );
        assert!(md.contains("held 5 TIME_WAIT"), "{md}");
        // 0.412 × 1.5 + 0.3 = 0.918 ms: 0.95 is not flat.
        let grew = [
            row(0, 200, 3404.0, 412.0),
            row(100_000, 200, 11373.0, 950.0),
        ];
        assert!(scan_cost_markdown(&grew, None, None).contains("**NOT met**"));
        let none = scan_cost_markdown(&[], None, Some("cargo could not run"));
        assert!(
            none.contains("Not measured in this run: cargo could not run."),
            "{none}"
        );
        assert!(scan_cost_markdown(&flat[..1], None, None).contains("n/a"));
    }
}

// ---------------------------------------------------------------------------
// 7 (agent). The agent's CPU under the soak mix.

/// The soak mix: connections held, the churn's pace, how long it runs and the
/// last stretch measured (the address table is full after ~10 s).
const SOAK_CPU_HELD: usize = 200;
const SOAK_CPU_RATE: u32 = 2_000;
const SOAK_CPU_TIME: Duration = Duration::from_secs(45);
const SOAK_CPU_STEADY: Duration = Duration::from_secs(25);
/// After the churn and two of the packaged unit's intervals (the last rows
/// written, their rates come to rest): the agent's CPU with the same table and
/// nothing connecting, the per-interval floor the churn's connections share.
const SOAK_CPU_SETTLE: Duration = Duration::from_secs(11);
const SOAK_CPU_IDLE: Duration = Duration::from_secs(10);
/// The runs: as `watch` runs by default, and as the packaged unit runs it.
const SOAK_CPU_RUNS: [(&str, &[&str]); 2] = [
    ("soak mix, `--interval 1s` (the default)", &[]),
    (
        "soak mix, `--interval 5s --full-every 1h` (the packaged unit)",
        &["--interval", "5s", "--full-every", "1h"],
    ),
];

/// The agent's CPU over the steady part of one soak-mix run.
#[derive(Debug, Default)]
struct SoakCpu {
    label: String,
    /// Connections a second over the whole run (paced: the same in its steady part).
    rate: f64,
    /// CPU seconds a second over the steady part.
    cpu: Option<f64>,
    /// CPU seconds a second over the idle stretch after the churn.
    idle: Option<f64>,
    /// µs of CPU per connection of each round, in the order run (`cpu` and
    /// `idle` are the rounds' medians).
    rounds_us: Vec<Option<f64>>,
}

/// Rounds of each soak-mix run, the two alternating: one run of the agent's CPU
/// over 25 s swung ±30 % on these shared cores; the median of three holds.
const SOAK_CPU_ROUNDS: usize = 3;

/// Each of [`SOAK_CPU_RUNS`] [`SOAK_CPU_ROUNDS`] times, alternating; per run the
/// median CPU and idle CPU of its rounds.
fn soak_cpu_rounds(
    bin: &Path,
    port: u16,
    mut file: impl FnMut() -> PathBuf,
) -> anyhow::Result<Vec<SoakCpu>> {
    let mut runs: Vec<Vec<SoakCpu>> = SOAK_CPU_RUNS.iter().map(|_| Vec::new()).collect();
    for round in 0..SOAK_CPU_ROUNDS {
        for ((label, args), done) in SOAK_CPU_RUNS.iter().zip(runs.iter_mut()) {
            check_interrupted()?;
            say(&format!(
                "bench: part 7, agent CPU under the soak mix ({label}, round {} of {SOAK_CPU_ROUNDS}, {} s)",
                round + 1,
                SOAK_CPU_TIME.as_secs()
            ));
            done.push(soak_cpu(bin, port, file(), label, args)?);
        }
    }
    Ok(runs.into_iter().map(SoakCpu::merged).collect())
}

impl SoakCpu {
    /// Each round's µs per connection, as the table shows them.
    fn rounds(&self) -> String {
        let each: Vec<String> = self.rounds_us.iter().map(|us| num(*us, 2)).collect();
        each.join(", ")
    }

    /// One run's rounds as one: the medians of the rate, the CPU and the idle CPU.
    fn merged(rounds: Vec<SoakCpu>) -> SoakCpu {
        let med = |f: &dyn Fn(&SoakCpu) -> Option<f64>| {
            median(&rounds.iter().filter_map(f).collect::<Vec<_>>())
        };
        SoakCpu {
            label: rounds.first().map(|r| r.label.clone()).unwrap_or_default(),
            rate: med(&|r| Some(r.rate)).unwrap_or(0.0),
            cpu: med(&|r| r.cpu),
            idle: med(&|r| r.idle),
            rounds_us: rounds
                .iter()
                .map(|r| cost::agent_cost(r.cpu, r.rate).map(|c| c.0))
                .collect(),
        }
    }
}

fn soak_cpu(
    bin: &Path,
    port: u16,
    file: PathBuf,
    label: &str,
    args: &[&str],
) -> anyhow::Result<SoakCpu> {
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut held: Vec<TcpStream> = Vec::with_capacity(SOAK_CPU_HELD);
    for j in 0..SOAK_CPU_HELD {
        let src = Ipv4Addr::new(127, 0, 40, 1 + j as u8);
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        sock.bind(&SocketAddr::from((src, 0)).into())
            .with_context(|| format!("binding {src}"))?;
        sock.connect_timeout(&server.into(), IO_TIMEOUT)
            .with_context(|| format!("connecting from {src}"))?;
        held.push(sock.into());
    }
    let agent = Agent::start_args(bin, port, file, args)?;
    let pid = agent.pid();
    let t0 = Instant::now();
    let churn = std::thread::spawn(move || paced_churn(port, SOAK_CPU_RATE, SOAK_CPU_TIME));
    std::thread::sleep(SOAK_CPU_TIME - SOAK_CPU_STEADY);
    let ticks0 = cpu_ticks(pid);
    let steady0 = Instant::now();
    let (ok, _errors) = churn
        .join()
        .map_err(|_| anyhow!("the soak churn panicked"))??;
    let ticks1 = cpu_ticks(pid);
    let steady = steady0.elapsed().as_secs_f64();
    let secs = t0.elapsed().as_secs_f64();
    std::thread::sleep(SOAK_CPU_SETTLE);
    let settled = cpu_ticks(pid);
    let idle0 = Instant::now();
    std::thread::sleep(SOAK_CPU_IDLE);
    let ticks2 = cpu_ticks(pid);
    let idle = idle0.elapsed().as_secs_f64();
    agent.stop()?;
    drop(held);
    Ok(SoakCpu {
        label: label.to_string(),
        rate: ok as f64 / secs.max(0.001),
        cpu: ticks0
            .zip(ticks1)
            .map(|(a, b)| b.saturating_sub(a) as f64 / clock_ticks() / steady.max(0.001)),
        idle: settled
            .zip(ticks2)
            .map(|(a, b)| b.saturating_sub(a) as f64 / clock_ticks() / idle.max(0.001)),
        rounds_us: Vec::new(),
    })
}

// ---------------------------------------------------------------------------
// 8. The NDJSON stream's size.

/// Part 8's heading in docs/PERFORMANCE.md (`--only ndjson` replaces that section).
const NDJSON_HEADING: &str = "## 8. The NDJSON stream's size";
/// Quiet clients held (one connection each, from as many addresses), and how long
/// each stream is recorded over them.
const NDJSON_QUIET: usize = 1_000;
const NDJSON_QUIET_TIME: Duration = Duration::from_secs(20);
/// The soak-like load: connect/PING/close from a new random 127.x.y.z address
/// each time, paced at this rate, for this long; its last `NDJSON_STEADY` (the
/// address table full, as in a long soak) are measured.
const NDJSON_SOAK_RATE: u32 = 1_000;
const NDJSON_SOAK_THREADS: u32 = 2;
const NDJSON_SOAK_TIME: Duration = Duration::from_secs(60);
const NDJSON_STEADY: Duration = Duration::from_secs(30);
/// connwatch's default `--full-every` and `--interval`, for the per-day figures.
const FULL_EVERY_DEFAULT_S: f64 = 300.0;
const DAY_S: f64 = 86_400.0;
/// The targets: 1,000 quiet clients under 100 MB a day by default; the soak
/// stream at least 20 times smaller than with `--clients all`.
const QUIET_TARGET_MB_PER_DAY: f64 = 100.0;
/// The packaged unit's `--interval` and `--full-every` (packaging/connwatch.service).
const UNIT_INTERVAL_S: f64 = 5.0;
const UNIT_FULL_EVERY_S: f64 = 3_600.0;
const SOAK_TARGET_RATIO: f64 = 20.0;

/// Report lines of one NDJSON stream, by `clients_mode`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamSize {
    pub full_lines: u64,
    pub full_bytes: u64,
    pub changed_lines: u64,
    pub changed_bytes: u64,
    /// Largest `totals.clients` (addresses known) of the lines counted.
    pub clients: u64,
    pub lost_events: u64,
}

impl StreamSize {
    /// The report lines (newline included) of `ndjson` from `uptime_s` ≥ `from` on.
    pub fn of(ndjson: &str, from: f64) -> StreamSize {
        let mut size = StreamSize::default();
        for line in ndjson.lines() {
            if !line.starts_with("{\"type\":\"report\"")
                || float_field(line, "uptime_s").is_none_or(|u| u < from)
            {
                continue;
            }
            let bytes = line.len() as u64 + 1;
            if line.contains("\"clients_mode\":\"changed\"") {
                size.changed_lines += 1;
                size.changed_bytes += bytes;
            } else {
                size.full_lines += 1;
                size.full_bytes += bytes;
            }
            // The first "clients": of a line is totals.clients.
            size.clients = size.clients.max(field_of(line, "clients").unwrap_or(0));
            size.lost_events = size
                .lost_events
                .max(field_of(line, "lost_events").unwrap_or(0));
        }
        size
    }

    pub fn lines(&self) -> u64 {
        self.full_lines + self.changed_lines
    }

    pub fn mean(&self) -> Option<f64> {
        let n = self.lines();
        (n > 0).then(|| (self.full_bytes + self.changed_bytes) as f64 / n as f64)
    }

    pub fn mean_full(&self) -> Option<f64> {
        (self.full_lines > 0).then(|| self.full_bytes as f64 / self.full_lines as f64)
    }

    pub fn mean_changed(&self) -> Option<f64> {
        (self.changed_lines > 0).then(|| self.changed_bytes as f64 / self.changed_lines as f64)
    }
}

/// Bytes a day of a stream that writes one line a second: with `--clients all`,
/// every line is a full one; by default, a full line every 5 minutes (of the size
/// `full`: the default stream's own, or a `--clients all` line over the same load
/// where the default stream wrote none while measured) and changed lines in
/// between.
pub fn per_day(changed_line: Option<f64>, full_line: Option<f64>) -> Option<f64> {
    per_day_with(changed_line, full_line, 1.0, FULL_EVERY_DEFAULT_S)
}

/// [`per_day`] for a line every `interval_s` and a full one every `full_every_s`.
pub fn per_day_with(
    changed_line: Option<f64>,
    full_line: Option<f64>,
    interval_s: f64,
    full_every_s: f64,
) -> Option<f64> {
    let full = full_line?;
    let lines = DAY_S / interval_s;
    match changed_line {
        None => Some(full * lines),
        Some(changed) => {
            let fulls = DAY_S / full_every_s.max(interval_s);
            Some(full * fulls + changed * (lines - fulls))
        }
    }
}

/// The float `"key":X` of an NDJSON line (the first one).
fn float_field(line: &str, key: &str) -> Option<f64> {
    let pat = format!("\"{key}\":");
    let rest = &line[line.find(&pat)? + pat.len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// `doc` with the section that starts at the line `heading` replaced by
/// `section` (up to the next `## ` heading), or `section` appended.
pub fn splice_section(doc: &str, heading: &str, section: &str) -> String {
    let section = section.trim_end_matches('\n');
    let Some(start) = doc.find(&format!("\n{heading}")).map(|i| i + 1) else {
        return format!("{}\n\n{section}\n", doc.trim_end_matches('\n'));
    };
    let rest = &doc[start + heading.len()..];
    match rest.find("\n## ") {
        Some(end) => format!("{}{section}\n{}", &doc[..start], &rest[end..]),
        None => format!("{}{section}\n", &doc[..start]),
    }
}

/// What part 8 measured.
#[derive(Debug, Default)]
struct NdjsonResult {
    quiet_changed: StreamSize,
    quiet_all: StreamSize,
    soak_changed: StreamSize,
    soak_all: StreamSize,
    soak_connections: u64,
    soak_errors: u64,
    soak_secs: f64,
}

/// Part 8: the size of `watch --format json` (with Redis, as the packaged unit
/// runs it) by default and with `--clients all`, over 1,000 quiet clients (one
/// stream after the other) and over a soak-like churn (both streams at once, on
/// the same connections).
fn ndjson(bin: &Path, port: u16, dir: &Path) -> anyhow::Result<NdjsonResult> {
    let mut out = NdjsonResult::default();
    say(&format!(
        "bench: part 8, NDJSON size over {NDJSON_QUIET} quiet clients ({} s per stream)",
        NDJSON_QUIET_TIME.as_secs()
    ));
    {
        let mut quiet: Vec<TcpStream> = Vec::with_capacity(NDJSON_QUIET);
        let server = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        for j in 0..NDJSON_QUIET {
            let src = Ipv4Addr::new(127, 0, 30 + (j / 250) as u8, 1 + (j % 250) as u8);
            let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
            sock.bind(&SocketAddr::from((src, 0)).into())
                .with_context(|| format!("binding {src}"))?;
            sock.connect_timeout(&server.into(), IO_TIMEOUT)
                .with_context(|| format!("connecting from {src}"))?;
            let mut stream: TcpStream = sock.into();
            stream.set_read_timeout(Some(IO_TIMEOUT))?;
            redis::command_on(&mut stream, &["PING"])?;
            quiet.push(stream);
        }
        for (mode, args) in [("changed", &[][..]), ("all", &["--clients", "all"][..])] {
            check_interrupted()?;
            let agent =
                Agent::start_args(bin, port, dir.join(format!("quiet-{mode}.ndjson")), args)?;
            std::thread::sleep(NDJSON_QUIET_TIME);
            let size = StreamSize::of(&agent.stop()?, 0.0);
            if mode == "all" {
                out.quiet_all = size;
            } else {
                out.quiet_changed = size;
            }
        }
    }

    check_interrupted()?;
    say(&format!(
        "bench: part 8, NDJSON size over {NDJSON_SOAK_RATE} connections/s from random addresses ({} s)",
        NDJSON_SOAK_TIME.as_secs()
    ));
    let changed = Agent::start_args(bin, port, dir.join("soak-changed.ndjson"), &[])?;
    let all = Agent::start_args(
        bin,
        port,
        dir.join("soak-all.ndjson"),
        &["--clients", "all"],
    )?;
    let t0 = Instant::now();
    let (ok, errors) = paced_churn(port, NDJSON_SOAK_RATE, NDJSON_SOAK_TIME)?;
    out.soak_secs = t0.elapsed().as_secs_f64();
    (out.soak_connections, out.soak_errors) = (ok, errors);
    let changed = changed.stop()?;
    let all = all.stop()?;
    // The last NDJSON_STEADY seconds of each stream, by its own uptime.
    let steady = |ndjson: &str| {
        let end = ndjson
            .lines()
            .rev()
            .find_map(|l| float_field(l, "uptime_s"))
            .unwrap_or(0.0);
        StreamSize::of(ndjson, end - NDJSON_STEADY.as_secs_f64())
    };
    out.soak_changed = steady(&changed);
    out.soak_all = steady(&all);
    Ok(out)
}

/// A new source address in 127.0.0.0/8 for every connection, spread at random
/// (splitmix64 of thread and count): the soak's clients.
pub fn random_source(thread: u32, i: u32) -> Ipv4Addr {
    let mut z = (u64::from(thread) << 32 | u64::from(i)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    Ipv4Addr::new(127, (z >> 16) as u8, (z >> 8) as u8, 1 + (z % 254) as u8)
}

/// connect/PING/close from [`random_source`] addresses at `rate` a second over
/// [`NDJSON_SOAK_THREADS`] threads for `time` (each on its own schedule, bounded
/// by the deadline); returns (completed connections, errors).
fn paced_churn(port: u16, rate: u32, time: Duration) -> anyhow::Result<(u64, u64)> {
    let server: socket2::SockAddr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into();
    let start = Instant::now();
    let gap = Duration::from_secs(1) * NDJSON_SOAK_THREADS / rate.max(1);
    let mut handles = Vec::new();
    for t in 0..NDJSON_SOAK_THREADS {
        let server = server.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("soak-{t}"))
                .spawn(move || {
                    let (mut ok, mut errors) = (0u64, 0u64);
                    let ping = redis::encode_command(&["PING"]);
                    let mut buf = [0u8; 16];
                    let mut i = 0u32;
                    loop {
                        let due = start + gap * i;
                        if due >= start + time || process::interrupted() {
                            break;
                        }
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        let src = random_source(t, i);
                        match ping_once(src, &server, false, &ping, &mut buf) {
                            Ok(()) => ok += 1,
                            Err(_) => errors += 1,
                        }
                        i += 1;
                    }
                    (ok, errors)
                })?,
        );
    }
    let mut total = (0, 0);
    for h in handles {
        let (ok, errors) = h.join().map_err(|_| anyhow!("a soak thread panicked"))?;
        total.0 += ok;
        total.1 += errors;
    }
    Ok(total)
}

fn mb(bytes: Option<f64>) -> String {
    num(bytes.map(|b| b / 1e6), 1)
}

fn kb(bytes: Option<f64>) -> String {
    num(bytes.map(|b| b / 1e3), 1)
}

impl NdjsonResult {
    fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{NDJSON_HEADING}\n");
        let _ = writeln!(
            s,
            "What `watch --format json` writes with Redis connected (as the packaged unit runs it), \
             by default (`--clients changed`: a client row only when it changed or its verdict is not \
             healthy, every row every `--full-every` 5m) and with `--clients all` (every row every \
             interval). Commands (also alone: `sudo cargo xtask bench --only ndjson`, which replaces \
             this section):\n\n\
             ```sh\ntarget/release/connwatch watch --format json --interval 1s -p PORT -q -o FILE                 # default\n\
             target/release/connwatch watch --format json --interval 1s --clients all -p PORT -q -o FILE   # every row\n```\n"
        );
        let q = (&self.quiet_changed, &self.quiet_all);
        // The default stream's full line as it wrote it (its rows sparse), else
        // a `--clients all` line.
        let quiet_full = q.0.mean_full().or(q.1.mean());
        let quiet_day = per_day(q.0.mean_changed(), quiet_full);
        let quiet_all_day = per_day(None, q.1.mean());
        let _ = writeln!(
            s,
            "**{NDJSON_QUIET} quiet clients:** one idle connection each from 127.0.30–33.x (a PING, \
             then nothing), {} s per stream, one after the other. Per day: by default, a full line \
             (as the default stream wrote it, its rows sparse) every 5 minutes and a changed line \
             every other second; with `--clients all`, a full line every second.\n",
            NDJSON_QUIET_TIME.as_secs()
        );
        let _ = writeln!(
            s,
            "| `--clients` | report lines (full + changed) | addresses | bytes per full line | bytes per changed line | per day |\n\
             |---|---|---|---|---|---|\n\
             | changed (default) | {} + {} | {} | {} | {} | **{} MB** |\n\
             | all | {} + 0 | {} | {} | — | {} MB |\n",
            q.0.full_lines,
            q.0.changed_lines,
            q.0.clients,
            num(q.0.mean_full(), 0),
            num(q.0.mean_changed(), 0),
            mb(quiet_day),
            q.1.full_lines,
            q.1.clients,
            num(q.1.mean(), 0),
            mb(quiet_all_day),
        );
        let o = (&self.soak_changed, &self.soak_all);
        let soak_day = per_day(o.0.mean_changed(), o.1.mean());
        let soak_all_day = per_day(None, o.1.mean());
        let ratio_day = soak_all_day.zip(soak_day).map(|(a, c)| a / c);
        let measured = (o.1.full_bytes + o.1.changed_bytes) as f64
            / (o.0.full_bytes + o.0.changed_bytes).max(1) as f64;
        let _ = writeln!(
            s,
            "**Soak-like churn:** connect, PING, close from a new random 127.x.y.z address each \
             time, paced at {NDJSON_SOAK_RATE}/s over {NDJSON_SOAK_THREADS} threads for {} s ({} \
             connections, {} errors, {:.0}/s), both streams recording at once. The table of \
             addresses fills to its bound ({MAX_ADDRESSES_DOC}, then the longest-quiet 1/8 are \
             evicted at once, as in a long soak) within the first 20 s; the figures are the last \
             {} s of each stream.\n",
            NDJSON_SOAK_TIME.as_secs(),
            self.soak_connections,
            self.soak_errors,
            self.soak_connections as f64 / self.soak_secs.max(0.001),
            NDJSON_STEADY.as_secs(),
        );
        let _ = writeln!(
            s,
            "| `--clients` | report lines (full + changed) | addresses (max) | lost events | bytes per line | per day |\n\
             |---|---|---|---|---|---|\n\
             | changed (default) | {} + {} | {} | {} | {} KB | **{} GB** |\n\
             | all | {} + 0 | {} | {} | {} KB | {} GB |\n",
            o.0.full_lines,
            o.0.changed_lines,
            o.0.clients,
            o.0.lost_events,
            kb(o.0.mean()),
            num(soak_day.map(|b| b / 1e9), 1),
            o.1.full_lines,
            o.1.clients,
            o.1.lost_events,
            kb(o.1.mean()),
            num(soak_all_day.map(|b| b / 1e9), 1),
        );
        let _ = writeln!(
            s,
            "Per day is extrapolated from these short runs, at one line a second: with `--clients \
             all`, the mean line × 86,400; by default, 288 full lines a day (every 5 minutes; each \
             counted at the size of a `--clients all` line over the same load, an upper bound: the \
             default stream writes its rows sparse, full lines included) and the mean changed line \
             for the other 86,112. Over the {} s measured, the default stream was {:.1}× smaller than \
             `--clients all`; per day, with its full lines, {}×.\n",
            NDJSON_STEADY.as_secs(),
            measured,
            num(ratio_day, 1),
        );
        // The packaged unit (packaging/connwatch.service) reports every 5 s with a full
        // line every hour: the target is judged on what it writes.
        let unit_day = per_day_with(
            q.0.mean_changed(),
            quiet_full,
            UNIT_INTERVAL_S,
            UNIT_FULL_EVERY_S,
        );
        let _ = writeln!(
            s,
            "The packaged unit runs `--interval 5s --full-every 1h` (a log to keep; verdicts judge \
             the same windows): from the same line sizes, {NDJSON_QUIET} quiet clients write **{} MB \
             a day** there.\n",
            mb(unit_day),
        );
        let quiet_met = unit_day.is_some_and(|d| d / 1e6 < QUIET_TARGET_MB_PER_DAY);
        let soak_met = ratio_day.is_some_and(|r| r >= SOAK_TARGET_RATIO);
        let verdict = |ok: bool, known: bool| match (ok, known) {
            (true, _) => "met",
            (false, true) => "NOT met",
            (false, false) => "n/a",
        };
        let _ = writeln!(
            s,
            "**Targets:** {NDJSON_QUIET} quiet clients under {QUIET_TARGET_MB_PER_DAY:.0} MB a day \
             with the packaged unit: {} MB — **{}**. The soak stream at least {SOAK_TARGET_RATIO:.0}× smaller than \
             with `--clients all`: {}× — **{}**.",
            mb(unit_day),
            verdict(quiet_met, unit_day.is_some()),
            num(ratio_day, 1),
            verdict(soak_met, ratio_day.is_some()),
        );
        if !quiet_met && quiet_day.is_some() {
            let _ = writeln!(
                s,
                "\nWhy the quiet target is missed: a changed line of quiet clients carries no row \
                 at all; its {} bytes are the host figures every report keeps (totals, redis, limits, \
                 capacity, instance), 86,400 times a day ({} MB), and a line with every row every 5 \
                 minutes adds {} MB. Fewer lines are what helps: extrapolated from the same line \
                 sizes (not measured with these flags), `--full-every 1h` would write {} MB a day, \
                 `--interval 2s --full-every 30m` {} MB, `--interval 5s --full-every 1h` {} MB.",
                num(q.0.mean_changed(), 0),
                mb(q.0.mean_changed().map(|c| c * DAY_S)),
                mb(quiet_full.map(|f| f * DAY_S / FULL_EVERY_DEFAULT_S)),
                mb(per_day_with(q.0.mean_changed(), quiet_full, 1.0, 3_600.0)),
                mb(per_day_with(q.0.mean_changed(), quiet_full, 2.0, 1_800.0)),
                mb(per_day_with(q.0.mean_changed(), quiet_full, 5.0, 3_600.0)),
            );
        }
        if !soak_met && ratio_day.is_some() {
            let _ = writeln!(
                s,
                "\nWhy the soak target is missed: every new address is one row written once (it \
                 appeared), {NDJSON_SOAK_RATE} a second, while `--clients all` writes the {} or so \
                 addresses kept each second: the ratio cannot exceed addresses kept over addresses \
                 new per interval.",
                o.1.clients,
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
\"PING_INLINE\",\"38684.72\",\"0.693\",\"0.160\",\"0.607\",\"0.983\",\"2.087\",\"5.199\"\n\
\"SET\",\"48076.92\",\"0.568\",\"0.136\",\"0.527\",\"0.839\",\"1.591\",\"5.119\"\n";

    #[test]
    fn csv_rows_are_parsed_by_column_name() {
        let rows = parse_csv(CSV).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0],
            Row {
                test: "PING_INLINE".into(),
                rps: 38684.72,
                p99_ms: 2.087,
                max_ms: 5.199
            }
        );
        assert_eq!(rows[1].test, "SET");
        assert_eq!(rows[1].p99_ms, 1.591);
    }

    #[test]
    fn csv_warnings_are_skipped_and_garbage_is_an_error() {
        let with_warning = format!("WARNING: Keepalive disabled.\n{CSV}");
        assert_eq!(parse_csv(&with_warning).unwrap().len(), 2);
        assert!(parse_csv("").is_err());
        assert!(parse_csv("\"test\",\"rps\"\n").is_err());
        assert!(parse_csv(&CSV.replace("48076.92", "x")).is_err());
        let header_only = CSV.lines().next().unwrap();
        assert!(parse_csv(header_only).is_err());
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 1.0]), Some(1.0));
    }

    #[test]
    fn ratios_and_numbers_format() {
        assert_eq!(ratio(Some(99.0), Some(100.0)), "0.990");
        assert_eq!(ratio(Some(1.0), Some(0.0)), "n/a");
        assert_eq!(ratio(None, Some(1.0)), "n/a");
        assert_eq!(num(Some(1.23456), 2), "1.23");
        assert_eq!(num(None, 2), "n/a");
        assert_eq!(met(Some(0.995), 0.99), "met");
        assert_eq!(met(Some(0.98), 0.99), "NOT met");
    }

    #[test]
    fn ndjson_fields_take_the_largest() {
        let ndjson = "{\"type\":\"report\",\"totals\":{\"open\":3,\"lost_events\":0}}\n\
                      {\"type\":\"report\",\"totals\":{\"open\":1,\"lost_events\":12}}\n";
        assert_eq!(max_field(ndjson, "lost_events"), Some(12));
        assert_eq!(max_field(ndjson, "open"), Some(3));
        assert_eq!(max_field(ndjson, "missing"), None);
        assert_eq!(last_field(ndjson, "open"), Some(1));
        assert_eq!(last_field(ndjson, "missing"), None);
    }

    #[test]
    fn proc_files_are_parsed() {
        let stat = "1234 (conn watch) S 1 1234 1234 0 -1 4194560 500 0 0 0 17 5 0 0 20 0 3 0";
        assert_eq!(stat_ticks(stat), Some(22));
        assert_eq!(stat_ticks("garbage"), None);
        let status = "Name:\tconnwatch\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(status_rss_kib(status), Some(12345));
        assert_eq!(status_rss_kib("Name: x\n"), None);
        let status = "VmHWM:\t   20480 kB\nVmRSS:\t   12345 kB\n";
        assert_eq!(status_field_kib(status, "VmHWM"), Some(20480));
    }

    #[test]
    fn fdinfo_of_bpf_programs() {
        let prog = "pos:\t0\nflags:\t02000002\nprog_type:\t5\nprog_tag:\tde8386a784525b3f\nrun_time_ns:\t318834940\nrun_cnt:\t800151\n";
        assert_eq!(fdinfo_prog_stats(prog), Some((318_834_940, 800_151)));
        assert_eq!(fdinfo_prog_stats("pos:\t0\nflags:\t02\n"), None);
        let map = "pos:\t0\nflags:\t02000002\nmap_type:\t27\nkey_size:\t0\nmemlock:\t4202496\n";
        assert_eq!(fdinfo_map_memlock(map), Some(4_202_496));
        assert_eq!(fdinfo_map_memlock(prog), None, "a program is not a map");
    }

    #[test]
    fn ratios_pair_runs_of_the_same_round() {
        let rows = |rps: f64| {
            vec![Row {
                test: "SET".into(),
                rps,
                p99_ms: 1.0,
                max_ms: 2.0,
            }]
        };
        let (mut a, mut d) = (Runs::default(), Runs::default());
        // The machine drifts from 100 to 200 rps; connwatch costs 10 % in each round.
        for base in [100.0, 150.0, 200.0] {
            d.push_runs("churn", &rows(base));
            a.push_runs("churn", &rows(base * 0.9));
        }
        let r = a.paired_ratio(&d, "churn", "SET").unwrap();
        assert!((r - 0.9).abs() < 1e-9, "{r}");
        assert_eq!(a.paired_ratio(&d, "churn", "GET"), None);
    }

    #[test]
    fn a_miss_within_the_runs_spread_is_told_apart_from_a_real_one() {
        let miss = |attached| Miss {
            what: "churn SET".into(),
            keepalive: false,
            ratio: 0.95,
            target: 0.97,
            peer: None,
            detached: Some((9_000.0, 11_000.0)),
            attached,
        };
        assert!(miss(Some((8_500.0, 9_500.0))).overlaps());
        assert!(!miss(Some((7_000.0, 8_900.0))).overlaps());
        assert!(!miss(None).overlaps());
    }

    #[test]
    fn the_address_limit_quoted_is_connwatchs() {
        let client = include_str!("../../agent/src/core/client.rs");
        let want = format!("pub const MAX_ADDRESSES: usize = {};", {
            let n = MAX_ADDRESSES_DOC.to_string();
            // 20000 → 20_000
            let (head, tail) = n.split_at(n.len() - 3);
            format!("{head}_{tail}")
        });
        assert!(client.contains(&want), "{want}");
    }

    #[test]
    fn sockstat_time_wait_count() {
        let text =
            "sockets: used 11\nTCP: inuse 1 orphan 0 tw 1993 alloc 1 mem 15\nUDP: inuse 0 mem 0\n";
        assert_eq!(sockstat_time_wait(text), Some(1993));
        assert_eq!(sockstat_time_wait("TCP: inuse 1\n"), None);
    }

    #[test]
    fn distinct_sources_do_not_repeat() {
        let all: std::collections::HashSet<Ipv4Addr> = (0..CHURN_THREADS)
            .flat_map(|t| (0..DISTINCT_PER_THREAD).map(move |i| distinct_source(t, i)))
            .collect();
        assert_eq!(
            all.len(),
            CHURN_THREADS as usize * DISTINCT_PER_THREAD as usize
        );
        assert!(all.iter().all(|a| a.is_loopback() && a.octets()[3] != 0));
    }

    #[test]
    fn the_bpftrace_peer_filters_on_the_port() {
        let script = bpftrace_script(6390);
        assert!(script.contains("args->sport == 6390"), "{script}");
        assert!(script.contains("tracepoint:sock:inet_sock_set_state"));
        assert_eq!(script.matches('{').count(), script.matches('}').count());
    }

    #[test]
    fn commandstats_usec_per_call() {
        let info = "# Commandstats\r\ncmdstat_client|list:calls=3,usec=30000,usec_per_call=10000.50,rejected_calls=0\r\n\
                    cmdstat_info:calls=2,usec=26,usec_per_call=13.00\r\n";
        assert_eq!(usec_per_call(info, "client|list"), Some(10000.5));
        assert_eq!(usec_per_call(info, "info"), Some(13.0));
        assert_eq!(usec_per_call(info, "ping"), None);
    }

    #[test]
    fn ndjson_stream_sizes_by_mode_and_uptime() {
        let ndjson = "{\"type\":\"report\",\"ts\":\"x\",\"uptime_s\":1.0,\"totals\":{\"open\":3,\"clients\":1000,\"lost_events\":0},\"clients_mode\":\"full\",\"clients\":[]}\n\
                      {\"type\":\"verdict\",\"ts\":\"x\",\"event\":\"raised\"}\n\
                      {\"type\":\"report\",\"ts\":\"x\",\"uptime_s\":2.0,\"totals\":{\"open\":3,\"clients\":1001,\"lost_events\":2},\"clients_mode\":\"changed\",\"clients\":[]}\n\
                      {\"type\":\"report\",\"ts\":\"x\",\"uptime_s\":3.5e0,\"totals\":{\"open\":3,\"clients\":999,\"lost_events\":2},\"clients_mode\":\"changed\",\"clients\":[]}\n";
        let lens: Vec<u64> = ndjson.lines().map(|l| l.len() as u64 + 1).collect();
        let all = StreamSize::of(ndjson, 0.0);
        assert_eq!(
            all,
            StreamSize {
                full_lines: 1,
                full_bytes: lens[0],
                changed_lines: 2,
                changed_bytes: lens[2] + lens[3],
                clients: 1001,
                lost_events: 2,
            }
        );
        assert_eq!(all.lines(), 3);
        let late = StreamSize::of(ndjson, 2.5);
        assert_eq!(
            (late.full_lines, late.changed_lines, late.clients),
            (0, 1, 999)
        );
        assert_eq!(late.mean_full(), None);
        assert_eq!(late.mean(), Some(lens[3] as f64));
    }

    #[test]
    fn ndjson_per_day_counts_a_full_line_every_five_minutes() {
        assert_eq!(per_day(None, Some(1_000.0)), Some(86_400_000.0));
        // 288 full lines of 100 kB and 86,112 changed lines of 1 kB.
        assert_eq!(
            per_day(Some(1_000.0), Some(100_000.0)),
            Some(288.0 * 100_000.0 + 86_112.0 * 1_000.0)
        );
        assert_eq!(per_day(Some(1.0), None), None);
        // A line every 2 s, a full one every 30 minutes: 48 full, 43,152 changed.
        assert_eq!(
            per_day_with(Some(1_000.0), Some(100_000.0), 2.0, 1_800.0),
            Some(48.0 * 100_000.0 + 43_152.0 * 1_000.0)
        );
    }

    #[test]
    fn a_section_is_spliced_in_place_or_appended() {
        let doc = "# P\n\n## 6. Six\n\nsix\n\n## 7. Seven\n\nold\n\n## 8. Eight\n\neight\n";
        assert_eq!(
            splice_section(doc, "## 7. Seven", "## 7. Seven\n\nnew\n"),
            "# P\n\n## 6. Six\n\nsix\n\n## 7. Seven\n\nnew\n\n## 8. Eight\n\neight\n"
        );
        let last = "# P\n\n## 7. Seven\n\nold\nmore\n";
        assert_eq!(
            splice_section(last, "## 7. Seven", "## 7. Seven\n\nnew\n"),
            "# P\n\n## 7. Seven\n\nnew\n"
        );
        assert_eq!(
            splice_section("# P\n\n## 6. Six\n", "## 7. Seven", "## 7. Seven\n\nnew\n"),
            "# P\n\n## 6. Six\n\n## 7. Seven\n\nnew\n"
        );
    }

    #[test]
    fn random_sources_are_loopback_and_rarely_repeat() {
        let mut seen = std::collections::HashSet::new();
        for t in 0..2 {
            for i in 0..30_000 {
                let a = random_source(t, i);
                assert_eq!(a.octets()[0], 127);
                assert!(a.octets()[3] >= 1 && a.octets()[3] <= 254);
                seen.insert(a);
            }
        }
        assert!(seen.len() > 59_800, "{} distinct of 60,000", seen.len());
    }
}
