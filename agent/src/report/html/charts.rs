//! "Over time": open connections of the top addresses, rejections / refusals /
//! failed accepts per second, and the capacity ratio.

use super::format::{AMBER, BLUE, PURPLE, RED, client_verdict_rank, w, words};
use super::svg::{
    Band, CHART_W, Panel, RefLine, Scale, Series, Swatch, fmt_count, fmt_pct, legend, linear_axis,
    time_chart,
};
use super::timeline::Timeline;
use crate::model::{AcceptErrors, ClientVerdict, Report};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

/// Addresses drawn in the open-connections chart.
const TOP_ADDRESSES: usize = 8;

const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

pub(super) fn charts_section(out: &mut String, reports: &[Report], tl: &Timeline) {
    out.push_str("<section id=\"charts\">\n<h2>Over time</h2>\n");
    open_chart(out, reports, tl);
    rates_chart(out, reports, tl);
    capacity_chart(out, reports, tl);
    out.push_str("</section>\n");
}

fn open_chart(out: &mut String, reports: &[Report], tl: &Timeline) {
    // The addresses with the most connections open at any time.
    let mut max_open: HashMap<IpAddr, u64> = HashMap::new();
    for r in reports {
        for c in &r.clients {
            let m = max_open.entry(c.addr).or_insert(0);
            *m = (*m).max(c.open);
        }
    }
    let mut top: Vec<(IpAddr, u64)> = max_open.into_iter().filter(|&(_, m)| m > 0).collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let hidden = top.len().saturating_sub(TOP_ADDRESSES);
    top.truncate(TOP_ADDRESSES);
    let peak = top.first().map_or(0, |t| t.1);
    let series: Vec<Series> = top
        .iter()
        .zip(PALETTE)
        .map(|(&(addr, _), color)| Series {
            name: addr.to_string(),
            color,
            // An address missing from a report had nothing open then.
            points: reports
                .iter()
                .zip(&tl.xs)
                .map(|(r, &x)| {
                    let open = r
                        .clients
                        .iter()
                        .find(|c| c.addr == addr)
                        .map_or(0, |c| c.open);
                    (x, Some(open as f64))
                })
                .collect(),
        })
        .collect();
    let (scale, ticks) = linear_axis(peak as f64, true);
    w!(
        out,
        "<figure class=\"card\">\n<figcaption><h3>Open connections by client address</h3>\
         <p>The {} address{} with the most connections open at any time. A leak climbs and \
         stays up; a pool is a flat line.</p></figcaption>\n",
        top.len(),
        if top.len() == 1 { "" } else { "es" }
    );
    let mut items: Vec<(String, &'static str, Swatch)> = series
        .iter()
        .map(|s| (verdict_tag(reports, &s.name), s.color, Swatch::Line))
        .collect();
    time_chart(
        out,
        CHART_W,
        "open",
        "Open connections over time for the top client addresses",
        tl,
        &[Panel {
            title: None,
            ylabel: "open connections".to_owned(),
            scale,
            ticks,
            fmt: fmt_count,
            height: 300.0,
            series,
            refs: Vec::new(),
            bands: Vec::new(),
            empty: "no connection was open in any report".to_owned(),
        }],
    );
    if hidden > 0 {
        items.push((
            format!("{hidden} more addresses not drawn"),
            "#bbbbbb",
            Swatch::Line,
        ));
    }
    legend(out, &items);
    out.push_str("</figure>\n");
}

/// `10.0.0.66 (leak)`: an address and the worst verdict it ever had.
fn verdict_tag(reports: &[Report], addr: &str) -> String {
    let worst = reports
        .iter()
        .flat_map(|r| r.clients.iter())
        .filter(|c| c.addr.to_string() == addr)
        .map(|c| c.verdict)
        .max_by_key(|&v| client_verdict_rank(v));
    match worst {
        Some(v) if v != ClientVerdict::Healthy => format!("{addr} ({})", words(v.as_str())),
        _ => addr.to_owned(),
    }
}

/// Per-second rates from the growth of cumulative totals between reports; the
/// first report's rate is over the time since the agent started (its counters
/// start at zero then).
pub(super) fn rate_series(
    reports: &[Report],
    tl: &Timeline,
    f: fn(&Report) -> u64,
) -> Vec<(f64, Option<f64>)> {
    let mut prev: Option<(Duration, u64)> = None;
    reports
        .iter()
        .zip(&tl.xs)
        .map(|(r, &x)| {
            let (t0, n0) = prev.unwrap_or((Duration::ZERO, 0));
            let n = f(r);
            let dt = r.uptime.saturating_sub(t0).as_secs_f64();
            prev = Some((r.uptime, n));
            // A counter that went backwards (a restart) starts over: no rate there.
            let rate = (dt > 0.0 && n >= n0).then(|| (n - n0) as f64 / dt);
            (x, rate)
        })
        .collect()
}

/// A cumulative total of the reports: rejected, refused, failed accepts.
type Total = fn(&Report) -> u64;

fn rates_chart(out: &mut String, reports: &[Report], tl: &Timeline) {
    // Name, colour, the total, and what an empty lane says.
    let lanes: [(&str, &'static str, Total, &str); 3] = [
        (
            "rejected by Redis / s",
            RED,
            |r| r.totals.rejected,
            "no rejection",
        ),
        (
            "refused by the kernel / s (nothing listening)",
            PURPLE,
            |r| r.totals.refused.unwrap_or(0),
            "no refusal",
        ),
        (
            "failed accept() / s",
            AMBER,
            |r| {
                r.totals
                    .accept_errors
                    .as_ref()
                    .map_or(0, AcceptErrors::total)
            },
            "no failed accept",
        ),
    ];
    let panels: Vec<Panel> = lanes
        .iter()
        .map(|&(name, color, f, empty)| {
            let points = rate_series(reports, tl, f);
            let max = points.iter().filter_map(|p| p.1).fold(0.0f64, f64::max);
            let (scale, ticks) = linear_axis(max, false);
            let all_zero = max <= 0.0;
            Panel {
                title: Some((name.to_owned(), color)),
                ylabel: if all_zero { "" } else { "per second" }.to_owned(),
                scale,
                // A lane with nothing in it says so in less room.
                ticks: if all_zero { vec![0.0] } else { ticks },
                fmt: fmt_count,
                height: if all_zero { 44.0 } else { 120.0 },
                series: if all_zero {
                    Vec::new()
                } else {
                    vec![Series {
                        name: name.to_owned(),
                        color,
                        points,
                    }]
                },
                refs: Vec::new(),
                bands: Vec::new(),
                empty: format!("{empty} in this capture"),
            }
        })
        .collect();
    out.push_str(
        "<figure class=\"card\">\n<figcaption><h3>Rejections, refusals and failed accepts per second</h3>\
         <p>Each from the growth of its total between two reports, on its own scale. Rejected: \
         Redis accepted and closed at once (maxclients, protected mode). Refused: nothing \
         listened (Redis down or restarting). Failed accepts: EMFILE and friends, which INFO \
         does not count.</p></figcaption>\n",
    );
    time_chart(
        out,
        CHART_W,
        "rates",
        "Rejections, refusals and failed accepts per second over time",
        tl,
        &panels,
    );
    legend(
        out,
        &lanes
            .iter()
            .map(|&(name, color, _, _)| (name.to_owned(), color, Swatch::Line))
            .collect::<Vec<_>>(),
    );
    out.push_str("</figure>\n");
}

fn capacity_chart(out: &mut String, reports: &[Report], tl: &Timeline) {
    let points: Vec<(f64, Option<f64>)> = reports
        .iter()
        .zip(&tl.xs)
        .map(|(r, &x)| (x, r.capacity.ratio))
        .collect();
    let max = points.iter().filter_map(|p| p.1).fold(1.0f64, f64::max);
    let (scale, ticks) = linear_axis(max, false);
    let hi = match scale {
        Scale::Linear { hi } => hi,
        Scale::Log { hi, .. } => hi,
    };
    out.push_str(
        "<figure class=\"card\">\n<figcaption><h3>Capacity: connections in use ÷ effective maxclients</h3>\
         <p>Used is what Redis counts against maxclients (clients + replicas + cluster links); \
         the effective limit is min(maxclients, open-file limit − 32). Above 80 % is a warning, \
         from 90 % critical.</p></figcaption>\n",
    );
    time_chart(
        out,
        CHART_W,
        "capacity",
        "Capacity ratio over time against the 0.8 and 0.9 lines",
        tl,
        &[Panel {
            title: None,
            ylabel: "used / limit".to_owned(),
            scale,
            ticks,
            fmt: fmt_pct,
            height: 260.0,
            series: vec![Series {
                name: "capacity".to_owned(),
                color: BLUE,
                points,
            }],
            refs: vec![
                RefLine {
                    value: 0.8,
                    label: "0.8 warning".to_owned(),
                    color: AMBER,
                },
                RefLine {
                    value: 0.9,
                    label: "0.9 critical".to_owned(),
                    color: RED,
                },
            ],
            bands: vec![
                Band {
                    x: None,
                    y: Some((0.8, 0.9)),
                    color: AMBER,
                },
                Band {
                    x: None,
                    y: Some((0.9, hi)),
                    color: RED,
                },
            ],
            empty: "the limit was never known (Redis not asked, open-file limit unknown)"
                .to_owned(),
        }],
    );
    legend(
        out,
        &[
            ("used / effective limit".to_owned(), BLUE, Swatch::Line),
            ("0.8: capacity warning".to_owned(), AMBER, Swatch::Dashed),
            ("0.9: capacity critical".to_owned(), RED, Swatch::Dashed),
        ],
    );
    out.push_str("</figure>\n");
}
