//! Clients of the agent (`POST /v1/respond` as SSE) and TTS
//! (`POST /v1/synthesize`, streamed mu-law) services. Both stream: the voice
//! loop acts on the first reply text and the first audio bytes, never on
//! whole responses.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use voice_agent_proto::agent::{
    CitationsEvent, DeltaEvent, DoneEvent, SSE_CITATIONS, SSE_CONTENT_TYPE, SSE_DELTA, SSE_DONE,
    SSE_ERROR,
};
use voice_agent_proto::tts::SynthesizeRequest;
use voice_agent_proto::{AgentLatency, AudioFormat, Citation, ErrorBody, RespondRequest};

/// Longest SSE event the decoder buffers (a reply delta is a few words).
pub const MAX_SSE_EVENT_BYTES: usize = 256 * 1024;

/// An upstream call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connection, timeout or body error.
    #[error("{service} unreachable: {source}")]
    Transport {
        /// `agent` or `tts`.
        service: &'static str,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// A non-success status, with the service's error message.
    #[error("{service} answered {status}: {message}")]
    Status {
        /// `agent` or `tts`.
        service: &'static str,
        /// HTTP status.
        status: u16,
        /// The error body's message, or the raw body start.
        message: String,
    },
    /// The stream broke the protocol.
    #[error("{service} protocol error: {0}", service = "agent")]
    Protocol(String),
    /// The service reported an error in the stream (SSE `error`).
    #[error("agent error: {0}")]
    Upstream(String),
}

/// One event of a streamed reply.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyEvent {
    /// More reply text.
    Delta(String),
    /// The reply's sources.
    Citations(Vec<Citation>),
    /// The reply is complete.
    Done {
        /// The whole reply.
        reply: String,
        /// The agent's own latency breakdown.
        latency: AgentLatency,
    },
}

/// Incremental Server-Sent Events decoder: feed body chunks, get
/// `(event, data)` pairs. Handles events split across chunks, CRLF line ends,
/// multi-line data and comments.
#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for a separator, so a large event
    /// arriving in small chunks is scanned once, not once per chunk.
    scanned: usize,
}

impl SseDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a chunk and returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<(String, String)>, ClientError> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        loop {
            // Resume two bytes back: a separator may straddle chunks.
            let from = self.scanned.saturating_sub(2);
            let Some((end, sep)) = find_event_end(&self.buf[from..]).map(|(e, s)| (e + from, s))
            else {
                self.scanned = self.buf.len();
                break;
            };
            self.scanned = 0;
            let raw: Vec<u8> = self.buf.drain(..end + sep).collect();
            let text = String::from_utf8_lossy(&raw[..end]);
            let mut event = String::from("message");
            let mut data: Vec<&str> = Vec::new();
            for line in text.lines() {
                if line.starts_with(':') || line.is_empty() {
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => event = value.to_string(),
                    "data" => data.push(value),
                    _ => {}
                }
            }
            if !data.is_empty() {
                events.push((event, data.join("\n")));
            }
        }
        if self.buf.len() > MAX_SSE_EVENT_BYTES {
            return Err(ClientError::Protocol(format!(
                "SSE event larger than {MAX_SSE_EVENT_BYTES} bytes"
            )));
        }
        Ok(events)
    }
}

/// Position and length of the first blank-line separator.
fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' && buf[i + 1] == b'\n' {
            return Some((i, 2));
        }
        if buf[i] == b'\n' && buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
            return Some((i, 3));
        }
        i += 1;
    }
    None
}

/// Decodes one SSE event of the agent's reply stream.
pub fn reply_event(event: &str, data: &str) -> Result<Option<ReplyEvent>, ClientError> {
    let bad = |e: serde_json::Error| ClientError::Protocol(format!("{event} event: {e}"));
    Ok(match event {
        SSE_DELTA => Some(ReplyEvent::Delta(
            serde_json::from_str::<DeltaEvent>(data).map_err(bad)?.text,
        )),
        SSE_CITATIONS => Some(ReplyEvent::Citations(
            serde_json::from_str::<CitationsEvent>(data)
                .map_err(bad)?
                .citations,
        )),
        SSE_DONE => {
            let done: DoneEvent = serde_json::from_str(data).map_err(bad)?;
            Some(ReplyEvent::Done {
                reply: done.reply,
                latency: done.latency,
            })
        }
        SSE_ERROR => {
            let message = serde_json::from_str::<ErrorBody>(data)
                .map(|b| b.error.message)
                .unwrap_or_else(|_| data.chars().take(200).collect());
            return Err(ClientError::Upstream(message));
        }
        // Unknown events are ignored, as SSE intends.
        _ => None,
    })
}

/// The agent and TTS clients, sharing one connection pool.
#[derive(Debug, Clone)]
pub struct Upstreams {
    http: reqwest::Client,
    agent_url: String,
    tts_url: String,
    timeout: Duration,
}

