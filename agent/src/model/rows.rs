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

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use serde::{Serialize, Serializer};

/// Rows, in the order their maker gave them (client rows: worst first).
#[derive(Clone, PartialEq)]
pub struct Rows<T>(Arc<Vec<T>>);

impl<T> Default for Rows<T> {
    fn default() -> Self {
        Rows(Arc::default())
    }
}

impl<T: Clone> Rows<T> {
    /// The rows themselves if no one else holds them (to reuse their memory).
    pub fn into_unshared(self) -> Result<Vec<T>, Self> {
        Arc::try_unwrap(self.0).map_err(Rows)
    }

    /// Whether `self` and `other` are the same rows in memory (not copies).
    pub fn shares_with(&self, other: &Rows<T>) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl<T> Deref for Rows<T> {
    type Target = Vec<T>;

    fn deref(&self) -> &Vec<T> {
        &self.0
    }
}

/// Copies the rows first if they are shared (copy-on-write).
impl<T: Clone> DerefMut for Rows<T> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        Arc::make_mut(&mut self.0)
    }
}

impl<T> From<Vec<T>> for Rows<T> {
    fn from(rows: Vec<T>) -> Self {
        Rows(Arc::new(rows))
    }
}

impl<T> FromIterator<T> for Rows<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Rows(Arc::new(iter.into_iter().collect()))
    }
}

impl<'a, T> IntoIterator for &'a Rows<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
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
        self.0.fmt(f)
    }
}

/// As the list of rows.
impl<T: Serialize> Serialize for Rows<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use crate::model::ClientRows;
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
}
