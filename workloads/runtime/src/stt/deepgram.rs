//! Deepgram streaming speech to text (`wss://api.deepgram.com/v1/listen`).
//!
//! One WebSocket per call, opened by a background task so that `open` returns
//! at once; audio pushed meanwhile waits in the stream's queue. The socket is
//! opened with `encoding=linear16`, the call's sample rate, interim results,
//! endpointing at the call's `endpointing_ms`, `utterance_end_ms=1000` and
//! VAD events, and authenticated with `Authorization: Token <key>` (the key
//! never appears in a log line or an error).
//!
//! Messages (Deepgram's documented shapes):
//! - client → server: binary frames of PCM16 LE audio; text
//!   `{"type":"KeepAlive"}` when nothing was sent for a while (Deepgram closes
//!   a socket after 10 s without data), `{"type":"Finalize"}` for
//!   [`SttInput::Finalize`], `{"type":"CloseStream"}` for [`SttInput::Close`].
//! - server → client: `Results` (`channel.alternatives[0].transcript`,
//!   `is_final`, `speech_final`) become `Interim` (not final) or one `Final`
//!   per finalized segment, which the turn-taking machine concatenates;
//!   `SpeechStarted` and `UtteranceEnd` pass through; `Metadata` and `Error`
//!   are logged. A malformed message is logged and skipped.
//!
//! Failures: 401/403 at the handshake (bad key) and other client errors
//! (400 bad parameters, 402 no credit) fail the stream at once. A dropped
//! socket, a timeout, 429 or a 5xx is retried with exponential backoff, a
//! bounded number of times; audio that arrives meanwhile is buffered (the
//! last few seconds) and sent after the reconnect, which is reported as
//! [`SttEvent::Reconnected`]. Giving up is [`SttEvent::Failed`].

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use voice_agent_http::env::Secret;
use voice_agent_proto::audio::samples_to_pcm16_le;

use super::{
    AUDIO_QUEUE_FRAMES, EVENT_QUEUE, SttError, SttEvent, SttInput, SttParams, SttProvider,
    SttStream,
};
use crate::config::SttConfig;

/// Deepgram's public endpoint.
pub const DEFAULT_BASE_URL: &str = "wss://api.deepgram.com";
/// The model used when neither the call nor the config names one.
pub const DEFAULT_MODEL: &str = "nova-3";

/// How the Deepgram provider connects.
#[derive(Debug, Clone)]
pub struct DeepgramConfig {
    /// `wss://api.deepgram.com`, a regional or self-hosted endpoint
    /// (`ws(s)://` or `http(s)://`; `/v1/listen` is appended unless present).
    pub base_url: String,
    /// The API key (`VOICE_AGENT_STT_API_KEY`).
    pub api_key: Secret,
    /// Model when the call does not name one.
    pub default_model: String,
    /// `utterance_end_ms`: silence after the last word before `UtteranceEnd`.
    pub utterance_end_ms: u32,
    /// `smart_format` (punctuation, numerals).
    pub smart_format: bool,
    /// Send `KeepAlive` after this long without sending anything (Deepgram
    /// recommends every 3-5 s; it closes idle sockets after 10 s).
    pub keepalive_interval: Duration,
    /// Limit on one connection attempt (TCP, TLS and handshake).
    pub connect_timeout: Duration,
    /// Consecutive failed connection attempts before the stream gives up.
    pub max_reconnect_attempts: u32,
    /// Wait before the first retry; doubled each further attempt.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Audio kept while disconnected, in ms (older audio is dropped).
    pub reconnect_buffer_ms: u32,
    /// After `CloseStream`, how long to wait for the last results.
    pub close_timeout: Duration,
}

