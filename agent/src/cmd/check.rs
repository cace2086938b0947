//! `connwatch check`: the runbook's quick checks in one command, from a short live
//! sample — never `CLIENT LIST`. Exit code 0 ok, 1 warning, 2 critical, 3 could not
//! check, so it fits a cron job, a Nagios-style probe or a shell `if`.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use crate::cmd::cli::{CheckArgs, Format};
use crate::cmd::live::{self, Sink};
use crate::model::{Report, Severity, format_ts, human_bytes, human_duration};

/// The exit codes of `check`.
pub mod exit {
    pub const OK: u8 = 0;
    pub const WARNING: u8 = 1;
    pub const CRITICAL: u8 = 2;
    pub const UNKNOWN: u8 = 3;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Warning,
    Critical,
}

impl Status {
    fn of(report: &Report) -> Status {
        match report.verdicts.iter().map(|v| v.severity).max() {
            Some(Severity::Critical) => Status::Critical,
            Some(Severity::Warning) => Status::Warning,
            None => Status::Ok,
        }
    }

    fn exit_code(self) -> u8 {
        match self {
            Status::Ok => exit::OK,
            Status::Warning => exit::WARNING,
            Status::Critical => exit::CRITICAL,
        }
    }
}

#[derive(Serialize)]
struct CheckLine<'a> {
    #[serde(rename = "type")]
    line_type: &'static str,
    status: Status,
    exit_code: u8,
    sample_s: f64,
    report: &'a Report,
}

/// The last interval's reports, one per instance.
#[derive(Default)]
struct LastReports(Vec<Report>);

impl Sink for LastReports {
    fn reports(&mut self, reports: &mut [Report]) -> anyhow::Result<bool> {
        self.0 = reports.to_vec();
        Ok(true)
    }
}

pub fn check(args: CheckArgs) -> ExitCode {
    match run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("connwatch: could not check: {e:#}");
            ExitCode::from(exit::UNKNOWN)
        }
    }
}

fn run(args: &CheckArgs) -> anyhow::Result<u8> {
    live::redis_target(&args.live, &live::watched_ports(&args.live))?;
    if live::Remotes::from_args(&args.live).is_some() {
        // The runbook's checks are the Redis host's (limits, INFO, the accept queue).
        anyhow::bail!(
            "check runs on the Redis host; client mode (--remote-port, --remote) is for `connwatch watch`"
        );
    }
    let mut sink = LastReports::default();
    live::run(&args.live, Some(args.sample), &mut sink)?;
    if sink.0.is_empty() {
        anyhow::bail!("the sample produced no report");
    }
    let format = args.format.unwrap_or(if std::io::stdout().is_terminal() {
        Format::Text
    } else {
        Format::Json
    });
    // One line (or block) per instance; the exit code is the worst of them.
    let mut worst = Status::Ok;
    let mut text = String::new();
    for report in &sink.0 {
        let status = Status::of(report);
        worst = worst.max(status);
        match format {
            Format::Json => {
                let line = CheckLine {
                    line_type: "check",
                    status,
                    exit_code: status.exit_code(),
                    sample_s: args.sample.as_secs_f64(),
                    report,
                };
                text.push_str(&(serde_json::to_string(&line)? + "\n"));
            }
            Format::Text => text.push_str(&render(report, status, args.sample)),
        }
    }
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(worst.exit_code())
}

/// `  in container 3f1c9e2d5b7a` and the like for a Redis outside the agent's own
/// network namespace; nothing for the host's own.
fn instance_suffix(r: &Report) -> String {
    match &r.instance {
        Some(i) if !i.host_netns => format!("  in {}", i.label()),
        _ => String::new(),
    }
}

/// What INFO says of clients' output buffers: the bytes they hold
/// (`mem_clients_normal`) and the clients dropped for them in the sample, where
/// the server counts those (Valkey 8; Redis 7.0 does not).
fn client_buffers(redis: &crate::model::RedisReport) -> String {
    let held = redis
        .mem_clients_normal
        .map_or_else(|| "unknown".to_owned(), human_bytes);
    let dropped = match redis.client_output_buffer_limit_disconnections_delta {
        Some(n) => format!("{n} dropped for their output buffer in the sample"),
        None if redis.mem_clients_normal.is_some() => {
            "output-buffer drops not counted by this server".to_owned()
        }
        None => "output-buffer drops unknown".to_owned(),
    };
    format!("{held} held (mem_clients_normal), {dropped}")
}

