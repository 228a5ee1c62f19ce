//! The local recognizer end to end: real PocketSphinx, espeak-ng speech sent
//! through a phone line, streamed in 20 ms frames. Fails when the tools are
//! missing, unless `VOICE_AGENT_SKIP_SPHINX=1`.

use std::time::Duration;

use tokio::sync::mpsc;
use voice_agent_runtime::stt::local::{LocalStt, LocalSttConfig};
use voice_agent_runtime::stt::{SttError, SttEvent, SttInput, SttParams, SttProvider, SttStream};
use voice_agent_sphinx::testing::{self, require_speech_tools};

fn params() -> SttParams {
    SttParams {
        sample_rate: 8_000,
        language: "en-US".into(),
        model: None,
        endpointing_ms: 500,
    }
}

fn provider() -> LocalStt {
    LocalStt::new(LocalSttConfig::new(testing::HARBOR_BIKES_KNOWLEDGE)).expect("local stt")
}

async fn send_frames(input: &mpsc::Sender<SttInput>, audio: &[i16]) {
    for frame in audio.chunks(160) {
        input
            .send(SttInput::Audio(frame.to_vec()))
            .await
            .expect("stream open");
    }
}

/// Collects events until the stream closes (or 30 s pass).
async fn drain(stream: &mut SttStream) -> Vec<SttEvent> {
    let mut events = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.events.recv()).await {
            Ok(Some(e)) => events.push(e),
            Ok(None) => return events,
            Err(_) => panic!("no stream end; events so far: {events:?}"),
        }
    }
}

fn finals(events: &[SttEvent]) -> Vec<(String, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            SttEvent::Final { text, speech_final } => Some((text.clone(), *speech_final)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_spoken_question_is_transcribed() {
    if !require_speech_tools("a_spoken_question_is_transcribed") {
        return;
    }
    let stt = provider();
    assert_eq!(stt.name(), "local");
    let mut stream = stt.open(&params()).expect("open");
    let speech = testing::phone_speech("What time do you open on Saturday?").expect("espeak-ng");
    let mut audio = vec![0i16; 8 * 500];
    audio.extend(speech);
    audio.extend(vec![0i16; 8 * 1_500]);
    send_frames(&stream.input, &audio).await;
    stream.input.send(SttInput::Close).await.expect("close");
    let events = drain(&mut stream).await;

    assert_eq!(events.first(), Some(&SttEvent::SpeechStarted), "{events:?}");
    let f = finals(&events);
    assert_eq!(f.len(), 1, "{events:?}");
    let (text, speech_final) = &f[0];
    assert!(speech_final);
    println!("final: {text}");
    for keyword in ["open", "saturday"] {
        assert!(text.contains(keyword), "{keyword:?} missing from {text:?}");
    }
    // The final came from endpointing (before Close), after the interims.
    let final_at = events
        .iter()
        .position(|e| matches!(e, SttEvent::Final { .. }))
        .expect("final");
    assert!(
        events[..final_at]
            .iter()
            .any(|e| matches!(e, SttEvent::Interim { .. })),
        "{events:?}"
    );
}

#[tokio::test]
async fn silence_produces_nothing() {
    if !require_speech_tools("silence_produces_nothing") {
        return;
    }
    let mut stream = provider().open(&params()).expect("open");
    send_frames(&stream.input, &vec![0i16; 8 * 3_000]).await;
    // A quiet line hiss is not speech either.
    let hiss: Vec<i16> = (0..8 * 2_000)
        .map(|i| ((i * 7919) % 61) as i16 - 30)
        .collect();
    send_frames(&stream.input, &hiss).await;
    stream.input.send(SttInput::Close).await.expect("close");
    assert_eq!(drain(&mut stream).await, Vec::new());
}

#[tokio::test]
async fn finalize_mid_speech_produces_a_final() {
    if !require_speech_tools("finalize_mid_speech_produces_a_final") {
        return;
    }
    let mut stream = provider().open(&params()).expect("open");
    // One breath: a question and, without a pause, the start of another.
    let first = testing::phone_speech("What time do you open on Saturday").expect("espeak-ng");
    let mut speech = first.clone();
    speech.extend(testing::phone_speech("How much is a flat tire repair?").expect("espeak-ng"));
    // Finalize while the caller is still talking (the watchdog's case).
    let half = first.len() + (speech.len() - first.len()) / 3;
    send_frames(&stream.input, &vec![0i16; 8 * 300]).await;
    send_frames(&stream.input, &speech[..half]).await;
    stream
        .input
        .send(SttInput::Finalize)
        .await
        .expect("finalize");
    // Wait for that final before sending more audio.
    let mut events = Vec::new();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(30), stream.events.recv())
            .await
            .expect("final after Finalize")
            .expect("stream open");
        let done = matches!(e, SttEvent::Final { .. });
        events.push(e);
        if done {
            break;
        }
    }
    assert_eq!(events.first(), Some(&SttEvent::SpeechStarted));
    let flushed = finals(&events);
    println!("after Finalize: {flushed:?}");
    assert!(flushed[0].0.contains("saturday"), "{flushed:?}");
    // The rest of the question is decoded in a new utterance.
    send_frames(&stream.input, &speech[half..]).await;
    send_frames(&stream.input, &vec![0i16; 8 * 1_000]).await;
    stream.input.send(SttInput::Close).await.expect("close");
    let rest = drain(&mut stream).await;
    let second = finals(&rest);
    println!("rest: {second:?}");
    assert_eq!(second.len(), 1, "{rest:?}");
    assert!(!rest.contains(&SttEvent::SpeechStarted));
}

