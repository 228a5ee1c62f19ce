//! HTTP plumbing shared by the workloads, so every component answers errors,
//! limits and content negotiation the same way:
//!
//! - [`standard_layers`]: tracing, JSON error bodies for errors that do not
//!   come from a handler (router 404/405, the timeout's 408, the body limit's
//!   early 413), a request timeout and one body limit;
//! - [`error_response`], [`is_json`], [`accepts`]: the error shape of
//!   DESIGN.md §5 and `Content-Type`/`Accept` checks;
//! - [`nodelay`]: a listener that sets `TCP_NODELAY`, which streamed
//!   responses need (see its docs);
//! - [`env`]: settings from prefixed environment variables;
//! - [`samples`]: the non-blocking pusher of latency and load samples to
//!   the metrics service.

pub mod bench;
pub mod env;
pub mod samples;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use voice_agent_proto::ErrorBody;
use voice_agent_proto::error::codes;

/// Request limits of a component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// How long a request may take until its response head; then 408.
    pub request_timeout: Duration,
}

/// Called with the request path when the body limit refused a request before
/// its handler ran, so a service can count the refusal.
pub type OnTooLarge = Arc<dyn Fn(&str) + Send + Sync>;

/// A reqwest client builder that works whatever TLS features the workspace
/// unified into reqwest: it installs ring as the process's rustls crypto
/// provider when none is (reqwest's `rustls-no-provider` requires one).
pub fn client_builder() -> reqwest::ClientBuilder {
    // Err means a provider is already installed: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// An [`ErrorBody`] answer.
pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, axum::Json(ErrorBody::new(code, message))).into_response()
}

/// The essence of a media type (`application/json; charset=utf-8` →
/// `application/json`), trimmed.
pub fn essence(value: &str) -> &str {
    value.split(';').next().unwrap_or_default().trim()
}

/// Whether a `Content-Type` names JSON (`application/json`, `…+json`).
pub fn is_json(content_type: &HeaderValue) -> bool {
    let Ok(value) = content_type.to_str() else {
        return false;
    };
    let essence = essence(value);
    essence.eq_ignore_ascii_case("application/json")
        || essence
            .get(essence.len().saturating_sub(5)..)
            .is_some_and(|suffix| suffix.eq_ignore_ascii_case("+json"))
}

/// Whether `Accept` lists `media` (exactly, case-insensitively) with a
/// non-zero quality.
pub fn accepts(headers: &HeaderMap, media: &str) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';');
            let listed = parts.next().unwrap_or_default().trim();
            let zero_q = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            listed.eq_ignore_ascii_case(media) && !zero_q
        })
}

/// Wraps `router` in the standard layers, outermost first: tracing, JSON
/// error bodies, the request timeout, the body limit. axum's own 2 MB body
/// default is disabled so that `limits.max_body_bytes` is the one limit.
pub fn standard_layers<S>(
    router: Router<S>,
    limits: Limits,
    on_too_large: Option<OnTooLarge>,
) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let layers = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let on_too_large = on_too_large.clone();
            async move { json_errors(limits, on_too_large, request, next).await }
        }))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
        .layer(DefaultBodyLimit::disable());
    router.layer(layers)
}

