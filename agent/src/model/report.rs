//! What a report says, independent of how it is shown.
//!
//! [`Report`] serializes (serde) to exactly one NDJSON line (`report::json`);
//! `report::text` renders the same value as a table for a terminal. Durations are held as
//! [`Duration`]s truncated to microseconds and written as floats in the unit
//! their JSON key names (`lifetime_ms`, `idle_s`).

use std::borrow::Cow;
use std::cmp::{Ordering, Reverse};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use super::capacity::{Capacity, Limits, RedisReport};
use super::failure::{ConnectFailures, FailedBy};
use super::format::{as_millis, as_secs, rfc3339_millis};
use super::rows::{Quiet, Rows};
use super::verdict::{ClientVerdict, Verdict};

/// The `"type"` tag that leads every NDJSON line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Report,
}

/// One report: totals and per-client rows, worst client first.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    #[serde(rename = "type")]
    pub kind: Kind,
    /// Wall-clock time of the report.
    #[serde(serialize_with = "rfc3339_millis")]
    pub ts: SystemTime,
    /// Time since the agent started.
    #[serde(rename = "uptime_s", serialize_with = "as_secs")]
    pub uptime: Duration,
    pub ports: Vec<u16>,
    /// Which end of the connections the agent watched: `server` (the Redis host,
    /// `--port`) or `client` (this host's own connections to remote Redis servers,
    /// `--remote-port`). A client-mode report names the remote Redis as `local`
    /// nowhere: its rows are this host's client addresses, its `ports` the remote
    /// ones, with the same field names, so both sides join by address and time.
    pub role: Role,
    /// The Redis this report is about: its network namespace, process and
    /// container; `null` when the source did not tell instances apart.
    pub instance: Option<super::instance::Instance>,
    /// What the kernel programs can see on this kernel; `null` when not known (a
    /// replay of a capture made before connwatch recorded it).
    pub probe: Option<super::probe::ProbeReport>,
    /// What the OTLP exporter has sent and dropped; absent when the run does not
    /// export (`watch --otlp`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp: Option<super::export::OtlpStatus>,
    pub totals: Totals,
    pub redis: RedisReport,
    pub limits: Limits,
    pub capacity: Capacity,
    /// Host-level verdicts, most severe first (see docs/DIAGNOSIS.md).
    pub verdicts: Vec<Verdict>,
    /// Settings worth changing, computed from what was seen (docs/DIAGNOSIS.md).
    pub recommendations: Vec<Recommendation>,
    /// Which rows `clients` holds: every known address (`full`, as every report is
    /// built), or only those an NDJSON stream must write again (`changed`; made by
    /// `report::rows` between full snapshots).
    pub clients_mode: ClientsMode,
    /// Known addresses whose row this report leaves out: nothing of theirs moved
    /// since the row last written. 0 when `full`.
    pub clients_omitted: u64,
    /// Addresses whose row the previous report of the stream held (written or left
    /// out) and that are no longer known (evicted), in address order. Empty when `full`.
    pub clients_gone: Vec<IpAddr>,
    /// Sorted with [`worst_first`]; shared with the row cache that built them
    /// (see [`super::rows`]).
    pub clients: ClientRows,
    /// Addresses the previous report of this instance held and this one does not
    /// (evicted since), in no order. Not serialized: an NDJSON stream names them in
    /// `clients_gone`.
    #[serde(skip)]
    pub evicted: Vec<IpAddr>,
}

/// Which end of the connections a report watched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The Redis host: connections accepted on the watched local ports.
    #[default]
    Server,
    /// An application host: its own connections to the watched remote ports.
    Client,
}

named!(Role {
    Server => "server",
    Client => "client",
});

impl Role {
    /// For `skip_serializing_if`: the default (a server) is left out.
    pub fn is_server(&self) -> bool {
        *self == Role::Server
    }
}

/// Which client rows a report carries (`--clients`, docs/REPORT.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientsMode {
    /// Every known address's row.
    #[default]
    Full,
    /// Only the rows that changed since last written, and those with a verdict
    /// other than healthy; the rest are as last written.
    Changed,
}

