//! Which client rows an NDJSON stream writes: `--clients changed` (the default)
//! and `--full-every`, or `--clients all`.
//!
//! A report holds a row for every address the agent knows, and most of them say
//! the same thing interval after interval (1,000 quiet pooled clients wrote ~35
//! GB/day of unchanged rows). [`RowFilter`] keeps, per instance, what a reader of
//! the stream holds for each address, and writes a row again only when it would
//! tell the reader something new:
//!
//! - the address appeared (the reader holds no row for it);
//! - a counter moved (opened, closed and by whom, reset, rejected, refused,
//!   client mode's failed connects, bytes), or `open`, `seeded` or `internal` changed;
//! - its verdict changed, or is anything but healthy (such rows go out every
//!   interval, as a person watching them expects).
//!
//! A row left out is as last written, with all its `rates` 0 (nothing moved);
//! `age_s` and `idle_s` are not tracked: a row is not written again only because
//! its connections grew older. Each report says what it holds (`clients_mode`,
//! `clients_omitted`, `clients_gone`), and the first report of each instance and
//! one every `full_every` (by `uptime_s`) hold every row, so a reader can start
//! anywhere and rebuild the state; docs/REPORT.md says how.
//!
//! The filter only chooses rows: the report it is given is left as it is (the text
//! view, Prometheus and HTML show the whole report), and what it returns is either
//! that report, or a copy with fewer rows.

use std::borrow::Cow;
use std::collections::BTreeMap;
#[cfg(test)]
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::model::{ClientReport, ClientVerdict, ClientsMode, ConnectFailures, FastMap, Report};

/// How often a `--clients changed` stream writes every row, by default.
pub const DEFAULT_FULL_EVERY: Duration = Duration::from_secs(5 * 60);

/// What a reader holds for one address: the figures whose change makes the row
/// worth writing again. A stream keeps only their [`Held::digest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Held {
    open: u64,
    seeded: u64,
    opened: u64,
    closed: u64,
    closed_by_server: u64,
    closed_by_client: u64,
    reset: u64,
    rejected: u64,
    refused: Option<u64>,
    /// Client mode: connects that failed without a refusal move only these.
    failed_connects: Option<Option<ConnectFailures>>,
    bytes_in: u64,
    bytes_out: u64,
    internal: bool,
    verdict: ClientVerdict,
}

impl Held {
    fn of(c: &ClientReport) -> Self {
        Held {
            open: c.open,
            seeded: c.seeded,
            opened: c.opened,
            closed: c.closed,
            closed_by_server: c.closed_by_server,
            closed_by_client: c.closed_by_client,
            reset: c.reset,
            rejected: c.rejected,
            refused: c.refused,
            failed_connects: c.failed_connects,
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
            internal: c.internal,
            verdict: c.verdict,
        }
    }

    /// A 64-bit digest of the figures, which a stream keeps instead of the
    /// figures themselves: an eighth of the memory, in the map that every
    /// changed row of a flood of new addresses goes through. Two different
    /// figures share a digest once in 2^64 changes (that row would not be
    /// written again until its next change).
    fn digest(&self) -> u64 {
        use std::hash::BuildHasher;
        foldhash::quality::FixedState::default().hash_one(self)
    }
}

/// One instance's stream.
#[derive(Debug)]
struct Stream {
    /// `uptime` of the last report written with every row; `None` before the first.
    last_full: Option<Duration>,
    /// Every address of the previous report, as the reader holds it (kept in
    /// place from one report to the next: one entry per address). Reports come
    /// in order: a row not `changed` is as the previous report held it, and
    /// `evicted` names the addresses that left.
    held: FastMap<IpAddr, u64>,
}

/// Chooses the client rows of each NDJSON report; one stream per instance
/// (`instance.netns`).
#[derive(Debug)]
pub struct RowFilter {
    /// `None`: every report is full (`--clients all`).
    full_every: Option<Duration>,
    streams: BTreeMap<u32, Stream>,
}

