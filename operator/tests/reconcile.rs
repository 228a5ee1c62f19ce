//! The VoiceAgent controller against a stateful in-memory Kubernetes API
//! (real HTTP, the real kube client): objects, owner references, pruning,
//! zero writes at steady state, Degraded on missing references, conflicts,
//! undecodable objects, status, leader election, and a full operator run.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::core::DeserializeGuard;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::events::Reporter;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use voice_agent_api::{PhoneNumber, VoiceAgent, VoiceAgentPhase};
use voice_agent_kube_fake::{FailMatcher, FakeApi, ResourceType, Verb, WriteRecord};
use voice_agent_operator::controller::voiceagent::{self, reconcile_agent};
use voice_agent_operator::controller::{Context, Ctx};
use voice_agent_operator::leader::{LeaderElector, LeaseSettings};
use voice_agent_operator::metrics::Metrics;
use voice_agent_operator::render::OperatorSettings;

const NS: &str = "voice";

struct Env {
    fake: FakeApi,
    client: Client,
    ctx: Ctx,
}

fn register_crd_kind(fake: &FakeApi) {
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
}

async fn env() -> Env {
    let fake = FakeApi::start().await;
    register_crd_kind(&fake);
    for crd in voice_agent_api::crds() {
        fake.register_crd(&crd);
        fake.put_direct(&crd).expect("install CRD");
    }
    let client = Client::try_from(kube::Config::new(fake.kube_config_url())).expect("client");
    let ctx = Arc::new(Context::new(
        client.clone(),
        OperatorSettings::default(),
        Metrics::new(),
        Reporter {
            controller: "voice-agent-operator".into(),
            instance: Some("test".into()),
        },
    ));
    Env { fake, client, ctx }
}

fn example(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    let text = std::fs::read_to_string(path).expect("example");
    let mut v: Value = serde_yaml_ng::from_str(&text).expect("yaml");
    v["metadata"]["namespace"] = json!(NS);
    v
}

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    let string_data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| ((*k).to_string(), json!(v)))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "stringData": string_data,
    }))
    .expect("secret")
}

impl Env {
    async fn create_agent(&self, manifest: Value) -> VoiceAgent {
        let api: Api<VoiceAgent> = Api::namespaced(self.client.clone(), NS);
        let va: VoiceAgent = serde_json::from_value(manifest).expect("decodes");
        api.create(&PostParams::default(), &va)
            .await
            .expect("create")
    }

    async fn agent(&self, name: &str) -> VoiceAgent {
        Api::<VoiceAgent>::namespaced(self.client.clone(), NS)
            .get(name)
            .await
            .expect("get")
    }

    async fn reconcile(&self, name: &str) -> voiceagent::Outcome {
        let va = self.agent(name).await;
        reconcile_agent(&va, &self.ctx).await.expect("reconcile")
    }

    fn seed_secret(&self, s: Secret) {
        self.fake.put_direct(&s).expect("seed secret");
    }

    /// Writes since the last reset.
    fn writes(&self) -> Vec<WriteRecord> {
        self.fake
            .writes()
            .into_iter()
            .filter(|w| w.verb.is_write())
            .collect()
    }

    /// Writes since the last reset, other than Events.
    fn object_writes(&self) -> Vec<WriteRecord> {
        self.writes()
            .into_iter()
            .filter(|w| w.plural != "events")
            .collect()
    }

