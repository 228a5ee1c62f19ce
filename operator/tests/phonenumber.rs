//! The PhoneNumber controller, running for real against the in-memory
//! Kubernetes API and the Twilio and LiveKit stubs: provisioning, following
//! the agent's URL, conflicts and recovery, unknown numbers, vendor errors
//! (refused and unavailable), missing references, and cleanup, including
//! cleanup of vendor objects that are already gone.

mod phonenumber_stubs;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::DeserializeGuard;
use kube::runtime::events::{Recorder, Reporter};
use phonenumber_stubs::{LiveKitStub, TwilioStub};
use serde_json::{Value, json};
use tokio::sync::watch;
use voice_agent_api::{PhoneNumber, VoiceAgent};
use voice_agent_kube_fake::{FakeApi, ResourceType, Verb};
use voice_agent_operator::controller::phonenumber::{self, Context, FINALIZER};
use voice_agent_operator::metrics::Metrics;
use voice_agent_operator::provision::ProvisionSettings;

const NS: &str = "voice";
const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "twilio-auth-token-7f3a";
const NUMBER: &str = "+15551230142";
const LK_KEY: &str = "APIabc123";
const LK_SECRET: &str = "livekit-api-secret-9c1d-9c1d-9c1d-9c1d";
const OLD_URL: &str = "https://old.example.com/voice";

struct Env {
    fake: FakeApi,
    client: Client,
    twilio: TwilioStub,
    livekit: LiveKitStub,
    ctx: Arc<Context>,
    stop: watch::Sender<bool>,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
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
    }
    let client = Client::try_from(kube::Config::new(fake.kube_config_url())).expect("client");
    let twilio = TwilioStub::start(ACCOUNT, TOKEN).await;
    let livekit = LiveKitStub::start(LK_KEY, LK_SECRET).await;
    let settings = ProvisionSettings {
        twilio_api_url: twilio.url.clone(),
        timeout: Duration::from_secs(2),
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "voice-agent-operator".into(),
            instance: Some("test".into()),
        },
    );
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            recorder,
            Metrics::new(),
            &settings,
            Vec::new(),
        )
        .expect("context"),
    );
    let (stop, stop_rx) = watch::channel(false);
    Env {
        fake,
        client,
        twilio,
        livekit,
        ctx,
        stop,
    }
    .seeded(stop_rx)
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

fn agent(name: &str, public_url: &str, livekit: Option<&str>) -> VoiceAgent {
    let mut telephony = json!({
        "publicUrl": public_url,
        "twilio": {"authTokenSecretRef": {"name": "gateway-twilio", "key": "authToken"}},
    });
    if let Some(url) = livekit {
        telephony["transport"] = json!("livekit");
        telephony["livekit"] = json!({
            "url": url,
            "apiKeySecretRef": {"name": "livekit", "key": "apiKey"},
            "apiSecretSecretRef": {"name": "livekit", "key": "apiSecret"},
            "sipUri": "sip:abc.sip.livekit.cloud",
        });
    }
    serde_json::from_value(json!({
        "apiVersion": "voiceagent.io/v1alpha1", "kind": "VoiceAgent",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"persona": {"greeting": "Hi"}, "telephony": telephony},
    }))
    .expect("agent")
}

fn number(name: &str, agent: &str, number: &str) -> PhoneNumber {
    serde_json::from_value(json!({
        "apiVersion": "voiceagent.io/v1alpha1", "kind": "PhoneNumber",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"number": number, "voiceAgentRef": {"name": agent}, "provider": "twilio",
                 "twilio": {"accountSid": ACCOUNT,
                            "credentialsSecretRef": {"name": "twilio-account", "key": "authToken"}}},
    }))
    .expect("phone number")
}

