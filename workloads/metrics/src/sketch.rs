//! A DDSketch-style quantile sketch for latencies in milliseconds.
//!
//! Why this sketch (and not a t-digest, HDR histogram or raw samples):
//!
//! - **Mergeable exactly.** A sketch is a set of integer counts per
//!   logarithmic bucket; merging adds counts, so merging the per-second
//!   sketches of a window gives exactly the sketch of all the window's
//!   samples (a t-digest merge is approximate and order dependent).
//! - **Bounded memory.** Buckets are sparse (only non-empty ones are stored)
//!   and the index range is clamped to [`MIN_VALUE_MS`]..=[`MAX_VALUE_MS`],
//!   so a sketch never holds more than [`MAX_BUCKETS`] buckets whatever the
//!   input; a busy second of one series typically touches a few dozen.
//! - **Relative-error guarantee.** Every quantile is within
//!   [`RELATIVE_ACCURACY`] (1 %) of the true sample at that rank. Latency
//!   targets are relative in spirit (10 ms matters at 50 ms, not at 2 s), and
//!   unlike fixed-width buckets the guarantee holds at every scale.
//!
//! Bucket `i` holds values in `(γ^(i-1), γ^i]` with
//! `γ = (1 + α) / (1 - α)`; its representative `2γ^i / (γ + 1)` is within `α`
//! of every value in it (Masson, Rim, Lee: "DDSketch", VLDB 2019).

use std::cmp::Ordering;
use std::sync::LazyLock;

/// Guaranteed relative error of every quantile (`α` in the paper).
pub const RELATIVE_ACCURACY: f64 = 0.01;
/// `γ = (1 + α) / (1 - α)`, the ratio between bucket bounds.
const GAMMA: f64 = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);
/// `ln γ`, written out because `f64::ln` is not `const`; a test checks it.
const LN_GAMMA: f64 = 0.020_000_666_706_669_23;
/// Values below this (1 µs) count as zero: no latency stage is that short.
pub const MIN_VALUE_MS: f64 = 1e-3;
/// Values above this (about 2.8 hours) are clamped into the top bucket, which
/// bounds the bucket count; quantiles there saturate at about this value.
pub const MAX_VALUE_MS: f64 = 1e7;
/// Bucket index of [`MIN_VALUE_MS`]: `ceil(ln(1e-3) / ln γ)`.
const MIN_INDEX: i16 = -345;
/// Bucket index of [`MAX_VALUE_MS`]: `ceil(ln(1e7) / ln γ)`.
const MAX_INDEX: i16 = 806;
/// Upper bound on the buckets of one sketch, the zero bucket included.
pub const MAX_BUCKETS: usize = (MAX_INDEX - MIN_INDEX) as usize + 2;

/// Bucket index of a value `>= MIN_VALUE_MS`, clamped to the index range.
fn index_of(value_ms: f64) -> i16 {
    let raw = (value_ms.ln() / LN_GAMMA).ceil();
    // The clamp makes the cast lossless; NaN cannot reach here (callers
    // compare against MIN_VALUE_MS first, which NaN fails).
    raw.clamp(f64::from(MIN_INDEX), f64::from(MAX_INDEX)) as i16
}

/// The value reported for bucket `index`: `2γ^i / (γ + 1)`.
fn compute_value(index: i16) -> f64 {
    2.0 * (f64::from(index) * LN_GAMMA).exp() / (GAMMA + 1.0)
}

/// [`compute_value`] of every index, computed once: signal queries read six
/// bucket values per series, and `exp` was a visible share of their time.
static VALUES: LazyLock<Box<[f64]>> =
    LazyLock::new(|| (MIN_INDEX..=MAX_INDEX).map(compute_value).collect());

/// The value reported for bucket `index`.
fn value_of(index: i16) -> f64 {
    let clamped = index.clamp(MIN_INDEX, MAX_INDEX);
    VALUES
        .get((clamped - MIN_INDEX) as usize)
        .copied()
        .unwrap_or_else(|| compute_value(clamped))
}

