//! The cluster metrics service: sample ingestion (`POST /v1/samples`) and the
//! scaling signals the operator reads (`GET /v1/signals`).

use serde::{Deserialize, Serialize};

use crate::component::Component;
use crate::error::ProtoError;
use crate::stage::Stage;

/// Gauge name: calls a pod holds right now (runtime; gateway for its proxied
/// streams).
pub const GAUGE_ACTIVE_CALLS: &str = "activeCalls";
/// Gauge name: requests a pod is serving right now.
pub const GAUGE_CONCURRENCY: &str = "concurrency";

/// Sliding windows, in seconds, that signals report latency over: a short one
/// for panic scaling and a long one for steady scaling.
pub const SIGNAL_WINDOWS_SECONDS: [u32; 2] = [6, 60];

/// What a [`Sample`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SampleKind {
    /// One latency observation; `name` is a [`Stage`], `value` milliseconds.
    Latency,
    /// The current value of a level, e.g. [`GAUGE_ACTIVE_CALLS`]; the latest
    /// sample per pod wins.
    Gauge,
}

/// One measurement from one pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// Namespace of the VoiceAgent.
    pub namespace: String,
    /// Name of the VoiceAgent.
    pub voice_agent: String,
    /// Component the pod belongs to.
    pub component: Component,
    /// Name of the reporting pod.
    pub pod: String,
    /// Latency observation or gauge.
    pub kind: SampleKind,
    /// A [`Stage`] name for latency samples, a gauge name otherwise.
    pub name: String,
    /// Milliseconds for latency, the level for gauges; finite and >= 0.
    pub value: f64,
    /// When it was measured, Unix epoch milliseconds.
    pub at: i64,
}

/// `POST /v1/samples`. Applied all or nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SampleBatch {
    /// The samples, in any order.
    pub samples: Vec<Sample>,
}

