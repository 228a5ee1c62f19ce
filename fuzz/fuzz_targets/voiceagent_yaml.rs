//! `voice-agent-operator validate -f`: `load_voice_agent` (YAML parse, schema
//! defaults and checks, CEL rules, typed decode) on arbitrary text. Must
//! never panic, however deep, aliased or odd the document.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(yaml) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(agent) = voice_agent_api::validation::load_voice_agent(yaml) {
        // What validated serializes back (the operator writes status from it).
        let _ = serde_json::to_string(&agent).expect("a VoiceAgent serializes");
    }
});
