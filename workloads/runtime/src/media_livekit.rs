//! The LiveKit media transport: the runtime joins the call's LiveKit room as
//! the agent participant, hears the SIP caller's audio track and publishes
//! its own audio track.
//!
//! **Not compiled or tested in this repository's CI.** This module is behind
//! the non-default `livekit` cargo feature because the `livekit` RTC crate
//! builds `webrtc-sys`, whose build script downloads a prebuilt libwebrtc,
//! which the build machines of this repository cannot do. It was written
//! against the sources of `livekit` 0.10.0 / `libwebrtc` 0.3.55 and has never
//! been built here; build it with
//! `cargo build -p voice-agent-runtime --features livekit` on a machine that
//! can download libwebrtc.
//!
//! # How a session joins its room
//!
//! With `telephony.transport: livekit` the gateway dials the caller into
//! LiveKit SIP with the session in `X-VoiceAgent-*` headers; the
//! PhoneNumber's dispatch rule puts the call in a new room and its trunk
//! copies the headers onto the SIP participant's attributes. On LiveKit's
//! `participant_joined` webhook the gateway asks this pod to join that room
//! (`POST /api/sessions/{id}/livekit`), and the runtime does so with
//! [`join`] (or [`connect`] with a token of its own), which returns a
//! [`LiveKitTransport`] for the voice loop, exactly as a Media Streams
//! WebSocket becomes a [`crate::media::MediaStreams`].
//!
//! # Mapping onto [`MediaTransport`]
//!
//! - The first remote audio track (a SIP participant's preferred) is the
//!   caller: subscribing to it yields [`Inbound::Start`] (the voice loop
//!   greets on it), then its frames, downmixed, resampled to 8 kHz and cut
//!   into 20 ms chunks, become [`Inbound::Audio`].
//! - SIP DTMF ([`RoomEvent::SipDTMFReceived`]) becomes [`Inbound::Dtmf`].
//! - The caller leaving, or the room disconnecting, becomes [`Inbound::Stop`].
//! - [`MediaTransport::send_audio`] takes 8 kHz mu-law, decodes and resamples
//!   it to the published source's rate, and queues it (bounded, `try_send`)
//!   to a writer task that captures it into a [`NativeAudioSource`];
//!   [`MediaTransport::clear`] drops the queue and the source's buffer;
//!   marks have no LiveKit equivalent and are accepted as no-ops.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use livekit::options::TrackPublishOptions;
use livekit::track::{LocalAudioTrack, LocalTrack, RemoteAudioTrack, RemoteTrack, TrackSource};
use livekit::webrtc::audio_frame::AudioFrame;
use livekit::webrtc::audio_source::native::NativeAudioSource;
use livekit::webrtc::audio_source::{AudioSourceOptions, RtcAudioSource};
use livekit::webrtc::audio_stream::native::NativeAudioStream;
use livekit::{ParticipantKind, RemoteParticipant, Room, RoomEvent, RoomOptions};
use livekit_api::access_token::{AccessToken, VideoGrants};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use voice_agent_proto::audio::{Resampler, decode_mulaw_into};

use crate::media::{Inbound, MediaError, MediaTransport, OUTBOUND_QUEUE};

/// The rate of the audio exchanged with LiveKit (WebRTC's native Opus rate).
pub const LIVEKIT_RATE: u32 = 48_000;

/// The voice loop's rate: 8 kHz, as on the phone.
const PHONE_RATE: u32 = voice_agent_proto::mediastreams::SAMPLE_RATE;

/// 20 ms at 8 kHz: the size of each [`Inbound::Audio`] chunk.
const CHUNK: usize = (PHONE_RATE / 50) as usize;

/// Buffering inside the published source, in ms (a multiple of 10). The
/// voice loop paces playback at most 80 ms ahead, so this never fills in
/// normal operation, and `clear` discards at most this much.
const SOURCE_QUEUE_MS: u32 = 100;

/// Inbound events queued before caller audio is dropped (2 s of 20 ms).
const INBOUND_QUEUE: usize = 100;

