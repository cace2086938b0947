//! Suspicious addresses: for each, its retry gaps over time and the lifetimes of
//! its connections.

use super::format::{
    BLUE, Esc, GREEN, RED, client_verdict_color, client_verdict_rank, clock, ms_duration, w, words,
};
use super::svg::{
    Band, HALF_W, Panel, RefLine, Series, Swatch, fmt_ms, legend, log_axis, time_chart,
};
use super::timeline::Timeline;
use super::verdicts::Seen;
use crate::model::{ClientReport, ClientVerdict, Report, VerdictKind};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

/// Suspicious addresses given their own retry and lifetime charts.
const MAX_SUSPECTS: usize = 12;

/// The default retry-storm gap and backing-off gap (docs/DIAGNOSIS.md), drawn as
/// guides on the retry charts. The run may have used other flags: labelled "default".
const STORM_GAP_MS: f64 = 100.0;
const BACKOFF_GAP_MS: f64 = 1_000.0;

pub(super) struct Suspect {
    pub(super) addr: IpAddr,
    worst: ClientVerdict,
    first: usize,
}

/// Addresses with a non-healthy verdict in any report (their own, or a host
/// verdict naming them), worst first.
pub(super) fn suspects(reports: &[Report], seen: &[Seen<'_>]) -> Vec<Suspect> {
    let mut found: Vec<Suspect> = Vec::new();
    let mut note = |addr: IpAddr, v: ClientVerdict, i: usize| match found
        .iter_mut()
        .find(|s| s.addr == addr)
    {
        Some(s) => {
            if client_verdict_rank(v) > client_verdict_rank(s.worst) {
                s.worst = v;
            }
            s.first = s.first.min(i);
        }
        None => found.push(Suspect {
            addr,
            worst: v,
            first: i,
        }),
    };
    for (i, r) in reports.iter().enumerate() {
        for c in r
            .clients
            .iter()
            .filter(|c| c.verdict != ClientVerdict::Healthy)
        {
            note(c.addr, c.verdict, i);
        }
    }
    for s in seen {
        if let Some(addr) = s.addr {
            let v = match s.kind {
                VerdictKind::Leak => ClientVerdict::Leak,
                VerdictKind::RetryStorm => ClientVerdict::RetryStorm,
                _ => ClientVerdict::Healthy,
            };
            note(addr, v, s.first);
        }
    }
    found.sort_by(|a, b| {
        client_verdict_rank(b.worst)
            .cmp(&client_verdict_rank(a.worst))
            .then(a.first.cmp(&b.first))
            .then(a.addr.cmp(&b.addr))
    });
    found
}

pub(super) fn suspects_section(
    out: &mut String,
    reports: &[Report],
    tl: &Timeline,
    seen: &[Seen<'_>],
) {
    let all = suspects(reports, seen);
    if all.is_empty() {
        return;
    }
    out.push_str(
        "<section id=\"suspects\">\n<h2>Suspicious addresses</h2>\n<p class=\"note\">Every address \
         that had a verdict other than healthy. Shaded: the intervals in which it had one.</p>\n",
    );
    for s in all.iter().take(MAX_SUSPECTS) {
        let addr = s.addr.to_string();
        let worst = s.worst.as_str();
        w!(
            out,
            "<article class=\"card suspect\" data-addr=\"{}\">\n<h3><span class=\"addr\">{}</span> \
             <span class=\"pill\" style=\"--c:{}\">{}</span></h3>\n<div class=\"pair\">\n<div>\n",
            Esc(&addr),
            Esc(&addr),
            client_verdict_color(s.worst),
            Esc(&words(worst))
        );
        retry_chart(out, reports, tl, s.addr);
        out.push_str("</div>\n<div>\n");
        lifetime_chart(out, reports, s.addr);
        out.push_str("</div>\n</div>\n</article>\n");
    }
    if all.len() > MAX_SUSPECTS {
        w!(
            out,
            "<p class=\"note\">… and {} more suspicious addresses: see the client table.</p>\n",
            all.len() - MAX_SUSPECTS
        );
    }
    out.push_str("</section>\n");
}

fn client_in(r: &Report, addr: IpAddr) -> Option<&ClientReport> {
    r.clients.iter().find(|c| c.addr == addr)
}

fn retry_chart(out: &mut String, reports: &[Report], tl: &Timeline, addr: IpAddr) {
    let points: Vec<(f64, Option<f64>)> = reports
        .iter()
        .zip(&tl.xs)
        .map(|(r, &x)| {
            (
                x,
                client_in(r, addr).and_then(|c| c.retry).map(|g| g.p50_ms),
            )
        })
        .collect();
    let values = || points.iter().filter_map(|p| p.1);
    // Margin below the smallest gap, so a storm's 1 ms line clears the axis.
    let lo = values().fold(STORM_GAP_MS / 10.0, f64::min).max(1e-3) / 1.5;
    let hi = values().fold(BACKOFF_GAP_MS * 2.0, f64::max);
    let (scale, ticks) = log_axis(lo, hi);
    // Shade the intervals with a verdict, in its colour; consecutive ones merge.
    let mut bands: Vec<Band> = Vec::new();
    let mut kinds: Vec<ClientVerdict> = Vec::new();
    let mut open: Option<(ClientVerdict, f64, f64)> = None;
    for (i, r) in reports.iter().enumerate() {
        let v = client_in(r, addr).map_or(ClientVerdict::Healthy, |c| c.verdict);
        let (x0, x1) = tl.interval(i);
        open = match open {
            Some((ov, a, _)) if ov == v => Some((ov, a, x1)),
            prev => {
                if let Some((ov, a, z)) = prev.filter(|p| p.0 != ClientVerdict::Healthy) {
                    bands.push(Band {
                        x: Some((a, z)),
                        y: None,
                        color: client_verdict_color(ov),
                    });
                }
                Some((v, x0, x1))
            }
        };
        if v != ClientVerdict::Healthy && !kinds.contains(&v) {
            kinds.push(v);
        }
    }
    if let Some((ov, a, z)) = open.filter(|p| p.0 != ClientVerdict::Healthy) {
        bands.push(Band {
            x: Some((a, z)),
            y: None,
            color: client_verdict_color(ov),
        });
    }
    out.push_str(
        "<h4>Retry gap over time</h4><p class=\"note\">Median time from a failed attempt to the \
         next one (latest 16 gaps), log scale.</p>\n",
    );
    time_chart(
        out,
        HALF_W,
        "retry",
        &format!("Retry gap p50 over time for {addr}"),
        tl,
        &[Panel {
            title: None,
            ylabel: "retry gap p50".to_owned(),
            scale,
            ticks,
            fmt: fmt_ms,
            height: 200.0,
            series: vec![Series {
                name: "retry gap p50".to_owned(),
                color: BLUE,
                points,
            }],
            refs: vec![
                RefLine {
                    value: STORM_GAP_MS,
                    label: "storm < 100ms".to_owned(),
                    color: RED,
                },
                RefLine {
                    value: BACKOFF_GAP_MS,
                    label: "backoff ≥ 1s".to_owned(),
                    color: GREEN,
                },
            ],
            bands,
            empty: "no failed attempt from this address".to_owned(),
        }],
    );
    let mut items = vec![("retry gap p50".to_owned(), BLUE, Swatch::Line)];
    items.extend(kinds.iter().map(|&k| {
        (
            format!("verdict: {}", words(k.as_str())),
            client_verdict_color(k),
            Swatch::Area,
        )
    }));
    items.push((
        "default storm / backoff gaps".to_owned(),
        "#888888",
        Swatch::Dashed,
    ));
    legend(out, &items);
}

/// Lifetimes of the address's closed connections, from the last report that has
/// any (the histogram is cumulative): p50, p90, p99 and max as bars, log scale.
fn lifetime_chart(out: &mut String, reports: &[Report], addr: IpAddr) {
    const W: f64 = 600.0;
    const H: f64 = 250.0;
    const L: f64 = 70.0;
    const R: f64 = 24.0;
    const T: f64 = 20.0;
    const B: f64 = 50.0;
    let found = reports
        .iter()
        .rev()
        .find_map(|r| client_in(r, addr).and_then(|c| c.lifetime).map(|l| (r, l)));
    out.push_str(
        "<h4>Connection lifetimes</h4><p class=\"note\">Closed connections whose opening was seen, \
         log scale.</p>\n",
    );
    w!(
        out,
        "<svg class=\"chart\" data-chart=\"lifetime\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"Lifetimes of connections from {}\">\n",
        Esc(&addr.to_string())
    );
    let plot_w = W - L - R;
    let plot_h = H - T - B;
    w!(
        out,
        "<rect class=\"plot\" x=\"{L}\" y=\"{T}\" width=\"{plot_w}\" height=\"{plot_h}\"/>\n"
    );
    let Some((report, life)) = found else {
        w!(
            out,
            "<text class=\"nodata\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" dominant-baseline=\"middle\">no closed connection seen from this address</text>\n</svg>\n",
            L + plot_w / 2.0,
            T + plot_h / 2.0
        );
        return;
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let bars = [
        ("p50", ms(life.p50), "#6baed6"),
        ("p90", ms(life.p90), "#3182bd"),
        ("p99", ms(life.p99), "#08519c"),
        ("max", ms(life.max), "#08306b"),
    ];
    let lo = bars.iter().map(|b| b.1).fold(f64::INFINITY, f64::min);
    let hi = bars.iter().map(|b| b.1).fold(0.0f64, f64::max);
    let (scale, ticks) = log_axis(lo.max(1e-3), hi.max(lo.max(1e-3) * 10.0));
    let y_of = |v: f64| T + plot_h - plot_h * scale.frac(v);
    for &t in &ticks {
        let y = y_of(t);
        w!(
            out,
            "<line class=\"grid\" x1=\"{L}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"tick\" x=\"{:.1}\" y=\"{y:.1}\" text-anchor=\"end\" dominant-baseline=\"middle\">{}</text>\n",
            L + plot_w,
            L - 8.0,
            Esc(&ms_duration(t))
        );
    }
    let slot = plot_w / bars.len() as f64;
    for (i, (name, v, color)) in bars.iter().enumerate() {
        let x = L + slot * i as f64 + slot * 0.2;
        let y = y_of(*v);
        let bottom = T + plot_h;
        w!(
            out,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"><title>{name}: {}</title></rect>\
             <text class=\"barlabel\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
             <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{name}</text>\n",
            slot * 0.6,
            (bottom - y).max(1.0),
            Esc(&ms_duration(*v)),
            x + slot * 0.3,
            (y - 6.0).max(T + 12.0),
            Esc(&ms_duration(*v)),
            x + slot * 0.3,
            bottom + 18.0
        );
    }
    w!(
        out,
        "<line class=\"axis\" x1=\"{L}\" x2=\"{L}\" y1=\"{T}\" y2=\"{:.1}\"/>\
         <line class=\"axis\" x1=\"{L}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>\n\
         <text class=\"axislabel\" transform=\"translate(16 {:.1}) rotate(-90)\" text-anchor=\"middle\">lifetime</text>\n\
         <text class=\"axislabel\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">percentile, as of {} UTC</text>\n</svg>\n",
        T + plot_h,
        L + plot_w,
        T + plot_h,
        T + plot_h,
        T + plot_h / 2.0,
        L + plot_w / 2.0,
        H - 8.0,
        Esc(&clock(report.ts))
    );
}
