//! Instance fan-out: hundreds of client addresses, each an instance with its own
//! connection or two. Either they open short-lived connections (a connection per
//! request), or each keeps its small pool open (serverless or kept-warm instances)
//! and together they fill the limit. The second form names the sizing the
//! runbook gives: instances × connections per instance + reserved headroom.

use serde_json::{Map, json};

use super::Diagnoser;
use crate::model::{Nanos, Report, Severity, Tally, Verdict, VerdictKind};

/// A kept fan-out's instances hold at most this many connections each (no flag):
/// the "one or two" of the short-lived form. Bigger pools are `pool_oversize`.
pub(super) const FANOUT_MAX_POOL: u64 = 2;

impl Diagnoser {
    /// `instance_fanout`, the kept form first: it is the one filling the limit.
    pub(super) fn instance_fanout(&self, now: Nanos, r: &Report) -> Option<Verdict> {
        self.kept_fanout(now, r)
            .or_else(|| self.short_lived_fanout(r))
    }

    /// Kept: at least `fanout_min_addresses` addresses (not internal) each hold a
    /// steady 1..=FANOUT_MAX_POOL connections, and together at least `pool_share`
    /// of the limit.
    fn kept_fanout(&self, now: Nanos, r: &Report) -> Option<Verdict> {
        let limit = r.capacity.limit.filter(|&l| l > 0)?;
        // Rows holding connections are never quiet: the listed rows are enough.
        let mut pools: Vec<u64> = r
            .clients
            .notable()
            .filter(|c| !c.internal && (1..=FANOUT_MAX_POOL).contains(&c.open))
            .filter(|c| self.steady(now, c))
            .map(|c| c.open)
            .collect();
        let instances = pools.len() as u64;
        let total: u64 = pools.iter().sum();
        if pools.len() < self.cfg.fanout_min_addresses
            || (total as f64) < self.cfg.pool_share * limit as f64
        {
            return None;
        }
        pools.sort_unstable();
        let per_instance = pools[pools.len() / 2];
        let reserve = self.cfg.internal_reserve;
        let needed = instances * per_instance + reserve;
        let mut evidence = Map::new();
        evidence.insert("form".into(), json!("kept"));
        evidence.insert("instances".into(), json!(instances));
        evidence.insert("per_instance".into(), json!(per_instance));
        evidence.insert("total".into(), json!(total));
        evidence.insert("limit".into(), json!(limit));
        evidence.insert("reserved_headroom".into(), json!(reserve));
        evidence.insert("maxclients_needed".into(), json!(needed));
        let severity = self.severity_by_ratio(r);
        let conns = |n: u64| if n == 1 { "connection" } else { "connections" };
        Some(Verdict {
            kind: VerdictKind::InstanceFanout,
            severity,
            addr: None,
            summary: format!(
                "{instances} client addresses each keep {per_instance} {} open, {total} together of a limit of {limit} ({:.0}%): one small pool per instance (serverless or kept-warm instances), and their number fills Redis",
                conns(per_instance),
                total as f64 * 100.0 / limit as f64
            ),
            evidence,
            action: format!(
                "Size for the instances: {instances} instances × {per_instance} {} + {reserve} reserved = {needed} slots against a limit of {limit}; raise maxclients and the open-file limit to that, cap how many instances run at once, or put a connection proxy (twemproxy, Envoy) in front so instances share connections",
                conns(per_instance)
            ),
            stale_connections: Vec::new(),
        })
    }

    /// Short-lived: at least `fanout_min_addresses` addresses short-lived
    /// ([`crate::model::ClientReport::is_short_lived`]: not internal, at most two
    /// connections open, at least one opened, a median lifetime of their closed
    /// connections under 1 s).
    fn short_lived_fanout(&self, r: &Report) -> Option<Verdict> {
        if r.clients.len() < self.cfg.fanout_min_addresses {
            return None;
        }
        // Kept by the row cache as rows come and go (a flood keeps thousands, most
        // of them quiet): no walk of the rows.
        let Tally {
            rows: n,
            sum: opened,
        } = r.clients.tally();
        if n < self.cfg.fanout_min_addresses {
            return None;
        }
        let mut evidence = Map::new();
        evidence.insert("form".into(), json!("short_lived"));
        evidence.insert("addresses".into(), json!(n));
        evidence.insert("opened".into(), json!(opened));
        // A fan-out past the client table's limit: the forgotten addresses are
        // not in `addresses`.
        if r.totals.evicted_clients > 0 {
            evidence.insert(
                "addresses_forgotten".into(),
                json!(r.totals.evicted_clients),
            );
        }
        Some(Verdict {
            kind: VerdictKind::InstanceFanout,
            severity: Severity::Warning,
            addr: None,
            summary: format!(
                "{n} distinct addresses each open one or two short-lived connections: a connection per instance or per request (serverless-style)"
            ),
            evidence,
            action: "Share connections: a pool per process reused across requests, or a proxy (e.g. twemproxy, Envoy) in front of Redis; a bigger maxclients only delays this".into(),
            stale_connections: Vec::new(),
        })
    }
}
