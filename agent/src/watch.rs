//! `connwatch watch`: the live pipeline. Probe and pollers feed the tracker; each
//! interval the tracker's report goes to the chosen output.
//!
//! Order matters at start-up: the probes are attached *before* existing connections
//! are seeded from sock_diag, so a connection opened in between is seen by both
//! (the tracker merges the two) rather than by neither.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{Instant, MissedTickBehavior};

use crate::cli::WatchArgs;
use crate::diagnose::Diagnoser;
use crate::event::{Clock, ConnKey, Event, monotonic_now};
use crate::output::{Output, OutputError};
use crate::probe::{self, Probe};
use crate::rates::RateMeter;
use crate::redis_info::{
    Password, RedisArgError, RedisSnapshot, RedisStatus, RedisTarget, load_password, spawn_poller,
};
use crate::tracker::Tracker;
use crate::{host, sock_diag};

pub const DEFAULT_PORT: u16 = 6379;

pub fn watch(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    runtime.block_on(watch_async(args))
}

fn watched_ports(args: &WatchArgs) -> Vec<u16> {
    let mut ports = if args.ports.is_empty() {
        vec![DEFAULT_PORT]
    } else {
        args.ports.clone()
    };
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Where to ask Redis, with its password; `None` with --no-redis. Bad values are
/// usage errors, found before anything is loaded.
fn redis_target(
    args: &WatchArgs,
    ports: &[u16],
) -> Result<Option<(RedisTarget, Option<Password>)>, RedisArgError> {
    if args.no_redis {
        return Ok(None);
    }
    let target = match &args.redis {
        Some(url) => RedisTarget::parse(url)?,
        None => RedisTarget::new("127.0.0.1", ports.first().copied().unwrap_or(DEFAULT_PORT)),
    };
    let password = load_password(args.password_file.as_deref())?;
    Ok(Some((target, password)))
}

async fn watch_async(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let ports = watched_ports(&args);
    let redis = redis_target(&args, &ports)?;
    let mut output = Output::open(args.format, args.output.as_deref(), args.top)?;

    probe::check_privileges()?;
    if probe::ensure_tracefs()? {
        log::info!("mounted tracefs at {}", probe::TRACEFS);
    }
    let mut probe = Probe::load(&ports, args.max_conns)?;
    let mut reader = probe.take_events()?;
    let clock = Clock::now();
    let mut tracker = Tracker::new(ports.clone());
    let mut diagnoser = Diagnoser::new(args.thresholds.thresholds());
    let mut rates = RateMeter::default();
    refresh_listeners(&mut probe, &host::listener_pids(&ports));
    seed(&mut tracker, &ports);
    log::info!("watching port(s) {ports:?}");

    // One persistent connection to Redis, polled on its own thread so a slow or
    // unreachable server never delays the kernel's events.
    let mut redis_rx = match redis {
        Some((target, password)) => {
            let (rx, _thread) = spawn_poller(target, password, args.interval)
                .context("starting the Redis poller thread")?;
            Some(rx)
        }
        None => None,
    };
    let mut redis_status = None;

    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut ticks = tokio::time::interval_at(Instant::now() + args.interval, args.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = args.duration.map(|d| Instant::now() + d);
    let mut batch: Vec<Event> = Vec::with_capacity(1024);

    loop {
        tokio::select! {
            read = reader.read(&mut batch) => {
                read?;
                for ev in batch.drain(..) {
                    tracker.apply(&ev);
                }
            }
            _ = ticks.tick() => {
                match emit(&mut tracker, &mut diagnoser, &mut rates, &mut probe, &ports, &clock, &mut output) {
                    Ok(()) => {}
                    Err(OutputError::Closed) => return Ok(ExitCode::SUCCESS),
                    Err(e) => return Err(e.into()),
                }
            }
            Some(snapshot) = recv_redis(&mut redis_rx) => {
                log_status_change(&mut redis_status, &snapshot);
                tracker.apply(&Event::Redis { ts: monotonic_now(), snapshot: Box::new(snapshot) });
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sleep_until(deadline) => break,
        }
    }

    // Take what the ring buffer still holds, then flush a last report.
    if let Ok(read) = tokio::time::timeout(Duration::from_millis(50), reader.read(&mut batch)).await
    {
        read?;
        for ev in batch.drain(..) {
            tracker.apply(&ev);
        }
    }
    match emit(
        &mut tracker,
        &mut diagnoser,
        &mut rates,
        &mut probe,
        &ports,
        &clock,
        &mut output,
    ) {
        Ok(()) | Err(OutputError::Closed) => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.into()),
    }
}

/// The next Redis snapshot; never resolves without a poller.
async fn recv_redis(
    rx: &mut Option<tokio::sync::mpsc::Receiver<RedisSnapshot>>,
) -> Option<RedisSnapshot> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// One log line per change of the Redis connection's status, not one per poll.
fn log_status_change(last: &mut Option<RedisStatus>, snapshot: &RedisSnapshot) {
    if *last == Some(snapshot.status) {
        return;
    }
    *last = Some(snapshot.status);
    let target = snapshot.target.map(|t| t.to_string()).unwrap_or_default();
    match (snapshot.status, &snapshot.error) {
        (RedisStatus::Ok, _) => log::info!("redis {target}: INFO joined"),
        (status, Some(err)) => {
            log::warn!("redis {target}: {status:?}: {err}; reporting from kernel data")
        }
        (status, None) => log::warn!("redis {target}: {status:?}; reporting from kernel data"),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Points the kernel's failed-accept counter at the processes owning the listeners
/// (found again every interval, so a restarted Redis is followed).
fn refresh_listeners(probe: &mut Probe, listeners: &[host::Listener]) {
    let pids: Vec<u32> = listeners
        .iter()
        .flat_map(|l| l.pids.iter().copied())
        .collect();
    if pids.is_empty() {
        log::debug!("no process listens on the watched ports");
    }
    if let Err(e) = probe.set_listener_pids(&pids) {
        log::warn!("{e:#}");
    }
}

/// Seeds the connections that exist already, so an agent started in the middle of an
/// outage sees them all.
fn seed(tracker: &mut Tracker, ports: &[u16]) {
    match sock_diag::seed_events(ports, monotonic_now()) {
        Ok(events) => {
            log::info!("seeded {} existing connection(s)", events.len());
            for ev in &events {
                tracker.apply(ev);
            }
        }
        Err(e) => log::warn!("could not list existing connections (sock_diag): {e}"),
    }
}

/// Ends an interval: current activity and counters in, report out.
fn emit(
    tracker: &mut Tracker,
    diagnoser: &mut Diagnoser,
    rates: &mut RateMeter,
    probe: &mut Probe,
    ports: &[u16],
    clock: &Clock,
    output: &mut Output,
) -> Result<(), OutputError> {
    let snapshot = host::snapshot(ports);
    refresh_listeners(probe, &snapshot.listeners);
    let now = monotonic_now();
    tracker.apply(&Event::Host {
        ts: now,
        snapshot: Box::new(snapshot),
    });
    tracker.apply(&Event::Activity {
        ts: now,
        conns: probe.activity(),
    });
    // Connections that predate the agent are not in the kernel map: their idle
    // time comes from sock_diag, only while some are still open.
    let seeded: HashSet<ConnKey> = tracker.seeded_keys();
    if !seeded.is_empty() {
        match sock_diag::activity_event(ports, &seeded, now) {
            Ok(ev) => tracker.apply(&ev),
            Err(e) => log::debug!("sock_diag refresh failed: {e}"),
        }
    }
    match probe.counters() {
        Ok(counters) => tracker.apply(&Event::Counters { ts: now, counters }),
        Err(e) => log::warn!("{e:#}"),
    }
    tracker.apply(&Event::Tick { ts: now });
    let mut report = tracker.report(now, clock);
    rates.fill(now, &mut report);
    diagnoser.diagnose(now, &mut report, &|ip, idle| {
        tracker.stale_connections(ip, now, idle)
    });
    output.write(&report)
}
