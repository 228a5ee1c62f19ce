//! `voice-agent bench gateway`: the voice webhook on one core.
//!
//! Three threads, each with its own current-thread Tokio runtime:
//!
//! - the real gateway ([`crate::serve`]: the production router and layers,
//!   [`NoCluster`] as the Call recorder, transport `mediaStreams`), so "one
//!   core" is literal;
//! - a stub runtime answering `POST /api/sessions` at once with `201
//!   {sessionId, mediaUrl, pod}` (DESIGN.md §5 "runtime");
//! - a load generator holding C keep-alive HTTP/1.1 connections, each
//!   sending one `POST /twilio/voice` at a time, signed as Twilio signs it
//!   (over the public URL and the form) with a fresh CallSid per request, so
//!   the replay map never answers in place of a session.
//!
//! After a warm-up it runs a pass of valid webhooks (each must get 200 with
//! `<Connect><Stream>` TwiML) and a pass with wrong signatures (each must
//! get 403), and reports requests/s, client-observed latency percentiles and
//! the gateway thread's CPU time per request (from `/proc/thread-self`). A
//! tight loop times [`signature::validate`] alone on Twilio's published test
//! vector. It reports and never asserts: speed depends on the machine.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use voice_agent_api::deploy::ComponentConfig;
use voice_agent_proto::{CreateSessionRequest, CreateSessionResponse};

use crate::api::VOICE_PATH;
use crate::config::ConfigError;
use crate::{Config, Error, NoCluster, Secret, State, signature};

/// How long Twilio waits for a webhook answer before it gives up on the
/// request (its documented HTTP timeout).
pub const TWILIO_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(15);

/// The Twilio auth token of the benchmark's gateway.
pub(crate) const AUTH_TOKEN: &str = "bench-twilio-auth-token-0123456789";
/// The number the benchmark's agent is bound to; webhooks call it.
const AGENT_NUMBER: &str = "+15559870000";
const CALLER: &str = "+15551230142";
/// The public URL Twilio is configured with; the gateway signs against it
/// while the load generator connects over loopback, as behind an ingress.
pub(crate) const PUBLIC_URL: &str = "https://voice.example.com";

/// Twilio's published signature test vector (the one in
/// `tests/signature.rs`), for the verification loop.
const VECTOR_TOKEN: &str = "12345";
const VECTOR_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
const VECTOR_SIGNATURE: &str = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";
const VECTOR_PARAMS: [(&str, &str); 5] = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Caller", "+12349013030"),
    ("Digits", "1234"),
    ("From", "+12349013030"),
    ("To", "+18005551212"),
];

/// How much load a pass applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// This many requests, spread over the connections.
    Requests(usize),
    /// As many requests as fit in this long.
    For(Duration),
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Concurrent keep-alive connections (each has one request in flight).
    pub connections: usize,
    /// Size of each measured pass (valid, then bad signatures).
    pub load: Load,
    /// Valid webhooks sent before measuring (connections, pools, the
    /// replay map and allocator warm up).
    pub warmup: usize,
    /// Iterations of the signature-verification loop.
    pub verifies: usize,
    /// Keep the gateway's logs (two info lines per call, a warning per
    /// refusal) instead of silencing its thread; they go wherever the
    /// process's subscriber writes.
    pub log: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connections: 8,
            load: Load::Requests(50_000),
            warmup: 2_000,
            verifies: 200_000,
            log: false,
        }
    }
}

/// Latency percentiles.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    /// Measurements.
    pub n: usize,
    /// Median.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest.
    pub max: Duration,
    /// Mean.
    pub mean: Duration,
}

impl Percentiles {
    pub(crate) fn of(mut times: Vec<Duration>) -> Self {
        times.sort_unstable();
        let at = |q: f64| {
            let i = (q * times.len().saturating_sub(1) as f64).round() as usize;
            times.get(i).copied().unwrap_or_default()
        };
        let total: Duration = times.iter().sum();
        Percentiles {
            n: times.len(),
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: times.last().copied().unwrap_or_default(),
            mean: total / u32::try_from(times.len().max(1)).unwrap_or(u32::MAX),
        }
    }
}

