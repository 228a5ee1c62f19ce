//! `GET /twilio/media`: the Twilio Media Streams WebSocket, proxied to the
//! runtime pod that holds the call's session.
//!
//! Twilio may connect to any gateway replica, so everything the proxy needs
//! comes from the stream's `start` message: the custom parameters
//! `sessionId`, `mediaUrl` and `token` that the voice webhook put into the
//! TwiML. The token (HMAC-SHA256 keyed by the Twilio auth token) proves the
//! pair came from a gateway; without a valid one the socket is closed with a
//! policy-violation frame and nothing is contacted.
//!
//! Once connected, frames are forwarded one at a time in both directions.
//! Each direction awaits its sink before reading the next frame, so a slow
//! side slows the other down instead of growing a buffer. When either side
//! closes or fails, the other is closed with the same code and reason, and
//! both close handshakes get a moment to finish.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame as AxumCloseFrame, Message as AxumMessage, WebSocket};
use futures::future::{Either, select};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use voice_agent_proto::mediastreams::{MAX_MESSAGE_BYTES, Message, SESSION_PARAMETER};

use crate::State;
use crate::exporter::{Outcome, Route};
use crate::runtime::{is_session_id, pod_base_url};
use crate::signature;

/// Name of the `<Parameter>` carrying the runtime's media URL.
pub const MEDIA_URL_PARAMETER: &str = "mediaUrl";
/// Name of the `<Parameter>` carrying the media token.
pub const TOKEN_PARAMETER: &str = "token";
/// How long a closing side gets to finish its close handshake.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// WebSocket close code: going away (a peer vanished without a close frame).
pub const CLOSE_AWAY: u16 = 1001;
/// WebSocket close code: policy violation (bad token, malformed start).
pub const CLOSE_POLICY: u16 = 1008;
/// WebSocket close code: internal error (the runtime cannot be reached).
pub const CLOSE_ERROR: u16 = 1011;

type RuntimeSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Counts a media proxy while it lives.
struct Active<'a>(&'a State);

impl<'a> Active<'a> {
    fn new(state: &'a State) -> Self {
        state.proxy_started();
        Active(state)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.proxy_ended();
    }
}

/// The parameters of a verified `start`.
#[derive(Debug)]
struct Target {
    session_id: String,
    media_url: String,
}

/// Why the opening of a stream was refused.
#[derive(Debug)]
enum Refusal {
    /// Close the client with this code and reason.
    Close(u16, &'static str),
    /// The client went away.
    Gone,
}

/// Serves one Media Streams WebSocket until either side ends it.
pub(crate) async fn serve(mut socket: WebSocket, state: Arc<State>) {
    let _active = Active::new(&state);
    let config = state.config();
    let opening = match read_opening(&mut socket, config.media_start_timeout).await {
        Ok(opening) => opening,
        Err(refusal) => {
            state
                .exporter()
                .request(Route::TwilioMedia, Outcome::Invalid);
            refuse(socket, refusal).await;
            return;
        }
    };
    let target = match verify(&opening.start, config.twilio_auth_token.expose()) {
        Some(target) => target,
        None => {
            tracing::warn!(
                call_sid = %opening.call_sid,
                "media stream refused: missing or invalid stream token"
            );
            state
                .exporter()
                .request(Route::TwilioMedia, Outcome::Unauthorized);
            refuse(socket, Refusal::Close(CLOSE_POLICY, "invalid stream token")).await;
            return;
        }
    };
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(voice_agent_proto::mediastreams::WS_READ_BUFFER_BYTES)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let connect = tokio_tungstenite::connect_async_with_config(
        target.media_url.as_str(),
        Some(ws_config),
        true,
    );
    let mut runtime = match tokio::time::timeout(config.media_connect_timeout, connect).await {
        Ok(Ok((runtime, _response))) => runtime,
        Ok(Err(error)) => {
            tracing::warn!(session_id = %target.session_id, %error, "runtime media connect failed");
            state
                .exporter()
                .request(Route::TwilioMedia, Outcome::Failed);
            refuse(socket, Refusal::Close(CLOSE_ERROR, "runtime unavailable")).await;
            return;
        }
        Err(_) => {
            tracing::warn!(session_id = %target.session_id, "runtime media connect timed out");
            state
                .exporter()
                .request(Route::TwilioMedia, Outcome::Failed);
            refuse(socket, Refusal::Close(CLOSE_ERROR, "runtime unavailable")).await;
            return;
        }
    };
    // The runtime speaks the same protocol: it gets Twilio's opening
    // messages verbatim.
    for text in opening.connected.into_iter().chain([opening.start_text]) {
        if let Err(error) = runtime.send(WsMessage::Text(Utf8Bytes::from(text))).await {
            tracing::warn!(session_id = %target.session_id, %error, "runtime media socket failed");
            state
                .exporter()
                .request(Route::TwilioMedia, Outcome::Failed);
            refuse(socket, Refusal::Close(CLOSE_ERROR, "runtime unavailable")).await;
            return;
        }
        state.exporter().media_frame(true);
    }
    state.exporter().request(Route::TwilioMedia, Outcome::Ok);
    tracing::info!(
        session_id = %target.session_id,
        call_sid = %opening.call_sid,
        "media stream connected to the runtime"
    );
    proxy(socket, runtime, &state, &target).await;
}

/// `connected` (optional, as Twilio sends it first) and `start`.
struct Opening {
    connected: Option<String>,
    start_text: String,
    start: voice_agent_proto::mediastreams::StartMeta,
    call_sid: String,
}

async fn read_opening(socket: &mut WebSocket, limit: Duration) -> Result<Opening, Refusal> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut connected = None;
    loop {
        let message = match tokio::time::timeout_at(deadline, socket.recv()).await {
            Err(_) => return Err(Refusal::Close(CLOSE_POLICY, "no start message in time")),
            Ok(None | Some(Err(_))) => return Err(Refusal::Gone),
            Ok(Some(Ok(message))) => message,
        };
        let text = match message {
            AxumMessage::Text(text) => text,
            AxumMessage::Ping(_) | AxumMessage::Pong(_) => continue,
            AxumMessage::Close(_) => return Err(Refusal::Gone),
            AxumMessage::Binary(_) => {
                return Err(Refusal::Close(
                    CLOSE_POLICY,
                    "binary frames are not Media Streams",
                ));
            }
        };
        match Message::parse(text.as_str()) {
            Ok(Message::Connected { .. }) if connected.is_none() => {
                connected = Some(text.as_str().to_owned());
            }
            Ok(Message::Start { start, .. }) => {
                return Ok(Opening {
                    connected,
                    start_text: text.as_str().to_owned(),
                    call_sid: start.call_sid.clone(),
                    start,
                });
            }
            Ok(_) => {
                return Err(Refusal::Close(
                    CLOSE_POLICY,
                    "expected connected, then start",
                ));
            }
            Err(_) => {
                return Err(Refusal::Close(
                    CLOSE_POLICY,
                    "malformed Media Streams message",
                ));
            }
        }
    }
}