impl DeepgramConfig {
    /// Defaults with `api_key`.
    pub fn new(api_key: Secret) -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            api_key,
            default_model: DEFAULT_MODEL.to_owned(),
            utterance_end_ms: 1_000,
            smart_format: true,
            keepalive_interval: Duration::from_secs(4),
            connect_timeout: Duration::from_secs(10),
            max_reconnect_attempts: 5,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
            reconnect_buffer_ms: 5_000,
            close_timeout: Duration::from_secs(5),
        }
    }

    /// From the runtime's STT settings: base URL, key and model.
    pub fn from_runtime(stt: &SttConfig) -> Self {
        let mut config = Self::new(stt.api_key.clone());
        if let Some(url) = stt.base_url.as_deref().filter(|u| !u.trim().is_empty()) {
            url.trim().clone_into(&mut config.base_url);
        }
        if let Some(model) = stt.model.as_deref().filter(|m| !m.trim().is_empty()) {
            model.trim().clone_into(&mut config.default_model);
        }
        config
    }
}

/// The Deepgram speech-to-text provider.
#[derive(Clone)]
pub struct DeepgramStt {
    shared: Arc<Shared>,
}

struct Shared {
    config: DeepgramConfig,
    /// `ws(s)://host[:port]/path/v1/listen`, without a query.
    listen_url: String,
    /// The `Authorization` header value, marked sensitive.
    authorization: HeaderValue,
    /// TLS for `wss://` (built once: loading the native roots reads the
    /// system's certificate store); `None` for `ws://`.
    tls: Option<Connector>,
}

impl std::fmt::Debug for DeepgramStt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeepgramStt")
            .field("listen_url", &self.shared.listen_url)
            .field("config", &self.shared.config)
            .finish()
    }
}

impl DeepgramStt {
    /// Checks the configuration (key present, URL usable) and prepares TLS.
    pub fn new(config: DeepgramConfig) -> Result<Self, SttError> {
        if config.api_key.is_empty() {
            return Err(SttError::Config(
                "no Deepgram API key: set VOICE_AGENT_STT_API_KEY (stt.apiKeySecretRef)".into(),
            ));
        }
        let mut authorization = HeaderValue::from_str(&format!(
            "Token {}",
            config.api_key.expose().trim()
        ))
        .map_err(|_| {
            SttError::Config("the Deepgram API key has characters a header cannot carry".into())
        })?;
        authorization.set_sensitive(true);
        let listen_url = listen_url(&config.base_url)?;
        let tls = if listen_url.starts_with("wss://") {
            Some(tls_connector()?)
        } else {
            None
        };
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                listen_url,
                authorization,
                tls,
            }),
        })
    }

    /// The URL a stream with `params` connects to (no secrets in it).
    pub fn url(&self, params: &SttParams) -> String {
        let c = &self.shared.config;
        let model = params
            .model
            .as_deref()
            .filter(|m| !m.trim().is_empty())
            .unwrap_or(&c.default_model);
        let mut query: Vec<(&str, String)> = vec![("model", model.to_owned())];
        if !params.language.trim().is_empty() {
            query.push(("language", params.language.trim().to_owned()));
        }
        query.extend([
            ("encoding", "linear16".to_owned()),
            ("sample_rate", params.sample_rate.to_string()),
            ("channels", "1".to_owned()),
            ("interim_results", "true".to_owned()),
            ("endpointing", params.endpointing_ms.to_string()),
            ("utterance_end_ms", c.utterance_end_ms.to_string()),
            ("vad_events", "true".to_owned()),
            ("smart_format", c.smart_format.to_string()),
        ]);
        let query: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect();
        format!("{}?{}", self.shared.listen_url, query.join("&"))
    }
}

impl SttProvider for DeepgramStt {
    fn name(&self) -> &'static str {
        "deepgram"
    }

    fn open(&self, params: &SttParams) -> Result<SttStream, SttError> {
        if !(8_000..=48_000).contains(&params.sample_rate) {
            return Err(SttError::Config(format!(
                "sample rate {} Hz outside 8000..=48000",
                params.sample_rate
            )));
        }
        let (input_tx, input_rx) = mpsc::channel(AUDIO_QUEUE_FRAMES);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let task = Task {
            shared: Arc::clone(&self.shared),
            url: self.url(params),
            input: input_rx,
            events: events_tx,
            buffer: AudioBuffer::new(
                params.sample_rate as usize * 2 * self.shared.config.reconnect_buffer_ms as usize
                    / 1000,
            ),
            pending_finalize: false,
        };
        tokio::spawn(task.run());
        Ok(SttStream {
            input: input_tx,
            events: events_rx,
        })
    }
}

