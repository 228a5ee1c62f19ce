//! The `voice-agent` command: one binary for every Voice Agent component.
//!
//! `voice-agent <component>` runs one component (the operator starts pods
//! this way), `voice-agent dev` runs all of them in one process and
//! `voice-agent call` places a simulated phone call (DESIGN.md §2, §6).
//! Components that are not part of this build say so and exit with status 2
//! rather than pretending to run. `voice-agent bench <component>` measures a
//! component in-process and reports against its goals.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use voice_agent_proto::Component;

/// Run a Voice Agent component, the whole stack, or a simulated call.
#[derive(Parser)]
#[command(name = "voice-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Twilio/LiveKit webhooks and the Media Streams edge.
    Gateway,
    /// The per-call voice loop.
    Runtime,
    /// Retrieval-grounded replies with citations.
    Agent(AgentArgs),
    /// Speech synthesis.
    Tts(TtsArgs),
    /// The cluster's latency and load aggregation.
    Metrics(MetricsArgs),
    /// List the components and whether this build can run them.
    Components,
    /// Measure a component in-process and report against its goals
    /// (build with --release for meaningful numbers).
    Bench {
        #[command(subcommand)]
        target: BenchTarget,
    },
}

#[derive(Args)]
struct MetricsArgs {
    /// Address to listen on; overrides VOICE_AGENT_METRICS_LISTEN
    /// (default 0.0.0.0:9090).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

#[derive(Args)]
struct TtsArgs {
    /// Address to listen on; overrides VOICE_AGENT_TTS_LISTEN
    /// (default 0.0.0.0:8080).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

#[derive(Args)]
struct AgentArgs {
    /// Address to listen on; overrides VOICE_AGENT_AGENT_LISTEN
    /// (default 0.0.0.0:8080).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

#[derive(Subcommand)]
enum BenchTarget {
    /// Retrieval over the embedded index, /v1/respond with the local LLM
    /// over loopback HTTP, and ingestion throughput.
    Agent {
        /// Chunks in the index.
        #[arg(long, default_value_t = 10_000)]
        chunks: usize,
        /// Retrieval queries.
        #[arg(long, default_value_t = 5_000)]
        queries: usize,
        /// /v1/respond requests.
        #[arg(long, default_value_t = 2_000)]
        requests: usize,
        /// Bytes of Markdown to ingest.
        #[arg(long, default_value_t = 8 * 1024 * 1024)]
        ingest_bytes: usize,
    },
    /// Ingest throughput and /v1/signals latency of the metrics service.
    Metrics {
        /// Latency series to create (10 per VoiceAgent).
        #[arg(long, default_value_t = 1_000)]
        series: usize,
        /// Samples to ingest for the throughput run.
        #[arg(long, default_value_t = 2_000_000)]
        samples: usize,
        /// Samples per batch.
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
        /// /v1/signals queries per latency measurement.
        #[arg(long, default_value_t = 20_000)]
        queries: usize,
    },
    /// Local espeak-ng time to first audio byte, whole-sentence time and
    /// real-time factor over loopback HTTP, and cache-hit time to first byte.
    Tts {
        /// Syntheses per measurement.
        #[arg(long, default_value_t = 30)]
        runs: usize,
        /// Cache hits per measurement.
        #[arg(long, default_value_t = 2_000)]
        cache_runs: usize,
        /// The espeak-ng executable.
        #[arg(long, default_value = "espeak-ng")]
        espeak_bin: String,
    },
}

/// Whether this build contains a runnable server for the component.
fn available(component: Component) -> bool {
    matches!(
        component,
        Component::Metrics | Component::Tts | Component::Agent
    )
}

fn main() -> ExitCode {
    let component = match Cli::parse().command {
        Command::Components => {
            for c in Component::ALL {
                let state = if available(c) {
                    "available"
                } else {
                    "not in this build yet"
                };
                println!("{:<8} {state}", c.as_str());
            }
            return ExitCode::SUCCESS;
        }
        Command::Metrics(args) => return report(run(metrics(args))),
        Command::Bench {
            target:
                BenchTarget::Metrics {
                    series,
                    samples,
                    batch,
                    queries,
                },
        } => {
            let options = voice_agent_metrics::bench::Options {
                series,
                samples,
                batch,
                queries,
            };
            return report(run(async move {
                let report = voice_agent_metrics::bench::run(options).await?;
                print!("{report}");
                Ok(())
            }));
        }
        Command::Tts(args) => return report(run(tts(args))),
        Command::Bench {
            target:
                BenchTarget::Tts {
                    runs,
                    cache_runs,
                    espeak_bin,
                },
        } => {
            let options = voice_agent_tts::bench::Options {
                runs,
                cache_runs,
                espeak_bin,
            };
            return report(run(async move {
                let report = voice_agent_tts::bench::run(options).await?;
                print!("{report}");
                Ok(())
            }));
        }
        Command::Gateway => voice_agent_gateway::COMPONENT,
        Command::Runtime => voice_agent_runtime::COMPONENT,
        Command::Agent(args) => return report(run(agent(args))),
        Command::Bench {
            target:
                BenchTarget::Agent {
                    chunks,
                    queries,
                    requests,
                    ingest_bytes,
                },
        } => {
            let options = voice_agent_agent::bench::Options {
                chunks,
                queries,
                requests,
                ingest_bytes,
            };
            return report(run(async move {
                let report = voice_agent_agent::bench::run(options).await?;
                print!("{report}");
                Ok(())
            }));
        }
    };
    eprintln!(
        "voice-agent {}: this component is not part of this build yet; \
         see `voice-agent components`",
        component.as_str()
    );
    ExitCode::from(2)
}

/// Exit status of a finished command; errors are printed with their causes.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("voice-agent: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `task` on a multi-threaded runtime with logging set up.
fn run(task: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    init_logging();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(task)
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); JSON lines when
/// `VOICE_AGENT_LOG_FORMAT=json`, as log collectors in a cluster prefer.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let json = std::env::var("VOICE_AGENT_LOG_FORMAT").is_ok_and(|v| v == "json");
    // Err only if a subscriber is already installed; keep that one.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

async fn metrics(args: MetricsArgs) -> anyhow::Result<()> {
    use voice_agent_metrics::{Config, State};
    let mut config = Config::from_env()?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let state = Arc::new(State::new(config.clone())?);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    tracing::info!(
        component = "metrics",
        addr = %listener.local_addr()?,
        max_series = config.max_series,
        max_body_bytes = config.max_body_bytes,
        "listening"
    );
    voice_agent_metrics::serve(listener, state, shutdown_signal()).await?;
    tracing::info!(component = "metrics", "stopped");
    Ok(())
}

async fn tts(args: TtsArgs) -> anyhow::Result<()> {
    use voice_agent_tts::{Config, State};
    let mut config = Config::from_env()?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    // The config's Debug form redacts the API key.
    let state = Arc::new(State::new(config.clone())?);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    tracing::info!(
        component = "tts",
        addr = %listener.local_addr()?,
        provider = %config.provider,
        voice = %config.voice,
        max_concurrent = config.max_concurrent,
        cache_bytes = config.cache_bytes,
        "listening"
    );
    voice_agent_tts::serve(listener, state, shutdown_signal()).await?;
    tracing::info!(component = "tts", "stopped");
    Ok(())
}

async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    use voice_agent_agent::{Config, State};
    let mut config = Config::from_env()?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    // The config's Debug form redacts the database URL and the API key.
    let state = Arc::new(State::new(config.clone()).await?);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    tracing::info!(
        component = "agent",
        addr = %listener.local_addr()?,
        voice_agent = %config.component.voice_agent,
        namespace = %config.component.namespace,
        store = state.parts().store.kind(),
        vectors = state.parts().vectors.name(),
        llm = state.parts().llm.name(),
        "listening"
    );
    voice_agent_agent::serve(listener, state, shutdown_signal()).await?;
    tracing::info!(component = "agent", "stopped");
    Ok(())
}

/// Completes on SIGTERM (how Kubernetes stops a pod) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            // Without a handler, never fire: shutting down at once would be
            // worse than relying on SIGTERM.
            tracing::warn!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}
