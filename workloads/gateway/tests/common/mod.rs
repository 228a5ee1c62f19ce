//! Test support: a stand-in runtime (sessions API and media WebSocket as the
//! runtime contract says), the fake Kubernetes API with the Call CRD, a
//! Twilio signer and a running gateway.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use kube::CustomResourceExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use voice_agent_api::Call;
use voice_agent_api::deploy::ComponentConfig;
use voice_agent_gateway::{CallRecorder, Config, KubeCallRecorder, State, signature};
use voice_agent_kube_fake::FakeApi;
use voice_agent_proto::{CreateSessionRequest, CreateSessionResponse};

pub const AUTH_TOKEN: &str = "twilio-test-token-12345";
pub const NAMESPACE: &str = "shop";
pub const AGENT: &str = "support";
pub const CALLER: &str = "+15551230142";
pub const AGENT_NUMBER: &str = "+15559870000";
pub const LIVEKIT_KEY: &str = "APItestkey";
pub const LIVEKIT_SECRET: &str = "livekit-test-secret-that-is-long-enough";

/// How the stand-in runtime answers `POST /api/sessions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sessions {
    /// 201 with a session.
    Accept,
    /// 503, every time.
    Unavailable,
    /// Sleep this long, then accept.
    Slow(Duration),
}

/// One media WebSocket the runtime accepted: what it receives, and a way
/// to send to the caller (a `Close` ends it).
pub struct RuntimeMedia {
    pub session_id: String,
    pub received: mpsc::UnboundedReceiver<Message>,
    pub send: mpsc::UnboundedSender<Message>,
}

#[derive(Default)]
struct RuntimeState {
    sessions: Mutex<Vec<CreateSessionRequest>>,
    deletes: Mutex<Vec<String>>,
    media_connects: Mutex<usize>,
    /// `(session id, room)` of every `POST /api/sessions/{id}/livekit`.
    joins: Mutex<Vec<(String, String)>>,
}

/// The stand-in runtime.
pub struct Runtime {
    pub addr: SocketAddr,
    state: Arc<RuntimeState>,
    behaviour: Arc<Mutex<Sessions>>,
    media: tokio::sync::Mutex<mpsc::UnboundedReceiver<RuntimeMedia>>,
}