/// `base` normalized to `ws(s)://.../v1/listen`.
fn listen_url(base: &str) -> Result<String, SttError> {
    let base = base.trim().trim_end_matches('/');
    let (scheme, rest) = base
        .split_once("://")
        .ok_or_else(|| SttError::Config(format!("Deepgram base URL {base:?} has no scheme")))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "wss" | "https" => "wss",
        "ws" | "http" => "ws",
        other => {
            return Err(SttError::Config(format!(
                "Deepgram base URL scheme {other:?} is not ws, wss, http or https"
            )));
        }
    };
    if rest.is_empty() || rest.starts_with('/') || rest.contains(['?', '#', '@', ' ']) {
        return Err(SttError::Config(format!(
            "Deepgram base URL {base:?} needs a host and no query or credentials"
        )));
    }
    let path = if rest.ends_with("/v1/listen") {
        String::new()
    } else {
        "/v1/listen".to_owned()
    };
    Ok(format!("{scheme}://{rest}{path}"))
}

/// rustls with the ring provider (the workspace's choice, no aws-lc) and the
/// system's trusted roots.
fn tls_connector() -> Result<Connector, SttError> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        return Err(SttError::Unavailable(format!(
            "no trusted CA certificates found for TLS to Deepgram (install ca-certificates){}",
            loaded
                .errors
                .first()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SttError::Unavailable(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(config)))
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a connection attempt failed.
enum ConnectError {
    /// Retrying cannot help (credentials, parameters, account).
    Fatal(String),
    /// Network trouble, rate limiting or a server error.
    Retry(String),
}

/// How a connected session ended.
enum SessionEnd {
    /// The stream is over (closed by us, or the voice loop went away).
    Done,
    /// The socket dropped unexpectedly.
    Dropped(String),
}

/// A connection lasting this long counts as healthy: the retry budget starts
/// over after it drops.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);

/// Audio waiting for a connection, oldest first, bounded in bytes.
struct AudioBuffer {
    chunks: VecDeque<Vec<u8>>,
    bytes: usize,
    capacity: usize,
    dropped: usize,
}

impl AudioBuffer {
    fn new(capacity: usize) -> Self {
        Self {
            chunks: VecDeque::new(),
            bytes: 0,
            capacity,
            dropped: 0,
        }
    }

    fn push(&mut self, chunk: Vec<u8>) {
        self.bytes += chunk.len();
        self.chunks.push_back(chunk);
        while self.bytes > self.capacity {
            let Some(old) = self.chunks.pop_front() else {
                break;
            };
            self.bytes -= old.len();
            self.dropped += old.len();
        }
    }

    fn pop(&mut self) -> Option<Vec<u8>> {
        let chunk = self.chunks.pop_front()?;
        self.bytes -= chunk.len();
        Some(chunk)
    }

    /// Puts back a chunk that could not be sent, ahead of the rest.
    fn unpop(&mut self, chunk: Vec<u8>) {
        self.bytes += chunk.len();
        self.chunks.push_front(chunk);
    }
}

/// The background task of one stream.
struct Task {
    shared: Arc<Shared>,
    url: String,
    input: mpsc::Receiver<SttInput>,
    events: mpsc::Sender<SttEvent>,
    buffer: AudioBuffer,
    /// A `Finalize` that arrived while disconnected.
    pending_finalize: bool,
}

impl Task {
    async fn run(mut self) {
        let max_attempts = self.shared.config.max_reconnect_attempts;
        let mut failures = 0u32;
        let mut connected_before = false;
        loop {
            let (shared, url) = (Arc::clone(&self.shared), self.url.clone());
            let connect = async move { connect(&shared, &url).await };
            let Some(result) = self.buffering(connect).await else {
                return; // Closed while connecting: nothing to finish.
            };
            let reason = match result {
                Ok(socket) => {
                    if connected_before {
                        tracing::info!(
                            dropped_audio_bytes = self.buffer.dropped,
                            "Deepgram reconnected"
                        );
                        if self.events.send(SttEvent::Reconnected).await.is_err() {
                            return;
                        }
                    }
                    connected_before = true;
                    let started = Instant::now();
                    match self.session(socket).await {
                        SessionEnd::Done => return,
                        SessionEnd::Dropped(reason) => {
                            if started.elapsed() >= STABLE_CONNECTION {
                                failures = 0;
                            }
                            reason
                        }
                    }
                }
                Err(ConnectError::Fatal(reason)) => {
                    tracing::warn!(%reason, "Deepgram refused the stream");
                    let _ = self.events.send(SttEvent::Failed { reason }).await;
                    return;
                }
                Err(ConnectError::Retry(reason)) => reason,
            };
            failures += 1;
            if failures > max_attempts {
                let reason = format!(
                    "Deepgram unreachable after {max_attempts} reconnect attempts: {reason}"
                );
                tracing::warn!(%reason, "giving up on Deepgram");
                let _ = self.events.send(SttEvent::Failed { reason }).await;
                return;
            }
            let backoff = self.backoff(failures);
            tracing::warn!(%reason, attempt = failures, backoff_ms = backoff.as_millis() as u64, "Deepgram connection lost; retrying");
            if self.buffering(tokio::time::sleep(backoff)).await.is_none() {
                return;
            }
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        let c = &self.shared.config;
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        c.initial_backoff.saturating_mul(factor).min(c.max_backoff)
    }

    /// Runs `fut` while keeping the input drained into the buffer (so the
    /// voice loop's queue never fills while disconnected). `None` when the
    /// input closed meanwhile.
    async fn buffering<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return Some(out),
                msg = self.input.recv() => match msg {
                    Some(SttInput::Audio(samples)) => {
                        if !samples.is_empty() {
                            self.buffer.push(samples_to_pcm16_le(&samples));
                        }
                    }
                    Some(SttInput::Finalize) => self.pending_finalize = true,
                    Some(SttInput::Close) | None => return None,
                },
            }
        }
    }

    /// One connected session: sends buffered then live audio, relays events.
    async fn session(&mut self, mut socket: Socket) -> SessionEnd {
        while let Some(chunk) = self.buffer.pop() {
            if let Err(e) = socket.send(Message::binary(chunk.clone())).await {
                self.buffer.unpop(chunk);
                return SessionEnd::Dropped(e.to_string());
            }
        }
        self.buffer.dropped = 0;
        if self.pending_finalize {
            if let Err(e) = socket.send(control("Finalize")).await {
                return SessionEnd::Dropped(e.to_string());
            }
            self.pending_finalize = false;
        }
        let keepalive = self.shared.config.keepalive_interval;
        let mut last_sent = Instant::now();
        // Set once CloseStream was sent: the deadline for the last results.
        let mut closing: Option<Instant> = None;
        loop {
            let keepalive_at = last_sent + keepalive;
            let close_at = closing.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                msg = self.input.recv(), if closing.is_none() => {
                    let sent = match msg {
                        Some(SttInput::Audio(samples)) => {
                            if samples.is_empty() {
                                continue;
                            }
                            let bytes = samples_to_pcm16_le(&samples);
                            match socket.send(Message::binary(bytes.clone())).await {
                                Ok(()) => Ok(()),
                                Err(e) => {
                                    self.buffer.push(bytes);
                                    Err(e)
                                }
                            }
                        }
                        Some(SttInput::Finalize) => {
                            let sent = socket.send(control("Finalize")).await;
                            self.pending_finalize = sent.is_err();
                            sent
                        }
                        Some(SttInput::Close) | None => {
                            closing = Some(Instant::now() + self.shared.config.close_timeout);
                            if socket.send(control("CloseStream")).await.is_err() {
                                return SessionEnd::Done;
                            }
                            Ok(())
                        }
                    };
                    match sent {
                        Ok(()) => last_sent = Instant::now(),
                        Err(e) => return SessionEnd::Dropped(e.to_string()),
                    }
                }
                frame = socket.next() => {
                    let reason = match frame {
                        Some(Ok(Message::Text(text))) => {
                            if !self.relay(text.as_str()).await {
                                // Nobody listens: end the stream politely.
                                let _ = socket.send(control("CloseStream")).await;
                                return SessionEnd::Done;
                            }
                            continue;
                        }
                        Some(Ok(Message::Close(frame))) => match frame {
                            Some(f) => format!("closed by Deepgram ({}: {})", f.code, f.reason),
                            None => "closed by Deepgram".to_owned(),
                        },
                        // Pings are answered by the library; nothing else is expected.
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => e.to_string(),
                        None => "connection ended".to_owned(),
                    };
                    if closing.is_some() {
                        return SessionEnd::Done;
                    }
                    return SessionEnd::Dropped(reason);
                }
                () = tokio::time::sleep_until(keepalive_at), if closing.is_none() => {
                    if let Err(e) = socket.send(control("KeepAlive")).await {
                        return SessionEnd::Dropped(e.to_string());
                    }
                    last_sent = Instant::now();
                }
                () = tokio::time::sleep_until(close_at), if closing.is_some() => {
                    tracing::debug!("Deepgram did not close after CloseStream; dropping the socket");
                    return SessionEnd::Done;
                }
            }
        }
    }

    /// Parses a server message and forwards its event; `false` when the
    /// voice loop is gone.
    async fn relay(&self, text: &str) -> bool {
        match parse_message(text) {
            Ok(Some(event)) => self.events.send(event).await.is_ok(),
            Ok(None) => true,
            Err(e) => {
                tracing::warn!(error = %e, bytes = text.len(), "malformed Deepgram message skipped");
                true
            }
        }
    }
}