/// Sorted sparse bucket: `count` values fell into bucket `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bin {
    index: i16,
    /// u32 keeps a bin at 8 bytes; a bucket would need four billion samples
    /// in one sketch to saturate.
    count: u32,
}

/// A mergeable quantile sketch of non-negative latencies in milliseconds with
/// 1 % relative accuracy (see the module documentation).
///
/// It also keeps the exact minimum and maximum and clamps quantiles into
/// them, so a window of one sample reports that sample exactly and p99 of a
/// few samples never exceeds the slowest one.
#[derive(Debug, Clone, PartialEq)]
pub struct Sketch {
    /// Values below [`MIN_VALUE_MS`].
    zero: u64,
    /// Non-empty buckets, sorted by index.
    bins: Vec<Bin>,
    /// All values, the zero bucket included.
    count: u64,
    /// Smallest and largest value; +inf and -inf when empty.
    min: f64,
    max: f64,
}

impl Default for Sketch {
    fn default() -> Self {
        Self::new()
    }
}

impl Sketch {
    /// An empty sketch; allocates nothing until the first value.
    pub const fn new() -> Self {
        Sketch {
            zero: 0,
            bins: Vec::new(),
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// Records one value. Negative and NaN values count as zero; callers
    /// validate samples before this point.
    pub fn add(&mut self, value_ms: f64) {
        self.count += 1;
        // NaN lands in the zero bucket rather than poisoning an index.
        if value_ms.is_nan() || value_ms < MIN_VALUE_MS {
            self.zero += 1;
            self.min = self.min.min(0.0);
            self.max = self.max.max(0.0);
            return;
        }
        // Clamped like the buckets, so min and max stay finite.
        let value_ms = value_ms.min(MAX_VALUE_MS);
        self.min = self.min.min(value_ms);
        self.max = self.max.max(value_ms);
        let index = index_of(value_ms);
        match self.bins.binary_search_by_key(&index, |b| b.index) {
            Ok(i) => self.bins[i].count = self.bins[i].count.saturating_add(1),
            Err(i) => self.bins.insert(i, Bin { index, count: 1 }),
        }
    }

    /// Adds every value of `other` to this sketch: the result equals the
    /// sketch of both inputs' values together.
    pub fn merge(&mut self, other: &Sketch) {
        if other.count == 0 {
            return;
        }
        self.zero += other.zero;
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if self.bins.is_empty() {
            self.bins.extend_from_slice(&other.bins);
            return;
        }
        let (a, b) = (&self.bins, &other.bins);
        let mut merged = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            match a[i].index.cmp(&b[j].index) {
                Ordering::Less => {
                    merged.push(a[i]);
                    i += 1;
                }
                Ordering::Greater => {
                    merged.push(b[j]);
                    j += 1;
                }
                Ordering::Equal => {
                    merged.push(Bin {
                        index: a[i].index,
                        count: a[i].count.saturating_add(b[j].count),
                    });
                    i += 1;
                    j += 1;
                }
            }
        }
        merged.extend_from_slice(&a[i..]);
        merged.extend_from_slice(&b[j..]);
        self.bins = merged;
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether no value was recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Non-empty buckets, the zero bucket included; at most [`MAX_BUCKETS`].
    pub fn bucket_count(&self) -> usize {
        self.bins.len() + usize::from(self.zero > 0)
    }

    /// Forgets every value but keeps the allocation, so a reused ring slot
    /// does not allocate again.
    pub fn clear(&mut self) {
        self.zero = 0;
        self.count = 0;
        self.min = f64::INFINITY;
        self.max = f64::NEG_INFINITY;
        self.bins.clear();
    }

    /// The smallest value recorded (0 for values below [`MIN_VALUE_MS`]).
    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    /// The largest value recorded, at most [`MAX_VALUE_MS`].
    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }

    /// The `q`-quantile (`0 <= q <= 1`) in milliseconds, within 1 % of the
    /// nearest-rank quantile, the sample of rank `ceil(q * count)` (1-based);
    /// `None` when empty. `q = 0` and `q = 1` give the exact extremes.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = rank(q, self.count);
        // The extremes are known exactly.
        if rank == 0 {
            return Some(self.min);
        }
        if rank == self.count - 1 {
            return Some(self.max);
        }
        if rank < self.zero {
            return Some(0.0);
        }
        let mut seen = self.zero;
        for bin in &self.bins {
            seen += u64::from(bin.count);
            if seen > rank {
                return Some(value_of(bin.index).max(self.min).min(self.max));
            }
        }
        // Only reachable if saturated bin counts undercount the total.
        Some(self.max)
    }
}

