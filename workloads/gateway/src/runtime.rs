//! The gateway's client of the runtime sessions API (DESIGN.md §5
//! "runtime"): `POST /api/sessions` on the runtime Service, and
//! `DELETE /api/sessions/{id}` on the pod that holds the session.

use std::time::Duration;

use reqwest::StatusCode;
use thiserror::Error;
use voice_agent_proto::{CreateSessionRequest, CreateSessionResponse};

/// Why no session was opened.
#[derive(Debug, Error)]
pub enum SessionError {
    /// The runtime answered 503: draining or full.
    #[error("runtime has no capacity (503)")]
    NoCapacity,
    /// No answer within the deadline.
    #[error("runtime did not answer within {0:?}")]
    Timeout(Duration),
    /// The runtime could not be reached.
    #[error("runtime unreachable: {0}")]
    Unreachable(String),
    /// The runtime answered, but not with a session (e.g. 400, 500, a body
    /// that is not the contract's).
    #[error("runtime refused the session: {0}")]
    Refused(String),
}

impl SessionError {
    /// Whether one more attempt may succeed (503, timeout, connection
    /// error: another pod, or the same one a moment later).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, SessionError::Refused(_))
    }

    /// Whether the runtime lacked capacity rather than misbehaving; these
    /// calls end with `NoCapacity`.
    pub fn is_capacity(&self) -> bool {
        self.is_retryable()
    }
}

/// Calls the runtime's sessions API.
#[derive(Debug, Clone)]
pub struct RuntimeClient {
    http: reqwest::Client,
    sessions_url: String,
    timeout: Duration,
}

impl RuntimeClient {
    /// A client of the runtime Service at `base_url`; each session attempt
    /// may take `timeout`.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = voice_agent_http::client_builder()
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .build()?;
        Ok(RuntimeClient {
            http,
            sessions_url: format!("{}/api/sessions", base_url.trim_end_matches('/')),
            timeout,
        })
    }

    /// Opens a session: one attempt, and a second one when the first failed
    /// in a retryable way. Worst case two timeouts.
    pub async fn open_session(
        &self,
        request: &CreateSessionRequest,
    ) -> Result<CreateSessionResponse, SessionError> {
        match self.attempt(request).await {
            Err(err) if err.is_retryable() => {
                tracing::debug!(error = %err, call_sid = %request.call_sid, "retrying session");
                self.attempt(request).await
            }
            other => other,
        }
    }

    async fn attempt(
        &self,
        request: &CreateSessionRequest,
    ) -> Result<CreateSessionResponse, SessionError> {
        let send = self
            .http
            .post(&self.sessions_url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(request).unwrap_or_default())
            .send();
        let response = match tokio::time::timeout(self.timeout, async {
            let response = send.await?;
            let status = response.status();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        })
        .await
        {
            Err(_) => return Err(SessionError::Timeout(self.timeout)),
            Ok(Err(err)) if err.is_timeout() => return Err(SessionError::Timeout(self.timeout)),
            Ok(Err(err)) => return Err(SessionError::Unreachable(err.to_string())),
            Ok(Ok(response)) => response,
        };
        match response {
            (StatusCode::SERVICE_UNAVAILABLE, _) => Err(SessionError::NoCapacity),
            (status, body) if status.is_success() => {
                let session: CreateSessionResponse = serde_json::from_slice(&body)
                    .map_err(|e| SessionError::Refused(format!("{status} with a bad body: {e}")))?;
                validate(&session)?;
                Ok(session)
            }
            (status, _) => Err(SessionError::Refused(status.to_string())),
        }
    }

    /// Ends `session_id` on the pod whose media URL is `media_url`. A 404
    /// (already gone) is success.
    pub async fn end_session(&self, media_url: &str, session_id: &str) -> Result<(), SessionError> {
        let base = pod_base_url(media_url)
            .ok_or_else(|| SessionError::Refused(format!("bad media URL {media_url:?}")))?;
        let url = format!("{base}/api/sessions/{}", path_segment(session_id));
        let response = tokio::time::timeout(self.timeout, self.http.delete(&url).send())
            .await
            .map_err(|_| SessionError::Timeout(self.timeout))?
            .map_err(|e| SessionError::Unreachable(e.to_string()))?;
        match response.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            StatusCode::SERVICE_UNAVAILABLE => Err(SessionError::NoCapacity),
            s => Err(SessionError::Refused(s.to_string())),
        }
    }
}