impl Runtime {
    pub async fn start(behaviour: Sessions) -> Runtime {
        let state = Arc::new(RuntimeState::default());
        let behaviour = Arc::new(Mutex::new(behaviour));
        let (media_tx, media_rx) = mpsc::unbounded_channel();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = (Arc::clone(&state), Arc::clone(&behaviour), media_tx, addr);
        let app = axum::Router::new()
            .route("/api/sessions", post(create_session))
            .route("/api/sessions/{id}", delete(delete_session))
            .route("/api/sessions/{id}/media", get(media))
            .route("/api/sessions/{id}/livekit", post(join_room))
            .with_state(Arc::new(shared));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Runtime {
            addr,
            state,
            behaviour,
            media: tokio::sync::Mutex::new(media_rx),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, behaviour: Sessions) {
        *self.behaviour.lock().expect("lock") = behaviour;
    }

    /// Every `POST /api/sessions` received.
    pub fn sessions(&self) -> Vec<CreateSessionRequest> {
        self.state.sessions.lock().expect("lock").clone()
    }

    /// Session ids of every `DELETE /api/sessions/{id}` received.
    pub fn deletes(&self) -> Vec<String> {
        self.state.deletes.lock().expect("lock").clone()
    }

    /// `(session id, room)` of every LiveKit join request received.
    pub fn joins(&self) -> Vec<(String, String)> {
        self.state.joins.lock().expect("lock").clone()
    }

    pub fn media_connects(&self) -> usize {
        *self.state.media_connects.lock().expect("lock")
    }

    /// Waits for the next media WebSocket.
    pub async fn next_media(&self) -> RuntimeMedia {
        tokio::time::timeout(Duration::from_secs(5), self.media.lock().await.recv())
            .await
            .expect("a media connection within 5 s")
            .expect("runtime open")
    }

    /// Waits until `n` DELETEs arrived.
    pub async fn wait_deletes(&self, n: usize) -> Vec<String> {
        eventually(|| {
            let d = self.deletes();
            (d.len() >= n).then_some(d)
        })
        .await
    }
}

type Shared = Arc<(
    Arc<RuntimeState>,
    Arc<Mutex<Sessions>>,
    mpsc::UnboundedSender<RuntimeMedia>,
    SocketAddr,
)>;

async fn create_session(
    AxumState(shared): AxumState<Shared>,
    Json(request): Json<CreateSessionRequest>,
) -> Response {
    let (state, behaviour, _, addr) = &*shared;
    let n = {
        let mut sessions = state.sessions.lock().expect("lock");
        sessions.push(request);
        sessions.len()
    };
    let behaviour = *behaviour.lock().expect("lock");
    match behaviour {
        Sessions::Unavailable => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Sessions::Slow(d) => tokio::time::sleep(d).await,
        Sessions::Accept => {}
    }
    let id = format!("s-{n}");
    (
        StatusCode::CREATED,
        Json(CreateSessionResponse {
            media_url: format!("ws://{addr}/api/sessions/{id}/media"),
            session_id: id,
            pod: "support-runtime-0".into(),
        }),
    )
        .into_response()
}

async fn delete_session(
    AxumState(shared): AxumState<Shared>,
    Path(id): Path<String>,
) -> StatusCode {
    shared.0.deletes.lock().expect("lock").push(id);
    StatusCode::NO_CONTENT
}

async fn join_room(
    AxumState(shared): AxumState<Shared>,
    Path(id): Path<String>,
    Json(request): Json<voice_agent_proto::JoinRoomRequest>,
) -> StatusCode {
    shared
        .0
        .joins
        .lock()
        .expect("lock")
        .push((id, request.room));
    StatusCode::ACCEPTED
}

async fn media(
    AxumState(shared): AxumState<Shared>,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    *shared.0.media_connects.lock().expect("lock") += 1;
    let to_test = shared.2.clone();
    upgrade.on_upgrade(move |socket| runtime_media(socket, id, to_test))
}

async fn runtime_media(
    mut socket: WebSocket,
    session_id: String,
    to_test: mpsc::UnboundedSender<RuntimeMedia>,
) {
    let (received_tx, received) = mpsc::unbounded_channel();
    let (send, mut outgoing) = mpsc::unbounded_channel::<Message>();
    let _ = to_test.send(RuntimeMedia {
        session_id,
        received,
        send,
    });
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(message)) => {
                    let close = matches!(message, Message::Close(_));
                    let _ = received_tx.send(message);
                    if close {
                        return;
                    }
                }
                _ => return,
            },
            out = outgoing.recv() => match out {
                Some(message) => {
                    let close = matches!(message, Message::Close(_));
                    if socket.send(message).await.is_err() {
                        return;
                    }
                    if close {
                        // Wait for the peer's close reply, then stop.
                        while let Some(Ok(m)) = socket.recv().await {
                            let _ = received_tx.send(m);
                        }
                        return;
                    }
                }
                None => return,
            },
        }
    }
}

