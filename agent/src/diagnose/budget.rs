//! Connection budgets (`--budget CIDR=N`): a budget per endpoint, so one path
//! cannot take the whole pool. A range over its budget is named with its count and
//! the addresses that hold the most.

use serde_json::{Map, json};

use super::Diagnoser;
use crate::model::{Report, Severity, Verdict, VerdictKind};

/// How many of a range's addresses the evidence names.
const TOP_NAMED: usize = 5;

impl Diagnoser {
    /// One verdict per budget whose range holds more connections than it allows.
    pub(super) fn budgets_exceeded(&self, r: &Report) -> Vec<Verdict> {
        let mut out = Vec::new();
        for budget in &self.cfg.budgets {
            // Quiet rows hold nothing open.
            let mut holders: Vec<_> = r
                .clients
                .notable()
                .filter(|c| c.open > 0 && budget.range.contains(c.addr))
                .map(|c| (c.addr, c.open))
                .collect();
            let open: u64 = holders.iter().map(|&(_, n)| n).sum();
            if open <= budget.max {
                continue;
            }
            holders.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let top: Vec<_> = holders
                .iter()
                .take(TOP_NAMED)
                .map(|&(addr, open)| json!({"addr": addr, "open": open}))
                .collect();
            let mut evidence = Map::new();
            evidence.insert("range".into(), json!(budget.range.to_string()));
            evidence.insert("budget".into(), json!(budget.max));
            evidence.insert("open".into(), json!(open));
            evidence.insert("addresses".into(), json!(holders.len()));
            evidence.insert("top".into(), json!(top));
            let (first, most) = holders[0];
            out.push(Verdict {
                kind: VerdictKind::BudgetExceeded,
                severity: Severity::Warning,
                addr: None,
                summary: format!(
                    "{} holds {open} connections, over its budget of {} ({} address{}, most from {first}: {most})",
                    budget.range,
                    budget.max,
                    holders.len(),
                    if holders.len() == 1 { "" } else { "es" }
                ),
                evidence,
                action: format!(
                    "Cap the pools of the clients in {} (the pool's maximum, or a proxy's per-client limit) so that path keeps within {} connections, and find the code path that opens more",
                    budget.range, budget.max
                ),
                stale_connections: Vec::new(),
            });
        }
        out
    }
}
