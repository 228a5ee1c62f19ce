//! A client that goes away mid-synthesis kills espeak-ng and frees its slot.
//! Alone in its test binary, so the child processes counted are its own.
#![allow(missing_docs)]

mod common;

use std::time::Duration;

use common::start;
use serde_json::json;
use voice_agent_tts::{Config, Outcome};

/// espeak-ng processes whose parent is this test process.
fn espeak_children() -> usize {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid ...
            let Some((head, tail)) = stat.rsplit_once(')') else {
                return false;
            };
            let ppid = tail.split_whitespace().nth(1);
            head.ends_with("(espeak-ng") && ppid == Some(me.as_str())
        })
        .count()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn dropping_the_response_kills_espeak_and_frees_the_slot() {
    let server = start(Config {
        max_text_chars: 200_000,
        max_body_bytes: 1 << 20,
        max_concurrent: 1,
        ..Config::default()
    })
    .await;
    // Over an hour of speech: espeak-ng is still running (blocked on its
    // full stdout pipe) long after the first chunk.
    let text = "This sentence is one of very many in a long text. ".repeat(3_000);
    let mut response = server.synth(json!({"text": text})).await;
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.expect("read").expect("a chunk");
    assert!(!first.is_empty());
    assert_eq!(espeak_children(), 1);
    assert_eq!(server.state.exporter().in_flight(), 1);

    drop(response);
    eventually("espeak-ng to be killed", || espeak_children() == 0).await;
    eventually("the slot to be freed", || {
        server.state.exporter().in_flight() == 0
    })
    .await;
    assert_eq!(server.state.exporter().requests(Outcome::Cancelled), 1);
    assert_eq!(server.state.cache_usage(), (0, 0));

    // The slot is usable again at once.
    let next = server.synth(json!({"text": "Next caller, please."})).await;
    assert_eq!(next.status(), 200);
    next.bytes().await.expect("body");
    assert_eq!(server.state.exporter().requests(Outcome::Ok), 1);
}
