//! The `openai` provider: any OpenAI-compatible Chat Completions endpoint
//! (OpenAI, Azure OpenAI, vLLM, Ollama, ...), streamed.
//!
//! `POST {baseUrl}/chat/completions` with `Authorization: Bearer <key>` and
//! `{"model", "messages", "stream": true, "temperature", "max_tokens"}`; the
//! answer is server-sent events, one `data: {"choices":[{"delta":
//! {"content":"..."}}]}` line per piece of text, ending with `data: [DONE]`.
//! A stream that ends without `[DONE]` (and without a `finish_reason`) is an
//! error, not a complete reply.
//!
//! Requests are retried with exponential backoff on 429, 5xx and connection
//! failures, but only before the first byte of a reply: once text has been
//! forwarded a retry would repeat it. The API key goes only into the
//! `Authorization` header; it is never logged or quoted in errors.

use std::time::Duration;

use bytes_buf::LineBuffer;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::{Value, json};
use voice_agent_proto::Role;

use super::{Llm, LlmError, LlmEvent, LlmRequest, LlmStream};
use crate::config::{LlmTimeouts, Secret};

/// The provider's name in config, metrics and messages.
pub const NAME: &str = "openai";
/// OpenAI's own API, when no base URL is configured.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// The model when none is configured.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";
/// Longest `Retry-After` honoured; longer ones fall back to the backoff.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(2);
/// Bytes of an error body read for the message.
const ERROR_BODY_KEEP: usize = 2048;
/// Longest SSE line accepted from the provider.
const MAX_LINE: usize = 1024 * 1024;

/// How the provider is reached and what it is asked for.
#[derive(Debug, Clone)]
pub struct OpenAiSettings {
    /// Base URL, without a trailing slash (e.g. `https://api.openai.com/v1`).
    pub base_url: String,
    /// Model name.
    pub model: String,
    /// API key (`VOICE_AGENT_LLM_API_KEY`).
    pub api_key: Option<Secret>,
    /// Sampling temperature.
    pub temperature: f64,
    /// Upper bound on reply tokens.
    pub max_tokens: i32,
    /// The persona's instructions, first in the system prompt.
    pub instructions: Option<String>,
    /// Deadlines and retries.
    pub timeouts: LlmTimeouts,
}

/// An OpenAI-compatible chat model.
#[derive(Debug, Clone)]
pub struct OpenAiLlm {
    client: reqwest::Client,
    settings: std::sync::Arc<OpenAiSettings>,
}

/// The error and its causes on one line (reqwest's `Display` hides causes).
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub use voice_agent_http::client_builder;

/// The system prompt: persona instructions, the voice rules, and the
/// retrieved knowledge, numbered.
pub fn system_prompt(instructions: Option<&str>, request: &LlmRequest) -> String {
    let mut p = String::new();
    if let Some(i) = instructions.map(str::trim).filter(|i| !i.is_empty()) {
        p.push_str(i);
        p.push_str("\n\n");
    }
    p.push_str(
        "You are speaking on a phone call. Answer in one to three short sentences of plain \
         spoken text: no lists, no Markdown, no URLs. Answer only from the knowledge below. \
         If it does not contain the answer, say honestly that you don't know; never make up \
         facts.\n\nKnowledge:\n",
    );
    if request.context.is_empty() {
        p.push_str("(nothing relevant was found)\n");
    }
    for (i, hit) in request.context.iter().enumerate() {
        let c = &hit.chunk;
        let heading = if c.section.is_empty() {
            c.title.clone()
        } else {
            format!("{} > {}", c.title, c.section)
        };
        p.push_str(&format!("[{}] {}: {}\n", i + 1, heading, c.text));
    }
    p
}

impl OpenAiLlm {
    /// A client for `settings`.
    pub fn new(settings: OpenAiSettings) -> Result<Self, LlmError> {
        let client = client_builder()
            .connect_timeout(settings.timeouts.connect)
            .user_agent(concat!("voice-agent-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LlmError::Upstream {
                provider: NAME,
                message: format!("building the HTTP client: {}", chain(&e)),
            })?;
        Ok(OpenAiLlm {
            client,
            settings: std::sync::Arc::new(OpenAiSettings {
                base_url: settings.base_url.trim_end_matches('/').to_owned(),
                ..settings
            }),
        })
    }