named!(ClientsMode {
    Full => "full",
    Changed => "changed",
});

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Totals {
    /// Connections open now.
    pub open: u64,
    /// Connections seen opening since the agent started.
    pub opened: u64,
    /// Connections closed since the agent started (including those whose open
    /// was not seen, and those whose close was lost and inferred).
    pub closed: u64,
    pub closed_by_server: u64,
    /// `closed_by_server` by cause.
    pub server_closes: ServerCloses,
    pub closed_by_client: u64,
    pub reset: u64,
    /// Distinct client addresses known now.
    pub clients: u64,
    /// Kernel events lost (the ring buffer was full): the figures are incomplete.
    pub lost_events: u64,
    /// Connections whose close record was lost (the ring buffer was full), found
    /// gone by the interval's sock_diag scan and counted as closed then.
    pub vanished: u64,
    /// Closes whose byte counts the kernel could not read: such a close cannot be
    /// told to be a rejection.
    pub closes_without_bytes: u64,
    /// Failed accepts of the listeners, by errno name; `None` where the kernel
    /// does not show them (`probe.features.accept_errors`).
    pub accept_errors: Option<AcceptErrors>,
    /// Quiet client addresses dropped to bound memory.
    pub evicted_clients: u64,
    /// Connections Redis accepted and closed at once without reading (maxclients,
    /// protected mode), and by reason.
    pub rejected: u64,
    pub rejected_by_reason: RejectCounts,
    /// Connection attempts the kernel refused because nothing listened; `None`
    /// when this kernel does not show them (`probe.features.refusals`).
    pub refused: Option<u64>,
    /// Failed accepts per second over the last interval (all errnos in `accept_errors`).
    pub accept_errors_per_s: Option<f64>,
    /// Growth of TcpExt ListenOverflows / ListenDrops since the agent started
    /// (host-wide: every listener on the host counts); absent when unreadable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_overflows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_drops: Option<u64>,
    /// SYN-ACKs the watched listeners had to send again; `None` where the kernel
    /// does not show them.
    pub synack_retransmits: Option<u64>,
    /// Connections waiting in the watched listeners' accept queues now, and the
    /// queues' size; absent when unreadable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_queue: Option<AcceptQueue>,
}

