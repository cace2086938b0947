//! The terminal view: a header and a table a person reads at a glance during an
//! incident, worst client first, in human units.
//!
//! ```text
//! connwatch  2026-11-29T21:05:10.000Z  port 6379  up 5m10s  clients 3
//! open 31  opened/closed 230/200  resets 29  lost events 3  accept errors EMFILE 812
//!
//! ADDR          OPEN  OPENED  CLOSED(srv/cli/rst)  LIFE p50/p99   IDLE p50/max  AGE max   BYTES in/out
//! 2001:db8::17    30      30            0 (0/0/0)             -    4m55s/5m10s    5m10s          0B/0B
//! 10.0.0.4         1       0            0 (0/0/0)             -  10m10s/10m10s  ≥10m10s  4.8MiB/954MiB
//! 10.0.0.2         0     200       200 (171/0/29)   145µs/241µs              -        -          0B/0B
//! ```
//!
//! `≥` marks an age that is a lower bound (the address holds connections older
//! than the agent); `-` a figure that does not exist yet.
//!
//! Pure: the caller decides whether to clear the screen first.

use crate::model::{
    ClientReport, ClientVerdict, Report, Role, Severity, format_ts, human_bytes, human_duration,
};
use std::fmt::Write as _;
use std::time::Duration;

const COLUMNS: usize = 10;
const HEADERS: [&str; COLUMNS] = [
    "ADDR",
    "VERDICT",
    "OPEN",
    "OPENED",
    "CLOSED(srv/cli/rst)",
    "REJ/REF",
    "LIFE p50/p99",
    "IDLE p50/max",
    "AGE max",
    "BYTES in/out",
];
const GAP: &str = "  ";
/// Shown for a figure that does not exist (no closed or open connections).
const NONE: &str = "-";

