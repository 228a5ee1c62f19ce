//! The Voice Agent Operator.
//!
//! It reconciles each `VoiceAgent` into gateway, runtime, agent and TTS
//! workloads, provisions `PhoneNumber`s at the vendors, garbage-collects ended
//! `Call`s and autoscales the components (DESIGN.md §4).
//!
//! The reconcile pipeline follows DESIGN.md §4: dereference → validate →
//! build ([`render`], pure) → apply → status ([`controller`]). [`leader`]
//! gates writes behind a Lease, [`run`] wires it all together, and the
//! command-line tools that need no cluster live beside it: CRD generation
//! ([`crdgen`]), offline validation ([`validate`]) and rendering.

pub mod autoscale;
pub mod controller;
pub mod crdgen;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod provision;
pub mod rbac;
pub mod render;
pub mod run;
pub mod validate;
