//! The client rows of the previous report, kept so that the next one rebuilds
//! only the rows of the addresses that moved.
//!
//! A flood of one-shot clients leaves the table full of quiet addresses (up to
//! [`crate::core::client::MAX_ADDRESSES`], kept ten minutes): rebuilding,
//! sorting and rating every one of them each interval cost the agent more than
//! the connections did. Here a report costs one pass that copies the rows out in
//! order, plus work for each address that changed: its row is rebuilt, its rates
//! computed against the row it replaces, and it is moved to its new place in the
//! order.
//!
//! A row is rebuilt when its address had an event since the last report, when it
//! holds connections (their age and idle time move with the clock), when its
//! rates are not yet at rest (not all 0 after a first look), and all of them when
//! the set of replicas changes. Every other row is as it was, rates 0 included.
//! Rebuilt rows carry `changed`; the others do not.
//!
//! The rows are not copied for the report: the report holds the very rows kept
//! here ([`ClientRows`], shared). The tracker builds them with [`RowCache::update`],
//! lets the diagnoser write its verdicts into them while the report is still
//! their only holder, then hands them back with [`RowCache::keep`]. So the cache
//! keeps diagnosed rows: a row left as it was keeps its verdict too, which is the
//! verdict it had (a row with nothing open and no failure is never judged, and
//! stays healthy; any other is judged again at every report). The next report's
//! rows are written into the memory of the previous ones once no report holds
//! those any more (a consumer that keeps reports costs an allocation, no more).
//!
//! The rows also list where the rows that may not be quiet are (rebuilt, holding
//! connections, or with a failure once: see `model::rows`), so that the diagnoser,
//! the `--clients changed` filter and [`RowCache::keep`] skip the quiet rest. The
//! merge carries those rows one by one, to list them at their new places; the
//! runs it copies whole were quiet and stay so.

use std::net::IpAddr;

use std::time::Duration;

use crate::core::client::ClientStats;
use crate::core::conn::{Conn, Origin};
use crate::core::histogram::nearest_rank;
use crate::model::{
    Age, ClientReport, ClientRows, ClientVerdict, FailedBy, FastMap, Idle, Lifetime, Nanos, Quiet,
    Rates, RetryReport, SendQueue, WorstKey, micros,
};

#[derive(Debug, Default)]
pub struct RowCache {
    /// Every row of the previous report, in report order, as it was handed back
    /// ([`RowCache::keep`]); empty between [`RowCache::update`] and then.
    rows: ClientRows,
    /// Addresses whose row the previous report rebuilt or brought to rest: their
    /// `changed` is cleared at the next unless they change again.
    changed: Vec<IpAddr>,
    /// Of those, the ones with connections or rates not yet at rest: looked at
    /// again at the next report whatever happens.
    restless: Vec<IpAddr>,
    /// Time of the previous report.
    last: Option<Nanos>,
    /// The memory of rows no report holds any more, for the next rows: a fresh
    /// allocation of that size is paged in anew at every report.
    spare: Vec<ClientReport>,
    /// The order key of each row of `rows`, at the same place: the look-up of
    /// every row and the search for each rebuilt row's place read these (48
    /// bytes each, in a row) instead of the rows (~450 bytes apart, a cache miss
    /// each). The diagnoser changes no figure a key is made of.
    keys: Vec<WorstKey>,
    /// The memory of the keys before `keys`, for the next ones.
    spare_keys: Vec<WorstKey>,
    /// Tests: look at every kept row, never only the listed ones (the reference
    /// the shortcut is checked against).
    #[cfg(test)]
    scan_every_row: bool,
    /// Tests: how many kept rows the last update looked at.
    #[cfg(test)]
    looked_at: usize,
}

/// What changed since the previous report.
pub struct Changes {
    /// Addresses with an event since the previous report (may repeat, may be gone).
    pub moved: Vec<IpAddr>,
    /// Addresses holding connections now.
    pub open: Vec<IpAddr>,
    /// Rebuild every row (the replicas changed).
    pub all: bool,
}

