//! `voice-agent bench gateway-media`: the Media Streams proxy
//! (`GET /twilio/media`, [`crate::media`]) carrying N calls on one core.
//!
//! - The gateway under test is normally a separate process (`voice-agent
//!   bench gateway-media-server`, see [`run_server_process`]) on one
//!   current-thread Tokio runtime, so its CPU and RSS are read alone from
//!   `/proc`. With two or more CPUs and `taskset`, it is pinned to CPU 0 and
//!   this process to CPU 1. A fresh gateway serves each load level.
//! - A stub runtime (a thread of this process) accepts the gateway's media
//!   WebSockets, reads the `start`, then answers every inbound `media` frame
//!   with one outbound `media` frame, as a runtime playing audio would.
//! - The callers (this process's main thread) open the stream as Twilio
//!   does after the voice webhook's TwiML: a handshake signed with
//!   `X-Twilio-Signature` over the public `wss://` URL, then `connected` and
//!   `start` with the `sessionId`/`mediaUrl`/`token` parameters the webhook
//!   would have put in the TwiML. The webhook itself is skipped (`bench
//!   gateway` measures it). One 20 ms interval then sends a `media` frame on
//!   every call; each echo's round trip (send → echo received, through the
//!   proxy twice) is timed, in order, per call.
//!
//! It reports and never asserts: speed depends on the machine.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};
use voice_agent_http::bench::{self, ChildServer};
use voice_agent_proto::mediastreams::{
    ENCODING, MAX_MESSAGE_BYTES, MediaFormat, MediaPayload, Message, SESSION_PARAMETER, StartMeta,
    WS_READ_BUFFER_BYTES,
};

use crate::api::MEDIA_PATH;
use crate::bench::{
    AUTH_TOKEN, PUBLIC_URL, Percentiles, Served, bench_config, current_thread_runtime,
    serve_gateway, spawn_server, thread_failed,
};
use crate::media::{MEDIA_URL_PARAMETER, TOKEN_PARAMETER};
use crate::{Error, NoCluster, PublicUrl, State, signature};

/// One Media Streams frame: 20 ms of 8 kHz mu-law.
pub const FRAME: Duration = Duration::from_millis(20);
const FRAMES_PER_S: u64 = 50;
/// Ticks sent before the measured window (connections and allocator warm).
const WARMUP_TICKS: u64 = FRAMES_PER_S;
/// Calls connecting at once (Twilio's calls do not all ring in the same
/// millisecond either).
const CONNECT_CONCURRENCY: usize = 32;
/// How long connecting every call may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a caller waits for the echoes still in flight after the last
/// tick; those that have not arrived by then are lost.
const ECHO_GRACE: Duration = Duration::from_secs(2);
/// Frames a caller may have queued before the generator counts a tick it
/// could not hand over.
const CALLER_QUEUE: usize = 8;
/// A media frame's JSON starts with its tag: serde writes the internally
/// tagged enum's `event` first, and the frames are built here.
const MEDIA_PREFIX: &str = "{\"event\":\"media\"";
/// One 20 ms frame of mu-law silence (160 × 0xFF) in base64: 53 × `////`
/// for 159 bytes, `/w==` for the last.
fn silence_payload() -> String {
    let mut payload = "////".repeat(53);
    payload.push_str("/w==");
    payload
}

/// Where the gateway under test runs.
#[derive(Debug, Clone)]
pub enum Gateway {
    /// A thread of this process (tests): CPU of that thread, no RSS.
    InProcess,
    /// A child process printing its address on stdout, stopping when its
    /// stdin closes (`voice-agent bench gateway-media-server`).
    Process {
        /// The executable (normally `std::env::current_exe()`).
        program: PathBuf,
        /// Arguments before `--runtime <addr>`.
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
    /// Measured seconds per level (after one second of warm-up).
    pub seconds: u64,
    /// Where the gateway runs.
    pub gateway: Gateway,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            calls: vec![100, 500, 1000],
            seconds: 15,
            gateway: Gateway::InProcess,
        }
    }
}

