//! The chart engine: axes, stacked time panels with their series, reference
//! lines and shaded bands, and legends, drawn as inline SVG.

use super::format::{Esc, clock, ms_duration, num, pct, w};
use super::timeline::Timeline;
use std::fmt::Write as _;

/// Points are marked (with a hover title) only on charts this sparse.
const MAX_MARKED_POINTS: usize = 120;

/// Width of a full-width chart; a chart in half a card is `HALF_W` wide.
pub(super) const CHART_W: f64 = 1200.0;
pub(super) const HALF_W: f64 = 600.0;
const LEFT: f64 = 84.0;
/// Room right of the plot for the reference lines' labels.
const RIGHT: f64 = 118.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 50.0;
const PANEL_GAP: f64 = 22.0;

#[derive(Clone, Copy)]
pub(super) enum Scale {
    Linear { hi: f64 },
    Log { lo: f64, hi: f64 },
}

impl Scale {
    /// Where `v` falls between the bottom (0) and the top (1), clamped.
    pub(super) fn frac(self, v: f64) -> f64 {
        let f = match self {
            Scale::Linear { hi } => v / hi,
            Scale::Log { lo, hi } => (v.max(lo).ln() - lo.ln()) / (hi.ln() - lo.ln()),
        };
        if f.is_finite() {
            f.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// A linear axis from 0 to a round number above `max`, with its ticks.
pub(super) fn linear_axis(max: f64, integer: bool) -> (Scale, Vec<f64>) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let mut step = mag
        * if norm <= 1.0 {
            1.0
        } else if norm <= 2.0 {
            2.0
        } else if norm <= 2.5 {
            2.5
        } else if norm <= 5.0 {
            5.0
        } else {
            10.0
        };
    if integer {
        step = step.max(1.0).round();
    }
    let n = (max / step).ceil().max(1.0);
    let hi = n * step;
    let ticks = (0..=n as usize).map(|i| i as f64 * step).collect();
    (Scale::Linear { hi }, ticks)
}

/// A log axis over whole decades covering `lo..hi` (both > 0).
pub(super) fn log_axis(lo: f64, hi: f64) -> (Scale, Vec<f64>) {
    let lo = 10f64.powf(lo.max(1e-3).log10().floor());
    let mut hi = 10f64.powf(hi.max(lo).log10().ceil());
    if hi <= lo {
        hi = lo * 10.0;
    }
    let mut ticks = Vec::new();
    let mut t = lo;
    while t <= hi * 1.0001 && ticks.len() < 16 {
        ticks.push(t);
        t *= 10.0;
    }
    (Scale::Log { lo, hi }, ticks)
}

pub(super) struct Series {
    pub(super) name: String,
    pub(super) color: &'static str,
    /// `None` breaks the line (not known in that report).
    pub(super) points: Vec<(f64, Option<f64>)>,
}

pub(super) struct RefLine {
    pub(super) value: f64,
    pub(super) label: String,
    pub(super) color: &'static str,
}

/// A shaded stretch of time or value, behind the lines.
pub(super) struct Band {
    pub(super) x: Option<(f64, f64)>,
    pub(super) y: Option<(f64, f64)>,
    pub(super) color: &'static str,
}

/// One plot area of a time chart; several stack on one time axis.
pub(super) struct Panel {
    /// Drawn at the panel's top left, in `title_color`.
    pub(super) title: Option<(String, &'static str)>,
    pub(super) ylabel: String,
    pub(super) scale: Scale,
    pub(super) ticks: Vec<f64>,
    pub(super) fmt: fn(f64) -> String,
    pub(super) height: f64,
    pub(super) series: Vec<Series>,
    pub(super) refs: Vec<RefLine>,
    pub(super) bands: Vec<Band>,
    /// Shown when no series has a point.
    pub(super) empty: String,
}

pub(super) fn fmt_count(v: f64) -> String {
    num(v)
}

pub(super) fn fmt_pct(v: f64) -> String {
    pct(v)
}

pub(super) fn fmt_ms(v: f64) -> String {
    ms_duration(v)
}

/// An `<svg>` chart of `panels` stacked over one time axis.
pub(super) fn time_chart(
    out: &mut String,
    width: f64,
    id: &str,
    label: &str,
    tl: &Timeline,
    panels: &[Panel],
) {
    let plot_w = width - LEFT - RIGHT;
    let total_h: f64 = TOP
        + panels.iter().map(|p| p.height).sum::<f64>()
        + PANEL_GAP * panels.len().saturating_sub(1) as f64
        + BOTTOM;
    let x_of = |x: f64| LEFT + plot_w * ((x - tl.lo) / (tl.hi - tl.lo)).clamp(0.0, 1.0);
    w!(
        out,
        "<svg class=\"chart\" data-chart=\"{}\" viewBox=\"0 0 {width} {total_h}\" role=\"img\" aria-label=\"{}\">\n",
        Esc(id),
        Esc(label)
    );
    let ticks = tl.ticks();
    let mut top = TOP;
    for (pi, p) in panels.iter().enumerate() {
        let h = p.height;
        let bottom = top + h;
        let y_of = |v: f64| bottom - h * p.scale.frac(v);
        w!(
            out,
            "<rect class=\"plot\" x=\"{LEFT}\" y=\"{top}\" width=\"{plot_w}\" height=\"{h}\"/>\n"
        );
        for b in &p.bands {
            let (x0, x1) =
                b.x.map_or((LEFT, LEFT + plot_w), |(a, z)| (x_of(a), x_of(z)));
            let (y0, y1) = b.y.map_or((top, bottom), |(a, z)| (y_of(z), y_of(a)));
            if x1 > x0 && y1 > y0 {
                w!(
                    out,
                    "<rect x=\"{x0:.1}\" y=\"{y0:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\" fill-opacity=\"0.17\"/>\n",
                    x1 - x0,
                    y1 - y0,
                    b.color
                );
            }
        }
        // Grid and y ticks.
        for &t in &p.ticks {
            let y = y_of(t);
            w!(
                out,
                "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
                 <text class=\"tick\" x=\"{:.1}\" y=\"{y:.1}\" text-anchor=\"end\" dominant-baseline=\"middle\">{}</text>\n",
                LEFT + plot_w,
                LEFT - 8.0,
                Esc(&(p.fmt)(t))
            );
        }
        for &t in &ticks {
            let x = x_of(t);
            w!(
                out,
                "<line class=\"grid\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{top}\" y2=\"{bottom}\"/>\n"
            );
        }
        // Reference lines, labelled right of the plot, clear of the data; they
        // guide the eye only when there is data to compare with them.
        let has_data = p
            .series
            .iter()
            .any(|s| s.points.iter().any(|pt| pt.1.is_some()));
        for r in p.refs.iter().filter(|_| has_data) {
            let y = y_of(r.value);
            w!(
                out,
                "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{}\" stroke-width=\"1.5\" stroke-dasharray=\"7 5\"/>\
                 <text class=\"reflabel\" x=\"{:.1}\" y=\"{y:.1}\" dominant-baseline=\"middle\" fill=\"{}\">{}</text>\n",
                LEFT + plot_w,
                r.color,
                LEFT + plot_w + 6.0,
                r.color,
                Esc(&r.label)
            );
        }
        // Axes.
        w!(
            out,
            "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{top}\" y2=\"{bottom}\"/>\
             <line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{bottom}\" y2=\"{bottom}\"/>\n",
            LEFT + plot_w
        );
        if !p.ylabel.is_empty() {
            w!(
                out,
                "<text class=\"axislabel\" transform=\"translate(18 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
                top + h / 2.0,
                Esc(&p.ylabel)
            );
        }
        // Series.
        let mut any = false;
        let marked = tl.xs.len() <= MAX_MARKED_POINTS;
        for s in &p.series {
            let mut segment: Vec<(f64, f64)> = Vec::new();
            let mut segments = Vec::new();
            for &(x, v) in &s.points {
                match v.filter(|v| v.is_finite()) {
                    Some(v) => segment.push((x, v)),
                    None if !segment.is_empty() => segments.push(std::mem::take(&mut segment)),
                    None => {}
                }
            }
            if !segment.is_empty() {
                segments.push(segment);
            }
            for seg in &segments {
                any = true;
                if seg.len() > 1 {
                    out.push_str("<polyline fill=\"none\" stroke-width=\"2.2\" stroke-linejoin=\"round\" stroke=\"");
                    out.push_str(s.color);
                    out.push_str("\" points=\"");
                    for &(x, v) in seg {
                        w!(out, "{:.1},{:.1} ", x_of(x), y_of(v));
                    }
                    out.push_str("\"/>\n");
                }
                if marked || seg.len() == 1 {
                    for &(x, v) in seg {
                        w!(
                            out,
                            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"><title>{} {}: {}</title></circle>",
                            x_of(x),
                            y_of(v),
                            s.color,
                            Esc(&clock(tl.wall(x))),
                            Esc(&s.name),
                            Esc(&(p.fmt)(v))
                        );
                    }
                    out.push('\n');
                }
            }
        }
        if !any {
            w!(
                out,
                "<text class=\"nodata\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" dominant-baseline=\"middle\">{}</text>\n",
                LEFT + plot_w / 2.0,
                top + h / 2.0,
                Esc(&p.empty)
            );
        }
        if let Some((title, color)) = &p.title {
            w!(
                out,
                "<text class=\"ptitle\" x=\"{:.1}\" y=\"{:.1}\" fill=\"{}\">{}</text>\n",
                LEFT + 8.0,
                top + 16.0,
                color,
                Esc(title)
            );
        }
        top = bottom;
        if pi + 1 < panels.len() {
            top += PANEL_GAP;
        }
    }
    // The time axis, under the last panel.
    for &t in &ticks {
        let x = x_of(t);
        w!(
            out,
            "<line class=\"axis\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{top}\" y2=\"{:.1}\"/>\
             <text class=\"tick\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            top + 5.0,
            top + 19.0,
            Esc(&clock(tl.wall(t)))
        );
    }
    w!(
        out,
        "<text class=\"axislabel\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">time (UTC)</text>\n</svg>\n",
        LEFT + plot_w / 2.0,
        top + 42.0
    );
}

/// How a legend entry is drawn.
#[derive(Clone, Copy)]
pub(super) enum Swatch {
    /// A data series.
    Line,
    /// A guide (threshold) line.
    Dashed,
    /// A shaded stretch.
    Area,
}

/// The legend under a chart.
pub(super) fn legend(out: &mut String, items: &[(String, &'static str, Swatch)]) {
    out.push_str("<ul class=\"legend\">");
    for (name, color, swatch) in items {
        let class = match swatch {
            Swatch::Line => "swatch",
            Swatch::Dashed => "swatch dashed",
            Swatch::Area => "swatch area",
        };
        w!(
            out,
            "<li><span class=\"{class}\" style=\"--c:{color}\"></span>{}</li>",
            Esc(name)
        );
    }
    out.push_str("</ul>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_round() {
        let (scale, ticks) = linear_axis(47.0, true);
        assert!(matches!(scale, Scale::Linear { hi } if hi == 50.0));
        assert_eq!(ticks, [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]);
        let (_, ticks) = linear_axis(0.0, true);
        assert_eq!(ticks, [0.0, 1.0]);
        let (_, ticks) = linear_axis(0.93, false);
        assert_eq!(ticks.last(), Some(&1.0));
        let (_, ticks) = log_axis(1.2, 1_500.0);
        assert_eq!(ticks, [1.0, 10.0, 100.0, 1_000.0, 10_000.0]);
    }
}
