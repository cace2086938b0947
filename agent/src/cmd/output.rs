//! Where reports go: standard output or a file, as a refreshing table or NDJSON.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal as _, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::cmd::cli::Format;
use crate::diagnose::transitions::Transitions;
use crate::model::Report;
use crate::report::rows::{DEFAULT_FULL_EVERY, RowFilter};
use crate::report::{self};

#[derive(Debug)]
pub enum OutputError {
    /// The reader went away (a closed pipe): stop quietly.
    Closed,
    Io(io::Error),
}

impl std::fmt::Display for OutputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutputError::Closed => f.write_str("output closed"),
            OutputError::Io(e) => write!(f, "writing the report failed: {e}"),
        }
    }
}

impl std::error::Error for OutputError {}

impl From<io::Error> for OutputError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            OutputError::Closed
        } else {
            OutputError::Io(e)
        }
    }
}

pub struct Output {
    sink: Box<dyn Write>,
    /// The file reports are appended to, reopened on SIGHUP (logrotate).
    path: Option<PathBuf>,
    format: Format,
    /// Redraw in place (a terminal) rather than append.
    redraw: bool,
    top: usize,
    /// NDJSON: verdict changes go out as their own lines before each report.
    /// Per instance (network namespace inode).
    transitions: std::collections::BTreeMap<u32, Transitions>,
    /// NDJSON: which client rows each report holds (`--clients`), per instance.
    rows: RowFilter,
}

fn open_append(path: &Path) -> anyhow::Result<Box<dyn Write>> {
    let file: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open output file {}", path.display()))?;
    Ok(Box::new(io::BufWriter::new(file)))
}

impl Output {
    /// Text by default on a terminal, NDJSON otherwise; `path` appends to a file.
    /// NDJSON reports hold the changed client rows, every row every 5 minutes
    /// (see [`Output::with_rows`]).
    pub fn open(format: Option<Format>, path: Option<&Path>, top: usize) -> anyhow::Result<Output> {
        let (sink, tty): (Box<dyn Write>, bool) = match path {
            Some(path) => (open_append(path)?, false),
            None => {
                let stdout = io::stdout();
                let tty = stdout.is_terminal();
                (Box::new(io::BufWriter::new(stdout)), tty)
            }
        };
        let format = format.unwrap_or(if tty { Format::Text } else { Format::Json });
        Ok(Output {
            sink,
            path: path.map(Path::to_path_buf),
            format,
            redraw: tty && format == Format::Text,
            top,
            transitions: std::collections::BTreeMap::new(),
            rows: RowFilter::changed(DEFAULT_FULL_EVERY),
        })
    }

    /// Chooses the client rows of NDJSON reports with `rows` (`--clients`).
    pub fn with_rows(mut self, rows: RowFilter) -> Output {
        self.rows = rows;
        self
    }

    /// Reopens the output file (after logrotate moved it away); standard output
    /// stays as it is. What was buffered goes to the old file first. The new file
    /// starts with every client row, so it can be read alone.
    pub fn reopen(&mut self) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        self.sink.flush().context("flushing the old output file")?;
        self.sink = open_append(path)?;
        self.rows.restart();
        log::info!("reopened {}", path.display());
        Ok(())
    }

    /// One report, as an interval with a single instance: a stream of several
    /// instances goes through [`Output::write_all`] (an instance missing from an
    /// interval has left, and its next report holds every row).
    pub fn write(&mut self, report: &Report) -> Result<(), OutputError> {
        self.write_all(std::slice::from_ref(report))
    }

    /// The reports of one interval, one per instance: a JSON line each (after its
    /// verdict transitions, with the client rows `--clients` chooses), or one text
    /// block each, drawn together.
    pub fn write_all(&mut self, reports: &[Report]) -> Result<(), OutputError> {
        match self.format {
            Format::Json => {
                for report in self.rows.interval(reports) {
                    let netns = report.instance.as_ref().map_or(0, |i| i.netns);
                    let transitions = self.transitions.entry(netns).or_default();
                    for line in transitions.update(&report) {
                        serde_json::to_writer(&mut self.sink, &line).map_err(io::Error::other)?;
                        self.sink.write_all(b"\n")?;
                    }
                    report::json::write_line(&mut self.sink, &report, self.rows.sparse())?;
                }
            }
            Format::Text => {
                let width = if self.redraw { terminal_width() } else { None };
                let blocks: Vec<String> = reports
                    .iter()
                    .map(|r| report::text::render_text(r, self.top, width))
                    .collect();
                if self.redraw {
                    // Home the cursor and clear the screen, then draw.
                    self.sink.write_all(b"\x1b[H\x1b[2J")?;
                }
                self.sink.write_all(blocks.join("\n").as_bytes())?;
                if !self.redraw {
                    self.sink.write_all(b"\n")?;
                }
            }
        }
        self.sink.flush()?;
        Ok(())
    }
}