impl Env {
    fn seeded(self, stop: watch::Receiver<bool>) -> Self {
        self.fake
            .put_direct(&secret("twilio-account", &[("authToken", TOKEN)]))
            .expect("seed");
        self.fake
            .put_direct(&secret(
                "livekit",
                &[("apiKey", LK_KEY), ("apiSecret", LK_SECRET)],
            ))
            .expect("seed");
        let (client, ctx) = (self.client.clone(), Arc::clone(&self.ctx));
        tokio::spawn(async move { phonenumber::run(client, &[], ctx, stop).await });
        self
    }

    async fn create_agent(&self, va: VoiceAgent) {
        Api::<VoiceAgent>::namespaced(self.client.clone(), NS)
            .create(&PostParams::default(), &va)
            .await
            .expect("create agent");
    }

    async fn create_number(&self, pn: PhoneNumber) {
        Api::<PhoneNumber>::namespaced(self.client.clone(), NS)
            .create(&PostParams::default(), &pn)
            .await
            .expect("create number");
    }

    async fn delete_number(&self, name: &str) {
        Api::<PhoneNumber>::namespaced(self.client.clone(), NS)
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete number");
    }

    fn pn(&self, name: &str) -> Option<Value> {
        self.fake.get("phonenumbers", Some(NS), name)
    }

    fn condition(&self, name: &str, type_: &str) -> Option<(String, String, String)> {
        let pn = self.pn(name)?;
        let conds = pn["status"]["conditions"].as_array()?.clone();
        conds.into_iter().find(|c| c["type"] == type_).map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
    }

