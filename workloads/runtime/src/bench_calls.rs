//! `voice-agent bench calls`: the runtime carrying whole calls, measured from
//! the outside over its real interfaces (`POST /api/sessions`, Twilio Media
//! Streams WebSockets, the agent and TTS HTTP clients).
//!
//! Two measurements (reported, not asserted):
//!
//! - **Orchestration overhead per turn.** With agent and TTS stubs that
//!   answer at once, a turn's `e2e` (end of caller speech → first reply audio
//!   sent) minus `eou` (the recognizer's endpointing), `agentTtft` and
//!   `ttsTtfb` (the stubs' answers as the runtime sees them, loopback HTTP
//!   included) is what the runtime itself adds: spawning the reply, sentence
//!   splitting, the channels between tasks, pacing the first frame.
//! - **Concurrent calls on one core.** N calls at once, each streaming
//!   real-time 20 ms frames of speech/silence turns, against a runtime on
//!   one current-thread Tokio runtime: CPU and RSS per call, how late the
//!   reply audio reaches the caller, and turns lost.
//!
//! The runtime under test is normally a separate process (`voice-agent bench
//! calls-server`, see [`run_server_process`]) so its CPU and RSS are read
//! alone from `/proc`; the stubs and the load generator run in the bench's
//! process, each on its own thread. With two or more CPUs and `taskset`
//! present, the runtime is pinned to CPU 0 and the bench to CPU 1. The
//! recognizer is [`RepeatingStt`](crate::testing::RepeatingStt): the
//! runtime's VAD with the configured endpointing as hangover, the same line
//! at every pause.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};
use voice_agent_api::deploy::ComponentConfig;
use voice_agent_http::bench::{self, ChildServer};
use voice_agent_proto::agent::{
    CitationsEvent, DeltaEvent, DoneEvent, SSE_CITATIONS, SSE_CONTENT_TYPE, SSE_DELTA, SSE_DONE,
};
use voice_agent_proto::mediastreams::{MarkName, MediaFormat, MediaPayload, Message, StartMeta};
use voice_agent_proto::tts::AUDIO_DURATION_HEADER;
use voice_agent_proto::{
    AgentLatency, AudioFormat, Citation, CreateSessionRequest, CreateSessionResponse, Transport,
};

use crate::sessions::SessionDetail;
use crate::testing::RepeatingStt;
use crate::{Config, State};

/// The VoiceAgent the bench's runtime serves.
pub const VOICE_AGENT: &str = "bench";
/// What the recognizer "hears" at every pause.
pub const CALLER_LINE: &str = "What time do you open on Saturday?";
/// The stub agent's reply: two sentences, streamed as two deltas.
pub const REPLY: [&str; 2] = ["We open at ten on Saturday. ", "See you soon!"];

/// The component config of the runtime under test (endpoints are replaced
/// with the stubs'; no metrics service; a drain cuts calls at once).
const COMPONENT_YAML: &str = r#"
voiceAgent: bench
namespace: bench
persona:
  greeting: "Thanks for calling Harbor Bikes."
  instructions: "Benchmark."
  language: en-US
llm:
  provider: local
stt: {}
tts: {}
knowledge: {}
database: false
telephony:
  publicUrl: https://voice.example.com
  twilio:
    authTokenSecretRef: {name: twilio, key: authToken}
runtime:
  maxCallsPerPod: 1
  drainTimeoutSeconds: 0
endpoints:
  gateway: http://127.0.0.1:9
  runtime: http://127.0.0.1:9
  agent: http://127.0.0.1:9
  tts: http://127.0.0.1:9
"#;

/// One tick of the caller's clock: a 20 ms frame.
const FRAME: Duration = Duration::from_millis(20);
/// Frames per second.
const FRAMES_PER_S: u64 = 50;
/// Ticks after the last answer window before the callers hang up.
const TAIL_TICKS: u64 = 25;
/// A reply whose frames stop for this long is over even without a mark.
const REPLY_GAP: Duration = Duration::from_secs(1);
/// Frames queued towards one call's socket before the generator drops one.
const CALL_QUEUE: usize = 16;
/// The callers' WebSocket read buffer (a reply frame is ~250 bytes; larger
/// messages still fit, the buffer grows for them).
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// A benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Starting or talking to a process, a socket or a file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Something else went wrong setting up.
    #[error("{0}")]
    Setup(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let context = context.into();
    move |source| BenchError::Io { context, source }
}

/// Where the runtime under test runs.
#[derive(Debug, Clone)]
pub enum Server {
    /// On a thread of this process (tests). CPU is that thread's; RSS is not
    /// measured (it would include the bench).
    InProcess,
    /// A child process: `program args… --agent-url U --tts-url U --capacity
    /// N`, which must behave like [`run_server_process`].
    Process {
        /// The executable (normally `std::env::current_exe()`).
        program: PathBuf,
        /// Arguments before the generated ones (e.g. `bench calls-server`).
        args: Vec<String>,
        /// Pin the child to CPU 0 and this process to CPU 1 with `taskset`
        /// (when there are two CPUs and `taskset` is installed).
        pin_cpus: bool,
    },
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Load levels: simultaneous calls.
    pub calls: Vec<usize>,
    /// Steady-state seconds measured per load level (after the ramp).
    pub seconds: u64,
    /// Turns for the overhead measurement (0 skips it).
    pub overhead_turns: usize,
    /// Calls the overhead turns are spread over (staggered, so their turns
    /// do not coincide).
    pub overhead_calls: usize,
    /// Caller speech per turn, ms.
    pub speech_ms: u64,
    /// Caller silence after each turn (the reply plays), ms.
    pub silence_ms: u64,
    /// Silence before the first turn (the greeting plays), ms.
    pub lead_in_ms: u64,
    /// Audio the TTS stub returns per sentence, ms (a reply has two).
    pub sentence_audio_ms: u64,
    /// Where the runtime runs.
    pub server: Server,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            calls: vec![1, 100, 500, 1000],
            seconds: 20,
            overhead_turns: 100,
            overhead_calls: 5,
            speech_ms: 1_200,
            silence_ms: 3_000,
            lead_in_ms: 1_500,
            sentence_audio_ms: 750,
            server: Server::InProcess,
        }
    }
}

// ---------------------------------------------------------------------------
// The runtime under test.

/// How the runtime under test is configured.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Base URL of the agent (stub).
    pub agent_url: String,
    /// Base URL of the TTS service (stub).
    pub tts_url: String,
    /// Sessions it accepts.
    pub capacity: u32,
}

/// Binds a loopback port, builds the runtime's real [`State`] (with the
/// [`RepeatingStt`] recognizer) and spawns [`crate::serve`] until `shutdown`.
/// Must be called within a Tokio runtime; returns the address and the
/// serving task.
pub async fn start_server(
    options: &ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<
    (
        SocketAddr,
        tokio::task::JoinHandle<Result<(), crate::Error>>,
    ),
    BenchError,
> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io_err("binding the runtime's port"))?;
    let addr = listener
        .local_addr()
        .map_err(io_err("reading the runtime's address"))?;
    let mut cc = ComponentConfig::from_yaml(COMPONENT_YAML)
        .map_err(|e| BenchError::Setup(format!("bench component config: {e}")))?;
    cc.runtime.max_calls_per_pod = i32::try_from(options.capacity.max(1)).unwrap_or(i32::MAX);
    cc.endpoints.agent = options.agent_url.clone();
    cc.endpoints.tts = options.tts_url.clone();
    cc.endpoints.metrics = None;
    let listen = addr.to_string();
    // Only what the bench sets; the environment of the machine is ignored.
    let config = Config::from_component_config(&cc, |k| {
        (k == "VOICE_AGENT_RUNTIME_LISTEN").then(|| listen.clone())
    })
    .map_err(|e| BenchError::Setup(format!("runtime config: {e}")))?;
    let stt = Arc::new(RepeatingStt {
        line: Arc::from(CALLER_LINE),
    });
    let state =
        State::new(config, stt).map_err(|e| BenchError::Setup(format!("runtime state: {e}")))?;
    let serving = tokio::spawn(crate::serve(listener, Arc::new(state), shutdown));
    Ok((addr, serving))
}