/// What becomes of a row of the previous report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Rebuilt (or gone, if the address is no longer known).
    Rebuilt,
    /// Unchanged, rates brought to rest (0). Not `changed`: no figure a reader
    /// holds moved (a row written is written with its rates, and a row left out
    /// reads 0), so a one-shot address is quiet from the report after its own
    /// and not looked at again.
    Rest,
    /// Unchanged, `changed` cleared.
    Settle,
    /// Unchanged, and may not be quiet: its new place is listed as notable.
    Keep,
}

impl RowCache {
    /// The rows of a report at `now`, worst first, and the addresses the previous
    /// report held that this one does not. `build` makes an address's row as it
    /// is now (`None`: no longer known); rates are filled here. The rows must be
    /// handed back with [`RowCache::keep`] before the next update.
    ///
    /// The previous rows are copied over in runs: the rows of moved and open
    /// addresses are rebuilt and merged in at their new places; a row whose rates
    /// come to rest keeps its place (its counts did not move) with rates 0.
    pub fn update(
        &mut self,
        now: Nanos,
        changes: Changes,
        build: impl Fn(IpAddr) -> Option<ClientReport>,
    ) -> (ClientRows, Vec<IpAddr>) {
        let mut fates: FastMap<IpAddr, Fate> = FastMap::default();
        for ip in std::mem::take(&mut self.changed) {
            fates.insert(ip, Fate::Settle);
        }
        for ip in std::mem::take(&mut self.restless) {
            fates.insert(ip, Fate::Rest);
        }
        let all = changes.all.then_some(self.rows.iter().map(|c| c.addr));
        for ip in changes
            .moved
            .into_iter()
            .chain(changes.open)
            .chain(all.into_iter().flatten())
        {
            fates.insert(ip, Fate::Rebuilt);
        }
        let secs = self
            .last
            .and_then(|last| now.checked_sub(last))
            .filter(|&d| d > 0)
            .map(|d| d as f64 / 1e9);
        self.last = Some(now);

        // The rebuilt rows, where each is, and their order (sorted by key: the rows
        // themselves are large to move).
        let mut fresh: Vec<ClientReport> = fates
            .iter()
            .filter(|(_, f)| **f == Fate::Rebuilt)
            .filter_map(|(&ip, _)| build(ip))
            .map(|mut c| {
                c.changed = true;
                c
            })
            .collect();
        let mut order: Vec<(WorstKey, usize)> = fresh
            .iter()
            .enumerate()
            .map(|(i, c)| (WorstKey::of(c), i))
            .collect();
        order.sort_unstable();
        let at: FastMap<IpAddr, usize> =
            fresh.iter().enumerate().map(|(i, c)| (c.addr, i)).collect();
        // The tally of the new rows: the previous one, each rebuilt row's previous
        // version out (below) and its new one in.
        let mut tally = self.rows.tally();
        fresh.iter().for_each(|c| tally.add(c));

        // One look-up per previous row: the rows that change, by position. Rates
        // are taken here, against the rows they replace.
        let old = std::mem::take(&mut self.rows);
        let mut old_keys = std::mem::take(&mut self.keys);
        if old_keys.len() != old.len() {
            // Not the rows the keys were made with (never so through `keep`).
            old_keys = old.iter().map(WorstKey::of).collect();
        }
        let mut marks: Vec<(usize, Fate)> = Vec::with_capacity(fates.len());
        let mut gone = Vec::new();
        // Rebuilt rows whose key did not change, (previous place, rebuilt row).
        let mut in_place: Vec<(usize, usize)> = Vec::new();
        // The rows that may not be quiet are listed; when every address with a
        // fate is among them (a quiet host: only the rows holding connections or
        // changed at the previous report move), only those are looked at, not
        // every kept row (up to 20,000, each a look-up: most of an idle agent's
        // time). A fate elsewhere or for an address not kept (new, or evicted
        // unseen) makes it look at every row.
        let listed = old.notable_positions();
        let among_listed = listed
            .iter()
            .filter(|&&j| fates.contains_key(&old_keys[j].addr()))
            .count();
        let every_row = among_listed < fates.len();
        #[cfg(test)]
        let every_row = every_row || self.scan_every_row;
        #[cfg(test)]
        {
            self.looked_at = if every_row { old.len() } else { listed.len() };
        }
        let mut look_at = |j: usize| {
            let addr = old_keys[j].addr();
            let Some(&fate) = fates.get(&addr) else {
                return;
            };
            if fate == Fate::Rebuilt {
                tally.remove(&old[j]);
                match at.get(&addr) {
                    Some(&i) => {
                        fresh[i].rates = secs.map(|secs| rates(&old[j], &fresh[i], secs));
                        if old_keys[j] == WorstKey::of(&fresh[i]) {
                            in_place.push((j, i));
                        }
                    }
                    None => gone.push(addr),
                }
            }
            marks.push((j, fate));
        };
        if every_row {
            (0..old.len()).for_each(&mut look_at);
        } else {
            listed.iter().for_each(|&j| look_at(j));
        }
        // The other rows that may not be quiet (a failure once) are carried one by
        // one too, so that the new rows list them at their new places.
        if !listed.is_empty() {
            let mut all = Vec::with_capacity(marks.len() + listed.len());
            let mut marked = marks.into_iter().peekable();
            for &j in listed.iter() {
                all.extend(std::iter::from_fn(|| marked.next_if(|&(k, _)| k < j)));
                if marked.peek().is_none_or(|&(k, _)| k != j) {
                    all.push((j, Fate::Keep));
                }
            }
            all.extend(marked);
            marks = all;
        }
        drop(listed);
        // Every rebuilt row stays where it was (a quiet host: the rows that move
        // are those holding connections, at the same counts), and no report holds
        // the previous rows any more: they are updated where they are, without
        // the copy of every row.
        let old = if in_place.len() == fresh.len() && gone.is_empty() {
            match old.into_unshared() {
                Ok(mut rows) => {
                    let notable = settle_in_place(&mut rows, &marks, &in_place, &fresh);
                    // No row moved, no key changed.
                    self.keys = old_keys;
                    return (ClientRows::with_notable(rows, notable, Some(tally)), gone);
                }
                Err(old) => old,
            }
        } else {
            old
        };
        // Where each rebuilt row goes among the previous ones: each after the one
        // before it, most often a few rows further.
        let mut place = 0;
        let places: Vec<usize> = order
            .iter()
            .map(|(key, _)| {
                place += first_not_before(&old_keys[place..], key);
                place
            })
            .collect();

        let mut rows = std::mem::take(&mut self.spare);
        rows.clear();
        rows.reserve(old.len() + fresh.len());
        // The previous rows are moved, not copied, when no report holds them any
        // more (the common case): a copy touches each row's shared processes.
        let mut source = match old.into_unshared() {
            Ok(rows) => rows,
            Err(shared) => shared.to_vec(),
        };
        let mut fresh: Vec<Option<ClientReport>> = fresh.into_iter().map(Some).collect();
        let mut keys = std::mem::take(&mut self.spare_keys);
        keys.clear();
        keys.reserve(old_keys.len() + fresh.len());
        let mut out = Merged {
            rows,
            keys,
            notable: Vec::with_capacity(marks.len() + fresh.len()),
        };
        let mut from = 0;
        let (mut f, mut m) = (0, 0);
        let mut previous = source.drain(..);
        loop {
            let mark = marks.get(m).map(|&(j, _)| j);
            // The next rebuilt row, if it comes before the next marked one.
            let place = places
                .get(f)
                .copied()
                .filter(|&p| mark.is_none_or(|j| p <= j));
            match (place, mark) {
                (Some(p), _) => {
                    out.carry(&mut previous, &old_keys[from..p]);
                    if let Some(row) = fresh[order[f].1].take() {
                        out.push(row, order[f].0);
                    }
                    from = p;
                    f += 1;
                }
                (_, Some(j)) => {
                    out.carry(&mut previous, &old_keys[from..j]);
                    // A rebuilt row's previous version is dropped.
                    if let Some(mut row) = previous.next()
                        && marks[m].1 != Fate::Rebuilt
                    {
                        settle(&mut row, marks[m].1);
                        out.push(row, old_keys[j]);
                    }
                    from = j + 1;
                    m += 1;
                }
                (None, None) => {
                    out.carry(&mut previous, &old_keys[from..]);
                    break;
                }
            }
        }
        drop(previous);
        // Emptied, its memory is the next report's.
        self.spare = source;
        self.spare_keys = old_keys;
        self.keys = out.keys;
        (
            ClientRows::with_notable(out.rows, out.notable, Some(tally)),
            gone,
        )
    }

