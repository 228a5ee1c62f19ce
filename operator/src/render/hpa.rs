//! HorizontalPodAutoscalers for `autoscaling.engine: hpa` (DESIGN.md §4).
//!
//! Gateway, agent and tts each get an `autoscaling/v2` HPA on two External
//! metrics served by the cluster's metrics service through
//! `external.metrics.k8s.io/v1beta1` (its APIService is opt-in in the chart):
//!
//! - [`latency_metric`]: the component's p95 latency over 60 s, in
//!   milliseconds, against its latency target as a `Value` target, so the
//!   HPA computes `ceil(current × value / target)` as the operator does;
//! - [`concurrency_metric`]: in-flight requests summed over the component's
//!   pods, against the per-pod target as an `AverageValue` target (the HPA
//!   divides by the current replicas).
//!
//! Both select the agent with the labels `namespace` and `voiceAgent`. The
//! runtime gets no HPA: an HPA removes pods without draining their calls,
//! so the operator keeps scaling it (and says so in `ScalingActive`).

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, ExternalMetricSource, HPAScalingPolicy, HPAScalingRules,
    HorizontalPodAutoscaler, HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec,
    MetricIdentifier, MetricSpec, MetricTarget,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use voice_agent_api::VoiceAgent;
use voice_agent_api::voiceagent::AutoscalingEngine;
use voice_agent_proto::Component;

use super::{Naming, bounds};

/// The components an HPA scales with `engine: hpa`.
pub const HPA_COMPONENTS: [Component; 3] = [Component::Gateway, Component::Agent, Component::Tts];

/// External metric of a component's p95 latency over 60 s, milliseconds:
/// `voice_agent_{component}_latency_p95_ms`.
pub fn latency_metric(c: Component) -> String {
    format!("voice_agent_{}_latency_p95_ms", c.as_str())
}

/// External metric of a component's in-flight requests summed over its
/// pods: `voice_agent_{component}_concurrency`.
pub fn concurrency_metric(c: Component) -> String {
    format!("voice_agent_{}_concurrency", c.as_str())
}

/// The selector of one agent's series in the external metrics API.
fn selector(naming: &Naming) -> LabelSelector {
    LabelSelector {
        match_labels: Some(
            [
                ("namespace".to_string(), naming.namespace.clone()),
                ("voiceAgent".to_string(), naming.agent.clone()),
            ]
            .into(),
        ),
        ..LabelSelector::default()
    }
}

fn external(name: String, naming: &Naming, target: MetricTarget) -> MetricSpec {
    MetricSpec {
        type_: "External".to_string(),
        external: Some(ExternalMetricSource {
            metric: MetricIdentifier {
                name,
                selector: Some(selector(naming)),
            },
            target,
        }),
        ..MetricSpec::default()
    }
}

/// The latency and concurrency targets of an HPA-scaled component.
fn targets(va: &VoiceAgent, c: Component) -> (i32, i32) {
    let t = &va.spec.autoscaling.targets;
    match c {
        Component::Gateway => (t.gateway_latency_p95_ms, t.gateway_concurrency_per_pod),
        Component::Agent => (t.agent_latency_p95_ms, t.agent_concurrency_per_pod),
        _ => (t.tts_latency_p95_ms, t.tts_concurrency_per_pod),
    }
}

/// The HPA of component `c`.
fn hpa(va: &VoiceAgent, naming: &Naming, c: Component) -> HorizontalPodAutoscaler {
    let (min, max) = bounds(va, c);
    let (latency, concurrency) = targets(va, c);
    let behavior = &va.spec.autoscaling.behavior;
    let name = naming.component(c);
    HorizontalPodAutoscaler {
        metadata: naming.meta(name.clone(), Some(c)),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_string()),
                kind: "Deployment".to_string(),
                name,
            },
            min_replicas: Some(min),
            max_replicas: max,
            metrics: Some(vec![
                external(
                    latency_metric(c),
                    naming,
                    MetricTarget {
                        type_: "Value".to_string(),
                        value: Some(Quantity(latency.to_string())),
                        ..MetricTarget::default()
                    },
                ),
                external(
                    concurrency_metric(c),
                    naming,
                    MetricTarget {
                        type_: "AverageValue".to_string(),
                        average_value: Some(Quantity(concurrency.to_string())),
                        ..MetricTarget::default()
                    },
                ),
            ]),
            behavior: Some(HorizontalPodAutoscalerBehavior {
                // The operator's scale-up limit, max(+100 %, +4 pods), per
                // HPA sync period (15 s by default).
                scale_up: Some(HPAScalingRules {
                    stabilization_window_seconds: Some(
                        behavior.scale_up.stabilization_window_seconds,
                    ),
                    select_policy: Some("Max".to_string()),
                    policies: Some(vec![
                        HPAScalingPolicy {
                            type_: "Percent".to_string(),
                            value: 100,
                            period_seconds: 15,
                        },
                        HPAScalingPolicy {
                            type_: "Pods".to_string(),
                            value: 4,
                            period_seconds: 15,
                        },
                    ]),
                    ..HPAScalingRules::default()
                }),
                scale_down: Some(HPAScalingRules {
                    stabilization_window_seconds: Some(
                        behavior.scale_down.stabilization_window_seconds,
                    ),
                    ..HPAScalingRules::default()
                }),
            }),
        }),
        ..HorizontalPodAutoscaler::default()
    }
}

/// The HPAs of `va`: one each for gateway, agent and tts with
/// `engine: hpa`, none with `engine: operator`.
pub(super) fn hpas(va: &VoiceAgent, naming: &Naming) -> Vec<HorizontalPodAutoscaler> {
    if va.spec.autoscaling.engine != AutoscalingEngine::Hpa {
        return Vec::new();
    }
    HPA_COMPONENTS
        .into_iter()
        .map(|c| hpa(va, naming, c))
        .collect()
}
