//! Turn-taking: who holds the floor, when the caller's turn is over, and when
//! the caller barges in on the agent.
//!
//! [`TurnMachine`] is a pure, deterministic state machine: no clocks, no I/O,
//! no tasks. The voice loop feeds it what the VAD, the recognizer, the keypad
//! and the playback report ([`TurnInput`]), each with `now_ms` (monotonic
//! milliseconds since the call started), plus a [`TurnInput::Tick`] at least
//! every 20 ms, and acts on the [`TurnAction`]s it returns. Every rule below
//! is proven by a tick-by-tick test in this module.
//!
//! # States
//!
//! [`TurnState::Listening`] (nobody talks) → caller speech or words →
//! [`TurnState::CallerSpeaking`] → `EndOfTurn` → [`TurnState::Thinking`] (the
//! agent prepares its reply) → `PlaybackStarted` →
//! [`TurnState::AgentSpeaking`] → `PlaybackFinished` → `Listening`. A barge-in
//! from `Thinking` or `AgentSpeaking` leads to [`TurnState::Interrupted`],
//! which becomes a caller turn (`EndOfTurn`) or a false interruption
//! (`ResumeAgent`, back to `Thinking` until the resumed audio plays).
//!
//! # Ending the caller's turn (Listening, CallerSpeaking, Interrupted)
//!
//! - STT finals accumulate into the turn transcript, joined with single
//!   spaces. `SttFinal { speech_final: true }` or `SttUtteranceEnd` with a
//!   non-empty transcript ends the turn at once (`source: Stt`).
//! - After a final without `speech_final`, `endpointing_ms` of VAD silence
//!   (checked on every input, so on `Tick`) ends the turn
//!   (`source: Endpointing`). Silence counts from the VAD's last
//!   `speaking: false`, or from the final when the VAD reported no end.
//! - Words the recognizer only reported as an interim (no final yet) hold
//!   endpointing back, because their final is still coming; if it has not
//!   come after `endpointing_ms + finalize_grace_ms` of silence, the turn ends
//!   with the interim words included (a recognizer that never finalizes must
//!   not wedge the call). `SttUtteranceEnd` likewise includes a pending
//!   interim: the recognizer says no more words follow.
//! - An empty or whitespace-only transcript never ends a turn (noise). Sound
//!   that produced no words at all (no transcript, no interim, no digits)
//!   stops being a turn after `finalize_grace_ms` of silence: back to
//!   `Listening`, so that a later utterance gets a fresh watchdog.
//! - `speech_ended_at_ms` is when the VAD last reported `speaking: false` in
//!   this turn; `now_ms` when the VAD never reported an end or still reports
//!   speech. It is the start of the `eou` latency stage. For a turn ended by
//!   the keypad it is the time of the last key press.
//! - Every `EndOfTurn` takes everything the caller gave: the transcript and
//!   any keypad digits pressed meanwhile (see DTMF), and counts one turn.
//!   While digits are being typed, endpointing waits for the keypad rules.
//!
//! # After the turn
//!
//! - After `EndOfTurn` the state is `Thinking` until `PlaybackStarted`
//!   (→ `AgentSpeaking`); `PlaybackFinished` (from `AgentSpeaking`, or from
//!   `Thinking` when the reply had no audio) → `Listening`.
//! - `ReplyCancelled` in `Thinking` or `AgentSpeaking` (the reply failed or
//!   was dropped) → `Listening`. In `Interrupted` it changes nothing: the
//!   voice loop cancels in-flight work on `BargeIn` anyway, and whether the
//!   interrupted reply can be resumed is its business (see `ResumeAgent`).
//! - `PlaybackStarted` in `Listening`/`CallerSpeaking` (a greeting, or the
//!   agent speaking first) → `AgentSpeaking`; a partial caller turn is
//!   dropped and only speech from that moment on counts towards barge-in.
//!   It is ignored in `Interrupted` (audio of the cancelled reply).
//! - Speech that was already going on when the turn ended (VAD hangover,
//!   hold music) never counts towards barge-in: only a new VAD onset does.
//!
//! # Barge-in (Thinking, AgentSpeaking)
//!
//! - VAD speech lasting at least `min_barge_in_ms`, or an interim or final
//!   with at least one non-backchannel word, → `BargeIn` once, state
//!   `Interrupted`, `interruptions() += 1`. The new caller turn's watchdog
//!   counts from the onset of that speech.
//! - Shorter speech (a cough) does nothing. Backchannel-only or empty
//!   transcripts ("uh-huh", "yeah right") do nothing and are dropped.
//! - A DTMF digit also barges in.
//!
//! # Interrupted
//!
//! - Real (non-backchannel) words, from an interim or a final, or a keypad
//!   digit make it a caller turn, which ends like any turn. Backchannel
//!   finals are kept in the transcript ("yeah, so what about…" stays whole)
//!   but alone never end the turn.
//! - Once `false_interruption_ms` have passed since the barge-in, if no real
//!   words arrived and the VAD is silent (at the deadline or whenever the
//!   sound stops after it) → `ResumeAgent`, state `Thinking` until
//!   `PlaybackStarted` again, `false_interruptions() += 1`. If the voice
//!   loop has nothing left to resume, it answers with `ReplyCancelled` or
//!   `PlaybackFinished` (→ `Listening`).
//! - A barge-in during `Thinking` straight after an `EndOfTurn` (the reply
//!   was not yet audible: the caller was still talking) that becomes a real
//!   turn ends with the previous turn's text + " " + the new words.
//!
//! # Watchdog
//!
//! - A caller turn (`CallerSpeaking` or `Interrupted`) that has lasted
//!   `max_turn_ms` from its first speech without ending (endless speech, hold
//!   music) emits `FinalizeStt` once.
//! - The next final (or `SttUtteranceEnd`, or endpointing) then ends the turn
//!   with `source: Watchdog`. If no turn end came within `finalize_grace_ms`,
//!   the turn ends with what was transcribed (`Watchdog`, interim words
//!   included); if there is nothing at all, the machine goes back to
//!   `Listening` without `EndOfTurn` (`CallerSpeaking` with a fresh turn
//!   when the VAD still hears sound), which re-arms the watchdog for the next
//!   turn. So it fires at most once per turn and never wedges the call.
//!
//! # DTMF
//!
//! - Digits (`0`-`9`, `*`, `#`, `A`-`D`; lower-case `a`-`d` are taken as
//!   upper-case) are collected in any state; anything else is ignored.
//!   During `Thinking`/`AgentSpeaking` a digit barges in.
//! - `#`, or `dtmf_timeout_ms` without another digit, ends the turn with
//!   `text: "(the caller pressed 1234#)"` (digits as typed, `#` included) and
//!   `source: Dtmf`. Words spoken in the same turn come first:
//!   `"my account is (the caller pressed 1234#)"`. More than
//!   [`MAX_DTMF_DIGITS`] digits end the turn too (a stuck key must not grow a
//!   buffer forever).
//!
//! # Backchannels
//!
//! Matching is case-insensitive and punctuation-insensitive (hyphens,
//! apostrophes and spacing do not matter: "Uh-huh.", "uh huh" and "uhhuh"
//! are the same) and covers the whole utterance: it is a backchannel when it
//! can be split completely into configured words and phrases ("yeah, okay",
//! "mm-hmm right"). An utterance of more than [`MAX_BACKCHANNEL_WORDS`] words
//! is never a backchannel.

use std::fmt::Write as _;

/// Longest keypad sequence collected before the turn is ended anyway.
pub const MAX_DTMF_DIGITS: usize = 64;

/// Utterances with more words than this are never backchannels (and the
/// matcher's work per utterance stays bounded).
pub const MAX_BACKCHANNEL_WORDS: usize = 16;

/// The longest configured backchannel phrase considered, in words.
const MAX_PHRASE_WORDS: usize = 4;

/// Tuning of the turn-taking machine. All durations are in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnConfig {
    /// After an STT final without `speech_final`, caller silence (VAD) this
    /// long ends the turn.
    pub endpointing_ms: u64,
    /// Continuous caller speech during agent playback needed to barge in.
    pub min_barge_in_ms: u64,
    /// After a barge-in, if no real words arrive within this time and the
    /// caller is silent, the agent resumes.
    pub false_interruption_ms: u64,
    /// Watchdog: the longest caller turn before its end is forced.
    pub max_turn_ms: u64,
    /// After `FinalizeStt`, how long to wait for the final before ending the
    /// turn with what we have. Also how long a recognizer may lag the VAD.
    pub finalize_grace_ms: u64,
    /// DTMF digits are collected until `#` or this much time without a digit.
    pub dtmf_timeout_ms: u64,
    /// Words and phrases that alone do not make a turn while the agent speaks.
    pub backchannels: Vec<String>,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            endpointing_ms: 300,
            min_barge_in_ms: 250,
            false_interruption_ms: 1_500,
            max_turn_ms: 30_000,
            finalize_grace_ms: 1_500,
            dtmf_timeout_ms: 2_000,
            backchannels: DEFAULT_BACKCHANNELS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }
}

