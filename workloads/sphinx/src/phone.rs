//! Telephone audio for a wideband acoustic model.
//!
//! The `en-us` acoustic model was trained on 16 kHz microphone speech, which
//! always carries some background noise in every band. Phone audio is
//! different in two ways: nothing above 4 kHz (G.711 at 8 kHz), and stretches
//! of *digital* silence between words (a quarter of an espeak-ng clip is exact
//! zeros, and VoIP lines do the same with silence suppression). In those
//! stretches the mel filterbank's log energies fall far below anything seen
//! in training, which throws off the cepstra and cepstral mean normalization.
//! Measured on espeak-ng questions through a mu-law line
//! (`examples/bench.rs`, 32 questions × 3 voices), adding a quiet noise
//! floor before decoding cut the word error rate from 0.40 to 0.22-0.24.
//!
//! The floor must sit at a fixed distance *below the speech*: a fixed
//! absolute level masks quiet callers and is too quiet for loud ones
//! (measured at -10 dB and +6 dB input gain). So the converter tracks the
//! active speech level of the stream and keeps the noise
//! [`DEFAULT_FLOOR_BELOW_SPEECH_DB`] below it.
//!
//! Its colour matters too. White noise 24 dB down gave the lowest WER
//! (0.219) but made the decoder "hear" a word in pure silence ("fee", "is"):
//! white noise looks like a fricative. Noise tilted towards low frequencies
//! (a one-pole low-pass, [`NOISE_POLE`]) 28 dB down cost little accuracy
//! (0.240) and silence, line hiss and the pre-roll stay empty (3 words
//! hallucinated over the bench's 10 silence/noise probes instead of 10; a
//! 250 ms noise burst still decodes to one word with or without a floor).

use voice_agent_proto::Resampler;

use crate::SphinxError;

/// How far below the tracked speech level the noise floor sits, in dB
/// (chosen by measurement: `examples/bench.rs --floor-db`).
pub const DEFAULT_FLOOR_BELOW_SPEECH_DB: f32 = 28.0;
/// Pole of the one-pole low-pass that colours the floor noise (0 = white).
pub const NOISE_POLE: f32 = 0.8;

/// Speech level assumed before any speech was heard, in dBFS (mean level of
/// active 20 ms frames; typical of phone speech and of espeak-ng).
const INITIAL_SPEECH_DBFS: f32 = -25.0;
/// Frames more than this far below the tracked level are not speech.
const ACTIVE_WITHIN_DB: f32 = 20.0;
/// The tracked level stays within these bounds.
const SPEECH_DBFS_RANGE: (f32, f32) = (-50.0, -6.0);

/// Streaming conversion of phone audio to the recognizer's 16 kHz, with a
/// deterministic noise floor that follows the speech level.
///
/// Input is processed in 20 ms blocks (a partial block waits for the rest),
/// so the output does not depend on how the input is chunked.
#[derive(Debug, Clone)]
pub struct PhoneUpsampler {
    resampler: Resampler,
    /// Noise floor distance below speech in dB; `None` = no noise.
    below_db: Option<f32>,
    speech_dbfs: f32,
    seed: u32,
    /// State of the colouring low-pass.
    tint: f32,
    block: usize,
    pending: Vec<i16>,
    upsampled: Vec<i16>,
}

impl PhoneUpsampler {
    /// An upsampler from `from` Hz (8000 for phone audio) to 16 kHz with the
    /// measured default noise floor.
    pub fn new(from: u32) -> Result<Self, SphinxError> {
        Self::with_floor(from, Some(DEFAULT_FLOOR_BELOW_SPEECH_DB))
    }

    /// An upsampler whose noise floor sits `below_db` dB under the speech
    /// level (`None`: plain resampling).
    pub fn with_floor(from: u32, below_db: Option<f32>) -> Result<Self, SphinxError> {
        let resampler =
            Resampler::new(from, 16_000).map_err(|e| SphinxError::Config(e.to_string()))?;
        Ok(Self {
            resampler,
            below_db,
            speech_dbfs: INITIAL_SPEECH_DBFS,
            seed: 0x2545_f491,
            tint: 0.0,
            block: (from as usize / 50).max(1),
            pending: Vec::new(),
            upsampled: Vec::new(),
        })
    }

    /// The output rate, 16 kHz.
    pub fn output_rate(&self) -> u32 {
        16_000
    }

    /// The tracked speech level, in dBFS.
    pub fn speech_level_dbfs(&self) -> f32 {
        self.speech_dbfs
    }

