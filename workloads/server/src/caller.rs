//! `voice-agent call`: a simulated phone call over the real protocols.
//!
//! It plays Twilio: a signed `POST /twilio/voice`, then the Media Streams
//! WebSocket named in the TwiML answer, streaming the caller's lines as real
//! speech (espeak-ng, 8 kHz mu-law, 20 ms frames in real time, silence in
//! between, as a phone line does) and receiving the agent's audio. Each line
//! is spoken once the agent has finished talking (or, for a barge-in, while
//! it talks). At the end it reads the session's transcript, citations and
//! latency from the runtime and reports them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use voice_agent_proto::audio::{decode_mulaw_into, encode_mulaw};
use voice_agent_proto::mediastreams::{
    Dtmf, MediaFormat, MediaPayload, Message, SAMPLE_RATE, StartMeta,
};
use voice_agent_proto::{Citation, Resampler};

/// One step of the caller's script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Say this line.
    Say(String),
    /// Press these keys.
    Dtmf(String),
}

/// How to place the call.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// Base URL of the gateway (dev stack).
    pub url: String,
    /// The URL the gateway believes it is reached at (what Twilio signs);
    /// defaults to `url`.
    pub public_url: Option<String>,
    /// The Twilio auth token to sign with.
    pub auth_token: String,
    /// The script.
    pub steps: Vec<Step>,
    /// Caller number.
    pub from: String,
    /// Called number.
    pub to: String,
    /// Speak the second line this many ms into the agent's answer to the
    /// first (a barge-in), instead of waiting for the answer to end.
    pub interrupt_after_ms: Option<u64>,
    /// espeak-ng voice of the caller.
    pub voice: String,
    /// espeak-ng speed, words per minute.
    pub speed: u32,
    /// Silence after which the agent is taken to have finished talking.
    pub agent_quiet_ms: u64,
    /// Longest the whole call may take.
    pub max_call: Duration,
}

impl CallOptions {
    /// Defaults for a local dev stack.
    pub fn new(url: &str, auth_token: &str, steps: Vec<Step>) -> Self {
        Self {
            url: url.trim_end_matches('/').to_string(),
            public_url: None,
            auth_token: auth_token.to_string(),
            steps,
            from: "+15550100123".into(),
            to: "+15550142000".into(),
            interrupt_after_ms: None,
            voice: "en-us".into(),
            speed: 150,
            agent_quiet_ms: 700,
            max_call: Duration::from_secs(180),
        }
    }
}

/// Latency of one turn, ms.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    /// End of caller speech → final transcript (runtime).
    pub eou_ms: Option<f64>,
    /// Agent time to first text (as the runtime saw it).
    pub agent_ttft_ms: Option<f64>,
    /// TTS time to first byte (as the runtime saw it).
    pub tts_ttfb_ms: Option<f64>,
    /// End of caller speech → first agent audio sent (runtime).
    pub e2e_ms: Option<f64>,
    /// End of caller speech → first agent audio received here.
    pub heard_after_ms: Option<f64>,
}

/// One exchange.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TurnReport {
    /// What the caller said (the script line).
    pub caller: String,
    /// What the runtime recognized.
    pub recognized: String,
    /// What the agent said (the runtime's transcript).
    pub agent: String,
    /// What this caller heard, transcribed from the received audio with the
    /// local recognizer (empty when it is not installed).
    pub agent_heard: String,
    /// The reply's sources.
    pub citations: Vec<Citation>,
    /// Latency breakdown.
    pub latency: Latency,
    /// Whether the caller barged in over this reply.
    pub interrupted: bool,
    /// Seconds of agent audio received for this reply.
    pub agent_audio_seconds: f64,
}

/// The whole call.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CallReport {
    /// The simulated CallSid.
    pub call_sid: String,
    /// The runtime session.
    pub session_id: String,
    /// The greeting, as the agent said it.
    pub greeting: String,
    /// The greeting as this caller heard it (local recognizer).
    pub greeting_heard: String,
    /// Seconds of greeting audio received.
    pub greeting_audio_seconds: f64,
    /// The exchanges, in order.
    pub turns: Vec<TurnReport>,
    /// Barge-ins the runtime counted.
    pub interruptions: u32,
    /// Why the call ended.
    pub end_reason: String,
    /// Whether the runtime (not the caller) hung up.
    pub agent_hung_up: bool,
}

