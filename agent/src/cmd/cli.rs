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
with lifetimes and idle times, without running CLIENT LIST. It needs root, or \
CAP_BPF and CAP_PERFMON (plus CAP_SYS_ADMIN only if tracefs is not mounted; \
PRIVILEGES in connwatch(1) lists what a non-root user needs). \
Start with `connwatch watch --help`."
)]
pub struct Cli {
    /// More log output (-v: info, -vv: debug, -vvv: trace). RUST_LOG overrides.
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
    /// Watch connections to one or more ports live and report per client address,
    /// with verdicts (leak, retry storm, limits …) and the first thing to do.
    Watch(WatchArgs),
    /// Record the raw event stream to a file during an incident, to analyze later
    /// (here or elsewhere) with `connwatch analyze`.
    Capture(CaptureArgs),
    /// Replay a capture file through the same pipeline as `watch`: the same counts,
    /// the same verdicts; as a table, NDJSON, or a self-contained HTML report.
    Analyze(AnalyzeArgs),
    /// The runbook's quick checks from a short live sample, without CLIENT LIST:
    /// exit 0 ok, 1 warning, 2 critical, 3 could not check.
    Check(CheckArgs),
    /// Print a shell completion script (packaging/completions/ has them generated).
    #[command(hide = true)]
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to standard output.
    #[command(hide = true)]
    Man,
}

/// What a live run watches and asks: shared by `watch` and `capture`.
#[derive(Debug, Args)]
pub struct LiveArgs {
    /// Local TCP port to watch (repeat for several). Default: 6379.
    #[arg(short, long = "port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,
    /// Time between reports, e.g. 1s, 500ms, 1m.
    #[arg(short, long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// The Redis server to ask for INFO/CONFIG through one persistent connection:
    /// redis://[user@]host:port, rediss://[user@]host:port (TLS) or
    /// unix:///path/to/redis.sock. Default: redis://127.0.0.1:<first --port>.
    /// The password comes from --password-file or REDISCLI_AUTH, never from the URL.
    #[arg(long, value_name = "URL", conflicts_with = "no_redis")]
    pub redis: Option<String>,
    /// Read the Redis password from this file (first line). Default: $REDISCLI_AUTH.
    #[arg(long, value_name = "FILE", conflicts_with = "no_redis")]
    pub password_file: Option<PathBuf>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Do not connect to Redis at all: kernel and /proc figures only.
    #[arg(long)]
    pub no_redis: bool,
    /// Watch only the Redis in this network namespace: a file such as
    /// /run/netns/NAME or /proc/PID/ns/net. Default: every namespace of the host,
    /// each reported as its own instance.
    #[arg(long, value_name = "PATH", conflicts_with = "pid")]
    pub netns: Option<PathBuf>,
    /// Watch only the Redis in the network namespace of this process (a host pid,
    /// e.g. from `docker inspect -f '{{.State.Pid}}'`).
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Have the kernel programs log what they cannot handle (a record the ring
    /// buffer had no room for, an unknown address family or TCP state), at debug
    /// level as connwatch::kernel, shown without -v. Off, they log nothing and the
    /// kernel removes that code.
    #[arg(long)]
    pub debug_probes: bool,
    /// Do not find which process of this host opens each connection (clients on
    /// the Redis host: `processes` in the client rows). Off, a local client's
    /// connect costs the kernel program no more than any other transition. Client
    /// mode (--remote-port) always finds them: its opens are those records.
    #[arg(long)]
    pub no_processes: bool,
    /// For a process called a leak, say where it opens its connections: the kernel
    /// takes the user stack of every connect() to a watched port (one map entry per
    /// call path), and the leak's evidence names the functions of its leaked
    /// connections (`stacks`). Native code built with frame pointers; for python,
    /// node or ruby the command line instead. Off, the kernel takes no stack.
    #[arg(long, conflicts_with = "no_processes")]
    pub stacks: bool,
    /// Client mode, for an application host: watch this host's own connections
    /// to Redis servers on this remote port (repeat for several), per process and
    /// container, instead of a local Redis's. Needs no Redis password (INFO is not
    /// asked); reports say `role: client`.
    #[arg(
        long = "remote-port",
        value_name = "PORT",
        value_parser = clap::value_parser!(u16).range(1..),
        conflicts_with_all = ["ports", "redis", "password_file"],
        help_heading = "Client mode"
    )]
    pub remote_ports: Vec<u16>,
    /// Client mode for one server: this host's connections to ADDR:PORT only
    /// (repeat for several; with --remote-port, those ports' servers too).
    #[arg(
        long = "remote",
        value_name = "ADDR:PORT",
        conflicts_with_all = ["ports", "redis", "password_file"],
        help_heading = "Client mode"
    )]
    pub remotes: Vec<std::net::SocketAddr>,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
}

