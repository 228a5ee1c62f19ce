//! The quantile sketch against exact quantiles, and merging.

mod support;

use support::{XorShift, exact_quantile};
use voice_agent_metrics::Sketch;
use voice_agent_metrics::sketch::MAX_BUCKETS;

const QUANTILES: [f64; 10] = [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999];

fn values(seed: u64, n: usize) -> Vec<f64> {
    let mut rng = XorShift(seed);
    (0..n).map(|_| rng.latency_ms()).collect()
}

fn sketch_of(values: &[f64]) -> Sketch {
    let mut s = Sketch::new();
    for &v in values {
        s.add(v);
    }
    s
}

/// Within 2 % relative (the sketch guarantees 1 %); values below the
/// sketch's 1 µs floor are reported as 0, an absolute error under 1 µs.
fn assert_close(got: f64, want: f64, what: &str) {
    if want < 1e-3 {
        assert!(got <= 1e-3, "{what}: got {got}, exact {want}");
    } else {
        let err = (got - want).abs() / want;
        assert!(
            err <= 0.02,
            "{what}: got {got}, exact {want}, error {err:.4}"
        );
    }
}

#[test]
fn quantiles_are_within_two_percent_of_exact() {
    for (seed, n) in [(1, 100), (0x5eed, 10_000), (0xdead_beef, 200_000)] {
        let mut v = values(seed, n);
        let sketch = sketch_of(&v);
        v.sort_by(f64::total_cmp);
        assert_eq!(sketch.count(), n as u64);
        for q in QUANTILES {
            let got = sketch.quantile(q).expect("non-empty");
            assert_close(
                got,
                exact_quantile(&v, q),
                &format!("seed {seed} n {n} q {q}"),
            );
        }
        assert_eq!(sketch.quantile(1.0), v.last().copied(), "max is exact");
        // The minimum is exact too, unless it is below the 1 µs floor.
        let min = sketch.quantile(0.0).expect("non-empty");
        assert!(
            min == v[0] || (v[0] < 1e-3 && min == 0.0),
            "min {min} vs {}",
            v[0]
        );
        assert!(sketch.bucket_count() <= MAX_BUCKETS);
    }
}

#[test]
fn merge_equals_the_sketch_of_the_union() {
    let v = values(42, 20_000);
    let (a, b) = v.split_at(7_331);
    let whole = sketch_of(&v);

    let mut ab = sketch_of(a);
    ab.merge(&sketch_of(b));
    assert_eq!(ab, whole);

    let mut ba = sketch_of(b);
    ba.merge(&sketch_of(a));
    assert_eq!(ba, whole, "merge is order independent");

    let mut into_empty = Sketch::new();
    into_empty.merge(&whole);
    assert_eq!(into_empty, whole);
    let mut with_empty = whole.clone();
    with_empty.merge(&Sketch::new());
    assert_eq!(with_empty, whole);

    // Many small sketches, as the window's one-second slots are.
    let mut slots = Sketch::new();
    for chunk in v.chunks(97) {
        slots.merge(&sketch_of(chunk));
    }
    assert_eq!(slots, whole);
    for q in QUANTILES {
        assert_eq!(slots.quantile(q), whole.quantile(q));
    }
}

#[test]
fn clear_forgets_everything() {
    let mut s = sketch_of(&values(7, 1_000));
    s.clear();
    assert_eq!(s, Sketch::new());
    assert_eq!(s.quantile(0.5), None);
    assert_eq!((s.min(), s.max()), (None, None));
}
