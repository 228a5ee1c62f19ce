//! In-process benchmark of the tts service (`voice-agent bench tts`): local
//! espeak-ng time to first audio byte and whole-sentence synthesis over real
//! HTTP on loopback, and the phrase cache's time to first byte. It reports
//! percentiles and ratios to the goals and never asserts: wall-clock speed
//! depends on the machine.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use voice_agent_proto::{AudioFormat, SynthesizeRequest};

use crate::provider::elevenlabs::client_builder;
use crate::{Config, Error, ProviderError, State, Synthesis};

/// Goal: time to first audio byte of a local synthesis, p50, over HTTP.
pub const GOAL_TTFB: Duration = Duration::from_millis(80);
/// Goal: time to first byte of a cached phrase, p50.
pub const GOAL_CACHE_TTFB: Duration = Duration::from_millis(1);
/// The sentence synthesized: twelve words, a typical agent sentence.
pub const SENTENCE: &str =
    "Thanks for calling, your appointment is confirmed for Tuesday at three o'clock.";

/// Benchmark sizes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Syntheses per measurement.
    pub runs: usize,
    /// Cache hits per measurement.
    pub cache_runs: usize,
    /// The espeak-ng executable.
    pub espeak_bin: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            runs: 30,
            cache_runs: 2_000,
            espeak_bin: "espeak-ng".into(),
        }
    }
}

/// Percentiles of one measurement.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    /// Measurements taken.
    pub n: usize,
    /// Median.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// Slowest.
    pub max: Duration,
}

impl Percentiles {
    fn of(mut times: Vec<Duration>) -> Self {
        times.sort_unstable();
        let at = |q: f64| {
            let i = (q * times.len().saturating_sub(1) as f64).round() as usize;
            times.get(i).copied().unwrap_or_default()
        };
        Percentiles {
            n: times.len(),
            p50: at(0.5),
            p95: at(0.95),
            max: times.last().copied().unwrap_or_default(),
        }
    }
}

/// What [`run`] measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// The options used.
    pub options: Options,
    /// Whether this is an optimized build.
    pub release_build: bool,
    /// Length of the synthesized audio.
    pub audio: Duration,
    /// Synthesis, HTTP: request sent → first audio byte received.
    pub ttfb_http: Percentiles,
    /// Synthesis, HTTP: request sent → last byte received.
    pub total_http: Percentiles,
    /// Synthesis, in-process: `State::synthesize` → first chunk.
    pub ttfb_direct: Percentiles,
    /// Cache hit, HTTP: request sent → first byte received.
    pub cache_http: Percentiles,
    /// Cache hit, in-process: `State::synthesize` → audio in hand.
    pub cache_direct: Percentiles,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A duration in ms, or in µs below a millisecond.
fn short(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.2} ms", ms(d))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        writeln!(
            f,
            "tts bench: {} build, {cores} cores; local espeak-ng, pcm16 16 kHz, \
             {} words ({:.2} s of audio), {} syntheses, {} cache hits",
            if self.release_build {
                "release"
            } else {
                "DEBUG (use --release)"
            },
            SENTENCE.split_whitespace().count(),
            self.audio.as_secs_f64(),
            self.options.runs,
            self.options.cache_runs,
        )?;
        let row =
            |f: &mut fmt::Formatter<'_>, what: &str, p: Percentiles, goal: Option<Duration>| {
                write!(
                    f,
                    "  {what:<30} n={:<5} p50 {:>9}  p95 {:>9}  max {:>9}",
                    p.n,
                    short(p.p50),
                    short(p.p95),
                    short(p.max)
                )?;
                if let Some(goal) = goal {
                    write!(
                        f,
                        "  goal p50 < {}: p50/goal {:.4}",
                        short(goal),
                        p.p50.as_secs_f64() / goal.as_secs_f64()
                    )?;
                }
                writeln!(f)
            };
        row(f, "synthesis TTFB, HTTP", self.ttfb_http, Some(GOAL_TTFB))?;
        row(f, "synthesis TTFB, in-process", self.ttfb_direct, None)?;
        row(f, "whole sentence, HTTP", self.total_http, None)?;
        let audio = self.audio.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "  {:<30} p50 {:.4}  p95 {:.4}  ({:.0}x faster than real time at p50)",
            "real-time factor (time/audio)",
            self.total_http.p50.as_secs_f64() / audio,
            self.total_http.p95.as_secs_f64() / audio,
            audio / self.total_http.p50.as_secs_f64().max(1e-9),
        )?;
        row(
            f,
            "cache hit TTFB, HTTP",
            self.cache_http,
            Some(GOAL_CACHE_TTFB),
        )?;
        row(
            f,
            "cache hit, in-process",
            self.cache_direct,
            Some(GOAL_CACHE_TTFB),
        )?;
        Ok(())
    }
}

