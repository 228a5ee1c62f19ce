//! Call retention against the in-memory Kubernetes API: ended Calls go after
//! the VoiceAgent's `ttlSecondsAfterEnded` or beyond its `maxEndedCalls`
//! (oldest first), in batches; live Calls, other agents' Calls and Calls of
//! other namespaces stay; the loop works from its mirror and only deletes.

use std::time::Duration;

use kube::Client;
use serde_json::{Value, json};
use tokio::sync::watch;
use voice_agent_kube_fake::{FakeApi, Verb};
use voice_agent_operator::controller::retention::{RetentionGc, RetentionSettings};
use voice_agent_operator::metrics::Metrics;

const NS: &str = "voice";

async fn fake() -> (FakeApi, Client) {
    let fake = FakeApi::start().await;
    for crd in voice_agent_api::crds() {
        fake.register_crd(&crd);
    }
    let client = Client::try_from(kube::Config::new(fake.kube_config_url())).expect("client");
    (fake, client)
}

fn agent(fake: &FakeApi, ns: &str, name: &str, ttl: i64, max: i64) {
    fake.put_direct(&json!({
        "apiVersion": "voiceagent.io/v1alpha1", "kind": "VoiceAgent",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"persona": {"greeting": "Hi"},
                 "telephony": {"publicUrl": "https://x.example.com",
                               "twilio": {"authTokenSecretRef": {"name": "t", "key": "k"}}},
                 "callRetention": {"ttlSecondsAfterEnded": ttl, "maxEndedCalls": max}},
    }))
    .expect("agent");
}

/// A Call of `agent` in `phase`, ended `ended_s_ago` seconds ago.
fn call(fake: &FakeApi, ns: &str, agent: &str, name: &str, phase: &str, ended_s_ago: i64) {
    let ended = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(ended_s_ago);
    let mut status = json!({"phase": phase, "startedAt": "2025-01-01T10:00:00Z"});
    if phase == "Ended" || phase == "Failed" {
        status["endedAt"] = json!(ended.to_string());
    }
    fake.put_direct(&json!({
        "apiVersion": "voiceagent.io/v1alpha1", "kind": "Call",
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"voiceagent.io/voice-agent": agent}},
        "spec": {"callSid": name.to_uppercase(), "voiceAgentRef": {"name": agent},
                 "from": "+1555•••0142", "to": "+1555•••0100"},
        "status": status,
    }))
    .expect("call");
}

fn names(fake: &FakeApi, ns: &str) -> Vec<String> {
    let mut v: Vec<String> = fake
        .objects("calls")
        .iter()
        .filter(|o| o["metadata"]["namespace"] == ns)
        .map(|o: &Value| {
            o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn ended_calls_go_by_age_and_count_in_batches_oldest_first() {
    let (fake, client) = fake().await;
    agent(&fake, NS, "hello", 60, 2);
    agent(&fake, NS, "quiet", 86400, 1000);
    call(&fake, NS, "hello", "ca-old", "Ended", 600);
    call(&fake, NS, "hello", "ca-expired", "Failed", 120);
    call(&fake, NS, "hello", "ca-third", "Ended", 50);
    call(&fake, NS, "hello", "ca-second", "Ended", 30);
    call(&fake, NS, "hello", "ca-newest", "Ended", 10);
    call(&fake, NS, "hello", "ca-live", "Active", 0);
    call(&fake, NS, "hello", "ca-ringing", "Ringing", 0);
    call(&fake, NS, "quiet", "ca-kept", "Ended", 600);
    // An agent that is gone: its calls keep the default retention.
    call(&fake, NS, "deleted-agent", "ca-orphan", "Ended", 600);

    let (_stop_tx, stop) = watch::channel(false);
    let gc = RetentionGc::start(
        client,
        &[],
        Metrics::new(),
        RetentionSettings {
            interval: Duration::from_secs(3600),
            batch: 2,
        },
        stop,
    );
    gc.wait_ready().await;
    fake.reset_writes();
    let reads = |fake: &FakeApi| {
        [Verb::List, Verb::Get]
            .iter()
            .map(|v| fake.request_count(*v, "calls") + fake.request_count(*v, "voiceagents"))
            .sum::<u64>()
    };
    let reads_before = reads(&fake);

    let first = gc.tick().await;
    assert_eq!(
        first.deleted,
        ["voice/ca-old", "voice/ca-expired"],
        "oldest first, two per tick"
    );
    let second = gc.tick().await;
    assert_eq!(second.deleted, ["voice/ca-third"], "beyond the newest two");
    // The mirror catches up with the deletes; nothing else is due.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let third = gc.tick().await;
    assert!(third.deleted.is_empty(), "{third:?}");
    assert_eq!(
        names(&fake, NS),
        [
            "ca-kept",
            "ca-live",
            "ca-newest",
            "ca-orphan",
            "ca-ringing",
            "ca-second"
        ]
    );
    let writes = fake.writes();
    assert!(
        writes
            .iter()
            .all(|w| w.verb == Verb::Delete && w.plural == "calls"),
        "the GC only deletes Calls: {writes:?}"
    );
    assert_eq!(writes.len(), 3, "one delete per Call: {writes:?}");
    assert_eq!(
        reads(&fake),
        reads_before,
        "ticks read the mirror, never the API server"
    );
}

#[tokio::test]
async fn the_loop_deletes_calls_as_they_expire_within_the_watched_namespaces() {
    let (fake, client) = fake().await;
    agent(&fake, NS, "hello", 0, 1000);
    agent(&fake, "elsewhere", "hello", 0, 1000);
    call(&fake, NS, "hello", "ca-live", "Active", 0);
    call(&fake, "elsewhere", "hello", "ca-other-ns", "Ended", 100);

    let (stop_tx, stop) = watch::channel(false);
    let gc = RetentionGc::start(
        client,
        &[NS.to_string()],
        Metrics::new(),
        RetentionSettings {
            interval: Duration::from_millis(50),
            batch: 100,
        },
        stop.clone(),
    );
    let task = tokio::spawn(gc.run(stop));

    // The call ends (as the runtime writes it): ttl 0, it goes at the next tick.
    call(&fake, NS, "hello", "ca-live", "Ended", 0);
    for _ in 0..200 {
        if names(&fake, NS).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(names(&fake, NS).is_empty(), "{:?}", names(&fake, NS));
    assert_eq!(
        names(&fake, "elsewhere"),
        ["ca-other-ns"],
        "namespaces that are not watched are not touched"
    );
    let _ = stop_tx.send(true);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the loop stops")
        .expect("no panic");
}

#[tokio::test]
async fn a_failed_delete_is_retried_next_tick() {
    let (fake, client) = fake().await;
    agent(&fake, NS, "hello", 0, 1000);
    call(&fake, NS, "hello", "ca-1", "Ended", 10);
    let (_stop_tx, stop) = watch::channel(false);
    let gc = RetentionGc::start(
        client,
        &[],
        Metrics::new(),
        RetentionSettings::default(),
        stop,
    );
    gc.wait_ready().await;
    fake.fail_next(
        voice_agent_kube_fake::FailMatcher::on(Verb::Delete, "calls"),
        500,
        "InternalError",
        1,
    );
    let r = gc.tick().await;
    assert_eq!((r.deleted.len(), r.failed), (0, 1));
    let r = gc.tick().await;
    assert_eq!(r.deleted, ["voice/ca-1"]);
}