/// TLS for the connection to Redis, with redis-cli's flags.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Connect to Redis over TLS (as a rediss:// URL does), e.g. to the default
    /// target or a redis:// URL.
    #[arg(long, help_heading = "Redis TLS", conflicts_with = "no_redis")]
    pub tls: bool,
    /// CA certificates (PEM) that sign the server's certificate. Default: the
    /// system's CA store.
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "Redis TLS",
        conflicts_with = "no_redis"
    )]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM) for a server with tls-auth-clients; with --key.
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "Redis TLS",
        conflicts_with = "no_redis"
    )]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "Redis TLS",
        conflicts_with = "no_redis"
    )]
    pub key: Option<PathBuf>,
    /// Do not verify the server's certificate (neither its CA nor its name).
    #[arg(long, help_heading = "Redis TLS", conflicts_with = "no_redis")]
    pub insecure: bool,
    /// Server name to send (SNI) and to find in the server's certificate, instead of
    /// the URL's host.
    #[arg(
        long,
        value_name = "NAME",
        help_heading = "Redis TLS",
        conflicts_with = "no_redis"
    )]
    pub sni: Option<String>,
}

impl TlsArgs {
    pub fn options(&self) -> crate::source::redis::TlsOptions {
        crate::source::redis::TlsOptions {
            ca_file: self.cacert.clone(),
            cert_file: self.cert.clone(),
            key_file: self.key.clone(),
            insecure: self.insecure,
            sni: self.sni.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub live: LiveArgs,
    /// Output format. Default: text on a terminal, json otherwise.
    #[arg(short, long, value_enum)]
    pub format: Option<Format>,
    /// Stop after this long (e.g. 30s) and print a last report. Default: run until SIGINT/SIGTERM.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Write reports to this file instead of standard output (appends).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Show at most this many client addresses in the text view and as Prometheus
    /// series (the rest are summed as addr="other"); json is not limited (see --clients).
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9187. Give a
    /// loopback address unless the metrics must be reachable from other hosts.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Send the metrics (as --metrics serves them) and the verdict changes (as log
    /// records) to an OpenTelemetry collector over OTLP/HTTP with protobuf bodies:
    /// POSTs to URL/v1/metrics and URL/v1/logs each interval, e.g.
    /// http://127.0.0.1:4318. https:// trusts the host's CA store (SSL_CERT_FILE or
    /// SSL_CERT_DIR point it elsewhere).
    #[arg(long, value_name = "URL", help_heading = "OpenTelemetry export")]
    pub otlp: Option<String>,
    /// With --otlp: how many requests may wait while the collector is unreachable;
    /// beyond it the oldest are dropped (counted in the report's otlp.dropped).
    #[arg(long, value_name = "N", default_value_t = crate::cmd::otlp::DEFAULT_QUEUE, value_parser = clap::value_parser!(u64).range(1..=100_000), help_heading = "OpenTelemetry export")]
    pub otlp_queue: u64,
    #[command(flatten)]
    pub rows: RowArgs,
}

/// Which client rows each NDJSON report holds (docs/REPORT.md, "Client rows").
#[derive(Debug, Args)]
pub struct RowArgs {
    /// json: which client rows each report holds. changed: every row in the first
    /// report and every --full-every, and between them only the rows that changed
    /// (a counter moved, open connections, verdict, a new address) or carry a
    /// verdict other than healthy. all: every row in every report. Only json is
    /// trimmed: the text view, --metrics and HTML show the whole report.
    #[arg(
        long,
        value_enum,
        default_value = "changed",
        value_name = "WHICH",
        help_heading = "NDJSON output"
    )]
    pub clients: Clients,
    /// json with --clients changed: a report with every row this often (by
    /// uptime), so a reader can start anywhere in the stream.
    #[arg(long, default_value = "5m", value_name = "DUR", value_parser = parse_duration, help_heading = "NDJSON output")]
    pub full_every: Duration,
}