/// The body of `voice-agent bench calls-server`: serves the runtime under
/// test on one current-thread Tokio runtime (one core, literally), prints
/// its address as the first line on stdout, and stops when stdin closes (the
/// bench is gone) or `shutdown` completes.
pub fn run_server_process(
    options: &ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BenchError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_err("starting the runtime's Tokio runtime"))?;
    let closed_rx = bench::stdin_closed();
    rt.block_on(async move {
        let stop = async move {
            tokio::select! {
                _ = closed_rx => {}
                () = shutdown => {}
            }
        };
        let (addr, serving) = start_server(options, stop).await?;
        bench::announce(addr).map_err(io_err("writing the address"))?;
        match serving.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(BenchError::Setup(format!("serving: {e}"))),
            Err(e) => Err(BenchError::Setup(format!("serving task: {e}"))),
        }
    })
}

/// A running runtime under test.
enum ServerHandle {
    Child(ChildServer),
    Thread {
        addr: SocketAddr,
        tid: Option<u32>,
        stop: oneshot::Sender<()>,
        thread: std::thread::JoinHandle<()>,
    },
}

impl ServerHandle {
    fn start(server: &Server, stubs: &Stubs, capacity: u32) -> Result<Self, BenchError> {
        let options = ServerOptions {
            agent_url: stubs.agent_url.clone(),
            tts_url: stubs.tts_url.clone(),
            capacity,
        };
        match server {
            Server::InProcess => Self::start_thread(options),
            Server::Process {
                program,
                args,
                pin_cpus,
            } => Self::start_child(program, args, *pin_cpus, &options),
        }
    }