/// One load level.
#[derive(Debug, Clone, Default)]
pub struct Level {
    /// Calls attempted.
    pub calls: usize,
    /// Calls whose stream reached the stub runtime.
    pub connected: usize,
    /// Calls that failed (connect or mid-call).
    pub failed: usize,
    /// The first failure.
    pub first_error: Option<String>,
    /// Length of the measured window, s.
    pub window_s: f64,
    /// Caller frames sent in the window.
    pub frames_sent: u64,
    /// Their echoes received (before the grace period ran out).
    pub echoes: u64,
    /// Ticks the generator could not hand to a caller (its queue was full:
    /// the caller could not write as fast as real time).
    pub queue_full: u64,
    /// Gateway CPU over the window, % of one core.
    pub cpu_pct: Option<f64>,
    /// Gateway CPU per caller frame (it proxies the frame and its echo), µs.
    pub us_per_frame: Option<f64>,
    /// Gateway RSS before any call, MiB.
    pub rss_idle_mib: Option<f64>,
    /// Highest gateway RSS sampled (once a second) with every call up, MiB.
    pub rss_peak_mib: Option<f64>,
    /// Send → echo received, through the proxy both ways.
    pub round_trip: Percentiles,
    /// How late the generator's 20 ms ticks fired.
    pub tick_late: Percentiles,
    /// This process (callers and stub runtime) over the window, % of one
    /// core; `None` with the gateway in-process.
    pub generator_cpu_pct: Option<f64>,
}

impl Level {
    /// Frames sent in the window whose echo never came back in time.
    pub fn lost(&self) -> u64 {
        self.frames_sent.saturating_sub(self.echoes)
    }

    /// (peak − idle) / connected calls, KiB.
    pub fn rss_per_call_kib(&self) -> Option<f64> {
        Some((self.rss_peak_mib? - self.rss_idle_mib?) * 1024.0 / self.connected.max(1) as f64)
    }

    /// Gateway CPU per call, % of one core.
    pub fn cpu_per_call_pct(&self) -> Option<f64> {
        self.cpu_pct.map(|c| c / self.connected.max(1) as f64)
    }

    /// Whether the gateway's core was (nearly) busy all the time, or
    /// frames were lost.
    pub fn saturated(&self) -> Option<bool> {
        self.cpu_pct.map(|c| c >= 95.0 || self.lost() > 0)
    }
}

/// What the benchmark measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// How the gateway ran (process, pinning).
    pub setup: String,
    /// Bytes of one caller frame and of one echo.
    pub frame_bytes: (usize, usize),
    /// Per load level.
    pub levels: Vec<Level>,
    /// Whether this is an optimized build; debug numbers mean little.
    pub release_build: bool,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.decimals$}"))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "gateway Media Streams proxy: {} build; stub runtime echoing one media frame per \
             caller frame; callers send real-time 20 ms frames",
            if self.release_build {
                "release"
            } else {
                "DEBUG (use --release)"
            },
        )?;
        writeln!(f, "  {}", self.setup)?;
        writeln!(
            f,
            "  caller frame {} B, echo {} B; signed handshake + connected + start per call \
             (voice webhook skipped)",
            self.frame_bytes.0, self.frame_bytes.1
        )?;
        writeln!(
            f,
            "  {:>5} {:>5} {:>6} {:>7} {:>7} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7} {:>8} {:>5} {:>7} {:>6}",
            "calls",
            "up",
            "gw CPU",
            "%/call",
            "µs/frm",
            "RSS idle",
            "RSS peak",
            "KiB/cl",
            "rtt p50",
            "rtt p99",
            "rtt max",
            "lost",
            "sat",
            "late99",
            "gen %",
        )?;
        for l in &self.levels {
            writeln!(
                f,
                "  {:>5} {:>5} {:>5}% {:>7} {:>7} {:>8} {:>8} {:>7} {:>7.2} {:>7.2} {:>7.1} {:>8} {:>5} {:>7.2} {:>6}",
                l.calls,
                l.connected,
                opt(l.cpu_pct, 1),
                opt(l.cpu_per_call_pct(), 3),
                opt(l.us_per_frame, 2),
                opt(l.rss_idle_mib, 1),
                opt(l.rss_peak_mib, 1),
                opt(l.rss_per_call_kib(), 1),
                ms(l.round_trip.p50),
                ms(l.round_trip.p99),
                ms(l.round_trip.max),
                format!("{}/{}", l.lost(), l.frames_sent),
                l.saturated()
                    .map_or("n/a", |s| if s { "yes" } else { "no" }),
                ms(l.tick_late.p99),
                opt(l.generator_cpu_pct, 0),
            )?;
            if l.failed > 0 || l.queue_full > 0 {
                writeln!(
                    f,
                    "        {} calls failed, {} ticks not handed to a caller; first error: {}",
                    l.failed,
                    l.queue_full,
                    l.first_error.as_deref().unwrap_or("none"),
                )?;
            }
        }
        writeln!(
            f,
            "  (gw CPU: the gateway's CPU time over the {}-s window, % of one core; µs/frm: per \
             caller frame, its echo included; RSS in MiB, KiB/cl = (peak − idle) / calls; rtt \
             in ms: send → echo received, through the proxy both ways and the stub; lost: \
             echoes missing {} s after the last frame / frames sent; sat: ≥ 95% CPU or frames \
             lost; late99: p99 of how late the generator's 20 ms tick fired, ms; gen %: this \
             process, callers and stub)",
            self.levels.first().map_or(0.0, |l| l.window_s.round()),
            ECHO_GRACE.as_secs(),
        )?;
        Ok(())
    }
}

