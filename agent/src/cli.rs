//! Command-line definitions (clap). No logic here.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "connwatch",
    version,
    about = "Tells why Redis is out of connections, from kernel facts",
    long_about = "connwatch watches every connection to a Redis port from the kernel \
(eBPF tracepoints): who opens, holds, closes and resets connections, per client address, \
with lifetimes and idle times, without running CLIENT LIST. It needs root \
(or CAP_BPF + CAP_PERFMON + CAP_SYS_ADMIN to mount tracefs)."
)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors in the log.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch connections to one or more ports live and report per client address.
    Watch(WatchArgs),
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Local TCP port to watch (repeat for several). Default: 6379.
    #[arg(short, long = "port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,
    /// Time between reports, e.g. 1s, 500ms, 1m.
    #[arg(short, long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Output format. Default: text on a terminal, json otherwise.
    #[arg(short, long, value_enum)]
    pub format: Option<Format>,
    /// Stop after this long (e.g. 30s) and print a last report. Default: run until SIGINT/SIGTERM.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Write reports to this file instead of standard output (appends).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Show at most this many client addresses in the text view (json has them all).
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// The Redis server to ask for INFO/CONFIG through one persistent connection:
    /// redis://[user@]host:port. Default: redis://127.0.0.1:<first --port>.
    /// The password comes from --password-file or REDISCLI_AUTH, never from the URL.
    #[arg(long, value_name = "URL", conflicts_with = "no_redis")]
    pub redis: Option<String>,
    /// Read the Redis password from this file (first line). Default: $REDISCLI_AUTH.
    #[arg(long, value_name = "FILE", conflicts_with = "no_redis")]
    pub password_file: Option<PathBuf>,
    /// Do not connect to Redis at all: kernel and /proc figures only.
    #[arg(long)]
    pub no_redis: bool,
    /// Capacity of the kernel's per-connection map (LRU); raise it for hosts with
    /// more open connections than this.
    #[arg(long, default_value_t = connwatch_ebpf::DEFAULT_MAX_CONNS, value_parser = clap::value_parser!(u32).range(1024..=4_194_304))]
    pub max_conns: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A refreshing table, worst client first.
    Text,
    /// One NDJSON report object per interval (schema: docs/REPORT.md).
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 1s, 500ms, 2m)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}
