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
        Pipeline {
            tracker: Tracker::new(ports),
            diagnoser: Diagnoser::new(thresholds),
            clock,
        }
    }

    /// Applies one event. A tick ends an interval and returns its report.
    pub fn apply(&mut self, ev: &Event) -> Option<Report> {
        self.tracker.apply(ev);
        let Event::Tick { ts } = ev else {
            return None;
        };
        let now = *ts;
        let mut report = self.tracker.report(now, &self.clock);
        let tracker = &self.tracker;
        self.diagnoser.diagnose(now, &mut report, &|ip, idle| {
            tracker.stale_connections(ip, now, idle)
        });
        Some(report)
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
