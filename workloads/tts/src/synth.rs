//! One synthesis from request to encoded audio: validation, the cache, the
//! concurrency limit, the provider stream, resampling and encoding.
//!
//! The order of events is what keeps the HTTP contract honest:
//!
//! 1. validate (text, rate, voice syntax) → [`SynthError::Invalid`];
//! 2. look up the cache → [`Synthesis::Cached`], no slot needed;
//! 3. check the voice with the provider, take a slot (or wait up to the queue
//!    timeout → [`SynthError::Busy`]);
//! 4. start the provider and wait for its **first audio**: only then does the
//!    caller get a [`Synthesis::Streaming`] and commit a 200. A provider that
//!    fails before producing audio is a [`SynthError::Provider`] (502/503),
//!    never a short 200;
//! 5. stream the rest; a provider failure now ends the stream with an error
//!    (the HTTP body is aborted, the client sees a broken transfer, and it is
//!    counted as `aborted`); a client that goes away drops the stream, which
//!    cancels the provider (kills espeak-ng) and is counted as `cancelled`;
//! 6. a complete stream is cached.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};
use thiserror::Error;
use tokio::sync::OwnedSemaphorePermit;
use voice_agent_proto::audio::{encode_mulaw_into, encode_pcm16_le_into};
use voice_agent_proto::{AudioFormat, Resampler, SynthesizeRequest};

use crate::State;
use crate::cache::CacheKey;
use crate::config::is_valid_voice_name;
use crate::exporter::Outcome;
use crate::provider::{ProviderError, VoiceError};

/// Why a synthesis request was refused before any audio was sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SynthError {
    /// Bad input (400), message names the field.
    #[error("{0}")]
    Invalid(String),
    /// Every synthesis slot stayed busy for the queue timeout (503).
    #[error("all {slots} synthesis slots stayed busy for {waited_ms} ms; retry shortly")]
    Busy {
        /// Configured slots.
        slots: usize,
        /// How long the request waited.
        waited_ms: u64,
    },
    /// The provider is unavailable (503) or failed (502).
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

impl SynthError {
    /// The HTTP status of this refusal.
    pub fn http_status(&self) -> u16 {
        match self {
            SynthError::Invalid(_) => 400,
            SynthError::Busy { .. } => 503,
            SynthError::Provider(e) if e.is_unavailable() => 503,
            SynthError::Provider(_) => 502,
        }
    }

    /// The `error.code` of this refusal.
    pub fn code(&self) -> &'static str {
        use voice_agent_proto::error::codes;
        match self.http_status() {
            400 => codes::INVALID_ARGUMENT,
            503 => codes::UNAVAILABLE,
            _ => codes::UPSTREAM,
        }
    }

    fn outcome(&self) -> Outcome {
        match self {
            SynthError::Invalid(_) => Outcome::Invalid,
            SynthError::Busy { .. } => Outcome::Busy,
            SynthError::Provider(e) if e.is_unavailable() => Outcome::Unavailable,
            SynthError::Provider(_) => Outcome::ProviderError,
        }
    }
}

/// The answer to a valid request.
#[derive(Debug)]
pub enum Synthesis {
    /// From the cache: all the audio, its length known up front.
    Cached {
        /// The encoded audio.
        audio: Bytes,
        /// Its encoding.
        format: AudioFormat,
        /// Its rate in Hz.
        sample_rate: u32,
    },
    /// Synthesizing: the provider has produced its first audio.
    Streaming(Box<AudioStream>),
}

