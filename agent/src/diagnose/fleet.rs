//! Every watched instance's [`Pipeline`], fed from one event stream.
//!
//! The kernel programs see the connections of every network namespace; each record
//! carries its namespace, and so does every connection key. The fleet routes each
//! event to the pipeline of its instance (a namespace's listeners on the watched
//! ports): connection events by their key, snapshots by the instance they name, a
//! scan split by namespace, a tick to all. Each instance ends each interval with its
//! own report, which carries the [`Instance`].
//!
//! The *home* instance — the agent's own namespace, or the one `--netns`/`--pid`
//! named — always exists, even with nothing listening (Redis down is when the report
//! matters most). Others appear with their first connection or snapshot and leave
//! once they have been gone a while with nothing open: a container that stopped.

use std::collections::BTreeMap;

use crate::diagnose::Thresholds;
use crate::diagnose::pipeline::Pipeline;
use crate::model::{
    Activity, Clock, ConnKey, Event, Instance, InstanceKey, NANOS_PER_SEC, Nanos, Report, Role,
};

/// A scan's figures and vanished keys of one instance.
type ScanSplit = (Vec<(ConnKey, Activity)>, Vec<ConnKey>);

/// An instance not heard of (no snapshot, no connection) for this long, with no
/// connection open, is forgotten.
pub const FORGET_AFTER: Nanos = 60 * NANOS_PER_SEC;

struct Member {
    pipeline: Pipeline,
    info: Instance,
    /// The last event that named this instance.
    last_seen: Nanos,
}

pub struct Fleet {
    ports: Vec<u16>,
    thresholds: Thresholds,
    clock: Clock,
    home: InstanceKey,
    members: BTreeMap<InstanceKey, Member>,
    role: Role,
}

impl Fleet {
    /// A fleet watching `ports`, whose home instance is `home`.
    pub fn new(ports: Vec<u16>, thresholds: Thresholds, clock: Clock, home: Instance) -> Self {
        let mut fleet = Fleet {
            ports,
            thresholds,
            clock,
            home: home.key(),
            members: BTreeMap::new(),
            role: Role::Server,
        };
        let at = fleet.clock.mono;
        let key = home.key();
        fleet.member(key, at).info = home;
        fleet
    }

    /// Client mode (`--remote-port`): every instance's pipeline, the home one's
    /// included, takes its events as this host's own connections to remote Redis
    /// servers, and its reports say `role: client`.
    pub fn with_role(mut self, role: Role) -> Self {
        self.role = role;
        for m in self.members.values_mut() {
            m.pipeline.set_role(role);
        }
        self
    }

    fn member(&mut self, key: InstanceKey, ts: Nanos) -> &mut Member {
        let (ports, thresholds, clock) = (&self.ports, &self.thresholds, self.clock);
        let role = self.role;
        let member = self.members.entry(key).or_insert_with(|| {
            let mut pipeline = Pipeline::new(ports.clone(), thresholds.clone(), clock);
            pipeline.set_role(role);
            Member {
                pipeline,
                info: Instance::bare(key, false),
                last_seen: ts,
            }
        });
        member.last_seen = member.last_seen.max(ts);
        member
    }

