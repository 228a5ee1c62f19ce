//! A runtime wired to a real agent service (local LLM, embedded index) and a
//! real TTS service (espeak-ng) over loopback HTTP, with a scripted
//! recognizer, and a test client that plays Twilio's side of Media Streams.
//!
//! The recognizer is the one stand-in: it hears speech with the runtime's own
//! VAD and, when the caller pauses, "recognizes" the next scripted line. That
//! keeps these tests about the voice loop (turns, barge-in, pacing, latency);
//! the real recognizers have their own tests.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use voice_agent_proto::mediastreams::{MediaFormat, Message, StartMeta};
use voice_agent_proto::{CreateSessionRequest, CreateSessionResponse, Transport};
use voice_agent_runtime::testing::ScriptedStt;
use voice_agent_runtime::{Config, State};

/// The knowledge the agent answers from.
pub const HOURS: &str = "# Opening hours\n\nHarbor Bikes is open Monday to Friday from 9 am to 6 pm. On Saturday we open at 10 am and close at 4 pm. We are closed on Sunday.\n";
/// Second document.
pub const PRICES: &str = "# Prices\n\nA basic tune-up costs 49 dollars and takes two days. A flat tire repair costs 15 dollars.\n";

/// The running services.
pub struct Stack {
    pub runtime_url: String,
    pub state: Arc<State>,
    pub script: Arc<Mutex<VecDeque<String>>>,
}

async fn listen() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    (listener, url)
}

/// Starts agent, TTS and runtime; `env` overrides runtime settings.
pub async fn start(capacity: u32, env: &[(&str, &str)]) -> Stack {
    let mut cc = voice_agent_agent::testing::component_config();
    cc.voice_agent = "front-desk".into();
    cc.persona.greeting = "Thanks for calling Harbor Bikes.".into();
    cc.runtime.max_calls_per_pod = capacity as i32;
    cc.knowledge.sources = serde_json::from_value(serde_json::json!([
        {"name": "hours", "inline": HOURS},
        {"name": "prices", "inline": PRICES},
    ]))
    .expect("sources");

    let (agent_listener, agent_url) = listen().await;
    let agent = voice_agent_agent::State::from_component_config(cc.clone(), None)
        .await
        .expect("agent");
    tokio::spawn(voice_agent_agent::serve(
        agent_listener,
        Arc::new(agent),
        std::future::pending(),
    ));
    let (tts_listener, tts_url) = listen().await;
    let tts = voice_agent_tts::State::new(voice_agent_tts::Config::default()).expect("tts");
    tokio::spawn(voice_agent_tts::serve(
        tts_listener,
        Arc::new(tts),
        std::future::pending(),
    ));

    cc.endpoints.agent = agent_url;
    cc.endpoints.tts = tts_url;
    cc.endpoints.metrics = None;
    let (listener, runtime_url) = listen().await;
    let port = listener.local_addr().expect("addr").port().to_string();
    let mut vars: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vars.insert(
        "VOICE_AGENT_RUNTIME_LISTEN".into(),
        format!("127.0.0.1:{port}"),
    );
    vars.insert("POD_NAME".into(), "front-desk-runtime-0".into());
    let config = Config::from_component_config(&cc, |k| vars.get(k).cloned()).expect("config");
    let script = Arc::new(Mutex::new(VecDeque::new()));
    let stt = Arc::new(ScriptedStt {
        lines: Arc::clone(&script),
    });
    let state = Arc::new(State::new(config, stt).expect("state"));
    tokio::spawn(voice_agent_runtime::serve(
        listener,
        Arc::clone(&state),
        std::future::pending(),
    ));
    Stack {
        runtime_url,
        state,
        script,
    }
}

impl Stack {
    /// Queues what the caller will be heard saying.
    pub fn say(&self, line: &str) {
        self.script
            .lock()
            .expect("script")
            .push_back(line.to_string());
    }

