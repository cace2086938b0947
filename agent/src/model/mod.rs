//! Plain types every layer shares: time, connection keys, the event stream, the
//! Redis and host snapshots, verdicts and the report schema, plus the formatting
//! every output uses. This layer imports nothing else of ours.
//!
//! Every enum whose name appears in an output has one name per variant, its serde
//! name, available as `as_str()`, and the list of its variants as `ALL` (see
//! [`named`]); renderers use those instead of keeping their own tables.

#[macro_use]
mod named;
pub mod capacity;
pub mod cidr;
pub mod event;
pub mod export;
pub mod failure;
pub mod format;
pub mod hash;
pub mod host;
pub mod instance;
pub mod probe;
pub mod process;
pub mod redis;
pub mod report;
pub mod rows;
pub mod verdict;

pub use capacity::{Capacity, CapacitySource, FileNr, Limits, RedisReport};
pub use cidr::{Budget, Cidr};
pub use event::{
    Activity, Clock, CloseKind, ConnKey, Event, KernelCounters, NANOS_PER_SEC, Nanos,
    monotonic_now, normalize,
};
pub use export::OtlpStatus;
pub use failure::{ConnectFailures, FailedBy, Failure};
pub use format::{format_ts, human_bytes, human_duration, micros};
pub use hash::{FastMap, FastSet};
pub use host::{HostSnapshot, Listener};
pub use instance::{Instance, InstanceKey};
pub use probe::{Features, ProbeReport};
pub use process::{Identity, Process, short_id};
pub use redis::{ConfigStatus, InfoFields, RedisConfig, RedisSnapshot, RedisStatus, TIMED_OUT};
pub use report::{
    AcceptErrors, AcceptQueue, Age, ClientReport, ClientRows, ClientsMode, Idle, Kind, Lifetime,
    OtherProcesses, ProcessReport, Rates, Recommendation, RejectCounts, RejectReason, Report,
    RetryReport, Role, SendQueue, ServerClose, ServerCloses, Totals, Trend, WorstKey, errno_name,
    worst_first,
};
pub use rows::{Quiet, Tally};
pub use verdict::{
    ClientVerdict, MAX_STALE_NAMED, Severity, StackCounts, StaleConn, StaleList, Verdict,
    VerdictKind,
};
