//! `connwatch analyze`: replays a capture through the same pipeline as `watch`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;

use crate::cmd::cli::{AnalyzeArgs, AnalyzeFormat};
use crate::diagnose::fleet::Fleet;
use crate::model::{Instance, InstanceKey, Report, Severity, VerdictKind};
use crate::report::peaks::{Peaks, figure};
use crate::report::{self};
use crate::source::capture::Reader;

/// A verdict as it appeared over the capture.
struct Seen {
    severity: Severity,
    first: SystemTime,
    last: SystemTime,
    summary: String,
    /// Its worst figures, and the verdict as last seen to compare them with.
    peaks: Peaks,
    latest: crate::model::Verdict,
}

pub fn analyze(args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let mut reader = Reader::open(&args.file, args.redact)?;
    let header = reader.header.clone();
    // Captures from before namespaces were told apart hold netns 0 throughout.
    let home = header
        .home
        .clone()
        .unwrap_or_else(|| Instance::bare(InstanceKey { netns: 0 }, true));
    let probe = header.probe();
    let mut fleet = Fleet::new(
        header.ports.clone(),
        args.thresholds.thresholds(),
        header.clock.clock(),
        home,
    )
    .with_role(header.role);
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(io::stdout())),
    };

    // HTML and the text summary read whole reports; only the NDJSON is trimmed.
    let mut rows = args.rows.filter();
    let mut reports: Vec<Report> = Vec::new();
    // The last report of each instance, home first.
    let mut last: BTreeMap<(bool, u32), Report> = BTreeMap::new();
    let mut seen: BTreeMap<(VerdictKind, Option<IpAddr>), Seen> = BTreeMap::new();
    let mut damage = None;
    loop {
        let ev = match reader.next_event() {
            Ok(Some(ev)) => ev,
            Ok(None) => break,
            Err(e) => {
                damage = Some(e);
                break;
            }
        };
        let mut interval = fleet.apply(&ev);
        for report in &mut interval {
            report.set_probe(probe.clone());
        }
        if args.format == AnalyzeFormat::Json {
            // As `watch` writes them: the client rows --clients chooses.
            for report in rows.interval(&interval) {
                report::json::write_line(&mut out, &report, rows.sparse())?;
            }
        }
        for report in interval {
            for v in &report.verdicts {
                let s = seen.entry((v.kind, v.addr)).or_insert_with(|| Seen {
                    severity: v.severity,
                    first: report.ts,
                    last: report.ts,
                    summary: String::new(),
                    peaks: Peaks::default(),
                    latest: v.clone(),
                });
                s.last = report.ts;
                s.severity = s.severity.max(v.severity);
                s.summary.clone_from(&v.summary);
                s.peaks.observe(v, report.ts);
                s.latest.clone_from(v);
            }
            // One timeline: the home instance's (the others are in --format json).
            if args.format == AnalyzeFormat::Html && netns_of(&report) == fleet.home().netns {
                reports.push(report.clone());
            }
            // Only the text view reads it: a report held here shares its rows with
            // the tracker, whose next report would then copy every row instead
            // of moving them (the replay of a flood cost half again as much).
            if args.format == AnalyzeFormat::Text {
                last.insert(
                    (netns_of(&report) != fleet.home().netns, netns_of(&report)),
                    report,
                );
            }
        }
    }

    match args.format {
        AnalyzeFormat::Json => {}
        AnalyzeFormat::Html => {
            let title = format!("connwatch — {} ({})", header.host, args.file.display());
            out.write_all(report::html::render_html(&reports, &title).as_bytes())?;
        }
        AnalyzeFormat::Text => {
            out.write_all(summary(&header, &seen).as_bytes())?;
            if last.is_empty() {
                writeln!(out, "the capture holds no complete interval")?;
            }
            for r in last.values() {
                out.write_all(report::text::render_text(r, args.top, None).as_bytes())?;
            }
        }
    }
    out.flush()?;

    if let Some(e) = damage {
        // The analysis above covers what came before the damage.
        eprintln!(
            "connwatch: {}: {e}; analysed what came before it",
            args.file.display()
        );
        return Ok(ExitCode::from(crate::cmd::exit::FAILURE));
    }
    Ok(ExitCode::SUCCESS)
}

fn netns_of(report: &Report) -> u32 {
    report.instance.as_ref().map_or(0, |i| i.netns)
}

/// The capture's header and every verdict seen during it, with when.
fn summary(
    header: &crate::source::capture::Header,
    seen: &BTreeMap<(VerdictKind, Option<IpAddr>), Seen>,
) -> String {
    let mut s = String::new();
    let ports = match header.role {
        crate::model::Role::Server => format!("ports {:?}", header.ports),
        crate::model::Role::Client => format!("client mode, remote ports {:?}", header.ports),
    };
    let _ = writeln!(
        s,
        "capture of {} (kernel {}), {ports}, started {}{}",
        header.host,
        header.kernel,
        header.started_at,
        if header.redacted {
            ", client addresses redacted"
        } else {
            ""
        }
    );
    if seen.is_empty() {
        let _ = writeln!(s, "no verdict during the capture\n");
        return s;
    }
    let _ = writeln!(s, "verdicts during the capture:");
    let mut rows: Vec<_> = seen.iter().collect();
    rows.sort_by(|a, b| {
        b.1.severity
            .cmp(&a.1.severity)
            .then(a.1.first.cmp(&b.1.first))
    });
    for ((kind, _), v) in rows {
        let kind = serde_json::to_value(kind)
            .ok()
            .and_then(|k| k.as_str().map(str::to_owned))
            .unwrap_or_default();
        let severity = match v.severity {
            Severity::Critical => "CRITICAL",
            Severity::Warning => "WARNING ",
        };
        let _ = writeln!(
            s,
            "  {severity} {kind}  {} → {}  {}",
            crate::model::format_ts(v.first),
            crate::model::format_ts(v.last),
            v.summary
        );
        // How bad it got, where the last report says less.
        let peaks: Vec<String> = v
            .peaks
            .above(&v.latest)
            .map(|(key, peak, at)| {
                format!("{key} {} at {}", figure(peak), crate::model::format_ts(at))
            })
            .collect();
        if !peaks.is_empty() {
            let _ = writeln!(s, "      peak: {}", peaks.join(", "));
        }
    }
    s.push('\n');
    s
}
