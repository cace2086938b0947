//! The live source: kernel probes, the Redis poller and the /proc pollers feeding
//! the [`Pipeline`], until `--duration`, SIGINT or SIGTERM. `watch` and `capture`
//! differ only in their [`Sink`].
//!
//! Order matters at start-up: the probes are attached *before* existing connections
//! are seeded from sock_diag, so a connection opened in between is seen by both
//! (the tracker merges the two) rather than by neither.

use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{Instant, MissedTickBehavior};

use crate::cmd::cli::LiveArgs;
use crate::diagnose::pipeline::Pipeline;
use crate::model::{Clock, Event, monotonic_now};
use crate::model::{RedisSnapshot, RedisStatus, Report};
use crate::source::probe::{self, EventReader, Probe};
use crate::source::redis::{Password, RedisArgError, RedisTarget, load_password, spawn_poller};
use crate::source::{host, sock_diag};

pub const DEFAULT_PORT: u16 = 6379;

/// How often the ring buffer is drained. The kernel wakes the agent only when a
/// quarter MiB is queued (a burst); otherwise records wait up to this long, which
/// costs nothing (they carry their own times, and every drain takes all of them)
/// and saves a wakeup per connection event.
const RING_DRAIN_INTERVAL: Duration = Duration::from_millis(25);

/// The sock_diag scan of open connections costs in proportion to them (each one's
/// `tcp_info`, and a walk of the host's sockets): past this many per scan, it runs
/// every few intervals instead of every one…
const SCAN_CONNS_PER_INTERVAL: usize = 2_000;
/// …but at least this often. Idle thresholds are tens of seconds.
const SCAN_MAX_PERIOD: Duration = Duration::from_secs(10);

/// How many intervals apart the scans run with `open` connections open.
pub fn scan_stride(open: usize, interval: Duration) -> u32 {
    let most = SCAN_MAX_PERIOD.as_nanos() / interval.as_nanos().max(1);
    let most = u32::try_from(most).unwrap_or(u32::MAX).max(1);
    u32::try_from(open / SCAN_CONNS_PER_INTERVAL)
        .unwrap_or(u32::MAX)
        .saturating_add(1)
        .min(most)
}

/// Where a live run's events and reports go.
pub trait Sink {
    /// Called once the probes are attached, before the first event.
    fn start(&mut self, _ports: &[u16], _clock: &Clock) -> anyhow::Result<()> {
        Ok(())
    }
    /// Every event, in the order the pipeline applies it.
    fn event(&mut self, _ev: &Event) -> anyhow::Result<()> {
        Ok(())
    }
    /// The report of an interval; `Ok(false)` ends the run.
    fn report(&mut self, report: &Report) -> anyhow::Result<bool>;
    /// SIGHUP: reopen output files (logrotate).
    fn hangup(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The watched ports: the flags', sorted and deduplicated, or 6379.
pub fn watched_ports(args: &LiveArgs) -> Vec<u16> {
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
pub fn redis_target(
    args: &LiveArgs,
    ports: &[u16],
) -> Result<Option<(RedisTarget, Option<Password>)>, RedisArgError> {
    if args.no_redis {
        return Ok(None);
    }
    let target = match &args.redis {
        Some(url) => RedisTarget::parse(url)?,
        None => RedisTarget::new("127.0.0.1", ports.first().copied().unwrap_or(DEFAULT_PORT)),
    }
    .with_tls(args.tls.tls, args.tls.options())?;
    let password = load_password(args.password_file.as_deref())?;
    Ok(Some((target, password)))
}

/// Runs the live source into `sink` on a current-thread runtime.
pub fn run(args: &LiveArgs, duration: Option<Duration>, sink: &mut dyn Sink) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    runtime.block_on(run_async(args, duration, sink))
}

/// The live source's state between events.
struct Live<'a> {
    probe: Probe,
    ports: Vec<u16>,
    owners: host::OwnerCache,
    interval: Duration,
    /// Intervals ended since the last sock_diag scan.
    since_scan: u32,
    pipeline: Pipeline,
    sink: &'a mut dyn Sink,
}

impl Live<'_> {
    /// One event through the sink (recording) and the pipeline.
    fn feed(&mut self, ev: &Event) -> anyhow::Result<Option<Report>> {
        self.sink.event(ev)?;
        Ok(self.pipeline.apply(ev))
    }

    /// Applies every kernel record queued now, without waiting (and logs the
    /// programs' diagnostics, with --debug-probes).
    fn drain(&mut self, reader: &mut EventReader) -> anyhow::Result<()> {
        self.probe.flush_kernel_log();
        let mut batch = Vec::new();
        reader.drain(&mut batch);
        for ev in &batch {
            self.feed(ev)?;
        }
        Ok(())
    }

