//! Every manifest under `examples/` validates against the CRDs (schema and CEL)
//! and decodes into the typed API, and the schema defaults agree with the
//! serde defaults the workloads use.

use serde_json::Value;
use voice_agent_api::validation::Validator;
use voice_agent_api::{Call, PhoneNumber, VoiceAgent};
use voice_agent_tests::{files_in, yaml_docs};

#[test]
fn every_example_is_valid() {
    let validator = Validator::new();
    let mut kinds = Vec::new();
    for file in files_in("examples", "yaml") {
        let text = std::fs::read_to_string(&file).expect("readable");
        for doc in yaml_docs(&text) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            let defaulted = validator
                .validate(&doc)
                .unwrap_or_else(|e| panic!("{}: {kind}: {e}", file.display()));
            let decoded = match kind.as_str() {
                "VoiceAgent" => serde_json::from_value::<VoiceAgent>(defaulted).map(drop),
                "PhoneNumber" => serde_json::from_value::<PhoneNumber>(defaulted).map(drop),
                "Call" => serde_json::from_value::<Call>(defaulted).map(drop),
                other => panic!("{}: unexpected kind {other}", file.display()),
            };
            decoded.unwrap_or_else(|e| panic!("{}: does not decode: {e}", file.display()));
            kinds.push((
                file.file_name().map(|f| f.to_string_lossy().into_owned()),
                kind,
            ));
        }
    }
    for (file, kind) in [
        ("voiceagent-minimal.yaml", "VoiceAgent"),
        ("voiceagent.yaml", "VoiceAgent"),
        ("voiceagent-full.yaml", "VoiceAgent"),
        ("phonenumber.yaml", "PhoneNumber"),
        ("call.yaml", "Call"),
    ] {
        assert!(
            kinds.contains(&(Some(file.to_string()), kind.to_string())),
            "examples/{file} with a {kind} is missing"
        );
    }
}

fn example(name: &str) -> Value {
    yaml_docs(&voice_agent_tests::read(&format!("examples/{name}")))
        .into_iter()
        .next()
        .expect("one document")
}

#[test]
fn schema_defaults_match_serde_defaults() {
    // The API server fills schema defaults; code that reads a manifest from a
    // file (dev mode) relies on serde defaults. They must agree.
    let validator = Validator::new();
    for name in [
        "voiceagent-minimal.yaml",
        "voiceagent.yaml",
        "voiceagent-full.yaml",
    ] {
        let raw = example(name);
        let defaulted = validator.validate(&raw).expect("valid");
        let from_raw: VoiceAgent = serde_json::from_value(raw).expect("decodes");
        let from_defaulted: VoiceAgent = serde_json::from_value(defaulted).expect("decodes");
        assert_eq!(from_raw.spec, from_defaulted.spec, "{name}");
    }
}

#[test]
fn minimal_example_gets_the_documented_defaults() {
    let defaulted = Validator::new()
        .validate(&example("voiceagent-minimal.yaml"))
        .expect("valid");
    let va: VoiceAgent = serde_json::from_value(defaulted.clone()).expect("decodes");
    let s = &va.spec;
    assert_eq!(s.persona.language, "en-US");
    assert_eq!(defaulted["spec"]["llm"]["provider"], "local");
    assert_eq!(defaulted["spec"]["stt"]["provider"], "local");
    assert_eq!(defaulted["spec"]["tts"]["provider"], "local");
    assert_eq!(defaulted["spec"]["telephony"]["transport"], "mediaStreams");
    assert_eq!(
        defaulted["spec"]["knowledge"]["vectorStore"]["type"],
        "embedded"
    );
    assert_eq!(defaulted["spec"]["autoscaling"]["engine"], "operator");
    assert_eq!(s.llm.max_tokens, 256);
    assert_eq!(s.stt.endpointing_ms, 300);
    assert_eq!(s.components.runtime.max_calls_per_pod, 20);
    assert_eq!(s.components.runtime.drain_timeout_seconds, 600);
    assert_eq!(
        (
            s.components.gateway.min_replicas,
            s.components.gateway.max_replicas
        ),
        (1, 10)
    );
    assert_eq!(
        s.autoscaling
            .behavior
            .scale_down
            .stabilization_window_seconds,
        300
    );
    assert_eq!(
        s.autoscaling.behavior.scale_up.stabilization_window_seconds,
        0
    );
    assert_eq!(s.autoscaling.targets.turn_latency_p95_ms, 1200);
    assert_eq!(s.autoscaling.targets.effective_calls_per_pod(20), 16);
    assert_eq!(s.call_retention.ttl_seconds_after_ended, 86400);
    assert!(s.database.is_none());
    assert_eq!(
        s.webhook_url(),
        "https://hello.voice.example.com/twilio/voice"
    );
}

#[test]
fn full_example_lists_every_secret_reference() {
    let va: VoiceAgent = serde_json::from_value(example("voiceagent-full.yaml")).expect("decodes");
    let fields: Vec<&str> = va.spec.secret_refs().into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        fields,
        [
            "spec.llm.apiKeySecretRef",
            "spec.stt.apiKeySecretRef",
            "spec.tts.apiKeySecretRef",
            "spec.knowledge.embedder.apiKeySecretRef",
            "spec.knowledge.vectorStore.qdrant.apiKeySecretRef",
            "spec.database.postgres.urlSecretRef",
            "spec.telephony.twilio.authTokenSecretRef",
            "spec.telephony.livekit.apiKeySecretRef",
            "spec.telephony.livekit.apiSecretSecretRef",
        ]
    );
    let minimal: VoiceAgent =
        serde_json::from_value(example("voiceagent-minimal.yaml")).expect("decodes");
    assert_eq!(minimal.spec.secret_refs().len(), 1);
}

#[test]
fn typed_objects_round_trip_through_json() {
    for name in ["voiceagent-full.yaml", "voiceagent-minimal.yaml"] {
        let va: VoiceAgent = serde_json::from_value(example(name)).expect("decodes");
        let again: VoiceAgent =
            serde_json::from_value(serde_json::to_value(&va).expect("encodes")).expect("decodes");
        assert_eq!(va, again, "{name}");
    }
    let call: Call = serde_json::from_value(example("call.yaml")).expect("decodes");
    let status = call.status.as_ref().expect("status");
    assert_eq!(status.phase, Some(voice_agent_api::CallPhase::Ended));
    assert!(status.phase.is_some_and(|p| p.is_terminal()));
    assert_eq!(
        status.end_reason,
        Some(voice_agent_api::CallEndReason::CallerHangup)
    );
    let again: Call =
        serde_json::from_value(serde_json::to_value(&call).expect("encodes")).expect("decodes");
    assert_eq!(call, again);
}
