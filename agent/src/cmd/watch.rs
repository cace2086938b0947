//! `connwatch watch`: the live pipeline's reports on a terminal, as NDJSON, or to a file.

use std::process::ExitCode;

use crate::cmd::cli::WatchArgs;
use crate::cmd::live::{self, Sink};
use crate::cmd::metrics_http::{MetricsListener, MetricsServer};
use crate::cmd::otlp::{Endpoint, Exporter};
use crate::cmd::output::{Output, OutputError};
use crate::model::Report;
use crate::model::{Clock, Instance, ProbeReport};

struct WatchSink {
    output: Output,
    top: usize,
    /// Bound before the probes load (a busy address fails early), served once the
    /// event loop runs.
    metrics_listener: Option<MetricsListener>,
    metrics: Option<MetricsServer>,
    /// `--otlp`: started with the probes, fed every interval.
    otlp_endpoint: Option<(Endpoint, u64)>,
    otlp: Option<Exporter>,
}

impl Sink for WatchSink {
    fn start(
        &mut self,
        _ports: &[u16],
        _clock: &Clock,
        _home: &Instance,
        _probe: &ProbeReport,
    ) -> anyhow::Result<()> {
        if let Some(listener) = self.metrics_listener.take() {
            let (server, _task) = listener.serve()?;
            log::info!("serving metrics at http://{}/metrics", server.local_addr());
            self.metrics = Some(server);
        }
        if let Some((endpoint, queue)) = self.otlp_endpoint.take() {
            log::info!("exporting OTLP to {}", endpoint.url);
            self.otlp = Some(Exporter::start(endpoint, queue, self.top)?);
        }
        Ok(())
    }

    fn reports(&mut self, reports: &mut [Report]) -> anyhow::Result<bool> {
        if let Some(otlp) = &mut self.otlp {
            // What was sent before this interval; every output shows the same.
            let status = otlp.status();
            for r in reports.iter_mut() {
                r.otlp = Some(status.clone());
            }
            otlp.export(reports);
        }
        if let Some(m) = &self.metrics {
            m.publish_reports(reports, self.top);
        }
        match self.output.write_all(reports) {
            Ok(()) => Ok(true),
            // The reader went away (a closed pipe): stop quietly.
            Err(OutputError::Closed) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn hangup(&mut self) -> anyhow::Result<()> {
        self.output.reopen()
    }
}

pub fn watch(args: WatchArgs) -> anyhow::Result<ExitCode> {
    // Usage errors first, before anything is loaded.
    live::redis_target(&args.live, &live::watched_ports(&args.live))?;
    let output =
        Output::open(args.format, args.output.as_deref(), args.top)?.with_rows(args.rows.filter());
    let otlp_endpoint = args
        .otlp
        .as_deref()
        .map(Endpoint::parse)
        .transpose()
        .map_err(live::UsageError)?
        .map(|e| (e, args.otlp_queue));
    let metrics_listener = args.metrics.map(MetricsListener::bind).transpose()?;
    let mut sink = WatchSink {
        output,
        top: args.top,
        metrics_listener,
        metrics: None,
        otlp_endpoint,
        otlp: None,
    };
    live::run(&args.live, args.duration, &mut sink)?;
    Ok(ExitCode::SUCCESS)
}