    fn names(&self, key: &str) -> Vec<String> {
        let mut n: Vec<String> = self
            .fake
            .objects(key)
            .iter()
            .filter(|o| o["metadata"]["namespace"] == NS)
            .map(|o| {
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        n.sort();
        n
    }

    fn mark_deployments_ready(&self, agent: &str) {
        for c in ["gateway", "runtime", "agent", "tts"] {
            let name = format!("{agent}-{c}");
            let d = self
                .fake
                .get("deployments", Some(NS), &name)
                .expect("deployment");
            let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
            let generation = d["metadata"]["generation"].as_i64().unwrap_or(1);
            self.fake
                .set_status(
                    "deployments",
                    Some(NS),
                    &name,
                    json!({"replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas,
                           "availableReplicas": replicas, "observedGeneration": generation}),
                )
                .expect("status");
        }
    }
}

fn kinds(writes: &[WriteRecord]) -> Vec<String> {
    let mut v: Vec<String> = writes
        .iter()
        .map(|w| {
            format!(
                "{} {}/{}",
                w.verb,
                w.plural,
                w.name.clone().unwrap_or_default()
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn create_makes_every_object_with_owner_references_and_status() {
    let e = env().await;
    e.seed_secret(secret("twilio", &[("authToken", "tok-123")]));
    let va = e.create_agent(example("voiceagent-minimal.yaml")).await;
    let out = e.reconcile("hello").await;
    assert_eq!(out.created.len(), 21, "{:?}", out.created);
    assert!(out.degraded.is_none());
    assert_eq!(
        e.names("deployments"),
        ["hello-agent", "hello-gateway", "hello-runtime", "hello-tts"]
    );
    assert_eq!(e.names("services").len(), 4);
    assert_eq!(e.names("poddisruptionbudgets").len(), 4);
    assert_eq!(e.names("networkpolicies").len(), 5);
    assert_eq!(e.names("configmaps"), ["hello-config"]);
    assert_eq!(e.names("serviceaccounts"), ["hello"]);
    for key in [
        "deployments",
        "services",
        "configmaps",
        "networkpolicies",
        "poddisruptionbudgets",
        "serviceaccounts",
    ] {
        for o in e.fake.objects(key) {
            let owner = &o["metadata"]["ownerReferences"][0];
            assert_eq!(owner["uid"], json!(va.uid()), "{key}");
            assert_eq!(owner["controller"], true);
            assert!(o["metadata"]["managedFields"].as_array().is_some_and(|m| {
                m.iter()
                    .any(|f| f["manager"] == "voice-agent-operator" && f["operation"] == "Apply")
            }));
        }
    }
    let status = e.agent("hello").await.status.expect("status");
    assert_eq!(status.phase, Some(VoiceAgentPhase::Progressing));
    assert_eq!(status.ready.as_deref(), Some("0/4"));
    assert_eq!(
        status.webhook_url.as_deref(),
        Some("https://hello.voice.example.com/twilio/voice")
    );
    assert_eq!(status.observed_generation, va.metadata.generation);
    // An Event says what was created.
    let events = e.fake.objects("events.events.k8s.io");
    assert!(
        events.iter().any(|ev| ev["reason"] == "Applied"),
        "{events:#?}"
    );
}

#[tokio::test]
async fn steady_state_makes_zero_writes() {
    let e = env().await;
    e.seed_secret(secret("twilio", &[("authToken", "tok")]));
    e.create_agent(example("voiceagent.yaml")).await;
    e.seed_secret(secret("front-desk-db", &[("url", "postgres://u:p@db/x")]));
    e.reconcile("front-desk").await;
    e.mark_deployments_ready("front-desk");
    e.reconcile("front-desk").await; // status catches up: Ready
    assert_eq!(
        e.agent("front-desk").await.status.and_then(|s| s.phase),
        Some(VoiceAgentPhase::Ready)
    );
    e.fake.reset_writes();
    let out = e.reconcile("front-desk").await;
    assert_eq!(out, voiceagent::Outcome::default());
    assert!(
        e.writes().is_empty(),
        "writes at steady state: {:#?}",
        kinds(&e.writes())
    );
}

#[tokio::test]
async fn a_spec_change_touches_only_the_affected_objects() {
    let e = env().await;
    e.seed_secret(secret("twilio", &[("authToken", "tok")]));
    e.create_agent(example("voiceagent-minimal.yaml")).await;
    e.reconcile("hello").await;

    // The greeting is config: the ConfigMap and the pods (config hash) change.
    let api: Api<VoiceAgent> = Api::namespaced(e.client.clone(), NS);
    let mut va = e.agent("hello").await;
    va.spec.persona.greeting = "Hi, this is Hello.".into();
    api.replace("hello", &PostParams::default(), &va)
        .await
        .expect("update");
    e.fake.reset_writes();
    let out = e.reconcile("hello").await;
    let mut updated = out.updated.clone();
    updated.sort();
    assert_eq!(
        updated,
        [
            "ConfigMap/hello-config",
            "Deployment/hello-agent",
            "Deployment/hello-gateway",
            "Deployment/hello-runtime",
            "Deployment/hello-tts",
        ]
    );
    assert!(out.created.is_empty() && out.pruned.is_empty());

    // A scaling bound is not config: nothing but the status is written.
    let mut va = e.agent("hello").await;
    va.spec.components.agent.max_replicas = 3;
    api.replace("hello", &PostParams::default(), &va)
        .await
        .expect("update");
    e.fake.reset_writes();
    let out = e.reconcile("hello").await;
    assert!(out.updated.is_empty(), "{:?}", out.updated);
    assert_eq!(
        kinds(&e.writes()),
        ["apply voiceagents/hello"],
        "only observedGeneration moves"
    );
}

#[tokio::test]
async fn a_deleted_child_is_recreated() {
    let e = env().await;
    e.seed_secret(secret("twilio", &[("authToken", "tok")]));
    e.create_agent(example("voiceagent-minimal.yaml")).await;
    e.reconcile("hello").await;
    e.fake
        .delete_direct("services", Some(NS), "hello-runtime")
        .expect("existed");
    e.fake.reset_writes();
    let out = e.reconcile("hello").await;
    assert_eq!(out.created, ["Service/hello-runtime"]);
    assert_eq!(kinds(&e.object_writes()), ["apply services/hello-runtime"]);
}

#[tokio::test]
async fn objects_no_longer_desired_are_pruned_and_foreign_ones_kept() {
    let e = env().await;
    e.seed_secret(secret("twilio", &[("authToken", "tok")]));
    let va = e.create_agent(example("voiceagent-minimal.yaml")).await;
    e.reconcile("hello").await;
    let labels = json!({
        "app.kubernetes.io/name": "voice-agent",
        "app.kubernetes.io/instance": "hello",
        "app.kubernetes.io/managed-by": "voice-agent-operator",
    });
    let owner = json!([{"apiVersion": "voiceagent.io/v1alpha1", "kind": "VoiceAgent", "name": "hello",
                        "uid": va.uid(), "controller": true}]);
    // Left over from an older version of the operator: ours, no longer desired.
    e.fake
        .put_direct(&json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "hello-legacy", "namespace": NS, "labels": labels, "ownerReferences": owner},
            "spec": {"podSelector": {}}}))
        .expect("seed");
    // Same labels but not owned by this VoiceAgent: never deleted.
    e.fake
        .put_direct(&json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "hello-notes", "namespace": NS, "labels": labels}, "data": {}}))
        .expect("seed");
    let out = e.reconcile("hello").await;
    assert_eq!(out.pruned, ["NetworkPolicy/hello-legacy"]);
    assert!(
        !e.names("networkpolicies")
            .contains(&"hello-legacy".to_string())
    );
    assert!(e.names("configmaps").contains(&"hello-notes".to_string()));
}

