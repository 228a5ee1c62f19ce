//! The runtime's turn-taking state machine driven by a fuzzed sequence of
//! VAD edges, STT events, keypad presses, playback events and ticks, with a
//! fuzzed configuration.
//!
//! Input layout: 6 configuration bytes, then operations. Each operation is
//! one byte: the low nibble is the input kind, the high nibble how far time
//! moves first (see `step`); STT text and DTMF digits take further bytes.
//!
//! Checks (the module's documented rules): no panic; `BargeIn` is never
//! emitted twice without the machine leaving `Interrupted` in between
//! (`ResumeAgent`, `EndOfTurn` or another state); the counters equal the
//! actions emitted; false interruptions never outnumber interruptions;
//! `EndOfTurn` text is non-empty and trimmed and its speech end is not in the
//! future; the watchdog fires at most once per `max_turn_ms`; and after
//! silence and ticks the machine is never stuck in a caller turn or an
//! interruption.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voice_agent_runtime::turn::{TurnAction, TurnConfig, TurnInput, TurnMachine, TurnState};

/// Texts the recognizer might produce: backchannels, real words, noise, and
/// characters whose lower case is longer than themselves.
const TEXTS: &[&str] = &[
    "",
    "  ",
    "uh-huh",
    "Uh huh.",
    "Yeah, okay.",
    "mm-hmm right",
    "all right",
    "hello there",
    "I need help",
    "Um.",
    "stop",
    "la la",
    "yeah yeah yeah yeah yeah yeah yeah yeah yeah yeah yeah yeah yeah yeah yeah yeah yeah",
    "İ İ",
    "y'know",
    "got   it",
    "\u{2019}",
];

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    /// A recognizer text: one of `TEXTS`, or up to 31 raw bytes (lossy UTF-8).
    fn text(&mut self) -> String {
        let b = self.byte().unwrap_or(0);
        if b < 0xe0 {
            TEXTS[usize::from(b) % TEXTS.len()].to_owned()
        } else {
            String::from_utf8_lossy(self.take(usize::from(b & 0x1f))).into_owned()
        }
    }
}

fn config(b: &[u8; 6]) -> TurnConfig {
    let ms = |x: u8, unit: u64| u64::from(x) * unit;
    TurnConfig {
        endpointing_ms: ms(b[0], 10),
        min_barge_in_ms: ms(b[1], 5),
        false_interruption_ms: ms(b[2], 20),
        max_turn_ms: ms(b[3], 100),
        finalize_grace_ms: ms(b[4], 20),
        dtmf_timeout_ms: ms(b[5], 20),
        ..TurnConfig::default()
    }
}

#[derive(Default)]
struct Tally {
    barge_ins: u32,
    resumes: u32,
    ends: u32,
    left_interrupted: bool,
    last_finalize: Option<u64>,
}

impl Tally {
    fn check(&mut self, m: &TurnMachine, now: u64, out: &[TurnAction], input: &TurnInput) {
        let max_turn_ms = m.config().max_turn_ms;
        for action in out {
            match action {
                TurnAction::BargeIn => {
                    assert!(
                        self.left_interrupted,
                        "second BargeIn without leaving Interrupted, at {now} on {input:?}: {out:?}"
                    );
                    self.left_interrupted = false;
                    self.barge_ins += 1;
                }
                TurnAction::ResumeAgent => {
                    self.left_interrupted = true;
                    self.resumes += 1;
                }
                TurnAction::EndOfTurn {
                    text,
                    speech_ended_at_ms,
                    ..
                } => {
                    self.left_interrupted = true;
                    self.ends += 1;
                    assert!(!text.trim().is_empty(), "empty turn at {now}");
                    assert_eq!(text.trim(), text, "untrimmed turn at {now}");
                    assert!(
                        *speech_ended_at_ms <= now,
                        "speech end {speech_ended_at_ms} after {now}"
                    );
                }
                TurnAction::FinalizeStt => {
                    if let Some(previous) = self.last_finalize {
                        assert!(
                            now - previous >= max_turn_ms,
                            "watchdog fired at {previous} and {now}, max_turn_ms {max_turn_ms}"
                        );
                    }
                    self.last_finalize = Some(now);
                }
            }
        }
        if m.state() != TurnState::Interrupted {
            self.left_interrupted = true;
        }
        assert_eq!(m.interruptions(), self.barge_ins, "interruptions counter");
        assert_eq!(
            m.false_interruptions(),
            self.resumes,
            "false interruptions counter"
        );
        assert_eq!(m.turns(), self.ends, "turns counter");
        assert!(m.false_interruptions() <= m.interruptions());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((head, ops)) = data.split_first_chunk::<6>() else {
        return;
    };
    let cfg = config(head);
    let quiet_ms = cfg.max_turn_ms
        + cfg.finalize_grace_ms
        + cfg.endpointing_ms
        + cfg.false_interruption_ms
        + cfg.dtmf_timeout_ms;
    let mut m = TurnMachine::new(cfg);
    let mut bytes = Bytes(ops);
    let mut tally = Tally {
        left_interrupted: true,
        ..Tally::default()
    };
    let mut out = Vec::new();
    let mut now = 0u64;

    while let Some(op) = bytes.byte() {
        now += match op >> 4 {
            0 => 0,
            d @ 1..=12 => u64::from(d) * 5,
            13 => 250,
            14 => 1_000,
            _ => u64::from(bytes.byte().unwrap_or(0)) * 40,
        };
        let input = match op & 0x0f {
            1 => TurnInput::Vad { speaking: true },
            2 => TurnInput::Vad { speaking: false },
            3 => TurnInput::SttSpeechStarted,
            4 => TurnInput::SttInterim { text: bytes.text() },
            5 => TurnInput::SttFinal {
                text: bytes.text(),
                speech_final: false,
            },
            6 => TurnInput::SttFinal {
                text: bytes.text(),
                speech_final: true,
            },
            7 => TurnInput::SttUtteranceEnd,
            8 => TurnInput::Dtmf {
                digit: char::from(bytes.byte().unwrap_or(b'#')),
            },
            9 => TurnInput::PlaybackStarted,
            10 => TurnInput::PlaybackFinished,
            11 => TurnInput::ReplyCancelled,
            _ => TurnInput::Tick,
        };
        // A Tick at the same time first, as the voice loop may send one: it
        // runs the deadlines the input's own pre-poll would, so the state in
        // between is observed too.
        for input in [TurnInput::Tick, input] {
            out.clear();
            m.handle(now, input.clone(), &mut out);
            tally.check(&m, now, &out, &input);
        }
    }

    // Liveness: silence and ticks end every caller turn and interruption.
    out.clear();
    let silence = TurnInput::Vad { speaking: false };
    m.handle(now, silence.clone(), &mut out);
    tally.check(&m, now, &out, &silence);
    let until = now + quiet_ms + 100;
    while now < until {
        now += 20;
        out.clear();
        m.handle(now, TurnInput::Tick, &mut out);
        tally.check(&m, now, &out, &TurnInput::Tick);
    }
    assert!(
        matches!(
            m.state(),
            TurnState::Listening | TurnState::Thinking | TurnState::AgentSpeaking
        ),
        "wedged in {:?}",
        m.state()
    );
});
