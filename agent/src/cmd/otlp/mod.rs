//! `watch --otlp URL`: the OTLP exporter. Each interval the agent's loop encodes
//! the reports (`crate::report::otlp`) and hands the bodies to a bounded queue,
//! which never blocks it; a thread of its own POSTs them ([`http`]), retrying with
//! exponential backoff while the collector is down or busy. When the queue is full
//! the oldest request is dropped. Every outcome is counted in the reports' `otlp`.

mod http;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

pub use http::Endpoint;

use crate::diagnose::transitions::Transitions;
use crate::model::{OtlpStatus, Report};
use crate::report::otlp::{self, LOGS_PATH, METRICS_PATH, Origin};

/// Requests that may wait by default: a minute of reports at the default interval.
pub const DEFAULT_QUEUE: u64 = 60;
/// The first wait after a failed attempt; it doubles after each one…
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// …up to this.
const BACKOFF_CAP: Duration = Duration::from_secs(8);
/// How long the exporter may go on sending what is queued once the run ends.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(3);

/// One request: where it goes and its body.
struct Request {
    path: &'static str,
    body: Vec<u8>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Request>,
    /// A request taken by the sender and not yet sent or given up.
    in_flight: bool,
    status: OtlpStatus,
    closing: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    capacity: usize,
}

impl Shared {
    /// The state, even if the other side panicked while holding it (the counts
    /// stay meaningful).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The exporter: owned by the agent's loop, fed once per interval.
pub struct Exporter {
    shared: Arc<Shared>,
    origin: Origin,
    top: usize,
    /// Verdict transitions per instance (network namespace inode), as the NDJSON
    /// stream computes them.
    transitions: BTreeMap<u32, Transitions>,
    sender: Option<(JoinHandle<()>, mpsc::Receiver<()>)>,
}

/// This host's name (`host.name`), as the kernel has it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

impl Exporter {
    /// Starts the sending thread. `capacity` requests may wait (at least 1); `top`
    /// caps the per-address series as on `/metrics`.
    pub fn start(endpoint: Endpoint, capacity: u64, top: usize) -> anyhow::Result<Exporter> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX).max(1),
        });
        let (done_tx, done_rx) = mpsc::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("otlp".into())
            .spawn(move || {
                send_loop(&thread_shared, &endpoint);
                let _ = done_tx.send(());
            })?;
        Ok(Exporter {
            shared,
            origin: Origin {
                host_name: host_name(),
            },
            top,
            transitions: BTreeMap::new(),
            sender: Some((thread, done_rx)),
        })
    }

    /// The counts so far, for the reports' `otlp`.
    pub fn status(&self) -> OtlpStatus {
        let state = self.shared.lock();
        let mut status = state.status.clone();
        status.queued = state.queue.len() as u64 + u64::from(state.in_flight);
        status
    }

    /// Queues the interval's metrics and its verdict transitions. Never waits for
    /// the network: at worst it drops the oldest queued request.
    pub fn export(&mut self, reports: &[Report]) {
        let metrics = otlp::metrics_request(&self.origin, reports, self.top);
        let transitions: Vec<(&Report, _)> = reports
            .iter()
            .map(|r| {
                let netns = r.instance.as_ref().map_or(0, |i| i.netns);
                (r, self.transitions.entry(netns).or_default().update(r))
            })
            .collect();
        let logs = otlp::logs_request(&self.origin, &transitions);
        self.push(Request {
            path: METRICS_PATH,
            body: otlp::encode(&metrics),
        });
        if let Some(logs) = logs {
            self.push(Request {
                path: LOGS_PATH,
                body: otlp::encode(&logs),
            });
        }
    }

    fn push(&self, request: Request) {
        let mut state = self.shared.lock();
        if state.queue.len() >= self.shared.capacity {
            state.queue.pop_front();
            state.status.dropped += 1;
        }
        state.queue.push_back(request);
        drop(state);
        self.shared.wake.notify_one();
    }
}

impl Drop for Exporter {
    /// Lets the thread send what is queued for a few seconds (the last report of a
    /// `--duration` run), then leaves it behind.
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_all();
        if let Some((thread, done)) = self.sender.take() {
            if done
                .recv_timeout(FLUSH_AT_EXIT + Duration::from_secs(1))
                .is_ok()
            {
                let _ = thread.join();
            } else {
                log::warn!("the OTLP exporter did not finish sending in time; left behind");
            }
        }
    }
}

/// What became of one attempt.
enum Outcome {
    Sent,
    /// Try again later (no connection, a timeout, 429, 502, 503, 504).
    Retry(String),
    /// The collector refused it for good (another 4xx or 5xx): drop it.
    Refused(String),
}

fn attempt(endpoint: &Endpoint, request: &Request) -> Outcome {
    match endpoint.post(request.path, &request.body) {
        Ok(code) if (200..300).contains(&code) => Outcome::Sent,
        Ok(code @ (429 | 502 | 503 | 504)) => Outcome::Retry(format!("HTTP {code}")),
        Ok(code) => Outcome::Refused(format!("HTTP {code} for /{}", request.path)),
        Err(e) => Outcome::Retry(e.to_string()),
    }
}

