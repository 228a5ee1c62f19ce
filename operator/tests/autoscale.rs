//! The autoscaler's live loop against the in-memory Kubernetes API and the
//! real metrics service in-process: scale-up by server-side apply of
//! `spec.replicas`, status and Events, metrics service outages, scale-down,
//! zero writes at steady state, and the loop started by `run_until`. The
//! runtime's drain before a scale-down is in tests/drain.rs.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, PostParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use voice_agent_api::VoiceAgent;
use voice_agent_api::conditions::{find_condition, types};
use voice_agent_kube_fake::{FakeApi, ResourceType, WriteRecord};
use voice_agent_metrics::{Config, State};
use voice_agent_operator::autoscale::live::Autoscaler;
use voice_agent_operator::controller::voiceagent::reconcile_agent;
use voice_agent_operator::controller::{Context, Ctx};
use voice_agent_operator::metrics::Metrics;
use voice_agent_operator::render::OperatorSettings;
use voice_agent_proto::metrics::{
    GAUGE_ACTIVE_CALLS, GAUGE_CONCURRENCY, Sample, SampleBatch, SampleKind,
};
use voice_agent_proto::{Component, Stage};

const NS: &str = "voice";

struct Env {
    fake: FakeApi,
    client: Client,
    ctx: Ctx,
    signals: Arc<State>,
    url: String,
}

async fn env() -> Env {
    let fake = FakeApi::start().await;
    fake.register(
        ResourceType::new(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
        )
        .with_status(),
    );
    for crd in voice_agent_api::crds() {
        fake.register_crd(&crd);
        fake.put_direct(&crd).expect("install CRD");
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
    let signals = Arc::new(State::new(Config::default()).expect("metrics state"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(voice_agent_metrics::serve(
        listener,
        Arc::clone(&signals),
        std::future::pending(),
    ));
    Env {
        fake,
        client,
        ctx,
        signals,
        url,
    }
}

fn reporter() -> Reporter {
    Reporter {
        controller: "voice-agent-operator".into(),
        instance: Some("test".into()),
    }
}

/// A VoiceAgent with a fast scale-down window and explicit bounds.
fn manifest(runtime_min: i32) -> Value {
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
                "runtime": {"minReplicas": runtime_min, "maxReplicas": 10, "maxCallsPerPod": 20},
                "agent": {"minReplicas": 1, "maxReplicas": 10},
            },
            "autoscaling": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}},
        },
    })
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn gauge(c: Component, pod: &str, name: &str, value: f64) -> Sample {
    Sample {
        namespace: NS.into(),
        voice_agent: "hello".into(),
        component: c,
        pod: pod.into(),
        kind: SampleKind::Gauge,
        name: name.into(),
        value,
        at: now_ms(),
    }
}

fn latency(c: Component, pod: &str, stage: Stage, ms: f64) -> Sample {
    Sample {
        kind: SampleKind::Latency,
        name: stage.as_str().into(),
        value: ms,
        ..gauge(c, pod, "", 0.0)
    }
}

impl Env {
    /// Creates the agent and lets the reconciler make its Deployments.
    async fn agent_with_deployments(&self, manifest: Value) {
        let api: Api<VoiceAgent> = Api::namespaced(self.client.clone(), NS);
        let va: VoiceAgent = serde_json::from_value(manifest).expect("decodes");
        api.create(&PostParams::default(), &va)
            .await
            .expect("create");
        let va = self.agent().await;
        reconcile_agent(&va, &self.ctx).await.expect("reconcile");
    }

    async fn agent(&self) -> VoiceAgent {
        Api::<VoiceAgent>::namespaced(self.client.clone(), NS)
            .get("hello")
            .await
            .expect("get")
    }

    fn autoscaler(&self, url: &str) -> Autoscaler {
        Autoscaler::new(
            self.client.clone(),
            url,
            vec![NS.to_string()],
            self.ctx.metrics.clone(),
            Recorder::new(self.client.clone(), reporter()),
            Duration::from_secs(1),
        )
        .expect("autoscaler")
    }

    fn ingest(&self, samples: Vec<Sample>) {
        self.signals
            .ingest(&SampleBatch { samples })
            .expect("ingest");
    }

    fn replicas(&self, component: &str) -> i64 {
        self.fake
            .get("deployments", Some(NS), &format!("hello-{component}"))
            .expect("deployment")["spec"]["replicas"]
            .as_i64()
            .unwrap_or(-1)
    }

    fn set_replicas(&self, component: &str, replicas: i64) {
        let mut d = self
            .fake
            .get("deployments", Some(NS), &format!("hello-{component}"))
            .expect("deployment");
        d["spec"]["replicas"] = json!(replicas);
        self.fake.put_direct(&d).expect("put");
    }

    fn writes(&self) -> Vec<WriteRecord> {
        self.fake
            .writes()
            .into_iter()
            .filter(|w| w.verb.is_write())
            .collect()
    }

    fn events(&self) -> Vec<Value> {
        self.fake.objects("events.events.k8s.io")
    }
}