/// The WebSocket settings of both Media Streams hops (the gateway's own).
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
}

fn setup_error(message: impl Into<String>) -> Error {
    Error::Io(std::io::Error::other(message.into()))
}

// ---------------------------------------------------------------------------
// The gateway under test.

/// The body of `voice-agent bench gateway-media-server`: the real gateway
/// (transport `mediaStreams`, the bench's auth token and public URL, the
/// runtime at `runtime`) on one current-thread Tokio runtime. Prints its
/// address as the first line on stdout and stops when stdin closes (the
/// bench is gone) or `shutdown` completes.
pub fn run_server_process(
    runtime: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let rt = current_thread_runtime()?;
    let closed_rx = bench::stdin_closed();
    rt.block_on(async move {
        let config = bench_config(runtime)?;
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::new(config, Arc::new(NoCluster::default()))?);
        bench::announce(addr)?;
        crate::serve(listener, state, async move {
            tokio::select! {
                _ = closed_rx => {}
                () = shutdown => {}
            }
        })
        .await
    })
}

/// A running gateway under test.
enum Running {
    Child(ChildServer),
    Thread(Served),
}

impl Running {
    async fn start(gateway: &Gateway, runtime: SocketAddr) -> Result<Self, Error> {
        match gateway {
            Gateway::InProcess => {
                let config = bench_config(runtime)?;
                let served = spawn_server("gateway", move |stop, ready| {
                    serve_gateway(config, stop, ready)
                })?
                .await
                .map_err(|_| thread_failed("gateway"))??;
                Ok(Running::Thread(served))
            }
            Gateway::Process {
                program,
                args,
                pin_cpus,
            } => Self::start_child(program, args, *pin_cpus, runtime),
        }
    }

    fn start_child(
        program: &Path,
        args: &[String],
        pin: bool,
        runtime: SocketAddr,
    ) -> Result<Self, Error> {
        let args = args
            .iter()
            .cloned()
            .chain(["--runtime".to_owned(), runtime.to_string()]);
        Ok(Running::Child(ChildServer::spawn(
            program,
            args,
            pin.then_some(0),
        )?))
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Running::Child(child) => child.addr(),
            Running::Thread(served) => served.addr,
        }
    }

    /// CPU time so far: the child process, or the gateway thread (both in
    /// 10 ms ticks).
    async fn cpu(&self) -> Option<Duration> {
        match self {
            Running::Child(child) => bench::process_cpu(child.pid()),
            Running::Thread(served) => served.cpu.read().await.map(|c| c.total()),
        }
    }

    /// The child's resident set size, KiB; `None` in-process.
    fn rss_kib(&self) -> Option<u64> {
        match self {
            Running::Child(child) => bench::rss_kib(child.pid()),
            Running::Thread(_) => None,
        }
    }

    /// Stops the gateway: closes the child's stdin and waits a few seconds
    /// before killing it, or stops the thread.
    async fn stop(self) -> Result<(), Error> {
        match self {
            // The wait for the child to drain blocks.
            Running::Child(child) => tokio::task::spawn_blocking(move || child.stop())
                .await
                .map_err(|_| thread_failed("gateway")),
            Running::Thread(served) => served.stop("gateway").await,
        }
    }
}

// ---------------------------------------------------------------------------
// The stub runtime.

