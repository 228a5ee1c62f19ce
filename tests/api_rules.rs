//! Each validation rule of the API, proven with one accepted and one rejected
//! object: the OpenAPI constraints (patterns, enums, ranges) and every CEL
//! rule, including the transition rules. Rejections must name the field.

use serde_json::{Value, json};
use voice_agent_api::validation::{ValidationErrors, Validator};
use voice_agent_tests::{read, remove, set, yaml_docs};

fn example(name: &str) -> Value {
    yaml_docs(&read(&format!("examples/{name}"))).remove(0)
}

fn secret() -> Value {
    json!({"name": "s", "key": "k"})
}

/// One rule: the base object, edits that keep it valid, edits that break it,
/// and the field and message the rejection must carry.
struct Case {
    name: &'static str,
    base: &'static str,
    accept: Vec<(&'static str, Option<Value>)>,
    reject: Vec<(&'static str, Option<Value>)>,
    field: &'static str,
    message: &'static str,
}

fn apply(mut obj: Value, edits: &[(&str, Option<Value>)]) -> Value {
    for (path, value) in edits {
        match value {
            Some(v) => set(&mut obj, path, v.clone()),
            None => remove(&mut obj, path),
        }
    }
    obj
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "llm openai requires an API key",
            base: "voiceagent-minimal.yaml",
            accept: vec![
                ("/spec/llm/provider", Some(json!("openai"))),
                ("/spec/llm/apiKeySecretRef", Some(secret())),
            ],
            reject: vec![("/spec/llm/provider", Some(json!("openai")))],
            field: "spec.llm",
            message: "llm.provider 'openai' requires llm.apiKeySecretRef",
        },
        Case {
            name: "stt deepgram requires an API key",
            base: "voiceagent-minimal.yaml",
            accept: vec![
                ("/spec/stt/provider", Some(json!("deepgram"))),
                ("/spec/stt/apiKeySecretRef", Some(secret())),
            ],
            reject: vec![("/spec/stt/provider", Some(json!("deepgram")))],
            field: "spec.stt",
            message: "stt.provider 'deepgram' requires stt.apiKeySecretRef",
        },
        Case {
            name: "vendor tts requires an API key",
            base: "voiceagent-minimal.yaml",
            accept: vec![
                ("/spec/tts/provider", Some(json!("elevenlabs"))),
                ("/spec/tts/apiKeySecretRef", Some(secret())),
            ],
            reject: vec![("/spec/tts/provider", Some(json!("openai")))],
            field: "spec.tts",
            message: "tts.provider other than 'local' requires tts.apiKeySecretRef",
        },
        Case {
            name: "openai embedder requires an API key",
            base: "voiceagent-minimal.yaml",
            accept: vec![
                ("/spec/knowledge/embedder/provider", Some(json!("openai"))),
                ("/spec/knowledge/embedder/apiKeySecretRef", Some(secret())),
            ],
            reject: vec![("/spec/knowledge/embedder/provider", Some(json!("openai")))],
            field: "spec.knowledge.embedder",
            message: "knowledge.embedder.provider 'openai' requires knowledge.embedder.apiKeySecretRef",
        },
        Case {
            name: "qdrant vector store requires the qdrant block",
            base: "voiceagent-minimal.yaml",
            accept: vec![
                ("/spec/knowledge/vectorStore/type", Some(json!("qdrant"))),
                (
                    "/spec/knowledge/vectorStore/qdrant",
                    Some(json!({"url": "http://qdrant:6334"})),
                ),
            ],
            reject: vec![("/spec/knowledge/vectorStore/type", Some(json!("qdrant")))],
            field: "spec.knowledge.vectorStore",
            message: "knowledge.vectorStore.type 'qdrant' requires the knowledge.vectorStore.qdrant block",
        },
        Case {
            name: "qdrant block only with type qdrant",
            base: "voiceagent-minimal.yaml",
            accept: vec![("/spec/knowledge/vectorStore/type", Some(json!("embedded")))],
            reject: vec![(
                "/spec/knowledge/vectorStore/qdrant",
                Some(json!({"url": "http://qdrant:6334"})),
            )],
            field: "spec.knowledge.vectorStore",
            message: "knowledge.vectorStore.qdrant is only allowed with type 'qdrant'",
        },
        Case {
            name: "knowledge source sets exactly one of configMap or inline (both)",
            base: "voiceagent-minimal.yaml",
            accept: vec![(
                "/spec/knowledge/sources",
                Some(json!([{"name": "faq", "inline": "We open at 9."}])),
            )],
            reject: vec![(
                "/spec/knowledge/sources",
                Some(json!([{"name": "faq", "inline": "x", "configMap": {"name": "faq"}}])),
            )],
            field: "spec.knowledge.sources[0]",
            message: "a knowledge source sets exactly one of configMap or inline",
        },
        Case {
            name: "knowledge source sets exactly one of configMap or inline (neither)",
            base: "voiceagent-minimal.yaml",
            accept: vec![(
                "/spec/knowledge/sources",
                Some(json!([{"name": "faq", "configMap": {"name": "faq"}}])),
            )],
            reject: vec![("/spec/knowledge/sources", Some(json!([{"name": "faq"}])))],
            field: "spec.knowledge.sources[0]",
            message: "a knowledge source sets exactly one of configMap or inline",
        },
        Case {
            name: "livekit transport requires the livekit block",
            base: "voiceagent-minimal.yaml",
            accept: vec![
                ("/spec/telephony/transport", Some(json!("livekit"))),
                (
                    "/spec/telephony/livekit",
                    Some(
                        json!({"url": "wss://lk.example.com", "apiKeySecretRef": secret(),
                                "apiSecretSecretRef": secret(), "sipUri": "sip:x.sip.livekit.cloud"}),
                    ),
                ),
            ],
            reject: vec![("/spec/telephony/transport", Some(json!("livekit")))],
            field: "spec.telephony",
            message: "telephony.transport 'livekit' requires the telephony.livekit block",
        },
        Case {
            name: "gateway minReplicas <= maxReplicas",
            base: "voiceagent-minimal.yaml",
            accept: vec![(
                "/spec/components/gateway",
                Some(json!({"minReplicas": 3, "maxReplicas": 3})),
            )],
            reject: vec![(
                "/spec/components/gateway",
                Some(json!({"minReplicas": 4, "maxReplicas": 3})),
            )],
            field: "spec.components.gateway",
            message: "minReplicas must be less than or equal to maxReplicas",
        },
        Case {
            name: "runtime minReplicas <= maxReplicas (with the default max)",
            base: "voiceagent-minimal.yaml",
            accept: vec![("/spec/components/runtime", Some(json!({"minReplicas": 10})))],
            reject: vec![("/spec/components/runtime", Some(json!({"minReplicas": 11})))],
            field: "spec.components.runtime",
            message: "minReplicas must be less than or equal to maxReplicas",
        },
        Case {
            name: "agent minReplicas <= maxReplicas",
            base: "voiceagent-minimal.yaml",
            accept: vec![(
                "/spec/components/agent",
                Some(json!({"minReplicas": 1, "maxReplicas": 2})),
            )],
            reject: vec![(
                "/spec/components/agent",
                Some(json!({"minReplicas": 2, "maxReplicas": 1})),
            )],
            field: "spec.components.agent",
            message: "minReplicas must be less than or equal to maxReplicas",
        },
        Case {
            name: "tts minReplicas <= maxReplicas",
            base: "voiceagent-minimal.yaml",
            accept: vec![("/spec/components/tts", Some(json!({"maxReplicas": 1})))],
            reject: vec![(
                "/spec/components/tts",
                Some(json!({"minReplicas": 3, "maxReplicas": 2})),
            )],
            field: "spec.components.tts",
            message: "minReplicas must be less than or equal to maxReplicas",
        },
        Case {
            name: "replicas are at least 1",
            base: "voiceagent-minimal.yaml",
            accept: vec![("/spec/components/agent/minReplicas", Some(json!(1)))],
            reject: vec![("/spec/components/agent/minReplicas", Some(json!(0)))],
            field: "spec.components.agent.minReplicas",
            message: "should be greater than or equal to 1",
        },
        Case {
            name: "replicas are at most 1000",
            base: "voiceagent-minimal.yaml",
            accept: vec![("/spec/components/runtime/maxReplicas", Some(json!(1000)))],
            reject: vec![("/spec/components/runtime/maxReplicas", Some(json!(1001)))],
            field: "spec.components.runtime.maxReplicas",
            message: "should be less than or equal to 1000",
        },
        Case {
            name: "turn latency target range",
            base: "voiceagent-minimal.yaml",
            accept: vec![(
                "/spec/autoscaling/targets/turnLatencyP95Ms",
                Some(json!(50)),
            )],
            reject: vec![(
                "/spec/autoscaling/targets/turnLatencyP95Ms",
                Some(json!(49)),
            )],
            field: "spec.autoscaling.targets.turnLatencyP95Ms",
            message: "should be greater than or equal to 50",
        },
        Case {
            name: "stabilization window range",
            base: "voiceagent-minimal.yaml",
            accept: vec![(
                "/spec/autoscaling/behavior/scaleDown",
                Some(json!({"stabilizationWindowSeconds": 3600})),
            )],
            reject: vec![(
                "/spec/autoscaling/behavior/scaleDown",
                Some(json!({"stabilizationWindowSeconds": 3601})),
            )],
            field: "spec.autoscaling.behavior.scaleDown.stabilizationWindowSeconds",
            message: "should be less than or equal to 3600",
        },
        Case {
            name: "temperature range",
            base: "voiceagent-minimal.yaml",
            accept: vec![("/spec/llm/temperature", Some(json!(2.0)))],
            reject: vec![("/spec/llm/temperature", Some(json!(2.5)))],
            field: "spec.llm.temperature",
            message: "should be less than or equal to 2",
        },
        Case {
            name: "llm provider enum",
            base: "voiceagent-minimal.yaml",
            accept: vec![("/spec/llm/provider", Some(json!("local")))],
            reject: vec![("/spec/llm/provider", Some(json!("anthropic")))],
            field: "spec.llm.provider",
            message: "Unsupported value: \"anthropic\"",
        },
        Case {
            name: "tts provider enum",
            base: "voiceagent-minimal.yaml",
            accept: vec![("/spec/tts/provider", Some(json!("local")))],
            reject: vec![("/spec/tts/provider", Some(json!("polly")))],
            field: "spec.tts.provider",
            message: "Unsupported value: \"polly\"",
        },
        Case {
            name: "transport enum",
            base: "voiceagent-minimal.yaml",
            accept: vec![("/spec/telephony/transport", Some(json!("mediaStreams")))],
            reject: vec![("/spec/telephony/transport", Some(json!("webrtc")))],
            field: "spec.telephony.transport",
            message: "Unsupported value: \"webrtc\"",
        },
        Case {
            name: "public URL is http(s) without a trailing slash",
            base: "voiceagent-minimal.yaml",
            accept: vec![(
                "/spec/telephony/publicUrl",
                Some(json!("http://127.0.0.1:8080")),
            )],
            reject: vec![(
                "/spec/telephony/publicUrl",
                Some(json!("voice.example.com/")),
            )],
            field: "spec.telephony.publicUrl",
            message: "should match",
        },
        Case {
            name: "greeting is required and not empty",
            base: "voiceagent-minimal.yaml",
            accept: vec![("/spec/persona/greeting", Some(json!("Hi.")))],
            reject: vec![("/spec/persona/greeting", Some(json!("")))],
            field: "spec.persona.greeting",
            message: "should be at least 1 chars long",
        },
        Case {
            name: "telephony is required",
            base: "voiceagent-minimal.yaml",
            accept: vec![],
            reject: vec![("/spec/telephony", None)],
            field: "spec.telephony",
            message: "Required value",
        },
        Case {
            name: "secret names are DNS subdomains",
            base: "voiceagent-minimal.yaml",
            accept: vec![(
                "/spec/telephony/twilio/authTokenSecretRef/name",
                Some(json!("twilio.prod")),
            )],
            reject: vec![(
                "/spec/telephony/twilio/authTokenSecretRef/name",
                Some(json!("Twilio_Prod")),
            )],
            field: "spec.telephony.twilio.authTokenSecretRef.name",
            message: "should match",
        },
        Case {
            name: "knowledge source names are unique",
            base: "voiceagent-minimal.yaml",
            accept: vec![(
                "/spec/knowledge/sources",
                Some(json!([{"name": "a", "inline": "x"}, {"name": "b", "inline": "y"}])),
            )],
            reject: vec![(
                "/spec/knowledge/sources",
                Some(json!([{"name": "a", "inline": "x"}, {"name": "a", "inline": "y"}])),
            )],
            field: "spec.knowledge.sources[1]",
            message: "Duplicate value",
        },
        Case {
            name: "unknown fields are refused",
            base: "voiceagent-minimal.yaml",
            accept: vec![("/spec/persona/goodbye", Some(json!("Bye!")))],
            reject: vec![("/spec/persona/voice", Some(json!("warm")))],
            field: "spec.persona.voice",
            message: "unknown field",
        },
        Case {
            name: "phone numbers are E.164",
            base: "phonenumber.yaml",
            accept: vec![("/spec/number", Some(json!("+442071838750")))],
            reject: vec![("/spec/number", Some(json!("(555) 123-0142")))],
            field: "spec.number",
            message: "should match '^\\+[1-9][0-9]{1,14}$'",
        },
        Case {
            name: "provider twilio requires the twilio block",
            base: "phonenumber.yaml",
            accept: vec![],
            reject: vec![("/spec/twilio", None)],
            field: "spec",
            message: "provider 'twilio' requires the twilio block",
        },
        Case {
            name: "Twilio account SIDs are AC + 32 hex digits",
            base: "phonenumber.yaml",
            accept: vec![(
                "/spec/twilio/accountSid",
                Some(json!("ACffffffffffffffffffffffffffffffff")),
            )],
            reject: vec![("/spec/twilio/accountSid", Some(json!("AC123")))],
            field: "spec.twilio.accountSid",
            message: "should match",
        },
        Case {
            name: "call phase enum",
            base: "call.yaml",
            accept: vec![("/status/phase", Some(json!("Active")))],
            reject: vec![("/status/phase", Some(json!("OnHold")))],
            field: "status.phase",
            message: "Unsupported value: \"OnHold\"",
        },
        Case {
            name: "call timestamps are RFC 3339",
            base: "call.yaml",
            accept: vec![("/status/endedAt", Some(json!("2026-11-25T10:02:31.5Z")))],
            reject: vec![("/status/endedAt", Some(json!("yesterday")))],
            field: "status.endedAt",
            message: "RFC 3339",
        },
    ]
}

