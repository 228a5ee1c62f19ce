//! Reaction time to a load step, measured (the figures in
//! docs/performance.md come from here; run with `--no-capture` to see them):
//!
//! - in the simulation, the operator's 2 s tick with panic mode against an
//!   HPA-like 15 s sync period, over every phase of the step relative to the
//!   ticks (the same decision function, only the period differs);
//! - the live loop over the in-memory Kubernetes API and the real metrics
//!   service: from a step in the signals to `spec.replicas` written, and the
//!   cost of one tick.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Recorder, Reporter};
use serde_json::json;
use voice_agent_api::VoiceAgent;
use voice_agent_kube_fake::FakeApi;
use voice_agent_metrics::{Config as MetricsConfig, State as MetricsState};
use voice_agent_operator::autoscale::live::Autoscaler;
use voice_agent_operator::autoscale::simulate::{Options, simulate};
use voice_agent_operator::controller::Context;
use voice_agent_operator::controller::voiceagent::reconcile_agent;
use voice_agent_operator::metrics::Metrics;
use voice_agent_operator::render::OperatorSettings;
use voice_agent_proto::Component;
use voice_agent_proto::metrics::{GAUGE_ACTIVE_CALLS, Sample, SampleBatch, SampleKind};

const NS: &str = "voice";

fn agent() -> VoiceAgent {
    serde_json::from_value(json!({
        "apiVersion": "voiceagent.io/v1alpha1",
        "kind": "VoiceAgent",
        "metadata": {"name": "hello", "namespace": NS},
        "spec": {
            "persona": {"greeting": "Hi"},
            "telephony": {
                "publicUrl": "https://hello.voice.example.com",
                "twilio": {"authTokenSecretRef": {"name": "twilio", "key": "authToken"}},
            },
            "components": {
                "runtime": {"minReplicas": 2, "maxReplicas": 20, "maxCallsPerPod": 20},
            },
        },
    }))
    .expect("decodes")
}

/// Reaction times (ms) of the runtime to a 30 → 120 calls step at 60 s plus
/// each phase offset, with ticks of `tick_ms`.
fn reactions(tick_ms: i64) -> Vec<(i64, String)> {
    let va = agent();
    (0..60)
        .map(|i| {
            let step_ms = 60_000 + i * 250;
            let trace = format!(
                "0,runtime,activeCalls,30\n{:.3},runtime,activeCalls,120\n",
                step_ms as f64 / 1000.0
            );
            let sim = simulate(
                &va,
                &trace,
                &Options {
                    tick_ms,
                    until_ms: Some(step_ms + 60_000),
                },
            )
            .expect("simulates");
            let ms = sim
                .reaction_ms(Component::Runtime, step_ms, 2)
                .expect("scales up");
            let reason = sim
                .rows
                .iter()
                .find(|r| r.at_ms >= step_ms && r.changed)
                .map(|r| r.reason.to_string())
                .unwrap_or_default();
            (ms, reason)
        })
        .collect()
}

fn stats(r: &[(i64, String)]) -> (f64, i64) {
    let mean = r.iter().map(|(ms, _)| *ms as f64).sum::<f64>() / r.len() as f64;
    let max = r.iter().map(|(ms, _)| *ms).max().unwrap_or(0);
    (mean, max)
}

#[test]
fn a_load_step_is_decided_within_one_2s_tick_against_up_to_15s_for_an_hpa_sync() {
    let operator = reactions(2_000);
    let hpa = reactions(15_000);
    let (op_mean, op_max) = stats(&operator);
    let (hpa_mean, hpa_max) = stats(&hpa);
    eprintln!(
        "load step 30 → 120 calls, 60 phases over 15 s: operator (2 s tick, panic mode) mean \
         {op_mean:.0} ms, max {op_max} ms; HPA-like 15 s sync mean {hpa_mean:.0} ms, max {hpa_max} ms \
         (both plus up to 1 s for the pods' sample flush)"
    );
    assert!(op_max <= 2_000, "operator max {op_max} ms");
    assert!(
        operator
            .iter()
            .all(|(_, r)| r == "PanicScaleUp (callsPerPod)"),
        "{operator:?}"
    );
    assert!(hpa_max <= 15_000 && hpa_mean > 4.0 * op_mean, "{hpa:?}");
}

