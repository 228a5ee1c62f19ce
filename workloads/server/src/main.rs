//! The `voice-agent` command: one binary for every Voice Agent component.
//!
//! `voice-agent <component>` runs one component (the operator starts pods
//! this way), `voice-agent dev` runs all of them in one process and
//! `voice-agent call` places a simulated phone call (DESIGN.md §2, §6).
//! `voice-agent components` lists what a build can run, and `voice-agent
//! bench <component>` measures a component in-process against its goals.

mod caller;
mod dev;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
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
    Gateway(ListenArgs),
    /// The per-call voice loop.
    Runtime(ListenArgs),
    /// Every component in one process on one port, from a VoiceAgent
    /// manifest, with embedded defaults (no cluster, no vendor accounts).
    Dev(DevArgs),
    /// Place a simulated phone call against a running `voice-agent dev`.
    Call(CallArgs),
    /// Start the dev stack, place a scripted call with three questions from
    /// the example knowledge base, print the conversation and latency, and
    /// exit 0 only if every answer cites the right document.
    Demo(DemoArgs),
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
struct ListenArgs {
    /// Address to listen on (default 0.0.0.0:8080).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

#[derive(Args)]
struct DevArgs {
    /// The VoiceAgent manifest.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        default_value = "examples/voiceagent.yaml"
    )]
    manifest: PathBuf,
    /// Port to serve every component on.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to bind (127.0.0.1 keeps the stack private).
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// Directory holding the files of the manifest's ConfigMap knowledge
    /// sources (default: `knowledge/` beside the manifest).
    #[arg(long, value_name = "DIR")]
    knowledge: Option<PathBuf>,
    /// KEY=VALUE file with secrets such as TWILIO_AUTH_TOKEN and DATABASE_URL
    /// (default: `.env` when present; the environment wins).
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,
    /// The URL Twilio reaches this machine at (a tunnel), for real calls.
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
}

#[derive(Args)]
struct CallArgs {
    /// Where `voice-agent dev` listens.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A line the caller says (repeat; spoken in order).
    #[arg(long = "say", value_name = "TEXT")]
    say: Vec<String>,
    /// Keys the caller presses, e.g. `123#` (repeat; in order with --say).
    #[arg(long = "dtmf", value_name = "KEYS")]
    dtmf: Vec<String>,
    /// Barge in: say the second line this many ms into the agent's answer
    /// to the first.
    #[arg(long, value_name = "MS")]
    interrupt_after_ms: Option<u64>,
    /// Print a JSON report instead of the table.
    #[arg(long)]
    json: bool,
    /// Caller number (E.164).
    #[arg(long, default_value = "+15550100123")]
    from: String,
    /// Called number (E.164).
    #[arg(long, default_value = "+15550142000")]
    to: String,
    /// The gateway's public URL, if it differs from --url (signatures are
    /// computed over it).
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// KEY=VALUE file with TWILIO_AUTH_TOKEN (default: `.env` when present).
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,
    /// espeak-ng voice of the caller.
    #[arg(long, default_value = "en-us")]
    voice: String,
}

