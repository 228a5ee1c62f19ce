//! Twilio Media Streams frames: `Message::parse` on arbitrary text must
//! never panic, and whatever it accepts must survive `to_json` → `parse`
//! unchanged (the runtime re-serializes what it reads; the simulated caller
//! speaks Twilio's side with the same types).
#![no_main]

use libfuzzer_sys::fuzz_target;
use voice_agent_proto::mediastreams::{MAX_MESSAGE_BYTES, Message};

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8 by the protocol; tungstenite refuses
    // anything else before our code sees it.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(message) = Message::parse(text) else {
        return;
    };
    assert!(
        text.len() <= MAX_MESSAGE_BYTES,
        "accepted an oversized frame"
    );
    let json = message.to_json();
    assert!(!json.is_empty(), "to_json of {message:?} is empty");
    match Message::parse(&json) {
        Ok(again) => assert_eq!(again, message, "round trip changed the message: {json}"),
        // Serializing adds defaulted fields, so a frame just under the size
        // limit may grow past it; nothing else may fail.
        Err(e) => assert!(
            json.len() > MAX_MESSAGE_BYTES,
            "to_json output does not parse: {e}: {json}"
        ),
    }
    // The accessor the gateway routes by.
    let _ = message.stream_sid();
});
