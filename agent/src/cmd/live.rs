//! The live source: kernel probes, the Redis pollers and the /proc pollers feeding
//! the [`Fleet`] of watched instances, until `--duration`, SIGINT or SIGTERM.
//! `watch` and `capture` differ only in their [`Sink`].
//!
//! An instance is a network namespace's listeners on the watched ports: the
//! agent's own namespace, and by default every other one on the host in which
//! something listens on a watched port (containers, pods), found again every
//! interval. Each has a [`Site`]: its namespace held open, its /proc and sock_diag
//! pollers (sockets made inside the namespace), its Redis poller connecting from
//! inside it, and a slot for its listeners' failed accepts in the kernel's map.
//!
//! Order matters at start-up: the probes are attached *before* existing connections
//! are seeded from sock_diag, so a connection opened in between is seen by both
//! (the tracker merges the two) rather than by neither. A namespace found later is
//! seeded when it is found, the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use connwatch_common::MAX_INSTANCE_SLOTS;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::cmd::cli::LiveArgs;
use crate::cmd::live_redis::{forward_snapshots, log_status_change, sleep_until};
use crate::diagnose::fleet::Fleet;
use crate::model::{
    Clock, Event, Instance, InstanceKey, NANOS_PER_SEC, Nanos, Role, monotonic_now,
};
use crate::model::{ProbeReport, RedisSnapshot, RedisStatus, Report};
use crate::source::netns::{self, Netns};
use crate::source::probe::{self, EventReader, Probe, WatchSpec};
use crate::source::redis::RedisPoller;
use crate::source::stacks::Stacks;
use crate::source::{host, sock_diag};

pub use crate::cmd::scan_pace::scan_stride;
pub use crate::cmd::targets::{
    DEFAULT_PORT, RedisPlan, Remotes, UsageError, redis_target, scope, watched_ports,
};

/// How often the ring buffer is drained. The kernel programs never wake the agent
/// (a wakeup per record would cost a context switch per connection event, and
/// asking the ring how full it is a helper call per record): records wait up to
/// this long, which costs nothing (they carry their own times; every drain flushes
/// what the CPUs staged and takes every record stamped before it began). Each
/// drain is a wakeup, about 0.1 ms of CPU on a busy virtual machine: at 40 a
/// second (25 ms) they were 0.3 % of a core with nothing happening. The 4 MiB ring holds ~57,000 records in full batches, most of a
/// second of the bench's heaviest churn (~70,000 records/s), eight times this period.
const RING_DRAIN_INTERVAL: Duration = Duration::from_millis(100);

/// Where a live run's events and reports go.
pub trait Sink {
    /// Called once the probes are attached, before the first event; `home` is the
    /// instance reported even with nothing listening, `probe` what the programs
    /// can see on this kernel.
    fn start(
        &mut self,
        _ports: &[u16],
        _clock: &Clock,
        _home: &Instance,
        _probe: &ProbeReport,
    ) -> anyhow::Result<()> {
        Ok(())
    }
    /// Every event, in the order the pipeline applies it.
    fn event(&mut self, _ev: &Event) -> anyhow::Result<()> {
        Ok(())
    }
    /// The reports of an interval, one per instance (home first); `Ok(false)`
    /// ends the run. A sink may complete them (`watch --otlp` sets `otlp`).
    fn reports(&mut self, reports: &mut [Report]) -> anyhow::Result<bool>;
    /// SIGHUP: reopen output files (logrotate).
    fn hangup(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Runs the live source into `sink` on a current-thread runtime.
pub fn run(args: &LiveArgs, duration: Option<Duration>, sink: &mut dyn Sink) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    runtime.block_on(run_async(args, duration, sink))
}

/// How often /proc is walked for new namespaces, and a namespace not found
/// listening is looked at again (one where connections show up, at once).
const RECHECK: Nanos = 5 * NANOS_PER_SEC;

/// One watched instance's live sources.
struct Site {
    netns: Arc<Netns>,
    key: InstanceKey,
    home: bool,
    /// Its listeners' failed accepts are counted in this slot of the kernel map.
    slot: Option<u8>,
    owners: host::OwnerCache,
    /// Intervals ended since the last sock_diag scan.
    since_scan: u32,
    /// The listeners' owners, from the last snapshot.
    pids: Vec<u32>,
    /// The task forwarding its Redis poller's snapshots; aborting it drops the
    /// poller's receiver, which ends the poller and closes its connection.
    redis: Option<tokio::task::AbortHandle>,
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Some(task) = &self.redis {
            task.abort();
        }
    }
}