/// A provider slot: holds the semaphore permit and the in-flight gauge.
struct Slot {
    state: Arc<State>,
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    fn new(state: Arc<State>, permit: OwnedSemaphorePermit) -> Self {
        state.exporter().in_flight_add(1);
        Slot {
            state,
            _permit: permit,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.state.exporter().in_flight_add(-1);
    }
}

/// Encoded audio of one synthesis as it is produced; see the module docs.
///
/// Dropping it before the end cancels the provider.
pub struct AudioStream {
    state: Arc<State>,
    key: CacheKey,
    chunks: BoxStream<'static, Result<Vec<i16>, ProviderError>>,
    converter: Resampler,
    resampled: Vec<i16>,
    /// Everything produced so far, for the cache; `None` once it cannot be
    /// cached (cache off or over budget).
    collected: Option<Vec<u8>>,
    first: Option<Bytes>,
    /// Whether the caller has committed to a success answer, so that a
    /// failure now is an abort rather than a provider error.
    committed: bool,
    /// Whether `end` counts the outcome; off while [`synthesize`] peeks at
    /// the first audio, since it counts its own refusals.
    counting: bool,
    slot: Option<Slot>,
    outcome: Option<Outcome>,
}

impl std::fmt::Debug for AudioStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioStream")
            .field("key", &self.key)
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

impl AudioStream {
    /// The encoding of the chunks.
    pub fn format(&self) -> AudioFormat {
        self.key.format
    }

    /// The rate of the chunks in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.key.sample_rate
    }

    fn end(&mut self, outcome: Outcome) {
        if self.outcome.is_some() {
            return;
        }
        self.outcome = Some(outcome);
        self.slot = None;
        if self.counting {
            self.state.exporter().count(outcome);
        }
        match self.collected.take() {
            Some(audio) if outcome == Outcome::Ok && !audio.is_empty() => {
                self.state
                    .cache_insert(self.key.clone(), Bytes::from(audio));
            }
            _ => {}
        }
    }

    fn encode(&mut self) -> Option<Bytes> {
        if self.resampled.is_empty() {
            return None;
        }
        let format = self.key.format;
        let mut bytes = Vec::with_capacity(self.resampled.len() * format.bytes_per_sample());
        match format {
            AudioFormat::Pcm16 => encode_pcm16_le_into(&self.resampled, &mut bytes),
            AudioFormat::Mulaw => encode_mulaw_into(&self.resampled, &mut bytes),
        }
        self.resampled.clear();
        if let Some(all) = &mut self.collected {
            if all.len() + bytes.len() <= self.state.cache_budget() {
                all.extend_from_slice(&bytes);
            } else {
                self.collected = None;
            }
        }
        Some(Bytes::from(bytes))
    }

    /// The next chunk of encoded audio; `None` at the end, and after an
    /// error (which ends the stream).
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, ProviderError>> {
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        let timeout = self.state.config().provider_timeout;
        loop {
            if self.outcome.is_some() {
                return None;
            }
            let next = match tokio::time::timeout(timeout, self.chunks.next()).await {
                Ok(next) => next,
                Err(_) => Some(Err(ProviderError::Timeout {
                    provider: self.key.provider,
                    after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                })),
            };
            match next {
                Some(Ok(samples)) => {
                    self.converter.process(&samples, &mut self.resampled);
                    if let Some(bytes) = self.encode() {
                        return Some(Ok(bytes));
                    }
                }
                Some(Err(err)) => {
                    self.end(if self.committed {
                        Outcome::Aborted
                    } else {
                        Outcome::ProviderError
                    });
                    return Some(Err(err));
                }
                None => {
                    self.converter.flush(&mut self.resampled);
                    let tail = self.encode();
                    self.end(Outcome::Ok);
                    return tail.map(Ok);
                }
            }
        }
    }

    /// All the remaining audio in one buffer (the `Accept: application/json`
    /// answer). Nothing has been committed, so a failure is a provider
    /// error, not an abort.
    pub async fn collect(mut self) -> Result<Vec<u8>, ProviderError> {
        self.committed = false;
        let mut out = Vec::new();
        while let Some(chunk) = self.next_chunk().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    /// The chunks as a stream, for an HTTP body. An `Err` item makes the
    /// server abort the response.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, ProviderError>> + Send + 'static {
        futures::stream::unfold(self, |mut s| async move {
            s.next_chunk().await.map(|item| (item, s))
        })
    }
}

