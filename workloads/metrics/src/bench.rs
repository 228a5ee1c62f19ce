//! In-process benchmark of the metrics service (`voice-agent bench
//! metrics`): ingest throughput on one thread and `/v1/signals` latency,
//! both through the library and over real HTTP on loopback. It reports
//! percentiles and ratios to the goals and never asserts: wall-clock speed
//! depends on the machine.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use voice_agent_proto::metrics::{GAUGE_ACTIVE_CALLS, GAUGE_CONCURRENCY};
use voice_agent_proto::{Component, Sample, SampleBatch, SampleKind, Stage};

use crate::loopback::Client;
use crate::{Clock, Config, Error, ManualClock, State};

/// Goal: samples per second ingested on one thread.
pub const GOAL_INGEST_SAMPLES_PER_S: f64 = 500_000.0;
/// Goal: p99 of one `/v1/signals` query.
pub const GOAL_SIGNALS_P99: Duration = Duration::from_millis(1);

/// Latency series per VoiceAgent in the benchmark's workload: what a real
/// agent reports (runtime 5 stages, agent 3, tts 1, gateway 1).
const AGENT_SERIES: [(Component, Stage); 10] = [
    (Component::Runtime, Stage::Eou),
    (Component::Runtime, Stage::AgentTtft),
    (Component::Runtime, Stage::AgentTotal),
    (Component::Runtime, Stage::TtsTtfb),
    (Component::Runtime, Stage::E2e),
    (Component::Agent, Stage::Retrieval),
    (Component::Agent, Stage::AgentTtft),
    (Component::Agent, Stage::AgentTotal),
    (Component::Tts, Stage::TtsTtfb),
    (Component::Gateway, Stage::Webhook),
];

/// Benchmark sizes.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Latency series to create (rounded up to whole VoiceAgents of 10).
    pub series: usize,
    /// Samples to ingest for the throughput measurement.
    pub samples: usize,
    /// Samples per batch.
    pub batch: usize,
    /// `/v1/signals` queries per measurement.
    pub queries: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            series: 1_000,
            samples: 2_000_000,
            batch: 1_000,
            queries: 20_000,
        }
    }
}

/// Latency percentiles of one measurement.
#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    /// Measurements taken.
    pub n: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest.
    pub max: Duration,
}

impl Percentiles {
    fn of(mut times: Vec<Duration>) -> Self {
        times.sort_unstable();
        let at = |q: f64| {
            let i = (q * times.len().saturating_sub(1) as f64).floor() as usize;
            times.get(i).copied().unwrap_or_default()
        };
        Percentiles {
            n: times.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: times.last().copied().unwrap_or_default(),
        }
    }
}

/// What the benchmark measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Options used.
    pub options: Options,
    /// Latency plus gauge series held during the queries.
    pub series_held: usize,
    /// Validated batches applied with [`State::ingest`], samples/s.
    pub ingest_samples_per_s: f64,
    /// JSON bodies parsed and applied with [`State::ingest_json`], samples/s.
    pub ingest_json_samples_per_s: f64,
    /// One VoiceAgent's signals via [`State::signals`].
    pub signals_direct: Percentiles,
    /// Every VoiceAgent of the namespace via [`State::signals_list`].
    pub signals_namespace_direct: Percentiles,
    /// One VoiceAgent's signals via `GET /v1/signals` on loopback, one
    /// keep-alive connection.
    pub signals_http: Percentiles,
    /// Whether this is an optimized build; debug numbers mean little.
    pub release_build: bool,
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        writeln!(
            f,
            "metrics bench: {} build, {cores} cores; {} latency series ({} series held), \
             {} samples in batches of {}",
            if self.release_build {
                "release"
            } else {
                "DEBUG (use --release)"
            },
            o.series,
            self.series_held,
            o.samples,
            o.batch,
        )?;
        let goal = GOAL_INGEST_SAMPLES_PER_S;
        for (what, rate) in [
            ("ingest, validated batch", self.ingest_samples_per_s),
            ("ingest, JSON body", self.ingest_json_samples_per_s),
        ] {
            writeln!(
                f,
                "  {what:<28} {:>12.0} samples/s  goal > {goal:.0}: {:.2}x",
                rate,
                rate / goal
            )?;
        }
        let goal = GOAL_SIGNALS_P99;
        for (what, p) in [
            ("signals, one agent, direct", self.signals_direct),
            ("signals, namespace, direct", self.signals_namespace_direct),
            ("signals, one agent, HTTP", self.signals_http),
        ] {
            writeln!(
                f,
                "  {what:<28} n={:<6} p50 {:>8.1} µs  p99 {:>8.1} µs  max {:>8.1} µs  \
                 goal p99 < {} µs: {:.2}x headroom",
                p.n,
                us(p.p50),
                us(p.p99),
                us(p.max),
                goal.as_micros(),
                goal.as_secs_f64() / p.p99.as_secs_f64().max(1e-9),
            )?;
        }
        Ok(())
    }
}

