//! A leak held down by Redis's `timeout`: an address that opens connections and
//! abandons them, while Redis closes each one once it has sat idle for `timeout`
//! seconds. Its open count stays flat — the closes keep pace with the opens — so
//! the growth rules of a leak never see it, yet the code behind it leaks all the
//! same: the timeout only hides it, and raising or removing the timeout lets it
//! fill the server.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Map, json};

use super::client_rules::{process_evidence, stale_action};
use super::{Diagnoser, round1};
use crate::model::{ClientReport, Nanos, Severity, StaleList, Verdict, VerdictKind};

/// The opens over the window must be at least this share of the idle-timeout
/// closes, and the closes at least this share of the opens: new connections at
/// the pace the old ones are timed out. A pool that churns by itself (many opens,
/// closed by the client) and loses one to the timeout now and then fails it.
pub const HELD_MIN_PACE_RATIO: f64 = 0.5;

impl Diagnoser {
    /// `c` is a leak held down by `timeout` when, over the window (its history must
    /// cover at least nine tenths of it):
    /// - Redis closed at least `leak_min_growth` of its connections for their idle
    ///   timeout, in each third of the window (steadily, not one reap);
    /// - it opened connections at that pace (opens and idle closes within a factor
    ///   of two of each other);
    /// - its open count held: at the window's start at least half of now's;
    /// - it holds connections now, some of them idle for over half the timeout.
    pub(super) fn held_leak_verdict(
        &self,
        now: Nanos,
        c: &ClientReport,
        stale: &dyn Fn(IpAddr, Duration) -> StaleList,
    ) -> Option<Verdict> {
        let timeout = self.timeout_s.filter(|&t| t > 0)?;
        if c.open == 0 {
            return None;
        }
        let w = self.window_ns();
        let [start, one, two] =
            [w, w * 2 / 3, w / 3].map(|ago| self.client_sample_at(c.addr, now, ago));
        let (start, one, two) = (start?, one?, two?);
        let span = now.saturating_sub(start.ts);
        // The history must reach back (nearly) a whole window: it keeps no sample
        // older than the window, and reports come at their own pace.
        if span < w - w / 10 {
            return None;
        }
        let closes = c
            .server_closes
            .idle_timeout
            .saturating_sub(start.idle_timeouts);
        let opened = c.opened.saturating_sub(start.opened);
        let steady = start.idle_timeouts < one.idle_timeouts
            && one.idle_timeouts < two.idle_timeouts
            && two.idle_timeouts < c.server_closes.idle_timeout;
        let paced = opened as f64 >= HELD_MIN_PACE_RATIO * closes as f64
            && closes as f64 >= HELD_MIN_PACE_RATIO * opened as f64;
        // Held: the count at the window's start was at least half of now's (a leak
        // still filling up to rate × timeout is not steady yet).
        let held = start.open * 2 >= c.open;
        if closes < self.cfg.leak_min_growth || !steady || !paced || !held {
            return None;
        }
        let bar = Duration::from_secs(timeout).min(self.cfg.leak_idle * 2) / 2;
        let idle = stale(c.addr, bar);
        if idle.is_empty() {
            return None;
        }
        let minutes = span as f64 / 60e9;
        let closes_per_min = round1(closes as f64 / minutes);
        let opened_per_min = round1(opened as f64 / minutes);
        let (named, action, owner) = stale_action(
            c,
            |at| {
                format!(
                    "Find the code path {at} that opens connections without closing them (a client or pool created per request): Redis's timeout ({timeout}s) closes them for it, so raising or removing the timeout would let them fill the server. Connections it holds now, idle, oldest first:"
                )
            },
            &idle,
        );
        let mut evidence = Map::new();
        evidence.insert("open".into(), json!(c.open));
        evidence.insert("growth".into(), json!(c.open.saturating_sub(start.open)));
        evidence.insert("window_s".into(), json!(round1(span as f64 / 1e9)));
        evidence.insert(
            "growth_per_min".into(),
            json!(round1(c.open.saturating_sub(start.open) as f64 / minutes)),
        );
        evidence.insert("idle_over_s".into(), json!(bar.as_secs_f64()));
        evidence.insert("stale".into(), json!(idle.len()));
        if let Some(i) = c.idle {
            evidence.insert("idle_max_s".into(), json!(i.max.as_secs_f64()));
        }
        if let Some((pid, held)) = owner {
            process_evidence(&mut evidence, c, pid);
            evidence.insert("process_stale".into(), json!(held));
        }
        evidence.insert("held_down_by_timeout".into(), json!(true));
        evidence.insert("timeout_s".into(), json!(timeout));
        evidence.insert("idle_timeout_closes".into(), json!(closes));
        evidence.insert("idle_timeout_closes_per_min".into(), json!(closes_per_min));
        evidence.insert("opened_per_min".into(), json!(opened_per_min));
        Some(Verdict {
            kind: VerdictKind::Leak,
            severity: Severity::Warning,
            addr: Some(c.addr),
            summary: format!(
                "{} opens {opened_per_min} connections/min and abandons them: Redis's timeout ({timeout}s) closes {closes_per_min}/min of them idle, holding it at {} open: a connection leak held down by timeout",
                c.addr, c.open
            ),
            evidence,
            action,
            stale_connections: named,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::model::*;
    use crate::testing::*;

    /// Redis answering INFO (`connected` clients) with `timeout` seconds.
    fn redis_with_timeout(at: Nanos, timeout: u64) -> Event {
        Event::Redis {
            ts: at,
            snapshot: Box::new(RedisSnapshot {
                status: RedisStatus::Ok,
                config_status: ConfigStatus::Ok,
                info: Some(connected(10)),
                config: Some(RedisConfig {
                    maxclients: Some(1000),
                    timeout: Some(timeout),
                    tls_port: Some(0),
                }),
                ..RedisSnapshot::disabled()
            }),
            instance: None,
        }
    }

    /// A connection from `addr` opened at `at` that sends nothing more, closed by
    /// Redis `idle` later with nothing moved: its idle timeout.
    fn timed_out(ev: &mut Vec<Event>, addr: &str, port: u16, at: Nanos, idle: Nanos) {
        let key = conn(addr, port);
        ev.push(opened(at, key));
        ev.push(Event::Closed {
            ts: at + idle,
            key,
            how: CloseKind::Server,
            activity: Some(Activity {
                bytes_in: 0,
                bytes_out: 0,
                last_active: None,
                queued: Some(0),
            }),
        });
    }

    fn leak_of<'a>(r: &'a Report, addr: &str) -> Option<&'a Verdict> {
        let ip: std::net::IpAddr = addr.parse().unwrap();
        r.verdicts
            .iter()
            .find(|v| v.kind == VerdictKind::Leak && v.addr == Some(ip))
    }

    /// Two connections a second opened and abandoned, each closed by `timeout 3`
    /// 3.5 s later: 7 open, never growing once filled up (3.5 s). Named a leak held
    /// down by the timeout once the window (60 s) starts after it filled up, with
    /// the pace of opens and closes; never before.
    #[test]
    fn a_leak_whose_count_the_idle_timeout_holds_flat_is_a_leak() {
        const LEAKER: &str = "10.0.0.90";
        let mut ev = vec![redis_with_timeout(START + 100 * MS, 3)];
        for k in 0..150u16 {
            let at = START + u64::from(k) * 500 * MS + 10 * MS;
            timed_out(&mut ev, LEAKER, 20_000 + k, at, 3_500 * MS);
        }
        let reports = Sim::new(ev).run(75);
        // The history starts at the first report (1 s, 2 open, still filling up);
        // the window starts at 2 s (4 open, over half of 7) at 62 s.
        for r in &reports[..61] {
            assert!(leak_of(r, LEAKER).is_none(), "{:?}", r.verdicts);
        }
        assert!(leak_of(&reports[61], LEAKER).is_some());
        let r = &reports[69];
        let v = leak_of(r, LEAKER).unwrap_or_else(|| panic!("{:?}", r.verdicts));
        assert_eq!(v.severity, Severity::Warning);
        let e = &v.evidence;
        assert_eq!(e["held_down_by_timeout"], true);
        assert_eq!(e["timeout_s"], 3);
        assert_eq!(e["open"], 7);
        assert_eq!(e["growth"], 0);
        assert_eq!(e["window_s"], 60.0);
        // 120 opened and 120 timed out in the 60 s.
        assert_eq!(e["idle_timeout_closes"], 120);
        assert_eq!(e["idle_timeout_closes_per_min"], 120.0);
        assert_eq!(e["opened_per_min"], 120.0);
        assert_eq!(e["idle_over_s"], 1.5);
        // Of the 7 open, those idle over 1.5 s: opened 1.51–3.5 s ago.
        assert_eq!(e["stale"], 4);
        assert_eq!(v.stale_connections.len(), 4);
        assert_eq!(
            v.summary,
            "10.0.0.90 opens 120 connections/min and abandons them: Redis's timeout (3s) \
             closes 120/min of them idle, holding it at 7 open: a connection leak held down \
             by timeout"
        );
        assert!(
            v.action
                .contains("raising or removing the timeout would let them fill the server"),
            "{}",
            v.action
        );
        let row = r
            .clients
            .iter()
            .find(|c| c.addr.to_string() == LEAKER)
            .unwrap();
        assert_eq!(row.verdict, ClientVerdict::Leak);
        // Once the leak stops (the last opened at 74.5 s), it clears.
        let mut after = Sim::new({
            let mut ev = vec![redis_with_timeout(START + 100 * MS, 3)];
            for k in 0..150u16 {
                let at = START + u64::from(k) * 500 * MS + 10 * MS;
                timed_out(&mut ev, LEAKER, 20_000 + k, at, 3_500 * MS);
            }
            ev
        })
        .run(80);
        assert!(leak_of(&after.pop().unwrap(), LEAKER).is_none());
    }

    /// A healthy pool of 10 busy connections, one of which Redis times out every
    /// 20 s (a connection the pool kept idle) and the pool opens again; and a pool
    /// that churns by itself, 5 connections a second closed by the client, one of
    /// them timed out every 4 s. Neither is a leak: the first loses too few to the
    /// timeout, the second opens far more than the timeout closes.
    #[test]
    fn a_healthy_pool_that_has_a_connection_timed_out_now_and_then_is_no_leak() {
        const POOL: &str = "10.0.0.91";
        const CHURN: &str = "10.0.0.92";
        let mut ev = vec![redis_with_timeout(START + 100 * MS, 3)];
        steady_pool(&mut ev, POOL, 10, START + 50 * MS, 90);
        for k in 0..5u16 {
            timed_out(
                &mut ev,
                POOL,
                30_000 + k,
                START + u64::from(k) * 20 * SEC + 200 * MS,
                3_500 * MS,
            );
        }
        let mut port = 40_000u16;
        for s in 0..90u64 {
            for i in 0..5u64 {
                let at = START + s * SEC + i * 200 * MS + 5 * MS;
                ev.push(opened(at, conn(CHURN, port)));
                ev.push(closed(
                    at + 50 * MS,
                    conn(CHURN, port),
                    CloseKind::Client,
                    20,
                    10,
                ));
                port += 1;
            }
            if s % 4 == 0 {
                timed_out(&mut ev, CHURN, port, START + s * SEC + 300 * MS, 3_500 * MS);
                port += 1;
            }
        }
        let reports = Sim::new(ev).run(90);
        let last = reports.last().unwrap();
        let churn = last
            .clients
            .iter()
            .find(|c| c.addr.to_string() == CHURN)
            .unwrap();
        // The churning pool did have steady idle-timeout closes: 22 of them.
        assert_eq!(churn.server_closes.idle_timeout, 22);
        let pool = last
            .clients
            .iter()
            .find(|c| c.addr.to_string() == POOL)
            .unwrap();
        assert_eq!(pool.server_closes.idle_timeout, 5);
        for r in &reports {
            for addr in [POOL, CHURN] {
                assert!(leak_of(r, addr).is_none(), "{addr}: {:?}", r.verdicts);
            }
        }
    }
}