    /// Keeps `rows`, the rows [`RowCache::update`] made, as the report holds them
    /// once diagnosed (verdicts in, and `changed` for a verdict that changed).
    pub fn keep(&mut self, rows: &ClientRows) {
        debug_assert_eq!(self.keys.len(), rows.len(), "not the rows update made");
        self.changed.clear();
        self.restless.clear();
        for row in rows.notable().filter(|c| c.changed) {
            self.changed.push(row.addr);
            if row.open > 0 || row.rates != Some(Rates::ZERO) {
                self.restless.push(row.addr);
            }
        }
        self.rows = rows.clone();
    }

    /// Whether `rows` are the ones kept (not a copy).
    #[cfg(test)]
    pub fn shares(&self, rows: &ClientRows) -> bool {
        self.rows.shares_with(rows)
    }

    /// Rows kept.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// The rows of a merge, in order, with their keys and the places of the rows
/// that may not be quiet (the others are moved in runs: quiet before, quiet now).
struct Merged {
    rows: Vec<ClientReport>,
    keys: Vec<WorstKey>,
    notable: Vec<usize>,
}

impl Merged {
    /// The next previous rows, unchanged and quiet, as a run; `keys` are theirs.
    fn carry(&mut self, previous: &mut impl Iterator<Item = ClientReport>, keys: &[WorstKey]) {
        self.rows.extend(previous.take(keys.len()));
        self.keys.extend_from_slice(keys);
    }