/// The live source's state between events.
struct Live<'a> {
    probe: Probe,
    ports: Vec<u16>,
    fleet: Fleet,
    sites: BTreeMap<InstanceKey, Site>,
    /// Watch every namespace of the host (else only the home one).
    all_namespaces: bool,
    /// The kernel records carry namespaces (else every key says 0).
    netns_aware: bool,
    /// Namespaces looked at without finding a listener, and when.
    checked: BTreeMap<u32, Nanos>,
    /// When /proc was last walked for namespaces.
    last_walk: Option<Nanos>,
    /// The kernel records of the last drain (emptied after it; its memory kept).
    batch: Vec<Event>,
    /// Said once that other namespaces cannot be entered.
    warned_setns: bool,
    redis: Option<RedisPlan>,
    redis_tx: mpsc::Sender<(InstanceKey, RedisSnapshot)>,
    interval: Duration,
    /// What the programs see on this kernel, in every report.
    probe_report: ProbeReport,
    /// Client mode (`--remote-port`): the servers whose connections count. A site
    /// is then a namespace of this host's clients: no listener, no Redis poller;
    /// its connections are seeded and looked up from the client's end.
    remotes: Option<Remotes>,
    /// `--stacks`: the kernel's user stacks at `connect()`, symbolized for leaks.
    stacks: Option<Stacks>,
    sink: &'a mut dyn Sink,
}

