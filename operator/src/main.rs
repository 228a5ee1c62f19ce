//! The `voice-agent-operator` command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// The Voice Agent Operator.
#[derive(Parser)]
#[command(name = "voice-agent-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator (the container's default command).
    Run {
        /// Namespaces to watch, comma-separated; all when unset.
        #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',')]
        namespaces: Vec<String>,
        /// Default component image.
        #[arg(long, env = "VOICE_AGENT_IMAGE")]
        image: Option<String>,
        /// Base URL of the cluster's metrics service.
        #[arg(long, env = "VOICE_AGENT_METRICS_URL")]
        metrics_url: Option<String>,
        /// Milliseconds between autoscaler ticks (the autoscaler runs on the
        /// leader only when a metrics URL is set).
        #[arg(
            long = "autoscale-interval",
            env = "VOICE_AGENT_AUTOSCALE_INTERVAL_MS",
            value_name = "MS",
            default_value_t = 2000,
            value_parser = clap::value_parser!(u64).range(100..)
        )]
        autoscale_interval_ms: u64,
        /// Address of /metrics, /healthz and /readyz.
        #[arg(
            long,
            env = "VOICE_AGENT_OPERATOR_LISTEN",
            default_value = "0.0.0.0:8080"
        )]
        listen: std::net::SocketAddr,
        /// Run without leader election (only ever one replica).
        #[arg(long)]
        no_leader_election: bool,
        /// Namespace of the leader Lease (the operator's own).
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        lease_namespace: String,
        /// This replica's identity in the Lease.
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Log filter (`info`, `voice_agent_operator=debug,kube=info`, ...).
        #[arg(long, env = "RUST_LOG", default_value = "info")]
        log_level: String,
        /// Log format.
        #[arg(long, env = "LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
        log_format: String,
    },
    /// Print the CustomResourceDefinitions as YAML (pipe to `kubectl apply -f -`),
    /// or write `crds/*.yaml` and `docs/api.md` with `--write`.
    Crd {
        /// Write the generated files below this repository root instead of printing.
        #[arg(long, value_name = "ROOT")]
        write: Option<PathBuf>,
        /// Exit non-zero if the files below this root differ from the generated ones.
        #[arg(long, value_name = "ROOT", conflicts_with = "write")]
        check: Option<PathBuf>,
        /// Print the Markdown API reference instead of the YAML.
        #[arg(long, conflicts_with_all = ["write", "check"])]
        docs: bool,
    },
    /// Print, as YAML, exactly the objects the operator applies for a VoiceAgent
    /// (no cluster needed): for review, GitOps diffs and tests.
    Render {
        /// The VoiceAgent manifest.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// PhoneNumber manifests whose numbers are bound to the agent.
        #[arg(long = "phone-numbers")]
        phone_numbers: Option<PathBuf>,
        /// Namespace, when the manifest does not set one.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Default component image (the chart sets the operator's own).
        #[arg(long, env = "VOICE_AGENT_IMAGE")]
        image: Option<String>,
        /// Base URL of the cluster's metrics service.
        #[arg(long, env = "VOICE_AGENT_METRICS_URL")]
        metrics_url: Option<String>,
    },
    /// Replay a signal trace (CSV: time_s,component,signal,value) through the
    /// autoscaler's decision and print the replicas over time, for capacity
    /// planning.
    Simulate {
        /// The VoiceAgent manifest (its targets, bounds and behavior apply).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// The signal trace.
        #[arg(long)]
        signals: PathBuf,
        /// Print every tick as CSV instead of the changes.
        #[arg(long)]
        csv: bool,
        /// Seconds between ticks (the operator ticks every 2 s).
        #[arg(long, default_value_t = 2.0)]
        tick_seconds: f64,
        /// Simulated seconds to run; by default until the last sample plus the
        /// scale-down window plus a minute.
        #[arg(long)]
        until_seconds: Option<f64>,
    },
    /// Check VoiceAgent, PhoneNumber and Call manifests against the CRD schemas
    /// and CEL rules, without a cluster.
    Validate {
        /// Manifest files (multi-document YAML); `-` reads standard input.
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
    },
}

