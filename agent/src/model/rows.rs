//! A report's client rows, shared with the row cache that built them.
//!
//! A host flooded by one-shot clients keeps ~17k rows of ~350 bytes; copying
//! them all once more for each report (the cache keeps its own, the report gets
//! another) was a quarter of the agent's time. [`Rows`] (a report's
//! `ClientRows`) is a reference to one list: the report and the cache
//! (`core::row_cache`) hold the same rows, and cloning a report clones a pointer.
//!
//! Reading is as for a `Vec` (through `Deref`). Writing is copy-on-write: a
//! mutable borrow (`DerefMut`, `iter_mut`, indexing to assign) first copies the
//! rows if anyone else holds them, so changing a report's rows never changes the
//! cache's or another report's. The pipeline writes verdicts in before the cache
//! takes its reference, which keeps the common path free of copies.
//!
//! Most rows of such a host are *quiet* ([`Quiet`]): nothing open, no failure,
//! not changed, healthy. Whoever looks only at the others (the diagnoser, the
//! `--clients changed` filter, the cache itself) need not walk them: the row
//! cache lists the positions of the rows that may not be quiet ([`Rows::notable`]),
//! and every row not listed is quiet. A write through `DerefMut` drops the list
//! (anything may have changed; [`Rows::notable`] then yields every row);
//! [`Rows::for_notable_mut`] and [`Rows::for_each_mut`] keep it true.
//!
//! For the same reason the maker may hand over a [`Tally`] of every row (for
//! client rows: the short-lived ones a fan-out counts), kept as rows come and go
//! rather than counted by a walk of every row at every report. Writes keep it
//! true as they keep the list ([`Rows::tally`] counts when there is none).

use std::borrow::Cow;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use serde::{Serialize, Serializer};

/// A row that nothing needs to look at again: see [`Rows::notable`].
pub trait Quiet {
    fn is_quiet(&self) -> bool;

    /// What the row adds to [`Rows::tally`]: `None`, not counted.
    fn tallied(&self) -> Option<u64>;
}

/// How many rows are counted ([`Quiet::tallied`]), and the sum of what they add.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub rows: usize,
    pub sum: u64,
}

impl Tally {
    /// The tally of `rows`, by a walk of them.
    pub fn of<'a, T: Quiet + 'a>(rows: impl IntoIterator<Item = &'a T>) -> Tally {
        let mut t = Tally::default();
        rows.into_iter().for_each(|r| t.add(r));
        t
    }

    /// Counts `row` in.
    pub fn add(&mut self, row: &impl Quiet) {
        if let Some(n) = row.tallied() {
            self.rows += 1;
            self.sum = self.sum.wrapping_add(n);
        }
    }

    /// Counts `row` out (it was counted in).
    pub fn remove(&mut self, row: &impl Quiet) {
        if let Some(n) = row.tallied() {
            self.rows = self.rows.wrapping_sub(1);
            self.sum = self.sum.wrapping_sub(n);
        }
    }
}

/// Rows, in the order their maker gave them (client rows: worst first).
#[derive(Clone)]
pub struct Rows<T>(Arc<Shared<T>>);

#[derive(Clone)]
struct Shared<T> {
    rows: Vec<T>,
    /// Ascending positions of the rows that may not be quiet; `None`: any may
    /// not be.
    notable: Option<Vec<usize>>,
    /// The tally of every row, if its maker gave it.
    tally: Option<Tally>,
}

impl<T> Default for Rows<T> {
    fn default() -> Self {
        Rows(Arc::new(Shared {
            rows: Vec::new(),
            notable: Some(Vec::new()),
            tally: Some(Tally::default()),
        }))
    }
}

impl<T: Clone + Quiet> Rows<T> {
    /// `rows` of which only those at `notable` (ascending) may not be quiet, and
    /// their tally if the maker kept it (`None`: counted when asked).
    pub fn with_notable(rows: Vec<T>, notable: Vec<usize>, tally: Option<Tally>) -> Self {
        let shared = Shared {
            rows,
            notable: Some(notable),
            tally,
        };
        debug_assert!(shared.listed_are_all_not_quiet_ones());
        debug_assert!(
            tally.is_none_or(|t| t == Tally::of(&shared.rows)),
            "a tally that is not the rows' one"
        );
        Rows(Arc::new(shared))
    }

    /// The tally of every row ([`Quiet::tallied`]): as kept, or by a walk.
    pub fn tally(&self) -> Tally {
        self.0.tally.unwrap_or_else(|| Tally::of(&self.0.rows))
    }

    /// Tests: the tally as kept (`None`: [`Rows::tally`] would walk).
    #[cfg(test)]
    pub fn kept_tally(&self) -> Option<Tally> {
        self.0.tally
    }

