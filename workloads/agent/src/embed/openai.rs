//! The `openai` embedder: any OpenAI-compatible embeddings endpoint
//! (OpenAI, Azure OpenAI, vLLM, Ollama, LocalAI, ...).
//!
//! `POST {baseUrl}/embeddings` with `Authorization: Bearer <key>` and
//! `{"model", "input": ["...", ...]}`; the answer is
//! `{"data": [{"embedding": [...], "index": n}, ...]}`. Inputs are sent in
//! batches of at most [`OpenAiEmbedderSettings::batch_size`] texts; every
//! answer must carry exactly one vector per input (indices `0..n`, each
//! once), all of the embedder's dimension and finite, or the
//! whole call fails. Vectors are scaled to unit length.
//!
//! The dimension is known for OpenAI's own models and otherwise learned
//! once, when the embedder is built, by embedding a probe text.
//!
//! Requests are retried with exponential backoff on 429, 5xx, timeouts and
//! connection failures (embedding is idempotent). The API key goes only into
//! the `Authorization` header; it is never logged or quoted in errors.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{EmbedError, Embedder, normalize};
use crate::config::Secret;
use crate::llm::openai::client_builder;

/// The provider's name in config, metrics and messages.
pub const NAME: &str = "openai";
/// OpenAI's own API, when no base URL is configured.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// The model when none is configured.
pub const DEFAULT_MODEL: &str = "text-embedding-3-small";
/// Texts per request when none is configured.
pub const DEFAULT_BATCH_SIZE: usize = 64;
/// Longest `Retry-After` honoured; longer ones fall back to the backoff.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(2);
/// Bytes of an error body quoted in the message.
const ERROR_BODY_KEEP: usize = 2048;
/// The text embedded to learn an unknown model's dimension.
const PROBE_TEXT: &str = "dimension probe";
/// Largest dimension accepted from a provider.
const MAX_DIMENSIONS: usize = 65_536;

/// Deadlines and retries of the embeddings endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedderTimeouts {
    /// TCP (and TLS) connect.
    pub connect: Duration,
    /// One request, from sending to the whole response body
    /// (`VOICE_AGENT_AGENT_EMBEDDER_TIMEOUT_MS`, default 10 s).
    pub request: Duration,
    /// Attempts per batch on 429, 5xx, timeouts or connect errors
    /// (`VOICE_AGENT_AGENT_EMBEDDER_ATTEMPTS`, default 3).
    pub attempts: u32,
    /// First retry delay, doubled per retry
    /// (`VOICE_AGENT_AGENT_EMBEDDER_BACKOFF_MS`, default 200 ms); a
    /// `Retry-After` up to 2 s is honoured instead.
    pub backoff: Duration,
}

impl Default for EmbedderTimeouts {
    fn default() -> Self {
        EmbedderTimeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(10),
            attempts: 3,
            backoff: Duration::from_millis(200),
        }
    }
}

/// How the embeddings endpoint is reached.
#[derive(Debug, Clone)]
pub struct OpenAiEmbedderSettings {
    /// Base URL, e.g. `https://api.openai.com/v1` (a trailing slash is
    /// ignored).
    pub base_url: String,
    /// Model name.
    pub model: String,
    /// API key (`VOICE_AGENT_EMBEDDER_API_KEY`).
    pub api_key: Option<Secret>,
    /// The model's dimension, when known; `None` looks it up for OpenAI's
    /// models or probes the endpoint once.
    pub dimensions: Option<usize>,
    /// Texts per request (at least 1).
    pub batch_size: usize,
    /// Deadlines and retries.
    pub timeouts: EmbedderTimeouts,
}

impl OpenAiEmbedderSettings {
    /// Settings for `model` at `base_url` with defaults otherwise.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        OpenAiEmbedderSettings {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            dimensions: None,
            batch_size: DEFAULT_BATCH_SIZE,
            timeouts: EmbedderTimeouts::default(),
        }
    }
}

/// The dimension of OpenAI's own embedding models.
pub fn known_dimensions(model: &str) -> Option<usize> {
    match model {
        "text-embedding-3-small" | "text-embedding-ada-002" => Some(1536),
        "text-embedding-3-large" => Some(3072),
        _ => None,
    }
}

/// An OpenAI-compatible embedding model.
#[derive(Debug, Clone)]
pub struct OpenAiEmbedder {
    client: reqwest::Client,
    settings: std::sync::Arc<OpenAiEmbedderSettings>,
    url: String,
    name: &'static str,
    dimensions: usize,
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

fn fail(message: impl Into<String>) -> EmbedError {
    EmbedError {
        embedder: NAME,
        message: message.into(),
    }
}

/// The part of an embeddings response that is used.
#[derive(Deserialize)]
struct Response {
    data: Vec<Datum>,
}

#[derive(Deserialize)]
struct Datum {
    embedding: Vec<f32>,
    index: usize,
}

impl OpenAiEmbedder {
    /// An embedder for `settings`; learns the dimension by embedding a probe
    /// text when it is neither configured nor known for the model.
    pub async fn connect(settings: OpenAiEmbedderSettings) -> Result<Self, EmbedError> {
        let dims = settings
            .dimensions
            .or_else(|| known_dimensions(&settings.model));
        let mut embedder = Self::with_dimensions(settings, dims.unwrap_or(0))?;
        if dims.is_none() {
            let probe = embedder.post(&[PROBE_TEXT.to_owned()]).await?;
            let first = probe
                .into_iter()
                .next()
                .ok_or_else(|| fail("the dimension probe returned no vector"))?;
            if first.is_empty() || first.len() > MAX_DIMENSIONS {
                return Err(fail(format!(
                    "the dimension probe returned a vector of {} dimensions",
                    first.len()
                )));
            }
            embedder.dimensions = first.len();
        }
        Ok(embedder)
    }