/// One measured pass.
#[derive(Debug, Clone, Default)]
pub struct Pass {
    /// Requests answered (any status).
    pub requests: usize,
    /// Requests without the expected answer (status, body, or I/O).
    pub errors: usize,
    /// The first of them, for the report.
    pub first_error: Option<String>,
    /// Wall time of the pass.
    pub wall: Duration,
    /// Answered requests per second of wall time.
    pub requests_per_s: f64,
    /// Client-observed time from writing the request to reading the whole
    /// answer.
    pub latency: Percentiles,
    /// The gateway thread's CPU time divided by `requests`; `None` where
    /// `/proc/thread-self` cannot be read.
    pub gateway_cpu_per_request: Option<Duration>,
    /// The gateway thread's CPU time over `wall`: 1.0 is one core saturated.
    pub gateway_busy: Option<f64>,
    /// The share of the gateway thread's CPU time spent in the kernel
    /// (system time: TCP, epoll).
    pub gateway_system_share: Option<f64>,
    /// The stub runtime's thread, per request.
    pub stub_cpu_per_request: Option<Duration>,
    /// The load generator's thread, per request.
    pub client_cpu_per_request: Option<Duration>,
}

impl Pass {
    /// Requests one core answers per second at this pass's CPU cost.
    pub fn per_core_capacity(&self) -> Option<f64> {
        self.gateway_cpu_per_request
            .filter(|d| !d.is_zero())
            .map(|d| 1.0 / d.as_secs_f64())
    }
}