fn terminal_width() -> Option<usize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into the valid struct we pass; on a
    // non-terminal it fails and leaves it untouched.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0).then_some(size.ws_col as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClientVerdict, Instance, InstanceKey, Severity, VerdictKind};
    use crate::testing::{client, report_with, verdict};
    use serde_json::Value;
    use std::time::Duration;

    /// A report of instance `netns` at `at` s: three quiet holders and a churner.
    fn report(netns: u32, at: u64, churned: u64) -> Report {
        let mut churner = client("10.9.9.9", 0, 0, churned);
        churner.closed = churned;
        churner.closed_by_server = 0;
        churner.closed_by_client = churned;
        let mut r = report_with(vec![
            client("10.0.0.1", 1, 0, 1),
            client("10.0.0.2", 1, 0, 1),
            client("10.0.0.3", 1, 0, 1),
            churner,
        ]);
        r.uptime = Duration::from_secs(at);
        r.instance = Some(Instance::bare(InstanceKey { netns }, netns == 1));
        r
    }

    struct File(std::path::PathBuf);

    impl Drop for File {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn temp_file(tag: &str) -> File {
        File(std::env::temp_dir().join(format!(
            "connwatch-output-{tag}-{}.ndjson",
            std::process::id()
        )))
    }

    /// Every line of the file: (type, netns, clients_mode, rows) of reports, and
    /// the verdict lines' event.
    fn lines(path: &Path) -> Vec<(String, u64, String, usize)> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["type"].as_str().unwrap().to_owned(),
                    v["instance"]["netns"].as_u64().unwrap_or(0),
                    v["clients_mode"]
                        .as_str()
                        .or(v["event"].as_str())
                        .unwrap()
                        .to_owned(),
                    v["clients"].as_array().map_or(0, Vec::len),
                )
            })
            .collect()
    }

    fn line(kind: &str, netns: u64, mode: &str, rows: usize) -> (String, u64, String, usize) {
        (kind.to_owned(), netns, mode.to_owned(), rows)
    }

    #[test]
    fn json_lines_hold_the_changed_rows_per_instance_and_a_new_file_starts_full() {
        let file = temp_file("changed");
        let mut out = Output::open(Some(Format::Json), Some(&file.0), 20)
            .unwrap()
            .with_rows(RowFilter::changed(Duration::from_secs(60)));
        out.write_all(&[report(1, 1, 1)]).unwrap();
        let mut storm = report(2, 2, 2);
        storm.clients[3].verdict = ClientVerdict::RetryStorm;
        storm.verdicts = vec![verdict(
            VerdictKind::RetryStorm,
            Severity::Critical,
            Some("10.9.9.9"),
        )];
        out.write_all(&[report(1, 2, 2), storm]).unwrap();
        out.write_all(&[report(1, 3, 2), report(2, 3, 2)]).unwrap();
        assert_eq!(
            lines(&file.0),
            [
                line("report", 1, "full", 4),
                line("report", 1, "changed", 1),
                // The container's first report is full; its verdict comes first.
                line("verdict", 2, "raised", 0),
                line("report", 2, "full", 4),
                line("report", 1, "changed", 0),
                line("verdict", 2, "cleared", 0),
                line("report", 2, "changed", 1),
            ]
        );

        // logrotate moved the file away: the new one starts with every row.
        let rotated = temp_file("changed-rotated");
        std::fs::rename(&file.0, &rotated.0).unwrap();
        out.reopen().unwrap();
        out.write_all(&[report(1, 4, 3), report(2, 4, 3)]).unwrap();
        out.write_all(&[report(1, 5, 3), report(2, 5, 3)]).unwrap();
        assert_eq!(
            lines(&file.0),
            [
                line("report", 1, "full", 4),
                line("report", 2, "full", 4),
                line("report", 1, "changed", 0),
                line("report", 2, "changed", 0),
            ]
        );
    }

    #[test]
    fn with_clients_all_every_line_holds_every_row() {
        let file = temp_file("all");
        let mut out = Output::open(Some(Format::Json), Some(&file.0), 20)
            .unwrap()
            .with_rows(RowFilter::all());
        for at in 1..4 {
            out.write_all(&[report(1, at, 1)]).unwrap();
        }
        assert_eq!(lines(&file.0), vec![line("report", 1, "full", 4); 3]);
    }
}
