//! The offline recognizer: CMU PocketSphinx with the `en-us` acoustic model
//! and a language model built from the agent's own text
//! ([`voice_agent_sphinx`]).
//!
//! Each stream runs on its own thread, because decoding is blocking CPU work
//! (about 5 % of one core per call in release builds): audio comes in over
//! the stream's channel, is cut into 20 ms frames and segmented by the same
//! energy VAD the voice loop uses. On speech onset the decoder starts an
//! utterance with ~200 ms of pre-roll (the VAD declares speech only after its
//! onset time, and the first consonant is quieter still), partial hypotheses
//! go out as `Interim` at most every 250 ms of audio, and `endpointing_ms` of
//! VAD silence ends the utterance with a `Final { speech_final: true }`.
//! Audio of a pause is held back from the decoder until speech resumes, so an
//! utterance ends with the VAD's short hangover rather than the whole
//! endpointing silence (long silent tails cost accuracy, and decoding time).
//! Timing is measured in audio time, not wall time, so results do not depend
//! on how fast frames arrive.
//!
//! Decoders come from a shared [`DecoderPool`]: a call takes a loaded decoder
//! (loading one takes ~15 ms with the trimmed dictionary, ~500 ms with the
//! full one) and gives it back when it ends.

use std::collections::VecDeque;
use std::path::PathBuf;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use voice_agent_sphinx::phone::PhoneUpsampler;
use voice_agent_sphinx::{DEFAULT_MODEL_DIR, DecoderPool, DomainOptions, PooledDecoder};

use super::{
    AUDIO_QUEUE_FRAMES, EVENT_QUEUE, SttError, SttEvent, SttInput, SttParams, SttProvider,
    SttStream,
};
use crate::vad::{Vad, VadConfig, VadEvent};

/// Audio kept before the VAD's speech onset and fed to the decoder with the
/// utterance, in ms (on top of the VAD's own onset time).
pub const PREROLL_MS: u32 = 200;
/// Partial hypotheses are checked at most this often, in ms of audio.
pub const PARTIAL_INTERVAL_MS: u32 = 250;
/// An utterance longer than this is cut (its final has `speech_final:
/// false`) and decoding goes on in a new one: bounds the decoder's memory on
/// endless sound such as hold music.
pub const MAX_UTTERANCE_MS: u32 = 30_000;
/// Length of the frames audio is cut into, in ms.
const FRAME_MS: u32 = 20;

/// How the local recognizer is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSttConfig {
    /// The PocketSphinx model directory (`en-us/`, `cmudict-en-us.dict`);
    /// default `/usr/share/pocketsphinx/model/en-us` (Debian
    /// `pocketsphinx-en-us`).
    pub model_dir: PathBuf,
    /// The agent's own text (persona, greeting, knowledge base) that the
    /// domain language model is built from.
    pub domain_text: String,
}

impl LocalSttConfig {
    /// The default model directory with `domain_text`.
    pub fn new(domain_text: impl Into<String>) -> Self {
        Self {
            model_dir: PathBuf::from(DEFAULT_MODEL_DIR),
            domain_text: domain_text.into(),
        }
    }
}

/// The PocketSphinx speech-to-text provider.
#[derive(Debug, Clone)]
pub struct LocalStt {
    pool: DecoderPool,
}

impl LocalStt {
    /// Builds the domain language model (once, shared by every call), checks
    /// that PocketSphinx loads and loads one decoder ahead of the first
    /// call. Blocking (a fraction of a second): call it at startup.
    ///
    /// A missing library or model is [`SttError::Unavailable`], naming the
    /// packages to install.
    pub fn new(config: LocalSttConfig) -> Result<Self, SttError> {
        let mut options = DomainOptions::new(config.domain_text);
        options.model_dir = config.model_dir;
        let pool =
            DecoderPool::for_domain(&options).map_err(|e| SttError::Unavailable(e.to_string()))?;
        pool.prewarm(1)
            .map_err(|e| SttError::Unavailable(e.to_string()))?;
        tracing::info!(
            vocabulary = pool.vocabulary_size(),
            "local speech recognizer ready (PocketSphinx, domain language model)"
        );
        Ok(Self { pool })
    }

    /// A provider over an existing pool (e.g. shared with other components
    /// of the same process).
    pub fn from_pool(pool: DecoderPool) -> Self {
        Self { pool }
    }

    /// The decoder pool.
    pub fn pool(&self) -> &DecoderPool {
        &self.pool
    }