impl RowArgs {
    pub fn filter(&self) -> crate::report::rows::RowFilter {
        match self.clients {
            Clients::Changed => crate::report::rows::RowFilter::changed(self.full_every),
            Clients::All => crate::report::rows::RowFilter::all(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Clients {
    /// The changed rows; every row in the first report and every --full-every.
    Changed,
    /// Every row in every report.
    All,
}

#[derive(Debug, Args)]
pub struct CaptureArgs {
    #[command(flatten)]
    pub live: LiveArgs,
    /// The capture file to create (mode 0600; never overwritten).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Stop after this long, e.g. 5m. Default: until SIGINT/SIGTERM or --max-size.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop when the file reaches this size (compressed), e.g. 100M, 2G.
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    pub max_size: u64,
    /// Replace client addresses with stable pseudonyms (198.18.x.y, 2001:db8::n),
    /// so the file can be shared outside the team.
    #[arg(long)]
    pub redact: bool,
    /// Format of the summary printed at the end. Default: text on a terminal, json otherwise.
    #[arg(short, long, value_enum)]
    pub format: Option<Format>,
}

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// The capture file (from `connwatch capture`).
    pub file: PathBuf,
    /// text: the last report and every verdict seen; json: every interval's report
    /// as NDJSON (as `watch` writes it, --clients included); html: a self-contained
    /// report with charts.
    #[arg(short, long, value_enum, default_value = "text")]
    pub format: AnalyzeFormat,
    /// Write to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Replace client addresses with stable pseudonyms in the output.
    #[arg(long)]
    pub redact: bool,
    /// Client addresses shown in the text view.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    #[command(flatten)]
    pub rows: RowArgs,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub live: LiveArgs,
    /// How long to sample before judging.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub sample: Duration,
    /// Output format. Default: text on a terminal, json otherwise.
    #[arg(short, long, value_enum)]
    pub format: Option<Format>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AnalyzeFormat {
    Text,
    Json,
    Html,
}

/// Diagnosis thresholds; defaults and meaning in docs/DIAGNOSIS.md.
#[derive(Debug, Args)]
pub struct ThresholdArgs {
    /// How far back trends (leaks, pools, fan-out) look.
    #[arg(long, help_heading = "Diagnosis thresholds", default_value = "60s", value_parser = parse_duration)]
    pub window: Duration,
    /// Leak: growth of one address's open connections over the window.
    #[arg(long, help_heading = "Diagnosis thresholds", default_value_t = 10)]
    pub leak_min_growth: u64,
    /// Leak: a connection idle this long is stale.
    #[arg(long, help_heading = "Diagnosis thresholds", default_value = "30s", value_parser = parse_duration)]
    pub leak_idle: Duration,
    /// Leak: at least this many stale connections.
    #[arg(long, help_heading = "Diagnosis thresholds", default_value_t = 5)]
    pub leak_min_stale: u64,
    /// Slow leak: growth judged over up to this long (from a thirtieth of it).
    #[arg(long, help_heading = "Diagnosis thresholds", default_value = "1h", value_parser = parse_duration)]
    pub leak_slow_window: Duration,
    /// Slow leak: at least this much growth, in each third of the span.
    #[arg(long, help_heading = "Diagnosis thresholds", default_value_t = 3)]
    pub leak_slow_min_growth: u64,
    /// Retry storm: at least this many failed attempts in the short window.
    #[arg(long, help_heading = "Diagnosis thresholds", default_value_t = 10)]
    pub storm_min_failures: u64,
    /// Retry storm: median gap between a failure and the next attempt below this.
    #[arg(long, help_heading = "Diagnosis thresholds", default_value = "100ms", value_parser = parse_duration)]
    pub storm_max_gap: Duration,
    /// Retry storm across clients: at least this many addresses retrying without backoff…
    #[arg(long, help_heading = "Diagnosis thresholds", default_value_t = 2)]
    pub fleet_storm_min_addresses: usize,
    /// …failing together at least this many times a second…
    #[arg(long, help_heading = "Diagnosis thresholds", default_value_t = 5.0)]
    pub fleet_storm_min_rate: f64,
    /// …over this window.
    #[arg(long, help_heading = "Diagnosis thresholds", default_value = "10s", value_parser = parse_duration)]
    pub fleet_storm_window: Duration,
    /// How far back "happening now" looks (storms, rejections, accept failures).
    #[arg(long, help_heading = "Diagnosis thresholds", default_value = "3s", value_parser = parse_duration)]
    pub short_window: Duration,
    /// Instance fan-out: at least this many addresses with one or two short-lived connections.
    #[arg(long, help_heading = "Diagnosis thresholds", default_value_t = 100)]
    pub fanout_min_addresses: usize,
    /// Pool oversize: at least this many client addresses with similar steady pools…
    #[arg(long, help_heading = "Diagnosis thresholds", default_value_t = 3)]
    pub pool_min_instances: usize,
    /// …holding together this share of the real limit.
    #[arg(long, help_heading = "Diagnosis thresholds", default_value_t = 0.7)]
    pub pool_share: f64,
    /// Slow consumer: at least this many bytes of replies an address has not taken…
    #[arg(long, help_heading = "Diagnosis thresholds", default_value_t = 1 << 20)]
    pub slow_consumer_min_bytes: u64,
    /// …and at least this share of all queued replies, for the short window.
    #[arg(long, help_heading = "Diagnosis thresholds", default_value_t = 0.5)]
    pub slow_consumer_share: f64,
    /// Slots to keep free for replicas, cluster bus and sentinels.
    #[arg(long, help_heading = "Diagnosis thresholds", default_value_t = 100)]
    pub internal_reserve: u64,
    /// An internal address or range (CIDR): Sentinels, replicas on other hosts,
    /// exporters, admin hosts. Never judged; counted in the internal headroom.
    /// Repeatable.
    #[arg(
        long = "internal",
        value_name = "CIDR",
        help_heading = "Diagnosis thresholds"
    )]
    pub internal: Vec<crate::model::Cidr>,
    /// A connection budget: at most N connections open from the range, e.g.
    /// 10.1.0.0/16=200 (budget_exceeded when passed). Repeatable.
    #[arg(
        long = "budget",
        value_name = "CIDR=N",
        help_heading = "Diagnosis thresholds"
    )]
    pub budgets: Vec<crate::model::Budget>,
    /// Blocked clients holding this share of the limit.
    #[arg(long, help_heading = "Diagnosis thresholds", default_value_t = 0.3)]
    pub blocked_share: f64,
    /// Capacity warning above this ratio of the real limit…
    #[arg(long, help_heading = "Diagnosis thresholds", default_value_t = 0.8)]
    pub capacity_warning: f64,
    /// …and critical from this ratio.
    #[arg(long, help_heading = "Diagnosis thresholds", default_value_t = 0.9)]
    pub capacity_critical: f64,
}