fn component_status(va: &VoiceAgent, c: &str) -> Value {
    serde_json::to_value(va.status.as_ref().expect("status")).expect("json")["components"][c]
        .clone()
}

#[tokio::test]
async fn load_scales_the_runtime_up_by_apply_with_status_event_and_metrics() {
    let e = env().await;
    e.agent_with_deployments(manifest(2)).await;
    assert_eq!(e.replicas("runtime"), 2);
    // Two runtime pods at 40 calls each: 2.5 × the 16 calls-per-pod target,
    // over the panic threshold.
    e.ingest(vec![
        gauge(
            Component::Runtime,
            "hello-runtime-a",
            GAUGE_ACTIVE_CALLS,
            40.0,
        ),
        gauge(
            Component::Runtime,
            "hello-runtime-b",
            GAUGE_ACTIVE_CALLS,
            40.0,
        ),
        latency(Component::Runtime, "hello-runtime-a", Stage::E2e, 700.0),
    ]);
    e.fake.reset_writes();
    let mut a = e.autoscaler(&e.url);
    let report = a.tick().await;
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(
        report.scaled,
        ["voice/hello runtime 2 → 5: PanicScaleUp (callsPerPod)"]
    );
    assert_eq!(e.replicas("runtime"), 5);

    // Only spec.replicas was applied, with the autoscaler's field manager:
    // the rest of the Deployment is intact.
    let writes = e.writes();
    let scale: Vec<&WriteRecord> = writes
        .iter()
        .filter(|w| w.plural == "deployments")
        .collect();
    assert_eq!(scale.len(), 1, "{scale:?}");
    assert_eq!(
        scale[0].field_manager.as_deref(),
        Some("voice-agent-operator-autoscaler")
    );
    let d = e
        .fake
        .get("deployments", Some(NS), "hello-runtime")
        .expect("deployment");
    assert!(
        d["spec"]["template"]["spec"]["containers"][0]["image"].is_string(),
        "{d:#}"
    );

    let va = e.agent().await;
    let rt = component_status(&va, "runtime");
    assert_eq!(rt["desiredReplicas"], 5);
    assert_eq!(rt["reason"], "PanicScaleUp (callsPerPod)");
    assert!(rt["lastScaleTime"].is_string(), "{rt:#}");
    assert_eq!(component_status(&va, "agent")["reason"], "NoSignals");
    let status = va.status.clone().expect("status");
    assert_eq!(status.active_calls, Some(80));
    let lat = status.latency.expect("latency");
    assert!(
        lat.p95_ms.is_some_and(|p| (600..=800).contains(&p)),
        "{lat:?}"
    );
    let cond = find_condition(&status.conditions, types::SCALING_ACTIVE).expect("condition");
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("True", "PanicScaleUp")
    );
    assert!(
        cond.message.contains("runtime 5 PanicScaleUp"),
        "{}",
        cond.message
    );

    let events = e.events();
    let ev = events
        .iter()
        .find(|ev| ev["reason"] == "PanicScaleUp")
        .expect("scale Event");
    assert_eq!(ev["type"], "Normal");
    assert_eq!(ev["note"], "runtime 2 → 5: PanicScaleUp (callsPerPod)");

    let text = e.ctx.metrics.encode();
    assert!(text.contains(
        "voice_agent_operator_desired_replicas{component=\"runtime\",namespace=\"voice\",voice_agent=\"hello\"} 5"
    ), "{text}");
    assert!(text.contains(
        "voice_agent_operator_current_replicas{component=\"runtime\",namespace=\"voice\",voice_agent=\"hello\"} 5"
    ));
    assert!(text.contains(
        "voice_agent_operator_scaling_decisions_total{component=\"runtime\",reason=\"PanicScaleUp\"} 1"
    ));

    // The reconciler keeps the replicas and the autoscaler's status fields.
    let va = e.agent().await;
    reconcile_agent(&va, &e.ctx).await.expect("reconcile");
    assert_eq!(e.replicas("runtime"), 5);
    let va = e.agent().await;
    let rt = component_status(&va, "runtime");
    assert_eq!(rt["desiredReplicas"], 5);
    assert_eq!(rt["reason"], "PanicScaleUp (callsPerPod)");
    let status = va.status.expect("status");
    assert_eq!(status.active_calls, Some(80));
    assert!(find_condition(&status.conditions, types::SCALING_ACTIVE).is_some());
    assert!(find_condition(&status.conditions, types::READY).is_some());
}

#[tokio::test]
async fn an_unreachable_metrics_service_holds_replicas_and_says_so() {
    let e = env().await;
    e.agent_with_deployments(manifest(2)).await;
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    e.fake.reset_writes();
    let mut a = e.autoscaler(&closed);
    let report = a.tick().await;
    assert!(report.scaled.is_empty(), "{report:?}");
    assert!(
        e.writes().iter().all(|w| w.plural != "deployments"),
        "replicas held"
    );
    assert_eq!(e.replicas("runtime"), 2);
    let status = e.agent().await.status.expect("status");
    let cond = find_condition(&status.conditions, types::SCALING_ACTIVE).expect("condition");
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "MetricsUnavailable")
    );
    assert!(cond.message.contains(&closed), "{}", cond.message);
}