    /// Transcribes a whole recording (mono PCM16 at `sample_rate`) as one
    /// utterance. Blocking. `None` when nothing was recognized or decoding
    /// failed. The simulated caller uses it to hear the agent.
    pub fn transcribe(&self, samples: &[i16], sample_rate: u32) -> Option<String> {
        let mut upsampler = PhoneUpsampler::new(sample_rate).ok()?;
        let mut audio = Vec::with_capacity(samples.len() * 2 + 64);
        upsampler.process(samples, &mut audio);
        upsampler.flush(&mut audio);
        let mut decoder = self.pool.get().ok()?;
        decoder.start_utterance().ok()?;
        for chunk in audio.chunks(1600) {
            decoder.process(chunk).ok()?;
        }
        decoder
            .end_utterance()
            .ok()
            .flatten()
            .filter(|t| !t.trim().is_empty())
    }
}

impl SttProvider for LocalStt {
    fn name(&self) -> &'static str {
        "local"
    }

    fn warm_up(&self, samples: &[i16], sample_rate: u32) {
        // (transcribe() shares this path; warming keeps every idle decoder.)
        let Ok(mut upsampler) = PhoneUpsampler::new(sample_rate) else {
            return;
        };
        let mut audio = Vec::with_capacity(samples.len() * 2 + 64);
        upsampler.process(samples, &mut audio);
        upsampler.flush(&mut audio);
        // Every idle decoder (the pre-loaded ones), then back to the pool.
        let mut warmed = Vec::new();
        for _ in 0..self.pool.idle().max(1) {
            let Ok(mut decoder) = self.pool.get() else {
                break;
            };
            let ok = decoder.start_utterance().is_ok()
                && audio
                    .chunks(1600)
                    .all(|chunk| decoder.process(chunk).is_ok())
                && decoder.end_utterance().is_ok();
            if !ok {
                tracing::warn!("warming up a decoder failed; it starts cold");
            }
            warmed.push(decoder);
        }
        tracing::debug!(
            decoders = warmed.len(),
            "local recognizer primed with telephone audio"
        );
    }

    fn open(&self, params: &SttParams) -> Result<SttStream, SttError> {
        let language = params.language.to_ascii_lowercase();
        if !(language.is_empty() || language == "en" || language.starts_with("en-")) {
            return Err(SttError::Config(format!(
                "the local recognizer only knows English (en-US), not {:?}",
                params.language
            )));
        }
        // Validate the rate here so a bad one is an error, not a dead stream.
        PhoneUpsampler::new(params.sample_rate)
            .map_err(|e| SttError::Config(format!("sample rate {}: {e}", params.sample_rate)))?;
        let (input_tx, input_rx) = mpsc::channel(AUDIO_QUEUE_FRAMES);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let pool = self.pool.clone();
        let params = params.clone();
        std::thread::Builder::new()
            .name("stt-local".to_owned())
            .spawn(move || run(&pool, &params, input_rx, &events_tx))
            .map_err(|e| SttError::Unavailable(format!("cannot start a decoder thread: {e}")))?;
        Ok(SttStream {
            input: input_tx,
            events: events_rx,
        })
    }
}

/// The stream's thread: until the input closes or the voice loop goes away.
fn run(
    pool: &DecoderPool,
    params: &SttParams,
    mut input: mpsc::Receiver<SttInput>,
    events: &mpsc::Sender<SttEvent>,
) {
    let fail = |reason: String| {
        tracing::warn!(%reason, "local speech recognizer failed");
        let _ = events.blocking_send(SttEvent::Failed { reason });
    };
    let decoder = match pool.get() {
        Ok(d) => d,
        Err(e) => return fail(e.to_string()),
    };
    let mut segmenter = match Segmenter::new(decoder, params) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    // Interims are advisory: dropped when the voice loop lags. Everything
    // else waits for room (this is a dedicated thread, never the runtime).
    let mut emit = |event: SttEvent| match event {
        SttEvent::Interim { .. } => !matches!(events.try_send(event), Err(TrySendError::Closed(_))),
        other => events.blocking_send(other).is_ok(),
    };
    loop {
        let step = match input.blocking_recv() {
            Some(SttInput::Audio(samples)) => segmenter.audio(&samples, &mut emit),
            Some(SttInput::Finalize) => segmenter.finalize(&mut emit),
            // Close, or every sender dropped: finish the utterance and end.
            Some(SttInput::Close) | None => {
                if let Err(reason) = segmenter.close(&mut emit) {
                    fail(reason);
                }
                return;
            }
        };
        match step {
            Ok(true) => {}
            // The voice loop dropped its receiver: nobody listens any more.
            Ok(false) => return,
            Err(reason) => return fail(reason),
        }
    }
}

