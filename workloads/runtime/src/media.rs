//! Media transports behind one thin trait: how caller audio arrives and agent
//! audio leaves. Twilio Media Streams (the default) is implemented here over
//! the session's WebSocket; LiveKit rooms sit behind the `livekit` cargo
//! feature because the RTC crate cannot build everywhere.
//!
//! Outbound messages go through a bounded queue to a writer task, so the voice
//! loop never waits on the socket: audio that does not fit is dropped and
//! counted (the caller hears a glitch rather than the call stalling).

use std::future::Future;

use axum::extract::ws::{Message as WsMessage, WebSocket};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use voice_agent_proto::audio::decode_mulaw_into;
use voice_agent_proto::mediastreams::{MAX_MESSAGE_BYTES, Message};

/// Outbound messages queued before audio is dropped: 2 s of 20 ms frames.
pub const OUTBOUND_QUEUE: usize = 100;

/// Something the caller's side sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// The stream started (Media Streams `start`).
    Start {
        /// The stream id.
        stream_sid: String,
        /// The call.
        call_sid: String,
    },
    /// Caller audio: mono PCM16 at 8 kHz.
    Audio(Vec<i16>),
    /// A touch-tone key.
    Dtmf(char),
    /// A mark the caller's side reached (played or cleared).
    Mark(String),
    /// The caller's side ended the stream.
    Stop,
}

/// A transport error; the call ends with `TransportError`.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// A frame that breaks the protocol.
    #[error("malformed media message: {0}")]
    Malformed(String),
    /// The connection failed.
    #[error("media connection failed: {0}")]
    Connection(String),
}

/// A media transport: inbound events, outbound audio/marks/clear.
pub trait MediaTransport: Send {
    /// The next inbound event; `None` once the connection is closed.
    fn recv(&mut self) -> impl Future<Output = Option<Result<Inbound, MediaError>>> + Send;
    /// Queues 8 kHz mu-law audio for the caller; false if the queue was full
    /// and the audio dropped.
    fn send_audio(&mut self, mulaw: &[u8]) -> bool;
    /// Queues a mark after the audio sent so far.
    fn send_mark(&mut self, name: &str) -> bool;
    /// Drops all audio buffered on the caller's side at once (barge-in).
    fn clear(&mut self) -> bool;
    /// Closes the connection (hang-up from our side).
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// Twilio Media Streams over an accepted WebSocket (the runtime's
/// `/api/sessions/{id}/media`, reached directly or through the gateway).
pub struct MediaStreams {
    inbound: futures::stream::SplitStream<WebSocket>,
    outbound: mpsc::Sender<String>,
    writer: tokio::task::JoinHandle<()>,
    stream_sid: String,
    pcm: Vec<i16>,
    mulaw: Vec<u8>,
    b64: String,
}

impl MediaStreams {
    /// Wraps an accepted WebSocket and starts its writer task.
    pub fn new(socket: WebSocket) -> Self {
        let (mut sink, inbound) = socket.split();
        let (outbound, mut rx) = mpsc::channel::<String>(OUTBOUND_QUEUE);
        let writer = tokio::spawn(async move {
            while let Some(text) = rx.recv().await {
                if sink.send(WsMessage::Text(text.into())).await.is_err() {
                    return;
                }
            }
            let _ = sink.send(WsMessage::Close(None)).await;
            let _ = sink.close().await;
        });
        Self {
            inbound,
            outbound,
            writer,
            stream_sid: String::new(),
            pcm: Vec::with_capacity(160),
            mulaw: Vec::with_capacity(160),
            b64: String::with_capacity(256),
        }
    }

    fn parse(&mut self, text: &str) -> Result<Option<Inbound>, MediaError> {
        let message = Message::parse(text).map_err(|e| MediaError::Malformed(e.to_string()))?;
        Ok(match message {
            Message::Connected { .. } => None,
            Message::Start {
                start, stream_sid, ..
            } => {
                self.stream_sid = stream_sid.clone();
                Some(Inbound::Start {
                    stream_sid,
                    call_sid: start.call_sid,
                })
            }
            Message::Media { media, .. } => {
                // Only the caller's track is audio for us.
                if media.track.as_deref().is_some_and(|t| t != "inbound") {
                    return Ok(None);
                }
                self.mulaw.clear();
                voice_agent_proto::base64::decode_into(&media.payload, &mut self.mulaw)
                    .map_err(|e| MediaError::Malformed(e.to_string()))?;
                self.pcm.clear();
                decode_mulaw_into(&self.mulaw, &mut self.pcm);
                Some(Inbound::Audio(self.pcm.clone()))
            }
            Message::Dtmf { dtmf, .. } => {
                let mut chars = dtmf.digit.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => Some(Inbound::Dtmf(c)),
                    _ => {
                        return Err(MediaError::Malformed(format!(
                            "dtmf digit {:?} is not one key",
                            dtmf.digit
                        )));
                    }
                }
            }
            Message::Mark { mark, .. } => Some(Inbound::Mark(mark.name)),
            Message::Stop { .. } => Some(Inbound::Stop),
            // `clear` only flows towards Twilio.
            Message::Clear { .. } => {
                return Err(MediaError::Malformed("unexpected inbound clear".into()));
            }
        })
    }

    fn queue(&self, message: &Message) -> bool {
        self.outbound.try_send(message.to_json()).is_ok()
    }
}

impl MediaTransport for MediaStreams {
    async fn recv(&mut self) -> Option<Result<Inbound, MediaError>> {
        loop {
            let frame = match self.inbound.next().await? {
                Ok(frame) => frame,
                Err(e) => return Some(Err(MediaError::Connection(e.to_string()))),
            };
            match frame {
                WsMessage::Text(text) => {
                    if text.len() > MAX_MESSAGE_BYTES {
                        return Some(Err(MediaError::Malformed("oversized message".into())));
                    }
                    match self.parse(text.as_str()) {
                        Ok(Some(event)) => return Some(Ok(event)),
                        Ok(None) => continue,
                        Err(e) => return Some(Err(e)),
                    }
                }
                WsMessage::Close(_) => return None,
                WsMessage::Binary(_) => {
                    return Some(Err(MediaError::Malformed(
                        "binary frame; Media Streams sends JSON text".into(),
                    )));
                }
                WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
            }
        }
    }

    fn send_audio(&mut self, mulaw: &[u8]) -> bool {
        self.b64.clear();
        voice_agent_proto::base64::encode_into(mulaw, &mut self.b64);
        let message = Message::outbound_media(&self.stream_sid, std::mem::take(&mut self.b64));
        let ok = self.queue(&message);
        if let Message::Media { media, .. } = message {
            // Keep the buffer's capacity for the next frame.
            self.b64 = media.payload;
        }
        ok
    }

    fn send_mark(&mut self, name: &str) -> bool {
        self.queue(&Message::outbound_mark(&self.stream_sid, name))
    }

    fn clear(&mut self) -> bool {
        self.queue(&Message::clear(&self.stream_sid))
    }

    async fn close(self) {
        drop(self.outbound);
        // The writer sends a close frame once the queue is flushed.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.writer).await;
    }
}
