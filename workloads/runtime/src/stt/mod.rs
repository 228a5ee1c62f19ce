//! Speech to text behind one trait: a provider opens a stream per call; the
//! voice loop pushes caller audio in and reads recognition events out.
//!
//! The stream is two channels so that the audio loop never waits on a
//! recognizer: audio goes in with `try_send` (a full queue drops the frame and
//! is counted), events come out as they are ready. Each provider runs its own
//! background task (a WebSocket for Deepgram, a blocking decoder thread for the
//! local recognizer).

use tokio::sync::mpsc;

pub mod deepgram;
pub mod local;

/// Audio queued towards a recognizer before frames are dropped: 10 s of 20 ms
/// frames, far more than a healthy recognizer ever lags.
pub const AUDIO_QUEUE_FRAMES: usize = 500;
/// Events queued towards the voice loop.
pub const EVENT_QUEUE: usize = 256;

/// What a stream is opened with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SttParams {
    /// Sample rate of the PCM16 audio that will be pushed (8000 for phone
    /// audio).
    pub sample_rate: u32,
    /// BCP-47 language, e.g. `en-US`.
    pub language: String,
    /// Model name, provider-specific (`nova-3` for Deepgram); `None` = the
    /// provider's default.
    pub model: Option<String>,
    /// Silence after speech that ends an utterance, in milliseconds.
    pub endpointing_ms: u32,
}

/// Input to a recognizer stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SttInput {
    /// Mono PCM16 samples at [`SttParams::sample_rate`].
    Audio(Vec<i16>),
    /// Flush: finish the current utterance now and emit its final result
    /// (Deepgram `Finalize`). Used by the max-turn watchdog.
    Finalize,
    /// No more audio; close the stream after the last results (Deepgram
    /// `CloseStream`).
    Close,
}

/// A recognition event.
#[derive(Debug, Clone, PartialEq)]
pub enum SttEvent {
    /// The recognizer detected the start of speech (Deepgram `SpeechStarted`
    /// with `vad_events`; the local recognizer's voice activity onset).
    SpeechStarted,
    /// A partial hypothesis of the current segment; may still change.
    Interim {
        /// The hypothesis so far.
        text: String,
    },
    /// A segment's final text (Deepgram `is_final`). When `speech_final` is
    /// true the recognizer also decided the speaker paused (endpointing): the
    /// utterance is complete.
    Final {
        /// The segment's final transcript (may be empty for noise).
        text: String,
        /// The recognizer's end-of-speech decision.
        speech_final: bool,
    },
    /// Deepgram `UtteranceEnd`: no words for `utterance_end_ms`; ends the
    /// utterance even when no `speech_final` came (noisy lines).
    UtteranceEnd,
    /// The connection to the recognizer dropped and was re-established; audio
    /// in between may be missing from the transcript.
    Reconnected,
    /// The recognizer gave up (bad credentials, repeated failures). No more
    /// events follow.
    Failed {
        /// Why, without secret values.
        reason: String,
    },
}

/// An open recognizer stream.
#[derive(Debug)]
pub struct SttStream {
    /// Push audio and control here (use `try_send` from the audio loop).
    pub input: mpsc::Sender<SttInput>,
    /// Recognition events.
    pub events: mpsc::Receiver<SttEvent>,
}

/// Errors opening a recognizer.
#[derive(Debug, thiserror::Error)]
pub enum SttError {
    /// The recognizer is not installed or cannot load (names the fix).
    #[error("speech recognizer unavailable: {0}")]
    Unavailable(String),
    /// The configuration cannot work (missing API key, bad URL, bad rate).
    #[error("speech recognizer misconfigured: {0}")]
    Config(String),
}

/// A speech-to-text provider.
pub trait SttProvider: Send + Sync + 'static {
    /// Provider name for logs and metrics (`deepgram`, `local`).
    fn name(&self) -> &'static str;

    /// Opens a stream for one call. Must return quickly: network connects and
    /// model loading happen in the stream's background task, which buffers
    /// audio meanwhile. Must be called within a Tokio runtime.
    fn open(&self, params: &SttParams) -> Result<SttStream, SttError>;

    /// Primes the recognizer with telephone audio before the first call
    /// (mono PCM16 at `sample_rate`), e.g. the greeting as the TTS service
    /// renders it. Blocking; the default does nothing. The local recognizer
    /// uses it to move its channel normalization (live cepstral mean) from
    /// the wide-band value of its model to a telephone line's, which the
    /// first utterances of a fresh decoder otherwise pay for in accuracy.
    fn warm_up(&self, samples: &[i16], sample_rate: u32) {
        let _ = (samples, sample_rate);
    }
}
