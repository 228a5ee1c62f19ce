//! The voice loop end to end over real HTTP and WebSockets: runtime + agent
//! (local LLM) + TTS (espeak-ng), Twilio's side played by the test.

mod support;

use std::time::Duration;

use support::{Caller, Heard, start};

const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// A call whose greeting has played and whose answer to a price question
/// has been playing for 300 ms (what was heard so far is drained).
async fn hearing_an_answer(
    stack: &support::Stack,
    call_sid: &str,
) -> (voice_agent_proto::CreateSessionResponse, Caller) {
    let (_, created) = stack.create_session(call_sid).await;
    let created = created.expect("session");
    let mut caller = Caller::connect(&created.media_url, call_sid).await;
    caller
        .listen_until_quiet(Duration::from_millis(400), CALL_TIMEOUT)
        .await;
    stack.say("How much does a basic tune up cost?");
    caller.speak(800).await;
    caller
        .next_media(CALL_TIMEOUT)
        .await
        .expect("answer starts");
    tokio::time::sleep(Duration::from_millis(300)).await;
    caller.take_heard();
    (created, caller)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeting_question_answer_with_citations_and_latency() {
    let stack = start(4, &[]).await;
    let (status, created) = stack.create_session("CAconversation").await;
    assert_eq!(status, 201);
    let created = created.expect("session");
    assert!(
        created
            .media_url
            .ends_with(&format!("/api/sessions/{}/media", created.session_id))
    );
    assert_eq!(created.pod, "front-desk-runtime-0");
    // Twilio retries webhooks: the same CallSid gets the same session.
    let (status, again) = stack.create_session("CAconversation").await;
    assert_eq!(status, 200);
    assert_eq!(again.expect("replay").session_id, created.session_id);

    let mut caller = Caller::connect(&created.media_url, "CAconversation").await;
    // The greeting plays on connect.
    let greeting = caller
        .listen_until_quiet(Duration::from_millis(400), CALL_TIMEOUT)
        .await;
    assert!(greeting > 25, "greeting was {greeting} frames");

    stack.say("What time do you open on Saturday?");
    caller.speak(800).await;
    let first = caller.next_media(CALL_TIMEOUT).await;
    assert!(first.is_some(), "no answer audio");
    let answer = caller
        .listen_until_quiet(Duration::from_millis(400), CALL_TIMEOUT)
        .await;
    assert!(answer > 25, "answer was {answer} frames");

    let detail = stack.session(&created.session_id).await;
    assert_eq!(detail["state"], "active");
    assert_eq!(detail["turns"], 1);
    let transcript = detail["transcript"].as_array().expect("transcript");
    assert_eq!(transcript[0]["agent"], "Thanks for calling Harbor Bikes.");
    let turn = &transcript[1];
    assert_eq!(turn["caller"], "What time do you open on Saturday?");
    let reply = turn["agent"].as_str().expect("agent text");
    assert!(reply.contains("10"), "reply {reply:?}");
    assert_eq!(turn["citations"][0]["documentId"], "hours");
    for stage in ["eouMs", "agentTtftMs", "agentTotalMs", "ttsTtfbMs", "e2eMs"] {
        let ms = turn["latency"][stage].as_f64();
        assert!(
            ms.is_some_and(|ms| ms >= 0.0),
            "{stage}: {:?}",
            turn["latency"]
        );
    }

    caller.hang_up();
    wait_for(|| async { stack.session(&created.session_id).await["state"] == "ended" }).await;
    let detail = stack.session(&created.session_id).await;
    assert_eq!(detail["endReason"], "callerHangup");
    assert_eq!(stack.state.registry.active(), 0);
    let metrics = reqwest::get(format!("{}/metrics", stack.runtime_url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("voice_agent_runtime_turns_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("voice_agent_e2e_seconds_count 1"));
    assert!(metrics.contains("voice_agent_runtime_calls_ended_total{reason=\"callerHangup\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_clears_playback_and_the_next_turn_is_answered() {
    let stack = start(4, &[]).await;
    let (created, mut caller) = hearing_an_answer(&stack, "CAbargein").await;

    // The caller talks over the agent.
    stack.say("And a flat tire?");
    caller.speak(700).await;
    let heard = caller.take_heard();
    let clear_at = heard
        .iter()
        .find_map(|h| match h {
            Heard::Clear(at) => Some(*at),
            _ => None,
        })
        .expect("a clear after the barge-in");
    let onset = caller.speech_onset().expect("speech was sent");
    let reaction = clear_at
        .checked_duration_since(onset)
        .expect("the clear came after the speech onset");
    eprintln!("clear {reaction:?} after the speech onset frame");
    // The barge-in needs the VAD's onset (60 ms of voiced frames) plus the
    // minimum barge-in speech (250 ms); the clear must follow within 100 ms.
    assert!(
        reaction < Duration::from_millis(60 + 250 + 100),
        "clear came {reaction:?} after the speech onset frame"
    );
    // After the clear, the old reply's audio stops: at most the frames that
    // were already queued for the socket follow it.
    let after_clear = heard
        .iter()
        .filter(|h| matches!(h, Heard::Media(at) if *at > clear_at + Duration::from_millis(60)))
        .count();
    assert!(after_clear <= 10, "{after_clear} frames after clear");

    // The interrupting question is answered.
    caller
        .next_media(CALL_TIMEOUT)
        .await
        .expect("second answer");
    caller
        .listen_until_quiet(Duration::from_millis(400), CALL_TIMEOUT)
        .await;
    let detail = stack.session(&created.session_id).await;
    assert_eq!(detail["interruptions"], 1);
    assert_eq!(detail["turns"], 2);
    let transcript = detail["transcript"].as_array().expect("transcript");
    assert_eq!(transcript[1]["interrupted"], true);
    assert_eq!(transcript[2]["caller"], "And a flat tire?");
    assert!(
        transcript[2]["agent"]
            .as_str()
            .expect("text")
            .contains("15"),
        "{transcript:?}"
    );
    caller.hang_up();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_shortest_minimum_the_clear_follows_the_speech_onset_frame_within_100_ms() {
    let stack = start(4, &[("VOICE_AGENT_RUNTIME_MIN_BARGE_IN_MS", "20")]).await;
    let (created, mut caller) = hearing_an_answer(&stack, "CAquickbarge").await;

    stack.say("And a flat tire?");
    caller.speak(400).await;
    let onset = caller.speech_onset().expect("speech was sent");
    let clear_at = caller
        .take_heard()
        .iter()
        .find_map(|h| match h {
            Heard::Clear(at) => Some(*at),
            _ => None,
        })
        .expect("a clear after the barge-in");
    let reaction = clear_at
        .checked_duration_since(onset)
        .expect("the clear came after the speech onset");
    eprintln!("clear {reaction:?} after the speech onset frame");
    assert!(
        reaction < Duration::from_millis(100),
        "clear came {reaction:?} after the speech onset frame"
    );
    let detail = stack.session(&created.session_id).await;
    assert_eq!(detail["interruptions"], 1);
    caller.hang_up();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cough_does_not_interrupt_and_a_backchannel_resumes_the_reply() {
    let stack = start(4, &[]).await;
    let (_, created) = stack.create_session("CAcough").await;
    let created = created.expect("session");
    let mut caller = Caller::connect(&created.media_url, "CAcough").await;
    caller
        .listen_until_quiet(Duration::from_millis(400), CALL_TIMEOUT)
        .await;
    stack.say("What time do you open on Saturday?");
    caller.speak(800).await;
    caller
        .next_media(CALL_TIMEOUT)
        .await
        .expect("answer starts");
    caller.take_heard();

    // A cough: shorter than the minimum barge-in speech.
    stack.say("");
    caller.speak(120).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !caller
            .take_heard()
            .iter()
            .any(|h| matches!(h, Heard::Clear(_))),
        "a cough cleared the playback"
    );

    // "uh-huh": long enough to barge in, but only a backchannel → resume.
    stack.say("uh-huh");
    caller.speak(400).await;
    // The barge-in clears playback...
    let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, caller.heard.recv()).await {
            Ok(Some(Heard::Clear(_))) => break,
            Ok(Some(_)) => {}
            _ => panic!("no clear after the backchannel"),
        }
    }
    // ...then, no real words having come, the reply resumes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    caller.take_heard();
    caller
        .next_media(CALL_TIMEOUT)
        .await
        .expect("the reply resumes");
    caller
        .listen_until_quiet(Duration::from_millis(400), CALL_TIMEOUT)
        .await;
    let detail = stack.session(&created.session_id).await;
    assert_eq!(detail["falseInterruptions"], 1, "{detail}");
    assert_eq!(detail["turns"], 1, "a backchannel is not a turn: {detail}");
    caller.hang_up();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_reaches_the_agent_as_text() {
    let stack = start(4, &[]).await;
    let (_, created) = stack.create_session("CAdtmf").await;
    let created = created.expect("session");
    let mut caller = Caller::connect(&created.media_url, "CAdtmf").await;
    caller
        .listen_until_quiet(Duration::from_millis(400), CALL_TIMEOUT)
        .await;
    for d in ["1", "2", "#"] {
        caller.dtmf(d);
    }
    caller
        .next_media(CALL_TIMEOUT)
        .await
        .expect("a reply to the keys");
    caller
        .listen_until_quiet(Duration::from_millis(400), CALL_TIMEOUT)
        .await;
    let detail = stack.session(&created.session_id).await;
    assert_eq!(
        detail["transcript"][1]["caller"],
        "(the caller pressed 12#)"
    );
    caller.hang_up();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goodbye_plays_the_goodbye_and_hangs_up() {
    let stack = start(4, &[]).await;
    let (_, created) = stack.create_session("CAbye").await;
    let created = created.expect("session");
    let mut caller = Caller::connect(&created.media_url, "CAbye").await;
    caller
        .listen_until_quiet(Duration::from_millis(400), CALL_TIMEOUT)
        .await;
    stack.say("Thanks, goodbye");
    caller.speak(600).await;
    caller
        .next_media(CALL_TIMEOUT)
        .await
        .expect("goodbye audio");
    // The runtime closes the stream after the goodbye.
    let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, caller.heard.recv()).await {
            Ok(Some(Heard::Closed(_))) | Ok(None) => break,
            Ok(Some(_)) => {}
            Err(_) => panic!("the runtime did not hang up"),
        }
    }
    let detail = stack.session(&created.session_id).await;
    assert_eq!(detail["endReason"], "agentHangup");
    assert_eq!(
        detail["transcript"][1]["agent"],
        "Thanks for calling Acme Bikes. Goodbye!"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_media_ends_the_call_cleanly() {
    let stack = start(4, &[]).await;
    let (_, created) = stack.create_session("CAgarbage").await;
    let created = created.expect("session");
    let mut caller = Caller::connect(&created.media_url, "CAgarbage").await;
    caller.send_raw("{\"event\":\"media\",\"media\":{\"payload\":\"***\"},\"streamSid\":\"MZ\"}");
    let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, caller.heard.recv()).await {
            Ok(Some(Heard::Closed(_))) | Ok(None) => break,
            Ok(Some(_)) => {}
            Err(_) => panic!("the runtime kept a broken stream open"),
        }
    }
    let detail = stack.session(&created.session_id).await;
    assert_eq!(detail["endReason"], "transportError");
    // A second media connection for the same session is refused.
    assert!(
        tokio_tungstenite::connect_async(created.media_url.as_str())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_drain_and_delete_over_http() {
    let stack = start(1, &[]).await;
    let http = reqwest::Client::new();
    let (status, first) = stack.create_session("CA1").await;
    assert_eq!(status, 201);
    let first = first.expect("first");
    let (status, _) = stack.create_session("CA2").await;
    assert_eq!(status, 503, "full");
    let load: serde_json::Value = http
        .get(format!("{}/api/load", stack.runtime_url))
        .send()
        .await
        .expect("load")
        .json()
        .await
        .expect("json");
    assert_eq!(
        load,
        serde_json::json!({"activeSessions": 1, "capacity": 1, "draining": false})
    );

    // Drain: not ready, no new sessions; the live one continues.
    let resp = http
        .post(format!("{}/admin/drain", stack.runtime_url))
        .send()
        .await
        .expect("drain");
    assert_eq!(resp.status(), 202);
    let ready = http
        .get(format!("{}/readyz", stack.runtime_url))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    let resp = http
        .delete(format!(
            "{}/api/sessions/{}",
            stack.runtime_url, first.session_id
        ))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 204);
    let (status, _) = stack.create_session("CA3").await;
    assert_eq!(status, 503, "draining");
    // Undrain: sessions again.
    http.delete(format!("{}/admin/drain", stack.runtime_url))
        .send()
        .await
        .expect("undrain");
    let (status, _) = stack.create_session("CA3").await;
    assert_eq!(status, 201);

    // Malformed requests change nothing.
    for (body, ct) in [
        ("{", "application/json"),
        ("{\"callSid\":\"CA9\"}", "application/json"),
        (
            "{\"callSid\":\"CA9\",\"voiceAgent\":\"other\",\"from\":\"+1\",\"to\":\"+2\",\"transport\":\"mediaStreams\"}",
            "application/json",
        ),
        ("callSid=CA9", "application/x-www-form-urlencoded"),
    ] {
        let resp = http
            .post(format!("{}/api/sessions", stack.runtime_url))
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .expect("post");
        assert!(resp.status().is_client_error(), "{body}: {}", resp.status());
        let err: serde_json::Value = resp.json().await.expect("error body");
        assert!(err["error"]["message"].is_string());
    }
    let missing = http
        .get(format!("{}/api/sessions/nope", stack.runtime_url))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
    assert_eq!(stack.state.registry.active(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_waits_for_live_calls_and_reports_what_it_cut() {
    let stack = start(4, &[]).await;
    let (_, a) = stack.create_session("CAdrainA").await;
    let a = a.expect("a");
    let caller = Caller::connect(&a.media_url, "CAdrainA").await;
    let state = std::sync::Arc::clone(&stack.state);
    // The call ends 300 ms into the drain: nothing is cut.
    let hang_up = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        caller.hang_up();
    });
    let cut = state.drain().await;
    hang_up.await.expect("hang up");
    assert_eq!(cut, 0);
    assert!(state.registry.is_draining());
}

async fn wait_for<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not reached within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_join_requests_are_checked_before_anything_happens() {
    let stack = start(2, &[]).await;
    let http = reqwest::Client::new();
    let (_, created) = stack.create_session("CAjoin").await;
    let created = created.expect("session");
    let join = |id: &str, content_type: &'static str, body: &str| {
        http.post(format!("{}/api/sessions/{id}/livekit", stack.runtime_url))
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
    };
    let id = created.session_id.as_str();
    let room = r#"{"room": "front-desk-_+15551230142_Xa8k"}"#;
    for (session, content_type, body, status) in [
        (id, "text/plain", room, 415),
        (id, "application/json", "{", 400),
        (id, "application/json", r#"{"room": ""}"#, 400),
        (id, "application/json", r#"{"room": "a\nb"}"#, 400),
        (id, "application/json", r#"{"room": "r", "extra": 1}"#, 400),
        ("no-such-session", "application/json", room, 404),
        // A Media Streams session has no room to join.
        (id, "application/json", room, 409),
    ] {
        let resp = join(session, content_type, body).await.expect("send");
        assert_eq!(resp.status(), status, "{session} {body}");
        let error: serde_json::Value = resp.json().await.expect("json");
        assert!(error["error"]["message"].is_string(), "{error}");
    }
    // Nothing changed: the session still waits for its media.
    let detail = stack.session(id).await;
    assert_eq!(detail["state"], "connecting");
}