#[derive(Args)]
struct DemoArgs {
    /// The VoiceAgent manifest.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        default_value = "examples/voiceagent.yaml"
    )]
    manifest: PathBuf,
    /// Port for the dev stack (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Print the JSON report too.
    #[arg(long)]
    json: bool,
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
    /// The voice loop's per-frame hot path: Media Streams parse, base64,
    /// mu-law, VAD, turn-taking, and the outbound encode.
    Runtime {
        /// Frames to time.
        #[arg(long, default_value_t = 200_000)]
        frames: usize,
    },
    /// Whole calls against the runtime (a child process on one core) with
    /// instant agent/TTS stubs: orchestration overhead per turn, then CPU,
    /// RSS, playback lateness and lost turns at N simultaneous calls.
    Calls {
        /// Load levels: simultaneous calls.
        #[arg(long, value_delimiter = ',', default_value = "1,100,500,1000")]
        calls: Vec<usize>,
        /// Steady-state seconds measured per load level.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Turns for the overhead measurement (0 skips it).
        #[arg(long, default_value_t = 100)]
        turns: usize,
        /// Calls the overhead turns are spread over.
        #[arg(long, default_value_t = 5)]
        overhead_calls: usize,
    },
    /// The runtime under test of `bench calls` (started by it).
    #[command(hide = true)]
    CallsServer {
        #[arg(long)]
        agent_url: String,
        #[arg(long)]
        tts_url: String,
        #[arg(long)]
        capacity: u32,
    },
    /// Signed Twilio voice webhooks against the real gateway on one core
    /// (stubbed runtime): requests/s, latency percentiles, CPU per webhook,
    /// the cost of refusing bad signatures and of the signature check alone.
    Gateway {
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// Requests per pass [default: 50000].
        #[arg(long, conflicts_with = "seconds")]
        requests: Option<usize>,
        /// Seconds per pass instead of a request count.
        #[arg(long)]
        seconds: Option<f64>,
        /// Requests before measuring.
        #[arg(long, default_value_t = 2_000)]
        warmup: usize,
        /// Iterations of the signature-check loop.
        #[arg(long, default_value_t = 200_000)]
        verifies: usize,
        /// Keep the gateway's per-call logs (to stderr) to include their cost.
        #[arg(long)]
        log: bool,
    },
    /// The Media Streams proxy (`GET /twilio/media`) of the real gateway (a
    /// child process on one core) carrying N calls of real-time 20 ms frames
    /// echoed by a stub runtime: CPU and RSS per call, round-trip latency
    /// through the proxy, frames lost.
    GatewayMedia {
        /// Load levels: simultaneous calls.
        #[arg(long, value_delimiter = ',', default_value = "100,500,1000")]
        calls: Vec<usize>,
        /// Measured seconds per load level (after one second of warm-up).
        #[arg(long, default_value_t = 15)]
        seconds: u64,
    },
    /// The gateway under test of `bench gateway-media` (started by it).
    #[command(hide = true)]
    GatewayMediaServer {
        /// The stub runtime's address.
        #[arg(long)]
        runtime: SocketAddr,
    },
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
        Component::Metrics
            | Component::Tts
            | Component::Agent
            | Component::Gateway
            | Component::Runtime
    )
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Dev(args) => report(run(dev_command(args))),
        Command::Call(args) => {
            // --say and --dtmf interleave in command-line order.
            let sub = matches.subcommand_matches("call");
            let steps = call_steps(&args, sub);
            report(run(call_command(args, steps)))
        }
        Command::Demo(args) => demo_exit(run(run_demo(args))),
        Command::Gateway(args) => report(run(gateway(args))),
        Command::Runtime(args) => report(run(runtime(args))),
        Command::Components => {
            for c in Component::ALL {
                let state = if available(c) {
                    "available"
                } else {
                    "not in this build yet"
                };
                println!("{:<8} {state}", c.as_str());
            }
            if voice_agent_runtime::LIVEKIT_TRANSPORT {
                println!("media transports: mediaStreams, livekit");
            } else {
                println!("media transports: mediaStreams (livekit: build with --features livekit)");
            }
            ExitCode::SUCCESS
        }
        Command::Metrics(args) => report(run(metrics(args))),
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
            report(run(async move {
                let report = voice_agent_metrics::bench::run(options).await?;
                print!("{report}");
                Ok(())
            }))
        }
        Command::Tts(args) => report(run(tts(args))),
        Command::Bench {
            target: BenchTarget::Runtime { frames },
        } => {
            print!(
                "{}",
                voice_agent_runtime::bench::run(&voice_agent_runtime::bench::Options { frames })
            );
            ExitCode::SUCCESS
        }
        Command::Bench {
            target:
                BenchTarget::Calls {
                    calls,
                    seconds,
                    turns,
                    overhead_calls,
                },
        } => {
            use voice_agent_runtime::bench_calls::{self, Server};
            // The runtime under test is this binary again (`bench
            // calls-server`), so its CPU and memory are measured alone.
            let server = match std::env::current_exe() {
                Ok(program) => Server::Process {
                    program,
                    args: vec!["bench".into(), "calls-server".into()],
                    pin_cpus: true,
                },
                Err(_) => Server::InProcess,
            };
            let options = bench_calls::Options {
                calls,
                seconds,
                overhead_turns: turns,
                overhead_calls,
                server,
                ..bench_calls::Options::default()
            };
            match bench_calls::run(&options) {
                Ok(r) => {
                    print!("{r}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("voice-agent: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Bench {
            target:
                BenchTarget::CallsServer {
                    agent_url,
                    tts_url,
                    capacity,
                },
        } => {
            // Warnings only: per-call info lines would flood the bench.
            init_logging_at("warn");
            let options = voice_agent_runtime::bench_calls::ServerOptions {
                agent_url,
                tts_url,
                capacity,
            };
            report(
                voice_agent_runtime::bench_calls::run_server_process(&options, shutdown_signal())
                    .map_err(anyhow::Error::from),
            )
        }
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
            report(run(async move {
                let report = voice_agent_tts::bench::run(options).await?;
                print!("{report}");
                Ok(())
            }))
        }
        Command::Bench {
            target:
                BenchTarget::Gateway {
                    connections,
                    requests,
                    seconds,
                    warmup,
                    verifies,
                    log,
                },
        } => {
            use voice_agent_gateway::bench::{Load, Options};
            let load = match (seconds, requests) {
                (Some(s), _) if s.is_finite() && s > 0.0 => {
                    Load::For(std::time::Duration::from_secs_f64(s))
                }
                (Some(s), _) => {
                    eprintln!("voice-agent: --seconds must be positive, not {s}");
                    return ExitCode::FAILURE;
                }
                (None, n) => n.map_or(Options::default().load, Load::Requests),
            };
            let options = Options {
                connections,
                load,
                warmup,
                verifies,
                log,
            };
            report(run(async move {
                let report = voice_agent_gateway::bench::run(options).await?;
                print!("{report}");
                Ok(())
            }))
        }
        Command::Bench {
            target: BenchTarget::GatewayMedia { calls, seconds },
        } => {
            use voice_agent_gateway::bench_media::{self, Gateway};
            // The gateway under test is this binary again (`bench
            // gateway-media-server`), so its CPU and memory are measured alone.
            let gateway = match std::env::current_exe() {
                Ok(program) => Gateway::Process {
                    program,
                    args: vec!["bench".into(), "gateway-media-server".into()],
                    pin_cpus: true,
                },
                Err(_) => Gateway::InProcess,
            };
            let options = bench_media::Options {
                calls,
                seconds,
                gateway,
            };
            report(
                bench_media::run(&options)
                    .map(|r| print!("{r}"))
                    .map_err(anyhow::Error::from),
            )
        }
        Command::Bench {
            target: BenchTarget::GatewayMediaServer { runtime },
        } => {
            // Warnings only: per-call info lines would flood the bench.
            init_logging_at("warn");
            report(
                voice_agent_gateway::bench_media::run_server_process(runtime, shutdown_signal())
                    .map_err(anyhow::Error::from),
            )
        }
        Command::Agent(args) => report(run(agent(args))),
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
            report(run(async move {
                let report = voice_agent_agent::bench::run(options).await?;
                print!("{report}");
                Ok(())
            }))
        }
    }
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
fn run<T>(task: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
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
    init_logging_at("info");
}

/// Logging to stderr at `default_level` unless `RUST_LOG` says otherwise;
/// JSON lines with `VOICE_AGENT_LOG_FORMAT=json`.
fn init_logging_at(default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
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
    // HTTPS for the aggregation layer (external.metrics.k8s.io), if asked.
    if let Some(tls_listen) = config.tls_listen {
        let names = vec!["localhost".to_string(), "voice-agent-metrics".to_string()];
        let tls = voice_agent_metrics::tls::server_config(
            config.tls_cert_file.as_deref(),
            config.tls_key_file.as_deref(),
            &names,
        )?;
        let tls_listener = tokio::net::TcpListener::bind(tls_listen)
            .await
            .with_context(|| format!("listening on {tls_listen}"))?;
        tracing::info!(
            component = "metrics",
            addr = %tls_listen,
            self_signed = config.tls_cert_file.is_none(),
            "listening (HTTPS)"
        );
        tokio::spawn(voice_agent_metrics::tls::serve(
            tls_listener,
            voice_agent_metrics::router(Arc::clone(&state)),
            tls,
            shutdown_signal(),
        ));
    }
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

async fn gateway(args: ListenArgs) -> anyhow::Result<()> {
    let mut config = voice_agent_gateway::Config::from_env()?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    tracing::info!(
        component = "gateway",
        addr = %config.listen,
        transport = ?config.transport(),
        "listening"
    );
    voice_agent_gateway::run(config, shutdown_signal()).await?;
    tracing::info!(component = "gateway", "stopped");
    Ok(())
}

/// Reads the rendered component config named by `VOICE_AGENT_CONFIG`.
fn component_config() -> anyhow::Result<voice_agent_api::deploy::ComponentConfig> {
    Ok(voice_agent_api::deploy::ComponentConfig::load(|k| {
        std::env::var(k).ok()
    })?)
}

async fn runtime(args: ListenArgs) -> anyhow::Result<()> {
    let component = component_config()?;
    let mut config = voice_agent_runtime::Config::from_component_config(&component, |k| {
        std::env::var(k).ok().filter(|v| !v.is_empty())
    })?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let stt = dev::stt_provider(&component, &config)?;
    let listen = config.listen;
    // Call objects in a cluster (Active, summary, Ended); nothing otherwise.
    let calls = voice_agent_runtime::calls_kube::kube_calls_from_env().await;
    let sink: Arc<dyn voice_agent_runtime::calls::CallSink> = match &calls {
        Some(c) => c.clone(),
        None => Arc::new(voice_agent_runtime::calls::NoCalls),
    };
    let state = Arc::new(voice_agent_runtime::State::new(config, stt)?.with_calls(sink));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    tracing::info!(
        component = "runtime",
        addr = %listener.local_addr()?,
        stt = state.stt.name(),
        capacity = state.config.capacity,
        pod = %state.config.pod,
        "listening"
    );
    voice_agent_runtime::serve(listener, state, shutdown_signal()).await?;
    // The drain is over: let the last Call writes (Ended) go out.
    if let Some(calls) = &calls {
        calls.flush(std::time::Duration::from_secs(5)).await;
    }
    tracing::info!(component = "runtime", "stopped");
    Ok(())
}

async fn dev_command(args: DevArgs) -> anyhow::Result<()> {
    let options = dev::DevOptions {
        manifest: args.manifest,
        listen: SocketAddr::new(args.bind, args.port),
        knowledge_dir: args.knowledge,
        env_file: args.env_file,
        public_url: args.public_url,
    };
    let stack = dev::start(options, shutdown_signal()).await?;
    print_banner(&stack);
    stack.wait().await
}

fn print_banner(stack: &dev::DevStack) {
    let storage = if stack.postgres {
        "Postgres (DATABASE_URL)"
    } else {
        "in memory (not durable; set DATABASE_URL for Postgres)"
    };
    eprintln!();
    eprintln!(
        "  voice-agent dev · {} ready on {}",
        stack.voice_agent, stack.base_url
    );
    eprintln!("    Twilio webhook   {}/twilio/voice", stack.public_url);
    eprintln!(
        "    media stream     {}/twilio/media",
        stack.public_url.replacen("http", "ws", 1)
    );
    eprintln!(
        "    metrics          {}/metrics   signals {}/v1/signals",
        stack.base_url, stack.base_url
    );
    eprintln!(
        "    knowledge        {} documents · history {storage}",
        stack.documents
    );
    eprintln!(
        "    speech           stt {} · tts espeak-ng · llm local",
        stack.stt
    );
    if stack.dev_token {
        eprintln!(
            "    twilio token     development default (set TWILIO_AUTH_TOKEN for real calls)"
        );
    }
    eprintln!();
    eprintln!(
        "  try: voice-agent call --url {} --say \"What time do you open on Saturday?\" --say \"Thanks, goodbye\"",
        stack.base_url
    );
    eprintln!();
}

/// The script of `voice-agent call`: --say and --dtmf in command-line order.
fn call_steps(args: &CallArgs, matches: Option<&clap::ArgMatches>) -> Vec<caller::Step> {
    let mut steps: Vec<(usize, caller::Step)> = Vec::new();
    let indices = |id: &str| -> Vec<usize> {
        matches
            .and_then(|m| m.indices_of(id))
            .map(|i| i.collect())
            .unwrap_or_default()
    };
    let say_at = indices("say");
    let dtmf_at = indices("dtmf");
    for (i, line) in args.say.iter().enumerate() {
        steps.push((
            say_at.get(i).copied().unwrap_or(i),
            caller::Step::Say(line.clone()),
        ));
    }
    for (i, keys) in args.dtmf.iter().enumerate() {
        steps.push((
            dtmf_at.get(i).copied().unwrap_or(usize::MAX - 1000 + i),
            caller::Step::Dtmf(keys.clone()),
        ));
    }
    steps.sort_by_key(|(i, _)| *i);
    steps.into_iter().map(|(_, s)| s).collect()
}

async fn call_command(args: CallArgs, steps: Vec<caller::Step>) -> anyhow::Result<()> {
    if steps.is_empty() {
        anyhow::bail!("nothing to say: pass --say \"...\" (and/or --dtmf KEYS)");
    }
    let secrets = dev::Secrets::load(args.env_file.as_deref())?;
    let (token, _) = secrets.twilio_auth_token();
    let mut options = caller::CallOptions::new(&args.url, token.expose(), steps);
    options.public_url = args.public_url;
    options.from = args.from;
    options.to = args.to;
    options.interrupt_after_ms = args.interrupt_after_ms;
    options.voice = args.voice;
    let json = args.json;
    let report = caller::place_call(&options, |p| {
        if !json {
            print_progress(&p);
        }
    })
    .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_conversation(&report);
        print!("{}", caller::render_table(&report));
    }
    Ok(())
}

fn print_progress(p: &caller::Progress) {
    use caller::Progress;
    match p {
        Progress::Answered { session_id } => eprintln!("☎  answered · session {session_id}"),
        Progress::AgentTalking => eprint!("   agent ◂ speaking"),
        Progress::AgentDone { seconds } => eprintln!(" ({seconds:.1} s of audio)"),
        Progress::CallerSays(line) => eprintln!("   caller ▸ {line}"),
        Progress::CallerKeys(keys) => eprintln!("   caller ▸ (presses {keys})"),
        Progress::Cleared => eprint!(" ✂ interrupted"),
        Progress::HungUp => eprintln!(" · the agent hung up"),
    }
}

fn print_conversation(report: &caller::CallReport) {
    println!();
    if !report.greeting.is_empty() {
        println!("agent:  {}", report.greeting);
        if !report.greeting_heard.is_empty() {
            println!("        (heard: {})", report.greeting_heard);
        }
    }
    for t in &report.turns {
        println!("caller: {}", t.caller);
        if t.recognized != t.caller {
            println!("        (heard as: {})", t.recognized);
        }
        let marker = if t.interrupted { " ✂" } else { "" };
        println!("agent:  {}{marker}", t.agent);
        if !t.agent_heard.is_empty() {
            println!("        (heard: {})", t.agent_heard);
        }
        for c in &t.citations {
            println!(
                "        [{}] {} (score {:.2})",
                c.document_id, c.title, c.score
            );
        }
    }
}

/// The demo's questions and the document each answer must cite.
const DEMO_SCRIPT: [(&str, &str); 3] = [
    ("What time do you open on Saturday?", "hours"),
    ("How much does a basic tune up cost?", "prices"),
    ("Do you rent electric bikes?", "rentals"),
];

/// Whether every demo answer cites its document.
async fn run_demo(args: DemoArgs) -> anyhow::Result<bool> {
    let options = dev::DevOptions {
        manifest: args.manifest,
        listen: SocketAddr::from(([127, 0, 0, 1], args.port)),
        knowledge_dir: None,
        env_file: None,
        public_url: None,
    };
    let stack = dev::start(options, std::future::pending()).await?;
    print_banner(&stack);
    let secrets = dev::Secrets::load(None)?;
    let (token, _) = secrets.twilio_auth_token();
    let mut steps: Vec<caller::Step> = DEMO_SCRIPT
        .iter()
        .map(|(q, _)| caller::Step::Say(q.to_string()))
        .collect();
    steps.push(caller::Step::Say("Thanks, goodbye".into()));
    let options = caller::CallOptions::new(&stack.base_url, token.expose(), steps);
    let report = caller::place_call(&options, |p| print_progress(&p)).await;
    let stopped = stack.stop().await;
    let report = report?;
    stopped?;
    print_conversation(&report);
    print!("{}", caller::render_table(&report));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    let mut ok = true;
    for (i, (question, doc)) in DEMO_SCRIPT.iter().enumerate() {
        let cited = report
            .turns
            .get(i)
            .is_some_and(|t| t.citations.iter().any(|c| c.document_id == *doc));
        if !cited {
            ok = false;
            eprintln!("✗ {question:?}: the answer does not cite {doc}");
        }
    }
    if ok {
        eprintln!("✓ every answer cited the right document");
    }
    Ok(ok)
}

fn demo_exit(result: anyhow::Result<bool>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("voice-agent demo: {err:#}");
            ExitCode::FAILURE
        }
    }
}
