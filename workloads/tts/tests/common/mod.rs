//! Shared by the integration tests: a real server on 127.0.0.1:0 and a
//! reqwest client.
#![allow(dead_code, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;

use voice_agent_proto::ErrorBody;
use voice_agent_tts::provider::elevenlabs::client_builder;
use voice_agent_tts::{Config, State};

pub struct Server {
    pub state: Arc<State>,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
}

pub fn client() -> reqwest::Client {
    client_builder().build().expect("client")
}

/// Serves `state` on an ephemeral loopback port.
pub async fn serve(state: State) -> Server {
    let state = Arc::new(state);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = voice_agent_tts::router(Arc::clone(&state));
    tokio::spawn(async move {
        axum::serve(voice_agent_http::nodelay(listener), router)
            .await
            .expect("serve");
    });
    Server {
        state,
        addr,
        client: client(),
    }
}

pub async fn start(config: Config) -> Server {
    serve(State::new(config).expect("state")).await
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `POST /v1/synthesize` with a JSON body, audio answer.
    pub async fn synth(&self, body: serde_json::Value) -> reqwest::Response {
        self.synth_raw(body.to_string(), false).await
    }

    /// `POST /v1/synthesize` with `Accept: application/json`.
    pub async fn synth_json(&self, body: serde_json::Value) -> reqwest::Response {
        self.synth_raw(body.to_string(), true).await
    }

    pub async fn synth_raw(&self, body: String, json: bool) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url("/v1/synthesize"))
            .header("content-type", "application/json")
            .body(body);
        if json {
            request = request.header("accept", "application/json");
        }
        request.send().await.expect("send")
    }
}

pub fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Reads an error answer, checking the `{"error": {"code", "message"}}`
/// shape.
pub async fn error_body(response: reqwest::Response) -> ErrorBody {
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("application/json")
    );
    let text = response.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not an ErrorBody ({e}): {text}"))
}

pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len() as f64).sqrt()
}

/// The body parsed as JSON (reqwest's `json` feature is not enabled).
pub async fn json<T: serde::de::DeserializeOwned>(response: reqwest::Response) -> T {
    let text = response.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"))
}
