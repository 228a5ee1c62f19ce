//! Twilio's published signature vector and its variants.

use voice_agent_gateway::signature::{compute, validate};

const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
const TOKEN: &str = "12345";
const EXPECTED: &str = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";

fn params() -> Vec<(String, String)> {
    [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+12349013030"),
        ("Digits", "1234"),
        ("From", "+12349013030"),
        ("To", "+18005551212"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

#[test]
fn twilio_published_vector() {
    assert_eq!(compute(TOKEN, URL, &params()), EXPECTED);
    assert!(validate(TOKEN, URL, &params(), EXPECTED));
}

#[test]
fn parameter_order_does_not_matter() {
    let mut reversed = params();
    reversed.reverse();
    assert_eq!(compute(TOKEN, URL, &reversed), EXPECTED);
}

#[test]
fn default_port_variants_validate() {
    // Twilio signed the URL with the port; we know it without, and back.
    let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
    let signed_with_port = compute(TOKEN, with_port, &params());
    assert!(validate(TOKEN, URL, &params(), &signed_with_port));
    assert!(validate(TOKEN, with_port, &params(), EXPECTED));
    // A different port is a different URL.
    let other = compute(
        TOKEN,
        "https://mycompany.com:8443/myapp.php?foo=1&bar=2",
        &params(),
    );
    assert!(!validate(TOKEN, URL, &params(), &other));
}

#[test]
fn wrong_token_tampering_and_missing_signatures_fail() {
    assert!(!validate("54321", URL, &params(), EXPECTED));
    let mut tampered = params();
    tampered[2].1 = "9999".to_owned();
    assert!(!validate(TOKEN, URL, &tampered, EXPECTED));
    let mut extra = params();
    extra.push(("Extra".to_owned(), String::new()));
    assert!(!validate(TOKEN, URL, &extra, EXPECTED));
    assert!(!validate(
        TOKEN,
        "https://mycompany.com/myapp.php?foo=1&bar=3",
        &params(),
        EXPECTED
    ));
    assert!(!validate(TOKEN, URL, &params(), ""));
    assert!(!validate("", URL, &params(), EXPECTED));
    assert!(!validate(TOKEN, URL, &params(), &EXPECTED[1..]));
}