#[tokio::test]
async fn missing_secret_degrades_without_a_write_loop_and_recovers() {
    let e = env().await;
    e.create_agent(example("voiceagent-minimal.yaml")).await;
    let out = e.reconcile("hello").await;
    let degraded = out.degraded.expect("degraded");
    assert_eq!(degraded.reason, "SecretNotFound");
    assert_eq!(
        degraded.message,
        "Secret voice/twilio referenced by spec.telephony.twilio.authTokenSecretRef does not exist"
    );
    assert!(
        e.names("deployments").is_empty(),
        "nothing is created for an unusable spec"
    );
    let status = e.agent("hello").await.status.expect("status");
    assert_eq!(status.phase, Some(VoiceAgentPhase::Degraded));
    let events = e.fake.objects("events.events.k8s.io");
    assert!(
        events
            .iter()
            .any(|ev| ev["reason"] == "SecretNotFound" && ev["type"] == "Warning")
    );

    // Reconciling again changes nothing and writes nothing (no Event spam).
    e.fake.reset_writes();
    e.reconcile("hello").await;
    assert!(e.writes().is_empty(), "{:?}", kinds(&e.writes()));

    // A Secret without the key: a different reason, naming the key.
    e.seed_secret(secret("twilio", &[("token", "x")]));
    let out = e.reconcile("hello").await;
    let d = out.degraded.expect("degraded");
    assert_eq!(d.reason, "SecretKeyNotFound");
    assert!(d.message.contains("\"authToken\""), "{}", d.message);

    // Fixed: the objects appear and Degraded clears.
    e.seed_secret(secret("twilio", &[("authToken", "x")]));
    let out = e.reconcile("hello").await;
    assert!(out.degraded.is_none());
    assert_eq!(e.names("deployments").len(), 4);
    let status = e.agent("hello").await.status.expect("status");
    let cond = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .expect("condition");
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "AsExpected")
    );
}

