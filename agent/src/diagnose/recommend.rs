//! Settings worth changing, computed from what the report shows: the guide's
//! sizing, with the observed numbers.
//!
//! - `maxclients`: the clients' demand (steady instances × their pool, when a pool
//!   or fan-out verdict measured them; else the normal clients in use) plus the
//!   internal reserve, with room to stay under the capacity warning ratio.
//!   Only under pressure (pools measured, or use past the warning ratio), and not
//!   while a client leaks, storms or consumes slowly: raising the limit then only
//!   feeds the cause.
//! - `nofile`: the Redis process's open-file limit above maxclients + 32 (what
//!   Redis keeps for itself) + a margin.
//! - `timeout`: between the longest idle of the healthy pools and the idle of
//!   the leaked connections, while a leak is named and no timeout would close them.
//! - `tcp-backlog`: when the accept queue overflowed, twice its size.

use serde_json::Value;

use super::Diagnoser;
use crate::model::{ClientVerdict, Recommendation, Report, VerdictKind};

/// The open-file limit above maxclients + 32 (Redis's own descriptors).
const NOFILE_MARGIN: u64 = 1024;

fn round_up(x: u64, to: u64) -> u64 {
    x.div_ceil(to) * to
}

fn evidence_u64(v: &crate::model::Verdict, key: &str) -> Option<u64> {
    v.evidence.get(key).and_then(Value::as_u64)
}

impl Diagnoser {
    pub(super) fn recommend(&self, r: &Report) -> Vec<Recommendation> {
        let mut out = Vec::new();
        let cause_in_clients = r.verdicts.iter().any(|v| {
            matches!(
                v.kind,
                VerdictKind::Leak | VerdictKind::RetryStorm | VerdictKind::SlowConsumer
            )
        });
        let c = &r.capacity;
        let internal = c.connected_slaves.unwrap_or(0) + c.cluster_connections.unwrap_or(0);
        let reserve = self.cfg.internal_reserve.max(internal);
        // The demand: measured pools, else the normal clients in use.
        let pools = r.verdicts.iter().find_map(|v| {
            matches!(
                v.kind,
                VerdictKind::PoolOversize | VerdictKind::InstanceFanout
            )
            .then(|| {
                Some((
                    evidence_u64(v, "instances")?,
                    evidence_u64(v, "per_instance")?,
                ))
            })
            .flatten()
        });
        let (demand, from) = match pools {
            Some((n, per)) => (n * per, format!("{n} instances × {per} connections")),
            None => {
                let normal = c.used.saturating_sub(internal);
                (normal, format!("{normal} client connections in use"))
            }
        };
        let needed = demand + reserve;
        let ratio = self.cfg.capacity_warning.clamp(0.1, 1.0);
        let maxclients = round_up((needed as f64 / ratio).ceil() as u64, 100);
        let current_max = r.limits.maxclients;
        // Only under pressure: pools measured, or use past the warning ratio. A
        // quiet server with a small limit needs no advice (its reserve is the
        // internal_headroom verdict's business).
        let pressed = pools.is_some() || c.ratio.is_some_and(|x| x > self.cfg.capacity_warning);
        if pressed && !cause_in_clients && current_max.is_some_and(|m| m < maxclients) {
            out.push(Recommendation {
                setting: "maxclients",
                current: current_max,
                suggested: maxclients,
                why: format!(
                    "{from} + {reserve} reserved for replicas, cluster bus and sentinels = {needed}, used at most {:.0} % of the limit",
                    ratio * 100.0
                ),
            });
        }
        // The open-file limit: for the limit as it will be.
        let target = current_max
            .unwrap_or(0)
            .max(if cause_in_clients { 0 } else { maxclients });
        let nofile = round_up(target + 32 + NOFILE_MARGIN, 1024);
        if target > 0 && r.limits.nofile_soft.is_some_and(|n| n < target + 32) {
            out.push(Recommendation {
                setting: "nofile",
                current: r.limits.nofile_soft,
                suggested: nofile,
                why: format!(
                    "maxclients {target} + 32 descriptors Redis keeps for itself + a margin of {NOFILE_MARGIN}: below maxclients + 32, Redis lowers its limit at start"
                ),
            });
        }
        // timeout: between the healthy pools' idle and the leaked connections'.
        let leaked = r
            .clients
            .notable()
            .filter(|c| c.verdict == ClientVerdict::Leak)
            .filter_map(|c| c.idle.map(|i| i.p50.as_secs()))
            .min();
        let healthy = r
            .clients
            .notable()
            .filter(|c| c.verdict == ClientVerdict::Healthy && !c.internal)
            .filter_map(|c| c.idle.map(|i| i.max.as_secs()))
            .max()
            .unwrap_or(0);
        let timeout = r.redis.timeout_s;
        if let Some(leaked) = leaked {
            let suggested = (healthy * 2).max(healthy + 60).max(60);
            let closes_leaks = timeout.is_some_and(|t| t > 0 && t <= leaked);
            if suggested < leaked && !closes_leaks {
                out.push(Recommendation {
                    setting: "timeout",
                    current: timeout,
                    suggested,
                    why: format!(
                        "healthy pools idle up to {healthy} s, the leaked connections about {leaked} s: a server-side timeout between them closes the leaked ones while the fix is made"
                    ),
                });
            }
        }
        // tcp-backlog: the accept queue overflowed.
        if let (Some(overflows), Some(q)) = (r.totals.listen_overflows, r.totals.accept_queue)
            && overflows > 0
        {
            out.push(Recommendation {
                setting: "tcp-backlog",
                current: Some(q.backlog),
                suggested: (q.backlog * 2).max(511),
                why: format!(
                    "the accept queue (backlog {}) overflowed {overflows} times; raise net.core.somaxconn with it (the backlog is the smaller of the two)",
                    q.backlog
                ),
            });
        }
        out
    }
}
