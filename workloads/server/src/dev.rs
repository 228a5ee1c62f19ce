//! `voice-agent dev`: all five components in one process, on one port, from
//! the same VoiceAgent manifest the operator deploys (DESIGN.md §6).
//!
//! Each component keeps its own router; a small dispatcher sends each request
//! to the component that owns its path (the paths of DESIGN.md §5 do not
//! collide) and merges `/metrics`, `/healthz` and `/readyz`. Components talk
//! to each other over real HTTP on the same port, exactly as in a cluster.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State as AxumState};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use voice_agent_api::VoiceAgent;
use voice_agent_api::deploy::{ComponentConfig, Endpoints, env};
use voice_agent_api::voiceagent::{DocumentFormat, KnowledgeSource, SttProvider as SttKind};
use voice_agent_http::env::Secret;

/// The Twilio auth token used when neither the environment nor the env file
/// sets one. Development only: `voice-agent call` signs with the same.
pub const DEV_TWILIO_AUTH_TOKEN: &str = "dev-twilio-auth-token";
/// The env file read when `--env-file` is not given (if it exists).
pub const DEFAULT_ENV_FILE: &str = ".env";
/// Namespace the dev stack pretends to run in.
pub const DEV_NAMESPACE: &str = "default";

/// Settings of a dev stack.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// The VoiceAgent manifest.
    pub manifest: PathBuf,
    /// Address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Directory whose files stand in for the manifest's ConfigMap knowledge
    /// sources (default: `knowledge/` beside the manifest).
    pub knowledge_dir: Option<PathBuf>,
    /// KEY=VALUE file with secrets (default `.env` if present).
    pub env_file: Option<PathBuf>,
    /// The URL Twilio would use to reach the gateway (default
    /// `http://{listen}`); set it to a tunnel's URL to take real calls.
    pub public_url: Option<String>,
}

/// Secrets from the environment, then the env file.
#[derive(Debug, Default, Clone)]
pub struct Secrets {
    file: BTreeMap<String, String>,
}

impl Secrets {
    /// Reads `path` (or `.env` when it exists). A named file that is missing
    /// is an error; lines are `KEY=VALUE`, `#` comments, optional quotes.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_ENV_FILE), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default());
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Self {
            file: parse_env_file(&text)
                .with_context(|| format!("in env file {}", path.display()))?,
        })
    }

    /// The value of `name`: the process environment wins over the file.
    pub fn get(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .or_else(|| self.file.get(name).cloned())
            .filter(|v| !v.trim().is_empty())
    }

    /// The Twilio auth token, and whether it is the development default.
    pub fn twilio_auth_token(&self) -> (Secret, bool) {
        match self.get(env::TWILIO_AUTH_TOKEN) {
            Some(token) => (Secret::new(token), false),
            None => (Secret::new(DEV_TWILIO_AUTH_TOKEN), true),
        }
    }
}

/// Parses `KEY=VALUE` lines.
pub fn parse_env_file(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            bail!("line {}: expected KEY=VALUE", i + 1);
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("line {}: {key:?} is not a variable name", i + 1);
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        out.insert(key.to_string(), value.to_string());
    }
    Ok(out)
}