/// What the benchmark measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Options used.
    pub options: Options,
    /// Bytes of one voice webhook's form body (Twilio's usual fields).
    pub body_bytes: usize,
    /// Signed webhooks, expected `200` with `<Stream`.
    pub valid: Pass,
    /// Wrongly signed webhooks, expected `403`.
    pub bad_signature: Pass,
    /// [`signature::validate`] on Twilio's test vector (both URL variants
    /// are computed, as for every webhook).
    pub verify: Percentiles,
    /// The same loop on the benchmark's own webhook form (more fields).
    pub verify_webhook: Percentiles,
    /// Whether this is an optimized build; debug numbers mean little.
    pub release_build: bool,
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn opt_us(d: Option<Duration>) -> String {
    d.map_or_else(|| "n/a".to_owned(), |d| format!("{:.1}", us(d)))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        let load = match o.load {
            Load::Requests(n) => format!("{n} requests per pass"),
            Load::For(d) => format!("{:.1} s per pass", d.as_secs_f64()),
        };
        writeln!(
            f,
            "gateway bench: {} build, {cores} cores; gateway on one current-thread runtime, \
             stub runtime and load generator on their own threads",
            if self.release_build {
                "release"
            } else {
                "DEBUG (use --release)"
            },
        )?;
        writeln!(
            f,
            "  {} keep-alive connections, {load} after {} warm-up; form body {} B; gateway logs {}",
            o.connections,
            o.warmup,
            self.body_bytes,
            if o.log { "on" } else { "off" },
        )?;
        writeln!(
            f,
            "  {:<22} {:>8} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8}  {:>9} {:>5} {:>4}  {:>7} {:>7}",
            "pass",
            "requests",
            "errors",
            "req/s",
            "p50 µs",
            "p95 µs",
            "p99 µs",
            "max µs",
            "gw µs/req",
            "busy",
            "sys",
            "stub µs",
            "load µs",
        )?;
        let percent =
            |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{:.0}%", v * 100.0));
        for (name, p) in [
            ("signed → 200 <Stream>", &self.valid),
            ("bad signature → 403", &self.bad_signature),
        ] {
            writeln!(
                f,
                "  {name:<22} {:>8} {:>6} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.0}  {:>9} {:>5} {:>4}  {:>7} {:>7}",
                p.requests,
                p.errors,
                p.requests_per_s,
                us(p.latency.p50),
                us(p.latency.p95),
                us(p.latency.p99),
                us(p.latency.max),
                opt_us(p.gateway_cpu_per_request),
                percent(p.gateway_busy),
                percent(p.gateway_system_share),
                opt_us(p.stub_cpu_per_request),
                opt_us(p.client_cpu_per_request),
            )?;
            if let Some(error) = &p.first_error {
                writeln!(f, "    first error: {error}")?;
            }
        }
        writeln!(
            f,
            "  (latency as the client sees it; gw µs/req: the gateway thread's CPU time per \
             request, busy: that time over wall time, sys: its kernel share; stub and load: \
             the other two threads)"
        )?;
        for (name, v) in [
            ("Twilio's test vector", &self.verify),
            ("this webhook's form", &self.verify_webhook),
        ] {
            writeln!(
                f,
                "  signature check alone, {name:<21} n={:<7} p50 {:>6.2} µs  p99 {:>6.2} µs  mean {:>6.2} µs",
                v.n,
                us(v.p50),
                us(v.p99),
                us(v.mean),
            )?;
        }
        let p99_ms = self.valid.latency.p99.as_secs_f64() * 1e3;
        let timeout = TWILIO_WEBHOOK_TIMEOUT.as_secs();
        if let Some(capacity) = self.valid.per_core_capacity() {
            writeln!(
                f,
                "  one core answers ~{capacity:.0} webhooks/s ({:.1} µs of gateway CPU each; \
                 {:.0}/s measured with the gateway thread {:.0}% busy). Twilio's webhook timeout \
                 is {timeout} s, so with a runtime as fast as the stub one core would answer a \
                 burst of ~{:.0} calls ringing at once before it; p99 here is {p99_ms:.2} ms.",
                us(self.valid.gateway_cpu_per_request.unwrap_or_default()),
                self.valid.requests_per_s,
                self.valid.gateway_busy.unwrap_or_default() * 100.0,
                capacity * TWILIO_WEBHOOK_TIMEOUT.as_secs_f64(),
            )?;
        } else {
            writeln!(
                f,
                "  one core answered {:.0} webhooks/s (thread CPU time unavailable); Twilio's \
                 webhook timeout is {timeout} s; p99 here is {p99_ms:.2} ms.",
                self.valid.requests_per_s,
            )?;
        }
        writeln!(
            f,
            "  not included: Call recording (off; in a cluster each call adds a Kubernetes \
             create and status patch, in the background), TLS (ends at the ingress), the \
             runtime's real session setup"
        )?;
        Ok(())
    }
}

/// CPU time of a thread, as the kernel splits it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    /// In user space.
    pub user: Duration,
    /// In the kernel on the thread's behalf (system calls; on loopback,
    /// also the TCP receive work its writes trigger).
    pub system: Duration,
}

impl CpuTime {
    /// User plus system time.
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    fn since(&self, before: &CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(before.user),
            system: self.system.saturating_sub(before.system),
        }
    }
}

/// The calling thread's CPU time so far: `utime` and `stime` from
/// `/proc/thread-self/stat`, in clock ticks of 10 ms, so passes should last
/// seconds. `None` where that file does not exist (not Linux).
pub fn thread_cpu_time() -> Option<CpuTime> {
    let (user, system) = voice_agent_http::bench::cpu_times("/proc/thread-self/stat")?;
    Some(CpuTime { user, system })
}

/// Reads the CPU time of the thread that runs a current-thread runtime,
/// from any thread.
#[derive(Clone)]
pub(crate) struct CpuProbe(mpsc::UnboundedSender<oneshot::Sender<Option<CpuTime>>>);

impl CpuProbe {
    /// Spawns the answering task on the current (current-thread) runtime.
    pub(crate) fn spawn() -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<oneshot::Sender<Option<CpuTime>>>();
        tokio::spawn(async move {
            while let Some(reply) = rx.recv().await {
                let _ = reply.send(thread_cpu_time());
            }
        });
        CpuProbe(tx)
    }

    pub(crate) async fn read(&self) -> Option<CpuTime> {
        let (tx, rx) = oneshot::channel();
        self.0.send(tx).ok()?;
        rx.await.ok().flatten()
    }
}

