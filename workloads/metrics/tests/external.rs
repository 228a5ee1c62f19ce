//! `external.metrics.k8s.io/v1beta1` over real HTTP, asked the way the
//! API server's aggregation layer forwards the HPA controller's requests:
//! discovery first, then `GET .../namespaces/{ns}/{metric}?labelSelector=`
//! with the selector of the HPA's External metric, percent-encoded.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Value, json};
use support::{T0, batch, gauge, latency, state};
use voice_agent_metrics::loopback::{Client, Reply};
use voice_agent_metrics::{Config, ManualClock, State, router};
use voice_agent_proto::Component;
use voice_agent_proto::metrics::{GAUGE_ACTIVE_CALLS, GAUGE_CONCURRENCY};

const BASE: &str = "/apis/external.metrics.k8s.io/v1beta1";

struct Server {
    addr: SocketAddr,
    state: Arc<State>,
    clock: Arc<ManualClock>,
}

async fn start(external_metrics: bool) -> Server {
    let (state, clock) = state(Config {
        external_metrics,
        ..Config::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = router(Arc::clone(&state));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server { addr, state, clock }
}

/// A GET with the headers the aggregation layer adds to a forwarded
/// request (they are informational here; authorization happened upstream).
async fn get(c: &mut Client, path: &str) -> Reply {
    c.request(
        "GET",
        path,
        &[
            ("accept", "application/json, */*"),
            ("user-agent", "kube-controller-manager/v1.33.0 (linux/amd64) kubernetes/horizontal-pod-autoscaler"),
            ("x-remote-user", "system:serviceaccount:kube-system:horizontal-pod-autoscaler"),
            ("x-remote-group", "system:serviceaccounts"),
        ],
        b"",
    )
    .await
    .expect("request")
}

fn body(reply: &Reply) -> Value {
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{}",
        reply.text()
    );
    reply.json().expect("json")
}

/// `?labelSelector=` as client-go encodes it.
fn encoded(selector: &str) -> String {
    let mut out = String::new();
    for b in selector.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    format!("?labelSelector={out}")
}

/// A quantity string (`"250"`, `"1500m"`) as a number.
fn quantity(v: &Value) -> f64 {
    let text = v.as_str().expect("a quantity is a string");
    match text.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().expect("milli") / 1000.0,
        None => text.parse::<f64>().expect("whole"),
    }
}

/// Two agents in `voice`, one in `other`, with latency and load.
fn load(s: &State) {
    let mut samples = Vec::new();
    for (ns, va, webhook_ms) in [
        ("voice", "hello", 80.0),
        ("voice", "support", 140.0),
        ("other", "hello", 10.0),
    ] {
        for i in 0..20 {
            samples.push(latency(
                ns,
                va,
                Component::Gateway,
                "webhook",
                webhook_ms + f64::from(i % 3),
                T0 - 1_000,
            ));
        }
        samples.push(latency(
            ns,
            va,
            Component::Tts,
            "ttsTtfb",
            212.5,
            T0 - 2_000,
        ));
        for pod in 0..3 {
            samples.push(gauge(
                ns,
                va,
                Component::Gateway,
                &format!("{va}-gateway-{pod}"),
                GAUGE_CONCURRENCY,
                30.0 + f64::from(pod),
                T0,
            ));
            samples.push(gauge(
                ns,
                va,
                Component::Runtime,
                &format!("{va}-runtime-{pod}"),
                GAUGE_ACTIVE_CALLS,
                7.0,
                T0,
            ));
        }
    }
    s.ingest(&batch(samples)).expect("ingest");
}