#[tokio::test]
async fn no_secret_value_leaves_its_secret() {
    let e = env().await;
    let values = [
        "tw-SECRET-1",
        "oa-SECRET-2",
        "dg-SECRET-3",
        "el-SECRET-4",
        "qd-SECRET-5",
        "postgres://u:SECRET-6@db/x",
        "lk-SECRET-7",
        "lk-SECRET-8",
    ];
    e.seed_secret(secret("twilio", &[("authToken", values[0])]));
    e.seed_secret(secret("openai", &[("apiKey", values[1])]));
    e.seed_secret(secret("deepgram", &[("apiKey", values[2])]));
    e.seed_secret(secret("elevenlabs", &[("apiKey", values[3])]));
    e.seed_secret(secret("qdrant", &[("apiKey", values[4])]));
    e.seed_secret(secret("support-db", &[("url", values[5])]));
    e.seed_secret(secret(
        "livekit",
        &[("apiKey", values[6]), ("apiSecret", values[7])],
    ));
    e.create_agent(example("voiceagent-full.yaml")).await;
    let out = e.reconcile("support").await;
    assert!(out.degraded.is_none(), "{:?}", out.degraded);
    for key in [
        "deployments",
        "configmaps",
        "services",
        "networkpolicies",
        "voiceagents",
        "events.events.k8s.io",
        "events",
    ] {
        let dump = serde_json::to_string(&e.fake.objects(key)).expect("json");
        for v in values {
            assert!(!dump.contains(v), "{key} contains a secret value");
        }
    }
    let metrics = e.ctx.metrics.encode();
    assert!(values.iter().all(|v| !metrics.contains(v)));
}

#[tokio::test]
async fn a_conflict_on_write_is_retried() {
    let e = env().await;
    e.seed_secret(secret("twilio", &[("authToken", "tok")]));
    e.create_agent(example("voiceagent-minimal.yaml")).await;
    e.fake.fail_next(
        FailMatcher::on(Verb::Apply, "deployments").name("hello-runtime"),
        409,
        "Conflict",
        1,
    );
    let out = e.reconcile("hello").await;
    assert!(
        out.created
            .contains(&"Deployment/hello-runtime".to_string())
    );
    let attempts = e
        .fake
        .writes()
        .into_iter()
        .filter(|w| w.plural == "deployments" && w.name.as_deref() == Some("hello-runtime"))
        .map(|w| w.code)
        .collect::<Vec<_>>();
    assert_eq!(attempts, [409, 201], "refused once, then created");
}

#[tokio::test]
async fn a_server_error_fails_the_reconcile_with_a_category_and_backs_off() {
    let e = env().await;
    e.seed_secret(secret("twilio", &[("authToken", "tok")]));
    e.create_agent(example("voiceagent-minimal.yaml")).await;
    e.fake.fail_next(
        FailMatcher::on(Verb::Apply, "configmaps"),
        500,
        "InternalError",
        1,
    );
    let va = e.agent("hello").await;
    let err = reconcile_agent(&va, &e.ctx).await.expect_err("fails");
    assert_eq!(err.category(), "kube_api");
    assert!(err.is_transient());
    let guard = Arc::new(DeserializeGuard(Ok(va)));
    let first = voiceagent::error_policy(guard.clone(), &err, e.ctx.clone());
    let second = voiceagent::error_policy(guard.clone(), &err, e.ctx.clone());
    assert_eq!(
        first,
        kube::runtime::controller::Action::requeue(Duration::from_secs(1))
    );
    assert_eq!(
        second,
        kube::runtime::controller::Action::requeue(Duration::from_secs(2))
    );
    assert!(e.ctx.metrics.encode().contains("category=\"kube_api\""));
    // The next reconcile succeeds and resets the backoff.
    voiceagent::reconcile(guard, e.ctx.clone())
        .await
        .expect("recovers");
    assert_eq!(e.ctx.backoff.failures("voice/hello"), 0);
}