/// The name of the agent's published track.
const TRACK_NAME: &str = "agent-voice";

/// The agent participant's identity in the room of session `session_id`.
pub fn agent_identity(session_id: &str) -> String {
    format!("agent-{session_id}")
}

/// A join token for `identity` in `room`: join, publish and subscribe in
/// that room only, signed with the project's LiveKit API key and secret.
pub fn agent_token(
    api_key: &str,
    api_secret: &str,
    room: &str,
    identity: &str,
) -> Result<String, MediaError> {
    AccessToken::with_api_key(api_key, api_secret)
        .with_identity(identity)
        .with_name("Voice Agent")
        .with_grants(VideoGrants {
            room_join: true,
            room: room.to_owned(),
            can_publish: Some(true),
            can_subscribe: Some(true),
            ..VideoGrants::default()
        })
        .to_jwt()
        .map_err(|e| MediaError::Connection(format!("livekit token: {e}")))
}

/// Joins `room` (where LiveKit's dispatch rule put the session's caller) on
/// the LiveKit server at `url` (`wss://…`) as `agent-{sessionId}`, with a
/// token signed with `LIVEKIT_API_KEY`/`LIVEKIT_API_SECRET` from the
/// environment.
pub async fn join(url: &str, room: &str, session_id: &str) -> Result<LiveKitTransport, MediaError> {
    use voice_agent_api::deploy::env::{LIVEKIT_API_KEY, LIVEKIT_API_SECRET};
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| MediaError::Connection(format!("{name} is not set")))
    };
    let token = agent_token(
        &var(LIVEKIT_API_KEY)?,
        &var(LIVEKIT_API_SECRET)?,
        room,
        &agent_identity(session_id),
    )?;
    connect(url, &token, room).await
}

/// Connects to the LiveKit server at `url` with `token` (which must grant
/// joining `room`), publishes the agent's audio track and starts listening
/// for the caller.
pub async fn connect(url: &str, token: &str, room: &str) -> Result<LiveKitTransport, MediaError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        MediaError::Connection(format!("livekit room {room}: {what}: {e}"))
    };
    let (room_handle, events) = Room::connect(url, token, RoomOptions::default())
        .await
        .map_err(|e| failed("connect", &e))?;
    let room_handle = Arc::new(room_handle);

    let source = NativeAudioSource::new(
        AudioSourceOptions::default(),
        LIVEKIT_RATE,
        1,
        SOURCE_QUEUE_MS,
    );
    let track =
        LocalAudioTrack::create_audio_track(TRACK_NAME, RtcAudioSource::Native(source.clone()));
    let options = TrackPublishOptions {
        source: TrackSource::Microphone,
        ..TrackPublishOptions::default()
    };
    if let Err(e) = room_handle
        .local_participant()
        .publish_track(LocalTrack::Audio(track), options)
        .await
    {
        let _ = room_handle.close().await;
        return Err(failed("publish", &e));
    }

    let (inbound_tx, inbound) = mpsc::channel(INBOUND_QUEUE);
    let events_task = tokio::spawn(pump_events(events, inbound_tx));

    let generation = Arc::new(AtomicU64::new(0));
    let (outbound, rx) = mpsc::channel(OUTBOUND_QUEUE);
    let writer = tokio::spawn(write_audio(rx, source.clone(), Arc::clone(&generation)));

    tracing::info!(room, "joined the LiveKit room");
    Ok(LiveKitTransport {
        room: room_handle,
        inbound,
        events: events_task,
        outbound,
        writer,
        source,
        generation,
        upsampler: new_resampler(PHONE_RATE, LIVEKIT_RATE),
        pcm: Vec::with_capacity(CHUNK),
    })
}

/// A session's LiveKit room, as a [`MediaTransport`] (see the module docs).
pub struct LiveKitTransport {
    room: Arc<Room>,
    inbound: mpsc::Receiver<Inbound>,
    events: JoinHandle<()>,
    /// 48 kHz PCM16 chunks for the writer, tagged with the clear generation.
    outbound: mpsc::Sender<(u64, Vec<i16>)>,
    writer: JoinHandle<()>,
    source: NativeAudioSource,
    /// Bumped by `clear`: chunks of an older generation are dropped.
    generation: Arc<AtomicU64>,
    upsampler: Resampler,
    pcm: Vec<i16>,
}