/// A current-thread runtime, as each of the benchmark's threads runs one.
pub(crate) fn current_thread_runtime() -> Result<tokio::runtime::Runtime, Error> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub(crate) fn thread_failed(what: &str) -> Error {
    Error::Io(std::io::Error::other(format!(
        "bench: the {what} thread failed"
    )))
}

/// A running server thread: its address, CPU probe and stop signal.
pub(crate) struct Served {
    pub(crate) addr: SocketAddr,
    pub(crate) cpu: CpuProbe,
    stop: oneshot::Sender<()>,
    done: oneshot::Receiver<Result<(), Error>>,
}

impl Served {
    /// Stops the server and waits until its thread let go of its runtime.
    pub(crate) async fn stop(self, what: &str) -> Result<(), Error> {
        let _ = self.stop.send(());
        self.done.await.map_err(|_| thread_failed(what))?
    }
}

/// Starts a thread with a current-thread runtime that runs `serve` until
/// stopped. `serve` gets the stop signal and answers its address and a
/// CPU probe once listening; the returned channel yields the running
/// server, or why it did not start.
pub(crate) fn spawn_server<F, Fut>(
    name: &'static str,
    serve: F,
) -> Result<oneshot::Receiver<Result<Served, Error>>, Error>
where
    F: FnOnce(oneshot::Receiver<()>, oneshot::Sender<(SocketAddr, CpuProbe)>) -> Fut
        + Send
        + 'static,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let (served_tx, served_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("bench-{name}"))
        .spawn(move || {
            let (stop_tx, stop_rx) = oneshot::channel();
            let (ready_tx, ready_rx) = oneshot::channel();
            let (done_tx, done_rx) = oneshot::channel();
            let runtime = match current_thread_runtime() {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = served_tx.send(Err(error));
                    return;
                }
            };
            let result = runtime.block_on(async move {
                let serving = serve(stop_rx, ready_tx);
                tokio::pin!(serving);
                tokio::select! {
                    // A server that ends before it is ready failed to start.
                    biased;
                    result = &mut serving => {
                        let error = result.err().unwrap_or_else(|| thread_failed(name));
                        let _ = served_tx.send(Err(error));
                        return Ok(());
                    }
                    ready = ready_rx => {
                        if let Ok((addr, cpu)) = ready {
                            let _ = served_tx.send(Ok(Served { addr, cpu, stop: stop_tx, done: done_rx }));
                        }
                    }
                }
                serving.await
            });
            // The runtime goes first: its tasks hold connections another
            // server's graceful shutdown waits on.
            drop(runtime);
            let _ = done_tx.send(result);
        })?;
    Ok(served_rx)
}

/// The stub runtime: `POST /api/sessions` → 201 with a fresh session.
async fn stub_runtime(
    stop: oneshot::Receiver<()>,
    ready: oneshot::Sender<(SocketAddr, CpuProbe)>,
) -> Result<(), Error> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let sessions = Arc::new((AtomicU64::new(0), addr));
    let app = axum::Router::new()
        .route("/api/sessions", post(create_session))
        .with_state(sessions);
    let _ = ready.send((addr, CpuProbe::spawn()));
    axum::serve(voice_agent_http::nodelay(listener), app)
        .with_graceful_shutdown(async move {
            let _ = stop.await;
        })
        .await?;
    Ok(())
}

async fn create_session(
    AxumState(sessions): AxumState<Arc<(AtomicU64, SocketAddr)>>,
    // Parsed, so a gateway sending something else than the contract gets
    // a 4xx and the benchmark counts an error.
    Json(_request): Json<CreateSessionRequest>,
) -> Response {
    let (next, addr) = &*sessions;
    let id = format!("s-{}", next.fetch_add(1, Ordering::Relaxed));
    (
        StatusCode::CREATED,
        Json(CreateSessionResponse {
            media_url: format!("ws://{addr}/api/sessions/{id}/media"),
            session_id: id,
            pod: "bench-runtime-0".to_owned(),
        }),
    )
        .into_response()
}