    /// Waits until `check` holds (polling every 20 ms, up to 20 s).
    async fn until(&self, what: &str, check: impl Fn(&Env) -> bool) {
        for _ in 0..1000 {
            if check(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "timed out waiting for {what}; objects: {:#?}; twilio: {:#?}",
            self.fake.objects("phonenumbers"),
            self.twilio.requests()
        );
    }

    async fn until_condition(&self, name: &str, type_: &str, status: &str, reason: &str) {
        self.until(&format!("{name} {type_}={status} ({reason})"), |e| {
            e.condition(name, type_)
                .is_some_and(|(s, r, _)| s == status && r == reason)
        })
        .await;
    }

    fn event_reasons(&self) -> Vec<String> {
        self.fake
            .objects("events.k8s.io/v1/Event")
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    async fn until_event(&self, reason: &str) {
        self.until(&format!("an Event {reason}"), |e| {
            e.event_reasons().iter().any(|r| r == reason)
        })
        .await;
    }

    /// Everything stored, as text (to look for leaked secrets).
    fn everything(&self) -> String {
        let mut s = String::new();
        for kind in ["phonenumbers", "voiceagents", "events.k8s.io/v1/Event"] {
            for o in self.fake.objects(kind) {
                s.push_str(&o.to_string());
            }
        }
        s
    }

    async fn reconcile_once(&self, name: &str) {
        let guard = Api::<DeserializeGuard<PhoneNumber>>::namespaced(self.client.clone(), NS)
            .get(name)
            .await
            .expect("get");
        phonenumber::reconcile(Arc::new(guard), Arc::clone(&self.ctx))
            .await
            .expect("reconcile");
    }
}

#[tokio::test]
async fn provisions_a_number_and_records_what_it_replaced() {
    let e = env().await;
    let sid = e.twilio.add_number(NUMBER, Some(OLD_URL), "GET");
    e.create_agent(agent("hello", "https://hello.example.com", None))
        .await;
    e.create_number(number("main", "hello", NUMBER)).await;
    e.until_condition("main", "Ready", "True", "Provisioned")
        .await;

    let n = e.twilio.number(&sid);
    assert_eq!(n["voice_url"], "https://hello.example.com/twilio/voice");
    assert_eq!(n["voice_method"], "POST");
    assert_eq!(
        n["status_callback"],
        "https://hello.example.com/twilio/status"
    );
    assert_eq!(n["status_callback_method"], "POST");
    let pn = e.pn("main").expect("pn");
    let status = &pn["status"];
    assert_eq!(status["twilioNumberSid"], sid);
    assert_eq!(
        status["webhookUrl"],
        "https://hello.example.com/twilio/voice"
    );
    assert_eq!(
        status["previous"],
        json!({"voiceUrl": OLD_URL, "voiceMethod": "GET", "statusCallbackMethod": "POST"})
    );
    assert_eq!(pn["metadata"]["finalizers"], json!([FINALIZER]));
    assert_eq!(
        e.condition("main", "Conflict").map(|c| c.0).as_deref(),
        Some("False")
    );
    assert_eq!(
        e.twilio.count("POST"),
        1,
        "one update: {:?}",
        e.twilio.requests()
    );
    e.until_event("Provisioned").await;
    let form = &e
        .twilio
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .expect("post")
        .form;
    assert_eq!(
        form.get("VoiceUrl").map(String::as_str),
        Some("https://hello.example.com/twilio/voice")
    );
    assert_eq!(
        form.get("StatusCallbackMethod").map(String::as_str),
        Some("POST")
    );

    // Kubernetes writes of a first provisioning (after the test's create):
    // the finalizer, the status
    // with what to restore (before Twilio is changed), the final status.
    let pn_writes: Vec<String> = e
        .fake
        .writes()
        .into_iter()
        .filter(|w| w.plural == "phonenumbers")
        .map(|w| format!("{} {}", w.verb, w.subresource.unwrap_or_default()))
        .collect();
    assert_eq!(
        pn_writes,
        ["create ", "patch ", "apply status", "apply status"],
        "{pn_writes:?}"
    );

    // Steady state: a reconcile reads Twilio once and writes nothing anywhere.
    tokio::time::sleep(Duration::from_millis(300)).await;
    e.fake.reset_writes();
    let (gets, posts) = (e.twilio.count("GET"), e.twilio.count("POST"));
    e.reconcile_once("main").await;
    let writes: Vec<_> = e
        .fake
        .writes()
        .into_iter()
        .filter(|w| w.verb.is_write() && w.plural != "events")
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert_eq!(e.twilio.count("POST"), posts);
    assert_eq!(e.twilio.count("GET"), gets + 1);
    assert!(
        !e.everything().contains(TOKEN),
        "the token never leaves the Secret"
    );
}

#[tokio::test]
async fn follows_the_agents_public_url() {
    let e = env().await;
    let sid = e.twilio.add_number(NUMBER, None, "POST");
    e.create_agent(agent("hello", "https://hello.example.com", None))
        .await;
    e.create_number(number("main", "hello", NUMBER)).await;
    e.until_condition("main", "Ready", "True", "Provisioned")
        .await;

    let patch = json!({"spec": {"telephony": {"publicUrl": "https://voice2.example.com"}}});
    Api::<VoiceAgent>::namespaced(e.client.clone(), NS)
        .patch("hello", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch agent");
    e.until("the number to follow the agent", |e| {
        e.twilio.number(&sid)["voice_url"] == "https://voice2.example.com/twilio/voice"
    })
    .await;
    e.until("the status to follow", |e| {
        e.pn("main")
            .is_some_and(|p| p["status"]["webhookUrl"] == "https://voice2.example.com/twilio/voice")
    })
    .await;
    assert_eq!(
        e.twilio.number(&sid)["status_callback"],
        "https://voice2.example.com/twilio/status"
    );
    // What to restore is still what the number had before the operator.
    assert_eq!(
        e.pn("main").expect("pn")["status"]["previous"],
        json!({"voiceMethod": "POST", "statusCallbackMethod": "POST"})
    );
}

#[tokio::test]
async fn a_second_claim_waits_in_conflict_and_takes_over_when_the_first_goes() {
    let e = env().await;
    let sid = e.twilio.add_number(NUMBER, Some(OLD_URL), "POST");
    e.create_agent(agent("hello", "https://hello.example.com", None))
        .await;
    e.create_agent(agent("other", "https://other.example.com", None))
        .await;
    e.create_number(number("first", "hello", NUMBER)).await;
    e.until_condition("first", "Ready", "True", "Provisioned")
        .await;
    let posts = e.twilio.count("POST");

    e.create_number(number("second", "other", NUMBER)).await;
    e.until_condition("second", "Conflict", "True", "NumberClaimed")
        .await;
    let (_, _, message) = e.condition("second", "Ready").expect("ready");
    assert!(message.contains("voice/first"), "{message}");
    assert_eq!(
        e.condition("second", "Provisioned").map(|c| c.0).as_deref(),
        Some("False")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        e.twilio.count("POST"),
        posts,
        "the later claim provisions nothing"
    );
    assert_eq!(
        e.twilio.number(&sid)["voice_url"],
        "https://hello.example.com/twilio/voice"
    );
    e.until_event("NumberClaimed").await;

    // The first goes: it restores the number, then the second takes it.
    e.delete_number("first").await;
    e.until("the first to be gone", |e| e.pn("first").is_none())
        .await;
    e.until_condition("second", "Ready", "True", "Provisioned")
        .await;
    assert_eq!(
        e.condition("second", "Conflict").map(|c| c.0).as_deref(),
        Some("False")
    );
    assert_eq!(
        e.twilio.number(&sid)["voice_url"],
        "https://other.example.com/twilio/voice"
    );
    // The second remembers the number as the first left it: restored.
    assert_eq!(
        e.pn("second").expect("pn")["status"]["previous"]["voiceUrl"],
        OLD_URL
    );
}

#[tokio::test]
async fn a_number_outside_the_account_is_not_provisioned() {
    let e = env().await;
    e.twilio.add_number("+15559990000", None, "POST");
    e.create_agent(agent("hello", "https://hello.example.com", None))
        .await;
    e.create_number(number("main", "hello", NUMBER)).await;
    e.until_condition("main", "Provisioned", "False", "NumberNotFound")
        .await;
    let (_, _, message) = e.condition("main", "Provisioned").expect("condition");
    assert!(
        message.contains(NUMBER) && message.contains(ACCOUNT),
        "{message}"
    );
    assert_eq!(
        e.condition("main", "Ready").map(|c| c.0).as_deref(),
        Some("False")
    );
    assert_eq!(e.twilio.count("POST"), 0);
    e.until_event("NumberNotFound").await;
}

#[tokio::test]
async fn twilio_500s_back_off_then_recover() {
    let e = env().await;
    let sid = e.twilio.add_number(NUMBER, None, "POST");
    e.twilio.fail_next(500, 2);
    e.create_agent(agent("hello", "https://hello.example.com", None))
        .await;
    e.create_number(number("main", "hello", NUMBER)).await;
    e.until_condition("main", "Provisioned", "False", "VendorUnavailable")
        .await;
    e.until_condition("main", "Ready", "True", "Provisioned")
        .await;
    assert_eq!(
        e.twilio.number(&sid)["voice_url"],
        "https://hello.example.com/twilio/voice"
    );
    assert!(e.twilio.requests().len() >= 4, "{:?}", e.twilio.requests());
    e.until_event("VendorUnavailable").await;
}

#[tokio::test]
async fn refused_credentials_set_the_vendors_message_without_a_retry_loop() {
    let e = env().await;
    e.twilio.add_number(NUMBER, None, "POST");
    e.twilio.set_auth_token("a-rotated-token");
    e.create_agent(agent("hello", "https://hello.example.com", None))
        .await;
    e.create_number(number("main", "hello", NUMBER)).await;
    e.until_condition("main", "Provisioned", "False", "VendorRejected")
        .await;
    let (_, _, message) = e.condition("main", "Provisioned").expect("condition");
    assert!(
        message.contains("HTTP 401")
            && message.contains("20003")
            && message.contains("Authenticate"),
        "{message}"
    );
    // A refused request is not repeated in a loop: the next try is minutes away.
    let seen = e.twilio.requests().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        e.twilio.requests().len() <= seen + 1,
        "{:?}",
        e.twilio.requests()
    );
    assert!(!e.everything().contains(TOKEN));
    e.until_event("VendorRejected").await;
}

#[tokio::test]
async fn a_missing_voice_agent_waits_without_calling_vendors() {
    let e = env().await;
    let sid = e.twilio.add_number(NUMBER, None, "POST");
    e.create_number(number("main", "hello", NUMBER)).await;
    e.until_condition("main", "Ready", "False", "VoiceAgentNotFound")
        .await;
    let (_, _, message) = e.condition("main", "Ready").expect("condition");
    assert!(message.contains("voice/hello"), "{message}");
    assert!(e.twilio.requests().is_empty(), "{:?}", e.twilio.requests());
    // The agent appears: the number is provisioned without another nudge.
    e.create_agent(agent("hello", "https://hello.example.com", None))
        .await;
    e.until_condition("main", "Ready", "True", "Provisioned")
        .await;
    assert_eq!(
        e.twilio.number(&sid)["voice_url"],
        "https://hello.example.com/twilio/voice"
    );
}

#[tokio::test]
async fn a_missing_secret_waits_and_a_new_one_is_noticed() {
    let e = env().await;
    e.twilio.add_number(NUMBER, None, "POST");
    e.create_agent(agent("hello", "https://hello.example.com", None))
        .await;
    let mut pn = number("main", "hello", NUMBER);
    if let Some(t) = pn.spec.twilio.as_mut() {
        t.credentials_secret_ref.name = "later".into();
    }
    e.create_number(pn).await;
    e.until_condition("main", "Provisioned", "False", "SecretNotFound")
        .await;
    assert!(e.twilio.requests().is_empty());
    e.fake
        .put_direct(&secret("later", &[("authToken", TOKEN)]))
        .expect("seed");
    e.until_condition("main", "Ready", "True", "Provisioned")
        .await;
}

#[tokio::test]
async fn deleting_restores_the_previous_webhooks() {
    let e = env().await;
    let sid = e.twilio.add_number(NUMBER, Some(OLD_URL), "GET");
    e.create_agent(agent("hello", "https://hello.example.com", None))
        .await;
    e.create_number(number("main", "hello", NUMBER)).await;
    e.until_condition("main", "Ready", "True", "Provisioned")
        .await;
    e.delete_number("main").await;
    e.until("the PhoneNumber to be gone", |e| e.pn("main").is_none())
        .await;
    let n = e.twilio.number(&sid);
    assert_eq!(n["voice_url"], OLD_URL);
    assert_eq!(n["voice_method"], "GET");
    assert_eq!(n["status_callback"], "", "it had none: cleared");
    e.until_event("Released").await;
}

#[tokio::test]
async fn livekit_trunk_and_rule_are_made_and_deleted() {
    let e = env().await;
    let sid = e.twilio.add_number(NUMBER, None, "POST");
    e.create_agent(agent(
        "hello",
        "https://hello.example.com",
        Some(&e.livekit.url),
    ))
    .await;
    e.create_number(number("main", "hello", NUMBER)).await;
    e.until_condition("main", "Ready", "True", "Provisioned")
        .await;

    let trunks = e.livekit.trunks();
    assert_eq!(trunks.len(), 1, "{trunks:?}");
    assert_eq!(trunks[0].numbers, [NUMBER]);
    assert_eq!(trunks[0].metadata, "voiceagent.io/phonenumber=voice/main");
    // The trunk maps the gateway's session headers onto the SIP
    // participant's attributes (protobuf JSON, as LiveKit receives it).
    let created = e.livekit.bodies("CreateSIPInboundTrunk");
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(
        created[0]["trunk"]["headersToAttributes"],
        session_headers()
    );
    let rules = e.livekit.rules();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].trunk_ids, [trunks[0].sip_trunk_id.clone()]);
    assert!(rules[0].hide_phone_number);
    let prefix = match rules[0].rule.as_ref().and_then(|r| r.rule.as_ref()) {
        Some(livekit_protocol::sip_dispatch_rule::Rule::DispatchRuleIndividual(i)) => {
            i.room_prefix.clone()
        }
        other => panic!("not an individual rule: {other:?}"),
    };
    assert_eq!(prefix, "hello-");
    let status = e.pn("main").expect("pn")["status"].clone();
    assert_eq!(status["livekitTrunkId"], trunks[0].sip_trunk_id);
    assert_eq!(
        status["livekitDispatchRuleId"],
        rules[0].sip_dispatch_rule_id
    );
    // Twilio still calls the gateway, which dials LiveKit SIP.
    assert_eq!(
        e.twilio.number(&sid)["voice_url"],
        "https://hello.example.com/twilio/voice"
    );
    assert!(!e.everything().contains(LK_SECRET));