/// The default backchannels: acknowledgements and fillers that mean "go on",
/// not "stop". Answers ("yes", "no") and confusion ("huh?", "what?") are
/// deliberately absent: they should stop the agent.
pub const DEFAULT_BACKCHANNELS: &[&str] = &[
    "uh-huh",
    "mm-hmm",
    "mhm",
    "mm",
    "hmm",
    "uh",
    "um",
    "er",
    "ah",
    "oh",
    "yeah",
    "yep",
    "yup",
    "okay",
    "ok",
    "right",
    "alright",
    "all right",
    "sure",
    "i see",
    "got it",
    "cool",
];

/// Something the voice loop observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnInput {
    /// The VAD's speech state changed (edges only; repeats are ignored).
    Vad {
        /// Whether the caller is speaking now.
        speaking: bool,
    },
    /// The recognizer detected the start of speech.
    SttSpeechStarted,
    /// A partial hypothesis of the current segment.
    SttInterim {
        /// The hypothesis so far.
        text: String,
    },
    /// One final segment; segments of an utterance are concatenated with
    /// spaces.
    SttFinal {
        /// The segment's text (may be empty).
        text: String,
        /// The recognizer decided the utterance is complete.
        speech_final: bool,
    },
    /// The recognizer saw no words for a while: the utterance is over.
    SttUtteranceEnd,
    /// A keypad press.
    Dtmf {
        /// The key: `0`-`9`, `*`, `#`, `A`-`D`.
        digit: char,
    },
    /// The agent's first audio of a reply reached the caller.
    PlaybackStarted,
    /// The agent's reply finished playing (all audio sent and played).
    PlaybackFinished,
    /// The voice loop dropped the reply (after a barge-in, or an error).
    ReplyCancelled,
    /// Time passes; called at least every 20 ms.
    Tick,
}

/// What the voice loop must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnAction {
    /// The caller's turn is complete: ask the agent with `text`.
    EndOfTurn {
        /// What the caller said (or typed), trimmed and non-empty.
        text: String,
        /// When the caller's speech ended: the start of the `eou` stage.
        speech_ended_at_ms: u64,
        /// What decided the end of the turn.
        source: EndOfTurnSource,
    },
    /// Caller speech over agent audio: stop playback at once (Media Streams
    /// `clear`), cancel the in-flight agent/TTS requests. Counted.
    BargeIn,
    /// The last barge-in was a false interruption (cough, backchannel, no
    /// words): continue the interrupted reply from where it stopped.
    ResumeAgent,
    /// Watchdog: ask the recognizer to finalize the current utterance now.
    FinalizeStt,
}

/// What decided the end of a caller turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndOfTurnSource {
    /// The recognizer: `speech_final` or `UtteranceEnd`.
    Stt,
    /// Our own endpointing: VAD silence after a final.
    Endpointing,
    /// The max-turn watchdog forced the end.
    Watchdog,
    /// The keypad: `#` or the digit timeout.
    Dtmf,
}

/// Who holds the floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnState {
    /// Nobody is talking; waiting for the caller.
    Listening,
    /// A caller turn is in progress.
    CallerSpeaking,
    /// The caller's turn ended; the agent's reply is being prepared (or a
    /// resumed reply is not audible yet).
    Thinking,
    /// The agent's reply is playing.
    AgentSpeaking,
    /// The caller barged in; a caller turn or a false interruption.
    Interrupted,
}

/// The watchdog's progress within one caller turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watchdog {
    /// Not fired for this turn.
    Armed,
    /// `FinalizeStt` was emitted at `since_ms`; waiting for the final.
    Finalizing { since_ms: u64 },
}

/// What is known about the caller turn in progress.
#[derive(Debug, Clone)]
struct Turn {
    /// Finals so far, joined with single spaces.
    transcript: String,
    /// In `Interrupted`: the transcript has a non-backchannel word.
    transcript_real: bool,
    /// The latest interim hypothesis not yet covered by a final.
    interim: String,
    /// `interim` holds words whose final has not arrived.
    interim_pending: bool,
    /// In `Interrupted`: the pending interim has a non-backchannel word.
    interim_real: bool,
    last_interim_ms: u64,
    last_final_ms: u64,
    /// A final without `speech_final` arrived; endpointing may end the turn.
    endpoint_pending: bool,
    /// First speech of the turn (the watchdog's origin).
    started_ms: Option<u64>,
    /// The VAD's last `speaking: false` in this turn.
    speech_ended_ms: Option<u64>,
    /// Last sign of the caller in this turn (edges, STT events, keys).
    last_activity_ms: u64,
    watchdog: Watchdog,
}

impl Turn {
    fn new() -> Self {
        Self {
            transcript: String::new(),
            transcript_real: false,
            interim: String::new(),
            interim_pending: false,
            interim_real: false,
            last_interim_ms: 0,
            last_final_ms: 0,
            endpoint_pending: false,
            started_ms: None,
            speech_ended_ms: None,
            last_activity_ms: 0,
            watchdog: Watchdog::Armed,
        }
    }

    /// Forgets the turn but keeps the buffers' capacity (no allocation on
    /// the next turn).
    fn reset(&mut self) {
        self.transcript.clear();
        self.transcript_real = false;
        self.interim.clear();
        self.interim_pending = false;
        self.interim_real = false;
        self.last_interim_ms = 0;
        self.last_final_ms = 0;
        self.endpoint_pending = false;
        self.started_ms = None;
        self.speech_ended_ms = None;
        self.last_activity_ms = 0;
        self.watchdog = Watchdog::Armed;
    }

    fn mark_speech(&mut self, now_ms: u64) {
        self.started_ms.get_or_insert(now_ms);
        self.last_activity_ms = now_ms;
    }
}

/// The backchannel matcher: configured entries normalized once, plus scratch
/// buffers so that matching an utterance does not allocate once warm.
#[derive(Debug, Clone)]
struct Backchannels {
    /// Each entry lower-cased with separators removed ("uh-huh" → "uhhuh").
    entries: Vec<String>,
    scratch: String,
    /// Byte ranges of the words in `scratch`.
    words: Vec<(usize, usize)>,
}

impl Backchannels {
    fn new(configured: &[String]) -> Self {
        let mut this = Self {
            entries: Vec::with_capacity(configured.len()),
            scratch: String::new(),
            words: Vec::new(),
        };
        for entry in configured {
            this.tokenize(entry);
            // Entries are compared to runs of consecutive utterance words
            // concatenated, so the entry's own word breaks are irrelevant.
            let squashed: String = this
                .words
                .iter()
                .filter_map(|&(a, b)| this.scratch.get(a..b))
                .collect();
            if !squashed.is_empty() && !this.entries.contains(&squashed) {
                this.entries.push(squashed);
            }
        }
        this
    }

    /// Lower-cases `text` into `scratch` and records its words: alphanumeric
    /// runs, with apostrophes dropped ("y'know" is one word) and every other
    /// character a separator ("uh-huh" is two).
    fn tokenize(&mut self, text: &str) {
        self.scratch.clear();
        self.words.clear();
        let mut start: Option<usize> = None;
        for c in text.chars() {
            if c.is_alphanumeric() {
                if start.is_none() {
                    start = Some(self.scratch.len());
                }
                for lower in c.to_lowercase() {
                    self.scratch.push(lower);
                }
            } else if c != '\'' && c != '\u{2019}' {
                // Apostrophes are dropped without breaking the word.
                if let Some(s) = start.take() {
                    self.words.push((s, self.scratch.len()));
                }
            }
        }
        if let Some(s) = start {
            self.words.push((s, self.scratch.len()));
        }
    }

    /// Whether `text` has at least one word and is not made entirely of
    /// backchannels.
    fn has_real_words(&mut self, text: &str) -> bool {
        self.tokenize(text);
        let n = self.words.len();
        if n == 0 {
            return false;
        }
        if n > MAX_BACKCHANNEL_WORDS {
            return true;
        }
        // covered[j]: the first j words split completely into entries.
        let mut covered = [false; MAX_BACKCHANNEL_WORDS + 1];
        covered[0] = true;
        for j in 1..=n {
            let lowest = j.saturating_sub(MAX_PHRASE_WORDS);
            covered[j] = (lowest..j).any(|i| covered[i] && self.span_is_entry(i, j));
        }
        !covered[n]
    }

    /// Whether words `i..j` concatenated equal one entry.
    fn span_is_entry(&self, i: usize, j: usize) -> bool {
        let Some(span) = self.words.get(i..j) else {
            return false;
        };
        let len: usize = span.iter().map(|&(a, b)| b - a).sum();
        self.entries.iter().any(|entry| {
            entry.len() == len
                && entry.bytes().eq(span
                    .iter()
                    .flat_map(|&(a, b)| self.scratch.as_bytes().get(a..b).unwrap_or_default())
                    .copied())
        })
    }
}