/// Renders the report as lines of text ending in a newline. At most `top` client
/// rows are shown, followed by "… and N more" when some are left out. With a
/// `width`, longer lines are cut to it (ending in "…") so a refreshing screen
/// never wraps.
pub fn render_text(report: &Report, top: usize, width: Option<usize>) -> String {
    let mut lines = vec![header_line(report), server_line(report)];
    lines.extend(report.probe.as_ref().and_then(|p| p.unseen_line()));
    lines.extend(unix_line(report));
    lines.extend(report.otlp.as_ref().map(otlp_line));
    lines.extend([totals_line(report), String::new()]);
    if !report.verdicts.is_empty() {
        lines.extend(verdict_lines(report));
        lines.push(String::new());
    }
    if !report.recommendations.is_empty() {
        lines.extend(
            report
                .recommendations
                .iter()
                .map(|r| format!("RECOMMEND {}", r.line())),
        );
        lines.push(String::new());
    }
    let shown = report.clients.len().min(top);
    if report.clients.is_empty() {
        lines.push("no client connections seen".to_owned());
    } else if shown > 0 {
        lines.extend(table(&report.clients[..shown]));
    }
    let hidden = report.clients.len() - shown;
    if hidden > 0 {
        lines.push(format!("… and {hidden} more"));
    }
    let mut out = String::new();
    for line in &lines {
        match width {
            Some(w) => out.push_str(&cut(line, w)),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn header_line(report: &Report) -> String {
    let ports: Vec<String> = report.ports.iter().map(u16::to_string).collect();
    let label = match (report.role, report.ports.len()) {
        (Role::Server, 1) => "port",
        (Role::Server, _) => "ports",
        (Role::Client, 1) => "client mode, remote port",
        (Role::Client, _) => "client mode, remote ports",
    };
    let place = match &report.instance {
        Some(i) if !i.host_netns => format!("  {}", i.label()),
        _ => String::new(),
    };
    format!(
        "connwatch  {}  {label} {}{place}  up {}  clients {}",
        format_ts(report.ts),
        ports.join(","),
        human_duration(report.uptime),
        report.totals.clients,
    )
}

/// What Redis and the host say: status, capacity against the real limit, and why
/// the real limit is lower than maxclients when it is.
fn server_line(report: &Report) -> String {
    if report.role == Role::Client {
        // No Redis is asked in client mode: the line says what this host holds.
        return format!(
            "this host's connections to Redis  open {}",
            report.capacity.used
        );
    }
    let r = &report.redis;
    let mut line = match (&r.error, r.version.as_deref()) {
        (Some(err), _) => format!("redis {} ({err})", status_name(r)),
        (None, Some(v)) => format!("redis {} {v}", status_name(r)),
        (None, None) => format!("redis {}", status_name(r)),
    };
    let c = &report.capacity;
    match (c.limit, c.ratio) {
        (Some(limit), Some(ratio)) => {
            let _ = write!(line, "  used {}/{limit} ({:.0}%)", c.used, ratio * 100.0);
        }
        _ => {
            let _ = write!(line, "  used {}", c.used);
        }
    }
    if let Some(blocked) = c.blocked_clients.filter(|&b| b > 0) {
        let _ = write!(line, "  blocked {blocked}");
    }
    // What clients' buffers hold, and the drops INFO counted, when there are any.
    if let Some(held) = r.mem_clients_normal.filter(|&b| b > 0) {
        let _ = write!(line, "  client buffers {}", human_bytes(held));
    }
    if let Some(n) = r
        .client_output_buffer_limit_disconnections_delta
        .filter(|&n| n > 0)
    {
        let _ = write!(line, "  output-buffer drops {n}");
    }
    let l = &report.limits;
    if let (Some(max), Some(eff)) = (l.maxclients, l.effective_maxclients)
        && eff < max
    {
        let nofile = l
            .nofile_soft
            .map(|n| format!(" (ulimit -n {n})"))
            .unwrap_or_default();
        let _ = write!(line, "  maxclients {max} but effective {eff}{nofile}");
    } else if let Some(max) = l.maxclients {
        let _ = write!(line, "  maxclients {max}");
    }
    line
}

/// Slots held over the Unix socket, when there are any: the table below cannot show
/// them (it is the kernel's TCP view).
fn unix_line(report: &Report) -> Option<String> {
    let n = report.capacity.unix_clients.filter(|&n| n > 0)?;
    let clients = if n == 1 {
        "client holds"
    } else {
        "clients hold"
    };
    Some(format!(
        "unix socket: {n} {clients} slots over the Unix socket (not in the table: the kernel's TCP view does not see them)"
    ))
}

/// What the OTLP exporter did (`watch --otlp`), and since when it fails if it does.
fn otlp_line(o: &crate::model::OtlpStatus) -> String {
    let mut line = format!(
        "otlp: sent {}, dropped {}, retries {}, queued {}",
        o.sent, o.dropped, o.retries, o.queued
    );
    if let Some(since) = o.failing_since {
        let _ = write!(line, ", failing since {}", format_ts(since));
        if let Some(e) = &o.error {
            let _ = write!(line, " ({e})");
        }
    }
    line
}

/// Stale connections named under a leak in the terminal (the JSON has up to 20).
const STALE_SHOWN: usize = 5;

/// Each verdict: severity, kind and its sentence, then the first thing to do.
fn verdict_lines(report: &Report) -> Vec<String> {
    let mut lines = Vec::new();
    for v in &report.verdicts {
        let severity = match v.severity {
            Severity::Critical => "CRITICAL",
            Severity::Warning => "WARNING ",
        };
        let kind = serde_json::to_value(v.kind)
            .ok()
            .and_then(|k| k.as_str().map(str::to_owned))
            .unwrap_or_default();
        lines.push(format!("{severity} {kind}: {}", v.summary));
        let first = v.action.lines().next().unwrap_or_default();
        lines.push(format!("         → {first}"));
        for s in v.stale_connections.iter().take(STALE_SHOWN) {
            let pid = s.pid.map_or_else(String::new, |p| format!(", pid {p}"));
            lines.push(format!(
                "           {}   # idle {}{pid}",
                s.command,
                human_duration(Duration::from_millis((s.idle_s * 1e3) as u64))
            ));
        }
        let more = v.stale_connections.len().saturating_sub(STALE_SHOWN);
        if more > 0 {
            lines.push(format!("           … {more} more in the JSON report"));
        }
        lines.extend(
            stack_lines(&v.evidence)
                .into_iter()
                .map(|l| format!("           {l}")),
        );
    }
    lines
}

/// Frames shown per stack in the terminal (the JSON has up to 16).
const FRAMES_SHOWN: usize = 6;

/// A leak's stacks at connect() (`watch --stacks`), a few short lines: each stack
/// with its count and innermost frames, or why there is none, then the command
/// line. None without `--stacks` (no `stacks` in the evidence).
fn stack_lines(evidence: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    use serde_json::Value;
    let mut lines = Vec::new();
    if !evidence.contains_key("stacks") {
        return lines;
    }
    for s in evidence["stacks"].as_array().into_iter().flatten() {
        let count = s.get("count").and_then(Value::as_u64).unwrap_or(0);
        lines.push(format!("opened at ({count} connections):"));
        let frames = s
            .get("frames")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for f in frames.filter_map(Value::as_str).take(FRAMES_SHOWN) {
            lines.push(format!("  {f}"));
        }
    }
    if let Some(note) = evidence.get("stacks_note").and_then(Value::as_str) {
        lines.push(format!("stacks: {note}"));
    }
    if let Some(cmd) = evidence.get("cmdline").and_then(Value::as_str) {
        lines.push(format!("command line: {cmd}"));
    }
    lines
}

fn verdict_name(v: ClientVerdict) -> &'static str {
    match v {
        ClientVerdict::Healthy => "healthy",
        ClientVerdict::Leak => "LEAK",
        ClientVerdict::RetryStorm => "STORM",
        ClientVerdict::BackingOff => "backing-off",
        ClientVerdict::NoBackoff => "NO-BACKOFF",
        ClientVerdict::SlowConsumer => "SLOW-READER",
        ClientVerdict::PoolHeavy => "pool-heavy",
    }
}

fn status_name(r: &crate::model::RedisReport) -> String {
    serde_json::to_value(r.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{:?}", r.status))
}

fn totals_line(report: &Report) -> String {
    let t = &report.totals;
    let mut line = format!(
        "open {}  opened/closed {}/{}  resets {}  lost events {}",
        t.open, t.opened, t.closed, t.reset, t.lost_events
    );
    if t.rejected > 0 {
        let _ = write!(line, "  rejected {}", t.rejected);
    }
    let s = &t.server_closes;
    if s.idle_timeout + s.output_buffer + s.other > 0 {
        let _ = write!(line, "  server closes {}", s.describe());
    }
    match t.refused {
        Some(n) if n > 0 => {
            let _ = write!(line, "  refused {n}");
        }
        Some(_) => {}
        None => line.push_str("  refused ?"),
    }
    if let Some(q) = t.accept_queue.filter(|q| q.depth > 0) {
        let _ = write!(line, "  accept queue {}/{}", q.depth, q.backlog);
    }
    if t.listen_overflows.is_some_and(|n| n > 0) {
        let _ = write!(
            line,
            "  listen overflows {}",
            t.listen_overflows.unwrap_or(0)
        );
    }
    // Rare, and each means the figures above are incomplete: shown only when they happen.
    if t.vanished > 0 {
        let _ = write!(line, "  closes lost {}", t.vanished);
    }
    if t.closes_without_bytes > 0 {
        let _ = write!(line, "  closes without bytes {}", t.closes_without_bytes);
    }
    if let Some(errors) = t.accept_errors.as_ref().filter(|e| !e.is_empty()) {
        let per_s = t.accept_errors_per_s.unwrap_or(0.0);
        let _ = write!(line, "  accept errors {per_s}/s");
        for (name, n) in errors.iter() {
            let _ = write!(line, " {name} {n}");
        }
    }
    line
}

/// The header and one row per client, columns padded to their widest cell.
fn table(clients: &[ClientReport]) -> Vec<String> {
    let rows: Vec<[String; COLUMNS]> = std::iter::once(HEADERS.map(str::to_owned))
        .chain(clients.iter().map(row))
        .collect();
    let mut widths = [0usize; COLUMNS];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut lines = vec![format_row(&rows[0], &widths)];
    for (r, c) in rows[1..].iter().zip(clients) {
        lines.push(format_row(r, &widths));
        // Client mode: connects that failed without a refusal (or of unknown cause).
        match c.failed_connects {
            Some(Some(f)) if !f.unrefused().is_empty() => {
                lines.push(format!("  failed connects not refused: {}", f.unrefused()));
            }
            Some(None) => lines.push("  failed connects: cause unknown".to_owned()),
            _ => {}
        }
        lines.extend(process_lines(c));
    }
    lines
}

/// Under a row, the local processes behind its connections, worst first.
fn process_lines(c: &ClientReport) -> Vec<String> {
    let figures = |open: u64, opened: u64, failed: u64, by: &crate::model::FailedBy| {
        format!(
            "{open} open, {opened} opened, {failed} failed{}",
            by.describe()
        )
    };
    let mut lines: Vec<String> = c
        .processes
        .iter()
        .map(|p| {
            let pod = match (&p.container, &p.pod) {
                (Some(_), Some(pod)) => format!(" (pod {pod})"),
                _ => String::new(),
            };
            format!(
                "  └ {}{pod}: {}",
                p.label(),
                figures(p.open, p.opened, p.failed, &p.failed_by)
            )
        })
        .collect();
    if let Some(o) = c.processes_other.as_deref() {
        lines.push(format!(
            "  └ other processes: {}",
            figures(o.open, o.opened, o.failed, &o.failed_by)
        ));
    }
    lines
}

fn format_row(cells: &[String; COLUMNS], widths: &[usize; COLUMNS]) -> String {
    let mut line = String::new();
    for (i, (cell, &w)) in cells.iter().zip(widths).enumerate() {
        if i > 0 {
            line.push_str(GAP);
        }
        let pad = w - cell.chars().count();
        // The address and verdict read left to right; figures line up on the right.
        if i <= 1 {
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', pad));
        } else {
            line.extend(std::iter::repeat_n(' ', pad));
            line.push_str(cell);
        }
    }
    line.truncate(line.trim_end().len());
    line
}

fn row(c: &ClientReport) -> [String; COLUMNS] {
    [
        c.addr.to_string(),
        verdict_name(c.verdict).to_owned(),
        c.open.to_string(),
        c.opened.to_string(),
        format!(
            "{} ({}/{}/{})",
            c.closed, c.closed_by_server, c.closed_by_client, c.reset
        ),
        pair(
            c.rejected.to_string(),
            c.refused.map_or_else(|| "?".to_owned(), |n| n.to_string()),
        ),
        c.lifetime.map_or_else(
            || NONE.to_owned(),
            |l| pair(human_duration(l.p50), human_duration(l.p99)),
        ),
        c.idle.map_or_else(
            || NONE.to_owned(),
            |i| pair(human_duration(i.p50), human_duration(i.max)),
        ),
        c.age.map_or_else(
            || NONE.to_owned(),
            |a| {
                let bound = if a.lower_bound { "≥" } else { "" };
                format!("{bound}{}", human_duration(a.max))
            },
        ),
        pair(human_bytes(c.bytes_in), human_bytes(c.bytes_out)),
    ]
}

fn pair(a: String, b: String) -> String {
    format!("{a}/{b}")
}

/// Cuts a line to `width` characters, marking the cut with "…".
fn cut(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_owned();
    }
    let mut out: String = line.chars().take(width.saturating_sub(1)).collect();
    if width > 0 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use crate::testing::{client, report_with};

    fn report(clients: Vec<ClientReport>) -> Report {
        report_with(clients)
    }

    fn busy() -> ClientReport {
        let mut c = client("10.1.2.3", 3, 0, 10);
        c.closed = 7;
        c.closed_by_server = 1;
        c.closed_by_client = 5;
        c.reset = 1;
        c.lifetime = Some(Lifetime {
            p50: Duration::from_micros(850),
            p90: Duration::from_millis(900),
            p99: Duration::from_millis(1_500),
            max: Duration::from_secs(2),
        });
        c.idle = Some(Idle {
            p50: Duration::from_millis(3_200),
            max: Duration::from_secs(310),
        });
        c.age = Some(Age {
            max: Duration::from_secs(310),
            lower_bound: true,
        });
        c.bytes_in = 1_229;
        c.bytes_out = 56_832;
        c
    }

    #[test]
    fn renders_header_totals_and_rows() {
        let quiet = client("2001:db8::1", 0, 0, 2);
        let text = render_text(&report(vec![busy(), quiet]), 20, None);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "connwatch  2026-11-29T21:00:00.123Z  port 6379  up 5m10s  clients 2"
        );
        assert_eq!(lines[1], "redis disabled  used 3");
        assert_eq!(
            lines[2],
            "open 3  opened/closed 10/7  resets 1  lost events 0"
        );
        assert_eq!(lines[3], "");
        assert_eq!(
            lines[4],
            "ADDR         VERDICT  OPEN  OPENED  CLOSED(srv/cli/rst)  REJ/REF  LIFE p50/p99  IDLE p50/max  AGE max    BYTES in/out"
        );
        assert_eq!(
            lines[5],
            "10.1.2.3     healthy     3      10            7 (1/5/1)      0/0    850µs/1.5s    3.2s/5m10s   ≥5m10s  1.2KiB/55.5KiB"
        );
        assert_eq!(
            lines[6],
            "2001:db8::1  healthy     0       2            0 (0/0/0)      0/0             -             -        -           0B/0B"
        );
        assert_eq!(lines.len(), 7);
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn client_mode_says_so_and_asks_no_redis() {
        let mut r = report(vec![busy()]);
        r.role = Role::Client;
        let text = render_text(&r, 20, None);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "connwatch  2026-11-29T21:00:00.123Z  client mode, remote port 6379  up 5m10s  clients 1"
        );
        assert_eq!(lines[1], "this host's connections to Redis  open 3");
    }

    #[test]
    fn the_server_line_shows_client_buffers_and_info_drops_when_there_are_some() {
        let mut r = report(vec![busy()]);
        r.redis.mem_clients_normal = Some(0);
        let text = render_text(&r, 20, None);
        assert_eq!(text.lines().nth(1), Some("redis disabled  used 3"));
        r.redis.mem_clients_normal = Some(3 << 20);
        r.redis.client_output_buffer_limit_disconnections = Some(5);
        r.redis.client_output_buffer_limit_disconnections_delta = Some(3);
        let text = render_text(&r, 20, None);
        assert_eq!(
            text.lines().nth(1),
            Some("redis disabled  used 3  client buffers 3.0MiB  output-buffer drops 3")
        );
    }

    #[test]
    fn shows_accept_errors_and_map_failures_only_when_present() {
        let mut r = report(vec![busy()]);
        r.totals.lost_events = 12;
        r.totals.vanished = 3;
        r.totals.closes_without_bytes = 2;
        r.totals.accept_errors = Some(AcceptErrors::from_kernel(&[
            (libc::EMFILE, 812),
            (libc::ENFILE, 4),
        ]));
        r.totals.accept_errors_per_s = Some(20_000.0);
        r.totals.rejected = 5;
        r.totals.server_closes = ServerCloses {
            rejection: 5,
            idle_timeout: 2,
            output_buffer: 1,
            other: 0,
        };
        r.totals.accept_queue = Some(AcceptQueue {
            depth: 128,
            backlog: 511,
        });
        let text = render_text(&r, 20, None);
        assert_eq!(
            text.lines().nth(2),
            Some(
                "open 3  opened/closed 10/7  resets 1  lost events 12  rejected 5  server closes 5 rejection, 2 idle timeout, 1 output buffer  accept queue 128/511  closes lost 3  closes without bytes 2  accept errors 20000/s EMFILE 812 ENFILE 4"
            )
        );
    }

    #[test]
    fn slots_held_over_the_unix_socket_get_a_line_when_there_are_some() {
        let mut r = report(vec![busy()]);
        for unknown_or_none in [None, Some(0)] {
            r.capacity.unix_clients = unknown_or_none;
            let text = render_text(&r, 20, None);
            assert!(!text.contains("unix socket"), "{text}");
        }
        r.capacity.unix_clients = Some(3);
        let text = render_text(&r, 20, None);
        assert_eq!(
            text.lines().nth(2),
            Some(
                "unix socket: 3 clients hold slots over the Unix socket (not in the table: \
                 the kernel's TCP view does not see them)"
            )
        );
        r.capacity.unix_clients = Some(1);
        assert!(render_text(&r, 20, None).contains("unix socket: 1 client holds slots"));
    }

    #[test]
    fn sources_the_kernel_lacks_get_a_line_the_others_none() {
        let mut r = report(vec![busy()]);
        r.probe = Some(ProbeReport {
            kernel: Some("6.18.0".into()),
            features: Features::ALL,
        });
        assert!(!render_text(&r, 20, None).contains("not seen"));
        r.set_probe(Some(ProbeReport {
            kernel: Some("6.1.0-28-cloud-amd64".into()),
            features: Features {
                refusals: false,
                accept_errors: false,
                synack_retransmits: false,
                ..Features::ALL
            },
        }));
        let text = render_text(&r, 20, None);
        assert_eq!(
            text.lines().nth(2),
            Some(
                "not seen on kernel 6.1.0-28-cloud-amd64: accept_errors, refusals, synack_retransmits (reported as unknown)"
            )
        );
        // Unknown, not 0: in the totals and in every row, and null in JSON.
        assert!(
            text.lines().nth(3).unwrap().ends_with("refused ?"),
            "{text}"
        );
        assert!(r.clients.iter().all(|c| c.refused.is_none()));
        let json: serde_json::Value =
            serde_json::from_str(&crate::report::json::render_json(&r).unwrap()).unwrap();
        for unknown in [
            "refused",
            "accept_errors",
            "accept_errors_per_s",
            "synack_retransmits",
        ] {
            assert!(json["totals"][unknown].is_null(), "{unknown}");
        }
        assert!(json["clients"][0]["refused"].is_null());
    }

    #[test]
    fn local_processes_are_listed_under_their_address() {
        let mut c = busy();
        c.processes = vec![
            ProcessReport {
                pid: 4242,
                comm: "gunicorn".into(),
                container: Some("3f2a".repeat(16).into()),
                pod: Some("0b6f1c2e-3d4a-4b5c-8d9e-0f1a2b3c4d5e".into()),
                open: 3,
                opened: 9,
                failed: 1,
                failed_by: FailedBy {
                    abandoned: 1,
                    ..FailedBy::default()
                },
            },
            crate::testing::process(7, "cron", 0, 1),
        ]
        .into();
        c.processes_other = Some(Box::new(OtherProcesses {
            open: 0,
            opened: 2,
            failed: 0,
            failed_by: FailedBy::default(),
        }));
        let mut r = report(vec![c, client("10.9.9.9", 1, 0, 1)]);
        let mut v = crate::testing::verdict(VerdictKind::Leak, Severity::Warning, Some("10.1.2.3"));
        let addr = "10.1.2.3:40000".parse().unwrap();
        v.stale_connections = vec![StaleConn {
            pid: Some(4242),
            ..StaleConn::new(addr, Duration::from_secs(252))
        }];
        r.verdicts.push(v.clone());
        let text = render_text(&r, 20, None);
        assert!(
            text.contains(
                "\n           CLIENT KILL ADDR 10.1.2.3:40000   # idle 4m12s, pid 4242\n"
            ),
            "{text}"
        );
        assert!(
            !text.contains("opened at") && !text.contains("command line"),
            "{text}"
        );
        // With --stacks: the stack under the leak, then the command line.
        let frames: Vec<String> = (0..8).map(|i| format!("app!f{i}+0x1")).collect();
        v.evidence.insert(
            "stacks".into(),
            serde_json::json!([{"count": 3, "frames": frames}]),
        );
        v.evidence
            .insert("stacks_note".into(), serde_json::Value::Null);
        v.evidence
            .insert("cmdline".into(), "./app --port 6379".into());
        r.verdicts[0] = v.clone();
        let text = render_text(&r, 20, None);
        let want = "# idle 4m12s, pid 4242\n           opened at (3 connections):\n             app!f0+0x1\n             app!f1+0x1\n             app!f2+0x1\n             app!f3+0x1\n             app!f4+0x1\n             app!f5+0x1\n           command line: ./app --port 6379\n";
        assert!(text.contains(want), "{text}");
        // Interpreted: why there is no stack, and the command line.
        v.evidence.insert("stacks".into(), serde_json::Value::Null);
        v.evidence
            .insert("stacks_note".into(), "interpreted (python): …".into());
        v.evidence
            .insert("cmdline".into(), "python3 leak.py".into());
        r.verdicts[0] = v;
        let text = render_text(&r, 20, None);
        assert!(
            text.contains("pid 4242\n           stacks: interpreted (python): …\n           command line: python3 leak.py\n"),
            "{text}"
        );
        let lines: Vec<&str> = text.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.starts_with("10.1.2.3"))
            .unwrap();
        assert_eq!(
            lines[at + 1..at + 4],
            [
                "  └ pid 4242 (gunicorn) in container 3f2a3f2a3f2a (pod 0b6f1c2e-3d4a-4b5c-8d9e-0f1a2b3c4d5e): 3 open, 9 opened, 1 failed (abandoned 1)",
                "  └ pid 7 (cron): 0 open, 1 opened, 0 failed",
                "  └ other processes: 0 open, 2 opened, 0 failed",
            ]
        );
        assert!(lines[at + 4].starts_with("10.9.9.9"));
    }

    /// Client mode: under a row, the connects that failed without a refusal, or
    /// that their cause is unknown.
    #[test]
    fn failed_connects_not_refused_are_listed_under_their_address() {
        let mut timed_out = client("10.1.2.3", 0, 0, 0);
        timed_out.failed_connects = Some(Some(ConnectFailures {
            refused: 1,
            timed_out: 3,
            abandoned: 2,
            other: 0,
        }));
        let mut refused = client("10.1.2.4", 0, 0, 0);
        refused.failed_connects = Some(Some(ConnectFailures {
            refused: 4,
            ..ConnectFailures::default()
        }));
        let mut unknown = client("10.1.2.5", 0, 0, 0);
        unknown.failed_connects = Some(None);
        let text = render_text(&report(vec![timed_out, refused, unknown]), 20, None);
        let lines: Vec<&str> = text.lines().collect();
        let after = |addr: &str| {
            let at = lines.iter().position(|l| l.starts_with(addr)).unwrap();
            lines[at + 1]
        };
        assert_eq!(
            after("10.1.2.3"),
            "  failed connects not refused: timed_out 3, abandoned 2"
        );
        assert!(after("10.1.2.4").starts_with("10.1.2.5"), "{text}");
        assert_eq!(after("10.1.2.5"), "  failed connects: cause unknown");
    }

    #[test]
    fn top_limits_rows_and_says_how_many_more() {
        let clients = (1..=5)
            .map(|i| client(&format!("10.0.0.{i}"), 6 - i, 0, 0))
            .collect();
        let text = render_text(&report(clients), 2, None);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4 + 1 + 2 + 1);
        assert!(lines[5].starts_with("10.0.0.1 "), "{}", lines[5]);
        assert!(lines[6].starts_with("10.0.0.2 "), "{}", lines[6]);
        assert_eq!(lines[7], "… and 3 more");
        assert!(!text.contains("10.0.0.3"));
    }

    #[test]
    fn top_zero_shows_only_the_count() {
        let text = render_text(&report(vec![busy()]), 0, None);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[4], "… and 1 more");
    }

    #[test]
    fn empty_report_says_so() {
        let text = render_text(&report(Vec::new()), 20, None);
        assert_eq!(text.lines().nth(4), Some("no client connections seen"));
    }

    #[test]
    fn width_cuts_long_lines() {
        let text = render_text(&report(vec![busy()]), 20, Some(30));
        for line in text.lines() {
            assert!(line.chars().count() <= 30, "{line:?}");
        }
        assert_eq!(text.lines().nth(5), Some("10.1.2.3  healthy     3      …"));
        // Lines that fit are left alone.
        assert_eq!(text.lines().nth(3), Some(""));
    }

    #[test]
    fn human_durations() {
        let cases = [
            (Duration::ZERO, "0µs"),
            (Duration::from_micros(850), "850µs"),
            (Duration::from_micros(999), "999µs"),
            (Duration::from_micros(1_000), "1.0ms"),
            (Duration::from_micros(1_549), "1.5ms"),
            (Duration::from_micros(9_960), "10ms"),
            (Duration::from_millis(12), "12ms"),
            (Duration::from_micros(999_700), "1.0s"),
            (Duration::from_millis(3_200), "3.2s"),
            (Duration::from_millis(42_400), "42s"),
            (Duration::from_millis(59_600), "1m00s"),
            (Duration::from_secs(310), "5m10s"),
            (Duration::from_secs(3_599), "59m59s"),
            (Duration::from_secs(3_600), "1h00m"),
            (Duration::from_secs(7_500), "2h05m"),
            (Duration::from_secs(273_600), "3d04h"),
            (Duration::MAX, "213503982d08h"),
        ];
        for (d, want) in cases {
            assert_eq!(human_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn human_byte_counts() {
        let cases = [
            (0, "0B"),
            (1023, "1023B"),
            (1024, "1.0KiB"),
            (1_229, "1.2KiB"),
            (524_288, "512KiB"),
            (1_048_064, "1.0MiB"),
            (31_981_568, "30.5MiB"),
            (u64::MAX, "16.0EiB"),
        ];
        for (n, want) in cases {
            assert_eq!(human_bytes(n), want, "{n}");
        }
    }

    #[test]
    fn a_redis_that_accepts_nothing_is_named_with_what_to_look_at() {
        let r = crate::testing::stalled_reports().swap_remove(2);
        let text = render_text(&r, 10, None);
        assert!(
            text.contains("CRITICAL not_accepting: 15 connections wait in the accept queue (5 at 2026-11-29T21:00:01.000Z, 2.0s ago)"),
            "{text}"
        );
        assert!(text.contains("accept queue 15/511"), "{text}");
        assert!(
            text.contains("         → Find what holds the event loop: once Redis answers again, LATENCY LATEST"),
            "{text}"
        );
    }

    #[test]
    fn the_otlp_line_shows_counts_and_a_failure() {
        let mut r = crate::testing::full_report();
        assert!(!render_text(&r, 5, None).contains("otlp:"));
        r.otlp = Some(crate::model::OtlpStatus {
            sent: 12,
            dropped: 3,
            retries: 7,
            queued: 2,
            failing_since: Some(r.ts),
            error: Some("Connection refused (os error 111)".into()),
        });
        let text = render_text(&r, 5, None);
        assert!(
            text.lines().any(|l| l
                == "otlp: sent 12, dropped 3, retries 7, queued 2, failing since \
                    2026-11-29T21:00:00.123Z (Connection refused (os error 111))"),
            "{text}"
        );
        r.otlp = Some(crate::model::OtlpStatus {
            sent: 13,
            ..Default::default()
        });
        assert!(
            render_text(&r, 5, None)
                .lines()
                .any(|l| l == "otlp: sent 13, dropped 0, retries 0, queued 0")
        );
    }
}
