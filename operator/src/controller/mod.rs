//! Controllers and what they share.

pub mod phonenumber;
pub mod retention;
pub mod status;
pub mod voiceagent;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use crate::metrics::Metrics;
use crate::render::OperatorSettings;

/// Reason of the Warning Event about an object that does not decode.
pub const INVALID_OBJECT: &str = "InvalidObject";

/// Publishes the Warning Event `InvalidObject` on an object of our API
/// (`kind`) that cannot be decoded; a failed publish is only logged. Every
/// controller that reads objects through `DeserializeGuard` reports them so.
pub async fn publish_invalid_object(
    recorder: &Recorder,
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    error: &str,
) {
    use kube::runtime::events::{Event, EventType};
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(format!(
            "{}/{}",
            voice_agent_api::GROUP,
            voice_agent_api::VERSION
        )),
        kind: Some(kind.to_string()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: INVALID_OBJECT.into(),
        note: Some(format!("the object does not match the API: {error}")),
        action: "Decode".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &reference).await {
        tracing::warn!("publishing an Event failed: {e}");
    }
}

/// State shared by every reconcile.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// What the operator renders with.
    pub settings: OperatorSettings,
    /// The one shared Event recorder.
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Per-object retry state: `error_policy` is stateless, so the backoff
    /// lives here, keyed by `namespace/name`.
    pub backoff: Backoff,
    /// Objects managed per VoiceAgent (`namespace/name` → kind → count), the
    /// source of the `managed_objects` gauge.
    managed: Mutex<HashMap<String, BTreeMap<&'static str, i64>>>,
}

impl Context {
    /// A context for `client`.
    pub fn new(
        client: Client,
        settings: OperatorSettings,
        metrics: Metrics,
        reporter: Reporter,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            metrics,
            backoff: Backoff::default(),
            managed: Mutex::default(),
        }
    }

    /// Forgets VoiceAgents that no longer exist (their children are removed
    /// by the garbage collector through owner references).
    pub fn retain_managed(&self, existing: &std::collections::HashSet<String>) {
        let gone: Vec<String> = {
            let map = self.managed.lock().unwrap_or_else(|e| e.into_inner());
            map.keys()
                .filter(|k| !existing.contains(*k))
                .cloned()
                .collect()
        };
        for agent in gone {
            self.set_managed(&agent, None);
        }
    }

    /// Records what a VoiceAgent owns now (`None` when it is gone) and
    /// updates the `managed_objects` gauge.
    pub fn set_managed(&self, agent: &str, counts: Option<BTreeMap<&'static str, i64>>) {
        let mut map = self.managed.lock().unwrap_or_else(|e| e.into_inner());
        match counts {
            Some(c) => map.insert(agent.to_string(), c),
            None => map.remove(agent),
        };
        let mut totals: BTreeMap<&'static str, i64> = BTreeMap::new();
        for counts in map.values() {
            for (kind, n) in counts {
                *totals.entry(kind).or_default() += n;
            }
        }
        for kind in crate::controller::voiceagent::KINDS {
            self.metrics
                .managed
                .with_label_values(&[kind])
                .set(totals.get(kind).copied().unwrap_or(0));
        }
    }
}

/// Per-object exponential backoff: 1 s, 2 s, 4 s, … capped at 5 minutes,
/// reset by a successful reconcile.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    const BASE: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(300);

    /// Records a failure of `key` and returns how long to wait before retrying.
    pub fn next(&self, key: &str) -> Duration {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key.to_string()).or_insert(0);
        let delay = Self::BASE
            .checked_mul(1u32 << (*n).min(16))
            .unwrap_or(Self::MAX)
            .min(Self::MAX);
        *n = n.saturating_add(1);
        delay
    }

    /// Forgets the failures of `key`.
    pub fn reset(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Consecutive failures of `key`.
    pub fn failures(&self, key: &str) -> u32 {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

/// Shared context handle.
pub type Ctx = Arc<Context>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_resets_per_object() {
        let b = Backoff::default();
        let delays: Vec<u64> = (0..12).map(|_| b.next("ns/a").as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(
            b.next("ns/b").as_secs(),
            1,
            "objects back off independently"
        );
        assert_eq!(b.failures("ns/a"), 12);
        b.reset("ns/a");
        assert_eq!(b.failures("ns/a"), 0);
        assert_eq!(b.next("ns/a").as_secs(), 1);
    }
}
