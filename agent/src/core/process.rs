//! Which local process opened which connection.
//!
//! The kernel sends a [`Event::Connector`](crate::model::Event::Connector) when a
//! process of this host connects to a watched port, with the client's end of the
//! connection: [`Joins`] keeps it until the server's side of the same 4-tuple opens
//! (the client's socket leaves SYN_SENT before the server's leaves SYN_RECV, so the
//! record comes first), and the connection then carries its owner's pid. A failed
//! connect counts against its process when this instance refused that attempt.
//!
//! Per address, [`ProcStats`] counts each process's connections: at most
//! [`MAX_PROCESSES`] processes by pid, the rest summed as `other`.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::model::{
    ConnKey, FailedBy, Failure, FastMap, Identity, NANOS_PER_SEC, Nanos, OtherProcesses, Process,
    ProcessReport, normalize,
};

/// A connector not joined within this time never will be (a handshake takes
/// well under a second; the record was for another instance, or its open was lost).
pub const JOIN_WINDOW: Nanos = 10 * NANOS_PER_SEC;
/// At most this many connectors and refusals wait for their join.
pub const MAX_WAITING: usize = 65_536;
/// Processes kept by pid per address; more are summed as `other`.
pub const MAX_PROCESSES: usize = 32;
/// Processes shown per address row, worst first; the rest are summed as `other`.
pub const TOP_PROCESSES: usize = 5;

/// (server, client): a connection's ends as the server's key has them.
type Ends = (SocketAddr, SocketAddr);

/// Connectors and refusals waiting to be joined with the server's side.
#[derive(Clone, Debug, Default)]
pub struct Joins {
    connectors: FastMap<Ends, (Nanos, Process)>,
    refused: FastMap<Ends, Nanos>,
    /// Entries that found no room (more than [`MAX_WAITING`] waiting).
    pub dropped: u64,
}

impl Joins {
    /// A process connected from `client` to `server`.
    pub fn on_connector(&mut self, ts: Nanos, client: SocketAddr, server: SocketAddr, p: &Process) {
        let ends = (normalize(server), normalize(client));
        if self.connectors.len() >= MAX_WAITING && !self.connectors.contains_key(&ends) {
            self.dropped += 1;
            return;
        }
        self.connectors.insert(ends, (ts, p.clone()));
    }

    /// The process that opened `key`, if a connector for it waits.
    pub fn take(&mut self, key: &ConnKey) -> Option<Process> {
        self.connectors
            .remove(&(key.local, key.remote))
            .map(|(_, p)| p)
    }

    /// This instance refused an attempt on `key`: its connector may follow.
    pub fn on_refused(&mut self, ts: Nanos, key: &ConnKey) {
        if self.refused.len() >= MAX_WAITING {
            self.dropped += 1;
            return;
        }
        self.refused.insert((key.local, key.remote), ts);
    }

    /// Whether this instance refused the attempt from `client` to `server`.
    pub fn take_refused(&mut self, client: SocketAddr, server: SocketAddr) -> bool {
        self.refused
            .remove(&(normalize(server), normalize(client)))
            .is_some()
    }

    /// Forgets what waited longer than [`JOIN_WINDOW`].
    pub fn expire(&mut self, now: Nanos) {
        let fresh = |ts: Nanos| now.saturating_sub(ts) <= JOIN_WINDOW;
        self.connectors.retain(|_, (ts, _)| fresh(*ts));
        self.refused.retain(|_, ts| fresh(*ts));
    }

    /// Connectors waiting now.
    pub fn waiting(&self) -> usize {
        self.connectors.len()
    }
}

/// One process's connections from one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcCount {
    pub pid: u32,
    pub comm: Arc<str>,
    pub identity: Identity,
    pub open: u64,
    pub opened: u64,
    pub failed: u64,
    /// `failed` by cause.
    pub failed_by: FailedBy,
    pub last_seen: Nanos,
}

/// The processes of one address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcStats {
    known: Vec<ProcCount>,
    other: OtherProcesses,
}

