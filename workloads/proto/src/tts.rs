//! The tts service: `POST /v1/synthesize`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::audio::{self, SUPPORTED_SAMPLE_RATES};
use crate::base64;
use crate::error::ProtoError;

/// Response header with the audio's duration in milliseconds, sent when known
/// before the first byte.
pub const AUDIO_DURATION_HEADER: &str = "x-audio-duration-ms";

/// Sample rate of a [`SynthesizeRequest`] that names none.
pub const DEFAULT_SAMPLE_RATE: u32 = 16_000;

/// Encoding of synthesized audio; always mono.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AudioFormat {
    /// Signed 16-bit little-endian PCM.
    #[default]
    Pcm16,
    /// G.711 mu-law, one byte per sample (what Twilio Media Streams carries).
    Mulaw,
}

impl AudioFormat {
    /// The wire name, identical to the serde form.
    pub const fn as_str(self) -> &'static str {
        match self {
            AudioFormat::Pcm16 => "pcm16",
            AudioFormat::Mulaw => "mulaw",
        }
    }

    /// Bytes per (mono) sample.
    pub const fn bytes_per_sample(self) -> usize {
        match self {
            AudioFormat::Pcm16 => 2,
            AudioFormat::Mulaw => 1,
        }
    }

    const fn media_type(self) -> &'static str {
        match self {
            AudioFormat::Pcm16 => "audio/pcm",
            AudioFormat::Mulaw => "audio/basic",
        }
    }

    /// The `Content-Type` of audio in this format, e.g. `audio/pcm;rate=16000`
    /// or `audio/basic;rate=8000`.
    pub fn content_type(self, sample_rate: u32) -> String {
        format!("{};rate={sample_rate}", self.media_type())
    }

    /// Parses a `Content-Type` written by [`AudioFormat::content_type`] back
    /// into format and sample rate.
    ///
    /// Type and parameter names are case-insensitive and whitespace around
    /// `;` and `=` is allowed, as in HTTP. `audio/basic` without `rate` means
    /// 8000 Hz (RFC 2046); `audio/pcm` must name its rate. Other media types,
    /// other parameters and unsupported rates are refused.
    pub fn from_content_type(content_type: &str) -> Result<(AudioFormat, u32), ProtoError> {
        let refuse = |reason: &str| ProtoError::UnsupportedContentType {
            content_type: content_type.to_owned(),
            reason: reason.to_owned(),
        };
        let mut parts = content_type.split(';');
        let media = parts.next().unwrap_or_default().trim();
        let format = if media.eq_ignore_ascii_case("audio/pcm") {
            AudioFormat::Pcm16
        } else if media.eq_ignore_ascii_case("audio/basic") {
            AudioFormat::Mulaw
        } else {
            return Err(refuse("expected audio/pcm or audio/basic"));
        };
        let mut rate = None;
        for param in parts {
            let (name, value) = param
                .split_once('=')
                .ok_or_else(|| refuse("parameters must be name=value"))?;
            if !name.trim().eq_ignore_ascii_case("rate") {
                return Err(refuse("the only allowed parameter is rate"));
            }
            if rate.is_some() {
                return Err(refuse("rate is given twice"));
            }
            let value = value.trim().trim_matches('"');
            let parsed: u32 = value
                .parse()
                .map_err(|_| refuse("rate must be a whole number of Hz"))?;
            if !SUPPORTED_SAMPLE_RATES.contains(&parsed) {
                return Err(refuse("rate must be 8000, 16000 or 24000"));
            }
            rate = Some(parsed);
        }
        match (format, rate) {
            (_, Some(rate)) => Ok((format, rate)),
            (AudioFormat::Mulaw, None) => Ok((format, 8_000)),
            (AudioFormat::Pcm16, None) => Err(refuse("audio/pcm needs a rate parameter")),
        }
    }
}

impl fmt::Display for AudioFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AudioFormat {
    type Err = ProtoError;

