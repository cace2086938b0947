//! Host-wide rules: the fd limit, maxclients too low for the load, oversized pools,
//! internal headroom, blocked clients, and capacity against the effective limit.

use serde_json::{Map, json};

use super::{Diagnoser, insert_opt};
use crate::model::{ClientReport, Nanos, Report, Severity, Verdict, VerdictKind, human_duration};

impl Diagnoser {
    pub(super) fn fd_limit(&self, now: Nanos, r: &Report) -> Option<Verdict> {
        let fd_failures = self.host_delta(now, self.cfg.short_window, |s| s.fd_failures);
        let l = &r.limits;
        let lowered = matches!((l.maxclients, l.effective_maxclients), (Some(m), Some(e)) if e < m);
        if fd_failures == 0 && !lowered {
            return None;
        }
        let mut evidence = Map::new();
        evidence.insert(
            "accept_errors_per_s".into(),
            json!(r.totals.accept_errors_per_s),
        );
        evidence.insert("fd_accept_failures_recent".into(), json!(fd_failures));
        insert_opt(&mut evidence, "maxclients", l.maxclients);
        insert_opt(
            &mut evidence,
            "effective_maxclients",
            l.effective_maxclients,
        );
        insert_opt(&mut evidence, "nofile_soft", l.nofile_soft);
        insert_opt(&mut evidence, "open_fds", l.open_fds);
        insert_opt(
            &mut evidence,
            "rejected_connections_delta",
            r.redis.rejected_connections_delta,
        );
        if let Some(q) = r.totals.accept_queue {
            evidence.insert("accept_queue".into(), json!(q.depth));
        }
        let (severity, summary) = if fd_failures > 0 {
            let queued = r.totals.accept_queue.map_or(0, |q| q.depth);
            (
                Severity::Critical,
                format!(
                    "Redis is out of file descriptors: accept() fails with EMFILE/ENFILE {}/s, {queued} connections wait in the accept queue, and INFO counts none of it",
                    r.totals.accept_errors_per_s.unwrap_or(0.0)
                ),
            )
        } else {
            (
                Severity::Warning,
                format!(
                    "effective maxclients is {}, not {}: {}",
                    l.effective_maxclients.unwrap_or(0),
                    l.maxclients.unwrap_or(0),
                    l.effective_reason
                        .clone()
                        .unwrap_or_else(|| "the open-file limit binds".into())
                ),
            )
        };
        Some(Verdict {
            kind: VerdictKind::FdLimit,
            severity,
            addr: None,
            summary,
            evidence,
            action: "Raise the Redis process's open-file limit (LimitNOFILE= in its systemd unit, or ulimit -n) to at least maxclients + 32, then restart it; check `cat /proc/PID/limits`".into(),
            stale_connections: Vec::new(),
        })
    }

    pub(super) fn maxclients_too_low(
        &self,
        now: Nanos,
        r: &Report,
        misbehaving: bool,
    ) -> Option<Verdict> {
        let rejected = self.host_delta(now, self.cfg.short_window, |s| s.rejected);
        if rejected == 0 || misbehaving {
            return None;
        }
        let mut evidence = Map::new();
        evidence.insert("rejected_recent".into(), json!(rejected));
        evidence.insert(
            "window_s".into(),
            json!(self.cfg.short_window.as_secs_f64()),
        );
        insert_opt(&mut evidence, "maxclients", r.limits.maxclients);
        insert_opt(
            &mut evidence,
            "effective_maxclients",
            r.limits.effective_maxclients,
        );
        evidence.insert("used".into(), json!(r.capacity.used));
        Some(Verdict {
            kind: VerdictKind::MaxclientsTooLow,
            severity: Severity::Critical,
            addr: None,
            summary: format!(
                "Redis turned away {rejected} connections in the last {} while no client leaks or storms: maxclients ({}) is too low for the load",
                human_duration(self.cfg.short_window),
                r.limits.maxclients.map_or_else(|| "unknown".to_owned(), |m| m.to_string())
            ),
            evidence,
            action: "Raise maxclients (CONFIG SET maxclients N, and in redis.conf) with the open-file limit to match, or reduce the clients' pool sizes".into(),
            stale_connections: Vec::new(),
        })
    }

    /// Whether `c` holds a steady number of connections: open now equals open half
    /// a window ago (±10 %). The sample must really be that old: a younger history
    /// is not yet steady.
    pub(super) fn steady(&self, now: Nanos, c: &ClientReport) -> bool {
        let half = self.window_ns() / 2;
        self.client_sample_at(c.addr, now, half).is_some_and(|s| {
            now.saturating_sub(s.ts) >= half && s.open.abs_diff(c.open) * 10 <= c.open
        })
    }

    /// Critical from the capacity critical ratio, else a warning: how bad too
    /// many pools are.
    pub(super) fn severity_by_ratio(&self, r: &Report) -> Severity {
        if r.capacity
            .ratio
            .is_some_and(|x| x >= self.cfg.capacity_critical)
        {
            Severity::Critical
        } else {
            Severity::Warning
        }
    }

