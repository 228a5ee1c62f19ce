//! Twilio's REST API (2010-04-01), the IncomingPhoneNumber resource only:
//! find a number of the account, read it by SID, and set its voice webhook
//! and status callback.
//!
//! Wire format (<https://www.twilio.com/docs/phone-numbers/api/incomingphonenumber-resource>):
//! HTTP Basic auth `AccountSid:AuthToken`; requests are
//! `application/x-www-form-urlencoded` with PascalCase parameters
//! (`VoiceUrl`, `VoiceMethod`, `StatusCallback`, `StatusCallbackMethod`);
//! answers are JSON with snake_case fields; errors are
//! `{"code", "message", "more_info", "status"}`.

use std::time::Duration;

use serde::Deserialize;

use super::{Secret, VendorError, clip, http_client};

const VENDOR: &str = "Twilio";

/// An account and its auth token (from the PhoneNumber's Secret).
#[derive(Clone, Debug)]
pub struct Credentials {
    /// `AC` + 32 hex digits.
    pub account_sid: String,
    /// The auth token.
    pub auth_token: Secret,
}

/// An IncomingPhoneNumber as Twilio returns it (the fields used here).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct IncomingNumber {
    /// `PN` + 32 hex digits.
    pub sid: String,
    /// The number, E.164.
    pub phone_number: String,
    /// Where Twilio sends the voice webhook.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub voice_url: Option<String>,
    /// `GET` or `POST`.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub voice_method: Option<String>,
    /// Where Twilio sends call status callbacks.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub status_callback: Option<String>,
    /// `GET` or `POST`.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub status_callback_method: Option<String>,
}

/// Twilio answers `""` or `null` for unset fields.
fn empty_as_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v: Option<String> = Option::deserialize(d)?;
    Ok(v.filter(|s| !s.is_empty()))
}

/// The webhook settings of a number. `None` clears a field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Webhooks {
    /// `VoiceUrl`.
    pub voice_url: Option<String>,
    /// `VoiceMethod`.
    pub voice_method: Option<String>,
    /// `StatusCallback`.
    pub status_callback: Option<String>,
    /// `StatusCallbackMethod`.
    pub status_callback_method: Option<String>,
}

impl Webhooks {
    /// The settings a number has now.
    pub fn of(n: &IncomingNumber) -> Self {
        Webhooks {
            voice_url: n.voice_url.clone(),
            voice_method: n.voice_method.clone(),
            status_callback: n.status_callback.clone(),
            status_callback_method: n.status_callback_method.clone(),
        }
    }

    /// Whether `n` has these settings. An unset method is Twilio's default
    /// (`POST`).
    pub fn matches(&self, n: &IncomingNumber) -> bool {
        let method = |m: &Option<String>| {
            m.as_deref()
                .map(str::to_ascii_uppercase)
                .unwrap_or_else(|| "POST".into())
        };
        self.voice_url == n.voice_url
            && self.status_callback == n.status_callback
            && method(&self.voice_method) == method(&n.voice_method)
            && method(&self.status_callback_method) == method(&n.status_callback_method)
    }

    /// The form body of the update; cleared fields are sent empty, which is
    /// how Twilio's API removes a URL.
    fn form(&self) -> Result<String, VendorError> {
        let field = |v: &Option<String>| v.clone().unwrap_or_default();
        let mut pairs = vec![
            ("VoiceUrl", field(&self.voice_url)),
            ("StatusCallback", field(&self.status_callback)),
        ];
        // Methods are only sent when set: Twilio refuses an empty method.
        if let Some(m) = &self.voice_method {
            pairs.push(("VoiceMethod", m.clone()));
        }
        if let Some(m) = &self.status_callback_method {
            pairs.push(("StatusCallbackMethod", m.clone()));
        }
        serde_urlencoded::to_string(&pairs).map_err(|e| VendorError::Invalid {
            vendor: VENDOR,
            message: format!("encoding the form: {e}"),
        })
    }
}

#[derive(Deserialize)]
struct NumberPage {
    #[serde(default)]
    incoming_phone_numbers: Vec<IncomingNumber>,
}

/// Twilio's error body.
#[derive(Deserialize)]
struct TwilioError {
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<String>,
}

