//! Slow consumers: clients that do not take their replies. Redis keeps what it
//! could not send in the client's output buffer, on top of the kernel's send
//! queue; when that passes `client-output-buffer-limit` Redis drops the client,
//! which, reconnecting, does it again. The agent sees the send queues in its
//! sock_diag scans (`clients[].send_queue`) and the drops as `output_buffer`
//! server closes.

use std::collections::VecDeque;

use serde_json::{Map, json};

use super::{Diagnoser, nanos, round1};
use crate::model::{
    ClientReport, Nanos, Report, Severity, Verdict, VerdictKind, human_bytes, human_duration,
};

/// Output-buffer drops of one address within the window that make a reconnect loop.
pub const LOOP_DROPS: usize = 2;

/// What the diagnoser remembers of an address that holds many unread replies or
/// was dropped for them.
#[derive(Clone, Debug, Default)]
pub(super) struct SlowState {
    /// Since when its send queue has been over the bar; `None`: it is not.
    since: Option<Nanos>,
    /// Output-buffer drops counted so far (the row's cumulative count).
    seen: u64,
    /// When the drops within the window were seen.
    drops: VecDeque<Nanos>,
}

/// The host-wide figures a slow-consumer verdict cites beside the address's own:
/// the output-buffer drops the sockets showed and those INFO counted (both since
/// the agent started), and what INFO says clients' buffers hold.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Buffers {
    /// `totals.server_closes.output_buffer`.
    socket_drops: u64,
    /// `redis.client_output_buffer_limit_disconnections_delta` (Valkey 8; `None` on
    /// Redis 7.0, which does not count them).
    info_drops: Option<u64>,
    /// `redis.mem_clients_normal`.
    mem_clients_normal: Option<u64>,
}

impl Diagnoser {
    /// Before the addresses are judged: the bytes queued on the whole host, and
    /// each address's queue and drops.
    pub(super) fn track_slow(&mut self, now: Nanos, report: &Report) {
        // Quiet rows hold nothing open: no queue.
        let total: u64 = report
            .clients
            .notable()
            .filter_map(|c| c.send_queue.map(|q| q.bytes))
            .sum();
        self.queued_total = total;
        self.buffers = Buffers {
            socket_drops: report.totals.server_closes.output_buffer,
            info_drops: report.redis.client_output_buffer_limit_disconnections_delta,
            mem_clients_normal: report.redis.mem_clients_normal,
        };
        let window = self.window_ns();
        for c in report.clients.notable() {
            let queued = c.send_queue.map_or(0, |q| q.bytes);
            let big = queued >= self.cfg.slow_consumer_min_bytes
                && queued as f64 >= self.cfg.slow_consumer_share * total as f64;
            let drops = c.server_closes.output_buffer;
            if !big && drops == 0 && !self.slow.contains_key(&c.addr) {
                continue;
            }
            let st = self.slow.entry(c.addr).or_default();
            st.since = big.then(|| st.since.unwrap_or(now));
            let new = drops.saturating_sub(st.seen).min(64);
            st.drops.extend(std::iter::repeat_n(now, new as usize));
            st.seen = st.seen.max(drops);
            while st.drops.front().is_some_and(|&t| t + window < now) {
                st.drops.pop_front();
            }
        }
        // Kept while it matters, and while a drop was ever counted (to tell the
        // next one from the count so far); evicted addresses go.
        self.slow
            .retain(|_, st| st.since.is_some() || !st.drops.is_empty() || st.seen > 0);
        for ip in &report.evicted {
            self.slow.remove(ip);
        }
    }

    /// `c` has not taken a large share of the host's queued replies for the short
    /// window, or Redis dropped it for unread replies twice within the window.
    pub(super) fn slow_consumer_verdict(&self, now: Nanos, c: &ClientReport) -> Option<Verdict> {
        let st = self.slow.get(&c.addr)?;
        let held = st
            .since
            .map(|s| now.saturating_sub(s))
            .filter(|&d| d >= nanos(self.cfg.short_window));
        let looped = st.drops.len() >= LOOP_DROPS;
        if held.is_none() && !looped {
            return None;
        }
        let queue = c.send_queue.unwrap_or_default();
        let share = if self.queued_total > 0 {
            queue.bytes as f64 / self.queued_total as f64
        } else {
            0.0
        };
        let mut evidence = Map::new();
        evidence.insert("send_queue_bytes".into(), json!(queue.bytes));
        evidence.insert("send_queue_max".into(), json!(queue.max));
        evidence.insert("share".into(), json!((share * 100.0).round() / 100.0));
        if let Some(d) = held {
            evidence.insert("held_s".into(), json!(round1(d as f64 / 1e9)));
        }
        evidence.insert("output_buffer_drops".into(), json!(st.drops.len()));
        let b = self.buffers;
        evidence.insert("host_output_buffer_closes".into(), json!(b.socket_drops));
        evidence.insert(
            "info_output_buffer_disconnections".into(),
            json!(b.info_drops),
        );
        evidence.insert("mem_clients_normal".into(), json!(b.mem_clients_normal));
        evidence.insert("window_s".into(), json!(self.cfg.window.as_secs_f64()));
        let mut summary = Vec::new();
        if let Some(d) = held {
            summary.push(format!(
                "{} has not taken {} of replies ({:.0} % of all queued) for {}",
                c.addr,
                human_bytes(queue.bytes),
                share * 100.0,
                human_duration(std::time::Duration::from_nanos(d))
            ));
        }
        if looped {
            let info = b.info_drops.map_or_else(String::new, |n| {
                format!(" (INFO counts {n} output-buffer disconnections since connwatch started)")
            });
            summary.push(format!(
                "Redis dropped {} {} times in the last {} for replies it did not read, and it reconnected{info}",
                c.addr,
                st.drops.len(),
                human_duration(self.cfg.window)
            ));
        }
        Some(Verdict {
            kind: VerdictKind::SlowConsumer,
            severity: if looped {
                Severity::Critical
            } else {
                Severity::Warning
            },
            addr: Some(c.addr),
            summary: format!("{}: a slow consumer", summary.join("; ")),
            evidence,
            action: format!(
                "Make the client on {} read its replies as they come, and fetch large values in pages (SCAN/HSCAN/SSCAN/ZSCAN, LRANGE in slices) rather than whole; size client-output-buffer-limit for normal clients to the largest reply it must take (INFO memory's mem_clients_normal shows what clients hold). Dropping it only starts it over",
                c.addr
            ),
            stale_connections: Vec::new(),
        })
    }
}
