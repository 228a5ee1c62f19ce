//! The autoscaler's live loop on the leader (DESIGN.md §4 "Autoscaler").
//!
//! Every tick (2 s by default) it lists the VoiceAgents, reads
//! `GET {metrics_url}/v1/signals?namespace=NS` once per namespace, runs
//! [`decide`] for each component the operator scales (all four with engine
//! `operator`, only the runtime with engine `hpa`), and writes a changed
//! `spec.replicas` with a server-side apply of that one field, forced: the
//! operator is the only writer of replicas. The apply uses the field manager
//! [`SCALE_MANAGER`] rather than the reconciler's `voice-agent-operator`,
//! because an apply of one field by the reconciler's manager would remove
//! every other field of the Deployment that manager owns. Each change gets a
//! Normal Event on the VoiceAgent.
//!
//! **Runtime scale-down is held**: removing runtime pods without draining
//! them first would drop calls, and the drain step does not exist yet. So
//! the runtime only ever scales up here; when the decision is lower, the
//! replicas stay and the component's reason is [`DRAIN_PENDING`], and the
//! `ScalingActive` message says how many replicas the runtime would have.
//!
//! The status fields the autoscaler owns (`components.*.desiredReplicas`,
//! `.reason`, `.lastScaleTime`, `activeCalls`, `latency` and the
//! `ScalingActive` condition) are written by server-side apply on `/status`
//! with the field manager [`STATUS_MANAGER`], and only when something other
//! than timestamps changed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, info, warn};
use voice_agent_api::VoiceAgent;
use voice_agent_api::common::LatencySummary;
use voice_agent_api::conditions::{self, Status, types};
use voice_agent_api::voiceagent::ComponentStatus;
use voice_agent_proto::metrics::{SignalsList, SignalsResponse};
use voice_agent_proto::{Component, Stage};

use super::{ComponentState, Observation, Policy, decide};
use crate::controller::status::slot;
use crate::metrics::Metrics;
use crate::render::{self, COMPONENTS, MANAGER, Naming};

/// The default time between ticks.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Field manager of the autoscaler's status writes: distinct from the
/// reconciler's, so the two never take each other's fields by accident.
pub const STATUS_MANAGER: &str = "voice-agent-operator-autoscaler";
/// Field manager of the autoscaler's `spec.replicas` applies on
/// Deployments (see [`write_replicas`]).
pub const SCALE_MANAGER: &str = STATUS_MANAGER;
/// Reason of a runtime whose scale-down waits for the drain step.
pub const DRAIN_PENDING: &str = "DrainPending";