/// The benchmark agent's rendered config: transport `mediaStreams`, one
/// bound number, the runtime at `runtime`.
pub(crate) fn bench_config(runtime: SocketAddr) -> Result<Config, Error> {
    let yaml = format!(
        r#"
voiceAgent: bench
namespace: bench
persona: {{greeting: "Hi", instructions: "Be brief"}}
llm: {{provider: local}}
stt: {{}}
tts: {{}}
knowledge: {{}}
database: false
telephony:
  publicUrl: {PUBLIC_URL}
  transport: mediaStreams
  twilio:
    authTokenSecretRef: {{name: twilio, key: authToken}}
runtime: {{maxCallsPerPod: 20, drainTimeoutSeconds: 300}}
endpoints:
  gateway: http://bench-gateway:8080
  runtime: http://{runtime}
  agent: http://bench-agent:8080
  tts: http://bench-tts:8080
boundNumbers: ["{AGENT_NUMBER}"]
"#
    );
    let component = ComponentConfig::from_yaml(&yaml).map_err(|e| ConfigError::Invalid {
        field: "bench config",
        reason: e.to_string(),
    })?;
    let mut config = Config::new(component, Secret::new(AUTH_TOKEN.to_owned()))?;
    // No media streams are proxied; shutdown need not wait.
    config.drain_timeout = Duration::ZERO;
    Ok(config)
}

/// The real gateway on the calling thread's runtime.
pub(crate) async fn serve_gateway(
    config: Config,
    stop: oneshot::Receiver<()>,
    ready: oneshot::Sender<(SocketAddr, CpuProbe)>,
) -> Result<(), Error> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(State::new(config, Arc::new(NoCluster::default()))?);
    let _ = ready.send((addr, CpuProbe::spawn()));
    crate::serve(listener, state, async move {
        let _ = stop.await;
    })
    .await
}

/// The fields Twilio posts to the voice webhook of an inbound call (its
/// documented request parameters; CallSid is filled in per request).
fn webhook_params(call_sid: &str) -> Vec<(String, String)> {
    [
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid),
        ("CallStatus", "ringing"),
        ("Called", AGENT_NUMBER),
        ("CalledCity", "SAN FRANCISCO"),
        ("CalledCountry", "US"),
        ("CalledState", "CA"),
        ("CalledZip", "94105"),
        ("Caller", CALLER),
        ("CallerCity", "OAKLAND"),
        ("CallerCountry", "US"),
        ("CallerState", "CA"),
        ("CallerZip", "94612"),
        ("Direction", "inbound"),
        ("From", CALLER),
        ("FromCity", "OAKLAND"),
        ("FromCountry", "US"),
        ("FromState", "CA"),
        ("FromZip", "94612"),
        ("To", AGENT_NUMBER),
        ("ToCity", "SAN FRANCISCO"),
        ("ToCountry", "US"),
        ("ToState", "CA"),
        ("ToZip", "94105"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

/// `application/x-www-form-urlencoded`, as Twilio encodes.
fn encode_form(params: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        for (j, s) in [name, value].into_iter().enumerate() {
            if j == 1 {
                out.push('=');
            }
            for b in s.bytes() {
                match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                        out.push(char::from(b));
                    }
                    b' ' => out.push('+'),
                    b => out.push_str(&format!("%{b:02X}")),
                }
            }
        }
    }
    out
}

/// What a pass sends and expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Signed with the auth token: 200 with `<Stream`.
    Valid,
    /// Signed with another token: 403.
    BadSignature,
}

/// Builds the requests of a pass, as Twilio would send them.
struct Requests {
    host: String,
    url: String,
    kind: Kind,
    /// Keeps CallSids distinct across passes.
    pass: u64,
}