/// A control message (`KeepAlive`, `Finalize`, `CloseStream`), as text.
fn control(kind: &str) -> Message {
    Message::text(format!(r#"{{"type":"{kind}"}}"#))
}

/// Opens the socket. The request carries the key in a sensitive header; no
/// error message includes it.
async fn connect(shared: &Shared, url: &str) -> Result<Socket, ConnectError> {
    let mut request = url
        .into_client_request()
        .map_err(|e| ConnectError::Fatal(format!("bad Deepgram URL: {e}")))?;
    request
        .headers_mut()
        .insert(header::AUTHORIZATION, shared.authorization.clone());
    // Small read buffer: a socket per call, small JSON results (see
    // `WS_READ_BUFFER_BYTES`).
    let ws_config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(voice_agent_proto::mediastreams::WS_READ_BUFFER_BYTES);
    let connecting = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(ws_config),
        true, // TCP_NODELAY: 20 ms audio frames must not wait for Nagle.
        shared.tls.clone(),
    );
    match tokio::time::timeout(shared.config.connect_timeout, connecting).await {
        Err(_) => Err(ConnectError::Retry(format!(
            "connect timed out after {:?}",
            shared.config.connect_timeout
        ))),
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(WsError::Http(response))) => {
            let status = response.status();
            // Deepgram explains refusals in `dg-error`; it never echoes the key.
            let detail = response
                .headers()
                .get("dg-error")
                .and_then(|v| v.to_str().ok())
                .map(|v| format!(": {v}"))
                .unwrap_or_default();
            let reason = format!("Deepgram answered HTTP {status}{detail}");
            Err(match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    ConnectError::Fatal(format!("{reason} (check the API key)"))
                }
                StatusCode::TOO_MANY_REQUESTS => ConnectError::Retry(reason),
                s if s.is_client_error() => ConnectError::Fatal(reason),
                _ => ConnectError::Retry(reason),
            })
        }
        Ok(Err(e)) => Err(ConnectError::Retry(e.to_string())),
    }
}

