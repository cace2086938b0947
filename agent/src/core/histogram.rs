//! A bounded-memory log-linear histogram of `u64` values (connwatch records
//! microseconds).
//!
//! # Layout
//! Values below 32 each have their own bucket. Above, every power of two
//! `[2^m, 2^(m+1))` is split into 32 equal sub-buckets of width `2^(m-5)`. The
//! first such range, `[32, 64)`, has width 1, so the histogram is **exact below 64**.
//! The whole `u64` range needs `32 + 59 * 32 = 1920` buckets (15 KiB); the bucket
//! vector only grows up to the largest bucket used, so lifetimes of up to an hour
//! in microseconds (< 2^32) take at most 7 KiB.
//!
//! # Error bound
//! [`Histogram::quantile`] answers with the middle of the bucket that holds the
//! value of that rank. A bucket of width `w` starts at or above `32 * w`, so the
//! answer is off by at most `w / 2`, a relative error of at most **1/64 (≈1.6%)** of
//! the true value. The exact minimum and maximum are tracked separately and the
//! answer is clamped between them, which can only bring it closer; the lowest
//! and highest ranks (`q` = 0 and 1, and any `q` on one or two values) answer
//! exactly.
//!
//! Quantiles use the nearest-rank definition: `quantile(q)` is the smallest
//! recorded value `v` such that at least `q * count` values are `<= v`.

/// Values below this have exact buckets of their own; it is also the number of
/// sub-buckets per power of two.
const SUB_BUCKETS: u64 = 32;
/// `log2(SUB_BUCKETS)`.
const SUB_BITS: u32 = 5;
/// Buckets needed to cover all of `u64`.
const MAX_BUCKETS: usize = (SUB_BUCKETS as usize) * (64 - SUB_BITS as usize + 1);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Counts per bucket, grown on demand up to the highest bucket used.
    buckets: Vec<u64>,
    count: u64,
    /// Exact extremes, meaningful only when `count > 0`.
    min: u64,
    max: u64,
}

impl Histogram {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one value. The first two need no buckets: one or two values are their
    /// exact minimum and maximum, which answer every quantile; the buckets are
    /// made at the third. (Most addresses of a flood of one-shot clients record
    /// one lifetime: no bucket vector to allocate, zero and free for them.)
    pub fn record(&mut self, v: u64) {
        if self.count == 2 {
            let (min, max) = (self.min, self.max);
            self.count_in_bucket(min);
            self.count_in_bucket(max);
        }
        if self.count >= 2 {
            self.count_in_bucket(v);
        }
        if self.count == 0 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.count = self.count.saturating_add(1);
    }

    fn count_in_bucket(&mut self, v: u64) {
        let index = bucket_index(v);
        if index >= self.buckets.len() {
            // Grows at most 1920 buckets over the histogram's life, never per value.
            self.buckets.resize(index + 1, 0);
        }
        self.buckets[index] = self.buckets[index].saturating_add(1);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The largest value recorded, exactly; `None` when empty.
    pub fn max(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max)
    }

    /// The smallest value recorded, exactly; `None` when empty.
    pub fn min(&self) -> Option<u64> {
        (self.count > 0).then_some(self.min)
    }

    /// The value at quantile `q` (0.0 ..= 1.0; outside values are clamped), within
    /// the error bound in the module documentation. `None` when empty or when `q`
    /// is NaN.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 || q.is_nan() {
            return None;
        }
        let rank = nearest_rank(q, self.count);
        // The extreme ranks are the exact extremes.
        if rank == self.count {
            return Some(self.max);
        }
        if rank == 1 {
            return Some(self.min);
        }
        let mut seen = 0u64;
        for (index, &n) in self.buckets.iter().enumerate() {
            seen = seen.saturating_add(n);
            if seen >= rank {
                return Some(bucket_middle(index).clamp(self.min, self.max));
            }
        }
        // Unreachable while the bucket counts add up to `count`; the exact max is
        // the right answer for the top rank anyway.
        Some(self.max)
    }
}

