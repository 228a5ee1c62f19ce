//! The metrics service's `POST /v1/samples` ingestion from raw JSON bodies.
//!
//! Input layout: up to 8 bodies separated by NUL bytes (never valid inside
//! JSON), applied in order to one `State` with small limits so that the
//! series cap and the batch-size cap are reached. Checks: no panic; a
//! refused batch changes nothing (series count and the signals answer are
//! identical before and after); an accepted one adds at most one series per
//! sample and never crosses the cap; `ingest_json` agrees with
//! `SampleBatch` serde + `validate`.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use voice_agent_metrics::{Config, IngestError, ManualClock, State};
use voice_agent_proto::SampleBatch;

const NOW_MS: i64 = 1_700_000_000_000;
const MAX_SERIES: usize = 12;
const MAX_SAMPLES: usize = 16;
const SKEW: Duration = Duration::from_secs(5);

fuzz_target!(|data: &[u8]| {
    let config = Config {
        max_samples_per_batch: MAX_SAMPLES,
        max_series: MAX_SERIES,
        max_future_skew: SKEW,
        ..Config::default()
    };
    let clock = Arc::new(ManualClock::new(NOW_MS));
    let clock_dyn: Arc<dyn voice_agent_metrics::Clock> = clock.clone();
    let state = State::with_clock(config, clock_dyn).expect("state");

    for (i, body) in data.split(|&b| b == 0).take(8).enumerate() {
        // Time moves a little between batches, so windows and staleness move.
        clock.set(NOW_MS + i as i64 * 1_000);
        let now = state.now_ms();
        let series_before = state.series();
        let signals_before = signals(&state);

        let parsed = serde_json::from_slice::<SampleBatch>(body);
        let result = state.ingest_json(body);
        match (&parsed, &result) {
            (Err(_), Err(IngestError::Malformed(_))) => {}
            (Err(e), other) => panic!("serde refused ({e}) but ingest_json gave {other:?}"),
            (Ok(batch), Err(IngestError::Malformed(e))) => {
                panic!("serde parsed {batch:?} but ingest_json said malformed: {e}")
            }
            (Ok(batch), result) => {
                let valid = batch.validate(now, MAX_SAMPLES, SKEW.as_millis() as i64);
                match (valid, result) {
                    (Err(v), Err(IngestError::Invalid(e))) => assert_eq!(&v, e),
                    (Err(v), other) => panic!("validate: {v}, but ingest gave {other:?}"),
                    (Ok(()), Err(IngestError::SeriesLimit { new, current, max })) => {
                        assert_eq!(*current, series_before);
                        assert_eq!(*max, MAX_SERIES);
                        assert!(current + new > *max, "refused under the cap");
                    }
                    (Ok(()), Ok(n)) => assert_eq!(*n, batch.samples.len()),
                    (Ok(()), Err(e)) => panic!("valid batch refused: {e}"),
                }
            }
        }

        let series_after = state.series();
        assert!(
            series_after <= MAX_SERIES,
            "{series_after} series, cap {MAX_SERIES}"
        );
        match &result {
            Err(err) => {
                assert_eq!(
                    series_after, series_before,
                    "refused batch ({err}) added series"
                );
                assert_eq!(
                    signals(&state),
                    signals_before,
                    "refused batch ({err}) changed signals"
                );
            }
            Ok(n) => assert!(
                series_after >= series_before && series_after - series_before <= *n,
                "{n} samples took series from {series_before} to {series_after}"
            ),
        }
    }
    // The exposition renders whatever label values were accepted.
    let _ = state.render_metrics();
    let _ = state.sweep();
});

/// Everything the signals API would answer now, as JSON.
fn signals(state: &State) -> String {
    serde_json::to_string(&state.signals_list(None)).expect("signals serialize")
}