#[tokio::test]
async fn low_load_scales_down_and_a_runtime_without_pods_has_nothing_to_drain() {
    let e = env().await;
    e.agent_with_deployments(manifest(1)).await;
    e.set_replicas("runtime", 4);
    e.set_replicas("agent", 4);
    let mut samples = Vec::new();
    for i in 0..4 {
        samples.push(gauge(
            Component::Runtime,
            &format!("rt-{i}"),
            GAUGE_ACTIVE_CALLS,
            0.0,
        ));
        samples.push(gauge(
            Component::Agent,
            &format!("ag-{i}"),
            GAUGE_CONCURRENCY,
            0.0,
        ));
    }
    e.ingest(samples);
    let mut a = e.autoscaler(&e.url);
    let report = a.tick().await;
    assert!(report.errors.is_empty(), "{report:?}");
    // No runtime pod exists (the fake has no ReplicaSet controller), so no
    // call can be on one: the runtime scales down at once, without a drain.
    // Drains with pods and calls are in tests/drain.rs.
    assert_eq!(
        report.scaled,
        [
            "voice/hello runtime 4 → 1: ScaleDown (callsPerPod)",
            "voice/hello agent 4 → 1: ScaleDown (concurrencyPerPod)"
        ]
    );
    assert!(report.drains_started.is_empty(), "{report:?}");
    assert_eq!(e.replicas("agent"), 1);
    assert_eq!(e.replicas("runtime"), 1);

    let va = e.agent().await;
    let rt = component_status(&va, "runtime");
    assert_eq!(rt["reason"], "ScaleDown (callsPerPod)");
    assert_eq!(rt["desiredReplicas"], 1);
    assert!(rt["lastScaleTime"].is_string(), "{rt:#}");
    assert_eq!(component_status(&va, "agent")["desiredReplicas"], 1);
    assert!(e.ctx.metrics.encode().contains(
        "voice_agent_operator_scaling_decisions_total{component=\"runtime\",reason=\"ScaleDown\"} 1"
    ));

    // Still low: at the minimum, a second tick changes nothing.
    let report = a.tick().await;
    assert!(report.scaled.is_empty(), "{report:?}");
    assert_eq!(e.replicas("runtime"), 1);
}

#[tokio::test]
async fn a_tick_with_nothing_new_writes_nothing() {
    let e = env().await;
    e.agent_with_deployments(manifest(2)).await;
    // 16 calls per pod: on target.
    e.ingest(vec![
        gauge(Component::Runtime, "rt-a", GAUGE_ACTIVE_CALLS, 16.0),
        gauge(Component::Runtime, "rt-b", GAUGE_ACTIVE_CALLS, 16.0),
    ]);
    let mut a = e.autoscaler(&e.url);
    e.fake.reset_writes();
    let first = a.tick().await;
    assert!(first.scaled.is_empty(), "{first:?}");
    assert_eq!(first.status_written, ["voice/hello"]);
    let writes = e.writes();
    assert_eq!(writes.len(), 1, "one status write: {writes:?}");
    assert_eq!(writes[0].subresource.as_deref(), Some("status"));
    assert_eq!(
        component_status(&e.agent().await, "runtime")["reason"],
        "WithinTolerance"
    );

    e.fake.reset_writes();
    let second = a.tick().await;
    assert_eq!(second, Default::default());
    assert!(e.writes().is_empty(), "{:?}", e.writes());
}

#[tokio::test]
async fn run_until_starts_the_loop_on_the_leader_with_a_metrics_url() {
    let e = env().await;
    let api: Api<VoiceAgent> = Api::namespaced(e.client.clone(), NS);
    let va: VoiceAgent = serde_json::from_value(manifest(2)).expect("decodes");
    api.create(&PostParams::default(), &va)
        .await
        .expect("create");
    e.ingest(vec![
        gauge(Component::Runtime, "rt-a", GAUGE_ACTIVE_CALLS, 40.0),
        gauge(Component::Runtime, "rt-b", GAUGE_ACTIVE_CALLS, 40.0),
    ]);
    let config = voice_agent_operator::run::RunConfig {
        namespaces: vec![NS.to_string()],
        settings: OperatorSettings {
            metrics_url: Some(e.url.clone()),
            ..OperatorSettings::default()
        },
        listen: "127.0.0.1:0".parse().expect("addr"),
        lease: None,
        autoscale_interval: Duration::from_millis(100),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let client = e.client.clone();
    let handle = tokio::spawn(async move {
        voice_agent_operator::run::run_until(client, config, "operator-0", async {
            let _ = stop_rx.await;
        })
        .await
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let scaled = e
            .fake
            .get("deployments", Some(NS), "hello-runtime")
            .and_then(|d| d["spec"]["replicas"].as_i64())
            .is_some_and(|r| r > 2);
        if scaled {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the loop did not scale the runtime"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(20), handle)
        .await
        .expect("stops")
        .expect("joins")
        .expect("clean exit");
    let va = e.agent().await;
    assert_eq!(va.name_any(), "hello");
}