    fn start_thread(options: ServerOptions) -> Result<Self, BenchError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("runtime-under-test".into())
            .spawn(move || {
                let tid = bench::current_tid();
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(BenchError::Setup(format!("tokio: {e}"))));
                        return;
                    }
                };
                rt.block_on(async move {
                    let stop = async move {
                        let _ = stop_rx.await;
                    };
                    match start_server(&options, stop).await {
                        Ok((addr, serving)) => {
                            let _ = ready_tx.send(Ok((addr, tid)));
                            let _ = serving.await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(io_err("starting the runtime thread"))?;
        let (addr, tid) = ready_rx
            .recv()
            .map_err(|_| BenchError::Setup("the runtime thread stopped".into()))??;
        Ok(Self::Thread {
            addr,
            tid,
            stop: stop_tx,
            thread,
        })
    }

    fn start_child(
        program: &Path,
        args: &[String],
        pin: bool,
        options: &ServerOptions,
    ) -> Result<Self, BenchError> {
        let args = args.iter().cloned().chain([
            "--agent-url".to_owned(),
            options.agent_url.clone(),
            "--tts-url".to_owned(),
            options.tts_url.clone(),
            "--capacity".to_owned(),
            options.capacity.to_string(),
        ]);
        ChildServer::spawn(program, args, pin.then_some(0))
            .map(Self::Child)
            .map_err(io_err(format!("starting {}", program.display())))
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Self::Child(child) => child.addr(),
            Self::Thread { addr, .. } => *addr,
        }
    }

    fn probe(&self) -> Probe {
        match self {
            Self::Child(child) => Probe {
                pid: child.pid(),
                tid: None,
                rss: true,
            },
            Self::Thread { tid, .. } => Probe {
                pid: std::process::id(),
                tid: *tid,
                rss: false,
            },
        }
    }

    /// Stops the runtime: closes its stdin (or signals its thread), waits a
    /// few seconds for the drain, then kills it.
    fn stop(self) {
        match self {
            Self::Child(child) => child.stop(),
            Self::Thread { stop, thread, .. } => {
                let _ = stop.send(());
                let _ = thread.join();
            }
        }
    }
}

/// Where the CPU time and memory of the runtime under test are read.
#[derive(Debug, Clone, Copy)]
struct Probe {
    pid: u32,
    /// A thread of `pid` (in-process runtime) instead of the whole process.
    tid: Option<u32>,
    /// Whether the process's RSS is the runtime's alone.
    rss: bool,
}

impl Probe {
    /// CPU time used so far, ns.
    fn cpu_ns(&self) -> Option<u64> {
        match self.tid {
            Some(tid) => bench::thread_sched(self.pid, tid).map(|(on_cpu, _)| on_cpu),
            None => bench::process_cpu(self.pid).map(|d| d.as_nanos() as u64),
        }
    }

    /// (on-CPU ns, runnable-but-waiting ns) of the thread that runs the
    /// runtime's event loop: the wait shows whether something else took its
    /// core.
    fn loop_sched(&self) -> Option<(u64, u64)> {
        bench::thread_sched(self.pid, self.tid.unwrap_or(self.pid))
    }

    /// Resident set size, KiB.
    fn rss_kib(&self) -> Option<u64> {
        self.rss.then(|| bench::rss_kib(self.pid)).flatten()
    }
}

// ---------------------------------------------------------------------------
// Zero-latency agent and TTS stubs.

/// Requests the stubs served and how long they took (request handed to the
/// handler → response built).
#[derive(Debug, Default)]
struct StubStats {
    agent_requests: AtomicU64,
    agent_ns: AtomicU64,
    tts_requests: AtomicU64,
    tts_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl StubStats {
    fn record(&self, requests: &AtomicU64, total: &AtomicU64, since: Instant) {
        let ns = since.elapsed().as_nanos() as u64;
        requests.fetch_add(1, Ordering::Relaxed);
        total.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }
}

struct Stubs {
    agent_url: String,
    tts_url: String,
    stats: Arc<StubStats>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Clone)]
struct StubState {
    sse: bytes::Bytes,
    audio: bytes::Bytes,
    audio_ms: u64,
    stats: Arc<StubStats>,
}

impl Stubs {
    /// Starts the agent and TTS stubs on one loopback port, on a thread of
    /// their own.
    fn start(sentence_audio_ms: u64) -> Result<Self, BenchError> {
        let stats = Arc::new(StubStats::default());
        let state = StubState {
            sse: sse_reply()?,
            audio: reply_audio(sentence_audio_ms),
            audio_ms: sentence_audio_ms,
            stats: Arc::clone(&stats),
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-stubs".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(BenchError::Setup(format!("tokio: {e}"))));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match TcpListener::bind("127.0.0.1:0").await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(io_err("binding the stubs")(e)));
                            return;
                        }
                    };
                    let addr = listener.local_addr();
                    let _ = ready_tx.send(addr.map_err(io_err("stub address")));
                    let app = Router::new()
                        .route("/v1/respond", post(stub_respond))
                        .route("/v1/synthesize", post(stub_synthesize))
                        .with_state(state);
                    let _ = axum::serve(voice_agent_http::nodelay(listener), app)
                        .with_graceful_shutdown(async move {
                            let _ = stop_rx.await;
                        })
                        .await;
                });
            })
            .map_err(io_err("starting the stub thread"))?;
        let addr = ready_rx
            .recv()
            .map_err(|_| BenchError::Setup("the stub thread stopped".into()))??;
        Ok(Self {
            agent_url: format!("http://{addr}"),
            tts_url: format!("http://{addr}"),
            stats,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    fn summary(&self) -> StubSummary {
        let s = &self.stats;
        let mean_us = |n: &AtomicU64, ns: &AtomicU64| {
            let n = n.load(Ordering::Relaxed);
            if n == 0 {
                0.0
            } else {
                ns.load(Ordering::Relaxed) as f64 / n as f64 / 1000.0
            }
        };
        StubSummary {
            agent_requests: s.agent_requests.load(Ordering::Relaxed),
            agent_mean_us: mean_us(&s.agent_requests, &s.agent_ns),
            tts_requests: s.tts_requests.load(Ordering::Relaxed),
            tts_mean_us: mean_us(&s.tts_requests, &s.tts_ns),
            max_us: s.max_ns.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }

    fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The agent's whole SSE answer (DESIGN.md §5 "agent"): two deltas,
/// citations, done.
fn sse_reply() -> Result<bytes::Bytes, BenchError> {
    let citation = Citation {
        document_id: "hours".into(),
        chunk_id: "hours-0".into(),
        title: "Opening hours".into(),
        score: 0.9,
        snippet: "On Saturday we open at 10 am.".into(),
    };
    let mut body = String::new();
    for text in REPLY {
        let data = to_json(&DeltaEvent { text: text.into() })?;
        body.push_str(&format!("event: {SSE_DELTA}\ndata: {data}\n\n"));
    }
    let data = to_json(&CitationsEvent {
        citations: vec![citation],
    })?;
    body.push_str(&format!("event: {SSE_CITATIONS}\ndata: {data}\n\n"));
    let data = to_json(&DoneEvent {
        reply: REPLY.concat(),
        latency: AgentLatency {
            retrieval_ms: 0.0,
            llm_ttft_ms: 0.0,
            llm_total_ms: 0.0,
            total_ms: 0.0,
        },
    })?;
    body.push_str(&format!("event: {SSE_DONE}\ndata: {data}\n\n"));
    Ok(bytes::Bytes::from(body))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, BenchError> {
    serde_json::to_string(value).map_err(|e| BenchError::Setup(format!("stub reply: {e}")))
}

/// `ms` of a 180 Hz tone as 8 kHz mu-law (the TTS stub's "speech").
fn reply_audio(ms: u64) -> bytes::Bytes {
    let samples = (ms * 8) as usize;
    let pcm: Vec<i16> = (0..samples)
        .map(|i| ((2.0 * std::f32::consts::PI * 180.0 * i as f32 / 8000.0).sin() * 6000.0) as i16)
        .collect();
    bytes::Bytes::from(voice_agent_proto::audio::encode_mulaw(&pcm))
}

async fn stub_respond(axum::extract::State(s): axum::extract::State<StubState>) -> Response {
    let since = Instant::now();
    let resp = (
        [(CONTENT_TYPE, HeaderValue::from_static(SSE_CONTENT_TYPE))],
        s.sse.clone(),
    )
        .into_response();
    s.stats
        .record(&s.stats.agent_requests, &s.stats.agent_ns, since);
    resp
}

async fn stub_synthesize(axum::extract::State(s): axum::extract::State<StubState>) -> Response {
    let since = Instant::now();
    let content_type =
        AudioFormat::Mulaw.content_type(voice_agent_proto::mediastreams::SAMPLE_RATE);
    let mut resp = s.audio.clone().into_response();
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        headers.insert(CONTENT_TYPE, v);
    }
    headers.insert(AUDIO_DURATION_HEADER, HeaderValue::from(s.audio_ms));
    s.stats
        .record(&s.stats.tts_requests, &s.stats.tts_ns, since);
    resp
}

// ---------------------------------------------------------------------------
// The callers.

/// The caller's turn-taking rhythm, in 20 ms ticks.
#[derive(Debug, Clone, Copy)]
struct Shape {
    lead_in: u64,
    speech: u64,
    cycle: u64,
}

impl Shape {
    fn of(options: &Options) -> Result<Self, BenchError> {
        let ticks = |ms: u64| ms.div_ceil(20);
        let shape = Self {
            lead_in: ticks(options.lead_in_ms),
            speech: ticks(options.speech_ms),
            cycle: ticks(options.speech_ms) + ticks(options.silence_ms),
        };
        if shape.speech < 5 || shape.cycle <= shape.speech {
            return Err(BenchError::Setup(
                "speech must last at least 100 ms and silence must follow it".into(),
            ));
        }
        Ok(shape)
    }
}

/// The precomputed inbound Media Streams frames.
struct Frames {
    speech: Vec<Utf8Bytes>,
    silence: Utf8Bytes,
}

impl Frames {
    fn new(speech_frames: u64) -> Self {
        let frame = |pcm: &[i16]| -> Utf8Bytes {
            let payload =
                voice_agent_proto::base64::encode(&voice_agent_proto::audio::encode_mulaw(pcm));
            // The fields Twilio sends; every call shares the stream id (the
            // runtime keeps the one from `start`).
            Message::Media {
                sequence_number: Some("42".into()),
                media: MediaPayload {
                    track: Some("inbound".into()),
                    chunk: Some("41".into()),
                    timestamp: Some("820".into()),
                    payload,
                },
                stream_sid: "MZ00000000000000000000000000bench".into(),
            }
            .to_json()
            .into()
        };
        // A 220 Hz voice with a 4 Hz syllable envelope: loud enough for the
        // VAD throughout, with dips like speech.
        let speech = (0..speech_frames)
            .map(|f| {
                let pcm: Vec<i16> = (0..160)
                    .map(|i| {
                        let t = (f * 160 + i) as f32 / 8000.0;
                        let envelope = 0.6 + 0.4 * (2.0 * std::f32::consts::PI * 4.0 * t).sin();
                        let voice = (2.0 * std::f32::consts::PI * 220.0 * t).sin()
                            + 0.3 * (2.0 * std::f32::consts::PI * 440.0 * t).sin();
                        (7000.0 * envelope * voice) as i16
                    })
                    .collect();
                frame(&pcm)
            })
            .collect();
        Self {
            speech,
            silence: frame(&[0i16; 160]),
        }
    }
}

/// One load level (or the overhead run).
#[derive(Debug, Clone, Copy)]
struct Plan {
    calls: usize,
    /// Call starts are spread evenly over this many ticks.
    ramp: u64,
    /// Turns each call speaks at most.
    max_bursts: Option<u64>,
    /// Steady-state ticks measured after ramp and lead-in (load levels).
    steady: Option<u64>,
}

/// What a call's side of the socket saw.
#[derive(Debug, Default)]
struct CallLog {
    /// First frame of each reply, µs after the generator's tick 0.
    reply_starts_us: Vec<u64>,
    /// Per received frame: arrival − due (reply start + k × 20 ms), µs.
    lateness_us: Vec<u32>,
    clears: u32,
    marks: u32,
}

/// How a call went.
struct CallResult {
    idx: usize,
    session_id: Option<String>,
    log: CallLog,
    error: Option<String>,
}

/// A call became ready for the generator's clock, or failed to.
enum Ready {
    Joined {
        idx: usize,
        tx: mpsc::Sender<Utf8Bytes>,
    },
    Failed,
}

/// A call as the generator's clock sees it.
struct Slot {
    tx: mpsc::Sender<Utf8Bytes>,
    first_tick: u64,
    bursts: u64,
    closed: bool,
}

/// What one load level measured.
struct Outcome {
    calls: usize,
    connected: usize,
    failed: usize,
    first_error: Option<String>,
    hung: usize,
    spoken: u64,
    answered: u64,
    stray_replies: u64,
    greetings: u64,
    frames_received: u64,
    lateness_us: Vec<u32>,
    clears: u64,
    details: Vec<SessionDetail>,
    dropped_stt: Option<f64>,
    dropped_caller: Option<f64>,
    window: Option<Window>,
    rss_idle_kib: Option<u64>,
    rss_peak_kib: Option<u64>,
    tick_late_us: Vec<u32>,
    tick_work_us: Vec<u32>,
    queue_full: u64,
}

/// CPU used over the steady-state window.
#[derive(Debug, Clone, Copy)]
struct Window {
    wall_ns: u64,
    server_ns: Option<u64>,
    /// The runtime's event-loop thread waited this long for a CPU.
    server_wait_ns: Option<u64>,
    generator_ns: Option<u64>,
    /// The generator's thread waited this long for a CPU.
    generator_wait_ns: Option<u64>,
}

/// A reading of the CPU counters at the start of the window.
#[derive(Debug, Clone, Copy)]
struct CpuMark {
    at: Instant,
    server: Option<u64>,
    server_sched: Option<(u64, u64)>,
    generator: Option<u64>,
    generator_sched: Option<(u64, u64)>,
}

impl CpuMark {
    fn now(probe: &Probe) -> Self {
        Self {
            at: Instant::now(),
            server: probe.cpu_ns(),
            server_sched: probe.loop_sched(),
            generator: bench::process_cpu(std::process::id()).map(|d| d.as_nanos() as u64),
            // The generator's clock runs on this thread.
            generator_sched: bench::current_tid()
                .and_then(|tid| bench::thread_sched(std::process::id(), tid)),
        }
    }

    fn window_until(&self, end: &CpuMark) -> Window {
        let delta = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?));
        let wait = |a: Option<(u64, u64)>, b: Option<(u64, u64)>| Some(b?.1.saturating_sub(a?.1));
        Window {
            wall_ns: end.at.duration_since(self.at).as_nanos() as u64,
            server_ns: delta(self.server, end.server),
            server_wait_ns: wait(self.server_sched, end.server_sched),
            generator_ns: delta(self.generator, end.generator),
            generator_wait_ns: wait(self.generator_sched, end.generator_sched),
        }
    }
}

/// Runs one level against the runtime at `base`: N callers, then the
/// sessions' transcripts and the runtime's counters.
async fn drive(
    base: String,
    plan: Plan,
    shape: Shape,
    frames: Arc<Frames>,
    probe: Probe,
) -> Result<Outcome, BenchError> {
    let http = voice_agent_http::client_builder()
        .build()
        .map_err(|e| BenchError::Setup(format!("http client: {e}")))?;
    let rss_idle_kib = probe.rss_kib();
    let t0 = tokio::time::Instant::now() + Duration::from_millis(50);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Ready>();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<CallResult>();
    let mut handles = Vec::with_capacity(plan.calls);
    for idx in 0..plan.calls {
        let offset = plan.ramp * FRAME.as_millis() as u64 * idx as u64 / plan.calls.max(1) as u64;
        let start_at = t0 + Duration::from_millis(offset);
        let call = Call {
            idx,
            base: base.clone(),
            http: http.clone(),
            ready: ready_tx.clone(),
            t0: t0.into_std(),
        };
        let done = done_tx.clone();
        handles.push(tokio::spawn(async move {
            tokio::time::sleep_until(start_at).await;
            let result = call.run().await;
            let _ = done.send(result);
        }));
    }
    drop(ready_tx);
    drop(done_tx);

    // The generator's clock: one 20 ms interval drives every call.
    let mut ticker = tokio::time::interval_at(t0, FRAME);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut slots: Vec<Option<Slot>> = (0..plan.calls).map(|_| None).collect();
    let mut settled = 0usize;
    let deadline = plan.steady.map(|s| plan.ramp + shape.lead_in + s);
    let mut end = deadline.map(|d| d + shape.cycle + TAIL_TICKS);
    let window_start = plan.ramp + shape.lead_in;
    let mut window_at: Option<CpuMark> = None;
    let mut window = None;
    let mut rss_peak_kib = None::<u64>;
    let mut tick_late_us = Vec::new();
    let mut tick_work_us = Vec::new();
    let mut queue_full = 0u64;
    let mut k: u64 = 0;
    loop {
        let due = ticker.tick().await;
        let started = Instant::now();
        tick_late_us.push(clamp_us(started.saturating_duration_since(due.into_std())));
        while let Ok(ready) = ready_rx.try_recv() {
            settled += 1;
            if let Ready::Joined { idx, tx } = ready
                && let Some(slot) = slots.get_mut(idx)
            {
                *slot = Some(Slot {
                    tx,
                    first_tick: k,
                    bursts: 0,
                    closed: false,
                });
            }
        }
        if end.is_none() && settled == plan.calls {
            // Burst-limited run: over once the last call has spoken its turns
            // and heard the answer.
            let last = slots.iter().flatten().map(|s| s.first_tick).max();
            end = Some(match (last, plan.max_bursts) {
                (Some(last), Some(bursts)) => {
                    last + shape.lead_in + bursts * shape.cycle + TAIL_TICKS
                }
                _ => k,
            });
        }
        if end.is_some_and(|e| k >= e) {
            break;
        }
        for slot in slots.iter_mut().flatten() {
            if slot.closed {
                continue;
            }
            let frame = pick_frame(k, slot, shape, plan.max_bursts, deadline, &frames);
            match slot.tx.try_send(frame.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => queue_full += 1,
                Err(mpsc::error::TrySendError::Closed(_)) => slot.closed = true,
            }
        }
        if let Some(deadline) = deadline {
            if k == window_start {
                window_at = Some(CpuMark::now(&probe));
            }
            // RSS once a second through the window.
            if k >= window_start
                && k < deadline
                && (k - window_start).is_multiple_of(FRAMES_PER_S)
                && let Some(rss) = probe.rss_kib()
            {
                rss_peak_kib = Some(rss_peak_kib.map_or(rss, |p| p.max(rss)));
            }
            if k == deadline
                && let Some(start) = &window_at
            {
                window = Some(start.window_until(&CpuMark::now(&probe)));
            }
        }
        tick_work_us.push(clamp_us(started.elapsed()));
        k += 1;
    }
    // Hang up: each writer sends `stop` and closes once its queue is gone
    // (a call that joined too late still has its sender in `ready_rx`).
    drop(ready_rx);
    let first_ticks: Vec<Option<(u64, u64)>> = slots
        .iter()
        .map(|s| s.as_ref().map(|s| (s.first_tick, s.bursts)))
        .collect();
    drop(slots);
    let mut results = Vec::with_capacity(plan.calls);
    let collect_deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while results.len() < plan.calls {
        match tokio::time::timeout_at(collect_deadline, done_rx.recv()).await {
            Ok(Some(r)) => results.push(r),
            Ok(None) | Err(_) => break,
        }
    }
    let hung = plan.calls - results.len();
    for h in &handles {
        h.abort();
    }

    let mut outcome = Outcome {
        calls: plan.calls,
        connected: 0,
        failed: 0,
        first_error: None,
        hung,
        spoken: 0,
        answered: 0,
        stray_replies: 0,
        greetings: 0,
        frames_received: 0,
        lateness_us: Vec::new(),
        clears: 0,
        details: Vec::new(),
        dropped_stt: None,
        dropped_caller: None,
        window,
        rss_idle_kib,
        rss_peak_kib,
        tick_late_us,
        tick_work_us,
        queue_full,
    };
    let mut sessions = Vec::new();
    for r in results {
        if let Some(e) = r.error {
            outcome.failed += 1;
            outcome.first_error.get_or_insert(e);
            continue;
        }
        outcome.connected += 1;
        if let Some(id) = r.session_id {
            sessions.push(id);
        }
        let Some((first_tick, bursts)) = first_ticks.get(r.idx).copied().flatten() else {
            continue;
        };
        outcome.spoken += bursts;
        let mut answered = BTreeSet::new();
        for &us in &r.log.reply_starts_us {
            // Where in the caller's rhythm the reply began.
            let at = us as f64 / FRAME.as_micros() as f64 - (first_tick + shape.lead_in) as f64;
            if at < 0.0 {
                outcome.greetings += 1;
                continue;
            }
            let burst = (at / shape.cycle as f64).floor();
            let within = at - burst * shape.cycle as f64;
            if within >= shape.speech as f64 && (burst as u64) < bursts {
                answered.insert(burst as u64);
            } else {
                outcome.stray_replies += 1;
            }
        }
        outcome.answered += answered.len() as u64;
        outcome.frames_received += r.log.lateness_us.len() as u64;
        outcome.clears += u64::from(r.log.clears);
        outcome.lateness_us.extend_from_slice(&r.log.lateness_us);
    }
    outcome.details = futures::stream::iter(sessions)
        .map(|id| {
            let http = http.clone();
            let url = format!("{base}/api/sessions/{id}");
            async move {
                let resp = http.get(url).send().await.ok()?;
                resp.json::<SessionDetail>().await.ok()
            }
        })
        .buffer_unordered(16)
        .filter_map(|d| async move { d })
        .collect()
        .await;
    if let Ok(resp) = http.get(format!("{base}/metrics")).send().await
        && let Ok(text) = resp.text().await
    {
        outcome.dropped_stt = metric(
            &text,
            "voice_agent_runtime_dropped_frames_total{direction=\"stt\"}",
        );
        outcome.dropped_caller = metric(
            &text,
            "voice_agent_runtime_dropped_frames_total{direction=\"caller\"}",
        );
    }
    Ok(outcome)
}

fn clamp_us(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// The value of one sample line of a Prometheus text exposition.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
}

/// The frame a call sends at tick `k`: silence during the lead-in and after
/// each turn, speech for the turns it still has to speak.
fn pick_frame<'f>(
    k: u64,
    slot: &mut Slot,
    shape: Shape,
    max_bursts: Option<u64>,
    deadline: Option<u64>,
    frames: &'f Frames,
) -> &'f Utf8Bytes {
    let Some(r) = k
        .checked_sub(slot.first_tick)
        .and_then(|r| r.checked_sub(shape.lead_in))
    else {
        return &frames.silence;
    };
    let burst = r / shape.cycle;
    let within = r % shape.cycle;
    let starts_at = slot.first_tick + shape.lead_in + burst * shape.cycle;
    let allowed = max_bursts.is_none_or(|m| burst < m) && deadline.is_none_or(|d| starts_at < d);
    if within >= shape.speech || !allowed {
        return &frames.silence;
    }
    if within == 0 {
        slot.bursts += 1;
    }
    frames
        .speech
        .get(within as usize)
        .unwrap_or(&frames.silence)
}

