//! Recording calls as `Call` custom resources.
//!
//! The gateway creates the Call when Twilio rings (spec only: a create
//! cannot set status), then writes one status patch once the runtime
//! session is settled: `Ringing` with `startedAt`, or `Failed` with its end
//! reason. That patch carries the created object's `resourceVersion` as a
//! precondition, so it can never overwrite a newer status the runtime has
//! written meanwhile. All of it runs in the background: the TwiML answer
//! never waits on the Kubernetes API.
//!
//! [`CallRecorder`] has two implementations: [`KubeCallRecorder`] (the
//! cluster's API, in the pod's namespace) and [`NoCluster`] (no cluster
//! configured; says so once in the log).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use thiserror::Error;
use tokio::sync::oneshot;
use voice_agent_api::call::CallDirection;
use voice_agent_api::{
    Call, CallEndReason, CallPhase, CallSpec, LocalObjectRef, mask_phone_number,
};

use crate::exporter::Exporter;

/// The field manager of the gateway's writes.
pub const FIELD_MANAGER: &str = "voice-agent-gateway";
/// The label naming a Call's VoiceAgent.
pub const VOICE_AGENT_LABEL: &str = "voiceagent.io/voice-agent";

/// The name of the Call object of `call_sid`: the SID in lower case (Twilio
/// SIDs are `CA` + 32 hex digits, so the name is a valid DNS subdomain).
/// `None` for SIDs that are not 2-63 ASCII letters and digits.
pub fn object_name(call_sid: &str) -> Option<String> {
    ((2..=63).contains(&call_sid.len()) && call_sid.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| call_sid.to_ascii_lowercase())
}

/// A call to record; numbers are masked on construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCall {
    /// Twilio's CallSid.
    pub call_sid: String,
    /// The VoiceAgent that answers.
    pub voice_agent: String,
    /// The caller, masked.
    pub from: String,
    /// The called number, masked.
    pub to: String,
    /// When the webhook arrived.
    pub started_at: jiff::Timestamp,
}

impl NewCall {
    /// A call from the webhook's fields; `from` and `to` are masked here so
    /// that a full number can never reach the API server.
    pub fn new(call_sid: &str, voice_agent: &str, from: &str, to: &str) -> Self {
        NewCall {
            call_sid: call_sid.to_owned(),
            voice_agent: voice_agent.to_owned(),
            from: mask_phone_number(from),
            to: mask_phone_number(to),
            started_at: jiff::Timestamp::now(),
        }
    }

    /// The Call object (spec and metadata; no status).
    pub fn to_object(&self) -> Option<Call> {
        let name = object_name(&self.call_sid)?;
        let mut call = Call::new(
            &name,
            CallSpec {
                call_sid: self.call_sid.clone(),
                voice_agent_ref: LocalObjectRef {
                    name: self.voice_agent.clone(),
                },
                phone_number_ref: None,
                from: self.from.clone(),
                to: self.to.clone(),
                direction: CallDirection::Inbound,
            },
        );
        call.metadata.labels = Some(BTreeMap::from([(
            VOICE_AGENT_LABEL.to_owned(),
            self.voice_agent.clone(),
        )]));
        Some(call)
    }
}

/// How the gateway's part of a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// A session was opened and the TwiML connects the caller.
    Ringing {
        /// The runtime pod that holds the session.
        runtime_pod: String,
    },
    /// The call could not be connected.
    Failed(CallEndReason),
}

/// What a create did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A new object, at this `resourceVersion`.
    New {
        /// The created object's `resourceVersion`.
        resource_version: String,
    },
    /// It existed already (a replay on another replica, or a retry).
    AlreadyExists,
    /// Nothing is recorded anywhere ([`NoCluster`]).
    NotRecorded,
}

/// A failed Kubernetes write.
#[derive(Debug, Error)]
pub enum RecordError {
    /// The CallSid cannot name an object.
    #[error("CallSid is not usable as an object name")]
    BadCallSid,
    /// The API refused or failed.
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// The write did not finish in time.
    #[error("kubernetes write timed out after {0:?}")]
    Timeout(Duration),
}

/// Where Calls are written.
pub trait CallRecorder: Send + Sync + fmt::Debug {
    /// Creates the Call; an existing one is [`Created::AlreadyExists`].
    fn create<'a>(&'a self, call: &'a NewCall) -> BoxFuture<'a, Result<Created, RecordError>>;