/// `^AC[0-9a-fA-F]{32}$` / `^PN…$`: checked before a SID goes into a URL path.
fn is_sid(prefix: &str, s: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// A Twilio REST client.
#[derive(Clone, Debug)]
pub struct TwilioClient {
    http: reqwest::Client,
    base_url: String,
}

impl TwilioClient {
    /// A client of the API at `base_url` (`https://api.twilio.com`, or a stub).
    pub fn new(base_url: &str, timeout: Duration) -> reqwest::Result<Self> {
        Ok(TwilioClient {
            http: http_client(timeout)?,
            base_url: base_url.trim_end_matches('/').to_string(),
        })
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn numbers_url(&self, creds: &Credentials) -> Result<String, VendorError> {
        if !is_sid("AC", &creds.account_sid) {
            return Err(VendorError::Invalid {
                vendor: VENDOR,
                message: "the account SID is not AC followed by 32 hex digits".into(),
            });
        }
        Ok(format!(
            "{}/2010-04-01/Accounts/{}/IncomingPhoneNumbers",
            self.base_url, creds.account_sid
        ))
    }

    fn number_url(&self, creds: &Credentials, sid: &str) -> Result<String, VendorError> {
        if !is_sid("PN", sid) {
            return Err(VendorError::Invalid {
                vendor: VENDOR,
                message: format!("{sid:?} is not an IncomingPhoneNumber SID"),
            });
        }
        Ok(format!("{}/{sid}.json", self.numbers_url(creds)?))
    }

    async fn send<T: for<'de> Deserialize<'de>>(
        &self,
        creds: &Credentials,
        request: reqwest::RequestBuilder,
    ) -> Result<T, VendorError> {
        let response = request
            .basic_auth(&creds.account_sid, Some(creds.auth_token.expose()))
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| VendorError::transport(VENDOR, &e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| VendorError::transport(VENDOR, &e))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| VendorError::Protocol {
                vendor: VENDOR,
                message: format!("decoding the answer: {e}"),
            });
        }
        let (code, message) = match serde_json::from_slice::<TwilioError>(&body) {
            Ok(e) => (
                e.code.map(|c| match c {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                }),
                e.message.unwrap_or_default(),
            ),
            Err(_) => (None, String::from_utf8_lossy(&body).into_owned()),
        };
        let message = if message.trim().is_empty() {
            status.canonical_reason().unwrap_or("error").to_string()
        } else {
            clip(&message)
        };
        Err(VendorError::from_status(
            VENDOR,
            status.as_u16(),
            code,
            message,
        ))
    }

    /// The account's IncomingPhoneNumber for `number`, if it has one.
    /// (Twilio's `PhoneNumber` filter also matches partial numbers, so the
    /// answer is checked for the exact number.)
    pub async fn find_number(
        &self,
        creds: &Credentials,
        number: &str,
    ) -> Result<Option<IncomingNumber>, VendorError> {
        let query = serde_urlencoded::to_string([("PhoneNumber", number)]).map_err(|e| {
            VendorError::Invalid {
                vendor: VENDOR,
                message: format!("encoding the query: {e}"),
            }
        })?;
        let url = format!("{}.json?{query}", self.numbers_url(creds)?);
        let page: NumberPage = self.send(creds, self.http.get(url)).await?;
        Ok(page
            .incoming_phone_numbers
            .into_iter()
            .find(|n| n.phone_number == number))
    }

    /// The IncomingPhoneNumber `sid`; `None` when it is gone (404).
    pub async fn get_number(
        &self,
        creds: &Credentials,
        sid: &str,
    ) -> Result<Option<IncomingNumber>, VendorError> {
        let url = self.number_url(creds, sid)?;
        match self.send(creds, self.http.get(url)).await {
            Ok(n) => Ok(Some(n)),
            Err(VendorError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sets the webhooks of number `sid`; returns the number as updated.
    pub async fn update_number(
        &self,
        creds: &Credentials,
        sid: &str,
        webhooks: &Webhooks,
    ) -> Result<IncomingNumber, VendorError> {
        let url = self.number_url(creds, sid)?;
        let request = self
            .http
            .post(url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(webhooks.form()?);
        self.send(creds, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sids_are_checked() {
        assert!(is_sid("AC", &format!("AC{}", "a".repeat(32))));
        assert!(!is_sid("AC", &format!("PN{}", "a".repeat(32))));
        assert!(!is_sid("PN", "PN../../x"));
        assert!(!is_sid("PN", &format!("PN{}", "g".repeat(32))));
    }

    #[test]
    fn forms_clear_unset_urls_and_omit_unset_methods() {
        let w = Webhooks {
            voice_url: Some("https://v.example.com/twilio/voice".into()),
            voice_method: Some("POST".into()),
            status_callback: None,
            status_callback_method: None,
        };
        assert_eq!(
            w.form().expect("form"),
            "VoiceUrl=https%3A%2F%2Fv.example.com%2Ftwilio%2Fvoice&StatusCallback=&VoiceMethod=POST"
        );
    }

    #[test]
    fn matching_treats_an_unset_method_as_post() {
        let n = IncomingNumber {
            voice_url: Some("https://a/twilio/voice".into()),
            status_callback: Some("https://a/twilio/status".into()),
            ..IncomingNumber::default()
        };
        let w = Webhooks {
            voice_url: Some("https://a/twilio/voice".into()),
            voice_method: Some("post".into()),
            status_callback: Some("https://a/twilio/status".into()),
            status_callback_method: Some("POST".into()),
        };
        assert!(w.matches(&n));
        let other = Webhooks {
            voice_url: Some("https://b/twilio/voice".into()),
            ..w.clone()
        };
        assert!(!other.matches(&n));
    }

    #[test]
    fn empty_fields_decode_as_unset() {
        let n: IncomingNumber = serde_json::from_str(
            r#"{"sid":"PN1","phone_number":"+15551230142","voice_url":"","voice_method":"POST","status_callback":null}"#,
        )
        .expect("decodes");
        assert_eq!(n.voice_url, None);
        assert_eq!(n.voice_method.as_deref(), Some("POST"));
        assert_eq!(n.status_callback, None);
    }
}