/// What the segmenter needs from a decoder (a trait so the segmentation
/// logic is testable without PocketSphinx).
trait Recognizer {
    fn start(&mut self) -> Result<(), String>;
    fn process(&mut self, samples: &[i16]) -> Result<(), String>;
    fn partial(&mut self) -> Option<String>;
    fn end(&mut self) -> Result<Option<String>, String>;
}

impl Recognizer for PooledDecoder {
    fn start(&mut self) -> Result<(), String> {
        self.start_utterance().map_err(|e| e.to_string())
    }
    fn process(&mut self, samples: &[i16]) -> Result<(), String> {
        voice_agent_sphinx::Decoder::process(self, samples).map_err(|e| e.to_string())
    }
    fn partial(&mut self) -> Option<String> {
        voice_agent_sphinx::Decoder::partial(self)
    }
    fn end(&mut self) -> Result<Option<String>, String> {
        self.end_utterance().map_err(|e| e.to_string())
    }
}

/// The open utterance.
#[derive(Debug)]
struct Utterance {
    /// Audio fed so far, ms.
    ms: u32,
    /// Audio since partials were last checked, ms.
    since_partial_ms: u32,
    /// The last interim sent.
    last_partial: String,
    /// Silence since the speech stopped, ms (counting the VAD's hangover);
    /// `None` while speaking.
    silence_ms: Option<u32>,
    /// Whether `SpeechStarted` was sent for it (then a final always follows,
    /// even an empty one, so the listener knows the sound is accounted for).
    announced: bool,
}

/// VAD segmentation around a recognizer. The methods return `Ok(false)` when
/// the listener is gone.
struct Segmenter<R> {
    recognizer: R,
    vad: Vad,
    hangover_ms: u32,
    endpointing_ms: u32,
    upsampler: PhoneUpsampler,
    frame_len: usize,
    /// Samples waiting for a full frame.
    pending: Vec<i16>,
    /// The last frames before speech, for pre-roll.
    preroll: VecDeque<Vec<i16>>,
    preroll_frames: usize,
    utterance: Option<Utterance>,
    /// Frames of a pause after the VAD's speech end, not yet decoded.
    held: Vec<Vec<i16>>,
    scratch: Vec<i16>,
}

impl<R: Recognizer> Segmenter<R> {
    fn new(recognizer: R, params: &SttParams) -> Result<Self, String> {
        let rate = params.sample_rate;
        let vad_config = VadConfig::telephone(rate);
        let upsampler = PhoneUpsampler::new(rate).map_err(|e| e.to_string())?;
        let frame_len = (rate * FRAME_MS / 1000).max(1) as usize;
        Ok(Self {
            recognizer,
            vad: Vad::new(vad_config),
            hangover_ms: vad_config.hangover_ms,
            endpointing_ms: params.endpointing_ms,
            upsampler,
            frame_len,
            pending: Vec::with_capacity(frame_len),
            preroll: VecDeque::new(),
            // The VAD reports onset `onset_ms` late: keep that plus PREROLL_MS.
            preroll_frames: ((vad_config.onset_ms + PREROLL_MS) / FRAME_MS) as usize,
            utterance: None,
            held: Vec::new(),
            scratch: Vec::new(),
        })
    }

