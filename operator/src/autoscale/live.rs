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
//! **Runtime scale-down drains first** (DESIGN.md §4 "Drain"): when the
//! decision is lower than the runtime's replicas, the loop lists the
//! runtime's pods, asks each for `GET /api/load`, and carries out what
//! [`drain::plan`] decides: mark and `POST /admin/drain` the pods with the
//! fewest calls, wait (reason [`DRAINING`]) until they are empty or past
//! `drainTimeoutSeconds`, then lower replicas; cancel the drain when the
//! decision rises again. The drain's state is on the pods (annotations) and
//! in the runtimes, so a new leader continues it.
//!
//! The status fields the autoscaler owns (`components.*.desiredReplicas`,
//! `.reason`, `.lastScaleTime`, `activeCalls`, `latency` and the
//! `ScalingActive` condition) are written by server-side apply on `/status`
//! with the field manager [`STATUS_MANAGER`], and only when something other
//! than timestamps changed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
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
use voice_agent_api::voiceagent::{AutoscalingEngine, ComponentStatus};
use voice_agent_proto::metrics::{SignalsList, SignalsResponse};
use voice_agent_proto::{Component, LoadReport, Stage};

use super::drain::{
    self, Action, DELETION_COST_ANNOTATION, DRAINING_SINCE_ANNOTATION, DrainInput, DrainMark,
    DrainPlan, DrainState, DrainingPod, PodLoad, PodView,
};
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
/// Deployments (see [`write_replicas`]) and of its pod annotations.
pub const SCALE_MANAGER: &str = STATUS_MANAGER;
/// Reason of a runtime whose scale-down waits for draining pods; also the
/// Event reason when a drain starts.
pub const DRAINING: &str = "Draining";
/// Event reason when a drain is cancelled because load rose again.
pub const DRAIN_CANCELLED: &str = "DrainCancelled";
/// Warning Event reason when drained pods still held calls at the deadline.
pub const DRAIN_TIMEOUT: &str = "DrainTimeout";

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
    /// Runtime pods told to drain, as `namespace/pod`.
    pub drains_started: Vec<String>,
    /// Runtime pods whose drain was cancelled, as `namespace/pod`.
    pub drains_cancelled: Vec<String>,
    /// Drained pods that still held calls when replicas dropped, as
    /// `namespace/pod`.
    pub drains_cut: Vec<String>,
    /// Failures (the tick goes on with the next object).
    pub errors: Vec<String>,
}

/// The outcome of one component in one tick.
struct ComponentOutcome {
    component: Component,
    /// The replicas the Deployment has after the tick.
    replicas: i32,
    /// The reason for the status (`Reason::to_string` or [`DRAINING`]).
    reason: String,
    /// Whether the signals were usable.
    active: bool,
    /// Whether `spec.replicas` was changed in this tick.
    scaled: bool,
    /// More to say in the `ScalingActive` message (a drain in progress, the
    /// last drain's cut calls).
    note: Option<String>,
    /// Whether the decision was `StaleSignals`.
    stale: bool,
    /// The reason's CamelCase name (for the condition).
    name: &'static str,
}

type AgentKey = (String, String);

/// The live autoscaler: per (namespace, agent, component) state in memory.
pub struct Autoscaler {
    client: Client,
    http: reqwest::Client,
    metrics_url: String,
    namespaces: Vec<String>,
    metrics: Metrics,
    recorder: Recorder,
    states: HashMap<(String, String, Component), ComponentState>,
    /// Per agent: whether runtime pods may carry drain marks. Unknown (a new
    /// leader) counts as yes, so the first tick looks at the pods.
    may_drain: HashMap<AgentKey, bool>,
    /// Per agent: what the last drain cut, for the status message. Only a
    /// report: Events and metrics carry it too.
    last_cut: HashMap<AgentKey, String>,
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
            may_drain: HashMap::new(),
            last_cut: HashMap::new(),
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

    /// One tick over every VoiceAgent, now.
    pub async fn tick(&mut self) -> TickReport {
        self.tick_at(jiff::Timestamp::now()).await
    }