    /// Applies one event; a tick returns every instance's report, in key order.
    pub fn apply(&mut self, ev: &Event) -> Vec<Report> {
        let ts = ev.ts();
        match ev {
            Event::Opened { key, .. } | Event::Closed { key, .. } | Event::Seeded { key, .. } => {
                self.member(key.instance(), ts).pipeline.apply(ev);
            }
            // A refusal means nothing listens: it creates no instance, since the
            // namespace may have none (a stray port).
            // In client mode the namespace is the client's: its failed connects
            // are the news (a storm against a server that is down).
            // Client mode only: a failed connect of a client namespace.
            Event::ConnectFailed { key, .. } => {
                self.member(key.instance(), ts).pipeline.apply(ev);
            }
            Event::Refused { key, .. } => {
                if self.role == Role::Client {
                    self.member(key.instance(), ts).pipeline.apply(ev);
                } else if let Some(m) = self.members.get_mut(&key.instance()) {
                    m.pipeline.apply(ev);
                }
            }
            Event::Activity { ts, conns, gone } => {
                let mut split: BTreeMap<InstanceKey, ScanSplit> = BTreeMap::new();
                for (key, activity) in conns {
                    split
                        .entry(key.instance())
                        .or_default()
                        .0
                        .push((*key, *activity));
                }
                for key in gone {
                    split.entry(key.instance()).or_default().1.push(*key);
                }
                for (instance, (conns, gone)) in split {
                    if let Some(m) = self.members.get_mut(&instance) {
                        m.pipeline.apply(&Event::Activity {
                            ts: *ts,
                            conns,
                            gone,
                        });
                    }
                }
            }
            Event::Host { snapshot, .. } => {
                let key = snapshot.instance.as_ref().map_or(self.home, Instance::key);
                let m = self.member(key, ts);
                if let Some(info) = &snapshot.instance {
                    m.info.clone_from(info);
                }
                m.pipeline.apply(ev);
            }
            Event::Redis { instance, .. } => {
                let key = instance.unwrap_or(self.home);
                self.member(key, ts).pipeline.apply(ev);
            }
            Event::Counters { counters, .. } => match counters.instance {
                Some(key) => {
                    if let Some(m) = self.members.get_mut(&key) {
                        m.pipeline.apply(ev);
                    }
                }
                None => {
                    self.member(self.home, ts).pipeline.apply(ev);
                }
            },
            // A local process's connect: the instance it reached is not known
            // until the server's side opens, so every instance hears of it (each
            // joins it with its own connections only).
            Event::Connector { .. } => {
                for m in self.members.values_mut() {
                    m.pipeline.apply(ev);
                }
            }
            Event::Tick { ts } => return self.tick(*ts),
        }
        Vec::new()
    }

    fn tick(&mut self, now: Nanos) -> Vec<Report> {
        let home = self.home;
        self.members.retain(|key, m| {
            *key == home
                || m.pipeline.open_connections() > 0
                || now.saturating_sub(m.last_seen) < FORGET_AFTER
        });
        let tick = Event::Tick { ts: now };
        self.members
            .values_mut()
            .filter_map(|m| {
                let mut report = m.pipeline.apply(&tick)?;
                report.instance = Some(m.info.clone());
                Some(report)
            })
            .collect()
    }

    /// The interval's [`Event::Activity`] for `instance` from a scan that looked up
    /// its connections one by one (see `Tracker::activity_from_lookups`); `None`
    /// for an instance the fleet does not hold.
    pub fn activity_from_lookups(
        &self,
        instance: InstanceKey,
        ts: Nanos,
        answered: &[ConnKey],
        found: &[(ConnKey, Activity)],
    ) -> Option<Event> {
        let m = self.members.get(&instance)?;
        Some(m.pipeline.activity_from_lookups(ts, answered, found))
    }

    /// The keys of the connections open now in `instance`, sorted (none for one
    /// the fleet does not hold).
    pub fn open_keys(&self, instance: InstanceKey) -> Vec<ConnKey> {
        self.members
            .get(&instance)
            .map_or_else(Vec::new, |m| m.pipeline.open_keys())
    }

    /// Connections open now in `instance` (0 for one the fleet does not hold).
    pub fn open_connections(&self, instance: InstanceKey) -> usize {
        self.members
            .get(&instance)
            .map_or(0, |m| m.pipeline.open_connections())
    }

    /// The stacks at `connect()` of `pid`'s connections from `ip` to `instance`
    /// idle at least `min_idle` (none for an instance the fleet does not hold).
    pub fn owner_stacks(
        &self,
        instance: InstanceKey,
        ip: std::net::IpAddr,
        pid: u32,
        now: Nanos,
        min_idle: std::time::Duration,
    ) -> crate::model::StackCounts {
        self.members.get(&instance).map_or_else(Vec::new, |m| {
            m.pipeline.owner_stacks(ip, pid, now, min_idle)
        })
    }

    /// The instances held now, home first.
    pub fn instances(&self) -> Vec<InstanceKey> {
        let mut keys: Vec<InstanceKey> = self.members.keys().copied().collect();
        keys.sort_by_key(|k| (*k != self.home, *k));
        keys
    }