    fn audio(
        &mut self,
        mut samples: &[i16],
        emit: &mut impl FnMut(SttEvent) -> bool,
    ) -> Result<bool, String> {
        while !samples.is_empty() {
            let take = (self.frame_len - self.pending.len()).min(samples.len());
            self.pending.extend_from_slice(&samples[..take]);
            samples = &samples[take..];
            if self.pending.len() == self.frame_len {
                let frame =
                    std::mem::replace(&mut self.pending, Vec::with_capacity(self.frame_len));
                if !self.frame(frame, emit)? {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn frame(
        &mut self,
        frame: Vec<i16>,
        emit: &mut impl FnMut(SttEvent) -> bool,
    ) -> Result<bool, String> {
        let vad = self.vad.push(&frame);
        if self.utterance.is_none() {
            self.preroll.push_back(frame);
            while self.preroll.len() > self.preroll_frames {
                self.preroll.pop_front();
            }
            if vad == Some(VadEvent::SpeechStart) {
                return self.begin(true, emit);
            }
            return Ok(true);
        }
        let Some(u) = self.utterance.as_mut() else {
            return Ok(true);
        };
        u.ms += FRAME_MS;
        u.since_partial_ms += FRAME_MS;
        let was_pausing = u.silence_ms.is_some();
        match vad {
            // The VAD reports the end `hangover_ms` after the last voiced
            // frame: that much silence has already passed.
            Some(VadEvent::SpeechEnd) => u.silence_ms = Some(self.hangover_ms),
            Some(VadEvent::SpeechStart) => u.silence_ms = None,
            None => {
                if let Some(s) = u.silence_ms.as_mut() {
                    *s += FRAME_MS;
                }
            }
        }
        if was_pausing && u.silence_ms.is_some() {
            // A pause after the VAD's end: hold the audio back. If speech
            // resumes it is fed then; if the pause becomes the end of the
            // utterance it is dropped, so the decoder sees the same short
            // tail (the VAD's hangover) whatever `endpointing_ms` is; long
            // silent tails measurably cost accuracy (`bench --pad-ms`).
            self.held.push(frame);
        } else {
            let held = std::mem::take(&mut self.held);
            for f in &held {
                self.feed(f)?;
            }
            self.feed(&frame)?;
        }
        let Some(u) = self.utterance.as_mut() else {
            return Ok(true);
        };
        if u.silence_ms.is_some_and(|s| s >= self.endpointing_ms) {
            return self.end(true, emit);
        }
        if u.ms >= MAX_UTTERANCE_MS {
            // Endless sound: close this piece, keep decoding in a new one.
            if !self.end(false, emit)? {
                return Ok(false);
            }
            return self.begin(false, emit);
        }
        if u.since_partial_ms >= PARTIAL_INTERVAL_MS {
            u.since_partial_ms = 0;
            if let Some(text) = self.recognizer.partial()
                && let Some(u) = self.utterance.as_mut()
                && text != u.last_partial
            {
                u.last_partial.clone_from(&text);
                return Ok(emit(SttEvent::Interim { text }));
            }
        }
        Ok(true)
    }

    /// Starts an utterance with the pre-roll.
    fn begin(
        &mut self,
        announce: bool,
        emit: &mut impl FnMut(SttEvent) -> bool,
    ) -> Result<bool, String> {
        self.recognizer.start()?;
        let preroll: Vec<Vec<i16>> = self.preroll.drain(..).collect();
        for frame in &preroll {
            self.feed(frame)?;
        }
        self.utterance = Some(Utterance {
            ms: FRAME_MS * preroll.len() as u32,
            since_partial_ms: 0,
            last_partial: String::new(),
            silence_ms: None,
            announced: announce,
        });
        Ok(!announce || emit(SttEvent::SpeechStarted))
    }

    fn feed(&mut self, frame: &[i16]) -> Result<(), String> {
        self.scratch.clear();
        self.upsampler.process(frame, &mut self.scratch);
        self.recognizer.process(&self.scratch)
    }

    /// Ends the open utterance and emits its final.
    fn end(
        &mut self,
        speech_final: bool,
        emit: &mut impl FnMut(SttEvent) -> bool,
    ) -> Result<bool, String> {
        let Some(u) = self.utterance.take() else {
            return Ok(true);
        };
        // A held pause is silence after the speech: not worth decoding.
        self.held.clear();
        // The resampler's tail (and a reset, so the next utterance starts
        // clean rather than with this one's filter history).
        self.scratch.clear();
        self.upsampler.flush(&mut self.scratch);
        self.recognizer.process(&self.scratch)?;
        let text = self.recognizer.end()?.unwrap_or_default();
        tracing::debug!(
            audio_ms = u.ms,
            words = text.split_whitespace().count(),
            speech_final,
            "utterance decoded"
        );
        if text.is_empty() && !u.announced {
            return Ok(true);
        }
        Ok(emit(SttEvent::Final { text, speech_final }))
    }

    /// `SttInput::Finalize`: the final of what was heard so far, now. When
    /// the caller is still making sound, decoding continues in a new
    /// utterance (as Deepgram's `Finalize` does).
    fn finalize(&mut self, emit: &mut impl FnMut(SttEvent) -> bool) -> Result<bool, String> {
        if self.utterance.is_none() {
            return Ok(true);
        }
        if !self.end(true, emit)? {
            return Ok(false);
        }
        if self.vad.is_speech() {
            return self.begin(false, emit);
        }
        Ok(true)
    }

    /// `SttInput::Close`: the final of the open utterance, if any.
    fn close(&mut self, emit: &mut impl FnMut(SttEvent) -> bool) -> Result<(), String> {
        self.end(true, emit).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recognizer that "hears" one word per 100 ms of non-silent audio.
    #[derive(Default)]
    struct Fake {
        open: bool,
        loud_samples: usize,
        total_samples: usize,
        starts: usize,
        fail_process: bool,
    }

    impl Recognizer for &mut Fake {
        fn start(&mut self) -> Result<(), String> {
            self.open = true;
            self.loud_samples = 0;
            self.starts += 1;
            Ok(())
        }
        fn process(&mut self, samples: &[i16]) -> Result<(), String> {
            if self.fail_process {
                return Err("boom".into());
            }
            assert!(self.open, "process outside an utterance");
            self.total_samples += samples.len();
            self.loud_samples += samples.iter().filter(|s| s.unsigned_abs() > 1_000).count();
            Ok(())
        }
        fn partial(&mut self) -> Option<String> {
            let words = self.loud_samples / 1_600;
            (words > 0).then(|| vec!["word"; words].join(" "))
        }
        fn end(&mut self) -> Result<Option<String>, String> {
            assert!(self.open, "end outside an utterance");
            self.open = false;
            Ok(self.partial())
        }
    }

    fn params(endpointing_ms: u32) -> SttParams {
        SttParams {
            sample_rate: 8_000,
            language: "en-US".into(),
            model: None,
            endpointing_ms,
        }
    }

    fn tone(ms: usize) -> Vec<i16> {
        (0..ms * 8)
            .map(|i| (8_000.0 * (i as f32 * 0.2).sin()) as i16)
            .collect()
    }

    fn feed(seg: &mut Segmenter<&mut Fake>, audio: &[i16], chunk: usize) -> Vec<SttEvent> {
        let mut events = Vec::new();
        for c in audio.chunks(chunk) {
            assert!(
                seg.audio(c, &mut |e| {
                    events.push(e);
                    true
                })
                .expect("audio")
            );
        }
        events
    }

    fn finals(events: &[SttEvent]) -> Vec<(String, bool)> {
        events
            .iter()
            .filter_map(|e| match e {
                SttEvent::Final { text, speech_final } => Some((text.clone(), *speech_final)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn speech_then_silence_gives_started_interims_and_one_final() {
        let mut fake = Fake::default();
        let mut seg = Segmenter::new(&mut fake, &params(500)).expect("segmenter");
        let mut audio = vec![0i16; 8_000];
        audio.extend(tone(1_000));
        audio.extend(vec![0i16; 8 * 1_000]);
        let events = feed(&mut seg, &audio, 160);
        assert_eq!(events.first(), Some(&SttEvent::SpeechStarted));
        assert!(events.iter().any(|e| matches!(e, SttEvent::Interim { .. })));
        let f = finals(&events);
        assert_eq!(f.len(), 1, "{events:?}");
        assert!(f[0].1, "speech_final");
        assert!(!f[0].0.is_empty(), "{f:?}");
        assert!(matches!(events.last(), Some(SttEvent::Final { .. })));
    }

    #[test]
    fn odd_chunk_sizes_give_the_same_events() {
        let mut audio = vec![0i16; 4_000];
        audio.extend(tone(700));
        audio.extend(vec![0i16; 8_000]);
        let mut a = Fake::default();
        let mut b = Fake::default();
        let ea = feed(
            &mut Segmenter::new(&mut a, &params(400)).expect("seg"),
            &audio,
            160,
        );
        let eb = feed(
            &mut Segmenter::new(&mut b, &params(400)).expect("seg"),
            &audio,
            333,
        );
        assert_eq!(ea, eb);
    }

    #[test]
    fn a_pause_that_ends_the_utterance_is_not_decoded() {
        let mut fake = Fake::default();
        let mut seg = Segmenter::new(&mut fake, &params(2_000)).expect("segmenter");
        let mut audio = tone(500);
        audio.extend(vec![0i16; 8 * 3_000]);
        let f = finals(&feed(&mut seg, &audio, 160));
        assert_eq!(f.len(), 1);
        drop(seg);
        // Speech (with onset) and the VAD's 240 ms hangover, at 16 kHz, plus
        // the resampler tail; not the 2 s of endpointing silence.
        let decoded_ms = fake.total_samples / 16;
        assert!(
            (700..1_000).contains(&decoded_ms),
            "{decoded_ms} ms decoded"
        );
    }

    #[test]
    fn silence_gives_nothing() {
        let mut fake = Fake::default();
        let mut seg = Segmenter::new(&mut fake, &params(300)).expect("segmenter");
        assert!(feed(&mut seg, &vec![0i16; 8 * 5_000], 160).is_empty());
        assert_eq!(fake.starts, 0);
    }

    #[test]
    fn endpointing_waits_for_the_configured_silence() {
        // Gaps shorter than the endpointing (for 800 ms also longer than the
        // VAD's hangover) keep one utterance; longer gaps split it.
        for endpointing in [300usize, 800] {
            for (gap, expected) in [(endpointing - 150, 1), (endpointing + 300, 2)] {
                let mut fake = Fake::default();
                let mut seg =
                    Segmenter::new(&mut fake, &params(endpointing as u32)).expect("segmenter");
                let mut audio = tone(600);
                audio.extend(vec![0i16; 8 * gap]);
                audio.extend(tone(600));
                audio.extend(vec![0i16; 8 * 2_000]);
                let f = finals(&feed(&mut seg, &audio, 160));
                assert_eq!(
                    f.len(),
                    expected,
                    "endpointing {endpointing}, gap {gap}: {f:?}"
                );
                assert!(f.iter().all(|(_, speech_final)| *speech_final));
            }
        }
    }

    #[test]
    fn finalize_mid_speech_emits_a_final_and_keeps_listening() {
        let mut fake = Fake::default();
        let mut seg = Segmenter::new(&mut fake, &params(500)).expect("segmenter");
        let mut events = feed(&mut seg, &tone(800), 160);
        assert!(
            seg.finalize(&mut |e| {
                events.push(e);
                true
            })
            .expect("finalize")
        );
        assert_eq!(finals(&events).len(), 1);
        // Still speaking: decoding goes on; the rest ends with its own final.
        let mut more = tone(500);
        more.extend(vec![0i16; 8_000]);
        let later = feed(&mut seg, &more, 160);
        assert!(!later.contains(&SttEvent::SpeechStarted));
        assert_eq!(finals(&later).len(), 1, "{later:?}");
        // Finalize with nothing open does nothing.
        let mut none = Vec::new();
        assert!(
            seg.finalize(&mut |e| {
                none.push(e);
                true
            })
            .expect("finalize")
        );
        assert!(none.is_empty());
    }

    #[test]
    fn close_finishes_the_open_utterance() {
        let mut fake = Fake::default();
        let mut seg = Segmenter::new(&mut fake, &params(500)).expect("segmenter");
        let mut events = feed(&mut seg, &tone(500), 160);
        seg.close(&mut |e| {
            events.push(e);
            true
        })
        .expect("close");
        assert_eq!(finals(&events).len(), 1);
    }

    #[test]
    fn endless_sound_is_cut_into_bounded_utterances() {
        let mut fake = Fake::default();
        let mut seg = Segmenter::new(&mut fake, &params(500)).expect("segmenter");
        // Syllable-like bursts with short gaps (a steady tone would be taken
        // for noise by the VAD's floor tracking and end on its own).
        let mut audio = Vec::new();
        while audio.len() < 8 * (MAX_UTTERANCE_MS as usize * 2 + 1_000) {
            audio.extend(tone(200));
            audio.extend(vec![0i16; 8 * 100]);
        }
        let events = feed(&mut seg, &audio, 160);
        let f = finals(&events);
        assert_eq!(f.len(), 2, "{}", f.len());
        assert!(f.iter().all(|(_, speech_final)| !speech_final));
        assert_eq!(
            events
                .iter()
                .filter(|e| **e == SttEvent::SpeechStarted)
                .count(),
            1
        );
    }

    #[test]
    fn recognizer_errors_and_a_gone_listener_stop_the_stream() {
        let mut fake = Fake {
            fail_process: true,
            ..Fake::default()
        };
        let mut seg = Segmenter::new(&mut fake, &params(500)).expect("segmenter");
        let mut failed = false;
        for c in tone(500).chunks(160) {
            if seg.audio(c, &mut |_| true).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);

        let mut fake = Fake::default();
        let mut seg = Segmenter::new(&mut fake, &params(500)).expect("segmenter");
        let mut gone = false;
        for c in tone(500).chunks(160) {
            if !seg.audio(c, &mut |_| false).expect("audio") {
                gone = true;
                break;
            }
        }
        assert!(gone);
    }
}
