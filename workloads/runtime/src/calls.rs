//! Where the voice loop reports a call's lifecycle: the `Call` custom
//! resource in a cluster (Connecting/Active → Ended/Failed with a summary),
//! nothing on one machine.
//!
//! The hooks are plain functions called from the voice loop: an
//! implementation must return at once (spawn its writes) and bound its write
//! rate (DESIGN.md §3: create + at most three status patches per call).

use std::fmt;

use crate::sessions::Session;

/// Receives a call's lifecycle events.
pub trait CallSink: Send + Sync + fmt::Debug {
    /// The media connected and the agent answered (`Active`, `answeredAt`,
    /// `runtimePod`).
    fn answered(&self, session: &Session);
    /// A turn completed; an implementation may publish a periodic summary
    /// (no more than once a minute).
    fn progressed(&self, session: &Session);
    /// The call ended (`Ended`/`Failed`, `endedAt`, duration, turns,
    /// interruptions, latency, `endReason`).
    fn ended(&self, session: &Session);
}

/// No Call objects (no cluster): the session API and the logs are the record.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCalls;

impl CallSink for NoCalls {
    fn answered(&self, _: &Session) {}
    fn progressed(&self, _: &Session) {}
    fn ended(&self, _: &Session) {}
}
