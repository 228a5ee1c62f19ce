//! The cluster's metrics service: the autoscaler's source of truth.
//!
//! Runtimes and workers post latency and load samples (`POST /v1/samples`);
//! the service keeps sliding-window quantiles (6 s and 60 s) and per-pod gauges
//! per VoiceAgent and component, answers the operator's `GET /v1/signals`, and
//! exposes Prometheus histograms on `/metrics` (DESIGN.md §5 "metrics").
//!
//! This crate is a library; `voice-agent metrics` runs it. The HTTP API is not
//! part of this build yet.

use voice_agent_proto::Component;

/// The component this crate implements, as it appears in labels and metrics.
pub const COMPONENT: Component = Component::Metrics;