/// The turn-taking state machine of one call. See the module documentation
/// for the rules.
#[derive(Debug, Clone)]
pub struct TurnMachine {
    config: TurnConfig,
    backchannels: Backchannels,
    state: TurnState,
    turn: Turn,
    vad_speaking: bool,
    /// Onset of the VAD speech that counts towards a barge-in: set on a VAD
    /// onset in `Thinking`/`AgentSpeaking`, cleared when the speech ends or
    /// a turn ends (speech already going on then is not a barge-in).
    barge_run_start_ms: Option<u64>,
    barge_in_at_ms: u64,
    /// `Thinking` straight after a spoken `EndOfTurn`: the reply is not
    /// audible yet, so a barge-in means the caller had not finished.
    thinking_fresh: bool,
    /// `Interrupted` from a fresh `Thinking`: the turn's text is merged with
    /// the previous one.
    merge_with_previous: bool,
    previous_text: String,
    dtmf: String,
    dtmf_last_ms: u64,
    interruptions: u32,
    false_interruptions: u32,
    turns: u32,
}

impl TurnMachine {
    /// A machine for a new call, in `Listening`.
    pub fn new(config: TurnConfig) -> Self {
        let backchannels = Backchannels::new(&config.backchannels);
        Self {
            config,
            backchannels,
            state: TurnState::Listening,
            turn: Turn::new(),
            vad_speaking: false,
            barge_run_start_ms: None,
            barge_in_at_ms: 0,
            thinking_fresh: false,
            merge_with_previous: false,
            previous_text: String::new(),
            dtmf: String::new(),
            dtmf_last_ms: 0,
            interruptions: 0,
            false_interruptions: 0,
            turns: 0,
        }
    }

    /// Feeds one input; pushes resulting actions into `out` (cleared by the
    /// caller; no allocation on the common path).
    pub fn handle(&mut self, now_ms: u64, input: TurnInput, out: &mut Vec<TurnAction>) {
        // Deadlines that passed before this input first: the input happened
        // after them, whatever the Tick cadence was.
        self.poll(now_ms, out);
        match input {
            TurnInput::Vad { speaking } => self.on_vad(now_ms, speaking),
            TurnInput::SttSpeechStarted => {
                if self.in_caller_turn_or_listening() {
                    self.enter_caller_turn();
                    self.turn.mark_speech(now_ms);
                }
            }
            TurnInput::SttInterim { text } => self.on_interim(now_ms, &text, out),
            TurnInput::SttFinal { text, speech_final } => {
                self.on_final(now_ms, &text, speech_final, out);
            }
            TurnInput::SttUtteranceEnd => {
                if self.in_caller_turn_or_listening() {
                    let source = self.source(EndOfTurnSource::Stt);
                    if !self.end_turn(now_ms, source, true, out) {
                        // Nothing that makes a turn (noise, or only
                        // backchannels after a barge-in): the utterance is
                        // over, so its interim is no longer pending.
                        self.turn.interim_pending = false;
                        self.turn.interim_real = false;
                    }
                }
            }
            TurnInput::Dtmf { digit } => self.on_dtmf(now_ms, digit, out),
            TurnInput::PlaybackStarted => match self.state {
                TurnState::Thinking => {
                    self.state = TurnState::AgentSpeaking;
                    self.thinking_fresh = false;
                }
                TurnState::Listening | TurnState::CallerSpeaking => {
                    self.turn.reset();
                    self.dtmf.clear();
                    self.state = TurnState::AgentSpeaking;
                    self.thinking_fresh = false;
                    self.barge_run_start_ms = self.vad_speaking.then_some(now_ms);
                }
                TurnState::AgentSpeaking | TurnState::Interrupted => {}
            },
            TurnInput::PlaybackFinished | TurnInput::ReplyCancelled => {
                if matches!(self.state, TurnState::Thinking | TurnState::AgentSpeaking) {
                    self.back_to_listening(now_ms);
                }
            }
            TurnInput::Tick => {}
        }
        self.poll(now_ms, out);
    }

    /// Who holds the floor now.
    pub fn state(&self) -> TurnState {
        self.state
    }

    /// Barge-ins so far.
    pub fn interruptions(&self) -> u32 {
        self.interruptions
    }

    /// Barge-ins that were followed by `ResumeAgent`.
    pub fn false_interruptions(&self) -> u32 {
        self.false_interruptions
    }

    /// `EndOfTurn`s emitted so far.
    pub fn turns(&self) -> u32 {
        self.turns
    }

    /// The configuration the machine runs with.
    pub fn config(&self) -> &TurnConfig {
        &self.config
    }

    /// Whether `text` has a word that is not a configured backchannel (what
    /// decides a barge-in by words).
    pub fn is_real_words(&mut self, text: &str) -> bool {
        self.backchannels.has_real_words(text)
    }

    fn in_caller_turn_or_listening(&self) -> bool {
        matches!(
            self.state,
            TurnState::Listening | TurnState::CallerSpeaking | TurnState::Interrupted
        )
    }

    fn enter_caller_turn(&mut self) {
        if self.state == TurnState::Listening {
            self.state = TurnState::CallerSpeaking;
        }
    }

    fn on_vad(&mut self, now_ms: u64, speaking: bool) {
        if speaking == self.vad_speaking {
            return;
        }
        self.vad_speaking = speaking;
        if speaking {
            match self.state {
                TurnState::Thinking | TurnState::AgentSpeaking => {
                    self.barge_run_start_ms = Some(now_ms);
                }
                TurnState::Listening | TurnState::CallerSpeaking | TurnState::Interrupted => {
                    self.enter_caller_turn();
                    self.turn.mark_speech(now_ms);
                }
            }
        } else {
            self.barge_run_start_ms = None;
            if self.in_caller_turn_or_listening() {
                self.turn.speech_ended_ms = Some(now_ms);
                self.turn.last_activity_ms = now_ms;
            }
        }
    }

    fn on_interim(&mut self, now_ms: u64, text: &str, out: &mut Vec<TurnAction>) {
        let text = text.trim();
        match self.state {
            TurnState::Thinking | TurnState::AgentSpeaking => {
                if !self.backchannels.has_real_words(text) {
                    return;
                }
                self.barge_in(now_ms, out);
            }
            TurnState::Listening | TurnState::CallerSpeaking | TurnState::Interrupted => {
                if text.is_empty() {
                    return;
                }
                self.enter_caller_turn();
            }
        }
        self.turn.mark_speech(now_ms);
        self.turn.interim.clear();
        self.turn.interim.push_str(text);
        self.turn.interim_pending = true;
        self.turn.last_interim_ms = now_ms;
        // Only `Interrupted` needs to know whether the words are real.
        self.turn.interim_real =
            self.state == TurnState::Interrupted && self.backchannels.has_real_words(text);
    }

    fn on_final(&mut self, now_ms: u64, text: &str, speech_final: bool, out: &mut Vec<TurnAction>) {
        let text = text.trim();
        if matches!(self.state, TurnState::Thinking | TurnState::AgentSpeaking) {
            if !self.backchannels.has_real_words(text) {
                // Backchannel or noise over the agent: nothing.
                return;
            }
            self.barge_in(now_ms, out);
        }
        // A final covers the audio of any earlier interim.
        self.turn.interim_pending = false;
        self.turn.interim_real = false;
        if !text.is_empty() {
            self.enter_caller_turn();
            self.turn.mark_speech(now_ms);
            if !self.turn.transcript.is_empty() {
                self.turn.transcript.push(' ');
            }
            self.turn.transcript.push_str(text);
            self.turn.last_final_ms = now_ms;
            self.turn.endpoint_pending = true;
            if self.state == TurnState::Interrupted {
                // The whole transcript, not the segment: "uh" + "huh" is one
                // backchannel.
                self.turn.transcript_real = self.backchannels.has_real_words(&self.turn.transcript);
            }
        }
        if matches!(self.turn.watchdog, Watchdog::Finalizing { .. }) {
            // The final we asked for (or any final after it) ends the turn.
            self.end_turn(now_ms, EndOfTurnSource::Watchdog, false, out);
        } else if speech_final {
            self.end_turn(now_ms, EndOfTurnSource::Stt, false, out);
        }
    }

    fn on_dtmf(&mut self, now_ms: u64, digit: char, out: &mut Vec<TurnAction>) {
        let digit = match digit {
            '0'..='9' | '*' | '#' | 'A'..='D' => digit,
            'a'..='d' => digit.to_ascii_uppercase(),
            _ => return,
        };
        if matches!(self.state, TurnState::Thinking | TurnState::AgentSpeaking) {
            self.barge_in(now_ms, out);
        }
        self.enter_caller_turn();
        self.dtmf.push(digit);
        self.dtmf_last_ms = now_ms;
        self.turn.last_activity_ms = now_ms;
        if digit == '#' || self.dtmf.len() >= MAX_DTMF_DIGITS {
            self.end_turn(now_ms, EndOfTurnSource::Dtmf, true, out);
        }
    }

