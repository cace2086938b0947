//! Verdicts: why the server is running out of connections, with the numbers that
//! prove it and the first thing to do.
//!
//! The diagnoser reads each interval's [`Report`] and keeps a short history per
//! client address (open count, failures) to see trends: a leak grows steadily with
//! idle connections, a retry storm fails and retries at once, a client that backs
//! off retries at growing intervals. Host-wide verdicts come from the joined Redis,
//! /proc and kernel figures. It is pure: the same reports give the same verdicts,
//! live or replayed. Thresholds have defaults (see [`Thresholds`]) and flags.

mod budget;
mod client_rules;
mod fanout;
pub mod fleet;
mod held;
mod history;
mod host_rules;
pub mod pipeline;
mod recommend;
mod slow;
mod stall;
mod storm;
mod thresholds;
pub mod transitions;

pub use thresholds::Thresholds;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Duration;

use history::{HostSample, Sample};
use serde_json::{Map, Value, json};

use crate::model::Nanos;
use crate::model::{ClientVerdict, FastMap, FastSet, Report, StaleList, Verdict, VerdictKind};

/// Keeps the history verdicts need and decides them.
#[derive(Debug)]
pub struct Diagnoser {
    cfg: Thresholds,
    clients: FastMap<IpAddr, VecDeque<Sample>>,
    /// Per address holding connections: (time, open) when the count moved, at most
    /// every `leak_slow_window` / 360, over that window (slow leaks).
    long: FastMap<IpAddr, VecDeque<(Nanos, u64)>>,
    host: VecDeque<HostSample>,
    /// When the previous report was recorded; `None` before the first.
    last: Option<Nanos>,
    /// This report's host figures. The history is downsampled; "now" never is.
    host_now: Option<HostSample>,
    /// Addresses judged anything but healthy in the previous report.
    flagged: FastSet<IpAddr>,
    /// The run of reports whose accept queue held connections, never fewer.
    stall: Option<stall::Stall>,
    /// Addresses with many unread replies, or dropped for them (slow consumers).
    slow: FastMap<IpAddr, slow::SlowState>,
    /// Bytes queued to every client at this report.
    queued_total: u64,
    /// What the server and the sockets say of output buffers at this report.
    buffers: slow::Buffers,
    /// Redis's idle `timeout` (s; 0: never) at this report, when known.
    timeout_s: Option<u64>,
}

impl Diagnoser {
    pub fn new(cfg: Thresholds) -> Self {
        Diagnoser {
            cfg,
            clients: FastMap::default(),
            long: FastMap::default(),
            slow: FastMap::default(),
            queued_total: 0,
            buffers: slow::Buffers::default(),
            timeout_s: None,
            host: VecDeque::new(),
            last: None,
            host_now: None,
            flagged: FastSet::default(),
            stall: None,
        }
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.cfg
    }

    pub(super) fn window_ns(&self) -> Nanos {
        nanos(self.cfg.window)
    }

    /// Records `report` (taken at monotonic time `now`) and fills in its verdicts.
    /// `stale` lists an address's open connections idle at least the given time,
    /// oldest first (from the connection table).
    pub fn diagnose(
        &mut self,
        now: Nanos,
        report: &mut Report,
        stale: &dyn Fn(IpAddr, Duration) -> StaleList,
    ) {
        self.record(now, report);
        self.record_long(now, report);
        self.track_stall(now, report);
        self.track_slow(now, report);
        self.timeout_s = report.redis.timeout_s;
        let (limit, used) = (report.capacity.limit, report.capacity.used);
        // A queue Redis takes nothing from explains every address's growth: the
        // connections waiting in it were not leaked by their clients. It holds
        // before INFO's poll times out, which not_accepting waits for.
        let stalled = self.queue_held(now, report).is_some();
        let mut verdicts: Vec<Verdict> = self.not_accepting(now, report).into_iter().collect();
        let mut flagged = FastSet::default();
        let mut failing = Vec::new();
        // Quiet rows (most rows of a host with many one-shot clients) are not even
        // looked at: nothing open and no failure ever, healthy as they were.
        let this = &*self;
        report.clients.for_notable_mut(|c| {
            // Nothing open and no failure ever: healthy, as it was (had it been open
            // or failing at the previous report, its row would have changed).
            if c.open == 0 && c.failed == 0 {
                return;
            }
            let (verdict, host_verdict) = this.judge_client(now, c, limit, used, stalled, stale);
            c.verdict = verdict;
            if c.failed > 0
                && !c.internal
                && let Some(f) = this.failing(now, c, verdict)
            {
                failing.push(f);
            }
            if verdict != ClientVerdict::Healthy {
                flagged.insert(c.addr);
            }
            // A verdict that changes changes the row, even if no figure moved.
            if (verdict != ClientVerdict::Healthy) != this.flagged.contains(&c.addr) {
                c.changed = true;
            }
            verdicts.extend(host_verdict);
        });
        self.flagged = flagged;
        verdicts.extend(self.fleet_storm(&failing));
        // maxclients is too low only for clients that back off: not while a client
        // leaks or storms, nor until most failures come from clients seen backing
        // off (more slots would fill the same way; the first gaps do not tell).
        let misbehaving = verdicts
            .iter()
            .any(|v: &Verdict| matches!(v.kind, VerdictKind::Leak | VerdictKind::RetryStorm))
            || Self::share(&failing, |f| f.verdict == ClientVerdict::BackingOff)
                .is_some_and(|s| s < 0.5);
        verdicts.extend(self.fd_limit(now, report));
        verdicts.extend(self.maxclients_too_low(now, report, misbehaving));
        // Many small kept pools are a fan-out, whatever pool_oversize would say
        // of pools of two: the fix is the number of instances, not the pool size.
        let fanout = self.instance_fanout(now, report);
        let kept = fanout
            .as_ref()
            .is_some_and(|v| v.evidence.get("form").is_some_and(|f| f == "kept"));
        if !kept {
            verdicts.extend(self.pool_oversize(now, report));
        }
        verdicts.extend(fanout);
        verdicts.extend(self.internal_headroom(report));
        verdicts.extend(self.budgets_exceeded(report));
        verdicts.extend(self.blocked_clients(report));
        verdicts.extend(self.capacity(now, report));
        verdicts.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(a.kind.cmp(&b.kind))
                .then(a.addr.cmp(&b.addr))
        });
        report.verdicts = verdicts;
        report.recommendations = self.recommend(report);
    }
}

fn nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1e3
}

