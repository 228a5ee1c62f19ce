//! The gateway component of a VoiceAgent.
//!
//! It is the public edge of a phone call: it validates Twilio's signed webhooks
//! (`POST /twilio/voice`, `POST /twilio/status`) and LiveKit's webhook JWTs,
//! creates the `Call` custom resource, opens a session on a runtime pod and
//! answers TwiML, and proxies Twilio Media Streams WebSockets to the runtime pod
//! that holds the session (DESIGN.md §5 "gateway").
//!
//! This crate is a library; `voice-agent gateway` runs it. The HTTP router and
//! its handlers are not part of this build yet.

use voice_agent_proto::Component;

/// The component this crate implements, as it appears in labels and metrics.
pub const COMPONENT: Component = Component::Gateway;