/// Zero-based rank of the `q`-quantile among `count > 0` values, by the
/// nearest-rank definition: the smallest value with at least a `q` share of
/// the values at or below it. For few samples this leans to the slow side
/// (p99 of two samples is the slower one), which is what a scaler wants.
fn rank(q: f64, count: u64) -> u64 {
    let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
    // Float-to-int `as` saturates; the product is at most count.
    let nearest = (q * count as f64).ceil() as u64;
    nearest.saturating_sub(1).min(count - 1)
}

/// A dense scratch histogram that sums many sketches cheaply: adding a
/// sparse sketch costs its bin count, and one ascending scan answers several
/// quantiles. Used to merge the ring slots of a window without allocating.
pub(crate) struct Accumulator {
    counts: Vec<u64>,
    zero: u64,
    count: u64,
    min: f64,
    max: f64,
    /// Touched range of `counts`, so clearing and scanning skip the rest.
    lo: usize,
    hi: usize,
}

impl Accumulator {
    pub(crate) fn new() -> Self {
        Accumulator {
            counts: vec![0; MAX_BUCKETS],
            zero: 0,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            lo: usize::MAX,
            hi: 0,
        }
    }

    pub(crate) fn add(&mut self, sketch: &Sketch) {
        self.zero += sketch.zero;
        self.count += sketch.count;
        self.min = self.min.min(sketch.min);
        self.max = self.max.max(sketch.max);
        // Bins are sorted: the touched range comes from the ends, which keeps
        // the loop below to one add per bin.
        let (Some(first), Some(last)) = (sketch.bins.first(), sketch.bins.last()) else {
            return;
        };
        // MIN_INDEX <= index <= MAX_INDEX, so offsets are in range.
        self.lo = self.lo.min((first.index - MIN_INDEX) as usize);
        self.hi = self.hi.max((last.index - MIN_INDEX) as usize);
        for bin in &sketch.bins {
            if let Some(slot) = self.counts.get_mut((bin.index - MIN_INDEX) as usize) {
                *slot += u64::from(bin.count);
            }
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// The quantiles `qs` (ascending) in milliseconds; zeros when empty.
    pub(crate) fn quantiles<const N: usize>(&self, qs: [f64; N]) -> [f64; N] {
        let mut out = [0.0; N];
        if self.count == 0 {
            return out;
        }
        // Ranks once, outside the scan (`ceil` is a libm call).
        let ranks = qs.map(|q| rank(q, self.count));
        let mut next = 0;
        // Ranks below the zero bucket's count are 0 ms; rank 0 is the exact
        // minimum (which is 0 when the zero bucket is used).
        while next < N && ranks[next] < self.zero.max(1) {
            out[next] = self.min;
            next += 1;
        }
        // The last rank is the exact maximum.
        let mut last = N;
        while last > next && ranks[last - 1] == self.count - 1 {
            out[last - 1] = self.max;
            last -= 1;
        }
        if self.lo > self.hi || next == last {
            return out;
        }
        let mut seen = self.zero;
        for (offset, &c) in self.counts[self.lo..=self.hi].iter().enumerate() {
            seen += c;
            while next < last && ranks[next] < seen {
                // The offset is below MAX_BUCKETS, so it fits an i16.
                out[next] = value_of(MIN_INDEX + (self.lo + offset) as i16)
                    .max(self.min)
                    .min(self.max);
                next += 1;
            }
            if next == last {
                break;
            }
        }
        out
    }

    pub(crate) fn clear(&mut self) {
        if self.lo <= self.hi {
            self.counts[self.lo..=self.hi].fill(0);
        }
        self.zero = 0;
        self.count = 0;
        self.min = f64::INFINITY;
        self.max = f64::NEG_INFINITY;
        self.lo = usize::MAX;
        self.hi = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_match_their_definitions() {
        assert!((LN_GAMMA - GAMMA.ln()).abs() < 1e-15);
        assert_eq!(
            f64::from(MIN_INDEX),
            (MIN_VALUE_MS.ln() / GAMMA.ln()).ceil()
        );
        assert_eq!(
            f64::from(MAX_INDEX),
            (MAX_VALUE_MS.ln() / GAMMA.ln()).ceil()
        );
        assert_eq!(MAX_BUCKETS, 1153);
    }

    #[test]
    fn the_value_table_matches_the_formula() {
        for index in MIN_INDEX..=MAX_INDEX {
            assert_eq!(value_of(index), compute_value(index));
        }
        assert_eq!(VALUES.len(), MAX_BUCKETS - 1);
    }

    #[test]
    fn every_bucket_is_within_the_relative_accuracy() {
        let mut v = MIN_VALUE_MS;
        while v <= MAX_VALUE_MS {
            let got = value_of(index_of(v));
            assert!(
                (got - v).abs() <= RELATIVE_ACCURACY * v * (1.0 + 1e-9),
                "{v} -> {got}"
            );
            v *= 1.003;
        }
    }

    #[test]
    fn extremes_are_bounded() {
        let mut s = Sketch::new();
        for v in [0.0, 1e-9, f64::NAN, -1.0, 1e300, f64::MAX, f64::INFINITY] {
            s.add(v);
        }
        assert_eq!(s.count(), 7);
        assert_eq!(s.quantile(0.0), Some(0.0));
        let top = s.quantile(1.0).expect("non-empty");
        assert!((top - MAX_VALUE_MS).abs() <= RELATIVE_ACCURACY * MAX_VALUE_MS);
        assert!(s.bucket_count() <= MAX_BUCKETS);
        assert_eq!(Sketch::new().quantile(0.5), None);
    }

    #[test]
    fn bucket_count_is_bounded_across_the_whole_range() {
        let mut s = Sketch::new();
        let mut v = 1e-6;
        while v < 1e12 {
            s.add(v);
            v *= 1.001;
        }
        assert_eq!(s.bucket_count(), MAX_BUCKETS);
    }

    #[test]
    fn accumulator_matches_sketch_quantiles() {
        let mut a = Sketch::new();
        let mut b = Sketch::new();
        for i in 0..1000 {
            a.add(f64::from(i) * 0.37);
            b.add(f64::from(i * i) * 0.01);
        }
        let mut merged = a.clone();
        merged.merge(&b);
        let mut acc = Accumulator::new();
        acc.add(&a);
        acc.add(&b);
        assert_eq!(acc.count(), merged.count());
        let qs = [0.0, 0.001, 0.5, 0.95, 0.99, 1.0];
        let got = acc.quantiles(qs);
        for (q, g) in qs.into_iter().zip(got) {
            assert_eq!(Some(g), merged.quantile(q), "q={q}");
        }
        acc.clear();
        assert_eq!(acc.quantiles([0.5]), [0.0]);
        assert!(acc.counts.iter().all(|&c| c == 0));
    }
}