#[tokio::test]
async fn an_undecodable_object_is_marked_degraded_once() {
    let e = env().await;
    let mut raw = example("voiceagent-minimal.yaml");
    raw["spec"]["persona"] = json!("not an object");
    let stored = e.fake.put_direct(&raw).expect("seed");
    let metadata = serde_json::from_value(stored["metadata"].clone()).expect("meta");
    let guard = Arc::new(DeserializeGuard::<VoiceAgent>(Err(InvalidObject {
        error: "spec.persona: invalid type: string, expected struct Persona".into(),
        metadata,
    })));
    let action = voiceagent::reconcile(guard.clone(), e.ctx.clone())
        .await
        .expect("handled");
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    let obj = e
        .fake
        .get("voiceagents", Some(NS), "hello")
        .expect("still there");
    assert_eq!(obj["status"]["phase"], "Degraded");
    assert_eq!(obj["status"]["conditions"][0]["reason"], "InvalidObject");
    assert!(
        obj["status"]["conditions"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("spec.persona"),
        "{obj:#}"
    );
    e.fake.reset_writes();
    voiceagent::reconcile(guard, e.ctx.clone())
        .await
        .expect("handled");
    assert!(
        e.writes().is_empty(),
        "marked once: {:?}",
        kinds(&e.writes())
    );
}

#[tokio::test]
async fn bound_phone_numbers_reach_the_status_and_the_gateway_config() {
    let e = env().await;
    e.seed_secret(secret("twilio", &[("authToken", "tok")]));
    e.create_agent(example("voiceagent-minimal.yaml")).await;
    let mut pn = example("phonenumber.yaml");
    pn["spec"]["voiceAgentRef"]["name"] = json!("hello");
    let pn: PhoneNumber = serde_json::from_value(pn).expect("pn");
    let pns: Api<PhoneNumber> = Api::namespaced(e.client.clone(), NS);
    pns.create(&PostParams::default(), &pn)
        .await
        .expect("create");
    e.fake
        .set_status(
            "phonenumbers",
            Some(NS),
            "front-desk-main",
            json!({"conditions": [{"type": "Ready", "status": "True", "reason": "Provisioned", "message": "",
                                   "lastTransitionTime": "2026-11-25T00:00:00Z"}]}),
        )
        .expect("status");
    e.reconcile("hello").await;
    let status = e.agent("hello").await.status.expect("status");
    assert_eq!(status.bound_numbers.len(), 1);
    assert_eq!(status.bound_numbers[0].number, "+15551230142");
    assert!(status.bound_numbers[0].ready);
    let cm = e
        .fake
        .get("configmaps", Some(NS), "hello-config")
        .expect("cm");
    assert!(
        cm["data"]["config.yaml"]
            .as_str()
            .unwrap_or_default()
            .contains("+15551230142")
    );
}

#[tokio::test]
async fn ready_deployments_make_a_ready_agent() {
    let e = env().await;
    e.seed_secret(secret("twilio", &[("authToken", "tok")]));
    e.create_agent(example("voiceagent-minimal.yaml")).await;
    e.reconcile("hello").await;
    e.mark_deployments_ready("hello");
    e.reconcile("hello").await;
    let status = e.agent("hello").await.status.expect("status");
    assert_eq!(status.phase, Some(VoiceAgentPhase::Ready));
    assert_eq!(status.ready.as_deref(), Some("4/4"));
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "AllComponentsReady")
    );
}

#[tokio::test]
async fn leader_election_hands_over() {
    let e = env().await;
    let settings = |id: &str| LeaseSettings {
        lease_duration: Duration::from_secs(2),
        renew_every: Duration::from_millis(200),
        retry_every: Duration::from_millis(100),
        ..LeaseSettings::new(NS, id)
    };
    let a = LeaderElector::new(e.client.clone(), settings("a"));
    let b = LeaderElector::new(e.client.clone(), settings("b"));
    assert!(a.try_acquire_or_renew().await.expect("a"));
    assert!(!b.try_acquire_or_renew().await.expect("b waits"));
    assert!(a.try_acquire_or_renew().await.expect("a renews"));
    // A clean shutdown releases the Lease: b takes over at once.
    a.release().await.expect("release");
    assert!(b.try_acquire_or_renew().await.expect("b takes over"));
    // b dies (stops renewing): a takes over once the Lease expires.
    let start = tokio::time::Instant::now();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    assert!(a.acquire(rx).await);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "took over only after expiry: {waited:?}"
    );
    let lease = e
        .fake
        .get("leases", Some(NS), "voice-agent-operator")
        .expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "a");
    assert_eq!(lease["spec"]["leaseTransitions"], 2);
}