    // A steady-state reconcile creates nothing more.
    let created = |e: &Env| {
        e.livekit
            .calls()
            .iter()
            .filter(|c| c.starts_with("Create") || c.starts_with("Update"))
            .count()
    };
    let before = created(&e);
    e.reconcile_once("main").await;
    assert_eq!(created(&e), before);

    e.delete_number("main").await;
    e.until("the PhoneNumber to be gone", |e| e.pn("main").is_none())
        .await;
    assert!(e.livekit.trunks().is_empty());
    assert!(e.livekit.rules().is_empty());
    let calls = e.livekit.calls();
    let rule_deleted = calls.iter().position(|c| c == "DeleteSIPDispatchRule");
    let trunk_deleted = calls.iter().position(|c| c == "DeleteSIPTrunk");
    assert!(
        rule_deleted < trunk_deleted,
        "the rule goes first: {calls:?}"
    );
}

/// The mapping of the gateway's session headers, in protobuf JSON.
fn session_headers() -> Value {
    json!({
        "X-VoiceAgent-Session": "voiceagent.io/session",
        "X-VoiceAgent-Media": "voiceagent.io/media-url",
        "X-VoiceAgent-Token": "voiceagent.io/token",
    })
}

#[tokio::test]
async fn a_livekit_trunk_without_the_header_mapping_is_updated_in_place() {
    let e = env().await;
    e.twilio.add_number(NUMBER, None, "POST");
    // Made by an operator from before the mapping; an allowed address was
    // added by hand since.
    let trunk_id = e.livekit.add_trunk(livekit_protocol::SipInboundTrunkInfo {
        name: "voice-agent voice/main".into(),
        metadata: "voiceagent.io/phonenumber=voice/main".into(),
        numbers: vec![NUMBER.into()],
        allowed_addresses: vec!["54.172.60.0/30".into()],
        ..Default::default()
    });
    e.create_agent(agent(
        "hello",
        "https://hello.example.com",
        Some(&e.livekit.url),
    ))
    .await;
    e.create_number(number("main", "hello", NUMBER)).await;
    e.until_condition("main", "Ready", "True", "Provisioned")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let calls = e.livekit.calls();
    let count = |m: &str| calls.iter().filter(|c| *c == m).count();
    assert_eq!(count("CreateSIPInboundTrunk"), 0, "adopted: {calls:?}");
    assert_eq!(count("UpdateSIPInboundTrunk"), 1, "{calls:?}");
    let updates = e.livekit.bodies("UpdateSIPInboundTrunk");
    assert_eq!(updates[0]["sipTrunkId"], trunk_id);
    assert_eq!(
        updates[0]["replace"]["headersToAttributes"],
        session_headers()
    );
    let trunks = e.livekit.trunks();
    assert_eq!(trunks.len(), 1, "{trunks:?}");
    assert_eq!(trunks[0].sip_trunk_id, trunk_id, "updated in place");
    assert_eq!(trunks[0].numbers, [NUMBER]);
    assert_eq!(
        trunks[0].allowed_addresses,
        ["54.172.60.0/30"],
        "what was set by hand stays"
    );
    assert_eq!(
        trunks[0]
            .headers_to_attributes
            .get("X-VoiceAgent-Session")
            .map(String::as_str),
        Some("voiceagent.io/session")
    );
    assert_eq!(
        e.pn("main").expect("pn")["status"]["livekitTrunkId"],
        trunk_id
    );
    e.until("the update to be announced", |e| {
        e.fake.objects("events.k8s.io/v1/Event").iter().any(|ev| {
            ev["note"]
                .as_str()
                .is_some_and(|n| n.contains(&format!("updated LiveKit inbound trunk {trunk_id}")))
        })
    })
    .await;

    // Steady state: the trunk matches now; a reconcile writes nothing.
    let before = e.livekit.calls().len();
    e.reconcile_once("main").await;
    let after = e.livekit.calls();
    let writes: Vec<_> = after[before..]
        .iter()
        .filter(|c| !c.starts_with("List"))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert_eq!(
        after
            .iter()
            .filter(|c| *c == "UpdateSIPInboundTrunk")
            .count(),
        1
    );
}

