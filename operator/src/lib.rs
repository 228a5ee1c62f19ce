//! The Voice Agent Operator.
//!
//! It reconciles each `VoiceAgent` into gateway, runtime, agent and TTS
//! workloads, provisions `PhoneNumber`s at the vendors, garbage-collects ended
//! `Call`s and autoscales the components (DESIGN.md §4).
//!
//! This build provides the command-line tools that need no cluster: CRD
//! generation ([`crdgen`]) and offline validation of manifests
//! ([`validate`]). The controllers are not part of this build yet.

pub mod crdgen;
pub mod render;
pub mod validate;