    /// Writes the status of the Call of `call_sid`, only if the object is
    /// still at `resource_version` (unguarded when it is empty).
    fn set_status<'a>(
        &'a self,
        call_sid: &'a str,
        resource_version: &'a str,
        status: serde_json::Value,
    ) -> BoxFuture<'a, Result<(), RecordError>>;
}

/// Calls in a namespace of the cluster.
#[derive(Clone)]
pub struct KubeCallRecorder {
    api: Api<Call>,
    namespace: String,
    timeout: Duration,
}

impl fmt::Debug for KubeCallRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeCallRecorder")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl KubeCallRecorder {
    /// Records Calls in `namespace` through `client`; each write may take
    /// `timeout`.
    pub fn new(client: Client, namespace: &str, timeout: Duration) -> Self {
        KubeCallRecorder {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            timeout,
        }
    }
}

impl CallRecorder for KubeCallRecorder {
    fn create<'a>(&'a self, call: &'a NewCall) -> BoxFuture<'a, Result<Created, RecordError>> {
        Box::pin(async move {
            let object = call.to_object().ok_or(RecordError::BadCallSid)?;
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PostParams::default()
            };
            match tokio::time::timeout(self.timeout, self.api.create(&params, &object)).await {
                Err(_) => Err(RecordError::Timeout(self.timeout)),
                Ok(Ok(created)) => Ok(Created::New {
                    resource_version: created.metadata.resource_version.unwrap_or_default(),
                }),
                Ok(Err(kube::Error::Api(status))) if status.is_already_exists() => {
                    Ok(Created::AlreadyExists)
                }
                Ok(Err(err)) => Err(err.into()),
            }
        })
    }

    fn set_status<'a>(
        &'a self,
        call_sid: &'a str,
        resource_version: &'a str,
        status: serde_json::Value,
    ) -> BoxFuture<'a, Result<(), RecordError>> {
        Box::pin(async move {
            let name = object_name(call_sid).ok_or(RecordError::BadCallSid)?;
            // An empty resource version writes unguarded (fields nobody else
            // writes, such as `startedAt`).
            let patch = if resource_version.is_empty() {
                serde_json::json!({ "status": status })
            } else {
                serde_json::json!({
                    "metadata": {"resourceVersion": resource_version},
                    "status": status,
                })
            };
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            };
            tokio::time::timeout(
                self.timeout,
                self.api.patch_status(&name, &params, &Patch::Merge(&patch)),
            )
            .await
            .map_err(|_| RecordError::Timeout(self.timeout))??;
            Ok(())
        })
    }
}

/// No cluster: nothing is recorded; the first call says so in the log.
#[derive(Debug, Default)]
pub struct NoCluster {
    logged: AtomicBool,
}

impl CallRecorder for NoCluster {
    fn create<'a>(&'a self, _call: &'a NewCall) -> BoxFuture<'a, Result<Created, RecordError>> {
        if !self.logged.swap(true, Ordering::Relaxed) {
            tracing::info!("no Kubernetes cluster configured; Calls are not recorded");
        }
        Box::pin(async { Ok(Created::NotRecorded) })
    }

    fn set_status<'a>(
        &'a self,
        _call_sid: &'a str,
        _resource_version: &'a str,
        _status: serde_json::Value,
    ) -> BoxFuture<'a, Result<(), RecordError>> {
        Box::pin(async { Ok(()) })
    }
}