    fn body(&self, request: &LlmRequest) -> Value {
        let s = &self.settings;
        let mut messages = vec![json!({
            "role": "system",
            "content": system_prompt(s.instructions.as_deref(), request),
        })];
        for turn in &request.history {
            let role = match turn.role {
                Role::Caller => "user",
                Role::Agent => "assistant",
            };
            messages.push(json!({"role": role, "content": turn.text}));
        }
        messages.push(json!({"role": "user", "content": request.utterance}));
        json!({
            "model": s.model,
            "messages": messages,
            "stream": true,
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
        })
    }
}

/// Reads at most [`ERROR_BODY_KEEP`] bytes of an error body as a message.
async fn error_message(response: reqwest::Response) -> String {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() >= ERROR_BODY_KEEP {
            body.truncate(ERROR_BODY_KEEP);
            break;
        }
    }
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    crate::text::shorten(message.trim(), 300)
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let secs: f64 = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (secs.is_finite() && secs >= 0.0)
        .then(|| Duration::from_secs_f64(secs))
        .filter(|d| *d <= MAX_RETRY_AFTER)
}

/// Sends the request, retrying before the first byte; returns the response
/// of a successful attempt.
async fn send(llm: &OpenAiLlm, body: &Value) -> Result<reqwest::Response, LlmError> {
    let s = &llm.settings;
    let url = format!("{}/chat/completions", s.base_url);
    let attempts = s.timeouts.attempts.max(1);
    let mut delay = s.timeouts.backoff;
    let mut last = String::new();
    for attempt in 1..=attempts {
        let mut req = llm
            .client
            .post(&url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json_body(body);
        if let Some(key) = &s.api_key {
            req = req.bearer_auth(key.expose());
        }
        let outcome = tokio::time::timeout(s.timeouts.first_byte, req.send()).await;
        let wait = match outcome {
            Err(_) => {
                return Err(LlmError::Timeout {
                    provider: NAME,
                    message: format!(
                        "waiting {} ms for the response",
                        s.timeouts.first_byte.as_millis()
                    ),
                });
            }
            Ok(Err(e)) => {
                last = format!("request failed: {}", chain(&e));
                None
            }
            Ok(Ok(response)) if response.status().is_success() => return Ok(response),
            Ok(Ok(response)) => {
                let status = response.status();
                let retryable = status.as_u16() == 429 || status.is_server_error();
                let after = retry_after(&response);
                last = format!(
                    "HTTP {}: {}",
                    status.as_u16(),
                    error_message(response).await
                );
                if !retryable {
                    return Err(LlmError::Upstream {
                        provider: NAME,
                        message: last,
                    });
                }
                after
            }
        };
        if attempt < attempts {
            tracing::debug!(attempt, error = %last, "LLM request failed; retrying");
            tokio::time::sleep(wait.unwrap_or(delay)).await;
            delay = delay.saturating_mul(2);
        }
    }
    Err(LlmError::Upstream {
        provider: NAME,
        message: format!("{last} (after {attempts} attempts)"),
    })
}

/// Sets a JSON body without reqwest's `json` feature.
trait JsonBody {
    fn json_body(self, body: &Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, body: &Value) -> Self {
        self.header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
    }
}

/// The state of one reply stream.
struct Reply {
    llm: OpenAiLlm,
    body: Option<Value>,
    bytes: Option<BoxStream<'static, reqwest::Result<bytes_buf::Bytes>>>,
    lines: LineBuffer,
    finished: bool,
    saw_finish_reason: bool,
}

impl Reply {
    /// The next event, or `None` at the end.
    async fn next(&mut self) -> Option<Result<LlmEvent, LlmError>> {
        if self.finished {
            return None;
        }
        let result = self.next_inner().await;
        if !matches!(result, Some(Ok(_))) {
            self.finished = true;
        }
        result
    }

    async fn next_inner(&mut self) -> Option<Result<LlmEvent, LlmError>> {
        if let Some(body) = self.body.take() {
            match send(&self.llm, &body).await {
                Ok(response) => self.bytes = Some(response.bytes_stream().boxed()),
                Err(e) => return Some(Err(e)),
            }
        }
        let idle = self.llm.settings.timeouts.idle;
        loop {
            while let Some(line) = self.lines.next_line() {
                let line = line.trim_end_matches('\r');
                let Some(data) = line.strip_prefix("data:") else {
                    // Comments, event names, ids, blank separators.
                    continue;
                };
                let data = data.trim();
                if data == "[DONE]" {
                    return None;
                }
                let parsed: Value = match serde_json::from_str(data) {
                    Ok(v) => v,
                    Err(e) => {
                        return Some(Err(LlmError::Upstream {
                            provider: NAME,
                            message: format!("malformed stream event: {e}"),
                        }));
                    }
                };
                if let Some(msg) = parsed.pointer("/error/message").and_then(Value::as_str) {
                    return Some(Err(LlmError::Interrupted {
                        provider: NAME,
                        message: crate::text::shorten(msg, 300),
                    }));
                }
                let choice = parsed.pointer("/choices/0");
                if choice
                    .and_then(|c| c.get("finish_reason"))
                    .is_some_and(|f| !f.is_null())
                {
                    self.saw_finish_reason = true;
                }
                if let Some(text) = choice
                    .and_then(|c| c.pointer("/delta/content"))
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    return Some(Ok(LlmEvent::Delta(text.to_owned())));
                }
            }
            if self.lines.overflowed() {
                return Some(Err(LlmError::Upstream {
                    provider: NAME,
                    message: format!("stream line longer than {MAX_LINE} bytes"),
                }));
            }
            let bytes = self.bytes.as_mut()?;
            match tokio::time::timeout(idle, bytes.next()).await {
                Err(_) => {
                    return Some(Err(LlmError::Timeout {
                        provider: NAME,
                        message: format!("waiting {} ms for the next chunk", idle.as_millis()),
                    }));
                }
                Ok(Some(Ok(chunk))) => self.lines.push(&chunk),
                Ok(Some(Err(e))) => {
                    return Some(Err(LlmError::Interrupted {
                        provider: NAME,
                        message: chain(&e),
                    }));
                }
                Ok(None) => {
                    if self.saw_finish_reason {
                        return None;
                    }
                    return Some(Err(LlmError::Interrupted {
                        provider: NAME,
                        message: "connection closed before [DONE]".into(),
                    }));
                }
            }
        }
    }
}

