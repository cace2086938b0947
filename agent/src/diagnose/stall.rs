//! A Redis that accepts nothing: connections wait in the accept queue while its
//! event loop is stuck (a slow command or script, a stopped process) and INFO does
//! not answer. Told apart from fd exhaustion, where accept() is called and fails.

use std::time::{Duration, SystemTime};

use serde_json::{Map, json};

use super::{Diagnoser, round1};
use crate::model::{
    Nanos, RedisStatus, Report, Severity, TIMED_OUT, Verdict, VerdictKind, format_ts,
    human_duration,
};

/// Reports in a row whose accept queue held connections and never held fewer, while
/// Redis wrote nothing: no connection left the queue between them, so Redis
/// accepted none. (A queued connection leaves the queue only when it is accepted,
/// even if its client gave up.)
#[derive(Clone, Copy, Debug)]
pub(super) struct Stall {
    /// The first report of the run (monotonic, and its wall-clock time).
    since: Nanos,
    since_wall: SystemTime,
    /// The queue's depth at that report, and at the latest one.
    first: u64,
    last: u64,
    /// What Redis had written by then (see [`wrote`]).
    wrote: u64,
}

/// What Redis has written so far, as far as the report shows: bytes sent to its
/// clients (from the scans and the closes) and connections it closed. A Redis that
/// runs grows it at every scan; a stalled one cannot.
fn wrote(r: &Report) -> u64 {
    r.clients.iter().fold(r.totals.closed_by_server, |n, c| {
        n.saturating_add(c.bytes_out)
    })
}

impl Diagnoser {
    /// Extends or ends the run of reports whose accept queue held connections and
    /// never fewer. Called once per report, before the rules.
    pub(super) fn track_stall(&mut self, now: Nanos, r: &Report) {
        let depth = r.totals.accept_queue.map(|q| q.depth).filter(|&d| d > 0);
        // The sum walks every row: only while connections wait.
        let Some(d) = depth else {
            self.stall = None;
            return;
        };
        let wrote = wrote(r);
        self.stall = match self.stall {
            Some(s) if d >= s.last && wrote <= s.wrote => Some(Stall { last: d, ..s }),
            // A first sight, or the queue shrank or Redis wrote (it runs): a new run.
            _ => Some(Stall {
                since: now,
                since_wall: r.ts,
                first: d,
                last: d,
                wrote,
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

    /// `not_accepting`: the queue is held (see [`Diagnoser::queue_held`]) and INFO's
    /// last poll timed out.
    pub(super) fn not_accepting(&self, now: Nanos, r: &Report) -> Option<Verdict> {
        let s = self.queue_held(now, r)?;
        // Timed out: not a server that answered (ok, noperm, a refusal of our
        // credentials), refused the connection (a wrong target), or was not asked.
        let timed_out = r.redis.status == RedisStatus::Unreachable
            && r.redis
                .error
                .as_deref()
                .is_some_and(|e| e.contains(TIMED_OUT));
        if !timed_out {
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
        let error = r.redis.error.as_deref().unwrap_or_default();
        evidence.insert("info_error".into(), json!(error));
        let pid = r
            .limits
            .pid
            .map_or_else(|| "PID".to_owned(), |p| p.to_string());
        Some(Verdict {
            kind: VerdictKind::NotAccepting,
            severity: Severity::Critical,
            addr: None,
            summary: format!(
                "{} connections wait in the accept queue ({} at {}, {} ago) and Redis accepts none while INFO gets no answer ({error}): its event loop is stalled, not out of connections",
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
