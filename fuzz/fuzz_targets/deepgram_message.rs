//! The runtime's parser of Deepgram's streaming server messages (`Results`,
//! `SpeechStarted`, `UtteranceEnd`, `Metadata`, `Error`, anything else).
//!
//! Input: one WebSocket text message. Checks: no panic; a final or interim
//! transcript is trimmed (the turn machine relies on it); an interim is
//! never empty.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voice_agent_runtime::stt::SttEvent;
use voice_agent_runtime::stt::deepgram::parse_message;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_message(text) {
        Ok(Some(SttEvent::Final { text, .. })) => assert_eq!(text, text.trim()),
        Ok(Some(SttEvent::Interim { text })) => {
            assert!(!text.is_empty());
            assert_eq!(text, text.trim());
        }
        Ok(_) | Err(_) => {}
    }
});