#[tokio::test]
async fn the_finalizer_goes_when_the_vendor_objects_are_already_gone() {
    let e = env().await;
    let sid = e.twilio.add_number(NUMBER, None, "POST");
    e.create_agent(agent(
        "hello",
        "https://hello.example.com",
        Some(&e.livekit.url),
    ))
    .await;
    e.create_number(number("main", "hello", NUMBER)).await;
    e.until_condition("main", "Ready", "True", "Provisioned")
        .await;
    // Released in the Twilio console, deleted with the lk CLI.
    e.twilio.remove_number(&sid);
    e.livekit.wipe();
    e.delete_number("main").await;
    e.until("the PhoneNumber to be gone", |e| e.pn("main").is_none())
        .await;
    e.until_event("Released").await;
    let deletes = e
        .fake
        .writes()
        .into_iter()
        .filter(|w| w.plural == "phonenumbers" && w.verb == Verb::Patch)
        .count();
    assert!(deletes >= 1, "the finalizer was removed by a patch");
}

#[tokio::test]
async fn livekit_500s_are_retried_and_the_status_follows() {
    let e = env().await;
    e.twilio.add_number(NUMBER, None, "POST");
    e.livekit.fail_next(503, 1);
    e.create_agent(agent(
        "hello",
        "https://hello.example.com",
        Some(&e.livekit.url),
    ))
    .await;
    e.create_number(number("main", "hello", NUMBER)).await;
    e.until_condition("main", "Ready", "True", "Provisioned")
        .await;
    assert_eq!(e.livekit.trunks().len(), 1);
    assert_eq!(e.livekit.rules().len(), 1);
    let pn = e.pn("main").expect("pn");
    assert!(pn["status"]["livekitTrunkId"].is_string());
    e.until_event("VendorUnavailable").await;
}

