//! The `local` provider end to end: real espeak-ng, real HTTP on loopback.
#![allow(missing_docs)]

mod common;

use common::{error_body, header, json as json_body, rms, start};
use serde_json::json;
use voice_agent_proto::audio::{decode_mulaw, pcm16_le_to_samples};
use voice_agent_proto::error::codes;
use voice_agent_proto::{AudioFormat, SynthesizeJsonResponse};
use voice_agent_tts::wav::WavReader;
use voice_agent_tts::{Config, Outcome};

const SENTENCE: &str = "Hello, thanks for calling. How can I help you today?";

fn config() -> Config {
    Config {
        listen: ([127, 0, 0, 1], 0).into(),
        max_text_chars: 200,
        ..Config::default()
    }
}

/// What espeak-ng itself produces for `text`: samples at 22,050 Hz.
fn espeak_native(text: &str) -> Vec<i16> {
    use std::io::Write;
    let mut child = std::process::Command::new("espeak-ng")
        .args(["--stdout", "--stdin", "-b", "1", "-v", "en-us"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("espeak-ng is installed (apt-get install espeak-ng)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("espeak-ng output");
    let mut reader = WavReader::new();
    let mut samples = Vec::new();
    reader.push(&out.stdout, &mut samples).expect("wav");
    reader.finish().expect("complete wav");
    assert_eq!(reader.format().map(|f| f.sample_rate), Some(22_050));
    samples
}

#[tokio::test]
async fn pcm16_16k_streams_speech() {
    let server = start(config()).await;
    let response = server
        .synth(json!({"text": SENTENCE, "format": "pcm16", "sampleRate": 16000}))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("audio/pcm;rate=16000")
    );
    assert_eq!(
        AudioFormat::from_content_type(&header(&response, "content-type").expect("ct"))
            .expect("parse"),
        (AudioFormat::Pcm16, 16_000)
    );
    assert_eq!(
        header(&response, "x-audio-duration-ms"),
        None,
        "unknown up front"
    );
    assert_eq!(
        header(&response, "transfer-encoding").as_deref(),
        Some("chunked"),
        "streamed, not buffered"
    );
    let body = response.bytes().await.expect("body");
    assert!(!body.is_empty());
    assert_eq!(body.len() % 2, 0, "whole PCM16 samples");
    let samples = pcm16_le_to_samples(&body).expect("pcm16");
    assert!(
        rms(&samples) > 1_000.0,
        "RMS {} is near silence",
        rms(&samples)
    );

    // Same speech as espeak-ng's own 22,050 Hz output, resampled: the
    // length matches to within the filter tail.
    let native = espeak_native(SENTENCE);
    let native_ms = native.len() as f64 / 22.05;
    let ours_ms = samples.len() as f64 / 16.0;
    assert!(
        (ours_ms - native_ms).abs() < 5.0,
        "{ours_ms} ms vs espeak-ng {native_ms} ms"
    );
    let level = rms(&samples) / rms(&native);
    assert!((0.8..1.2).contains(&level), "level changed by {level}");
}

#[tokio::test]
async fn mulaw_8k_streams_speech() {
    let server = start(config()).await;
    let response = server
        .synth(json!({"text": SENTENCE, "voice": "en-us", "format": "mulaw", "sampleRate": 8000}))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("audio/basic;rate=8000")
    );
    let body = response.bytes().await.expect("body");
    assert!(body.len() > 8_000, "{} bytes is under a second", body.len());
    let samples = decode_mulaw(&body);
    assert!(rms(&samples) > 1_000.0, "RMS {}", rms(&samples));
}

#[tokio::test]
async fn json_answer_matches_the_stream_and_its_duration_is_exact() {
    let server = start(config()).await;
    for (format, rate) in [("pcm16", 24_000u32), ("mulaw", 8_000)] {
        let text = format!("The JSON answer at {rate} hertz.");
        let request = json!({"text": text, "format": format, "sampleRate": rate});
        // First the JSON answer (a synthesis), then the stream (a cache
        // hit), then JSON again (a hit): all the same bytes.
        let response = server.synth_json(request.clone()).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "content-type").as_deref(),
            Some("application/json")
        );
        let answer: SynthesizeJsonResponse = json_body(response).await;
        let audio = answer.audio_bytes().expect("base64");
        assert_eq!(answer.format.as_str(), format);
        assert_eq!(answer.sample_rate, rate);
        let per_sample = answer.format.bytes_per_sample();
        assert_eq!(
            answer.duration_ms,
            audio.len() as f64 / per_sample as f64 / f64::from(rate) * 1000.0
        );

        let streamed = server.synth(request.clone()).await;
        let duration: f64 = header(&streamed, "x-audio-duration-ms")
            .expect("cache hit has a duration")
            .parse()
            .expect("number");
        assert_eq!(duration, answer.duration_ms);
        assert_eq!(streamed.bytes().await.expect("body").as_ref(), &audio[..]);

        let again: SynthesizeJsonResponse = json_body(server.synth_json(request).await).await;
        assert_eq!(again, answer);
    }
    // And without the cache: a fresh stream equals a fresh JSON answer.
    let uncached = start(Config {
        cache_bytes: 0,
        ..config()
    })
    .await;
    let request = json!({"text": SENTENCE, "sampleRate": 16000});
    let streamed = uncached
        .synth(request.clone())
        .await
        .bytes()
        .await
        .expect("body");
    let answer: SynthesizeJsonResponse = json_body(uncached.synth_json(request).await).await;
    assert_eq!(answer.audio_bytes().expect("base64"), streamed.as_ref());
    assert_eq!(
        answer.duration_ms,
        streamed.len() as f64 / 2.0 / 16_000.0 * 1000.0
    );
    assert_eq!(uncached.state.exporter().cache_counts(), (0, 2, 0));
}