impl Upstreams {
    /// Clients for the services at the given base URLs. `timeout` bounds the
    /// wait for response headers.
    pub fn new(agent_url: &str, tts_url: &str, timeout: Duration) -> Result<Self, ClientError> {
        let http = voice_agent_http::client_builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|source| ClientError::Transport {
                service: "agent",
                source,
            })?;
        Ok(Self {
            http,
            agent_url: agent_url.trim_end_matches('/').to_string(),
            tts_url: tts_url.trim_end_matches('/').to_string(),
            timeout,
        })
    }

    /// Asks the agent for a reply and streams its events.
    pub async fn respond(
        &self,
        request: &RespondRequest,
    ) -> Result<impl Stream<Item = Result<ReplyEvent, ClientError>> + Send + use<>, ClientError>
    {
        let transport = |source| ClientError::Transport {
            service: "agent",
            source,
        };
        let resp = tokio::time::timeout(
            self.timeout,
            self.http
                .post(format!("{}/v1/respond", self.agent_url))
                .header(reqwest::header::ACCEPT, SSE_CONTENT_TYPE)
                .json(request)
                .send(),
        )
        .await
        .map_err(|_| ClientError::Protocol("agent: no response headers in time".into()))?
        .map_err(transport)?;
        let resp = check_status("agent", resp).await?;
        let mut body = resp.bytes_stream();
        let mut decoder = SseDecoder::new();
        let stream = async_stream(move |tx| async move {
            while let Some(chunk) = body.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(source) => {
                        let _ = tx
                            .send(Err(ClientError::Transport {
                                service: "agent",
                                source,
                            }))
                            .await;
                        return;
                    }
                };
                match decoder.push(&chunk) {
                    Ok(events) => {
                        for (event, data) in events {
                            match reply_event(&event, &data) {
                                Ok(Some(e)) => {
                                    let done = matches!(e, ReplyEvent::Done { .. });
                                    if tx.send(Ok(e)).await.is_err() || done {
                                        return;
                                    }
                                }
                                Ok(None) => {}
                                Err(e) => {
                                    let _ = tx.send(Err(e)).await;
                                    return;
                                }
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            let _ = tx
                .send(Err(ClientError::Protocol(
                    "agent stream ended before `done`".into(),
                )))
                .await;
        });
        Ok(stream)
    }

    /// Synthesizes `text` as 8 kHz mu-law and streams the audio bytes as the
    /// TTS service produces them.
    pub async fn synthesize(
        &self,
        text: &str,
        voice: Option<&str>,
    ) -> Result<impl Stream<Item = Result<Bytes, ClientError>> + Send + use<>, ClientError> {
        let transport = |source| ClientError::Transport {
            service: "tts",
            source,
        };
        let request = SynthesizeRequest {
            text: text.to_string(),
            voice: voice.map(str::to_string),
            format: AudioFormat::Mulaw,
            sample_rate: voice_agent_proto::mediastreams::SAMPLE_RATE,
        };
        let resp = tokio::time::timeout(
            self.timeout,
            self.http
                .post(format!("{}/v1/synthesize", self.tts_url))
                .json(&request)
                .send(),
        )
        .await
        .map_err(|_| ClientError::Protocol("tts: no response headers in time".into()))?
        .map_err(transport)?;
        let resp = check_status("tts", resp).await?;
        Ok(resp.bytes_stream().map(move |r| r.map_err(transport)))
    }
}

async fn check_status(
    service: &'static str,
    resp: reqwest::Response,
) -> Result<reqwest::Response, ClientError> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<ErrorBody>(&body)
        .map(|b| b.error.message)
        .unwrap_or_else(|_| body.chars().take(200).collect());
    Err(ClientError::Status {
        service,
        status,
        message,
    })
}

/// A stream fed by a spawned producer through a small channel, so the
/// producer's state machine stays plain async code.
fn async_stream<T, F, Fut>(producer: F) -> impl Stream<Item = T> + Send
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let task = tokio::spawn(producer(tx));
    // Dropping the stream aborts the producer (and its HTTP body).
    let guard = AbortOnDrop(task);
    futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        rx.recv().await.map(|item| (item, (rx, guard)))
    })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_decoder_handles_split_events_and_crlf() {
        let stream = "event: delta\ndata: {\"text\":\"Hel\"}\n\nevent: delta\r\ndata: {\"text\":\"lo.\"}\r\n\r\n: comment\n\nevent: done\ndata: {\"reply\":\"Hello.\",\"latency\":{\"retrievalMs\":1.0,\"llmTtftMs\":2.0,\"llmTotalMs\":3.0,\"totalMs\":4.0}}\n\n";
        for split in 0..stream.len() {
            let mut d = SseDecoder::new();
            let mut events = d.push(&stream.as_bytes()[..split]).expect("first part");
            events.extend(d.push(&stream.as_bytes()[split..]).expect("second part"));
            let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
            assert_eq!(names, ["delta", "delta", "done"], "split at {split}");
        }
    }

    #[test]
    fn reply_events_decode_and_refuse_garbage() {
        assert_eq!(
            reply_event("delta", r#"{"text":"Hi"}"#).expect("delta"),
            Some(ReplyEvent::Delta("Hi".into()))
        );
        assert!(reply_event("delta", "{").is_err());
        assert!(reply_event("done", r#"{"reply":"x"}"#).is_err());
        assert!(matches!(
            reply_event("error", r#"{"error":{"code":"unavailable","message":"LLM down"}}"#),
            Err(ClientError::Upstream(m)) if m == "LLM down"
        ));
        assert_eq!(reply_event("ping", "{}").expect("unknown"), None);
    }

    #[test]
    fn oversized_sse_event_is_refused() {
        let mut d = SseDecoder::new();
        let big = vec![b'a'; MAX_SSE_EVENT_BYTES + 1];
        assert!(d.push(&big).is_err());
    }
}
