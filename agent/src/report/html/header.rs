//! The page's header: time range, verdict badges, and the facts at the end
//! (ports, Redis, limits, capacity, totals).

use super::format::{Esc, clock, pct, w};
use super::verdicts::count_verdicts;
use crate::model::{Report, format_ts, human_bytes, human_duration};
use std::fmt::Write as _;
use std::time::SystemTime;

pub(super) fn header(out: &mut String, reports: &[Report], title: &str) {
    w!(out, "<header>\n<h1>{}</h1>\n", Esc(title));
    let (Some(first), Some(last)) = (reports.first(), reports.last()) else {
        out.push_str("<p class=\"sub\">No reports.</p>\n</header>\n");
        return;
    };
    let span = last.uptime.saturating_sub(first.uptime);
    w!(
        out,
        "<p class=\"sub\"><time>{}</time> → <time>{}</time> · {} · {} report{}</p>\n",
        Esc(&format_ts(first.ts).to_string()),
        Esc(&format_ts(last.ts).to_string()),
        Esc(&human_duration(span)),
        reports.len(),
        if reports.len() == 1 { "" } else { "s" }
    );
    let (critical, warning) = count_verdicts(reports);
    out.push_str("<p class=\"badges\">");
    if critical + warning == 0 {
        out.push_str("<span class=\"badge ok\">no verdicts</span>");
    } else {
        if critical > 0 {
            w!(
                out,
                "<span class=\"badge critical\">{critical} critical</span>"
            );
        }
        if warning > 0 {
            w!(
                out,
                "<span class=\"badge warning\">{warning} warning</span>"
            );
        }
    }
    if reports.iter().any(|r| r.totals.lost_events > 0) {
        w!(
            out,
            "<span class=\"badge warning\">{} kernel events lost: figures undercount</span>",
            last.totals.lost_events
        );
    }
    out.push_str("</p>\n<div class=\"facts\">\n");

    // Ports.
    let ports: Vec<String> = last.ports.iter().map(u16::to_string).collect();
    let client = last.role == crate::model::Role::Client;
    fact(
        out,
        match (client, ports.len()) {
            (false, 1) => "Port",
            (false, _) => "Ports",
            (true, 1) => "Remote port (client mode)",
            (true, _) => "Remote ports (client mode)",
        },
        &[if ports.is_empty() {
            "–".to_owned()
        } else {
            ports.join(", ")
        }],
    );

    // Which Redis: the host's own, or a container's, a pod's, a namespace's.
    if let Some(i) = &last.instance {
        let mut lines = vec![i.label()];
        lines.push(format!("network namespace {}", i.netns));
        match (i.pid, i.ns_pid) {
            (Some(p), Some(n)) if p != n => lines.push(format!("pid {p} (pid {n} inside)")),
            (Some(p), _) => lines.push(format!("pid {p}")),
            _ => {}
        }
        if let Some(c) = &i.container_id {
            lines.push(format!("container {c}"));
        }
        if let Some(p) = &i.pod_uid {
            lines.push(format!("pod {p}"));
        }
        fact(out, "Instance", &lines);
    }

    // What the kernel programs saw.
    if let Some(p) = &last.probe {
        let mut lines = vec![format!(
            "kernel {}",
            p.kernel.as_deref().unwrap_or("unknown")
        )];
        lines.push(
            p.unseen_line()
                .unwrap_or_else(|| "every source seen".to_owned()),
        );
        fact(out, "Kernel", &lines);
    }

    // Redis: the last word, what it runs, and every other status seen.
    let r = &last.redis;
    let status = r.status.as_str();
    let mut redis = vec![format!("status {status}")];
    let what: Vec<&str> = [
        r.server.as_deref().or(r.version.as_ref().map(|_| "redis")),
        r.version.as_deref(),
        r.role.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let what = if what.is_empty() {
        // An unreachable server at the end: the last version it told.
        reports
            .iter()
            .rev()
            .find_map(|r| r.redis.version.clone())
            .map(|v| format!("version {v}"))
    } else {
        Some(what.join(" "))
    };
    redis.extend(what);
    if let Some(err) = &r.error {
        redis.push(err.clone());
    }
    let mut others: Vec<&str> = Vec::new();
    for rep in reports {
        let s = rep.redis.status.as_str();
        if s != status && !others.contains(&s) {
            others.push(s);
        }
    }
    if !others.is_empty() {
        redis.push(format!("also seen: {}", others.join(", ")));
    }
    if let Some(held) = r.mem_clients_normal {
        redis.push(format!(
            "clients' buffers {} (mem_clients_normal)",
            human_bytes(held)
        ));
    }
    match r.client_output_buffer_limit_disconnections_delta {
        Some(n) => redis.push(format!(
            "{n} dropped for their output buffer since connwatch started"
        )),
        None if r.mem_clients_normal.is_some() => {
            redis.push("output-buffer drops not counted by this server".to_owned())
        }
        None => {}
    }
    if let Some(t) = r.timeout_s {
        redis.push(format!(
            "timeout {}",
            if t == 0 {
                "0 (never)".to_owned()
            } else {
                format!("{t}s")
            }
        ));
    }
    fact(out, "Redis", &redis);

    // Limits.
    let l = &last.limits;
    let mut limits = Vec::new();
    match (l.maxclients, l.effective_maxclients) {
        (Some(m), Some(e)) if e < m => {
            limits.push(format!("maxclients {m}, but effective {e}"));
        }
        (Some(m), _) => limits.push(format!("maxclients {m}")),
        (None, Some(e)) => limits.push(format!("effective limit {e}")),
        (None, None) => limits.push("maxclients unknown".to_owned()),
    }
    if let Some(reason) = &l.effective_reason {
        limits.push(reason.clone());
    }
    match (l.nofile_soft, l.nofile_hard, l.nofile_unlimited) {
        (Some(s), Some(h), _) => limits.push(format!("nofile {s} soft / {h} hard")),
        (Some(s), None, _) => limits.push(format!("nofile {s} soft")),
        (None, _, true) => limits.push("nofile unlimited".to_owned()),
        _ => {}
    }
    if let Some(fds) = l.open_fds {
        limits.push(format!("{fds} open fds"));
    }
    if let Some(s) = l.somaxconn {
        limits.push(format!("somaxconn {s}"));
    }
    if let Some(pid) = l.pid.or(r.pid) {
        limits.push(format!("pid {pid}"));
    }
    fact(out, "Limits", &limits);

    // Capacity: the end and the peak.
    let c = &last.capacity;
    let mut capacity = vec![match (c.limit, c.ratio) {
        (Some(limit), Some(ratio)) => {
            format!("{} of {limit} used ({}) at the end", c.used, pct(ratio))
        }
        _ => format!("{} used at the end (limit unknown)", c.used),
    }];
    let peak = reports
        .iter()
        .filter_map(|r| r.capacity.ratio.map(|x| (x, r.ts)))
        .fold(
            None,
            |best: Option<(f64, SystemTime)>, (x, ts)| match best {
                Some((b, _)) if b >= x => best,
                _ => Some((x, ts)),
            },
        );
    if let Some((ratio, ts)) = peak {
        capacity.push(format!("peak {} at {}", pct(ratio), clock(ts)));
    }
    if let Some(b) = c.blocked_clients.filter(|&b| b > 0) {
        capacity.push(format!("{b} blocked"));
    }
    if let Some(n) = c.unix_clients.filter(|&n| n > 0) {
        capacity.push(format!("{n} held over the Unix socket at the end"));
    }
    fact(out, "Capacity", &capacity);

    // Totals.
    let t = &last.totals;
    let mut totals = vec![
        format!("{} open, {} opened", t.open, t.opened),
        format!(
            "{} closed ({} by server, {} by client, {} reset)",
            t.closed, t.closed_by_server, t.closed_by_client, t.reset
        ),
        format!(
            "server closes: {}",
            Some(t.server_closes.describe())
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| "none".to_owned())
        ),
        format!(
            "{} rejected, {} refused",
            t.rejected,
            t.refused
                .map_or_else(|| "unknown".to_owned(), |n| n.to_string())
        ),
    ];
    match &t.accept_errors {
        Some(errors) if !errors.is_empty() => {
            let by: Vec<String> = errors
                .iter()
                .map(|(name, n)| format!("{name} {n}"))
                .collect();
            totals.push(format!("failed accepts: {}", by.join(", ")));
        }
        Some(_) => {}
        None => totals.push("failed accepts: unknown on this kernel".to_owned()),
    }
    if let Some(o) = t.listen_overflows.filter(|&o| o > 0) {
        totals.push(format!("{o} listen overflows"));
    }
    fact(out, "Totals at the end", &totals);
    out.push_str("</div>\n</header>\n");
}

fn fact(out: &mut String, label: &str, lines: &[String]) {
    w!(out, "<div class=\"fact\"><h2>{}</h2>", Esc(label));
    for line in lines {
        w!(out, "<p>{}</p>", Esc(line));
    }
    out.push_str("</div>\n");
}