    /// Converts the next chunk and appends the result to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        let mut input = input;
        // Complete a partial block first.
        if !self.pending.is_empty() {
            let need = self.block - self.pending.len();
            let take = need.min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.pending.len() < self.block {
                return;
            }
            let block = std::mem::take(&mut self.pending);
            self.process_block(&block, out);
            self.pending = block;
            self.pending.clear();
        }
        let mut blocks = input.chunks_exact(self.block);
        for block in &mut blocks {
            self.process_block(block, out);
        }
        self.pending.extend_from_slice(blocks.remainder());
    }

    /// Ends the stream: converts the partial block and the resampler's tail,
    /// then resets for a new stream (the speech level is kept: same caller).
    pub fn flush(&mut self, out: &mut Vec<i16>) {
        let pending = std::mem::take(&mut self.pending);
        if !pending.is_empty() {
            self.process_block(&pending, out);
        }
        self.pending = pending;
        self.pending.clear();
        self.upsampled.clear();
        self.resampler.flush(&mut self.upsampled);
        self.add_noise(out);
    }

    fn process_block(&mut self, block: &[i16], out: &mut Vec<i16>) {
        self.track_level(block);
        self.upsampled.clear();
        self.resampler.process(block, &mut self.upsampled);
        self.add_noise(out);
    }

    fn track_level(&mut self, block: &[i16]) {
        let level = crate::phone::level_dbfs(block);
        if level > self.speech_dbfs - ACTIVE_WITHIN_DB {
            // Rise fast (a louder caller), fall slowly (pauses, soft words).
            let rate = if level > self.speech_dbfs { 0.1 } else { 0.05 };
            self.speech_dbfs += rate * (level - self.speech_dbfs);
            self.speech_dbfs = self
                .speech_dbfs
                .clamp(SPEECH_DBFS_RANGE.0, SPEECH_DBFS_RANGE.1);
        }
    }

    /// Adds the noise floor to `self.upsampled` and appends it to `out`.
    fn add_noise(&mut self, out: &mut Vec<i16>) {
        let Some(below) = self.below_db else {
            out.append(&mut self.upsampled);
            return;
        };
        // Uniform noise in [-1, 1) has RMS 1/sqrt(3); the low-pass below
        // keeps the variance (its input is scaled by sqrt(1 - pole²)).
        let amplitude = 32768.0 * 10f32.powf((self.speech_dbfs - below) / 20.0) * 3f32.sqrt();
        let input_gain = (1.0 - NOISE_POLE * NOISE_POLE).sqrt();
        out.reserve(self.upsampled.len());
        for &s in &self.upsampled {
            self.seed = self
                .seed
                .wrapping_mul(1_664_525)
                .wrapping_add(1_013_904_223);
            let u = (self.seed >> 8) as f32 / (1u32 << 23) as f32 - 1.0;
            self.tint = NOISE_POLE * self.tint + input_gain * u;
            let v = f32::from(s) + self.tint * amplitude;
            out.push(v.round().clamp(-32768.0, 32767.0) as i16);
        }
        self.upsampled.clear();
    }
}

/// RMS level of a block in dBFS (-100 for digital silence).
pub(crate) fn level_dbfs(block: &[i16]) -> f32 {
    if block.is_empty() {
        return -100.0;
    }
    let sum: f64 = block.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (sum / block.len() as f64).sqrt();
    if rms < 1.0 {
        return -100.0;
    }
    (20.0 * (rms / 32768.0).log10()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(amplitude: f32, samples: usize) -> Vec<i16> {
        (0..samples)
            .map(|i| (amplitude * (i as f32 * 0.3).sin()) as i16)
            .collect()
    }

    fn run(up: &mut PhoneUpsampler, input: &[i16], chunk: usize) -> Vec<i16> {
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            up.process(c, &mut out);
        }
        up.flush(&mut out);
        out
    }

    #[test]
    fn silence_gets_a_floor_below_the_assumed_speech_level() {
        let mut up = PhoneUpsampler::new(8_000).expect("upsampler");
        let out = run(&mut up, &[0; 8_000], 160);
        assert!(out.len() >= 16_000);
        let level = level_dbfs(&out[..16_000]);
        let expected = INITIAL_SPEECH_DBFS - DEFAULT_FLOOR_BELOW_SPEECH_DB;
        assert!((level - expected).abs() < 1.0, "floor {level:.1} dBFS");
    }

    #[test]
    fn the_floor_follows_the_speech_level() {
        let mut up = PhoneUpsampler::new(8_000).expect("upsampler");
        // A loud "caller" (-9 dBFS) for 2 s.
        let _ = run(&mut up, &tone(16_000.0, 16_000), 160);
        assert!(up.speech_level_dbfs() > -12.0, "{}", up.speech_level_dbfs());
        let mut quiet = PhoneUpsampler::new(8_000).expect("upsampler");
        let _ = run(&mut quiet, &tone(600.0, 16_000), 160);
        assert!(
            quiet.speech_level_dbfs() < -35.0,
            "{}",
            quiet.speech_level_dbfs()
        );
    }

    #[test]
    fn chunking_does_not_change_the_output() {
        let input: Vec<i16> = (0..4_000)
            .map(|i| ((i * 37) % 2000 - 1000) as i16)
            .collect();
        let a = run(
            &mut PhoneUpsampler::new(8_000).expect("upsampler"),
            &input,
            160,
        );
        let b = run(
            &mut PhoneUpsampler::new(8_000).expect("upsampler"),
            &input,
            37,
        );
        assert_eq!(a, b);
    }

    #[test]
    fn without_a_floor_it_is_plain_resampling() {
        let mut up = PhoneUpsampler::with_floor(8_000, None).expect("upsampler");
        assert!(run(&mut up, &[0; 800], 160).iter().all(|&s| s == 0));
    }
}