#[tokio::test]
async fn dropping_the_input_ends_the_stream() {
    if !require_speech_tools("dropping_the_input_ends_the_stream") {
        return;
    }
    let stt = provider();
    let SttStream { input, mut events } = stt.open(&params()).expect("open");
    drop(input);
    let end = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
    assert_eq!(end.expect("closes"), None);
    // The decoder went back to the pool for the next call.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(stt.pool().idle(), 1);
}

#[tokio::test]
async fn bad_parameters_are_refused() {
    if !require_speech_tools("bad_parameters_are_refused") {
        return;
    }
    let stt = provider();
    let mut german = params();
    german.language = "de-DE".into();
    assert!(matches!(stt.open(&german), Err(SttError::Config(_))));
    let mut rate = params();
    rate.sample_rate = 0;
    assert!(matches!(stt.open(&rate), Err(SttError::Config(_))));
}

#[test]
fn a_missing_model_is_a_clear_error() {
    let mut config = LocalSttConfig::new("hello");
    config.model_dir = "/nonexistent/pocketsphinx".into();
    match LocalStt::new(config) {
        Err(SttError::Unavailable(m)) => assert!(m.contains("apt-get install"), "{m}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// The example agent's questions in one call, one after another, as the
/// voice loop streams them: the WER through VAD segmentation, pre-roll and
/// endpointing (printed with `--nocapture`).
#[tokio::test]
async fn streaming_wer_of_the_example_questions() {
    if !require_speech_tools("streaming_wer_of_the_example_questions") {
        return;
    }
    let mut stream = provider().open(&params()).expect("open");
    let mut audio = vec![0i16; 8 * 500];
    for q in testing::HARBOR_BIKES_QUESTIONS {
        audio.extend(testing::phone_speech(q).expect("espeak-ng"));
        audio.extend(vec![0i16; 8 * 1_200]);
    }
    // Send while draining so neither channel fills up.
    let input = stream.input.clone();
    let sender = tokio::spawn(async move {
        send_frames(&input, &audio).await;
        input.send(SttInput::Close).await.expect("close");
    });
    let events = drain(&mut stream).await;
    sender.await.expect("sender");
    let f = finals(&events);
    for (text, _) in &f {
        println!("final: {text}");
    }
    let hypothesis: Vec<&str> = f.iter().map(|(t, _)| t.as_str()).collect();
    let reference = testing::HARBOR_BIKES_QUESTIONS.join(" ");
    let wer = voice_agent_sphinx::wer(&reference, &hypothesis.join(" "));
    println!("{} utterances, streaming WER {wer:.3}", f.len());
    assert_eq!(
        events
            .iter()
            .filter(|e| **e == SttEvent::SpeechStarted)
            .count(),
        f.len()
    );
    assert!(wer < 0.6, "WER {wer:.3}");
}
