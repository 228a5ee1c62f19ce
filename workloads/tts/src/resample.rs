//! Sample-rate conversion from a provider's native rate to the requested
//! one.
//!
//! Between two of the [`SUPPORTED_SAMPLE_RATES`] (a vendor at 16 or 24 kHz)
//! the proto [`Resampler`] does the work. espeak-ng, however, always speaks at
//! 22,050 Hz and has no option to change that, and the proto resampler takes
//! only 8/16/24 kHz; so [`RationalResampler`] here is the same design (a
//! polyphase Kaiser-windowed-sinc rational resampler, 70 dB stopband,
//! passband to 0.4 and stopband from 0.5 of the lower rate) for any pair of
//! rates whose ratio reduces to a manageable `L/M` (22,050 → 8,000 is
//! 160/441, → 16,000 is 320/441, → 24,000 is 160/147).
//!
//! Filter design costs a few milliseconds for the longer filters, so designs
//! are computed once per rate pair and shared.
//!
//! [`SUPPORTED_SAMPLE_RATES`]: voice_agent_proto::SUPPORTED_SAMPLE_RATES

use std::collections::HashMap;
use std::f64::consts::PI;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use thiserror::Error;
use voice_agent_proto::Resampler;
use voice_agent_proto::audio::is_supported_rate;

/// Stopband attenuation of the anti-aliasing filter, in dB.
const STOPBAND_DB: f64 = 70.0;
/// Passband edge as a fraction of the lower rate.
const PASSBAND_EDGE: f64 = 0.4;
/// Stopband edge as a fraction of the lower rate (its Nyquist).
const STOPBAND_EDGE: f64 = 0.5;
/// Rates accepted at all, in Hz.
const RATE_RANGE: std::ops::RangeInclusive<u32> = 1_000..=384_000;
/// Most filter coefficients one design may have (about 1 MiB of `f32`).
const MAX_COEFFICIENTS: usize = 256 * 1024;

/// A rate pair the resampler cannot convert.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResampleError {
    /// A rate outside 1 kHz..=384 kHz.
    #[error("sample rate {0} Hz is out of range (1000..=384000)")]
    RateOutOfRange(u32),
    /// The reduced ratio needs an unreasonably long filter.
    #[error("cannot resample {from} Hz to {to} Hz: ratio {up}/{down} needs too long a filter")]
    RatioTooComplex {
        /// Input rate.
        from: u32,
        /// Output rate.
        to: u32,
        /// Upsampling factor.
        up: usize,
        /// Downsampling factor.
        down: usize,
    },
}

/// One filter design: `up` polyphase branches of `taps` reversed
/// coefficients each.
#[derive(Debug)]
struct Design {
    up: usize,
    down: usize,
    taps: usize,
    phases: Vec<f32>,
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn sinc(x: f64) -> f64 {
    if x.abs() < 1e-12 {
        1.0
    } else {
        (PI * x).sin() / (PI * x)
    }
}

/// Modified Bessel function of the first kind, order 0 (power series).
fn bessel_i0(x: f64) -> f64 {
    let half = x / 2.0;
    let mut sum = 1.0;
    let mut term = 1.0;
    let mut m = 1.0;
    while m < 100.0 {
        term *= (half / m) * (half / m);
        sum += term;
        if term < sum * 1e-16 {
            break;
        }
        m += 1.0;
    }
    sum
}

impl Design {
    fn new(from: u32, to: u32) -> Result<Self, ResampleError> {
        for rate in [from, to] {
            if !RATE_RANGE.contains(&rate) {
                return Err(ResampleError::RateOutOfRange(rate));
            }
        }
        let g = gcd(from, to);
        let up = (to / g) as usize;
        let down = (from / g) as usize;
        if up == 1 && down == 1 {
            return Ok(Design {
                up,
                down,
                taps: 1,
                phases: vec![1.0],
            });
        }
        let upsampled = f64::from(from) * up as f64;
        let lower = f64::from(from.min(to));
        let cutoff = (PASSBAND_EDGE + STOPBAND_EDGE) / 2.0 * lower / upsampled;
        let transition = (STOPBAND_EDGE - PASSBAND_EDGE) * lower / upsampled;
        let estimate = (STOPBAND_DB - 7.95) / (14.36 * transition);
        let beta = 0.1102 * (STOPBAND_DB - 8.7);
        let taps = (estimate / up as f64).ceil().max(1.0) as usize;
        let len = taps.saturating_mul(up);
        if len > MAX_COEFFICIENTS {
            return Err(ResampleError::RatioTooComplex { from, to, up, down });
        }
        let center = (len - 1) as f64 / 2.0;
        let i0_beta = bessel_i0(beta);
        let prototype: Vec<f64> = (0..len)
            .map(|k| {
                let x = k as f64 - center;
                let ratio = if len > 1 { x / center } else { 0.0 };
                let window = bessel_i0(beta * (1.0 - ratio * ratio).max(0.0).sqrt()) / i0_beta;
                2.0 * cutoff * sinc(2.0 * cutoff * x) * window
            })
            .collect();
        let mut phases = Vec::with_capacity(len);
        for phase in 0..up {
            let branch: Vec<f64> = (0..taps).map(|i| prototype[phase + i * up]).collect();
            // Normalize each branch to unit DC gain so a constant input does
            // not ripple at the phase rate.
            let sum: f64 = branch.iter().sum();
            let scale = if sum.abs() > f64::EPSILON {
                1.0 / sum
            } else {
                1.0
            };
            phases.extend(branch.iter().rev().map(|&c| (c * scale) as f32));
        }
        Ok(Design {
            up,
            down,
            taps,
            phases,
        })
    }