/// One caller: creates its session, plays Twilio's side of Media Streams
/// (frames come from the generator's clock through `tx`), and logs the
/// reply audio it receives.
struct Call {
    idx: usize,
    base: String,
    http: reqwest::Client,
    ready: mpsc::UnboundedSender<Ready>,
    t0: Instant,
}

impl Call {
    async fn run(self) -> CallResult {
        let idx = self.idx;
        let ready = self.ready.clone();
        match self.talk().await {
            Ok((session_id, log)) => CallResult {
                idx,
                session_id: Some(session_id),
                log,
                error: None,
            },
            Err(e) => {
                let _ = ready.send(Ready::Failed);
                CallResult {
                    idx,
                    session_id: None,
                    log: CallLog::default(),
                    error: Some(e),
                }
            }
        }
    }

    async fn talk(self) -> Result<(String, CallLog), String> {
        let call_sid = format!("CAbench{:06}", self.idx);
        let resp = self
            .http
            .post(format!("{}/api/sessions", self.base))
            .json(&CreateSessionRequest {
                call_sid: call_sid.clone(),
                voice_agent: VOICE_AGENT.into(),
                from: "+15550100000".into(),
                to: "+15550142000".into(),
                transport: Transport::MediaStreams,
            })
            .send()
            .await
            .map_err(|e| format!("POST /api/sessions: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(format!("POST /api/sessions: {status}: {body}"));
        }
        let created: CreateSessionResponse = resp
            .json()
            .await
            .map_err(|e| format!("POST /api/sessions body: {e}"))?;
        // A small read buffer: tungstenite zero-fills the whole buffer (128
        // KiB by default) before every read, which would make the generator
        // pay ~µs per 300-byte frame.
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
        let (ws, _) = tokio_tungstenite::connect_async_with_config(
            created.media_url.as_str(),
            Some(config),
            true,
        )
        .await
        .map_err(|e| format!("media connect: {e}"))?;
        let (mut sink, mut stream) = ws.split();
        let stream_sid = format!("MZbench{:06}", self.idx);
        let connected = Message::Connected {
            protocol: Some("Call".into()),
            version: Some("1.0.0".into()),
        };
        let start = Message::Start {
            sequence_number: Some("1".into()),
            start: StartMeta {
                account_sid: "ACbench".into(),
                stream_sid: stream_sid.clone(),
                call_sid,
                tracks: vec!["inbound".into()],
                custom_parameters: [(
                    voice_agent_proto::mediastreams::SESSION_PARAMETER.to_string(),
                    created.session_id.clone(),
                )]
                .into(),
                media_format: Some(MediaFormat {
                    encoding: voice_agent_proto::mediastreams::ENCODING.into(),
                    sample_rate: voice_agent_proto::mediastreams::SAMPLE_RATE,
                    channels: 1,
                }),
            },
            stream_sid: stream_sid.clone(),
        };
        for m in [connected, start] {
            sink.send(WsMessage::Text(m.to_json().into()))
                .await
                .map_err(|e| format!("media send: {e}"))?;
        }
        let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(CALL_QUEUE);
        let stop = Message::Stop {
            sequence_number: None,
            stop: None,
            stream_sid: stream_sid.clone(),
        }
        .to_json();
        // The writer: frames from the clock (and mark echoes) until the
        // clock lets go, then `stop` and close, as Twilio hangs up.
        let writer = tokio::spawn(async move {
            while let Some(text) = rx.recv().await {
                if sink.send(WsMessage::Text(text)).await.is_err() {
                    return;
                }
            }
            let _ = sink.send(WsMessage::Text(stop.into())).await;
            let _ = sink.close().await;
        });
        // Only the clock holds a strong sender: the writer ends when it does.
        let echo = tx.downgrade();
        let _ = self.ready.send(Ready::Joined { idx: self.idx, tx });
        let mut log = CallLog::default();
        // (first frame arrival, frames since, last arrival) of the reply
        // playing.
        let mut reply: Option<(Instant, u32, Instant)> = None;
        while let Some(Ok(msg)) = stream.next().await {
            let now = Instant::now();
            let text = match msg {
                WsMessage::Text(text) => text,
                WsMessage::Close(_) => break,
                _ => continue,
            };
            // Outbound media is most of the traffic: recognize it without
            // parsing (serde writes the tag first).
            if text.as_str().starts_with(r#"{"event":"media""#) {
                match &mut reply {
                    Some((start, k, last)) if now.duration_since(*last) < REPLY_GAP => {
                        *k += 1;
                        *last = now;
                        let due = *start + FRAME * *k;
                        log.lateness_us
                            .push(clamp_us(now.saturating_duration_since(due)));
                    }
                    _ => {
                        reply = Some((now, 0, now));
                        log.reply_starts_us
                            .push(now.saturating_duration_since(self.t0).as_micros() as u64);
                        log.lateness_us.push(0);
                    }
                }
                continue;
            }
            match Message::parse(text.as_str()) {
                Ok(Message::Mark { mark, .. }) => {
                    // The reply before the mark is over. Twilio echoes a
                    // mark once the audio before it has played; the audio is
                    // paced in real time, so now is close enough.
                    reply = None;
                    log.marks += 1;
                    let echo_msg = Message::Mark {
                        sequence_number: None,
                        mark: MarkName { name: mark.name },
                        stream_sid: stream_sid.clone(),
                    };
                    if let Some(tx) = echo.upgrade() {
                        let _ = tx.try_send(echo_msg.to_json().into());
                    }
                }
                Ok(Message::Clear { .. }) => {
                    reply = None;
                    log.clears += 1;
                }
                _ => {}
            }
        }
        let _ = writer.await;
        Ok((created.session_id, log))
    }
}

// ---------------------------------------------------------------------------
// The report.

/// A distribution: count, median, 99th percentile and maximum.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Stats {
    /// Of `values` (sorted in place).
    pub fn of(values: &mut [f64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let at = |q: f64| values[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        Self {
            n,
            p50: at(0.5),
            p99: at(0.99),
            max: values[n - 1],
        }
    }

    fn of_us_as_ms(values: &[u32]) -> Self {
        let mut ms: Vec<f64> = values.iter().map(|&us| f64::from(us) / 1000.0).collect();
        Self::of(&mut ms)
    }
}

/// Requests the stubs served and their own time.
#[derive(Debug, Clone, Copy, Default)]
pub struct StubSummary {
    /// `POST /v1/respond` requests.
    pub agent_requests: u64,
    /// Mean handler time, µs.
    pub agent_mean_us: f64,
    /// `POST /v1/synthesize` requests.
    pub tts_requests: u64,
    /// Mean handler time, µs.
    pub tts_mean_us: f64,
    /// Slowest handler, µs.
    pub max_us: f64,
}

/// (a): where a turn's time goes with instant upstreams, ms.
#[derive(Debug, Clone, Default)]
pub struct OverheadReport {
    /// Calls the turns were spread over.
    pub calls: usize,
    /// Turns spoken.
    pub spoken: u64,
    /// End of caller speech → first reply audio sent.
    pub e2e: Stats,
    /// End of caller speech → final transcript (the endpointing).
    pub eou: Stats,
    /// Agent request → first reply text (the stub over loopback HTTP).
    pub agent_ttft: Stats,
    /// TTS request → first audio byte (the stub over loopback HTTP).
    pub tts_ttfb: Stats,
    /// e2e − eou − agentTtft − ttsTtfb: what the runtime adds.
    pub overhead: Stats,
    /// The stubs' own time.
    pub stubs: StubSummary,
}

/// (b): one load level.
#[derive(Debug, Clone, Default)]
pub struct LevelReport {
    /// Calls started.
    pub calls: usize,
    /// Calls that connected.
    pub connected: usize,
    /// Calls that could not start, and the first reason.
    pub failed: usize,
    /// The first failure.
    pub first_error: Option<String>,
    /// Calls that did not end within 15 s of hanging up.
    pub hung: usize,
    /// Steady-state window, s.
    pub window_s: f64,
    /// Runtime CPU over the window, % of one core.
    pub cpu_pct: Option<f64>,
    /// Runtime CPU per 20 ms caller frame, µs (everything the runtime does
    /// for a call, divided by the caller's frames).
    pub us_per_frame: Option<f64>,
    /// Runtime RSS before the calls, MiB.
    pub rss_idle_mib: Option<f64>,
    /// Highest runtime RSS during the window, MiB.
    pub rss_peak_mib: Option<f64>,
    /// Reply frame lateness at the caller, ms.
    pub lateness: Stats,
    /// Reply frames received.
    pub frames_received: u64,
    /// Turns the callers spoke.
    pub turns_spoken: u64,
    /// Turns answered in time (reply audio began in the silence after).
    pub turns_answered: u64,
    /// Turns the runtime counted (sum of the sessions' `turns`).
    pub runtime_turns: u64,
    /// Replies that began outside an answer window (late or extra).
    pub stray_replies: u64,
    /// Barge-ins the runtime counted.
    pub interruptions: u64,
    /// `clear`s the callers received.
    pub clears: u64,
    /// e2e under load, ms.
    pub e2e: Stats,
    /// eou under load, ms.
    pub eou: Stats,
    /// agentTtft under load (stub + loopback HTTP + the runtime's delay in
    /// reading it), ms.
    pub agent_ttft: Stats,
    /// ttsTtfb under load, ms.
    pub tts_ttfb: Stats,
    /// e2e − eou − agentTtft − ttsTtfb under load, ms.
    pub overhead: Stats,
    /// Share of the window the runtime's event loop was runnable but had no
    /// CPU (another process on its core), %.
    pub server_wait_pct: Option<f64>,
    /// The same for the generator's thread, %.
    pub generator_wait_pct: Option<f64>,
    /// Frames the runtime dropped towards the recognizer / the caller.
    pub dropped_stt: Option<f64>,
    /// See `dropped_stt`.
    pub dropped_caller: Option<f64>,
    /// The generator's tick lateness (when it sent a tick's frames vs when
    /// they were due), ms.
    pub generator_tick_late: Stats,
    /// Time the generator spent queueing one tick's frames, ms.
    pub generator_tick_work: Stats,
    /// Frames the generator dropped because a call's socket queue was full.
    pub generator_queue_full: u64,
    /// The bench process's CPU over the window (generator + stubs), % of one
    /// core.
    pub generator_cpu_pct: Option<f64>,
}

impl LevelReport {
    /// CPU per call, % of one core.
    pub fn cpu_per_call_pct(&self) -> Option<f64> {
        self.cpu_pct.map(|c| c / self.connected.max(1) as f64)
    }

    /// (peak − idle) / calls, MiB.
    pub fn rss_per_call_mib(&self) -> Option<f64> {
        Some((self.rss_peak_mib? - self.rss_idle_mib?) / self.connected.max(1) as f64)
    }

    /// Turns spoken but not answered in time.
    pub fn turns_lost(&self) -> u64 {
        self.turns_spoken.saturating_sub(self.turns_answered)
    }

    /// Whether the runtime's one core was (nearly) busy all the time.
    pub fn saturated(&self) -> Option<bool> {
        self.cpu_pct.map(|c| c >= 95.0)
    }
}

/// Everything `voice-agent bench calls` measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// How the runtime ran (process, pinning).
    pub setup: String,
    /// Caller rhythm and reply length.
    pub shape: String,
    /// (a), unless skipped.
    pub overhead: Option<OverheadReport>,
    /// (b), per load level.
    pub levels: Vec<LevelReport>,
}

/// Runs the benchmark.
pub fn run(options: &Options) -> Result<Report, BenchError> {
    let shape = Shape::of(options)?;
    let mut server = options.server.clone();
    let setup = match &mut server {
        Server::InProcess => "runtime: a thread of the bench process, one current-thread Tokio \
                              runtime (CPU of that thread; RSS not measured)"
            .to_string(),
        Server::Process { pin_cpus, .. } => {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            // The child is pinned only if this process could be moved off
            // its CPU.
            *pin_cpus = *pin_cpus && cpus >= 2 && bench::pin_self(1);
            if *pin_cpus {
                "runtime: separate process, one current-thread Tokio runtime, pinned to CPU 0; \
                 load generator and stubs pinned to CPU 1"
                    .to_string()
            } else {
                format!(
                    "runtime: separate process, one current-thread Tokio runtime, not pinned \
                     ({cpus} CPUs); load generator and stubs in the bench process"
                )
            }
        }
    };
    let stubs = Stubs::start(options.sentence_audio_ms)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_err("starting the generator's Tokio runtime"))?;
    let frames = Arc::new(Frames::new(shape.speech));
    let mut report = Report {
        setup,
        shape: format!(
            "callers: {:.1} s lead-in (greeting), then turns of {:.1} s speech + {:.1} s silence; \
             replies: 2 sentences × {:.2} s of audio; endpointing 300 ms (VAD hangover)",
            options.lead_in_ms as f64 / 1000.0,
            options.speech_ms as f64 / 1000.0,
            options.silence_ms as f64 / 1000.0,
            options.sentence_audio_ms as f64 / 1000.0,
        ),
        ..Report::default()
    };
    let result = (|| {
        if options.overhead_turns > 0 {
            let calls = options.overhead_calls.max(1);
            let bursts = options.overhead_turns.div_ceil(calls) as u64;
            let handle = ServerHandle::start(&server, &stubs, calls as u32)?;
            let plan = Plan {
                calls,
                ramp: if calls > 1 { shape.cycle } else { 0 },
                max_bursts: Some(bursts),
                steady: None,
            };
            let base = format!("http://{}", handle.addr());
            let outcome = rt.block_on(drive(
                base,
                plan,
                shape,
                Arc::clone(&frames),
                handle.probe(),
            ));
            handle.stop();
            report.overhead = Some(overhead_report(&outcome?, calls, stubs.summary()));
        }
        for &calls in &options.calls {
            let calls = calls.max(1);
            let handle = ServerHandle::start(&server, &stubs, calls as u32 + 10)?;
            let plan = Plan {
                calls,
                ramp: if calls > 1 { shape.cycle } else { 0 },
                max_bursts: None,
                steady: Some(options.seconds.max(1) * FRAMES_PER_S),
            };
            let base = format!("http://{}", handle.addr());
            let outcome = rt.block_on(drive(
                base,
                plan,
                shape,
                Arc::clone(&frames),
                handle.probe(),
            ));
            handle.stop();
            report.levels.push(level_report(&outcome?));
        }
        Ok::<(), BenchError>(())
    })();
    stubs.stop();
    result.map(|()| report)
}

