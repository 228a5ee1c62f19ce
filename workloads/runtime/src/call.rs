//! The voice loop of one call.
//!
//! One task per call multiplexes, with `select!`: caller media from the
//! transport, recognizer events, the in-flight reply and a 20 ms playback
//! clock. Everything slow runs elsewhere: the recognizer in its own task or
//! thread, each reply (agent SSE → sentences → TTS audio) in a reply task
//! that the loop aborts on barge-in. The loop itself only moves frames,
//! feeds the pure turn-taking machine and acts on its decisions, so it never
//! blocks and reacts to a barge-in within one 20 ms tick.
//!
//! Playback is paced here, in real time with a small lead
//! ([`PLAYBACK_LEAD_MS`]), instead of handing Twilio whole sentences: a
//! `clear` then discards at most the lead, and the loop always knows which
//! sentence the caller was hearing when they interrupted.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use voice_agent_proto::{Citation, HistoryTurn, RespondRequest, Role, Stage};

use crate::State;
use crate::clients::{ReplyEvent, Upstreams};
use crate::media::{Inbound, MediaTransport};
use crate::sentence::SentenceSplitter;
use crate::sessions::{EndReason, Session, TranscriptTurn, TurnLatency};
use crate::stt::{SttEvent, SttInput, SttParams};
use crate::turn::{EndOfTurnSource, TurnAction, TurnInput, TurnMachine};
use crate::vad::{Vad, VadConfig, VadEvent};

/// Audio sent ahead of real time, so network jitter does not starve the
/// caller's playout buffer. It is also the most a `clear` has to discard.
pub const PLAYBACK_LEAD_MS: u64 = 80;
/// VAD hangover for turn-taking, ms.
const TURN_VAD_HANGOVER_MS: u32 = 100;
/// One frame: 20 ms of 8 kHz mu-law.
const FRAME_BYTES: usize = 160;
/// mu-law silence (encoded zero).
const MULAW_SILENCE: u8 = 0xFF;
/// Turns of history sent to the agent.
const HISTORY_TURNS: usize = 12;
/// Said when the agent or TTS fails before any audio of a reply.
const FALLBACK: &str = "Sorry, I'm having trouble answering right now. Could you say that again?";

/// What a reply is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyKind {
    Greeting,
    Answer,
    Resume,
    Goodbye,
    Fallback,
}

/// What a reply task reports to the loop.
#[derive(Debug)]
enum ReplyMsg {
    AgentFirstText { ms: f64 },
    Citations(Vec<Citation>),
    AgentDone { ms: f64 },
    Sentence { idx: usize, text: String },
    Audio { idx: usize, bytes: Bytes },
    TtsFirstByte { ms: f64 },
    Failed(String),
    Finished,
}

/// Where a reply's text comes from.
enum ReplySource {
    Agent(RespondRequest),
    Sentences(Vec<String>),
}

struct Reply {
    kind: ReplyKind,
    rx: mpsc::Receiver<ReplyMsg>,
    task: tokio::task::JoinHandle<()>,
    caller_text: String,
    speech_ended_at_ms: Option<u64>,
    sentences: Vec<String>,
    citations: Vec<Citation>,
    latency: TurnLatency,
    /// The reply task delivered everything.
    finished: bool,
    started_playing: bool,
    failed: bool,
}

impl Drop for Reply {
    fn drop(&mut self) {
        // Dropping a reply cancels its agent and TTS requests.
        self.task.abort();
    }
}

/// Audio waiting to be paced out, tagged with its sentence.
#[derive(Default)]
struct Playback {
    chunks: VecDeque<(usize, Bytes)>,
    /// Offset into the front chunk.
    offset: usize,
    queued_bytes: usize,
    /// When the next frame is due, in loop ms; `None` when idle.
    next_due_ms: Option<u64>,
    /// Sentence of the last frame sent.
    playing_idx: Option<usize>,
    frame: Vec<u8>,
}

impl Playback {
    fn push(&mut self, idx: usize, bytes: Bytes) {
        self.queued_bytes += bytes.len();
        self.chunks.push_back((idx, bytes));
    }

