//! `connwatch capture`: the live pipeline, recording every event to a capture file.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;

use crate::cmd::cli::{CaptureArgs, Format};
use crate::cmd::live::{self, Sink};
use crate::cmd::output::Output;
use crate::model::{Clock, Event, Instance, ProbeReport, Role};
use crate::model::{Report, human_bytes};
use crate::source::capture::{Header, Writer};

struct CaptureSink {
    path: PathBuf,
    interval: std::time::Duration,
    redact: bool,
    max_size: u64,
    writer: Option<Writer>,
    progress: bool,
    started: Instant,
    /// The last interval's reports, one per instance.
    last: Vec<Report>,
    hit_max_size: bool,
    /// Client mode: what the header says was watched.
    remotes: Option<live::Remotes>,
}

impl CaptureSink {
    fn writer(&mut self) -> anyhow::Result<&mut Writer> {
        self.writer
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("the capture file is not open"))
    }
}

impl Sink for CaptureSink {
    fn start(
        &mut self,
        ports: &[u16],
        clock: &Clock,
        home: &Instance,
        probe: &ProbeReport,
    ) -> anyhow::Result<()> {
        let mut header = Header::new(ports.to_vec(), clock, self.interval, self.redact);
        header.home = Some(home.clone());
        header.features = Some(probe.features);
        if let Some(remotes) = &self.remotes {
            header.role = Role::Client;
            header.remote_ports = remotes.ports().to_vec();
            header.remotes = remotes.addrs().to_vec();
        }
        self.writer = Some(Writer::create(&self.path, &header)?);
        Ok(())
    }

    fn event(&mut self, ev: &Event) -> anyhow::Result<()> {
        let path = self.path.display().to_string();
        self.writer()?.write(ev).with_context(|| {
            format!("writing {path} failed; it holds every interval up to the last one")
        })
    }

    fn reports(&mut self, reports: &mut [Report]) -> anyhow::Result<bool> {
        let rejected: u64 = reports.iter().map(|r| r.totals.rejected).sum();
        let refused: u64 = reports.iter().filter_map(|r| r.totals.refused).sum();
        let (events, bytes) = {
            let w = self.writer()?;
            (w.events(), w.bytes())
        };
        if self.progress {
            let mut err = std::io::stderr();
            // \r and clear-to-end: one line, rewritten every interval.
            let _ = write!(
                err,
                "\rcapturing {}  {:>5}s  events {events}  rejected {}  refused {}  file {}\x1b[K",
                self.path.display(),
                self.started.elapsed().as_secs(),
                rejected,
                refused,
                human_bytes(bytes)
            );
            let _ = err.flush();
        }
        self.last = reports.to_vec();
        if bytes >= self.max_size {
            self.hit_max_size = true;
            return Ok(false);
        }
        Ok(true)
    }
}

pub fn capture(args: CaptureArgs) -> anyhow::Result<ExitCode> {
    // Usage errors and an unwritable path first, before anything is loaded.
    live::redis_target(&args.live, &live::watched_ports(&args.live))?;
    if args.live.stacks {
        // Stacks are symbolized from the live processes' memory maps: a replay
        // later has neither the kernel's stack map nor the processes.
        return Err(live::UsageError(
            "capture does not record stacks (--stacks): they are read from the live processes; use `connwatch watch --stacks`".into(),
        )
        .into());
    }
    if args.output.exists() {
        anyhow::bail!(
            "{} exists; a capture never overwrites a file, choose another name",
            args.output.display()
        );
    }
    let mut sink = CaptureSink {
        path: args.output.clone(),
        interval: args.live.interval,
        redact: args.redact,
        max_size: args.max_size,
        writer: None,
        progress: std::io::stderr().is_terminal(),
        started: Instant::now(),
        last: Vec::new(),
        hit_max_size: false,
        // The header says client mode, so the replay judges as a client's.
        remotes: live::Remotes::from_args(&args.live),
    };
    let run = live::run(&args.live, args.duration, &mut sink);
    if sink.progress {
        eprintln!();
    }
    // Whatever stopped the run, end the gzip stream so the file reads to its end.
    let events = sink.writer.as_ref().map_or(0, Writer::events);
    let bytes = match sink.writer.take() {
        Some(w) => w
            .finish()
            .with_context(|| format!("finishing {}", args.output.display()))?,
        None => 0,
    };
    run?;
    if sink.hit_max_size {
        eprintln!(
            "connwatch: capture stopped at --max-size {} ({})",
            human_bytes(args.max_size),
            args.output.display()
        );
    }
    eprintln!(
        "connwatch: wrote {}: {events} events, {} in {}s",
        args.output.display(),
        human_bytes(bytes),
        sink.started.elapsed().as_secs()
    );
    // The last report, so the capture's own conclusions can be compared with a replay.
    if !sink.last.is_empty() {
        let format = args.format.or(Some(if std::io::stdout().is_terminal() {
            Format::Text
        } else {
            Format::Json
        }));
        let mut out = Output::open(format, None, 20)?;
        out.write_all(&sink.last)?;
    }
    Ok(ExitCode::SUCCESS)
}
