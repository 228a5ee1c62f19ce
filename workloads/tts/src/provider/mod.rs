//! Speech engines behind one trait: each turns text into a stream of mono
//! PCM16 chunks at the engine's native rate.

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use thiserror::Error;

pub mod elevenlabs;
pub mod espeak;

pub use elevenlabs::ElevenLabs;
pub use espeak::Espeak;

/// Audio coming out of a provider: its rate and the samples as they are
/// produced. Dropping the stream cancels the synthesis (kills the child
/// process, closes the vendor connection).
pub struct PcmStream {
    /// Native sample rate of the chunks, in Hz.
    pub sample_rate: u32,
    /// Mono PCM16 chunks; an `Err` ends the stream.
    pub chunks: BoxStream<'static, Result<Vec<i16>, ProviderError>>,
}

impl std::fmt::Debug for PcmStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcmStream")
            .field("sample_rate", &self.sample_rate)
            .finish_non_exhaustive()
    }
}

/// A provider failure. Every message starts with the provider's name and
/// never contains a credential.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProviderError {
    /// The engine is not installed or not configured; the pod is not ready
    /// (503).
    #[error("{provider}: {message}")]
    Unavailable {
        /// Provider name.
        provider: &'static str,
        /// What is missing and how to fix it.
        message: String,
    },
    /// The engine ran and failed (502).
    #[error("{provider}: {message}")]
    Failed {
        /// Provider name.
        provider: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The vendor answered with an HTTP error status (502).
    #[error("{provider}: HTTP {status}: {message}")]
    Status {
        /// Provider name.
        provider: &'static str,
        /// The vendor's status code.
        status: u16,
        /// The vendor's message, shortened.
        message: String,
    },
    /// No audio from the engine within the configured timeout (502).
    #[error("{provider}: no audio for {after_ms} ms")]
    Timeout {
        /// Provider name.
        provider: &'static str,
        /// The timeout that elapsed.
        after_ms: u64,
    },
}

impl ProviderError {
    /// Whether this means the provider cannot work at all here (503), as
    /// opposed to one synthesis failing (502).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ProviderError::Unavailable { .. })
    }
}

/// Why a voice cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VoiceError {
    /// Not a voice of this provider (400).
    #[error("voice: {0}")]
    Unknown(String),
    /// The provider cannot list its voices (503/502).
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// A speech engine.
pub trait Provider: Send + Sync + 'static {
    /// The provider's name, as in config, metric labels and error messages.
    fn name(&self) -> &'static str;

    /// The voice used when a request names none.
    fn default_voice(&self) -> &str;

    /// Whether the engine can work here (binary installed, key configured);
    /// `Ok` carries a one-line summary for the log. Runs at startup and for
    /// `/readyz` until it succeeds.
    fn check(&self) -> BoxFuture<'_, Result<String, ProviderError>>;

    /// Whether `voice` (already of the form `^[a-zA-Z0-9_+-]{1,40}$`) is one
    /// of this provider's voices.
    fn check_voice<'a>(&'a self, voice: &'a str) -> BoxFuture<'a, Result<(), VoiceError>>;

    /// Starts synthesizing `text` with `voice`. Resolves once the engine has
    /// accepted the job and its native rate is known; `preferred_rate` is
    /// the rate the caller will convert to, which an engine may produce
    /// directly.
    fn synthesize<'a>(
        &'a self,
        text: &'a str,
        voice: &'a str,
        preferred_rate: u32,
    ) -> BoxFuture<'a, Result<PcmStream, ProviderError>>;
}

/// At most `max` bytes of `text` on one line, cut at a character boundary,
/// for error messages quoting a vendor or a child process.
pub(crate) fn excerpt(text: &str, max: usize) -> String {
    let one_line: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.len() <= max {
        return one_line;
    }
    let mut end = max;
    while !one_line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &one_line[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_is_short_and_single_line() {
        assert_eq!(excerpt("  a\nb  ", 10), "a b");
        assert_eq!(excerpt("héllo wörld", 3), "hé…");
    }

    #[test]
    fn errors_name_the_provider() {
        let e = ProviderError::Status {
            provider: "elevenlabs",
            status: 401,
            message: "invalid api key".into(),
        };
        assert_eq!(e.to_string(), "elevenlabs: HTTP 401: invalid api key");
        assert!(!e.is_unavailable());
        let e = ProviderError::Timeout {
            provider: "local",
            after_ms: 5,
        };
        assert_eq!(e.to_string(), "local: no audio for 5 ms");
    }
}