#[tokio::test]
async fn the_voice_agent_lists_its_bound_numbers() {
    // The VoiceAgent controller (not running here) reads bound numbers
    // through the same objects: a Ready PhoneNumber that is not in conflict.
    let e = env().await;
    e.twilio.add_number(NUMBER, None, "POST");
    e.create_agent(agent("hello", "https://hello.example.com", None))
        .await;
    e.create_number(number("main", "hello", NUMBER)).await;
    e.until_condition("main", "Ready", "True", "Provisioned")
        .await;
    let va = Api::<VoiceAgent>::namespaced(e.client.clone(), NS)
        .get("hello")
        .await
        .expect("agent");
    let ctx = voice_agent_operator::controller::Context::new(
        e.client.clone(),
        voice_agent_operator::render::OperatorSettings::default(),
        Metrics::new(),
        Reporter {
            controller: "voice-agent-operator".into(),
            instance: Some("test".into()),
        },
    );
    e.fake
        .put_direct(&secret("gateway-twilio", &[("authToken", "x")]))
        .expect("seed");
    voice_agent_operator::controller::voiceagent::reconcile_agent(&va, &ctx)
        .await
        .expect("reconcile agent");
    let va = e.fake.get("voiceagents", Some(NS), "hello").expect("va");
    assert_eq!(
        va["status"]["boundNumbers"],
        json!([{"name": "main", "number": NUMBER, "ready": true}])
    );
}

