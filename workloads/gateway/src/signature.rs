//! Twilio request signatures (`X-Twilio-Signature`) and the gateway's own
//! media-stream token.
//!
//! Twilio signs every webhook: HMAC-SHA1, keyed by the account's auth token,
//! over the full URL Twilio requested (query included) followed by each POST
//! parameter's name and value, parameters sorted by name (and repeated names
//! by value), Base64-encoded. Twilio's backend is not consistent about the
//! default port, so, like Twilio's own libraries, a signature is accepted for
//! the URL with and without `:443` (https) or `:80` (http).
//!
//! The media token binds a runtime session id to the runtime's media URL so
//! that the `start` message of a Media Streams WebSocket, which may arrive at
//! any gateway replica, can only make the gateway connect where a webhook
//! answer told it to (no open relay, no SSRF).

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The header Twilio puts the signature in.
pub const HEADER: &str = "x-twilio-signature";

type HmacSha1 = Hmac<Sha1>;
type HmacSha256 = Hmac<Sha256>;

/// The signature Twilio computes for `url` and POST `params`.
pub fn compute(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    // Byte order of UTF-8 is code point order, which is what Twilio's
    // libraries sort by; ties on the name are ordered by value.
    sorted.sort_unstable();
    // An HMAC accepts keys of any length; the error branch cannot happen.
    let Ok(mut mac) = HmacSha1::new_from_slice(auth_token.as_bytes()) else {
        return String::new();
    };
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    voice_agent_proto::base64::encode(&mac.finalize().into_bytes())
}

/// Whether `signature` is Twilio's signature of `url` and `params`, for the
/// URL as given or with its default port toggled. The comparison is
/// constant-time. An empty token or signature never validates.
pub fn validate(auth_token: &str, url: &str, params: &[(String, String)], signature: &str) -> bool {
    if auth_token.is_empty() || signature.is_empty() {
        return false;
    }
    let mut valid = subtle::Choice::from(0);
    for candidate in url_variants(url) {
        let expected = compute(auth_token, &candidate, params);
        valid |= expected.as_bytes().ct_eq(signature.trim().as_bytes());
    }
    valid.into()
}

/// `url` itself, plus the same URL with the scheme's default port removed
/// (when present) or added (when no port is given).
pub fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    let (scheme, default_port) = if url.starts_with("https://") {
        ("https://", "443")
    } else if url.starts_with("http://") {
        ("http://", "80")
    } else if url.starts_with("wss://") {
        ("wss://", "443")
    } else if url.starts_with("ws://") {
        ("ws://", "80")
    } else {
        return out;
    };
    let rest = &url[scheme.len()..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // The port follows the last ':' unless that colon is inside an IPv6
    // literal (`[::1]`).
    let port_colon = authority
        .rfind(':')
        .filter(|&i| !authority[i..].contains(']'));
    match port_colon {
        Some(i) if &authority[i + 1..] == default_port => {
            out.push(format!("{scheme}{}{tail}", &authority[..i]));
        }
        Some(_) => {}
        None => out.push(format!("{scheme}{authority}:{default_port}{tail}")),
    }
    out
}

/// The token of a media stream: base64url (no padding) of
/// HMAC-SHA256(key, `session_id` + "\n" + `media_url`).
pub fn media_token(key: &str, session_id: &str, media_url: &str) -> String {
    let Ok(mut mac) = HmacSha256::new_from_slice(key.as_bytes()) else {
        return String::new();
    };
    mac.update(session_id.as_bytes());
    mac.update(b"\n");
    mac.update(media_url.as_bytes());
    base64url(&mac.finalize().into_bytes())
}

/// Whether `token` is the media token of `session_id` and `media_url`
/// (constant-time).
pub fn verify_media_token(key: &str, session_id: &str, media_url: &str, token: &str) -> bool {
    if key.is_empty() || token.is_empty() {
        return false;
    }
    let expected = media_token(key, session_id, media_url);
    expected.as_bytes().ct_eq(token.as_bytes()).into()
}

/// Unpadded base64url, from the standard alphabet the proto crate encodes.
fn base64url(bytes: &[u8]) -> String {
    voice_agent_proto::base64::encode(bytes)
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn base64url_alphabet() {
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64url(b""), "");
    }

    #[test]
    fn url_variants_toggle_the_default_port() {
        assert_eq!(
            url_variants("https://a.example/x?y=1"),
            ["https://a.example/x?y=1", "https://a.example:443/x?y=1"]
        );
        assert_eq!(
            url_variants("https://a.example:443/x"),
            ["https://a.example:443/x", "https://a.example/x"]
        );
        assert_eq!(
            url_variants("http://a.example"),
            ["http://a.example", "http://a.example:80"]
        );
        assert_eq!(
            url_variants("http://a.example:8080/x"),
            ["http://a.example:8080/x"]
        );
        assert_eq!(
            url_variants("https://[::1]/x"),
            ["https://[::1]/x", "https://[::1]:443/x"]
        );
        assert_eq!(url_variants("ftp://x"), ["ftp://x"]);
    }

    #[test]
    fn repeated_names_sort_by_value() {
        let a = compute(
            "t",
            "https://x",
            &params(&[("b", "2"), ("a", "9"), ("b", "1")]),
        );
        let b = compute(
            "t",
            "https://x",
            &params(&[("a", "9"), ("b", "1"), ("b", "2")]),
        );
        assert_eq!(a, b);
    }

    #[test]
    fn media_tokens() {
        let t = media_token("secret", "s-1", "ws://10.0.0.7:8080/api/sessions/s-1/media");
        assert_eq!(t.len(), 43, "{t}");
        assert!(!t.contains(['+', '/', '=']));
        assert!(verify_media_token(
            "secret",
            "s-1",
            "ws://10.0.0.7:8080/api/sessions/s-1/media",
            &t
        ));
        assert!(!verify_media_token(
            "secret",
            "s-2",
            "ws://10.0.0.7:8080/api/sessions/s-1/media",
            &t
        ));
        assert!(!verify_media_token(
            "secret",
            "s-1",
            "ws://evil.example/api/sessions/s-1/media",
            &t
        ));
        assert!(!verify_media_token(
            "other",
            "s-1",
            "ws://10.0.0.7:8080/api/sessions/s-1/media",
            &t
        ));
        assert!(!verify_media_token("secret", "s-1", "x", ""));
    }
}