    fn clear(&mut self) {
        self.chunks.clear();
        self.offset = 0;
        self.queued_bytes = 0;
        self.next_due_ms = None;
    }

    /// Takes the next frame (padding the last partial one with silence when
    /// `final_chunk`); `None` when there is not a whole frame yet.
    fn take_frame(&mut self, final_chunk: bool) -> Option<usize> {
        if self.queued_bytes == 0 || (self.queued_bytes < FRAME_BYTES && !final_chunk) {
            return None;
        }
        self.frame.clear();
        let mut idx = None;
        while self.frame.len() < FRAME_BYTES {
            let Some((chunk_idx, chunk)) = self.chunks.front() else {
                break;
            };
            idx.get_or_insert(*chunk_idx);
            let want = FRAME_BYTES - self.frame.len();
            let available = &chunk[self.offset..];
            let n = want.min(available.len());
            self.frame.extend_from_slice(&available[..n]);
            self.offset += n;
            if self.offset >= chunk.len() {
                self.chunks.pop_front();
                self.offset = 0;
            }
        }
        self.queued_bytes -= self.frame.len();
        self.frame.resize(FRAME_BYTES, MULAW_SILENCE);
        self.playing_idx = idx;
        idx
    }
}

/// Runs a call to its end, then closes the transport and books the end.
pub async fn run_call<T: MediaTransport>(state: Arc<State>, session: Arc<Session>, transport: T) {
    session.set_active();
    state.calls.answered(&session);
    let span =
        tracing::info_span!("call", session = %session.id, call_sid = %session.request.call_sid);
    let _enter = span.enter();
    drop(_enter);
    let (reason, transport) = {
        let mut voice = match VoiceLoop::new(&state, &session, transport) {
            Ok(v) => v,
            Err((reason, transport)) => {
                finish(&state, &session, reason);
                transport.close().await;
                return;
            }
        };
        let reason = voice.run().await;
        (reason, voice.into_transport())
    };
    finish(&state, &session, reason);
    transport.close().await;
}

fn finish(state: &State, session: &Session, reason: EndReason) {
    session.end(reason);
    state.calls.ended(session);
    let reason = session.end_reason().unwrap_or(reason);
    state.registry.notify_ended();
    state
        .exporter
        .calls_ended
        .with_label_values(&[end_reason_label(reason)])
        .inc();
    state.publish_load();
    let info = session.info();
    tracing::info!(
        session = %session.id,
        reason = end_reason_label(reason),
        turns = info.turns,
        interruptions = info.interruptions,
        "call ended"
    );
}

/// The metric label of an end reason.
pub fn end_reason_label(reason: EndReason) -> &'static str {
    match reason {
        EndReason::CallerHangup => "callerHangup",
        EndReason::AgentHangup => "agentHangup",
        EndReason::MaxDuration => "maxDuration",
        EndReason::TransportError => "transportError",
        EndReason::DrainTimeout => "drainTimeout",
        EndReason::Deleted => "deleted",
        EndReason::Error => "error",
    }
}

struct VoiceLoop<'a, T: MediaTransport> {
    state: &'a Arc<State>,
    session: &'a Arc<Session>,
    transport: T,
    start: Instant,
    vad: Vad,
    turn: TurnMachine,
    actions: Vec<TurnAction>,
    stt_input: mpsc::Sender<SttInput>,
    stt_events: mpsc::Receiver<SttEvent>,
    reply: Option<Reply>,
    /// Sentences of an interrupted reply, for a false-interruption resume.
    resume: Option<(Vec<String>, String)>,
    playback: Playback,
    history: Vec<HistoryTurn>,
    hang_up_after_reply: bool,
    greeted: bool,
    replies: u64,
}