    /// Parses the wire name (`pcm16` or `mulaw`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [AudioFormat::Pcm16, AudioFormat::Mulaw]
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| ProtoError::UnknownName {
                kind: "audio format",
                value: s.to_owned(),
            })
    }
}

fn default_sample_rate() -> u32 {
    DEFAULT_SAMPLE_RATE
}

/// `POST /v1/synthesize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SynthesizeRequest {
    /// Text to speak.
    pub text: String,
    /// Provider voice; the VoiceAgent's configured voice when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    /// Output encoding; PCM16 when absent.
    #[serde(default)]
    pub format: AudioFormat,
    /// Output rate in Hz; 16000 when absent.
    #[serde(default = "default_sample_rate")]
    pub sample_rate: u32,
}

impl SynthesizeRequest {
    /// Checks what serde cannot: text is not blank and at most `max_chars`
    /// characters (Unicode scalar values), and the rate is supported.
    pub fn validate(&self, max_chars: usize) -> Result<(), ProtoError> {
        if self.text.trim().is_empty() {
            return Err(ProtoError::invalid("text", "must not be empty"));
        }
        let chars = self.text.chars().count();
        if chars > max_chars {
            return Err(ProtoError::invalid(
                "text",
                format!("must be at most {max_chars} characters (got {chars})"),
            ));
        }
        if !SUPPORTED_SAMPLE_RATES.contains(&self.sample_rate) {
            return Err(ProtoError::invalid(
                "sampleRate",
                format!("must be 8000, 16000 or 24000 (got {})", self.sample_rate),
            ));
        }
        Ok(())
    }
}

/// The answer to [`SynthesizeRequest`] when the client sent
/// `Accept: application/json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SynthesizeJsonResponse {
    /// The audio bytes, standard base64 with padding.
    pub audio: String,
    /// Encoding of the audio bytes.
    pub format: AudioFormat,
    /// Rate in Hz.
    pub sample_rate: u32,
    /// Length of the audio in milliseconds.
    pub duration_ms: f64,
}

impl SynthesizeJsonResponse {
    /// Wraps raw audio bytes, computing base64 and duration.
    pub fn from_audio(bytes: &[u8], format: AudioFormat, sample_rate: u32) -> Self {
        SynthesizeJsonResponse {
            audio: base64::encode(bytes),
            format,
            sample_rate,
            duration_ms: audio::duration_ms(bytes.len() / format.bytes_per_sample(), sample_rate),
        }
    }

    /// Decodes [`SynthesizeJsonResponse::audio`] back to bytes.
    pub fn audio_bytes(&self) -> Result<Vec<u8>, ProtoError> {
        base64::decode(&self.audio)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str, sample_rate: u32) -> SynthesizeRequest {
        SynthesizeRequest {
            text: text.into(),
            voice: None,
            format: AudioFormat::Pcm16,
            sample_rate,
        }
    }

    #[test]
    fn content_type_round_trip() {
        assert_eq!(
            AudioFormat::Pcm16.content_type(16_000),
            "audio/pcm;rate=16000"
        );
        assert_eq!(
            AudioFormat::Mulaw.content_type(8_000),
            "audio/basic;rate=8000"
        );
        for format in [AudioFormat::Pcm16, AudioFormat::Mulaw] {
            for rate in SUPPORTED_SAMPLE_RATES {
                let ct = format.content_type(rate);
                assert_eq!(
                    AudioFormat::from_content_type(&ct).expect("parse"),
                    (format, rate)
                );
            }
        }
    }