#[tokio::test]
async fn second_request_is_a_cache_hit() {
    let server = start(config()).await;
    let request = json!({"text": "Welcome back!", "sampleRate": 16000});
    let first = server.synth(request.clone()).await;
    assert_eq!(header(&first, "x-audio-duration-ms"), None);
    let first = first.bytes().await.expect("body");
    assert_eq!(server.state.exporter().cache_counts(), (0, 1, 0));
    let (entries, bytes) = server.state.cache_usage();
    assert_eq!(entries, 1);
    assert!(bytes > first.len());

    let second = server.synth(request).await;
    assert_eq!(second.status(), 200);
    assert_eq!(
        header(&second, "x-audio-duration-ms"),
        Some((first.len() as f64 / 2.0 / 16.0).to_string())
    );
    assert_eq!(
        header(&second, "content-length"),
        Some(first.len().to_string())
    );
    assert_eq!(second.bytes().await.expect("body"), first);
    assert_eq!(server.state.exporter().cache_counts(), (1, 1, 0));
    assert_eq!(server.state.exporter().requests(Outcome::CacheHit), 1);
    assert_eq!(server.state.exporter().requests(Outcome::Ok), 1);

    // Another voice, format or rate is another phrase.
    let other = server
        .synth(json!({"text": "Welcome back!", "sampleRate": 8000}))
        .await;
    assert_eq!(header(&other, "x-audio-duration-ms"), None);
    other.bytes().await.expect("body");
    assert_eq!(server.state.exporter().cache_counts(), (1, 2, 0));

    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        "voice_agent_tts_cache_hits_total 1",
        "voice_agent_tts_cache_misses_total 2",
        "voice_agent_tts_cache_evictions_total 0",
        "voice_agent_tts_in_flight 0",
        r#"voice_agent_tts_requests_total{provider="local",result="cache_hit"} 1"#,
        r#"voice_agent_tts_requests_total{provider="local",result="ok"} 2"#,
        r#"voice_agent_tts_ttfb_seconds_count{cache="miss",provider="local"} 2"#,
        r#"voice_agent_tts_ttfb_seconds_count{cache="hit",provider="local"} 1"#,
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    assert!(metrics.contains("voice_agent_tts_cache_bytes "));
}

#[tokio::test]
async fn byte_budget_evicts_the_least_recently_used_phrase() {
    // Measure the three phrases' costs on a roomy cache first.
    let texts = ["Alpha one.", "Bravo two.", "Charlie three."];
    let probe = start(config()).await;
    let mut costs = Vec::new();
    for text in texts {
        let before = probe.state.cache_usage().1;
        probe
            .synth(json!({"text": text, "format": "mulaw", "sampleRate": 8000}))
            .await
            .bytes()
            .await
            .expect("body");
        costs.push(probe.state.cache_usage().1 - before);
    }
    let budget = (costs[0] + costs[1]).max(costs[0] + costs[2]);
    let server = start(Config {
        cache_bytes: budget,
        ..config()
    })
    .await;
    let synth = |text: &'static str| {
        let server = &server;
        async move {
            let r = server
                .synth(json!({"text": text, "format": "mulaw", "sampleRate": 8000}))
                .await;
            let hit = header(&r, "x-audio-duration-ms").is_some();
            r.bytes().await.expect("body");
            hit
        }
    };
    assert!(!synth(texts[0]).await);
    assert!(!synth(texts[1]).await);
    assert_eq!(server.state.cache_usage().0, 2);
    assert!(synth(texts[0]).await, "A is cached and now most recent");
    assert!(
        !synth(texts[2]).await,
        "C evicts B, the least recently used"
    );
    assert_eq!(server.state.exporter().cache_counts().2, 1);
    assert!(server.state.cache_usage().1 <= budget);
    assert!(synth(texts[0]).await, "A survived");
    assert!(synth(texts[2]).await, "C is cached");
    assert!(!synth(texts[1]).await, "B was evicted");
}

