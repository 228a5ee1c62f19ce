//! `voice-agent bench runtime`: the voice loop's hot path per 20 ms frame.
//!
//! It times what the loop does for every inbound frame (Media Streams JSON →
//! base64 → mu-law → VAD → turn machine) and every outbound frame (mu-law →
//! base64 → JSON), and reports how many calls one core could carry at that
//! cost (20 ms of audio per frame). Whole-call latency is measured by
//! `voice-agent demo` and the call tests.

use std::fmt;
use std::time::{Duration, Instant};

use voice_agent_proto::audio::{decode_mulaw_into, encode_mulaw};
use voice_agent_proto::mediastreams::Message;

use crate::turn::{TurnConfig, TurnInput, TurnMachine};
use crate::vad::{Vad, VadConfig};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Frames timed in the hot-path measurement.
    pub frames: usize,
}

/// Percentiles of a sample set, in nanoseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// From raw samples (sorted in place).
    pub fn of(samples: &mut [f64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Self {
            p50: at(0.5),
            p95: at(0.95),
            p99: at(0.99),
            mean: samples.iter().sum::<f64>() / samples.len() as f64,
        }
    }
}

/// The measurements.
#[derive(Debug, Clone)]
pub struct Report {
    /// Frames timed.
    pub frames: usize,
    /// Inbound frame cost, ns.
    pub inbound: Percentiles,
    /// Outbound frame cost, ns.
    pub outbound: Percentiles,
    /// Calls one core carries at the mean per-frame cost (in + out).
    pub calls_per_core: f64,
    /// What the numbers leave out.
    pub note: &'static str,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = |ns: f64| ns / 1000.0;
        writeln!(f, "runtime hot path, {} frames of 20 ms", self.frames)?;
        writeln!(
            f,
            "  inbound  (JSON → base64 → mu-law → VAD → turn): p50 {:.2} µs  p95 {:.2} µs  p99 {:.2} µs  mean {:.2} µs",
            us(self.inbound.p50),
            us(self.inbound.p95),
            us(self.inbound.p99),
            us(self.inbound.mean)
        )?;
        writeln!(
            f,
            "  outbound (mu-law → base64 → JSON):              p50 {:.2} µs  p95 {:.2} µs  p99 {:.2} µs  mean {:.2} µs",
            us(self.outbound.p50),
            us(self.outbound.p95),
            us(self.outbound.p99),
            us(self.outbound.mean)
        )?;
        writeln!(
            f,
            "  per-frame budget used: {:.4} % of 20 ms → {:.0} calls per core for the frame path",
            (self.inbound.mean + self.outbound.mean) / 20e6 * 100.0,
            self.calls_per_core
        )?;
        writeln!(f, "  {}", self.note)
    }
}

/// Runs the hot-path measurement.
pub fn run(options: &Options) -> Report {
    // A second of speech-like audio, cycled.
    let pcm: Vec<i16> = (0..8000)
        .map(|i| {
            let t = i as f32 / 8000.0;
            let envelope = if (i / 1600) % 2 == 0 { 9000.0 } else { 300.0 };
            (envelope * (2.0 * std::f32::consts::PI * 220.0 * t).sin()) as i16
        })
        .collect();
    let frames: Vec<String> = pcm
        .chunks(160)
        .map(|chunk| {
            let payload = voice_agent_proto::base64::encode(&encode_mulaw(chunk));
            Message::Media {
                sequence_number: Some("2".into()),
                media: voice_agent_proto::mediastreams::MediaPayload {
                    track: Some("inbound".into()),
                    chunk: Some("1".into()),
                    timestamp: Some("20".into()),
                    payload,
                },
                stream_sid: "MZ00000000000000000000000000000000".into(),
            }
            .to_json()
        })
        .collect();
    let mut vad = Vad::new(VadConfig::telephone(8000));
    let mut turn = TurnMachine::new(TurnConfig::default());
    let mut actions = Vec::new();
    let mut mulaw = Vec::with_capacity(160);
    let mut samples = Vec::with_capacity(160);
    let mut inbound = Vec::with_capacity(options.frames);
    for i in 0..options.frames {
        let text = &frames[i % frames.len()];
        let start = Instant::now();
        if let Ok(Message::Media { media, .. }) = Message::parse(text) {
            mulaw.clear();
            let _ = voice_agent_proto::base64::decode_into(&media.payload, &mut mulaw);
            samples.clear();
            decode_mulaw_into(&mulaw, &mut samples);
            if let Some(e) = vad.push(&samples) {
                actions.clear();
                turn.handle(
                    i as u64 * 20,
                    TurnInput::Vad {
                        speaking: e == crate::vad::VadEvent::SpeechStart,
                    },
                    &mut actions,
                );
            }
            actions.clear();
            turn.handle(i as u64 * 20, TurnInput::Tick, &mut actions);
        }
        inbound.push(start.elapsed().as_nanos() as f64);
    }
    let out_pcm: Vec<u8> = encode_mulaw(&pcm[..160]);
    let mut b64 = String::with_capacity(256);
    let mut outbound = Vec::with_capacity(options.frames);
    for _ in 0..options.frames {
        let start = Instant::now();
        b64.clear();
        voice_agent_proto::base64::encode_into(&out_pcm, &mut b64);
        let json =
            Message::outbound_media("MZ00000000000000000000000000000000", b64.clone()).to_json();
        std::hint::black_box(json);
        outbound.push(start.elapsed().as_nanos() as f64);
    }
    let inbound = Percentiles::of(&mut inbound);
    let outbound = Percentiles::of(&mut outbound);
    let per_frame = (inbound.mean + outbound.mean).max(1.0);
    Report {
        frames: options.frames,
        inbound,
        outbound,
        calls_per_core: Duration::from_millis(20).as_nanos() as f64 / per_frame,
        note: "the recognizer (its own thread or socket) and TTS are not part of this path",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!(p.p50, 51.0);
        assert_eq!(p.p99, 99.0);
        assert_eq!(p.mean, 50.5);
        assert_eq!(Percentiles::of(&mut []).p50, 0.0);
    }

    #[test]
    fn the_bench_runs_and_reports() {
        let report = run(&Options { frames: 200 });
        assert_eq!(report.frames, 200);
        assert!(report.calls_per_core > 0.0);
        assert!(report.to_string().contains("calls per core"));
    }
}