/// The stub runtime's thread.
struct Stub {
    addr: SocketAddr,
    /// Streams whose `start` arrived.
    started: Arc<AtomicUsize>,
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Stub {
    fn start(echo: Utf8Bytes) -> Result<Self, Error> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let started = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&started);
        let thread = std::thread::Builder::new()
            .name("bench-runtime-stub".into())
            .spawn(move || {
                let rt = match current_thread_runtime() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener =
                        match TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await {
                            Ok(l) => l,
                            Err(e) => {
                                let _ = ready_tx.send(Err(e.into()));
                                return;
                            }
                        };
                    let _ = ready_tx.send(listener.local_addr().map_err(Error::from));
                    tokio::pin!(stop_rx);
                    loop {
                        tokio::select! {
                            _ = &mut stop_rx => break,
                            accepted = listener.accept() => {
                                if let Ok((stream, _)) = accepted {
                                    tokio::spawn(stub_session(
                                        stream,
                                        Arc::clone(&counter),
                                        echo.clone(),
                                    ));
                                }
                            }
                        }
                    }
                });
                // Dropping the runtime drops the sessions still open.
                drop(rt);
            })?;
        let addr = ready_rx
            .recv()
            .map_err(|_| thread_failed("runtime stub"))??;
        Ok(Stub {
            addr,
            started,
            stop: stop_tx,
            thread,
        })
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// One media WebSocket of the stub runtime: the `start`, then one echo per
/// inbound `media` frame, until the gateway closes.
async fn stub_session(stream: TcpStream, started: Arc<AtomicUsize>, echo: Utf8Bytes) {
    let _ = stream.set_nodelay(true);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config())).await
    else {
        return;
    };
    // The gateway forwards `connected`, then `start`.
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Text(text))) => {
                if matches!(Message::parse(text.as_str()), Ok(Message::Start { .. })) {
                    started.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return,
        }
    }
    // Reading on after a close flushes tungstenite's close reply.
    while let Some(Ok(message)) = ws.next().await {
        if let WsMessage::Text(text) = message
            && text.as_str().starts_with(MEDIA_PREFIX)
            && ws.send(WsMessage::Text(echo.clone())).await.is_err()
        {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// The callers.

/// The precomputed frames every call shares.
struct Frames {
    /// A Twilio inbound `media` message.
    inbound: Utf8Bytes,
    /// The stub's outbound `media` message.
    echo: Utf8Bytes,
    /// `X-Twilio-Signature` of the handshake: the public stream URL, no
    /// parameters (the same for every call).
    handshake_signature: String,
    /// Where the callers connect (loopback, as behind an ingress).
    gateway_url: String,
}

impl Frames {
    fn new(gateway: SocketAddr) -> Result<Self, Error> {
        let stream_sid = "MZ00000000000000000000000000000000";
        let inbound = Message::Media {
            sequence_number: Some("3".into()),
            media: MediaPayload {
                track: Some("inbound".into()),
                chunk: Some("2".into()),
                timestamp: Some("40".into()),
                payload: silence_payload(),
            },
            stream_sid: stream_sid.into(),
        }
        .to_json();
        let echo = Message::outbound_media(stream_sid, silence_payload()).to_json();
        // The stream URL the TwiML names, exactly as the gateway rebuilds it
        // to verify the handshake.
        let public = PublicUrl::parse(PUBLIC_URL)
            .ok_or_else(|| setup_error(format!("bad public URL {PUBLIC_URL}")))?;
        let stream_url = public.ws_url(MEDIA_PATH);
        Ok(Frames {
            inbound: Utf8Bytes::from(inbound),
            echo: Utf8Bytes::from(echo),
            handshake_signature: signature::compute(AUTH_TOKEN, &stream_url, &[]),
            gateway_url: format!("ws://{gateway}{MEDIA_PATH}"),
        })
    }

    /// `connected` and `start` of call `idx`, with the custom parameters the
    /// voice webhook's TwiML carries for a session at the stub `runtime`.
    fn opening(idx: usize, runtime: SocketAddr) -> [String; 2] {
        let session_id = format!("s-{idx}");
        let media_url = format!("ws://{runtime}/api/sessions/{session_id}/media");
        let token = signature::media_token(AUTH_TOKEN, &session_id, &media_url);
        let call_sid = format!("CA{idx:032x}");
        let stream_sid = format!("MZ{idx:032x}");
        let connected = Message::Connected {
            protocol: Some("Call".into()),
            version: Some("1.0.0".into()),
        };
        let start = Message::Start {
            sequence_number: Some("1".into()),
            start: StartMeta {
                account_sid: "AC0123456789abcdef0123456789abcdef".into(),
                stream_sid: stream_sid.clone(),
                call_sid,
                tracks: vec!["inbound".into()],
                custom_parameters: BTreeMap::from([
                    (SESSION_PARAMETER.to_owned(), session_id),
                    (MEDIA_URL_PARAMETER.to_owned(), media_url),
                    (TOKEN_PARAMETER.to_owned(), token),
                ]),
                media_format: Some(MediaFormat {
                    encoding: ENCODING.into(),
                    sample_rate: 8_000,
                    channels: 1,
                }),
            },
            stream_sid,
        };
        [connected.to_json(), start.to_json()]
    }
}

/// What one call measured.
#[derive(Default)]
struct CallLog {
    connected: bool,
    error: Option<String>,
    /// Measured frames sent.
    sent: u64,
    /// Their echoes received.
    echoed: u64,
    round_trips: Vec<Duration>,
}

type CallSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One caller: connects (within `connecting`), reports on `ready`, then
/// sends a frame per tick from `ticks` (`true`: in the measured window) and
/// times the echoes, which come back in order.
async fn call(
    idx: usize,
    runtime: SocketAddr,
    frames: Arc<Frames>,
    connecting: Arc<Semaphore>,
    ready: mpsc::UnboundedSender<bool>,
    ticks: mpsc::Receiver<bool>,
) -> CallLog {
    let mut log = CallLog::default();
    let socket = {
        let _permit = connecting.acquire().await;
        open(idx, runtime, &frames).await
    };
    let ws = match socket {
        Ok(ws) => ws,
        Err(e) => {
            log.error = Some(format!("connecting: {e}"));
            let _ = ready.send(false);
            return log;
        }
    };
    log.connected = true;
    let _ = ready.send(true);
    if let Err(e) = talk(ws, &frames, ticks, &mut log).await {
        log.error = Some(e);
    }
    log
}

/// The signed handshake, `connected` and `start`.
async fn open(idx: usize, runtime: SocketAddr, frames: &Frames) -> Result<CallSocket, String> {
    let mut request = frames
        .gateway_url
        .as_str()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        signature::HEADER,
        frames
            .handshake_signature
            .parse()
            .map_err(|_| "signature header".to_owned())?,
    );
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(ws_config()), true)
            .await
            .map_err(|e| e.to_string())?;
    for text in Frames::opening(idx, runtime) {
        ws.send(WsMessage::Text(Utf8Bytes::from(text)))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(ws)
}

async fn talk(
    mut ws: CallSocket,
    frames: &Frames,
    mut ticks: mpsc::Receiver<bool>,
    log: &mut CallLog,
) -> Result<(), String> {
    // Send instants of the frames whose echo is due, oldest first.
    let mut pending: VecDeque<(Instant, bool)> = VecDeque::new();
    let on_echo = |pending: &mut VecDeque<(Instant, bool)>, log: &mut CallLog| {
        if let Some((sent, measured)) = pending.pop_front()
            && measured
        {
            log.echoed += 1;
            log.round_trips.push(sent.elapsed());
        }
    };
    loop {
        tokio::select! {
            tick = ticks.recv() => {
                let Some(measured) = tick else { break };
                let sent = Instant::now();
                ws.send(WsMessage::Text(frames.inbound.clone()))
                    .await
                    .map_err(|e| format!("sending a frame: {e}"))?;
                pending.push_back((sent, measured));
                log.sent += u64::from(measured);
            }
            message = ws.next() => match message {
                Some(Ok(WsMessage::Text(text))) if text.as_str().starts_with(MEDIA_PREFIX) => {
                    on_echo(&mut pending, log);
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    return Err(format!("the gateway closed the stream: {frame:?}"));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("reading: {e}")),
                None => return Err("the gateway dropped the stream".to_owned()),
            },
        }
    }
    // The last echoes, then hang up as Twilio does: `stop`, then close.
    let _ = tokio::time::timeout(ECHO_GRACE, async {
        while !pending.is_empty() {
            match ws.next().await {
                Some(Ok(WsMessage::Text(text))) if text.as_str().starts_with(MEDIA_PREFIX) => {
                    on_echo(&mut pending, log);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
    })
    .await;
    let stop = Message::Stop {
        sequence_number: None,
        stop: None,
        stream_sid: "MZ00000000000000000000000000000000".into(),
    };
    let _ = ws
        .send(WsMessage::Text(Utf8Bytes::from(stop.to_json())))
        .await;
    let _ = ws.close(None).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    Ok(())
}

/// Runs one load level against a fresh gateway.
async fn level(
    calls: usize,
    seconds: u64,
    gateway: &Gateway,
    stub: &Stub,
    measure_own_cpu: bool,
) -> Result<Level, Error> {
    let running = Running::start(gateway, stub.addr).await?;
    let result = drive(calls, seconds, &running, stub, measure_own_cpu).await;
    let stopped = running.stop().await;
    let level = result?;
    stopped?;
    Ok(level)
}

async fn drive(
    calls: usize,
    seconds: u64,
    gateway: &Running,
    stub: &Stub,
    measure_own_cpu: bool,
) -> Result<Level, Error> {
    let frames = Arc::new(Frames::new(gateway.addr())?);
    let started_before = stub.started.load(Ordering::Relaxed);
    let rss_idle_kib = gateway.rss_kib();
    let connecting = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let mut ticks = Vec::with_capacity(calls);
    let mut tasks = tokio::task::JoinSet::new();
    for idx in 0..calls {
        let (tx, rx) = mpsc::channel(CALLER_QUEUE);
        ticks.push(tx);
        tasks.spawn(call(
            idx,
            stub.addr,
            Arc::clone(&frames),
            Arc::clone(&connecting),
            ready_tx.clone(),
            rx,
        ));
    }
    drop(ready_tx);
    // Every call connected (or failed), and every stream reached the stub.
    let mut connected = 0usize;
    let _ = tokio::time::timeout(CONNECT_TIMEOUT, async {
        // Each call reports once (and keeps its sender while it lives).
        for _ in 0..calls {
            let Some(ok) = ready_rx.recv().await else {
                break;
            };
            connected += usize::from(ok);
        }
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while stub.started.load(Ordering::Relaxed) - started_before < connected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    // The generator's clock: one 20 ms interval drives every call.
    let window_ticks = seconds.max(1) * FRAMES_PER_S;
    let mut ticker = tokio::time::interval(FRAME);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tick_late = Vec::with_capacity((WARMUP_TICKS + window_ticks) as usize);
    let mut queue_full = 0u64;
    let mut rss_peak_kib = None::<u64>;
    let mut mark = None;
    for k in 0..WARMUP_TICKS + window_ticks {
        let due = ticker.tick().await;
        tick_late.push(Instant::now().saturating_duration_since(due.into_std()));
        if k == WARMUP_TICKS {
            mark = Some((
                Instant::now(),
                gateway.cpu().await,
                bench::process_cpu(std::process::id()),
            ));
        }
        let measured = k >= WARMUP_TICKS;
        for tx in &ticks {
            if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(measured) {
                queue_full += u64::from(measured);
            }
        }
        // RSS once a second with every call up.
        if k % FRAMES_PER_S == 0
            && let Some(rss) = gateway.rss_kib()
        {
            rss_peak_kib = Some(rss_peak_kib.map_or(rss, |p| p.max(rss)));
        }
    }
    // The window ends one frame after its last tick.
    ticker.tick().await;
    let end = (
        Instant::now(),
        gateway.cpu().await,
        bench::process_cpu(std::process::id()),
    );
    drop(ticks);

    let mut level = Level {
        calls,
        connected,
        queue_full,
        rss_idle_mib: rss_idle_kib.map(|k| k as f64 / 1024.0),
        rss_peak_mib: rss_peak_kib.map(|k| k as f64 / 1024.0),
        tick_late: Percentiles::of(tick_late),
        ..Level::default()
    };
    let mut round_trips = Vec::new();
    let collect = tokio::time::timeout(ECHO_GRACE + Duration::from_secs(10), async {
        while let Some(joined) = tasks.join_next().await {
            let Ok(log) = joined else { continue };
            if let Some(e) = log.error {
                level.failed += 1;
                level.first_error.get_or_insert(e);
            }
            level.frames_sent += log.sent;
            level.echoes += log.echoed;
            round_trips.extend(log.round_trips);
        }
    })
    .await;
    if collect.is_err() {
        level
            .first_error
            .get_or_insert("callers hung up late".into());
        tasks.abort_all();
    }
    level.round_trip = Percentiles::of(round_trips);
    if let Some((at, gw_before, own_before)) = mark {
        let wall = end.0.duration_since(at).as_secs_f64().max(1e-9);
        level.window_s = wall;
        let gw = end.1.zip(gw_before).map(|(b, a)| b.saturating_sub(a));
        level.cpu_pct = gw.map(|d| d.as_secs_f64() / wall * 100.0);
        level.us_per_frame = gw
            .filter(|_| level.frames_sent > 0)
            .map(|d| d.as_secs_f64() * 1e6 / level.frames_sent as f64);
        level.generator_cpu_pct = end
            .2
            .zip(own_before)
            .filter(|_| measure_own_cpu)
            .map(|(b, a)| b.saturating_sub(a).as_secs_f64() / wall * 100.0);
    }
    Ok(level)
}

/// Runs the benchmark: the stub runtime, then per load level a fresh
/// gateway and the callers.
pub fn run(options: &Options) -> Result<Report, Error> {
    let mut gateway = options.gateway.clone();
    let setup = match &mut gateway {
        Gateway::InProcess => "gateway: a thread of the bench process, one current-thread Tokio \
                               runtime (CPU of that thread; RSS not measured)"
            .to_owned(),
        Gateway::Process { pin_cpus, .. } => {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            // The child is pinned only if this process could be moved off
            // its CPU; before the stub's thread starts, so it inherits CPU 1.
            *pin_cpus = *pin_cpus && cpus >= 2 && bench::pin_self(1);
            if *pin_cpus {
                "gateway: separate process, one current-thread Tokio runtime, pinned to CPU 0; \
                 callers and stub runtime pinned to CPU 1"
                    .to_owned()
            } else {
                format!(
                    "gateway: separate process, one current-thread Tokio runtime, not pinned \
                     ({cpus} CPUs); callers and stub runtime in the bench process"
                )
            }
        }
    };
    let measure_own_cpu = matches!(gateway, Gateway::Process { .. });
    // Frame sizes only; the gateway address does not change them.
    let sizes = Frames::new(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let stub = Stub::start(sizes.echo.clone())?;
    let rt = current_thread_runtime()?;
    let mut report = Report {
        setup,
        frame_bytes: (sizes.inbound.len(), sizes.echo.len()),
        levels: Vec::new(),
        release_build: !cfg!(debug_assertions),
    };
    let result = (|| {
        for &calls in &options.calls {
            let level = rt.block_on(level(
                calls.max(1),
                options.seconds,
                &gateway,
                &stub,
                measure_own_cpu,
            ))?;
            report.levels.push(level);
        }
        Ok::<(), Error>(())
    })();
    stub.stop();
    result.map(|()| report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frames_are_what_the_gateway_and_the_stub_expect() {
        let frames = Frames::new(SocketAddr::from(([127, 0, 0, 1], 8080))).expect("frames");
        for text in [frames.inbound.as_str(), frames.echo.as_str()] {
            assert!(text.starts_with(MEDIA_PREFIX), "{text}");
            assert!(matches!(Message::parse(text), Ok(Message::Media { .. })));
        }
        let runtime = SocketAddr::from(([127, 0, 0, 1], 9000));
        let [_, start] = Frames::opening(7, runtime);
        let Ok(Message::Start { start, .. }) = Message::parse(&start) else {
            panic!("not a start: {start}");
        };
        let p = &start.custom_parameters;
        assert!(signature::verify_media_token(
            AUTH_TOKEN,
            &p[SESSION_PARAMETER],
            &p[MEDIA_URL_PARAMETER],
            &p[TOKEN_PARAMETER],
        ));
    }

    #[test]
    fn the_bench_runs_and_reports() {
        let report = run(&Options {
            calls: vec![2],
            seconds: 1,
            gateway: Gateway::InProcess,
        })
        .expect("bench runs");
        let level = &report.levels[0];
        assert_eq!(level.connected, 2, "{:?}", level.first_error);
        assert_eq!(level.failed, 0, "{:?}", level.first_error);
        assert!(level.frames_sent > 0);
        assert!(level.echoes > 0, "no frame was echoed");
        assert_eq!(level.round_trip.n as u64, level.echoes);
        let printed = report.to_string();
        assert!(printed.contains("Media Streams proxy"), "{printed}");
        assert!(printed.contains("rtt p99"), "{printed}");
    }
}