impl std::fmt::Debug for LiveKitTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveKitTransport")
            .field("room", &self.room.name())
            .finish_non_exhaustive()
    }
}

impl MediaTransport for LiveKitTransport {
    async fn recv(&mut self) -> Option<Result<Inbound, MediaError>> {
        self.inbound.recv().await.map(Ok)
    }

    fn send_audio(&mut self, mulaw: &[u8]) -> bool {
        self.pcm.clear();
        decode_mulaw_into(mulaw, &mut self.pcm);
        let mut out = Vec::with_capacity(self.pcm.len() * (LIVEKIT_RATE / PHONE_RATE) as usize);
        self.upsampler.process(&self.pcm, &mut out);
        if out.is_empty() {
            return true;
        }
        let generation = self.generation.load(Ordering::Acquire);
        self.outbound.try_send((generation, out)).is_ok()
    }

    fn send_mark(&mut self, _name: &str) -> bool {
        // LiveKit has no playback marks; the voice loop paces playback itself.
        true
    }

    fn clear(&mut self) -> bool {
        // Chunks still queued carry the old generation and are skipped by the
        // writer; the source drops what it buffered.
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.source.clear_buffer();
        self.upsampler.reset();
        true
    }

    async fn close(self) {
        drop(self.outbound);
        // Let the last queued audio (e.g. a goodbye) reach the room.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.writer).await;
        if let Err(e) = self.room.close().await {
            tracing::debug!(error = %e, "closing the LiveKit room connection");
        }
        self.events.abort();
    }
}

fn new_resampler(from: u32, to: u32) -> Resampler {
    // 8 kHz <-> 48 kHz (and the usual WebRTC rates) are supported pairs.
    Resampler::new(from, to).expect("supported resampling rates")
}

/// Captures outbound chunks into the published source, one at a time;
/// `capture_frame` waits while the source's buffer is full.
async fn write_audio(
    mut rx: mpsc::Receiver<(u64, Vec<i16>)>,
    source: NativeAudioSource,
    generation: Arc<AtomicU64>,
) {
    while let Some((tagged, samples)) = rx.recv().await {
        if tagged != generation.load(Ordering::Acquire) {
            continue; // Cleared while queued.
        }
        let frame = AudioFrame {
            samples_per_channel: samples.len() as u32,
            data: Cow::Owned(samples),
            sample_rate: LIVEKIT_RATE,
            num_channels: 1,
        };
        if let Err(e) = source.capture_frame(&frame).await {
            tracing::warn!(error = %e, "capturing agent audio into LiveKit");
        }
        // A clear that raced with this capture: drop what it left buffered.
        if tagged != generation.load(Ordering::Acquire) {
            source.clear_buffer();
        }
    }
}