#[tokio::test]
async fn moving_a_number_to_another_agent_replaces_the_dispatch_rule() {
    let e = env().await;
    let sid = e.twilio.add_number(NUMBER, None, "POST");
    e.create_agent(agent(
        "hello",
        "https://hello.example.com",
        Some(&e.livekit.url),
    ))
    .await;
    e.create_agent(agent(
        "other",
        "https://other.example.com",
        Some(&e.livekit.url),
    ))
    .await;
    e.create_number(number("main", "hello", NUMBER)).await;
    e.until_condition("main", "Ready", "True", "Provisioned")
        .await;
    let rule_id = e.livekit.rules()[0].sip_dispatch_rule_id.clone();

    let patch = json!({"spec": {"voiceAgentRef": {"name": "other"}}});
    Api::<PhoneNumber>::namespaced(e.client.clone(), NS)
        .patch("main", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch number");
    e.until("the rule to follow the agent", |e| {
        e.livekit.rules().iter().any(|r| {
            matches!(
                r.rule.as_ref().and_then(|r| r.rule.as_ref()),
                Some(livekit_protocol::sip_dispatch_rule::Rule::DispatchRuleIndividual(i))
                    if i.room_prefix == "other-"
            )
        })
    })
    .await;
    e.until("Twilio to follow the agent", |e| {
        e.twilio.number(&sid)["voice_url"] == "https://other.example.com/twilio/voice"
    })
    .await;
    assert_eq!(e.livekit.trunks().len(), 1, "the trunk stays");
    let rules = e.livekit.rules();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].sip_dispatch_rule_id, rule_id, "replaced in place");
    assert_eq!(
        rules[0]
            .attributes
            .get("voiceagent.io/voice-agent")
            .map(String::as_str),
        Some("other")
    );
    assert!(
        e.livekit
            .calls()
            .iter()
            .any(|c| c == "UpdateSIPDispatchRule")
    );
}

