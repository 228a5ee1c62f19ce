//! Engine `hpa` end to end without a cluster: the reconciler applies
//! HorizontalPodAutoscalers for gateway, agent and tts to the in-memory
//! Kubernetes API and prunes them when the engine goes back to `operator`;
//! every External metric an HPA names is answered by the real metrics
//! service's `external.metrics.k8s.io` API with exactly the agent's series;
//! and the autoscaler keeps scaling the runtime only, saying why.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};
use voice_agent_api::VoiceAgent;
use voice_agent_api::conditions::{find_condition, types};
use voice_agent_kube_fake::FakeApi;
use voice_agent_metrics::{Config as MetricsConfig, State as MetricsState};
use voice_agent_operator::autoscale::live::{Autoscaler, http_client};
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
    signals: Arc<MetricsState>,
    metrics_url: String,
}

fn reporter() -> Reporter {
    Reporter {
        controller: "voice-agent-operator".into(),
        instance: Some("test".into()),
    }
}

async fn env() -> Env {
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
    // The metrics service as the chart runs it with the APIService on.
    let signals = Arc::new(
        MetricsState::new(MetricsConfig {
            external_metrics: true,
            ..MetricsConfig::default()
        })
        .expect("metrics state"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let metrics_url = format!("http://{}", listener.local_addr().expect("addr"));
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
        metrics_url,
    }
}

fn manifest(engine: &str) -> Value {
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
                "gateway": {"minReplicas": 2, "maxReplicas": 8},
                "runtime": {"minReplicas": 2, "maxReplicas": 10, "maxCallsPerPod": 20},
            },
            "autoscaling": {
                "engine": engine,
                "targets": {"gatewayLatencyP95Ms": 120},
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 120}},
            },
        },
    })
}

impl Env {
    async fn reconcile(&self) {
        let va = Api::<VoiceAgent>::namespaced(self.client.clone(), NS)
            .get("hello")
            .await
            .expect("get");
        reconcile_agent(&va, &self.ctx).await.expect("reconcile");
    }

    fn hpas(&self) -> Vec<Value> {
        self.fake.objects("horizontalpodautoscalers")
    }

    fn sample(&self, c: Component, kind: SampleKind, name: &str, value: f64) -> Sample {
        Sample {
            namespace: NS.into(),
            voice_agent: "hello".into(),
            component: c,
            pod: format!("hello-{}-0", c.as_str()),
            kind,
            name: name.into(),
            value,
            at: jiff::Timestamp::now().as_millisecond(),
        }
    }

    fn load(&self) {
        let mut samples = Vec::new();
        for (c, stage) in [
            (Component::Gateway, Stage::Webhook),
            (Component::Agent, Stage::AgentTtft),
            (Component::Tts, Stage::TtsTtfb),
            (Component::Runtime, Stage::E2e),
        ] {
            samples.push(self.sample(c, SampleKind::Latency, stage.as_str(), 150.0));
            samples.push(self.sample(c, SampleKind::Gauge, GAUGE_CONCURRENCY, 3.0));
        }
        samples.push(self.sample(
            Component::Runtime,
            SampleKind::Gauge,
            GAUGE_ACTIVE_CALLS,
            16.0,
        ));
        self.signals
            .ingest(&SampleBatch { samples })
            .expect("ingest");
    }
}