/// The sending thread: takes the oldest request, sends it, and on a failure that
/// may pass waits (doubling, up to [`BACKOFF_CAP`]) and tries it again; while it
/// waits, new requests queue and the oldest fall off the full queue.
fn send_loop(shared: &Shared, endpoint: &Endpoint) {
    let mut deadline: Option<Instant> = None;
    let mut backoff = BACKOFF_FIRST;
    let mut current: Option<Request> = None;
    loop {
        let request = match current.take() {
            Some(r) => r,
            None => {
                let mut state = shared.lock();
                while state.queue.is_empty() && !state.closing {
                    state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
                }
                if state.closing {
                    deadline.get_or_insert_with(|| Instant::now() + FLUSH_AT_EXIT);
                }
                let Some(r) = state.queue.pop_front() else {
                    return;
                };
                state.in_flight = true;
                r
            }
        };
        let outcome = attempt(endpoint, &request);
        let mut state = shared.lock();
        let status = &mut state.status;
        match outcome {
            Outcome::Sent => {
                if status.failing_since.is_some() {
                    log::info!("OTLP export to {} works again", endpoint.url);
                }
                status.sent += 1;
                status.failing_since = None;
                status.error = None;
                backoff = BACKOFF_FIRST;
                state.in_flight = false;
            }
            Outcome::Refused(why) => {
                // Once per run of failures: a collector that refuses everything
                // would otherwise log a line per interval.
                if status.failing_since.is_none() {
                    log::warn!("OTLP export to {}: {why}; request dropped", endpoint.url);
                } else {
                    log::debug!("OTLP export to {}: {why}; request dropped", endpoint.url);
                }
                status.dropped += 1;
                status.failing_since.get_or_insert_with(SystemTime::now);
                status.error = Some(why);
                state.in_flight = false;
            }
            Outcome::Retry(why) => {
                if status.failing_since.is_none() {
                    log::warn!(
                        "OTLP export to {} failed ({why}); retrying with backoff",
                        endpoint.url
                    );
                    status.failing_since = Some(SystemTime::now());
                }
                status.retries += 1;
                status.error = Some(why);
                if state.closing {
                    // The run is over: what cannot go now is given up.
                    let given_up = state.queue.len() as u64 + 1;
                    state.status.dropped += given_up;
                    state.queue.clear();
                    state.in_flight = false;
                    return;
                }
                // Wait, unless the run ends meanwhile.
                let (guard, _) = shared
                    .wake
                    .wait_timeout_while(state, backoff, |s| !s.closing)
                    .unwrap_or_else(|e| e.into_inner());
                state = guard;
                backoff = (backoff * 2).min(BACKOFF_CAP);
                current = Some(request);
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let given_up = state.queue.len() as u64 + u64::from(current.is_some());
            state.status.dropped += given_up;
            state.queue.clear();
            state.in_flight = false;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Severity, VerdictKind};
    use crate::testing::{report_with, verdict};
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A collector on loopback that answers each request with the next status of
    /// `statuses`, then stops; it records each request's path.
    fn collector(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let paths = Arc::new(Mutex::new(Vec::new()));
        let seen = paths.clone();
        std::thread::spawn(move || {
            for status in statuses {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = Vec::new();
                let mut byte = [0u8; 1];
                while !buf.ends_with(b"\r\n\r\n") {
                    s.read_exact(&mut byte).unwrap();
                    buf.push(byte[0]);
                }
                let head = String::from_utf8(buf).unwrap();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(head.contains("Content-Type: application/x-protobuf\r\n"));
                let mut body = vec![0u8; len];
                s.read_exact(&mut body).unwrap();
                seen.lock()
                    .unwrap()
                    .push(head.split(' ').nth(1).unwrap().to_owned());
                write!(s, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").unwrap();
            }
        });
        (url, paths)
    }

    fn wait_for(exporter: &Exporter, pred: impl Fn(&OtlpStatus) -> bool) -> OtlpStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = exporter.status();
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "{s:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn busy_is_retried_refused_is_dropped_and_logs_follow_their_metrics() {
        let (url, paths) = collector(vec![503, 200, 400, 200, 200]);
        let mut exporter = Exporter::start(Endpoint::parse(&url).unwrap(), 10, 20).unwrap();
        let quiet = report_with(Vec::new());
        let mut alarmed = quiet.clone();
        alarmed.verdicts = vec![verdict(VerdictKind::FdLimit, Severity::Critical, None)];
        exporter.export(std::slice::from_ref(&quiet));
        // The 503 is retried: the same request goes again after the backoff.
        let failing = wait_for(&exporter, |s| s.retries == 1);
        assert_eq!(failing.error.as_deref(), Some("HTTP 503"));
        assert!(failing.failing_since.is_some());
        let s = wait_for(&exporter, |s| s.sent == 1);
        assert_eq!((s.failing_since, s.error), (None, None));
        // The verdict raised: metrics, then its log record. The 400 drops the metrics.
        exporter.export(std::slice::from_ref(&alarmed));
        exporter.export(std::slice::from_ref(&alarmed));
        let s = wait_for(&exporter, |s| s.sent + s.dropped == 4);
        assert_eq!((s.sent, s.dropped, s.retries, s.queued), (3, 1, 1, 0));
        assert_eq!(
            paths.lock().unwrap().as_slice(),
            [
                "/v1/metrics",
                "/v1/metrics",
                "/v1/metrics",
                "/v1/logs",
                "/v1/metrics"
            ]
        );
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_every_request() {
        // A port nothing listens on: every attempt is refused.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let mut exporter = Exporter::start(Endpoint::parse(&url).unwrap(), 2, 20).unwrap();
        let report = report_with(Vec::new());
        for _ in 0..6 {
            exporter.export(std::slice::from_ref(&report));
        }
        let s = exporter.status();
        assert_eq!(s.sent + s.dropped + s.queued, 6, "{s:?}");
        assert!(s.queued <= 3 && s.dropped >= 3, "{s:?}");
        let s = wait_for(&exporter, |s| s.retries >= 1);
        assert!(
            s.error.as_deref().is_some_and(|e| e.contains("refused")),
            "{s:?}"
        );
    }
}
