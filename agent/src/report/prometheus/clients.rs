//! The per-address families: the first `top` client rows by address, and one
//! `addr="other"` row for the rest.

use super::exposition::{Exposition, MetricType, seconds};
use crate::model::{ClientReport, ClientVerdict, Report};

/// The `addr` label of the aggregate of the addresses beyond the top N.
pub const OTHER: &str = "other";

/// A per-client count and how to read it from a row.
struct ClientCount {
    name: &'static str,
    kind: MetricType,
    help: &'static str,
    /// `None`: unknown on this kernel (no series).
    get: fn(&ClientReport) -> Option<u64>,
}

const CLIENT_COUNTS: [ClientCount; 5] = [
    ClientCount {
        name: "connwatch_client_open",
        kind: MetricType::Gauge,
        help: "Connections open now from this client address (top addresses, worst \
               first; addr=\"other\" sums the rest).",
        get: |c| Some(c.open),
    },
    ClientCount {
        name: "connwatch_client_opened_total",
        kind: MetricType::Counter,
        help: "Connections opened from this client address.",
        get: |c| Some(c.opened),
    },
    ClientCount {
        name: "connwatch_client_closed_total",
        kind: MetricType::Counter,
        help: "Connections from this client address that began to close.",
        get: |c| Some(c.closed),
    },
    ClientCount {
        name: "connwatch_client_rejected_total",
        kind: MetricType::Counter,
        help: "Connections from this client address Redis turned away at once \
               (maxclients, protected mode).",
        get: |c| Some(c.rejected),
    },
    ClientCount {
        name: "connwatch_client_refused_total",
        kind: MetricType::Counter,
        help: "Attempts from this client address refused because nothing listened \
               (absent where the kernel does not show them).",
        get: |c| c.refused,
    },
];

pub(super) fn client_families(x: &mut Exposition, r: &Report, top: usize) {
    let (shown, rest) = r.clients.split_at(top.min(r.clients.len()));
    let addrs: Vec<String> = shown.iter().map(|c| c.addr.to_string()).collect();
    let rows = || shown.iter().zip(addrs.iter().map(String::as_str));

    for count in &CLIENT_COUNTS {
        // Unknown for one row is unknown for all (the kernel does not show it).
        if r.clients.first().is_some_and(|c| (count.get)(c).is_none()) {
            continue;
        }
        let mut f = x.family(count.name, count.kind, count.help);
        for (c, addr) in rows() {
            f.sample(&[("addr", addr)], (count.get)(c).unwrap_or(0));
        }
        let sum = rest.iter().fold(0u64, |acc, c| {
            acc.saturating_add((count.get)(c).unwrap_or(0))
        });
        f.sample(&[("addr", OTHER)], sum);
    }

    let mut f = x.family(
        "connwatch_client_idle_max_seconds",
        MetricType::Gauge,
        "Longest idle time of the open connections from this client address (absent \
         when none is open).",
    );
    for (c, addr) in rows() {
        if let Some(idle) = c.idle {
            f.sample(&[("addr", addr)], seconds(idle.max));
        }
    }
    if let Some(max) = rest.iter().filter_map(|c| c.idle.map(|i| i.max)).max() {
        f.sample(&[("addr", OTHER)], seconds(max));
    }

    // Percentiles do not add up, so "other" has no lifetime series.
    let mut f = x.family(
        "connwatch_client_lifetime_p99_seconds",
        MetricType::Gauge,
        "99th percentile of the lifetimes of closed connections from this client \
         address (absent before one closed; none for addr=\"other\").",
    );
    for (c, addr) in rows() {
        if let Some(life) = c.lifetime {
            f.sample(&[("addr", addr)], seconds(life.p99));
        }
    }

    let mut f = x.family(
        "connwatch_client_verdict",
        MetricType::Gauge,
        "What this client address is doing: 1 for its verdict, 0 for the others; \
         for addr=\"other\", how many of the remaining addresses have each verdict.",
    );
    for (c, addr) in rows() {
        for &v in ClientVerdict::ALL {
            f.sample(&[("addr", addr), ("verdict", v.as_str())], c.verdict == v);
        }
    }
    for &v in ClientVerdict::ALL {
        let n = rest.iter().filter(|c| c.verdict == v).count();
        f.sample(&[("addr", OTHER), ("verdict", v.as_str())], n);
    }

    process_families(x, shown, &addrs);
}