/// The checks a person runs by hand in an incident, one line each.
fn render(r: &Report, status: Status, sample: Duration) -> String {
    let mut s = String::new();
    let ports: Vec<String> = r.ports.iter().map(u16::to_string).collect();
    let _ = writeln!(
        s,
        "connwatch check  {}  port {}{}  ({} sample, redis {})",
        format_ts(r.ts),
        ports.join(","),
        instance_suffix(r),
        human_duration(sample),
        serde_json::to_value(r.redis.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    );
    let c = &r.capacity;
    let capacity = match (c.limit, c.ratio) {
        (Some(limit), Some(ratio)) => format!("used {} of {limit} ({:.0}%)", c.used, ratio * 100.0),
        _ => format!("used {} (limit unknown)", c.used),
    };
    let _ = writeln!(s, "  capacity          {capacity}");
    let kernel = match &r.probe {
        Some(p) => p.unseen_line().unwrap_or_else(|| {
            format!(
                "kernel {}: every source seen",
                p.kernel.as_deref().unwrap_or("unknown")
            )
        }),
        None => "unknown".to_owned(),
    };
    let _ = writeln!(s, "  kernel            {kernel}");
    let t = &r.totals;
    let _ = writeln!(
        s,
        "  rejections        {} rejected, {} refused in the sample",
        t.rejected,
        t.refused
            .map_or_else(|| "unknown".to_owned(), |n| n.to_string())
    );
    let (opened, closed): (f64, f64) = r
        .clients
        .iter()
        .filter_map(|c| c.rates)
        .fold((0.0, 0.0), |(o, cl), x| {
            (o + x.opened_per_s, cl + x.closed_per_s)
        });
    let _ = writeln!(
        s,
        "  churn             {opened:.1} opened/s, {closed:.1} closed/s"
    );
    let closes = t.server_closes.describe();
    let _ = writeln!(
        s,
        "  server closes     {}",
        if closes.is_empty() { "none" } else { &closes }
    );
    let l = &r.limits;
    let fd = match (l.maxclients, l.effective_maxclients, l.nofile_soft) {
        (Some(m), Some(e), Some(n)) if e < m => {
            format!("maxclients {m} but only {e} fit under ulimit -n {n}")
        }
        (_, Some(e), Some(n)) => format!("ulimit -n {n}: room for {e} clients"),
        _ => "unknown".to_owned(),
    };
    let _ = writeln!(s, "  fd limit          {fd}");
    match (&t.accept_errors, t.accept_errors_per_s) {
        (Some(e), Some(per_s)) if !e.is_empty() => {
            let _ = writeln!(s, "  accept failures   {per_s}/s");
        }
        (None, _) => {
            let _ = writeln!(s, "  accept failures   unknown on this kernel");
        }
        _ => {}
    }
    if let Some(b) = c.blocked_clients {
        let _ = writeln!(s, "  blocked clients   {b}");
    }
    let unix = match c.unix_clients {
        Some(0) => "none".to_owned(),
        Some(n) => {
            format!("{n} clients hold slots over the Unix socket (not in the kernel's TCP view)")
        }
        None => "unknown".to_owned(),
    };
    let _ = writeln!(s, "  unix socket       {unix}");
    let _ = writeln!(s, "  client buffers    {}", client_buffers(&r.redis));
    let idle = r
        .clients
        .iter()
        .filter(|c| c.open > 0)
        .max_by_key(|c| c.idle.map(|i| i.max))
        .map(|c| {
            format!(
                "{} holds {} open, idle up to {}",
                c.addr,
                c.open,
                c.idle
                    .map_or_else(|| "?".to_owned(), |i| human_duration(i.max))
            )
        })
        .unwrap_or_else(|| "no open connection".to_owned());
    let _ = writeln!(s, "  idle connections  {idle}");
    let _ = writeln!(
        s,
        "  listen overflows  {}",
        t.listen_overflows
            .map_or_else(|| "unknown".to_owned(), |n| n.to_string())
    );
    // Connections the kernel completed and Redis has not accepted (yet): a stall
    // or fd exhaustion when they stay.
    let _ = writeln!(
        s,
        "  accept queue      {}",
        t.accept_queue.map_or_else(
            || "unknown".to_owned(),
            |q| format!("{} waiting (backlog {})", q.depth, q.backlog)
        )
    );
    for v in &r.verdicts {
        let sev = match v.severity {
            Severity::Critical => "CRITICAL",
            Severity::Warning => "WARNING ",
        };
        let _ = writeln!(s, "{sev} {}", v.summary);
        let _ = writeln!(
            s,
            "         → {}",
            v.action.lines().next().unwrap_or_default()
        );
    }
    for r in &r.recommendations {
        let _ = writeln!(s, "RECOMMEND {}", r.line());
    }
    let word = match status {
        Status::Ok => "OK",
        Status::Warning => "WARNING",
        Status::Critical => "CRITICAL",
    };
    let _ = writeln!(s, "result: {word} (exit {})", status.exit_code());
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn report(severities: &[Severity]) -> Report {
        let mut r = crate::core::tracker::Tracker::new(vec![6379]).report(
            1,
            &crate::model::Clock {
                mono: 0,
                wall: std::time::UNIX_EPOCH,
            },
        );
        r.verdicts = severities
            .iter()
            .map(|&severity| Verdict {
                kind: VerdictKind::CapacityWarning,
                severity,
                addr: None,
                summary: "s".into(),
                evidence: serde_json::Map::new(),
                action: "a".into(),
                stale_connections: Vec::new(),
            })
            .collect();
        r
    }

    #[test]
    fn the_worst_verdict_sets_the_exit_code() {
        assert_eq!(Status::of(&report(&[])).exit_code(), 0);
        assert_eq!(Status::of(&report(&[Severity::Warning])).exit_code(), 1);
        assert_eq!(
            Status::of(&report(&[Severity::Warning, Severity::Critical])).exit_code(),
            2
        );
    }

    #[test]
    fn text_names_the_slots_held_over_the_unix_socket() {
        let mut r = report(&[]);
        r.capacity.unix_clients = Some(5);
        let text = render(&r, Status::Ok, Duration::from_secs(3));
        assert!(
            text.contains(
                "  unix socket       5 clients hold slots over the Unix socket (not in the \
                 kernel's TCP view)\n"
            ),
            "{text}"
        );
        r.capacity.unix_clients = Some(0);
        let text = render(&r, Status::Ok, Duration::from_secs(3));
        assert!(text.contains("  unix socket       none\n"), "{text}");
    }

    #[test]
    fn text_shows_what_info_says_of_client_buffers() {
        let mut r = report(&[]);
        let text = render(&r, Status::Ok, Duration::from_secs(3));
        assert!(
            text.contains("  client buffers    unknown held (mem_clients_normal), output-buffer drops unknown\n"),
            "{text}"
        );
        // Redis 7.0: the bytes, and no count of drops.
        r.redis.mem_clients_normal = Some(22_272);
        let text = render(&r, Status::Ok, Duration::from_secs(3));
        assert!(
            text.contains("  client buffers    21.8KiB held (mem_clients_normal), output-buffer drops not counted by this server\n"),
            "{text}"
        );
        // Valkey 8 counts them.
        r.redis.client_output_buffer_limit_disconnections = Some(4);
        r.redis.client_output_buffer_limit_disconnections_delta = Some(3);
        let text = render(&r, Status::Ok, Duration::from_secs(3));
        assert!(
            text.contains("  client buffers    21.8KiB held (mem_clients_normal), 3 dropped for their output buffer in the sample\n"),
            "{text}"
        );
    }

    #[test]
    fn text_lists_the_checks_and_the_result() {
        let text = render(
            &report(&[Severity::Critical]),
            Status::Critical,
            Duration::from_secs(3),
        );
        for needle in [
            "capacity",
            "rejections",
            "churn",
            "fd limit",
            "idle connections",
            "listen overflows",
            "accept queue      unknown",
            "unix socket       unknown",
            "CRITICAL s",
            "result: CRITICAL (exit 2)",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }

    #[test]
    fn text_names_a_redis_that_accepts_nothing() {
        let r = crate::testing::stalled_reports().swap_remove(2);
        let status = Status::of(&r);
        let text = render(&r, status, Duration::from_secs(3));
        for needle in [
            "  accept queue      15 waiting (backlog 511)\n",
            "CRITICAL 15 connections wait in the accept queue (5 at 2026-11-29T21:00:01.000Z, 2.0s ago) and Redis accepts none while INFO gets no answer (reading a reply: timed out)",
            "         → Find what holds the event loop: once Redis answers again, LATENCY LATEST",
            "result: CRITICAL (exit 2)",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }
}
