//! `external.metrics.k8s.io/v1beta1`: the signals as External metrics for
//! HorizontalPodAutoscalers (`autoscaling.engine: hpa`, DESIGN.md §4).
//!
//! Served only with `VOICE_AGENT_METRICS_EXTERNAL_METRICS=true`, behind the
//! chart's opt-in APIService (a cluster has one external-metrics APIService,
//! and KEDA or prometheus-adapter may own it). The API server's aggregation
//! layer forwards the HPA controller's requests here:
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /apis` | `APIGroupList` with this group |
//! | `GET /apis/external.metrics.k8s.io` | `APIGroup` |
//! | `GET /apis/external.metrics.k8s.io/v1beta1` | `APIResourceList`: one resource per metric |
//! | `GET /apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}?labelSelector=` | `ExternalMetricValueList` |
//!
//! Errors are Kubernetes `Status` objects: an unknown metric is a 404
//! `NotFound`, a bad selector or namespace a 400 `BadRequest`.
//!
//! The metrics, one series per VoiceAgent with data, labelled `namespace`,
//! `voiceAgent`, `component` (and `stage` for latency):
//!
//! - `voice_agent_{component}_latency_p95_ms` for gateway (`webhook`),
//!   runtime (`e2e`), agent (`agentTtft`) and tts (`ttsTtfb`): the p95 over
//!   the 60 s window, for a `Value` target;
//! - `voice_agent_{component}_concurrency` for gateway, agent and tts: the
//!   in-flight requests summed over the pods, for an `AverageValue` target;
//! - `voice_agent_runtime_active_calls`: calls over all runtime pods.
//!
//! A series without data (no sample in the window, no fresh gauge) is left
//! out: the HPA then holds, as the operator's autoscaler does.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State as AxumState};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use voice_agent_proto::{Component, ComponentSignals, Stage};

use crate::State;
use crate::selector::{self, Selector};

/// The API group.
pub const GROUP: &str = "external.metrics.k8s.io";
/// The API version.
pub const VERSION: &str = "v1beta1";
/// `group/version`.
pub const GROUP_VERSION: &str = "external.metrics.k8s.io/v1beta1";
/// The window the latency metrics are computed over, seconds.
pub const LATENCY_WINDOW_SECONDS: u32 = 60;

/// What an external metric measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// p95 latency of a stage over [`LATENCY_WINDOW_SECONDS`], ms.
    LatencyP95(Stage),
    /// In-flight requests summed over the component's pods.
    Concurrency,
    /// Active calls summed over the component's pods.
    ActiveCalls,
}

/// One external metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    /// Its name in the API.
    pub name: String,
    /// The component it describes.
    pub component: Component,
    /// What it measures.
    pub measure: Measure,
}

/// The stage a component's latency metric follows: the one the operator's
/// autoscaler scales that component on.
pub fn scaling_stage(c: Component) -> Option<Stage> {
    match c {
        Component::Gateway => Some(Stage::Webhook),
        Component::Runtime => Some(Stage::E2e),
        Component::Agent => Some(Stage::AgentTtft),
        Component::Tts => Some(Stage::TtsTtfb),
        Component::Metrics => None,
    }
}

/// Every metric served, in discovery order.
pub fn metrics() -> Vec<Metric> {
    let mut out = Vec::new();
    for c in [
        Component::Gateway,
        Component::Runtime,
        Component::Agent,
        Component::Tts,
    ] {
        if let Some(stage) = scaling_stage(c) {
            out.push(Metric {
                name: format!("voice_agent_{}_latency_p95_ms", c.as_str()),
                component: c,
                measure: Measure::LatencyP95(stage),
            });
        }
        if c == Component::Runtime {
            out.push(Metric {
                name: "voice_agent_runtime_active_calls".to_string(),
                component: c,
                measure: Measure::ActiveCalls,
            });
        } else {
            out.push(Metric {
                name: format!("voice_agent_{}_concurrency", c.as_str()),
                component: c,
                measure: Measure::Concurrency,
            });
        }
    }
    out
}

/// A Kubernetes quantity string: whole numbers as is (`"250"`), others in
/// thousandths (`"1500m"` would be 1.5). Negative, NaN or infinite values
/// are 0; huge values saturate.
pub fn quantity(value: f64) -> String {
    if !value.is_finite() || value <= 0.0 {
        return "0".to_string();
    }
    let milli = (value * 1000.0).round();
    let milli = if milli >= i64::MAX as f64 {
        i64::MAX
    } else {
        milli as i64
    };
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

/// The value of `metric` from a component's signals, when there is data.
fn value(metric: &Metric, signals: &ComponentSignals) -> Option<f64> {
    signals.fresh_at_ms?;
    match metric.measure {
        Measure::LatencyP95(stage) => signals
            .window(stage, LATENCY_WINDOW_SECONDS)
            .filter(|w| w.count > 0)
            .map(|w| w.p95_ms),
        Measure::Concurrency => {
            (signals.pods > 0).then(|| signals.concurrency_per_pod * f64::from(signals.pods))
        }
        Measure::ActiveCalls => (signals.pods > 0).then_some(signals.active_calls),
    }
}

/// The routes, for [`crate::api::router`] to merge when enabled.
pub fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/apis", get(group_list))
        .route(&format!("/apis/{GROUP}"), get(group))
        .route(&format!("/apis/{GROUP_VERSION}"), get(resource_list))
        .route(
            &format!("/apis/{GROUP_VERSION}/namespaces/{{namespace}}/{{metric}}"),
            get(metric_values),
        )
}

fn kube_json(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A `metav1.Status` failure.
fn status_error(
    code: StatusCode,
    reason: &str,
    message: String,
    details: Option<Value>,
) -> Response {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if let Some(d) = details {
        body["details"] = d;
    }
    kube_json(code, &body)
}

fn group_version() -> Value {
    json!({"groupVersion": GROUP_VERSION, "version": VERSION})
}

fn group_body() -> Value {
    json!({
        "name": GROUP,
        "versions": [group_version()],
        "preferredVersion": group_version(),
    })
}

async fn group_list() -> Response {
    kube_json(
        StatusCode::OK,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group_body()]}),
    )
}

async fn group() -> Response {
    let mut body = group_body();
    body["kind"] = json!("APIGroup");
    body["apiVersion"] = json!("v1");
    kube_json(StatusCode::OK, &body)
}

async fn resource_list() -> Response {
    let resources: Vec<Value> = metrics()
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "singularName": "",
                "namespaced": true,
                "kind": "ExternalMetricValueList",
                "verbs": ["get"],
            })
        })
        .collect();
    kube_json(
        StatusCode::OK,
        &json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": GROUP_VERSION,
            "resources": resources,
        }),
    )
}

/// RFC 1123 label: what a namespace name must be.
fn is_namespace(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// `labelSelector` from the raw query (other parameters are ignored, as the
/// API server ignores what a resource does not use).
fn label_selector(query: Option<&str>) -> Result<Selector, String> {
    let mut selector = String::new();
    for pair in query.unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "labelSelector" {
            selector = percent_decode(value)
                .ok_or_else(|| "labelSelector is not valid percent-encoded UTF-8".to_string())?;
        }
    }
    selector::parse(&selector).map_err(|e| e.to_string())
}

/// Decodes `%XX` escapes and `+` (a space in query strings).
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hi = (bytes.next()? as char).to_digit(16)?;
                let lo = (bytes.next()? as char).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
            }
            b'+' => out.push(b' '),
            _ => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// Seconds-precision RFC 3339, as `metav1.Time` serializes.
fn timestamp(ms: i64) -> String {
    jiff::Timestamp::from_second(ms.div_euclid(1000))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

async fn metric_values(
    AxumState(state): AxumState<Arc<State>>,
    Path((namespace, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(metric) = metrics().into_iter().find(|m| m.name == name) else {
        return status_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "{name}.{GROUP} \"{name}\" not found: this service serves {}",
                {
                    metrics()
                        .iter()
                        .map(|m| m.name.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
            Some(json!({"name": name, "group": GROUP, "kind": name})),
        );
    };
    if !is_namespace(&namespace) {
        return status_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("{namespace:?} is not a valid namespace name"),
            None,
        );
    }
    let selector = match label_selector(query.as_deref()) {
        Ok(s) => s,
        Err(message) => {
            return status_error(StatusCode::BAD_REQUEST, "BadRequest", message, None);
        }
    };
    let mut items = Vec::new();
    for agent in state.signals_list(Some(&namespace)).items {
        let Some(signals) = agent.component(metric.component) else {
            continue;
        };
        let Some(v) = value(&metric, signals) else {
            continue;
        };
        let mut labels = BTreeMap::from([
            ("namespace".to_string(), agent.namespace.clone()),
            ("voiceAgent".to_string(), agent.voice_agent.clone()),
            (
                "component".to_string(),
                metric.component.as_str().to_string(),
            ),
        ]);
        if let Measure::LatencyP95(stage) = metric.measure {
            labels.insert("stage".to_string(), stage.as_str().to_string());
        }
        if !selector.matches(&labels) {
            continue;
        }
        items.push(json!({
            "metricName": metric.name,
            "metricLabels": labels,
            "timestamp": timestamp(signals.fresh_at_ms.unwrap_or(agent.generated_at_ms)),
            "value": quantity(v),
        }));
    }
    kube_json(
        StatusCode::OK,
        &json!({
            "kind": "ExternalMetricValueList",
            "apiVersion": GROUP_VERSION,
            "metadata": {},
            "items": items,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_kubernetes_strings() {
        assert_eq!(quantity(250.0), "250");
        assert_eq!(quantity(1.5), "1500m");
        assert_eq!(quantity(123.4567), "123457m");
        assert_eq!(quantity(0.0), "0");
        assert_eq!(quantity(-3.0), "0");
        assert_eq!(quantity(f64::NAN), "0");
        assert_eq!(quantity(0.0004), "0");
        assert_eq!(quantity(1e300), format!("{}m", i64::MAX));
    }

    #[test]
    fn the_metric_names_follow_one_scheme() {
        let names: Vec<String> = metrics().into_iter().map(|m| m.name).collect();
        assert_eq!(
            names,
            [
                "voice_agent_gateway_latency_p95_ms",
                "voice_agent_gateway_concurrency",
                "voice_agent_runtime_latency_p95_ms",
                "voice_agent_runtime_active_calls",
                "voice_agent_agent_latency_p95_ms",
                "voice_agent_agent_concurrency",
                "voice_agent_tts_latency_p95_ms",
                "voice_agent_tts_concurrency",
            ]
        );
    }

    #[test]
    fn selectors_come_from_the_raw_query() {
        let s = label_selector(Some(
            "labelSelector=namespace%3Dvoice%2CvoiceAgent+in+%28a%2Cb%29",
        ))
        .expect("parses");
        assert_eq!(s.requirements.len(), 2);
        assert!(label_selector(None).expect("empty").requirements.is_empty());
        assert!(label_selector(Some("labelSelector=%ZZ")).is_err());
        assert!(label_selector(Some("labelSelector=a%3D%3D%3Db")).is_err());
    }
}