/// Turns room events into [`Inbound`] events until the room disconnects or
/// the caller leaves.
async fn pump_events(mut events: mpsc::UnboundedReceiver<RoomEvent>, tx: mpsc::Sender<Inbound>) {
    // The caller's identity, fixed by the first audio track we take.
    let mut caller: Option<String> = None;
    // The task reading the caller's current audio track.
    let mut audio: Option<JoinHandle<()>> = None;
    while let Some(event) = events.recv().await {
        match event {
            RoomEvent::TrackSubscribed {
                track: RemoteTrack::Audio(track),
                participant,
                ..
            } => {
                let identity = participant.identity().as_str().to_owned();
                match &caller {
                    Some(c) if *c != identity => continue,
                    None if !is_caller(&participant) => continue,
                    _ => {}
                }
                tracing::info!(caller = %identity, track = %track.sid(), "caller audio subscribed");
                if caller.is_none() {
                    let start = Inbound::Start {
                        stream_sid: track.sid().as_str().to_owned(),
                        call_sid: identity.clone(),
                    };
                    if tx.send(start).await.is_err() {
                        break;
                    }
                    caller = Some(identity);
                }
                // A re-subscription (e.g. after a reconnect) replaces the reader.
                if let Some(old) = audio.replace(tokio::spawn(read_audio(track, tx.clone()))) {
                    old.abort();
                }
            }
            RoomEvent::TrackUnsubscribed {
                track: RemoteTrack::Audio(_),
                participant,
                ..
            } => {
                if caller.as_deref() == Some(participant.identity().as_str())
                    && let Some(old) = audio.take()
                {
                    old.abort();
                }
            }
            RoomEvent::ParticipantDisconnected(participant) => {
                if caller.as_deref() == Some(participant.identity().as_str()) {
                    tracing::info!("the caller left the LiveKit room");
                    break;
                }
            }
            RoomEvent::SipDTMFReceived { code, digit, .. } => {
                if let Some(key) = dtmf_key(code, digit.as_deref())
                    && tx.send(Inbound::Dtmf(key)).await.is_err()
                {
                    break;
                }
            }
            RoomEvent::Disconnected { reason } => {
                tracing::info!(?reason, "disconnected from the LiveKit room");
                break;
            }
            _ => {}
        }
    }
    if let Some(old) = audio {
        old.abort();
    }
    let _ = tx.send(Inbound::Stop).await;
}

/// Whether `participant` is the caller: the SIP participant LiveKit SIP
/// adds, or (for tests and softphones) any standard participant.
fn is_caller(participant: &RemoteParticipant) -> bool {
    matches!(
        participant.kind(),
        ParticipantKind::Sip | ParticipantKind::Standard
    )
}

/// The key of a SIP DTMF event: LiveKit's `digit` when present, else the
/// RFC 4733 event code (0–9, 10 `*`, 11 `#`, 12–15 `A`–`D`).
fn dtmf_key(code: u32, digit: Option<&str>) -> Option<char> {
    if let Some(digit) = digit {
        let mut chars = digit.chars();
        if let (Some(c), None) = (chars.next(), chars.next()) {
            return Some(c);
        }
    }
    match code {
        0..=9 => char::from_digit(code, 10),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + (code - 12) as u8) as char),
        _ => None,
    }
}

/// Reads the caller's track: downmix, resample to 8 kHz, 20 ms chunks.
async fn read_audio(track: RemoteAudioTrack, tx: mpsc::Sender<Inbound>) {
    let mut stream = NativeAudioStream::new(track.rtc_track(), LIVEKIT_RATE as i32, 1);
    let mut resampler: Option<Resampler> = None;
    let mut mono: Vec<i16> = Vec::new();
    let mut pending: Vec<i16> = Vec::with_capacity(CHUNK * 2);
    while let Some(frame) = stream.next().await {
        let channels = frame.num_channels.max(1) as usize;
        mono.clear();
        if channels == 1 {
            mono.extend_from_slice(&frame.data);
        } else {
            mono.extend(
                frame.data.chunks_exact(channels).map(|c| {
                    (c.iter().map(|&s| i32::from(s)).sum::<i32>() / channels as i32) as i16
                }),
            );
        }
        // WebRTC delivers the rate asked for, but follow the frame if not.
        if resampler
            .as_ref()
            .is_none_or(|r| r.from_rate() != frame.sample_rate)
        {
            match Resampler::new(frame.sample_rate, PHONE_RATE) {
                Ok(r) => resampler = Some(r),
                Err(e) => {
                    tracing::warn!(rate = frame.sample_rate, error = %e, "caller audio rate");
                    continue;
                }
            }
        }
        if let Some(r) = resampler.as_mut() {
            r.process(&mono, &mut pending);
        }
        let mut start = 0;
        while pending.len() - start >= CHUNK {
            let chunk = pending[start..start + CHUNK].to_vec();
            start += CHUNK;
            // Drop audio rather than stall, as the Media Streams path does.
            if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(Inbound::Audio(chunk)) {
                return;
            }
        }
        pending.drain(..start);
    }
}
