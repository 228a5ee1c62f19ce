//! Recognition with the real PocketSphinx and espeak-ng. These tests fail
//! when the tools are missing, unless `VOICE_AGENT_SKIP_SPHINX=1`.

use std::path::Path;
use std::time::Instant;

use voice_agent_sphinx::phone::PhoneUpsampler;
use voice_agent_sphinx::testing::{self, HARBOR_BIKES_QUESTIONS, require_speech_tools};
use voice_agent_sphinx::wer::word_errors;
use voice_agent_sphinx::{
    Decoder, DecoderConfig, DecoderPool, DomainOptions, LanguageModel, SphinxError,
};

fn workspace_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Phone audio of `text`, converted for the decoder in 20 ms frames as the
/// runtime does.
fn decoder_audio(text: &str) -> Vec<i16> {
    let phone = testing::phone_speech(text).expect("espeak-ng");
    let mut up = PhoneUpsampler::new(8_000).expect("upsampler");
    let mut out = Vec::new();
    for frame in phone.chunks(160) {
        up.process(frame, &mut out);
    }
    up.flush(&mut out);
    out
}

fn recognize(pool: &DecoderPool, audio: &[i16]) -> String {
    let mut decoder = pool.get().expect("decoder");
    decoder.start_utterance().expect("start");
    for chunk in audio.chunks(320) {
        decoder.process(chunk).expect("process");
    }
    decoder.end_utterance().expect("end").unwrap_or_default()
}

/// The WER measurement of the example agent's questions (printed with
/// `--nocapture`; `examples/bench.rs` has more sets and options).
#[test]
fn domain_model_wer_on_phone_speech() {
    if !require_speech_tools("domain_model_wer_on_phone_speech") {
        return;
    }
    let knowledge = testing::example_knowledge(workspace_root());
    let pool = DecoderPool::for_domain(&DomainOptions::new(knowledge)).expect("domain model");
    let (mut errors, mut words) = (0, 0);
    let (mut audio_s, mut decode_s) = (0.0, 0.0);
    for q in HARBOR_BIKES_QUESTIONS {
        let audio = decoder_audio(q);
        let started = Instant::now();
        let hyp = recognize(&pool, &audio);
        decode_s += started.elapsed().as_secs_f64();
        audio_s += audio.len() as f64 / 16_000.0;
        let (e, n) = word_errors(q, &hyp);
        errors += e;
        words += n;
        println!("{:.2}  {q:42} -> {hyp}", e as f64 / n as f64);
    }
    let wer = errors as f64 / words as f64;
    println!(
        "WER {wer:.3} ({errors}/{words}); real-time factor {:.3} (unoptimized builds are slower)",
        decode_s / audio_s
    );
    // Generous: catches a broken decoder, model or audio path (the measured
    // value is about 0.2; a general model or no noise floor gives ~0.5-0.85).
    assert!(wer < 0.6, "WER {wer:.3}");
}

#[test]
fn silence_gives_no_words_and_decoders_are_reused() {
    if !require_speech_tools("silence_gives_no_words_and_decoders_are_reused") {
        return;
    }
    let pool = DecoderPool::for_domain(&DomainOptions::new("We fix bikes.")).expect("model");
    pool.prewarm(1).expect("prewarm");
    assert_eq!(pool.idle(), 1);
    let mut up = PhoneUpsampler::new(8_000).expect("upsampler");
    let mut audio = Vec::new();
    up.process(&[0; 16_000], &mut audio);
    assert_eq!(recognize(&pool, &audio), "");
    // The decoder went back to the pool, and a second one is made on demand.
    assert_eq!(pool.idle(), 1);
    let a = pool.get().expect("a");
    let b = pool.get().expect("b");
    assert_eq!(pool.idle(), 0);
    drop((a, b));
    assert_eq!(pool.idle(), 2);
}

#[test]
fn partial_hypotheses_grow_while_speaking() {
    if !require_speech_tools("partial_hypotheses_grow_while_speaking") {
        return;
    }
    let pool = DecoderPool::for_domain(&DomainOptions::new(testing::HARBOR_BIKES_KNOWLEDGE))
        .expect("model");
    let audio = decoder_audio("What time do you open on Saturday?");
    let mut decoder = pool.get().expect("decoder");
    decoder.start_utterance().expect("start");
    let mut partials = Vec::new();
    for chunk in audio.chunks(4_000) {
        decoder.process(chunk).expect("process");
        partials.extend(decoder.partial());
    }
    let last = decoder.end_utterance().expect("end").unwrap_or_default();
    assert!(!partials.is_empty(), "no partial results");
    assert!(last.contains("saturday"), "final: {last}");
}

#[test]
fn decoder_errors_are_reported() {
    if !require_speech_tools("decoder_errors_are_reported") {
        return;
    }
    let missing = DecoderConfig::en_us("/nonexistent/model", LanguageModel::Default);
    match Decoder::new(&missing) {
        Err(SphinxError::Model(m)) => assert!(m.contains("apt-get install"), "{m}"),
        other => panic!("expected a model error, got {other:?}"),
    }
    let mut bad = DecoderConfig::en_us(
        voice_agent_sphinx::DEFAULT_MODEL_DIR,
        LanguageModel::Default,
    );
    bad.tuning
        .extra
        .push(("-no-such-option".into(), "1".into()));
    assert!(matches!(Decoder::new(&bad), Err(SphinxError::Config(_))));
    let mut rate = bad.clone();
    rate.tuning.extra.clear();
    rate.sample_rate = 1;
    assert!(matches!(Decoder::new(&rate), Err(SphinxError::Config(_))));

    let pool = DecoderPool::for_domain(&DomainOptions::new("hello")).expect("model");
    let mut d = pool.get().expect("decoder");
    assert!(matches!(d.process(&[0; 160]), Err(SphinxError::Decode(_))));
    assert_eq!(d.end_utterance().expect("no utterance"), None);
    assert_eq!(d.partial(), None);
    d.start_utterance().expect("start");
    d.start_utterance()
        .expect("restart discards the open utterance");
    d.process(&[]).expect("empty chunk");
}

/// Decoders are `Send`: a pooled decoder can serve a call on another thread.
#[test]
fn decoders_move_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<Decoder>();
    assert_send::<voice_agent_sphinx::PooledDecoder>();
    if !require_speech_tools("decoders_move_between_threads") {
        return;
    }
    let pool = DecoderPool::for_domain(&DomainOptions::new("hello there")).expect("model");
    // Both checked out before either thread can give one back.
    let decoders: Vec<_> = (0..2).map(|_| pool.get().expect("decoder")).collect();
    let handles: Vec<_> = decoders
        .into_iter()
        .map(|mut d| {
            std::thread::spawn(move || {
                d.start_utterance().expect("start");
                d.process(&[0; 1600]).expect("process");
                d.end_utterance().expect("end")
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().expect("thread"), None);
    }
    assert_eq!(pool.idle(), 2);
}
