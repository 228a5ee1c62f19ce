//! The agent component of a VoiceAgent: what to say next.
//!
//! `POST /v1/respond` takes the caller's utterance and the conversation
//! history, retrieves the most relevant knowledge chunks (Qdrant or an
//! embedded index), asks the LLM (an OpenAI-compatible endpoint or the built-in
//! retrieval-grounded responder) and answers with the reply, its citations and
//! a latency breakdown, as JSON or as a server-sent event stream. It also
//! ingests knowledge documents and keeps history in Postgres (DESIGN.md §5
//! "agent").
//!
//! This crate is a library; `voice-agent agent` runs it. The HTTP API is not
//! part of this build yet.

use voice_agent_proto::Component;

/// The component this crate implements, as it appears in labels and metrics.
pub const COMPONENT: Component = Component::Agent;