/// The session and media URL of a `start` whose token verifies with `key`.
fn verify(start: &voice_agent_proto::mediastreams::StartMeta, key: &str) -> Option<Target> {
    let params = &start.custom_parameters;
    let session_id = params.get(SESSION_PARAMETER)?;
    let media_url = params.get(MEDIA_URL_PARAMETER)?;
    let token = params.get(TOKEN_PARAMETER)?;
    (is_session_id(session_id)
        && pod_base_url(media_url).is_some()
        && signature::verify_media_token(key, session_id, media_url, token))
    .then(|| Target {
        session_id: session_id.clone(),
        media_url: media_url.clone(),
    })
}

async fn refuse(mut socket: WebSocket, refusal: Refusal) {
    if let Refusal::Close(code, reason) = refusal {
        let frame = AxumCloseFrame {
            code,
            reason: reason.into(),
        };
        if socket.send(AxumMessage::Close(Some(frame))).await.is_ok() {
            // Let the client answer the close; bounded.
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                while let Some(Ok(_)) = socket.recv().await {}
            })
            .await;
        }
    }
}

/// How one direction of the proxy ended.
#[derive(Debug)]
enum End {
    /// The source sent a close frame (code and reason, if any).
    Closed(Option<(u16, String)>),
    /// The source stream ended without a close frame.
    Vanished,
    /// Reading the source failed.
    ReadError(String),
    /// Writing to the other side failed.
    WriteError(String),
}

async fn proxy(client: WebSocket, runtime: RuntimeSocket, state: &State, target: &Target) {
    let (client_tx, client_rx) = client.split();
    let (runtime_tx, runtime_rx) = runtime.split();
    let inbound = Box::pin(pump_inbound(client_rx, runtime_tx, state));
    let outbound = Box::pin(pump_outbound(runtime_rx, client_tx, state));
    let (first, rest, by) = match select(inbound, outbound).await {
        Either::Left((end, rest)) => (end, Either::Left(rest), "twilio"),
        Either::Right((end, rest)) => (end, Either::Right(rest), "runtime"),
    };
    log_end(target, by, &first);
    // The other direction ends once the close handshake completes.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        match rest {
            Either::Left(outbound) => outbound.await,
            Either::Right(inbound) => inbound.await,
        }
    })
    .await;
}

fn log_end(target: &Target, by: &str, end: &End) {
    let session_id = target.session_id.as_str();
    match end {
        End::Closed(Some((code, reason))) => {
            tracing::info!(session_id, by, code, reason = %reason, "media stream closed");
        }
        End::Closed(None) => tracing::info!(session_id, by, "media stream closed"),
        End::Vanished => tracing::info!(session_id, by, "media stream ended without a close"),
        End::ReadError(error) => {
            tracing::warn!(session_id, by, error = %error, "media stream failed");
        }
        End::WriteError(error) => {
            tracing::warn!(session_id, by, error = %error, "forwarding a media frame failed");
        }
    }
}

