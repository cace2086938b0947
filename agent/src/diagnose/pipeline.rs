//! The one pipeline every source feeds: events in, a diagnosed report out at the
//! end of each interval (an [`Event::Tick`]).
//!
//! `watch` and `capture` feed it live events; `analyze` feeds it the events of a
//! capture file. Because a capture records every event the live pipeline saw —
//! ticks included — a replay reaches the same reports and the same verdicts.

use crate::core::tracker::Tracker;
use crate::diagnose::{Diagnoser, Thresholds};
use crate::model::Report;
use crate::model::{Activity, Clock, ConnKey, Event, Nanos};

pub struct Pipeline {
    tracker: Tracker,
    diagnoser: Diagnoser,
    clock: Clock,
}

impl Pipeline {
    /// `clock` maps the event stream's monotonic time to wall-clock time; its
    /// `mono` is the start of the run (for `uptime_s`).
    pub fn new(ports: Vec<u16>, thresholds: Thresholds, clock: Clock) -> Self {
        let mut tracker = Tracker::new(ports);
        tracker.set_internal(thresholds.internal.clone());
        Pipeline {
            tracker,
            diagnoser: Diagnoser::new(thresholds),
            clock,
        }
    }

    /// Client mode: the events are this host's own connections to remote Redis
    /// servers, turned round (see [`Tracker::set_role`]).
    pub fn set_role(&mut self, role: crate::model::Role) {
        self.tracker.set_role(role);
    }

    /// Applies one event. A tick ends an interval and returns its report.
    pub fn apply(&mut self, ev: &Event) -> Option<Report> {
        self.tracker.apply(ev);
        let Event::Tick { ts } = ev else {
            return None;
        };
        let now = *ts;
        let diagnoser = &mut self.diagnoser;
        Some(
            self.tracker
                .report_with(now, &self.clock, |tracker, report| {
                    diagnoser.diagnose(now, report, &|ip, idle| {
                        tracker.stale_connections(ip, now, idle)
                    });
                }),
        )
    }

    /// The interval's [`Event::Activity`] from a scan that looked the open
    /// connections up (see [`Tracker::activity_from_lookups`]).
    pub fn activity_from_lookups(
        &self,
        ts: Nanos,
        answered: &[ConnKey],
        found: &[(ConnKey, Activity)],
    ) -> Event {
        self.tracker.activity_from_lookups(ts, answered, found)
    }

    /// The keys of the connections open now, sorted.
    pub fn open_keys(&self) -> Vec<ConnKey> {
        self.tracker.open_keys()
    }

    /// The stacks at `connect()` of `pid`'s connections from `ip` idle at least
    /// `min_idle` (see [`Tracker::owner_stacks`]).
    pub fn owner_stacks(
        &self,
        ip: std::net::IpAddr,
        pid: u32,
        now: Nanos,
        min_idle: std::time::Duration,
    ) -> crate::model::StackCounts {
        self.tracker.owner_stacks(ip, pid, now, min_idle)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.tracker.open()
    }

    /// The diagnoser and its history.
    pub fn diagnoser(&self) -> &Diagnoser {
        &self.diagnoser
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClientVerdict, CloseKind, Quiet};
    use crate::testing::*;
    use std::net::IpAddr;
    use std::time::Duration;