impl Requests {
    /// The bytes of request `ticket`: a fresh `CA` + 32 hex CallSid, the
    /// form, and its signature over the public URL.
    fn build(&self, ticket: u64) -> Vec<u8> {
        let call_sid = format!("CA{:016x}{ticket:016x}", self.pass);
        let params = webhook_params(&call_sid);
        let token = match self.kind {
            Kind::Valid => AUTH_TOKEN,
            Kind::BadSignature => "not-the-auth-token",
        };
        let sig = signature::compute(token, &self.url, &params);
        let body = encode_form(&params);
        format!(
            "POST {VOICE_PATH} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/x-www-form-urlencoded\r\n\
             x-twilio-signature: {sig}\r\ncontent-length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        )
        .into_bytes()
    }

    /// Why `status` and `body` are not the answer this pass expects.
    fn check(&self, status: u16, body: &[u8]) -> Option<String> {
        let ok = match self.kind {
            Kind::Valid => status == 200 && body.windows(7).any(|w| w == b"<Stream"),
            Kind::BadSignature => status == 403,
        };
        (!ok).then(|| {
            format!(
                "{status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )
        })
    }
}

/// Longest response head line the client accepts.
const MAX_LINE: usize = 8 * 1024;

/// One keep-alive HTTP/1.1 connection, one request at a time. Minimal on
/// purpose (`Content-Length` bodies only), so that the load generator costs
/// little next to the gateway.
struct Connection {
    addr: SocketAddr,
    stream: BufReader<TcpStream>,
    line: Vec<u8>,
}

fn invalid(message: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.into())
}

impl Connection {
    async fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            addr,
            stream: BufReader::new(stream),
            line: Vec::with_capacity(256),
        })
    }

    /// Sends `request` and reads the answer's status and body.
    async fn send(&mut self, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        self.stream.get_mut().write_all(request).await?;
        let mut status = None;
        let mut length = None;
        let mut close = false;
        loop {
            self.line.clear();
            let n = (&mut self.stream)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut self.line)
                .await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let line = std::str::from_utf8(&self.line)
                .map_err(|_| invalid("response head is not UTF-8"))?
                .trim_end();
            if status.is_none() {
                let code = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse::<u16>().ok())
                    .ok_or_else(|| invalid(format!("bad status line {line:?}")))?;
                status = Some(code);
                continue;
            }
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(invalid(format!("bad header {line:?}")));
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| invalid("bad content-length"))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(invalid("chunked answers are not supported"));
            } else if name.eq_ignore_ascii_case("connection") && value.contains("close") {
                close = true;
            }
        }
        let status = status.ok_or_else(|| invalid("no status line"))?;
        let mut body = vec![0; length.unwrap_or(0)];
        self.stream.read_exact(&mut body).await?;
        if close {
            *self = Connection::open(self.addr).await?;
        }
        Ok((status, body))
    }
}

/// What one connection did in a pass.
struct Sent {
    connection: Connection,
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
}

/// Sends requests on every connection until `load` is done.
async fn drive(
    connections: Vec<Connection>,
    requests: Arc<Requests>,
    load: Load,
) -> Result<(Vec<Connection>, Vec<Duration>, usize, Option<String>), Error> {
    let tickets = Arc::new(AtomicUsize::new(0));
    let deadline = match load {
        Load::For(d) => Some(Instant::now() + d),
        Load::Requests(_) => None,
    };
    let limit = match load {
        Load::Requests(n) => n,
        Load::For(_) => usize::MAX,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for mut connection in connections {
        let tickets = Arc::clone(&tickets);
        let requests = Arc::clone(&requests);
        tasks.spawn(async move {
            let mut sent = Vec::new();
            let mut errors = 0;
            let mut first_error = None;
            loop {
                let ticket = tickets.fetch_add(1, Ordering::Relaxed);
                if ticket >= limit || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let request = requests.build(ticket as u64);
                let started = Instant::now();
                let error = match connection.send(&request).await {
                    Ok((status, body)) => {
                        sent.push(started.elapsed());
                        requests.check(status, &body)
                    }
                    Err(error) => {
                        // A broken connection is replaced; the request
                        // counts as an error.
                        sent.push(started.elapsed());
                        let message = format!("I/O: {error}");
                        connection = Connection::open(connection.addr).await?;
                        Some(message)
                    }
                };
                if let Some(error) = error {
                    errors += 1;
                    first_error.get_or_insert(error);
                }
            }
            Ok::<_, std::io::Error>(Sent {
                connection,
                latencies: sent,
                errors,
                first_error,
            })
        });
    }
    let mut connections = Vec::new();
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let sent = joined.map_err(|_| thread_failed("load generator"))??;
        connections.push(sent.connection);
        latencies.extend(sent.latencies);
        errors += sent.errors;
        if first_error.is_none() {
            first_error = sent.first_error;
        }
    }
    Ok((connections, latencies, errors, first_error))
}

