//! Where reports go: standard output or a file, as a refreshing table or NDJSON.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal as _, Write};
use std::path::Path;

use anyhow::Context as _;

use crate::cli::Format;
use crate::report::{self, Report};

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
    format: Format,
    /// Redraw in place (a terminal) rather than append.
    redraw: bool,
    top: usize,
}

impl Output {
    /// Text by default on a terminal, NDJSON otherwise; `path` appends to a file.
    pub fn open(format: Option<Format>, path: Option<&Path>, top: usize) -> anyhow::Result<Output> {
        let (sink, tty): (Box<dyn Write>, bool) = match path {
            Some(path) => {
                let file: File = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("cannot open output file {}", path.display()))?;
                (Box::new(io::BufWriter::new(file)), false)
            }
            None => {
                let stdout = io::stdout();
                let tty = stdout.is_terminal();
                (Box::new(io::BufWriter::new(stdout)), tty)
            }
        };
        let format = format.unwrap_or(if tty { Format::Text } else { Format::Json });
        Ok(Output {
            sink,
            format,
            redraw: tty && format == Format::Text,
            top,
        })
    }

    pub fn write(&mut self, report: &Report) -> Result<(), OutputError> {
        match self.format {
            Format::Json => {
                report::json::write_line(&mut self.sink, report)?;
            }
            Format::Text => {
                let width = if self.redraw { terminal_width() } else { None };
                let text = report::text::render_text(report, self.top, width);
                if self.redraw {
                    // Home the cursor and clear the screen, then draw.
                    self.sink.write_all(b"\x1b[H\x1b[2J")?;
                }
                self.sink.write_all(text.as_bytes())?;
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
