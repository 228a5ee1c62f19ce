//! The runtime's Call updates ([`KubeCalls`]) against the in-memory
//! Kubernetes API: the write budget of a short and a long call, what lands
//! in the status, masking, a Call created late, and an API that fails or
//! hangs without touching the call.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt};
use serde_json::{Value, json};
use voice_agent_api::call::CallDirection;
use voice_agent_api::{Call, CallSpec, LocalObjectRef, mask_phone_number};
use voice_agent_kube_fake::{FailMatcher, FakeApi, Verb, WriteRecord};
use voice_agent_proto::{CreateSessionRequest, Transport};
use voice_agent_runtime::calls::CallSink;
use voice_agent_runtime::calls_kube::{FIELD_MANAGER, KubeCalls, KubeCallsConfig};
use voice_agent_runtime::sessions::{EndReason, Registry, Session, TranscriptTurn, TurnLatency};

const NS: &str = "voice";
const CALL_SID: &str = "CA0123456789abcdef0123456789abcdef";
const OBJECT: &str = "ca0123456789abcdef0123456789abcdef";
const FROM: &str = "+15557654321";
const TO: &str = "+15551230142";
const GATEWAY: &str = "voice-agent-gateway";

struct Env {
    fake: FakeApi,
    client: Client,
}

async fn env() -> Env {
    let fake = FakeApi::start().await;
    fake.register_crd(&Call::crd());
    let client = Client::try_from(kube::Config::new(fake.kube_config_url())).expect("client");
    Env { fake, client }
}

fn config() -> KubeCallsConfig {
    KubeCallsConfig {
        retry_delay: Duration::from_millis(20),
        ..KubeCallsConfig::new(NS, "front-desk-runtime-7c9f-abcde")
    }
}

impl Env {
    /// What the gateway does when Twilio rings: create (masked numbers,
    /// the agent label), then one `Ringing` status patch.
    async fn gateway_creates_call(&self) {
        let api: Api<Call> = Api::namespaced(self.client.clone(), NS);
        let mut call = Call::new(
            OBJECT,
            CallSpec {
                call_sid: CALL_SID.into(),
                voice_agent_ref: LocalObjectRef {
                    name: "front-desk".into(),
                },
                phone_number_ref: None,
                from: mask_phone_number(FROM),
                to: mask_phone_number(TO),
                direction: CallDirection::Inbound,
            },
        );
        call.metadata.labels = Some(
            [(
                "voiceagent.io/voice-agent".to_string(),
                "front-desk".to_string(),
            )]
            .into(),
        );
        let pp = PostParams {
            field_manager: Some(GATEWAY.into()),
            ..PostParams::default()
        };
        let created = api.create(&pp, &call).await.expect("create");
        let patch = json!({
            "metadata": {"resourceVersion": created.metadata.resource_version},
            "status": {"phase": "Ringing", "startedAt": "2025-01-01T10:00:00Z", "runtimePod": "front-desk-runtime-7c9f-abcde"},
        });
        let params = PatchParams {
            field_manager: Some(GATEWAY.into()),
            ..PatchParams::default()
        };
        match api
            .patch_status(OBJECT, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            // As in the gateway: the runtime wrote first, its status stays.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("ringing: {e}"),
        }
    }

    /// Waits until the runtime made `n` Call writes.
    async fn wait_runtime_writes(&self, n: usize) {
        for _ in 0..500 {
            if self.runtime_writes().len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} runtime writes: {:?}", self.runtime_writes());
    }

    fn call_writes(&self) -> Vec<WriteRecord> {
        self.fake
            .writes()
            .into_iter()
            .filter(|w| w.plural == "calls")
            .collect()
    }

    fn runtime_writes(&self) -> Vec<WriteRecord> {
        self.call_writes()
            .into_iter()
            .filter(|w| w.field_manager.as_deref() == Some(FIELD_MANAGER))
            .collect()
    }

    fn call(&self) -> Value {
        self.fake.get("calls", Some(NS), OBJECT).expect("the Call")
    }
}

