//! What the OTLP exporter (`watch --otlp`) has done, as every report of a run that
//! exports carries it (`otlp`). Plain data: the command layer fills it in.

use std::time::SystemTime;

use serde::{Serialize, Serializer};

use super::format::format_ts;

/// The exporter's counts since the agent started. The unit is an export request:
/// one metrics request per report interval (every instance's figures), and one
/// logs request per interval with verdict transitions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OtlpStatus {
    /// Requests the collector accepted.
    pub sent: u64,
    /// Requests given up: the oldest waiting when the queue was full, or one the
    /// collector refused for good (a 4xx other than 429).
    pub dropped: u64,
    /// Attempts that failed and were tried again later (collector down, 429, 5xx).
    pub retries: u64,
    /// Requests waiting to be sent now.
    pub queued: u64,
    /// When the current run of failed attempts began; `null` while the last attempt
    /// succeeded (or none was made yet).
    #[serde(serialize_with = "opt_ts")]
    pub failing_since: Option<SystemTime>,
    /// The last attempt's error while failing; `null` otherwise.
    pub error: Option<String>,
}

fn opt_ts<S: Serializer>(ts: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match ts {
        Some(ts) => s.collect_str(&format_ts(*ts)),
        None => s.serialize_none(),
    }
}