impl Live<'_> {
    /// One event through the sink (recording) and the fleet; the reports of a tick.
    fn feed(&mut self, ev: &Event) -> anyhow::Result<Vec<Report>> {
        if self.remotes.as_ref().is_some_and(|r| !r.admits(ev)) {
            return Ok(Vec::new());
        }
        self.sink.event(ev)?;
        Ok(self.fleet.apply(ev))
    }

    /// Applies every kernel record queued now, without waiting (and logs the
    /// programs' diagnostics, with --debug-probes).
    fn drain(&mut self, reader: &mut EventReader) -> anyhow::Result<()> {
        self.probe.flush_kernel_log();
        // Kept between drains: grown anew each time, it was a tenth of a churn's
        // allocations.
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear();
        // Every record stamped before `before` is in the ring once the flush is done.
        let before = monotonic_now();
        self.probe.flush_staged();
        reader.drain(before, &mut batch);
        let fed = batch.iter().try_for_each(|ev| self.feed(ev).map(drop));
        batch.clear();
        self.batch = batch;
        fed
    }

    /// The key under which the kernel reports connections of `netns`.
    fn key_of(&self, netns: &Netns) -> InstanceKey {
        InstanceKey {
            netns: if self.netns_aware { netns.inode() } else { 0 },
        }
    }

    /// Starts watching the instance in `netns`: its slot, its Redis poller, and its
    /// connections open now (seeded).
    fn add_site(&mut self, netns: Netns, home: bool) -> anyhow::Result<()> {
        let key = self.key_of(&netns);
        let used: BTreeSet<u8> = self.sites.values().filter_map(|s| s.slot).collect();
        let slot = (1..MAX_INSTANCE_SLOTS as u8).find(|s| !used.contains(s));
        if slot.is_none() {
            log::warn!(
                "more than {} instances: failed accepts of {} are not told apart",
                MAX_INSTANCE_SLOTS - 1,
                netns.path().display()
            );
        }
        let netns = Arc::new(netns);
        let redis = match self
            .redis
            .as_ref()
            .and_then(|plan| Some((plan.target_for(home)?, plan.password.clone())))
        {
            Some((target, password)) => {
                let mut poller = RedisPoller::new(target, password);
                if !netns.is_own() {
                    poller = poller.in_netns(Arc::clone(&netns));
                }
                Some(forward_snapshots(
                    poller,
                    key,
                    self.interval,
                    self.redis_tx.clone(),
                )?)
            }
            None => None,
        };
        if self.remotes.is_some() {
            log::info!(
                "watching this host's connections in network namespace {} ({})",
                netns.inode(),
                netns.path().display()
            );
        } else if !home {
            log::info!(
                "watching the listeners of network namespace {} ({})",
                netns.inode(),
                netns.path().display()
            );
        }
        let site = Site {
            netns,
            key,
            home,
            slot,
            owners: host::OwnerCache::default(),
            since_scan: 0,
            pids: Vec::new(),
            redis,
        };
        let seed = if self.remotes.is_some() {
            sock_diag::client_seed_events
        } else {
            sock_diag::seed_events
        };
        match seed(&site.netns, key.netns, &self.ports, monotonic_now()) {
            Ok(events) => {
                log::info!("seeded {} existing connection(s) in {key}", events.len());
                for ev in &events {
                    self.feed(ev)?;
                }
            }
            Err(e) => log::warn!("could not list existing connections in {key} (sock_diag): {e}"),
        }
        self.sites.insert(key, site);
        Ok(())
    }

    /// Finds the namespaces (other than the ones watched) in which something listens
    /// on a watched port, and drops the sites whose namespace has no process left.
    fn discover(&mut self, now: Nanos) -> anyhow::Result<()> {
        if !self.all_namespaces || !self.netns_aware {
            return Ok(());
        }
        // The walk reads a link of every process: on a node with thousands it is
        // most of an idle interval's work. It runs every RECHECK, and at once when
        // connections show up in a namespace not watched yet.
        let fleet = self.fleet.instances();
        let unwatched = fleet.iter().any(|k| !self.sites.contains_key(k));
        if !unwatched
            && self
                .last_walk
                .is_some_and(|at| now.saturating_sub(at) < RECHECK)
        {
            return Ok(());
        }
        self.last_walk = Some(now);
        let live = netns::namespaces(std::path::Path::new("/proc"));
        self.sites
            .retain(|key, site| site.home || live.contains_key(&key.netns));
        self.checked.retain(|inode, _| live.contains_key(inode));
        let known: BTreeSet<InstanceKey> = fleet.into_iter().collect();
        for (&inode, &pid) in &live {
            let key = InstanceKey { netns: inode };
            if self.sites.contains_key(&key) {
                continue;
            }
            let due = self
                .checked
                .get(&inode)
                .is_none_or(|at| now.saturating_sub(*at) >= RECHECK);
            // Connections already seen there: look now, whatever the schedule.
            if !due && !known.contains(&key) {
                continue;
            }
            self.checked.insert(inode, now);
            let netns = match Netns::of_pid(pid) {
                Ok(n) => n,
                Err(e) => {
                    log::debug!("network namespace of pid {pid}: {e}");
                    continue;
                }
            };
            if self.remotes.is_some() {
                // Client mode: a namespace is watched once its clients connect.
                if known.contains(&key) {
                    self.add_site(netns, false)?;
                }
                continue;
            }
            match host::try_listener_pids(&netns, &self.ports) {
                Ok(listeners) if !listeners.is_empty() => self.add_site(netns, false)?,
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::PermissionDenied && !self.warned_setns =>
                {
                    self.warned_setns = true;
                    log::warn!(
                        "{e}: Redis in other network namespaces (containers, pods) is not watched; grant CAP_SYS_ADMIN, or pass --netns to watch one namespace"
                    );
                }
                Err(e) => log::debug!("listeners in network namespace {inode}: {e}"),
            }
        }
        Ok(())
    }

    /// Ends an interval: current host figures, activity and counters in, every
    /// instance's report out to the sink. Returns whether to go on.
    fn end_interval(&mut self, reader: &mut EventReader) -> anyhow::Result<bool> {
        let now = monotonic_now();
        self.discover(now)?;
        let mut snapshots = Vec::with_capacity(self.sites.len());
        // Client mode has no local Redis: no listeners, no host snapshot.
        let server_side = self.remotes.is_none();
        for site in self.sites.values_mut().filter(|_| server_side) {
            let instance = Instance::bare(site.key, site.netns.is_own());
            let snapshot =
                host::snapshot(&site.netns, &self.ports, &mut site.owners, Some(instance));
            site.pids = snapshot
                .listeners
                .iter()
                .flat_map(|l| l.pids.iter().copied())
                .collect();
            snapshots.push(snapshot);
        }
        if server_side {
            self.refresh_listeners();
        }
        for snapshot in snapshots {
            self.feed(&Event::Host {
                ts: now,
                snapshot: Box::new(snapshot),
            })?;
        }
        // Traffic and idle times of the open connections come from one sock_diag
        // scan per namespace: the kernel keeps them per socket already, so the
        // probes need not run on every message. The scan looks up the connections
        // the instance holds, one hash lookup each, so the host's other sockets
        // cost it nothing. Closes recorded before the scans are applied first, so
        // what a scan misses was really lost.
        let mut scans = Vec::new();
        for site in self.sites.values_mut() {
            site.since_scan += 1;
            let open = self.fleet.open_connections(site.key);
            if site.since_scan >= scan_stride(open, self.interval) {
                site.since_scan = 0;
                let keys = self.fleet.open_keys(site.key);
                let (netns, ports) = (&site.netns, &self.ports);
                let scan = if server_side {
                    sock_diag::lookup_connections(netns, site.key.netns, ports, &keys, now)
                } else {
                    sock_diag::lookup_client_connections(netns, site.key.netns, &keys, now)
                };
                match scan {
                    Ok(scan) => scans.push((site.key, scan)),
                    Err(e) => log::warn!(
                        "sock_diag scan of open connections in {} failed: {e}",
                        site.key
                    ),
                }
            }
        }
        self.drain(reader)?;
        for (key, scan) in scans {
            let found = &scan.conns;
            if let Some(ev) = self
                .fleet
                .activity_from_lookups(key, now, &scan.answered, found)
            {
                self.feed(&ev)?;
            }
        }
        let slots: Vec<(Option<InstanceKey>, Option<u8>)> =
            self.sites.values().map(|s| (Some(s.key), s.slot)).collect();
        match self.probe.counters(&slots) {
            Ok(all) => {
                for counters in all {
                    self.feed(&Event::Counters { ts: now, counters })?;
                }
            }
            Err(e) => log::warn!("{e:#}"),
        }
        let mut reports = self.feed(&Event::Tick { ts: now })?;
        for r in &mut reports {
            r.set_probe(Some(self.probe_report.clone()));
            if let Some(stacks) = &mut self.stacks {
                let fleet = &self.fleet;
                stacks.annotate(r, now, &|instance, ip, pid, at, idle| {
                    fleet.owner_stacks(instance, ip, pid, at, idle)
                });
            }
        }
        self.sink.reports(&mut reports)
    }

    /// Points the kernel's failed-accept counter at the processes owning the
    /// listeners, each with its instance's slot (found again every interval, so a
    /// restarted Redis is followed).
    fn refresh_listeners(&mut self) {
        let pids: BTreeMap<u32, u8> = self
            .sites
            .values()
            .flat_map(|s| s.pids.iter().map(|&p| (p, s.slot.unwrap_or(0))))
            .collect();
        if pids.is_empty() {
            log::debug!("no process listens on the watched ports");
        }
        if let Err(e) = self.probe.set_listener_pids(&pids) {
            log::warn!("{e:#}");
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
    let only = scope(args)?;

    probe::check_privileges()?;
    if probe::ensure_tracefs()? {
        log::info!("mounted tracefs at {}", probe::TRACEFS);
    }
    let home_netns = match only {
        Some(netns) => netns,
        None => Netns::own().context("reading the agent's own network namespace")?,
    };
    let all_namespaces = args.netns.is_none() && args.pid.is_none();
    let remotes = Remotes::from_args(args);
    let client = remotes.is_some();
    let spec = WatchSpec {
        ports: if client { Vec::new() } else { ports.clone() },
        remote_ports: if client { ports.clone() } else { Vec::new() },
        netns: if all_namespaces {
            Vec::new()
        } else {
            vec![home_netns.inode()]
        },
        // Held by the home site below for the whole run.
        home_netns: home_netns.inode(),
        local_processes: !args.no_processes,
        stacks: args.stacks,
    };
    let mut probe = Probe::load(&spec, args.debug_probes)?;
    let mut reader = probe.take_events()?;
    let stacks = probe.take_stacks().map(Stacks::new);
    let clock = Clock::now();
    // Attached: what loading took is no longer needed. Before any thread starts,
    // since capabilities are per thread. Entering other namespaces (every one by
    // default) takes CAP_SYS_ADMIN: kept for that only.
    let mut extra = if all_namespaces || !home_netns.is_own() {
        probe::NETNS_CAPS
    } else {
        0
    };
    // Before 5.19 every bpf(2) command checks CAP_BPF (see MAP_READ_CAPS).
    let release = crate::source::capture::kernel_release();
    let disabled = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled").ok();
    if probe::map_reads_need_cap_bpf(release.as_deref().unwrap_or(""), disabled.as_deref()) {
        extra |= probe::MAP_READ_CAPS;
    }
    match probe::drop_capabilities(extra) {
        Ok(kept) => log::info!(
            "dropped capabilities; kept: {}",
            probe::kept_names(kept).join(", ")
        ),
        Err(e) => log::warn!("could not drop capabilities: {e}"),
    }
    let netns_aware = probe.netns_aware();
    let home_key = InstanceKey {
        netns: if netns_aware { home_netns.inode() } else { 0 },
    };
    let home = Instance::bare(home_key, home_netns.is_own());
    let probe_report = ProbeReport {
        kernel: release,
        features: probe.features(),
    };
    sink.start(&ports, &clock, &home, &probe_report)?;
    let (redis_tx, mut redis_rx) = mpsc::channel(64);
    let mut live = Live {
        probe,
        fleet: Fleet::new(ports.clone(), args.thresholds.thresholds(), clock, home)
            .with_role(if client { Role::Client } else { Role::Server }),
        ports: ports.clone(),
        sites: BTreeMap::new(),
        all_namespaces,
        netns_aware,
        checked: BTreeMap::new(),
        last_walk: None,
        batch: Vec::new(),
        warned_setns: false,
        redis,
        redis_tx,
        interval: args.interval,
        probe_report,
        remotes,
        stacks,
        sink,
    };
    live.add_site(home_netns, true)?;
    if let Some(site) = live.sites.values_mut().next().filter(|_| !client) {
        let snapshot = host::snapshot(&site.netns, &ports, &mut site.owners, None);
        site.pids = snapshot
            .listeners
            .iter()
            .flat_map(|l| l.pids.iter().copied())
            .collect();
    }
    if !client {
        live.refresh_listeners();
    }
    live.discover(monotonic_now())?;
    if client {
        log::info!(
            "client mode: watching this host's connections to remote port(s) {ports:?}{}",
            if all_namespaces {
                " in every network namespace"
            } else {
                ""
            }
        );
    } else if all_namespaces {
        log::info!("watching port(s) {ports:?} in every network namespace");
    } else {
        log::info!(
            "watching port(s) {ports:?} in network namespace {}",
            home_key.netns
        );
    }

    let mut redis_status: BTreeMap<InstanceKey, RedisStatus> = BTreeMap::new();
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut ticks = tokio::time::interval_at(Instant::now() + args.interval, args.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut drains = tokio::time::interval(RING_DRAIN_INTERVAL);
    drains.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = duration.map(|d| Instant::now() + d);

    loop {
        tokio::select! {
            _ = drains.tick() => live.drain(&mut reader)?,
            _ = ticks.tick() => {
                if !live.end_interval(&mut reader)? {
                    return Ok(());
                }
            }
            Some((key, snapshot)) = redis_rx.recv() => {
                log_status_change(&mut redis_status, key, &snapshot);
                live.feed(&Event::Redis {
                    ts: monotonic_now(),
                    snapshot: Box::new(snapshot),
                    instance: Some(key),
                })?;
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