/// e2e, eou, agentTtft, ttsTtfb and the overhead of the answered caller
/// turns (those with every stage; interrupted ones included: their first
/// audio went out).
struct Breakdown {
    e2e: Stats,
    eou: Stats,
    agent_ttft: Stats,
    tts_ttfb: Stats,
    overhead: Stats,
}

fn breakdown(details: &[SessionDetail]) -> Breakdown {
    let mut e2e = Vec::new();
    let mut eou = Vec::new();
    let mut ttft = Vec::new();
    let mut ttfb = Vec::new();
    let mut overhead = Vec::new();
    for turn in details.iter().flat_map(|d| &d.transcript) {
        let l = &turn.latency;
        if turn.caller.is_empty() {
            continue;
        }
        if let (Some(a), Some(b), Some(c), Some(d)) =
            (l.e2e_ms, l.eou_ms, l.agent_ttft_ms, l.tts_ttfb_ms)
        {
            e2e.push(a);
            eou.push(b);
            ttft.push(c);
            ttfb.push(d);
            overhead.push(a - b - c - d);
        }
    }
    Breakdown {
        e2e: Stats::of(&mut e2e),
        eou: Stats::of(&mut eou),
        agent_ttft: Stats::of(&mut ttft),
        tts_ttfb: Stats::of(&mut ttfb),
        overhead: Stats::of(&mut overhead),
    }
}