#[tokio::test]
async fn hpa_engine_applies_hpas_and_operator_engine_prunes_them() {
    let e = env().await;
    let api: Api<VoiceAgent> = Api::namespaced(e.client.clone(), NS);
    let va: VoiceAgent = serde_json::from_value(manifest("hpa")).expect("decodes");
    api.create(&PostParams::default(), &va)
        .await
        .expect("create");
    e.reconcile().await;

    let hpas = e.hpas();
    let names: Vec<&str> = hpas
        .iter()
        .filter_map(|h| h["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["hello-agent", "hello-gateway", "hello-tts"]);
    let gateway = &hpas[1];
    assert_eq!(gateway["spec"]["minReplicas"], 2);
    assert_eq!(gateway["spec"]["maxReplicas"], 8);
    assert_eq!(
        gateway["spec"]["metrics"][0]["external"]["target"]["value"],
        "120"
    );
    assert_eq!(
        gateway["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
        120
    );
    assert_eq!(
        gateway["metadata"]["ownerReferences"][0]["kind"],
        "VoiceAgent"
    );
    // The HPA-scaled Deployments leave replicas to the HPA; the runtime's
    // are the operator's.
    for c in ["gateway", "agent", "tts"] {
        let d = e
            .fake
            .get("deployments", Some(NS), &format!("hello-{c}"))
            .expect("deployment");
        assert!(d["spec"]["replicas"].is_null(), "{c}: {:#}", d["spec"]);
    }
    let rt = e
        .fake
        .get("deployments", Some(NS), "hello-runtime")
        .expect("runtime");
    assert_eq!(rt["spec"]["replicas"], 2);

    // A second reconcile writes nothing: the HPAs are unchanged.
    e.fake.reset_writes();
    e.reconcile().await;
    let writes: Vec<_> = e
        .fake
        .writes()
        .into_iter()
        .filter(|w| w.verb.is_write() && w.plural == "horizontalpodautoscalers")
        .collect();
    assert!(writes.is_empty(), "{writes:?}");

    // Back to the operator engine: the HPAs go, replicas come back.
    api.patch(
        "hello",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"autoscaling": {"engine": "operator"}}})),
    )
    .await
    .expect("patch");
    e.reconcile().await;
    assert!(e.hpas().is_empty(), "{:?}", e.hpas());
    let gw = e
        .fake
        .get("deployments", Some(NS), "hello-gateway")
        .expect("gateway");
    assert_eq!(gw["spec"]["replicas"], 2);
    let pruned = e
        .fake
        .objects("events.events.k8s.io")
        .into_iter()
        .filter(|ev| ev["reason"] == "Pruned")
        .map(|ev| ev["note"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("; ");
    assert!(
        pruned.contains("HorizontalPodAutoscaler/hello-gateway"),
        "{pruned}"
    );
}

/// A query value as client-go encodes it.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The contract between the two halves: what the HPAs ask for is what the
/// metrics service serves.
#[tokio::test]
async fn every_external_metric_an_hpa_names_is_served_for_its_selector() {
    let e = env().await;
    let api: Api<VoiceAgent> = Api::namespaced(e.client.clone(), NS);
    let va: VoiceAgent = serde_json::from_value(manifest("hpa")).expect("decodes");
    api.create(&PostParams::default(), &va)
        .await
        .expect("create");
    e.reconcile().await;
    e.load();
    let http = http_client(Duration::from_secs(5)).expect("client");
    let mut asked = 0;
    for hpa in e.hpas() {
        for metric in hpa["spec"]["metrics"].as_array().expect("metrics") {
            assert_eq!(metric["type"], "External");
            let name = metric["external"]["metric"]["name"].as_str().expect("name");
            let labels = metric["external"]["metric"]["selector"]["matchLabels"]
                .as_object()
                .expect("matchLabels");
            // As client-go renders a LabelSelector: k=v joined by commas.
            let selector = labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",");
            let url = format!(
                "{}/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/{name}?labelSelector={}",
                e.metrics_url,
                percent_encode(&selector)
            );
            let resp = http.get(&url).send().await.expect("request");
            assert_eq!(resp.status().as_u16(), 200, "{url}");
            let list: Value = resp.json().await.expect("json");
            let items = list["items"].as_array().expect("items");
            assert_eq!(items.len(), 1, "{name} {selector}: {list:#}");
            assert_eq!(items[0]["metricName"], name);
            assert_eq!(items[0]["metricLabels"]["voiceAgent"], "hello");
            let target = &metric["external"]["target"];
            match target["type"].as_str() {
                Some("Value") => assert!(name.ends_with("_latency_p95_ms"), "{name}"),
                Some("AverageValue") => assert!(name.ends_with("_concurrency"), "{name}"),
                other => panic!("unexpected target type {other:?}"),
            }
            asked += 1;
        }
    }
    assert_eq!(asked, 6, "two metrics per HPA");
}

#[tokio::test]
async fn with_hpas_the_autoscaler_scales_only_the_runtime_and_says_why() {
    let e = env().await;
    let api: Api<VoiceAgent> = Api::namespaced(e.client.clone(), NS);
    let va: VoiceAgent = serde_json::from_value(manifest("hpa")).expect("decodes");
    api.create(&PostParams::default(), &va)
        .await
        .expect("create");
    e.reconcile().await;
    e.load();
    let mut a = Autoscaler::new(
        e.client.clone(),
        &e.metrics_url,
        vec![NS.to_string()],
        e.ctx.metrics.clone(),
        Recorder::new(e.client.clone(), reporter()),
        Duration::from_secs(1),
    )
    .expect("autoscaler");
    let report = a.tick().await;
    assert!(report.errors.is_empty(), "{report:?}");
    let va = api.get("hello").await.expect("get");
    let status = va.status.expect("status");
    let components =
        serde_json::to_value(status.components.as_ref().expect("components")).expect("json");
    assert_eq!(components["runtime"]["reason"], "WithinTolerance");
    let cond = find_condition(&status.conditions, types::SCALING_ACTIVE).expect("condition");
    assert_eq!(cond.status, "True");
    assert!(
        cond.message.contains(
            "gateway, agent and tts are scaled by HorizontalPodAutoscalers (engine hpa), the \
             runtime stays operator-scaled because an HPA cannot drain calls"
        ),
        "{}",
        cond.message
    );
    assert!(!cond.message.contains("gateway 2"), "{}", cond.message);
    // The autoscaler never writes the replicas of an HPA's Deployment.
    assert!(
        e.fake
            .writes()
            .iter()
            .filter(|w| w.plural == "deployments" && w.verb.is_write())
            .all(|w| w.name.as_deref() == Some("hello-runtime")
                || w.field_manager.as_deref() == Some("voice-agent-operator")),
        "{:?}",
        e.fake.writes()
    );
}
