//! The `elevenlabs` provider: ElevenLabs' streaming text-to-speech API.
//!
//! `POST {base}/v1/text-to-speech/{voice_id}/stream?output_format=pcm_{rate}`
//! with header `xi-api-key` and JSON body `{"text", "model_id"}`; the answer
//! is raw PCM16 little-endian mono at the requested rate, streamed. The rate
//! asked for is the caller's (8, 16 and 24 kHz are all ElevenLabs formats),
//! so no resampling is needed. Errors come back as JSON
//! `{"detail": {"status", "message"}}` (or `{"detail": "..."}`), whose message
//! is quoted, shortened, in the 502.
//!
//! HTTPS uses reqwest with rustls and the ring crypto provider (installed as
//! the process default if none is), verifying against the platform's roots.
//! The API key is sent only in its header and never logged or quoted.

use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use voice_agent_proto::audio::Pcm16LeDecoder;

use super::{PcmStream, Provider, ProviderError, VoiceError, excerpt};
use crate::config::{Config, Secret};

/// The provider's name in config, labels and messages.
pub const NAME: &str = "elevenlabs";

/// Output rates ElevenLabs offers as `pcm_<rate>`.
pub const PCM_RATES: [u32; 5] = [8_000, 16_000, 22_050, 24_000, 44_100];

/// Longest connect (TCP + TLS) to the vendor.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of an error body read for the message.
const ERROR_BODY_KEEP: usize = 4096;

/// ElevenLabs as a provider; see the module docs.
#[derive(Debug)]
pub struct ElevenLabs {
    client: reqwest::Client,
    base_url: String,
    api_key: Secret,
    model: String,
    default_voice: String,
}

/// The error and its causes on one line (reqwest's own `Display` hides the
/// cause, e.g. "connection refused").
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

/// The human message of an ElevenLabs error body.
fn vendor_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let detail = parsed.as_ref().and_then(|v| v.get("detail"));
    let message = match detail {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(d) => d
            .get("message")
            .and_then(|m| m.as_str())
            .map(str::to_owned)
            .or_else(|| Some(d.to_string())),
        None => None,
    };
    excerpt(message.as_deref().unwrap_or(&text), 300)
}

pub use voice_agent_http::client_builder;

impl ElevenLabs {
    /// A provider from the config's base URL, API key, model and voice.
    pub fn new(config: &Config) -> Result<Self, ProviderError> {
        let client = client_builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("voice-agent-tts/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::Unavailable {
                provider: NAME,
                message: format!("building the HTTP client: {}", chain(&e)),
            })?;
        Ok(ElevenLabs {
            client,
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            api_key: config.api_key.clone(),
            model: config.model.clone(),
            default_voice: config.voice.clone(),
        })
    }
}

impl Provider for ElevenLabs {
    fn name(&self) -> &'static str {
        NAME
    }

    fn default_voice(&self) -> &str {
        &self.default_voice
    }

    fn check(&self) -> BoxFuture<'_, Result<String, ProviderError>> {
        Box::pin(async move {
            if self.api_key.is_empty() {
                return Err(ProviderError::Unavailable {
                    provider: NAME,
                    message: "no API key: set VOICE_AGENT_TTS_API_KEY".into(),
                });
            }
            // No request: a probe would spend quota and a failing vendor
            // must not take every pod out of the Service at once.
            Ok(format!(
                "ElevenLabs at {}, model {}, default voice {}",
                self.base_url, self.model, self.default_voice
            ))
        })
    }

    fn check_voice<'a>(&'a self, _voice: &'a str) -> BoxFuture<'a, Result<(), VoiceError>> {
        // Voice ids are opaque; the syntax check already made them safe in a
        // URL path, and an unknown id is the vendor's 4xx.
        Box::pin(async { Ok(()) })
    }

    fn synthesize<'a>(
        &'a self,
        text: &'a str,
        voice: &'a str,
        preferred_rate: u32,
    ) -> BoxFuture<'a, Result<PcmStream, ProviderError>> {
        Box::pin(async move {
            let rate = if PCM_RATES.contains(&preferred_rate) {
                preferred_rate
            } else {
                16_000
            };
            let url = format!(
                "{}/v1/text-to-speech/{voice}/stream?output_format=pcm_{rate}",
                self.base_url
            );
            let body = serde_json::json!({ "text": text, "model_id": self.model });
            let failed = |message: String| ProviderError::Failed {
                provider: NAME,
                message,
            };
            let mut response = self
                .client
                .post(&url)
                .header("xi-api-key", self.api_key.expose())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(reqwest::header::ACCEPT, "audio/pcm")
                .body(body.to_string())
                .send()
                .await
                .map_err(|e| failed(format!("request failed: {}", chain(&e))))?;
            let status = response.status();
            if !status.is_success() {
                let mut kept = Vec::new();
                while kept.len() < ERROR_BODY_KEEP {
                    match response.chunk().await {
                        Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
                        _ => break,
                    }
                }
                return Err(ProviderError::Status {
                    provider: NAME,
                    status: status.as_u16(),
                    message: vendor_message(&kept),
                });
            }
            let bytes = response.bytes_stream();
            let chunks = futures::stream::unfold(
                (bytes, Pcm16LeDecoder::new(), false),
                |(mut bytes, mut decoder, done)| async move {
                    if done {
                        return None;
                    }
                    loop {
                        match bytes.next().await {
                            Some(Ok(chunk)) => {
                                let mut samples = Vec::with_capacity(chunk.len() / 2 + 1);
                                decoder.push(&chunk, &mut samples);
                                if !samples.is_empty() {
                                    return Some((Ok(samples), (bytes, decoder, false)));
                                }
                            }
                            Some(Err(e)) => {
                                let err = ProviderError::Failed {
                                    provider: NAME,
                                    message: format!("stream interrupted: {}", chain(&e)),
                                };
                                return Some((Err(err), (bytes, decoder, true)));
                            }
                            None => {
                                return match decoder.finish() {
                                    Ok(()) => None,
                                    Err(_) => Some((
                                        Err(ProviderError::Failed {
                                            provider: NAME,
                                            message: "stream ended inside a sample".into(),
                                        }),
                                        (bytes, decoder, true),
                                    )),
                                };
                            }
                        }
                    }
                },
            )
            .boxed();
            Ok(PcmStream {
                sample_rate: rate,
                chunks,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_messages() {
        assert_eq!(
            vendor_message(
                br#"{"detail":{"status":"invalid_api_key","message":"Invalid API key"}}"#
            ),
            "Invalid API key"
        );
        assert_eq!(
            vendor_message(br#"{"detail":"voice not found"}"#),
            "voice not found"
        );
        assert_eq!(vendor_message(b"Bad Gateway\n"), "Bad Gateway");
    }
}
