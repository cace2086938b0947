//! Verdicts first: every verdict that appeared over the series, most severe
//! first, with when it was seen, its evidence and the suggested action.

use super::format::{Esc, clock, ms_duration, severity_class, w, words};
use crate::model::{Report, Severity, Verdict, VerdictKind, human_duration};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use serde_json::Value;

use crate::report::peaks::{Peaks, figure};

/// One verdict (kind and address) over the whole series.
pub(super) struct Seen<'a> {
    pub(super) kind: VerdictKind,
    pub(super) addr: Option<IpAddr>,
    pub(super) severity: Severity,
    /// Report indexes.
    pub(super) first: usize,
    pub(super) last: usize,
    pub(super) reports: usize,
    /// Times it (re)appeared after being absent.
    pub(super) episodes: usize,
    /// The latest occurrence at its worst severity: the fullest evidence.
    pub(super) shown: &'a Verdict,
    /// Its worst figures over the series, shown beside `shown`'s.
    pub(super) peaks: Peaks,
}

pub(super) fn seen_verdicts(reports: &[Report]) -> Vec<Seen<'_>> {
    let mut seen: Vec<Seen<'_>> = Vec::new();
    let mut index: HashMap<(VerdictKind, Option<IpAddr>), usize> = HashMap::new();
    for (i, r) in reports.iter().enumerate() {
        for v in &r.verdicts {
            let key = (v.kind, v.addr);
            match index.get(&key).and_then(|&k| seen.get_mut(k)) {
                Some(s) => {
                    s.peaks.observe(v, r.ts);
                    if s.last != i {
                        s.reports += 1;
                        if s.last + 1 != i {
                            s.episodes += 1;
                        }
                        s.last = i;
                    }
                    if v.severity >= s.severity {
                        s.severity = v.severity;
                        s.shown = v;
                    }
                }
                None => {
                    index.insert(key, seen.len());
                    let mut peaks = Peaks::default();
                    peaks.observe(v, r.ts);
                    seen.push(Seen {
                        kind: v.kind,
                        addr: v.addr,
                        severity: v.severity,
                        first: i,
                        last: i,
                        reports: 1,
                        episodes: 1,
                        shown: v,
                        peaks,
                    });
                }
            }
        }
    }
    seen.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.first.cmp(&b.first))
            .then(a.kind.cmp(&b.kind))
            .then(a.addr.cmp(&b.addr))
    });
    seen
}

pub(super) fn count_verdicts(reports: &[Report]) -> (usize, usize) {
    let seen = seen_verdicts(reports);
    let critical = seen
        .iter()
        .filter(|s| s.severity == Severity::Critical)
        .count();
    (critical, seen.len() - critical)
}