    pub fn home(&self) -> InstanceKey {
        self.home
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CloseKind;
    use crate::model::{HostSnapshot, KernelCounters};
    use crate::testing::{START, clock, closed, connected, opened, redis_ok};

    const HOME: u32 = 4_026_531_840;
    const BOX_A: u32 = 4_026_532_500;
    const BOX_B: u32 = 4_026_532_600;

    fn key(netns: u32, client: &str, port: u16) -> ConnKey {
        ConnKey::in_netns(
            netns,
            "10.88.0.2:6379".parse().unwrap(),
            format!("{client}:{port}").parse().unwrap(),
        )
    }

    fn fleet() -> Fleet {
        let home = Instance::bare(InstanceKey { netns: HOME }, true);
        Fleet::new(vec![6379], Thresholds::default(), clock(), home)
    }

    fn host_of(netns: u32, pid: u32, at: Nanos) -> Event {
        let mut info = Instance::bare(InstanceKey { netns }, false);
        info.pid = Some(pid);
        info.ns_pid = Some(1);
        Event::Host {
            ts: at,
            snapshot: Box::new(HostSnapshot {
                instance: Some(info),
                pid: Some(pid),
                nofile_soft: Some(1024),
                ..HostSnapshot::default()
            }),
        }
    }

    fn by_netns(reports: &[Report]) -> BTreeMap<u32, &Report> {
        reports
            .iter()
            .map(|r| (r.instance.as_ref().unwrap().netns, r))
            .collect()
    }

    /// Client mode: a container's first news may be a failed connect (a storm
    /// against a server that is down): it makes the instance, and every report
    /// says `client`. A rejection is Redis's error then its fast close, whatever
    /// the client wrote; a client's own fast close after a reply is not one.
    #[test]
    fn client_mode_counts_a_new_namespace_s_refusals_and_judges_rejections_from_the_client() {
        let home = Instance::bare(InstanceKey { netns: HOME }, true);
        let mut f =
            Fleet::new(vec![6379], Thresholds::default(), clock(), home).with_role(Role::Client);
        for i in 0..3 {
            let k = key(BOX_A, "10.88.0.1", 40_000 + i);
            f.apply(&Event::Refused {
                ts: START + u64::from(i),
                key: k,
            });
            let mut failed = crate::testing::connector(START + u64::from(i), k, 4242, "w", None);
            if let Event::Connector { failed, .. } = &mut failed {
                *failed = true;
            }
            f.apply(&failed);
        }
        // Home: one rejected (the 36-byte error, then Redis's close), one ordinary
        // (a reply, then the client's own close), both after the client wrote.
        let rejected = key(HOME, "10.0.0.5", 50_000);
        let served = key(HOME, "10.0.0.5", 50_001);
        for (i, k) in [rejected, served].into_iter().enumerate() {
            f.apply(&opened(START + i as u64, k));
        }
        f.apply(&closed(START + 5, rejected, CloseKind::Server, 120, 36));
        f.apply(&closed(START + 6, served, CloseKind::Client, 14, 36));
        let reports = f.apply(&Event::Tick {
            ts: START + NANOS_PER_SEC,
        });
        let by = by_netns(&reports);
        assert!(reports.iter().all(|r| r.role == Role::Client));
        let boxed = by[&BOX_A];
        assert_eq!(boxed.totals.refused, Some(3));
        assert_eq!(boxed.clients[0].refused, Some(3));
        let p = &boxed.clients[0].processes[0];
        assert_eq!((p.pid, p.failed, p.opened), (4242, 3, 0));
        let home = by[&HOME];
        assert_eq!(home.totals.rejected, 1);
        assert_eq!(home.clients[0].rejected, 1);
    }

    #[test]
    fn the_same_address_in_two_namespaces_is_two_instances() {
        let mut f = fleet();
        // The same client address and port in both containers (each its own bridge).
        for i in 0..5 {
            f.apply(&opened(
                START + i,
                key(BOX_A, "10.88.0.1", 40_000 + i as u16),
            ));
        }
        for i in 0..3 {
            f.apply(&opened(
                START + i,
                key(BOX_B, "10.88.0.1", 40_000 + i as u16),
            ));
        }
        f.apply(&closed(
            START + 10,
            key(BOX_B, "10.88.0.1", 40_000),
            CloseKind::Client,
            10,
            10,
        ));
        f.apply(&host_of(BOX_A, 777, START + 11));
        let Event::Redis { ts, snapshot, .. } = redis_event(90) else {
            unreachable!()
        };
        f.apply(&Event::Redis {
            ts,
            snapshot,
            instance: Some(InstanceKey { netns: BOX_A }),
        });
        let reports = f.apply(&Event::Tick {
            ts: START + NANOS_PER_SEC,
        });
        assert_eq!(reports.len(), 3, "home, A and B");
        let r = by_netns(&reports);
        assert_eq!(r[&HOME].totals.open, 0);
        assert!(r[&HOME].instance.as_ref().unwrap().host_netns);
        assert_eq!((r[&BOX_A].totals.open, r[&BOX_A].totals.opened), (5, 5));
        assert_eq!(
            (
                r[&BOX_B].totals.open,
                r[&BOX_B].totals.opened,
                r[&BOX_B].totals.closed
            ),
            (2, 3, 1)
        );
        // A's snapshot and INFO went to A only.
        assert_eq!(r[&BOX_A].instance.as_ref().unwrap().pid, Some(777));
        assert_eq!(r[&BOX_A].limits.nofile_soft, Some(1024));
        assert_eq!(r[&BOX_A].limits.maxclients, Some(90));
        assert_eq!(r[&BOX_B].limits.nofile_soft, None);
        assert_eq!(r[&BOX_B].limits.maxclients, None);
        assert_eq!(f.instances()[0], InstanceKey { netns: HOME });
    }

    fn redis_event(maxclients: u64) -> Event {
        redis_ok(START, maxclients, connected(1))
    }

    #[test]
    fn untagged_snapshots_and_counters_go_home_and_refusals_create_nothing() {
        let mut f = fleet();
        f.apply(&redis_event(60));
        f.apply(&Event::Refused {
            ts: START + 1,
            key: key(BOX_A, "10.88.0.1", 1),
        });
        f.apply(&Event::Refused {
            ts: START + 1,
            key: key(HOME, "127.0.0.1", 1),
        });
        f.apply(&Event::Counters {
            ts: START + 2,
            counters: KernelCounters {
                accept_errors: vec![(24, 5)],
                ..KernelCounters::default()
            },
        });
        // Counters for an instance the fleet does not hold are dropped.
        f.apply(&Event::Counters {
            ts: START + 2,
            counters: KernelCounters {
                accept_errors: vec![(24, 9)],
                instance: Some(InstanceKey { netns: BOX_B }),
                ..KernelCounters::default()
            },
        });
        let reports = f.apply(&Event::Tick {
            ts: START + NANOS_PER_SEC,
        });
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].limits.maxclients, Some(60));
        assert_eq!(reports[0].totals.refused, Some(1));
        assert_eq!(reports[0].totals.accept_errors.as_ref().unwrap().total(), 5);
    }

    #[test]
    fn a_scan_is_split_by_namespace_and_stopped_containers_are_forgotten() {
        let mut f = fleet();
        let a = key(BOX_A, "10.88.0.1", 1);
        let b = key(BOX_B, "10.88.0.1", 1);
        f.apply(&opened(START, a));
        f.apply(&opened(START, b));
        // Both vanished from their namespaces' scans (their closes were lost).
        f.apply(&Event::Activity {
            ts: START + 5,
            conns: vec![],
            gone: vec![a, b],
        });
        let reports = f.apply(&Event::Tick {
            ts: START + NANOS_PER_SEC,
        });
        let r = by_netns(&reports);
        assert_eq!((r[&BOX_A].totals.open, r[&BOX_A].totals.vanished), (0, 1));
        assert_eq!((r[&BOX_B].totals.open, r[&BOX_B].totals.vanished), (0, 1));
        // A keeps reporting while its snapshots come; B, silent and empty, goes.
        let later = START + FORGET_AFTER + 2 * NANOS_PER_SEC;
        f.apply(&host_of(BOX_A, 777, later - 1));
        let reports = f.apply(&Event::Tick { ts: later });
        let kept: Vec<u32> = by_netns(&reports).keys().copied().collect();
        assert_eq!(kept, vec![HOME, BOX_A]);
        assert_eq!(f.open_connections(InstanceKey { netns: BOX_A }), 0);
    }
}