    /// Checks every deadline against `now_ms`. Idempotent: calling it twice
    /// at the same time emits nothing the second time.
    fn poll(&mut self, now_ms: u64, out: &mut Vec<TurnAction>) {
        let cfg_endpointing = self.config.endpointing_ms;
        let cfg_grace = self.config.finalize_grace_ms;

        // Barge-in by sustained speech over the agent.
        if matches!(self.state, TurnState::Thinking | TurnState::AgentSpeaking)
            && self.vad_speaking
            && let Some(start) = self.barge_run_start_ms
            && now_ms.saturating_sub(start) >= self.config.min_barge_in_ms
        {
            self.barge_in(now_ms, out);
        }

        // False interruption: silence and no real words since the barge-in.
        if self.state == TurnState::Interrupted
            && !self.vad_speaking
            && !self.has_real_input()
            && now_ms.saturating_sub(self.barge_in_at_ms) >= self.config.false_interruption_ms
        {
            out.push(TurnAction::ResumeAgent);
            self.false_interruptions += 1;
            self.state = TurnState::Thinking;
            self.thinking_fresh = false;
            self.merge_with_previous = false;
            self.turn.reset();
            self.barge_run_start_ms = None;
        }

        // Endpointing.
        // Keys being typed hold it back: the keypad rules end that turn.
        if matches!(
            self.state,
            TurnState::CallerSpeaking | TurnState::Interrupted
        ) && !self.vad_speaking
            && self.dtmf.is_empty()
        {
            if self.turn.interim_pending {
                let since = self
                    .turn
                    .speech_ended_ms
                    .unwrap_or(0)
                    .max(self.turn.last_interim_ms);
                if now_ms.saturating_sub(since) >= cfg_endpointing.saturating_add(cfg_grace) {
                    let source = self.source(EndOfTurnSource::Endpointing);
                    if !self.end_turn(now_ms, source, true, out) {
                        self.turn.interim_pending = false;
                        self.turn.interim_real = false;
                    }
                }
            } else if self.turn.endpoint_pending {
                let since = self.turn.speech_ended_ms.unwrap_or(self.turn.last_final_ms);
                if now_ms.saturating_sub(since) >= cfg_endpointing {
                    let source = self.source(EndOfTurnSource::Endpointing);
                    if !self.end_turn(now_ms, source, false, out) {
                        // Backchannels only (Interrupted): not a turn; the
                        // false-interruption rule decides.
                        self.turn.endpoint_pending = false;
                    }
                }
            }
        }

        // Watchdog.
        if matches!(
            self.state,
            TurnState::CallerSpeaking | TurnState::Interrupted
        ) {
            match self.turn.watchdog {
                Watchdog::Armed => {
                    if let Some(started) = self.turn.started_ms
                        && now_ms.saturating_sub(started) >= self.config.max_turn_ms
                    {
                        out.push(TurnAction::FinalizeStt);
                        self.turn.watchdog = Watchdog::Finalizing { since_ms: now_ms };
                    }
                }
                Watchdog::Finalizing { since_ms } => {
                    if now_ms.saturating_sub(since_ms) >= cfg_grace
                        && !self.end_turn(now_ms, EndOfTurnSource::Watchdog, true, out)
                    {
                        self.back_to_listening(now_ms);
                    }
                }
            }
        }

        // Sound that never became words: not a turn.
        if self.state == TurnState::CallerSpeaking
            && !self.vad_speaking
            && self.turn.transcript.is_empty()
            && !self.turn.interim_pending
            && self.dtmf.is_empty()
            && self.turn.watchdog == Watchdog::Armed
            && now_ms.saturating_sub(self.turn.last_activity_ms) >= cfg_grace
        {
            self.back_to_listening(now_ms);
        }

        // Keypad timeout.
        if !self.dtmf.is_empty()
            && now_ms.saturating_sub(self.dtmf_last_ms) >= self.config.dtmf_timeout_ms
        {
            self.end_turn(now_ms, EndOfTurnSource::Dtmf, true, out);
        }
    }

    /// In `Interrupted`: whether the caller has given anything that makes
    /// this a turn rather than a false interruption.
    fn has_real_input(&self) -> bool {
        self.turn.transcript_real
            || (self.turn.interim_pending && self.turn.interim_real)
            || !self.dtmf.is_empty()
    }

    /// A natural end becomes a watchdog end once the watchdog has fired.
    fn source(&self, natural: EndOfTurnSource) -> EndOfTurnSource {
        if matches!(self.turn.watchdog, Watchdog::Finalizing { .. }) {
            EndOfTurnSource::Watchdog
        } else {
            natural
        }
    }

    fn barge_in(&mut self, now_ms: u64, out: &mut Vec<TurnAction>) {
        out.push(TurnAction::BargeIn);
        self.interruptions += 1;
        self.merge_with_previous = self.state == TurnState::Thinking && self.thinking_fresh;
        self.thinking_fresh = false;
        self.state = TurnState::Interrupted;
        self.barge_in_at_ms = now_ms;
        self.turn.reset();
        // The caller's turn began when the speech that barged in began.
        let started = match self.barge_run_start_ms {
            Some(start) if self.vad_speaking => start,
            _ => now_ms,
        };
        self.turn.started_ms = Some(started);
        self.turn.last_activity_ms = now_ms;
        self.barge_run_start_ms = None;
    }

    /// Ends the caller's turn if it holds anything; returns whether it did.
    fn end_turn(
        &mut self,
        now_ms: u64,
        source: EndOfTurnSource,
        include_interim: bool,
        out: &mut Vec<TurnAction>,
    ) -> bool {
        if !self.in_caller_turn_or_listening() {
            return false;
        }
        let interim = include_interim && self.turn.interim_pending;
        let has_speech =
            !self.turn.transcript.is_empty() || (interim && !self.turn.interim.is_empty());
        let qualifies = if self.state == TurnState::Interrupted {
            self.turn.transcript_real
                || (interim && self.turn.interim_real)
                || !self.dtmf.is_empty()
        } else {
            has_speech || !self.dtmf.is_empty()
        };
        if !qualifies {
            return false;
        }

        let mut text = String::with_capacity(
            self.previous_text.len() + self.turn.transcript.len() + self.turn.interim.len() + 40,
        );
        if self.merge_with_previous {
            text.push_str(&self.previous_text);
        }
        for part in [
            self.turn.transcript.as_str(),
            if interim {
                self.turn.interim.as_str()
            } else {
                ""
            },
        ] {
            if !part.is_empty() {
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push_str(part);
            }
        }
        if !self.dtmf.is_empty() {
            if !text.is_empty() {
                text.push(' ');
            }
            // Writing to a String cannot fail.
            let _ = write!(text, "(the caller pressed {})", self.dtmf);
        }

        let speech_ended_at_ms = if source == EndOfTurnSource::Dtmf {
            self.dtmf_last_ms
        } else if self.vad_speaking {
            now_ms
        } else {
            self.turn.speech_ended_ms.unwrap_or(now_ms)
        };

        self.previous_text.clear();
        self.previous_text.push_str(&text);
        out.push(TurnAction::EndOfTurn {
            text,
            speech_ended_at_ms,
            source,
        });
        self.turns += 1;
        self.state = TurnState::Thinking;
        self.thinking_fresh = source != EndOfTurnSource::Dtmf;
        self.merge_with_previous = false;
        self.turn.reset();
        self.dtmf.clear();
        // Speech still going on now is part of this turn, not a barge-in.
        self.barge_run_start_ms = None;
        true
    }