#[tokio::test]
async fn bad_input_is_refused_and_nothing_is_cached() {
    let server = start(Config {
        max_text_chars: 50,
        ..config()
    })
    .await;
    let cases: Vec<(String, &str)> = vec![
        (json!({"text": ""}).to_string(), "text"),
        (json!({"text": "  \n "}).to_string(), "text"),
        (json!({"text": "x".repeat(51)}).to_string(), "text"),
        (
            json!({"text": "Hi", "voice": "xx-nope"}).to_string(),
            "voice",
        ),
        (json!({"text": "Hi", "voice": "en us"}).to_string(), "voice"),
        (
            json!({"text": "Hi", "voice": "--help"}).to_string(),
            "voice",
        ),
        (json!({"text": "Hi", "voice": ""}).to_string(), "voice"),
        (json!({"text": "Hi", "format": "mp3"}).to_string(), "format"),
        (
            json!({"text": "Hi", "sampleRate": 44100}).to_string(),
            "sampleRate",
        ),
        (
            json!({"text": "Hi", "sampleRate": "8000"}).to_string(),
            "sampleRate",
        ),
        (json!({"text": 5}).to_string(), "text"),
        (json!(["Hi"]).to_string(), "object"),
        (json!({"voice": "en-us"}).to_string(), "text"),
        ("{\"text\": \"Hi\"".to_owned(), "malformed"),
        ("not json".to_owned(), "malformed"),
    ];
    for (body, mentions) in &cases {
        for json in [false, true] {
            let response = server.synth_raw(body.clone(), json).await;
            assert_eq!(response.status(), 400, "{body}");
            let err = error_body(response).await;
            assert_eq!(err.error.code, codes::INVALID_ARGUMENT, "{body}");
            assert!(
                err.error.message.contains(mentions),
                "{body}: {:?} should mention {mentions}",
                err.error.message
            );
        }
    }
    let wrong_type = server
        .client
        .post(server.url("/v1/synthesize"))
        .header("content-type", "text/plain")
        .body(json!({"text": "Hi"}).to_string())
        .send()
        .await
        .expect("send");
    assert_eq!(wrong_type.status(), 415);
    assert_eq!(
        error_body(wrong_type).await.error.code,
        codes::UNSUPPORTED_MEDIA_TYPE
    );
    let huge = server
        .synth_raw(json!({"text": "x".repeat(100_000)}).to_string(), false)
        .await;
    assert_eq!(huge.status(), 413);
    assert_eq!(error_body(huge).await.error.code, codes::PAYLOAD_TOO_LARGE);
    let get = server
        .client
        .get(server.url("/v1/synthesize"))
        .send()
        .await
        .expect("send");
    assert_eq!(get.status(), 405);
    error_body(get).await;

    assert_eq!(server.state.cache_usage(), (0, 0));
    assert_eq!(server.state.exporter().cache_counts(), (0, 0, 0));
    assert_eq!(server.state.exporter().requests(Outcome::Ok), 0);
    assert_eq!(
        server.state.exporter().requests(Outcome::Invalid),
        cases.len() as u64 * 2 + 2
    );
    // A variant suffix is checked too; a real one works.
    let ok = server
        .synth(json!({"text": "Hi", "voice": "en-us+f3"}))
        .await;
    assert_eq!(ok.status(), 200);
    let bad = server
        .synth(json!({"text": "Hi", "voice": "en-us+nosuchvariant"}))
        .await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn missing_espeak_is_a_clear_503_and_not_ready() {
    let server = start(Config {
        espeak_bin: "/nonexistent/espeak-ng".into(),
        ..config()
    })
    .await;
    let response = server.synth(json!({"text": "Hello"})).await;
    assert_eq!(response.status(), 503);
    let err = error_body(response).await;
    assert_eq!(err.error.code, codes::UNAVAILABLE);
    assert!(
        err.error
            .message
            .contains("espeak-ng not found: apt-get install espeak-ng"),
        "{}",
        err.error.message
    );
    assert!(err.error.message.starts_with("local: "));
    assert_eq!(server.state.exporter().requests(Outcome::Unavailable), 1);
    assert_eq!(server.state.cache_usage(), (0, 0));

    let ready = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    assert!(
        error_body(ready)
            .await
            .error
            .message
            .contains("apt-get install espeak-ng")
    );
    let health = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200, "alive, just not ready");
}

#[tokio::test]
async fn ready_once_espeak_is_found() {
    let server = start(config()).await;
    assert!(!server.state.is_ready(), "nothing checked yet");
    let ready = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    assert!(server.state.is_ready());
    let summary = server.state.check_provider().await.expect("check");
    assert!(summary.contains("en-us"), "{summary}");

    // A default voice espeak-ng does not have fails the check.
    let wrong = start(Config {
        voice: "xx-nope".into(),
        ..config()
    })
    .await;
    let err = wrong.state.check_provider().await.expect_err("bad default");
    assert!(err.to_string().contains("xx-nope"), "{err}");
    assert!(!wrong.state.is_ready());
}

#[tokio::test]
async fn control_characters_and_option_like_text_are_just_text() {
    let server = start(config()).await;
    // On the command line this would be options; on stdin it is words.
    let path = std::env::temp_dir().join(format!("tts-not-written-{}", std::process::id()));
    let text = format!("--version -w {} \u{1}\u{7} hello", path.display());
    let response = server.synth(json!({ "text": text })).await;
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.expect("body");
    assert!(rms(&pcm16_le_to_samples(&body).expect("pcm")) > 500.0);
    assert!(!path.exists());
}
