//! A Redis that accepts nothing: connections wait in the accept queue while its
//! event loop is stuck (a slow command or script, a stopped process) and INFO does
//! not answer. Told apart from fd exhaustion, where accept() is called and fails.

use std::time::{Duration, SystemTime};

use serde_json::{Map, json};

use super::{Diagnoser, round1};
use crate::model::{
    Nanos, RedisStatus, Report, Severity, Verdict, VerdictKind, format_ts, human_duration,
};

/// Reports in a row whose accept queue held connections and never held fewer: no
/// connection left the queue between them, so Redis accepted none. (A queued
/// connection leaves the queue only when it is accepted, even if its client gave up.)
#[derive(Clone, Copy, Debug)]
pub(super) struct Stall {
    /// The first report of the run (monotonic, and its wall-clock time).
    since: Nanos,
    since_wall: SystemTime,
    /// The queue's depth at that report, and at the latest one.
    first: u64,
    last: u64,
}

impl Diagnoser {
    /// Extends or ends the run of reports whose accept queue held connections and
    /// never fewer. Called once per report, before the rules.
    pub(super) fn track_stall(&mut self, now: Nanos, r: &Report) {
        let depth = r.totals.accept_queue.map(|q| q.depth).filter(|&d| d > 0);
        self.stall = match (self.stall, depth) {
            (_, None) => None,
            (Some(s), Some(d)) if d >= s.last => Some(Stall { last: d, ..s }),
            // A first sight, or the queue shrank (Redis accepted some): a new run.
            (_, Some(d)) => Some(Stall {
                since: now,
                since_wall: r.ts,
                first: d,
                last: d,
            }),
        };
    }

    /// The run, when it shows Redis accepting nothing: connections waited at this
    /// report and the one before, never fewer, and accept() is not failing for want
    /// of descriptors (that is `fd_limit`, where a leak may well be the cause).
    pub(super) fn queue_held(&self, now: Nanos, r: &Report) -> Option<Stall> {
        let s = self.stall.filter(|s| s.since < now)?;
        let fd_failures = self.host_delta(now, self.cfg.short_window, |h| h.fd_failures);
        let no_free_fd = matches!(
            (r.limits.open_fds, r.limits.nofile_soft),
            (Some(open), Some(limit)) if open >= limit
        );
        (fd_failures == 0 && !no_free_fd).then_some(s)
    }

    /// `not_accepting`: the queue is held (see [`Diagnoser::queue_held`]) and INFO
    /// was asked and did not answer on its last poll.
    pub(super) fn not_accepting(&self, now: Nanos, r: &Report) -> Option<Verdict> {
        let s = self.queue_held(now, r)?;
        // INFO timing out or the connection to it failing; not a server that
        // answered (ok, noperm, a refusal of our credentials) or was not asked.
        if !matches!(
            r.redis.status,
            RedisStatus::Unreachable | RedisStatus::Error | RedisStatus::Connecting
        ) {
            return None;
        }
        let stalled = Duration::from_nanos(now - s.since);
        let mut evidence = Map::new();
        evidence.insert("waiting".into(), json!(s.last));
        evidence.insert("waiting_at_start".into(), json!(s.first));
        if let Some(q) = r.totals.accept_queue {
            evidence.insert("backlog".into(), json!(q.backlog));
        }
        evidence.insert("stalled_s".into(), json!(round1(stalled.as_secs_f64())));
        evidence.insert("since".into(), json!(format_ts(s.since_wall).to_string()));
        evidence.insert("info".into(), json!(r.redis.status));
        if let Some(e) = &r.redis.error {
            evidence.insert("info_error".into(), json!(e));
        }
        let info = match &r.redis.error {
            Some(e) => format!("{} ({e})", r.redis.status),
            None => r.redis.status.to_string(),
        };
        let pid = r
            .limits
            .pid
            .map_or_else(|| "PID".to_owned(), |p| p.to_string());
        Some(Verdict {
            kind: VerdictKind::NotAccepting,
            severity: Severity::Critical,
            addr: None,
            summary: format!(
                "{} connections wait in the accept queue ({} at {}, {} ago) and Redis accepts none while INFO gets no answer ({info}): its event loop is stalled, not out of connections",
                s.last,
                s.first,
                format_ts(s.since_wall),
                human_duration(stalled),
            ),
            evidence,
            action: format!(
                "Find what holds the event loop: once Redis answers again, LATENCY LATEST (with latency-monitor-threshold set) and SLOWLOG GET 10 name the slow command or script; raising maxclients does not help\n  \
                 Replace commands that walk a whole keyspace or a big key (KEYS → SCAN, DEL of a big key → UNLINK, unbounded LRANGE/SMEMBERS/HGETALL) and bound scripts; a runaway script can be stopped with SCRIPT KILL or FUNCTION KILL\n  \
                 If nothing runs, check the process itself: grep State /proc/{pid}/status (T = stopped, D = waiting on the disk), and whether a fork for persistence or swapping holds it"
            ),
            stale_connections: Vec::new(),
        })
    }
}