impl<'a, T: MediaTransport> VoiceLoop<'a, T> {
    fn new(
        state: &'a Arc<State>,
        session: &'a Arc<Session>,
        transport: T,
    ) -> Result<Self, (EndReason, T)> {
        let config = &state.config;
        let params = SttParams {
            sample_rate: voice_agent_proto::mediastreams::SAMPLE_RATE,
            language: config.stt.language.clone(),
            model: config.stt.model.clone(),
            endpointing_ms: config.stt.endpointing_ms,
        };
        let stream = match state.stt.open(&params) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot open the speech recognizer; ending the call");
                return Err((EndReason::Error, transport));
            }
        };
        Ok(Self {
            state,
            session,
            transport,
            start: Instant::now(),
            // A short hangover: barge-in needs the caller's voiced time, not
            // voiced time plus a tail (a 120 ms cough would otherwise count
            // as 360 ms of speech), and the end of speech marks the start of
            // the `eou` stage. Pauses between words stay under 100 ms.
            vad: Vad::new(VadConfig {
                hangover_ms: TURN_VAD_HANGOVER_MS,
                ..VadConfig::telephone(params.sample_rate)
            }),
            turn: TurnMachine::new(config.turn.clone()),
            actions: Vec::with_capacity(4),
            stt_input: stream.input,
            stt_events: stream.events,
            reply: None,
            resume: None,
            playback: Playback::default(),
            history: Vec::new(),
            hang_up_after_reply: false,
            greeted: false,
            replies: 0,
        })
    }

    fn into_transport(self) -> T {
        let _ = self.stt_input.try_send(SttInput::Close);
        self.transport
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    async fn run(&mut self) -> EndReason {
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let max_call = self.state.config.max_call;
        let cancel = self.session.cancel.clone();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    return self.session.end_reason().unwrap_or(EndReason::Deleted);
                }
                inbound = self.transport.recv() => match inbound {
                    Some(Ok(event)) => {
                        if let Some(reason) = self.on_inbound(event) {
                            return reason;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "media transport error; ending the call");
                        return EndReason::TransportError;
                    }
                    None => return EndReason::CallerHangup,
                },
                event = self.stt_events.recv() => match event {
                    Some(event) => {
                        if let Some(reason) = self.on_stt(event) {
                            return reason;
                        }
                    }
                    None => {
                        tracing::error!("speech recognizer stopped; ending the call");
                        return EndReason::Error;
                    }
                },
                msg = recv_reply(&mut self.reply) => {
                    self.on_reply(msg);
                }
                _ = ticker.tick() => {
                    if self.start.elapsed() >= max_call {
                        return EndReason::MaxDuration;
                    }
                    if let Some(reason) = self.on_tick() {
                        return reason;
                    }
                }
            }
        }
    }

    fn feed(&mut self, input: TurnInput) {
        let now = self.now_ms();
        self.actions.clear();
        self.turn.handle(now, input, &mut self.actions);
        // Acting may feed the machine again (nested): take the buffer, move
        // the actions out, and give the (empty) buffer back to keep its
        // capacity.
        let mut actions = std::mem::take(&mut self.actions);
        for action in actions.drain(..) {
            self.act(action);
        }
        self.actions = actions;
    }

    fn on_inbound(&mut self, event: Inbound) -> Option<EndReason> {
        match event {
            Inbound::Start { stream_sid, .. } => {
                tracing::debug!(%stream_sid, "media stream started");
                if !self.greeted {
                    self.greeted = true;
                    let greeting = self.state.config.greeting.clone();
                    if !greeting.trim().is_empty() {
                        self.start_reply(
                            ReplyKind::Greeting,
                            ReplySource::Sentences(vec![greeting]),
                            String::new(),
                            None,
                        );
                    }
                }
            }
            Inbound::Audio(pcm) => {
                if let Some(change) = self.vad.push(&pcm) {
                    self.feed(TurnInput::Vad {
                        speaking: change == VadEvent::SpeechStart,
                    });
                }
                if self.stt_input.try_send(SttInput::Audio(pcm)).is_err() {
                    self.state
                        .exporter
                        .dropped_frames
                        .with_label_values(&["stt"])
                        .inc();
                }
            }
            Inbound::Dtmf(digit) => self.feed(TurnInput::Dtmf { digit }),
            Inbound::Mark(_) => {}
            Inbound::Stop => return Some(EndReason::CallerHangup),
        }
        None
    }

    fn on_stt(&mut self, event: SttEvent) -> Option<EndReason> {
        let input = match event {
            SttEvent::SpeechStarted => TurnInput::SttSpeechStarted,
            SttEvent::Interim { text } => TurnInput::SttInterim { text },
            SttEvent::Final { text, speech_final } => {
                tracing::debug!(%text, speech_final, "transcript");
                TurnInput::SttFinal { text, speech_final }
            }
            SttEvent::UtteranceEnd => TurnInput::SttUtteranceEnd,
            SttEvent::Reconnected => {
                tracing::warn!("speech recognizer reconnected; some audio may be missing");
                return None;
            }
            SttEvent::Failed { reason } => {
                tracing::error!(%reason, "speech recognizer failed; ending the call");
                return Some(EndReason::Error);
            }
        };
        self.feed(input);
        None
    }

    fn on_tick(&mut self) -> Option<EndReason> {
        self.feed(TurnInput::Tick);
        self.pace();
        // A reply is over when its audio has played out.
        let done = match &self.reply {
            Some(r) => {
                r.finished
                    && self.playback.queued_bytes == 0
                    && self
                        .playback
                        .next_due_ms
                        .is_none_or(|due| due <= self.now_ms())
            }
            None => false,
        };
        if done && let Some(reply) = self.reply.take() {
            let played = reply.started_playing;
            self.book_reply(&reply, false);
            self.playback.next_due_ms = None;
            if played {
                let name = format!("reply-{}", self.replies);
                self.transport.send_mark(&name);
                self.feed(TurnInput::PlaybackFinished);
            } else {
                self.feed(TurnInput::ReplyCancelled);
            }
            if reply.failed && !played && reply.kind == ReplyKind::Answer {
                self.start_reply(
                    ReplyKind::Fallback,
                    ReplySource::Sentences(vec![FALLBACK.to_string()]),
                    String::new(),
                    None,
                );
            } else if self.hang_up_after_reply {
                return Some(EndReason::AgentHangup);
            }
        }
        None
    }

    /// Sends due frames, at most [`PLAYBACK_LEAD_MS`] ahead of real time.
    fn pace(&mut self) {
        let now = self.now_ms();
        let finished = self.reply.as_ref().is_some_and(|r| r.finished);
        loop {
            let due = match self.playback.next_due_ms {
                // Never burst to catch up after a gap (TTS slower than real
                // time): restart the clock instead.
                Some(due) if due + 20 >= now => due,
                _ => now,
            };
            if due > now + PLAYBACK_LEAD_MS {
                break;
            }
            if self.playback.take_frame(finished).is_none() {
                break;
            }
            if !self.transport.send_audio(&self.playback.frame) {
                self.state
                    .exporter
                    .dropped_frames
                    .with_label_values(&["caller"])
                    .inc();
            }
            self.playback.next_due_ms = Some(due + 20);
            let first = self.reply.as_mut().is_some_and(|r| {
                let first = !r.started_playing;
                r.started_playing = true;
                first
            });
            if first {
                self.on_first_audio(now);
            }
        }
    }

    fn on_first_audio(&mut self, now: u64) {
        if let Some(reply) = self.reply.as_mut()
            && let Some(ended) = reply.speech_ended_at_ms
        {
            let e2e = now.saturating_sub(ended) as f64;
            reply.latency.e2e_ms = Some(e2e);
            self.state.exporter.e2e.observe(e2e / 1000.0);
            self.state.samples.latency(Stage::E2e, e2e);
        }
        self.feed(TurnInput::PlaybackStarted);
    }

    fn act(&mut self, action: TurnAction) {
        match action {
            TurnAction::EndOfTurn {
                text,
                speech_ended_at_ms,
                source,
            } => self.on_end_of_turn(text, speech_ended_at_ms, source),
            TurnAction::BargeIn => self.on_barge_in(),
            TurnAction::ResumeAgent => {
                self.state.exporter.false_interruptions.inc();
                self.sync_counters();
                match self.resume.take() {
                    Some((sentences, caller)) if !sentences.is_empty() => {
                        tracing::debug!("false interruption; resuming the reply");
                        self.start_reply(
                            ReplyKind::Resume,
                            ReplySource::Sentences(sentences),
                            caller,
                            None,
                        );
                    }
                    _ => self.feed(TurnInput::ReplyCancelled),
                }
            }
            TurnAction::FinalizeStt => {
                self.state.exporter.watchdog.inc();
                let _ = self.stt_input.try_send(SttInput::Finalize);
            }
        }
    }

    fn on_end_of_turn(&mut self, text: String, speech_ended_at_ms: u64, source: EndOfTurnSource) {
        let now = self.now_ms();
        let eou = now.saturating_sub(speech_ended_at_ms) as f64;
        self.state.exporter.turns.inc();
        self.state.exporter.eou.observe(eou / 1000.0);
        self.state.samples.latency(Stage::Eou, eou);
        tracing::info!(caller = %text, ?source, eou_ms = eou, "caller turn");
        // A reply still in flight (the caller kept talking) is superseded.
        if self.reply.take().is_some() {
            self.transport.clear();
            self.playback.clear();
        }
        self.resume = None;
        let mut latency = TurnLatency {
            eou_ms: Some(eou),
            ..TurnLatency::default()
        };
        if is_goodbye(&text) {
            self.hang_up_after_reply = true;
            let goodbye = self
                .state
                .config
                .goodbye
                .clone()
                .unwrap_or_else(|| "Goodbye!".to_string());
            self.start_reply(
                ReplyKind::Goodbye,
                ReplySource::Sentences(vec![goodbye]),
                text,
                Some(speech_ended_at_ms),
            );
            if let Some(r) = self.reply.as_mut() {
                r.latency = latency;
            }
            return;
        }
        let request = RespondRequest {
            session_id: self.session.id.clone(),
            voice_agent: self.session.request.voice_agent.clone(),
            utterance: text.clone(),
            history: self.history.clone(),
        };
        self.start_reply(
            ReplyKind::Answer,
            ReplySource::Agent(request),
            text,
            Some(speech_ended_at_ms),
        );
        if let Some(r) = self.reply.as_mut() {
            latency.e2e_ms = None;
            r.latency = latency;
        }
    }

    fn on_barge_in(&mut self) {
        self.state.exporter.interruptions.inc();
        self.transport.clear();
        let playing = self.playback.playing_idx;
        self.playback.clear();
        if let Some(reply) = self.reply.take() {
            // Resume from the start of the sentence the caller was hearing.
            let from = playing.unwrap_or(0).min(reply.sentences.len());
            let rest = reply.sentences[from..].to_vec();
            self.book_reply(&reply, true);
            self.resume = Some((rest, reply.caller_text.clone()));
            drop(reply);
            tracing::info!("caller barged in; playback stopped");
        }
        self.sync_counters();
        self.feed(TurnInput::ReplyCancelled);
    }

    fn sync_counters(&self) {
        self.session
            .set_interruptions(self.turn.interruptions(), self.turn.false_interruptions());
    }

    /// Books a finished or interrupted reply in the transcript and history.
    fn book_reply(&mut self, reply: &Reply, interrupted: bool) {
        let spoken = if interrupted {
            let upto = self
                .playback
                .playing_idx
                .map_or(0, |i| (i + 1).min(reply.sentences.len()));
            reply.sentences[..upto].join(" ")
        } else {
            reply.sentences.join(" ")
        };
        let counts = matches!(reply.kind, ReplyKind::Answer | ReplyKind::Goodbye);
        if counts || !spoken.is_empty() {
            self.session.record_turn(
                TranscriptTurn {
                    caller: reply.caller_text.clone(),
                    agent: spoken.clone(),
                    citations: reply.citations.clone(),
                    latency: reply.latency,
                    interrupted,
                },
                counts,
            );
        }
        if !reply.caller_text.is_empty() && reply.kind != ReplyKind::Resume {
            self.history.push(HistoryTurn {
                role: Role::Caller,
                text: reply.caller_text.clone(),
            });
        }
        if !spoken.is_empty() {
            self.history.push(HistoryTurn {
                role: Role::Agent,
                text: spoken,
            });
        }
        let excess = self.history.len().saturating_sub(HISTORY_TURNS * 2);
        self.history.drain(..excess);
        self.sync_counters();
        if counts {
            self.state.calls.progressed(self.session);
        }
    }

    fn start_reply(
        &mut self,
        kind: ReplyKind,
        source: ReplySource,
        caller_text: String,
        speech_ended_at_ms: Option<u64>,
    ) {
        self.replies += 1;
        let (tx, rx) = mpsc::channel(64);
        let upstreams = self.state.upstreams.clone();
        let voice = self.state.config.tts_voice.clone();
        let task = tokio::spawn(reply_task(upstreams, voice, source, tx));
        self.reply = Some(Reply {
            kind,
            rx,
            task,
            caller_text,
            speech_ended_at_ms,
            sentences: Vec::new(),
            citations: Vec::new(),
            latency: TurnLatency::default(),
            finished: false,
            started_playing: false,
            failed: false,
        });
    }

    fn on_reply(&mut self, msg: Option<ReplyMsg>) {
        let Some(reply) = self.reply.as_mut() else {
            return;
        };
        let Some(msg) = msg else {
            // The task ended without `Finished` (panicked or aborted).
            reply.finished = true;
            reply.failed = true;
            return;
        };
        let exporter = &self.state.exporter;
        let samples = &self.state.samples;
        let mut audio = false;
        match msg {
            ReplyMsg::AgentFirstText { ms } => {
                reply.latency.agent_ttft_ms = Some(ms);
                exporter
                    .upstream
                    .with_label_values(&["agentTtft"])
                    .observe(ms / 1000.0);
                samples.latency(Stage::AgentTtft, ms);
            }
            ReplyMsg::AgentDone { ms } => {
                reply.latency.agent_total_ms = Some(ms);
                exporter
                    .upstream
                    .with_label_values(&["agentTotal"])
                    .observe(ms / 1000.0);
                samples.latency(Stage::AgentTotal, ms);
            }
            ReplyMsg::Citations(citations) => reply.citations = citations,
            ReplyMsg::Sentence { idx, text } => {
                if reply.sentences.len() == idx {
                    reply.sentences.push(text);
                }
            }
            ReplyMsg::Audio { idx, bytes } => {
                self.playback.push(idx, bytes);
                audio = true;
            }
            ReplyMsg::TtsFirstByte { ms } => {
                reply.latency.tts_ttfb_ms = Some(ms);
                exporter
                    .upstream
                    .with_label_values(&["ttsTtfb"])
                    .observe(ms / 1000.0);
                samples.latency(Stage::TtsTtfb, ms);
            }
            ReplyMsg::Failed(reason) => {
                tracing::warn!(%reason, kind = ?reply.kind, "reply failed");
                reply.failed = true;
                reply.finished = true;
            }
            ReplyMsg::Finished => reply.finished = true,
        }
        // Send what is due now rather than at the next tick: the first frame
        // of a reply would otherwise wait up to 20 ms for the clock.
        if audio {
            self.pace();
        }
    }
}