    #[test]
    fn content_type_parsing_is_http_lenient_but_strict_on_meaning() {
        assert_eq!(
            AudioFormat::from_content_type("Audio/PCM; Rate = 24000").expect("parse"),
            (AudioFormat::Pcm16, 24_000)
        );
        assert_eq!(
            AudioFormat::from_content_type("audio/basic").expect("parse"),
            (AudioFormat::Mulaw, 8_000)
        );
        for bad in [
            "audio/mpeg",
            "audio/pcm",
            "audio/pcm;rate=44100",
            "audio/pcm;rate=fast",
            "audio/pcm;rate=16000;rate=8000",
            "audio/pcm;rate=16000;channels=2",
            "audio/pcm;rate",
            "application/json",
            "",
        ] {
            let err = AudioFormat::from_content_type(bad).expect_err(bad);
            assert!(
                matches!(err, ProtoError::UnsupportedContentType { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn synthesize_request_wire_format_and_defaults() {
        let json = r#"{"text":"Hello there.","voice":"en-us","format":"mulaw","sampleRate":8000}"#;
        let req: SynthesizeRequest = serde_json::from_str(json).expect("deserialize");
        assert_eq!(req.format, AudioFormat::Mulaw);
        assert_eq!(req.sample_rate, 8_000);
        assert_eq!(serde_json::to_string(&req).expect("serialize"), json);

        let minimal: SynthesizeRequest =
            serde_json::from_str(r#"{"text":"Hi"}"#).expect("deserialize");
        assert_eq!(minimal, request("Hi", 16_000));

        assert!(serde_json::from_str::<SynthesizeRequest>(r#"{"voice":"x"}"#).is_err());
        assert!(
            serde_json::from_str::<SynthesizeRequest>(r#"{"text":"Hi","format":"mp3"}"#).is_err()
        );
        assert!(
            serde_json::from_str::<SynthesizeRequest>(r#"{"text":"Hi","sampleRate":"8000"}"#)
                .is_err()
        );
    }

    #[test]
    fn synthesize_request_validation() {
        assert!(request("Hello.", 16_000).validate(10).is_ok());
        assert!(
            request("héllo", 8_000).validate(5).is_ok(),
            "counts characters, not bytes"
        );

        let err = request("  \n", 16_000).validate(10).expect_err("blank");
        assert_eq!(err.to_string(), "text: must not be empty");
        let err = request("", 16_000).validate(10).expect_err("empty");
        assert_eq!(err.to_string(), "text: must not be empty");
        let err = request("Hello world", 16_000)
            .validate(5)
            .expect_err("long");
        assert_eq!(
            err.to_string(),
            "text: must be at most 5 characters (got 11)"
        );
        let err = request("Hi", 44_100).validate(10).expect_err("rate");
        assert_eq!(
            err.to_string(),
            "sampleRate: must be 8000, 16000 or 24000 (got 44100)"
        );
    }

    #[test]
    fn synthesize_json_response_wire_format() {
        let json = r#"{"audio":"AAEC/w==","format":"pcm16","sampleRate":16000,"durationMs":0.125}"#;
        let resp: SynthesizeJsonResponse = serde_json::from_str(json).expect("deserialize");
        assert_eq!(resp.audio_bytes().expect("base64"), vec![0, 1, 2, 255]);
        assert_eq!(serde_json::to_string(&resp).expect("serialize"), json);
        assert_eq!(
            SynthesizeJsonResponse::from_audio(&[0, 1, 2, 255], AudioFormat::Pcm16, 16_000),
            resp
        );
        let mulaw = SynthesizeJsonResponse::from_audio(&[0xFF; 160], AudioFormat::Mulaw, 8_000);
        assert_eq!(mulaw.duration_ms, 20.0);
        assert!(
            serde_json::from_str::<SynthesizeJsonResponse>(
                r#"{"audio":"","format":"pcm16","sampleRate":16000}"#
            )
            .is_err()
        );
    }

    #[test]
    fn format_names() {
        assert_eq!(AUDIO_DURATION_HEADER, "x-audio-duration-ms");
        for f in [AudioFormat::Pcm16, AudioFormat::Mulaw] {
            assert_eq!(
                serde_json::to_string(&f).expect("serialize"),
                format!("\"{f}\"")
            );
            assert_eq!(f.as_str().parse::<AudioFormat>().expect("parse"), f);
        }
        assert!("wav".parse::<AudioFormat>().is_err());
    }
}
