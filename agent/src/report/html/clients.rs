//! The client table of the last report, sortable by clicking a header (the
//! sorter is `assets/report.js`).

use super::format::{Esc, client_verdict_color, client_verdict_rank, clock, ms_duration, w, words};
use crate::model::{ClientReport, Report, human_bytes, human_duration};
use std::fmt::Write as _;
use std::time::Duration;

/// Rows of the client table; a fan-out of 100k addresses would make a page no
/// browser opens comfortably. The rest are counted under the table.
const MAX_TABLE_ROWS: usize = 5_000;

/// A column: its key (for `#sort=key`), header, tooltip, and whether it sorts as a number.
pub(super) struct Column {
    key: &'static str,
    header: &'static str,
    help: &'static str,
    numeric: bool,
}

pub(super) const COLUMNS: [Column; 19] = [
    col("addr", "Address", "Client IP address", false),
    col("verdict", "Verdict", "What this address is doing", true),
    col("open", "Open", "Connections open now", true),
    col("opened", "Opened", "Connections opened while watched", true),
    col("closed", "Closed", "Connections that closed", true),
    col(
        "by_server",
        "By server",
        "Closed by Redis first, and why: rejection, idle timeout, output buffer, other",
        true,
    ),
    col("by_client", "By client", "Closed by the client first", true),
    col("reset", "Reset", "Reset while established", true),
    col("rejected", "Rejected", "Turned away by Redis at once", true),
    col("refused", "Refused", "Refused: nothing listened", true),
    col(
        "retry_p50",
        "Retry p50",
        "Median gap from a failure to the next attempt",
        true,
    ),
    col("trend", "Trend", "Whether retry gaps grow (backoff)", false),
    col(
        "life_p50",
        "Life p50",
        "Median lifetime of closed connections",
        true,
    ),
    col("life_p99", "Life p99", "99th percentile lifetime", true),
    col("idle_max", "Idle max", "Longest idle open connection", true),
    col(
        "age_max",
        "Age max",
        "Oldest open connection (≥: older than the agent)",
        true,
    ),
    col(
        "bytes_in",
        "Bytes in",
        "Bytes Redis read from this address",
        true,
    ),
    col(
        "bytes_out",
        "Bytes out",
        "Bytes Redis wrote to this address",
        true,
    ),
    col(
        "processes",
        "Processes",
        "Local processes behind the connections (taken at connect()), worst first: open, opened, failed",
        false,
    ),
];

const fn col(key: &'static str, header: &'static str, help: &'static str, numeric: bool) -> Column {
    Column {
        key,
        header,
        help,
        numeric,
    }
}