/// The 1-based rank of quantile `q` among `count > 0` values: `ceil(q * count)`,
/// clamped to `1..=count`.
pub(crate) fn nearest_rank(q: f64, count: u64) -> u64 {
    let q = q.clamp(0.0, 1.0);
    // `as` saturates; the f64 rounding of huge counts only matters past 2^53 values.
    let rank = (q * count as f64).ceil() as u64;
    rank.clamp(1, count)
}

fn bucket_index(v: u64) -> usize {
    if v < SUB_BUCKETS {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros(); // >= SUB_BITS here
    let shift = msb - SUB_BITS;
    // (v >> shift) is in [32, 64): the top six bits, the leading one included.
    let sub = (v >> shift) - SUB_BUCKETS;
    (SUB_BUCKETS as usize) * (shift as usize + 1) + sub as usize
}

/// The smallest value of bucket `index` and the bucket's width.
fn bucket_bounds(index: usize) -> (u64, u64) {
    debug_assert!(index < MAX_BUCKETS);
    let index = index as u64;
    if index < SUB_BUCKETS {
        return (index, 1);
    }
    let shift = index / SUB_BUCKETS - 1;
    let sub = index % SUB_BUCKETS;
    ((SUB_BUCKETS + sub) << shift, 1 << shift)
}

fn bucket_middle(index: usize) -> u64 {
    let (low, width) = bucket_bounds(index);
    low + (width - 1) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact nearest-rank quantile of a sorted slice, the reference for the histogram.
    fn exact_quantile(sorted: &[u64], q: f64) -> u64 {
        let rank = nearest_rank(q, sorted.len() as u64);
        sorted[(rank - 1) as usize]
    }

    fn assert_within_bound(estimate: u64, exact: u64) {
        let error = estimate.abs_diff(exact) as f64;
        assert!(
            error <= exact as f64 / 64.0,
            "estimate {estimate} too far from {exact}"
        );
    }

    #[test]
    fn empty_histogram_has_no_quantiles() {
        let h = Histogram::new();
        assert_eq!(h.count(), 0);
        assert!(h.is_empty());
        assert_eq!(h.quantile(0.5), None);
        assert_eq!(h.quantile(0.0), None);
        assert_eq!(h.quantile(1.0), None);
        assert_eq!(h.max(), None);
        assert_eq!(h.min(), None);
    }

    #[test]
    fn single_value_is_exact_at_every_quantile() {
        let mut h = Histogram::new();
        h.record(123_456_789);
        assert_eq!(h.count(), 1);
        for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(h.quantile(q), Some(123_456_789), "q={q}");
        }
        assert_eq!(h.max(), Some(123_456_789));
    }

    #[test]
    fn values_below_64_are_exact() {
        let mut h = Histogram::new();
        for v in 0..64 {
            h.record(v);
        }
        assert_eq!(h.count(), 64);
        assert_eq!(h.quantile(0.0), Some(0));
        // Rank ceil(0.5 * 64) = 32 → the 32nd smallest value, 31.
        assert_eq!(h.quantile(0.5), Some(31));
        assert_eq!(h.quantile(0.9), Some(57)); // rank 58
        assert_eq!(h.quantile(0.99), Some(63)); // rank 64
        assert_eq!(h.quantile(1.0), Some(63));
        assert_eq!(h.max(), Some(63));
    }

    #[test]
    fn many_values_stay_within_documented_bound() {
        // A deterministic spread over eight decades (a simple LCG, no rand dependency).
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut values = Vec::new();
        for _ in 0..10_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let decade = (x >> 60) % 9;
            values.push((x >> 20) % 10u64.pow(decade as u32 + 1));
        }
        let mut h = Histogram::new();
        for &v in &values {
            h.record(v);
        }
        values.sort_unstable();
        for q in [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999] {
            let estimate = h.quantile(q).unwrap_or(u64::MAX);
            assert_within_bound(estimate, exact_quantile(&values, q));
        }
        assert_eq!(h.quantile(1.0), values.last().copied());
        assert_eq!(h.max(), values.last().copied());
        assert_eq!(h.min(), values.first().copied());
    }

    #[test]
    fn quantile_is_clamped_to_exact_max() {
        let mut h = Histogram::new();
        // 992 and 993 share the bucket [992, 1008) of width 16, whose middle is 999.
        h.record(992);
        h.record(993);
        h.record(994);
        // Rank 2 of 3 is 993; the bucket's middle, 999, is clamped down to the max.
        assert_eq!(h.quantile(0.5), Some(994));
        assert_eq!(h.quantile(1.0), Some(994));
        assert_eq!(h.quantile(0.0), Some(992));
        assert_eq!(h.max(), Some(994));
    }

    #[test]
    fn bucket_middle_answers_between_extremes() {
        let mut h = Histogram::new();
        h.record(100);
        h.record(1000);
        h.record(1010);
        h.record(5000);
        // Rank 2 is 1000, in the bucket [992, 1008): answered by its middle, 999.
        assert_eq!(h.quantile(0.5), Some(999));
        // Rank 3 is 1010, in the bucket [1008, 1024): middle 1015.
        assert_eq!(h.quantile(0.75), Some(1015));
        assert_eq!(h.quantile(0.0), Some(100));
        assert_eq!(h.quantile(1.0), Some(5000));
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let mut h = Histogram::new();
        h.record(u64::MAX);
        h.record(0);
        assert_eq!(h.count(), 2);
        assert_eq!(h.quantile(0.5), Some(0));
        assert_eq!(h.quantile(1.0), Some(u64::MAX));
        assert_eq!(bucket_index(u64::MAX), MAX_BUCKETS - 1);
    }

    #[test]
    fn out_of_range_and_nan_quantiles_do_not_panic() {
        let mut h = Histogram::new();
        h.record(10);
        h.record(20);
        assert_eq!(h.quantile(-1.0), Some(10));
        assert_eq!(h.quantile(7.0), Some(20));
        assert_eq!(h.quantile(f64::INFINITY), Some(20));
        assert_eq!(h.quantile(f64::NAN), None);
    }

    #[test]
    fn bucket_index_and_bounds_agree() {
        for v in (0..5000u64).chain([u64::MAX / 3, 1 << 40, (1 << 40) - 1]) {
            let (low, width) = bucket_bounds(bucket_index(v));
            assert!(low <= v && v - low < width, "v={v} low={low} width={width}");
        }
        // Buckets tile the range: each starts where the previous ends.
        for index in 1..MAX_BUCKETS {
            let (prev_low, prev_width) = bucket_bounds(index - 1);
            assert_eq!(
                bucket_bounds(index).0,
                prev_low + prev_width,
                "index {index}"
            );
        }
    }

    #[test]
    fn one_two_and_three_values_answer_as_they_would_with_buckets_from_the_start() {
        let mut h = Histogram::new();
        h.record(900);
        assert_eq!((h.quantile(0.5), h.quantile(0.99)), (Some(900), Some(900)));
        h.record(5);
        assert_eq!((h.quantile(0.5), h.quantile(0.51)), (Some(5), Some(900)));
        h.record(40);
        // Ranks 1..=3 of 5, 40, 900: the middle one from the buckets, exact below 64.
        assert_eq!(
            (h.quantile(0.0), h.quantile(0.5), h.quantile(1.0)),
            (Some(5), Some(40), Some(900))
        );
        h.record(41);
        assert_eq!(
            (h.count(), h.quantile(0.5), h.quantile(0.75)),
            (4, Some(40), Some(41))
        );
        assert_eq!(
            h.buckets.iter().sum::<u64>(),
            4,
            "every value in a bucket once"
        );
    }

    #[test]
    fn memory_grows_only_to_largest_bucket() {
        let mut h = Histogram::new();
        h.record(10);
        h.record(10);
        assert!(h.buckets.is_empty(), "two values need no buckets");
        h.record(10);
        assert_eq!(h.buckets.len(), 11);
        assert_eq!(h.buckets[10], 3);
        h.record(3_600_000_000); // one hour in µs
        // 3.6e9 is in [2^31, 2^32): bucket 32 * 27 + 21.
        assert_eq!(h.buckets.len(), 886);
    }
}