fn delta(before: Option<CpuTime>, after: Option<CpuTime>) -> Option<CpuTime> {
    Some(after?.since(&before?))
}

/// One measured pass, with CPU time read around it.
async fn pass(
    connections: Vec<Connection>,
    requests: Requests,
    load: Load,
    gateway: &CpuProbe,
    stub: &CpuProbe,
) -> Result<(Vec<Connection>, Pass), Error> {
    let before = (gateway.read().await, stub.read().await, thread_cpu_time());
    let started = Instant::now();
    let (connections, latencies, errors, first_error) =
        drive(connections, Arc::new(requests), load).await?;
    let wall = started.elapsed();
    let after = (gateway.read().await, stub.read().await, thread_cpu_time());
    let n = latencies.len();
    let per_request =
        |cpu: Option<CpuTime>| cpu.map(|c| c.total() / u32::try_from(n.max(1)).unwrap_or(u32::MAX));
    let gateway_cpu = delta(before.0, after.0);
    Ok((
        connections,
        Pass {
            requests: n,
            errors,
            first_error,
            wall,
            requests_per_s: n as f64 / wall.as_secs_f64().max(1e-9),
            latency: Percentiles::of(latencies),
            gateway_cpu_per_request: per_request(gateway_cpu),
            gateway_busy: gateway_cpu
                .map(|c| c.total().as_secs_f64() / wall.as_secs_f64().max(1e-9)),
            gateway_system_share: gateway_cpu
                .filter(|c| !c.total().is_zero())
                .map(|c| c.system.as_secs_f64() / c.total().as_secs_f64()),
            stub_cpu_per_request: per_request(delta(before.1, after.1)),
            client_cpu_per_request: per_request(delta(before.2, after.2)),
        },
    ))
}

/// The load generator: warm-up, then the valid and the bad-signature pass.
async fn load(
    options: Options,
    gateway: SocketAddr,
    gateway_cpu: CpuProbe,
    stub_cpu: CpuProbe,
) -> Result<(Pass, Pass), Error> {
    let mut connections = Vec::with_capacity(options.connections);
    for _ in 0..options.connections.max(1) {
        connections.push(Connection::open(gateway).await?);
    }
    let requests = |kind, pass| Requests {
        host: gateway.to_string(),
        url: format!("{PUBLIC_URL}{VOICE_PATH}"),
        kind,
        pass,
    };
    let (connections, ..) = drive(
        connections,
        Arc::new(requests(Kind::Valid, 0)),
        Load::Requests(options.warmup),
    )
    .await?;
    let (connections, valid) = pass(
        connections,
        requests(Kind::Valid, 1),
        options.load,
        &gateway_cpu,
        &stub_cpu,
    )
    .await?;
    let (_, bad_signature) = pass(
        connections,
        requests(Kind::BadSignature, 2),
        options.load,
        &gateway_cpu,
        &stub_cpu,
    )
    .await?;
    Ok((valid, bad_signature))
}

