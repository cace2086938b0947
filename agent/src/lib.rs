//! connwatch: tells why Redis is out of connections, from kernel facts.
//!
//! One event stream ([`event`]) — from the kernel probe ([`probe`]) and the host
//! pollers ([`sock_diag`], [`host`]) — flows through a pure core ([`conn`],
//! [`client`], [`tracker`]) into reports ([`report`]). `main.rs` is thin glue over
//! [`run`].

pub mod analyze;
pub mod capacity;
pub mod capture;
pub mod check;
pub mod cli;
pub mod client;
pub mod conn;
pub mod diagnose;
pub mod docs_gen;
pub mod event;
pub mod histogram;
pub mod host;
pub mod live;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod probe;
pub mod rates;
pub mod record;
pub mod redis;
pub mod reject;
pub mod report;
pub mod retry;
pub mod run;
pub mod sock_diag;
pub mod tracker;
pub mod transitions;
pub mod watch;
