//! Voice activity detection: frame energy against an adaptive noise floor
//! (minimum statistics: the quietest frame of the last 1.5 s), with onset and
//! hangover hysteresis. No model weights; cheap enough to run
//! on every 20 ms frame of every call (one pass over 160 samples).
//!
//! The detector answers "is the caller talking now?" quickly and robustly
//! enough for barge-in and for segmenting audio for the local recognizer.
//! What was said, and whether the turn is over, are the recognizer's and the
//! turn-taking machine's business.

/// Tuning of the detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    /// Sample rate of the frames, in Hz.
    pub sample_rate: u32,
    /// A frame is voiced when its level is this many dB above the noise floor.
    pub margin_db: f32,
    /// ...and above this absolute level, in dBFS (so digital silence with a
    /// very low floor does not make every click speech).
    pub min_level_dbfs: f32,
    /// Voiced audio needed before speech is declared, in ms.
    pub onset_ms: u32,
    /// Unvoiced audio needed before speech is declared over, in ms.
    pub hangover_ms: u32,
}

impl VadConfig {
    /// Defaults for telephone audio at `sample_rate`.
    pub const fn telephone(sample_rate: u32) -> Self {
        Self {
            sample_rate,
            margin_db: 12.0,
            min_level_dbfs: -48.0,
            onset_ms: 60,
            hangover_ms: 240,
        }
    }
}

/// A change of speech state, reported by [`Vad::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech began `onset_ms` ago (the onset frames are included).
    SpeechStart,
    /// Speech ended `hangover_ms` ago.
    SpeechEnd,
}

/// The detector's state for one audio stream.
#[derive(Debug, Clone)]
pub struct Vad {
    config: VadConfig,
    noise_floor_db: f32,
    /// Levels of the last [`FLOOR_WINDOW`] frames, a ring.
    recent_levels: [f32; FLOOR_WINDOW],
    next_level: usize,
    speaking: bool,
    /// Consecutive ms voiced (while silent) or unvoiced (while speaking).
    run_ms: u32,
    last_level_db: f32,
}

/// Floor assumed before any audio: a quiet phone line.
const INITIAL_FLOOR_DBFS: f32 = -60.0;
/// Frames the floor looks back over: 1.5 s of 20 ms frames. Speech has gaps
/// between words within that span; steady noise does not, so the floor rises
/// to steady noise (or hold music) and stays under speech.
const FLOOR_WINDOW: usize = 75;
/// The floor never drops below this (digital silence would drive it to -inf).
const FLOOR_MIN_DBFS: f32 = -75.0;

impl Vad {
    /// A detector in the silent state.
    pub fn new(config: VadConfig) -> Self {
        Self {
            config,
            noise_floor_db: INITIAL_FLOOR_DBFS,
            recent_levels: [INITIAL_FLOOR_DBFS; FLOOR_WINDOW],
            next_level: 0,
            speaking: false,
            run_ms: 0,
            last_level_db: FLOOR_MIN_DBFS,
        }
    }

    /// Whether the detector is in the speech state.
    pub fn is_speech(&self) -> bool {
        self.speaking
    }

    /// Level of the last frame, in dBFS.
    pub fn last_level_dbfs(&self) -> f32 {
        self.last_level_db
    }

    /// The current noise floor estimate, in dBFS.
    pub fn noise_floor_dbfs(&self) -> f32 {
        self.noise_floor_db
    }

    /// Feeds one frame (any length; 20 ms is the norm) and returns a state
    /// change, if any.
    pub fn push(&mut self, frame: &[i16]) -> Option<VadEvent> {
        if frame.is_empty() {
            return None;
        }
        let frame_ms =
            (frame.len() as u64 * 1000 / u64::from(self.config.sample_rate.max(1))) as u32;
        let level = level_dbfs(frame);
        self.last_level_db = level;
        let voiced = level > self.noise_floor_db + self.config.margin_db
            && level > self.config.min_level_dbfs;

        self.recent_levels[self.next_level] = level;
        self.next_level = (self.next_level + 1) % FLOOR_WINDOW;
        let window_min = self
            .recent_levels
            .iter()
            .copied()
            .fold(f32::INFINITY, f32::min);
        // Follow the window minimum, smoothed so one quiet frame does not
        // drop the floor to nothing.
        self.noise_floor_db += 0.2 * (window_min - self.noise_floor_db);
        self.noise_floor_db = self.noise_floor_db.max(FLOOR_MIN_DBFS);

        if self.speaking == voiced {
            self.run_ms = 0;
            return None;
        }
        self.run_ms += frame_ms;
        let needed = if self.speaking {
            self.config.hangover_ms
        } else {
            self.config.onset_ms
        };
        if self.run_ms < needed {
            return None;
        }
        self.run_ms = 0;
        self.speaking = voiced;
        Some(if voiced {
            VadEvent::SpeechStart
        } else {
            VadEvent::SpeechEnd
        })
    }