impl RowFilter {
    /// `--clients all`: every report with every row, as built.
    pub fn all() -> Self {
        RowFilter {
            full_every: None,
            streams: BTreeMap::new(),
        }
    }

    /// `--clients changed`: the changed rows, and every row in the first report of
    /// each instance and once `full_every` has passed since the last full one.
    pub fn changed(full_every: Duration) -> Self {
        RowFilter {
            full_every: Some(full_every),
            streams: BTreeMap::new(),
        }
    }

    /// Whether the stream's rows are written sparse (`--clients changed`: without
    /// the keys at their default, see `report::json_row`); `--clients all` writes
    /// every key of every row.
    pub fn sparse(&self) -> bool {
        self.full_every.is_some()
    }

    /// Forgets what was written: the next report of each instance holds every row
    /// (for a new output file after logrotate, which a reader may read alone).
    pub fn restart(&mut self) {
        self.streams.clear();
    }

    /// The reports of one interval, one per instance, each chosen by [`select`].
    /// An instance without a report in a non-empty interval has left (the fleet
    /// forgot it): its stream is forgotten too, and starts full if it returns.
    ///
    /// [`select`]: RowFilter::select
    pub fn interval<'a>(&mut self, reports: &'a [Report]) -> Vec<Cow<'a, Report>> {
        if !reports.is_empty() {
            let present: Vec<u32> = reports.iter().map(netns).collect();
            self.streams.retain(|n, _| present.contains(n));
        }
        reports.iter().map(|r| self.select(r)).collect()
    }

    /// The report as the stream writes it: `report` itself when it is due to hold
    /// every row (or with `--clients all`), else a copy with the rows to write.
    pub fn select<'a>(&mut self, report: &'a Report) -> Cow<'a, Report> {
        let Some(every) = self.full_every else {
            return Cow::Borrowed(report);
        };
        let stream = self.streams.entry(netns(report)).or_insert(Stream {
            last_full: None,
            held: FastMap::default(),
        });
        let full = stream
            .last_full
            .is_none_or(|last| due(last, report.uptime, every));
        if full {
            // The reader starts over from this report: it holds every row.
            stream.held.clear();
            stream.held.extend(
                report
                    .clients
                    .iter()
                    .map(|c| (c.addr, Held::of(c).digest())),
            );
            stream.last_full = Some(report.uptime);
            return Cow::Borrowed(report);
        }
        // A row the report did not change is as the reader holds it; only the others
        // are compared with what was written. Rows with a verdict go out every
        // interval. Quiet rows (not yielded) are neither.
        let mut clients: Vec<ClientReport> = Vec::new();
        for c in report.clients.notable() {
            let flagged = c.verdict != ClientVerdict::Healthy;
            if c.changed {
                let now = Held::of(c).digest();
                if stream.held.insert(c.addr, now) != Some(now) || flagged {
                    clients.push(c.clone());
                }
            } else if flagged {
                clients.push(c.clone());
            }
        }
        let mut gone: Vec<IpAddr> = report
            .evicted
            .iter()
            .filter(|a| stream.held.remove(a).is_some())
            .copied()
            .collect();
        gone.sort_unstable();
        Cow::Owned(Report {
            kind: report.kind,
            ts: report.ts,
            uptime: report.uptime,
            role: report.role,
            ports: report.ports.clone(),
            instance: report.instance.clone(),
            probe: report.probe.clone(),
            otlp: report.otlp.clone(),
            totals: report.totals.clone(),
            redis: report.redis.clone(),
            limits: report.limits.clone(),
            capacity: report.capacity.clone(),
            verdicts: report.verdicts.clone(),
            recommendations: report.recommendations.clone(),
            clients_mode: ClientsMode::Changed,
            clients_omitted: (report.clients.len() - clients.len()) as u64,
            clients_gone: gone,
            clients: clients.into(),
            evicted: report.evicted.clone(),
        })
    }
}

/// Whether a report at `now` must hold every row: `every` has passed since the
/// last full one (or the clock went back, as a replay of another run may).
fn due(last_full: Duration, now: Duration, every: Duration) -> bool {
    now < last_full || now - last_full >= every
}

