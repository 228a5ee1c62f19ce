//! The text-to-speech component of a VoiceAgent.
//!
//! `POST /v1/synthesize` turns one sentence of the agent's reply into audio
//! (PCM16 or mu-law at the requested rate), streamed as it is produced, from
//! espeak-ng locally or a vendor over HTTP, with an LRU cache so that greetings
//! and other repeated phrases start instantly (DESIGN.md §5 "tts").
//!
//! This crate is a library; `voice-agent tts` runs it. The HTTP API is not part
//! of this build yet.

use voice_agent_proto::Component;

/// The component this crate implements, as it appears in labels and metrics.
pub const COMPONENT: Component = Component::Tts;