fn assert_names(errors: &ValidationErrors, case: &Case) {
    assert!(
        errors
            .0
            .iter()
            .any(|e| e.field == case.field && e.message.contains(case.message)),
        "{}: expected `{}: ...{}...`, got: {errors}",
        case.name,
        case.field,
        case.message
    );
}

#[test]
fn each_rule_accepts_and_rejects() {
    let validator = Validator::new();
    for case in cases() {
        let base = example(case.base);
        let accepted = apply(base.clone(), &case.accept);
        if let Err(e) = validator.validate(&accepted) {
            panic!("{}: the accepted object was refused: {e}", case.name);
        }
        let rejected = apply(base, &case.reject);
        match validator.validate(&rejected) {
            Ok(_) => panic!("{}: the rejected object was accepted", case.name),
            Err(e) => assert_names(&e, &case),
        }
    }
}

#[test]
fn phone_number_is_immutable() {
    let v = Validator::new();
    let old = example("phonenumber.yaml");
    let mut same = old.clone();
    set(&mut same, "/spec/voiceAgentRef/name", json!("other-agent"));
    v.validate_update(&same, &old)
        .expect("rebinding to another agent is allowed");
    let mut changed = old.clone();
    set(&mut changed, "/spec/number", json!("+15559990000"));
    let err = v
        .validate_update(&changed, &old)
        .expect_err("number changes are refused");
    assert!(
        err.0
            .iter()
            .any(|e| e.field == "spec.number" && e.message.contains("number is immutable")),
        "{err}"
    );
    // A create is not an update: the transition rule does not apply.
    v.validate(&changed)
        .expect("a new PhoneNumber may use any number");
}

