//! Strict `application/x-www-form-urlencoded` parsing for Twilio's webhooks.
//!
//! The signature covers every parameter exactly as Twilio sent it, so the
//! parser keeps repeated names and their order, and refuses what a lenient
//! parser would silently repair (broken percent escapes, invalid UTF-8, pairs
//! without `=`): a repaired parameter could never match the signature anyway,
//! and a clear 400 is easier to debug than a 403.

use thiserror::Error;

/// Why a form body was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FormError {
    /// The body is not UTF-8 after percent-decoding.
    #[error("form field {index}: not UTF-8 after percent-decoding")]
    NotUtf8 {
        /// Zero-based position of the pair.
        index: usize,
    },
    /// A `%` not followed by two hex digits.
    #[error("form field {index}: broken percent escape")]
    BadEscape {
        /// Zero-based position of the pair.
        index: usize,
    },
    /// A pair without `=` or with an empty name.
    #[error("form field {index}: expected name=value")]
    BadPair {
        /// Zero-based position of the pair.
        index: usize,
    },
}

/// Parses a form body into `(name, value)` pairs in order of appearance,
/// repeated names included. An empty body has no pairs.
pub fn parse(body: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    body.split(|&b| b == b'&')
        .enumerate()
        .map(|(index, pair)| {
            let eq = pair
                .iter()
                .position(|&b| b == b'=')
                .ok_or(FormError::BadPair { index })?;
            let (name, value) = (&pair[..eq], &pair[eq + 1..]);
            if name.is_empty() {
                return Err(FormError::BadPair { index });
            }
            Ok((decode(name, index)?, decode(value, index)?))
        })
        .collect()
}

/// The value of the first parameter called `name`.
pub fn first<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn decode(raw: &[u8], index: usize) -> Result<String, FormError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16));
                let (Some(hi), Some(lo)) = (hex(raw.get(i + 1)), hex(raw.get(i + 2))) else {
                    return Err(FormError::BadEscape { index });
                };
                // Two hex digits are at most 255.
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(u8::MAX));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| FormError::NotUtf8 { index })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn parses_twilio_bodies() {
        let body =
            b"CallSid=CA123&From=%2B15551230142&To=%2B15559870000&CallerName=Jane+Doe&Empty=";
        assert_eq!(
            parse(body).expect("valid"),
            pairs(&[
                ("CallSid", "CA123"),
                ("From", "+15551230142"),
                ("To", "+15559870000"),
                ("CallerName", "Jane Doe"),
                ("Empty", ""),
            ])
        );
        assert_eq!(parse(b"").expect("empty"), Vec::new());
        assert_eq!(
            parse(b"a=1&a=2&b=%C3%A9").expect("repeats"),
            pairs(&[("a", "1"), ("a", "2"), ("b", "é")])
        );
        assert_eq!(first(&parse(b"a=1&a=2").expect("ok"), "a"), Some("1"));
    }

    #[test]
    fn refuses_malformed_bodies() {
        assert_eq!(parse(b"a=1&&b=2"), Err(FormError::BadPair { index: 1 }));
        assert_eq!(parse(b"novalue"), Err(FormError::BadPair { index: 0 }));
        assert_eq!(parse(b"=x"), Err(FormError::BadPair { index: 0 }));
        assert_eq!(parse(b"a=%zz"), Err(FormError::BadEscape { index: 0 }));
        assert_eq!(parse(b"a=1&b=%4"), Err(FormError::BadEscape { index: 1 }));
        assert_eq!(parse(b"a=%FF%FE"), Err(FormError::NotUtf8 { index: 0 }));
        assert_eq!(parse(b"a=\xff"), Err(FormError::NotUtf8 { index: 0 }));
    }
}