    pub(super) fn pool_oversize(&self, now: Nanos, r: &Report) -> Option<Verdict> {
        let limit = r.capacity.limit.filter(|&l| l > 0)?;
        // Steady holders of two connections or more (quiet rows hold nothing).
        let mut steady: Vec<u64> = r
            .clients
            .notable()
            .filter(|c| !c.internal && c.open >= 2 && self.steady(now, c))
            .map(|c| c.open)
            .collect();
        if steady.len() < self.cfg.pool_min_instances {
            return None;
        }
        steady.sort_unstable();
        let median = steady[steady.len() / 2];
        let similar = steady
            .iter()
            .filter(|&&n| n.abs_diff(median) * 4 <= median)
            .count();
        let total: u64 = steady.iter().sum();
        if similar * 5 < steady.len() * 4 || (total as f64) < self.cfg.pool_share * limit as f64 {
            return None;
        }
        let mut evidence = Map::new();
        evidence.insert("instances".into(), json!(steady.len()));
        evidence.insert("per_instance".into(), json!(median));
        evidence.insert("total".into(), json!(total));
        evidence.insert("limit".into(), json!(limit));
        let severity = self.severity_by_ratio(r);
        Some(Verdict {
            kind: VerdictKind::PoolOversize,
            severity,
            addr: None,
            summary: format!(
                "{} client hosts each hold about {median} connections ({total} together) of a limit of {limit}: the pools are sized too large for this server",
                steady.len()
            ),
            evidence,
            action: format!(
                "Shrink the per-instance pool size (max connections per client) so instances × pool stays well below {limit}, or put a proxy in front"
            ),
            stale_connections: Vec::new(),
        })
    }

    pub(super) fn internal_headroom(&self, r: &Report) -> Option<Verdict> {
        let c = &r.capacity;
        // Connections of the addresses named internal (`--internal`); replicas are
        // in connected_slaves already.
        let listed: u64 = if self.cfg.internal.is_empty() {
            0
        } else {
            r.clients
                .notable()
                .filter(|x| x.internal && self.cfg.internal.iter().any(|n| n.contains(x.addr)))
                .map(|x| x.open)
                .sum()
        };
        let internal =
            c.connected_slaves.unwrap_or(0) + c.cluster_connections.unwrap_or(0) + listed;
        let headroom = c.headroom?;
        if internal == 0 || headroom >= self.cfg.internal_reserve as i64 {
            return None;
        }
        let mut evidence = Map::new();
        evidence.insert("internal".into(), json!(internal));
        if !self.cfg.internal.is_empty() {
            evidence.insert("internal_clients".into(), json!(listed));
        }
        evidence.insert("headroom".into(), json!(headroom));
        evidence.insert("reserve".into(), json!(self.cfg.internal_reserve));
        insert_opt(&mut evidence, "limit", c.limit);
        Some(Verdict {
            kind: VerdictKind::InternalHeadroom,
            severity: Severity::Warning,
            addr: None,
            summary: format!(
                "{internal} internal connections (replicas, cluster bus, listed internal addresses) share the limit and only {headroom} slots are left: a reconnecting replica or a failover could be turned away"
            ),
            evidence,
            action: format!(
                "Keep at least {} slots free for replicas, cluster bus and sentinels: raise maxclients by that much or cap the clients' pools",
                self.cfg.internal_reserve
            ),
            stale_connections: Vec::new(),
        })
    }

    pub(super) fn blocked_clients(&self, r: &Report) -> Option<Verdict> {
        let blocked = r.capacity.blocked_clients?;
        let limit = r.capacity.limit.filter(|&l| l > 0)?;
        if (blocked as f64) < self.cfg.blocked_share * limit as f64 {
            return None;
        }
        let mut evidence = Map::new();
        evidence.insert("blocked_clients".into(), json!(blocked));
        evidence.insert("limit".into(), json!(limit));
        Some(Verdict {
            kind: VerdictKind::BlockedClients,
            severity: Severity::Warning,
            addr: None,
            summary: format!(
                "{blocked} clients are blocked (BLPOP, XREAD BLOCK, WAIT …), {:.0}% of the limit of {limit}: each holds a connection while it waits",
                blocked as f64 * 100.0 / limit as f64
            ),
            evidence,
            action: "Give blocking consumers timeouts and a small dedicated pool, or move them to fewer connections (one blocking call can watch several keys)".into(),
            stale_connections: Vec::new(),
        })
    }

    pub(super) fn capacity(&self, now: Nanos, r: &Report) -> Option<Verdict> {
        let ratio = r.capacity.ratio;
        let failing = self.host_delta(now, self.cfg.short_window, |s| s.rejected) > 0
            || self.host_delta(now, self.cfg.short_window, |s| s.accept_failures) > 0;
        let (kind, severity) = if failing || ratio.is_some_and(|x| x >= self.cfg.capacity_critical)
        {
            (VerdictKind::CapacityCritical, Severity::Critical)
        } else if ratio.is_some_and(|x| x > self.cfg.capacity_warning) {
            (VerdictKind::CapacityWarning, Severity::Warning)
        } else {
            return None;
        };
        let mut evidence = Map::new();
        evidence.insert("used".into(), json!(r.capacity.used));
        insert_opt(&mut evidence, "limit", r.capacity.limit);
        if let Some(x) = ratio {
            evidence.insert("ratio".into(), json!(x));
        }
        evidence.insert("failing".into(), json!(failing));
        let exhaustion = self.exhaustion_in(now, r.capacity.limit);
        if let Some(s) = exhaustion {
            evidence.insert("exhaustion_in_s".into(), json!(s.round()));
        }
        let pace = exhaustion.map_or_else(String::new, |s| {
            format!(
                "; at the pace of the last {} the rest is gone in {}",
                human_duration(self.cfg.window),
                human_duration(std::time::Duration::from_secs_f64(s.max(0.0)))
            )
        });
        let pct = ratio.map_or_else(|| "?".to_owned(), |x| format!("{:.0}%", x * 100.0));
        Some(Verdict {
            kind,
            severity,
            addr: None,
            summary: if failing {
                format!("connections are being turned away; {pct} of the real limit is in use")
            } else {
                format!("{pct} of the real connection limit is in use ({} of {}){pace}", r.capacity.used, r.capacity.limit.unwrap_or(0))
            },
            evidence,
            action: "Look at the other verdicts for the cause; if none, raise maxclients and the open-file limit together".into(),
            stale_connections: Vec::new(),
        })
    }
}
