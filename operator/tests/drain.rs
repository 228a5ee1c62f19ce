//! Drain-aware runtime scale-down with real runtimes: each "pod" is a
//! `voice-agent-runtime` instance in-process on its own listener, holding
//! live sessions (simulated calls that stay connected until the test hangs
//! up), and a Pod object in the in-memory Kubernetes API pointing at it. The
//! autoscaler ticks against the fake API and the real metrics service; the
//! test plays the ReplicaSet controller (it deletes the lowest-ranked pods
//! when replicas drop, and stops their runtimes as SIGTERM would) and the
//! gateway (new calls go to pods that are ready).
//!
//! What is asserted: the least-loaded pods drain first, replicas drop only
//! after the drained pods report zero calls, no call ends except by the
//! test's own hang-up, a pod still holding calls at the deadline is
//! reported, rising load cancels the drain, and a new leader picks a drain
//! up from the pod annotations.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use voice_agent_api::VoiceAgent;
use voice_agent_api::conditions::{find_condition, types};
use voice_agent_kube_fake::FakeApi;
use voice_agent_metrics::{Config as MetricsConfig, State as MetricsState};
use voice_agent_operator::autoscale::live::{Autoscaler, TickReport, http_client};
use voice_agent_operator::controller::voiceagent::reconcile_agent;
use voice_agent_operator::controller::{Context, Ctx};
use voice_agent_operator::metrics::Metrics;
use voice_agent_operator::render::{self, BuildInput, Naming, OperatorSettings};
use voice_agent_proto::metrics::{GAUGE_ACTIVE_CALLS, Sample, SampleBatch, SampleKind};
use voice_agent_proto::{
    Component, CreateSessionRequest, CreateSessionResponse, LoadReport, Transport,
};
use voice_agent_runtime::sessions::EndReason;
use voice_agent_runtime::stt::{SttError, SttParams, SttProvider, SttStream};

const NS: &str = "voice";
const COST: &str = "controller.kubernetes.io/pod-deletion-cost";
const SINCE: &str = "voiceagent.io/draining-since";

/// Sessions here never get media: no recognizer is ever opened.
struct NoStt;

impl SttProvider for NoStt {
    fn name(&self) -> &'static str {
        "none"
    }

    fn open(&self, _: &SttParams) -> Result<SttStream, SttError> {
        Err(SttError::Unavailable(
            "the drain tests carry no audio".into(),
        ))
    }
}

/// One runtime pod: a runtime in-process and its Pod object.
struct RuntimePod {
    name: String,
    url: String,
    state: Arc<voice_agent_runtime::State>,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<Result<(), voice_agent_runtime::Error>>>,
}

struct Env {
    fake: FakeApi,
    client: Client,
    ctx: Ctx,
    signals: Arc<MetricsState>,
    metrics_url: String,
    http: reqwest::Client,
    va: VoiceAgent,
    pods: Vec<RuntimePod>,
    /// Every call placed: (pod, session id).
    calls: Vec<(String, String)>,
    /// Calls the test hung up, as (pod, session id): session ids are unique
    /// per runtime only.
    hung_up: BTreeSet<(String, String)>,
}

fn reporter() -> Reporter {
    Reporter {
        controller: "voice-agent-operator".into(),
        instance: Some("test".into()),
    }
}

fn manifest(drain_timeout_seconds: i32) -> Value {
    json!({
        "apiVersion": "voiceagent.io/v1alpha1",
        "kind": "VoiceAgent",
        "metadata": {"name": "hello", "namespace": NS},
        "spec": {
            "persona": {"greeting": "Hi"},
            "telephony": {
                "publicUrl": "https://hello.voice.example.com",
                "twilio": {"authTokenSecretRef": {"name": "twilio", "key": "authToken"}},
            },
            "components": {
                "runtime": {
                    "minReplicas": 2,
                    "maxReplicas": 10,
                    "maxCallsPerPod": 20,
                    "drainTimeoutSeconds": drain_timeout_seconds,
                },
            },
            "autoscaling": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}},
        },
    })
}