/// A per-process family: name, type, help, and which of (open, opened, failed).
type ProcessFamily = (
    &'static str,
    MetricType,
    &'static str,
    fn(u64, u64, u64) -> u64,
);

/// The local processes of the top addresses: at most five each by pid, plus one
/// `pid="other"` series for the rest of an address's processes.
fn process_families(x: &mut Exposition, shown: &[ClientReport], addrs: &[String]) {
    let families: [ProcessFamily; 3] = [
        (
            "connwatch_client_process_open",
            MetricType::Gauge,
            "Connections open now from this client address opened by this local process              (addresses with local processes among the top ones; pid=\"other\" sums the              address's other processes).",
            |open, _, _| open,
        ),
        (
            "connwatch_client_process_opened_total",
            MetricType::Counter,
            "Connections opened from this client address by this local process.",
            |_, opened, _| opened,
        ),
        (
            "connwatch_client_process_failed_total",
            MetricType::Counter,
            "Attempts of this local process from this client address that failed \
             (refused, rejected, reset).",
            |_, _, failed| failed,
        ),
    ];
    for (name, kind, help, get) in families {
        if shown.iter().all(|c| c.processes.is_empty()) {
            return;
        }
        let mut f = x.family(name, kind, help);
        for (c, addr) in shown.iter().zip(addrs) {
            for p in c.processes.iter() {
                let pid = p.pid.to_string();
                let labels = [
                    ("addr", addr.as_str()),
                    ("pid", pid.as_str()),
                    ("comm", &*p.comm),
                    ("container", p.container.as_deref().unwrap_or("")),
                    ("pod", p.pod.as_deref().unwrap_or("")),
                ];
                f.sample(&labels, get(p.open, p.opened, p.failed));
            }
            if let Some(o) = c.processes_other.as_deref() {
                let labels = [
                    ("addr", addr.as_str()),
                    ("pid", OTHER),
                    ("comm", ""),
                    ("container", ""),
                    ("pod", ""),
                ];
                f.sample(&labels, get(o.open, o.opened, o.failed));
            }
        }
    }
    // The failures by cause: six values, only where every cause is known.
    let mut f = x.family(
        "connwatch_client_process_failed_by_total",
        MetricType::Counter,
        "connwatch_client_process_failed_total by cause: rejected, reset, refused (a \
         reset answered the SYN), timed_out (no answer to the SYNs), abandoned (the \
         application gave up connecting), other (an ICMP error); absent when a cause \
         is unknown.",
    );
    for (c, addr) in shown.iter().zip(addrs) {
        let other = c
            .processes_other
            .as_deref()
            .map(|o| (OTHER.to_owned(), "", None, None, o.failed_by));
        let all = c
            .processes
            .iter()
            .map(|p| {
                let pid = p.pid.to_string();
                (
                    pid,
                    &*p.comm,
                    p.container.as_deref(),
                    p.pod.as_deref(),
                    p.failed_by,
                )
            })
            .chain(other);
        for (pid, comm, container, pod, by) in all {
            let Some(by) = by.known() else { continue };
            for (cause, n) in by.causes() {
                let labels = [
                    ("addr", addr.as_str()),
                    ("pid", pid.as_str()),
                    ("comm", comm),
                    ("container", container.unwrap_or("")),
                    ("pod", pod.unwrap_or("")),
                    ("cause", cause),
                ];
                f.sample(&labels, n);
            }
        }
    }
}
