//! The pure, deterministic core: the event stream in, per-connection and
//! per-address state out. No I/O, no clock of its own: everything it knows comes
//! from [`crate::model::Event`]s, so a replay reaches the same state as the live run.
//!
//! - [`conn`]: the table of open connections;
//! - [`client`]: per-address statistics; [`retry`]: retry gaps and their trend;
//! - [`process`]: which local process opened which connection;
//! - [`histogram`]: fixed-memory quantiles; [`reject`]: the rejection classifier;
//! - [`row_cache`]: the client rows between reports, with their rates; [`capacity`]: the INFO and
//!   `/proc` joins into limits and capacity;
//! - [`tracker`]: the facade that applies events and builds a report.

pub mod capacity;
pub mod client;
pub mod close_cause;
pub mod conn;
pub mod histogram;
pub mod process;
pub mod reject;
pub mod retry;
pub mod row_cache;
pub mod tracker;