/// A client for the metrics service: reqwest is built with
/// `rustls-no-provider` and panics building any client (even for plain
/// HTTP) without a process-wide crypto provider, so ring is installed first.
pub fn http_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    // Err means a provider is already installed: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(1)))
        .timeout(timeout)
        .user_agent(concat!("voice-agent-operator/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// What one tick did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Replica changes written, as `namespace/agent component from → to`.
    pub scaled: Vec<String>,
    /// VoiceAgents (`namespace/name`) whose status was written.
    pub status_written: Vec<String>,
    /// Failures (the tick goes on with the next object).
    pub errors: Vec<String>,
}

/// The outcome of one component in one tick.
struct ComponentOutcome {
    component: Component,
    /// The replicas the Deployment has after the tick.
    replicas: i32,
    /// The reason for the status (`Reason::to_string` or [`DRAIN_PENDING`]).
    reason: String,
    /// Whether the signals were usable.
    active: bool,
    /// Whether `spec.replicas` was changed in this tick.
    scaled: bool,
    /// The lower replicas a held runtime scale-down wanted.
    held: Option<i32>,
    /// Whether the decision was `StaleSignals`.
    stale: bool,
    /// The reason's CamelCase name (for the condition).
    name: &'static str,
}

/// The live autoscaler: per (namespace, agent, component) state in memory.
pub struct Autoscaler {
    client: Client,
    http: reqwest::Client,
    metrics_url: String,
    namespaces: Vec<String>,
    metrics: Metrics,
    recorder: Recorder,
    states: HashMap<(String, String, Component), ComponentState>,
}

impl Autoscaler {
    /// An autoscaler reading `metrics_url`, for the VoiceAgents of
    /// `namespaces` (all when empty).
    pub fn new(
        client: Client,
        metrics_url: &str,
        namespaces: Vec<String>,
        metrics: Metrics,
        recorder: Recorder,
        timeout: Duration,
    ) -> reqwest::Result<Self> {
        Ok(Self {
            client,
            http: http_client(timeout)?,
            metrics_url: metrics_url.trim_end_matches('/').to_string(),
            namespaces,
            metrics,
            recorder,
            states: HashMap::new(),
        })
    }

    /// Ticks every `interval` until `stop` turns true.
    pub async fn run(mut self, interval: Duration, mut stop: watch::Receiver<bool>) {
        info!(metrics_url = %self.metrics_url, interval_ms = interval.as_millis(), "autoscaler running");
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *stop.borrow_and_update() {
                info!("autoscaler stopped");
                return;
            }
            tokio::select! {
                _ = ticks.tick() => {
                    let report = self.tick().await;
                    for e in &report.errors {
                        warn!("autoscaler: {e}");
                    }
                }
                changed = stop.changed() => {
                    if changed.is_err() {
                        info!("autoscaler stopped");
                        return;
                    }
                }
            }
        }
    }

    /// One tick over every VoiceAgent.
    pub async fn tick(&mut self) -> TickReport {
        let mut report = TickReport::default();
        let now = jiff::Timestamp::now();
        let agents = match self.list_agents().await {
            Ok(a) => a,
            Err(e) => {
                report.errors.push(format!("listing VoiceAgents: {e}"));
                return report;
            }
        };
        let mut by_ns: BTreeMap<String, Vec<VoiceAgent>> = BTreeMap::new();
        for va in agents {
            by_ns
                .entry(va.namespace().unwrap_or_default())
                .or_default()
                .push(va);
        }
        self.forget_gone(&by_ns);
        for (ns, agents) in &by_ns {
            let signals = self.fetch(ns).await;
            let deployments = match self.deployment_replicas(ns).await {
                Ok(d) => d,
                Err(e) => {
                    report
                        .errors
                        .push(format!("listing Deployments in {ns}: {e}"));
                    continue;
                }
            };
            for va in agents {
                self.scale_agent(va, ns, &signals, &deployments, now, &mut report)
                    .await;
            }
        }
        report
    }

    async fn list_agents(&self) -> kube::Result<Vec<VoiceAgent>> {
        let scopes: Vec<Api<DeserializeGuard<VoiceAgent>>> = if self.namespaces.is_empty() {
            vec![Api::all(self.client.clone())]
        } else {
            self.namespaces
                .iter()
                .map(|ns| Api::namespaced(self.client.clone(), ns))
                .collect()
        };
        let mut out = Vec::new();
        for api in scopes {
            for guard in api.list(&ListParams::default()).await?.items {
                // Undecodable agents are the reconciler's to report.
                if let Ok(va) = guard.0
                    && va.metadata.deletion_timestamp.is_none()
                {
                    out.push(va);
                }
            }
        }
        Ok(out)
    }

    /// Drops the state and gauges of agents that no longer exist.
    fn forget_gone(&mut self, by_ns: &BTreeMap<String, Vec<VoiceAgent>>) {
        let live: HashSet<(String, String)> = by_ns
            .iter()
            .flat_map(|(ns, v)| v.iter().map(move |va| (ns.clone(), va.name_any())))
            .collect();
        let metrics = &self.metrics;
        self.states.retain(|(ns, agent, c), _| {
            let keep = live.contains(&(ns.clone(), agent.clone()));
            if !keep {
                let labels = [ns.as_str(), agent.as_str(), c.as_str()];
                let _ = metrics.desired_replicas.remove_label_values(&labels);
                let _ = metrics.current_replicas.remove_label_values(&labels);
            }
            keep
        });
    }

    /// `GET /v1/signals?namespace=NS`; the error names the URL.
    async fn fetch(&self, ns: &str) -> Result<SignalsList, String> {
        // Namespace names are DNS labels: nothing to escape.
        let url = format!("{}/v1/signals?namespace={ns}", self.metrics_url);
        let fail = |e: String| format!("GET {url}: {e}");
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| fail(chain(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(fail(format!("HTTP {status}")));
        }
        let body = resp.bytes().await.map_err(|e| fail(chain(&e)))?;
        serde_json::from_slice(&body).map_err(|e| fail(format!("decoding the body: {e}")))
    }

    /// `spec.replicas` of the operator's Deployments in `ns`, by name.
    async fn deployment_replicas(&self, ns: &str) -> kube::Result<HashMap<String, i32>> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        let lp = ListParams::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
        Ok(api
            .list(&lp)
            .await?
            .items
            .into_iter()
            .map(|d| {
                let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                (d.name_any(), replicas)
            })
            .collect())
    }

    async fn scale_agent(
        &mut self,
        va: &VoiceAgent,
        ns: &str,
        signals: &Result<SignalsList, String>,
        deployments: &HashMap<String, i32>,
        now: jiff::Timestamp,
        report: &mut TickReport,
    ) {
        let Ok(naming) = Naming::new(va) else { return };
        let name = naming.agent.clone();
        let now_ms = now.as_millisecond();
        let agent_signals: Option<&SignalsResponse> =
            signals.as_ref().ok().and_then(|l| l.get(ns, &name));
        let mut outcomes = Vec::new();
        for c in COMPONENTS {
            if !render::operator_scales(va, c) {
                continue;
            }
            let deployment = naming.component(c);
            // Not created yet: the reconciler comes first.
            let Some(&current) = deployments.get(&deployment) else {
                continue;
            };
            let state = self
                .states
                .entry((ns.to_string(), name.clone(), c))
                .or_insert_with(|| ComponentState::new(current));
            state.replicas = current;
            let last_scale = state.last_scale_ms;
            let policy = Policy::for_component(va, c);
            let observation = agent_signals
                .and_then(|s| s.component(c))
                .and_then(|cs| Observation::from_signals(cs, &policy.targets));
            let decision = decide(state, observation.as_ref(), &policy, now_ms);
            let labels = [ns, name.as_str(), c.as_str()];
            self.metrics
                .desired_replicas
                .with_label_values(&labels)
                .set(i64::from(decision.desired));
            let mut outcome = ComponentOutcome {
                component: c,
                replicas: decision.desired,
                reason: decision.reason.to_string(),
                active: decision.active,
                scaled: false,
                held: None,
                stale: decision.reason == super::Reason::StaleSignals,
                name: decision.reason.name(),
            };
            if c == Component::Runtime && decision.desired < current {
                // No drain yet: never remove runtime pods (and their calls).
                state.replicas = current;
                state.last_scale_ms = last_scale;
                outcome.replicas = current;
                outcome.reason = DRAIN_PENDING.to_string();
                outcome.name = DRAIN_PENDING;
                outcome.held = Some(decision.desired);
            }
            self.metrics
                .scaling_decisions
                .with_label_values(&[c.as_str(), outcome.name])
                .inc();
            if outcome.replicas != current {
                match write_replicas(&self.client, ns, &deployment, outcome.replicas).await {
                    Ok(()) => {
                        self.metrics
                            .writes
                            .with_label_values(&["Deployment", "scale"])
                            .inc();
                        outcome.scaled = true;
                        let note = format!(
                            "{} {current} → {}: {}",
                            c.as_str(),
                            outcome.replicas,
                            outcome.reason
                        );
                        info!(object = %format!("{ns}/{name}"), "scaled {note}");
                        report.scaled.push(format!("{ns}/{name} {note}"));
                        self.publish(va, decision.reason.name(), note).await;
                    }
                    Err(e) => {
                        // Keep the state in step with what runs.
                        if let Some(state) = self.states.get_mut(&(ns.to_string(), name.clone(), c))
                        {
                            state.replicas = current;
                            state.last_scale_ms = last_scale;
                        }
                        outcome.replicas = current;
                        report.errors.push(format!(
                            "scaling Deployment {ns}/{deployment} to {}: {e}",
                            decision.desired
                        ));
                    }
                }
            }
            self.metrics
                .current_replicas
                .with_label_values(&labels)
                .set(i64::from(outcome.replicas));
            outcomes.push(outcome);
        }
        if outcomes.is_empty() {
            return;
        }
        let runtime_signals = agent_signals.and_then(|s| s.component(Component::Runtime));
        let active_calls = runtime_signals.map(|r| round_i32(r.active_calls));
        let latency = runtime_signals
            .and_then(|r| r.window(Stage::E2e, 60))
            .filter(|w| w.count > 0)
            .map(|w| LatencySummary {
                p50_ms: Some(round_i64(w.p50_ms)),
                p95_ms: Some(round_i64(w.p95_ms)),
            });
        let condition = scaling_condition(
            va,
            &self.metrics_url,
            signals.as_ref().err(),
            &outcomes,
            Time(now),
        );
        match write_status(
            &self.client,
            va,
            &outcomes,
            active_calls,
            latency,
            condition,
            Time(now),
        )
        .await
        {
            Ok(true) => {
                self.metrics
                    .writes
                    .with_label_values(&["VoiceAgent", "status"])
                    .inc();
                report.status_written.push(format!("{ns}/{name}"));
            }
            Ok(false) => debug!(object = %format!("{ns}/{name}"), "autoscaler status unchanged"),
            Err(e) => report
                .errors
                .push(format!("writing the status of {ns}/{name}: {e}")),
        }
    }

    async fn publish(&self, va: &VoiceAgent, reason: &str, note: String) {
        let event = Event {
            type_: EventType::Normal,
            reason: reason.to_string(),
            note: Some(note),
            action: "Scale".to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &va.object_ref(&())).await {
            warn!(object = %va.name_any(), "publishing an Event failed: {e}");
        }
    }
}