    /// Every row that may not be quiet, in order: the listed rows, or every row
    /// if there is no list. A row not yielded is quiet.
    pub fn notable(&self) -> impl Iterator<Item = &T> + '_ {
        let s = &*self.0;
        let listed = s
            .notable
            .as_deref()
            .map(|at| at.iter().filter_map(|&i| s.rows.get(i)));
        let all = s.notable.is_none().then(|| s.rows.iter());
        listed
            .into_iter()
            .flatten()
            .chain(all.into_iter().flatten())
    }

    /// The positions [`Rows::notable`] yields.
    pub fn notable_positions(&self) -> Cow<'_, [usize]> {
        match &self.0.notable {
            Some(at) => Cow::Borrowed(at),
            None => Cow::Owned(
                (self.0.rows.iter().enumerate())
                    .filter(|(_, r)| !r.is_quiet())
                    .map(|(i, _)| i)
                    .collect(),
            ),
        }
    }

    /// Calls `f` on every row [`Rows::notable`] yields (copying the rows first if
    /// shared). The others stay quiet, so the list stays true; the tally is kept
    /// (each row counted out before, in after).
    pub fn for_notable_mut(&mut self, mut f: impl FnMut(&mut T)) {
        let Shared {
            rows,
            notable,
            tally,
        } = Arc::make_mut(&mut self.0);
        let mut visit = |row: &mut T| {
            if let Some(t) = tally {
                t.remove(row);
                f(row);
                t.add(row);
            } else {
                f(row);
            }
        };
        match notable {
            Some(at) => {
                for &i in at.iter() {
                    if let Some(row) = rows.get_mut(i) {
                        visit(row);
                    }
                }
            }
            None => rows.iter_mut().for_each(visit),
        }
    }

    /// Calls `f` on every row (copying the rows first if shared); the list is
    /// kept if no unlisted row stops being quiet.
    pub fn for_each_mut(&mut self, f: impl FnMut(&mut T)) {
        let shared = Arc::make_mut(&mut self.0);
        shared.rows.iter_mut().for_each(f);
        if !shared.listed_are_all_not_quiet_ones() {
            shared.notable = None;
        }
        shared.tally = None;
    }
}

impl<T: Quiet> Shared<T> {
    /// Whether every row not listed is quiet (true without a list).
    fn listed_are_all_not_quiet_ones(&self) -> bool {
        let Some(at) = &self.notable else {
            return true;
        };
        let mut listed = at.iter().peekable();
        self.rows.iter().enumerate().all(|(i, r)| {
            if listed.next_if_eq(&&i).is_some() {
                return true;
            }
            r.is_quiet()
        }) && listed.next().is_none()
    }
}

impl<T: Clone> Rows<T> {
    /// The rows themselves if no one else holds them (to reuse their memory).
    pub fn into_unshared(self) -> Result<Vec<T>, Self> {
        Arc::try_unwrap(self.0).map(|s| s.rows).map_err(Rows)
    }

    /// Whether `self` and `other` are the same rows in memory (not copies).
    pub fn shares_with(&self, other: &Rows<T>) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl<T> Deref for Rows<T> {
    type Target = Vec<T>;

    fn deref(&self) -> &Vec<T> {
        &self.0.rows
    }
}

/// Copies the rows first if they are shared (copy-on-write), and drops the list
/// of notable rows and the tally.
impl<T: Clone> DerefMut for Rows<T> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        let shared = Arc::make_mut(&mut self.0);
        shared.notable = None;
        shared.tally = None;
        &mut shared.rows
    }
}

/// Equal rows (the list is a hint).
impl<T: PartialEq> PartialEq for Rows<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0.rows == other.0.rows
    }
}

impl<T> From<Vec<T>> for Rows<T> {
    fn from(rows: Vec<T>) -> Self {
        Rows(Arc::new(Shared {
            rows,
            notable: None,
            tally: None,
        }))
    }
}

impl<T> FromIterator<T> for Rows<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Self::from(iter.into_iter().collect::<Vec<T>>())
    }
}

impl<'a, T> IntoIterator for &'a Rows<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.rows.iter()
    }
}

impl<'a, T: Clone> IntoIterator for &'a mut Rows<T> {
    type Item = &'a mut T;
    type IntoIter = std::slice::IterMut<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.deref_mut().iter_mut()
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Rows<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.rows.fmt(f)
    }
}