/// Nothing counted yet, on a kernel that shows every source; what /proc and the
/// accept queue say is not known.
impl Default for Totals {
    fn default() -> Self {
        Totals {
            open: 0,
            opened: 0,
            closed: 0,
            closed_by_server: 0,
            server_closes: ServerCloses::default(),
            closed_by_client: 0,
            reset: 0,
            clients: 0,
            lost_events: 0,
            vanished: 0,
            closes_without_bytes: 0,
            accept_errors: Some(AcceptErrors::default()),
            evicted_clients: 0,
            rejected: 0,
            rejected_by_reason: RejectCounts::default(),
            refused: Some(0),
            accept_errors_per_s: Some(0.0),
            listen_overflows: None,
            listen_drops: None,
            synack_retransmits: Some(0),
            accept_queue: None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AcceptQueue {
    pub depth: u64,
    pub backlog: u64,
}

/// A report's client rows (see [`super::rows`]).
pub type ClientRows = Rows<ClientReport>;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClientReport {
    /// IPv4-mapped IPv6 addresses appear as IPv4.
    pub addr: IpAddr,
    /// Connections open now.
    pub open: u64,
    /// Of `open`, those that predate the agent.
    pub seeded: u64,
    pub opened: u64,
    pub closed: u64,
    pub closed_by_server: u64,
    /// `closed_by_server` by cause.
    pub server_closes: ServerCloses,
    pub closed_by_client: u64,
    pub reset: u64,
    /// Of `closed`, connections Redis turned away at once (maxclients, protected mode).
    pub rejected: u64,
    /// Attempts refused by the kernel: nothing listened on the port; `None` when
    /// this kernel does not show them.
    pub refused: Option<u64>,
    /// Failed attempts, each counted once: rejected, refused or reset (a rejection
    /// Redis's close turned into a reset is one failure, not two). For diagnosis.
    #[serde(skip)]
    pub failed: u64,
    /// A replica of this server (from INFO replication) or a cluster peer.
    pub internal: bool,
    /// What this address is doing: healthy, leak, retry_storm, backing_off,
    /// no_backoff, pool_heavy.
    pub verdict: ClientVerdict,
    /// Lifetimes of closed connections whose open was seen; `None` if there are none.
    #[serde(rename = "lifetime_ms")]
    pub lifetime: Option<Lifetime>,
    /// Age of the oldest open connection; `None` when none is open.
    #[serde(rename = "age_s")]
    pub age: Option<Age>,
    /// Idle times of open connections; `None` when none is open.
    #[serde(rename = "idle_s")]
    pub idle: Option<Idle>,
    /// Replies Redis wrote that this address has not taken yet (its connections'
    /// send queues at the last scan); `None` when none is open.
    pub send_queue: Option<SendQueue>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Gaps between a failed attempt and the next one; `None` before any.
    pub retry: Option<RetryReport>,
    /// Opens, closes, rejections and refusals per second over the last interval;
    /// `None` the first time an address appears.
    pub rates: Option<Rates>,
    /// The processes of this host that opened this address's connections (taken
    /// in the kernel at `connect()`), worst first, at most 5; empty (and absent
    /// from the JSON) when none is known: a client on another host, or
    /// connections that predate the agent. Shared: rows are copied at every
    /// report that moves them, and these are the only part a copy allocates.
    #[serde(skip_serializing_if = "no_processes")]
    pub processes: std::sync::Arc<[ProcessReport]>,
    /// The known processes beyond `processes`, summed; absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processes_other: Option<Box<OtherProcesses>>,
    /// Client mode: this address's failed connects by cause (`refused` is the
    /// row's `refused`); `Some(None)` (`null`) when a cause is unknown; absent
    /// while the address has none, and always on the server side.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_connects: Option<Option<ConnectFailures>>,
    /// Whether the row was rebuilt for this report (its address had an event,
    /// holds connections, or its rates came to rest) or its verdict changed. A row
    /// without it is exactly as in the previous report. Not serialized.
    #[serde(skip)]
    pub changed: bool,
}

fn no_processes(p: &std::sync::Arc<[ProcessReport]>) -> bool {
    p.is_empty()
}

/// One process's connections from an address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcessReport {
    /// Process id in the host's PID namespace.
    pub pid: u32,
    /// Its name (the thread that called `connect()`).
    pub comm: Arc<str>,
    /// Container id (64 hex) from its cgroup path; `None` outside a container.
    pub container: Option<Arc<str>>,
    /// Kubernetes pod uid from its cgroup path; `None` outside a pod.
    pub pod: Option<Arc<str>>,
    /// Connections of this process open now, opened since the agent started,
    /// and failed (refused, rejected, reset).
    pub open: u64,
    pub opened: u64,
    pub failed: u64,
    /// `failed` by cause (`null` when a cause is unknown).
    #[serde(serialize_with = "super::failure::failed_by_or_null")]
    pub failed_by: FailedBy,
}

impl ProcessReport {
    /// `pid 4242 (gunicorn)`, with ` in container 3f2a9c0d1e4b` or ` in pod …`.
    pub fn label(&self) -> String {
        let mut s = format!("pid {} ({})", self.pid, self.comm);
        if let Some(c) = &self.container {
            s.push_str(&format!(" in container {}", super::process::short_id(c)));
        } else if let Some(p) = &self.pod {
            s.push_str(&format!(" in pod {p}"));
        }
        s
    }
}

/// The connections of processes beyond an address's top ones, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OtherProcesses {
    pub open: u64,
    pub opened: u64,
    pub failed: u64,
    /// `failed` by cause (`null` when a cause is unknown).
    #[serde(serialize_with = "super::failure::failed_by_or_null")]
    pub failed_by: FailedBy,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RetryReport {
    /// Gaps measured so far.
    pub gaps: u64,
    /// Median and last of the latest gaps, in ms.
    pub p50_ms: f64,
    pub last_ms: f64,
    /// Median of the first gaps of the current run of retries, in ms: the pace the
    /// client started at (a run ends after 5 minutes without a gap).
    pub start_ms: f64,
    /// Whether successive gaps grow (backoff), stay flat, or shrink.
    pub trend: Trend,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Lifetime {
    #[serde(serialize_with = "as_millis")]
    pub p50: Duration,
    #[serde(serialize_with = "as_millis")]
    pub p90: Duration,
    #[serde(serialize_with = "as_millis")]
    pub p99: Duration,
    #[serde(serialize_with = "as_millis")]
    pub max: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Age {
    #[serde(serialize_with = "as_secs")]
    pub max: Duration,
    /// The address holds connections that predate the agent: their true age is
    /// unknown, so `max` is only a lower bound.
    pub lower_bound: bool,
}

/// Bytes waiting in an address's send queues: all of them, and the largest one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SendQueue {
    pub bytes: u64,
    pub max: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Idle {
    #[serde(serialize_with = "as_secs")]
    pub p50: Duration,
    #[serde(serialize_with = "as_secs")]
    pub max: Duration,
}

/// Nothing open, no failure, not changed, healthy: the row as it was, with
/// nothing for the diagnoser to judge.
impl Quiet for ClientReport {
    fn is_quiet(&self) -> bool {
        self.open == 0
            && self.failed == 0
            && !self.changed
            && self.verdict == ClientVerdict::Healthy
    }

    /// The short-lived rows a fan-out counts, with what they opened.
    fn tallied(&self) -> Option<u64> {
        self.is_short_lived().then_some(self.opened)
    }
}

impl ClientReport {
    /// An address of a short-lived fan-out: not internal, at most two
    /// connections open, at least one opened, and the median lifetime of its
    /// closed connections under 1 s (a connection per request or per instance).
    pub fn is_short_lived(&self) -> bool {
        !self.internal
            && self.open <= 2
            && self.opened >= 1
            && self
                .lifetime
                .is_some_and(|l| l.p50 < Duration::from_secs(1))
    }
}

/// Orders client rows worst first: most open connections, then most connections
/// lost (resets + server closes), then most opened, then by address so the order
/// is deterministic.
pub fn worst_first(a: &ClientReport, b: &ClientReport) -> Ordering {
    WorstKey::of(a).cmp(&WorstKey::of(b))
}

/// What [`worst_first`] orders rows by, to sort by it without moving the rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WorstKey(Reverse<u64>, Reverse<u64>, Reverse<u64>, IpAddr);

impl WorstKey {
    pub fn of(c: &ClientReport) -> Self {
        WorstKey(Reverse(c.open), Reverse(lost(c)), Reverse(c.opened), c.addr)
    }

    /// The address of the row it was made of.
    pub fn addr(&self) -> IpAddr {
        self.3
    }
}

/// Connections an address lost: resets, server closes and refusals (when seen).
pub fn lost(c: &ClientReport) -> u64 {
    c.reset
        .saturating_add(c.closed_by_server)
        .saturating_add(c.refused.unwrap_or(0))
}

impl Report {
    /// Sets what the probe could see, and reports as unknown (`null`) what it
    /// could not: refusals where the kernel does not show them. In client mode
    /// the listener's figures (failed accepts, SYN-ACK retransmits) are not
    /// watched, and refusals come from the client's own failed connects.
    pub fn set_probe(&mut self, probe: Option<super::probe::ProbeReport>) {
        let client = self.role == Role::Client;
        let lacks = |f: fn(&super::probe::Features) -> bool| {
            client || probe.as_ref().is_some_and(|p| !f(&p.features))
        };
        if lacks(|f| f.accept_errors) {
            self.totals.accept_errors = None;
            self.totals.accept_errors_per_s = None;
        }
        if lacks(|f| f.synack_retransmits) {
            self.totals.synack_retransmits = None;
        }
        if !client && lacks(|f| f.refusals) {
            self.totals.refused = None;
            self.clients.for_each_mut(|c| {
                c.refused = None;
                if let Some(r) = &mut c.rates {
                    r.refused_per_s = None;
                }
            });
        }
        self.probe = probe;
    }
}

/// Failed accepts by errno, most frequent first; serialized as a JSON object
/// `{"EMFILE": 812}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AcceptErrors(Vec<(Cow<'static, str>, u64)>);

impl AcceptErrors {
    /// From the kernel's `(errno, count)` totals. EAGAIN/EWOULDBLOCK and EINTR are
    /// left out: a non-blocking accept loop ends on them every time. Zero counts
    /// are left out; repeated errnos are summed.
    pub fn from_kernel(counts: &[(i32, u64)]) -> Self {
        let mut kept: Vec<(i32, u64)> = counts
            .iter()
            .copied()
            .filter(|&(errno, n)| n > 0 && !is_routine_accept_errno(errno))
            .collect();
        kept.sort_unstable_by_key(|&(errno, _)| errno);
        kept.dedup_by(|next, first| {
            let same = next.0 == first.0;
            if same {
                first.1 = first.1.saturating_add(next.1);
            }
            same
        });
        let mut named: Vec<(Cow<'static, str>, u64)> = kept
            .into_iter()
            .map(|(errno, n)| (errno_name(errno), n))
            .collect();
        named.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        AcceptErrors(named)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// All failed accepts counted.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, n)| n).sum()
    }

    /// `(name, count)`, most frequent first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(name, n)| (name.as_ref(), *n))
    }
}

impl Serialize for AcceptErrors {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, n) in &self.0 {
            map.serialize_entry(name.as_ref(), n)?;
        }
        map.end()
    }
}

fn is_routine_accept_errno(errno: i32) -> bool {
    // EWOULDBLOCK equals EAGAIN on Linux; both are named for other platforms' sake.
    errno == libc::EAGAIN || errno == libc::EWOULDBLOCK || errno == libc::EINTR
}

/// The symbolic name of an errno `accept` can return, or `E<number>`.
pub fn errno_name(errno: i32) -> Cow<'static, str> {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::EINTR => "EINTR",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EFAULT => "EFAULT",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOSR => "ENOSR",
        libc::ENONET => "ENONET",
        libc::EPROTO => "EPROTO",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::ENOPROTOOPT => "ENOPROTOOPT",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::ESOCKTNOSUPPORT => "ESOCKTNOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ENOBUFS => "ENOBUFS",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EHOSTDOWN => "EHOSTDOWN",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        _ => return Cow::Owned(format!("E{errno}")),
    };
    Cow::Borrowed(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::format::{format_ts, micros};
    use std::time::UNIX_EPOCH;

    use crate::testing::client;

    #[test]
    fn worst_first_orders_by_open_then_lost_then_opened_then_addr() {
        let mut rows = [
            client("10.0.0.9", 1, 0, 5),
            client("10.0.0.8", 1, 0, 5),
            client("10.0.0.7", 1, 0, 6),
            client("10.0.0.6", 1, 3, 0),
            client("10.0.0.5", 2, 0, 0),
            client("::1", 0, 0, 0),
        ];
        rows.sort_by(worst_first);
        let order: Vec<String> = rows.iter().map(|c| c.addr.to_string()).collect();
        assert_eq!(
            order,
            [
                "10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8", "10.0.0.9", "::1"
            ]
        );
    }

    #[test]
    fn accept_errors_drop_routine_errnos_and_name_the_rest() {
        let errors = AcceptErrors::from_kernel(&[
            (libc::EAGAIN, 100_000),
            (libc::EINTR, 3),
            (libc::EMFILE, 812),
            (libc::ENFILE, 0),
            (libc::ECONNABORTED, 5),
            (200, 2),
            (libc::ECONNABORTED, 1),
        ]);
        let got: Vec<(&str, u64)> = errors.iter().collect();
        assert_eq!(got, [("EMFILE", 812), ("ECONNABORTED", 6), ("E200", 2)]);
        assert_eq!(
            serde_json::to_string(&errors).unwrap(),
            r#"{"EMFILE":812,"ECONNABORTED":6,"E200":2}"#
        );
    }

    #[test]
    fn accept_errors_empty_serializes_as_empty_object() {
        let errors = AcceptErrors::from_kernel(&[(libc::EAGAIN, 7)]);
        assert!(errors.is_empty());
        assert_eq!(serde_json::to_string(&errors).unwrap(), "{}");
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(libc::EMFILE), "EMFILE");
        assert_eq!(errno_name(libc::ENFILE), "ENFILE");
        assert_eq!(errno_name(libc::ENOBUFS), "ENOBUFS");
        assert_eq!(errno_name(4095), "E4095");
        assert_eq!(errno_name(0), "E0");
    }

