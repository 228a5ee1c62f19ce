//! Clients of the vendors a PhoneNumber is provisioned at: Twilio (the
//! number's webhooks, [`twilio`]) and LiveKit (the SIP inbound trunk and
//! dispatch rule, [`livekit`]).
//!
//! Both speak the vendors' documented wire formats over plain `reqwest`
//! (Twilio REST: form-encoded requests, JSON answers; LiveKit: Twirp with
//! JSON bodies and an HS256 JWT carrying the `sip.admin` grant), so the
//! tests can run them against protocol-level stub servers. Credentials are
//! passed per call, read from Secrets at reconcile time; they travel only in
//! `Authorization` headers and never appear in errors, logs or `Debug`
//! output ([`Secret`]).

pub mod livekit;
pub mod twilio;

use std::fmt;
use std::time::Duration;

use thiserror::Error;

/// The production Twilio REST API.
pub const TWILIO_API_URL: &str = "https://api.twilio.com";
/// Environment variable overriding [`TWILIO_API_URL`] (a regional edge, a
/// proxy, or a stub in tests).
pub const TWILIO_API_URL_ENV: &str = "VOICE_AGENT_TWILIO_API_URL";

/// How the vendor clients are set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvisionSettings {
    /// Base URL of Twilio's REST API ([`TWILIO_API_URL`]).
    pub twilio_api_url: String,
    /// Deadline of one vendor request.
    pub timeout: Duration,
}

impl Default for ProvisionSettings {
    fn default() -> Self {
        ProvisionSettings {
            twilio_api_url: TWILIO_API_URL.to_string(),
            timeout: Duration::from_secs(10),
        }
    }
}

impl ProvisionSettings {
    /// The defaults, with [`TWILIO_API_URL_ENV`] from the environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// [`ProvisionSettings::from_env`] with the environment given as a lookup.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let mut s = ProvisionSettings::default();
        if let Some(url) = lookup(TWILIO_API_URL_ENV).filter(|u| !u.trim().is_empty()) {
            s.twilio_api_url = url.trim().trim_end_matches('/').to_string();
        }
        s
    }
}

/// A credential. `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value (trimmed: Secrets made from files often end in a newline).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into().trim().to_string())
    }

    /// The value, for an `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A failed vendor request, classified by what the caller should do.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum VendorError {
    /// The vendor refused the request (a 4xx other than 404 and 429): bad
    /// credentials, a value it does not accept. Retrying without a change
    /// does not help.
    #[error("{vendor} refused the request (HTTP {status}{code}): {message}", code = code.as_deref().map(|c| format!(", code {c}")).unwrap_or_default())]
    Rejected {
        /// `Twilio` or `LiveKit`.
        vendor: &'static str,
        /// HTTP status.
        status: u16,
        /// The vendor's error code (Twilio's numeric code, Twirp's code).
        code: Option<String>,
        /// The vendor's message.
        message: String,
    },
    /// The object does not exist (404).
    #[error("{vendor}: not found: {message}")]
    NotFound {
        /// `Twilio` or `LiveKit`.
        vendor: &'static str,
        /// The vendor's message.
        message: String,
    },
    /// The vendor could not answer: a 5xx, a 429, a timeout or a connection
    /// failure. Retried with exponential backoff.
    #[error("{vendor} unavailable: {message}")]
    Unavailable {
        /// `Twilio` or `LiveKit`.
        vendor: &'static str,
        /// HTTP status, when there was an answer.
        status: Option<u16>,
        /// What happened.
        message: String,
    },
    /// The answer could not be understood.
    #[error("{vendor}: unexpected answer: {message}")]
    Protocol {
        /// `Twilio` or `LiveKit`.
        vendor: &'static str,
        /// What was wrong with it.
        message: String,
    },
    /// The request could not be made from the configuration (an invalid
    /// URL or id); nothing was sent.
    #[error("{vendor}: {message}")]
    Invalid {
        /// `Twilio` or `LiveKit`.
        vendor: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl VendorError {
    /// Whether retrying later can succeed without a change (5xx, 429,
    /// timeouts, connection failures).
    pub fn is_transient(&self) -> bool {
        matches!(self, VendorError::Unavailable { .. })
    }

    /// The vendor's name.
    pub fn vendor(&self) -> &'static str {
        match self {
            VendorError::Rejected { vendor, .. }
            | VendorError::NotFound { vendor, .. }
            | VendorError::Unavailable { vendor, .. }
            | VendorError::Protocol { vendor, .. }
            | VendorError::Invalid { vendor, .. } => vendor,
        }
    }

    /// A transport failure (no HTTP answer). reqwest's message names the
    /// URL, which never carries credentials here (they go in headers).
    pub(crate) fn transport(vendor: &'static str, e: &reqwest::Error) -> Self {
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "connection failed"
        } else {
            "request failed"
        };
        VendorError::Unavailable {
            vendor,
            status: None,
            message: format!("{what}: {e}"),
        }
    }

    /// Classifies an HTTP error answer.
    pub(crate) fn from_status(
        vendor: &'static str,
        status: u16,
        code: Option<String>,
        message: String,
    ) -> Self {
        match status {
            404 => VendorError::NotFound { vendor, message },
            429 | 500..=599 => VendorError::Unavailable {
                vendor,
                status: Some(status),
                message: match code {
                    Some(c) => format!("HTTP {status}, code {c}: {message}"),
                    None => format!("HTTP {status}: {message}"),
                },
            },
            _ => VendorError::Rejected {
                vendor,
                status,
                code,
                message,
            },
        }
    }
}

/// Longest vendor message kept in conditions and Events.
const MAX_MESSAGE: usize = 300;

/// Shortens a vendor message to [`MAX_MESSAGE`] characters on a char boundary.
pub(crate) fn clip(message: &str) -> String {
    let message = message.trim();
    match message.char_indices().nth(MAX_MESSAGE) {
        Some((i, _)) => format!("{}…", &message[..i]),
        None => message.to_string(),
    }
}

/// The HTTP client of the vendor clients: rustls with the ring provider
/// (the one kube already builds), the platform's trust roots, a connect
/// timeout and an overall deadline per request.
pub fn http_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    // Err means a provider is already installed: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .user_agent(concat!("voice-agent-operator/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new(" tok-123\n");
        assert_eq!(s.expose(), "tok-123");
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }

    #[test]
    fn statuses_are_classified() {
        let e = |s| VendorError::from_status("Twilio", s, Some("20003".into()), "m".into());
        assert!(matches!(e(401), VendorError::Rejected { .. }));
        assert!(matches!(e(404), VendorError::NotFound { .. }));
        assert!(e(429).is_transient());
        assert!(e(503).is_transient());
        assert!(!e(400).is_transient());
        assert_eq!(
            e(401).to_string(),
            "Twilio refused the request (HTTP 401, code 20003): m"
        );
    }

    #[test]
    fn long_messages_are_clipped() {
        assert_eq!(clip(" short "), "short");
        let long = "é".repeat(400);
        let c = clip(&long);
        assert_eq!(c.chars().count(), MAX_MESSAGE + 1);
        assert!(c.ends_with('…'));
    }
}