/// xorshift64: deterministic pseudo-random numbers without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A latency-like value: log-uniform between 20 ms and 2 s.
    fn latency_ms(&mut self) -> f64 {
        20.0 * 100f64.powf(self.unit())
    }
}

fn agent_name(i: usize) -> String {
    format!("agent-{i:04}")
}

/// Builds `count` batches of the workload; samples are stamped by the
/// caller's clock when applied, so only offsets are chosen here.
fn workload(agents: usize, batches: usize, batch: usize, rng: &mut XorShift) -> Vec<SampleBatch> {
    let names: Vec<String> = (0..agents).map(agent_name).collect();
    (0..batches)
        .map(|_| SampleBatch {
            samples: (0..batch)
                .map(|_| {
                    let a = (rng.next() % agents as u64) as usize;
                    // One sample in ten is a gauge, as pods report load
                    // about once a second and latency per turn.
                    let pick = rng.next();
                    let (component, kind, name, value) = if pick.is_multiple_of(10) {
                        let (c, n) = match pick % 3 {
                            0 => (Component::Runtime, GAUGE_ACTIVE_CALLS),
                            1 => (Component::Runtime, GAUGE_CONCURRENCY),
                            _ => (Component::Agent, GAUGE_CONCURRENCY),
                        };
                        (c, SampleKind::Gauge, n, (rng.next() % 20) as f64)
                    } else {
                        let (c, s) = AGENT_SERIES[(pick % 10) as usize];
                        (c, SampleKind::Latency, s.as_str(), rng.latency_ms())
                    };
                    Sample {
                        namespace: "bench".to_owned(),
                        voice_agent: names[a].clone(),
                        component,
                        pod: format!("{}-{component}-{}", names[a], pick % 2),
                        kind,
                        name: name.to_owned(),
                        value,
                        // Replaced with the clock's time before ingesting.
                        at: 0,
                    }
                })
                .collect(),
        })
        .collect()
}

fn stamp(batch: &mut SampleBatch, now_ms: i64, rng: &mut XorShift) {
    for s in &mut batch.samples {
        // Up to 2 s old, as a pod's batch of the last interval would be.
        s.at = now_ms - (rng.next() % 2_000) as i64;
    }
}