    #[test]
    fn timestamps_have_millisecond_precision_and_are_clamped() {
        let t = UNIX_EPOCH + Duration::from_nanos(1_795_986_000_123_456_789);
        assert_eq!(format_ts(t).to_string(), "2026-11-29T21:00:00.123Z");
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(format_ts(before).to_string(), "1970-01-01T00:00:00.000Z");
        let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(format_ts(far).to_string(), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn durations_serialize_in_their_key_unit_with_microsecond_resolution() {
        let lifetime = Lifetime {
            p50: micros(850_123),
            p90: Duration::from_micros(1_234),
            p99: Duration::from_millis(12),
            max: Duration::from_secs(3),
        };
        assert_eq!(
            serde_json::to_string(&lifetime).unwrap(),
            r#"{"p50":0.85,"p90":1.234,"p99":12.0,"max":3000.0}"#
        );
        let idle = Idle {
            p50: Duration::from_micros(3_200_000),
            max: Duration::from_nanos(1_500),
        };
        assert_eq!(
            serde_json::to_string(&idle).unwrap(),
            r#"{"p50":3.2,"max":1e-6}"#
        );
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Rates {
    pub opened_per_s: f64,
    pub closed_per_s: f64,
    pub rejected_per_s: f64,
    /// `None` when this kernel does not show refusals.
    pub refused_per_s: Option<f64>,
}

impl Rates {
    /// Nothing moved over the interval.
    pub const ZERO: Rates = Rates {
        opened_per_s: 0.0,
        closed_per_s: 0.0,
        rejected_per_s: 0.0,
        refused_per_s: Some(0.0),
    };
}

/// Why Redis turned a connection away, told by the size of its one reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// `-ERR max number of clients reached` (36 bytes; longer in cluster mode).
    MaxClients,
    /// `-DENIED Redis is running in protected mode …` (about 1 KB).
    ProtectedMode,
    /// On Redis's TLS port (`tls-port`): Redis closes a TLS connection it turns away
    /// before the handshake, without a readable error line.
    Tls,
    /// No reply (the close raced the write) or an unknown one.
    Unknown,
}

impl RejectReason {
    pub fn name(self) -> &'static str {
        match self {
            RejectReason::MaxClients => "maxclients",
            RejectReason::ProtectedMode => "protected_mode",
            RejectReason::Tls => "tls",
            RejectReason::Unknown => "unknown",
        }
    }
}

/// A setting worth changing, computed from what the report shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Recommendation {
    /// `maxclients`, `nofile` (the Redis process's open-file limit), `timeout`,
    /// `tcp-backlog`.
    pub setting: &'static str,
    /// The value now; `None` when unknown.
    pub current: Option<u64>,
    pub suggested: u64,
    /// The figures it comes from, in words.
    pub why: String,
}

impl Recommendation {
    /// "maxclients 100 → 300: 5 instances × 18 connections + …".
    pub fn line(&self) -> String {
        format!(
            "{} {} → {}: {}",
            self.setting,
            self.current
                .map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
            self.suggested,
            self.why
        )
    }
}

/// Why the server closed a connection (see `core::close_cause`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerClose {
    Rejection,
    IdleTimeout,
    OutputBuffer,
    Other,
}