    /// An embedder whose vectors must have `dimensions` (no probe).
    pub fn with_dimensions(
        settings: OpenAiEmbedderSettings,
        dimensions: usize,
    ) -> Result<Self, EmbedError> {
        let client = client_builder()
            .connect_timeout(settings.timeouts.connect)
            .user_agent(concat!("voice-agent-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| fail(format!("building the HTTP client: {}", chain(&e))))?;
        let base_url = settings.base_url.trim_end_matches('/').to_owned();
        // One per embedder, which lives as long as the process.
        let name: &'static str = Box::leak(format!("{NAME}:{}", settings.model).into_boxed_str());
        Ok(OpenAiEmbedder {
            client,
            url: format!("{base_url}/embeddings"),
            settings: std::sync::Arc::new(OpenAiEmbedderSettings {
                base_url,
                batch_size: settings.batch_size.max(1),
                ..settings
            }),
            name,
            dimensions,
        })
    }

    /// The endpoint's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Embeds one batch: one request (with retries), checked; vectors in
    /// input order, unit length. With `dimensions` 0 (probing) any
    /// consistent dimension is accepted.
    async fn post(&self, batch: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let body = json!({"model": self.settings.model, "input": batch}).to_string();
        let bytes = self.send(body).await?;
        let response: Response = serde_json::from_slice(&bytes).map_err(|e| {
            fail(format!(
                "malformed response: {e}: {}",
                crate::text::shorten(&String::from_utf8_lossy(&bytes), 200)
            ))
        })?;
        if response.data.len() != batch.len() {
            return Err(fail(format!(
                "{} vectors for {} inputs",
                response.data.len(),
                batch.len()
            )));
        }
        let want = if self.dimensions == 0 {
            response.data.first().map_or(0, |d| d.embedding.len())
        } else {
            self.dimensions
        };
        let mut out: Vec<Option<Vec<f32>>> = vec![None; batch.len()];
        for d in response.data {
            if d.embedding.len() != want {
                return Err(fail(format!(
                    "vector {} has {} dimensions, expected {want}",
                    d.index,
                    d.embedding.len()
                )));
            }
            if d.embedding.iter().any(|x| !x.is_finite()) {
                return Err(fail(format!("vector {} has non-finite values", d.index)));
            }
            let slot = out.get_mut(d.index).ok_or_else(|| {
                fail(format!(
                    "index {} out of range for {} inputs",
                    d.index,
                    batch.len()
                ))
            })?;
            if slot.is_some() {
                return Err(fail(format!("index {} appears twice", d.index)));
            }
            let mut v = d.embedding;
            normalize(&mut v);
            *slot = Some(v);
        }
        // Counts match and no index repeats, so every slot is filled; still,
        // never panic on a provider's answer.
        out.into_iter()
            .enumerate()
            .map(|(i, v)| v.ok_or_else(|| fail(format!("no vector for index {i}"))))
            .collect()
    }

    /// Sends `body`, retrying; the body of a successful response.
    async fn send(&self, body: String) -> Result<Vec<u8>, EmbedError> {
        let s = &self.settings;
        let attempts = s.timeouts.attempts.max(1);
        let mut delay = s.timeouts.backoff;
        let mut last = String::new();
        for attempt in 1..=attempts {
            let mut req = self
                .client
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(key) = &s.api_key {
                req = req.bearer_auth(key.expose());
            }
            let exchange = async {
                let response = req.send().await?;
                let status = response.status();
                let after = retry_after(&response);
                let bytes = response.bytes().await?;
                Ok::<_, reqwest::Error>((status, after, bytes))
            };
            let wait = match tokio::time::timeout(s.timeouts.request, exchange).await {
                Err(_) => {
                    last = format!("no response within {} ms", s.timeouts.request.as_millis());
                    None
                }
                Ok(Err(e)) => {
                    last = format!("request failed: {}", chain(&e));
                    None
                }
                Ok(Ok((status, _, bytes))) if status.is_success() => return Ok(bytes.to_vec()),
                Ok(Ok((status, after, bytes))) => {
                    last = format!("HTTP {}: {}", status.as_u16(), error_message(&bytes));
                    if !(status.as_u16() == 429 || status.is_server_error()) {
                        return Err(fail(last));
                    }
                    after
                }
            };
            if attempt < attempts {
                tracing::debug!(attempt, error = %last, "embeddings request failed; retrying");
                tokio::time::sleep(wait.unwrap_or(delay)).await;
                delay = delay.saturating_mul(2);
            }
        }
        Err(fail(format!("{last} (after {attempts} attempts)")))
    }
}

/// The provider's error message, or the start of the body.
fn error_message(body: &[u8]) -> String {
    let body = &body[..body.len().min(ERROR_BODY_KEEP)];
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
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

impl Embedder for OpenAiEmbedder {
    fn name(&self) -> &'static str {
        self.name
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        Box::pin(async move {
            let mut out = vec![Vec::new(); texts.len()];
            // Blank texts are not sent (providers refuse them): like the
            // local embedder, they get the zero vector.
            let wanted: Vec<usize> = (0..texts.len())
                .filter(|&i| !texts[i].trim().is_empty())
                .collect();
            for idx in wanted.chunks(self.settings.batch_size) {
                let batch: Vec<String> = idx.iter().map(|&i| texts[i].clone()).collect();
                let vectors = self.post(&batch).await?;
                for (&i, v) in idx.iter().zip(vectors) {
                    out[i] = v;
                }
            }
            for v in &mut out {
                if v.is_empty() {
                    *v = vec![0.0; self.dimensions];
                }
            }
            Ok(out)
        })
    }
}