impl SampleBatch {
    /// Checks the whole batch before anything is applied.
    ///
    /// Refuses more than `max_samples` samples with
    /// [`ProtoError::TooManySamples`] (HTTP 413), and otherwise reports the
    /// first bad sample by index: blank namespace, voiceAgent, pod or name, a
    /// latency name that is no [`Stage`], a value that is negative or not
    /// finite, or `at` negative or more than `max_future_skew_ms` after
    /// `now_ms`. An empty batch is valid and changes nothing.
    pub fn validate(
        &self,
        now_ms: i64,
        max_samples: usize,
        max_future_skew_ms: i64,
    ) -> Result<(), ProtoError> {
        if self.samples.len() > max_samples {
            return Err(ProtoError::TooManySamples {
                count: self.samples.len(),
                max: max_samples,
            });
        }
        let latest = now_ms.saturating_add(max_future_skew_ms);
        for (i, sample) in self.samples.iter().enumerate() {
            let field = |name: &str| format!("samples[{i}].{name}");
            for (name, value) in [
                ("namespace", &sample.namespace),
                ("voiceAgent", &sample.voice_agent),
                ("pod", &sample.pod),
                ("name", &sample.name),
            ] {
                if value.trim().is_empty() {
                    return Err(ProtoError::invalid(field(name), "must not be empty"));
                }
            }
            // Signals are keyed by stage; an unknown latency name would be
            // stored but never reported, so refuse it up front.
            if sample.kind == SampleKind::Latency && sample.name.parse::<Stage>().is_err() {
                return Err(ProtoError::invalid(
                    field("name"),
                    format!("{:?} is not a latency stage", sample.name),
                ));
            }
            if !sample.value.is_finite() || sample.value < 0.0 {
                return Err(ProtoError::invalid(
                    field("value"),
                    "must be a finite number >= 0",
                ));
            }
            if sample.at < 0 {
                return Err(ProtoError::invalid(
                    field("at"),
                    "must be Unix epoch milliseconds >= 0",
                ));
            }
            if sample.at > latest {
                return Err(ProtoError::invalid(
                    field("at"),
                    format!(
                        "is {} ms in the future; at most {max_future_skew_ms} ms allowed",
                        sample.at.saturating_sub(now_ms)
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `202 Accepted` answer of `POST /v1/samples`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SamplesAccepted {
    /// Samples applied from the batch: all of them, since batches are applied
    /// all or nothing.
    pub accepted: u64,
}

/// Query of `GET /v1/signals?namespace=&voiceAgent=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignalsQuery {
    /// Namespace of the VoiceAgent.
    pub namespace: String,
    /// Name of the VoiceAgent.
    pub voice_agent: String,
}

/// `GET /v1/signals`: what the autoscaler scales one VoiceAgent on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignalsResponse {
    /// Namespace of the VoiceAgent.
    pub namespace: String,
    /// Name of the VoiceAgent.
    pub voice_agent: String,
    /// When the service computed this answer, Unix epoch milliseconds.
    pub generated_at_ms: i64,
    /// One entry per component that reported samples.
    pub components: Vec<ComponentSignals>,
}

impl SignalsResponse {
    /// The signals of one component, if it reported any.
    pub fn component(&self, component: Component) -> Option<&ComponentSignals> {
        self.components.iter().find(|c| c.component == component)
    }
}

/// `GET /v1/signals` without `voiceAgent`: the signals of every VoiceAgent
/// in the namespace (or, without `namespace`, in the cluster) that has data,
/// so the autoscaler needs one request per namespace rather than per agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignalsList {
    /// One entry per VoiceAgent, ordered by namespace, then name.
    pub items: Vec<SignalsResponse>,
}

impl SignalsList {
    /// The signals of one VoiceAgent, if it is in the list.
    pub fn get(&self, namespace: &str, voice_agent: &str) -> Option<&SignalsResponse> {
        self.items
            .iter()
            .find(|s| s.namespace == namespace && s.voice_agent == voice_agent)
    }
}

/// Load and latency of one component of a VoiceAgent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentSignals {
    /// The component.
    pub component: Component,
    /// Pods with a fresh gauge sample.
    pub pods: u32,
    /// Sum of the pods' latest `activeCalls` gauges.
    pub active_calls: f64,
    /// `activeCalls / pods` (0 when there are no pods).
    pub active_calls_per_pod: f64,
    /// Mean of the pods' latest `concurrency` gauges.
    pub concurrency_per_pod: f64,
    /// Latency per stage and window (see [`SIGNAL_WINDOWS_SECONDS`]).
    pub latency: Vec<StageWindow>,
    /// Time of the newest sample, Unix epoch milliseconds; null when none.
    #[serde(default)]
    pub fresh_at_ms: Option<i64>,
}

impl ComponentSignals {
    /// The latency of `stage` over the window of `window_seconds`, if present.
    pub fn window(&self, stage: Stage, window_seconds: u32) -> Option<&StageWindow> {
        self.latency
            .iter()
            .find(|w| w.stage == stage && w.window_seconds == window_seconds)
    }
}

/// Latency percentiles of one stage over one sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageWindow {
    /// The stage.
    pub stage: Stage,
    /// Window length in seconds.
    pub window_seconds: u32,
    /// Observations in the window. When 0 the percentiles are 0 and mean
    /// nothing (JSON has no NaN).
    pub count: u64,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 95th percentile, milliseconds.
    pub p95_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const NOW: i64 = 1_700_000_000_000;

    fn sample(kind: SampleKind, name: &str, value: f64) -> Sample {
        Sample {
            namespace: "default".into(),
            voice_agent: "support".into(),
            component: Component::Runtime,
            pod: "support-runtime-0".into(),
            kind,
            name: name.into(),
            value,
            at: NOW,
        }
    }

    fn batch(samples: Vec<Sample>) -> SampleBatch {
        SampleBatch { samples }
    }

    #[test]
    fn sample_batch_wire_format() {
        let json = r#"{"samples":[{"namespace":"default","voiceAgent":"support","component":"runtime","pod":"support-runtime-0","kind":"latency","name":"e2e","value":812.5,"at":1700000000000},{"namespace":"default","voiceAgent":"support","component":"runtime","pod":"support-runtime-0","kind":"gauge","name":"activeCalls","value":3.0,"at":1700000000000}]}"#;
        let parsed: SampleBatch = serde_json::from_str(json).expect("deserialize");
        assert_eq!(
            parsed,
            batch(vec![
                sample(SampleKind::Latency, "e2e", 812.5),
                sample(SampleKind::Gauge, GAUGE_ACTIVE_CALLS, 3.0),
            ])
        );
        assert_eq!(serde_json::to_string(&parsed).expect("serialize"), json);
    }

    #[test]
    fn sample_batch_refuses_malformed_json() {
        let good = r#"{"namespace":"d","voiceAgent":"a","component":"tts","pod":"p","kind":"gauge","name":"concurrency","value":1,"at":1}"#;
        assert!(serde_json::from_str::<Sample>(good).is_ok());
        for bad in [
            good.replace(r#""kind":"gauge""#, r#""kind":"counter""#),
            good.replace(r#""component":"tts""#, r#""component":"stt""#),
            good.replace(r#""value":1"#, r#""value":"1""#),
            good.replace(r#""at":1"#, r#""at":1.5"#),
            good.replace(r#","pod":"p""#, ""),
        ] {
            assert!(serde_json::from_str::<Sample>(&bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<SampleBatch>("{}").is_err());
        assert!(serde_json::from_str::<SampleBatch>(r#"{"samples":{}}"#).is_err());
    }

    #[test]
    fn valid_batches_pass() {
        let ok = batch(vec![
            sample(SampleKind::Latency, "agentTtft", 0.0),
            sample(SampleKind::Gauge, GAUGE_CONCURRENCY, 7.0),
            Sample {
                at: NOW + 5_000,
                ..sample(SampleKind::Gauge, "queueDepth", 1.0)
            },
        ]);
        assert_eq!(ok.validate(NOW, 3, 5_000), Ok(()));
        assert_eq!(batch(vec![]).validate(NOW, 10, 0), Ok(()));
    }

    #[test]
    fn oversized_batch_is_a_distinct_error() {
        let big = batch(vec![sample(SampleKind::Gauge, "activeCalls", 1.0); 4]);
        let err = big.validate(NOW, 3, 0).expect_err("too many");
        assert_eq!(err, ProtoError::TooManySamples { count: 4, max: 3 });
        assert_eq!(err.http_status(), 413);
    }

    #[test]
    fn bad_samples_are_named_by_index() {
        let good = sample(SampleKind::Latency, "e2e", 100.0);
        let cases: Vec<(Sample, &str)> = vec![
            (
                Sample {
                    value: -1.0,
                    ..good.clone()
                },
                "samples[1].value: must be a finite number >= 0",
            ),
            (
                Sample {
                    value: f64::NAN,
                    ..good.clone()
                },
                "samples[1].value: must be a finite number >= 0",
            ),
            (
                Sample {
                    value: f64::INFINITY,
                    ..good.clone()
                },
                "samples[1].value: must be a finite number >= 0",
            ),
            (
                Sample {
                    namespace: String::new(),
                    ..good.clone()
                },
                "samples[1].namespace: must not be empty",
            ),
            (
                Sample {
                    voice_agent: " ".into(),
                    ..good.clone()
                },
                "samples[1].voiceAgent: must not be empty",
            ),
            (
                Sample {
                    pod: String::new(),
                    ..good.clone()
                },
                "samples[1].pod: must not be empty",
            ),
            (
                Sample {
                    name: String::new(),
                    ..good.clone()
                },
                "samples[1].name: must not be empty",
            ),
            (
                Sample {
                    name: "stt".into(),
                    ..good.clone()
                },
                "samples[1].name: \"stt\" is not a latency stage",
            ),
            (
                Sample {
                    at: NOW + 5_001,
                    ..good.clone()
                },
                "samples[1].at: is 5001 ms in the future; at most 5000 ms allowed",
            ),
            (
                Sample {
                    at: -1,
                    ..good.clone()
                },
                "samples[1].at: must be Unix epoch milliseconds >= 0",
            ),
        ];
        for (bad, message) in cases {
            // Index 2 is bad too: the first bad sample is the one reported.
            let b = batch(vec![
                good.clone(),
                bad,
                Sample {
                    value: -5.0,
                    ..good.clone()
                },
            ]);
            let err = b.validate(NOW, 10, 5_000).expect_err(message);
            assert_eq!(err.to_string(), message);
            assert_eq!(err.http_status(), 400);
        }
    }

    #[test]
    fn extreme_clock_values_do_not_overflow() {
        let s = Sample {
            at: i64::MAX,
            ..sample(SampleKind::Gauge, "activeCalls", 1.0)
        };
        assert!(batch(vec![s.clone()]).validate(NOW, 1, i64::MAX).is_ok());
        assert!(batch(vec![s]).validate(i64::MIN, 1, 0).is_err());
    }

    #[test]
    fn signals_response_wire_format() {
        let json = r#"{
            "namespace": "default",
            "voiceAgent": "support",
            "generatedAtMs": 1700000000500,
            "components": [{
                "component": "runtime",
                "pods": 2,
                "activeCalls": 7.0,
                "activeCallsPerPod": 3.5,
                "concurrencyPerPod": 1.0,
                "latency": [
                    {"stage": "e2e", "windowSeconds": 6, "count": 12, "p50Ms": 700.0, "p95Ms": 950.0, "p99Ms": 1100.0},
                    {"stage": "e2e", "windowSeconds": 60, "count": 0, "p50Ms": 0.0, "p95Ms": 0.0, "p99Ms": 0.0}
                ],
                "freshAtMs": 1700000000000
            }, {
                "component": "tts",
                "pods": 0,
                "activeCalls": 0.0,
                "activeCallsPerPod": 0.0,
                "concurrencyPerPod": 0.0,
                "latency": [],
                "freshAtMs": null
            }]
        }"#;
        let signals: SignalsResponse = serde_json::from_str(json).expect("deserialize");
        let runtime = signals.component(Component::Runtime).expect("runtime");
        assert_eq!(runtime.active_calls_per_pod, 3.5);
        let short = runtime.window(Stage::E2e, 6).expect("6 s window");
        assert_eq!((short.count, short.p95_ms), (12, 950.0));
        assert!(runtime.window(Stage::Eou, 6).is_none());
        assert!(signals.component(Component::Agent).is_none());
        assert_eq!(
            signals.component(Component::Tts).expect("tts").fresh_at_ms,
            None
        );
        let expected: Value = serde_json::from_str(json).expect("literal");
        assert_eq!(serde_json::to_value(&signals).expect("serialize"), expected);

        let bad = json.replace(r#""stage": "e2e""#, r#""stage": "E2E""#);
        assert!(serde_json::from_str::<SignalsResponse>(&bad).is_err());
    }

    #[test]
    fn samples_accepted_wire_format() {
        let json = r#"{"accepted":2}"#;
        let parsed: SamplesAccepted = serde_json::from_str(json).expect("deserialize");
        assert_eq!(parsed, SamplesAccepted { accepted: 2 });
        assert_eq!(serde_json::to_string(&parsed).expect("serialize"), json);
        assert!(serde_json::from_str::<SamplesAccepted>(r#"{"accepted":-1}"#).is_err());
        assert!(serde_json::from_str::<SamplesAccepted>("{}").is_err());
    }

    #[test]
    fn signals_list_wire_format() {
        let json = r#"{"items":[{"namespace":"default","voiceAgent":"support","generatedAtMs":1700000000000,"components":[{"component":"runtime","pods":2,"activeCalls":3.0,"activeCallsPerPod":1.5,"concurrencyPerPod":0.0,"latency":[{"stage":"e2e","windowSeconds":6,"count":4,"p50Ms":700.0,"p95Ms":900.0,"p99Ms":950.0}],"freshAtMs":1699999999000}]},{"namespace":"default","voiceAgent":"sales","generatedAtMs":1700000000000,"components":[]}]}"#;
        let parsed: SignalsList = serde_json::from_str(json).expect("deserialize");
        assert_eq!(parsed.items.len(), 2);
        let support = parsed.get("default", "support").expect("support listed");
        let runtime = support.component(Component::Runtime).expect("runtime");
        assert_eq!(runtime.active_calls_per_pod, 1.5);
        assert_eq!(runtime.window(Stage::E2e, 6).map(|w| w.count), Some(4));
        assert!(
            parsed
                .get("default", "sales")
                .is_some_and(|s| s.components.is_empty())
        );
        assert!(parsed.get("other", "support").is_none());
        assert_eq!(serde_json::to_string(&parsed).expect("serialize"), json);
        let empty = SignalsList { items: vec![] };
        assert_eq!(
            serde_json::to_string(&empty).expect("serialize"),
            r#"{"items":[]}"#
        );
        assert!(serde_json::from_str::<SignalsList>("[]").is_err());
    }

    #[test]
    fn signals_query_and_constants() {
        let q: SignalsQuery =
            serde_json::from_str(r#"{"namespace":"default","voiceAgent":"support"}"#)
                .expect("deserialize");
        assert_eq!(q.voice_agent, "support");
        assert_eq!(
            (GAUGE_ACTIVE_CALLS, GAUGE_CONCURRENCY),
            ("activeCalls", "concurrency")
        );
        assert_eq!(
            serde_json::to_string(&[SampleKind::Latency, SampleKind::Gauge]).expect("serialize"),
            r#"["latency","gauge"]"#
        );
    }
}
