//! TwiML answers to the voice webhook: pure builders with XML escaping.
//!
//! - [`connect_stream`]: `<Connect><Stream>` to the gateway's Media Streams
//!   WebSocket, with custom `<Parameter>`s (transport `mediaStreams`);
//! - [`dial_sip`]: `<Dial><Sip>` to LiveKit SIP, custom `X-` headers appended
//!   to the SIP URI as its query (Twilio's `<Sip>` convention; transport
//!   `livekit`);
//! - [`say_hangup`]: a polite sentence, then `<Hangup/>` (no capacity);
//! - [`reject`]: `<Reject/>` for a number not bound to this agent.

use thiserror::Error;

/// Content type of every TwiML answer.
pub const CONTENT_TYPE: &str = "text/xml; charset=utf-8";

/// What the caller hears when no runtime can take the call.
pub const NO_CAPACITY_MESSAGE: &str =
    "We're sorry, all of our agents are busy right now. Please call again in a few minutes.";

/// What the caller hears when the call could not be connected for another
/// reason.
pub const ERROR_MESSAGE: &str =
    "We're sorry, we cannot take your call right now. Please try again later.";

/// Twilio's limit on the header part of a `<Sip>` URI.
pub const MAX_SIP_HEADERS_CHARS: usize = 1023;

const PROLOG: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// A SIP URI that cannot carry the requested headers.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TwimlError {
    /// The URI is not `sip:` or `sips:`, or already has headers.
    #[error("not a usable SIP URI: {0:?}")]
    BadSipUri(String),
    /// A header name without the `X-` prefix or with characters SIP does not
    /// allow in a header name.
    #[error("SIP header name {0:?} must start with X- and contain only letters, digits and '-'")]
    BadHeaderName(String),
    /// The headers are longer than Twilio accepts.
    #[error("SIP headers are {0} characters, more than Twilio's {MAX_SIP_HEADERS_CHARS}")]
    HeadersTooLong(usize),
}

/// Escapes text for XML content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry other control characters at all.
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// `<Connect><Stream url=..>` with one `<Parameter>` per `(name, value)`.
pub fn connect_stream(stream_url: &str, parameters: &[(&str, &str)]) -> String {
    let mut params = String::new();
    for (name, value) in parameters {
        params.push_str(&format!(
            r#"<Parameter name="{}" value="{}"/>"#,
            escape(name),
            escape(value)
        ));
    }
    format!(
        r#"{PROLOG}<Response><Connect><Stream url="{}">{params}</Stream></Connect></Response>"#,
        escape(stream_url)
    )
}

/// `<Dial><Sip>` to `sip_uri` (already carrying its headers, see
/// [`sip_uri_with_headers`]).
pub fn dial_sip(sip_uri: &str) -> String {
    format!(
        "{PROLOG}<Response><Dial><Sip>{}</Sip></Dial></Response>",
        escape(sip_uri)
    )
}

/// `<Say>` the sentence, then `<Hangup/>`.
pub fn say_hangup(sentence: &str) -> String {
    format!(
        "{PROLOG}<Response><Say>{}</Say><Hangup/></Response>",
        escape(sentence)
    )
}

/// `<Reject/>`: Twilio plays a busy signal and never answers, so the call
/// is not billed.
pub fn reject() -> String {
    format!("{PROLOG}<Response><Reject/></Response>")
}