/// Twilio → runtime.
async fn pump_inbound(
    mut from: SplitStream<WebSocket>,
    mut to: SplitSink<RuntimeSocket, WsMessage>,
    state: &State,
) -> End {
    loop {
        let message = match from.next().await {
            None => {
                let _ = to.send(close_ws(CLOSE_AWAY, "caller stream ended")).await;
                return End::Vanished;
            }
            Some(Err(error)) => {
                let _ = to.send(close_ws(CLOSE_AWAY, "caller stream failed")).await;
                return End::ReadError(error.to_string());
            }
            Some(Ok(message)) => message,
        };
        let forwarded = match message {
            AxumMessage::Text(text) => WsMessage::Text(Utf8Bytes::from(text.as_str())),
            AxumMessage::Binary(bytes) => WsMessage::Binary(bytes),
            // Each hop answers its own pings.
            AxumMessage::Ping(_) | AxumMessage::Pong(_) => continue,
            AxumMessage::Close(frame) => {
                let frame = frame.map(|f| (f.code, f.reason.as_str().to_owned()));
                let close = match &frame {
                    Some((code, reason)) => close_ws(*code, reason),
                    None => WsMessage::Close(None),
                };
                let _ = to.send(close).await;
                // Reading on sends the queued close reply to the caller.
                let _ = tokio::time::timeout(CLOSE_GRACE, from.next()).await;
                return End::Closed(frame);
            }
        };
        if let Err(error) = to.send(forwarded).await {
            return End::WriteError(error.to_string());
        }
        state.exporter().media_frame(true);
    }
}

/// Runtime → Twilio.
async fn pump_outbound(
    mut from: SplitStream<RuntimeSocket>,
    mut to: SplitSink<WebSocket, AxumMessage>,
    state: &State,
) -> End {
    loop {
        let message = match from.next().await {
            None => {
                let _ = to
                    .send(close_axum(CLOSE_ERROR, "runtime stream ended"))
                    .await;
                return End::Vanished;
            }
            Some(Err(error)) => {
                let _ = to
                    .send(close_axum(CLOSE_ERROR, "runtime stream failed"))
                    .await;
                return End::ReadError(error.to_string());
            }
            Some(Ok(message)) => message,
        };
        let forwarded = match message {
            WsMessage::Text(text) => AxumMessage::Text(text.as_str().into()),
            WsMessage::Binary(bytes) => AxumMessage::Binary(bytes),
            WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => continue,
            WsMessage::Close(frame) => {
                let frame = frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned()));
                let close = match &frame {
                    Some((code, reason)) => close_axum(*code, reason),
                    None => AxumMessage::Close(None),
                };
                let _ = to.send(close).await;
                // Reading on sends the queued close reply to the runtime.
                let _ = tokio::time::timeout(CLOSE_GRACE, from.next()).await;
                return End::Closed(frame);
            }
        };
        if let Err(error) = to.send(forwarded).await {
            return End::WriteError(error.to_string());
        }
        state.exporter().media_frame(false);
    }
}

fn close_ws(code: u16, reason: &str) -> WsMessage {
    WsMessage::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from(reason),
    }))
}

fn close_axum(code: u16, reason: &str) -> AxumMessage {
    AxumMessage::Close(Some(AxumCloseFrame {
        code,
        reason: reason.into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use voice_agent_proto::mediastreams::StartMeta;

    fn start(params: &[(&str, &str)]) -> StartMeta {
        StartMeta {
            account_sid: "AC1".into(),
            stream_sid: "MZ1".into(),
            call_sid: "CA1".into(),
            tracks: vec!["inbound".into()],
            custom_parameters: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            media_format: None,
        }
    }

    #[test]
    fn start_parameters_must_carry_a_valid_token() {
        let url = "ws://10.0.0.7:8080/api/sessions/s-1/media";
        let token = signature::media_token("k", "s-1", url);
        let ok = start(&[("sessionId", "s-1"), ("mediaUrl", url), ("token", &token)]);
        let target = verify(&ok, "k").expect("valid");
        assert_eq!(
            (target.session_id.as_str(), target.media_url.as_str()),
            ("s-1", url)
        );
        assert!(verify(&ok, "other").is_none());
        assert!(verify(&start(&[("sessionId", "s-1"), ("mediaUrl", url)]), "k").is_none());
        let evil = "ws://169.254.169.254/latest";
        let forged = start(&[("sessionId", "s-1"), ("mediaUrl", evil), ("token", &token)]);
        assert!(verify(&forged, "k").is_none());
        // A correctly signed but unusable URL is refused too.
        let http = "http://10.0.0.7/x";
        let t = signature::media_token("k", "s-1", http);
        assert!(
            verify(
                &start(&[("sessionId", "s-1"), ("mediaUrl", http), ("token", &t)]),
                "k"
            )
            .is_none()
        );
    }
}
