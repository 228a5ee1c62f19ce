//! The Twilio webhooks over real HTTP: a running gateway, the stand-in
//! runtime and the fake Kubernetes API.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures::future::BoxFuture;
use voice_agent_gateway::calls::{CallRecorder, Created, NewCall, RecordError};
use voice_agent_gateway::{NoCluster, Outcome, Route, signature};
use voice_agent_kube_fake::{FailMatcher, Verb};
use voice_agent_proto::Transport;

fn options(runtime: &Runtime) -> Options {
    Options {
        runtime_url: runtime.url(),
        livekit_url: None,
        bound_numbers: vec![AGENT_NUMBER.to_owned()],
    }
}

/// Waits until the Call of `sid` has a status phase.
async fn call_with_phase(fake: &voice_agent_kube_fake::FakeApi, sid: &str) -> serde_json::Value {
    let name = sid.to_ascii_lowercase();
    eventually(|| {
        fake.get("calls", Some(NAMESPACE), &name)
            .filter(|c| c["status"]["phase"].is_string())
    })
    .await
}

#[tokio::test]
async fn a_call_gets_stream_twiml_one_session_and_one_call() {
    let runtime = Runtime::start(Sessions::Accept).await;
    let (fake, recorder) = kube().await;
    let gateway = Gateway::start(options(&runtime), recorder, |_| {}).await;
    let sid = call_sid(1);

    let response = gateway.voice(&sid).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/xml; charset=utf-8"
    );
    let twiml = response.text().await.expect("body");
    assert!(twiml.starts_with("<?xml"), "{twiml}");
    assert!(twiml.contains("<Response><Connect><Stream "), "{twiml}");
    let (url, params) = parse_stream(&twiml);
    assert_eq!(url, format!("ws://{}/twilio/media", gateway.addr));
    assert_eq!(params["sessionId"], "s-1");
    let media_url = format!("ws://{}/api/sessions/s-1/media", runtime.addr);
    assert_eq!(params["mediaUrl"], media_url);
    assert_eq!(
        params["token"],
        signature::media_token(AUTH_TOKEN, "s-1", &media_url)
    );

    // The runtime got the call context with the full numbers.
    let sessions = runtime.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].call_sid, sid);
    assert_eq!(sessions[0].voice_agent, AGENT);
    assert_eq!(
        (sessions[0].from.as_str(), sessions[0].to.as_str()),
        (CALLER, AGENT_NUMBER)
    );
    assert_eq!(sessions[0].transport, Transport::MediaStreams);

    // The Call: masked numbers, Ringing, in the pod's namespace.
    let call = call_with_phase(&fake, &sid).await;
    assert_eq!(call["spec"]["callSid"], sid.as_str());
    assert_eq!(call["spec"]["voiceAgentRef"]["name"], AGENT);
    assert_eq!(call["spec"]["from"], "+1555•••0142");
    assert_eq!(call["spec"]["to"], "+1555•••0000");
    assert_eq!(call["spec"]["direction"], "inbound");
    assert_eq!(call["status"]["phase"], "Ringing");
    assert_eq!(call["status"]["runtimePod"], "support-runtime-0");
    assert!(call["status"]["startedAt"].is_string());
    let text = call.to_string();
    assert!(
        !text.contains("5551230142") && !text.contains("5559870000"),
        "{text}"
    );

    // Replays: the same TwiML, no second session, no second Call.
    for _ in 0..2 {
        let replay = gateway.voice(&sid).await;
        assert_eq!(replay.status(), 200);
        assert_eq!(replay.text().await.expect("body"), twiml);
    }
    assert_eq!(runtime.sessions().len(), 1);
    assert_eq!(calls(&fake).len(), 1);
    let creates = fake
        .writes()
        .iter()
        .filter(|w| w.verb == Verb::Create && w.plural == "calls")
        .count();
    assert_eq!(creates, 1);
    let exporter = gateway.state.exporter();
    assert_eq!(exporter.requests(Route::TwilioVoice, Outcome::Ok), 1);
    assert_eq!(exporter.requests(Route::TwilioVoice, Outcome::Replay), 2);
}

#[tokio::test]
async fn concurrent_replays_share_one_answer() {
    let runtime = Runtime::start(Sessions::Slow(Duration::from_millis(150))).await;
    let (fake, recorder) = kube().await;
    let gateway = Gateway::start(options(&runtime), recorder, |_| {}).await;
    let sid = call_sid(2);
    let (a, b, c) = tokio::join!(
        gateway.voice(&sid),
        gateway.voice(&sid),
        gateway.voice(&sid)
    );
    let bodies = [
        a.text().await.expect("a"),
        b.text().await.expect("b"),
        c.text().await.expect("c"),
    ];
    assert!(
        bodies
            .iter()
            .all(|t| t == &bodies[0] && t.contains("<Stream"))
    );
    assert_eq!(runtime.sessions().len(), 1);
    call_with_phase(&fake, &sid).await;
    assert_eq!(calls(&fake).len(), 1);
}