    /// One tick over every VoiceAgent as if it were `now` (tests step
    /// through drain deadlines with it; the signals' freshness is judged
    /// against it too).
    pub async fn tick_at(&mut self, now: jiff::Timestamp) -> TickReport {
        let mut report = TickReport::default();
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
        self.may_drain.retain(|key, _| {
            let keep = live.contains(key);
            if !keep {
                let _ = metrics
                    .draining_pods
                    .remove_label_values(&[key.0.as_str(), key.1.as_str()]);
            }
            keep
        });
        self.last_cut.retain(|key, _| live.contains(key));
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
        let key: AgentKey = (ns.to_string(), name.clone());
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
                note: None,
                stale: decision.reason == super::Reason::StaleSignals,
                name: decision.reason.name(),
            };

            // The runtime removes pods only after draining them.
            let mut plan: Option<DrainPlan> = None;
            if c == Component::Runtime
                && (decision.desired < current || self.may_drain.get(&key).copied().unwrap_or(true))
            {
                match self
                    .drain_runtime(va, &naming, current, decision.desired, now_ms, report)
                    .await
                {
                    Ok(p) => plan = Some(p),
                    Err(e) => report.errors.push(e),
                }
            }
            if c == Component::Runtime && decision.desired < current {
                let scale_to = plan.as_ref().and_then(|p| p.scale_to);
                if scale_to != Some(decision.desired) {
                    // Hold: the pods to remove still hold calls (or cannot
                    // be looked at); the decision stands for the next tick.
                    if let Some(state) = self.states.get_mut(&(ns.to_string(), name.clone(), c)) {
                        state.replicas = current;
                        state.last_scale_ms = last_scale;
                    }
                    outcome.replicas = current;
                    outcome.reason = DRAINING.to_string();
                    outcome.name = DRAINING;
                    outcome.note = Some(match &plan {
                        Some(p) => drain_note(&p.state, current, decision.desired),
                        None => format!(
                            "scale-down {current} → {} waits: the runtime's pods cannot be read",
                            decision.desired
                        ),
                    });
                }
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
                        let mut note = format!(
                            "{} {current} → {}: {}",
                            c.as_str(),
                            outcome.replicas,
                            outcome.reason
                        );
                        if let Some(DrainState::Drained { pods, cut, .. }) =
                            plan.as_ref().map(|p| &p.state)
                        {
                            note.push_str(&format!(" after draining {}", names(pods)));
                            self.drained(va, &key, pods, cut, report).await;
                        }
                        info!(object = %format!("{ns}/{name}"), "scaled {note}");
                        report.scaled.push(format!("{ns}/{name} {note}"));
                        self.publish(va, EventType::Normal, decision.reason.name(), "Scale", note)
                            .await;
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
            if c == Component::Runtime
                && outcome.note.is_none()
                && let Some(cut) = self.last_cut.get(&key)
            {
                outcome.note = Some(cut.clone());
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

    /// Looks at the runtime's pods, plans the drain and carries out the
    /// plan's pod actions (not the scale: the caller writes replicas).
    async fn drain_runtime(
        &mut self,
        va: &VoiceAgent,
        naming: &Naming,
        replicas: i32,
        desired: i32,
        now_ms: i64,
        report: &mut TickReport,
    ) -> Result<DrainPlan, String> {
        let ns = naming.namespace.as_str();
        let key: AgentKey = (ns.to_string(), naming.agent.clone());
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let selector = naming
            .selector(Component::Runtime)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let pods: Vec<PodView> = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| format!("listing the runtime pods of {ns}/{}: {e}", naming.agent))?
            .items
            .iter()
            .map(pod_view)
            .collect();
        let any_marked = pods.iter().any(|p| !p.gone && p.drain.is_some());
        if desired >= replicas && !any_marked {
            // Steady state: no scale-down, nothing drained; no pod is asked.
            self.may_drain.insert(key.clone(), false);
            self.metrics
                .draining_pods
                .with_label_values(&[key.0.as_str(), key.1.as_str()])
                .set(0);
            return Ok(DrainPlan {
                actions: Vec::new(),
                scale_to: None,
                state: DrainState::Idle,
            });
        }
        let loads = self.loads(&pods).await;
        let timeout_ms = i64::from(va.spec.components.runtime.drain_timeout_seconds) * 1000;
        let plan = drain::plan(&DrainInput {
            pods: &pods,
            loads: &loads,
            replicas,
            desired,
            timeout_ms,
            now_ms,
        });
        debug!(object = %format!("{ns}/{}", naming.agent), state = ?plan.state, actions = plan.actions.len(), "drain plan");

        let mut started = Vec::new();
        let mut cancelled = Vec::new();
        for action in &plan.actions {
            match action {
                Action::Cancel { pod, url, marked } => {
                    let undrained = match url {
                        Some(u) => self.admin_drain(u, false).await.map(|_| ()),
                        None => Ok(()),
                    };
                    if let Err(e) = undrained {
                        report
                            .errors
                            .push(format!("cancelling the drain of pod {ns}/{pod}: {e}"));
                        continue;
                    }
                    if *marked {
                        if let Err(e) = mark_pod(&self.client, ns, pod, None).await {
                            report
                                .errors
                                .push(format!("removing the drain marks of pod {ns}/{pod}: {e}"));
                            continue;
                        }
                        self.metrics
                            .drain_pods
                            .with_label_values(&["cancelled"])
                            .inc();
                        cancelled.push(pod.clone());
                        report.drains_cancelled.push(format!("{ns}/{pod}"));
                    }
                    info!(object = %format!("{ns}/{pod}"), "drain cancelled");
                }
                Action::Start {
                    pod,
                    url,
                    cost,
                    since_ms,
                } => {
                    // Mark first: a pod told to drain without a mark would
                    // be invisible to the next tick (or the next leader).
                    if let Err(e) = mark_pod(&self.client, ns, pod, Some((*cost, *since_ms))).await
                    {
                        report
                            .errors
                            .push(format!("marking pod {ns}/{pod} for draining: {e}"));
                        continue;
                    }
                    if let Some(u) = url
                        && let Err(e) = self.admin_drain(u, true).await
                    {
                        // Marked: the next tick posts again (Reassert).
                        report.errors.push(format!("draining pod {ns}/{pod}: {e}"));
                    }
                    self.metrics
                        .drain_pods
                        .with_label_values(&["started"])
                        .inc();
                    info!(object = %format!("{ns}/{pod}"), cost, "drain started");
                    started.push(pod.clone());
                    report.drains_started.push(format!("{ns}/{pod}"));
                }
                Action::Remark {
                    pod,
                    cost,
                    since_ms,
                } => {
                    if let Err(e) = mark_pod(&self.client, ns, pod, Some((*cost, *since_ms))).await
                    {
                        report
                            .errors
                            .push(format!("re-marking draining pod {ns}/{pod}: {e}"));
                    }
                }
                Action::Reassert { pod, url } => {
                    if let Err(e) = self.admin_drain(url, true).await {
                        report
                            .errors
                            .push(format!("draining pod {ns}/{pod} (again): {e}"));
                    }
                }
            }
        }

        if !started.is_empty()
            && let DrainState::Draining {
                pods, deadline_ms, ..
            } = &plan.state
        {
            let who: Vec<String> = pods
                .iter()
                .filter(|p| started.contains(&p.name))
                .map(with_calls)
                .collect();
            let note = format!(
                "runtime scale-down {replicas} → {desired}: draining {}; replicas drop once the \
                 drained pods are empty, at the latest at {}",
                who.join(", "),
                rfc3339(*deadline_ms)
            );
            self.last_cut.remove(&key);
            self.publish(va, EventType::Normal, DRAINING, "Drain", note)
                .await;
        }
        if !cancelled.is_empty() {
            let note = format!(
                "the runtime's decision rose to {desired} of {replicas} replicas: {} take calls again",
                cancelled.join(", ")
            );
            self.publish(va, EventType::Normal, DRAIN_CANCELLED, "Undrain", note)
                .await;
        }

        let draining = match &plan.state {
            DrainState::Draining { pods, .. } | DrainState::Drained { pods, .. } => pods.len(),
            DrainState::Settling { .. } => {
                pods.iter().filter(|p| !p.gone && p.drain.is_some()).count()
            }
            DrainState::Idle | DrainState::Cancelled { .. } => 0,
        };
        self.metrics
            .draining_pods
            .with_label_values(&[key.0.as_str(), key.1.as_str()])
            .set(i64::try_from(draining).unwrap_or(i64::MAX));
        // Failed cancels keep their marks: look again next tick.
        let still_marked = draining > 0 || cancelled.len() < count_cancels(&plan);
        self.may_drain.insert(key, still_marked);
        Ok(plan)
    }

    /// Reports a completed drain once replicas dropped: outcome metrics, and
    /// for pods that still held calls a Warning Event and the cut-calls
    /// counter.
    async fn drained(
        &mut self,
        va: &VoiceAgent,
        key: &AgentKey,
        pods: &[DrainingPod],
        cut: &[DrainingPod],
        report: &mut TickReport,
    ) {
        let emptied = pods.len().saturating_sub(cut.len());
        self.metrics
            .drain_pods
            .with_label_values(&["drained"])
            .inc_by(emptied as u64);
        if cut.is_empty() {
            self.last_cut.remove(key);
            return;
        }
        self.metrics
            .drain_pods
            .with_label_values(&["deadline"])
            .inc_by(cut.len() as u64);
        let calls: u64 = cut.iter().map(|p| u64::from(p.calls.unwrap_or(0))).sum();
        self.metrics
            .drain_cut_calls
            .with_label_values(&[key.0.as_str(), key.1.as_str()])
            .inc_by(calls);
        for p in cut {
            report.drains_cut.push(format!("{}/{}", key.0, p.name));
        }
        let timeout = va.spec.components.runtime.drain_timeout_seconds;
        let note = format!(
            "{} still held calls at the drain deadline (drainTimeoutSeconds {timeout}); replicas \
             dropped anyway, and the pods end those calls when their termination drain runs out",
            cut.iter().map(with_calls).collect::<Vec<_>>().join(", ")
        );
        warn!(object = %format!("{}/{}", key.0, key.1), "{note}");
        self.last_cut.insert(
            key.clone(),
            format!("the last drain ended at its deadline: {note}"),
        );
        self.publish(va, EventType::Warning, DRAIN_TIMEOUT, "Drain", note)
            .await;
    }

    /// `GET /api/load` of every running pod, concurrently.
    async fn loads(&self, pods: &[PodView]) -> BTreeMap<String, PodLoad> {
        let asks = pods
            .iter()
            .filter(|p| !p.gone)
            .filter_map(|p| p.url.as_ref().map(|u| (p.name.clone(), u.clone())))
            .map(|(name, url)| async move {
                let load = match self
                    .runtime_call(reqwest::Method::GET, &url, "/api/load")
                    .await
                {
                    Ok(r) => PodLoad::Report(r),
                    Err(e) => PodLoad::Unreachable(e),
                };
                (name, load)
            });
        futures::future::join_all(asks).await.into_iter().collect()
    }

    /// `POST /admin/drain` (`drain`) or `DELETE /admin/drain`.
    async fn admin_drain(&self, url: &str, drain: bool) -> Result<LoadReport, String> {
        let method = if drain {
            reqwest::Method::POST
        } else {
            reqwest::Method::DELETE
        };
        self.runtime_call(method, url, "/admin/drain").await
    }

    /// One call to a runtime pod's API that answers a load report.
    async fn runtime_call(
        &self,
        method: reqwest::Method,
        base: &str,
        path: &str,
    ) -> Result<LoadReport, String> {
        let url = format!("{base}{path}");
        let fail = |e: String| format!("{method} {url}: {e}");
        let resp = self
            .http
            .request(method.clone(), &url)
            .send()
            .await
            .map_err(|e| fail(chain(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(fail(format!("HTTP {status}")));
        }
        let body = resp.bytes().await.map_err(|e| fail(chain(&e)))?;
        serde_json::from_slice(&body).map_err(|e| fail(format!("decoding the load report: {e}")))
    }

    async fn publish(
        &self,
        va: &VoiceAgent,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &va.object_ref(&())).await {
            warn!(object = %va.name_any(), "publishing an Event failed: {e}");
        }
    }
}

fn count_cancels(plan: &DrainPlan) -> usize {
    plan.actions
        .iter()
        .filter(|a| matches!(a, Action::Cancel { marked: true, .. }))
        .count()
}

/// The planner's view of a runtime pod.
fn pod_view(pod: &Pod) -> PodView {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref());
    let gone =
        pod.metadata.deletion_timestamp.is_some() || matches!(phase, Some("Succeeded" | "Failed"));
    // Before its containers run (phase Pending), a pod cannot hold a call.
    let ip = status
        .and_then(|s| s.pod_ip.as_deref())
        .filter(|ip| !ip.is_empty() && phase == Some("Running"));
    let port = pod
        .spec
        .as_ref()
        .and_then(|s| {
            s.containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some("http"))
                .map(|p| p.container_port)
        })
        .unwrap_or(voice_agent_api::deploy::HTTP_PORT);
    let url = ip.map(|ip| {
        if ip.contains(':') {
            format!("http://[{ip}]:{port}")
        } else {
            format!("http://{ip}:{port}")
        }
    });
    let annotations = pod.metadata.annotations.as_ref();
    let drain = annotations
        .and_then(|a| a.get(DRAINING_SINCE_ANNOTATION))
        .map(|v| DrainMark {
            since_ms: v
                .trim()
                .parse::<jiff::Timestamp>()
                .ok()
                .map(|t| t.as_millisecond()),
        });
    let deletion_cost = annotations
        .and_then(|a| a.get(DELETION_COST_ANNOTATION))
        .and_then(|v| v.trim().parse::<i64>().ok());
    PodView {
        name: pod.name_any(),
        url,
        gone,
        drain,
        deletion_cost,
    }
}