    /// Each interval's events: one-shot clients (some turned away or refused),
    /// holders, a retry storm from 10.1.0.1 in 5..12 s that then stops, a client
    /// backing off, and a leak from 10.2.0.1.
    fn workload(i: u64, next: &mut impl FnMut(u64) -> u64, open: &mut Vec<ConnKey>) -> Vec<Event> {
        let base = START + (i - 1) * SEC;
        let mut ev = Vec::new();
        for j in 0..30u64 {
            let ts = base + j * 10 * MS;
            let port = u16::try_from(20_000 + i * 40 + j).unwrap();
            let k = conn(&format!("10.0.{}.{}", next(3), next(40) + 1), port);
            match next(7) {
                0 | 1 => {
                    ev.push(opened(ts, k));
                    ev.push(closed(ts + MS, k, CloseKind::Client, 14, 7));
                }
                2 => {
                    ev.push(opened(ts, k));
                    open.push(k);
                }
                3 if !open.is_empty() => {
                    let k = open.swap_remove(next(open.len() as u64) as usize);
                    let how = [CloseKind::Client, CloseKind::Server, CloseKind::Reset];
                    ev.push(closed(ts, k, how[next(3) as usize], 10, 10));
                }
                4 => ev.push(Event::Refused { ts, key: k }),
                5 => {
                    rejected(&mut ev, ts, k);
                }
                _ => ev.push(busy(open, i, ts)),
            }
        }
        if (5..12).contains(&i) {
            let mut at = base + 400 * MS;
            for p in 0..20u16 {
                at = rejected(&mut ev, at, conn("10.1.0.1", 1_000 * (i as u16) + p)) + MS;
            }
        }
        if i.is_power_of_two() {
            rejected(&mut ev, base + 500 * MS, conn("10.1.0.2", i as u16));
        }
        ev.push(opened(base + 600 * MS, conn("10.2.0.1", 30_000 + i as u16)));
        ev.sort_by_key(Event::ts);
        ev
    }

    /// The pipeline's reports are those of a tracker whose row cache keeps the
    /// rows as built (not diagnosed), diagnosed afterwards on a copy: keeping
    /// diagnosed rows changes nothing, verdicts and `changed` included.
    #[test]
    fn reports_are_those_of_a_cache_kept_before_diagnosis() {
        let retention = Duration::from_secs(5);
        let mut pipeline = Pipeline {
            tracker: Tracker::with_retention(vec![6379], retention),
            diagnoser: Diagnoser::new(Thresholds::default()),
            clock: clock(),
        };
        let mut tracker = Tracker::with_retention(vec![6379], retention);
        let mut diagnoser = Diagnoser::new(Thresholds::default());
        let mut seed = 11u64;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % n
        };
        let mut open = Vec::new();
        let mut storm = Vec::new();
        let mut quiet_left_out = 0;
        for i in 1..=50u64 {
            let now = START + i * SEC;
            for ev in workload(i, &mut next, &mut open) {
                pipeline.apply(&ev);
                tracker.apply(&ev);
            }
            let got = pipeline.apply(&Event::Tick { ts: now }).unwrap();
            tracker.apply(&Event::Tick { ts: now });
            let mut want = tracker.report(now, &clock());
            // Without the list of rows that may not be quiet: every row looked at.
            want.clients = want.clients.to_vec().into();
            let t = &tracker;
            diagnoser.diagnose(now, &mut want, &|ip, idle| {
                t.stale_connections(ip, now, idle)
            });
            assert_eq!(got, want, "interval {i}");
            assert!(pipeline.tracker.shares_rows(&got.clients), "not copied");
            // Diagnosed, the rows not listed are still quiet.
            let listed: Vec<IpAddr> = got.clients.notable().map(|c| c.addr).collect();
            let unlisted = got.clients.iter().filter(|c| !listed.contains(&c.addr));
            assert!(unlisted.clone().all(Quiet::is_quiet), "interval {i}");
            quiet_left_out += unlisted.count();
            let row = got
                .clients
                .iter()
                .find(|c| c.addr.to_string() == "10.1.0.1");
            storm.push(row.map(|c| (c.verdict, c.changed)));
        }
        // The storm was named, and cleared by the diagnoser alone (no event then).
        let named = storm
            .iter()
            .position(|s| s.is_some_and(|s| s.0 == ClientVerdict::RetryStorm));
        let cleared = storm
            .iter()
            .rposition(|s| s.is_some_and(|s| s.0 == ClientVerdict::RetryStorm));
        assert!(named.is_some());
        assert!(quiet_left_out > 100, "{quiet_left_out}");
        assert_eq!(
            storm[cleared.unwrap() + 1],
            Some((ClientVerdict::Healthy, true))
        );
        assert_eq!(
            storm[cleared.unwrap() + 2],
            Some((ClientVerdict::Healthy, false))
        );
    }
}