/// The closes the server chose, by cause: `closed_by_server`, plus the output-buffer
/// drops that ended in a reset (see `core::close_cause`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServerCloses {
    /// Connections turned away (the rejections that ended in the server's close).
    pub rejection: u64,
    /// Closed after sitting idle for Redis's `timeout`.
    pub idle_timeout: u64,
    /// Dropped with their replies piling up (the output buffer limit).
    pub output_buffer: u64,
    /// Anything else: CLIENT KILL, QUIT, a shutdown.
    pub other: u64,
}

impl ServerCloses {
    pub fn add(&mut self, cause: ServerClose) {
        let slot = match cause {
            ServerClose::Rejection => &mut self.rejection,
            ServerClose::IdleTimeout => &mut self.idle_timeout,
            ServerClose::OutputBuffer => &mut self.output_buffer,
            ServerClose::Other => &mut self.other,
        };
        *slot += 1;
    }

    pub fn total(&self) -> u64 {
        self.rejection + self.idle_timeout + self.output_buffer + self.other
    }

    /// "3 idle timeout, 1 output buffer": the causes that happened, rejections
    /// first; empty when the server closed nothing.
    pub fn describe(&self) -> String {
        [
            (self.rejection, "rejection"),
            (self.idle_timeout, "idle timeout"),
            (self.output_buffer, "output buffer"),
            (self.other, "other"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect::<Vec<_>>()
        .join(", ")
    }
}

/// Rejections counted by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RejectCounts {
    pub maxclients: u64,
    pub protected_mode: u64,
    pub tls: u64,
    pub unknown: u64,
}

impl RejectCounts {
    pub fn add(&mut self, reason: RejectReason) {
        let slot = match reason {
            RejectReason::MaxClients => &mut self.maxclients,
            RejectReason::ProtectedMode => &mut self.protected_mode,
            RejectReason::Tls => &mut self.tls,
            RejectReason::Unknown => &mut self.unknown,
        };
        *slot += 1;
    }

    pub fn total(&self) -> u64 {
        self.maxclients + self.protected_mode + self.tls + self.unknown
    }
}

/// Which way successive gaps go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trend {
    /// Fewer than four gaps: no trend to speak of.
    Unknown,
    /// Later gaps are at least 1.5 times the earlier ones: the client backs off.
    Growing,
    /// Neither growing nor shrinking much.
    Flat,
    /// Later gaps are under two thirds of the earlier ones: the client speeds up.
    Shrinking,
}

named!(Trend {
    Unknown => "unknown",
    Growing => "growing",
    Flat => "flat",
    Shrinking => "shrinking",
});