/// The recorder for `mode`: the cluster found by `kube::Config::infer()`
/// (in-cluster service account, or a kubeconfig), else [`NoCluster`].
pub async fn recorder(
    mode: crate::config::CallRecording,
    namespace: &str,
    timeout: Duration,
) -> Arc<dyn CallRecorder> {
    if mode == crate::config::CallRecording::Off {
        return Arc::new(NoCluster::default());
    }
    let client = match kube::Config::infer().await {
        Ok(config) => Client::try_from(config).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match client {
        Ok(client) => {
            tracing::info!(namespace, "recording Calls in the cluster");
            Arc::new(KubeCallRecorder::new(client, namespace, timeout))
        }
        Err(error) => {
            tracing::debug!(%error, "no Kubernetes client");
            Arc::new(NoCluster::default())
        }
    }
}

/// The status patch of `outcome` for a call that started at `started_at`.
pub fn status_patch(outcome: CallOutcome, started_at: jiff::Timestamp) -> serde_json::Value {
    let time = |t: jiff::Timestamp| serde_json::to_value(Time(t)).unwrap_or_default();
    match outcome {
        CallOutcome::Ringing { runtime_pod } => serde_json::json!({
            "phase": CallPhase::Ringing,
            "startedAt": time(started_at),
            "runtimePod": runtime_pod,
        }),
        CallOutcome::Failed(reason) => serde_json::json!({
            "phase": CallPhase::Failed,
            "startedAt": time(started_at),
            "endedAt": time(jiff::Timestamp::now()),
            "endReason": reason,
        }),
    }
}

/// Records `call`: creates it at once, then writes the status for the
/// outcome that arrives on `outcome` (nothing if the sender is dropped).
/// Runs in the background; failures are logged and counted, never retried
/// beyond the client's own retries (the Call is a record, not the call).
pub async fn record(
    recorder: Arc<dyn CallRecorder>,
    exporter: Arc<Exporter>,
    call: NewCall,
    outcome: oneshot::Receiver<CallOutcome>,
) {
    let created = recorder.create(&call).await;
    let resource_version = match created {
        Ok(Created::New { resource_version }) => {
            exporter.call_recorded("created");
            resource_version
        }
        Ok(Created::AlreadyExists) => {
            // Another replica (or an earlier attempt) owns this Call's
            // status; writing ours could regress it.
            exporter.call_recorded("exists");
            tracing::debug!(call_sid = %call.call_sid, "Call exists already");
            return;
        }
        Ok(Created::NotRecorded) => return,
        Err(error) => {
            exporter.call_recorded("error");
            tracing::warn!(call_sid = %call.call_sid, %error, "creating the Call failed");
            return;
        }
    };
    let Ok(outcome) = outcome.await else {
        return;
    };
    let patch = status_patch(outcome, call.started_at);
    match recorder
        .set_status(&call.call_sid, &resource_version, patch)
        .await
    {
        Ok(()) => {}
        Err(RecordError::Kube(kube::Error::Api(status))) if status.is_conflict() => {
            // The runtime got there first (Active, or even Ended): keep its
            // phase, but the ring time is only known here.
            tracing::debug!(call_sid = %call.call_sid, "Call status moved on; writing startedAt only");
            let started = serde_json::json!({
                "startedAt": serde_json::to_value(Time(call.started_at)).unwrap_or_default(),
            });
            if let Err(error) = recorder.set_status(&call.call_sid, "", started).await {
                tracing::warn!(call_sid = %call.call_sid, %error, "writing the Call's startedAt failed");
            }
        }
        Err(error) => {
            tracing::warn!(call_sid = %call.call_sid, %error, "writing the Call status failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names() {
        assert_eq!(
            object_name("CA0123456789abcdef0123456789ABCDEF").as_deref(),
            Some("ca0123456789abcdef0123456789abcdef")
        );
        for bad in ["", "C", "CA_1", "CA-1", "CA 1", &"C".repeat(64)] {
            assert!(object_name(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn numbers_are_masked_in_the_object() {
        let call = NewCall::new("CA1", "support", "+15551230142", "+15559870000");
        let object = call.to_object().expect("object");
        assert_eq!(object.spec.from, "+1555•••0142");
        assert_eq!(object.spec.to, "+1555•••0000");
        assert_eq!(object.metadata.name.as_deref(), Some("ca1"));
        let json = serde_json::to_string(&object).expect("json");
        assert!(!json.contains("5551230142"), "{json}");
        assert!(object.status.is_none());
    }

    #[test]
    fn status_patches() {
        let t = jiff::Timestamp::from_second(1_700_000_000).expect("ts");
        let ringing = status_patch(
            CallOutcome::Ringing {
                runtime_pod: "rt-0".to_owned(),
            },
            t,
        );
        assert_eq!(ringing["phase"], "Ringing");
        assert_eq!(ringing["runtimePod"], "rt-0");
        assert_eq!(ringing["startedAt"], "2023-11-14T22:13:20Z");
        let failed = status_patch(CallOutcome::Failed(CallEndReason::NoCapacity), t);
        assert_eq!(failed["phase"], "Failed");
        assert_eq!(failed["endReason"], "noCapacity");
        assert!(failed["endedAt"].is_string());
    }
}