fn init_logging(filter: &str, format: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).context("invalid log filter")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run {
            namespaces,
            image,
            metrics_url,
            autoscale_interval_ms,
            listen,
            no_leader_election,
            lease_namespace,
            identity,
            log_level,
            log_format,
        } => {
            init_logging(&log_level, &log_format)?;
            let mut settings = voice_agent_operator::render::OperatorSettings::default();
            if let Some(image) = image {
                settings.image = image;
            }
            settings.metrics_url = metrics_url;
            let identity = identity.unwrap_or_else(|| {
                std::env::var("HOSTNAME")
                    .unwrap_or_else(|_| format!("voice-agent-operator-{}", std::process::id()))
            });
            let lease = (!no_leader_election).then(|| {
                voice_agent_operator::leader::LeaseSettings::new(&lease_namespace, &identity)
            });
            let config = voice_agent_operator::run::RunConfig {
                namespaces: namespaces.into_iter().filter(|n| !n.is_empty()).collect(),
                settings,
                listen,
                lease,
                autoscale_interval: std::time::Duration::from_millis(autoscale_interval_ms),
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let client = kube::Client::try_default()
                    .await
                    .context("connecting to Kubernetes (in-cluster config or KUBECONFIG)")?;
                voice_agent_operator::run::run(client, config, &identity).await?;
                anyhow::Ok(())
            })?;
        }
        Command::Crd {
            write: Some(root), ..
        } => {
            for path in voice_agent_operator::crdgen::write_all(&root)? {
                println!("wrote {path}");
            }
        }
        Command::Crd {
            check: Some(root), ..
        } => {
            let drifted = voice_agent_operator::crdgen::drifted(&root)?;
            if !drifted.is_empty() {
                eprintln!(
                    "out of date: {}\nregenerate with: cargo run -p voice-agent-operator -- crd --write .",
                    drifted.join(", ")
                );
                return Ok(ExitCode::FAILURE);
            }
            println!("crds/ and docs/api.md are up to date");
        }
        Command::Crd { docs: true, .. } => {
            print!(
                "{}",
                voice_agent_api::docs::markdown(&voice_agent_api::crds())
            );
        }
        Command::Crd { .. } => print!("{}", voice_agent_api::crds_yaml()?),
        Command::Render {
            file,
            phone_numbers,
            namespace,
            image,
            metrics_url,
        } => {
            let mut settings = voice_agent_operator::render::OperatorSettings::default();
            if let Some(image) = image {
                settings.image = image;
            }
            settings.metrics_url = metrics_url;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let numbers = match phone_numbers {
                Some(p) => std::fs::read_to_string(&p)
                    .with_context(|| format!("reading {}", p.display()))?,
                None => String::new(),
            };
            let yaml = voice_agent_operator::render::render_manifests(
                &text, &numbers, &namespace, settings,
            )?;
            print!("{yaml}");
        }
        Command::Simulate {
            file,
            signals,
            csv,
            tick_seconds,
            until_seconds,
        } => {
            let manifest = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let va = voice_agent_operator::validate::load_voice_agent(&manifest)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let trace = std::fs::read_to_string(&signals)
                .with_context(|| format!("reading {}", signals.display()))?;
            if !(tick_seconds.is_finite() && tick_seconds >= 0.1) {
                anyhow::bail!("--tick-seconds must be at least 0.1");
            }
            let options = voice_agent_operator::autoscale::simulate::Options {
                tick_ms: (tick_seconds * 1000.0) as i64,
                until_ms: until_seconds.map(|s| (s.max(0.0) * 1000.0) as i64),
            };
            let sim = voice_agent_operator::autoscale::simulate::simulate(&va, &trace, &options)
                .with_context(|| format!("{}", signals.display()))?;
            print!("{}", if csv { sim.to_csv() } else { sim.to_text() });
        }
        Command::Validate { files } => {
            let mut failed = false;
            for file in files {
                let (name, text) = if file.as_os_str() == "-" {
                    (
                        "<stdin>".to_string(),
                        std::io::read_to_string(std::io::stdin())?,
                    )
                } else {
                    let text = std::fs::read_to_string(&file)
                        .with_context(|| format!("reading {}", file.display()))?;
                    (file.display().to_string(), text)
                };
                let report = voice_agent_operator::validate::validate_manifests(&text);
                for line in report.lines(&name) {
                    println!("{line}");
                }
                failed |= !report.ok();
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