fn request() -> SynthesizeRequest {
    SynthesizeRequest {
        text: SENTENCE.into(),
        voice: None,
        format: AudioFormat::Pcm16,
        sample_rate: 16_000,
    }
}

fn bench_error(message: String) -> Error {
    Error::Provider(ProviderError::Failed {
        provider: "bench",
        message,
    })
}

async fn start(config: Config) -> Result<(Arc<State>, SocketAddr), Error> {
    let state = Arc::new(State::new(config)?);
    state.check_provider().await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let router = crate::router(Arc::clone(&state));
    tokio::spawn(async move {
        let _ = axum::serve(voice_agent_http::nodelay(listener), router).await;
    });
    Ok((state, addr))
}

/// One request over HTTP: (time to first body byte, time to the end, bytes).
async fn timed_post(
    client: &reqwest::Client,
    url: &str,
    body: &str,
) -> Result<(Duration, Duration, usize), Error> {
    let http = |e: reqwest::Error| bench_error(format!("HTTP: {e}"));
    let started = Instant::now();
    let mut response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_owned())
        .send()
        .await
        .map_err(http)?;
    if !response.status().is_success() {
        return Err(bench_error(format!("status {}", response.status())));
    }
    let mut first = None;
    let mut bytes = 0;
    while let Some(chunk) = response.chunk().await.map_err(http)? {
        if first.is_none() && !chunk.is_empty() {
            first = Some(started.elapsed());
        }
        bytes += chunk.len();
    }
    let total = started.elapsed();
    Ok((first.unwrap_or(total), total, bytes))
}

/// Runs the benchmark on the current runtime.
pub async fn run(options: Options) -> Result<Report, Error> {
    let base = Config {
        espeak_bin: options.espeak_bin.clone(),
        max_concurrent: 2,
        ..Config::default()
    };
    let (uncached, uncached_addr) = start(Config {
        cache_bytes: 0,
        ..base.clone()
    })
    .await?;
    let (cached, cached_addr) = start(base).await?;
    let client = client_builder()
        .build()
        .map_err(|e| bench_error(format!("HTTP client: {e}")))?;
    let body = serde_json::to_string(&request()).map_err(|e| bench_error(e.to_string()))?;

    // Warm-up: page cache, espeak-ng data files, filter designs.
    let url = format!("http://{uncached_addr}/v1/synthesize");
    let (_, _, bytes) = timed_post(&client, &url, &body).await?;
    let audio = Duration::from_secs_f64(bytes as f64 / 2.0 / 16_000.0);

    let mut ttfb = Vec::with_capacity(options.runs);
    let mut total = Vec::with_capacity(options.runs);
    for _ in 0..options.runs {
        let (first, all, _) = timed_post(&client, &url, &body).await?;
        ttfb.push(first);
        total.push(all);
    }

    let req = request();
    let mut direct = Vec::with_capacity(options.runs);
    for _ in 0..options.runs {
        let started = Instant::now();
        let synthesis = uncached
            .synthesize(&req)
            .await
            .map_err(|e| bench_error(e.to_string()))?;
        direct.push(started.elapsed());
        if let Synthesis::Streaming(mut stream) = synthesis {
            while let Some(chunk) = stream.next_chunk().await {
                chunk?;
            }
        }
    }

    let url = format!("http://{cached_addr}/v1/synthesize");
    timed_post(&client, &url, &body).await?;
    let mut cache_http = Vec::with_capacity(options.cache_runs);
    for _ in 0..options.cache_runs {
        cache_http.push(timed_post(&client, &url, &body).await?.0);
    }
    let mut cache_direct = Vec::with_capacity(options.cache_runs);
    for _ in 0..options.cache_runs {
        let started = Instant::now();
        let synthesis = cached
            .synthesize(&req)
            .await
            .map_err(|e| bench_error(e.to_string()))?;
        let elapsed = started.elapsed();
        if !matches!(synthesis, Synthesis::Cached { .. }) {
            return Err(bench_error("expected a cache hit".into()));
        }
        cache_direct.push(elapsed);
    }

    Ok(Report {
        options,
        release_build: !cfg!(debug_assertions),
        audio,
        ttfb_http: Percentiles::of(ttfb),
        total_http: Percentiles::of(total),
        ttfb_direct: Percentiles::of(direct),
        cache_http: Percentiles::of(cache_http),
        cache_direct: Percentiles::of(cache_direct),
    })
}
