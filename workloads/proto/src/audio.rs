//! Audio helpers for the voice loop: G.711 mu-law, PCM16 little-endian,
//! sample-rate conversion (any pair of rates, e.g. a provider's native rate
//! to a wire rate), and 20 ms framing.
//!
//! The `*_into` functions append to a caller-owned buffer so per-frame paths
//! can reuse one allocation; clear the buffer first to overwrite.

use std::collections::HashMap;
use std::f64::consts::PI;
use std::fmt;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::error::ProtoError;

/// Sample rates the workloads exchange audio at, in Hz: telephony (mu-law),
/// wideband STT, and common TTS output. These are the rates of the wire
/// formats (what `/v1/synthesize` accepts); the [`Resampler`] converts
/// between any rates, e.g. from a provider's native rate to one of these.
pub const SUPPORTED_SAMPLE_RATES: [u32; 3] = [8_000, 16_000, 24_000];

/// Length of one playback/media frame in milliseconds (Twilio Media Streams
/// sends and expects 20 ms frames).
pub const FRAME_MS: u32 = 20;

/// Whether `rate` is one of [`SUPPORTED_SAMPLE_RATES`], i.e. a wire rate.
pub fn is_supported_rate(rate: u32) -> bool {
    SUPPORTED_SAMPLE_RATES.contains(&rate)
}

/// Samples in one [`FRAME_MS`] frame at `rate` Hz (160 at 8 kHz).
pub const fn samples_per_frame(rate: u32) -> usize {
    rate as usize * FRAME_MS as usize / 1000
}

/// Duration of `samples` mono samples at `rate` Hz, in milliseconds; 0 for a
/// zero rate rather than infinity.
pub fn duration_ms(samples: usize, rate: u32) -> f64 {
    if rate == 0 {
        return 0.0;
    }
    samples as f64 * 1000.0 / f64::from(rate)
}

// ---------------------------------------------------------------------------
// G.711 mu-law

/// Added to the magnitude so every segment's lower bound is a power of two.
const MULAW_BIAS: i32 = 0x84;
/// Largest magnitude that still fits after adding the bias.
const MULAW_CLIP: i32 = 32_635;

/// Encodes one linear PCM16 sample as G.711 mu-law (ITU-T G.711: bias 0x84,
/// clip at 32635, bits inverted on output). `0` encodes as `0xFF`.
pub const fn mulaw_encode(sample: i16) -> u8 {
    let mut magnitude = sample as i32;
    let sign: u32 = if magnitude < 0 {
        // i32 holds -(-32768) fine; the clip below brings it into range.
        magnitude = -magnitude;
        0x80
    } else {
        0
    };
    if magnitude > MULAW_CLIP {
        magnitude = MULAW_CLIP;
    }
    let biased = (magnitude + MULAW_BIAS) as u32; // 132..=32767
    // Segment = position of the highest set bit above bit 7.
    let exponent = 31 - biased.leading_zeros() - 7;
    let mantissa = (biased >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

const fn mulaw_decode_slow(byte: u8) -> i16 {
    let code = !byte;
    let exponent = ((code >> 4) & 0x07) as u32;
    let mantissa = (code & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + MULAW_BIAS) << exponent) - MULAW_BIAS;
    if code & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Linear value of every mu-law code, computed at compile time.
const MULAW_DECODE_TABLE: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = mulaw_decode_slow(i as u8);
        i += 1;
    }
    table
};

/// Decodes one G.711 mu-law byte to linear PCM16 (range -32124..=32124).
pub const fn mulaw_decode(byte: u8) -> i16 {
    MULAW_DECODE_TABLE[byte as usize]
}

/// Appends the mu-law encoding of `samples` to `out`.
pub fn encode_mulaw_into(samples: &[i16], out: &mut Vec<u8>) {
    out.extend(samples.iter().map(|&s| mulaw_encode(s)));
}