/// Progress while the call runs, for live output.
#[derive(Debug, Clone)]
pub enum Progress {
    /// The webhook was answered.
    Answered {
        /// Session id.
        session_id: String,
    },
    /// The agent started talking.
    AgentTalking,
    /// The agent stopped talking after this much audio.
    AgentDone {
        /// Seconds of audio.
        seconds: f64,
    },
    /// The caller says a line.
    CallerSays(String),
    /// The caller pressed keys.
    CallerKeys(String),
    /// The agent's playback was cleared (barge-in).
    Cleared,
    /// The agent hung up.
    HungUp,
}

/// What the receiver saw of the agent's audio.
#[derive(Debug, Default)]
struct Heard {
    /// Audio segments: (first frame time, last frame time, frames).
    segments: Vec<(Instant, Instant, usize)>,
    /// The agent's audio of each segment, PCM16 8 kHz.
    audio: Vec<Vec<i16>>,
    last_frame: Option<Instant>,
    clears: usize,
    closed: bool,
}

/// A new CallSid: `CA` + 32 hex digits.
pub fn new_call_sid() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("CA{:032x}", nanos ^ (u128::from(std::process::id()) << 64))
}

/// Renders `text` with espeak-ng as 8 kHz mu-law.
pub async fn render_speech(text: &str, voice: &str, speed: u32) -> anyhow::Result<Vec<u8>> {
    let output = tokio::process::Command::new("espeak-ng")
        .args(["-v", voice, "-s", &speed.to_string(), "--stdout", text])
        .output()
        .await
        .context("running espeak-ng (apt-get install espeak-ng)")?;
    if !output.status.success() {
        bail!(
            "espeak-ng failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let mut reader = voice_agent_tts::wav::WavReader::new();
    let mut pcm = Vec::new();
    reader
        .push(&output.stdout, &mut pcm)
        .context("espeak-ng output")?;
    let rate = reader
        .format()
        .map(|f| f.sample_rate)
        .context("espeak-ng wrote no WAV header")?;
    let mut resampler = Resampler::new(rate, SAMPLE_RATE)?;
    let mut out = Vec::with_capacity(pcm.len() * SAMPLE_RATE as usize / rate as usize + 64);
    resampler.process(&pcm, &mut out);
    resampler.flush(&mut out);
    Ok(encode_mulaw(trim_silence(&out)))
}

/// `samples` without the leading and trailing silence espeak-ng adds (keeping
/// 40 ms), so "end of speech" is when the words end.
fn trim_silence(samples: &[i16]) -> &[i16] {
    const THRESHOLD: i16 = 300;
    const KEEP: usize = 320;
    let loud = |s: &&i16| s.unsigned_abs() > THRESHOLD as u16;
    let Some(first) = samples.iter().position(|s| loud(&s)) else {
        return &samples[..0];
    };
    let last = samples.iter().rposition(|s| loud(&s)).unwrap_or(first);
    &samples[first.saturating_sub(KEEP)..(last + KEEP).min(samples.len())]
}

/// Parses the TwiML answer: the `<Stream>` URL and its `<Parameter>`s, or
/// why there is none.
pub fn parse_twiml(twiml: &str) -> anyhow::Result<(String, BTreeMap<String, String>)> {
    if twiml.contains("<Reject") {
        bail!("the gateway rejected the call (is the called number bound to this agent?)");
    }
    let Some(stream) = element_attrs(twiml, "Stream").into_iter().next() else {
        if let Some(said) = between(twiml, "<Say>", "</Say>") {
            bail!(
                "the gateway did not connect the call; it said: {}",
                unescape(said)
            );
        }
        bail!("no <Stream> in the TwiML answer: {twiml}");
    };
    let url = stream.get("url").cloned().context("<Stream> without url")?;
    let params = element_attrs(twiml, "Parameter")
        .into_iter()
        .filter_map(|a| Some((a.get("name")?.clone(), a.get("value")?.clone())))
        .collect();
    Ok((url, params))
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = text.find(start)? + start.len();
    let j = text[i..].find(end)? + i;
    Some(&text[i..j])
}

/// Attributes of every `<name ...>` element (no nesting needed for TwiML).
fn element_attrs(xml: &str, name: &str) -> Vec<BTreeMap<String, String>> {
    let open = format!("<{name}");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        if !rest.starts_with([' ', '>', '/', '\n', '\t']) {
            continue;
        }
        let Some(end) = rest.find('>') else { break };
        let tag = &rest[..end];
        let mut attrs = BTreeMap::new();
        let mut t = tag;
        while let Some(eq) = t.find("=\"") {
            let key = t[..eq].trim().trim_start_matches('/').trim();
            let after = &t[eq + 2..];
            let Some(close) = after.find('"') else { break };
            attrs.insert(
                key.rsplit(char::is_whitespace)
                    .next()
                    .unwrap_or(key)
                    .to_string(),
                unescape(&after[..close]),
            );
            t = &after[close + 1..];
        }
        out.push(attrs);
        rest = &rest[end..];
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The media WebSocket URL to dial: the TwiML's, with the public host
/// replaced by the one we reach the gateway at (for tunnels).
fn dial_url(stream_url: &str, url: &str, public_url: &str) -> String {
    let ws = |u: &str| {
        u.replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1)
    };
    let (public_ws, local_ws) = (ws(public_url), ws(url));
    match stream_url.strip_prefix(public_ws.as_str()) {
        Some(path) => format!("{local_ws}{path}"),
        None => stream_url.to_string(),
    }
}

/// Places the call and reports it; `progress` sees events as they happen.
pub async fn place_call(
    options: &CallOptions,
    mut progress: impl FnMut(Progress) + Send,
) -> anyhow::Result<CallReport> {
    let public_url = options
        .public_url
        .clone()
        .unwrap_or_else(|| options.url.clone());
    let call_sid = new_call_sid();
    let params: Vec<(String, String)> = [
        ("AccountSid", "AC00000000000000000000000000000000"),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid.as_str()),
        ("CallStatus", "ringing"),
        ("Called", options.to.as_str()),
        ("Caller", options.from.as_str()),
        ("Direction", "inbound"),
        ("From", options.from.as_str()),
        ("To", options.to.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let webhook = format!("{public_url}/twilio/voice");
    let signature = voice_agent_gateway::signature::compute(&options.auth_token, &webhook, &params);
    let http = voice_agent_http::client_builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let response = http
        .post(format!("{}/twilio/voice", options.url))
        .header("X-Twilio-Signature", signature)
        .form(&params)
        .send()
        .await
        .with_context(|| {
            format!(
                "calling {}/twilio/voice (is `voice-agent dev` running?)",
                options.url
            )
        })?;
    let status = response.status();
    let twiml = response.text().await.unwrap_or_default();
    if status.as_u16() == 403 {
        bail!(
            "the gateway refused the webhook signature: the Twilio auth token differs from the dev \
             stack's (set TWILIO_AUTH_TOKEN the same for both, or use the same --env-file)"
        );
    }
    if !status.is_success() {
        bail!("the gateway answered {status}: {twiml}");
    }
    let (stream_url, custom_parameters) = parse_twiml(&twiml)?;
    let session_id = custom_parameters
        .get(voice_agent_proto::mediastreams::SESSION_PARAMETER)
        .cloned()
        .unwrap_or_default();
    progress(Progress::Answered {
        session_id: session_id.clone(),
    });

    let media_url = dial_url(&stream_url, &options.url, &public_url);
    // Twilio signs the handshake: the stream URL from the TwiML, no params.
    let mut request = {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        media_url
            .as_str()
            .into_client_request()
            .with_context(|| format!("media stream URL {media_url}"))?
    };
    let handshake_signature =
        voice_agent_gateway::signature::compute(&options.auth_token, &stream_url, &[]);
    request.headers_mut().insert(
        "x-twilio-signature",
        handshake_signature.parse().context("signature header")?,
    );
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .with_context(|| format!("connecting the media stream {media_url}"))?;
    let (mut sink, mut stream) = ws.split();
    let stream_sid = format!("MZ{}", &call_sid[2..]);
    let start = Message::Start {
        sequence_number: Some("1".into()),
        start: StartMeta {
            account_sid: "AC00000000000000000000000000000000".into(),
            stream_sid: stream_sid.clone(),
            call_sid: call_sid.clone(),
            tracks: vec!["inbound".into()],
            custom_parameters,
            media_format: Some(MediaFormat {
                encoding: voice_agent_proto::mediastreams::ENCODING.into(),
                sample_rate: SAMPLE_RATE,
                channels: 1,
            }),
        },
        stream_sid: stream_sid.clone(),
    };
    let connected = Message::Connected {
        protocol: Some("Call".into()),
        version: Some("1.0.0".into()),
    };
    for m in [connected, start] {
        sink.send(WsMessage::Text(m.to_json().into())).await?;
    }

    // Receiver: the agent's audio, clears and marks.
    let heard = Arc::new(Mutex::new(Heard::default()));
    let (mark_tx, mut mark_rx) = mpsc::unbounded_channel::<String>();
    let heard_rx = Arc::clone(&heard);
    let receiver = tokio::spawn(async move {
        let mut pcm = Vec::new();
        while let Some(Ok(frame)) = stream.next().await {
            let WsMessage::Text(text) = frame else {
                if matches!(frame, WsMessage::Close(_)) {
                    break;
                }
                continue;
            };
            let now = Instant::now();
            let Ok(message) = Message::parse(text.as_str()) else {
                continue;
            };
            let mut h = heard_rx.lock().unwrap_or_else(|e| e.into_inner());
            match message {
                Message::Media { media, .. } => {
                    if let Ok(bytes) = voice_agent_proto::base64::decode(&media.payload) {
                        pcm.clear();
                        decode_mulaw_into(&bytes, &mut pcm);
                    }
                    let new_segment = h
                        .last_frame
                        .is_none_or(|t| now.duration_since(t) > Duration::from_millis(300));
                    if new_segment {
                        h.segments.push((now, now, 1));
                        h.audio.push(Vec::new());
                    } else if let Some(last) = h.segments.last_mut() {
                        last.1 = now;
                        last.2 += 1;
                    }
                    if let Some(audio) = h.audio.last_mut() {
                        audio.extend_from_slice(&pcm);
                    }
                    h.last_frame = Some(now);
                }
                Message::Clear { .. } => h.clears += 1,
                // Twilio echoes marks once the audio before them played.
                Message::Mark { mark, .. } => {
                    let _ = mark_tx.send(mark.name);
                }
                _ => {}
            }
        }
        heard_rx.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
    });

    // Microphone: 20 ms frames in real time, speech when queued.
    let (speech_tx, mut speech_rx) = mpsc::unbounded_channel::<MicItem>();
    let mic_sid = stream_sid.clone();
    let mic = tokio::spawn(async move {
        let silence = [0xFFu8; 160];
        let mut queue: std::collections::VecDeque<u8> = std::collections::VecDeque::new();
        let mut done_notify: Option<tokio::sync::oneshot::Sender<Instant>> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut frame = Vec::with_capacity(160);
        loop {
            tick.tick().await;
            while let Ok(item) = speech_rx.try_recv() {
                match item {
                    MicItem::Speech(audio, done) => {
                        queue.extend(audio);
                        done_notify = Some(done);
                    }
                    MicItem::Text(text) => {
                        if sink.send(WsMessage::Text(text.into())).await.is_err() {
                            return;
                        }
                    }
                    MicItem::HangUp => {
                        let stop = Message::Stop {
                            sequence_number: None,
                            stop: None,
                            stream_sid: mic_sid.clone(),
                        };
                        let _ = sink.send(WsMessage::Text(stop.to_json().into())).await;
                        let _ = sink.close().await;
                        return;
                    }
                }
            }
            frame.clear();
            while frame.len() < 160 {
                match queue.pop_front() {
                    Some(b) => frame.push(b),
                    None => break,
                }
            }
            if frame.is_empty() {
                frame.extend_from_slice(&silence);
                if let Some(done) = done_notify.take() {
                    let _ = done.send(Instant::now());
                }
            } else {
                frame.resize(160, 0xFF);
            }
            let m = Message::Media {
                sequence_number: None,
                media: MediaPayload {
                    track: Some("inbound".into()),
                    chunk: None,
                    timestamp: None,
                    payload: voice_agent_proto::base64::encode(&frame),
                },
                stream_sid: mic_sid.clone(),
            };
            if sink
                .send(WsMessage::Text(m.to_json().into()))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    // Echo marks as Twilio does.
    let echo_tx = speech_tx.clone();
    let echo_sid = stream_sid.clone();
    let echo = tokio::spawn(async move {
        while let Some(name) = mark_rx.recv().await {
            let m = Message::outbound_mark(&echo_sid, name);
            let _ = echo_tx.send(MicItem::Text(m.to_json()));
        }
    });

    let call_started = Instant::now();
    let deadline = call_started + options.max_call;
    let quiet = Duration::from_millis(options.agent_quiet_ms);
    let mut speech_ends: Vec<(String, Instant)> = Vec::new();
    let result: anyhow::Result<()> = async {
        // The greeting.
        wait_agent_turn(&heard, call_started, quiet, deadline, &mut progress, None).await?;
        let mut interrupt_next = false;
        for (i, step) in options.steps.iter().enumerate() {
            if heard.lock().unwrap_or_else(|e| e.into_inner()).closed {
                break;
            }
            let step_started = Instant::now();
            match step {
                Step::Say(line) => {
                    let audio = render_speech(line, &options.voice, options.speed).await?;
                    progress(Progress::CallerSays(line.clone()));
                    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
                    let _ = speech_tx.send(MicItem::Speech(audio, done_tx));
                    let ended = done_rx.await.unwrap_or_else(|_| Instant::now());
                    speech_ends.push((line.clone(), ended));
                }
                Step::Dtmf(keys) => {
                    progress(Progress::CallerKeys(keys.clone()));
                    for key in keys.chars() {
                        let m = Message::Dtmf {
                            sequence_number: None,
                            dtmf: Dtmf {
                                track: Some("inbound_track".into()),
                                digit: key.to_string(),
                            },
                            stream_sid: stream_sid.clone(),
                        };
                        let _ = speech_tx.send(MicItem::Text(m.to_json()));
                        tokio::time::sleep(Duration::from_millis(120)).await;
                    }
                    speech_ends.push((format!("(keys {keys})"), Instant::now()));
                }
            }
            let barge_in = options
                .interrupt_after_ms
                .filter(|_| i == 0 && !interrupt_next);
            if let Some(after) = barge_in {
                interrupt_next = true;
                wait_agent_turn(
                    &heard,
                    step_started,
                    quiet,
                    deadline,
                    &mut progress,
                    Some(after),
                )
                .await?;
            } else {
                wait_agent_turn(&heard, step_started, quiet, deadline, &mut progress, None).await?;
            }
        }
        Ok(())
    }
    .await;

    let agent_hung_up = heard.lock().unwrap_or_else(|e| e.into_inner()).closed;
    if !agent_hung_up {
        let _ = speech_tx.send(MicItem::HangUp);
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), mic).await;
    echo.abort();
    let _ = tokio::time::timeout(Duration::from_secs(2), receiver).await;
    result?;

    // What the runtime recorded (dev stack / direct runtime access).
    let detail: serde_json::Value = {
        let mut detail = serde_json::Value::Null;
        for _ in 0..20 {
            let d: serde_json::Value = http
                .get(format!("{}/api/sessions/{session_id}", options.url))
                .send()
                .await
                .context("reading the session from the runtime")?
                .json()
                .await
                .context("session detail")?;
            let ended = d["state"] == "ended";
            detail = d;
            if ended {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        detail
    };
    let (mut report, groups) = {
        let heard = heard.lock().unwrap_or_else(|e| e.into_inner());
        let report = build_report(
            &call_sid,
            &session_id,
            &detail,
            &heard,
            &speech_ends,
            agent_hung_up,
        );
        (report, agent_audio_by_step(&heard, &speech_ends))
    };
    // What the agent's audio said, as this caller heard it: the audio after
    // each line (before the first line: the greeting), transcribed with the
    // local recognizer, whose language model knows only the caller's own
    // script and everyday phone phrases (not the agent's knowledge).
    let script: String = options
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Say(line) => Some(format!("{line}\n")),
            Step::Dtmf(_) => None,
        })
        .collect();
    let transcripts = tokio::task::spawn_blocking(move || transcribe_all(&script, &groups))
        .await
        .unwrap_or_default();
    let mut transcripts = transcripts.into_iter();
    report.greeting_heard = transcripts.next().unwrap_or_default();
    for (turn, text) in report.turns.iter_mut().zip(transcripts) {
        turn.agent_heard = text;
    }
    Ok(report)
}

/// The agent's audio before the first line (the greeting) and after each
/// line.
fn agent_audio_by_step(heard: &Heard, speech_ends: &[(String, Instant)]) -> Vec<Vec<i16>> {
    let mut groups: Vec<Vec<i16>> = vec![Vec::new(); speech_ends.len() + 1];
    for (segment, audio) in heard.segments.iter().zip(&heard.audio) {
        let group = speech_ends
            .iter()
            .take_while(|(_, t)| *t <= segment.0)
            .count();
        groups[group].extend_from_slice(audio);
    }
    groups
}

/// Transcribes each recording with the local recognizer (empty strings when
/// it is not installed).
fn transcribe_all(script: &str, recordings: &[Vec<i16>]) -> Vec<String> {
    use voice_agent_runtime::stt::local::{LocalStt, LocalSttConfig};
    let stt = match LocalStt::new(LocalSttConfig::new(script)) {
        Ok(stt) => stt,
        Err(e) => {
            eprintln!("(not transcribing the agent's audio: {e})");
            return vec![String::new(); recordings.len()];
        }
    };
    recordings
        .iter()
        .map(|pcm| {
            if pcm.is_empty() {
                String::new()
            } else {
                stt.transcribe(pcm, SAMPLE_RATE).unwrap_or_default()
            }
        })
        .collect()
}

enum MicItem {
    Speech(Vec<u8>, tokio::sync::oneshot::Sender<Instant>),
    Text(String),
    HangUp,
}

/// Waits for the agent to talk and then be quiet for `quiet` (or, with
/// `interrupt_after`, returns that long after it started talking).
async fn wait_agent_turn(
    heard: &Arc<Mutex<Heard>>,
    since: Instant,
    quiet: Duration,
    deadline: Instant,
    progress: &mut (impl FnMut(Progress) + Send),
    interrupt_after: Option<u64>,
) -> anyhow::Result<()> {
    // The reply may start before the caller's last (silent) frames are out:
    // count segments that began after the caller started speaking.
    let start_segments = {
        let h = heard.lock().unwrap_or_else(|e| e.into_inner());
        h.segments.iter().take_while(|s| s.0 < since).count()
    };
    let start_clears = heard.lock().unwrap_or_else(|e| e.into_inner()).clears;
    let mut talking_since: Option<Instant> = None;
    loop {
        if Instant::now() > deadline {
            bail!("the call took longer than its time limit");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let h = heard.lock().unwrap_or_else(|e| e.into_inner());
        if h.clears > start_clears {
            progress(Progress::Cleared);
        }
        if h.closed {
            drop(h);
            progress(Progress::HungUp);
            return Ok(());
        }
        if h.segments.len() > start_segments && talking_since.is_none() {
            talking_since = h.segments.get(start_segments).map(|s| s.0);
            drop(h);
            progress(Progress::AgentTalking);
            continue;
        }
        let Some(since) = talking_since else { continue };
        if let Some(after) = interrupt_after
            && since.elapsed() >= Duration::from_millis(after)
        {
            return Ok(());
        }
        if h.last_frame.is_some_and(|t| t.elapsed() >= quiet) {
            let frames: usize = h.segments[start_segments..].iter().map(|s| s.2).sum();
            drop(h);
            progress(Progress::AgentDone {
                seconds: frames as f64 * 0.02,
            });
            return Ok(());
        }
    }
}

fn build_report(
    call_sid: &str,
    session_id: &str,
    detail: &serde_json::Value,
    heard: &Heard,
    speech_ends: &[(String, Instant)],
    agent_hung_up: bool,
) -> CallReport {
    let transcript = detail["transcript"].as_array().cloned().unwrap_or_default();
    let mut report = CallReport {
        call_sid: call_sid.to_string(),
        session_id: session_id.to_string(),
        interruptions: detail["interruptions"].as_u64().unwrap_or(0) as u32,
        end_reason: detail["endReason"]
            .as_str()
            .unwrap_or("unknown")
            .to_string(),
        agent_hung_up,
        ..CallReport::default()
    };
    let seconds = |from: Instant| {
        heard
            .segments
            .iter()
            .filter(|s| s.0 >= from)
            .take(1)
            .map(|s| s.2 as f64 * 0.02)
            .sum::<f64>()
    };
    let mut lines = speech_ends.iter();
    for entry in &transcript {
        let caller_recognized = entry["caller"].as_str().unwrap_or_default().to_string();
        let agent = entry["agent"].as_str().unwrap_or_default().to_string();
        if caller_recognized.is_empty() && report.turns.is_empty() && report.greeting.is_empty() {
            report.greeting = agent;
            report.greeting_audio_seconds =
                heard.segments.first().map_or(0.0, |s| s.2 as f64 * 0.02);
            continue;
        }
        let (line, ended) = match lines.next() {
            Some((l, t)) => (l.clone(), Some(*t)),
            None => (String::new(), None),
        };
        let heard_after = ended.and_then(|t| {
            heard
                .segments
                .iter()
                .find(|s| s.0 >= t)
                .map(|s| s.0.duration_since(t).as_secs_f64() * 1000.0)
        });
        let l = &entry["latency"];
        report.turns.push(TurnReport {
            agent_heard: String::new(),
            caller: line,
            recognized: caller_recognized,
            agent,
            citations: serde_json::from_value(entry["citations"].clone()).unwrap_or_default(),
            latency: Latency {
                eou_ms: l["eouMs"].as_f64(),
                agent_ttft_ms: l["agentTtftMs"].as_f64(),
                tts_ttfb_ms: l["ttsTtfbMs"].as_f64(),
                e2e_ms: l["e2eMs"].as_f64(),
                heard_after_ms: heard_after,
            },
            interrupted: entry["interrupted"].as_bool().unwrap_or(false),
            agent_audio_seconds: ended.map_or(0.0, seconds),
        });
    }
    report
}

/// The latency table and conversation, for people.
pub fn render_table(report: &CallReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    let _ = writeln!(
        out,
        "\n{:>2}  {:<36} {:<14} {:>6} {:>6} {:>6} {:>6} {:>7}",
        "#", "caller (recognized)", "cites", "eou", "ttft", "ttfb", "e2e", "heard"
    );
    for (i, t) in report.turns.iter().enumerate() {
        let cites: Vec<&str> = t.citations.iter().map(|c| c.document_id.as_str()).collect();
        let mut recognized: String = t.recognized.chars().take(36).collect();
        if t.interrupted {
            recognized = format!("{recognized} ✂").chars().take(36).collect();
        }
        let _ = writeln!(
            out,
            "{:>2}  {:<36} {:<14} {:>6} {:>6} {:>6} {:>6} {:>7}",
            i + 1,
            recognized,
            cites.join(",").chars().take(14).collect::<String>(),
            ms(t.latency.eou_ms),
            ms(t.latency.agent_ttft_ms),
            ms(t.latency.tts_ttfb_ms),
            ms(t.latency.e2e_ms),
            ms(t.latency.heard_after_ms),
        );
    }
    let _ = writeln!(
        out,
        "\nms: eou = end of speech → transcript; ttft = agent first text; ttfb = TTS first audio;\n    e2e = end of speech → first agent audio sent; heard = … → first agent audio received here (✂ = interrupted)"
    );
    let _ = writeln!(
        out,
        "call {} ended: {}; interruptions: {}",
        report.call_sid, report.end_reason, report.interruptions
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twiml_stream_and_parameters() {
        let twiml = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="ws://127.0.0.1:8080/twilio/media"><Parameter name="sessionId" value="s-1"/><Parameter name="mediaUrl" value="ws://127.0.0.1:8080/api/sessions/s-1/media?a=1&amp;b=2"/></Stream></Connect></Response>"#;
        let (url, params) = parse_twiml(twiml).expect("parse");
        assert_eq!(url, "ws://127.0.0.1:8080/twilio/media");
        assert_eq!(params["sessionId"], "s-1");
        assert_eq!(
            params["mediaUrl"],
            "ws://127.0.0.1:8080/api/sessions/s-1/media?a=1&b=2"
        );
        let err = parse_twiml("<Response><Say>Sorry, we are busy.</Say><Hangup/></Response>")
            .expect_err("no stream");
        assert!(err.to_string().contains("Sorry, we are busy."));
        assert!(parse_twiml("<Response><Reject/></Response>").is_err());
        assert!(parse_twiml("garbage").is_err());
    }

    #[test]
    fn dial_url_swaps_the_public_host() {
        assert_eq!(
            dial_url(
                "wss://abc.ngrok.app/twilio/media",
                "http://127.0.0.1:8080",
                "https://abc.ngrok.app"
            ),
            "ws://127.0.0.1:8080/twilio/media"
        );
        assert_eq!(
            dial_url("ws://h/twilio/media", "http://h", "http://h"),
            "ws://h/twilio/media"
        );
    }

    #[test]
    fn call_sids_look_like_twilio_ones() {
        let sid = new_call_sid();
        assert_eq!(sid.len(), 34);
        assert!(sid.starts_with("CA"));
    }
}