/// Reads and validates the manifest as the API server would.
pub fn load_manifest(path: &Path) -> anyhow::Result<VoiceAgent> {
    let yaml = std::fs::read_to_string(path)
        .with_context(|| format!("reading the VoiceAgent manifest {}", path.display()))?;
    voice_agent_api::validation::load_voice_agent(&yaml)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Turns ConfigMap knowledge sources into inline ones from the files of
/// `dir` (each file one document, named after the file). Returns the number
/// of files read.
pub fn inline_knowledge(component: &mut ComponentConfig, dir: &Path) -> anyhow::Result<usize> {
    let uses_config_maps = component
        .knowledge
        .sources
        .iter()
        .any(|s| s.config_map.is_some());
    if !uses_config_maps {
        return Ok(0);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| {
            format!(
                "the manifest's knowledge comes from a ConfigMap; dev mode reads its files from {} \
                 (pass --knowledge DIR to use another directory)",
                dir.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut sources: Vec<KnowledgeSource> = component
        .knowledge
        .sources
        .iter()
        .filter(|s| s.config_map.is_none())
        .cloned()
        .collect();
    for file in &files {
        let Some(stem) = file.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading knowledge file {}", file.display()))?;
        let markdown = file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("md") || e.eq_ignore_ascii_case("markdown"));
        sources.push(KnowledgeSource {
            name: stem.to_string(),
            title: None,
            format: if markdown {
                DocumentFormat::Markdown
            } else {
                DocumentFormat::Text
            },
            config_map: None,
            inline: Some(text),
        });
    }
    component.knowledge.sources = sources;
    Ok(files.len())
}

/// The text the local recognizer's language model is built from: what the
/// agent says and knows.
pub fn domain_text(component: &ComponentConfig) -> String {
    let mut text = String::new();
    let persona = &component.persona;
    for part in [
        Some(persona.greeting.as_str()),
        persona.instructions.as_deref(),
        persona.goodbye.as_deref(),
    ]
    .into_iter()
    .flatten()
    {
        text.push_str(part);
        text.push('\n');
    }
    for source in &component.knowledge.sources {
        if let Some(inline) = &source.inline {
            text.push_str(inline);
            text.push('\n');
        }
    }
    text
}

/// A running dev stack.
pub struct DevStack {
    /// `http://127.0.0.1:{port}`.
    pub base_url: String,
    /// The gateway's public URL (what Twilio signs).
    pub public_url: String,
    /// The VoiceAgent's name.
    pub voice_agent: String,
    /// Whether the Twilio auth token is the development default.
    pub dev_token: bool,
    /// Knowledge documents ingested.
    pub documents: usize,
    /// STT provider name.
    pub stt: &'static str,
    /// Whether conversation history goes to Postgres.
    pub postgres: bool,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl DevStack {
    /// Stops the stack: drains calls and waits for the server to end.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.server).await.context("dev server task")?
    }

    /// Waits until the server ends (Ctrl-C / SIGTERM when started with a
    /// signal future).
    pub async fn wait(mut self) -> anyhow::Result<()> {
        (&mut self.server).await.context("dev server task")?
    }
}

#[derive(Clone)]
struct Routers {
    gateway: Router,
    runtime: Router,
    agent: Router,
    tts: Router,
    metrics: Router,
}

/// Starts every component; `shutdown` (or [`DevStack::stop`]) ends it.
pub async fn start(
    options: DevOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<DevStack> {
    let va = load_manifest(&options.manifest)?;
    let name = va.metadata.name.clone().unwrap_or_default();
    let secrets = Secrets::load(options.env_file.as_deref())?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| {
            format!(
                "listening on {} (is another `voice-agent dev` running? pick another --port)",
                options.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let base_url = format!("http://127.0.0.1:{}", addr.port());
    let public_url = options
        .public_url
        .clone()
        .unwrap_or_else(|| base_url.clone())
        .trim_end_matches('/')
        .to_string();

    let endpoints = Endpoints {
        gateway: base_url.clone(),
        runtime: base_url.clone(),
        agent: base_url.clone(),
        tts: base_url.clone(),
        metrics: Some(base_url.clone()),
    };
    let mut component =
        ComponentConfig::from_voice_agent(&va, DEV_NAMESPACE, endpoints, Vec::new());
    component.telephony.public_url = public_url.clone();
    let database_url = secrets.get(env::DATABASE_URL);
    component.database = database_url.is_some();
    let knowledge_dir = options.knowledge_dir.clone().unwrap_or_else(|| {
        options
            .manifest
            .parent()
            .unwrap_or(Path::new("."))
            .join("knowledge")
    });
    inline_knowledge(&mut component, &knowledge_dir)?;
    let documents = component
        .knowledge
        .sources
        .iter()
        .filter(|s| s.inline.is_some())
        .count();

    // metrics
    let metrics_config = voice_agent_metrics::Config::from_env()?;
    let metrics = Arc::new(voice_agent_metrics::State::new(metrics_config)?);
    // tts
    let tts_config = voice_agent_tts::Config::from_env()?;
    let tts = Arc::new(
        voice_agent_tts::State::new(tts_config)
            .context("starting the TTS service (espeak-ng not found? apt-get install espeak-ng)")?,
    );
    if let Err(e) = tts.check_provider().await {
        bail!("text to speech is not working: {e} (apt-get install espeak-ng)");
    }
    // agent
    let agent = Arc::new(
        voice_agent_agent::State::from_component_config(component.clone(), database_url.clone())
            .await
            .context("starting the agent service")?,
    );
    // runtime
    let lookup_secrets = secrets.clone();
    let port = addr.port();
    let runtime_config =
        voice_agent_runtime::Config::from_component_config(&component, |k| match k {
            "VOICE_AGENT_RUNTIME_LISTEN" => Some(format!("127.0.0.1:{port}")),
            "VOICE_AGENT_RUNTIME_MEDIA_BASE_URL" => Some(format!("ws://127.0.0.1:{port}")),
            env::POD_NAME => Some(format!("{}-dev", component.voice_agent)),
            other => lookup_secrets.get(other),
        })?;
    let stt = stt_provider(&component, &runtime_config)?;
    let stt_name = stt.name();
    let runtime = Arc::new(voice_agent_runtime::State::new(runtime_config, stt)?);
    // gateway
    let (token, dev_token) = secrets.twilio_auth_token();
    if component.telephony.transport != voice_agent_api::voiceagent::Transport::MediaStreams {
        bail!(
            "dev mode runs Twilio Media Streams only; the manifest asks for transport {:?}, which \
             needs a LiveKit server",
            component.telephony.transport
        );
    }
    let gateway_config = voice_agent_gateway::Config::new(component.clone(), token)?;
    // Dev mode never writes to a cluster, even when a kubeconfig is around.
    let gateway = Arc::new(voice_agent_gateway::State::new(
        gateway_config,
        Arc::new(voice_agent_gateway::NoCluster::default()),
    )?);
    gateway.set_ready(true);

    let routers = Routers {
        gateway: voice_agent_gateway::router(Arc::clone(&gateway)),
        runtime: voice_agent_runtime::router(Arc::clone(&runtime)),
        agent: voice_agent_agent::router(Arc::clone(&agent)),
        tts: voice_agent_tts::router(Arc::clone(&tts)),
        metrics: voice_agent_metrics::router(Arc::clone(&metrics)),
    };
    let app = Router::new().fallback(dispatch).with_state(routers);

    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let drain_runtime = Arc::clone(&runtime);
    let stop = async move {
        tokio::select! {
            _ = shutdown => {}
            _ = rx => {}
        }
        // Calls in progress finish first (up to the drain timeout).
        let cut = drain_runtime.drain().await;
        if cut > 0 {
            tracing::warn!(cut, "calls ended by the drain timeout");
        }
    };
    let sweeper = tokio::spawn(voice_agent_metrics::run_sweeper(
        Arc::clone(&metrics),
        std::future::pending(),
    ));
    let warm = Arc::clone(&runtime);
    let server = tokio::spawn(async move {
        let result = axum::serve(voice_agent_http::nodelay(listener), app)
            .with_graceful_shutdown(stop)
            .await;
        sweeper.abort();
        result.context("dev server")
    });
    // Prime the recognizer before announcing the stack ready.
    warm.warm_up_recognizer().await;
    Ok(DevStack {
        base_url,
        public_url,
        voice_agent: name,
        dev_token,
        documents,
        stt: stt_name,
        postgres: database_url.is_some(),
        shutdown: Some(tx),
        server,
    })
}

/// The recognizer the component config asks for.
pub fn stt_provider(
    component: &ComponentConfig,
    config: &voice_agent_runtime::Config,
) -> anyhow::Result<Arc<dyn voice_agent_runtime::stt::SttProvider>> {
    Ok(match component.stt.provider {
        SttKind::Local => Arc::new(
            voice_agent_runtime::stt::local::LocalStt::new(
                voice_agent_runtime::stt::local::LocalSttConfig::new(domain_text(component)),
            )
            .context(
                "the local speech recognizer (apt-get install libpocketsphinx3 pocketsphinx-en-us)",
            )?,
        ),
        SttKind::Deepgram => Arc::new(
            voice_agent_runtime::stt::deepgram::DeepgramStt::new(
                voice_agent_runtime::stt::deepgram::DeepgramConfig::from_runtime(&config.stt),
            )
            .context("the Deepgram speech recognizer")?,
        ),
    })
}

/// Which component serves a path.
fn owner(method: &Method, path: &str) -> Option<Component> {
    let _ = method;
    Some(
        if path.starts_with("/twilio/") || path.starts_with("/livekit/") {
            Component::Gateway
        } else if path.starts_with("/api/") || path.starts_with("/admin/") {
            Component::Runtime
        } else if path == "/v1/respond" || path.starts_with("/v1/documents") {
            Component::Agent
        } else if path == "/v1/synthesize" {
            Component::Tts
        } else if path == "/v1/samples" || path == "/v1/signals" {
            Component::Metrics
        } else {
            return None;
        },
    )
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Component {
    Gateway,
    Runtime,
    Agent,
    Tts,
    Metrics,
}

async fn dispatch(AxumState(routers): AxumState<Routers>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let router = match owner(request.method(), &path) {
        Some(Component::Gateway) => routers.gateway,
        Some(Component::Runtime) => routers.runtime,
        Some(Component::Agent) => routers.agent,
        Some(Component::Tts) => routers.tts,
        Some(Component::Metrics) => routers.metrics,
        None => {
            return match path.as_str() {
                "/metrics" => merged_metrics(&routers).await,
                "/healthz" | "/readyz" => merged_probe(&routers, &path).await,
                _ => voice_agent_http::error_response(
                    StatusCode::NOT_FOUND,
                    voice_agent_proto::error::codes::NOT_FOUND,
                    "no such route",
                ),
            };
        }
    };
    match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

fn all(routers: &Routers) -> [(&'static str, Router); 5] {
    [
        ("gateway", routers.gateway.clone()),
        ("runtime", routers.runtime.clone()),
        ("agent", routers.agent.clone()),
        ("tts", routers.tts.clone()),
        ("metrics", routers.metrics.clone()),
    ]
}

async fn get(router: Router, path: &str) -> (StatusCode, String) {
    let request = Request::get(path).body(Body::empty());
    let Ok(request) = request else {
        return (StatusCode::INTERNAL_SERVER_ERROR, String::new());
    };
    let Ok(response) = router.oneshot(request).await;
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    (status, body)
}

/// One Prometheus exposition from every component (their metric names do
/// not overlap).
async fn merged_metrics(routers: &Routers) -> Response {
    let mut text = String::new();
    for (_, router) in all(routers) {
        let (_, body) = get(router, "/metrics").await;
        text.push_str(&body);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Healthy/ready when every component is; names the ones that are not.
async fn merged_probe(routers: &Routers, path: &str) -> Response {
    let mut failing = Vec::new();
    for (name, router) in all(routers) {
        let (status, _) = get(router, path).await;
        if !status.is_success() {
            failing.push(name);
        }
    }
    if failing.is_empty() {
        "ok".into_response()
    } else {
        voice_agent_http::error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            voice_agent_proto::error::codes::UNAVAILABLE,
            format!("not ready: {}", failing.join(", ")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_parsing() {
        let parsed = parse_env_file(
            "# secrets\nTWILIO_AUTH_TOKEN=abc\nexport DATABASE_URL=\"postgres://x\"\n\nQ='single'\n",
        )
        .expect("parse");
        assert_eq!(parsed["TWILIO_AUTH_TOKEN"], "abc");
        assert_eq!(parsed["DATABASE_URL"], "postgres://x");
        assert_eq!(parsed["Q"], "single");
        assert!(parse_env_file("NOEQUALS").is_err());
        assert!(parse_env_file("BAD KEY=1").is_err());
    }

    #[test]
    fn paths_belong_to_one_component() {
        let m = Method::GET;
        assert_eq!(owner(&m, "/twilio/voice"), Some(Component::Gateway));
        assert_eq!(owner(&m, "/livekit/webhook"), Some(Component::Gateway));
        assert_eq!(
            owner(&m, "/api/sessions/s-1/media"),
            Some(Component::Runtime)
        );
        assert_eq!(owner(&m, "/admin/drain"), Some(Component::Runtime));
        assert_eq!(owner(&m, "/v1/respond"), Some(Component::Agent));
        assert_eq!(owner(&m, "/v1/documents/x"), Some(Component::Agent));
        assert_eq!(owner(&m, "/v1/synthesize"), Some(Component::Tts));
        assert_eq!(owner(&m, "/v1/signals"), Some(Component::Metrics));
        assert_eq!(owner(&m, "/metrics"), None);
        assert_eq!(owner(&m, "/healthz"), None);
    }
}