async fn recv_reply(reply: &mut Option<Reply>) -> Option<ReplyMsg> {
    match reply {
        Some(r) if !r.finished => r.rx.recv().await,
        _ => std::future::pending().await,
    }
}

/// Whether the caller is saying goodbye (the agent then says its goodbye and
/// hangs up).
pub fn is_goodbye(text: &str) -> bool {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    words.len() <= 6
        && words
            .iter()
            .any(|w| matches!(w.as_str(), "goodbye" | "bye" | "byebye"))
}

async fn reply_task(
    upstreams: Upstreams,
    voice: Option<String>,
    source: ReplySource,
    tx: mpsc::Sender<ReplyMsg>,
) {
    let (sentence_tx, mut sentence_rx) = mpsc::channel::<String>(32);
    let producer = match source {
        ReplySource::Sentences(sentences) => tokio::spawn(async move {
            for s in sentences {
                if sentence_tx.send(s).await.is_err() {
                    return;
                }
            }
        }),
        ReplySource::Agent(request) => {
            let tx = tx.clone();
            let upstreams = upstreams.clone();
            tokio::spawn(async move { agent_sentences(&upstreams, request, sentence_tx, tx).await })
        }
    };
    // The producer is aborted with this task.
    let _guard = AbortGuard(producer);
    let mut idx = 0usize;
    while let Some(sentence) = sentence_rx.recv().await {
        if tx
            .send(ReplyMsg::Sentence {
                idx,
                text: sentence.clone(),
            })
            .await
            .is_err()
        {
            return;
        }
        let requested = Instant::now();
        let mut audio = match upstreams.synthesize(&sentence, voice.as_deref()).await {
            Ok(stream) => Box::pin(stream),
            Err(e) => {
                let _ = tx.send(ReplyMsg::Failed(e.to_string())).await;
                return;
            }
        };
        let mut first = true;
        while let Some(chunk) = audio.next().await {
            match chunk {
                Ok(bytes) if bytes.is_empty() => {}
                Ok(bytes) => {
                    if first && idx == 0 {
                        let ms = requested.elapsed().as_secs_f64() * 1000.0;
                        let _ = tx.send(ReplyMsg::TtsFirstByte { ms }).await;
                    }
                    first = false;
                    if tx.send(ReplyMsg::Audio { idx, bytes }).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(ReplyMsg::Failed(e.to_string())).await;
                    return;
                }
            }
        }
        idx += 1;
    }
    let _ = tx.send(ReplyMsg::Finished).await;
}