fn session() -> Arc<Session> {
    let registry = Registry::new(4);
    let (session, _) = registry
        .admit(
            CreateSessionRequest {
                call_sid: CALL_SID.into(),
                voice_agent: "front-desk".into(),
                from: FROM.into(),
                to: TO.into(),
                transport: Transport::MediaStreams,
            },
            voice_agent_runtime::now_ms(),
        )
        .expect("admit");
    session
}

/// One completed exchange with end-to-end latency `e2e_ms`, as the voice
/// loop records it.
fn turn(session: &Session, e2e_ms: f64) {
    session.record_turn(
        TranscriptTurn {
            caller: format!("my number is {FROM}"),
            agent: "Thanks, noted.".into(),
            citations: Vec::new(),
            latency: TurnLatency {
                e2e_ms: Some(e2e_ms),
                ..TurnLatency::default()
            },
            interrupted: false,
        },
        true,
    );
}

#[tokio::test]
async fn a_short_call_costs_the_runtime_two_writes() {
    let e = env().await;
    e.gateway_creates_call().await;
    let sink = KubeCalls::new(e.client.clone(), config());
    let s = session();

    s.set_active();
    sink.answered(&s);
    e.wait_runtime_writes(1).await;
    assert_eq!(e.call()["status"]["phase"], "Active");
    for ms in [640.0, 720.0, 910.0] {
        turn(&s, ms);
        sink.progressed(&s);
    }
    s.set_interruptions(1, 0);
    s.end(EndReason::CallerHangup);
    sink.ended(&s);
    assert!(sink.flush(Duration::from_secs(10)).await, "writes finish");

    let all = e.call_writes();
    assert_eq!(all.len(), 4, "create + Ringing + Active + Ended: {all:?}");
    let runtime = e.runtime_writes();
    assert_eq!(runtime.len(), 2, "{runtime:?}");
    assert!(
        runtime
            .iter()
            .all(|w| w.verb == Verb::Patch && w.subresource.as_deref() == Some("status"))
    );
    assert_eq!(sink.stats().written, 2);
    assert_eq!(sink.stats().failed, 0);

    let status = &e.call()["status"];
    assert_eq!(status["phase"], "Ended");
    assert_eq!(status["endReason"], "callerHangup");
    assert_eq!(status["turns"], 3);
    assert_eq!(status["interruptions"], 1);
    assert_eq!(status["latency"], json!({"p50Ms": 720, "p95Ms": 910}));
    assert_eq!(status["runtimePod"], "front-desk-runtime-7c9f-abcde");
    assert_eq!(
        status["startedAt"], "2025-01-01T10:00:00Z",
        "the gateway's startedAt stays"
    );
    assert!(status["answeredAt"].is_string());
    assert!(status["endedAt"].is_string());
    assert!(status["durationSeconds"].as_i64().is_some_and(|d| d >= 0));
    assert_eq!(sink.pending(), 0, "ended calls are forgotten");
}