/// The SIP URI Twilio dials: `base` (`sip:host` or `sip:user@host`, with
/// optional `;params`), with `user` as its user part when `base` has none
/// (LiveKit matches the trunk on the called number), and `headers` appended
/// as the URI's `?X-Name=value&...` part, values percent-encoded.
pub fn sip_uri_with_headers(
    base: &str,
    user: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<String, TwimlError> {
    let base = base.trim();
    let (scheme, rest) = if let Some(rest) = base.strip_prefix("sips:") {
        ("sips:", rest)
    } else if let Some(rest) = base.strip_prefix("sip:") {
        ("sip:", rest)
    } else {
        return Err(TwimlError::BadSipUri(base.to_owned()));
    };
    if rest.is_empty() || rest.contains(['?', ' ', '<', '>', '"']) {
        return Err(TwimlError::BadSipUri(base.to_owned()));
    }
    let mut uri = String::from(scheme);
    match user {
        Some(user) if !rest.contains('@') => {
            uri.push_str(&percent_encode(user));
            uri.push('@');
        }
        _ => {}
    }
    uri.push_str(rest);
    let mut query = String::new();
    for (name, value) in headers {
        // ASCII is checked first, so the byte slicing below is on char
        // boundaries. Twilio refuses names starting with X-Twilio.
        let lower = name.to_ascii_lowercase();
        let valid = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && lower.len() > 2
            && lower.starts_with("x-")
            && !lower.starts_with("x-twilio");
        if !valid {
            return Err(TwimlError::BadHeaderName((*name).to_owned()));
        }
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(name);
        query.push('=');
        query.push_str(&percent_encode(value));
    }
    if query.len() > MAX_SIP_HEADERS_CHARS {
        return Err(TwimlError::HeadersTooLong(query.len()));
    }
    if !query.is_empty() {
        uri.push('?');
        uri.push_str(&query);
    }
    Ok(uri)
}

/// Percent-encodes everything but RFC 3986 unreserved characters and `+`
/// (E.164 numbers keep their plus).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_answer() {
        let xml = connect_stream(
            "wss://voice.example.com/twilio/media",
            &[("sessionId", "s-1"), ("token", "a&b<\"c\">")],
        );
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Connect>\
             <Stream url=\"wss://voice.example.com/twilio/media\">\
             <Parameter name=\"sessionId\" value=\"s-1\"/>\
             <Parameter name=\"token\" value=\"a&amp;b&lt;&quot;c&quot;&gt;\"/>\
             </Stream></Connect></Response>"
        );
    }

    #[test]
    fn say_reject_and_escape() {
        assert!(
            say_hangup("Tom & Jerry's <show>")
                .contains("<Say>Tom &amp; Jerry&apos;s &lt;show&gt;</Say><Hangup/></Response>")
        );
        assert!(reject().ends_with("<Response><Reject/></Response>"));
        assert_eq!(escape("a\u{0}b\u{1b}c\n"), "abc\n");
    }

    #[test]
    fn sip_uris_carry_headers() {
        let uri = sip_uri_with_headers(
            "sip:abc.sip.livekit.cloud",
            Some("+15559870000"),
            &[("X-LK-Room", "call-s 1"), ("X-Session-Id", "s&1")],
        )
        .expect("valid");
        assert_eq!(
            uri,
            "sip:+15559870000@abc.sip.livekit.cloud?X-LK-Room=call-s%201&X-Session-Id=s%261"
        );
        assert_eq!(
            dial_sip(&uri),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Dial><Sip>\
             sip:+15559870000@abc.sip.livekit.cloud?X-LK-Room=call-s%201&amp;X-Session-Id=s%261\
             </Sip></Dial></Response>"
        );
        // A user part in the configured URI wins; transport params stay.
        assert_eq!(
            sip_uri_with_headers("sips:agent@x.example;transport=tls", Some("+1"), &[])
                .expect("valid"),
            "sips:agent@x.example;transport=tls"
        );
        for bad in ["tel:+1555", "sip:", "sip:x?h=1", "http://x"] {
            assert!(
                matches!(
                    sip_uri_with_headers(bad, None, &[]),
                    Err(TwimlError::BadSipUri(_))
                ),
                "{bad}"
            );
        }
        for name in ["Room", "X-", "X-Twilio-Foo", "X-Bad Name", "X-a:b"] {
            assert!(
                matches!(
                    sip_uri_with_headers("sip:x", None, &[(name, "v")]),
                    Err(TwimlError::BadHeaderName(_))
                ),
                "{name}"
            );
        }
        let long = "v".repeat(2000);
        assert!(matches!(
            sip_uri_with_headers("sip:x", None, &[("X-Long", &long)]),
            Err(TwimlError::HeadersTooLong(_))
        ));
    }
}