/// Appends the linear samples of mu-law `bytes` to `out`.
pub fn decode_mulaw_into(bytes: &[u8], out: &mut Vec<i16>) {
    out.extend(bytes.iter().map(|&b| mulaw_decode(b)));
}

/// Encodes `samples` as mu-law into a new buffer.
pub fn encode_mulaw(samples: &[i16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len());
    encode_mulaw_into(samples, &mut out);
    out
}

/// Decodes mu-law `bytes` into a new buffer.
pub fn decode_mulaw(bytes: &[u8]) -> Vec<i16> {
    let mut out = Vec::with_capacity(bytes.len());
    decode_mulaw_into(bytes, &mut out);
    out
}

// ---------------------------------------------------------------------------
// PCM16 little-endian

/// Appends the samples of PCM16 little-endian `bytes` to `out`. An odd byte
/// count is refused and leaves `out` unchanged; for byte streams split at
/// arbitrary points use [`Pcm16LeDecoder`].
pub fn decode_pcm16_le_into(bytes: &[u8], out: &mut Vec<i16>) -> Result<(), ProtoError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(ProtoError::OddByteCount(bytes.len()));
    }
    out.extend(
        bytes
            .chunks_exact(2)
            .map(|pair| i16::from_le_bytes([pair[0], pair[1]])),
    );
    Ok(())
}

/// Appends `samples` as PCM16 little-endian bytes to `out`.
pub fn encode_pcm16_le_into(samples: &[i16], out: &mut Vec<u8>) {
    out.reserve(samples.len() * 2);
    for sample in samples {
        out.extend_from_slice(&sample.to_le_bytes());
    }
}

/// Decodes PCM16 little-endian bytes into a new buffer; odd counts are an
/// error.
pub fn pcm16_le_to_samples(bytes: &[u8]) -> Result<Vec<i16>, ProtoError> {
    let mut out = Vec::with_capacity(bytes.len() / 2);
    decode_pcm16_le_into(bytes, &mut out)?;
    Ok(out)
}

/// Encodes samples as PCM16 little-endian bytes into a new buffer.
pub fn samples_to_pcm16_le(samples: &[i16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len() * 2);
    encode_pcm16_le_into(samples, &mut out);
    out
}

/// Decodes a PCM16 little-endian byte stream that arrives in chunks of any
/// size (HTTP bodies split wherever they like), carrying an odd trailing byte
/// over to the next chunk.
#[derive(Debug, Clone, Default)]
pub struct Pcm16LeDecoder {
    pending: Option<u8>,
}

