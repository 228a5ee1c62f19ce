//! The HTTP API over real TCP: `axum::serve` on 127.0.0.1:0 and a
//! hand-written HTTP/1.1 client.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use support::{T0, batch, gauge, latency, metric_value, state};
use voice_agent_metrics::loopback::{Client, Reply};
use voice_agent_metrics::{Config, ManualClock, State, router};
use voice_agent_proto::metrics::{GAUGE_ACTIVE_CALLS, GAUGE_CONCURRENCY};
use voice_agent_proto::{
    Component, ErrorBody, SampleBatch, SamplesAccepted, SignalsList, SignalsResponse, Stage,
};

struct Server {
    addr: SocketAddr,
    state: Arc<State>,
    _clock: Arc<ManualClock>,
}

async fn start(config: Config) -> Server {
    let (state, clock) = state(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = router(Arc::clone(&state));
    // The task ends with the test's runtime.
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        addr,
        state,
        _clock: clock,
    }
}

fn json(b: &SampleBatch) -> Vec<u8> {
    serde_json::to_vec(b).expect("serialize")
}

fn error_of(reply: &Reply) -> ErrorBody {
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{}",
        reply.text()
    );
    reply.json().expect("error body")
}

#[tokio::test]
async fn samples_then_signals_then_metrics() {
    let server = start(Config::default()).await;
    let mut c = Client::connect(server.addr).await.expect("connect");

    let samples = batch(vec![
        latency("default", "support", Component::Runtime, "e2e", 800.0, T0),
        latency(
            "default",
            "support",
            Component::Runtime,
            "e2e",
            1_200.0,
            T0 - 10_000,
        ),
        latency(
            "default",
            "support",
            Component::Agent,
            "agentTtft",
            300.0,
            T0,
        ),
        gauge(
            "default",
            "support",
            Component::Runtime,
            "rt-0",
            GAUGE_ACTIVE_CALLS,
            4.0,
            T0,
        ),
        gauge(
            "default",
            "support",
            Component::Runtime,
            "rt-1",
            GAUGE_ACTIVE_CALLS,
            2.0,
            T0,
        ),
        gauge(
            "default",
            "support",
            Component::Agent,
            "ag-0",
            GAUGE_CONCURRENCY,
            3.0,
            T0,
        ),
        latency("default", "sales", Component::Tts, "ttsTtfb", 90.0, T0),
        latency(
            "staging",
            "support",
            Component::Gateway,
            "webhook",
            12.0,
            T0,
        ),
    ]);
    let reply = c
        .post_json("/v1/samples", &json(&samples))
        .await
        .expect("post");
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(
        reply.json::<SamplesAccepted>().expect("accepted"),
        SamplesAccepted { accepted: 8 }
    );

    // One agent.
    let reply = c
        .get("/v1/signals?namespace=default&voiceAgent=support")
        .await
        .expect("get");
    assert_eq!(reply.status, 200);
    let signals: SignalsResponse = reply.json().expect("signals");
    assert_eq!(
        (signals.namespace.as_str(), signals.voice_agent.as_str()),
        ("default", "support")
    );
    assert_eq!(signals.generated_at_ms, T0);
    let order: Vec<Component> = signals.components.iter().map(|c| c.component).collect();
    assert_eq!(order, [Component::Runtime, Component::Agent]);
    let runtime = signals.component(Component::Runtime).expect("runtime");
    assert_eq!(
        (
            runtime.pods,
            runtime.active_calls,
            runtime.active_calls_per_pod
        ),
        (2, 6.0, 3.0)
    );
    assert_eq!(runtime.fresh_at_ms, Some(T0));
    let short = runtime.window(Stage::E2e, 6).expect("6 s");
    assert_eq!((short.count, short.p50_ms, short.p99_ms), (1, 800.0, 800.0));
    let long = runtime.window(Stage::E2e, 60).expect("60 s");
    assert_eq!((long.count, long.p99_ms), (2, 1_200.0));
    assert_eq!(runtime.latency.len(), 2);
    let agent = signals.component(Component::Agent).expect("agent");
    assert_eq!((agent.pods, agent.concurrency_per_pod), (1, 3.0));
    assert_eq!(agent.window(Stage::AgentTtft, 6).map(|w| w.count), Some(1));

    // A namespace: one request for all its agents, ordered by name.
    let list: SignalsList = c
        .get("/v1/signals?namespace=default")
        .await
        .expect("get")
        .json()
        .expect("list");
    let names: Vec<&str> = list.items.iter().map(|s| s.voice_agent.as_str()).collect();
    assert_eq!(names, ["sales", "support"]);
    assert_eq!(list.get("default", "support"), Some(&signals));

    // The cluster.
    let all: SignalsList = c
        .get("/v1/signals")
        .await
        .expect("get")
        .json()
        .expect("list");
    let keys: Vec<(&str, &str)> = all
        .items
        .iter()
        .map(|s| (s.namespace.as_str(), s.voice_agent.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("default", "sales"),
            ("default", "support"),
            ("staging", "support")
        ]
    );

    // An agent without data: 200 and no components.
    let reply = c
        .get("/v1/signals?namespace=default&voiceAgent=nobody")
        .await
        .expect("get");
    assert_eq!(reply.status, 200);
    let empty: SignalsResponse = reply.json().expect("signals");
    assert!(empty.components.is_empty());
    let reply = c.get("/v1/signals?namespace=nowhere").await.expect("get");
    assert_eq!(reply.json::<SignalsList>().expect("list").items, []);

    // Prometheus.
    let reply = c.get("/metrics").await.expect("metrics");
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        reply.header("content-type")
    );
    let text = reply.text();
    let rt = r#"{component="runtime",namespace="default",voice_agent="support"}"#;
    assert_eq!(
        metric_value(&text, &format!("voice_agent_e2e_seconds_count{rt}")),
        Some(2.0)
    );
    assert_eq!(
        metric_value(&text, &format!("voice_agent_e2e_seconds_sum{rt}")),
        Some(2.0)
    );
    assert_eq!(
        metric_value(
            &text,
            r#"voice_agent_e2e_seconds_bucket{component="runtime",namespace="default",voice_agent="support",le="1"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&text, &format!("voice_agent_active_calls{rt}")),
        Some(6.0)
    );
    assert_eq!(
        metric_value(
            &text,
            r#"voice_agent_concurrency{component="agent",namespace="default",voice_agent="support"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        metric_value(&text, "voice_agent_metrics_samples_total"),
        Some(8.0)
    );
    assert_eq!(metric_value(&text, "voice_agent_metrics_series"), Some(7.0));
    // Stages without any series are left out, as the prometheus crate does
    // for empty metric vectors.
    for stage in [Stage::E2e, Stage::AgentTtft, Stage::TtsTtfb, Stage::Webhook] {
        assert!(
            text.contains(&format!("# TYPE {} histogram", stage.metric_name())),
            "{stage}"
        );
    }

    for path in ["/healthz", "/readyz"] {
        assert_eq!(c.get(path).await.expect("probe").status, 200, "{path}");
    }
    // The two e2e samples share a series.
    assert_eq!(server.state.series(), 7);
}

/// Each refused request answers its status and code, and leaves the signals,
/// the series count and the histograms exactly as they were.
#[tokio::test]
async fn bad_batches_are_refused_whole_and_change_nothing() {
    let config = Config {
        max_body_bytes: 64 * 1024,
        max_samples_per_batch: 50,
        max_series: 5,
        ..Config::default()
    };
    let server = start(config).await;
    let mut c = Client::connect(server.addr).await.expect("connect");
    let good = batch(vec![
        latency("default", "support", Component::Runtime, "e2e", 500.0, T0),
        gauge(
            "default",
            "support",
            Component::Runtime,
            "rt-0",
            GAUGE_ACTIVE_CALLS,
            1.0,
            T0,
        ),
    ]);
    let reply = c
        .post_json("/v1/samples", &json(&good))
        .await
        .expect("post");
    assert_eq!(reply.status, 202);

    let snapshot = |text: String| -> String {
        text.lines()
            .filter(|l| !l.contains("batches_rejected_total"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let signals_before = c.get("/v1/signals").await.expect("get").text();
    let metrics_before = snapshot(c.get("/metrics").await.expect("get").text());

    // A valid sample of an existing series first, so a partial apply would
    // show in the counts.
    let valid = latency("default", "support", Component::Runtime, "e2e", 9_000.0, T0);
    let with =
        |bad: voice_agent_proto::Sample| json(&batch(vec![valid.clone(), valid.clone(), bad]));
    let too_many = json(&batch(vec![valid.clone(); 51]));
    let over_cap = json(&batch(
        [valid.clone()]
            .into_iter()
            .chain((0..5).map(|i| {
                latency(
                    "default",
                    &format!("new-{i}"),
                    Component::Tts,
                    "ttsTtfb",
                    1.0,
                    T0,
                )
            }))
            .collect(),
    ));
    let big_valid_json = {
        // Valid JSON, just larger than the limit.
        let mut b = batch(vec![valid.clone()]);
        b.samples[0].pod = "p".repeat(70 * 1024);
        json(&b)
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str, &str)> = vec![
        (
            "truncated JSON",
            br#"{"samples": ["#.to_vec(),
            400,
            "invalidArgument",
            "malformed",
        ),
        (
            "not a batch",
            br#"{"samples": {}}"#.to_vec(),
            400,
            "invalidArgument",
            "malformed",
        ),
        (
            "not JSON",
            b"samples=1".to_vec(),
            400,
            "invalidArgument",
            "malformed",
        ),
        (
            "negative value",
            with(latency(
                "default",
                "support",
                Component::Runtime,
                "e2e",
                -1.0,
                T0,
            )),
            400,
            "invalidArgument",
            "samples[2].value",
        ),
        (
            "unknown stage",
            with(latency(
                "default",
                "support",
                Component::Runtime,
                "stt",
                1.0,
                T0,
            )),
            400,
            "invalidArgument",
            "samples[2].name",
        ),
        (
            "blank namespace",
            with(latency(" ", "support", Component::Runtime, "e2e", 1.0, T0)),
            400,
            "invalidArgument",
            "samples[2].namespace",
        ),
        (
            "from the future",
            with(latency(
                "default",
                "support",
                Component::Runtime,
                "e2e",
                1.0,
                T0 + 5_001,
            )),
            400,
            "invalidArgument",
            "samples[2].at",
        ),
        (
            "too many samples",
            too_many,
            413,
            "payloadTooLarge",
            "51 samples",
        ),
        (
            "body over the limit",
            big_valid_json,
            413,
            "payloadTooLarge",
            "65536 bytes",
        ),
        (
            "new series over the cap",
            over_cap,
            422,
            "seriesLimitExceeded",
            "limit of 5",
        ),
    ];
    for (what, body, status, code, message) in cases {
        // A fresh connection each time: the server may close one it did not
        // read to the end.
        let mut c = Client::connect(server.addr).await.expect("connect");
        let reply = c.post_json("/v1/samples", &body).await.expect(what);
        assert_eq!(reply.status, status, "{what}: {}", reply.text());
        let err = error_of(&reply);
        assert_eq!(err.error.code, code, "{what}");
        assert!(
            err.error.message.contains(message),
            "{what}: {}",
            err.error.message
        );
    }

    // Content-Length over the limit: refused before the body is read.
    let mut raw = format!(
        "POST /v1/samples HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        2 * 1024 * 1024
    )
    .into_bytes();
    raw.extend_from_slice(&[b' '; 1024]);
    let reply = Client::connect(server.addr)
        .await
        .expect("connect")
        .send_raw(&raw)
        .await
        .expect("early 413");
    assert_eq!(reply.status, 413);
    assert_eq!(error_of(&reply).error.code, "payloadTooLarge");

    // Chunked, no Content-Length: refused once the limit is crossed.
    let mut raw =
        b"POST /v1/samples HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec();
    for _ in 0..5 {
        raw.extend_from_slice(format!("{:x}\r\n", 16 * 1024).as_bytes());
        raw.extend_from_slice(&[b' '; 16 * 1024]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let reply = Client::connect(server.addr)
        .await
        .expect("connect")
        .send_raw(&raw)
        .await
        .expect("streamed 413");
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(error_of(&reply).error.code, "payloadTooLarge");

    // A body that is not JSON by its type.
    let reply = c
        .request(
            "POST",
            "/v1/samples",
            &[("content-type", "text/plain")],
            &json(&good),
        )
        .await
        .expect("post");
    assert_eq!(reply.status, 415);
    assert_eq!(error_of(&reply).error.code, "unsupportedMediaType");

    let mut c = Client::connect(server.addr).await.expect("connect");
    assert_eq!(
        c.get("/v1/signals").await.expect("get").text(),
        signals_before
    );
    let metrics_after = c.get("/metrics").await.expect("get").text();
    assert_eq!(snapshot(metrics_after.clone()), metrics_before);
    assert_eq!(server.state.series(), 2);
    let rejected = |reason: &str| {
        metric_value(
            &metrics_after,
            &format!(r#"voice_agent_metrics_batches_rejected_total{{reason="{reason}"}}"#),
        )
    };
    assert_eq!(rejected("malformed"), Some(3.0));
    assert_eq!(rejected("invalid"), Some(4.0));
    assert_eq!(rejected("too_large"), Some(4.0));
    assert_eq!(rejected("series_limit"), Some(1.0));
    assert_eq!(rejected("unsupported_media_type"), Some(1.0));

    // And the service still takes good batches.
    let reply = c
        .post_json("/v1/samples", &json(&good))
        .await
        .expect("post");
    assert_eq!(reply.status, 202);
}

#[tokio::test]
async fn signals_query_errors_and_router_errors_are_error_bodies() {
    let server = start(Config::default()).await;
    let mut c = Client::connect(server.addr).await.expect("connect");
    for (path, status, code) in [
        ("/v1/signals?voiceAgent=support", 400, "invalidArgument"),
        (
            "/v1/signals?namespace=&voiceAgent=support",
            400,
            "invalidArgument",
        ),
        (
            "/v1/signals?namespace=default&voiceAgent=%20",
            400,
            "invalidArgument",
        ),
        (
            "/v1/signals?namespace=default&agent=support",
            400,
            "invalidArgument",
        ),
        ("/v2/signals", 404, "notFound"),
    ] {
        let reply = c.get(path).await.expect(path);
        assert_eq!(reply.status, status, "{path}: {}", reply.text());
        assert_eq!(error_of(&reply).error.code, code, "{path}");
    }
    let reply = c
        .request("PUT", "/v1/samples", &[], b"")
        .await
        .expect("put");
    assert_eq!(reply.status, 405);
    assert_eq!(error_of(&reply).error.code, "methodNotAllowed");
    assert_eq!(reply.header("allow"), Some("POST"));
}

#[tokio::test]
async fn a_stalled_body_times_out_with_an_error_body() {
    let server = start(Config {
        request_timeout: Duration::from_millis(200),
        ..Config::default()
    })
    .await;
    let raw = b"POST /v1/samples HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"samples\":";
    let reply = Client::connect(server.addr)
        .await
        .expect("connect")
        .send_raw(raw)
        .await
        .expect("408");
    assert_eq!(reply.status, 408);
    assert_eq!(error_of(&reply).error.code, "requestTimeout");
}

#[tokio::test]
async fn promtool_accepts_the_exposition() {
    let Ok(promtool) = which("promtool") else {
        if std::env::var_os("CI").is_some() {
            panic!("promtool is missing and CI is set: install the Debian package `prometheus`");
        }
        eprintln!(
            "\n!!!!!!!! SKIPPED promtool_accepts_the_exposition: promtool not found \
             (apt-get install prometheus) !!!!!!!!\n"
        );
        return;
    };
    let server = start(Config::default()).await;
    let mut c = Client::connect(server.addr).await.expect("connect");
    let mut samples = Vec::new();
    for stage in Stage::ALL {
        samples.push(latency(
            "default",
            "support",
            Component::Runtime,
            stage.as_str(),
            321.0,
            T0,
        ));
    }
    samples.push(gauge(
        "default",
        "support",
        Component::Runtime,
        "rt-0",
        GAUGE_ACTIVE_CALLS,
        2.0,
        T0,
    ));
    samples.push(gauge(
        "default",
        "support",
        Component::Tts,
        "tts-0",
        GAUGE_CONCURRENCY,
        1.0,
        T0,
    ));
    let reply = c
        .post_json("/v1/samples", &json(&batch(samples)))
        .await
        .expect("post");
    assert_eq!(reply.status, 202);
    // A rejection too, so every counter has a non-zero series.
    c.post_json("/v1/samples", b"{").await.expect("post");
    let exposition = c.get("/metrics").await.expect("metrics").text();

    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write exposition");
    let out = child.wait_with_output().expect("promtool finishes");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `command -v`, without a dependency.
fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}
