//! Shared helpers of the agent's integration tests: a server on loopback,
//! per-test PostgreSQL databases, a TCP proxy to simulate a database
//! outage, and an SSE reader.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use voice_agent_agent::{Config, MemoryStore, Parts, State};

/// A running agent server.
pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves `state` on a random loopback port.
    pub async fn start(state: State) -> Server {
        let state = Arc::new(state);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn({
            let state = Arc::clone(&state);
            async move {
                voice_agent_agent::serve(listener, state, async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
            }
        });
        Server {
            addr,
            state,
            stop: Some(stop),
            task,
        }
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server gracefully.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// The test config (VoiceAgent `support`, local everything).
pub fn config() -> Config {
    Config::new(voice_agent_agent::testing::component_config())
}

/// A state on the in-memory store with the local LLM and embedder.
pub async fn memory_state(config: Config) -> State {
    let embedder = Arc::new(voice_agent_agent::LocalEmbedder::default());
    let parts = Parts {
        store: Arc::new(MemoryStore::new()),
        vectors: Arc::new(voice_agent_agent::EmbeddedIndex::new(
            voice_agent_agent::Embedder::dimensions(embedder.as_ref()),
        )),
        embedder,
        llm: Arc::new(voice_agent_agent::LocalResponder::new(
            &config.component.persona,
        )),
    };
    State::with_parts(config, parts).await.expect("state")
}

/// An HTTP client.
pub fn client() -> reqwest::Client {
    voice_agent_agent::llm::openai::client_builder()
        .build()
        .expect("client")
}

/// `DATABASE_URL`, or `None` after a loud SKIPPED line. Under CI (`CI`
/// set) a missing database fails the test instead.
pub fn database_url(test: &str) -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "{test}: DATABASE_URL is not set, and CI is: PostgreSQL tests must run in CI"
                );
            }
            eprintln!(
                "\n*** SKIPPED {test}: DATABASE_URL is not set (./scripts/test starts a PostgreSQL) ***\n"
            );
            None
        }
    }
}

/// A database of its own for one test, dropped by [`TestDb::drop_db`].
pub struct TestDb {
    admin_url: String,
    pub name: String,
    pub url: String,
}

/// `url` with its database name replaced.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// `host:port` of a postgres URL.
pub fn host_port(url: &str) -> SocketAddr {
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = after_scheme.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    };
    host_port
        .replace("localhost", "127.0.0.1")
        .parse()
        .expect("DATABASE_URL host must be an IP:port")
}

impl TestDb {
    /// Creates a randomly named database.
    pub async fn create(admin_url: &str) -> TestDb {
        let name = format!("agent_test_{}", voice_agent_agent::testing::random_suffix());
        let mut conn = PgConnection::connect(admin_url).await.expect("connect");
        conn.execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create database");
        conn.close().await.ok();
        TestDb {
            admin_url: admin_url.to_owned(),
            url: with_database(admin_url, &name),
            name,
        }
    }

    /// The URL of this database through another `host:port` (a proxy).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        let real = host_port(&self.url).to_string();
        self.url.replacen(&real, &addr.to_string(), 1)
    }

    /// Drops the database (forcing other connections off).
    pub async fn drop_db(self) {
        let mut conn = PgConnection::connect(&self.admin_url)
            .await
            .expect("connect");
        conn.execute(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .await
        .expect("drop database");
        conn.close().await.ok();
    }
}

/// A TCP proxy; stopping it closes every connection and the listener, as a
/// database outage would.
pub struct Proxy {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Proxies `listen` (or a random port) to `target`.
    pub async fn start(target: SocketAddr, listen: Option<SocketAddr>) -> Proxy {
        let listener =
            TcpListener::bind(listen.unwrap_or_else(|| "127.0.0.1:0".parse().expect("addr")))
                .await
                .expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { continue };
                        conns.spawn(async move {
                            if let Ok(mut outbound) = TcpStream::connect(target).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            }
                        });
                    }
                }
            }
            // Dropping the set aborts every connection; dropping the
            // listener refuses new ones.
            conns.shutdown().await;
        });
        Proxy { addr, stop, task }
    }

    /// Stops the proxy: all connections close, new ones are refused.
    pub async fn stop(self) -> SocketAddr {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.addr
    }
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Parses a complete SSE body.
pub fn parse_sse(body: &str) -> Vec<SseEvent> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut event = String::from("message");
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                }
            }
            SseEvent {
                event,
                data: data.join("\n"),
            }
        })
        .collect()
}

/// Reads a whole streamed body (ignoring a broken end) as text.
pub async fn read_body(resp: reqwest::Response) -> String {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => out.extend_from_slice(&c),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `POST url` with a JSON body (and optional extra headers).
pub async fn post_json(
    url: &str,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("request")
}

/// The body as JSON of type `T`.
pub async fn json_of<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> T {
    let text = resp.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}