    /// One row that may not be quiet, and its key.
    fn push(&mut self, row: ClientReport, key: WorstKey) {
        if !row.is_quiet() {
            self.notable.push(self.rows.len());
        }
        self.rows.push(row);
        self.keys.push(key);
    }
}

/// What a fate other than [`Fate::Rebuilt`] does to a previous row it keeps.
fn settle(row: &mut ClientReport, fate: Fate) {
    match fate {
        Fate::Rebuilt | Fate::Keep => {}
        Fate::Rest => {
            row.rates = Some(Rates::ZERO);
            row.changed = false;
        }
        Fate::Settle => row.changed = false,
    }
}

/// Applies the fates of `marks` to `rows` where they are (every rebuilt row,
/// listed in `in_place` with its previous place, keeps it); the places of the
/// rows that may not be quiet.
fn settle_in_place(
    rows: &mut [ClientReport],
    marks: &[(usize, Fate)],
    in_place: &[(usize, usize)],
    fresh: &[ClientReport],
) -> Vec<usize> {
    let mut notable = Vec::with_capacity(marks.len());
    let mut rebuilt = in_place.iter();
    for &(j, fate) in marks {
        let row = &mut rows[j];
        match fate {
            Fate::Rebuilt => {
                // `in_place` lists the rebuilt marks in the same (ascending) order.
                if let Some(&(_, i)) = rebuilt.next() {
                    row.clone_from(&fresh[i]);
                }
            }
            fate => settle(row, fate),
        }
        if !row.is_quiet() {
            notable.push(j);
        }
    }
    notable
}

/// The first of `rows` (sorted worst first) not before `key`: looked for 1, 2,
/// 4… rows ahead, then between the last two looks.
fn first_not_before(rows: &[WorstKey], key: &WorstKey) -> usize {
    let before = |o: &WorstKey| *o < *key;
    let (mut lo, mut step) = (0, 1);
    loop {
        let i = lo + step - 1;
        match rows.get(i) {
            Some(o) if before(o) => {
                lo = i + 1;
                step *= 2;
            }
            Some(_) => return lo + rows[lo..i].partition_point(before),
            None => return lo + rows[lo..].partition_point(before),
        }
    }
}

/// Per-second rates from the counts of the row before to the row now.
fn rates(before: &ClientReport, now: &ClientReport, secs: f64) -> Rates {
    let per_s = |a: u64, b: u64| (b.saturating_sub(a) as f64 / secs * 10.0).round() / 10.0;
    Rates {
        opened_per_s: per_s(before.opened, now.opened),
        closed_per_s: per_s(before.closed, now.closed),
        rejected_per_s: per_s(before.rejected, now.rejected),
        refused_per_s: before.refused.zip(now.refused).map(|(a, b)| per_s(a, b)),
    }
}

/// What the report needs of one address's open connections.
#[derive(Debug, Default)]
pub struct OpenConns {
    max_age: Nanos,
    any_seeded: bool,
    /// Send queues: their sum and the largest.
    queued: u64,
    queued_max: u64,
    /// Sorted once all are added.
    idle: Vec<Nanos>,
}

impl OpenConns {
    pub fn add(&mut self, conn: &Conn, now: Nanos) {
        self.max_age = self.max_age.max(conn.age(now));
        self.any_seeded |= conn.origin == Origin::Seeded;
        self.idle.push(conn.idle(now));
        self.queued = self.queued.saturating_add(conn.queued);
        self.queued_max = self.queued_max.max(conn.queued);
    }

