//! Types shared by the three kinds.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Kubernetes object name (RFC 1123 DNS subdomain).
pub(crate) const DNS_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A Secret data key.
pub(crate) const SECRET_KEY: &str = r"^[-._a-zA-Z0-9]+$";

/// An http(s) URL without a trailing slash.
pub(crate) const HTTP_URL: &str = r"^https?://[^\s/?#]+(/[^\s?#]*)?$";

/// An E.164 phone number: a plus sign and up to 15 digits, not starting with 0.
pub const E164_PATTERN: &str = r"^\+[1-9][0-9]{1,14}$";

/// A reference to one key of a Secret in the referencing object's namespace.
///
/// The operator passes the value to pods as a `secretKeyRef` environment
/// variable; it never copies it into a ConfigMap, a status, a log or an Event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as the object that refers to it.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN))]
    pub name: String,
    /// Key in the Secret's data that holds the value.
    #[schemars(length(min = 1, max = 253), pattern(SECRET_KEY))]
    pub key: String,
}

/// A reference to another object of this API in the same namespace, by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectRef {
    /// Name of the referenced object, in the same namespace.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN))]
    pub name: String,
}

/// A latency summary in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencySummary {
    /// Median end-to-end turn latency (end of caller speech to first agent audio), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<i64>,
    /// 95th percentile end-to-end turn latency, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_ms: Option<i64>,
}

/// Masks a phone number for storage in a custom resource: the country code and
/// the next digits plus the last four stay, the rest becomes `•••`
/// (`+15551230142` → `+1555•••0142`). Full numbers live only in Postgres.
///
/// Values that are not phone numbers (Twilio sends `anonymous` or a client
/// identity for some callers) are kept as they are when short and free of
/// digits, and masked entirely otherwise, so a number never leaks in an
/// unexpected format.
pub fn mask_phone_number(raw: &str) -> String {
    let trimmed = raw.trim();
    let digits: Vec<char> = trimmed.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return if trimmed.len() <= 32 {
            trimmed.to_string()
        } else {
            "•••".to_string()
        };
    }
    let plus = if trimmed.starts_with('+') { "+" } else { "" };
    let n = digits.len();
    if n >= 8 {
        let head: String = digits[..4].iter().collect();
        let tail: String = digits[n - 4..].iter().collect();
        format!("{plus}{head}•••{tail}")
    } else {
        // Short codes and extensions: keep only the last two digits.
        let tail: String = digits[n.saturating_sub(2)..].iter().collect();
        format!("{plus}•••{tail}")
    }
}

/// Whether `s` is a valid E.164 number (the same rule as the CRD schema).
pub fn is_e164(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('+') else {
        return false;
    };
    let bytes = rest.as_bytes();
    (2..=15).contains(&bytes.len()) && bytes[0] != b'0' && bytes.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_e164_numbers() {
        assert_eq!(mask_phone_number("+15551230142"), "+1555•••0142");
        assert_eq!(mask_phone_number("+442071838750"), "+4420•••8750");
        assert_eq!(mask_phone_number(" +15551230142 "), "+1555•••0142");
    }

    #[test]
    fn masks_short_and_odd_values() {
        assert_eq!(mask_phone_number("12345"), "•••45");
        assert_eq!(mask_phone_number("anonymous"), "anonymous");
        assert_eq!(mask_phone_number("client:alice"), "client:alice");
        assert_eq!(mask_phone_number("sip:+15551230142@x"), "1555•••0142");
        assert_eq!(mask_phone_number(&"x".repeat(40)), "•••");
        assert_eq!(mask_phone_number(""), "");
    }

    #[test]
    fn masked_numbers_never_contain_the_middle_digits() {
        let masked = mask_phone_number("+15559876543");
        assert!(!masked.contains("987"));
    }

    #[test]
    fn e164() {
        assert!(is_e164("+15551230142"));
        assert!(is_e164("+12"));
        assert!(!is_e164("15551230142"));
        assert!(!is_e164("+05551230142"));
        assert!(!is_e164("+1555123014299999"));
        assert!(!is_e164("+1555-123"));
        assert!(!is_e164("+"));
        let re = regex::Regex::new(E164_PATTERN).expect("pattern compiles");
        for s in [
            "+15551230142",
            "+12",
            "15551230142",
            "+0555",
            "+1234567890123456",
            "+1a",
        ] {
            assert_eq!(re.is_match(s), is_e164(s), "{s}");
        }
    }
}
