//! The `voiceagent.io/v1alpha1` API of the Voice Agent Operator.
//!
//! Three namespaced kinds, all in the `voice` category (`kubectl get voice`):
//!
//! - [`VoiceAgent`] (`va`): one phone voice agent and how it runs;
//! - [`PhoneNumber`] (`pn`): binds an E.164 number to a VoiceAgent;
//! - [`Call`] (`vc`): one phone call, live or recent.
//!
//! The CRDs are generated from these types ([`crds`]); `crds/` in the
//! repository holds their checked-in output. [`validation`] checks objects
//! against the generated schemas and CEL rules without an API server, and
//! [`conditions`] implements the `metav1.Condition` conventions. The operator
//! and every workload use this crate, so wire and API types cannot drift.

pub mod call;
pub mod common;
pub mod conditions;
pub mod deploy;
pub mod docs;
pub mod phonenumber;
pub mod validation;
pub mod voiceagent;

pub use call::{Call, CallEndReason, CallPhase, CallSpec, CallStatus};
pub use common::{LatencySummary, LocalObjectRef, SecretKeyRef, is_e164, mask_phone_number};
pub use phonenumber::{PhoneNumber, PhoneNumberSpec, PhoneNumberStatus};
pub use voiceagent::{VoiceAgent, VoiceAgentPhase, VoiceAgentSpec, VoiceAgentStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group.
pub const GROUP: &str = "voiceagent.io";
/// The API version.
pub const VERSION: &str = "v1alpha1";

/// The CRDs of the three kinds, in a stable order: VoiceAgent, PhoneNumber, Call.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![VoiceAgent::crd(), PhoneNumber::crd(), Call::crd()]
}

/// The file name of a CRD under `crds/`: its plural (`voiceagents.yaml`).
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.spec.names.plural)
}

/// A CRD as YAML, the way `crds/` stores it.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml_ng::Error> {
    serde_yaml_ng::to_string(crd)
}

/// All CRDs as one multi-document YAML stream.
pub fn crds_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&crd_yaml(&crd)?);
    }
    Ok(out)
}