impl ProcStats {
    /// The entry of `p`, made (evicting the longest-quiet process without open
    /// connections into `other`) if there is room; `None`: counted as `other`.
    fn entry(&mut self, p: &Process, ts: Nanos) -> Option<&mut ProcCount> {
        let (at, fresh) = match self.known.iter().position(|c| c.pid == p.pid) {
            Some(at) => (at, false),
            None => {
                if self.known.len() >= MAX_PROCESSES {
                    let quiet = (0..self.known.len())
                        .filter(|&i| self.known[i].open == 0)
                        .min_by_key(|&i| self.known[i].last_seen)?;
                    let gone = self.known.swap_remove(quiet);
                    self.other.opened += gone.opened;
                    self.other.failed += gone.failed;
                    self.other.failed_by.add(&gone.failed_by);
                }
                self.known.push(ProcCount {
                    pid: p.pid,
                    comm: Arc::clone(&p.comm),
                    identity: Identity::default(),
                    open: 0,
                    opened: 0,
                    failed: 0,
                    failed_by: FailedBy::default(),
                    last_seen: ts,
                });
                (self.known.len() - 1, true)
            }
        };
        let c = &mut self.known[at];
        if fresh || c.comm != p.comm {
            // A new pid entry, or the pid reused: the latest name and cgroup.
            c.comm = Arc::clone(&p.comm);
            c.identity = p.identity();
        }
        c.last_seen = c.last_seen.max(ts);
        Some(c)
    }

    fn by_pid(&mut self, pid: u32) -> Option<&mut ProcCount> {
        self.known.iter_mut().find(|c| c.pid == pid)
    }

    /// `p` opened a connection.
    pub fn on_opened(&mut self, p: &Process, ts: Nanos) {
        match self.entry(p, ts) {
            Some(c) => {
                c.open += 1;
                c.opened += 1;
            }
            None => {
                self.other.open += 1;
                self.other.opened += 1;
            }
        }
    }

    /// `p` failed to connect, for `why`.
    pub fn on_failed(&mut self, p: &Process, ts: Nanos, why: Failure) {
        let (failed, by) = match self.entry(p, ts) {
            Some(c) => (&mut c.failed, &mut c.failed_by),
            None => (&mut self.other.failed, &mut self.other.failed_by),
        };
        *failed += 1;
        by.count(why);
    }

    /// A connection of `pid` that its entry counts failed (rejected, reset).
    pub fn on_failed_pid(&mut self, pid: u32, why: Failure) {
        let (failed, by) = match self.by_pid(pid) {
            Some(c) => (&mut c.failed, &mut c.failed_by),
            None => (&mut self.other.failed, &mut self.other.failed_by),
        };
        *failed += 1;
        by.count(why);
    }

    /// A connection of `pid` closed; with `forget`, it is taken back entirely
    /// (it was the agent's own).
    pub fn on_released(&mut self, pid: u32, forget: bool) {
        let (open, opened) = match self.by_pid(pid) {
            Some(c) => (&mut c.open, &mut c.opened),
            None => (&mut self.other.open, &mut self.other.opened),
        };
        *open = open.saturating_sub(1);
        if forget {
            *opened = opened.saturating_sub(1);
            // Nothing left to say of it (the agent's own connection, taken back).
            self.known
                .retain(|c| c.pid != pid || c.open + c.opened + c.failed > 0);
        }
    }