fn overhead_report(outcome: &Outcome, calls: usize, stubs: StubSummary) -> OverheadReport {
    let b = breakdown(&outcome.details);
    OverheadReport {
        calls,
        spoken: outcome.spoken,
        e2e: b.e2e,
        eou: b.eou,
        agent_ttft: b.agent_ttft,
        tts_ttfb: b.tts_ttfb,
        overhead: b.overhead,
        stubs,
    }
}

fn level_report(o: &Outcome) -> LevelReport {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let b = breakdown(&o.details);
    let pct = |ns: Option<u64>, w: &Window| Some(ns? as f64 / w.wall_ns.max(1) as f64 * 100.0);
    let window_s = o.window.map_or(0.0, |w| w.wall_ns as f64 / 1e9);
    let cpu_pct = o.window.and_then(|w| pct(w.server_ns, &w));
    let frames = o.connected as f64 * window_s * FRAMES_PER_S as f64;
    let us_per_frame = o
        .window
        .and_then(|w| w.server_ns)
        .filter(|_| frames > 0.0)
        .map(|ns| ns as f64 / 1000.0 / frames);
    LevelReport {
        calls: o.calls,
        connected: o.connected,
        failed: o.failed,
        first_error: o.first_error.clone(),
        hung: o.hung,
        window_s,
        cpu_pct,
        us_per_frame,
        rss_idle_mib: o.rss_idle_kib.map(mib),
        rss_peak_mib: o.rss_peak_kib.map(mib),
        lateness: Stats::of_us_as_ms(&o.lateness_us),
        frames_received: o.frames_received,
        turns_spoken: o.spoken,
        turns_answered: o.answered,
        runtime_turns: o.details.iter().map(|d| u64::from(d.info.turns)).sum(),
        stray_replies: o.stray_replies,
        interruptions: o
            .details
            .iter()
            .map(|d| u64::from(d.info.interruptions))
            .sum(),
        clears: o.clears,
        e2e: b.e2e,
        eou: b.eou,
        agent_ttft: b.agent_ttft,
        tts_ttfb: b.tts_ttfb,
        overhead: b.overhead,
        server_wait_pct: o.window.and_then(|w| pct(w.server_wait_ns, &w)),
        generator_wait_pct: o.window.and_then(|w| pct(w.generator_wait_ns, &w)),
        dropped_stt: o.dropped_stt,
        dropped_caller: o.dropped_caller,
        generator_tick_late: Stats::of_us_as_ms(&o.tick_late_us),
        generator_tick_work: Stats::of_us_as_ms(&o.tick_work_us),
        generator_queue_full: o.queue_full,
        generator_cpu_pct: o.window.and_then(|w| pct(w.generator_ns, &w)),
    }
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.decimals$}"))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "runtime under call load: agent and TTS stubs that answer at once, repeating scripted recognizer, Media Streams over loopback"
        )?;
        writeln!(f, "  {}", self.setup)?;
        writeln!(f, "  {}", self.shape)?;
        if let Some(o) = &self.overhead {
            writeln!(f)?;
            writeln!(
                f,
                "(a) orchestration overhead per turn: {} turns answered of {} spoken, over {} staggered calls",
                o.overhead.n, o.spoken, o.calls
            )?;
            writeln!(
                f,
                "  {:<46} {:>9} {:>9} {:>9}",
                "stage (ms)", "p50", "p99", "max"
            )?;
            for (name, s) in [
                ("e2e (end of speech → first reply audio)", o.e2e),
                ("eou (endpointing: VAD hangover)", o.eou),
                ("agentTtft (stub over loopback HTTP)", o.agent_ttft),
                ("ttsTtfb (stub over loopback HTTP)", o.tts_ttfb),
                ("overhead = e2e − eou − agentTtft − ttsTtfb", o.overhead),
            ] {
                writeln!(
                    f,
                    "  {name:<46} {:>9.2} {:>9.2} {:>9.2}",
                    s.p50, s.p99, s.max
                )?;
            }
            writeln!(
                f,
                "  goal: overhead p99 < 10 ms → {}  (e2e and eou are whole milliseconds in the transcript: ±1 ms)",
                if o.overhead.n == 0 {
                    "no turns"
                } else if o.overhead.p99 < 10.0 {
                    "met"
                } else {
                    "missed"
                }
            )?;
            writeln!(
                f,
                "  stub time: agent {} requests, {:.1} µs mean; tts {} requests, {:.1} µs mean; slowest {:.1} µs",
                o.stubs.agent_requests,
                o.stubs.agent_mean_us,
                o.stubs.tts_requests,
                o.stubs.tts_mean_us,
                o.stubs.max_us
            )?;
        }
        if !self.levels.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "(b) concurrent calls on one core ({:.0} s steady-state window per level)",
                self.levels.first().map_or(0.0, |l| l.window_s)
            )?;
            writeln!(
                f,
                "  {:>6} {:>7} {:>9} {:>8} {:>9} {:>10} {:>10} {:>10} {:>5}",
                "calls",
                "CPU %",
                "CPU/call",
                "µs/frm",
                "loop wait",
                "RSS idle",
                "RSS peak",
                "RSS/call",
                "sat."
            )?;
            for l in &self.levels {
                let mib = |m: Option<f64>, d: usize| {
                    m.map_or_else(|| "n/a".into(), |m| format!("{m:.d$} MiB"))
                };
                writeln!(
                    f,
                    "  {:>6} {:>7} {:>9} {:>8} {:>9} {:>10} {:>10} {:>10} {:>5}",
                    l.connected,
                    opt(l.cpu_pct, 1),
                    l.cpu_per_call_pct()
                        .map_or_else(|| "n/a".into(), |c| format!("{c:.3} %")),
                    opt(l.us_per_frame, 2),
                    l.server_wait_pct
                        .map_or_else(|| "n/a".into(), |w| format!("{w:.1} %")),
                    mib(l.rss_idle_mib, 1),
                    mib(l.rss_peak_mib, 1),
                    mib(l.rss_per_call_mib(), 3),
                    match l.saturated() {
                        Some(true) => "yes",
                        Some(false) => "no",
                        None => "n/a",
                    }
                )?;
            }
            writeln!(
                f,
                "  CPU % is of one core; µs/frm = runtime CPU ÷ caller frames (50 per call-second, everything the runtime does for the call included); loop wait = time the runtime's thread was runnable but another process had its core"
            )?;
            writeln!(f)?;
            writeln!(
                f,
                "  {:>6} {:>19} {:>17} {:>6} {:>11} {:>8} {:>9} {:>9} {:>11}",
                "calls",
                "late p50/p99/max",
                "turns spk/ans/lost",
                "barge",
                "e2e p50/p99",
                "eou p99",
                "agent p99",
                "tts p99",
                "ovh p50/p99"
            )?;
            for l in &self.levels {
                writeln!(
                    f,
                    "  {:>6} {:>19} {:>17} {:>6} {:>11} {:>8.0} {:>9.1} {:>9.1} {:>11}",
                    l.connected,
                    format!(
                        "{:.1}/{:.1}/{:.0}",
                        l.lateness.p50, l.lateness.p99, l.lateness.max
                    ),
                    format!("{}/{}/{}", l.turns_spoken, l.turns_answered, l.turns_lost()),
                    l.interruptions,
                    format!("{:.0}/{:.0}", l.e2e.p50, l.e2e.p99),
                    l.eou.p99,
                    l.agent_ttft.p99,
                    l.tts_ttfb.p99,
                    format!("{:.1}/{:.1}", l.overhead.p50, l.overhead.p99),
                )?;
            }
            writeln!(
                f,
                "  ms; late = reply frame arrival − (reply's first frame + k × 20 ms) at the caller; answered = reply audio began in the silence after the turn; barge = replies the next turn cut off"
            )?;
            writeln!(
                f,
                "  goals: RSS/call < 2 MiB, lateness p99 < 5 ms, 0 turns lost"
            )?;
            for l in &self.levels {
                writeln!(
                    f,
                    "  {} calls: runtime counted {} turns, {} clears, {} stray replies; dropped frames stt {} caller {}; {} reply frames received{}{}",
                    l.calls,
                    l.runtime_turns,
                    l.clears,
                    l.stray_replies,
                    opt(l.dropped_stt, 0),
                    opt(l.dropped_caller, 0),
                    l.frames_received,
                    if l.failed > 0 {
                        format!(
                            "; {} calls failed to start ({})",
                            l.failed,
                            l.first_error.as_deref().unwrap_or("?")
                        )
                    } else {
                        String::new()
                    },
                    if l.hung > 0 {
                        format!("; {} calls did not end", l.hung)
                    } else {
                        String::new()
                    },
                )?;
                writeln!(
                    f,
                    "    generator: CPU {} % of a core (wait {} %), tick lateness p50/p99/max {:.2}/{:.2}/{:.1} ms, tick work p99 {:.2} ms, {} frames dropped at full socket queues",
                    opt(l.generator_cpu_pct, 1),
                    opt(l.generator_wait_pct, 1),
                    l.generator_tick_late.p50,
                    l.generator_tick_late.p99,
                    l.generator_tick_late.max,
                    l.generator_tick_work.p99,
                    l.generator_queue_full
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_use_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Stats::of(&mut v);
        assert_eq!((s.n, s.p50, s.p99, s.max), (100, 50.0, 99.0, 100.0));
        assert_eq!(Stats::of(&mut []), Stats::default());
    }

    #[test]
    fn frames_follow_the_callers_rhythm() {
        let shape = Shape {
            lead_in: 2,
            speech: 3,
            cycle: 5,
        };
        let frames = Frames::new(shape.speech);
        let (tx, _rx) = mpsc::channel(1);
        let mut slot = Slot {
            tx,
            first_tick: 10,
            bursts: 0,
            closed: false,
        };
        let speech: Vec<bool> = (10..24)
            .map(|k| {
                let f = pick_frame(k, &mut slot, shape, Some(2), None, &frames);
                !std::ptr::eq(f, &frames.silence)
            })
            .collect();
        let expected = [
            false, false, true, true, true, false, false, true, true, true, false, false, false,
            false,
        ];
        assert_eq!(speech, expected);
        assert_eq!(slot.bursts, 2);
    }

    #[test]
    fn metric_lines_are_read() {
        let text = "# HELP x\nvoice_agent_runtime_dropped_frames_total{direction=\"stt\"} 3\n";
        assert_eq!(
            metric(
                text,
                "voice_agent_runtime_dropped_frames_total{direction=\"stt\"}"
            ),
            Some(3.0)
        );
        assert_eq!(metric(text, "nope"), None);
    }

    #[test]
    fn a_small_run_answers_turns_and_reports() {
        let options = Options {
            calls: vec![2],
            seconds: 3,
            overhead_turns: 2,
            overhead_calls: 1,
            speech_ms: 600,
            silence_ms: 2_000,
            lead_in_ms: 1_200,
            sentence_audio_ms: 300,
            server: Server::InProcess,
        };
        let report = run(&options).expect("bench runs");
        let overhead = report.overhead.as_ref().expect("overhead measured");
        assert!(overhead.overhead.n > 0, "{report}");
        let level = &report.levels[0];
        assert_eq!(level.connected, 2, "{report}");
        assert!(level.turns_answered > 0, "{report}");
        assert!(level.runtime_turns > 0, "{report}");
        let text = report.to_string();
        assert!(text.contains("orchestration overhead"), "{text}");
        assert!(text.contains("concurrent calls"), "{text}");
    }
}