/// A duration in ms, said as people say it.
fn human_ms(ms: f64) -> String {
    crate::model::human_duration(Duration::from_micros((ms.max(0.0) * 1e3) as u64))
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn insert_opt(m: &mut Map<String, Value>, key: &str, v: Option<u64>) {
    if let Some(v) = v {
        m.insert(key.into(), json!(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use crate::testing::*;
    use std::net::SocketAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn kinds(r: &Report) -> Vec<(VerdictKind, Severity, Option<IpAddr>)> {
        r.verdicts
            .iter()
            .map(|v| (v.kind, v.severity, v.addr))
            .collect()
    }

    fn verdict(r: &Report, kind: VerdictKind) -> &Verdict {
        r.verdicts
            .iter()
            .find(|v| v.kind == kind)
            .unwrap_or_else(|| panic!("no {kind:?} in {:?}", kinds(r)))
    }

    fn client_verdict(r: &Report, addr: &str) -> ClientVerdict {
        r.clients
            .iter()
            .find(|c| c.addr == ip(addr))
            .unwrap_or_else(|| panic!("no row for {addr}"))
            .verdict
    }

    fn evidence(v: &Verdict, key: &str) -> Value {
        v.evidence
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("no evidence {key} in {:?}", v.evidence))
    }

    /// The first interval (1-based) whose report satisfies `f`.
    fn first(reports: &[Report], f: impl Fn(&Report) -> bool) -> Option<usize> {
        reports.iter().position(f).map(|i| i + 1)
    }

    use VerdictKind as K;
    const CRIT: Severity = Severity::Critical;
    const WARN: Severity = Severity::Warning;

    // ---- leak ------------------------------------------------------------------

    /// Two local processes on one address: a pool (pid 7) and a leaker (pid 4242,
    /// in a Docker container). The leak names the leaker, and its action lists
    /// the stale connections under it; the row counts each process's own.
    #[test]
    fn a_leak_names_the_local_process_that_holds_the_idle_connections() {
        const ADDR: &str = "10.0.0.66";
        let id = "3f2a".repeat(16);
        let cgroup = format!("/system.slice/docker-{id}.scope");
        let mut ev = Vec::new();
        let pool: Vec<ConnKey> = (1..=10).map(|p| conn(ADDR, 10_000 + p)).collect();
        for &k in &pool {
            ev.push(connector(START, k, 7, "pool", None));
            ev.push(opened(START + MS, k));
        }
        ev.extend((1..=45).map(|i| busy(&pool, i, START + i * SEC)));
        for k in 0..45u16 {
            let at = START + u64::from(k) * SEC + 500 * MS;
            let key = conn(ADDR, 40_000 + k);
            ev.push(connector(at, key, 4242, "gunicorn", Some(&cgroup)));
            ev.push(opened(at + MS, key));
        }
        let reports = Sim::new(ev).run(45);
        let r = &reports[44];
        let row = r.clients.iter().find(|c| c.addr == ip(ADDR)).unwrap();
        let procs: Vec<(u32, &str, Option<&str>, u64, u64)> = row
            .processes
            .iter()
            .map(|p| (p.pid, &*p.comm, p.container.as_deref(), p.open, p.opened))
            .collect();
        assert_eq!(
            procs,
            [
                (4242, "gunicorn", Some(id.as_str()), 45, 45),
                (7, "pool", None, 10, 10)
            ]
        );
        let v = verdict(r, K::Leak);
        // Opened at 0.5 … 14.5 s: idle 30 s or more at 45 s.
        assert_eq!(evidence(v, "stale"), 15);
        assert_eq!(evidence(v, "process_stale"), 15);
        assert_eq!(evidence(v, "pid"), 4242);
        assert_eq!(evidence(v, "comm"), "gunicorn");
        assert_eq!(evidence(v, "container"), id.as_str());
        assert!(
            v.summary.starts_with(
                "pid 4242 (gunicorn) in container 3f2a3f2a3f2a on 10.0.0.66 holds 15 idle connections; 10.0.0.66 holds 55 connections"
            ),
            "{}",
            v.summary
        );
        assert!(v.stale_connections.iter().all(|s| s.pid == Some(4242)));
        let lines: Vec<&str> = v.action.lines().collect();
        assert!(
            lines[0].starts_with(
                "Find the code path in pid 4242 (gunicorn) in container 3f2a3f2a3f2a on 10.0.0.66"
            ),
            "{}",
            v.action
        );
        assert_eq!(lines[1], "  pid 4242 (gunicorn) in container 3f2a3f2a3f2a:");
        assert!(
            lines[2].starts_with(&format!("    CLIENT KILL ADDR {ADDR}:40000   # idle 44")),
            "{}",
            v.action
        );
        assert_eq!(lines.len(), 2 + 15);
    }

    #[test]
    fn leak_is_named_for_the_leaker_only_and_clears_when_its_connections_close() {
        const LEAKER: &str = "10.0.0.66";
        const POOL: &str = "10.0.0.10";
        let mut ev = Vec::new();
        steady_pool(&mut ev, POOL, 10, START + 100 * MS, 70);
        // One connection a second, opened at k + 0.5 s, never used, never closed…
        for k in 0..60u16 {
            let at = START + u64::from(k) * SEC + 500 * MS;
            ev.push(opened(at, conn(LEAKER, 40_000 + k)));
        }
        // …until someone closes them all at 60.2 s.
        for k in 0..60u16 {
            let at = START + 60 * SEC + 200 * MS;
            ev.push(closed(
                at,
                conn(LEAKER, 40_000 + k),
                CloseKind::Client,
                0,
                0,
            ));
        }
        let mut sim = Sim::new(ev);
        let reports = sim.run(62);

        // Five connections idle for 30 s (leak_min_stale, leak_idle) first exist at
        // 35 s: the ones opened at 0.5 … 4.5 s. Growth (34) is long past 10 by then.
        let named = first(&reports, |r| !r.verdicts.is_empty());
        assert_eq!(named, Some(35));
        for (i, r) in reports.iter().enumerate().take(60) {
            let t = i + 1;
            assert_eq!(client_verdict(r, POOL), ClientVerdict::Healthy, "t={t}");
            if t < 35 {
                assert_eq!(kinds(r), [], "t={t}");
                assert_eq!(client_verdict(r, LEAKER), ClientVerdict::Healthy, "t={t}");
            } else {
                assert_eq!(kinds(r), [(K::Leak, WARN, Some(ip(LEAKER)))], "t={t}");
                assert_eq!(client_verdict(r, LEAKER), ClientVerdict::Leak, "t={t}");
            }
        }

        let r = &reports[59]; // t = 60 s
        let v = verdict(r, K::Leak);
        assert_eq!(evidence(v, "open"), 60);
        // From the first sample (1 s, one open) to 60 s.
        assert_eq!(evidence(v, "growth"), 59);
        assert_eq!(evidence(v, "window_s"), 59.0);
        assert_eq!(evidence(v, "growth_per_min"), 60.0);
        assert_eq!(evidence(v, "idle_over_s"), 30.0);
        // Opened at 0.5 … 29.5 s: idle at least 30 s.
        assert_eq!(evidence(v, "stale"), 30);
        assert_eq!(evidence(v, "idle_max_s"), 59.5);
        assert_eq!(v.stale_connections.len(), MAX_STALE_NAMED);
        for (k, s) in v.stale_connections.iter().enumerate() {
            let addr = SocketAddr::new(ip(LEAKER), 40_000 + k as u16);
            assert_eq!(s.addr, addr);
            assert_eq!(s.idle_s, 59.5 - k as f64);
            assert_eq!(s.command, format!("CLIENT KILL ADDR {addr}"));
        }
        let kills: Vec<&str> = v
            .action
            .lines()
            .filter_map(|l| l.trim().strip_prefix("CLIENT KILL ADDR "))
            .map(|l| l.split_whitespace().next().unwrap_or(""))
            .collect();
        let expected: Vec<String> = (0..20)
            .map(|k| format!("{LEAKER}:{}", 40_000 + k))
            .collect();
        assert_eq!(kills, expected, "oldest first, at most 20:\n{}", v.action);
        assert_eq!(
            v.action.lines().nth(1),
            Some("  CLIENT KILL ADDR 10.0.0.66:40000   # idle 1m00s")
        );
        assert_eq!(
            v.summary,
            "10.0.0.66 holds 60 connections, 30 idle for over 30s, growing 60/min: a connection leak"
        );

        // Closed at 60.2 s: the verdict clears at the next report.
        for r in &reports[60..] {
            assert_eq!(kinds(r), []);
            assert_eq!(client_verdict(r, LEAKER), ClientVerdict::Healthy);
        }
    }

    #[test]
    fn a_leak_that_filled_the_server_stays_a_leak_while_its_attempts_are_turned_away() {
        const LEAKER: &str = "10.0.0.66";
        let mut ev = Vec::new();
        // One connection a second for 40 s, never used again; from then on the
        // server is full and each new attempt, every 2 s, is rejected.
        for k in 0..40u16 {
            ev.push(opened(
                START + u64::from(k) * SEC + 500 * MS,
                conn(LEAKER, 40_000 + k),
            ));
        }
        for k in 0..20u16 {
            let at = START + 40 * SEC + u64::from(k) * 2 * SEC + 300 * MS;
            rejected(&mut ev, at, conn(LEAKER, 50_000 + k));
        }
        let reports = Sim::new(ev).run(80);
        // Growth stopped at 40 s; a third of the window later it still is a leak.
        for t in [45usize, 60, 79] {
            assert_eq!(
                client_verdict(&reports[t - 1], LEAKER),
                ClientVerdict::Leak,
                "t={t}"
            );
        }
    }

    /// `addr`'s client verdict, `None` before it has a row.
    fn verdict_of(r: &Report, addr: &str) -> Option<ClientVerdict> {
        r.clients
            .iter()
            .find(|c| c.addr == ip(addr))
            .map(|c| c.verdict)
    }

    /// A warm pool of 20 from `addr` opened at the start, only 3 of them busy (the
    /// rest idle), busy at every interval end up to `until` s.
    fn warm_pool(ev: &mut Vec<Event>, addr: &str, until: u64) {
        let keys: Vec<ConnKey> = (1..=20).map(|p| conn(addr, 10_000 + p)).collect();
        ev.extend(keys.iter().map(|&k| opened(START + 100 * MS, k)));
        ev.extend((1..=until).map(|i| busy(&keys[..3], i, START + i * SEC)));
    }

    #[test]
    fn a_leak_of_six_a_minute_is_named_within_five_minutes_with_its_exhaustion() {
        const LEAKER: &str = "10.0.0.70";
        const POOL: &str = "10.0.0.71";
        // One connection every 10 s from 5 s on, never used; the server reports 100
        // of 1,000 slots in use.
        let mut ev = vec![
            redis_ok(START, 1_000, connected(100)),
            host(START, 1_000_000),
        ];
        warm_pool(&mut ev, POOL, 600);
        for k in 0..60u16 {
            let at = START + 5 * SEC + u64::from(k) * 10 * SEC;
            ev.push(opened(at, conn(LEAKER, 40_000 + k)));
        }
        let reports = Sim::new(ev).run(600);
        let first = reports
            .iter()
            .position(|r| verdict_of(r, LEAKER) == Some(ClientVerdict::Leak))
            .map(|i| i + 1);
        // The fast rule never fires (6 a minute is under 10 a window). The slow
        // history starts with the first connection (5 s) and the rule needs a span
        // of 2 min (a thirtieth of an hour): at 125 s, 13 open, 1 / 5 / 9 at the
        // span's start and thirds, 10 idle over 30 s.
        assert_eq!(first, Some(125));
        for (i, r) in reports.iter().enumerate().skip(124) {
            assert_eq!(
                client_verdict(r, LEAKER),
                ClientVerdict::Leak,
                "t={}",
                i + 1
            );
            assert_eq!(
                client_verdict(r, POOL),
                ClientVerdict::Healthy,
                "t={}",
                i + 1
            );
        }
        assert!(
            reports
                .iter()
                .all(|r| client_verdict(r, POOL) == ClientVerdict::Healthy)
        );
        let v = verdict(&reports[299], K::Leak);
        // At 300 s: 30 open, 1 when the history began at 5 s.
        assert_eq!(evidence(v, "window_s"), 295.0);
        assert_eq!(evidence(v, "growth"), 29);
        assert_eq!(evidence(v, "growth_per_min"), 5.9);
        // 900 slots left at 29 per 295 s: 9,155 s.
        let exhaustion = 900.0_f64 * 295.0 / 29.0;
        assert_eq!(evidence(v, "exhaustion_in_s"), exhaustion.round());
        let tail = format!(
            "a connection leak; the limit is reached in {} at this pace",
            human_duration(Duration::from_secs_f64(exhaustion))
        );
        assert!(v.summary.ends_with(&tail), "{}", v.summary);
    }

    #[test]
    fn a_leak_of_three_an_hour_is_named_within_the_hour() {
        const LEAKER: &str = "10.0.0.72";
        let mut ev = vec![
            redis_ok(START, 1_000, connected(100)),
            host(START, 1_000_000),
        ];
        // One every 20 minutes from 1 min on: 1, 21, 41, 61 min.
        for k in 0..4u16 {
            let at = START + 60 * SEC + u64::from(k) * 1_200 * SEC;
            ev.push(opened(at, conn(LEAKER, 40_000 + k)));
        }
        let mut sim = Sim::new(ev);
        sim.interval = 10 * SEC;
        let reports = sim.run(420);
        let named: Vec<usize> = reports
            .iter()
            .enumerate()
            .filter(|(_, r)| verdict_of(r, LEAKER) == Some(ClientVerdict::Leak))
            .map(|(i, _)| (i + 1) * 10)
            .collect();
        // Growth in each third of the hour from the first connection (1 min, when
        // the history begins) needs the fourth, at 61 min: 1 < 2 < 3 < 4 open, and
        // 3 idle over 30 s (the stale bar lowered to the growth).
        assert_eq!(named.first(), Some(&3_660), "{named:?}");
        assert!(named.iter().all(|&t| t <= 4_200));
    }

    #[test]
    fn a_pool_that_warmed_up_slowly_and_holds_is_no_slow_leak() {
        const POOL: &str = "10.0.0.73";
        let mut ev = vec![
            redis_ok(START, 1_000, connected(100)),
            host(START, 1_000_000),
        ];
        // One more connection every 20 s for 5 minutes, then 15 held, idle.
        for k in 0..15u16 {
            let at = START + SEC + u64::from(k) * 20 * SEC;
            ev.push(opened(at, conn(POOL, 40_000 + k)));
        }
        let reports = Sim::new(ev).run(1_200);
        // Once the last third of the span holds no growth, it is no leak (while it
        // still grew in each third, during its warm-up, the slow rule may name it).
        for (i, r) in reports.iter().enumerate().skip(600) {
            assert_eq!(
                client_verdict(r, POOL),
                ClientVerdict::Healthy,
                "t={}",
                i + 1
            );
        }
    }

    #[test]
    fn a_connection_holding_most_of_the_queued_replies_for_3_s_is_a_slow_consumer() {
        const SLOW: &str = "10.0.0.80";
        const FAST: &str = "10.0.0.81";
        let (slow, fast) = (conn(SLOW, 40_000), conn(FAST, 40_001));
        let mut ev = vec![opened(START, slow), opened(START, fast)];
        // From 2 s the slow one has 3 MiB unread, the other 100 KiB.
        for i in 2..=10u64 {
            let ts = START + i * SEC;
            let a = |queued| Activity {
                bytes_in: 100,
                bytes_out: 1 << 22,
                last_active: Some(ts),
                queued: Some(queued),
            };
            ev.push(Event::Activity {
                ts,
                conns: vec![(slow, a(3 << 20)), (fast, a(100 << 10))],
                gone: Vec::new(),
            });
        }
        let reports = Sim::new(ev).run(10);
        // Over the bar from 2 s; held 3 s at 5 s.
        assert!(reports[3].verdicts.is_empty(), "{:?}", kinds(&reports[3]));
        assert_eq!(
            kinds(&reports[4]),
            [(K::SlowConsumer, WARN, Some(ip(SLOW)))]
        );
        let v = verdict(&reports[9], K::SlowConsumer);
        assert_eq!(evidence(v, "send_queue_bytes"), 3 << 20);
        assert_eq!(evidence(v, "send_queue_max"), 3 << 20);
        assert_eq!(evidence(v, "share"), 0.97);
        assert_eq!(evidence(v, "held_s"), 8.0);
        assert_eq!(evidence(v, "output_buffer_drops"), 0);
        // No INFO in this run: unknown, not 0.
        assert_eq!(
            evidence(v, "info_output_buffer_disconnections"),
            Value::Null
        );
        assert_eq!(evidence(v, "mem_clients_normal"), Value::Null);
        assert_eq!(
            client_verdict(&reports[9], SLOW),
            ClientVerdict::SlowConsumer
        );
        assert_eq!(client_verdict(&reports[9], FAST), ClientVerdict::Healthy);
        assert!(
            v.summary.starts_with(
                "10.0.0.80 has not taken 3.0MiB of replies (97 % of all queued) for 8.0s"
            ),
            "{}",
            v.summary
        );
    }

    /// Redis drops a consumer for its unread replies at 1.9, 2.9 and 3.9 s (its send
    /// queue full at each close) and it reconnects: a slow consumer in a loop, its
    /// evidence the socket-derived drops beside INFO's (a server that counts them,
    /// from 10 to 13) and INFO's mem_clients_normal.
    #[test]
    fn a_reconnect_loop_of_output_buffer_drops_cites_info_beside_the_sockets() {
        const SLOW: &str = "10.0.0.82";
        let info = |drops| InfoFields {
            connected_clients: Some(2),
            mem_clients_normal: Some(200_000),
            client_output_buffer_limit_disconnections: Some(drops),
            ..InfoFields::default()
        };
        let mut ev = vec![redis_ok(START + 500 * MS, 100, info(10))];
        for i in 1..=3u16 {
            let at = START + u64::from(i) * SEC;
            let key = conn(SLOW, 41_000 + i);
            // Each connection opened right after the previous drop.
            ev.push(opened(at - 50 * MS, key));
            ev.push(Event::Closed {
                ts: at + 900 * MS,
                key,
                how: CloseKind::Server,
                activity: Some(Activity {
                    bytes_in: 4_000,
                    bytes_out: 4 << 20,
                    last_active: Some(at + 800 * MS),
                    queued: Some(2 << 20),
                }),
            });
            ev.push(redis_ok(at + 950 * MS, 100, info(10 + u64::from(i))));
        }
        // Reconnected at once after the third drop, and holding that connection.
        ev.push(opened(START + 4 * SEC - 50 * MS, conn(SLOW, 41_004)));
        let reports = Sim::new(ev).run(5);
        let v = verdict(&reports[4], K::SlowConsumer);
        assert_eq!(v.severity, CRIT);
        assert_eq!(v.addr, Some(ip(SLOW)));
        assert_eq!(evidence(v, "output_buffer_drops"), 3);
        assert_eq!(evidence(v, "host_output_buffer_closes"), 3);
        assert_eq!(evidence(v, "info_output_buffer_disconnections"), 3);
        assert_eq!(evidence(v, "mem_clients_normal"), 200_000);
        assert!(
            v.summary.contains(
                "and it reconnected (INFO counts 3 output-buffer disconnections since connwatch started)"
            ),
            "{}",
            v.summary
        );
        assert_eq!(
            reports[4]
                .redis
                .client_output_buffer_limit_disconnections_delta,
            Some(3)
        );
        assert_eq!(reports[4].redis.mem_clients_normal, Some(200_000));
    }

    #[test]
    fn busy_growing_connections_are_not_a_leak() {
        // Growth alone is not a leak: these connections all carry traffic.
        const GROWING: &str = "10.0.0.67";
        let mut ev = Vec::new();
        for k in 0..60u16 {
            let at = START + u64::from(k) * SEC + 500 * MS;
            ev.push(opened(at, conn(GROWING, 40_000 + k)));
        }
        for i in 1..=60u64 {
            let ts = START + i * SEC;
            let conns = (0..i.min(60) as u16)
                .map(|k| {
                    let a = Activity {
                        bytes_in: i,
                        bytes_out: i,
                        last_active: Some(ts),
                        queued: None,
                    };
                    (conn(GROWING, 40_000 + k), a)
                })
                .collect();
            ev.push(Event::Activity {
                ts,
                conns,
                gone: Vec::new(),
            });
        }
        let reports = Sim::new(ev).run(60);
        for r in &reports {
            assert_eq!(kinds(r), []);
            assert_eq!(client_verdict(r, GROWING), ClientVerdict::Healthy);
        }
    }

    // ---- retry storm and backoff ---------------------------------------------

    const CALM: &str = "10.0.0.10";

    /// 50 attempts a second from `addr`, each 1 ms after the previous rejection,
    /// in the seconds `from..to`, 300 ms into each.
    fn storm(ev: &mut Vec<Event>, addr: &str, from: u64, to: u64) {
        let mut port = 20_000u16;
        for s in from..to {
            let mut at = START + s * SEC + 300 * MS;
            for _ in 0..50 {
                let end = rejected(ev, at, conn(addr, port));
                port += 1;
                at = end + MS;
            }
        }
    }

    /// Attempts from `addr` from `from`, each rejected, the next one after an
    /// exponential backoff from 20 ms doubling to a 2 s cap, with ±10 % jitter.
    fn backing_off(ev: &mut Vec<Event>, addr: &str, from: Nanos, until: Nanos) {
        // A fixed jitter sequence keeps the test deterministic.
        const JITTER: [i64; 7] = [0, 7, -4, 10, -9, 3, -6];
        let mut at = from;
        let mut base = 20 * MS;
        let mut port = 30_000u16;
        let mut i = 0;
        while at < until {
            let end = rejected(ev, at, conn(addr, port));
            port += 1;
            let jitter = base as i64 * JITTER[i % JITTER.len()] / 100;
            at = end + (base as i64 + jitter) as u64;
            base = (base * 2).min(2 * SEC);
            i += 1;
        }
    }

    #[test]
    fn retry_storm_is_named_at_its_first_interval_and_clears() {
        const STORM: &str = "10.0.0.20";
        let mut ev = Vec::new();
        steady_pool(&mut ev, CALM, 5, START + 100 * MS, 20);
        // Storm from 5.3 s to 9.36 s: five bursts of 50.
        storm(&mut ev, STORM, 5, 10);
        let reports = Sim::new(ev).run(14);
        for r in &reports[..5] {
            assert_eq!(kinds(r), []);
        }
        // Named in the interval it began (6 s), with capacity critical (rejections
        // happening); maxclients_too_low is not raised since a client storms.
        for (i, r) in reports.iter().enumerate().take(12).skip(5) {
            assert_eq!(
                kinds(r),
                [
                    (K::RetryStorm, CRIT, Some(ip(STORM))),
                    (K::CapacityCritical, CRIT, None)
                ],
                "t={}",
                i + 1
            );
            assert_eq!(client_verdict(r, STORM), ClientVerdict::RetryStorm);
            assert_eq!(client_verdict(r, CALM), ClientVerdict::Healthy);
        }
        let v = verdict(&reports[5], K::RetryStorm);
        assert_eq!(evidence(v, "failures_recent"), 50);
        let v = verdict(&reports[7], K::RetryStorm); // 8 s: three bursts in 3 s
        assert_eq!(evidence(v, "failures_recent"), 150);
        assert_eq!(evidence(v, "failures_per_s"), 50.0);
        assert_eq!(evidence(v, "retry_gap_p50_ms"), 1.0);
        assert_eq!(evidence(v, "retry_trend"), "flat");
        assert_eq!(evidence(v, "rejected"), 150);
        assert_eq!(evidence(v, "refused"), 0);
        assert_eq!(evidence(v, "reset"), 0);
        assert!(v.action.contains("exponential backoff"), "{}", v.action);
        let retry = reports[7]
            .clients
            .iter()
            .find(|c| c.addr == ip(STORM))
            .and_then(|c| c.retry);
        assert_eq!(
            retry.map(|r| (r.p50_ms, r.last_ms, r.trend)),
            Some((1.0, 1.0, Trend::Flat))
        );
        // The last burst was at 9.3 s; by 13 s the short window holds no failure.
        assert_eq!(kinds(&reports[12]), [], "t=13");
        assert_eq!(client_verdict(&reports[12], STORM), ClientVerdict::Healthy);
    }

    /// A storm from a process of this host: the verdict names it, and its row
    /// counts each rejection as the process's failure.
    #[test]
    fn a_storm_names_the_local_process_that_retries() {
        const STORM: &str = "10.0.0.20";
        let mut raw = Vec::new();
        storm(&mut raw, STORM, 5, 8);
        let mut ev = Vec::new();
        for e in raw {
            if let Event::Opened { ts, key } = e {
                ev.push(connector(ts, key, 31_337, "worker", None));
            }
            ev.push(e);
        }
        let reports = Sim::new(ev).run(8);
        let r = &reports[7];
        let v = verdict(r, K::RetryStorm);
        assert!(
            v.summary
                .starts_with("pid 31337 (worker) on 10.0.0.20 retries every 1.0ms with no backoff"),
            "{}",
            v.summary
        );
        assert!(
            v.action.starts_with(
                "Make the client of pid 31337 (worker) on 10.0.0.20 retry with exponential backoff"
            ),
            "{}",
            v.action
        );
        assert_eq!(evidence(v, "pid"), 31_337);
        assert_eq!(evidence(v, "comm"), "worker");
        let row = r.clients.iter().find(|c| c.addr == ip(STORM)).unwrap();
        let p = &row.processes[0];
        assert_eq!((p.pid, p.open, p.opened, p.failed), (31_337, 0, 150, 150));
        assert_eq!(row.rejected, 150);
    }

    /// Client mode: a storm of connects that time out is told from one of
    /// refusals: `refused` stays 0, the evidence and the summary say the server
    /// did not answer.
    #[test]
    fn a_client_storm_of_timed_out_connects_says_the_server_did_not_answer() {
        const STORM: &str = "10.0.0.21";
        let mut ev = Vec::new();
        let mut port = 20_000u16;
        for s in 5..8 {
            let mut at = START + s * SEC + 300 * MS;
            for _ in 0..50 {
                let key = conn(STORM, port);
                port += 1;
                ev.push(Event::ConnectFailed {
                    ts: at,
                    key,
                    err: Some(110),
                });
                ev.push(Event::Connector {
                    ts: at,
                    client: key.remote,
                    server: key.local,
                    process: crate::model::Process {
                        pid: 4_242,
                        comm: "worker".into(),
                        cgroup: None,
                        stack: None,
                    },
                    failed: true,
                    err: Some(110),
                });
                at += MS;
            }
        }
        let reports = Sim::new(ev).client_mode().run(8);
        let r = &reports[7];
        let v = verdict(r, K::RetryStorm);
        assert!(
            v.summary.ends_with(
                "a retry storm; 150 of its connects got no answer (150 timed out, 0 abandoned by the client): the server is unreachable or not answering, not refusing"
            ),
            "{}",
            v.summary
        );
        assert_eq!(
            (
                evidence(v, "refused"),
                evidence(v, "timed_out"),
                evidence(v, "abandoned"),
                evidence(v, "connect_other"),
                evidence(v, "pid")
            ),
            (json!(0), json!(150), json!(0), json!(0), json!(4_242))
        );
        let row = r.clients.iter().find(|c| c.addr == ip(STORM)).unwrap();
        assert_eq!(
            row.processes[0].failed_by.known().map(|f| f.timed_out),
            Some(150)
        );
    }

    #[test]
    fn a_storm_of_an_address_seen_at_the_first_report_is_named_by_the_second() {
        // Nothing is known before the first report: its failures are the baseline.
        const STORM: &str = "10.0.0.21";
        let mut ev = Vec::new();
        storm(&mut ev, STORM, 0, 3);
        let reports = Sim::new(ev).run(3);
        assert_eq!(client_verdict(&reports[0], STORM), ClientVerdict::Healthy);
        assert_eq!(
            client_verdict(&reports[1], STORM),
            ClientVerdict::RetryStorm
        );
        assert_eq!(
            client_verdict(&reports[2], STORM),
            ClientVerdict::RetryStorm
        );
    }

    fn backoff_never_storms(cfg: Thresholds) {
        const SLOW: &str = "10.0.0.30";
        let mut ev = Vec::new();
        steady_pool(&mut ev, CALM, 5, START + 100 * MS, 70);
        backing_off(&mut ev, SLOW, START + 5 * SEC + 300 * MS, START + 70 * SEC);
        let reports = Sim::with(cfg, ev).run(70);
        for (i, r) in reports.iter().enumerate() {
            let t = i + 1;
            assert!(
                r.verdicts.iter().all(|v| v.kind != K::RetryStorm),
                "t={t}: {:?}",
                kinds(r)
            );
            let expected = if t <= 5 {
                ClientVerdict::Healthy
            } else {
                ClientVerdict::BackingOff
            };
            if t > 5 {
                assert_eq!(client_verdict(r, SLOW), expected, "t={t}");
                // Well-behaved clients turned away: the limit is too low.
                assert_eq!(
                    kinds(r),
                    [
                        (K::MaxclientsTooLow, CRIT, None),
                        (K::CapacityCritical, CRIT, None)
                    ],
                    "t={t}"
                );
            } else {
                assert_eq!(kinds(r), [], "t={t}");
            }
            assert_eq!(client_verdict(r, CALM), ClientVerdict::Healthy);
        }
        // First interval: five gaps from 20 to 320 ms, growing.
        let retry = |r: &Report| {
            r.clients
                .iter()
                .find(|c| c.addr == ip(SLOW))
                .and_then(|c| c.retry)
        };
        assert_eq!(
            retry(&reports[5]).map(|r| (r.gaps, r.trend)),
            Some((5, Trend::Growing))
        );
        // At the cap the gaps are flat, but over a second: still backing off.
        let late = retry(&reports[69]).unwrap();
        assert_eq!(late.trend, Trend::Flat);
        assert!(late.p50_ms >= 1_800.0 && late.p50_ms <= 2_200.0, "{late:?}");
    }

    #[test]
    fn exponential_backoff_with_jitter_is_backing_off_never_a_storm() {
        backoff_never_storms(Thresholds::default());
    }

    #[test]
    fn backoff_is_no_storm_even_when_failures_would_count_as_one() {
        // With few enough failures to qualify, the growing gaps still tell it apart.
        backoff_never_storms(Thresholds {
            storm_min_failures: 3,
            ..Thresholds::default()
        });
    }

    // ---- pools, fan-out ---------------------------------------------------------

    #[test]
    fn pool_oversize_after_half_a_window_of_steady_pools() {
        let mut ev = vec![redis_ok(START, 100, connected(90)), host(START, 1_000_000)];
        let addrs: Vec<String> = (1..=5).map(|i| format!("10.0.1.{i}")).collect();
        for a in &addrs {
            steady_pool(&mut ev, a, 18, START + 100 * MS, 40);
        }
        let reports = Sim::new(ev).run(40);
        // 90 of 100 in use: capacity critical from the start; the pools are first
        // sampled at 1 s and are steady from 31 s.
        for (i, r) in reports.iter().enumerate() {
            let t = i + 1;
            if t < 31 {
                assert_eq!(kinds(r), [(K::CapacityCritical, CRIT, None)], "t={t}");
            } else {
                assert_eq!(
                    kinds(r),
                    [
                        (K::PoolOversize, CRIT, None),
                        (K::CapacityCritical, CRIT, None)
                    ],
                    "t={t}"
                );
            }
            for a in &addrs {
                // 18 < 25 % of 100: not pool-heavy on its own.
                assert_eq!(client_verdict(r, a), ClientVerdict::Healthy, "t={t}");
            }
        }
        let v = verdict(&reports[30], K::PoolOversize);
        assert_eq!(evidence(v, "instances"), 5);
        assert_eq!(evidence(v, "per_instance"), 18);
        assert_eq!(evidence(v, "total"), 90);
        assert_eq!(evidence(v, "limit"), 100);
        // The guide's sizing with the pools seen: 5 × 18 + 100 reserved = 190, at
        // most 80 % used: 237.5, rounded up to 300. The open-file limit is ample.
        let recs = &reports[30].recommendations;
        assert_eq!(
            recs,
            &[Recommendation {
                setting: "maxclients",
                current: Some(100),
                suggested: 300,
                why: "5 instances × 18 connections + 100 reserved for replicas, cluster bus and sentinels = 190, used at most 80 % of the limit".into(),
            }]
        );
        // Before the pools are measured, the clients in use stand for the demand:
        // 90 + 100 = 190 as well.
        assert_eq!(reports[0].recommendations[0].suggested, 300);
        assert!(
            reports[0].recommendations[0]
                .why
                .starts_with("90 client connections in use + 100 reserved")
        );
    }

    #[test]
    fn a_quiet_server_with_a_small_limit_gets_no_maxclients_advice() {
        // 13 of 60 in use: nothing to say, whatever the reserve would add.
        let ev = vec![redis_ok(START, 60, connected(13)), host(START, 1_000_000)];
        let reports = Sim::new(ev).run(3);
        assert_eq!(reports[2].recommendations, []);
    }

    #[test]
    fn recommendations_for_the_fd_limit_the_timeout_and_the_backlog_and_none_during_a_leak() {
        // A leak of one connection a second for 150 s beside a healthy pool busy
        // every second; maxclients 100 under a soft limit of 100 descriptors,
        // timeout 0.
        let mut ev = vec![redis_ok(START, 100, connected(70)), host(START, 100)];
        steady_pool(&mut ev, "10.0.1.1", 5, START + 100 * MS, 150);
        for k in 0..150u16 {
            ev.push(opened(
                START + u64::from(k) * SEC + 500 * MS,
                conn("10.0.0.66", 40_000 + k),
            ));
        }
        let reports = Sim::new(ev).run(150);
        let r = &reports[149];
        assert!(
            r.verdicts.iter().any(|v| v.kind == K::Leak),
            "{:?}",
            kinds(r)
        );
        let settings: Vec<&str> = r.recommendations.iter().map(|x| x.setting).collect();
        // No maxclients while a client leaks (more slots would fill the same way).
        assert_eq!(settings, ["nofile", "timeout"]);
        // 100 + 32 + 1024, to the next 1024.
        let nofile = &r.recommendations[0];
        assert_eq!((nofile.current, nofile.suggested), (Some(100), 2048));
        // The healthy pool idles 0 s, so a minute; the leaked connections idle
        // 74 s at the median (0.5 s to 149.5 s old: the 75th of 150 is 74.5 s,
        // in whole seconds).
        let timeout = &r.recommendations[1];
        assert_eq!((timeout.current, timeout.suggested), (Some(0), 60));
        assert!(
            timeout.why.contains("the leaked connections about 74 s"),
            "{}",
            timeout.why
        );
        assert!(
            timeout.why.contains("the leaked connections about"),
            "{}",
            timeout.why
        );
    }

    #[test]
    fn pool_oversize_needs_pools_taking_the_share_of_the_limit() {
        // The same pools under a limit of 1000 take 9 %: nothing to say.
        let mut ev = vec![redis_ok(START, 1000, connected(90)), host(START, 1_000_000)];
        for i in 1..=5 {
            steady_pool(&mut ev, &format!("10.0.1.{i}"), 18, START + 100 * MS, 40);
        }
        for r in Sim::new(ev).run(40) {
            assert_eq!(kinds(&r), []);
        }
    }

    #[test]
    fn pool_heavy_client() {
        let mut ev = vec![redis_ok(START, 100, connected(40)), host(START, 1_000_000)];
        steady_pool(&mut ev, "10.0.1.9", 25, START + 100 * MS, 3);
        steady_pool(&mut ev, "10.0.1.8", 15, START + 100 * MS, 3);
        let r = &Sim::new(ev).run(3)[2];
        assert_eq!(client_verdict(r, "10.0.1.9"), ClientVerdict::PoolHeavy);
        assert_eq!(client_verdict(r, "10.0.1.8"), ClientVerdict::Healthy);
        assert_eq!(kinds(r), []);
    }

    /// `n` addresses each opening a connection every 4 s, 7 ms + 20 ms × i into
    /// the cycle, used and closed by the client 5 ms later.
    fn fanout(n: u32, seconds: u64) -> Vec<Event> {
        let mut ev = Vec::new();
        for i in 0..n {
            let addr = format!("10.1.{}.{}", i / 250, i % 250 + 1);
            let mut port = 50_000u16;
            let mut at = START + 7 * MS + u64::from(i) * 20 * MS % (4 * SEC);
            while at < START + seconds * SEC {
                let k = conn(&addr, port);
                ev.push(opened(at, k));
                ev.push(closed(at + 5 * MS, k, CloseKind::Client, 40, 12));
                port += 1;
                at += 4 * SEC;
            }
        }
        ev
    }

    #[test]
    fn instance_fanout_from_hundreds_of_short_lived_addresses() {
        let reports = Sim::new(fanout(200, 20)).run(20);
        // 50 addresses have opened by 1 s, 100 by 2 s, all 200 by 4 s.
        assert_eq!(kinds(&reports[0]), []);
        for r in &reports[1..] {
            assert_eq!(kinds(r), [(K::InstanceFanout, WARN, None)]);
            assert!(
                r.clients
                    .iter()
                    .all(|c| c.verdict == ClientVerdict::Healthy)
            );
        }
        assert_eq!(
            evidence(verdict(&reports[1], K::InstanceFanout), "addresses"),
            100
        );
        let v = verdict(&reports[3], K::InstanceFanout);
        assert_eq!(evidence(v, "addresses"), 200);
        assert_eq!(evidence(v, "opened"), 200);
        assert_eq!(
            evidence(verdict(&reports[19], K::InstanceFanout), "opened"),
            1000
        );
    }

    #[test]
    fn fifty_short_lived_addresses_are_no_fanout() {
        for r in Sim::new(fanout(50, 30)).run(30) {
            assert_eq!(kinds(&r), []);
            assert!(
                r.clients
                    .iter()
                    .all(|c| c.verdict == ClientVerdict::Healthy)
            );
        }
    }

    /// `n` addresses, one every 100 ms from 50 ms, each opening `per` connections
    /// it keeps open and idle; INFO counts them (and the agent) every second
    /// against maxclients `maxclients`.
    fn kept_pools(n: u64, per: u16, maxclients: u64, seconds: u64) -> Vec<Event> {
        let mut ev = vec![host(START, 1_000_000)];
        for i in 0..n {
            let addr = format!("10.2.{}.{}", i / 250, i % 250 + 1);
            for p in 0..per {
                ev.push(opened(
                    START + 50 * MS + i * 100 * MS,
                    conn(&addr, 30_000 + p),
                ));
            }
        }
        for s in 0..=seconds {
            let opened = match s {
                0 => 0,
                _ => ((s * 1_000 - 50) / 100 + 1).min(n),
            };
            let open = opened * u64::from(per);
            ev.push(redis_ok(START + s * SEC, maxclients, connected(open + 1)));
        }
        ev
    }

    #[test]
    fn kept_fanout_of_one_connection_per_address_names_the_instances_and_the_sizing() {
        // 300 addresses appear over 30 s, each keeping one idle connection: 301 of
        // 320 slots with the agent's.
        let reports = Sim::new(kept_pools(300, 1, 320, 62)).run(62);
        // Steady: the same count half a window (30 s) ago. Address i opens in
        // interval ⌈0.05 + 0.1 i⌉, so at t s 10 × (t − 30) of them are steady;
        // 70 % of 320 is 224: 230 at 53 s, 220 at 52 s.
        let named = first(&reports, |r| {
            r.verdicts.iter().any(|v| v.kind == K::InstanceFanout)
        });
        assert_eq!(named, Some(53));
        let v = verdict(&reports[52], K::InstanceFanout);
        assert_eq!(evidence(v, "instances"), 230);
        assert_eq!(evidence(v, "maxclients_needed"), 330);
        for (i, r) in reports.iter().enumerate().skip(52) {
            assert_eq!(
                kinds(r),
                [
                    (K::InstanceFanout, CRIT, None),
                    (K::CapacityCritical, CRIT, None)
                ],
                "t={}",
                i + 1
            );
            assert!(
                r.clients
                    .iter()
                    .all(|c| c.verdict == ClientVerdict::Healthy)
            );
        }
        let r = &reports[61];
        let v = verdict(r, K::InstanceFanout);
        assert_eq!(evidence(v, "form"), "kept");
        assert_eq!(evidence(v, "instances"), 300);
        assert_eq!(evidence(v, "per_instance"), 1);
        assert_eq!(evidence(v, "total"), 300);
        assert_eq!(evidence(v, "limit"), 320);
        assert_eq!(evidence(v, "reserved_headroom"), 100);
        // instances × connections_per_instance + reserved_headroom
        assert_eq!(evidence(v, "maxclients_needed"), 400);
        assert_eq!(v.evidence.len(), 7, "{:?}", v.evidence);
        assert_eq!(
            v.summary,
            "300 client addresses each keep 1 connection open, 300 together of a limit of 320 (94%): one small pool per instance (serverless or kept-warm instances), and their number fills Redis"
        );
        assert!(
            v.action.starts_with(
                "Size for the instances: 300 instances × 1 connection + 100 reserved = 400 slots against a limit of 320;"
            ),
            "{}",
            v.action
        );
        // Below the critical ratio the kept fan-out is a warning.
        let r = &Sim::new(kept_pools(300, 1, 370, 62)).run(62)[61];
        assert_eq!(
            kinds(r),
            [
                (K::InstanceFanout, WARN, None),
                (K::CapacityWarning, WARN, None)
            ]
        );
    }

    #[test]
    fn kept_pools_of_two_on_many_addresses_are_a_fanout_not_an_oversized_pool() {
        // 150 × 2 = 300 of 400: also ≥ 3 similar steady pools over 70 % of the
        // limit, which pool_oversize would name; the instances are the cause.
        let r = &Sim::new(kept_pools(150, 2, 400, 62)).run(62)[61];
        assert_eq!(kinds(r), [(K::InstanceFanout, WARN, None)]);
        let v = verdict(r, K::InstanceFanout);
        assert_eq!(evidence(v, "instances"), 150);
        assert_eq!(evidence(v, "per_instance"), 2);
        assert_eq!(evidence(v, "total"), 300);
        assert_eq!(evidence(v, "maxclients_needed"), 400);
    }

    #[test]
    fn too_few_instances_or_too_small_a_share_is_no_kept_fanout() {
        // 99 addresses hold 99 % of a limit of 101: under the 100 instances.
        let r = &Sim::new(kept_pools(99, 1, 101, 62)).run(62)[61];
        assert_eq!(kinds(r), [(K::CapacityCritical, CRIT, None)]);
        // 300 addresses hold 30 % of 1000: under the 70 % share.
        let r = &Sim::new(kept_pools(300, 1, 1_000, 62)).run(62)[61];
        assert_eq!(kinds(r), []);
        // Pools of three are pools, not a fan-out: 100 × 3 = 300 of 400.
        let r = &Sim::new(kept_pools(100, 3, 400, 62)).run(62)[61];
        assert_eq!(kinds(r), [(K::PoolOversize, WARN, None)]);
    }

    // ---- not accepting ------------------------------------------------------------

    const WAITING: &str = "10.0.0.50";

    /// Redis stops at 4.5 s and resumes at 12.5 s; a pool of 10 is busy while it
    /// runs. 30 connections from WAITING
    /// arrive one every 200 ms from 4.51 s and, when `queued`, wait in the accept
    /// queue (3 of them at 5 s, 8 at 6 s … 28 at 10 s, 30 from 11 s); they are
    /// served at 12.5 s and closed by their clients at 12.6 s. INFO answers until
    /// the stop, times out from `info_fails` (if given), and answers again at
    /// 13.2 s. Not `queued`: Redis accepted them at once and they idle open.
    fn stall(info_fails: Option<Nanos>, queued: bool) -> Vec<Event> {
        let mut ev = vec![redis_ok(START, 10_000, connected(11))];
        // A pool of 10, busy while Redis runs: until 4 s and from 13 s.
        let pool: Vec<ConnKey> = (1..=10).map(|p| conn("10.0.0.10", 10_000 + p)).collect();
        ev.extend(pool.iter().map(|&k| opened(START + 100 * MS, k)));
        ev.extend(
            (1..=4)
                .chain(13..=20)
                .map(|i| busy(&pool, i, START + i * SEC)),
        );
        for j in 0..30u16 {
            let k = conn(WAITING, 41_000 + j);
            ev.push(opened(START + 4_510 * MS + u64::from(j) * 200 * MS, k));
            ev.push(closed(START + 12_600 * MS, k, CloseKind::Client, 14, 7));
        }
        for s in 0..=20u64 {
            let waiting = match s {
                5..=12 if queued => (0..30u64).filter(|j| 4_510 + j * 200 <= s * 1_000).count(),
                _ => 0,
            };
            ev.push(accept_queue(START + s * SEC, waiting as u64, 50));
        }
        ev.extend(info_fails.map(info_times_out));
        ev.push(redis_ok(START + 13_200 * MS, 10_000, connected(11)));
        ev
    }

    /// Short leak thresholds (2 s idle, 20 s window), under which the queued
    /// connections would be a leak were Redis accepting.
    fn quick_leaks() -> Thresholds {
        Thresholds {
            leak_idle: Duration::from_secs(2),
            window: Duration::from_secs(20),
            ..Thresholds::default()
        }
    }

    #[test]
    fn not_accepting_while_the_queue_only_grows_and_info_times_out_and_no_leak_is_named() {
        let reports = Sim::with(quick_leaks(), stall(Some(START + 5_600 * MS), true)).run(20);
        // 5 s: the queue's first sight, INFO still answering. From 6 s: two reports
        // in a row, never fewer, and INFO timed out at 5.6 s.
        for (i, r) in reports.iter().enumerate() {
            let t = i + 1;
            if (6..=12).contains(&t) {
                assert_eq!(kinds(r), [(K::NotAccepting, CRIT, None)], "t={t}");
            } else {
                assert_eq!(kinds(r), [], "t={t}");
            }
            for c in &r.clients {
                assert_eq!(c.verdict, ClientVerdict::Healthy, "t={t} {}", c.addr);
            }
        }
        let v = verdict(&reports[5], K::NotAccepting);
        assert_eq!(evidence(v, "waiting"), 8);
        assert_eq!(evidence(v, "waiting_at_start"), 3);
        assert_eq!(evidence(v, "stalled_s"), 1.0);
        let v = verdict(&reports[11], K::NotAccepting);
        assert_eq!(evidence(v, "waiting"), 30);
        assert_eq!(evidence(v, "waiting_at_start"), 3);
        assert_eq!(evidence(v, "backlog"), 511);
        assert_eq!(evidence(v, "stalled_s"), 7.0);
        assert_eq!(evidence(v, "since"), "2026-11-29T21:00:05.000Z");
        assert_eq!(evidence(v, "info"), "unreachable");
        assert_eq!(evidence(v, "info_error"), "reading a reply: timed out");
        assert_eq!(v.evidence.len(), 7, "{:?}", v.evidence);
        assert_eq!(
            v.summary,
            "30 connections wait in the accept queue (3 at 2026-11-29T21:00:05.000Z, 7.0s ago) and Redis accepts none while INFO gets no answer (reading a reply: timed out): its event loop is stalled, not out of connections"
        );
        assert!(v.action.contains("LATENCY LATEST"), "{}", v.action);
        assert!(v.action.contains("SLOWLOG GET"), "{}", v.action);
        assert!(v.action.contains("KEYS → SCAN"), "{}", v.action);
        assert!(v.action.contains("/proc/42/status"), "{}", v.action);

        // INFO's poll may hang longer than the leak rule waits: the held queue
        // alone already tells the waiting connections are no leak.
        let reports = Sim::with(quick_leaks(), stall(Some(START + 9_600 * MS), true)).run(20);
        for (i, r) in reports.iter().enumerate() {
            let t = i + 1;
            if (10..=12).contains(&t) {
                assert_eq!(kinds(r), [(K::NotAccepting, CRIT, None)], "t={t}");
            } else {
                assert_eq!(kinds(r), [], "t={t}");
            }
        }
        // The same connections accepted by Redis and left idle: under these
        // thresholds, a leak from 8 s.
        let reports = Sim::with(quick_leaks(), stall(None, false)).run(20);
        assert_eq!(first(&reports, |r| !r.verdicts.is_empty()), Some(8));
        for r in &reports[7..12] {
            assert_eq!(kinds(r), [(K::Leak, WARN, Some(ip(WAITING)))]);
        }
    }

    #[test]
    fn a_queue_held_for_want_of_descriptors_is_fd_limit_not_a_stall() {
        // EMFILE counted by the probe.
        let mut ev = stall(Some(START + 5_600 * MS), true);
        ev.extend((0..=20).map(|s| emfile(START + s * SEC, 100 * s)));
        let reports = Sim::new(ev).run(20);
        for r in &reports[5..12] {
            assert_eq!(
                kinds(r),
                [(K::FdLimit, CRIT, None), (K::CapacityCritical, CRIT, None)]
            );
        }
        // No failed accept counted (a kernel without the probe), but the process
        // holds every descriptor its limit allows.
        let mut ev: Vec<Event> = stall(Some(START + 5_600 * MS), true)
            .into_iter()
            .filter(|e| !matches!(e, Event::Host { .. }))
            .collect();
        ev.extend((0..=20).map(|s| accept_queue(START + s * SEC, 8 * s, 10_032)));
        let reports = Sim::new(ev).run(20);
        assert!(
            reports
                .iter()
                .all(|r| r.verdicts.iter().all(|v| v.kind != K::NotAccepting))
        );
    }

    #[test]
    fn a_queue_beside_a_redis_that_writes_or_refuses_info_is_no_stall() {
        // The stall's queue, but the pool keeps getting replies all along: Redis
        // runs (its INFO connection timing out for some other reason).
        let mut ev = stall(Some(START + 5_600 * MS), true);
        let pool: Vec<ConnKey> = (1..=10).map(|p| conn("10.0.0.10", 10_000 + p)).collect();
        ev.extend((5..=12).map(|i| busy(&pool, i, START + i * SEC)));
        let reports = Sim::with(quick_leaks(), ev).run(20);
        assert!(
            reports
                .iter()
                .all(|r| r.verdicts.iter().all(|v| v.kind != K::NotAccepting))
        );
        // INFO refused, not timed out: a wrong target, not a stalled server.
        let mut ev: Vec<Event> = stall(None, true);
        ev.push(Event::Redis {
            ts: START + 5_600 * MS,
            snapshot: Box::new(RedisSnapshot {
                status: RedisStatus::Unreachable,
                error: Some("connect to 10.0.0.1:6379: Connection refused (os error 111)".into()),
                ..RedisSnapshot::disabled()
            }),
            instance: None,
        });
        let reports = Sim::with(quick_leaks(), ev).run(20);
        assert!(
            reports
                .iter()
                .all(|r| r.verdicts.iter().all(|v| v.kind != K::NotAccepting))
        );
    }

    #[test]
    fn a_queue_that_drains_or_is_seen_once_is_no_stall() {
        // INFO times out throughout; the queue shrinks at every report (Redis accepts,
        // slowly), or holds connections at a single report.
        let mut ev = vec![info_times_out(START)];
        ev.extend((0..=10).map(|s| accept_queue(START + s * SEC, 100 - 5 * s, 50)));
        for r in Sim::new(ev).run(10) {
            assert_eq!(kinds(&r), []);
        }
        let mut ev = vec![info_times_out(START)];
        ev.extend((0..=10).map(|s| accept_queue(START + s * SEC, u64::from(s == 4) * 9, 50)));
        for r in Sim::new(ev).run(10) {
            assert_eq!(kinds(&r), []);
        }
        // Held, but INFO answers: Redis's loop runs.
        let mut ev = vec![redis_ok(START, 10_000, connected(11))];
        ev.extend((0..=10).map(|s| accept_queue(START + s * SEC, 9, 50)));
        for r in Sim::new(ev).run(10) {
            assert_eq!(kinds(&r), []);
        }
    }

    // ---- limits -----------------------------------------------------------------

    /// Three addresses turned away and backing off (20 ms doubling to a 2 s cap),
    /// staggered, from 1.5 s.
    fn polite_rejections(ev: &mut Vec<Event>, until: u64) {
        for j in 0..3u64 {
            let addr = format!("10.0.2.{}", j + 1);
            let from = START + 1_500 * MS + j * 667 * MS;
            backing_off(ev, &addr, from, START + until * SEC);
        }
    }

    /// Rejections (ends of rejected attempts) in (from, to].
    fn rejections_in(ev: &[Event], from: Nanos, to: Nanos) -> u64 {
        ev.iter()
            .filter(|e| {
                matches!(e, Event::Closed { ts, how: CloseKind::Server, .. } if *ts > from && *ts <= to)
            })
            .count() as u64
    }

    /// `n` addresses from 10.0.3.1 each retrying after every rejection at
    /// `gap(k)` for its k-th retry, from 1.3 s (staggered by 10 ms) until `until` s.
    fn fleet(ev: &mut Vec<Event>, n: u64, until: u64, gap: impl Fn(u64) -> Nanos) {
        for j in 0..n {
            let addr = format!("10.0.3.{}", j + 1);
            let mut at = START + 1_300 * MS + j * 10 * MS;
            let mut port = 30_000u16;
            let mut k = 1;
            while at < START + until * SEC {
                let end = rejected(ev, at, conn(&addr, port));
                port += 1;
                at = end + gap(k);
                k += 1;
            }
        }
    }

    #[test]
    fn maxclients_too_low_when_clients_behave() {
        let mut ev = vec![redis_ok(START, 100, connected(100)), host(START, 1_000_000)];
        steady_pool(&mut ev, CALM, 5, START + 100 * MS, 20);
        polite_rejections(&mut ev, 20);
        let reports = Sim::new(ev).run(20);
        assert_eq!(kinds(&reports[0]), [(K::CapacityCritical, CRIT, None)]);
        for r in &reports[1..] {
            assert_eq!(
                kinds(r),
                [
                    (K::MaxclientsTooLow, CRIT, None),
                    (K::CapacityCritical, CRIT, None)
                ]
            );
        }
        let r = &reports[19];
        let v = verdict(r, K::MaxclientsTooLow);
        let mut polite = Vec::new();
        polite_rejections(&mut polite, 20);
        // At the 2 s cap: one or two each in (17 s, 20 s].
        let recent = rejections_in(&polite, START + 17 * SEC, START + 20 * SEC);
        assert!((3..=6).contains(&recent), "{recent}");
        assert_eq!(evidence(v, "rejected_recent"), recent);
        assert_eq!(evidence(v, "maxclients"), 100);
        assert_eq!(evidence(v, "used"), 100);
        assert_eq!(evidence(verdict(r, K::CapacityCritical), "failing"), true);
        for j in 1..=3 {
            assert_eq!(
                client_verdict(r, &format!("10.0.2.{j}")),
                ClientVerdict::BackingOff
            );
        }
    }

    #[test]
    fn a_storm_is_blamed_instead_of_maxclients() {
        const STORM: &str = "10.0.0.20";
        let mut ev = vec![redis_ok(START, 100, connected(100)), host(START, 1_000_000)];
        polite_rejections(&mut ev, 20);
        storm(&mut ev, STORM, 5, 20);
        let reports = Sim::new(ev).run(20);
        assert_eq!(
            kinds(&reports[4]),
            [
                (K::MaxclientsTooLow, CRIT, None),
                (K::CapacityCritical, CRIT, None)
            ]
        );
        for r in &reports[5..] {
            assert_eq!(
                kinds(r),
                [
                    (K::RetryStorm, CRIT, Some(ip(STORM))),
                    (K::CapacityCritical, CRIT, None)
                ]
            );
        }
        assert_eq!(
            client_verdict(&reports[19], "10.0.2.1"),
            ClientVerdict::BackingOff
        );
    }

    #[test]
    fn flat_retries_from_many_addresses_are_a_storm_not_a_low_limit() {
        // Twenty clients retrying 250 ms after each rejection (ioredis with
        // `retryStrategy: () => 250`): four failures a second each.
        let mut ev = vec![redis_ok(START, 100, connected(100)), host(START, 1_000_000)];
        fleet(&mut ev, 20, 30, |_| 250 * MS);
        let in_window = rejections_in(&ev, START + 10 * SEC, START + 20 * SEC);
        let reports = Sim::new(ev).run(30);
        for (i, r) in reports.iter().enumerate() {
            let t = i + 1;
            assert!(
                r.verdicts.iter().all(|v| v.kind != K::MaxclientsTooLow),
                "t={t}: {:?}",
                kinds(r)
            );
            if t >= 3 {
                assert_eq!(
                    kinds(r),
                    [
                        (K::RetryStorm, CRIT, None),
                        (K::CapacityCritical, CRIT, None)
                    ],
                    "t={t}"
                );
                for j in 1..=20 {
                    let addr = format!("10.0.3.{j}");
                    assert_eq!(
                        client_verdict(r, &addr),
                        ClientVerdict::NoBackoff,
                        "t={t} {addr}"
                    );
                }
            }
        }
        let v = verdict(&reports[19], K::RetryStorm);
        assert_eq!(v.addr, None);
        assert_eq!(evidence(v, "addresses"), 20);
        // (10 s, 20 s]: 39 or 40 failures of each address (one every 250.2 ms).
        assert!((780..=800).contains(&in_window), "{in_window}");
        assert_eq!(evidence(v, "failures_per_s"), in_window as f64 / 10.0);
        assert_eq!(evidence(v, "window_s"), 10.0);
        assert_eq!(evidence(v, "retry_gap_p50_ms"), 250.0);
        assert_eq!(evidence(v, "share"), 1.0);
        let top = evidence(v, "top");
        assert_eq!(top.as_array().map(Vec::len), Some(5));
        assert_eq!(top[0]["failures_per_s"], 4.0);
        assert_eq!(top[0]["retry_gap_p50_ms"], 250.0);
        assert!(v.summary.starts_with("20 client addresses retry without backoff (median gap 250ms), together 80 failed attempts/s (100 % of all failures)"), "{}", v.summary);
        assert!(v.action.contains("and 15 more"), "{}", v.action);
        assert!(
            v.action.contains("raising maxclients feeds the storm"),
            "{}",
            v.action
        );
    }

    #[test]
    fn the_same_fleet_backing_off_is_a_limit_too_low() {
        // The twenty back off exponentially (100 ms doubling to 5 s): no storm.
        let mut ev = vec![redis_ok(START, 100, connected(100)), host(START, 1_000_000)];
        fleet(&mut ev, 20, 30, |k| {
            ((100 * MS) << (k - 1).min(6)).min(5 * SEC)
        });
        let reports = Sim::new(ev).run(30);
        for r in &reports[2..] {
            assert!(
                r.verdicts.iter().all(|v| v.kind != K::RetryStorm),
                "{:?}",
                kinds(r)
            );
        }
        for t in [5usize, 15, 25] {
            assert_eq!(
                kinds(&reports[t - 1]),
                [
                    (K::MaxclientsTooLow, CRIT, None),
                    (K::CapacityCritical, CRIT, None)
                ],
                "t={t}"
            );
            assert_eq!(
                client_verdict(&reports[t - 1], "10.0.3.7"),
                ClientVerdict::BackingOff,
                "t={t}"
            );
        }
    }

    #[test]
    fn a_backoff_that_reached_its_cap_is_still_backing_off() {
        // node-redis's default: min(retries × 50, 500) ms; flat at 500 ms from the
        // tenth retry on.
        let mut ev = vec![redis_ok(START, 100, connected(100)), host(START, 1_000_000)];
        fleet(&mut ev, 3, 40, |k| (k * 50).min(500) * MS);
        let reports = Sim::new(ev).run(40);
        let r = &reports[39];
        let c = r.clients.iter().find(|c| c.addr == ip("10.0.3.1")).unwrap();
        let retry = c.retry.unwrap();
        assert_eq!(retry.trend, Trend::Flat);
        assert_eq!((retry.start_ms, retry.p50_ms), (100.0, 500.0));
        assert_eq!(c.verdict, ClientVerdict::BackingOff);
        assert_eq!(
            kinds(r),
            [
                (K::MaxclientsTooLow, CRIT, None),
                (K::CapacityCritical, CRIT, None)
            ]
        );
    }

    #[test]
    fn a_slow_flat_retry_is_no_backoff_but_no_storm() {
        // Three addresses retrying every 2 s: 1.5 failures a second in all.
        let mut ev = vec![redis_ok(START, 100, connected(100)), host(START, 1_000_000)];
        fleet(&mut ev, 3, 40, |_| 2 * SEC);
        let reports = Sim::new(ev).run(40);
        for t in [15usize, 40] {
            let r = &reports[t - 1];
            assert_eq!(kinds(r), [(K::CapacityCritical, CRIT, None)], "t={t}");
            for j in 1..=3 {
                assert_eq!(
                    client_verdict(r, &format!("10.0.3.{j}")),
                    ClientVerdict::NoBackoff,
                    "t={t}"
                );
            }
        }
        // It stops failing: the verdict goes with it (2.5 gaps later).
        let mut ev = vec![redis_ok(START, 100, connected(100)), host(START, 1_000_000)];
        fleet(&mut ev, 1, 20, |_| 2 * SEC);
        let reports = Sim::new(ev).run(30);
        assert_eq!(
            client_verdict(&reports[19], "10.0.3.1"),
            ClientVerdict::NoBackoff
        );
        assert_eq!(
            client_verdict(&reports[29], "10.0.3.1"),
            ClientVerdict::Healthy
        );
    }

    fn emfile(ts: Nanos, n: u64) -> Event {
        Event::Counters {
            ts,
            counters: KernelCounters {
                accept_errors: vec![(libc::EAGAIN, 5 * n), (libc::EMFILE, n)],
                ..KernelCounters::default()
            },
        }
    }

    #[test]
    fn fd_limit_is_critical_at_the_first_report_that_sees_failures_even_between_history_samples() {
        // 200 ms intervals: the history keeps a sample every 500 ms (window / 120),
        // but "now" must always be this report's figures.
        let ev = vec![emfile(START, 0), emfile(START + 1_100 * MS, 4_000)];
        let mut sim = Sim::new(ev);
        sim.interval = 200 * MS;
        let reports = sim.run(8);
        let first = first(&reports, |r| !kinds(r).is_empty()).unwrap();
        assert_eq!(first, 6, "interval 6 (1.2 s), the first after the failures");
        assert_eq!(
            kinds(&reports[first - 1]),
            [(K::FdLimit, CRIT, None), (K::CapacityCritical, CRIT, None)]
        );
    }

    #[test]
    fn fd_limit_critical_on_emfile_and_clears_when_it_stops() {
        let mut ev = Vec::new();
        // EMFILE grows 20,000/s until 10 s, then stays.
        for i in 0..=20 {
            ev.push(emfile(START + i * SEC, 20_000 * i.min(10)));
        }
        let reports = Sim::new(ev).run(20);
        // The first report is the baseline.
        assert_eq!(kinds(&reports[0]), []);
        for r in &reports[1..12] {
            assert_eq!(
                kinds(r),
                [(K::FdLimit, CRIT, None), (K::CapacityCritical, CRIT, None)]
            );
        }
        let v = verdict(&reports[3], K::FdLimit);
        assert_eq!(evidence(v, "accept_errors_per_s"), 20_000.0);
        assert_eq!(evidence(v, "fd_accept_failures_recent"), 60_000);
        assert!(v.summary.contains("EMFILE/ENFILE 20000/s"), "{}", v.summary);
        // Nothing new since 10 s: gone once the 3 s window has moved past it.
        assert_eq!(kinds(&reports[12]), [], "t=13");
    }

    #[test]
    fn fd_limit_warning_when_the_open_file_limit_lowers_maxclients() {
        let ev = vec![redis_ok(START, 10_000, connected(10)), host(START, 4096)];
        let r = &Sim::new(ev).run(2)[1];
        assert_eq!(kinds(r), [(K::FdLimit, WARN, None)]);
        let v = verdict(r, K::FdLimit);
        assert_eq!(evidence(v, "maxclients"), 10_000);
        assert_eq!(evidence(v, "effective_maxclients"), 4064);
        assert_eq!(evidence(v, "nofile_soft"), 4096);
        assert_eq!(evidence(v, "fd_accept_failures_recent"), 0);
        assert!(
            v.summary
                .starts_with("effective maxclients is 4064, not 10000"),
            "{}",
            v.summary
        );
        // Room for all of maxclients: nothing.
        let ev = vec![redis_ok(START, 10_000, connected(10)), host(START, 10_032)];
        assert_eq!(kinds(&Sim::new(ev).run(2)[1]), []);
    }

    fn snapshot_verdicts(maxclients: u64, info: InfoFields) -> Report {
        let ev = vec![redis_ok(START, maxclients, info), host(START, 1_000_000)];
        Sim::new(ev).run(2).swap_remove(1)
    }

    #[test]
    fn blocked_clients_from_30_percent_of_the_limit() {
        let blocked = |n| InfoFields {
            connected_clients: Some(400),
            blocked_clients: Some(n),
            ..InfoFields::default()
        };
        let r = snapshot_verdicts(1000, blocked(300));
        assert_eq!(kinds(&r), [(K::BlockedClients, WARN, None)]);
        let v = verdict(&r, K::BlockedClients);
        assert_eq!(evidence(v, "blocked_clients"), 300);
        assert_eq!(evidence(v, "limit"), 1000);
        assert_eq!(kinds(&snapshot_verdicts(1000, blocked(299))), []);
    }

    #[test]
    fn a_range_over_its_budget_is_named_and_internal_addresses_count_as_internal() {
        let mut ev = vec![redis_ok(START, 100, connected(31)), host(START, 1_000_000)];
        // 10.1.0.0/16 holds 12 (8 from .1.1, 4 from .2.2) against a budget of 10;
        // 10.3.0.7 holds 5 against 5; 10.9.0.9 (an exporter) holds 3, internal.
        let mut open = |addr: &str, n: u16| {
            for p in 0..n {
                ev.push(opened(START + 100 * MS, conn(addr, 20_000 + p)));
            }
        };
        open("10.1.1.1", 8);
        open("10.1.2.2", 4);
        open("10.3.0.7", 5);
        open("10.9.0.9", 3);
        let cfg = Thresholds {
            budgets: vec![
                "10.1.0.0/16=10".parse().unwrap(),
                "10.3.0.7=5".parse().unwrap(),
            ],
            internal: vec!["10.9.0.0/24".parse().unwrap()],
            ..Thresholds::default()
        };
        let r = &Sim::with(cfg, ev).run(2)[1];
        let budget: Vec<_> = r
            .verdicts
            .iter()
            .filter(|v| v.kind == K::BudgetExceeded)
            .collect();
        assert_eq!(budget.len(), 1, "{:?}", kinds(r));
        let v = budget[0];
        assert_eq!(v.addr, None);
        assert_eq!(evidence(v, "range"), "10.1.0.0/16");
        assert_eq!(evidence(v, "budget"), 10);
        assert_eq!(evidence(v, "open"), 12);
        assert_eq!(evidence(v, "addresses"), 2);
        assert_eq!(
            evidence(v, "top"),
            json!([{"addr": "10.1.1.1", "open": 8}, {"addr": "10.1.2.2", "open": 4}])
        );
        assert_eq!(
            v.summary,
            "10.1.0.0/16 holds 12 connections, over its budget of 10 (2 addresses, most from 10.1.1.1: 8)"
        );
        // The exporter is internal, never judged, and in the internal headroom:
        // 31 of 100 used leaves 69, under the reserve of 100.
        let exporter = r.clients.iter().find(|c| c.addr == ip("10.9.0.9")).unwrap();
        assert!(exporter.internal);
        let v = verdict(r, K::InternalHeadroom);
        assert_eq!(evidence(v, "internal"), 3);
        assert_eq!(evidence(v, "internal_clients"), 3);
        assert!(
            !r.clients
                .iter()
                .find(|c| c.addr == ip("10.1.1.1"))
                .unwrap()
                .internal
        );
    }

    #[test]
    fn internal_headroom_below_the_reserve_with_a_replica() {
        let with = |clients, slaves| InfoFields {
            connected_clients: Some(clients),
            connected_slaves: Some(slaves),
            ..InfoFields::default()
        };
        // 150 − (59 + 1) = 90 slots left, under the 100 reserved.
        let r = snapshot_verdicts(150, with(59, 1));
        assert_eq!(kinds(&r), [(K::InternalHeadroom, WARN, None)]);
        let v = verdict(&r, K::InternalHeadroom);
        assert_eq!(evidence(v, "internal"), 1);
        assert_eq!(evidence(v, "headroom"), 90);
        assert_eq!(evidence(v, "reserve"), 100);
        assert_eq!(evidence(v, "limit"), 150);
        // Exactly the reserve left, or no replica: nothing.
        assert_eq!(kinds(&snapshot_verdicts(150, with(49, 1))), []);
        assert_eq!(kinds(&snapshot_verdicts(150, with(60, 0))), []);
    }

    #[test]
    fn capacity_warning_and_critical_by_ratio() {
        let r = snapshot_verdicts(1000, connected(850));
        assert_eq!(kinds(&r), [(K::CapacityWarning, WARN, None)]);
        let v = verdict(&r, K::CapacityWarning);
        assert_eq!(
            (
                evidence(v, "used"),
                evidence(v, "limit"),
                evidence(v, "ratio")
            ),
            (850.into(), 1000.into(), 0.85.into())
        );
        assert_eq!(evidence(v, "failing"), false);
        let r = snapshot_verdicts(1000, connected(950));
        assert_eq!(kinds(&r), [(K::CapacityCritical, CRIT, None)]);
        assert_eq!(evidence(verdict(&r, K::CapacityCritical), "ratio"), 0.95);
        // Boundaries: warning above 0.8, critical from 0.9.
        assert_eq!(kinds(&snapshot_verdicts(1000, connected(800))), []);
        assert_eq!(
            kinds(&snapshot_verdicts(1000, connected(900))),
            [(K::CapacityCritical, CRIT, None)]
        );
    }

    #[test]
    fn capacity_says_when_the_slots_run_out_at_the_current_pace() {
        // 3 more slots in use every second: 703 at 1 s, 850 at 50 s of 1,000.
        let mut ev = vec![host(START, 1_000_000)];
        ev.extend((1..=50).map(|k| redis_ok(START + k * SEC, 1000, connected(700 + 3 * k))));
        let reports = Sim::new(ev).run(50);
        let v = verdict(&reports[49], K::CapacityWarning);
        // 147 more over 49 s; 150 left: 50 s.
        assert_eq!(evidence(v, "exhaustion_in_s"), 50.0);
        assert!(
            v.summary
                .ends_with("(850 of 1000); at the pace of the last 1m00s the rest is gone in 50s"),
            "{}",
            v.summary
        );
        // Steady use: no forecast.
        let r = snapshot_verdicts(1000, connected(850));
        assert!(
            verdict(&r, K::CapacityWarning)
                .evidence
                .get("exhaustion_in_s")
                .is_none()
        );
    }

    #[test]
    fn capacity_critical_while_rejections_happen_at_a_low_ratio() {
        let mut ev = vec![
            redis_ok(START, 1000, connected(100)),
            host(START, 1_000_000),
        ];
        rejected(&mut ev, START + 1_500 * MS, conn("10.0.2.1", 30_000));
        let reports = Sim::new(ev).run(5);
        assert_eq!(kinds(&reports[0]), []);
        for r in &reports[1..4] {
            assert!(
                r.verdicts.iter().any(|v| v.kind == K::CapacityCritical),
                "{:?}",
                kinds(r)
            );
            let v = verdict(r, K::CapacityCritical);
            assert_eq!(
                (evidence(v, "ratio"), evidence(v, "failing")),
                (0.1.into(), true.into())
            );
        }
        // One rejection at 1.5 s: out of the 3 s window at 5 s.
        assert_eq!(kinds(&reports[4]), []);
    }

    // ---- no false alarms, bounded memory ------------------------------------------

    #[test]
    fn healthy_traffic_raises_nothing_in_60_s() {
        let mut ev = vec![redis_ok(START, 10_000, connected(16)), host(START, 65_536)];
        steady_pool(&mut ev, "10.0.3.1", 10, START + 100 * MS, 60);
        steady_pool(&mut ev, "10.0.3.2", 5, START + 100 * MS, 60);
        // Short-lived connections, 5 a second, each used and closed by the client
        // after 2 ms.
        for n in 0..300u64 {
            let k = conn("10.0.3.3", 20_000 + n as u16);
            let at = START + 50 * MS + n * 200 * MS;
            ev.push(opened(at, k));
            ev.push(closed(at + 2 * MS, k, CloseKind::Client, 30, 10));
        }
        let reports = Sim::new(ev).run(60);
        for (i, r) in reports.iter().enumerate() {
            assert_eq!(kinds(r), [], "t={}", i + 1);
            assert_eq!(r.clients.len(), 3);
            assert!(
                r.clients
                    .iter()
                    .all(|c| c.verdict == ClientVerdict::Healthy),
                "t={}",
                i + 1
            );
        }
        assert_eq!(
            reports[59].clients.iter().map(|c| c.opened).sum::<u64>(),
            315
        );
    }

    #[test]
    fn history_stays_bounded() {
        // 100,000 addresses, 10,000 a second, each opening and closing once.
        let mut ev = Vec::with_capacity(200_000);
        for i in 0..100_000u32 {
            let [_, a, b, c] = i.to_be_bytes();
            let k = ConnKey::new(
                "10.0.0.1:6379".parse().unwrap(),
                SocketAddr::new(IpAddr::from([10, a, b, c]), 40_000),
            );
            let at = START + u64::from(i) * 100 * US;
            ev.push(opened(at, k));
            ev.push(closed(at + 5 * MS, k, CloseKind::Client, 10, 10));
        }
        // And one address that holds a connection throughout.
        ev.push(opened(START + MS, conn("192.168.0.1", 1)));
        let mut sim = Sim::new(ev);
        sim.run(4);
        // At 5 s, the 50 opened in the last 5 ms are open: only they have a history.
        sim.step();
        assert_eq!(sim.diagnoser().clients.len(), 51);
        let reports = sim.run(6);
        let last = &reports[5];
        // The client table keeps at most MAX_ADDRESSES; the rest are counted.
        let kept = last.clients.len();
        assert!(kept <= crate::core::client::MAX_ADDRESSES, "{kept}");
        assert_eq!(kept as u64 + last.totals.evicted_clients, 100_001);
        assert!(last.clients.iter().any(|c| c.addr == ip("192.168.0.1")));
        assert_eq!(
            evidence(verdict(last, K::InstanceFanout), "addresses"),
            kept as u64 - 1
        );
        assert_eq!(
            evidence(verdict(last, K::InstanceFanout), "addresses_forgotten"),
            last.totals.evicted_clients
        );
        // Only the one holding a connection has a history.
        let kept: Vec<IpAddr> = sim.diagnoser().clients.keys().copied().collect();
        assert_eq!(kept, [ip("192.168.0.1")]);
    }

    #[test]
    fn a_long_lived_address_keeps_one_window_of_samples() {
        let mut ev = Vec::new();
        steady_pool(&mut ev, "192.168.0.1", 3, START + MS, 200);
        let mut sim = Sim::new(ev);
        sim.run(200);
        // One sample per report from 140 s to 200 s: the window, both ends included.
        let h = &sim.diagnoser().clients[&ip("192.168.0.1")];
        assert_eq!(h.len(), 61);
        assert_eq!(h.front().map(|s| s.ts), Some(START + 140 * SEC));
        assert_eq!(sim.diagnoser().host.len(), 61);
    }
}