    /// The shared design for a rate pair, computed on first use.
    fn shared(from: u32, to: u32) -> Result<Arc<Design>, ResampleError> {
        type Designs = Mutex<HashMap<(u32, u32), Arc<Design>>>;
        static DESIGNS: OnceLock<Designs> = OnceLock::new();
        let designs = DESIGNS.get_or_init(Designs::default);
        if let Some(d) = designs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(from, to))
        {
            return Ok(Arc::clone(d));
        }
        // Designed outside the lock; two racing first users both design and
        // one result wins, which is harmless.
        let design = Arc::new(Design::new(from, to)?);
        let mut map = designs.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(Arc::clone(map.entry((from, to)).or_insert(design)))
    }
}

/// A streaming resampler between any two rates in 1..=384 kHz whose reduced
/// ratio keeps the filter under 256 Ki coefficients; see the module docs.
///
/// Like the proto [`Resampler`]: streaming (chunking does not change the
/// output), causal (output lags by [`RationalResampler::delay_ms`]), and
/// [`RationalResampler::flush`] drains the tail. Over a stream, `n` input
/// samples give `ceil(n * to / from)` output samples before the flush.
#[derive(Debug, Clone)]
pub struct RationalResampler {
    from: u32,
    to: u32,
    design: Arc<Design>,
    history: Vec<f32>,
    position: usize,
}

impl RationalResampler {
    /// A resampler from `from` Hz to `to` Hz.
    pub fn new(from: u32, to: u32) -> Result<Self, ResampleError> {
        let design = Design::shared(from, to)?;
        let history = vec![0.0; design.taps - 1];
        Ok(RationalResampler {
            from,
            to,
            design,
            history,
            position: 0,
        })
    }

    /// Input rate in Hz.
    pub fn from_rate(&self) -> u32 {
        self.from
    }

    /// Output rate in Hz.
    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// How far output lags input, in milliseconds.
    pub fn delay_ms(&self) -> f64 {
        let d = &self.design;
        let len = d.taps * d.up;
        (len - 1) as f64 / 2.0 / (f64::from(self.from) * d.up as f64) * 1000.0
    }

    /// Resamples the next chunk of a stream, appending to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        let d = &*self.design;
        if d.up == 1 && d.down == 1 {
            out.extend_from_slice(input);
            return;
        }
        self.history.extend(input.iter().map(|&s| f32::from(s)));
        let limit = input.len() * d.up;
        if self.position < limit {
            out.reserve((limit - self.position).div_ceil(d.down));
        }
        while self.position < limit {
            let first = self.position / d.up;
            let phase = self.position % d.up;
            let coefficients = &d.phases[phase * d.taps..(phase + 1) * d.taps];
            let window = &self.history[first..first + d.taps];
            let acc: f32 = coefficients.iter().zip(window).map(|(c, x)| c * x).sum();
            out.push(acc.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16);
            self.position += d.down;
        }
        self.position -= limit;
        self.history.drain(..input.len());
    }

    /// Ends a stream: feeds silence for the filter delay so the last input
    /// reaches `out`, then resets.
    pub fn flush(&mut self, out: &mut Vec<i16>) {
        let d = Arc::clone(&self.design);
        if !(d.up == 1 && d.down == 1) {
            let tail = (d.taps * d.up - 1).div_ceil(2 * d.up);
            self.process(&vec![0; tail], out);
        }
        self.history.clear();
        self.history.resize(d.taps - 1, 0.0);
        self.position = 0;
    }
}