    /// Ends an interval: current host figures, activity and counters in, the
    /// report out to the sink. Returns whether to go on.
    fn end_interval(&mut self, reader: &mut EventReader) -> anyhow::Result<bool> {
        let snapshot = host::snapshot(&self.ports, &mut self.owners);
        refresh_listeners(&mut self.probe, &snapshot.listeners);
        let now = monotonic_now();
        self.feed(&Event::Host {
            ts: now,
            snapshot: Box::new(snapshot),
        })?;
        // Traffic and idle times of the open connections come from one sock_diag
        // scan: the kernel keeps them per socket already, so the probes need not
        // run on every message. Closes recorded before the scan are applied first,
        // so what the scan misses was really lost.
        self.since_scan += 1;
        let scan =
            if self.since_scan >= scan_stride(self.pipeline.open_connections(), self.interval) {
                self.since_scan = 0;
                sock_diag::open_connections(&self.ports, now)
                    .inspect_err(|e| log::warn!("sock_diag scan of open connections failed: {e}"))
                    .ok()
            } else {
                None
            };
        self.drain(reader)?;
        if let Some(scan) = scan {
            let ev = self.pipeline.activity_from_scan(now, &scan);
            self.feed(&ev)?;
        }
        match self.probe.counters() {
            Ok(counters) => {
                self.feed(&Event::Counters { ts: now, counters })?;
            }
            Err(e) => log::warn!("{e:#}"),
        }
        match self.feed(&Event::Tick { ts: now })? {
            Some(report) => self.sink.report(&report),
            None => Ok(true),
        }
    }
}

async fn run_async(
    args: &LiveArgs,
    duration: Option<Duration>,
    sink: &mut dyn Sink,
) -> anyhow::Result<()> {
    let ports = watched_ports(args);
    let redis = redis_target(args, &ports)?;

    probe::check_privileges()?;
    if probe::ensure_tracefs()? {
        log::info!("mounted tracefs at {}", probe::TRACEFS);
    }
    let mut probe = Probe::load(&ports, args.debug_probes)?;
    let mut reader = probe.take_events()?;
    let clock = Clock::now();
    refresh_listeners(&mut probe, &host::listener_pids(&ports));
    // Attached: what loading took is no longer needed. Before any thread starts,
    // since capabilities are per thread.
    match probe::drop_capabilities() {
        Ok(kept) => log::info!(
            "dropped capabilities; kept: {}",
            probe::kept_names(kept).join(", ")
        ),
        Err(e) => log::warn!("could not drop capabilities: {e}"),
    }
    sink.start(&ports, &clock)?;
    let mut live = Live {
        probe,
        pipeline: Pipeline::new(ports.clone(), args.thresholds.thresholds(), clock),
        ports: ports.clone(),
        owners: host::OwnerCache::default(),
        interval: args.interval,
        since_scan: 0,
        sink,
    };
    seed(&mut live)?;
    log::info!("watching port(s) {ports:?}");

    // One persistent connection to Redis, polled by a task on this runtime: it only
    // waits on its socket and timers (each with a deadline), so a slow or unreachable
    // server never delays the kernel's events.
    let mut redis_rx = match redis {
        Some((target, password)) => {
            let (rx, _task) = spawn_poller(target, password, args.interval)
                .context("starting the Redis poller")?;
            Some(rx)
        }
        None => None,
    };
    let mut redis_status = None;

    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut ticks = tokio::time::interval_at(Instant::now() + args.interval, args.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut drains = tokio::time::interval(RING_DRAIN_INTERVAL);
    drains.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = duration.map(|d| Instant::now() + d);
    let mut batch: Vec<Event> = Vec::with_capacity(1024);

    loop {
        tokio::select! {
            read = reader.read(&mut batch) => {
                read?;
                for ev in batch.drain(..) {
                    live.feed(&ev)?;
                }
            }
            _ = drains.tick() => live.drain(&mut reader)?,
            _ = ticks.tick() => {
                if !live.end_interval(&mut reader)? {
                    return Ok(());
                }
            }
            Some(snapshot) = recv_redis(&mut redis_rx) => {
                log_status_change(&mut redis_status, &snapshot);
                live.feed(&Event::Redis { ts: monotonic_now(), snapshot: Box::new(snapshot) })?;
            }
            _ = sighup.recv() => live.sink.hangup()?,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sleep_until(deadline) => break,
        }
    }

    // A last report, with what the ring buffer still holds (end_interval drains it).
    live.end_interval(&mut reader)?;
    Ok(())
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
fn refresh_listeners(probe: &mut Probe, listeners: &[crate::model::Listener]) {
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
fn seed(live: &mut Live<'_>) -> anyhow::Result<()> {
    match sock_diag::seed_events(&live.ports, monotonic_now()) {
        Ok(events) => {
            log::info!("seeded {} existing connection(s)", events.len());
            for ev in &events {
                live.feed(ev)?;
            }
        }
        Err(e) => log::warn!("could not list existing connections (sock_diag): {e}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_connections_are_scanned_every_few_intervals_at_most_ten_seconds_apart() {
        let second = Duration::from_secs(1);
        assert_eq!(scan_stride(0, second), 1);
        assert_eq!(scan_stride(1_999, second), 1);
        assert_eq!(scan_stride(2_000, second), 2);
        assert_eq!(scan_stride(15_000, second), 8);
        assert_eq!(scan_stride(1_000_000, second), 10);
        assert_eq!(scan_stride(15_000, Duration::from_millis(200)), 8);
        assert_eq!(scan_stride(100_000, Duration::from_millis(200)), 50);
        assert_eq!(scan_stride(15_000, Duration::from_secs(5)), 2);
        assert_eq!(scan_stride(15_000, Duration::from_secs(30)), 1);
        assert_eq!(scan_stride(15_000, Duration::ZERO), 8);
    }
}