#[tokio::test]
async fn discovery_lists_the_group_and_every_metric() {
    let server = start(true).await;
    let mut c = Client::connect(server.addr).await.expect("connect");

    let reply = get(&mut c, "/apis").await;
    assert_eq!(reply.status, 200);
    let groups = body(&reply);
    assert_eq!(groups["kind"], "APIGroupList");
    assert_eq!(groups["groups"][0]["name"], "external.metrics.k8s.io");
    assert_eq!(
        groups["groups"][0]["preferredVersion"]["groupVersion"],
        "external.metrics.k8s.io/v1beta1"
    );

    let reply = get(&mut c, "/apis/external.metrics.k8s.io").await;
    assert_eq!(body(&reply)["kind"], "APIGroup");

    let reply = get(&mut c, BASE).await;
    assert_eq!(reply.status, 200);
    let list = body(&reply);
    assert_eq!(list["kind"], "APIResourceList");
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(list["groupVersion"], "external.metrics.k8s.io/v1beta1");
    let resources = list["resources"].as_array().expect("resources");
    let names: Vec<&str> = resources
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for name in [
        "voice_agent_gateway_latency_p95_ms",
        "voice_agent_gateway_concurrency",
        "voice_agent_runtime_latency_p95_ms",
        "voice_agent_runtime_active_calls",
        "voice_agent_agent_latency_p95_ms",
        "voice_agent_agent_concurrency",
        "voice_agent_tts_latency_p95_ms",
        "voice_agent_tts_concurrency",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    for r in resources {
        assert_eq!(r["namespaced"], true);
        assert_eq!(r["kind"], "ExternalMetricValueList");
        assert_eq!(r["verbs"], json!(["get"]));
    }
}

#[tokio::test]
async fn an_hpa_reads_one_agents_value_by_its_selector() {
    let server = start(true).await;
    load(&server.state);
    let mut c = Client::connect(server.addr).await.expect("connect");

    // The gateway HPA of voice/hello, latency: a Value target.
    let path = format!(
        "{BASE}/namespaces/voice/voice_agent_gateway_latency_p95_ms{}",
        encoded("namespace=voice,voiceAgent=hello")
    );
    let reply = get(&mut c, &path).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let list = body(&reply);
    assert_eq!(list["kind"], "ExternalMetricValueList");
    assert_eq!(list["apiVersion"], "external.metrics.k8s.io/v1beta1");
    assert_eq!(list["metadata"], json!({}));
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{list:#}");
    let item = &items[0];
    assert_eq!(item["metricName"], "voice_agent_gateway_latency_p95_ms");
    assert_eq!(
        item["metricLabels"],
        json!({"namespace": "voice", "voiceAgent": "hello", "component": "gateway", "stage": "webhook"})
    );
    // p95 of 80, 81, 82 ms samples (sketched within its error bound).
    let ms = quantity(&item["value"]);
    assert!((80.0..=83.0).contains(&ms), "{ms}");
    assert_eq!(
        item["timestamp"], "2023-11-14T22:13:20Z",
        "the newest sample, T0"
    );

    // Concurrency: summed over the pods (30 + 31 + 32) for an AverageValue
    // target; whole numbers stay whole.
    let path = format!(
        "{BASE}/namespaces/voice/voice_agent_gateway_concurrency{}",
        encoded("namespace=voice,voiceAgent=hello")
    );
    let list = body(&get(&mut c, &path).await);
    assert_eq!(list["items"][0]["value"], "93");
    // A fractional value is in thousandths.
    let path = format!(
        "{BASE}/namespaces/voice/voice_agent_tts_latency_p95_ms{}",
        encoded("voiceAgent=hello")
    );
    let list = body(&get(&mut c, &path).await);
    let v = quantity(&list["items"][0]["value"]);
    assert!((205.0..=220.0).contains(&v), "{v}");
    let path = format!(
        "{BASE}/namespaces/voice/voice_agent_runtime_active_calls{}",
        encoded("voiceAgent=hello")
    );
    assert_eq!(body(&get(&mut c, &path).await)["items"][0]["value"], "21");
}

#[tokio::test]
async fn set_based_and_negative_selectors_and_namespaces_narrow_the_items() {
    let server = start(true).await;
    load(&server.state);
    let mut c = Client::connect(server.addr).await.expect("connect");
    let agents = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| {
                i["metricLabels"]["voiceAgent"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    };
    let metric = "voice_agent_gateway_latency_p95_ms";
    for (selector, expected) in [
        ("", vec!["hello", "support"]),
        ("voiceAgent in (hello,support)", vec!["hello", "support"]),
        ("voiceAgent notin (hello)", vec!["support"]),
        ("voiceAgent!=support", vec!["hello"]),
        ("voiceAgent==support,component=gateway", vec!["support"]),
        ("component in (tts)", vec![]),
        ("stage=webhook,!pod", vec!["hello", "support"]),
    ] {
        let path = format!("{BASE}/namespaces/voice/{metric}{}", encoded(selector));
        let reply = get(&mut c, &path).await;
        assert_eq!(reply.status, 200, "{selector}: {}", reply.text());
        assert_eq!(agents(&body(&reply)), expected, "{selector:?}");
    }
    // The namespace of the request scopes the answer.
    let path = format!(
        "{BASE}/namespaces/other/{metric}{}",
        encoded("voiceAgent=hello")
    );
    let list = body(&get(&mut c, &path).await);
    assert_eq!(agents(&list), ["hello"]);
    assert_eq!(list["items"][0]["metricLabels"]["namespace"], "other");
    // No data yet for a metric: an empty list (the HPA holds).
    let path = format!("{BASE}/namespaces/voice/voice_agent_agent_latency_p95_ms");
    let list = body(&get(&mut c, &path).await);
    assert_eq!(list["items"], json!([]));
    // Old data leaves the window: the item goes away.
    server.clock.set(T0 + 120_000);
    let path = format!("{BASE}/namespaces/voice/{metric}");
    assert_eq!(body(&get(&mut c, &path).await)["items"], json!([]));
}

#[tokio::test]
async fn unknown_metrics_and_bad_selectors_are_kubernetes_status_errors() {
    let server = start(true).await;
    let mut c = Client::connect(server.addr).await.expect("connect");

    let reply = get(
        &mut c,
        &format!("{BASE}/namespaces/voice/voice_agent_gateway_qps"),
    )
    .await;
    assert_eq!(reply.status, 404);
    let status = body(&reply);
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["apiVersion"], "v1");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NotFound");
    assert_eq!(status["code"], 404);
    assert_eq!(status["details"]["name"], "voice_agent_gateway_qps");
    assert_eq!(status["details"]["group"], "external.metrics.k8s.io");

    for selector in [
        "voiceAgent in hello",
        "voiceAgent=(x)",
        "=x",
        "voiceAgent in ()",
    ] {
        let path = format!(
            "{BASE}/namespaces/voice/voice_agent_gateway_concurrency{}",
            encoded(selector)
        );
        let reply = get(&mut c, &path).await;
        assert_eq!(reply.status, 400, "{selector}");
        let status = body(&reply);
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "BadRequest");
        assert_eq!(status["code"], 400);
        assert!(
            status["message"]
                .as_str()
                .unwrap_or_default()
                .contains("invalid label selector"),
            "{status}"
        );
    }
    let reply = get(
        &mut c,
        &format!("{BASE}/namespaces/Not_A_Namespace/voice_agent_gateway_concurrency"),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(body(&reply)["reason"], "BadRequest");
    let reply = get(
        &mut c,
        &format!("{BASE}/namespaces/voice/voice_agent_gateway_concurrency?labelSelector=%E0%A4"),
    )
    .await;
    assert_eq!(reply.status, 400);
}

#[tokio::test]
async fn the_api_is_off_unless_enabled() {
    let server = start(false).await;
    let mut c = Client::connect(server.addr).await.expect("connect");
    for path in [
        "/apis".to_string(),
        BASE.to_string(),
        format!("{BASE}/namespaces/voice/voice_agent_gateway_concurrency"),
    ] {
        let reply = get(&mut c, &path).await;
        assert_eq!(reply.status, 404, "{path}");
    }
    // The rest of the service is unchanged.
    assert_eq!(get(&mut c, "/healthz").await.status, 200);
}