/// Streams the agent's reply, splitting it into sentences as it arrives.
async fn agent_sentences(
    upstreams: &Upstreams,
    request: RespondRequest,
    sentences: mpsc::Sender<String>,
    tx: mpsc::Sender<ReplyMsg>,
) {
    let requested = Instant::now();
    let ms = |at: Instant| at.duration_since(requested).as_secs_f64() * 1000.0;
    let mut stream = match upstreams.respond(&request).await {
        Ok(stream) => Box::pin(stream),
        Err(e) => {
            let _ = tx.send(ReplyMsg::Failed(e.to_string())).await;
            return;
        }
    };
    let mut splitter = SentenceSplitter::new();
    let mut out = Vec::new();
    let mut first = true;
    while let Some(event) = stream.next().await {
        match event {
            Ok(ReplyEvent::Delta(text)) => {
                if first {
                    first = false;
                    let _ = tx
                        .send(ReplyMsg::AgentFirstText {
                            ms: ms(Instant::now()),
                        })
                        .await;
                }
                splitter.push(&text, &mut out);
                for sentence in out.drain(..) {
                    if sentences.send(sentence).await.is_err() {
                        return;
                    }
                }
            }
            Ok(ReplyEvent::Citations(citations)) => {
                let _ = tx.send(ReplyMsg::Citations(citations)).await;
            }
            Ok(ReplyEvent::Done { .. }) => {
                let _ = tx
                    .send(ReplyMsg::AgentDone {
                        ms: ms(Instant::now()),
                    })
                    .await;
                break;
            }
            Err(e) => {
                let _ = tx.send(ReplyMsg::Failed(e.to_string())).await;
                return;
            }
        }
    }
    if let Some(rest) = splitter.finish() {
        let _ = sentences.send(rest).await;
    }
}