    /// `POST /api/sessions`.
    pub async fn create_session(&self, call_sid: &str) -> (u16, Option<CreateSessionResponse>) {
        let resp = reqwest::Client::new()
            .post(format!("{}/api/sessions", self.runtime_url))
            .json(&CreateSessionRequest {
                call_sid: call_sid.into(),
                voice_agent: "front-desk".into(),
                from: "+15550100".into(),
                to: "+15550142".into(),
                transport: Transport::MediaStreams,
            })
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let body = resp.json().await.ok();
        (status, body)
    }

    /// `GET /api/sessions/{id}` as JSON.
    pub async fn session(&self, id: &str) -> serde_json::Value {
        reqwest::get(format!("{}/api/sessions/{id}", self.runtime_url))
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }
}

/// What the fake Twilio side received, with arrival times.
#[derive(Debug, Clone)]
pub enum Heard {
    Media(Instant),
    Mark(String, Instant),
    Clear(Instant),
    Closed(Instant),
}

/// What the microphone task does next.
enum Mic {
    Speak(u64),
    Raw(String),
    HangUp,
}

/// Twilio's side of a Media Streams call. A microphone task streams 20 ms
/// frames continuously, silence unless told to speak, as Twilio does.
pub struct Caller {
    mic: mpsc::UnboundedSender<Mic>,
    pub heard: mpsc::UnboundedReceiver<Heard>,
    pub stream_sid: String,
    /// When the first frame of the latest speech burst went out.
    onset: Arc<Mutex<Option<Instant>>>,
}

/// One 20 ms frame of a 300 Hz tone (speech-like energy), mu-law, base64.
pub fn tone_frame() -> String {
    let pcm: Vec<i16> = (0..160)
        .map(|i| ((2.0 * std::f32::consts::PI * 300.0 * i as f32 / 8000.0).sin() * 8000.0) as i16)
        .collect();
    voice_agent_proto::base64::encode(&voice_agent_proto::audio::encode_mulaw(&pcm))
}

/// One 20 ms frame of silence.
pub fn silence_frame() -> String {
    voice_agent_proto::base64::encode(&[0xFFu8; 160])
}

