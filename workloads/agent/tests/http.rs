//! The HTTP API end to end over loopback, on the in-memory store.

mod support;

use serde_json::json;
use support::{Server, client, config, json_of, memory_state, parse_sse, post_json, read_body};
use voice_agent_agent::llm::local::{DONT_KNOW, HELLO};
use voice_agent_agent::testing::FAQ_MARKDOWN;
use voice_agent_proto::agent::{CitationsEvent, DeltaEvent, DoneEvent};
use voice_agent_proto::{DocumentInfo, DocumentList, ErrorBody, RespondResponse};

async fn server() -> Server {
    Server::start(memory_state(config()).await).await
}

async fn post_faq(s: &Server) -> DocumentInfo {
    let resp = post_json(
        &s.url("/v1/documents"),
        &json!({"id": "faq", "title": "Acme Bikes FAQ", "content": FAQ_MARKDOWN, "voiceAgent": "support"}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 201);
    json_of(resp).await
}

async fn ask(s: &Server, session: &str, utterance: &str) -> RespondResponse {
    let resp = post_json(
        &s.url("/v1/respond"),
        &json!({"sessionId": session, "voiceAgent": "support", "utterance": utterance}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 200);
    json_of(resp).await
}

async fn expect_error(resp: reqwest::Response, status: u16, code: &str) -> ErrorBody {
    assert_eq!(resp.status().as_u16(), status);
    let body: ErrorBody = json_of(resp).await;
    assert_eq!(body.error.code, code, "{body:?}");
    body
}

#[tokio::test]
async fn documents_lifecycle() {
    let s = server().await;
    let info = post_faq(&s).await;
    assert_eq!(info.id, "faq");
    assert_eq!(info.chunks, 4);
    assert_eq!(info.bytes, FAQ_MARKDOWN.len() as u64);
    assert_eq!(info.voice_agent, "support");

    // Without an id, one is generated.
    let resp = post_json(
        &s.url("/v1/documents"),
        &json!({"title": "Notes", "format": "text", "content": "We sell gift cards in the shop.", "voiceAgent": "support"}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 201);
    let notes: DocumentInfo = json_of(resp).await;
    assert!(notes.id.starts_with("doc-"), "{}", notes.id);

    let list: DocumentList = json_of(
        client()
            .get(s.url("/v1/documents?voiceAgent=support"))
            .send()
            .await
            .expect("get"),
    )
    .await;
    let mut ids: Vec<&str> = list.documents.iter().map(|d| d.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, [notes.id.as_str(), "faq"]);

    // Re-posting an id replaces the document.
    let resp = post_json(
        &s.url("/v1/documents"),
        &json!({"id": "faq", "title": "FAQ v2", "content": "# Hours\n\nOpen every day.", "voiceAgent": "support"}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 201);
    assert_eq!(s.state.parts().vectors.name(), "embedded");

    let resp = client()
        .delete(s.url("/v1/documents/faq"))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 204);
    let resp = client()
        .delete(s.url("/v1/documents/faq"))
        .send()
        .await
        .expect("delete");
    expect_error(resp, 404, "notFound").await;
    let list: DocumentList = json_of(
        client()
            .get(s.url("/v1/documents"))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(list.documents.len(), 1);
    s.shutdown().await;
}

#[tokio::test]
async fn malformed_documents_are_refused_and_nothing_is_stored() {
    let s = server().await;
    let url = s.url("/v1/documents");
    let cases = [
        (
            json!({"title": "x", "content": "   \n", "voiceAgent": "support"}),
            400,
            "invalidArgument",
        ),
        (
            json!({"title": "x", "content": "# Only\n## Headings\n", "voiceAgent": "support"}),
            400,
            "invalidArgument",
        ),
        (
            json!({"title": "x", "format": "pdf", "content": "x", "voiceAgent": "support"}),
            400,
            "invalidArgument",
        ),
        (
            json!({"title": "", "content": "text", "voiceAgent": "support"}),
            400,
            "invalidArgument",
        ),
        (
            json!({"id": "../etc", "title": "x", "content": "text", "voiceAgent": "support"}),
            400,
            "invalidArgument",
        ),
        (
            json!({"title": "x", "content": "nul \u{0000} byte", "voiceAgent": "support"}),
            400,
            "invalidArgument",
        ),
        (
            json!({"title": "x", "content": "a".repeat(1024 * 1024 + 1), "voiceAgent": "support"}),
            413,
            "payloadTooLarge",
        ),
        (
            json!({"title": "x", "content": "text", "voiceAgent": "other"}),
            404,
            "notFound",
        ),
        (json!({"title": "x"}), 400, "invalidArgument"),
    ];
    for (body, status, code) in cases {
        let resp = post_json(&url, &body, &[]).await;
        expect_error(resp, status, code).await;
    }
    // Not JSON at all, and a wrong content type.
    let resp = client()
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("post");
    expect_error(resp, 400, "invalidArgument").await;
    let resp = client()
        .post(&url)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .expect("post");
    expect_error(resp, 415, "unsupportedMediaType").await;
    // A body over the request limit.
    let resp = client()
        .post(&url)
        .header("content-type", "application/json")
        .body(vec![b' '; 5 * 1024 * 1024])
        .send()
        .await
        .expect("post");
    expect_error(resp, 413, "payloadTooLarge").await;

    let list: DocumentList = json_of(
        client()
            .get(s.url("/v1/documents"))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert!(list.documents.is_empty());
    assert_eq!(
        s.state
            .parts()
            .store
            .load_chunks()
            .await
            .expect("chunks")
            .len(),
        0
    );
    s.shutdown().await;
}

#[tokio::test]
async fn respond_is_grounded_and_cited() {
    let s = server().await;
    post_faq(&s).await;
    let r = ask(&s, "call-1", "When are you open on Saturdays?").await;
    assert_eq!(r.reply, "On Saturdays we open from 10 am to 4 pm.");
    assert_eq!(r.citations.len(), 1);
    let c = &r.citations[0];
    assert_eq!(c.document_id, "faq");
    assert_eq!(c.chunk_id, "faq#0");
    assert_eq!(c.title, "Acme Bikes FAQ");
    assert!(c.score > 0.12, "{}", c.score);
    assert!(c.snippet.contains("Saturdays"), "{}", c.snippet);
    assert!(r.latency.total_ms >= r.latency.retrieval_ms);

    let r = ask(&s, "call-1", "How much does a tune-up cost?").await;
    assert!(r.reply.contains("49 dollars"), "{}", r.reply);
    assert_eq!(r.citations[0].chunk_id, "faq#3");

    let r = ask(&s, "call-1", "Where is your shop?").await;
    assert!(r.reply.contains("12 Harbour Street"), "{}", r.reply);

    let r = ask(&s, "call-1", "Can I return an item I bought?").await;
    assert!(r.reply.contains("30 days"), "{}", r.reply);

    // Nothing relevant: an honest "I don't know", no citations.
    let r = ask(&s, "call-1", "Do you have a vegan restaurant menu?").await;
    assert_eq!(r.reply, DONT_KNOW);
    assert!(r.citations.is_empty());

    let r = ask(&s, "call-1", "hello").await;
    assert_eq!(r.reply, HELLO);
    assert!(r.citations.is_empty());

    // Both sides of every turn are stored, in order.
    let turns = s.state.parts().store.turns("call-1").await.expect("turns");
    assert_eq!(turns.len(), 12);
    assert_eq!(turns[0].text, "When are you open on Saturdays?");
    assert_eq!(turns[1].text, "On Saturdays we open from 10 am to 4 pm.");
    assert_eq!(turns[1].citations.len(), 1);
    assert!(turns[1].latency.is_some());
    s.shutdown().await;
}

#[tokio::test]
async fn respond_bad_input() {
    let s = server().await;
    let url = s.url("/v1/respond");
    let long = "a ".repeat(1_001);
    let cases = [
        (
            json!({"sessionId": "s", "voiceAgent": "support", "utterance": ""}),
            400,
            "invalidArgument",
        ),
        (
            json!({"sessionId": "s", "voiceAgent": "support", "utterance": " \n\t "}),
            400,
            "invalidArgument",
        ),
        (
            json!({"sessionId": "s", "voiceAgent": "support", "utterance": long}),
            400,
            "invalidArgument",
        ),
        (
            json!({"sessionId": "", "voiceAgent": "support", "utterance": "hi"}),
            400,
            "invalidArgument",
        ),
        (
            json!({"sessionId": "s", "voiceAgent": "sales", "utterance": "hi"}),
            404,
            "notFound",
        ),
        (
            json!({"sessionId": "s", "voiceAgent": "support"}),
            400,
            "invalidArgument",
        ),
        (
            json!({"sessionId": "s", "voiceAgent": "support", "utterance": "hi", "history": [{"role": "robot", "text": "x"}]}),
            400,
            "invalidArgument",
        ),
    ];
    for (body, status, code) in cases {
        let resp = post_json(&url, &body, &[]).await;
        expect_error(resp, status, code).await;
        // The SSE variant refuses the same way, before any event.
        let resp = post_json(&url, &body, &[("accept", "text/event-stream")]).await;
        expect_error(resp, status, code).await;
    }
    assert!(
        s.state
            .parts()
            .store
            .turns("s")
            .await
            .expect("turns")
            .is_empty()
    );
    let resp = client()
        .get(s.url("/v1/nothing"))
        .send()
        .await
        .expect("get");
    expect_error(resp, 404, "notFound").await;
    let resp = client()
        .get(s.url("/v1/respond"))
        .send()
        .await
        .expect("get");
    expect_error(resp, 405, "methodNotAllowed").await;
    s.shutdown().await;
}

#[tokio::test]
async fn respond_streams_sse() {
    let s = server().await;
    post_faq(&s).await;
    let resp = post_json(
        &s.url("/v1/respond"),
        &json!({"sessionId": "call-2", "voiceAgent": "support", "utterance": "What are your opening hours?"}),
        &[("accept", "text/event-stream")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let events = parse_sse(&read_body(resp).await);
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["delta", "delta", "citations", "done"]);
    let deltas: String = events
        .iter()
        .filter(|e| e.event == "delta")
        .map(|e| {
            serde_json::from_str::<DeltaEvent>(&e.data)
                .expect("delta")
                .text
        })
        .collect();
    let cites: CitationsEvent = serde_json::from_str(&events[2].data).expect("citations");
    assert_eq!(cites.citations[0].chunk_id, "faq#0");
    let done: DoneEvent = serde_json::from_str(&events[3].data).expect("done");
    assert_eq!(done.reply, deltas);
    assert_eq!(
        done.reply,
        "We are open Monday to Friday from 9 am to 6 pm. On Saturdays we open from 10 am to 4 pm."
    );
    let turns = s.state.parts().store.turns("call-2").await.expect("turns");
    assert_eq!(turns.len(), 2);
    s.shutdown().await;
}

#[tokio::test]
async fn probes_and_metrics() {
    let s = server().await;
    post_faq(&s).await;
    ask(&s, "m", "Where is your shop?").await;
    let resp = post_json(
        &s.url("/v1/respond"),
        &json!({"sessionId": "m", "voiceAgent": "nobody", "utterance": "hi"}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 404);
    for path in ["/healthz", "/readyz"] {
        let resp = client().get(s.url(path)).send().await.expect("get");
        assert_eq!(resp.status(), 200, "{path}");
    }
    let text = client()
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    for needle in [
        "voice_agent_retrieval_seconds_count 1",
        "voice_agent_agent_ttft_seconds_count 1",
        "voice_agent_agent_total_seconds_count 1",
        "voice_agent_agent_requests_total{result=\"ok\",route=\"respond\"} 1",
        "voice_agent_agent_requests_total{result=\"not_found\",route=\"respond\"} 1",
        "voice_agent_agent_chunks 4",
        "voice_agent_agent_documents 1",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    s.shutdown().await;
}
