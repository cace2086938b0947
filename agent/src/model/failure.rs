//! Why a connection attempt failed, and failures counted by cause.

use serde::Serialize;

/// Why an attempt failed: a connection Redis turned away or that was reset, or
/// a connect that never completed, by the socket's error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    Rejected,
    Reset,
    /// A reset answered the SYN (ECONNREFUSED): nothing listened.
    Refused,
    /// The kernel gave up after its SYN retries (ETIMEDOUT): no answer at all.
    TimedOut,
    /// The application closed the socket while it connected (its own timeout).
    Abandoned,
    /// Another error (an ICMP unreachable: EHOSTUNREACH, ENETUNREACH …).
    Other,
    /// The cause is not known (no BTF, or a capture that did not record it).
    Unknown,
}

impl Failure {
    /// A failed connect's cause from the socket's error (`None`: unknown).
    pub fn of_connect(err: Option<u32>) -> Failure {
        match err {
            None => Failure::Unknown,
            Some(0) => Failure::Abandoned,
            Some(110) => Failure::TimedOut,
            Some(111) => Failure::Refused,
            Some(_) => Failure::Other,
        }
    }
}

/// Failures by cause (see [`Failure`]); the keys sum to the `failed` beside them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FailedBy {
    pub rejected: u64,
    pub reset: u64,
    pub refused: u64,
    pub timed_out: u64,
    pub abandoned: u64,
    pub other: u64,
    /// Failures whose cause is unknown: the split is then unknown (`null`).
    #[serde(skip)]
    pub unknown: u64,
}

impl FailedBy {
    pub fn count(&mut self, f: Failure) {
        let n = match f {
            Failure::Rejected => &mut self.rejected,
            Failure::Reset => &mut self.reset,
            Failure::Refused => &mut self.refused,
            Failure::TimedOut => &mut self.timed_out,
            Failure::Abandoned => &mut self.abandoned,
            Failure::Other => &mut self.other,
            Failure::Unknown => &mut self.unknown,
        };
        *n += 1;
    }

    pub fn add(&mut self, o: &FailedBy) {
        self.rejected += o.rejected;
        self.reset += o.reset;
        self.refused += o.refused;
        self.timed_out += o.timed_out;
        self.abandoned += o.abandoned;
        self.other += o.other;
        self.unknown += o.unknown;
    }

    /// The split, `None` when a cause is unknown.
    pub fn known(&self) -> Option<&FailedBy> {
        (self.unknown == 0).then_some(self)
    }

    /// Each cause with its count, in the JSON's order and names.
    pub fn causes(&self) -> [(&'static str, u64); 6] {
        [
            ("rejected", self.rejected),
            ("reset", self.reset),
            ("refused", self.refused),
            ("timed_out", self.timed_out),
            ("abandoned", self.abandoned),
            ("other", self.other),
        ]
    }

    /// For people: the causes seen, `" (timed_out 3, abandoned 1)"`; empty when
    /// there are none or a cause is unknown.
    pub fn describe(&self) -> String {
        let seen: Vec<String> = self
            .known()
            .map(|f| f.causes())
            .unwrap_or_default()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        if seen.is_empty() {
            String::new()
        } else {
            format!(" ({})", seen.join(", "))
        }
    }

    /// The failed connects of this split, `None` when a cause is unknown.
    pub fn connects(&self) -> Option<ConnectFailures> {
        self.known().map(|f| ConnectFailures {
            refused: f.refused,
            timed_out: f.timed_out,
            abandoned: f.abandoned,
            other: f.other,
        })
    }
}

pub(super) fn failed_by_or_null<S: serde::Serializer>(
    f: &FailedBy,
    s: S,
) -> Result<S::Ok, S::Error> {
    f.known().serialize(s)
}

/// Failed connects (client mode: this host's `connect()` calls that never
/// completed) by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct ConnectFailures {
    pub refused: u64,
    pub timed_out: u64,
    pub abandoned: u64,
    pub other: u64,
}

impl ConnectFailures {
    /// For people: the failed connects that were not refused,
    /// `"timed_out 3, abandoned 1"`; empty when there are none.
    pub fn unrefused(&self) -> String {
        [
            ("timed_out", self.timed_out),
            ("abandoned", self.abandoned),
            ("other", self.other),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
    }
}