fn pod_name(suffix: &str) -> String {
    format!("hello-runtime-{suffix}")
}

async fn env(drain_timeout_seconds: i32) -> Env {
    let fake = FakeApi::start().await;
    for crd in voice_agent_api::crds() {
        fake.register_crd(&crd);
    }
    let client = Client::try_from(kube::Config::new(fake.kube_config_url())).expect("client");
    let ctx = Arc::new(Context::new(
        client.clone(),
        OperatorSettings::default(),
        Metrics::new(),
        reporter(),
    ));
    fake.put_direct(&json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "twilio", "namespace": NS},
        "stringData": {"authToken": "tok"},
    }))
    .expect("secret");
    let signals = Arc::new(MetricsState::new(MetricsConfig::default()).expect("metrics state"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let metrics_url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(voice_agent_metrics::serve(
        listener,
        Arc::clone(&signals),
        std::future::pending(),
    ));
    let api: Api<VoiceAgent> = Api::namespaced(client.clone(), NS);
    let va: VoiceAgent = serde_json::from_value(manifest(drain_timeout_seconds)).expect("decodes");
    api.create(&PostParams::default(), &va)
        .await
        .expect("create");
    let va = api.get("hello").await.expect("get");
    reconcile_agent(&va, &ctx).await.expect("reconcile");
    Env {
        fake,
        client,
        ctx,
        signals,
        metrics_url,
        http: http_client(Duration::from_secs(5)).expect("http client"),
        va,
        pods: Vec::new(),
        calls: Vec::new(),
        hung_up: BTreeSet::new(),
    }
}

impl Env {
    /// Starts runtime pods `hello-runtime-{suffix}` and sets the runtime's
    /// replicas to their number.
    async fn start_pods(&mut self, suffixes: &[&str]) {
        for s in suffixes {
            let name = pod_name(s);
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let port = listener.local_addr().expect("addr").port();
            let naming = Naming::new(&self.va).expect("naming");
            let mut cc = render::component_config(&self.va, &naming, &BuildInput::default());
            cc.endpoints.metrics = None;
            let vars: BTreeMap<&str, String> = BTreeMap::from([
                ("VOICE_AGENT_RUNTIME_LISTEN", format!("127.0.0.1:{port}")),
                ("POD_NAME", name.clone()),
                // Calls stay connected until the test hangs up.
                (
                    "VOICE_AGENT_RUNTIME_MEDIA_CONNECT_TIMEOUT_MS",
                    "3600000".into(),
                ),
            ]);
            let config =
                voice_agent_runtime::Config::from_component_config(&cc, |k| vars.get(k).cloned())
                    .expect("runtime config");
            let state =
                Arc::new(voice_agent_runtime::State::new(config, Arc::new(NoStt)).expect("state"));
            let (stop, stopped) = oneshot::channel::<()>();
            let served = tokio::spawn(voice_agent_runtime::serve(
                listener,
                Arc::clone(&state),
                async move {
                    let _ = stopped.await;
                },
            ));
            self.fake
                .put_direct(&json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {
                        "name": name,
                        "namespace": NS,
                        "labels": {
                            "app.kubernetes.io/name": "voice-agent",
                            "app.kubernetes.io/instance": "hello",
                            "app.kubernetes.io/component": "runtime",
                        },
                    },
                    "spec": {"containers": [{
                        "name": "runtime",
                        "image": "voice-agent",
                        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
                    }]},
                    "status": {"phase": "Running", "podIP": "127.0.0.1"},
                }))
                .expect("pod");
            self.pods.push(RuntimePod {
                name,
                url: format!("http://127.0.0.1:{port}"),
                state,
                stop: Some(stop),
                served: Some(served),
            });
        }
        self.set_replicas(self.pods.len() as i64);
    }

    fn pod(&self, suffix: &str) -> &RuntimePod {
        let name = pod_name(suffix);
        self.pods
            .iter()
            .find(|p| p.name == name)
            .expect("known pod")
    }

    fn replicas(&self) -> i64 {
        self.fake
            .get("deployments", Some(NS), "hello-runtime")
            .and_then(|d| d["spec"]["replicas"].as_i64())
            .unwrap_or(-1)
    }

    fn set_replicas(&self, replicas: i64) {
        let mut d = self
            .fake
            .get("deployments", Some(NS), "hello-runtime")
            .expect("deployment");
        d["spec"]["replicas"] = json!(replicas);
        self.fake.put_direct(&d).expect("put");
    }

    fn annotations(&self, suffix: &str) -> Value {
        self.fake
            .get("pods", Some(NS), &pod_name(suffix))
            .map(|p| p["metadata"]["annotations"].clone())
            .unwrap_or(Value::Null)
    }

    fn autoscaler(&self) -> Autoscaler {
        Autoscaler::new(
            self.client.clone(),
            &self.metrics_url,
            vec![NS.to_string()],
            self.ctx.metrics.clone(),
            Recorder::new(self.client.clone(), reporter()),
            Duration::from_secs(2),
        )
        .expect("autoscaler")
    }

    /// What the runtimes post to the metrics service, reported directly so
    /// the test decides the load the autoscaler sees: `calls_per_pod` on
    /// each of the pods still running.
    fn signal(&self, calls_per_pod: f64) {
        let at = jiff::Timestamp::now().as_millisecond();
        let samples = self
            .pods
            .iter()
            .filter(|p| p.stop.is_some())
            .map(|p| Sample {
                namespace: NS.into(),
                voice_agent: "hello".into(),
                component: Component::Runtime,
                pod: p.name.clone(),
                kind: SampleKind::Gauge,
                name: GAUGE_ACTIVE_CALLS.into(),
                value: calls_per_pod,
                at,
            })
            .collect();
        self.signals
            .ingest(&SampleBatch { samples })
            .expect("ingest");
    }

    /// `POST /api/sessions` on one pod: the status and the session id.
    async fn call_on(&mut self, suffix: &str, n: usize) -> (u16, Option<String>) {
        let url = self.pod(suffix).url.clone();
        let resp = self
            .http
            .post(format!("{url}/api/sessions"))
            .json(&CreateSessionRequest {
                call_sid: format!("CA{}-{suffix}-{n}", self.calls.len()),
                voice_agent: "hello".into(),
                from: "+15550100".into(),
                to: "+15550142".into(),
                transport: Transport::MediaStreams,
            })
            .send()
            .await
            .expect("create session");
        let status = resp.status().as_u16();
        let id = resp
            .json::<CreateSessionResponse>()
            .await
            .ok()
            .map(|r| r.session_id);
        if let Some(id) = &id {
            self.calls.push((pod_name(suffix), id.clone()));
        }
        (status, id)
    }

    /// Places `n` calls on a pod.
    async fn calls_on(&mut self, suffix: &str, n: usize) {
        for i in 0..n {
            let (status, id) = self.call_on(suffix, i).await;
            assert_eq!(status, 201, "call on {suffix}");
            assert!(id.is_some());
        }
    }

    /// A new call as the gateway places it: on the first pod that is ready
    /// (a draining pod is not, and refuses sessions anyway).
    async fn gateway_call(&mut self) -> String {
        let candidates: Vec<(String, String)> = self
            .pods
            .iter()
            .filter(|p| p.stop.is_some())
            .map(|p| (p.name.clone(), p.url.clone()))
            .collect();
        for (name, url) in candidates {
            let ready = self
                .http
                .get(format!("{url}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if !ready {
                continue;
            }
            let suffix = name.trim_start_matches("hello-runtime-").to_string();
            let (status, id) = self.call_on(&suffix, 100).await;
            if status == 201 && id.is_some() {
                return name;
            }
        }
        panic!("no runtime pod took the call");
    }

    /// The caller hangs up one call on `suffix` (`DELETE /api/sessions/{id}`).
    async fn hang_up_one(&mut self, suffix: &str) -> bool {
        let pod = pod_name(suffix);
        let Some((_, id)) = self
            .calls
            .iter()
            .find(|call| call.0 == pod && !self.hung_up.contains(*call))
            .cloned()
        else {
            return false;
        };
        let url = self.pod(suffix).url.clone();
        let resp = self
            .http
            .delete(format!("{url}/api/sessions/{id}"))
            .send()
            .await
            .expect("hang up");
        assert_eq!(resp.status().as_u16(), 204);
        self.hung_up.insert((pod, id));
        true
    }

    /// The caller of call `id` on `pod` hangs up.
    async fn hang_up(&mut self, pod: &str, id: &str) {
        let url = self
            .pods
            .iter()
            .find(|p| p.name == pod)
            .map(|p| p.url.clone())
            .expect("pod");
        let resp = self
            .http
            .delete(format!("{url}/api/sessions/{id}"))
            .send()
            .await
            .expect("hang up");
        assert_eq!(resp.status().as_u16(), 204, "{pod} {id}");
        self.hung_up.insert((pod.to_string(), id.to_string()));
    }

    async fn load(&self, suffix: &str) -> LoadReport {
        let url = &self.pod(suffix).url;
        self.http
            .get(format!("{url}/api/load"))
            .send()
            .await
            .expect("load")
            .json()
            .await
            .expect("load report")
    }

    async fn ready(&self, suffix: &str) -> bool {
        let url = &self.pod(suffix).url;
        self.http
            .get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// The ReplicaSet controller: when fewer replicas are wanted than pods
    /// run, deletes the surplus, not-ready pods first, then the lowest
    /// `pod-deletion-cost`, and stops their runtimes as the kubelet's
    /// SIGTERM would (the runtime drains: live calls get its drain timeout).
    /// Returns the deleted pods.
    async fn replicaset_sync(&mut self) -> Vec<String> {
        let replicas = usize::try_from(self.replicas()).unwrap_or(0);
        let mut live = Vec::new();
        for p in self.pods.iter().filter(|p| p.stop.is_some()) {
            let ready = self
                .http
                .get(format!("{}/readyz", p.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let cost = self
                .fake
                .get("pods", Some(NS), &p.name)
                .and_then(|o| {
                    o["metadata"]["annotations"][COST]
                        .as_str()
                        .map(str::to_string)
                })
                .and_then(|c| c.parse::<i64>().ok())
                .unwrap_or(0);
            live.push((ready, cost, p.name.clone()));
        }
        live.sort();
        let surplus = live.len().saturating_sub(replicas);
        let mut deleted = Vec::new();
        for (_, _, name) in live.into_iter().take(surplus) {
            self.fake.delete_direct("pods", Some(NS), &name);
            if let Some(p) = self.pods.iter_mut().find(|p| p.name == name)
                && let Some(stop) = p.stop.take()
            {
                let _ = stop.send(());
            }
            deleted.push(name);
        }
        deleted.sort();
        deleted
    }

    /// Waits until the runtimes of deleted pods have finished their
    /// termination drain and stopped.
    async fn wait_stopped(&mut self) {
        for p in &mut self.pods {
            if p.stop.is_none()
                && let Some(served) = p.served.take()
            {
                tokio::time::timeout(Duration::from_secs(30), served)
                    .await
                    .expect("runtime stops after its drain")
                    .expect("joins")
                    .expect("serves cleanly");
            }
        }
    }

    /// How every call placed so far ended (or `None` while it lasts).
    fn end_reasons(&self) -> BTreeMap<String, Option<EndReason>> {
        self.calls
            .iter()
            .map(|(pod, id)| {
                let state = &self
                    .pods
                    .iter()
                    .find(|p| &p.name == pod)
                    .expect("pod")
                    .state;
                let reason = state.registry.get(id).and_then(|s| s.end_reason());
                (format!("{pod}/{id}"), reason)
            })
            .collect()
    }

    async fn agent(&self) -> VoiceAgent {
        Api::<VoiceAgent>::namespaced(self.client.clone(), NS)
            .get("hello")
            .await
            .expect("get")
    }

    fn events(&self) -> Vec<Value> {
        self.fake.objects("events.events.k8s.io")
    }
}

fn runtime_status(va: &VoiceAgent) -> Value {
    serde_json::to_value(va.status.as_ref().expect("status")).expect("json")["components"]
        ["runtime"]
        .clone()
}

fn scaling_message(va: &VoiceAgent) -> String {
    let status = va.status.as_ref().expect("status");
    find_condition(&status.conditions, types::SCALING_ACTIVE)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

fn clean(report: &TickReport) {
    assert!(report.errors.is_empty(), "{report:#?}");
}

#[tokio::test]
async fn scaling_5_to_2_drains_the_least_loaded_pods_and_drops_no_call() {
    let mut e = env(600).await;
    e.start_pods(&["a", "b", "c", "d", "e"]).await;
    // Calls on every pod.
    for (pod, n) in [("a", 4), ("b", 1), ("c", 3), ("d", 5), ("e", 2)] {
        e.calls_on(pod, n).await;
    }
    // 15 calls over 5 pods, 3 per pod against a target of 16: two pods
    // (the minimum) are enough.
    e.signal(3.0);
    let mut a = e.autoscaler();
    let started = std::time::Instant::now();
    let report = a.tick().await;
    clean(&report);
    assert_eq!(
        report.drains_started,
        [
            "voice/hello-runtime-b",
            "voice/hello-runtime-e",
            "voice/hello-runtime-c"
        ],
        "the least-loaded pods, fewest calls first"
    );
    assert!(report.scaled.is_empty(), "replicas wait: {report:?}");
    assert_eq!(e.replicas(), 5);

    // The drained pods: marked below every other pod, told to drain, not
    // ready; the others untouched.
    for s in ["b", "c", "e"] {
        let ann = e.annotations(s);
        let cost: i64 = ann[COST].as_str().expect("cost").parse().expect("int");
        assert!(cost <= -1000, "{s}: {ann}");
        assert!(ann[SINCE].is_string(), "{s}: {ann}");
        assert!(e.load(s).await.draining, "{s} drains");
        assert!(!e.ready(s).await, "{s} is not ready");
    }
    for s in ["a", "d"] {
        assert!(e.annotations(s).is_null(), "{s}: {}", e.annotations(s));
        assert!(!e.load(s).await.draining);
    }
    let va = e.agent().await;
    let rt = runtime_status(&va);
    assert_eq!(rt["reason"], "Draining");
    assert_eq!(rt["desiredReplicas"], 5);
    let message = scaling_message(&va);
    assert!(
        message.contains(
            "runtime 5 Draining (scale-down 5 → 2 waits for hello-runtime-b, hello-runtime-c, \
             hello-runtime-e to end their calls (draining since"
        ),
        "{message}"
    );
    let ev = e
        .events()
        .into_iter()
        .find(|ev| ev["reason"] == "Draining")
        .expect("Draining Event");
    let note = ev["note"].as_str().unwrap_or_default().to_string();
    assert!(
        note.starts_with(
            "runtime scale-down 5 → 2: draining hello-runtime-b (1 call), hello-runtime-c \
             (3 calls), hello-runtime-e (2 calls)"
        ),
        "{note}"
    );

    // New calls arrive meanwhile: they land on pods that are not draining.
    for _ in 0..3 {
        let pod = e.gateway_call().await;
        assert!(
            pod == pod_name("a") || pod == pod_name("d"),
            "a new call went to {pod}"
        );
    }

    // Callers hang up over time, one call per drained pod per tick; replicas
    // hold until every drained pod reports zero.
    let mut ticks = 1;
    loop {
        let mut hung_up = false;
        for s in ["b", "c", "e"] {
            hung_up |= e.hang_up_one(s).await;
        }
        // Calls elsewhere come and go too.
        e.hang_up_one("d").await;
        e.signal(3.0);
        let before: u32 = {
            let mut n = 0;
            for s in ["b", "c", "e"] {
                n += e.load(s).await.active_sessions;
            }
            n
        };
        let report = a.tick().await;
        clean(&report);
        ticks += 1;
        if e.replicas() == 2 {
            assert_eq!(before, 0, "replicas dropped while drained pods held calls");
            assert_eq!(
                report.scaled,
                [
                    "voice/hello runtime 5 → 2: ScaleDown (callsPerPod) after draining \
                  hello-runtime-b, hello-runtime-c, hello-runtime-e"
                ]
            );
            assert!(report.drains_cut.is_empty(), "{report:?}");
            break;
        }
        assert_eq!(e.replicas(), 5, "tick {ticks}");
        assert!(report.drains_started.is_empty(), "no new drain: {report:?}");
        assert!(hung_up || before == 0, "tick {ticks}: stuck");
        assert!(ticks < 10, "the drain never completed");
    }
    let drain_time = started.elapsed();

    // The ReplicaSet removes exactly the drained pods.
    let deleted = e.replicaset_sync().await;
    assert_eq!(
        deleted,
        [pod_name("b"), pod_name("c"), pod_name("e")],
        "the lowest deletion cost goes first"
    );
    e.wait_stopped().await;
    // With the pods gone nothing is left to drain.
    e.signal(3.0);
    let report = a.tick().await;
    clean(&report);
    assert!(report.scaled.is_empty() && report.drains_started.is_empty());
    let text = e.ctx.metrics.encode();
    assert!(text.contains("voice_agent_operator_drain_pods_total{outcome=\"started\"} 3"));
    assert!(text.contains("voice_agent_operator_drain_pods_total{outcome=\"drained\"} 3"));
    assert!(
        !text.contains("voice_agent_operator_drain_cut_calls_total{"),
        "{text}"
    );
    assert!(text.contains(
        "voice_agent_operator_draining_pods{namespace=\"voice\",voice_agent=\"hello\"} 0"
    ));

    // Everyone still on the line hangs up; no call ended any other way.
    for s in ["a", "d"] {
        while e.hang_up_one(s).await {}
    }
    let reasons = e.end_reasons();
    let total = reasons.len();
    let dropped: Vec<_> = reasons
        .iter()
        .filter(|(_, r)| **r != Some(EndReason::Deleted))
        .collect();
    assert!(
        dropped.is_empty(),
        "calls not ended by their caller: {dropped:?}"
    );
    eprintln!(
        "drain 5 → 2: {total} calls, {} dropped, {ticks} ticks, {:.0} ms from the first tick to \
         the scale-down",
        dropped.len(),
        drain_time.as_secs_f64() * 1000.0
    );
}

#[tokio::test]
async fn a_pod_still_holding_calls_at_the_deadline_is_reported_then_removed() {
    // A 1 s drain timeout, for the operator and the runtime alike.
    let mut e = env(1).await;
    e.start_pods(&["a", "b", "c"]).await;
    for (pod, n) in [("a", 2), ("b", 1), ("c", 3)] {
        e.calls_on(pod, n).await;
    }
    e.signal(2.0);
    let mut a = e.autoscaler();
    let t0 = jiff::Timestamp::now();
    let report = a.tick_at(t0).await;
    clean(&report);
    assert_eq!(report.drains_started, ["voice/hello-runtime-b"]);
    // b's caller stays on the line past the deadline.
    e.signal(2.0);
    let report = a
        .tick_at(t0 + jiff::SignedDuration::from_millis(1_500))
        .await;
    clean(&report);
    assert_eq!(
        report.scaled,
        ["voice/hello runtime 3 → 2: ScaleDown (callsPerPod) after draining hello-runtime-b"]
    );
    assert_eq!(report.drains_cut, ["voice/hello-runtime-b"]);
    let ev = e
        .events()
        .into_iter()
        .find(|ev| ev["reason"] == "DrainTimeout")
        .expect("DrainTimeout Event");
    assert_eq!(ev["type"], "Warning");
    assert!(
        ev["note"]
            .as_str()
            .unwrap_or_default()
            .starts_with("hello-runtime-b (1 call) still held calls at the drain deadline"),
        "{ev:#}"
    );
    let text = e.ctx.metrics.encode();
    assert!(text.contains(
        "voice_agent_operator_drain_cut_calls_total{namespace=\"voice\",voice_agent=\"hello\"} 1"
    ), "{text}");
    assert!(text.contains("voice_agent_operator_drain_pods_total{outcome=\"deadline\"} 1"));
    let message = scaling_message(&e.agent().await);
    assert!(
        message.contains("the last drain ended at its deadline: hello-runtime-b (1 call)"),
        "{message}"
    );

    // The ReplicaSet removes b; its runtime's own drain (1 s) then ends the
    // call: the one call cut, on purpose.
    assert_eq!(e.replicaset_sync().await, [pod_name("b")]);
    e.wait_stopped().await;
    for s in ["a", "c"] {
        while e.hang_up_one(s).await {}
    }
    let reasons = e.end_reasons();
    let cut: Vec<_> = reasons
        .values()
        .filter(|r| **r == Some(EndReason::DrainTimeout))
        .collect();
    assert_eq!(cut.len(), 1, "{reasons:?}");
    assert_eq!(
        reasons
            .values()
            .filter(|r| **r == Some(EndReason::Deleted))
            .count(),
        5
    );
}

#[tokio::test]
async fn rising_load_cancels_the_drain_before_replicas_drop() {
    let mut e = env(600).await;
    e.start_pods(&["a", "b", "c", "d"]).await;
    for (pod, n) in [("a", 3), ("b", 1), ("c", 2), ("d", 4)] {
        e.calls_on(pod, n).await;
    }
    e.signal(2.5);
    let mut a = e.autoscaler();
    let report = a.tick().await;
    clean(&report);
    assert_eq!(
        report.drains_started,
        ["voice/hello-runtime-b", "voice/hello-runtime-c"]
    );
    assert!(!e.ready("b").await && !e.ready("c").await);

    // Load comes back: 16 calls per pod is the target for all 4 pods.
    e.signal(16.0);
    let report = a.tick().await;
    clean(&report);
    assert_eq!(
        report.drains_cancelled,
        ["voice/hello-runtime-b", "voice/hello-runtime-c"]
    );
    assert!(report.scaled.is_empty());
    assert_eq!(e.replicas(), 4);
    for s in ["b", "c"] {
        assert!(e.annotations(s).get(COST).is_none(), "{}", e.annotations(s));
        assert!(e.annotations(s).get(SINCE).is_none());
        assert!(!e.load(s).await.draining, "{s} takes calls again");
        assert!(e.ready(s).await);
    }
    let ev = e
        .events()
        .into_iter()
        .find(|ev| ev["reason"] == "DrainCancelled")
        .expect("DrainCancelled Event");
    assert_eq!(
        ev["note"],
        "the runtime's decision rose to 4 of 4 replicas: hello-runtime-b, hello-runtime-c take \
         calls again"
    );
    assert_eq!(
        runtime_status(&e.agent().await)["reason"],
        "WithinTolerance"
    );
    assert!(
        e.ctx
            .metrics
            .encode()
            .contains("voice_agent_operator_drain_pods_total{outcome=\"cancelled\"} 2")
    );
    // A call lands on an undrained pod again.
    let mut landed = BTreeSet::new();
    for _ in 0..3 {
        landed.insert(e.gateway_call().await);
    }
    assert!(landed.contains(&pod_name("a")) || landed.contains(&pod_name("b")));

    // A steady tick afterwards writes nothing to the pods.
    e.fake.reset_writes();
    e.signal(16.0);
    let report = a.tick().await;
    clean(&report);
    assert!(
        e.fake.writes().iter().all(|w| w.plural != "pods"),
        "{:?}",
        e.fake.writes()
    );
    for s in ["a", "b", "c", "d"] {
        while e.hang_up_one(s).await {}
    }
    let reasons = e.end_reasons();
    assert!(
        reasons.values().all(|r| *r == Some(EndReason::Deleted)),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_new_leader_continues_the_drain_from_the_pod_annotations() {
    let mut e = env(600).await;
    e.start_pods(&["a", "b", "c"]).await;
    for (pod, n) in [("a", 2), ("b", 1), ("c", 3)] {
        e.calls_on(pod, n).await;
    }
    e.signal(2.0);
    let mut old = e.autoscaler();
    let report = old.tick().await;
    clean(&report);
    assert_eq!(report.drains_started, ["voice/hello-runtime-b"]);
    let since = e.annotations("b")[SINCE].clone();
    drop(old);

    // The leader changes: nothing of the drain is in the new one's memory.
    let mut new = e.autoscaler();
    e.signal(2.0);
    let report = new.tick().await;
    clean(&report);
    assert!(report.drains_started.is_empty(), "{report:?}");
    assert!(report.drains_cancelled.is_empty(), "{report:?}");
    assert!(report.scaled.is_empty(), "b still holds a call");
    assert_eq!(
        e.annotations("b")[SINCE],
        since,
        "the drain keeps its start"
    );
    assert_eq!(runtime_status(&e.agent().await)["reason"], "Draining");

    e.hang_up_one("b").await;
    e.signal(2.0);
    let report = new.tick().await;
    clean(&report);
    assert_eq!(
        report.scaled,
        ["voice/hello runtime 3 → 2: ScaleDown (callsPerPod) after draining hello-runtime-b"]
    );
    assert_eq!(e.replicaset_sync().await, [pod_name("b")]);
    e.wait_stopped().await;
    for s in ["a", "c"] {
        while e.hang_up_one(s).await {}
    }
    let reasons = e.end_reasons();
    assert!(
        reasons.values().all(|r| *r == Some(EndReason::Deleted)),
        "{reasons:?}"
    );
}

/// xorshift64: a deterministic call pattern without the rand crate.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[tokio::test]
async fn a_scale_down_under_call_churn_drops_no_call() {
    let mut e = env(600).await;
    let suffixes = ["a", "b", "c", "d", "e", "f", "g", "h"];
    e.start_pods(&suffixes).await;
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for s in suffixes {
        let n = 1 + (rng.next() % 6) as usize;
        e.calls_on(s, n).await;
    }
    let placed_before = e.calls.len();
    // 2 calls per pod against a target of 16: the minimum, 2 pods.
    e.signal(2.0);
    let mut a = e.autoscaler();
    let report = a.tick().await;
    clean(&report);
    assert_eq!(report.drains_started.len(), 6, "{report:?}");
    let drained: BTreeSet<String> = report
        .drains_started
        .iter()
        .map(|p| p.trim_start_matches("voice/").to_string())
        .collect();
    let mut ticks = 1;
    let mut new_calls = 0;
    while e.replicas() != 2 {
        // A third of the calls in progress end, and two new calls arrive.
        let live: Vec<(String, String)> = e
            .calls
            .iter()
            .filter(|call| !e.hung_up.contains(*call))
            .cloned()
            .collect();
        for (pod, id) in live {
            if rng.next().is_multiple_of(3) {
                e.hang_up(&pod, &id).await;
            }
        }
        for _ in 0..2 {
            let pod = e.gateway_call().await;
            assert!(
                !drained.contains(&pod),
                "a new call landed on draining {pod}"
            );
            new_calls += 1;
        }
        e.signal(2.0);
        let report = a.tick().await;
        clean(&report);
        assert!(report.drains_cut.is_empty(), "{report:?}");
        ticks += 1;
        assert!(ticks < 60, "the drain never completed");
    }
    let deleted: BTreeSet<String> = e.replicaset_sync().await.into_iter().collect();
    assert_eq!(deleted, drained, "the ReplicaSet removes the drained pods");
    e.wait_stopped().await;
    let calls = e.calls.clone();
    for call in calls {
        if !e.hung_up.contains(&call) {
            e.hang_up(&call.0, &call.1).await;
        }
    }
    let reasons = e.end_reasons();
    let dropped = reasons
        .values()
        .filter(|r| **r != Some(EndReason::Deleted))
        .count();
    eprintln!(
        "drain 8 → 2 under churn: {} calls ({placed_before} at the start, {new_calls} during the \
         drain), 6 pods drained over {ticks} ticks, {dropped} dropped",
        reasons.len()
    );
    assert_eq!(dropped, 0, "{reasons:?}");
}
