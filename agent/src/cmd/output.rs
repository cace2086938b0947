//! Where reports go: standard output or a file, as a refreshing table or NDJSON.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal as _, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::cmd::cli::Format;
use crate::diagnose::transitions::Transitions;
use crate::model::Report;
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
        })
    }

    /// Reopens the output file (after logrotate moved it away); standard output
    /// stays as it is. What was buffered goes to the old file first.
    pub fn reopen(&mut self) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        self.sink.flush().context("flushing the old output file")?;
        self.sink = open_append(path)?;
        log::info!("reopened {}", path.display());
        Ok(())
    }

    pub fn write(&mut self, report: &Report) -> Result<(), OutputError> {
        self.write_all(std::slice::from_ref(report))
    }

    /// The reports of one interval, one per instance: a JSON line each (after its
    /// verdict transitions), or one text block each, drawn together.
    pub fn write_all(&mut self, reports: &[Report]) -> Result<(), OutputError> {
        match self.format {
            Format::Json => {
                for report in reports {
                    let netns = report.instance.as_ref().map_or(0, |i| i.netns);
                    let transitions = self.transitions.entry(netns).or_default();
                    for line in transitions.update(report) {
                        serde_json::to_writer(&mut self.sink, &line).map_err(io::Error::other)?;
                        self.sink.write_all(b"\n")?;
                    }
                    report::json::write_line(&mut self.sink, report)?;
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