/// Converts a provider's native rate to the requested one: the proto
/// [`Resampler`] between supported rates, else a [`RationalResampler`].
#[derive(Debug, Clone)]
pub enum RateConverter {
    /// Both rates are 8, 16 or 24 kHz.
    Supported(Resampler),
    /// Any other pair (espeak-ng's 22,050 Hz).
    Rational(RationalResampler),
}

impl RateConverter {
    /// A converter from `from` Hz to `to` Hz.
    pub fn new(from: u32, to: u32) -> Result<Self, ResampleError> {
        if is_supported_rate(from)
            && is_supported_rate(to)
            && let Ok(r) = Resampler::new(from, to)
        {
            return Ok(RateConverter::Supported(r));
        }
        RationalResampler::new(from, to).map(RateConverter::Rational)
    }

    /// Resamples the next chunk, appending to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        match self {
            RateConverter::Supported(r) => r.process(input, out),
            RateConverter::Rational(r) => r.process(input, out),
        }
    }

    /// Drains the filter tail at the end of the stream.
    pub fn flush(&mut self, out: &mut Vec<i16>) {
        match self {
            RateConverter::Supported(r) => r.flush(out),
            RateConverter::Rational(r) => r.flush(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ESPEAK_RATE: u32 = 22_050;
    const TARGETS: [u32; 3] = [8_000, 16_000, 24_000];

    fn tone(freq: f64, rate: u32, seconds: f64, amplitude: f64) -> Vec<i16> {
        let n = (f64::from(rate) * seconds) as usize;
        (0..n)
            .map(|i| {
                (amplitude * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()).round() as i16
            })
            .collect()
    }

    /// Amplitude of the `freq` component over exactly one second.
    fn amplitude_at(samples: &[i16], rate: u32, freq: f64) -> f64 {
        let n = rate as usize;
        assert!(samples.len() >= n, "{} < {n}", samples.len());
        let (mut re, mut im) = (0.0, 0.0);
        for (i, &s) in samples[..n].iter().enumerate() {
            let phase = 2.0 * PI * freq * i as f64 / f64::from(rate);
            re += f64::from(s) * phase.cos();
            im += f64::from(s) * phase.sin();
        }
        2.0 * (re * re + im * im).sqrt() / n as f64
    }

    fn resample_all(from: u32, to: u32, input: &[i16]) -> Vec<i16> {
        let mut r = RationalResampler::new(from, to).expect("rates");
        let mut out = Vec::new();
        r.process(input, &mut out);
        out
    }

    fn noise(n: usize) -> Vec<i16> {
        let mut state: u32 = 0x1234_5678;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 16) as u16 as i16
            })
            .collect()
    }

    #[test]
    fn espeak_rate_to_every_target_keeps_tones_in_band() {
        for to in TARGETS {
            let input = tone(1_000.0, ESPEAK_RATE, 1.5, 8_000.0);
            let out = resample_all(ESPEAK_RATE, to, &input);
            let expected = (input.len() * to as usize).div_ceil(ESPEAK_RATE as usize);
            assert_eq!(out.len(), expected, "22050->{to}");
            let steady = &out[to as usize / 4..];
            let kept = amplitude_at(steady, to, 1_000.0);
            assert!((7_600.0..8_400.0).contains(&kept), "22050->{to}: {kept}");
            // A tone near the top of the passband survives too.
            let edge = f64::from(to.min(ESPEAK_RATE)) * 0.35;
            let input = tone(edge.round(), ESPEAK_RATE, 1.5, 8_000.0);
            let out = resample_all(ESPEAK_RATE, to, &input);
            let kept = amplitude_at(&out[to as usize / 4..], to, edge.round());
            assert!(
                (7_200.0..8_800.0).contains(&kept),
                "22050->{to} at {edge}: {kept}"
            );
        }
    }

    #[test]
    fn downsampling_rejects_aliases() {
        // 7 kHz at 22,050 Hz would fold to 1 kHz at 8 kHz; 9 kHz would fold
        // to 7 kHz at 16 kHz. Both must be at least 60 dB down.
        for (to, freq, alias) in [(8_000, 7_000.0, 1_000.0), (16_000, 9_000.0, 7_000.0)] {
            let out = resample_all(ESPEAK_RATE, to, &tone(freq, ESPEAK_RATE, 1.5, 8_000.0));
            let level = amplitude_at(&out[to as usize / 4..], to, alias);
            assert!(level < 8.0, "22050->{to}: {freq} Hz aliased at {level}");
        }
    }

    #[test]
    fn upsampling_rejects_images() {
        // 1 kHz at 22,050 Hz has its first image at 21,050 Hz, which is above
        // 12 kHz at 24 kHz and folds to 2,950 Hz.
        let out = resample_all(
            ESPEAK_RATE,
            24_000,
            &tone(1_000.0, ESPEAK_RATE, 1.5, 8_000.0),
        );
        let steady = &out[6_000..];
        let image = amplitude_at(steady, 24_000, 24_000.0 - 21_050.0);
        assert!(image < 8.0, "image at {image}");
    }

    #[test]
    fn dc_is_preserved() {
        for to in TARGETS {
            let out = resample_all(ESPEAK_RATE, to, &vec![1_000i16; 4_410]);
            let tail = &out[out.len() / 2..];
            assert!(tail.iter().all(|&s| (s - 1_000).abs() <= 1), "22050->{to}");
        }
    }

    #[test]
    fn streaming_matches_one_shot_and_flush_drains() {
        let input = noise(5_001);
        for to in TARGETS {
            let whole = resample_all(ESPEAK_RATE, to, &input);
            for chunk in [1, 7, 441, 2_000] {
                let mut r = RationalResampler::new(ESPEAK_RATE, to).expect("rates");
                let mut streamed = Vec::new();
                for piece in input.chunks(chunk) {
                    r.process(piece, &mut streamed);
                }
                assert_eq!(streamed.len(), whole.len(), "22050->{to} by {chunk}");
                assert!(
                    streamed
                        .iter()
                        .zip(&whole)
                        .all(|(a, b)| (i32::from(*a) - i32::from(*b)).abs() <= 1),
                    "22050->{to} by {chunk}"
                );
            }
            let mut r = RationalResampler::new(ESPEAK_RATE, to).expect("rates");
            assert!(
                r.delay_ms() > 0.0 && r.delay_ms() < 10.0,
                "{}",
                r.delay_ms()
            );
            let mut input = vec![0i16; 2_000];
            input.push(20_000);
            let mut out = Vec::new();
            r.process(&input, &mut out);
            let before = out.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
            r.flush(&mut out);
            let after = out.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
            assert!(before < 1_000, "22050->{to}: click early ({before})");
            assert!(after > 2_000, "22050->{to}: flush lost the click ({after})");
        }
    }

    #[test]
    fn converter_uses_the_proto_resampler_between_supported_rates() {
        assert!(matches!(
            RateConverter::new(24_000, 8_000),
            Ok(RateConverter::Supported(_))
        ));
        assert!(matches!(
            RateConverter::new(16_000, 16_000),
            Ok(RateConverter::Supported(_))
        ));
        assert!(matches!(
            RateConverter::new(22_050, 16_000),
            Ok(RateConverter::Rational(_))
        ));
        // The two agree where both apply.
        let input = noise(3_000);
        let mut proto = Vec::new();
        let mut r = Resampler::new(24_000, 16_000).expect("supported");
        r.process(&input, &mut proto);
        let ours = resample_all(24_000, 16_000, &input);
        assert_eq!(proto.len(), ours.len());
        assert!(
            proto
                .iter()
                .zip(&ours)
                .all(|(a, b)| (i32::from(*a) - i32::from(*b)).abs() <= 1)
        );
    }

    #[test]
    fn refuses_unusable_rates() {
        assert_eq!(
            RationalResampler::new(0, 8_000).err(),
            Some(ResampleError::RateOutOfRange(0))
        );
        assert!(matches!(
            RationalResampler::new(44_101, 8_000),
            Err(ResampleError::RatioTooComplex { .. })
        ));
        assert!(RationalResampler::new(44_100, 8_000).is_ok());
    }
}