    /// Forgets the speech state (keeps the noise floor).
    pub fn reset(&mut self) {
        self.speaking = false;
        self.run_ms = 0;
    }
}

/// RMS level of a frame in dBFS (0 dBFS = full-scale square wave).
pub fn level_dbfs(frame: &[i16]) -> f32 {
    if frame.is_empty() {
        return FLOOR_MIN_DBFS;
    }
    let sum: f64 = frame.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (sum / frame.len() as f64).sqrt();
    if rms < 1.0 {
        return FLOOR_MIN_DBFS - 20.0;
    }
    (20.0 * (rms / 32768.0).log10()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 8_000;
    const FRAME: usize = 160;

    fn tone(amplitude: f32, frames: usize) -> Vec<Vec<i16>> {
        (0..frames)
            .map(|f| {
                (0..FRAME)
                    .map(|i| {
                        let t = (f * FRAME + i) as f32 / RATE as f32;
                        (amplitude * (2.0 * std::f32::consts::PI * 300.0 * t).sin()) as i16
                    })
                    .collect()
            })
            .collect()
    }

    /// Deterministic pseudo-random noise.
    fn noise(amplitude: i32, frames: usize, seed: &mut u32) -> Vec<Vec<i16>> {
        (0..frames)
            .map(|_| {
                (0..FRAME)
                    .map(|_| {
                        *seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        (((*seed >> 16) as i32 % (2 * amplitude + 1)) - amplitude) as i16
                    })
                    .collect()
            })
            .collect()
    }

    fn run(vad: &mut Vad, frames: &[Vec<i16>]) -> Vec<(usize, VadEvent)> {
        frames
            .iter()
            .enumerate()
            .filter_map(|(i, f)| vad.push(f).map(|e| (i, e)))
            .collect()
    }

    #[test]
    fn silence_is_not_speech() {
        let mut vad = Vad::new(VadConfig::telephone(RATE));
        assert!(run(&mut vad, &vec![vec![0i16; FRAME]; 100]).is_empty());
        assert!(!vad.is_speech());
    }

    #[test]
    fn speech_onset_and_hangover() {
        let mut vad = Vad::new(VadConfig::telephone(RATE));
        let mut frames = vec![vec![0i16; FRAME]; 20];
        frames.extend(tone(8_000.0, 50));
        frames.extend(vec![vec![0i16; FRAME]; 30]);
        let events = run(&mut vad, &frames);
        // Onset after 60 ms = 3 frames: frames 20, 21, 22 → declared at 22.
        assert_eq!(events[0], (22, VadEvent::SpeechStart));
        // Hangover 240 ms = 12 frames after the tone ends at frame 70 → 81.
        assert_eq!(events[1], (81, VadEvent::SpeechEnd));
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn a_click_shorter_than_onset_is_ignored() {
        let mut vad = Vad::new(VadConfig::telephone(RATE));
        let mut frames = vec![vec![0i16; FRAME]; 10];
        frames.extend(tone(10_000.0, 2));
        frames.extend(vec![vec![0i16; FRAME]; 10]);
        assert!(run(&mut vad, &frames).is_empty());
    }

    #[test]
    fn steady_background_noise_is_absorbed_but_speech_over_it_is_found() {
        let mut seed = 7;
        let mut vad = Vad::new(VadConfig::telephone(RATE));
        // Loud-ish noise (about -36 dBFS) for 2 s: the floor rises to it.
        let events = run(&mut vad, &noise(900, 100, &mut seed));
        assert!(
            events.len() <= 2,
            "noise should at most trigger once while the floor adapts: {events:?}"
        );
        assert!(!vad.is_speech(), "floor adapted");
        assert!(vad.noise_floor_dbfs() > -45.0);
        // Speech 20 dB above the noise is found.
        let mut mixed = tone(9_000.0, 25);
        for (f, n) in mixed.iter_mut().zip(noise(900, 25, &mut seed)) {
            for (s, n) in f.iter_mut().zip(n) {
                *s = s.saturating_add(n);
            }
        }
        let events = run(&mut vad, &mixed);
        assert_eq!(events.first().map(|e| e.1), Some(VadEvent::SpeechStart));
    }

    #[test]
    fn level_of_full_scale_and_silence() {
        assert!(level_dbfs(&[i16::MAX, i16::MIN, i16::MAX, i16::MIN]).abs() < 0.1);
        assert!(level_dbfs(&[0; 160]) < -90.0);
        assert!(level_dbfs(&[]) <= FLOOR_MIN_DBFS);
    }
}
