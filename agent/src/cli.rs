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
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
    /// Capacity of the kernel's per-connection map (LRU); raise it for hosts with
    /// more open connections than this.
    #[arg(long, default_value_t = connwatch_ebpf::DEFAULT_MAX_CONNS, value_parser = clap::value_parser!(u32).range(1024..=4_194_304))]
    pub max_conns: u32,
}

/// Diagnosis thresholds; defaults and meaning in docs/DIAGNOSIS.md.
#[derive(Debug, Args)]
#[command(next_help_heading = "Diagnosis thresholds")]
pub struct ThresholdArgs {
    /// How far back trends (leaks, pools, fan-out) look.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub window: Duration,
    /// Leak: growth of one address's open connections over the window.
    #[arg(long, default_value_t = 10)]
    pub leak_min_growth: u64,
    /// Leak: a connection idle this long is stale.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub leak_idle: Duration,
    /// Leak: at least this many stale connections.
    #[arg(long, default_value_t = 5)]
    pub leak_min_stale: u64,
    /// Retry storm: at least this many failed attempts in the short window.
    #[arg(long, default_value_t = 10)]
    pub storm_min_failures: u64,
    /// Retry storm: median gap between a failure and the next attempt below this.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub storm_max_gap: Duration,
    /// How far back "happening now" looks (storms, rejections, accept failures).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub short_window: Duration,
    /// Instance fan-out: at least this many addresses with one or two short-lived connections.
    #[arg(long, default_value_t = 100)]
    pub fanout_min_addresses: usize,
    /// Pool oversize: at least this many client addresses with similar steady pools…
    #[arg(long, default_value_t = 3)]
    pub pool_min_instances: usize,
    /// …holding together this share of the real limit.
    #[arg(long, default_value_t = 0.7)]
    pub pool_share: f64,
    /// Slots to keep free for replicas, cluster bus and sentinels.
    #[arg(long, default_value_t = 100)]
    pub internal_reserve: u64,
    /// Blocked clients holding this share of the limit.
    #[arg(long, default_value_t = 0.3)]
    pub blocked_share: f64,
    /// Capacity warning above this ratio of the real limit…
    #[arg(long, default_value_t = 0.8)]
    pub capacity_warning: f64,
    /// …and critical from this ratio.
    #[arg(long, default_value_t = 0.9)]
    pub capacity_critical: f64,
}

impl ThresholdArgs {
    pub fn thresholds(&self) -> crate::diagnose::Thresholds {
        crate::diagnose::Thresholds {
            window: self.window,
            leak_min_growth: self.leak_min_growth,
            leak_idle: self.leak_idle,
            leak_min_stale: self.leak_min_stale,
            storm_min_failures: self.storm_min_failures,
            storm_max_gap: self.storm_max_gap,
            short_window: self.short_window,
            fanout_min_addresses: self.fanout_min_addresses,
            pool_min_instances: self.pool_min_instances,
            pool_share: self.pool_share,
            internal_reserve: self.internal_reserve,
            blocked_share: self.blocked_share,
            capacity_warning: self.capacity_warning,
            capacity_critical: self.capacity_critical,
            ..crate::diagnose::Thresholds::default()
        }
    }
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

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::*;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn threshold_flag_defaults_are_the_documented_defaults() {
        let Command::Watch(args) = Cli::parse_from(["connwatch", "watch"]).command;
        assert_eq!(
            args.thresholds.thresholds(),
            crate::diagnose::Thresholds::default()
        );
    }

    #[test]
    fn durations_must_be_positive_and_readable() {
        assert!(Cli::try_parse_from(["connwatch", "watch", "--interval", "0s"]).is_err());
        assert!(Cli::try_parse_from(["connwatch", "watch", "--interval", "soon"]).is_err());
        let Command::Watch(args) = Cli::parse_from([
            "connwatch",
            "watch",
            "--interval",
            "250ms",
            "-p",
            "6379",
            "-p",
            "6380",
        ])
        .command;
        assert_eq!(args.interval, Duration::from_millis(250));
        assert_eq!(args.ports, vec![6379, 6380]);
    }
}