#[tokio::test]
async fn the_operator_runs_reconciles_and_releases_its_lease() {
    let e = env().await;
    e.seed_secret(secret("twilio", &[("authToken", "tok")]));
    e.create_agent(example("voiceagent-minimal.yaml")).await;
    // A VoiceAgent that does not decode must not stall the watch.
    let mut broken = example("voiceagent-minimal.yaml");
    broken["metadata"]["name"] = json!("broken");
    broken["spec"]["components"] = json!({"runtime": {"maxCallsPerPod": "lots"}});
    e.fake.put_direct(&broken).expect("seed");
    let config = voice_agent_operator::run::RunConfig {
        namespaces: vec![NS.to_string()],
        settings: OperatorSettings::default(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        lease: Some(LeaseSettings::new(NS, "operator-0")),
        autoscale_interval: Duration::from_secs(2),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let client = e.client.clone();
    let handle = tokio::spawn(async move {
        voice_agent_operator::run::run_until(client, config, "operator-0", async {
            let _ = stop_rx.await;
        })
        .await
    });
    // The controller creates the objects by itself.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while e.names("deployments").len() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the controller did not create the Deployments"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A deleted child comes back through the owns() watch.
    e.fake.delete_direct("services", Some(NS), "hello-tts");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !e.names("services").contains(&"hello-tts".to_string()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Service was not recreated"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lease = e
        .fake
        .get("leases", Some(NS), "voice-agent-operator")
        .expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "operator-0");
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(20), handle)
        .await
        .expect("stops")
        .expect("joins")
        .expect("clean exit");
    let lease = e
        .fake
        .get("leases", Some(NS), "voice-agent-operator")
        .expect("lease");
    assert!(
        lease["spec"]["holderIdentity"].is_null(),
        "released: {lease:#}"
    );
}

#[tokio::test]
async fn startup_names_the_install_command_when_crds_are_missing() {
    let fake = FakeApi::start().await;
    register_crd_kind(&fake); // but no CRD installed
    let client = Client::try_from(kube::Config::new(fake.kube_config_url())).expect("client");
    // The fake serves CRDs as objects: none exist.
    let err = voice_agent_operator::run::check_crds(&client)
        .await
        .expect_err("missing");
    let msg = err.to_string();
    assert!(msg.contains("voiceagents.voiceagent.io"), "{msg}");
    assert!(
        msg.contains("voice-agent-operator crd | kubectl apply -f -"),
        "{msg}"
    );
    // Once applied, the check passes.
    for crd in voice_agent_api::crds() {
        fake.put_direct(&crd).expect("seed");
    }
    voice_agent_operator::run::check_crds(&client)
        .await
        .expect("installed");
}

#[tokio::test]
async fn a_scale_by_the_autoscaler_is_not_reapplied_but_new_bounds_clamp_it() {
    use kube::api::{Patch, PatchParams};
    let e = env().await;
    e.seed_secret(secret("twilio", &[("authToken", "tok")]));
    e.create_agent(example("voiceagent-minimal.yaml")).await;
    e.reconcile("hello").await;
    // The autoscaler scales the runtime to 3 with its own field manager.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(e.client.clone(), NS);
    let scale = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hello-runtime"},
                       "spec": {"replicas": 3}});
    deployments
        .patch(
            "hello-runtime",
            &PatchParams::apply("voice-agent-operator-autoscaler").force(),
            &Patch::Apply(&scale),
        )
        .await
        .expect("scale");
    e.fake.reset_writes();
    let out = e.reconcile("hello").await;
    assert!(
        out.updated.is_empty(),
        "a scale is not a change of the Deployment: {:?}",
        out.updated
    );
    assert!(
        e.object_writes().iter().all(|w| w.plural != "deployments"),
        "{:?}",
        kinds(&e.object_writes())
    );
    let d = e
        .fake
        .get("deployments", Some(NS), "hello-runtime")
        .expect("deployment");
    assert_eq!(d["spec"]["replicas"], 3);
    assert!(
        d["spec"]["template"]["spec"]["containers"][0]["image"].is_string(),
        "template intact"
    );

    // Raising minReplicas above the current replicas clamps them.
    let api: Api<VoiceAgent> = Api::namespaced(e.client.clone(), NS);
    let mut va = e.agent("hello").await;
    va.spec.components.runtime.min_replicas = 4;
    api.replace("hello", &PostParams::default(), &va)
        .await
        .expect("update");
    let out = e.reconcile("hello").await;
    assert_eq!(out.updated, ["Deployment/hello-runtime"]);
    let d = e
        .fake
        .get("deployments", Some(NS), "hello-runtime")
        .expect("deployment");
    assert_eq!(d["spec"]["replicas"], 4);
}