#[tokio::test]
async fn a_long_call_adds_one_summary_and_no_more() {
    let e = env().await;
    e.gateway_creates_call().await;
    // A minute compressed to 40 ms: the call below lasts many "minutes".
    let sink = KubeCalls::new(
        e.client.clone(),
        KubeCallsConfig {
            summary_interval: Duration::from_millis(40),
            ..config()
        },
    );
    let s = session();
    s.set_active();
    sink.answered(&s);
    e.wait_runtime_writes(1).await;
    for i in 0..30 {
        turn(&s, 500.0 + f64::from(i) * 10.0);
        sink.progressed(&s);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The summary went out while the call was active.
    e.wait_runtime_writes(2).await;
    let mid = &e.call()["status"];
    assert_eq!(mid["phase"], "Active");
    assert!(mid["turns"].as_i64().is_some_and(|t| t > 0));
    assert!(mid["latency"]["p95Ms"].is_i64(), "{mid}");

    s.end(EndReason::AgentHangup);
    sink.ended(&s);
    assert!(sink.flush(Duration::from_secs(10)).await);

    let runtime = e.runtime_writes();
    assert_eq!(
        runtime.len(),
        3,
        "Active + one summary + Ended: {runtime:?}"
    );
    assert_eq!(e.call_writes().len(), 5, "the whole budget of a call");
    let status = &e.call()["status"];
    assert_eq!(status["phase"], "Ended");
    assert_eq!(status["endReason"], "agentHangup");
    assert_eq!(status["turns"], 30);
    assert_eq!(status["latency"], json!({"p50Ms": 640, "p95Ms": 780}));
}

#[tokio::test]
async fn numbers_never_reach_the_call_unmasked() {
    let e = env().await;
    e.gateway_creates_call().await;
    let sink = KubeCalls::new(
        e.client.clone(),
        KubeCallsConfig {
            summary_interval: Duration::ZERO,
            ..config()
        },
    );
    let s = session();
    s.set_active();
    sink.answered(&s);
    turn(&s, 700.0);
    sink.progressed(&s);
    s.end(EndReason::TransportError);
    sink.ended(&s);
    assert!(sink.flush(Duration::from_secs(10)).await);

    let text = e.call().to_string();
    for number in [FROM, TO] {
        let digits = number.trim_start_matches('+');
        assert!(!text.contains(digits), "{number} leaked: {text}");
        // Nor the middle digits that masking removes.
        assert!(!text.contains(&digits[4..8]), "{number} leaked: {text}");
    }
    assert_eq!(e.call()["spec"]["from"], "+1555•••4321");
    let status = &e.call()["status"];
    assert_eq!(status["phase"], "Failed");
    assert_eq!(status["endReason"], "transportError");
}

#[tokio::test]
async fn a_call_created_after_the_answer_is_still_updated() {
    let e = env().await;
    let sink = KubeCalls::new(e.client.clone(), config());
    let s = session();
    s.set_active();
    // The gateway's create is still in flight: the first attempt gets 404.
    sink.answered(&s);
    tokio::time::sleep(Duration::from_millis(5)).await;
    e.gateway_creates_call().await;
    s.end(EndReason::CallerHangup);
    sink.ended(&s);
    assert!(sink.flush(Duration::from_secs(10)).await);
    let status = &e.call()["status"];
    assert_eq!(status["phase"], "Ended", "{status}");
    assert_eq!(sink.stats().dropped, 0, "{:?}", sink.stats());
}

#[tokio::test]
async fn a_failing_api_changes_nothing_for_the_call() {
    let e = env().await;
    e.gateway_creates_call().await;
    e.fake.fail_next(
        FailMatcher::on(Verb::Patch, "calls").subresource("status"),
        500,
        "InternalError",
        100,
    );
    let sink = KubeCalls::new(e.client.clone(), config());
    let s = session();
    s.set_active();
    sink.answered(&s);
    turn(&s, 650.0);
    sink.progressed(&s);
    s.end(EndReason::CallerHangup);
    sink.ended(&s);
    assert!(sink.flush(Duration::from_secs(10)).await, "bounded retries");
    let stats = sink.stats();
    assert_eq!(stats.written, 0);
    assert!(stats.dropped >= 1, "{stats:?}");
    assert!(
        stats.failed <= 2 * u64::from(config().attempts),
        "retries are bounded: {stats:?}"
    );
    assert_eq!(e.call()["status"]["phase"], "Ringing");
    // The session itself is untouched by the failures.
    assert_eq!(s.info().turns, 1);
    assert_eq!(s.end_reason(), Some(EndReason::CallerHangup));
}

#[tokio::test]
async fn a_hung_api_never_blocks_the_hooks() {
    // An API server that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let url: voice_agent_kube_fake::Uri = format!("http://{addr}/").parse().expect("uri");
    let client = Client::try_from(kube::Config::new(url)).expect("client");
    let sink = KubeCalls::new(
        client,
        KubeCallsConfig {
            timeout: Duration::from_millis(100),
            attempts: 1,
            ..config()
        },
    );
    let s = session();
    s.set_active();
    // Every hook returns although no write can complete: they only queue.
    sink.answered(&s);
    for _ in 0..50 {
        turn(&s, 600.0);
        sink.progressed(&s);
    }
    s.end(EndReason::CallerHangup);
    sink.ended(&s);
    assert_eq!(sink.stats().written, 0);
    assert!(
        sink.flush(Duration::from_secs(10)).await,
        "timeouts end the writes"
    );
    // Active and Ended, or only Ended when the two were queued together.
    let dropped = sink.stats().dropped;
    assert!((1..=2).contains(&dropped), "{:?}", sink.stats());
}