/// Polls `check` until it yields, for up to 5 s.
pub async fn eventually<T>(mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The fake Kubernetes API with the Call CRD, and a recorder writing to it.
pub async fn kube() -> (FakeApi, Arc<dyn CallRecorder>) {
    let fake = FakeApi::start().await;
    fake.register_crd(&Call::crd());
    let client = kube::Client::try_from(kube::Config::new(fake.kube_config_url())).expect("client");
    let recorder = KubeCallRecorder::new(client, NAMESPACE, Duration::from_secs(5));
    (fake, Arc::new(recorder))
}

/// The Calls in the fake API.
pub fn calls(fake: &FakeApi) -> Vec<serde_json::Value> {
    fake.objects("calls")
}

/// Options of a test gateway.
pub struct Options {
    pub runtime_url: String,
    pub livekit_url: Option<String>,
    pub bound_numbers: Vec<String>,
}

pub fn component(options: &Options, public_url: &str) -> ComponentConfig {
    let livekit = match &options.livekit_url {
        Some(url) => format!(
            r#"
  transport: livekit
  livekit:
    url: {url}
    apiKeySecretRef: {{name: livekit, key: apiKey}}
    apiSecretSecretRef: {{name: livekit, key: apiSecret}}
    sipUri: sip:abc.sip.livekit.cloud"#
        ),
        None => String::new(),
    };
    let bound = serde_json::to_string(&options.bound_numbers).expect("json");
    let yaml = format!(
        r#"
voiceAgent: {AGENT}
namespace: {NAMESPACE}
persona:
  greeting: "Hi, thanks for calling."
  instructions: "Be brief."
  language: en-US
  goodbye: "Goodbye!"
llm: {{provider: local}}
stt: {{}}
tts: {{}}
knowledge: {{}}
database: false
telephony:
  publicUrl: {public_url}
  twilio:
    authTokenSecretRef: {{name: twilio, key: authToken}}{livekit}
runtime: {{maxCallsPerPod: 20, drainTimeoutSeconds: 300}}
endpoints:
  gateway: http://support-gateway:8080
  runtime: {runtime}
  agent: http://support-agent:8080
  tts: http://support-tts:8080
boundNumbers: {bound}
"#,
        runtime = options.runtime_url
    );
    ComponentConfig::from_yaml(&yaml).expect("component yaml")
}

/// A running gateway.
pub struct Gateway {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
    pub http: reqwest::Client,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Gateway {
    /// Starts a gateway with test timeouts; `adjust` may change the config
    /// and `recorder` records Calls.
    pub async fn start(
        options: Options,
        recorder: Arc<dyn CallRecorder>,
        adjust: impl FnOnce(&mut Config),
    ) -> Gateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let component = component(&options, &format!("http://{addr}"));
        let env: BTreeMap<&str, &str> = BTreeMap::from([
            ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
            ("LIVEKIT_API_KEY", LIVEKIT_KEY),
            ("LIVEKIT_API_SECRET", LIVEKIT_SECRET),
            ("POD_NAME", "support-gateway-0"),
        ]);
        let mut config = Config::from_lookup(component, |k| env.get(k).map(|v| (*v).to_owned()))
            .expect("config");
        config.session_timeout = Duration::from_millis(500);
        config.media_start_timeout = Duration::from_millis(500);
        config.media_connect_timeout = Duration::from_secs(2);
        config.drain_timeout = Duration::ZERO;
        adjust(&mut config);
        let state = Arc::new(State::new(config, recorder).expect("state"));
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = Arc::clone(&state);
        let served = tokio::spawn(async move {
            voice_agent_gateway::serve(listener, serving, async {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
        });
        Gateway {
            addr,
            state,
            stop: Some(stop),
            served: Some(served),
            http: reqwest::Client::new(),
        }
    }

    /// Signals shutdown; the handle completes when `serve` returns.
    pub fn shut_down(&mut self) -> tokio::task::JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.served.take().expect("serving")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs a form to `path`, signed for the gateway's public URL with
    /// `token` (None: no signature header).
    pub async fn post_form(
        &self,
        path: &str,
        params: &[(&str, &str)],
        token: Option<&str>,
    ) -> reqwest::Response {
        let owned: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let body = encode_form(&owned);
        let mut request = self
            .http
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(token) = token {
            request = request.header(
                "X-Twilio-Signature",
                signature::compute(token, &self.url(path), &owned),
            );
        }
        request.send().await.expect("send")
    }

    /// A signed voice webhook for `call_sid`.
    pub async fn voice(&self, call_sid: &str) -> reqwest::Response {
        self.post_form("/twilio/voice", &voice_params(call_sid), Some(AUTH_TOKEN))
            .await
    }
}

/// The parameters of a voice webhook as Twilio sends them (a subset).
pub fn voice_params(call_sid: &str) -> Vec<(&str, &str)> {
    vec![
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid),
        ("CallStatus", "ringing"),
        ("Called", AGENT_NUMBER),
        ("Caller", CALLER),
        ("Direction", "inbound"),
        ("From", CALLER),
        ("To", AGENT_NUMBER),
    ]
}

/// `application/x-www-form-urlencoded` encoding.
pub fn encode_form(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", pct(k), pct(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                char::from(b).to_string()
            }
            b' ' => "+".to_owned(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// The `<Stream url>` and `<Parameter>`s of a `<Connect><Stream>` answer.
pub fn parse_stream(twiml: &str) -> (String, BTreeMap<String, String>) {
    let attr = |element: &str, name: &str| -> String {
        let start = element
            .find(&format!("{name}=\""))
            .unwrap_or_else(|| panic!("no {name} in {element}"))
            + name.len()
            + 2;
        let end = start + element[start..].find('"').expect("closing quote");
        unescape(&element[start..end])
    };
    let stream = twiml
        .split("<Stream ")
        .nth(1)
        .unwrap_or_else(|| panic!("no <Stream> in {twiml}"));
    let url = attr(stream.split('>').next().expect("tag"), "url");
    let params = twiml
        .split("<Parameter ")
        .skip(1)
        .map(|p| {
            let tag = p.split("/>").next().expect("tag");
            (attr(tag, "name"), attr(tag, "value"))
        })
        .collect();
    (url, params)
}

pub fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

pub fn call_sid(n: u32) -> String {
    format!("CA{n:032x}")
}