impl Caller {
    /// Connects to `media_url`, sends `connected` and `start`, and starts
    /// the microphone.
    pub async fn connect(media_url: &str, call_sid: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(media_url)
            .await
            .expect("connect media");
        let (mut sink, mut stream) = ws.split();
        let (tx, heard) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                let now = Instant::now();
                let WsMessage::Text(text) = frame else {
                    if matches!(frame, WsMessage::Close(_)) {
                        break;
                    }
                    continue;
                };
                let heard = match Message::parse(text.as_str()) {
                    Ok(Message::Media { .. }) => Heard::Media(now),
                    Ok(Message::Mark { mark, .. }) => Heard::Mark(mark.name, now),
                    Ok(Message::Clear { .. }) => Heard::Clear(now),
                    other => panic!("unexpected message from the runtime: {other:?}"),
                };
                if tx.send(heard).is_err() {
                    return;
                }
            }
            let _ = tx.send(Heard::Closed(Instant::now()));
        });
        let stream_sid = format!("MZ{call_sid}");
        let connected = Message::Connected {
            protocol: Some("Call".into()),
            version: Some("1.0.0".into()),
        };
        let start = Message::Start {
            sequence_number: Some("1".into()),
            start: StartMeta {
                account_sid: "ACtest".into(),
                stream_sid: stream_sid.clone(),
                call_sid: call_sid.into(),
                tracks: vec!["inbound".into()],
                custom_parameters: BTreeMap::new(),
                media_format: Some(MediaFormat {
                    encoding: "audio/x-mulaw".into(),
                    sample_rate: 8000,
                    channels: 1,
                }),
            },
            stream_sid: stream_sid.clone(),
        };
        for m in [connected, start] {
            sink.send(WsMessage::Text(m.to_json().into()))
                .await
                .expect("send");
        }
        let (mic, mut commands) = mpsc::unbounded_channel::<Mic>();
        let sid = stream_sid.clone();
        let onset = Arc::new(Mutex::new(None));
        let onset_mic = Arc::clone(&onset);
        tokio::spawn(async move {
            let mut burst_started = false;
            let tone = tone_frame();
            let silence = silence_frame();
            let mut speech_frames = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                while let Ok(cmd) = commands.try_recv() {
                    match cmd {
                        Mic::Speak(ms) => {
                            speech_frames = ms / 20;
                            burst_started = true;
                        }
                        Mic::Raw(text) => {
                            if sink.send(WsMessage::Text(text.into())).await.is_err() {
                                return;
                            }
                        }
                        Mic::HangUp => {
                            let stop = Message::Stop {
                                sequence_number: None,
                                stop: None,
                                stream_sid: sid.clone(),
                            };
                            let _ = sink.send(WsMessage::Text(stop.to_json().into())).await;
                            let _ = sink.close().await;
                            return;
                        }
                    }
                }
                let payload = if speech_frames > 0 {
                    speech_frames -= 1;
                    tone.clone()
                } else {
                    silence.clone()
                };
                let m = Message::Media {
                    sequence_number: None,
                    media: voice_agent_proto::mediastreams::MediaPayload {
                        track: Some("inbound".into()),
                        chunk: None,
                        timestamp: None,
                        payload,
                    },
                    stream_sid: sid.clone(),
                };
                if sink
                    .send(WsMessage::Text(m.to_json().into()))
                    .await
                    .is_err()
                {
                    return;
                }
                if std::mem::take(&mut burst_started) {
                    *onset_mic.lock().expect("onset") = Some(Instant::now());
                }
            }
        });
        Self {
            mic,
            heard,
            stream_sid,
            onset,
        }
    }

    /// When the first frame of the latest speech burst was sent.
    pub fn speech_onset(&self) -> Option<Instant> {
        *self.onset.lock().expect("onset")
    }

    /// Sends a raw text frame (between audio frames).
    pub fn send_raw(&self, text: &str) {
        let _ = self.mic.send(Mic::Raw(text.to_string()));
    }

    /// Speaks (a tone) for `ms`, returning once the speech is sent.
    pub async fn speak(&self, ms: u64) {
        let _ = self.mic.send(Mic::Speak(ms));
        tokio::time::sleep(Duration::from_millis(ms + 20)).await;
    }

    /// Sends a DTMF key.
    pub fn dtmf(&self, digit: &str) {
        let m = Message::Dtmf {
            sequence_number: None,
            dtmf: voice_agent_proto::mediastreams::Dtmf {
                track: Some("inbound_track".into()),
                digit: digit.into(),
            },
            stream_sid: self.stream_sid.clone(),
        };
        self.send_raw(&m.to_json());
    }

    /// Sends `stop` and closes.
    pub fn hang_up(&self) {
        let _ = self.mic.send(Mic::HangUp);
    }

    /// Drains what was heard so far without waiting.
    pub fn take_heard(&mut self) -> Vec<Heard> {
        let mut out = Vec::new();
        while let Ok(h) = self.heard.try_recv() {
            out.push(h);
        }
        out
    }

    /// Waits for the next media frame (up to `timeout`).
    pub async fn next_media(&mut self, timeout: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.heard.recv()).await {
                Ok(Some(Heard::Media(at))) => return Some(at),
                Ok(Some(Heard::Closed(_))) | Ok(None) | Err(_) => return None,
                Ok(Some(_)) => {}
            }
        }
    }

    /// Counts media frames until none arrives for `quiet`; returns the count.
    pub async fn listen_until_quiet(&mut self, quiet: Duration, max: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + max;
        let mut frames = 0;
        loop {
            let wait = quiet.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            match tokio::time::timeout(wait, self.heard.recv()).await {
                Ok(Some(Heard::Media(_))) => frames += 1,
                Ok(Some(Heard::Closed(_))) | Ok(None) => return frames,
                Ok(Some(_)) => {}
                Err(_) => return frames,
            }
            if tokio::time::Instant::now() >= deadline {
                return frames;
            }
        }
    }
}