/// As the list of rows.
impl<T: Serialize> Serialize for Rows<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.rows.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{ClientRows, ClientVerdict};
    use crate::testing::client;

    #[test]
    fn clones_share_and_writes_copy_only_what_is_shared() {
        let a: ClientRows = vec![client("10.0.0.1", 1, 0, 1)].into();
        let mut b = a.clone();
        assert!(b.shares_with(&a));
        b[0].open = 5;
        assert!(!b.shares_with(&a), "written: copied");
        assert_eq!((a[0].open, b[0].open), (1, 5));
        // No one else holds b: written in place.
        let before = b.as_ptr();
        for c in &mut b {
            c.open = 6;
        }
        assert_eq!(b.as_ptr(), before);
        assert_eq!(
            serde_json::to_value(&b).unwrap(),
            serde_json::to_value(&*b).unwrap()
        );
        let c = b.clone();
        let b = b.into_unshared().unwrap_err();
        drop(c);
        let unshared = b.into_unshared().unwrap();
        assert_eq!(unshared.as_ptr(), before);
    }

    fn addrs<'a>(rows: impl Iterator<Item = &'a ClientReport>) -> Vec<String> {
        rows.map(|c| c.addr.to_string()).collect()
    }

    use crate::model::{ClientReport, Tally};

    #[test]
    fn only_listed_rows_are_looked_at_and_a_write_keeps_the_list_true() {
        let quiet = |a: &str| ClientReport {
            changed: false,
            ..client(a, 0, 0, 1)
        };
        let rows = vec![
            client("10.0.0.1", 2, 0, 2),
            quiet("10.0.0.2"),
            quiet("10.0.0.3"),
        ];
        let mut r = ClientRows::with_notable(rows, vec![0], None);
        assert_eq!(addrs(r.notable()), ["10.0.0.1"]);
        assert_eq!(&*r.notable_positions(), [0]);
        r.for_notable_mut(|c| c.verdict = ClientVerdict::Leak);
        assert_eq!(r[0].verdict, ClientVerdict::Leak);
        // A write that leaves the quiet rows quiet keeps the list...
        r.for_each_mut(|c| c.refused = None);
        assert_eq!(addrs(r.notable()), ["10.0.0.1"]);
        // ...one that wakes one up drops it, as any write through DerefMut does.
        r.for_each_mut(|c| c.changed |= c.addr.to_string() == "10.0.0.3");
        assert_eq!(&*r.notable_positions(), [0, 2]);
        assert_eq!(addrs(r.notable()).len(), 3, "no list: every row");
        let mut r = ClientRows::with_notable(r.to_vec(), vec![0, 2], None);
        r[1].open = 1;
        assert_eq!(&*r.notable_positions(), [0, 1, 2]);
        assert!(ClientRows::default().notable().next().is_none());
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic]
    fn a_list_that_leaves_out_a_row_that_is_not_quiet_is_refused() {
        let _ = ClientRows::with_notable(vec![client("10.0.0.1", 2, 0, 2)], vec![], None);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "not the rows' one")]
    fn a_tally_that_is_not_the_rows_one_is_refused() {
        let _ = ClientRows::with_notable(
            vec![short_lived("10.0.0.1", 1)],
            vec![0],
            Some(Tally::default()),
        );
    }

    /// A row of one connection that lived 5 ms (a fan-out counts it) opened
    /// `opened` times.
    fn short_lived(addr: &str, opened: u64) -> ClientReport {
        let ms = std::time::Duration::from_millis(5);
        ClientReport {
            lifetime: Some(crate::testing::flat_lifetime(ms)),
            ..client(addr, 0, 0, opened)
        }
    }

    #[test]
    fn a_kept_tally_follows_writes_to_the_listed_rows_and_a_write_to_any_drops_it() {
        let rows = vec![
            short_lived("10.0.0.1", 3),
            short_lived("10.0.0.2", 2),
            ClientReport {
                changed: false,
                ..short_lived("10.0.0.3", 1)
            },
        ];
        let tally = Tally { rows: 3, sum: 6 };
        let mut r = ClientRows::with_notable(rows, vec![0, 1], Some(tally));
        assert_eq!(r.tally(), tally);
        // The first row now holds three connections: no longer short-lived.
        r.for_notable_mut(|c| c.open = if c.opened == 3 { 3 } else { c.open });
        assert_eq!(r.kept_tally(), Some(Tally { rows: 2, sum: 3 }));
        r[1].internal = true;
        assert_eq!(r.kept_tally(), None, "any write: dropped");
        assert_eq!(r.tally(), Tally { rows: 1, sum: 1 }, "counted by a walk");
        let r: ClientRows = vec![short_lived("10.0.0.9", 4)].into();
        assert_eq!(
            (r.kept_tally(), r.tally()),
            (None, Tally { rows: 1, sum: 4 })
        );
    }
}
