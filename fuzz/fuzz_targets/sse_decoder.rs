//! The runtime's SSE decoder of the agent's reply stream, fed the body in
//! fuzzed chunks, and `reply_event` on every event it yields.
//!
//! Input layout: the first byte seeds the chunking (see `chunks`); the rest
//! is the body. Checks: no panic, and the events do not depend on how the
//! body was split into chunks (the network decides that).
#![no_main]

use libfuzzer_sys::fuzz_target;
use voice_agent_runtime::clients::{MAX_SSE_EVENT_BYTES, ReplyEvent, SseDecoder, reply_event};

fuzz_target!(|data: &[u8]| {
    let Some((&seed, body)) = data.split_first() else {
        return;
    };

    let (whole, whole_err) = decode(std::iter::once(body));
    let (split, split_err) = decode(chunks(body, seed));
    // A body with no event larger than the limit decodes the same whatever
    // the chunking. (The limit is checked per push, so with a bigger body an
    // error may surface at a different chunk.)
    if body.len() <= MAX_SSE_EVENT_BYTES {
        assert!(!whole_err && !split_err, "error below the size limit");
        assert_eq!(whole, split, "events depend on chunking");
    }

    for (event, data) in &whole {
        match reply_event(event, data) {
            Ok(Some(ReplyEvent::Delta(_) | ReplyEvent::Citations(_) | ReplyEvent::Done { .. })) => {
                assert!(matches!(event.as_str(), "delta" | "citations" | "done"));
            }
            Ok(None) => assert!(!matches!(
                event.as_str(),
                "delta" | "citations" | "done" | "error"
            )),
            Err(_) => {}
        }
    }
});

/// All events of the chunks, and whether the decoder refused a chunk (it
/// stops there, as the runtime does).
fn decode<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> (Vec<(String, String)>, bool) {
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    for chunk in chunks {
        match decoder.push(chunk) {
            Ok(more) => events.extend(more),
            Err(_) => return (events, true),
        }
    }
    (events, false)
}

/// Splits `body` into chunks whose lengths come from a small xorshift
/// generator seeded by `seed`: 0 (an empty read) up to 31 bytes, so every
/// separator (`\n\n`, `\r\n\r\n`) gets cut at every position.
fn chunks(body: &[u8], seed: u8) -> impl Iterator<Item = &[u8]> {
    let mut state = u32::from(seed) | 0x100;
    let mut rest = body;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        if rest.is_empty() {
            done = true;
            return Some(rest);
        }
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state % 32) as usize;
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        Some(chunk)
    })
}
