//! Operator benchmarks (report, never assert): `cargo bench -p voice-agent-operator --bench reconcile`.
//!
//! - `build()` time per VoiceAgent (pure rendering of all 19 objects);
//! - 1,000 VoiceAgents reconciled against the in-memory Kubernetes API over
//!   real HTTP: time to converge, writes per reconcile at steady state (goal
//!   0, counted by the operator's own `api_writes_total`), and the operator's
//!   RSS (goal < 100 MiB). The fake API runs in a child process (this binary
//!   re-executed with `VA_BENCH_ROLE=fake`) so its memory is not counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, PostParams};
use kube::runtime::events::Reporter;
use serde_json::json;
use voice_agent_api::VoiceAgent;
use voice_agent_kube_fake::{FakeApi, ResourceType};
use voice_agent_operator::controller::Context;
use voice_agent_operator::controller::voiceagent::reconcile_agent;
use voice_agent_operator::metrics::Metrics;
use voice_agent_operator::render::{BuildInput, OperatorSettings, build};

const AGENTS: usize = 1000;
const NS: &str = "bench";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn example() -> VoiceAgent {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/voiceagent-full.yaml");
    let mut va: VoiceAgent =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).expect("example")).expect("decodes");
    va.metadata.uid = Some("00000000-0000-4000-8000-000000000001".into());
    va
}

fn bench_build() {
    let va = example();
    let input = BuildInput::default();
    for _ in 0..200 {
        std::hint::black_box(build(&va, &input).expect("renders"));
    }
    let mut times = Vec::with_capacity(5000);
    for _ in 0..5000 {
        let t = Instant::now();
        std::hint::black_box(build(&va, &input).expect("renders"));
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "build() of the full example (19 objects): p50 {:.1} µs, p99 {:.1} µs ({} runs)",
        percentile(&times, 0.5).as_secs_f64() * 1e6,
        percentile(&times, 0.99).as_secs_f64() * 1e6,
        times.len()
    );
}

/// Child process: serve the fake API until standard input closes.
async fn serve_fake() {
    let fake = FakeApi::start().await;
    fake.register(ResourceType::new(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
    ));
    for crd in voice_agent_api::crds() {
        fake.register_crd(&crd);
    }
    println!("{}", fake.url());
    let _ = tokio::task::spawn_blocking(|| std::io::read_to_string(std::io::stdin())).await;
}

async fn bench_reconcile() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .env("VA_BENCH_ROLE", "fake")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the fake API");
    let mut url = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut url)
        .expect("url");
    let client = kube::Client::try_from(kube::Config::new(url.trim().parse().expect("uri")))
        .expect("client");
    let ctx = Arc::new(Context::new(
        client.clone(),
        OperatorSettings::default(),
        Metrics::new(),
        Reporter {
            controller: "voice-agent-operator".into(),
            instance: Some("bench".into()),
        },
    ));
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "twilio", "namespace": NS}, "stringData": {"authToken": "x"}}))
    .expect("secret");
    Api::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    let rss_before = rss_mib();
    let api: Api<VoiceAgent> = Api::namespaced(client.clone(), NS);
    let template: serde_json::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples/voiceagent-minimal.yaml"),
        )
        .expect("example"),
    )
    .expect("yaml");
    for i in 0..AGENTS {
        let mut v = template.clone();
        v["metadata"] = json!({"name": format!("agent-{i:04}"), "namespace": NS});
        let va: VoiceAgent = serde_json::from_value(v).expect("va");
        api.create(&PostParams::default(), &va)
            .await
            .expect("create");
    }
    let agents = api.list(&Default::default()).await.expect("list").items;

    // Converge: reconcile every agent, 8 at a time (the controller's default
    // concurrency is unbounded; 8 keeps this 2-core machine honest).
    let start = Instant::now();
    let mut per = Vec::with_capacity(AGENTS);
    for chunk in agents.chunks(8) {
        let futs = chunk.iter().map(|va| {
            let ctx = ctx.clone();
            async move {
                let t = Instant::now();
                reconcile_agent(va, &ctx).await.expect("reconcile");
                t.elapsed()
            }
        });
        per.extend(futures::future::join_all(futs).await);
    }
    let converge = start.elapsed();
    per.sort();
    let writes_first = ctx.metrics.total_writes();
    println!(
        "converge {AGENTS} VoiceAgents: {:.2} s ({:.0} reconciles/s), per reconcile p50 {:.1} ms p99 {:.1} ms, {:.1} writes each",
        converge.as_secs_f64(),
        AGENTS as f64 / converge.as_secs_f64(),
        percentile(&per, 0.5).as_secs_f64() * 1e3,
        percentile(&per, 0.99).as_secs_f64() * 1e3,
        writes_first as f64 / AGENTS as f64
    );

    // Steady state: reconcile everything again with fresh objects.
    let before = ctx.metrics.total_writes();
    let agents = api.list(&Default::default()).await.expect("list").items;
    let start = Instant::now();
    for chunk in agents.chunks(8) {
        futures::future::join_all(chunk.iter().map(|va| {
            let ctx = ctx.clone();
            async move { reconcile_agent(va, &ctx).await.expect("reconcile") }
        }))
        .await;
    }
    let steady = start.elapsed();
    let writes = ctx.metrics.total_writes() - before;
    println!(
        "steady state: {AGENTS} reconciles in {:.2} s, {} writes in total = {:.3} writes per reconcile (goal 0)",
        steady.as_secs_f64(),
        writes,
        writes as f64 / AGENTS as f64
    );
    println!(
        "operator RSS: {:.1} MiB before, {:.1} MiB after managing {} objects (goal < 100 MiB)",
        rss_before,
        rss_mib(),
        AGENTS * 19
    );
    drop(child.stdin.take());
    let _ = child.wait();
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::var("VA_BENCH_ROLE").as_deref() == Ok("fake") {
        rt.block_on(serve_fake());
        return;
    }
    // `cargo bench` passes `--bench`; nothing else to parse.
    bench_build();
    rt.block_on(bench_reconcile());
}