#[test]
fn call_spec_is_immutable() {
    let v = Validator::new();
    let old = example("call.yaml");
    let mut status_only = old.clone();
    set(&mut status_only, "/status/turns", json!(7));
    v.validate_update(&status_only, &old)
        .expect("status changes are allowed");
    let mut changed = old.clone();
    set(&mut changed, "/spec/from", json!("+1555•••0000"));
    let err = v
        .validate_update(&changed, &old)
        .expect_err("spec changes are refused");
    assert!(
        err.0
            .iter()
            .any(|e| e.field == "spec" && e.message.contains("spec is immutable")),
        "{err}"
    );
}

#[test]
fn objects_of_other_kinds_or_versions_are_refused() {
    let v = Validator::new();
    let mut obj = example("voiceagent-minimal.yaml");
    set(&mut obj, "/apiVersion", json!("voiceagent.io/v1"));
    assert!(
        v.validate(&obj)
            .expect_err("unknown version")
            .mentions("unknown apiVersion/kind")
    );
    let mut obj = example("voiceagent-minimal.yaml");
    remove(&mut obj, "/metadata/name");
    assert!(
        v.validate(&obj)
            .expect_err("no name")
            .mentions("metadata.name")
    );
    let mut obj = example("voiceagent-minimal.yaml");
    set(&mut obj, "/metadata/name", json!("Front_Desk"));
    assert!(
        v.validate(&obj)
            .expect_err("bad name")
            .mentions("metadata.name")
    );
}

#[test]
fn wrong_types_are_refused_with_the_field() {
    let v = Validator::new();
    for (path, value, field) in [
        (
            "/spec/components/runtime/maxCallsPerPod",
            json!("many"),
            "spec.components.runtime.maxCallsPerPod",
        ),
        (
            "/spec/components/runtime/maxCallsPerPod",
            json!(2.5),
            "spec.components.runtime.maxCallsPerPod",
        ),
        ("/spec/persona", json!("hello"), "spec.persona"),
        (
            "/spec/knowledge/sources",
            json!({"name": "x"}),
            "spec.knowledge.sources",
        ),
        (
            "/spec/llm/maxTokens",
            json!(9_999_999_999_i64),
            "spec.llm.maxTokens",
        ),
    ] {
        let mut obj = example("voiceagent-minimal.yaml");
        set(&mut obj, path, value);
        let err = v.validate(&obj).expect_err(path);
        assert!(err.0.iter().any(|e| e.field == field), "{path}: {err}");
    }
}