pub(super) fn verdicts_section(out: &mut String, reports: &[Report], seen: &[Seen<'_>]) {
    out.push_str("<section id=\"verdicts\">\n<h2>Verdicts</h2>\n");
    if seen.is_empty() {
        w!(
            out,
            "<p class=\"card calm\">No verdict in any of the {} report{}: no leak, retry storm \
             or limit problem was seen.</p>\n",
            reports.len(),
            if reports.len() == 1 { "" } else { "s" }
        );
        out.push_str("</section>\n");
        return;
    }
    let last = reports.len().saturating_sub(1);
    for s in seen {
        let v = s.shown;
        let class = severity_class(s.severity);
        let kind = s.kind.as_str();
        w!(
            out,
            "<article class=\"card verdict {class}\" data-kind=\"{}\">\n<h3><span class=\"badge {class}\">{}</span> {}",
            Esc(kind),
            class.to_uppercase(),
            Esc(&words(kind))
        );
        if let Some(addr) = s.addr {
            w!(
                out,
                " <span class=\"addr\">{}</span>",
                Esc(&addr.to_string())
            );
        }
        out.push_str("</h3>\n");
        w!(out, "<p class=\"summary\">{}</p>\n", Esc(&v.summary));
        let (Some(first), Some(lastr)) = (reports.get(s.first), reports.get(s.last)) else {
            out.push_str("</article>\n");
            continue;
        };
        let base = reports.first().map_or(first.uptime, |r| r.uptime);
        let at = |r: &Report| {
            format!(
                "{} (+{})",
                clock(r.ts),
                human_duration(r.uptime.saturating_sub(base))
            )
        };
        let state = if s.last == last {
            "still present in the last report".to_owned()
        } else {
            format!("last seen {}, then cleared", at(lastr))
        };
        let episodes = if s.episodes > 1 {
            format!(", in {} separate episodes", s.episodes)
        } else {
            String::new()
        };
        w!(
            out,
            "<p class=\"when\">First seen {} · {} · in {} of {} reports{}</p>\n",
            Esc(&at(first)),
            Esc(&state),
            s.reports,
            reports.len(),
            Esc(&episodes)
        );
        out.push_str("<div class=\"split\">\n<div><h4>Evidence</h4>\n<table class=\"kv\">");
        // Beside each figure, its peak when the series saw worse than this report.
        let peaks: HashMap<&str, (f64, std::time::SystemTime)> = s
            .peaks
            .above(v)
            .map(|(key, peak, at)| (key, (peak, at)))
            .collect();
        // A leak's stacks (`watch --stacks`) have their own block below.
        for (key, value) in v.evidence.iter().filter(|(k, _)| k.as_str() != "stacks") {
            let peak = peaks
                .get(key.as_str())
                .map_or_else(String::new, |&(x, at)| {
                    format!(
                        "<td class=\"peak\">peak {} at {}</td>",
                        Esc(&figure(x)),
                        Esc(&clock(at))
                    )
                });
            w!(
                out,
                "<tr><th><code>{}</code></th><td>{}</td>{peak}</tr>",
                Esc(key),
                Esc(&evidence_value(value))
            );
        }
        if v.evidence.is_empty() {
            out.push_str("<tr><td>–</td></tr>");
        }
        out.push_str("</table></div>\n<div><h4>Suggested action</h4>\n<pre class=\"action\">");
        // A leak's action repeats the kill commands, shown in their own table below.
        let lines: Vec<&str> = v
            .action
            .lines()
            .filter(|l| {
                // The table below lists them, with their process.
                v.stale_connections.is_empty()
                    || !(l.trim_start().starts_with("CLIENT KILL")
                        || (l.starts_with("  ") && l.ends_with(':')))
            })
            .collect();
        w!(out, "{}", Esc(lines.join("\n").trim_end()));
        out.push_str("</pre>\n");
        if !v.stale_connections.is_empty() {
            w!(
                out,
                "<h4>Idle connections to close, longest idle first ({}) — review before running any</h4>\n\
                 <table class=\"stale\"><thead><tr><th>connection</th><th>idle</th><th>process</th><th>command</th></tr></thead><tbody>\n",
                v.stale_connections.len()
            );
            for c in &v.stale_connections {
                let pid = c
                    .pid
                    .map_or_else(|| "–".to_string(), |p| format!("pid {p}"));
                w!(
                    out,
                    "<tr><td class=\"mono\">{}</td><td class=\"num\">{}</td><td>{}</td><td><code>{}</code></td></tr>\n",
                    Esc(&c.addr.to_string()),
                    Esc(&ms_duration(c.idle_s * 1e3)),
                    Esc(&pid),
                    Esc(&c.command)
                );
            }
            out.push_str("</tbody></table>\n");
        }
        if let Some(stacks) = v.evidence.get("stacks").and_then(Value::as_array) {
            out.push_str("<h4>Where its leaked connections were opened (user stack at connect(), innermost first)</h4>\n");
            for s in stacks {
                let frames: Vec<&str> = s
                    .get("frames")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                w!(
                    out,
                    "<p>{} connections:</p>\n<pre class=\"stack\">{}</pre>\n",
                    s.get("count").and_then(Value::as_u64).unwrap_or(0),
                    Esc(&frames.join("\n"))
                );
            }
        }
        out.push_str("</div>\n</div>\n</article>\n");
    }
    out.push_str("</section>\n");
}

fn evidence_value(v: &Value) -> String {
    match v {
        Value::Null => "–".to_owned(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// The settings the last report recommends, with the figures they come from.
pub(super) fn recommendations_section(out: &mut String, reports: &[Report]) {
    let Some(last) = reports.last().filter(|r| !r.recommendations.is_empty()) else {
        return;
    };
    out.push_str(
        "<section id=\"recommendations\" class=\"card\">\n<h2>Recommended settings</h2>\n\
         <table class=\"kv\"><thead><tr><th>setting</th><th>now</th><th>suggested</th><th>why</th></tr></thead><tbody>\n",
    );
    for r in &last.recommendations {
        w!(
            out,
            "<tr><th><code>{}</code></th><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            Esc(r.setting),
            Esc(&r
                .current
                .map_or_else(|| "unknown".to_owned(), |c| c.to_string())),
            r.suggested,
            Esc(&r.why)
        );
    }
    out.push_str("</tbody></table>\n</section>\n");
}