#[tokio::test]
async fn the_agents_allowed_addresses_restrict_the_trunk() {
    let e = env().await;
    e.twilio.add_number(NUMBER, None, "POST");
    // An open trunk from before the agent restricted it.
    let trunk_id = e.livekit.add_trunk(livekit_protocol::SipInboundTrunkInfo {
        name: "voice-agent voice/main".into(),
        metadata: "voiceagent.io/phonenumber=voice/main".into(),
        numbers: vec![NUMBER.into()],
        ..Default::default()
    });
    let mut hello = agent("hello", "https://hello.example.com", Some(&e.livekit.url));
    let allowed = vec!["54.172.60.0/30".to_string(), "2600:1f18::/64".to_string()];
    if let Some(livekit) = hello.spec.telephony.livekit.as_mut() {
        livekit.allowed_addresses = allowed.clone();
    }
    e.create_agent(hello).await;
    e.create_number(number("main", "hello", NUMBER)).await;
    e.until_condition("main", "Ready", "True", "Provisioned")
        .await;

    let updates = e.livekit.bodies("UpdateSIPInboundTrunk");
    assert_eq!(updates.len(), 1, "{updates:?}");
    assert_eq!(
        updates[0]["replace"]["allowedAddresses"],
        json!(["54.172.60.0/30", "2600:1f18::/64"])
    );
    let trunks = e.livekit.trunks();
    assert_eq!(trunks[0].sip_trunk_id, trunk_id);
    assert_eq!(trunks[0].allowed_addresses, allowed);

    // Steady state: nothing more is written.
    let writes = |e: &Env| {
        e.livekit
            .calls()
            .iter()
            .filter(|c| c.starts_with("Create") || c.starts_with("Update"))
            .count()
    };
    let before = writes(&e);
    e.reconcile_once("main").await;
    assert_eq!(writes(&e), before);
}