/// Times `validate` `n` times on `params`, one measurement per call.
fn time_verify(n: usize, token: &str, url: &str, params: &[(String, String)]) -> Percentiles {
    let sig = signature::compute(token, url, params);
    let mut times = Vec::with_capacity(n);
    let mut valid = 0usize;
    for _ in 0..n {
        let t = Instant::now();
        let ok = signature::validate(
            std::hint::black_box(token),
            std::hint::black_box(url),
            std::hint::black_box(params),
            std::hint::black_box(&sig),
        );
        times.push(t.elapsed());
        valid += usize::from(ok);
    }
    if valid != n {
        tracing::warn!(valid, n, "bench: a signature did not verify");
    }
    Percentiles::of(times)
}

/// Runs the benchmark: verification loop, then the stub runtime, the
/// gateway and the load generator on three threads.
pub async fn run(options: Options) -> Result<Report, Error> {
    let vector: Vec<(String, String)> = VECTOR_PARAMS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    if signature::compute(VECTOR_TOKEN, VECTOR_URL, &vector) != VECTOR_SIGNATURE {
        tracing::warn!("bench: Twilio's test vector does not compute to its signature");
    }
    let verify = time_verify(options.verifies, VECTOR_TOKEN, VECTOR_URL, &vector);
    let sample = webhook_params("CA0123456789abcdef0123456789abcdef");
    let verify_webhook = time_verify(
        options.verifies,
        AUTH_TOKEN,
        &format!("{PUBLIC_URL}{VOICE_PATH}"),
        &sample,
    );

    let stub = spawn_server("runtime-stub", stub_runtime)?
        .await
        .map_err(|_| thread_failed("runtime stub"))??;
    let gateway_config = bench_config(stub.addr)?;
    let log = options.log;
    let gateway = spawn_server("gateway", move |stop, ready| async move {
        // Silence this thread unless asked: per-call info logs to a
        // terminal would measure the terminal.
        let _quiet = (!log).then(|| {
            tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default())
        });
        serve_gateway(gateway_config, stop, ready).await
    })?
    .await
    .map_err(|_| thread_failed("gateway"))??;

    let (result_tx, result_rx) = oneshot::channel();
    let (addr, gateway_cpu, stub_cpu) = (gateway.addr, gateway.cpu.clone(), stub.cpu.clone());
    let load_options = options.clone();
    std::thread::Builder::new()
        .name("bench-load".to_owned())
        .spawn(move || {
            let result = current_thread_runtime().and_then(|runtime| {
                runtime.block_on(load(load_options, addr, gateway_cpu, stub_cpu))
            });
            let _ = result_tx.send(result);
        })?;
    let passes = result_rx.await.map_err(|_| thread_failed("load generator"));

    // The gateway first: its pooled connections to the stub keep the stub's
    // graceful shutdown waiting until they close.
    let stopped = gateway.stop("gateway").await;
    let stub_stopped = stub.stop("runtime stub").await;
    let (valid, bad_signature) = passes??;
    stopped?;
    stub_stopped?;
    Ok(Report {
        body_bytes: encode_form(&sample).len(),
        options,
        valid,
        bad_signature,
        verify,
        verify_webhook,
        release_build: !cfg!(debug_assertions),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_signs_and_parses_as_the_gateway_reads_it() {
        let params = webhook_params("CA00000000000000000000000000000001");
        let body = encode_form(&params);
        assert_eq!(crate::form::parse(body.as_bytes()).expect("form"), params);
        assert!(thread_cpu_time().is_some() || !cfg!(target_os = "linux"));
    }

    #[tokio::test]
    async fn the_bench_runs_and_reports() {
        let report = run(Options {
            connections: 2,
            load: Load::Requests(50),
            warmup: 10,
            verifies: 1_000,
            log: false,
        })
        .await
        .expect("bench runs");
        for pass in [&report.valid, &report.bad_signature] {
            assert_eq!(pass.requests, 50);
            assert_eq!(pass.errors, 0, "{:?}", pass.first_error);
            assert_eq!(pass.latency.n, 50);
        }
        assert_eq!(report.verify.n, 1_000);
        assert_eq!(report.verify_webhook.n, 1_000);
        let printed = report.to_string();
        assert!(printed.contains("webhooks/s"), "{printed}");
        assert!(printed.contains("bad signature → 403"), "{printed}");
    }
}