    /// Back to `Listening` without a turn; `CallerSpeaking` with a fresh
    /// turn when the VAD still hears sound, so the watchdog keeps guarding.
    fn back_to_listening(&mut self, now_ms: u64) {
        self.turn.reset();
        self.dtmf.clear();
        self.thinking_fresh = false;
        self.merge_with_previous = false;
        self.barge_run_start_ms = None;
        if self.vad_speaking {
            self.state = TurnState::CallerSpeaking;
            self.turn.mark_speech(now_ms);
        } else {
            self.state = TurnState::Listening;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EndOfTurnSource::{Dtmf, Endpointing, Stt, Watchdog as WatchdogSource};
    use TurnAction::{BargeIn, FinalizeStt, ResumeAgent};

    /// Drives a machine tick by tick (every 20 ms) and records when each
    /// action came out.
    struct Sim {
        machine: TurnMachine,
        now: u64,
        out: Vec<TurnAction>,
    }

    impl Sim {
        fn new() -> Self {
            Self::with(TurnConfig::default())
        }

        fn with(config: TurnConfig) -> Self {
            Self {
                machine: TurnMachine::new(config),
                now: 0,
                out: Vec::new(),
            }
        }

        /// Ticks every 20 ms up to (not including) `t`, then feeds `input`
        /// at `t`. Returns every action with its time.
        fn at(&mut self, t: u64, input: TurnInput) -> Vec<(u64, TurnAction)> {
            let mut seen = self.tick_until(t);
            self.feed(t, input, &mut seen);
            seen
        }

        /// Ticks every 20 ms from the last time up to `t` inclusive.
        fn tick_to(&mut self, t: u64) -> Vec<(u64, TurnAction)> {
            let mut seen = self.tick_until(t);
            self.feed(t, TurnInput::Tick, &mut seen);
            seen
        }

        fn tick_until(&mut self, t: u64) -> Vec<(u64, TurnAction)> {
            assert!(t >= self.now, "time runs forward");
            let mut seen = Vec::new();
            let mut next = self.now + 20;
            while next < t {
                self.feed(next, TurnInput::Tick, &mut seen);
                next += 20;
            }
            seen
        }

        fn feed(&mut self, t: u64, input: TurnInput, seen: &mut Vec<(u64, TurnAction)>) {
            self.now = t;
            self.out.clear();
            self.machine.handle(t, input, &mut self.out);
            seen.extend(self.out.drain(..).map(|a| (t, a)));
        }

        fn state(&self) -> TurnState {
            self.machine.state()
        }

        /// Plays a whole caller turn ending in `speech_final` at `t` and the
        /// agent's reply starting at `t + 500`: the machine ends in
        /// AgentSpeaking.
        fn reach_agent_speaking(&mut self, t: u64) {
            let seen = self.at(t, final_("What are your hours", true));
            assert!(matches!(
                seen.last(),
                Some((_, TurnAction::EndOfTurn { .. }))
            ));
            assert!(self.at(t + 500, TurnInput::PlaybackStarted).is_empty());
            assert_eq!(self.state(), TurnState::AgentSpeaking);
        }
    }

    fn vad(speaking: bool) -> TurnInput {
        TurnInput::Vad { speaking }
    }

    fn interim(text: &str) -> TurnInput {
        TurnInput::SttInterim {
            text: text.to_owned(),
        }
    }

    fn final_(text: &str, speech_final: bool) -> TurnInput {
        TurnInput::SttFinal {
            text: text.to_owned(),
            speech_final,
        }
    }

    fn dtmf(digit: char) -> TurnInput {
        TurnInput::Dtmf { digit }
    }

    fn eot(text: &str, speech_ended_at_ms: u64, source: EndOfTurnSource) -> TurnAction {
        TurnAction::EndOfTurn {
            text: text.to_owned(),
            speech_ended_at_ms,
            source,
        }
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = TurnConfig::default();
        assert_eq!(
            (
                c.endpointing_ms,
                c.min_barge_in_ms,
                c.false_interruption_ms,
                c.max_turn_ms,
                c.finalize_grace_ms,
                c.dtmf_timeout_ms
            ),
            (300, 250, 1_500, 30_000, 1_500, 2_000)
        );
        for word in [
            "uh-huh", "mm-hmm", "yeah", "okay", "right", "uh", "um", "hmm",
        ] {
            assert!(c.backchannels.iter().any(|b| b == word), "{word}");
        }
    }

    // ---- Ending the caller's turn ----

    #[test]
    fn speech_final_ends_the_turn_at_once() {
        let mut sim = Sim::new();
        assert!(sim.at(100, vad(true)).is_empty());
        assert_eq!(sim.state(), TurnState::CallerSpeaking);
        assert!(sim.at(400, interim("what are")).is_empty());
        assert!(sim.at(1_000, vad(false)).is_empty());
        assert_eq!(
            sim.at(1_100, final_("What are your hours?", true)),
            vec![(1_100, eot("What are your hours?", 1_000, Stt))]
        );
        assert_eq!(sim.state(), TurnState::Thinking);
        assert_eq!(sim.machine.turns(), 1);
    }

    #[test]
    fn finals_are_concatenated_with_spaces() {
        let mut sim = Sim::new();
        sim.at(0, vad(true));
        assert!(sim.at(500, final_(" I'd like ", false)).is_empty());
        assert!(sim.at(700, final_("", false)).is_empty());
        assert!(sim.at(900, final_("to book a table.  ", false)).is_empty());
        sim.at(1_000, vad(false));
        assert_eq!(
            sim.at(1_050, final_("For two.", true)),
            vec![(1_050, eot("I'd like to book a table. For two.", 1_000, Stt))]
        );
    }

    #[test]
    fn an_empty_speech_final_ends_the_turn_with_the_finals_so_far() {
        // Deepgram sends the endpointing decision as an empty final.
        let mut sim = Sim::new();
        sim.at(0, vad(true));
        sim.at(600, final_("Hello there", false));
        sim.at(700, vad(false));
        assert_eq!(
            sim.at(720, final_("", true)),
            vec![(720, eot("Hello there", 700, Stt))]
        );
    }

    #[test]
    fn utterance_end_ends_the_turn() {
        let mut sim = Sim::new();
        sim.at(0, vad(true));
        sim.at(800, final_("I lost my card", false));
        // The VAD still reports speech: the end of speech is now.
        assert_eq!(
            sim.at(900, TurnInput::SttUtteranceEnd),
            vec![(900, eot("I lost my card", 900, Stt))]
        );
    }

    #[test]
    fn speech_ended_at_is_now_without_a_vad_end() {
        let mut sim = Sim::new();
        sim.at(300, interim("yes"));
        assert_eq!(
            sim.at(700, final_("Yes please", true)),
            vec![(700, eot("Yes please", 700, Stt))]
        );
    }

    #[test]
    fn speech_ended_at_is_the_last_vad_end_of_the_turn() {
        let mut sim = Sim::new();
        sim.at(0, vad(true));
        sim.at(1_000, vad(false));
        sim.at(1_200, vad(true));
        sim.at(2_000, vad(false));
        assert_eq!(
            sim.at(2_150, final_("Book it for Friday", true)),
            vec![(2_150, eot("Book it for Friday", 2_000, Stt))]
        );
    }

    #[test]
    fn endpointing_ends_the_turn_after_vad_silence() {
        let mut sim = Sim::new();
        sim.at(0, vad(true));
        assert!(sim.at(600, final_("hello there", false)).is_empty());
        // Speech goes on: no endpointing while the VAD hears speech.
        assert!(sim.at(1_000, vad(false)).is_empty());
        assert!(sim.tick_to(1_280).is_empty());
        assert_eq!(
            sim.tick_to(1_400),
            vec![(1_300, eot("hello there", 1_000, Endpointing))]
        );
    }

    #[test]
    fn endpointing_without_vad_counts_from_the_final() {
        let mut sim = Sim::new();
        sim.at(500, final_("hello", false));
        assert!(sim.tick_to(780).is_empty());
        assert_eq!(
            sim.tick_to(900),
            vec![(800, eot("hello", 800, Endpointing))]
        );
    }

    #[test]
    fn a_late_final_after_long_silence_ends_the_turn_on_the_next_tick() {
        let mut sim = Sim::new();
        sim.at(0, vad(true));
        sim.at(500, vad(false));
        // The recognizer lags: its final comes 400 ms after the VAD end.
        assert_eq!(
            sim.at(900, final_("ok thanks", false)),
            vec![(900, eot("ok thanks", 500, Endpointing))]
        );
    }

    #[test]
    fn interim_words_hold_endpointing_until_their_final() {
        let mut sim = Sim::new();
        sim.at(0, vad(true));
        sim.at(400, final_("I need", false));
        sim.at(600, interim("a refund"));
        sim.at(800, vad(false));
        assert!(
            sim.tick_to(1_180).is_empty(),
            "waits for the final of 'a refund'"
        );
        assert_eq!(
            sim.at(1_200, final_("a refund", true)),
            vec![(1_200, eot("I need a refund", 800, Stt))]
        );
    }

    #[test]
    fn interim_words_whose_final_never_comes_end_the_turn_eventually() {
        let mut sim = Sim::new();
        sim.at(0, vad(true));
        sim.at(400, final_("I need", false));
        sim.at(600, interim("a refund"));
        sim.at(800, vad(false));
        // endpointing (300) + grace (1500) after the silence began.
        assert!(sim.tick_to(2_580).is_empty());
        assert_eq!(
            sim.tick_to(2_700),
            vec![(2_600, eot("I need a refund", 800, Endpointing))]
        );
    }

    #[test]
    fn utterance_end_includes_an_unconfirmed_interim() {
        let mut sim = Sim::new();
        sim.at(100, interim("cancel my order"));
        assert_eq!(
            sim.at(1_200, TurnInput::SttUtteranceEnd),
            vec![(1_200, eot("cancel my order", 1_200, Stt))]
        );
    }

    #[test]
    fn empty_transcripts_never_end_a_turn() {
        let mut sim = Sim::new();
        sim.at(0, vad(true));
        sim.at(400, vad(false));
        let mut seen = sim.at(500, final_("   ", true));
        seen.extend(sim.at(520, final_("", false)));
        seen.extend(sim.at(600, TurnInput::SttUtteranceEnd));
        seen.extend(sim.at(650, interim("  ")));
        seen.extend(sim.tick_to(10_000));
        assert!(seen.is_empty(), "{seen:?}");
        assert_eq!(sim.machine.turns(), 0);
    }

    #[test]
    fn sound_without_words_is_not_a_turn() {
        let mut sim = Sim::new();
        sim.at(0, vad(true));
        sim.at(400, vad(false));
        assert_eq!(sim.state(), TurnState::CallerSpeaking);
        sim.tick_to(1_880);
        assert_eq!(sim.state(), TurnState::CallerSpeaking);
        sim.tick_to(1_900);
        assert_eq!(sim.state(), TurnState::Listening);
        // A later utterance gets its own watchdog: 30 s from its own start,
        // not from the noise.
        sim.at(20_000, vad(true));
        assert!(sim.tick_to(49_980).is_empty());
        assert_eq!(sim.tick_to(50_000), vec![(50_000, FinalizeStt)]);
    }

    // ---- After the turn ----

    #[test]
    fn reply_lifecycle_thinking_speaking_listening() {
        let mut sim = Sim::new();
        sim.at(0, final_("Hi", true));
        assert_eq!(sim.state(), TurnState::Thinking);
        assert!(sim.at(900, TurnInput::PlaybackStarted).is_empty());
        assert_eq!(sim.state(), TurnState::AgentSpeaking);
        assert!(sim.at(3_000, TurnInput::PlaybackFinished).is_empty());
        assert_eq!(sim.state(), TurnState::Listening);
        // A failed reply: back to listening.
        sim.at(4_000, final_("Hello?", true));
        assert_eq!(sim.state(), TurnState::Thinking);
        sim.at(4_500, TurnInput::ReplyCancelled);
        assert_eq!(sim.state(), TurnState::Listening);
        // A reply without audio.
        sim.at(5_000, final_("Hello?", true));
        sim.at(5_500, TurnInput::PlaybackFinished);
        assert_eq!(sim.state(), TurnState::Listening);
        assert_eq!(sim.machine.turns(), 3);
        assert_eq!(sim.machine.interruptions(), 0);
    }

    #[test]
    fn a_greeting_can_be_barged_in_on() {
        let mut sim = Sim::new();
        // The caller is already making sound when the greeting starts; only
        // speech over the greeting counts.
        sim.at(0, vad(true));
        assert!(sim.at(1_000, TurnInput::PlaybackStarted).is_empty());
        assert_eq!(sim.state(), TurnState::AgentSpeaking);
        assert_eq!(sim.tick_to(1_300), vec![(1_260, BargeIn)]);
    }

    #[test]
    fn speech_that_outlasts_the_end_of_turn_does_not_barge_in() {
        let mut sim = Sim::new();
        sim.at(0, vad(true));
        sim.at(800, final_("Where is my parcel", true));
        // VAD hangover: speech still reported for 600 ms into Thinking.
        assert!(sim.at(1_400, vad(false)).is_empty());
        sim.at(1_600, TurnInput::PlaybackStarted);
        // A new onset does count.
        sim.at(2_000, vad(true));
        assert_eq!(sim.tick_to(2_400), vec![(2_260, BargeIn)]);
    }

    // ---- Barge-in ----

    #[test]
    fn a_cough_during_playback_does_nothing() {
        let mut sim = Sim::new();
        sim.reach_agent_speaking(1_000);
        let mut seen = sim.at(2_000, vad(true));
        seen.extend(sim.at(2_200, vad(false)));
        seen.extend(sim.tick_to(6_000));
        assert!(seen.is_empty(), "{seen:?}");
        assert_eq!(sim.state(), TurnState::AgentSpeaking);
        assert_eq!(sim.machine.interruptions(), 0);
    }

    #[test]
    fn uh_huh_during_playback_does_nothing() {
        let mut sim = Sim::new();
        sim.reach_agent_speaking(1_000);
        let mut seen = sim.at(2_000, vad(true));
        seen.extend(sim.at(2_100, interim("uh")));
        seen.extend(sim.at(2_180, vad(false)));
        seen.extend(sim.at(2_300, final_("Uh-huh.", true)));
        seen.extend(sim.at(3_000, final_("Yeah, okay!", true)));
        seen.extend(sim.at(3_500, interim("mm hmm right")));
        seen.extend(sim.at(3_600, TurnInput::SttUtteranceEnd));
        seen.extend(sim.tick_to(8_000));
        assert!(seen.is_empty(), "{seen:?}");
        assert_eq!(sim.state(), TurnState::AgentSpeaking);
        // The backchannels were dropped: the next turn starts clean.
        sim.at(9_000, TurnInput::PlaybackFinished);
        assert_eq!(
            sim.at(9_500, final_("Thanks", true)),
            vec![(9_500, eot("Thanks", 9_500, Stt))]
        );
    }

    #[test]
    fn sustained_speech_barges_in_once_and_becomes_a_turn() {
        let mut sim = Sim::new();
        sim.reach_agent_speaking(1_000);
        sim.at(2_000, vad(true));
        assert!(sim.tick_to(2_240).is_empty());
        assert_eq!(sim.tick_to(2_260), vec![(2_260, BargeIn)]);
        assert_eq!(sim.state(), TurnState::Interrupted);
        // More speech, more words: no second BargeIn.
        let mut seen = sim.at(2_400, interim("wait I"));
        seen.extend(sim.at(2_800, final_("Wait, I have a question", false)));
        seen.extend(sim.at(3_000, vad(false)));
        seen.extend(sim.at(3_100, vad(true)));
        seen.extend(sim.at(3_900, vad(false)));
        seen.extend(sim.at(4_000, final_("about fees", true)));
        assert_eq!(
            seen,
            vec![(4_000, eot("Wait, I have a question about fees", 3_900, Stt))]
        );
        // No resume, ever.
        assert!(sim.tick_to(10_000).is_empty());
        assert_eq!(sim.state(), TurnState::Thinking);
        assert_eq!(
            (
                sim.machine.interruptions(),
                sim.machine.false_interruptions(),
                sim.machine.turns()
            ),
            (1, 0, 2)
        );
    }

    #[test]
    fn words_over_the_agent_barge_in_at_once() {
        let mut sim = Sim::new();
        sim.reach_agent_speaking(1_000);
        assert_eq!(sim.at(2_000, interim("stop")), vec![(2_000, BargeIn)]);
        // A final with real words over the agent barges in and, with
        // speech_final, also ends the turn.
        let mut sim = Sim::new();
        sim.reach_agent_speaking(1_000);
        assert_eq!(
            sim.at(2_000, final_("Yeah, but what about Sunday?", true)),
            vec![
                (2_000, BargeIn),
                (2_000, eot("Yeah, but what about Sunday?", 2_000, Stt))
            ]
        );
    }

    #[test]
    fn no_duplicate_barge_in() {
        let mut sim = Sim::new();
        sim.reach_agent_speaking(1_000);
        let mut seen = sim.at(2_000, vad(true));
        seen.extend(sim.at(2_100, interim("no no")));
        seen.extend(sim.at(2_200, interim("no no no stop")));
        seen.extend(sim.tick_to(2_600));
        seen.extend(sim.at(2_700, dtmf('1')));
        seen.extend(sim.at(2_800, final_("No no no stop", false)));
        seen.extend(sim.at(2_900, TurnInput::PlaybackStarted));
        let barge_ins = seen.iter().filter(|(_, a)| *a == BargeIn).count();
        assert_eq!(barge_ins, 1, "{seen:?}");
        assert_eq!(sim.machine.interruptions(), 1);
    }

    // ---- Interrupted ----

    #[test]
    fn false_interruption_resumes_the_agent() {
        let mut sim = Sim::new();
        sim.reach_agent_speaking(1_000);
        sim.at(2_000, vad(true));
        assert_eq!(sim.tick_to(2_300), vec![(2_260, BargeIn)]);
        sim.at(2_320, vad(false));
        assert!(sim.tick_to(3_740).is_empty());
        assert_eq!(sim.tick_to(3_800), vec![(3_760, ResumeAgent)]);
        assert_eq!(sim.state(), TurnState::Thinking);
        assert_eq!(sim.machine.false_interruptions(), 1);
        assert!(sim.at(3_900, TurnInput::PlaybackStarted).is_empty());
        assert_eq!(sim.state(), TurnState::AgentSpeaking);
        // The resumed reply can be barged in on again.
        sim.at(5_000, vad(true));
        assert_eq!(sim.tick_to(5_300), vec![(5_260, BargeIn)]);
        assert_eq!(sim.machine.interruptions(), 2);
    }

    #[test]
    fn backchannels_after_a_barge_in_are_a_false_interruption() {
        let mut sim = Sim::new();
        sim.reach_agent_speaking(1_000);
        sim.at(2_000, vad(true));
        sim.tick_to(2_300);
        assert_eq!(sim.state(), TurnState::Interrupted);
        let mut seen = sim.at(2_400, interim("uh huh"));
        seen.extend(sim.at(2_500, vad(false)));
        seen.extend(sim.at(2_600, final_("Uh-huh, yeah.", true)));
        seen.extend(sim.at(2_700, TurnInput::SttUtteranceEnd));
        seen.extend(sim.tick_to(4_000));
        assert_eq!(seen, vec![(3_760, ResumeAgent)]);
        assert_eq!(sim.machine.turns(), 1);
    }

    #[test]
    fn no_resume_while_the_caller_still_makes_sound() {
        let mut sim = Sim::new();
        sim.reach_agent_speaking(1_000);
        sim.at(2_000, vad(true));
        sim.tick_to(2_300);
        assert!(sim.tick_to(5_000).is_empty(), "speech without words yet");
        // Silence, still no words: resume at once (the window is over).
        assert_eq!(sim.at(5_100, vad(false)), vec![(5_100, ResumeAgent)]);
    }

    #[test]
    fn utterance_end_after_a_barge_in_decides_on_the_interim() {
        // Real interim words: a turn, even without their final.
        let mut sim = Sim::new();
        sim.reach_agent_speaking(1_000);
        sim.at(2_000, vad(true));
        sim.tick_to(2_300);
        sim.at(2_400, interim("hello"));
        sim.at(2_500, vad(false));
        assert!(
            sim.tick_to(3_900).is_empty(),
            "real interim words hold the resume"
        );
        assert_eq!(
            sim.at(4_000, TurnInput::SttUtteranceEnd),
            vec![(4_000, eot("hello", 2_500, Stt))]
        );
        // A backchannel interim: dropped, and the window is over: resume.
        let mut sim = Sim::new();
        sim.reach_agent_speaking(1_000);
        sim.at(2_000, vad(true));
        sim.tick_to(2_300);
        sim.at(2_400, interim("mm-hmm"));
        sim.at(2_500, vad(false));
        assert_eq!(sim.tick_to(3_900), vec![(3_760, ResumeAgent)]);
    }

    #[test]
    fn reply_cancelled_and_playback_in_interrupted_change_nothing() {
        let mut sim = Sim::new();
        sim.reach_agent_speaking(1_000);
        assert_eq!(sim.at(2_000, interim("hold on")), vec![(2_000, BargeIn)]);
        // The voice loop acknowledges the barge-in; stale playback events.
        let mut seen = sim.at(2_010, TurnInput::ReplyCancelled);
        seen.extend(sim.at(2_020, TurnInput::PlaybackFinished));
        seen.extend(sim.at(2_030, TurnInput::PlaybackStarted));
        assert!(seen.is_empty());
        assert_eq!(sim.state(), TurnState::Interrupted);
        assert_eq!(
            sim.at(2_500, final_("Hold on a second", true)),
            vec![(2_500, eot("Hold on a second", 2_500, Stt))]
        );
    }

    #[test]
    fn a_resume_with_nothing_to_resume_goes_back_to_listening() {
        let mut sim = Sim::new();
        sim.reach_agent_speaking(1_000);
        sim.at(2_000, vad(true));
        let mut seen = sim.at(2_300, vad(false));
        seen.extend(sim.tick_to(3_800));
        assert_eq!(seen, vec![(2_260, BargeIn), (3_760, ResumeAgent)]);
        sim.at(3_800, TurnInput::ReplyCancelled);
        assert_eq!(sim.state(), TurnState::Listening);
    }

    #[test]
    fn barge_in_during_thinking_merges_the_turns() {
        let mut sim = Sim::new();
        sim.at(0, vad(true));
        sim.at(900, vad(false));
        assert_eq!(
            sim.at(1_000, final_("I want to fly to", true)),
            vec![(1_000, eot("I want to fly to", 900, Stt))]
        );
        // The caller was only pausing.
        sim.at(1_200, vad(true));
        assert_eq!(sim.tick_to(1_460), vec![(1_460, BargeIn)]);
        sim.at(1_800, vad(false));
        assert_eq!(
            sim.at(1_900, final_("Boston on Friday", true)),
            vec![(1_900, eot("I want to fly to Boston on Friday", 1_800, Stt))]
        );
        assert_eq!(sim.machine.turns(), 2);
    }

    #[test]
    fn no_merge_once_the_reply_was_audible() {
        let mut sim = Sim::new();
        sim.reach_agent_speaking(1_000);
        sim.at(2_000, interim("and Saturday"));
        assert_eq!(
            sim.at(2_300, final_("And Saturday?", true)),
            vec![(2_300, eot("And Saturday?", 2_300, Stt))]
        );
        // Nor after a resume (Thinking, but the reply had been heard).
        let mut sim = Sim::new();
        sim.reach_agent_speaking(1_000);
        sim.at(2_000, vad(true));
        sim.at(2_300, vad(false));
        sim.tick_to(3_800);
        assert_eq!(sim.state(), TurnState::Thinking);
        assert_eq!(
            sim.at(4_000, final_("Actually, cancel that", true)),
            vec![
                (4_000, BargeIn),
                (4_000, eot("Actually, cancel that", 4_000, Stt))
            ]
        );
    }

    // ---- Watchdog ----

    #[test]
    fn hold_music_finalizes_once_then_the_final_ends_the_turn() {
        let mut sim = Sim::new();
        sim.at(0, vad(true));
        let mut seen = Vec::new();
        for t in (1_000..30_000).step_by(1_000) {
            seen.extend(sim.at(t, interim("la la la")));
        }
        seen.extend(sim.tick_to(30_400));
        assert_eq!(seen, vec![(30_000, FinalizeStt)]);
        assert_eq!(
            sim.at(30_500, final_("la la la", false)),
            vec![(30_500, eot("la la la", 30_500, WatchdogSource))]
        );
        assert_eq!(sim.state(), TurnState::Thinking);
    }

    #[test]
    fn watchdog_grace_ends_the_turn_with_what_was_transcribed() {
        let mut sim = Sim::new();
        sim.at(0, vad(true));
        sim.at(10_000, final_("and another thing", false));
        sim.at(20_000, final_("and so on", false));
        let seen = sim.tick_to(32_000);
        assert_eq!(
            seen,
            vec![
                (30_000, FinalizeStt),
                (
                    31_500,
                    eot("and another thing and so on", 31_500, WatchdogSource)
                )
            ]
        );
    }

    #[test]
    fn watchdog_with_nothing_said_resets_and_rearms() {
        let mut sim = Sim::new();
        sim.at(0, vad(true));
        let seen = sim.tick_to(100_000);
        // Once per turn: 30 s, then a fresh turn from the reset at 31.5 s.
        assert_eq!(
            seen,
            vec![
                (30_000, FinalizeStt),
                (61_500, FinalizeStt),
                (93_000, FinalizeStt)
            ]
        );
        assert_eq!(sim.state(), TurnState::CallerSpeaking);
        assert_eq!(sim.machine.turns(), 0);
        // The music stops: back to listening; real speech still works.
        sim.at(100_000, vad(false));
        sim.tick_to(102_000);
        assert_eq!(sim.state(), TurnState::Listening);
        assert_eq!(
            sim.at(103_000, final_("Hello? Anyone there?", true)),
            vec![(103_000, eot("Hello? Anyone there?", 103_000, Stt))]
        );
    }

    #[test]
    fn watchdog_reset_goes_to_listening_when_silent() {
        let config = TurnConfig {
            max_turn_ms: 2_000,
            ..TurnConfig::default()
        };
        let mut sim = Sim::with(config);
        sim.at(0, interim("mmm"));
        sim.at(100, vad(true));
        sim.at(1_000, interim(""));
        sim.at(1_900, vad(false));
        // The interim keeps it a turn; the watchdog fires at 2 s from the
        // first speech (the interim at 0).
        assert_eq!(sim.tick_to(2_100), vec![(2_000, FinalizeStt)]);
        // An empty final does not end an empty turn; grace runs out.
        assert!(sim.at(2_200, final_("", false)).is_empty());
        assert!(sim.tick_to(4_000).is_empty());
        assert_eq!(sim.state(), TurnState::Listening);
    }

    #[test]
    fn hold_music_during_playback_barges_in_then_is_finalized_once() {
        let mut sim = Sim::new();
        sim.reach_agent_speaking(1_000);
        sim.at(2_000, vad(true));
        let seen = sim.tick_to(40_000);
        assert_eq!(seen, vec![(2_260, BargeIn), (32_000, FinalizeStt)]);
        // Nothing transcribed: no turn; the sound starts a fresh turn.
        assert_eq!(sim.state(), TurnState::CallerSpeaking);
        assert_eq!(
            (sim.machine.turns(), sim.machine.false_interruptions()),
            (1, 0)
        );
    }

    // ---- DTMF ----

    #[test]
    fn dtmf_hash_ends_the_turn() {
        let mut sim = Sim::new();
        let mut seen = Vec::new();
        for (t, d) in [(100, '1'), (300, '2'), (400, 'x'), (500, '3'), (700, '4')] {
            seen.extend(sim.at(t, dtmf(d)));
        }
        assert!(seen.is_empty());
        assert_eq!(sim.state(), TurnState::CallerSpeaking);
        assert_eq!(
            sim.at(900, dtmf('#')),
            vec![(900, eot("(the caller pressed 1234#)", 900, Dtmf))]
        );
        assert_eq!(sim.state(), TurnState::Thinking);
    }

    #[test]
    fn dtmf_timeout_ends_the_turn() {
        let mut sim = Sim::new();
        sim.at(100, dtmf('*'));
        sim.at(300, dtmf('b'));
        sim.at(400, dtmf('9'));
        assert!(sim.tick_to(2_380).is_empty());
        assert_eq!(
            sim.tick_to(2_500),
            vec![(2_400, eot("(the caller pressed *B9)", 400, Dtmf))]
        );
    }

    #[test]
    fn invalid_digits_are_ignored() {
        let mut sim = Sim::new();
        let mut seen = Vec::new();
        for d in ['x', 'E', ' ', '!', 'é', '\0', '５'] {
            seen.extend(sim.at(sim.now + 10, dtmf(d)));
        }
        seen.extend(sim.tick_to(5_000));
        assert!(seen.is_empty());
        assert_eq!(sim.state(), TurnState::Listening);
    }

    #[test]
    fn dtmf_during_playback_barges_in() {
        let mut sim = Sim::new();
        sim.reach_agent_speaking(1_000);
        assert_eq!(sim.at(2_000, dtmf('5')), vec![(2_000, BargeIn)]);
        assert_eq!(sim.state(), TurnState::Interrupted);
        // Keys are real input: no false interruption while typing.
        assert!(sim.tick_to(3_900).is_empty());
        assert_eq!(
            sim.at(3_950, dtmf('#')),
            vec![(3_950, eot("(the caller pressed 5#)", 3_950, Dtmf))]
        );
    }

    #[test]
    fn words_and_digits_of_one_turn_end_together() {
        let mut sim = Sim::new();
        sim.at(100, final_("my pin is", false));
        // Typing holds endpointing back.
        sim.at(300, dtmf('1'));
        sim.at(1_300, dtmf('2'));
        assert_eq!(
            sim.at(2_000, dtmf('#')),
            vec![(
                2_000,
                eot("my pin is (the caller pressed 12#)", 2_000, Dtmf)
            )]
        );
    }

    #[test]
    fn a_stuck_key_cannot_grow_the_buffer_forever() {
        let mut sim = Sim::new();
        let mut seen = Vec::new();
        for i in 0..MAX_DTMF_DIGITS as u64 {
            seen.extend(sim.at(100 + i * 10, dtmf('7')));
        }
        assert_eq!(seen.len(), 1);
        let expected = format!("(the caller pressed {})", "7".repeat(MAX_DTMF_DIGITS));
        assert!(
            matches!(&seen[0].1, TurnAction::EndOfTurn { text, source: Dtmf, .. } if *text == expected)
        );
    }

    // ---- Backchannels ----

    #[test]
    fn backchannel_matching_is_whole_utterance_and_forgiving() {
        let mut m = TurnMachine::new(TurnConfig::default());
        for text in [
            "uh-huh",
            "Uh huh.",
            "UHHUH",
            "mm-hmm, yeah",
            "Yeah, okay!",
            "okay okay okay",
            "Right… I see.",
            "All right",
            "alright",
            "Got it.",
            "um, uh",
            "Hmm?",
        ] {
            assert!(!m.is_real_words(text), "{text:?} is a backchannel");
        }
        for text in [
            "Yeah, but what about Sunday?",
            "stop",
            "okay wait",
            "no",
            "huh?",
            "I see a problem",
            "seeing",
        ] {
            assert!(m.is_real_words(text), "{text:?} has real words");
        }
        // Empty, punctuation only: no words at all.
        for text in ["", "   ", "...", "?!"] {
            assert!(!m.is_real_words(text), "{text:?}");
        }
        // Long utterances are never backchannels.
        assert!(m.is_real_words(&"yeah ".repeat(MAX_BACKCHANNEL_WORDS + 1)));
    }

    #[test]
    fn configured_backchannels_are_normalized() {
        let config = TurnConfig {
            backchannels: vec!["Ja, genau!".to_owned(), "d'accord".to_owned()],
            ..TurnConfig::default()
        };
        let mut m = TurnMachine::new(config);
        assert!(!m.is_real_words("ja genau"));
        assert!(!m.is_real_words("D'ACCORD."));
        assert!(!m.is_real_words("daccord"));
        assert!(m.is_real_words("yeah"), "only the configured list counts");
        assert!(m.is_real_words("ja"), "a phrase is matched whole");
    }

    // ---- Property-style ----

    /// Deterministic pseudo-random numbers (Knuth's MMIX LCG).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self, bound: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % bound
        }
    }