/// Sets (`Some((cost, since))`) or removes (`None`) a pod's drain marks with
/// a merge patch of its annotations.
async fn mark_pod(
    client: &Client,
    ns: &str,
    pod: &str,
    marks: Option<(i64, i64)>,
) -> kube::Result<()> {
    let annotations = match marks {
        Some((cost, since_ms)) => json!({
            DELETION_COST_ANNOTATION: cost.to_string(),
            DRAINING_SINCE_ANNOTATION: rfc3339(since_ms),
        }),
        None => json!({
            DELETION_COST_ANNOTATION: null,
            DRAINING_SINCE_ANNOTATION: null,
        }),
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let params = PatchParams {
        field_manager: Some(SCALE_MANAGER.to_string()),
        ..PatchParams::default()
    };
    api.patch(
        pod,
        &params,
        &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
    )
    .await?;
    Ok(())
}

/// Unix epoch milliseconds as RFC 3339 (the epoch itself if out of range).
fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

fn with_calls(p: &DrainingPod) -> String {
    match p.calls {
        Some(1) => format!("{} (1 call)", p.name),
        Some(n) => format!("{} ({n} calls)", p.name),
        None => format!("{} (calls unknown)", p.name),
    }
}

fn names(pods: &[DrainingPod]) -> String {
    pods.iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `ScalingActive` words for a held runtime scale-down. Call counts are
/// left out on purpose: they change every few seconds, and each change
/// would be a status write.
fn drain_note(state: &DrainState, replicas: i32, desired: i32) -> String {
    match state {
        DrainState::Draining {
            target,
            pods,
            since_ms,
            deadline_ms,
            blocked,
        } => {
            let mut note = format!(
                "scale-down {replicas} → {target} waits for {} to end their calls (draining since \
                 {}, deadline {})",
                names(pods),
                rfc3339(*since_ms),
                rfc3339(*deadline_ms)
            );
            if let Some(b) = blocked {
                note.push_str("; ");
                note.push_str(b);
            }
            note
        }
        DrainState::Settling { live, replicas } => format!(
            "scale-down to {desired} waits until the ReplicaSet has removed pods ({live} run for \
             {replicas} replicas)"
        ),
        DrainState::Idle | DrainState::Cancelled { .. } | DrainState::Drained { .. } => {
            format!("scale-down {replicas} → {desired} waits for the drain")
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
    let hpa = if va.spec.autoscaling.engine == AutoscalingEngine::Hpa {
        "; gateway, agent and tts are scaled by HorizontalPodAutoscalers (engine hpa), the \
         runtime stays operator-scaled because an HPA cannot drain calls"
    } else {
        ""
    };
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
            .map(|o| match &o.note {
                Some(note) => format!(
                    "{} {} {} ({note})",
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
            format!("scaling on signals from {url}: {}{hpa}", parts.join(", ")),
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
