//! Standard base64 (RFC 4648 §4, with padding), as used by Twilio Media
//! Streams payloads and [`crate::tts::SynthesizeJsonResponse::audio`]. Kept here
//! so the workloads need no extra dependency for it.

use crate::error::ProtoError;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Marks bytes outside the alphabet in [`DECODE`].
const INVALID: u8 = 0xFF;

const DECODE: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Encodes bytes as padded standard base64.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    encode_into(bytes, &mut out);
    out
}

/// Appends the padded standard base64 of `bytes` to `out`.
pub fn encode_into(bytes: &[u8], out: &mut String) {
    out.reserve(bytes.len().div_ceil(3) * 4);
    let sym = |index: u32| char::from(ALPHABET[(index & 0x3F) as usize]);
    let mut chunks = bytes.chunks_exact(3);
    for chunk in &mut chunks {
        let n = u32::from(chunk[0]) << 16 | u32::from(chunk[1]) << 8 | u32::from(chunk[2]);
        out.extend([sym(n >> 18), sym(n >> 12), sym(n >> 6), sym(n)]);
    }
    match *chunks.remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            out.extend([sym(n >> 18), sym(n >> 12), '=', '=']);
        }
        [a, b] => {
            let n = u32::from(a) << 16 | u32::from(b) << 8;
            out.extend([sym(n >> 18), sym(n >> 12), sym(n >> 6), '=']);
        }
        _ => {}
    }
}

/// Decodes standard base64. Padding may be omitted; anything outside the
/// alphabet (including whitespace and the URL-safe `-_`) is refused.
pub fn decode(text: &str) -> Result<Vec<u8>, ProtoError> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 3);
    decode_into(text, &mut out)?;
    Ok(out)
}

/// Appends the bytes of base64 `text` to `out`. On error `out` is left as it
/// was.
pub fn decode_into(text: &str, out: &mut Vec<u8>) -> Result<(), ProtoError> {
    let bytes = text.as_bytes();
    let unpadded = match bytes {
        [rest @ .., b'=', b'='] => rest,
        [rest @ .., b'='] => rest,
        _ => bytes,
    };
    if bytes.len() != unpadded.len() && !bytes.len().is_multiple_of(4) {
        return Err(ProtoError::InvalidBase64(
            "padding at a wrong position".into(),
        ));
    }
    if unpadded.len() % 4 == 1 {
        return Err(ProtoError::InvalidBase64("truncated input".into()));
    }
    let start = out.len();
    out.reserve(unpadded.len() / 4 * 3 + 2);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for (i, &c) in unpadded.iter().enumerate() {
        let v = DECODE[usize::from(c)];
        if v == INVALID {
            out.truncate(start);
            return Err(ProtoError::InvalidBase64(format!(
                "byte {c:#04x} at offset {i} is not in the alphabet"
            )));
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(encode(plain.as_bytes()), encoded);
            assert_eq!(decode(encoded).expect("decode"), plain.as_bytes());
            assert_eq!(
                decode(encoded.trim_end_matches('=')).expect("unpadded"),
                plain.as_bytes()
            );
        }
    }

    #[test]
    fn round_trips_all_byte_values() {
        let bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        for len in 0..bytes.len() {
            let encoded = encode(&bytes[..len]);
            assert_eq!(decode(&encoded).expect("decode"), &bytes[..len]);
        }
    }

    #[test]
    fn refuses_invalid_input() {
        for bad in ["Zg=", "Z", "Zm9v\n", "Zm-_", "Z=g=", "Zm9vY", "===="] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        let mut out = vec![1, 2];
        assert!(decode_into("Zm9v!", &mut out).is_err());
        assert_eq!(
            out,
            vec![1, 2],
            "a failed decode leaves the buffer as it was"
        );
    }
}