    fn random_input(rng: &mut Lcg) -> TurnInput {
        const TEXTS: &[&str] = &[
            "",
            "  ",
            "uh-huh",
            "Yeah, okay.",
            "hello there",
            "I need help",
            "Um.",
            "stop",
            "la la",
        ];
        let text = |rng: &mut Lcg| TEXTS[rng.next(TEXTS.len() as u64) as usize].to_owned();
        match rng.next(20) {
            0..=5 => TurnInput::Tick,
            6 | 7 => vad(true),
            8 | 9 => vad(false),
            10 => TurnInput::SttSpeechStarted,
            11 => TurnInput::SttInterim { text: text(rng) },
            12 => TurnInput::SttFinal {
                text: text(rng),
                speech_final: rng.next(2) == 0,
            },
            13 => TurnInput::SttUtteranceEnd,
            14 => dtmf(['1', '#', 'x', '*', 'a'][rng.next(5) as usize]),
            15 | 16 => TurnInput::PlaybackStarted,
            17 => TurnInput::PlaybackFinished,
            18 => TurnInput::ReplyCancelled,
            _ => TurnInput::Tick,
        }
    }

    /// Runs `steps` random inputs; returns how many barge-ins, resumes, turn
    /// ends and watchdog firings happened.
    fn run_random(config: TurnConfig, seed: u64, steps: usize) -> [u32; 4] {
        let max_turn_ms = config.max_turn_ms;
        let quiet_ms = config.max_turn_ms
            + config.finalize_grace_ms
            + config.endpointing_ms
            + config.false_interruption_ms
            + config.dtmf_timeout_ms;
        let mut m = TurnMachine::new(config);
        let mut rng = Lcg(seed);
        let mut out = Vec::new();
        let mut now = 0u64;
        let (mut barge_ins, mut resumes, mut ends) = (0u32, 0u32, 0u32);
        // Whether the machine left Interrupted since the last BargeIn.
        let mut left_interrupted = true;
        let mut last_finalize: Option<u64> = None;
        let mut finalizes = 0u32;
        for step in 0..steps {
            // Mostly 20 ms ticks, sometimes long gaps, sometimes same-ms bursts.
            now += match rng.next(10) {
                0 => 0,
                1 => rng.next(3_000),
                _ => rng.next(40),
            };
            let input = random_input(&mut rng);
            // A Tick at the same time first: it runs the deadlines the
            // input's own pre-poll would, so the state in between (which
            // the input then acts on) is observable.
            for input in [TurnInput::Tick, input.clone()] {
                out.clear();
                m.handle(now, input.clone(), &mut out);
                for action in &out {
                    match action {
                        TurnAction::BargeIn => {
                            assert!(
                                left_interrupted,
                                "step {step}: second BargeIn without a reply in between"
                            );
                            left_interrupted = false;
                            barge_ins += 1;
                        }
                        TurnAction::ResumeAgent => {
                            left_interrupted = true;
                            resumes += 1;
                        }
                        TurnAction::EndOfTurn {
                            text,
                            speech_ended_at_ms,
                            ..
                        } => {
                            left_interrupted = true;
                            ends += 1;
                            assert!(!text.trim().is_empty(), "step {step}: empty turn");
                            assert_eq!(text.trim(), text, "step {step}: untrimmed turn");
                            assert!(*speech_ended_at_ms <= now, "step {step}: end in the future");
                        }
                        TurnAction::FinalizeStt => {
                            if let Some(previous) = last_finalize {
                                assert!(
                                    now - previous >= max_turn_ms,
                                    "step {step}: watchdog fired twice in one turn"
                                );
                            }
                            last_finalize = Some(now);
                            finalizes += 1;
                        }
                    }
                }
                if m.state() != TurnState::Interrupted {
                    left_interrupted = true;
                }
            }
            assert_eq!(m.interruptions(), barge_ins, "step {step}: {input:?}");
            assert_eq!(m.false_interruptions(), resumes, "step {step}");
            assert_eq!(m.turns(), ends, "step {step}");
            assert!(m.false_interruptions() <= m.interruptions());
        }
        // Liveness: after silence and ticks the machine never sits in a
        // caller turn or an interruption.
        out.clear();
        m.handle(now, vad(false), &mut out);
        let until = now + quiet_ms + 100;
        while now < until {
            now += 20;
            m.handle(now, TurnInput::Tick, &mut out);
        }
        assert!(
            matches!(
                m.state(),
                TurnState::Listening | TurnState::Thinking | TurnState::AgentSpeaking
            ),
            "wedged in {:?}",
            m.state()
        );
        [barge_ins, resumes, ends, finalizes]
    }

    #[test]
    fn random_inputs_keep_the_invariants() {
        let sum = |a: [u32; 4], b: [u32; 4]| [a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]];
        let mut total = [0; 4];
        for seed in 1..=8 {
            total = sum(total, run_random(TurnConfig::default(), seed, 20_000));
        }
        let tight = TurnConfig {
            max_turn_ms: 1_000,
            finalize_grace_ms: 300,
            false_interruption_ms: 200,
            min_barge_in_ms: 0,
            ..TurnConfig::default()
        };
        for seed in 100..=104 {
            total = sum(total, run_random(tight.clone(), seed, 20_000));
        }
        // The sequences exercised every path.
        assert!(total.iter().all(|&n| n > 10), "{total:?}");
    }
}