impl ThresholdArgs {
    pub fn thresholds(&self) -> crate::diagnose::Thresholds {
        crate::diagnose::Thresholds {
            window: self.window,
            leak_min_growth: self.leak_min_growth,
            leak_idle: self.leak_idle,
            leak_min_stale: self.leak_min_stale,
            leak_slow_window: self.leak_slow_window,
            leak_slow_min_growth: self.leak_slow_min_growth,
            storm_min_failures: self.storm_min_failures,
            storm_max_gap: self.storm_max_gap,
            fleet_storm_min_addresses: self.fleet_storm_min_addresses,
            fleet_storm_min_rate: self.fleet_storm_min_rate,
            fleet_storm_window: self.fleet_storm_window,
            short_window: self.short_window,
            fanout_min_addresses: self.fanout_min_addresses,
            pool_min_instances: self.pool_min_instances,
            pool_share: self.pool_share,
            slow_consumer_min_bytes: self.slow_consumer_min_bytes,
            slow_consumer_share: self.slow_consumer_share,
            internal_reserve: self.internal_reserve,
            internal: self.internal.clone(),
            budgets: self.budgets.clone(),
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

/// A size with an optional K/M/G suffix (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 100M, 2G)"))?;
    let factor: u64 = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("unknown unit in {s:?} (use K, M, G)")),
    };
    n.checked_mul(factor)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("{s:?} is not a usable size"))
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

    fn watch_args(argv: &[&str]) -> WatchArgs {
        match Cli::parse_from(argv).command {
            Command::Watch(args) => args,
            other => panic!("not watch: {other:?}"),
        }
    }

    #[test]
    fn threshold_flag_defaults_are_the_documented_defaults() {
        let args = watch_args(&["connwatch", "watch"]);
        assert_eq!(
            args.live.thresholds.thresholds(),
            crate::diagnose::Thresholds::default()
        );
    }

    #[test]
    fn durations_must_be_positive_and_readable() {
        assert!(Cli::try_parse_from(["connwatch", "watch", "--interval", "0s"]).is_err());
        assert!(Cli::try_parse_from(["connwatch", "watch", "--interval", "soon"]).is_err());
        let args = watch_args(&[
            "connwatch",
            "watch",
            "--interval",
            "250ms",
            "-p",
            "6379",
            "-p",
            "6380",
        ]);
        assert_eq!(args.live.interval, Duration::from_millis(250));
        assert_eq!(args.live.ports, vec![6379, 6380]);
    }

    #[test]
    fn tls_flags_are_redis_clis() {
        let args = watch_args(&[
            "connwatch",
            "watch",
            "--tls",
            "--cacert",
            "ca.pem",
            "--cert",
            "client.pem",
            "--key",
            "client.key",
            "--sni",
            "redis.example",
        ]);
        assert!(args.live.tls.tls);
        assert_eq!(
            args.live.tls.options(),
            crate::source::redis::TlsOptions {
                ca_file: Some("ca.pem".into()),
                cert_file: Some("client.pem".into()),
                key_file: Some("client.key".into()),
                insecure: false,
                sni: Some("redis.example".into()),
            }
        );
        assert!(
            Cli::try_parse_from(["connwatch", "check", "--insecure", "--no-redis"]).is_err(),
            "TLS flags conflict with --no-redis"
        );
    }

    #[test]
    fn capture_needs_a_file_and_reads_sizes() {
        assert!(Cli::try_parse_from(["connwatch", "capture"]).is_err());
        match Cli::parse_from([
            "connwatch",
            "capture",
            "-o",
            "x.cwcap",
            "--max-size",
            "100M",
        ])
        .command
        {
            Command::Capture(args) => assert_eq!(args.max_size, 100 << 20),
            other => panic!("not capture: {other:?}"),
        }
    }

    #[test]
    fn client_rows_default_to_changed_with_a_full_report_every_five_minutes() {
        let args = watch_args(&["connwatch", "watch"]);
        assert_eq!(args.rows.clients, Clients::Changed);
        assert_eq!(
            args.rows.full_every,
            crate::report::rows::DEFAULT_FULL_EVERY
        );
        let args = watch_args(&["connwatch", "watch", "--clients", "all"]);
        assert_eq!(args.rows.clients, Clients::All);
        let args = watch_args(&["connwatch", "watch", "--full-every", "30s"]);
        assert_eq!(args.rows.full_every, Duration::from_secs(30));
        assert!(Cli::try_parse_from(["connwatch", "watch", "--full-every", "0s"]).is_err());
        assert!(Cli::try_parse_from(["connwatch", "watch", "--clients", "some"]).is_err());
        match Cli::parse_from(["connwatch", "analyze", "x.cwcap", "--clients", "all"]).command {
            Command::Analyze(args) => assert_eq!(args.rows.clients, Clients::All),
            other => panic!("not analyze: {other:?}"),
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100M"), Ok(100 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("10X").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