impl Drop for AudioStream {
    fn drop(&mut self) {
        if self.outcome.is_none() {
            self.outcome = Some(Outcome::Cancelled);
            self.state.exporter().count(Outcome::Cancelled);
        }
    }
}

/// Runs steps 1–4 of the module docs for `request`.
pub(crate) async fn synthesize(
    state: &Arc<State>,
    request: &SynthesizeRequest,
) -> Result<Synthesis, SynthError> {
    let result = start(state, request).await;
    if let Err(err) = &result {
        state.exporter().count(err.outcome());
        tracing::debug!(error = %err, status = err.http_status(), "synthesis refused");
    }
    result
}

async fn start(state: &Arc<State>, request: &SynthesizeRequest) -> Result<Synthesis, SynthError> {
    let started = Instant::now();
    let config = state.config();
    request
        .validate(config.max_text_chars)
        .map_err(|e| SynthError::Invalid(e.to_string()))?;
    let provider = state.provider();
    let voice = match request.voice.as_deref() {
        Some(v) if is_valid_voice_name(v) => v,
        Some(v) => {
            return Err(SynthError::Invalid(format!(
                "voice: {v:?} must be 1-40 characters of a-z, A-Z, 0-9, _, + and -"
            )));
        }
        None => provider.default_voice(),
    };
    let key = CacheKey {
        provider: provider.name(),
        voice: voice.to_owned(),
        format: request.format,
        sample_rate: request.sample_rate,
        text: request.text.clone(),
    };
    if let Some(audio) = state.cache_get(&key) {
        state.exporter().observe_ttfb(true, started.elapsed());
        state.exporter().count(Outcome::CacheHit);
        return Ok(Synthesis::Cached {
            audio,
            format: key.format,
            sample_rate: key.sample_rate,
        });
    }
    provider.check_voice(voice).await.map_err(|e| match e {
        VoiceError::Unknown(msg) => SynthError::Invalid(format!("voice: {msg}")),
        VoiceError::Provider(p) => SynthError::Provider(p),
    })?;
    state.exporter().cache_miss();

    let slots = state.slots();
    let permit = match tokio::time::timeout(config.queue_timeout, slots.acquire_owned()).await {
        Ok(Ok(permit)) => permit,
        // Err(_) inside: the semaphore is never closed; treat it as busy.
        Ok(Err(_)) | Err(_) => {
            return Err(SynthError::Busy {
                slots: config.max_concurrent,
                waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            });
        }
    };
    let slot = Slot::new(Arc::clone(state), permit);

    let timeout = config.provider_timeout;
    let pcm = tokio::time::timeout(
        timeout,
        provider.synthesize(&request.text, voice, request.sample_rate),
    )
    .await
    .map_err(|_| ProviderError::Timeout {
        provider: provider.name(),
        after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    })??;
    let converter = Resampler::new(pcm.sample_rate, request.sample_rate).map_err(|e| {
        ProviderError::Failed {
            provider: provider.name(),
            message: format!("unusable audio: {e}"),
        }
    })?;
    let mut stream = AudioStream {
        state: Arc::clone(state),
        key,
        chunks: pcm.chunks,
        converter,
        resampled: Vec::new(),
        collected: (state.cache_budget() > 0).then(Vec::new),
        first: None,
        committed: false,
        counting: false,
        slot: Some(slot),
        outcome: None,
    };
    match stream.next_chunk().await {
        Some(Ok(first)) => {
            state.exporter().observe_ttfb(false, started.elapsed());
            stream.first = Some(first);
            stream.committed = true;
            stream.counting = true;
            Ok(Synthesis::Streaming(Box::new(stream)))
        }
        Some(Err(err)) => Err(SynthError::Provider(err)),
        None => {
            let err = ProviderError::Failed {
                provider: provider.name(),
                message: "produced no audio".into(),
            };
            Err(SynthError::Provider(err))
        }
    }
}
