//! Verdict transitions as their own NDJSON lines (`"type":"verdict"`), so alerting
//! in a log pipeline needs no diffing of successive reports.

use crate::model::{Instance, Report, Role, Severity, Verdict, VerdictKind, format_ts};
use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// The verdict appeared, or its severity changed.
    Raised,
    /// Its cause is gone.
    Cleared,
}

/// One `"type":"verdict"` line. Field order is the JSON key order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerdictLine {
    #[serde(rename = "type")]
    pub line_type: &'static str,
    pub ts: String,
    pub event: Change,
    pub kind: VerdictKind,
    pub severity: Severity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<IpAddr>,
    pub summary: String,
    /// Its report's `role`: the Redis host's verdict, or an application host's
    /// (client mode).
    pub role: Role,
    /// The instance the verdict is about (its report's `instance`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<Instance>,
    /// The verdict's evidence (as raised, or as last seen when cleared). Not in
    /// the NDJSON line, which the report beside it completes; the OTLP log record
    /// carries it as attributes.
    #[serde(skip)]
    pub evidence: Map<String, Value>,
}

/// What is remembered of an active verdict: its severity, summary and evidence.
type Active = (Severity, String, Map<String, Value>);

/// Remembers the verdicts of the previous report (of one instance: keep one per
/// instance).
#[derive(Debug, Default)]
pub struct Transitions {
    active: BTreeMap<(VerdictKind, Option<IpAddr>), Active>,
}

impl Transitions {
    /// The changes between the previous report's verdicts and this one's: raised
    /// (new, or a new severity) first, then cleared.
    pub fn update(&mut self, report: &Report) -> Vec<VerdictLine> {
        let ts = format_ts(report.ts).to_string();
        let line = |event, kind, severity, addr, summary: &str, evidence: &Map<String, Value>| {
            VerdictLine {
                line_type: "verdict",
                ts: ts.clone(),
                event,
                kind,
                severity,
                addr,
                summary: summary.to_owned(),
                role: report.role,
                instance: report.instance.clone(),
                evidence: evidence.clone(),
            }
        };
        let mut now: BTreeMap<(VerdictKind, Option<IpAddr>), Active> = BTreeMap::new();
        let mut lines = Vec::new();
        for Verdict {
            kind,
            severity,
            addr,
            summary,
            evidence,
            ..
        } in &report.verdicts
        {
            let key = (*kind, *addr);
            if self.active.get(&key).is_none_or(|(s, _, _)| s != severity) {
                lines.push(line(
                    Change::Raised,
                    *kind,
                    *severity,
                    *addr,
                    summary,
                    evidence,
                ));
            }
            now.insert(key, (*severity, summary.clone(), evidence.clone()));
        }
        for ((kind, addr), (severity, summary, evidence)) in &self.active {
            if !now.contains_key(&(*kind, *addr)) {
                lines.push(line(
                    Change::Cleared,
                    *kind,
                    *severity,
                    *addr,
                    summary,
                    evidence,
                ));
            }
        }
        self.active = now;
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn verdict(kind: VerdictKind, severity: Severity, addr: Option<&str>) -> Verdict {
        Verdict {
            kind,
            severity,
            addr: addr.map(|a| a.parse().unwrap()),
            summary: format!("{kind:?} happened"),
            evidence: Map::new(),
            action: String::new(),
            stale_connections: Vec::new(),
        }
    }

    fn report(verdicts: Vec<Verdict>) -> Report {
        let mut r = crate::core::tracker::Tracker::new(vec![6379]).report(
            1,
            &crate::model::Clock {
                mono: 0,
                wall: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_986_000),
            },
        );
        r.verdicts = verdicts;
        r
    }

    #[test]
    fn raised_once_cleared_once_and_raised_again_on_a_new_severity() {
        let mut t = Transitions::default();
        let storm = || {
            verdict(
                VerdictKind::RetryStorm,
                Severity::Critical,
                Some("10.0.0.8"),
            )
        };
        let cap = |s| verdict(VerdictKind::CapacityWarning, s, None);

        let first = t.update(&report(vec![storm(), cap(Severity::Warning)]));
        assert_eq!(
            first.iter().map(|l| (l.event, l.kind)).collect::<Vec<_>>(),
            vec![
                (Change::Raised, VerdictKind::RetryStorm),
                (Change::Raised, VerdictKind::CapacityWarning),
            ]
        );
        assert!(
            t.update(&report(vec![storm(), cap(Severity::Warning)]))
                .is_empty(),
            "no change, no line"
        );
        let third = t.update(&report(vec![cap(Severity::Critical)]));
        assert_eq!(
            third
                .iter()
                .map(|l| (l.event, l.kind, l.severity))
                .collect::<Vec<_>>(),
            vec![
                (
                    Change::Raised,
                    VerdictKind::CapacityWarning,
                    Severity::Critical
                ),
                (Change::Cleared, VerdictKind::RetryStorm, Severity::Critical),
            ]
        );
    }

    #[test]
    fn a_line_has_type_first_and_no_addr_when_host_wide() {
        let mut t = Transitions::default();
        let lines = t.update(&report(vec![verdict(
            VerdictKind::FdLimit,
            Severity::Critical,
            None,
        )]));
        let text = serde_json::to_string(&lines[0]).unwrap();
        assert_eq!(
            text,
            r#"{"type":"verdict","ts":"2026-11-29T21:00:00.000Z","event":"raised","kind":"fd_limit","severity":"critical","summary":"FdLimit happened","role":"server"}"#
        );
    }
}
