//! The agent on PostgreSQL: durable history and knowledge, the index
//! reloaded at start, and a database outage answered with 503.
//!
//! Each test creates its own database. Without `DATABASE_URL` the tests
//! print SKIPPED (and fail when `CI` is set).

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Proxy, Server, TestDb, client, config, database_url, host_port, json_of, post_json};
use voice_agent_agent::testing::FAQ_MARKDOWN;
use voice_agent_agent::{Config, Secret, State};
use voice_agent_proto::{DocumentList, ErrorBody, RespondResponse, Role};

fn pg_config(url: &str) -> Config {
    let mut c = config();
    c.database_url = Some(Secret::new(url));
    c.db_timeout = Duration::from_millis(1_500);
    c
}

#[tokio::test]
async fn knowledge_and_history_survive_a_restart() {
    let Some(admin) = database_url("knowledge_and_history_survive_a_restart") else {
        return;
    };
    let db = TestDb::create(&admin).await;
    let s = Server::start(State::new(pg_config(&db.url)).await.expect("state")).await;
    assert_eq!(s.state.parts().store.kind(), "postgres");
    let resp = post_json(
        &s.url("/v1/documents"),
        &json!({"id": "faq", "title": "Acme Bikes FAQ", "content": FAQ_MARKDOWN, "voiceAgent": "support"}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 201);
    let resp = post_json(
        &s.url("/v1/respond"),
        &json!({"sessionId": "call-1", "voiceAgent": "support", "utterance": "Where is your shop?"}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let first: RespondResponse = json_of(resp).await;
    s.shutdown().await;

    // A new process on the same database: the index is rebuilt from the
    // chunks table and answers the same.
    let s = Server::start(State::new(pg_config(&db.url)).await.expect("state")).await;
    let list: DocumentList = json_of(
        client()
            .get(s.url("/v1/documents"))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(list.documents.len(), 1);
    assert_eq!(list.documents[0].chunks, 4);
    let resp = post_json(
        &s.url("/v1/respond"),
        &json!({"sessionId": "call-1", "voiceAgent": "support", "utterance": "Where is your shop?"}),
        &[("accept", "text/event-stream")],
    )
    .await;
    let body = support::read_body(resp).await;
    let events = support::parse_sse(&body);
    let done = events
        .iter()
        .find(|e| e.event == "done")
        .expect("done event");
    let done: voice_agent_proto::agent::DoneEvent = serde_json::from_str(&done.data).expect("done");
    assert_eq!(done.reply, first.reply);

    let turns = s.state.parts().store.turns("call-1").await.expect("turns");
    assert_eq!(turns.len(), 4);
    assert_eq!(turns[0].role, Role::Caller);
    assert_eq!(turns[1].role, Role::Agent);
    assert_eq!(turns[1].citations, first.citations);
    assert_eq!(turns[1].latency, Some(first.latency));

    // Deleting removes the chunks too (and from the index).
    let resp = client()
        .delete(s.url("/v1/documents/faq"))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 204);
    assert!(
        s.state
            .parts()
            .store
            .load_chunks()
            .await
            .expect("chunks")
            .is_empty()
    );
    let resp = post_json(
        &s.url("/v1/respond"),
        &json!({"sessionId": "call-1", "voiceAgent": "support", "utterance": "Where is your shop?"}),
        &[],
    )
    .await;
    let r: RespondResponse = json_of(resp).await;
    assert!(r.citations.is_empty());
    s.shutdown().await;
    db.drop_db().await;
}

#[tokio::test]
async fn inline_sources_are_ingested_once() {
    let Some(admin) = database_url("inline_sources_are_ingested_once") else {
        return;
    };
    let db = TestDb::create(&admin).await;
    let mut config = pg_config(&db.url);
    config.component.knowledge.sources = vec![
        serde_json::from_value(json!({
            "name": "faq", "inline": FAQ_MARKDOWN
        }))
        .expect("source"),
    ];
    let state = State::new(config.clone()).await.expect("state");
    let docs = state.list_documents().await.expect("list");
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].title, "Acme Bikes FAQ");
    let created = docs[0].created_at_ms;
    drop(state);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let state = State::new(config).await.expect("state");
    let docs = state.list_documents().await.expect("list");
    assert_eq!(
        docs[0].created_at_ms, created,
        "unchanged content is not re-ingested"
    );
    drop(state);
    db.drop_db().await;
}

#[tokio::test]
async fn database_outage_is_503_and_nothing_is_acknowledged() {
    let Some(admin) = database_url("database_outage_is_503_and_nothing_is_acknowledged") else {
        return;
    };
    let db = TestDb::create(&admin).await;
    let proxy = Proxy::start(host_port(&db.url), None).await;
    let s = Server::start(
        State::new(pg_config(&db.url_via(proxy.addr)))
            .await
            .expect("state"),
    )
    .await;
    let resp = post_json(
        &s.url("/v1/documents"),
        &json!({"id": "faq", "title": "Acme Bikes FAQ", "content": FAQ_MARKDOWN, "voiceAgent": "support"}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 201);

    // The database goes away.
    let addr = proxy.stop().await;
    for (accept, name) in [("application/json", "json"), ("text/event-stream", "sse")] {
        let resp = post_json(
            &s.url("/v1/respond"),
            &json!({"sessionId": "call-9", "voiceAgent": "support", "utterance": "Where is your shop?"}),
            &[("accept", accept)],
        )
        .await;
        assert_eq!(resp.status(), 503, "{name}");
        let body: ErrorBody = json_of(resp).await;
        assert_eq!(body.error.code, "unavailable");
        assert!(
            body.error.message.contains("database is unavailable"),
            "{}",
            body.error.message
        );
    }
    let resp = post_json(
        &s.url("/v1/documents"),
        &json!({"id": "other", "title": "Other", "content": "Some text.", "voiceAgent": "support"}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 503);
    let resp = client()
        .get(s.url("/v1/documents"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 503);
    let resp = client().get(s.url("/readyz")).send().await.expect("get");
    assert_eq!(resp.status(), 503);
    let resp = client().get(s.url("/healthz")).send().await.expect("get");
    assert_eq!(resp.status(), 200);

    // It comes back: the service recovers without a restart.
    let proxy = Proxy::start(host_port(&db.url), Some(addr)).await;
    let mut ready = false;
    for _ in 0..50 {
        let resp = client().get(s.url("/readyz")).send().await.expect("get");
        if resp.status() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "not ready after the database came back");
    let resp = post_json(
        &s.url("/v1/respond"),
        &json!({"sessionId": "call-9", "voiceAgent": "support", "utterance": "Where is your shop?"}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 200);
    // Only the acknowledged turn was stored; the refused ones left nothing.
    let turns = s.state.parts().store.turns("call-9").await.expect("turns");
    assert_eq!(turns.len(), 2);
    let docs = s.state.list_documents().await.expect("list");
    assert_eq!(docs.len(), 1);
    s.shutdown().await;
    proxy.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn unreachable_database_fails_start_clearly() {
    // A closed port: nothing listens there once the probe socket is gone.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let err = State::new(pg_config(&url)).await.expect_err("must fail");
    let text = err.to_string();
    assert!(text.contains("database"), "{text}");
    assert!(!text.contains("hunter2"));
}