/// Runs the benchmark. Uses a [`ManualClock`] that advances 60 ms per batch,
/// so ingestion also churns the windows' ring slots.
pub async fn run(options: Options) -> Result<Report, Error> {
    let agents = options.series.div_ceil(AGENT_SERIES.len()).max(1);
    let batch = options.batch.max(1);
    let batches = options.samples.div_ceil(batch).max(1);
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let config = Config {
        max_samples_per_batch: batch,
        max_series: usize::MAX,
        ..Config::default()
    };
    let state = Arc::new(State::with_clock(config, clock.clone())?);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);

    // Every latency series exists before timing, so the runs measure the
    // steady state rather than first-time allocation.
    let now = clock.now_ms();
    let warm: Vec<Sample> = (0..agents)
        .flat_map(|a| {
            AGENT_SERIES.iter().map(move |(component, stage)| Sample {
                namespace: "bench".to_owned(),
                voice_agent: agent_name(a),
                component: *component,
                pod: format!("{}-{component}-0", agent_name(a)),
                kind: SampleKind::Latency,
                name: stage.as_str().to_owned(),
                value: 100.0,
                at: now,
            })
        })
        .collect();
    for chunk in warm.chunks(batch) {
        let chunk = SampleBatch {
            samples: chunk.to_vec(),
        };
        state
            .ingest(&chunk)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }

    // Ingest, validated batches: batch k is applied at start + 60 (k + 1).
    let mut work = workload(agents, batches, batch, &mut rng);
    let start = clock.now_ms();
    for (k, b) in work.iter_mut().enumerate() {
        stamp(b, start + 60 * (k as i64 + 1), &mut rng);
    }
    let started = Instant::now();
    let mut applied = 0usize;
    for b in &work {
        clock.advance(60);
        applied += state.ingest(b).unwrap_or(0);
    }
    let ingest_samples_per_s = applied as f64 / started.elapsed().as_secs_f64();

    // Ingest, JSON bodies (parse + validate + apply); fewer batches, as the
    // bodies are large. Time keeps moving forward.
    let json_batches = batches.min(500);
    let start = clock.now_ms();
    let bodies: Vec<Vec<u8>> = work[..json_batches]
        .iter_mut()
        .enumerate()
        .map(|(k, b)| {
            stamp(b, start + 60 * (k as i64 + 1), &mut rng);
            serde_json::to_vec(b).unwrap_or_default()
        })
        .collect();
    drop(work);
    let started = Instant::now();
    let mut applied = 0usize;
    for body in &bodies {
        clock.advance(60);
        applied += state.ingest_json(body).unwrap_or(0);
    }
    let ingest_json_samples_per_s = applied as f64 / started.elapsed().as_secs_f64();
    drop(bodies);

    // Signals, through the library.
    let names: Vec<String> = (0..agents).map(agent_name).collect();
    let mut times = Vec::with_capacity(options.queries);
    for i in 0..options.queries {
        let va = &names[(rng.next() % agents as u64) as usize];
        let t = Instant::now();
        let s = state.signals("bench", va);
        times.push(t.elapsed());
        if i == 0 && s.components.is_empty() {
            tracing::warn!("bench: signals are empty; the numbers measure nothing");
        }
    }
    let signals_direct = Percentiles::of(times);
    let mut times = Vec::with_capacity(options.queries / 20);
    for _ in 0..(options.queries / 20).max(10) {
        let t = Instant::now();
        std::hint::black_box(state.signals_list(Some("bench")));
        times.push(t.elapsed());
    }
    let signals_namespace_direct = Percentiles::of(times);

    // Signals, over HTTP on loopback.
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::serve(listener, Arc::clone(&state), async move {
        let _ = stopped.await;
    }));
    let mut client = Client::connect(addr).await?;
    let paths: Vec<String> = names
        .iter()
        .map(|va| format!("/v1/signals?namespace=bench&voiceAgent={va}"))
        .collect();
    let mut times = Vec::with_capacity(options.queries);
    for i in 0..options.queries + 100 {
        let path = &paths[(rng.next() % agents as u64) as usize];
        let t = Instant::now();
        let reply = client.get(path).await?;
        let elapsed = t.elapsed();
        if reply.status != 200 {
            tracing::warn!(status = reply.status, "bench: unexpected status");
        }
        // The first 100 warm up the connection and the server's tasks.
        if i >= 100 {
            times.push(elapsed);
        }
    }
    let signals_http = Percentiles::of(times);
    drop(client);
    let _ = stop.send(());
    if let Ok(Err(err)) = server.await {
        return Err(err);
    }

    Ok(Report {
        options,
        series_held: state.series(),
        ingest_samples_per_s,
        ingest_json_samples_per_s,
        signals_direct,
        signals_namespace_direct,
        signals_http,
        release_build: !cfg!(debug_assertions),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tiny_run_completes_and_reports() {
        let report = run(Options {
            series: 20,
            samples: 2_000,
            batch: 100,
            queries: 40,
        })
        .await
        .expect("bench runs");
        assert!(report.ingest_samples_per_s > 0.0);
        assert_eq!(report.signals_http.n, 40);
        // 2 agents x 10 latency series, plus their gauges.
        assert!(report.series_held >= 20, "{}", report.series_held);
        let text = report.to_string();
        assert!(text.contains("samples/s") && text.contains("p99"), "{text}");
    }
}