    /// Once every connection is added.
    pub fn finish(&mut self) {
        self.idle.sort_unstable();
    }

    fn age(&self) -> Age {
        // A seeded connection predates the agent, so its true age exceeds what is
        // measured from its seed time — and likely every measured age, since the
        // others opened after the agent started. Any seeded one makes the maximum a
        // lower bound, whichever connection it was measured on.
        Age {
            max: micros(self.max_age),
            lower_bound: self.any_seeded,
        }
    }

    fn idle(&self) -> Option<Idle> {
        let p50 = *self.idle.get(nearest_rank_index(0.5, self.idle.len())?)?;
        let max = *self.idle.last()?;
        Some(Idle {
            p50: micros(p50),
            max: micros(max),
        })
    }
}

fn nearest_rank_index(q: f64, len: usize) -> Option<usize> {
    let len = u64::try_from(len).ok().filter(|&n| n > 0)?;
    usize::try_from(nearest_rank(q, len) - 1).ok()
}

/// An address's row as its statistics and open connections say now (verdict
/// healthy, no rates: the diagnoser and [`RowCache::update`] fill those).
pub fn client_report(
    ip: IpAddr,
    s: &ClientStats,
    open: Option<&OpenConns>,
    internal: bool,
) -> ClientReport {
    let (processes, processes_other) = s.processes.report();
    ClientReport {
        addr: ip,
        open: s.open,
        seeded: s.seeded_open,
        opened: s.opened,
        closed: s.closed,
        closed_by_server: s.closed_by_server,
        server_closes: s.server_closes,
        closed_by_client: s.closed_by_client,
        reset: s.reset,
        rejected: s.rejected,
        // Client mode: only the connects a reset refused; unknown when a cause is.
        refused: (s.connects_failed.unknown == 0).then_some(s.refused),
        failed: s.failures(),
        internal,
        verdict: ClientVerdict::Healthy,
        lifetime: lifetime(s),
        age: open.map(OpenConns::age),
        idle: open.and_then(OpenConns::idle),
        send_queue: open.map(|o| SendQueue {
            bytes: o.queued,
            max: o.queued_max,
        }),
        bytes_in: s.bytes_in,
        bytes_out: s.bytes_out,
        retry: retry(s),
        rates: None,
        processes,
        processes_other,
        failed_connects: (s.connects_failed != FailedBy::default())
            .then(|| s.connects_failed.connects()),
        changed: true,
    }
}

fn retry(s: &ClientStats) -> Option<RetryReport> {
    let r = s.retry()?;
    Some(RetryReport {
        gaps: r.count(),
        p50_ms: r.recent_median()? as f64 / 1e3,
        last_ms: r.last()? as f64 / 1e3,
        start_ms: r.start_median()? as f64 / 1e3,
        trend: r.trend(),
    })
}

fn lifetime(s: &ClientStats) -> Option<Lifetime> {
    let h = &s.lifetime_us;
    Some(Lifetime {
        p50: Duration::from_micros(h.quantile(0.5)?),
        p90: Duration::from_micros(h.quantile(0.9)?),
        p99: Duration::from_micros(h.quantile(0.99)?),
        max: Duration::from_micros(h.max()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Tally, worst_first};
    use crate::testing::client;
    use std::cell::RefCell;
    use std::collections::HashMap;

    const SEC: Nanos = 1_000_000_000;

    /// A table of rows as the tracker would build them, and the cache over it.
    struct Fixture {
        table: RefCell<HashMap<IpAddr, ClientReport>>,
        cache: RowCache,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                table: RefCell::new(HashMap::new()),
                cache: RowCache::default(),
            }
        }

        fn set(&self, row: ClientReport) -> IpAddr {
            let ip = row.addr;
            self.table.borrow_mut().insert(ip, row);
            ip
        }

        fn report(&mut self, now: Nanos, moved: Vec<IpAddr>) -> (ClientRows, Vec<IpAddr>) {
            let table = self.table.borrow().clone();
            let open = table.values().filter(|c| c.open > 0).map(|c| c.addr);
            let changes = Changes {
                moved,
                open: open.collect(),
                all: false,
            };
            let (rows, gone) = self
                .cache
                .update(now, changes, |ip| table.get(&ip).cloned());
            self.cache.keep(&rows);
            // The tally is the cache's, kept as rows came and went, and is what a
            // walk of the rows counts.
            assert_eq!(rows.kept_tally(), Some(Tally::of(rows.iter())));
            // The keys kept beside the rows are theirs, place by place.
            let keys: Vec<WorstKey> = rows.iter().map(WorstKey::of).collect();
            assert_eq!(self.cache.keys, keys, "keys out of step with the rows");
            (rows, gone)
        }
    }

    /// A row whose connections lived 400 ms × `opened` (short-lived, as a fan-out
    /// counts it, up to two opened and two open).
    fn row(addr: &str, open: u64, lost: u64, opened: u64) -> ClientReport {
        let ms = Duration::from_millis(400 * opened);
        ClientReport {
            lifetime: Some(crate::testing::flat_lifetime(ms)),
            ..client(addr, open, lost, opened)
        }
    }

    /// Repeatable pseudo-random numbers below `n` from `seed`.
    fn numbers(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        }
    }