pub(super) fn clients_section(out: &mut String, reports: &[Report]) {
    let Some(last) = reports.last() else {
        return;
    };
    w!(
        out,
        "<section id=\"clients-section\" class=\"card\">\n<h2>Clients at {} UTC</h2>\n\
         <p class=\"note\">From the last report, worst first. Click a column header to sort \
         (again to reverse). Durations and sizes in human units; hover a header for its meaning.</p>\n",
        Esc(&clock(last.ts))
    );
    if last.clients.is_empty() {
        out.push_str("<p>No client connection seen.</p>\n</section>\n");
        return;
    }
    out.push_str("<div class=\"scroll\"><table id=\"clients\" class=\"clients\">\n<thead><tr>");
    for c in &COLUMNS {
        w!(
            out,
            "<th scope=\"col\" tabindex=\"0\" data-key=\"{}\" data-type=\"{}\" title=\"{}\">{}</th>",
            c.key,
            if c.numeric { "num" } else { "text" },
            Esc(c.help),
            Esc(c.header)
        );
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for c in last.clients.iter().take(MAX_TABLE_ROWS) {
        client_row(out, c);
    }
    out.push_str("</tbody>\n</table></div>\n");
    if last.clients.len() > MAX_TABLE_ROWS {
        w!(
            out,
            "<p class=\"note\">… and {} more addresses, left out to keep this page light: see \
             the JSON report.</p>\n",
            last.clients.len() - MAX_TABLE_ROWS
        );
    }
    out.push_str("</section>\n");
}

/// A cell: the sort key (`data-v`, empty for "none": sorted last) and what is shown.
fn cell(out: &mut String, sort: &str, shown: &str, class: &str) {
    w!(
        out,
        "<td class=\"{class}\" data-v=\"{}\">{}</td>",
        Esc(sort),
        Esc(shown)
    );
}

fn count_cell(out: &mut String, n: u64) {
    cell(out, &n.to_string(), &n.to_string(), "num");
}

fn duration_cell(out: &mut String, d: Option<Duration>, prefix: &str) {
    match d {
        Some(d) => cell(
            out,
            &format!("{:.6}", d.as_secs_f64()),
            &format!("{prefix}{}", human_duration(d)),
            "num",
        ),
        None => cell(out, "", "–", "num none"),
    }
}

fn client_row(out: &mut String, c: &ClientReport) {
    let verdict = c.verdict.as_str();
    w!(out, "<tr class=\"client v-{}\">", Esc(verdict));
    let mut addr = c.addr.to_string();
    if c.internal {
        addr.push_str(" (replica)");
    }
    cell(out, &c.addr.to_string(), &addr, "mono");
    w!(
        out,
        "<td data-v=\"{}\"><span class=\"pill\" style=\"--c:{}\">{}</span></td>",
        client_verdict_rank(c.verdict),
        client_verdict_color(c.verdict),
        Esc(&words(verdict))
    );
    for n in [c.open, c.opened, c.closed] {
        count_cell(out, n);
    }
    // Closed by the server, with why when it was not only rejections.
    let s = &c.server_closes;
    let why = if s.idle_timeout + s.output_buffer + s.other > 0 {
        format!("{} ({})", c.closed_by_server, s.describe())
    } else {
        c.closed_by_server.to_string()
    };
    cell(out, &c.closed_by_server.to_string(), &why, "num");
    for n in [c.closed_by_client, c.reset, c.rejected] {
        count_cell(out, n);
    }
    // Client mode: the connects that failed without a refusal beside it.
    let unrefused = c
        .failed_connects
        .flatten()
        .map(|f| f.unrefused())
        .unwrap_or_default();
    match c.refused {
        Some(n) if !unrefused.is_empty() => cell(
            out,
            &n.to_string(),
            &format!("{n} (other failed connects: {unrefused})"),
            "num",
        ),
        Some(n) => count_cell(out, n),
        None => cell(out, "", "unknown", "num"),
    }
    match c.retry {
        Some(r) => {
            cell(
                out,
                &format!("{:.3}", r.p50_ms),
                &ms_duration(r.p50_ms),
                "num",
            );
            // The pace it started at tells a cap reached by backing off from a
            // flat retry.
            cell(
                out,
                r.trend.as_str(),
                &format!("{}, from {}", r.trend.as_str(), ms_duration(r.start_ms)),
                "",
            );
        }
        None => {
            cell(out, "", "–", "num none");
            cell(out, "", "–", "none");
        }
    }
    duration_cell(out, c.lifetime.map(|l| l.p50), "");
    duration_cell(out, c.lifetime.map(|l| l.p99), "");
    duration_cell(out, c.idle.map(|i| i.max), "");
    duration_cell(
        out,
        c.age.map(|a| a.max),
        if c.age.is_some_and(|a| a.lower_bound) {
            "≥"
        } else {
            ""
        },
    );
    cell(
        out,
        &c.bytes_in.to_string(),
        &human_bytes(c.bytes_in),
        "num",
    );
    cell(
        out,
        &c.bytes_out.to_string(),
        &human_bytes(c.bytes_out),
        "num",
    );
    processes_cell(out, c);
    out.push_str("</tr>\n");
}

/// The local processes, one a line; sorted by the first one's label.
fn processes_cell(out: &mut String, c: &ClientReport) {
    if c.processes.is_empty() {
        cell(out, "", "–", "none");
        return;
    }
    let sort = c.processes[0].label();
    w!(out, "<td class=\"procs\" data-v=\"{}\">", Esc(&sort));
    for (i, p) in c.processes.iter().enumerate() {
        if i > 0 {
            out.push_str("<br>");
        }
        let mut line = format!(
            "{}: {} open, {} opened, {} failed{}",
            p.label(),
            p.open,
            p.opened,
            p.failed,
            p.failed_by.describe()
        );
        if let Some(pod) = &p.pod {
            line.push_str(&format!(" (pod {pod})"));
        }
        w!(out, "{}", Esc(&line));
    }
    if let Some(o) = c.processes_other.as_deref() {
        w!(
            out,
            "<br>{}",
            Esc(&format!(
                "other processes: {} open, {} opened, {} failed{}",
                o.open,
                o.opened,
                o.failed,
                o.failed_by.describe()
            ))
        );
    }
    out.push_str("</td>");
}