#[tokio::test]
async fn the_live_loop_writes_replicas_within_one_tick_of_a_step() {
    let fake = FakeApi::start().await;
    for crd in voice_agent_api::crds() {
        fake.register_crd(&crd);
    }
    let client = Client::try_from(kube::Config::new(fake.kube_config_url())).expect("client");
    let reporter = Reporter {
        controller: "voice-agent-operator".into(),
        instance: Some("test".into()),
    };
    let ctx = Context::new(
        client.clone(),
        OperatorSettings::default(),
        Metrics::new(),
        reporter.clone(),
    );
    fake.put_direct(&json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "twilio", "namespace": NS},
        "stringData": {"authToken": "tok"},
    }))
    .expect("secret");
    let signals = Arc::new(MetricsState::new(MetricsConfig::default()).expect("state"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(voice_agent_metrics::serve(
        listener,
        Arc::clone(&signals),
        std::future::pending(),
    ));
    let api: Api<VoiceAgent> = Api::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), &agent())
        .await
        .expect("create");
    let va = api.get("hello").await.expect("get");
    reconcile_agent(&va, &ctx).await.expect("reconcile");
    let ingest = |pods: usize, calls: f64| {
        let at = jiff::Timestamp::now().as_millisecond();
        let samples = (0..pods)
            .map(|i| Sample {
                namespace: NS.into(),
                voice_agent: "hello".into(),
                component: Component::Runtime,
                pod: format!("hello-runtime-{i}"),
                kind: SampleKind::Gauge,
                name: GAUGE_ACTIVE_CALLS.into(),
                value: calls,
                at,
            })
            .collect();
        signals.ingest(&SampleBatch { samples }).expect("ingest");
    };
    let replicas = || {
        fake.get("deployments", Some(NS), "hello-runtime")
            .and_then(|d| d["spec"]["replicas"].as_i64())
            .unwrap_or(-1)
    };

    // The cost of one tick at steady state (2 pods at 15 calls each).
    let mut a = Autoscaler::new(
        client.clone(),
        &url,
        vec![NS.to_string()],
        ctx.metrics.clone(),
        Recorder::new(client.clone(), reporter.clone()),
        Duration::from_secs(1),
    )
    .expect("autoscaler");
    ingest(2, 15.0);
    a.tick().await;
    let n = 20;
    let started = Instant::now();
    for _ in 0..n {
        ingest(2, 15.0);
        let report = a.tick().await;
        assert!(
            report.scaled.is_empty() && report.errors.is_empty(),
            "{report:?}"
        );
    }
    let tick_ms = started.elapsed().as_secs_f64() * 1000.0 / f64::from(n);

    // The loop itself, 2 s ticks: a step lands at an arbitrary moment.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(a.run(Duration::from_secs(2), stop_rx));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(replicas(), 2);
    let step = Instant::now();
    ingest(2, 40.0);
    while replicas() == 2 {
        assert!(step.elapsed() < Duration::from_secs(5), "no reaction");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let reaction = step.elapsed();
    let _ = stop_tx.send(true);
    assert_eq!(replicas(), 5, "2.5× the target: panic to 5");
    eprintln!(
        "live loop: one tick {tick_ms:.1} ms (fake API + metrics service over loopback); a step \
         to 2.5× the target written as replicas {:.0} ms after it arrived",
        reaction.as_secs_f64() * 1000.0
    );
    assert!(reaction <= Duration::from_millis(2_500), "{reaction:?}");
}

/// How long a latency step takes to show in each window of the metrics
/// service: the 6 s p95 the operator's panic mode reads, and the 60 s p95
/// that the HPAs' `..._latency_p95_ms` metrics (and the operator's steady
/// scaling) read. 20 turns per second at 500 ms, then every turn at 2,000 ms
/// against a 1,200 ms target.
#[test]
fn a_latency_step_shows_in_the_6s_window_long_before_the_60s_p95() {
    use voice_agent_metrics::ManualClock;
    use voice_agent_proto::Stage;
    const T0: i64 = 1_700_000_000_000;
    let clock = Arc::new(ManualClock::new(T0));
    let state = MetricsState::with_clock(MetricsConfig::default(), clock.clone()).expect("state");
    let turn = |at: i64, ms: f64| Sample {
        namespace: NS.into(),
        voice_agent: "hello".into(),
        component: Component::Runtime,
        pod: "hello-runtime-0".into(),
        kind: SampleKind::Latency,
        name: Stage::E2e.as_str().into(),
        value: ms,
        at,
    };
    let p95 = |window: u32| {
        state
            .signals(NS, "hello")
            .component(Component::Runtime)
            .and_then(|c| c.window(Stage::E2e, window).copied())
            .map_or(0.0, |w| w.p95_ms)
    };
    // A minute of normal turns, every 50 ms.
    let mut now = T0;
    while now < T0 + 60_000 {
        state
            .ingest(&SampleBatch {
                samples: vec![turn(now, 500.0)],
            })
            .expect("ingest");
        now += 50;
        clock.set(now);
    }
    assert!(p95(60) < 1_200.0 && p95(6) < 1_200.0);
    let step = now;
    let (mut short_at, mut long_at) = (None, None);
    while long_at.is_none() && now < step + 60_000 {
        state
            .ingest(&SampleBatch {
                samples: vec![turn(now, 2_000.0)],
            })
            .expect("ingest");
        now += 50;
        clock.set(now);
        if short_at.is_none() && p95(6) >= 1_200.0 {
            short_at = Some(now - step);
        }
        if p95(60) >= 1_200.0 {
            long_at = Some(now - step);
        }
    }
    let (short, long) = (short_at.expect("6 s window"), long_at.expect("60 s window"));
    eprintln!(
        "latency step 500 → 2000 ms at 20 turns/s: 6 s p95 over the 1200 ms target after {short} ms, \
         60 s p95 after {long} ms"
    );
    assert!(short < long);
}