    #[test]
    fn rows_come_out_worst_first_as_a_full_sort_would_order_them() {
        let mut f = Fixture::new();
        let mut moved = Vec::new();
        for i in 0..300u64 {
            let addr = format!("10.0.{}.{}", i % 7, i % 251);
            moved.push(f.set(row(&addr, i % 3, i % 5, i % 11)));
        }
        let (rows, gone) = f.report(SEC, moved);
        let mut sorted = rows.clone();
        sorted.sort_by(worst_first);
        assert_eq!(rows, sorted);
        assert_eq!(rows.len(), f.table.borrow().len());
        assert!(gone.is_empty());

        // One address moves to the top; the order follows.
        let ip = f.set(row("10.0.3.3", 50, 0, 60));
        let (rows, _) = f.report(2 * SEC, vec![ip]);
        assert_eq!(rows[0].addr, ip);
        // Its rate is against the row it replaced, further down (opened 3 → 60).
        assert_eq!(rows[0].rates.map(|r| r.opened_per_s), Some(57.0));
        let mut sorted = rows.clone();
        sorted.sort_by(worst_first);
        assert_eq!(rows, sorted);
    }

    #[test]
    fn only_moved_open_and_restless_rows_are_rebuilt_and_rates_come_to_rest() {
        let mut f = Fixture::new();
        let quiet = f.set(row("10.0.0.1", 0, 0, 1));
        let holder = f.set(row("10.0.0.2", 2, 0, 2));
        let (rows, _) = f.report(SEC, vec![quiet, holder]);
        assert!(rows.iter().all(|c| c.changed && c.rates.is_none()));

        // Nothing moved: the holder is rebuilt (its connections age); the quiet
        // one's rates are known for the first time (0), and no figure a reader
        // holds moved: not changed, and quiet from now on (not listed).
        let (rows, _) = f.report(2 * SEC, vec![]);
        let zero = Some(Rates::ZERO);
        assert_eq!(
            rows.iter()
                .map(|c| (c.addr, c.changed, c.rates))
                .collect::<Vec<_>>(),
            vec![(holder, true, zero), (quiet, false, zero)]
        );
        assert_eq!(rows.notable_positions().to_vec(), vec![0]);

        // At rest: the quiet row is left as it was, not even looked at.
        let (rows, _) = f.report(3 * SEC, vec![]);
        assert_eq!(
            rows.iter().map(|c| (c.addr, c.changed)).collect::<Vec<_>>(),
            vec![(holder, true), (quiet, false)]
        );
        assert_eq!(f.cache.looked_at, 1, "only the holder");

        // It opens 4 connections in 2 s: 2/s, then back to 0 at the next report.
        let mut busier = row("10.0.0.1", 0, 0, 5);
        busier.closed = 5;
        f.set(busier);
        let (rows, _) = f.report(5 * SEC, vec![quiet]);
        let r = rows.iter().find(|c| c.addr == quiet).unwrap();
        assert_eq!(r.rates.map(|r| r.opened_per_s), Some(2.0));
        assert!(r.changed);
        let (rows, _) = f.report(6 * SEC, vec![]);
        let r = rows.iter().find(|c| c.addr == quiet).unwrap();
        assert_eq!((r.rates, r.changed), (zero, false));
        let (rows, _) = f.report(7 * SEC, vec![]);
        let r = rows.iter().find(|c| c.addr == quiet).unwrap();
        assert_eq!((r.rates, r.changed), (zero, false));
        assert_eq!(f.cache.looked_at, 1, "only the holder");
    }

