//! Sliding latency windows: a ring of one-second [`Sketch`]es.

use voice_agent_proto::metrics::SIGNAL_WINDOWS_SECONDS;

use crate::sketch::{Accumulator, Sketch};

/// The short window (panic scaling), seconds.
pub const SHORT_WINDOW_SECONDS: u32 = SIGNAL_WINDOWS_SECONDS[0];
/// The long window (steady scaling), seconds; also the ring's length.
pub const LONG_WINDOW_SECONDS: u32 = SIGNAL_WINDOWS_SECONDS[1];
/// One slot per second of the long window.
pub const SLOTS: usize = LONG_WINDOW_SECONDS as usize;

/// Marks a slot that never held data.
const EMPTY: i64 = i64::MIN;

#[derive(Debug, Clone)]
struct Slot {
    /// Unix second the sketch belongs to, or [`EMPTY`].
    second: i64,
    sketch: Sketch,
}

/// Latencies of the last [`LONG_WINDOW_SECONDS`] seconds in one-second
/// slots. Slot `s % 60` holds the samples of Unix second `s`; a slot whose
/// second is out of date is cleared on reuse, so the ring never needs a
/// sweep of its own. A window of `w` seconds at time `now` merges the slots
/// of seconds `now_s - w + 1 ..= now_s`: a sample leaves it between `w - 1`
/// and `w` seconds after its `at`, depending on where in its second it fell.
#[derive(Debug, Clone)]
pub struct SlidingWindow {
    slots: Box<[Slot]>,
}

impl Default for SlidingWindow {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a sample landed in a [`SlidingWindow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In the slot of its own second.
    Placed,
    /// Ahead of the server clock (allowed skew): counted as now.
    ClampedToNow,
    /// Older than the long window: not in any window.
    TooOld,
}

impl SlidingWindow {
    /// An empty ring; slots allocate bins only when used.
    pub fn new() -> Self {
        SlidingWindow {
            slots: vec![
                Slot {
                    second: EMPTY,
                    sketch: Sketch::new(),
                };
                SLOTS
            ]
            .into_boxed_slice(),
        }
    }

    /// Records `value_ms` measured at `at_ms`, as seen at server time
    /// `now_ms`. Samples from the future (within the skew that validation
    /// allows) count as now: with 60 slots a second ahead of the clock would
    /// share a slot with one 59 s old.
    pub fn record(&mut self, value_ms: f64, at_ms: i64, now_ms: i64) -> Placement {
        let now_s = now_ms.div_euclid(1000);
        let at_s = at_ms.div_euclid(1000);
        let (second, placement) = if at_s > now_s {
            (now_s, Placement::ClampedToNow)
        } else if at_s <= now_s - LONG_WINDOW_SECONDS as i64 {
            return Placement::TooOld;
        } else {
            (at_s, Placement::Placed)
        };
        let slot = &mut self.slots[second.rem_euclid(SLOTS as i64) as usize];
        if slot.second != second {
            // The slot's data is at least a full ring old (or from before a
            // backwards clock step): out of every window.
            slot.second = second;
            slot.sketch.clear();
        }
        slot.sketch.add(value_ms);
        placement
    }

    /// Slots whose second is within the last `window_seconds` at `now_s`.
    fn in_window(&self, window_seconds: u32, now_s: i64) -> impl Iterator<Item = &Sketch> {
        let oldest = now_s - i64::from(window_seconds.min(LONG_WINDOW_SECONDS)) + 1;
        self.slots
            .iter()
            .filter(move |s| s.second >= oldest && s.second <= now_s)
            .map(|s| &s.sketch)
    }

    /// Observations within the last `window_seconds` at `now_ms`.
    pub fn count(&self, window_seconds: u32, now_ms: i64) -> u64 {
        self.in_window(window_seconds, now_ms.div_euclid(1000))
            .map(Sketch::count)
            .sum()
    }

    /// Whether no observation is within the long window at `now_ms`.
    pub fn is_empty(&self, now_ms: i64) -> bool {
        self.count(LONG_WINDOW_SECONDS, now_ms) == 0
    }

    /// The merged sketch of the last `window_seconds` at `now_ms`.
    pub fn snapshot(&self, window_seconds: u32, now_ms: i64) -> Sketch {
        let mut merged = Sketch::new();
        for sketch in self.in_window(window_seconds, now_ms.div_euclid(1000)) {
            merged.merge(sketch);
        }
        merged
    }

    /// Count and p50/p95/p99 of the short and the long window in one pass
    /// over the ring: the short window's slots are summed first, read, then
    /// the rest of the long window is added. `acc` is cleared before return.
    pub(crate) fn percentiles(&self, now_ms: i64, acc: &mut Accumulator) -> [(u64, [f64; 3]); 2] {
        const QS: [f64; 3] = [0.50, 0.95, 0.99];
        let now_s = now_ms.div_euclid(1000);
        let short_oldest = now_s - i64::from(SHORT_WINDOW_SECONDS) + 1;
        let long_oldest = now_s - i64::from(LONG_WINDOW_SECONDS) + 1;
        acc.clear();
        for slot in self.slots.iter() {
            if slot.second >= short_oldest && slot.second <= now_s {
                acc.add(&slot.sketch);
            }
        }
        let short = (acc.count(), acc.quantiles(QS));
        for slot in self.slots.iter() {
            if slot.second >= long_oldest && slot.second < short_oldest {
                acc.add(&slot.sketch);
            }
        }
        let long = (acc.count(), acc.quantiles(QS));
        acc.clear();
        [short, long]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    #[test]
    fn placement() {
        let mut w = SlidingWindow::new();
        assert_eq!(w.record(1.0, T0, T0), Placement::Placed);
        assert_eq!(w.record(1.0, T0 + 4_000, T0), Placement::ClampedToNow);
        assert_eq!(w.record(1.0, T0 - 59_000, T0), Placement::Placed);
        assert_eq!(w.record(1.0, T0 - 60_000, T0), Placement::TooOld);
        assert_eq!(w.count(60, T0), 3);
        assert_eq!(w.count(6, T0), 2);
    }

    #[test]
    fn a_reused_slot_forgets_its_old_second() {
        let mut w = SlidingWindow::new();
        w.record(100.0, T0, T0);
        // Same slot index, one ring later.
        w.record(5.0, T0 + 60_000, T0 + 60_000);
        assert_eq!(w.count(60, T0 + 60_000), 1);
        let p50 = w
            .snapshot(60, T0 + 60_000)
            .quantile(0.5)
            .expect("one sample");
        assert!((p50 - 5.0).abs() <= 0.05, "{p50}");
    }

    #[test]
    fn percentiles_cover_both_windows() {
        let mut w = SlidingWindow::new();
        let mut acc = Accumulator::new();
        for i in 0..100 {
            w.record(10.0, T0 - 30_000 + i, T0);
            w.record(1000.0, T0 - i, T0);
        }
        let [short, long] = w.percentiles(T0, &mut acc);
        assert_eq!(short.0, 100);
        assert!((short.1[0] - 1000.0).abs() <= 10.0);
        assert_eq!(long.0, 200);
        assert!((long.1[0] - 10.0).abs() <= 0.1, "{long:?}");
        assert!((long.1[2] - 1000.0).abs() <= 10.0);
        // The window slides: 30.5 s later only the 1000 ms samples remain.
        let [short, long] = w.percentiles(T0 + 30_500, &mut acc);
        assert_eq!((short.0, long.0), (0, 100));
    }
}