/// Turns the bodies of errors that did not come from a handler into an
/// [`ErrorBody`]; handler errors, already JSON, pass through.
async fn json_errors(
    limits: Limits,
    on_too_large: Option<OnTooLarge>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    let already_json = response.headers().get(CONTENT_TYPE).is_some_and(is_json);
    if !(status.is_client_error() || status.is_server_error()) || already_json {
        return response;
    }
    let (code, message) = match status {
        StatusCode::NOT_FOUND => (codes::NOT_FOUND, "no such route".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => (
            codes::METHOD_NOT_ALLOWED,
            "method not allowed on this route".to_owned(),
        ),
        StatusCode::REQUEST_TIMEOUT => (
            codes::REQUEST_TIMEOUT,
            format!(
                "request not completed within {} ms",
                limits.request_timeout.as_millis()
            ),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            if let Some(hook) = &on_too_large {
                hook(&path);
            }
            (
                codes::PAYLOAD_TOO_LARGE,
                format!("request body larger than {} bytes", limits.max_body_bytes),
            )
        }
        s if s.is_client_error() => (
            codes::INVALID_ARGUMENT,
            s.canonical_reason().unwrap_or("bad request").to_owned(),
        ),
        s => (
            codes::INTERNAL,
            s.canonical_reason().unwrap_or("internal error").to_owned(),
        ),
    };
    let (parts, _) = response.into_parts();
    let mut out = error_response(status, code, message);
    for (name, value) in &parts.headers {
        if name != CONTENT_TYPE && name != CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// `listener` with `TCP_NODELAY` set on every accepted connection. Audio and
/// SSE are streamed in small writes; with Nagle's algorithm the last one
/// waits for the client's delayed ACK (40 ms on Linux) before it leaves.
pub fn nodelay(
    listener: TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::routing::post;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn send(addr: std::net::SocketAddr, raw: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(raw.as_bytes()).await.expect("write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    }

    async fn start(limits: Limits, counted: Arc<AtomicUsize>) -> std::net::SocketAddr {
        let hook: OnTooLarge = Arc::new(move |path: &str| {
            if path == "/echo" {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        });
        let router = Router::new()
            .route("/echo", post(|body: String| async move { body }))
            .route(
                "/slow",
                post(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route(
                "/teapot",
                post(|| async {
                    error_response(StatusCode::IM_A_TEAPOT, "teapot", "handler error")
                }),
            );
        let app = standard_layers(router, limits, Some(hook));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(axum::serve(nodelay(listener), app).into_future());
        addr
    }

    fn post_req(path: &str, body: &str) -> String {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[tokio::test]
    async fn layer_errors_become_json_error_bodies() {
        let counted = Arc::new(AtomicUsize::new(0));
        let limits = Limits {
            max_body_bytes: 16,
            request_timeout: Duration::from_millis(200),
        };
        let addr = start(limits, counted.clone()).await;

        let ok = send(addr, &post_req("/echo", "hello")).await;
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.ends_with("hello"),
            "{ok}"
        );

        let missing = send(addr, &post_req("/nope", "")).await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        assert!(
            missing.contains(r#"{"error":{"code":"notFound","message":"no such route"}}"#),
            "{missing}"
        );

        let get = send(
            addr,
            "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            get.starts_with("HTTP/1.1 405") && get.contains("\"methodNotAllowed\""),
            "{get}"
        );
        assert!(
            get.to_ascii_lowercase().contains("allow: post"),
            "the Allow header survives: {get}"
        );

        let big = send(addr, &post_req("/echo", &"x".repeat(64))).await;
        assert!(
            big.starts_with("HTTP/1.1 413") && big.contains("\"payloadTooLarge\""),
            "{big}"
        );
        assert!(big.contains("larger than 16 bytes"), "{big}");
        assert_eq!(
            counted.load(Ordering::Relaxed),
            1,
            "the hook counted the early 413"
        );

        let slow = send(addr, &post_req("/slow", "")).await;
        assert!(
            slow.starts_with("HTTP/1.1 408") && slow.contains("\"requestTimeout\""),
            "{slow}"
        );

        // Handler errors already carry their own body.
        let teapot = send(addr, &post_req("/teapot", "")).await;
        assert!(teapot.contains(r#""code":"teapot""#), "{teapot}");
    }

    #[test]
    fn content_types_and_accept() {
        let h = |v: &'static str| HeaderValue::from_static(v);
        assert!(is_json(&h("application/json")));
        assert!(is_json(&h("Application/JSON; charset=utf-8")));
        assert!(is_json(&h("application/problem+json")));
        assert!(!is_json(&h("text/plain")));
        assert!(!is_json(&h("json")));
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, h("text/html, application/json;q=0.9"));
        assert!(accepts(&headers, "application/json"));
        assert!(!accepts(&headers, "text/event-stream"));
        headers.insert(ACCEPT, h("application/json;q=0"));
        assert!(!accepts(&headers, "application/json"));
        assert!(!accepts(&HeaderMap::new(), "application/json"));
    }
}