fn netns(report: &Report) -> u32 {
    report.instance.as_ref().map_or(0, |i| i.netns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Instance, InstanceKey, Rates, Severity, VerdictKind};
    use crate::testing::{client, report_with, verdict};

    const SEC: Duration = Duration::from_secs(1);

    /// 200 quiet holders (10.0.x.y, one connection each) and a churner at 10.9.9.9
    /// that opened and closed `churned` connections.
    fn interval(at: u64, churned: u64) -> Report {
        let mut rows: Vec<ClientReport> = (0..200u32)
            .map(|i| {
                let mut c = client(&format!("10.0.{}.{}", i / 250, i % 250 + 1), 1, 0, 1);
                c.closed = 0;
                c.closed_by_server = 0;
                c.bytes_in = 14;
                c.bytes_out = 7;
                c
            })
            .collect();
        let mut churner = client("10.9.9.9", 0, 0, churned);
        churner.closed = churned;
        churner.closed_by_server = 0;
        churner.closed_by_client = churned;
        rows.push(churner);
        rows.sort_by(crate::model::worst_first);
        let mut r = report_with(rows);
        r.uptime = SEC * u32::try_from(at).unwrap();
        r
    }

    /// The report as the stream writes it.
    fn write(f: &mut RowFilter, r: &Report) -> Report {
        f.select(r).into_owned()
    }

    fn addrs(r: &Report) -> Vec<String> {
        r.clients.iter().map(|c| c.addr.to_string()).collect()
    }

    /// (mode, rows written, rows left out, addresses gone).
    fn shape(r: &Report) -> (ClientsMode, usize, u64, Vec<String>) {
        let gone = r.clients_gone.iter().map(ToString::to_string).collect();
        (r.clients_mode, r.clients.len(), r.clients_omitted, gone)
    }

    #[test]
    fn quiet_rows_are_written_once_then_only_what_changes() {
        let mut f = RowFilter::changed(Duration::from_secs(300));
        let first = interval(1, 5);
        let out = f.select(&first);
        assert!(matches!(out, Cow::Borrowed(_)), "the first report as built");
        assert_eq!(shape(&out), (ClientsMode::Full, 201, 0, vec![]));

        // The churner moved: it alone is written; the 200 holders are left out.
        let out = write(&mut f, &interval(2, 9));
        assert_eq!(shape(&out), (ClientsMode::Changed, 1, 200, vec![]));
        assert_eq!(addrs(&out), ["10.9.9.9"]);
        assert_eq!(out.clients[0].opened, 9);
        // Everything above the rows is the report's own.
        let whole = interval(2, 9);
        assert_eq!(
            (&out.totals, out.uptime, &out.verdicts, &out.capacity),
            (
                &whole.totals,
                whole.uptime,
                &whole.verdicts,
                &whole.capacity
            )
        );

        // Nothing moved: no row at all.
        let out = write(&mut f, &interval(3, 9));
        assert_eq!(shape(&out), (ClientsMode::Changed, 0, 201, vec![]));
    }

    #[test]
    fn a_row_comes_back_when_it_changes_or_gets_a_verdict() {
        let mut f = RowFilter::changed(Duration::from_secs(300));
        write(&mut f, &interval(1, 5));
        assert_eq!(write(&mut f, &interval(2, 5)).clients.len(), 0);

        // A holder's bytes move (it sent a command).
        let mut r = interval(3, 5);
        let at = r
            .clients
            .iter()
            .position(|c| c.addr.to_string() == "10.0.0.7");
        r.clients[at.unwrap()].bytes_in = 28;
        let out = write(&mut f, &r);
        assert_eq!(addrs(&out), ["10.0.0.7"]);
        assert_eq!(out.clients_omitted, 200);

        // Another opens a second connection: `open` and `opened` change.
        let mut r = interval(4, 5);
        r.clients[at.unwrap()].bytes_in = 28;
        let other = r
            .clients
            .iter()
            .position(|c| c.addr.to_string() == "10.0.0.8");
        r.clients[other.unwrap()].open = 2;
        r.clients[other.unwrap()].opened = 2;
        assert_eq!(addrs(&write(&mut f, &r)), ["10.0.0.8"]);

        // A verdict other than healthy is written every interval, though nothing moved…
        let leak = |at_s, v| {
            let mut r = interval(at_s, 5);
            r.clients[at.unwrap()].bytes_in = 28;
            r.clients[other.unwrap()].open = 2;
            r.clients[other.unwrap()].opened = 2;
            let i = r
                .clients
                .iter()
                .position(|c| c.addr.to_string() == "10.0.0.103");
            r.clients[i.unwrap()].verdict = v;
            r
        };
        for s in 5..8 {
            let out = write(&mut f, &leak(s, ClientVerdict::Leak));
            assert_eq!(addrs(&out), ["10.0.0.103"], "second {s}");
            assert_eq!(out.clients[0].verdict, ClientVerdict::Leak);
        }
        // …and once more when it is healthy again, then left out.
        let out = write(&mut f, &leak(8, ClientVerdict::Healthy));
        assert_eq!(addrs(&out), ["10.0.0.103"]);
        assert_eq!(out.clients[0].verdict, ClientVerdict::Healthy);
        assert_eq!(
            write(&mut f, &leak(9, ClientVerdict::Healthy))
                .clients
                .len(),
            0
        );
    }

    /// Client mode: a connect that times out moves no counter but its cause's.
    #[test]
    fn a_row_comes_back_when_a_connect_fails_without_a_refusal() {
        let mut f = RowFilter::changed(Duration::from_secs(300));
        write(&mut f, &interval(1, 5));
        let timed_out = |at_s, n| {
            let mut r = interval(at_s, 5);
            let at = r
                .clients
                .iter()
                .position(|c| c.addr.to_string() == "10.0.0.7")
                .unwrap();
            r.clients[at].failed_connects = Some(Some(ConnectFailures {
                timed_out: n,
                ..ConnectFailures::default()
            }));
            r
        };
        assert_eq!(addrs(&write(&mut f, &timed_out(2, 1))), ["10.0.0.7"]);
        assert_eq!(write(&mut f, &timed_out(3, 1)).clients.len(), 0);
        assert_eq!(addrs(&write(&mut f, &timed_out(4, 2))), ["10.0.0.7"]);
    }

    #[test]
    fn rates_ages_and_idle_times_alone_do_not_bring_a_row_back() {
        let mut f = RowFilter::changed(Duration::from_secs(300));
        write(&mut f, &interval(1, 5));
        let mut r = interval(2, 5);
        for c in &mut r.clients {
            c.rates = Some(Rates::default());
            c.age = Some(crate::model::Age {
                max: 2 * SEC,
                lower_bound: true,
            });
            c.idle = Some(crate::model::Idle {
                p50: SEC,
                max: 2 * SEC,
            });
        }
        assert_eq!(
            shape(&write(&mut f, &r)),
            (ClientsMode::Changed, 0, 201, vec![])
        );
    }

    #[test]
    fn every_row_again_at_the_cadence() {
        let mut f = RowFilter::changed(Duration::from_secs(5));
        let full: Vec<u64> = (10..=31)
            .filter(|&s| write(&mut f, &interval(s, s)).clients_mode == ClientsMode::Full)
            .collect();
        // The first at 10 s, then every 5 s of uptime.
        assert_eq!(full, [10, 15, 20, 25, 30]);
        // Between them, only the churner (it moves every second).
        let out = write(&mut f, &interval(32, 32));
        assert_eq!(shape(&out), (ClientsMode::Changed, 1, 200, vec![]));

        // An uptime that goes back (a replay of another run) starts full.
        assert_eq!(
            write(&mut f, &interval(3, 3)).clients_mode,
            ClientsMode::Full
        );
    }

    /// Over the real pipeline, the rows written are those a comparison of every
    /// row with what was written picks, and the addresses gone those that left:
    /// one-shot clients, a holder, and a storm that starts and stops (its verdict
    /// leaves a row that no longer moves). Evictions: the tracker's tests.
    #[test]
    fn changed_rows_are_those_a_comparison_of_every_row_picks() {
        use crate::testing::{START, Sim, conn, opened, rejected};
        use std::collections::HashSet;
        const S: u64 = 1_000_000_000;
        let mut ev = Vec::new();
        ev.push(opened(START, conn("10.1.0.1", 1)));
        let mut port = 2;
        for s in 0..20u64 {
            for k in 0..5u64 {
                let at = START + s * S + k * 100_000_000;
                let key = conn(&format!("10.2.{s}.{k}"), port);
                port += 1;
                ev.push(opened(at, key));
                ev.push(crate::testing::closed(
                    at + 1_000,
                    key,
                    crate::model::CloseKind::Client,
                    7,
                    7,
                ));
            }
            if (3..6).contains(&s) {
                let mut at = START + s * S + 300_000_000;
                for _ in 0..50 {
                    at = rejected(&mut ev, at, conn("10.3.0.1", port)) + 1_000_000;
                    port += 1;
                }
            }
        }
        let mut sim = Sim::new(ev);
        let mut f = RowFilter::changed(Duration::from_secs(3600));
        let mut reader: HashMap<IpAddr, Held> = HashMap::new();
        let (mut flagged, mut unflagged) = (0, 0);
        for i in 0..30 {
            let r = sim.step();
            let out = f.select(&r);
            let mut expect_rows: Vec<IpAddr> = Vec::new();
            for c in &r.clients {
                let now = Held::of(c);
                let before = reader.insert(c.addr, now);
                if i == 0 || before != Some(now) || c.verdict != ClientVerdict::Healthy {
                    expect_rows.push(c.addr);
                }
            }
            let present: HashSet<IpAddr> = r.clients.iter().map(|c| c.addr).collect();
            let mut expect_gone: Vec<IpAddr> = reader
                .keys()
                .filter(|a| !present.contains(a))
                .copied()
                .collect();
            reader.retain(|a, _| present.contains(a));
            expect_gone.sort();
            if i > 0 {
                assert_eq!(out.clients_gone, expect_gone, "report {i}");
            }
            let rows: Vec<IpAddr> = out.clients.iter().map(|c| c.addr).collect();
            assert_eq!(rows, expect_rows, "report {i}");
            let storm = r.clients.iter().find(|c| c.addr.to_string() == "10.3.0.1");
            match storm.map(|c| (c.verdict, c.changed)) {
                Some((ClientVerdict::Healthy, _)) if flagged > 0 && unflagged == 0 => {
                    unflagged = i;
                    assert!(rows.contains(&storm.unwrap().addr), "the verdict left");
                }
                Some((v, _)) if v != ClientVerdict::Healthy => flagged += 1,
                _ => {}
            }
        }
        assert!(flagged > 0 && unflagged > 0, "{flagged} {unflagged}");
    }

    #[test]
    fn with_clients_all_every_report_is_the_report_as_built() {
        let mut f = RowFilter::all();
        for s in 1..5 {
            let r = interval(s, 5);
            let out = f.select(&r);
            assert!(matches!(out, Cow::Borrowed(_)));
            assert_eq!(*out, r);
        }
    }

    #[test]
    fn evicted_addresses_are_named_once_and_new_ones_written() {
        let mut f = RowFilter::changed(Duration::from_secs(300));
        write(&mut f, &interval(1, 5));
        let mut r = interval(2, 5);
        r.clients
            .retain(|c| !["10.0.0.1", "10.0.0.200"].contains(&c.addr.to_string().as_str()));
        r.clients.push(client("10.5.5.5", 0, 0, 1));
        // As the tracker names them (in no order), and once.
        r.evicted = vec!["10.0.0.200".parse().unwrap(), "10.0.0.1".parse().unwrap()];
        let out = write(&mut f, &r);
        assert_eq!(
            shape(&out),
            (
                ClientsMode::Changed,
                1,
                199,
                vec!["10.0.0.1".into(), "10.0.0.200".into()]
            )
        );
        assert_eq!(addrs(&out), ["10.5.5.5"]);
        // Named once: the next report holds neither.
        r.uptime += SEC;
        r.evicted.clear();
        assert_eq!(
            shape(&write(&mut f, &r)),
            (ClientsMode::Changed, 0, 200, vec![])
        );
    }

    fn of_instance(mut r: Report, netns: u32) -> Report {
        r.instance = Some(Instance::bare(InstanceKey { netns }, netns == 1));
        r
    }

    #[test]
    fn each_instance_is_its_own_stream() {
        let mut f = RowFilter::changed(Duration::from_secs(5));
        let modes = |out: Vec<Cow<'_, Report>>| -> Vec<(ClientsMode, usize)> {
            out.iter()
                .map(|r| (r.clients_mode, r.clients.len()))
                .collect()
        };
        // The host's first report, then the host's second with a container's first.
        let one = [of_instance(interval(1, 5), 1)];
        assert_eq!(modes(f.interval(&one)), [(ClientsMode::Full, 201)]);
        let two = [
            of_instance(interval(2, 6), 1),
            of_instance(interval(2, 6), 2),
        ];
        assert_eq!(
            modes(f.interval(&two)),
            [(ClientsMode::Changed, 1), (ClientsMode::Full, 201)]
        );
        // Same rows in both, compared within each instance only.
        let three = [
            of_instance(interval(3, 6), 1),
            of_instance(interval(3, 7), 2),
        ];
        assert_eq!(
            modes(f.interval(&three)),
            [(ClientsMode::Changed, 0), (ClientsMode::Changed, 1)]
        );
        // Each on its own cadence: the host's full at 6 s, the container's at 7 s.
        let at = |s| {
            [
                of_instance(interval(s, 7), 1),
                of_instance(interval(s, 7), 2),
            ]
        };
        assert_eq!(
            modes(f.interval(&at(6))),
            [(ClientsMode::Full, 201), (ClientsMode::Changed, 0)]
        );
        assert_eq!(
            modes(f.interval(&at(7))),
            [(ClientsMode::Changed, 0), (ClientsMode::Full, 201)]
        );
        // The container leaves; when it comes back its stream starts full.
        f.interval(&[of_instance(interval(8, 7), 1)]);
        assert_eq!(
            modes(f.interval(&at(9))),
            [(ClientsMode::Changed, 0), (ClientsMode::Full, 201)]
        );
    }

    #[test]
    fn restart_makes_the_next_report_full() {
        let mut f = RowFilter::changed(Duration::from_secs(300));
        write(&mut f, &interval(1, 5));
        assert_eq!(
            write(&mut f, &interval(2, 5)).clients_mode,
            ClientsMode::Changed
        );
        f.restart();
        assert_eq!(
            write(&mut f, &interval(3, 5)).clients_mode,
            ClientsMode::Full
        );
        assert_eq!(
            write(&mut f, &interval(4, 5)).clients_mode,
            ClientsMode::Changed
        );
    }

    #[test]
    fn host_verdicts_and_totals_are_never_trimmed() {
        let mut f = RowFilter::changed(Duration::from_secs(300));
        write(&mut f, &interval(1, 5));
        let mut r = interval(2, 5);
        r.verdicts = vec![verdict(VerdictKind::FdLimit, Severity::Critical, None)];
        let out = write(&mut f, &r);
        assert_eq!(out.verdicts, r.verdicts);
        assert_eq!(out.totals.clients, 201);
        assert_eq!(out.clients.len() as u64 + out.clients_omitted, 201);
    }

    #[test]
    fn modes_are_named_as_serde_writes_them() {
        for &m in ClientsMode::ALL {
            assert_eq!(
                serde_json::to_value(m).unwrap(),
                serde_json::Value::from(m.as_str())
            );
        }
        assert_eq!(ClientsMode::ALL.len(), 2);
    }
}