/// Sets `spec.replicas` of a Deployment and nothing else: a server-side
/// apply of that one field, forced. The manager is [`SCALE_MANAGER`], not the
/// reconciler's: an apply by the reconciler's manager that omits the rest of
/// the Deployment would remove every other field it owns.
async fn write_replicas(client: &Client, ns: &str, name: &str, replicas: i32) -> kube::Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let patch = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas},
    });
    api.patch(
        name,
        &PatchParams::apply(SCALE_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Applies the status fields the autoscaler owns when more than timestamps
/// changed; returns whether it wrote.
async fn write_status(
    client: &Client,
    va: &VoiceAgent,
    outcomes: &[ComponentOutcome],
    active_calls: Option<i32>,
    latency: Option<LatencySummary>,
    condition: Condition,
    now: Time,
) -> Result<bool, String> {
    let prev = va.status.clone().unwrap_or_default();
    let mut changed = false;
    let mut components = serde_json::Map::new();
    for o in outcomes {
        let p: Option<ComponentStatus> = prev
            .components
            .as_ref()
            .and_then(|c| slot(c, o.component).clone());
        let last = if o.scaled {
            Some(now.clone())
        } else {
            p.as_ref().and_then(|p| p.last_scale_time.clone())
        };
        changed |= p.as_ref().map(|p| {
            (
                p.desired_replicas,
                p.reason.as_deref(),
                p.last_scale_time.as_ref(),
            )
        }) != Some((o.replicas, Some(o.reason.as_str()), last.as_ref()));
        let mut v = json!({"desiredReplicas": o.replicas, "reason": o.reason});
        if let Some(t) = last {
            v["lastScaleTime"] = serde_json::to_value(t).map_err(|e| e.to_string())?;
        }
        components.insert(o.component.as_str().to_string(), v);
    }
    // Keep what the metrics service no longer reports (an apply that omits a
    // field this manager owns would remove it).
    let active_calls = active_calls.or(prev.active_calls);
    let latency = latency.or(prev.latency.clone());
    changed |= active_calls != prev.active_calls || latency != prev.latency;
    let mut conds = prev.conditions.clone();
    changed |= conditions::set_condition(&mut conds, condition);
    if !changed {
        return Ok(false);
    }
    let condition = conditions::find_condition(&conds, types::SCALING_ACTIVE).cloned();
    let mut status = json!({"components": components, "conditions": [condition]});
    if let Some(n) = active_calls {
        status["activeCalls"] = json!(n);
    }
    if let Some(l) = latency {
        status["latency"] = serde_json::to_value(l).map_err(|e| e.to_string())?;
    }
    let name = va.name_any();
    let patch = json!({
        "apiVersion": format!("{}/{}", voice_agent_api::GROUP, voice_agent_api::VERSION),
        "kind": "VoiceAgent",
        "metadata": {"name": name},
        "status": status,
    });
    let api: Api<VoiceAgent> = Api::namespaced(client.clone(), &va.namespace().unwrap_or_default());
    api.patch_status(
        &name,
        &PatchParams::apply(SCALE_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(true)
}

/// The `ScalingActive` condition of an agent after a tick.
fn scaling_condition(
    va: &VoiceAgent,
    url: &str,
    fetch_error: Option<&String>,
    outcomes: &[ComponentOutcome],
    now: Time,
) -> Condition {
    let who = format!("{}/{}", va.namespace().unwrap_or_default(), va.name_any());
    let (status, reason, message) = if let Some(e) = fetch_error {
        (
            Status::False,
            "MetricsUnavailable",
            format!(
                "the metrics service at {url} is unavailable ({e}); holding the current replicas"
            ),
        )
    } else if outcomes.iter().any(|o| o.active) {
        let lead = outcomes
            .iter()
            .find(|o| o.scaled)
            .or_else(|| {
                outcomes
                    .iter()
                    .find(|o| o.active && o.component == Component::Runtime)
            })
            .or_else(|| outcomes.iter().find(|o| o.active));
        let parts: Vec<String> = outcomes
            .iter()
            .map(|o| match o.held {
                Some(wanted) => format!(
                    "{} {} {} (would scale down to {wanted}; runtime scale-down waits \
                     for call draining, which is not implemented yet)",
                    o.component.as_str(),
                    o.replicas,
                    o.reason
                ),
                None => format!("{} {} {}", o.component.as_str(), o.replicas, o.reason),
            })
            .collect();
        (
            Status::True,
            lead.map_or("WithinTolerance", |o| o.name),
            format!("scaling on signals from {url}: {}", parts.join(", ")),
        )
    } else if outcomes.iter().any(|o| o.stale) {
        (
            Status::False,
            "StaleSignals",
            format!(
                "the signals of {who} at {url} are older than 10 s; holding the current replicas"
            ),
        )
    } else {
        (
            Status::False,
            "NoSignals",
            format!(
                "the metrics service at {url} has no samples for {who}; holding the current replicas"
            ),
        )
    };
    conditions::new_condition(
        types::SCALING_ACTIVE,
        status,
        reason,
        message,
        va.metadata.generation,
        now,
    )
}

/// An error with its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn round_i64(x: f64) -> i64 {
    if !x.is_finite() || x <= 0.0 {
        0
    } else if x >= i64::MAX as f64 {
        i64::MAX
    } else {
        x.round() as i64
    }
}

fn round_i32(x: f64) -> i32 {
    i32::try_from(round_i64(x)).unwrap_or(i32::MAX)
}
