//! connwatch: tells why Redis is out of connections, from kernel facts.
//!
//! The layers, each importing only those listed before it (docs/ARCHITECTURE.md
//! draws the picture; `tests/layers.rs` enforces it):
//!
//! - [`model`]: plain types: time, connection keys, the event stream, snapshots,
//!   verdicts, the report schema, formatting.
//! - [`source`]: where events come from: the kernel probe, sock_diag, `/proc`,
//!   Redis INFO, capture files.
//! - [`core`]: the pure, deterministic state machine: connections, per-address
//!   statistics, retry gaps, rejections, rates, capacity.
//! - [`diagnose`]: verdicts from the core's state, and the pipeline that live
//!   runs and replays share.
//! - [`report`]: renderers: text, NDJSON, Prometheus, HTML.
//! - [`cmd`]: the command line: one module per subcommand, outputs, exit codes.
//!
//! `main.rs` is thin glue over [`cmd::run`].

pub mod cmd;
pub mod core;
pub mod diagnose;
pub mod model;
pub mod report;
pub mod source;

#[cfg(any(test, feature = "test-support"))]
pub mod testing;