impl Pcm16LeDecoder {
    /// A decoder with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the complete samples of `bytes` (plus a byte left from the
    /// previous chunk) to `out`.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<i16>) {
        if let Some(low) = self.pending {
            let Some((&high, rest)) = bytes.split_first() else {
                return;
            };
            out.push(i16::from_le_bytes([low, high]));
            self.pending = None;
            bytes = rest;
        }
        let whole = bytes.len() & !1;
        out.extend(
            bytes[..whole]
                .chunks_exact(2)
                .map(|pair| i16::from_le_bytes([pair[0], pair[1]])),
        );
        self.pending = bytes.get(whole).copied();
    }

    /// Ends the stream: an error if half a sample is left over. Resets the
    /// decoder either way.
    pub fn finish(&mut self) -> Result<(), ProtoError> {
        match self.pending.take() {
            Some(_) => Err(ProtoError::OddByteCount(1)),
            None => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------
// Resampling

/// Stopband attenuation the anti-aliasing filter is designed for, in dB.
const STOPBAND_DB: f64 = 70.0;
/// Passband edge as a fraction of the lower rate (3.2 kHz at 8 kHz).
const PASSBAND_EDGE: f64 = 0.4;
/// Stopband edge as a fraction of the lower rate: its Nyquist, so nothing
/// aliases back into the band.
const STOPBAND_EDGE: f64 = 0.5;
/// Rates the [`Resampler`] accepts at all, in Hz.
const RESAMPLER_RATES: RangeInclusive<u32> = 1_000..=384_000;
/// Most filter coefficients one design may have (about 1 MiB of `f32`).
const MAX_COEFFICIENTS: usize = 256 * 1024;

/// One filter design for a rate pair: `up` polyphase branches of `taps`
/// coefficients each. Immutable once built, so resamplers share it.
struct Design {
    /// Upsampling factor `L`.
    up: usize,
    /// Downsampling factor `M`.
    down: usize,
    /// Taps per polyphase branch `K`.
    taps: usize,
    /// `up` branches of `taps` coefficients each, reversed so that one output
    /// is a dot product with a contiguous slice of the history.
    phases: Vec<f32>,
}

impl fmt::Debug for Design {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The coefficients (up to 256 Ki of them) are left out.
        f.debug_struct("Design")
            .field("up", &self.up)
            .field("down", &self.down)
            .field("taps", &self.taps)
            .finish_non_exhaustive()
    }
}

impl Design {
    fn new(from: u32, to: u32) -> Result<Self, ProtoError> {
        for rate in [from, to] {
            if !RESAMPLER_RATES.contains(&rate) {
                return Err(ProtoError::UnsupportedSampleRate(rate));
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

        // Design in cycles per sample of the upsampled rate.
        let upsampled = f64::from(from) * up as f64;
        let lower = f64::from(from.min(to));
        let cutoff = (PASSBAND_EDGE + STOPBAND_EDGE) / 2.0 * lower / upsampled;
        let transition = (STOPBAND_EDGE - PASSBAND_EDGE) * lower / upsampled;
        // Kaiser's estimates for length and shape.
        let estimate = (STOPBAND_DB - 7.95) / (14.36 * transition);
        let beta = 0.1102 * (STOPBAND_DB - 8.7);
        // `as` saturates, and the product is checked before anything is
        // allocated.
        let taps = (estimate / up as f64).ceil().max(1.0) as usize;
        let len = taps.saturating_mul(up);
        if len > MAX_COEFFICIENTS {
            return Err(ProtoError::ResampleRatioTooComplex { from, to, up, down });
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
        let mut branch = Vec::with_capacity(taps);
        for phase in 0..up {
            branch.clear();
            branch.extend((0..taps).map(|i| prototype[phase + i * up]));
            // Each branch sums to ~1 by design; normalizing makes DC exact so a
            // constant input never ripples at the phase rate.
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

    /// The shared design for a rate pair, computed on first use (the longer
    /// filters take a few milliseconds to design).
    fn shared(from: u32, to: u32) -> Result<Arc<Design>, ProtoError> {
        type Designs = Mutex<HashMap<(u32, u32), Arc<Design>>>;
        static DESIGNS: OnceLock<Designs> = OnceLock::new();
        let designs = DESIGNS.get_or_init(Designs::default);
        if let Some(design) = designs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(from, to))
        {
            return Ok(Arc::clone(design));
        }
        // Designed outside the lock; two racing first users both design and
        // one result wins, which is harmless. Refused pairs are not cached.
        let design = Arc::new(Design::new(from, to)?);
        let mut map = designs.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(Arc::clone(map.entry((from, to)).or_insert(design)))
    }

    fn is_identity(&self) -> bool {
        self.up == 1 && self.down == 1
    }
}

/// Converts mono PCM16 between any two rates in 1 kHz..=384 kHz (the same
/// rate copies), e.g. espeak-ng's 22,050 Hz to the 8/16/24 kHz of the wire
/// formats. Which rates the wire formats accept is a separate question,
/// answered by [`SUPPORTED_SAMPLE_RATES`] and [`is_supported_rate`]; this
/// type does not consult them.
///
/// A polyphase windowed-sinc (Kaiser, 70 dB) rational resampler: conceptually
/// upsample by `L`, low-pass below the lower rate's Nyquist (passband to 0.4,
/// stopband from 0.5 of the lower rate), downsample by `M`, computing only
/// the outputs that are kept. The low-pass removes what would alias when
/// downsampling and the images when upsampling. `L/M` is the reduced ratio
/// (22,050 → 8,000 is 160/441); pairs whose ratio would need a filter of more
/// than 256 Ki coefficients are refused
/// ([`ProtoError::ResampleRatioTooComplex`]).
///
/// Filter designs are computed once per `(from, to)` pair and shared by every
/// resampler in the process (clones included); each resampler owns only its
/// history and position.
///
/// It is streaming: [`Resampler::process`] keeps the filter history and the
/// fractional position between calls, so feeding a signal in chunks yields
/// the same samples as feeding it at once. The filter is causal, so output
/// lags input by [`Resampler::delay_ms`] (a few ms);
/// [`Resampler::flush`] pushes out the tail at the end of a stream.
#[derive(Debug, Clone)]
pub struct Resampler {
    from: u32,
    to: u32,
    /// The shared filter for this rate pair.
    design: Arc<Design>,
    /// The last `taps - 1` input samples, then the chunk being processed.
    history: Vec<f32>,
    /// Position of the next output on the upsampled time axis, relative to
    /// the first sample of the chunk being processed.
    position: usize,
}

impl Resampler {
    /// A resampler from `from` Hz to `to` Hz.
    ///
    /// Refuses a rate outside 1,000..=384,000 Hz
    /// ([`ProtoError::UnsupportedSampleRate`]) and a pair whose reduced ratio
    /// needs too long a filter ([`ProtoError::ResampleRatioTooComplex`]).
    pub fn new(from: u32, to: u32) -> Result<Self, ProtoError> {
        let design = Design::shared(from, to)?;
        let history = vec![0.0; design.taps - 1];
        Ok(Resampler {
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

    /// How far output lags input, in milliseconds (the filter's group delay;
    /// 0 for the identity).
    pub fn delay_ms(&self) -> f64 {
        let d = &*self.design;
        let upsampled = f64::from(self.from) * d.up as f64;
        let len = d.taps * d.up;
        (len - 1) as f64 / 2.0 / upsampled * 1000.0
    }

    /// Resamples the next chunk of a stream and appends the result to `out`.
    ///
    /// Over a stream, the output has `ceil(n * to / from)` samples for `n`
    /// input samples, whatever the chunking. Once the internal buffer has
    /// grown to the largest chunk, this does not allocate (beyond growing
    /// `out`).
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        if self.design.is_identity() {
            out.extend_from_slice(input);
            return;
        }
        self.history.extend(input.iter().map(|&s| f32::from(s)));
        self.filter(input.len(), out);
    }

    /// Filters the last `available` samples appended to the history, then
    /// drops as many from its front.
    fn filter(&mut self, available: usize, out: &mut Vec<i16>) {
        let d = &*self.design;
        let limit = available * d.up;
        if self.position < limit {
            out.reserve((limit - self.position).div_ceil(d.down));
        }
        while self.position < limit {
            let first = self.position / d.up;
            let phase = self.position % d.up;
            let coefficients = &d.phases[phase * d.taps..(phase + 1) * d.taps];
            let window = &self.history[first..first + d.taps];
            let acc: f32 = coefficients.iter().zip(window).map(|(c, x)| c * x).sum();
            out.push(to_i16(acc));
            self.position += d.down;
        }
        self.position -= limit;
        self.history.drain(..available);
    }

    /// Ends a stream: feeds silence for the filter delay so the last real
    /// input reaches `out`, then resets for a new stream.
    pub fn flush(&mut self, out: &mut Vec<i16>) {
        let d = &*self.design;
        if !d.is_identity() {
            let tail = (d.taps * d.up - 1).div_ceil(2 * d.up);
            self.history.resize(self.history.len() + tail, 0.0);
            self.filter(tail, out);
        }
        self.reset();
    }

    /// Forgets the stream so far (history and position).
    pub fn reset(&mut self) {
        self.history.clear();
        self.history.resize(self.design.taps - 1, 0.0);
        self.position = 0;
    }
}

fn to_i16(value: f32) -> i16 {
    // `as` saturates, but round first so small values are not biased to 0.
    value
        .round()
        .clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16
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
    // Converges fast for the beta used here (< 10); bounded anyway.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, rate: u32, seconds: f64, amplitude: f64) -> Vec<i16> {
        let n = (f64::from(rate) * seconds) as usize;
        (0..n)
            .map(|i| {
                (amplitude * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()).round() as i16
            })
            .collect()
    }

    fn rms(samples: &[i16]) -> f64 {
        let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
        (sum / samples.len() as f64).sqrt()
    }

    /// Amplitude of the `freq` component over exactly one second of
    /// `samples` (integer-Hz tones are then orthogonal, no leakage).
    fn amplitude_at(samples: &[i16], rate: u32, freq: f64) -> f64 {
        let n = rate as usize;
        assert!(samples.len() >= n);
        let (mut re, mut im) = (0.0, 0.0);
        for (i, &s) in samples[..n].iter().enumerate() {
            let phase = 2.0 * PI * freq * i as f64 / f64::from(rate);
            re += f64::from(s) * phase.cos();
            im += f64::from(s) * phase.sin();
        }
        2.0 * (re * re + im * im).sqrt() / n as f64
    }

    fn resample_all(from: u32, to: u32, input: &[i16]) -> Vec<i16> {
        let mut r = Resampler::new(from, to).expect("usable rates");
        let mut out = Vec::new();
        r.process(input, &mut out);
        out
    }

    /// Deterministic noise-like test signal (LCG), full scale.
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
    fn mulaw_known_values() {
        assert_eq!(mulaw_encode(0), 0xFF);
        assert_eq!(mulaw_encode(32_767), 0x80);
        assert_eq!(mulaw_encode(-32_768), 0x00);
        assert_eq!(mulaw_encode(-1), 0x7F);
        assert_eq!(mulaw_decode(0xFF), 0);
        assert_eq!(mulaw_decode(0x7F), 0);
        assert_eq!(mulaw_decode(0x80), 32_124);
        assert_eq!(mulaw_decode(0x00), -32_124);
        // Segment boundaries of G.711 (positive side).
        assert_eq!(mulaw_decode(0xEF), 132);
        assert_eq!(mulaw_encode(132), 0xEF);
    }

    #[test]
    fn mulaw_round_trips_every_code() {
        for byte in 0..=255u8 {
            let back = mulaw_encode(mulaw_decode(byte));
            if byte == 0x7F {
                // Negative zero normalizes to positive zero.
                assert_eq!(back, 0xFF);
            } else {
                assert_eq!(back, byte, "code {byte:#04x}");
            }
        }
    }

    #[test]
    fn mulaw_decode_is_monotonic_and_symmetric() {
        // 0x00..=0x7F run from most negative up to zero, 0x80..=0xFF from
        // most positive down to zero.
        for byte in 0x00..0x7Fu8 {
            assert!(mulaw_decode(byte) < mulaw_decode(byte + 1), "{byte:#04x}");
        }
        for byte in 0x80..0xFFu8 {
            assert!(mulaw_decode(byte) > mulaw_decode(byte + 1), "{byte:#04x}");
        }
        for byte in 0..=0x7Fu8 {
            assert_eq!(mulaw_decode(byte), -mulaw_decode(byte | 0x80));
        }
        assert_eq!(MULAW_DECODE_TABLE[0x80], mulaw_decode_slow(0x80));
    }

    #[test]
    fn mulaw_encode_is_monotonic_and_close() {
        let mut previous = i16::MIN;
        for sample in (i16::MIN..=i16::MAX).step_by(7) {
            let decoded = mulaw_decode(mulaw_encode(sample));
            assert!(decoded >= previous, "{sample}");
            previous = decoded;
            // Quantization error stays within half a step of the segment
            // (largest step 1024), except for clipping at the ends.
            let clipped = i32::from(sample).clamp(-MULAW_CLIP, MULAW_CLIP);
            assert!(
                (i32::from(decoded) - clipped).abs() <= 512,
                "{sample} -> {decoded}"
            );
        }
    }

    #[test]
    fn mulaw_slice_helpers_append() {
        let samples = [0i16, 1000, -1000, 32_767, -32_768];
        let mut bytes = vec![0xAA];
        encode_mulaw_into(&samples, &mut bytes);
        assert_eq!(bytes.len(), 6);
        assert_eq!(bytes[0], 0xAA);
        assert_eq!(&bytes[1..], encode_mulaw(&samples).as_slice());
        let mut decoded = Vec::new();
        decode_mulaw_into(&bytes[1..], &mut decoded);
        assert_eq!(decoded, decode_mulaw(&bytes[1..]));
        assert_eq!(decoded[0], 0);
    }

    #[test]
    fn pcm16_round_trip_and_odd_counts() {
        let samples = [0i16, 1, -1, 256, i16::MIN, i16::MAX];
        let bytes = samples_to_pcm16_le(&samples);
        assert_eq!(&bytes[..6], &[0, 0, 1, 0, 0xFF, 0xFF]);
        assert_eq!(pcm16_le_to_samples(&bytes).expect("even"), samples);
        assert_eq!(
            pcm16_le_to_samples(&bytes[..5]),
            Err(ProtoError::OddByteCount(5))
        );
        let mut out = vec![7];
        assert!(decode_pcm16_le_into(&[1, 2, 3], &mut out).is_err());
        assert_eq!(out, vec![7], "refused input changes nothing");
    }

    #[test]
    fn pcm16_stream_decoder_handles_any_split() {
        let samples = noise(50);
        let bytes = samples_to_pcm16_le(&samples);
        for chunk in [1, 2, 3, 7, 100] {
            let mut decoder = Pcm16LeDecoder::new();
            let mut out = Vec::new();
            for piece in bytes.chunks(chunk) {
                decoder.push(piece, &mut out);
            }
            decoder.push(&[], &mut out);
            assert_eq!(decoder.finish(), Ok(()));
            assert_eq!(out, samples, "chunk {chunk}");
        }
        let mut decoder = Pcm16LeDecoder::new();
        let mut out = Vec::new();
        decoder.push(&[1, 0, 9], &mut out);
        assert_eq!(out, vec![1]);
        assert_eq!(decoder.finish(), Err(ProtoError::OddByteCount(1)));
        assert_eq!(decoder.finish(), Ok(()), "finish resets");
    }

    #[test]
    fn framing() {
        assert_eq!(FRAME_MS, 20);
        assert_eq!(samples_per_frame(8_000), 160);
        assert_eq!(samples_per_frame(16_000), 320);
        assert_eq!(samples_per_frame(24_000), 480);
        assert_eq!(duration_ms(160, 8_000), 20.0);
        assert_eq!(duration_ms(24_000, 24_000), 1000.0);
        assert_eq!(duration_ms(100, 0), 0.0);
    }

    #[test]
    fn resampler_refuses_out_of_range_rates_and_complex_ratios() {
        for (from, to, bad) in [
            (0, 8_000, 0),
            (999, 8_000, 999),
            (8_000, 384_001, 384_001),
            (8_000, u32::MAX, u32::MAX),
        ] {
            assert_eq!(
                Resampler::new(from, to).err(),
                Some(ProtoError::UnsupportedSampleRate(bad)),
                "{from}->{to}"
            );
        }
        let err = Resampler::new(44_101, 8_000).err();
        assert_eq!(
            err,
            Some(ProtoError::ResampleRatioTooComplex {
                from: 44_101,
                to: 8_000,
                up: 8_000,
                down: 44_101
            })
        );
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("44101 Hz") && message.contains("8000 Hz"),
            "{message}"
        );
        assert!(
            ProtoError::UnsupportedSampleRate(999)
                .to_string()
                .contains("999 Hz")
        );
        // Rates outside the wire formats are fine for the resampler.
        for (from, to) in [
            (44_100, 8_000),
            (8_000, 48_000),
            (1_000, 384_000),
            (384_000, 1_000),
            (22_050, 22_050),
        ] {
            let r = Resampler::new(from, to).expect("usable pair");
            assert_eq!((r.from_rate(), r.to_rate()), (from, to));
        }
    }

    #[test]
    fn filter_designs_are_shared_per_rate_pair() {
        let a = Resampler::new(22_050, 16_000).expect("rates");
        let b = Resampler::new(22_050, 16_000).expect("rates");
        let c = a.clone();
        let other = Resampler::new(16_000, 22_050).expect("rates");
        assert!(Arc::ptr_eq(&a.design, &b.design));
        assert!(Arc::ptr_eq(&a.design, &c.design));
        assert!(!Arc::ptr_eq(&a.design, &other.design));
        assert_eq!((a.design.up, a.design.down), (320, 441));
        // Debug stays short: the coefficients are left out.
        assert!(format!("{a:?}").len() < 10_000);
    }

    #[test]
    fn downsampling_keeps_a_3khz_tone() {
        let input = tone(3_000.0, 24_000, 1.0, 10_000.0);
        let out = resample_all(24_000, 8_000, &input);
        assert_eq!(out.len(), 8_000);
        // Skip the filter's start-up transient.
        let steady = &out[200..];
        let ratio = rms(steady) / rms(&input);
        assert!((0.94..1.06).contains(&ratio), "3 kHz gain {ratio}");
    }

    #[test]
    fn downsampling_attenuates_a_6khz_tone_by_30db() {
        // Without a low-pass, 6 kHz aliases to 2 kHz at 8 kHz at full level.
        let input = tone(6_000.0, 24_000, 1.0, 10_000.0);
        let out = resample_all(24_000, 8_000, &input);
        let steady = &out[200..];
        let attenuation_db = 20.0 * (rms(&input) / rms(steady).max(1e-9)).log10();
        assert!(attenuation_db >= 30.0, "only {attenuation_db:.1} dB");
    }

    #[test]
    fn every_rate_pair_keeps_1khz_and_rejects_images_and_aliases() {
        for from in SUPPORTED_SAMPLE_RATES {
            for to in SUPPORTED_SAMPLE_RATES {
                let input = tone(1_000.0, from, 1.5, 8_000.0);
                let out = resample_all(from, to, &input);
                let expected_len = (input.len() * to as usize).div_ceil(from as usize);
                assert_eq!(out.len(), expected_len, "{from}->{to}");
                let steady = &out[to as usize / 4..];
                let kept = amplitude_at(steady, to, 1_000.0);
                assert!(
                    (7_600.0..8_400.0).contains(&kept),
                    "{from}->{to}: 1 kHz at {kept}"
                );
                if to > from {
                    // The first image of 1 kHz sits at from - 1 kHz.
                    let image = amplitude_at(steady, to, f64::from(from) - 1_000.0);
                    assert!(image < 8_000.0 / 1_000.0, "{from}->{to}: image at {image}");
                }
            }
        }
        // An alias: 7 kHz at 16 kHz would land on 1 kHz at 8 kHz.
        let out = resample_all(16_000, 8_000, &tone(7_000.0, 16_000, 1.5, 8_000.0));
        let alias = amplitude_at(&out[2_000..], 8_000, 1_000.0);
        assert!(alias < 8.0, "alias at {alias}");
    }

    #[test]
    fn dc_is_preserved_exactly() {
        for from in SUPPORTED_SAMPLE_RATES {
            for to in SUPPORTED_SAMPLE_RATES {
                let out = resample_all(from, to, &vec![1_000i16; from as usize / 10]);
                let tail = &out[out.len() / 2..];
                assert!(tail.iter().all(|&s| (s - 1_000).abs() <= 1), "{from}->{to}");
            }
        }
    }

    #[test]
    fn streaming_matches_one_shot() {
        let input = noise(4_801);
        for from in SUPPORTED_SAMPLE_RATES {
            for to in SUPPORTED_SAMPLE_RATES {
                let whole = resample_all(from, to, &input);
                for chunk in [1, 7, 160, 333, 1_000] {
                    let mut r = Resampler::new(from, to).expect("supported");
                    let mut streamed = Vec::new();
                    for piece in input.chunks(chunk) {
                        r.process(piece, &mut streamed);
                    }
                    assert_eq!(streamed.len(), whole.len(), "{from}->{to} by {chunk}");
                    for (a, b) in streamed.iter().zip(&whole) {
                        assert!(
                            (i32::from(*a) - i32::from(*b)).abs() <= 1,
                            "{from}->{to} by {chunk}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn identity_copies_and_flush_drains_the_tail() {
        let input = noise(100);
        assert_eq!(resample_all(16_000, 16_000, &input), input);

        // A click at the very end must come out after flush.
        let mut r = Resampler::new(8_000, 24_000).expect("supported");
        assert!(
            r.delay_ms() > 0.0 && r.delay_ms() < 10.0,
            "{}",
            r.delay_ms()
        );
        let mut input = vec![0i16; 400];
        input.push(20_000);
        let mut out = Vec::new();
        r.process(&input, &mut out);
        let before = out.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        r.flush(&mut out);
        let after = out.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        assert!(before < 1_000, "click arrived before its delay: {before}");
        assert!(after > 5_000, "flush lost the click: {after}");

        // After flush the resampler starts over like a new one.
        let mut again = Vec::new();
        r.process(&input, &mut again);
        assert_eq!(again, resample_all(8_000, 24_000, &input));
    }

    // espeak-ng speaks at 22,050 Hz only; these pin the conversions the tts
    // crate relies on.

    const ESPEAK_RATE: u32 = 22_050;

    #[test]
    fn espeak_rate_to_every_wire_rate_keeps_tones_in_band() {
        for to in SUPPORTED_SAMPLE_RATES {
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
    fn espeak_rate_downsampling_rejects_aliases() {
        // 7 kHz at 22,050 Hz would fold to 1 kHz at 8 kHz; 9 kHz would fold
        // to 7 kHz at 16 kHz. Both must be at least 60 dB down.
        for (to, freq, alias) in [(8_000, 7_000.0, 1_000.0), (16_000, 9_000.0, 7_000.0)] {
            let out = resample_all(ESPEAK_RATE, to, &tone(freq, ESPEAK_RATE, 1.5, 8_000.0));
            let level = amplitude_at(&out[to as usize / 4..], to, alias);
            assert!(level < 8.0, "22050->{to}: {freq} Hz aliased at {level}");
        }
    }

    #[test]
    fn espeak_rate_upsampling_rejects_images() {
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
    fn espeak_rate_dc_is_preserved() {
        for to in SUPPORTED_SAMPLE_RATES {
            let out = resample_all(ESPEAK_RATE, to, &vec![1_000i16; 4_410]);
            let tail = &out[out.len() / 2..];
            assert!(tail.iter().all(|&s| (s - 1_000).abs() <= 1), "22050->{to}");
        }
    }

    #[test]
    fn espeak_rate_streaming_matches_one_shot_and_flush_drains() {
        let input = noise(5_001);
        for to in SUPPORTED_SAMPLE_RATES {
            let whole = resample_all(ESPEAK_RATE, to, &input);
            for chunk in [1, 7, 441, 2_000] {
                let mut r = Resampler::new(ESPEAK_RATE, to).expect("rates");
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
            let mut r = Resampler::new(ESPEAK_RATE, to).expect("rates");
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

            // After flush it starts over like a new one.
            let mut again = Vec::new();
            r.process(&input, &mut again);
            assert_eq!(again, resample_all(ESPEAK_RATE, to, &input), "22050->{to}");
        }
    }
}