    /// Whether any process is known.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty() && self.other == OtherProcesses::default()
    }

    /// The row's processes: the worst [`TOP_PROCESSES`] (most open, then most
    /// failed, then most opened), and the rest summed. One allocation, none for
    /// a row without processes (a remote client's): every new address of a
    /// flood builds its row once.
    pub fn report(&self) -> (Arc<[ProcessReport]>, Option<Box<OtherProcesses>>) {
        let row = |c: &ProcCount| ProcessReport {
            pid: c.pid,
            comm: c.comm.clone(),
            container: c.identity.container.clone(),
            pod: c.identity.pod.clone(),
            open: c.open,
            opened: c.opened,
            failed: c.failed,
            failed_by: c.failed_by,
        };
        let mut other = self.other;
        let top: Arc<[ProcessReport]> = match self.known.as_slice() {
            [] => Arc::default(),
            [only] => std::iter::once(row(only)).collect(),
            known => {
                let mut all: Vec<&ProcCount> = known.iter().collect();
                all.sort_by(|a, b| {
                    (b.open, b.failed, b.opened, a.pid).cmp(&(a.open, a.failed, a.opened, b.pid))
                });
                for c in all.iter().skip(TOP_PROCESSES) {
                    other.open += c.open;
                    other.opened += c.opened;
                    other.failed += c.failed;
                    other.failed_by.add(&c.failed_by);
                }
                all.iter().take(TOP_PROCESSES).map(|c| row(c)).collect()
            }
        };
        let other = (other != OtherProcesses::default()).then(|| Box::new(other));
        (top, other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, comm: &str) -> Process {
        Process {
            pid,
            comm: comm.into(),
            stack: None,
            cgroup: Some(format!("/system.slice/docker-{}.scope", "ab".repeat(32)).into()),
        }
    }

    fn key(server: &str, client: &str) -> ConnKey {
        ConnKey::in_netns(9, server.parse().unwrap(), client.parse().unwrap())
    }

    #[test]
    fn a_connector_joins_the_accepted_connection_by_its_four_tuple() {
        let mut j = Joins::default();
        let p = proc(4242, "gunicorn");
        let client = "[::ffff:127.0.0.5]:40000".parse().unwrap();
        j.on_connector(1, client, "127.0.0.1:6379".parse().unwrap(), &p);
        assert_eq!(j.take(&key("127.0.0.1:6379", "127.0.0.5:40001")), None);
        assert_eq!(j.take(&key("127.0.0.1:6380", "127.0.0.5:40000")), None);
        assert_eq!(j.take(&key("127.0.0.1:6379", "127.0.0.5:40000")), Some(p));
        assert_eq!(j.waiting(), 0);
    }

    #[test]
    fn waiting_entries_expire_and_are_bounded() {
        let mut j = Joins::default();
        let p = proc(1, "a");
        j.on_connector(
            0,
            "127.0.0.5:1".parse().unwrap(),
            "127.0.0.1:6379".parse().unwrap(),
            &p,
        );
        j.on_refused(0, &key("127.0.0.1:6379", "127.0.0.5:2"));
        j.expire(JOIN_WINDOW);
        assert_eq!(j.waiting(), 1);
        j.expire(JOIN_WINDOW + 1);
        assert_eq!(j.waiting(), 0);
        assert!(!j.take_refused(
            "127.0.0.5:2".parse().unwrap(),
            "127.0.0.1:6379".parse().unwrap()
        ));
        for port in 0..=MAX_WAITING as u32 {
            let client = SocketAddr::new([10, 0, (port >> 16) as u8, 1].into(), port as u16);
            j.on_connector(0, client, "127.0.0.1:6379".parse().unwrap(), &p);
        }
        assert_eq!(j.waiting(), MAX_WAITING);
        assert_eq!(j.dropped, 1);
    }

    #[test]
    fn a_refused_attempt_is_joined_once() {
        let mut j = Joins::default();
        j.on_refused(5, &key("127.0.0.1:6379", "127.0.0.5:2"));
        let (client, server) = (
            "127.0.0.5:2".parse().unwrap(),
            "127.0.0.1:6379".parse().unwrap(),
        );
        assert!(j.take_refused(client, server));
        assert!(!j.take_refused(client, server));
    }

    #[test]
    fn processes_are_counted_and_reported_worst_first_with_the_rest_as_other() {
        let mut s = ProcStats::default();
        let leaker = proc(4242, "gunicorn");
        let pool = proc(7, "pool");
        for _ in 0..3 {
            s.on_opened(&leaker, 10);
        }
        s.on_opened(&pool, 10);
        s.on_opened(&pool, 11);
        s.on_released(7, false);
        s.on_failed(&pool, 12, Failure::TimedOut);
        s.on_failed_pid(4242, Failure::Rejected);
        let (top, other) = s.report();
        assert_eq!(other, None);
        assert_eq!(top.len(), 2);
        assert_eq!(
            (
                top[0].pid,
                &*top[0].comm,
                top[0].open,
                top[0].opened,
                top[0].failed
            ),
            (4242, "gunicorn", 3, 3, 1)
        );
        assert_eq!(top[0].container.as_deref(), Some("ab".repeat(32).as_str()));
        assert_eq!(
            (top[1].pid, top[1].open, top[1].opened, top[1].failed),
            (7, 1, 2, 1)
        );
        // Each failure under its cause.
        assert_eq!(
            (top[0].failed_by.known(), top[1].failed_by.known()),
            (
                Some(&FailedBy {
                    rejected: 1,
                    ..FailedBy::default()
                }),
                Some(&FailedBy {
                    timed_out: 1,
                    ..FailedBy::default()
                })
            )
        );
        // Beyond the top, summed.
        for pid in 100..100 + TOP_PROCESSES as u32 {
            s.on_opened(&proc(pid, "w"), 20);
        }
        let (top, other) = s.report();
        assert_eq!(top.len(), TOP_PROCESSES);
        // The pool stays ahead of the workers (one open each) by its failure; the
        // last two workers (by pid) are summed.
        let pids: Vec<u32> = top.iter().map(|p| p.pid).collect();
        assert_eq!(pids, [4242, 7, 100, 101, 102]);
        let other = other.unwrap();
        assert_eq!((other.open, other.opened, other.failed), (2, 2, 0));
        // A failure of unknown cause makes the split unknown (null), not 0.
        s.on_failed(&proc(101, "w"), 21, Failure::Unknown);
        s.on_failed(&proc(102, "w"), 21, Failure::Abandoned);
        let (top, _) = s.report();
        let w = |pid| top.iter().find(|p| p.pid == pid).unwrap();
        assert_eq!((w(101).failed, w(101).failed_by.known()), (1, None));
        assert_eq!(
            serde_json::to_value(w(101)).unwrap()["failed_by"],
            serde_json::Value::Null
        );
        assert_eq!(
            serde_json::to_value(w(102)).unwrap()["failed_by"],
            serde_json::json!({"rejected": 0, "reset": 0, "refused": 0, "timed_out": 0, "abandoned": 1, "other": 0})
        );
    }

    #[test]
    fn past_the_bound_quiet_processes_make_room_and_busy_ones_go_to_other() {
        let mut s = ProcStats::default();
        for pid in 0..MAX_PROCESSES as u32 {
            s.on_opened(&proc(pid, "w"), u64::from(pid));
        }
        // All hold a connection: a new process is counted as other.
        s.on_opened(&proc(999, "late"), 100);
        assert_eq!(s.other.open, 1);
        s.on_released(999, false);
        assert_eq!(s.other.open, 0);
        // Process 3 lets go: the next new one takes its place, 3's counts go to other.
        s.on_released(3, false);
        s.on_opened(&proc(1000, "new"), 101);
        assert_eq!(s.known.len(), MAX_PROCESSES);
        assert!(s.known.iter().any(|c| c.pid == 1000));
        assert!(!s.known.iter().any(|c| c.pid == 3));
        assert_eq!(s.other.opened, 2);
    }

    #[test]
    fn a_reused_pid_takes_the_new_name_and_forgetting_takes_the_open_back() {
        let mut s = ProcStats::default();
        s.on_opened(&proc(5, "old"), 1);
        s.on_opened(&proc(5, "new"), 2);
        s.on_released(5, true);
        let (top, _) = s.report();
        assert_eq!((&*top[0].comm, top[0].open, top[0].opened), ("new", 1, 1));
    }
}