impl RuntimeClient {
    /// Asks the pod whose media URL is `media_url` to join LiveKit `room`
    /// for `session_id` (`POST /api/sessions/{id}/livekit`).
    pub async fn join_room(
        &self,
        media_url: &str,
        session_id: &str,
        room: &str,
    ) -> Result<(), SessionError> {
        let base = pod_base_url(media_url)
            .ok_or_else(|| SessionError::Refused(format!("bad media URL {media_url:?}")))?;
        let url = format!("{base}/api/sessions/{}/livekit", path_segment(session_id));
        let body = voice_agent_proto::JoinRoomRequest {
            room: room.to_owned(),
        };
        let response = tokio::time::timeout(self.timeout, self.http.post(&url).json(&body).send())
            .await
            .map_err(|_| SessionError::Timeout(self.timeout))?
            .map_err(|e| SessionError::Unreachable(e.to_string()))?;
        match response.status() {
            s if s.is_success() => Ok(()),
            StatusCode::SERVICE_UNAVAILABLE => Err(SessionError::NoCapacity),
            s => Err(SessionError::Refused(s.to_string())),
        }
    }
}

/// Refuses session answers the gateway must not pass on: an empty or odd
/// session id, or a media URL that is not `ws(s)://`.
fn validate(session: &CreateSessionResponse) -> Result<(), SessionError> {
    if !is_session_id(&session.session_id) {
        return Err(SessionError::Refused(format!(
            "unusable session id {:?}",
            session.session_id
        )));
    }
    if pod_base_url(&session.media_url).is_none() {
        return Err(SessionError::Refused(format!(
            "unusable media URL {:?}",
            session.media_url
        )));
    }
    Ok(())
}

/// Whether `id` is a plausible session id: 1-128 characters of letters,
/// digits, `-`, `_` and `.` (it travels in URLs, SIP headers and room names).
pub fn is_session_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The HTTP base URL (`http://host:port`) of the pod behind a media URL
/// (`ws://host:port/api/sessions/{id}/media`); `None` unless the URL is
/// `ws://` or `wss://` with a host.
pub fn pod_base_url(media_url: &str) -> Option<String> {
    let (scheme, rest) = if let Some(rest) = media_url.strip_prefix("ws://") {
        ("http", rest)
    } else if let Some(rest) = media_url.strip_prefix("wss://") {
        ("https", rest)
    } else {
        return None;
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if authority.is_empty()
        || authority.contains('@')
        || authority
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return None;
    }
    Some(format!("{scheme}://{authority}"))
}

fn path_segment(id: &str) -> String {
    // Session ids are checked by `is_session_id`; encode anything else
    // rather than let it change the path.
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_urls_from_media_urls() {
        assert_eq!(
            pod_base_url("ws://10.0.0.7:8080/api/sessions/s-1/media").as_deref(),
            Some("http://10.0.0.7:8080")
        );
        assert_eq!(
            pod_base_url("wss://rt.example/api/sessions/s-1/media").as_deref(),
            Some("https://rt.example")
        );
        for bad in [
            "http://x/",
            "ws://",
            "ws:///x",
            "ws://u@x/",
            "ws://a b/",
            "x",
        ] {
            assert!(pod_base_url(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn session_ids() {
        assert!(is_session_id("s-1_a.b"));
        for bad in ["", "a/b", "a\nb", "a b", &"x".repeat(129)] {
            assert!(!is_session_id(bad), "{bad:?}");
        }
        assert_eq!(path_segment("a/b"), "a%2Fb");
    }
}