    #[test]
    fn the_place_looked_for_ahead_is_the_place_a_binary_search_finds() {
        let mut seed = 3u64;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % n
        };
        for len in 0..70 {
            let mut rows: Vec<ClientReport> = (0..len)
                .map(|_| row(&format!("10.0.0.{}", next(250)), next(3), next(3), next(4)))
                .collect();
            rows.sort_by(worst_first);
            for _ in 0..40 {
                let probe = row(&format!("10.0.0.{}", next(250)), next(3), next(3), next(4));
                let key = WorstKey::of(&probe);
                let want = rows.partition_point(|o| worst_first(o, &probe).is_lt());
                let keys: Vec<WorstKey> = rows.iter().map(WorstKey::of).collect();
                assert_eq!(first_not_before(&keys, &key), want, "{len} rows");
            }
        }
    }

    #[test]
    fn addresses_no_longer_known_are_gone_once_and_come_back_new() {
        let mut f = Fixture::new();
        let a = f.set(row("10.0.0.1", 0, 0, 1));
        let b = f.set(row("10.0.0.2", 0, 0, 1));
        f.report(SEC, vec![a, b]);
        f.table.borrow_mut().remove(&a);
        let (rows, gone) = f.report(2 * SEC, vec![a]);
        assert_eq!(gone, vec![a]);
        assert_eq!(rows.iter().map(|c| c.addr).collect::<Vec<_>>(), vec![b]);
        let (_, gone) = f.report(3 * SEC, vec![a]);
        assert!(gone.is_empty(), "named once");

        f.set(row("10.0.0.1", 0, 0, 3));
        let (rows, _) = f.report(4 * SEC, vec![a]);
        let back = rows.iter().find(|c| c.addr == a).unwrap();
        assert_eq!(back.rates, None, "new again: no rate before a second look");
        assert_eq!(f.cache.len(), 2);
        assert!(!f.cache.is_empty());
    }

    #[test]
    fn looking_only_at_the_listed_rows_changes_nothing_a_look_at_every_row_would_find() {
        // Two caches fed the same changes, one of them made to look at every row.
        let (mut listed, mut every) = (Fixture::new(), Fixture::new());
        every.cache.scan_every_row = true;
        let mut next = numbers(11);
        let mut shortcuts = 0;
        let (mut previously_listed, mut previous_len) = (0, 0);
        for step in 1..=80u64 {
            let mut moved = Vec::new();
            if step == 1 {
                // 300 quiet one-shot addresses and 20 holders (of three
                // connections: not short-lived).
                for i in 0..320u64 {
                    let open = 3 * u64::from(i < 20);
                    let r = row(&format!("10.3.{}.{}", i / 200, i % 200), open, 0, 1);
                    moved.push(listed.set(r.clone()));
                    every.set(r);
                }
            }
            match step % 4 {
                // A quiet address comes back, or a new one arrives.
                1 => {
                    let i = next(400);
                    let r = row(
                        &format!("10.3.{}.{}", i / 200, i % 200),
                        next(2),
                        next(2),
                        2,
                    );
                    moved.push(listed.set(r.clone()));
                    every.set(r);
                }
                // One is forgotten (evicted).
                2 => {
                    let i = next(400);
                    let ip: IpAddr = format!("10.3.{}.{}", i / 200, i % 200).parse().unwrap();
                    listed.table.borrow_mut().remove(&ip);
                    every.table.borrow_mut().remove(&ip);
                    moved.push(ip);
                }
                // Quiet steps: only holders and the rows changed just before move.
                _ => {}
            }
            let fates_listed = moved.is_empty();
            let (a, gone_a) = listed.report(step * SEC, moved.clone());
            let (b, gone_b) = every.report(step * SEC, moved);
            if fates_listed && step > 1 {
                // Only the rows the previous report listed (holders, rows just
                // changed), not every row.
                assert_eq!(listed.cache.looked_at, previously_listed, "step {step}");
                assert_eq!(every.cache.looked_at, previous_len, "step {step}");
            }
            previously_listed = a.notable_positions().len();
            previous_len = a.len();
            assert!(previously_listed < previous_len || step < 3, "step {step}");
            assert_eq!(a, b, "step {step}");
            assert_eq!(gone_a, gone_b, "step {step}");
            assert_eq!(a.notable_positions(), b.notable_positions(), "step {step}");
            shortcuts += u32::from(fates_listed && step > 1);
            // Most of the 300 one-shot rows are short-lived; the rows that come
            // back with two opened from a quiet address move in and out of it.
            let t = a.tally();
            assert!(t.rows > 250 && t.rows < a.len(), "step {step}: {t:?}");
        }
        assert!(shortcuts >= 30, "{shortcuts} quiet steps");
    }

    #[test]
    fn rows_no_report_holds_are_updated_in_place_as_the_merge_would_make_them() {
        // Two caches fed the same changes: one whose caller drops each report's
        // rows before the next (updated in place whenever no row moves), one that
        // holds them (always the merge).
        let (mut dropped, mut held) = (Fixture::new(), Fixture::new());
        let mut next = numbers(7);
        let mut kept_rows = Vec::new();
        let mut in_place = 0;
        for step in 1..=60u64 {
            let mut moved = Vec::new();
            // Mostly quiet steps, where only the holders are rebuilt (same counts).
            let changes = if step % 5 == 0 { 1 + next(6) } else { 0 };
            for _ in 0..changes {
                let r = row(&format!("10.1.0.{}", next(40)), next(3), next(2), next(5));
                moved.push(dropped.set(r.clone()));
                held.set(r);
            }
            if step == 1 {
                for i in 0..30 {
                    let r = row(&format!("10.2.0.{i}"), i % 2, 0, 1 + i % 2);
                    moved.push(dropped.set(r.clone()));
                    held.set(r);
                }
            }
            let before = dropped.cache.rows.as_ptr();
            let (a, _) = dropped.report(step * SEC, moved.clone());
            let (b, _) = held.report(step * SEC, moved);
            if a.as_ptr() == before {
                in_place += 1;
            }
            assert_eq!(a, b, "step {step}");
            assert_eq!(a.notable_positions(), b.notable_positions(), "step {step}");
            kept_rows.push(b);
        }
        assert!(in_place >= 30, "updated in place {in_place} times of 60");
    }
}