#[tokio::test]
async fn unsigned_or_badly_signed_webhooks_create_nothing() {
    let runtime = Runtime::start(Sessions::Accept).await;
    let (fake, recorder) = kube().await;
    let gateway = Gateway::start(options(&runtime), recorder, |_| {}).await;
    let sid = call_sid(3);
    let params = voice_params(&sid);

    // No header; the wrong token; a different URL.
    let missing = gateway.post_form("/twilio/voice", &params, None).await;
    let wrong = gateway
        .post_form("/twilio/voice", &params, Some("not-the-token"))
        .await;
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let other_url = gateway
        .http
        .post(gateway.url("/twilio/voice"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "x-twilio-signature",
            signature::compute(AUTH_TOKEN, &gateway.url("/twilio/status"), &owned),
        )
        .body(encode_form(&owned))
        .send()
        .await
        .expect("send");
    // A parameter changed after signing.
    let tampered = gateway
        .http
        .post(gateway.url("/twilio/voice"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "x-twilio-signature",
            signature::compute(AUTH_TOKEN, &gateway.url("/twilio/voice"), &owned),
        )
        .body(encode_form(&owned).replace("%2B15551230142", "%2B15550000000"))
        .send()
        .await
        .expect("send");
    for response in [missing, wrong, other_url, tampered] {
        assert_eq!(response.status(), 403);
        let body: serde_json::Value = response.json().await.expect("json error");
        assert_eq!(body["error"]["code"], "unauthenticated");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(runtime.sessions().is_empty());
    assert!(calls(&fake).is_empty());
    assert!(fake.writes().is_empty(), "{:?}", fake.writes());
    assert_eq!(
        gateway
            .state
            .exporter()
            .requests(Route::TwilioVoice, Outcome::Unauthorized),
        4
    );
}

#[tokio::test]
async fn malformed_forms_are_400_and_wrong_types_415() {
    let runtime = Runtime::start(Sessions::Accept).await;
    let (fake, recorder) = kube().await;
    let gateway = Gateway::start(options(&runtime), recorder, |_| {}).await;
    for body in ["CallSid=CA1&To=%zz", "CallSid", "a=1&&b=2", "From=%FF%FE"] {
        let response = gateway
            .http
            .post(gateway.url("/twilio/voice"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", "c29tZXRoaW5n")
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 400, "{body}");
        let error: serde_json::Value = response.json().await.expect("json");
        assert_eq!(error["error"]["code"], "invalidArgument");
    }
    // Signed, but without a usable CallSid.
    let no_sid = gateway
        .post_form("/twilio/voice", &[("To", AGENT_NUMBER)], Some(AUTH_TOKEN))
        .await;
    assert_eq!(no_sid.status(), 400);
    let bad_sid = gateway
        .post_form("/twilio/voice", &[("CallSid", "CA/../x")], Some(AUTH_TOKEN))
        .await;
    assert_eq!(bad_sid.status(), 400);
    let json = gateway
        .http
        .post(gateway.url("/twilio/voice"))
        .header("content-type", "application/json")
        .header("x-twilio-signature", "c29tZXRoaW5n")
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(json.status(), 415);
    let huge = gateway
        .http
        .post(gateway.url("/twilio/voice"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", "c29tZXRoaW5n")
        .body(format!("CallSid={}", "A".repeat(100 * 1024)))
        .send()
        .await
        .expect("send");
    assert_eq!(huge.status(), 413);
    assert!(runtime.sessions().is_empty());
    assert!(fake.writes().is_empty());
}

#[tokio::test]
async fn calls_to_unbound_numbers_are_rejected() {
    let runtime = Runtime::start(Sessions::Accept).await;
    let (fake, recorder) = kube().await;
    let gateway = Gateway::start(options(&runtime), recorder, |_| {}).await;
    let sid = call_sid(4);
    let mut params = voice_params(&sid);
    for p in &mut params {
        if p.0 == "To" {
            p.1 = "+15550001111";
        }
    }
    let response = gateway
        .post_form("/twilio/voice", &params, Some(AUTH_TOKEN))
        .await;
    assert_eq!(response.status(), 200);
    let twiml = response.text().await.expect("body");
    assert!(twiml.ends_with("<Response><Reject/></Response>"), "{twiml}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(runtime.sessions().is_empty());
    assert!(fake.writes().is_empty());
}

#[tokio::test]
async fn no_runtime_capacity_apologises_and_fails_the_call() {
    let runtime = Runtime::start(Sessions::Unavailable).await;
    let (fake, recorder) = kube().await;
    let gateway = Gateway::start(options(&runtime), recorder, |_| {}).await;
    let sid = call_sid(5);
    let response = gateway.voice(&sid).await;
    assert_eq!(response.status(), 200);
    let twiml = response.text().await.expect("body");
    assert!(
        twiml.contains("<Say>We&apos;re sorry, all of our agents are busy"),
        "{twiml}"
    );
    assert!(twiml.ends_with("<Hangup/></Response>"), "{twiml}");
    assert_eq!(runtime.sessions().len(), 2, "one attempt and one retry");
    let call = call_with_phase(&fake, &sid).await;
    assert_eq!(call["status"]["phase"], "Failed");
    assert_eq!(call["status"]["endReason"], "noCapacity");
    assert!(call["status"]["endedAt"].is_string());
    // A replay apologises again without asking the runtime.
    let replay = gateway.voice(&sid).await.text().await.expect("body");
    assert_eq!(replay, twiml);
    assert_eq!(runtime.sessions().len(), 2);
    assert_eq!(
        gateway
            .state
            .exporter()
            .requests(Route::TwilioVoice, Outcome::NoCapacity),
        1
    );
}

#[tokio::test]
async fn a_slow_runtime_does_not_hold_the_answer() {
    let runtime = Runtime::start(Sessions::Slow(Duration::from_secs(30))).await;
    let gateway = Gateway::start(options(&runtime), Arc::new(NoCluster::default()), |c| {
        c.session_timeout = Duration::from_millis(200);
    })
    .await;
    let started = Instant::now();
    let twiml = gateway
        .voice(&call_sid(6))
        .await
        .text()
        .await
        .expect("body");
    // Two attempts of 200 ms, far from the runtime's 30 s.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        twiml.contains("<Say>") && twiml.contains("<Hangup/>"),
        "{twiml}"
    );
    assert_eq!(runtime.sessions().len(), 2);
}

/// A recorder whose writes take forever.
#[derive(Debug)]
struct Stuck;

impl CallRecorder for Stuck {
    fn create<'a>(&'a self, _: &'a NewCall) -> BoxFuture<'a, Result<Created, RecordError>> {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(Created::NotRecorded)
        })
    }

    fn set_status<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: serde_json::Value,
    ) -> BoxFuture<'a, Result<(), RecordError>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn call_recording_never_delays_the_answer() {
    let runtime = Runtime::start(Sessions::Accept).await;
    let gateway = Gateway::start(options(&runtime), Arc::new(Stuck), |c| {
        c.request_timeout = Duration::from_secs(5);
    })
    .await;
    let response = gateway.voice(&call_sid(7)).await;
    assert_eq!(response.status(), 200);
    assert!(response.text().await.expect("body").contains("<Stream"));
}

#[tokio::test]
async fn a_failing_kubernetes_api_still_answers() {
    let runtime = Runtime::start(Sessions::Accept).await;
    let (fake, recorder) = kube().await;
    fake.fail_next(
        FailMatcher::on(Verb::Create, "calls"),
        500,
        "InternalError",
        1,
    );
    let gateway = Gateway::start(options(&runtime), recorder, |_| {}).await;
    let response = gateway.voice(&call_sid(8)).await;
    assert_eq!(response.status(), 200);
    assert!(response.text().await.expect("body").contains("<Stream"));
    eventually(|| {
        (gateway
            .state
            .exporter()
            .render()
            .contains("voice_agent_gateway_calls_recorded_total{result=\"error\"} 1"))
        .then_some(())
    })
    .await;
    assert!(calls(&fake).is_empty());
}

#[tokio::test]
async fn a_call_created_elsewhere_is_left_alone() {
    let runtime = Runtime::start(Sessions::Accept).await;
    let (fake, recorder) = kube().await;
    let sid = call_sid(9);
    // Another replica created it (and the runtime moved it on).
    let existing = NewCall::new(&sid, AGENT, CALLER, AGENT_NUMBER);
    recorder.create(&existing).await.expect("create");
    fake.reset_writes();
    let gateway = Gateway::start(options(&runtime), recorder, |_| {}).await;
    assert_eq!(gateway.voice(&sid).await.status(), 200);
    eventually(|| (!fake.writes().is_empty()).then_some(())).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let writes = fake.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].code, 409);
    assert_eq!(calls(&fake).len(), 1);
}

#[tokio::test]
async fn terminal_status_callbacks_end_the_session() {
    let runtime = Runtime::start(Sessions::Accept).await;
    let gateway = Gateway::start(options(&runtime), Arc::new(NoCluster::default()), |_| {}).await;
    let sid = call_sid(10);
    assert_eq!(gateway.voice(&sid).await.status(), 200);

    // Not terminal: nothing.
    let ringing = gateway
        .post_form(
            "/twilio/status",
            &[("CallSid", &sid), ("CallStatus", "in-progress")],
            Some(AUTH_TOKEN),
        )
        .await;
    assert_eq!(ringing.status(), 204);
    // Badly signed: refused, nothing.
    let forged = gateway
        .post_form(
            "/twilio/status",
            &[("CallSid", &sid), ("CallStatus", "completed")],
            Some("forged"),
        )
        .await;
    assert_eq!(forged.status(), 403);
    // Unknown call: 204, nothing.
    let unknown = gateway
        .post_form(
            "/twilio/status",
            &[("CallSid", &call_sid(99)), ("CallStatus", "completed")],
            Some(AUTH_TOKEN),
        )
        .await;
    assert_eq!(unknown.status(), 204);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(runtime.deletes().is_empty());

    let completed = gateway
        .post_form(
            "/twilio/status",
            &[
                ("CallSid", &sid),
                ("CallStatus", "completed"),
                ("CallDuration", "42"),
            ],
            Some(AUTH_TOKEN),
        )
        .await;
    assert_eq!(completed.status(), 204);
    assert!(completed.text().await.expect("body").is_empty());
    assert_eq!(runtime.wait_deletes(1).await, ["s-1"]);
}

#[tokio::test]
async fn probes_and_metrics() {
    let runtime = Runtime::start(Sessions::Accept).await;
    let gateway = Gateway::start(options(&runtime), Arc::new(NoCluster::default()), |_| {}).await;
    gateway.voice(&call_sid(11)).await;
    let get = |path: &'static str| gateway.http.get(gateway.url(path)).send();
    assert_eq!(get("/healthz").await.expect("healthz").status(), 200);
    assert_eq!(get("/readyz").await.expect("readyz").status(), 200);
    let metrics = get("/metrics")
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for needle in [
        "voice_agent_gateway_requests_total{result=\"ok\",route=\"twilio_voice\"} 1",
        "voice_agent_gateway_webhook_seconds_count{result=\"ok\"} 1",
        "voice_agent_gateway_runtime_sessions_total{result=\"opened\"} 1",
        "voice_agent_gateway_media_proxies 0",
        "voice_agent_gateway_media_frames_total{direction=\"inbound\"} 0",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }
    assert!(!metrics.contains(AUTH_TOKEN));
    gateway.state.set_ready(false);
    assert_eq!(get("/readyz").await.expect("readyz").status(), 503);
}

#[tokio::test]
async fn when_the_runtime_writes_first_the_gateway_keeps_its_phase_and_adds_started_at() {
    let (fake, recorder) = kube().await;
    let exporter = Arc::new(voice_agent_gateway::Exporter::new().expect("exporter"));
    let call = NewCall::new(&call_sid(31), AGENT, CALLER, AGENT_NUMBER);
    let name = call_sid(31).to_ascii_lowercase();
    let (outcome_tx, outcome_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(voice_agent_gateway::calls::record(
        Arc::clone(&recorder),
        exporter,
        call,
        outcome_rx,
    ));
    eventually(|| fake.get("calls", Some(NAMESPACE), &name)).await;
    // The runtime's Active lands before the gateway's Ringing.
    fake.set_status(
        "calls",
        Some(NAMESPACE),
        &name,
        serde_json::json!({"phase": "Active", "answeredAt": "2026-01-01T00:00:01Z"}),
    )
    .expect("status");
    outcome_tx
        .send(voice_agent_gateway::calls::CallOutcome::Ringing {
            runtime_pod: "support-runtime-0".into(),
        })
        .expect("send");
    task.await.expect("record");
    let status = &fake.get("calls", Some(NAMESPACE), &name).expect("call")["status"];
    assert_eq!(status["phase"], "Active", "{status}");
    assert_eq!(status["answeredAt"], "2026-01-01T00:00:01Z");
    assert!(status["startedAt"].is_string(), "{status}");
    assert!(status.get("runtimePod").is_none(), "{status}");
}
