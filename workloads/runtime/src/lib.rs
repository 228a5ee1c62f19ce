//! The runtime component of a VoiceAgent: the live voice loop of each call.
//!
//! A runtime pod holds call sessions (`/api/sessions`), receives the caller's
//! audio over Twilio Media Streams (or a LiveKit room), runs voice activity
//! detection and streaming speech-to-text, decides when the caller's turn has
//! ended, asks the agent service for a reply, streams it sentence by sentence
//! through the TTS service, paces the audio back to the caller, and stops at
//! once when the caller barges in. It drains instead of dropping calls
//! (DESIGN.md §4 "Drain", §5 "runtime").
//!
//! This crate is a library; `voice-agent runtime` runs it.

use voice_agent_proto::Component;

pub mod stt;
pub mod vad;

/// The component this crate implements, as it appears in labels and metrics.
pub const COMPONENT: Component = Component::Runtime;