impl Llm for OpenAiLlm {
    fn name(&self) -> &'static str {
        NAME
    }

    fn stream(&self, request: LlmRequest) -> LlmStream {
        let reply = Reply {
            llm: self.clone(),
            body: Some(self.body(&request)),
            bytes: None,
            lines: LineBuffer::new(MAX_LINE),
            finished: false,
            saw_finish_reason: false,
        };
        futures::stream::unfold(reply, |mut reply| async move {
            let event = reply.next().await?;
            Some((event, reply))
        })
        .boxed()
    }
}

/// Line splitting of a byte stream.
mod bytes_buf {
    pub use axum::body::Bytes;

    /// Bytes received but not yet split into lines.
    #[derive(Debug)]
    pub struct LineBuffer {
        buf: Vec<u8>,
        max: usize,
        overflow: bool,
    }

    impl LineBuffer {
        /// A buffer refusing lines longer than `max` bytes.
        pub fn new(max: usize) -> Self {
            LineBuffer {
                buf: Vec::new(),
                max,
                overflow: false,
            }
        }

        /// Appends received bytes.
        pub fn push(&mut self, bytes: &[u8]) {
            self.buf.extend_from_slice(bytes);
        }

        /// The next complete line (without `\n`), if any.
        pub fn next_line(&mut self) -> Option<String> {
            match self.buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let line: Vec<u8> = self.buf.drain(..=i).collect();
                    Some(String::from_utf8_lossy(&line[..i]).into_owned())
                }
                None => {
                    if self.buf.len() > self.max {
                        self.overflow = true;
                    }
                    None
                }
            }
        }

        /// Whether a line grew past the limit.
        pub fn overflowed(&self) -> bool {
            self.overflow
        }
    }
}