struct AbortGuard(tokio::task::JoinHandle<()>);

impl Drop for AbortGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goodbye_intent() {
        for yes in ["Thanks, goodbye", "bye", "OK bye bye", "goodbye!"] {
            assert!(is_goodbye(yes), "{yes}");
        }
        for no in [
            "What time do you open?",
            "I want to say goodbye to my old bike and buy a new one today please",
            "",
        ] {
            assert!(!is_goodbye(no), "{no}");
        }
    }

    #[test]
    fn playback_frames_span_chunks_and_pad_the_last() {
        let mut p = Playback::default();
        p.push(0, Bytes::from(vec![1u8; 100]));
        assert_eq!(p.take_frame(false), None, "not a whole frame yet");
        p.push(1, Bytes::from(vec![2u8; 100]));
        assert_eq!(p.take_frame(false), Some(0));
        assert_eq!(&p.frame[..100], &[1u8; 100][..]);
        assert_eq!(&p.frame[100..], &[2u8; 60][..]);
        assert_eq!(p.take_frame(false), None);
        assert_eq!(p.take_frame(true), Some(1));
        assert_eq!(&p.frame[..40], &[2u8; 40][..]);
        assert!(p.frame[40..].iter().all(|&b| b == MULAW_SILENCE));
        assert_eq!(p.queued_bytes, 0);
    }
}
