//! The command line: clap definitions ([`cli`]), one module per subcommand
//! ([`watch`], [`record`] for `capture`, [`analyze`], [`check`], [`docs_gen`]),
//! the live loop they share ([`live`]), output sinks ([`output`]), the `/metrics`
//! endpoint ([`metrics_http`]), the OTLP exporter ([`otlp`]) and exit codes ([`exit`]). Thin glue: the judgment
//! lives in the layers below.

pub mod analyze;
pub mod check;
pub mod cli;
pub mod docs_gen;
pub mod exit;
pub mod live;
pub mod live_redis;
pub mod metrics_http;
pub mod otlp;
pub mod output;
pub mod record;
pub mod run;
pub mod scan_pace;
pub mod targets;
pub mod watch;
