//! Twilio webhooks: the strict form parser on arbitrary bodies, and
//! `X-Twilio-Signature` validation with fuzzed token, URL, parameters and
//! signature. Never a panic; a signature from `compute` always validates;
//! a changed signature never does; an accepted body re-encoded parses to the
//! same pairs. The gateway's media-stream token gets the same treatment.
//!
//! Input layout: `token \xff url \xff signature \xff body` (missing pieces
//! are empty), so libFuzzer mutates each piece independently; `\xff` never
//! occurs in UTF-8.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voice_agent_gateway::{form, signature};

fuzz_target!(|data: &[u8]| {
    // The whole input as a body: the parser sees arbitrary bytes first.
    check_form(data);

    let mut parts = data.splitn(4, |&b| b == 0xff);
    let token = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let url = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let sig = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();

    let params = match form::parse(body) {
        Ok(params) => params,
        // A body the parser refuses still gets signed: use its raw pieces.
        Err(_) => body
            .split(|&b| b == b'&')
            .map(|pair| {
                let pair = String::from_utf8_lossy(pair);
                let (n, v) = pair.split_once('=').unwrap_or((&pair, ""));
                (n.to_owned(), v.to_owned())
            })
            .collect(),
    };

    // A fuzzed signature: must not panic; whatever it answers.
    let _ = signature::validate(&token, &url, &params, &sig);
    let _ = signature::url_variants(&url);

    let good = signature::compute(&token, &url, &params);
    assert_eq!(
        good.len(),
        28,
        "base64 of an HMAC-SHA1 is 28 characters: {good:?}"
    );
    if token.is_empty() {
        assert!(
            !signature::validate(&token, &url, &params, &good),
            "empty token validated"
        );
    } else {
        assert!(
            signature::validate(&token, &url, &params, &good),
            "own signature refused"
        );
        // Parameter order does not matter.
        let mut reversed = params.clone();
        reversed.reverse();
        assert!(
            signature::validate(&token, &url, &reversed, &good),
            "order mattered"
        );
        // Surrounding whitespace (header folding) is tolerated.
        assert!(signature::validate(
            &token,
            &url,
            &params,
            &format!(" {good}\t")
        ));
        // One changed character is refused.
        let at = sig.len() % good.len();
        let mut bad: Vec<u8> = good.clone().into_bytes();
        bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bad).expect("base64 is ASCII");
        assert!(
            !signature::validate(&token, &url, &params, &bad),
            "changed signature accepted"
        );
        // Another parameter value is refused.
        let mut tampered = params.clone();
        tampered.push(("Tampered".to_owned(), String::new()));
        assert!(
            !signature::validate(&token, &url, &tampered, &good),
            "extra parameter accepted"
        );
    }

    // The media-stream token binds a session to a media URL.
    let session = String::from_utf8_lossy(body);
    let media = signature::media_token(&token, &session, &url);
    assert!(
        !media.contains(['+', '/', '=']),
        "not unpadded base64url: {media}"
    );
    assert_eq!(
        signature::verify_media_token(&token, &session, &url, &media),
        !token.is_empty(),
        "media token of its own session"
    );
    assert!(!signature::verify_media_token(&token, &session, &url, &sig) || sig == media);
});

/// The form parser on arbitrary bytes; what it accepts, percent-encoded
/// again byte by byte, must parse to the same pairs.
fn check_form(body: &[u8]) {
    let Ok(pairs) = form::parse(body) else {
        return;
    };
    if body.is_empty() {
        assert!(pairs.is_empty());
        return;
    }
    assert_eq!(pairs.len(), body.iter().filter(|&&b| b == b'&').count() + 1);
    assert!(
        pairs.iter().all(|(name, _)| !name.is_empty()),
        "empty name accepted"
    );
    let mut encoded = Vec::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            encoded.push(b'&');
        }
        percent_encode(name, &mut encoded);
        encoded.push(b'=');
        percent_encode(value, &mut encoded);
    }
    assert_eq!(
        form::parse(&encoded).as_ref(),
        Ok(&pairs),
        "re-encoded body differs"
    );
    if let Some((name, value)) = pairs.first() {
        assert_eq!(form::first(&pairs, name), Some(value.as_str()));
    }
}

fn percent_encode(s: &str, out: &mut Vec<u8>) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b);
        } else if b == b' ' {
            out.push(b'+');
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
}
