//! The `voice-agent` command: one binary for every Voice Agent component.
//!
//! `voice-agent <component>` runs one component (the operator starts pods
//! this way), `voice-agent dev` runs all of them in one process and
//! `voice-agent call` places a simulated phone call (DESIGN.md §2, §6).
//! Components that are not part of this build say so and exit with status 2
//! rather than pretending to run.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
    Agent,
    /// Speech synthesis.
    Tts,
    /// The cluster's latency and load aggregation.
    Metrics,
    /// List the components and whether this build can run them.
    Components,
}

/// Whether this build contains a runnable server for the component.
fn available(_component: Component) -> bool {
    false
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
        Command::Gateway => voice_agent_gateway::COMPONENT,
        Command::Runtime => voice_agent_runtime::COMPONENT,
        Command::Agent => voice_agent_agent::COMPONENT,
        Command::Tts => voice_agent_tts::COMPONENT,
        Command::Metrics => voice_agent_metrics::COMPONENT,
    };
    eprintln!(
        "voice-agent {}: this component is not part of this build yet; \
         see `voice-agent components`",
        component.as_str()
    );
    ExitCode::from(2)
}