/// A message from Deepgram.
#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum ServerMessage {
    Results(ResultsMessage),
    SpeechStarted {},
    UtteranceEnd {},
    Metadata {
        #[serde(default)]
        request_id: Option<String>,
    },
    Error {
        #[serde(default)]
        description: Option<String>,
        #[serde(default)]
        message: Option<String>,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct ResultsMessage {
    channel: ResultsChannel,
    #[serde(default)]
    is_final: bool,
    #[serde(default)]
    speech_final: bool,
}

#[derive(Debug, Deserialize)]
struct ResultsChannel {
    alternatives: Vec<Alternative>,
}

#[derive(Debug, Deserialize)]
struct Alternative {
    transcript: String,
}

/// Maps one Deepgram server text message to an event (`None`: nothing to
/// report); a malformed message is an error naming what is wrong. Public
/// for the fuzz target: it parses what a remote service sends.
pub fn parse_message(text: &str) -> Result<Option<SttEvent>, String> {
    let message: ServerMessage = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(match message {
        ServerMessage::Results(r) => {
            let transcript = r
                .channel
                .alternatives
                .into_iter()
                .next()
                .ok_or("Results without alternatives")?
                .transcript
                .trim()
                .to_owned();
            if r.is_final {
                Some(SttEvent::Final {
                    text: transcript,
                    speech_final: r.speech_final,
                })
            } else if transcript.is_empty() {
                None
            } else {
                Some(SttEvent::Interim { text: transcript })
            }
        }
        ServerMessage::SpeechStarted {} => Some(SttEvent::SpeechStarted),
        ServerMessage::UtteranceEnd {} => Some(SttEvent::UtteranceEnd),
        ServerMessage::Metadata { request_id } => {
            tracing::debug!(
                request_id = request_id.as_deref().unwrap_or(""),
                "Deepgram metadata"
            );
            None
        }
        ServerMessage::Error {
            description,
            message,
        } => {
            tracing::warn!(
                description = description.as_deref().unwrap_or(""),
                message = message.as_deref().unwrap_or(""),
                "Deepgram reported an error"
            );
            None
        }
        ServerMessage::Other => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(transcript: &str, is_final: bool, speech_final: bool) -> String {
        serde_json::json!({
            "type": "Results",
            "channel_index": [0, 1],
            "duration": 1.2,
            "start": 0.5,
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": false,
            "channel": {"alternatives": [{"transcript": transcript, "confidence": 0.98, "words": []}]},
            "metadata": {"request_id": "r1", "model_info": {"name": "general", "version": "1", "arch": "nova-3"}, "model_uuid": "u"}
        })
        .to_string()
    }

    #[test]
    fn documented_messages_map_to_events() {
        assert_eq!(
            parse_message(&results("what time", false, false)),
            Ok(Some(SttEvent::Interim {
                text: "what time".into()
            }))
        );
        assert_eq!(parse_message(&results("", false, false)), Ok(None));
        assert_eq!(
            parse_message(&results("What time do you open?", true, true)),
            Ok(Some(SttEvent::Final {
                text: "What time do you open?".into(),
                speech_final: true
            }))
        );
        assert_eq!(
            parse_message(&results("", true, false)),
            Ok(Some(SttEvent::Final {
                text: String::new(),
                speech_final: false
            }))
        );
        assert_eq!(
            parse_message(r#"{"type":"SpeechStarted","channel":[0,1],"timestamp":9.54}"#),
            Ok(Some(SttEvent::SpeechStarted))
        );
        assert_eq!(
            parse_message(r#"{"type":"UtteranceEnd","channel":[0,1],"last_word_end":2.39}"#),
            Ok(Some(SttEvent::UtteranceEnd))
        );
        assert_eq!(
            parse_message(
                r#"{"type":"Metadata","transaction_key":"deprecated","request_id":"a","sha256":"b","created":"2024-01-01T00:00:00Z","duration":3.2,"channels":1}"#
            ),
            Ok(None)
        );
        assert_eq!(
            parse_message(r#"{"type":"Error","description":"bad","message":"x","variant":"y"}"#),
            Ok(None)
        );
        assert_eq!(parse_message(r#"{"type":"SomethingNew","x":1}"#), Ok(None));
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        for bad in [
            "",
            "not json",
            "[]",
            "{}",
            r#"{"type":"Results"}"#,
            r#"{"type":"Results","channel":{}}"#,
            r#"{"type":"Results","channel":{"alternatives":[]},"is_final":true}"#,
            r#"{"type":"Results","channel":{"alternatives":[{"transcript":7}]}}"#,
            r#"{"type":"Results","channel":{"alternatives":[{}]}}"#,
            r#"{"type":7}"#,
            "{\"type\":\"Results\",\"channel\":{\"alternatives\":[{\"transcript\":\"\u{0}\"}]",
        ] {
            assert!(parse_message(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            listen_url("wss://api.deepgram.com").ok().as_deref(),
            Some("wss://api.deepgram.com/v1/listen")
        );
        assert_eq!(
            listen_url("https://dg.example.com/").ok().as_deref(),
            Some("wss://dg.example.com/v1/listen")
        );
        assert_eq!(
            listen_url("http://127.0.0.1:9000/v1/listen")
                .ok()
                .as_deref(),
            Some("ws://127.0.0.1:9000/v1/listen")
        );
        for bad in [
            "api.deepgram.com",
            "ftp://x",
            "wss://",
            "wss://u:p@host",
            "ws://h?x=1",
        ] {
            assert!(listen_url(bad).is_err(), "{bad}");
        }
        let stt = DeepgramStt::new({
            let mut c = DeepgramConfig::new(Secret::new("k"));
            c.base_url = "ws://127.0.0.1:1".into();
            c
        })
        .expect("config");
        let url = stt.url(&SttParams {
            sample_rate: 8_000,
            language: "en-US".into(),
            model: None,
            endpointing_ms: 300,
        });
        assert_eq!(
            url,
            "ws://127.0.0.1:1/v1/listen?model=nova-3&language=en-US&encoding=linear16&sample_rate=8000\
             &channels=1&interim_results=true&endpointing=300&utterance_end_ms=1000&vad_events=true&smart_format=true"
        );
        assert_eq!(percent_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn config_errors_never_contain_the_key() {
        let err = DeepgramStt::new(DeepgramConfig::new(Secret::new(""))).expect_err("no key");
        assert!(matches!(err, SttError::Config(_)));
        let err = DeepgramStt::new(DeepgramConfig::new(Secret::new("sec\nret"))).expect_err("bad");
        assert!(!err.to_string().contains("sec"), "{err}");
        let stt = DeepgramStt::new({
            let mut c = DeepgramConfig::new(Secret::new("topsecret"));
            c.base_url = "ws://127.0.0.1:1".into();
            c
        })
        .expect("config");
        assert!(!format!("{stt:?}").contains("topsecret"));
    }

    #[test]
    fn the_reconnect_buffer_keeps_the_newest_audio() {
        let mut b = AudioBuffer::new(10);
        b.push(vec![1; 4]);
        b.push(vec![2; 4]);
        b.push(vec![3; 4]);
        assert_eq!(b.bytes, 8);
        assert_eq!(b.dropped, 4);
        assert_eq!(b.pop(), Some(vec![2; 4]));
        b.unpop(vec![2; 4]);
        assert_eq!(b.pop(), Some(vec![2; 4]));
        assert_eq!(b.pop(), Some(vec![3; 4]));
        assert_eq!(b.pop(), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_limit() {
        let mut c = DeepgramConfig::new(Secret::new("k"));
        c.base_url = "ws://h".into();
        let stt = DeepgramStt::new(c).expect("config");
        let (_tx, input) = mpsc::channel(1);
        let (events, _rx) = mpsc::channel(1);
        let task = Task {
            shared: Arc::clone(&stt.shared),
            url: String::new(),
            input,
            events,
            buffer: AudioBuffer::new(0),
            pending_finalize: false,
        };
        let waits: Vec<u64> = (1..=7)
            .map(|n| task.backoff(n).as_millis() as u64)
            .collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 4000, 4000]);
    }
}
