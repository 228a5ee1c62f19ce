//! Call retention: the leader deletes ended Calls (`Ended` or `Failed`)
//! once they are older than their VoiceAgent's
//! `callRetention.ttlSecondsAfterEnded`, or beyond its `maxEndedCalls`
//! (the oldest first).
//!
//! Calls and VoiceAgents are mirrored in memory by reflectors (one list,
//! then a watch), so a tick reads no API at all; it only deletes. Deletes
//! carry the Call's uid as a precondition (a Call recreated under the same
//! name is never hit) and are capped per tick ([`RetentionSettings::batch`]),
//! so a backlog (a lowered `maxEndedCalls`, an operator that was down) is
//! worked off over a few ticks instead of in one burst against the API
//! server.
//!
//! A Call's age is counted from `status.endedAt` (from `creationTimestamp`
//! if a writer never set it). Calls of a VoiceAgent that no longer exists
//! keep the default retention (a day, 1000 calls).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tracing::{info, warn};
use voice_agent_api::voiceagent::CallRetention;
use voice_agent_api::{Call, VoiceAgent};

use crate::metrics::Metrics;

/// The GC's name in metrics and logs.
pub const CONTROLLER: &str = "retention";
/// The label naming a Call's VoiceAgent (set by the gateway).
pub const VOICE_AGENT_LABEL: &str = "voiceagent.io/voice-agent";

/// How the GC runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Time between ticks.
    pub interval: Duration,
    /// Most deletions per tick.
    pub batch: usize,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            interval: Duration::from_secs(30),
            batch: 100,
        }
    }
}

/// One ended Call, as the GC sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndedCall {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// uid, the delete's precondition.
    pub uid: Option<String>,
    /// The VoiceAgent it belongs to.
    pub voice_agent: String,
    /// When it ended.
    pub ended_at: jiff::Timestamp,
}

impl EndedCall {
    /// The GC's view of `call`; `None` while it is not over.
    pub fn of(call: &Call) -> Option<Self> {
        let status = call.status.as_ref()?;
        if !status.phase.is_some_and(|p| p.is_terminal()) {
            return None;
        }
        let ended_at = status
            .ended_at
            .as_ref()
            .or(call.metadata.creation_timestamp.as_ref())
            .map(|t| t.0)?;
        Some(EndedCall {
            namespace: call.namespace()?,
            name: call.name_any(),
            uid: call.uid(),
            voice_agent: call.spec.voice_agent_ref.name.clone(),
            ended_at,
        })
    }
}

/// The ended Calls to delete now, oldest first, at most `batch`: per
/// VoiceAgent, those ended at least `ttlSecondsAfterEnded` ago and those
/// beyond the newest `maxEndedCalls`.
pub fn plan(
    calls: &[EndedCall],
    retention: impl Fn(&str, &str) -> CallRetention,
    now: jiff::Timestamp,
    batch: usize,
) -> Vec<EndedCall> {
    let mut groups: BTreeMap<(&str, &str), Vec<&EndedCall>> = BTreeMap::new();
    for c in calls {
        groups
            .entry((c.namespace.as_str(), c.voice_agent.as_str()))
            .or_default()
            .push(c);
    }
    let mut doomed = Vec::new();
    for ((ns, agent), mut group) in groups {
        let r = retention(ns, agent);
        let ttl = jiff::SignedDuration::from_secs(i64::from(r.ttl_seconds_after_ended.max(0)));
        let keep = usize::try_from(r.max_ended_calls.max(0)).unwrap_or(usize::MAX);
        // Newest first; the name breaks ties so the choice is stable.
        group.sort_by(|a, b| b.ended_at.cmp(&a.ended_at).then(a.name.cmp(&b.name)));
        for (i, c) in group.into_iter().enumerate() {
            let expired = c
                .ended_at
                .checked_add(ttl)
                .is_ok_and(|deadline| deadline <= now);
            if i >= keep || expired {
                doomed.push(c.clone());
            }
        }
    }
    doomed.sort_by(|a, b| {
        a.ended_at
            .cmp(&b.ended_at)
            .then(a.namespace.cmp(&b.namespace))
            .then(a.name.cmp(&b.name))
    });
    doomed.truncate(batch);
    doomed
}

/// What one tick did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Calls deleted (`namespace/name`), oldest first.
    pub deleted: Vec<String>,
    /// Deletes that failed (retried next tick).
    pub failed: usize,
    /// Ended Calls in the mirror.
    pub ended: usize,
}

/// The Call retention GC.
pub struct RetentionGc {
    client: Client,
    metrics: Metrics,
    settings: RetentionSettings,
    calls: Vec<Store<DeserializeGuard<Call>>>,
    agents: Vec<Store<DeserializeGuard<VoiceAgent>>>,
    /// Deleted but possibly still in the mirror (the watch lags the
    /// delete): not deleted again. Forgotten once the mirror drops them.
    gone: std::sync::Mutex<HashSet<String>>,
}

/// Mirrors `api` into a store, in a task that ends when `stop` turns true.
fn mirror<K>(api: Api<K>, config: watcher::Config, mut stop: watch::Receiver<bool>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, config)
            .default_backoff()
            // Managed fields are most of a small object; the GC never reads them.
            .modify(|o: &mut K| o.managed_fields_mut().clear()),
    );
    tokio::spawn(async move {
        let drive = stream.for_each(|event| async move {
            if let Err(e) = event {
                warn!(controller = CONTROLLER, "watch: {e}");
            }
        });
        tokio::select! {
            _ = drive => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    });
    reader
}

impl RetentionGc {
    /// Starts mirroring Calls (those with the VoiceAgent label) and
    /// VoiceAgents in `namespaces` (all when empty); the mirrors stop with
    /// `stop`.
    pub fn start(
        client: Client,
        namespaces: &[String],
        metrics: Metrics,
        settings: RetentionSettings,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let scopes: Vec<Option<&String>> = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.iter().map(Some).collect()
        };
        let mut calls = Vec::new();
        let mut agents = Vec::new();
        for scope in scopes {
            macro_rules! scoped {
                ($t:ty) => {
                    match scope {
                        Some(ns) => Api::<$t>::namespaced(client.clone(), ns),
                        None => Api::<$t>::all(client.clone()),
                    }
                };
            }
            calls.push(mirror(
                scoped!(DeserializeGuard<Call>),
                watcher::Config::default()
                    .labels(VOICE_AGENT_LABEL)
                    .any_semantic(),
                stop.clone(),
            ));
            agents.push(mirror(
                scoped!(DeserializeGuard<VoiceAgent>),
                watcher::Config::default().any_semantic(),
                stop.clone(),
            ));
        }
        RetentionGc {
            client,
            metrics,
            settings,
            calls,
            agents,
            gone: std::sync::Mutex::default(),
        }
    }

    /// Waits until every mirror has its first full list.
    pub async fn wait_ready(&self) {
        for s in &self.calls {
            let _ = s.wait_until_ready().await;
        }
        for s in &self.agents {
            let _ = s.wait_until_ready().await;
        }
    }

    fn retention_of(&self) -> BTreeMap<(String, String), CallRetention> {
        self.agents
            .iter()
            .flat_map(|s| s.state())
            .filter_map(|g| g.0.as_ref().ok().cloned())
            .filter_map(|va| {
                Some((
                    (va.namespace()?, va.name_any()),
                    va.spec.call_retention.clone(),
                ))
            })
            .collect()
    }

    /// Deletes what [`plan`] says, now.
    pub async fn tick(&self) -> TickReport {
        let mirrored: Vec<EndedCall> = self
            .calls
            .iter()
            .flat_map(|s| s.state())
            .filter_map(|g| g.0.as_ref().ok().and_then(EndedCall::of))
            .collect();
        let mut report = TickReport {
            ended: mirrored.len(),
            ..TickReport::default()
        };
        let live: HashSet<String> = mirrored
            .iter()
            .map(|c| format!("{}/{}", c.namespace, c.name))
            .collect();
        let candidates: Vec<EndedCall> = {
            let mut gone = self.gone.lock().unwrap_or_else(|e| e.into_inner());
            gone.retain(|k| live.contains(k));
            mirrored
                .into_iter()
                .filter(|c| !gone.contains(&format!("{}/{}", c.namespace, c.name)))
                .collect()
        };
        let retention = self.retention_of();
        let doomed = plan(
            &candidates,
            |ns, agent| {
                retention
                    .get(&(ns.to_string(), agent.to_string()))
                    .cloned()
                    .unwrap_or_default()
            },
            jiff::Timestamp::now(),
            self.settings.batch,
        );
        for c in doomed {
            let api: Api<Call> = Api::namespaced(self.client.clone(), &c.namespace);
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: c.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            let key = format!("{}/{}", c.namespace, c.name);
            match api.delete(&c.name, &params).await {
                Ok(_) => {
                    self.metrics
                        .writes
                        .with_label_values(&["Call", "delete"])
                        .inc();
                    report.deleted.push(key.clone());
                }
                // Gone already, or a new Call took the name: nothing to do.
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => {
                    report.failed += 1;
                    let category = crate::error::Error::from(e).category();
                    self.metrics
                        .errors
                        .with_label_values(&[CONTROLLER, category])
                        .inc();
                    warn!(call = %key, category, "deleting an ended Call failed; retrying next tick");
                    continue;
                }
            }
            self.gone
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key);
        }
        let result = if report.failed == 0 { "ok" } else { "error" };
        self.metrics
            .reconciles
            .with_label_values(&[CONTROLLER, result])
            .inc();
        if !report.deleted.is_empty() || report.failed > 0 {
            info!(
                controller = CONTROLLER,
                deleted = report.deleted.len(),
                failed = report.failed,
                ended = report.ended,
                "ended Calls garbage-collected"
            );
        }
        report
    }

    /// Ticks every [`RetentionSettings::interval`] until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        tokio::select! {
            _ = self.wait_ready() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            self.tick().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(
        ns: &str,
        agent: &str,
        name: &str,
        ended_s_ago: i64,
        now: jiff::Timestamp,
    ) -> EndedCall {
        EndedCall {
            namespace: ns.into(),
            name: name.into(),
            uid: Some(format!("uid-{name}")),
            voice_agent: agent.into(),
            ended_at: now - jiff::SignedDuration::from_secs(ended_s_ago),
        }
    }

    fn names(v: &[EndedCall]) -> Vec<&str> {
        v.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn ttl_and_count_per_agent_oldest_first() {
        let now = jiff::Timestamp::now();
        let calls = vec![
            call("voice", "a", "a1", 500, now),
            call("voice", "a", "a2", 100, now),
            call("voice", "a", "a3", 30, now),
            call("voice", "a", "a4", 10, now),
            call("voice", "b", "b1", 5000, now),
            call("other", "a", "x1", 400, now),
        ];
        let retention = |ns: &str, agent: &str| match (ns, agent) {
            ("voice", "a") => CallRetention {
                ttl_seconds_after_ended: 300,
                max_ended_calls: 2,
            },
            _ => CallRetention::default(),
        };
        let doomed = plan(&calls, retention, now, 100);
        // a1 expired (and beyond 2); a2 beyond the newest two; b1 and x1 keep the defaults.
        assert_eq!(names(&doomed), ["a1", "a2"]);
    }

    #[test]
    fn batches_take_the_oldest() {
        let now = jiff::Timestamp::now();
        let calls: Vec<EndedCall> = (0..10)
            .map(|i| call("voice", "a", &format!("c{i}"), 1000 - i, now))
            .collect();
        let zero = |_: &str, _: &str| CallRetention {
            ttl_seconds_after_ended: 0,
            max_ended_calls: 0,
        };
        assert_eq!(names(&plan(&calls, zero, now, 3)), ["c0", "c1", "c2"]);
        assert_eq!(plan(&calls, zero, now, 100).len(), 10);
    }

    #[test]
    fn nothing_due_nothing_deleted() {
        let now = jiff::Timestamp::now();
        let calls = vec![call("voice", "a", "a1", 10, now)];
        assert!(plan(&calls, |_, _| CallRetention::default(), now, 100).is_empty());
    }

    #[test]
    fn only_terminal_calls_are_candidates() {
        let mut c: Call = serde_json::from_value(serde_json::json!({
            "apiVersion": "voiceagent.io/v1alpha1", "kind": "Call",
            "metadata": {"name": "ca1", "namespace": "voice", "creationTimestamp": "2025-01-01T10:00:00Z"},
            "spec": {"callSid": "CA1", "voiceAgentRef": {"name": "a"}, "from": "x", "to": "y"},
            "status": {"phase": "Active"},
        }))
        .expect("decodes");
        assert_eq!(EndedCall::of(&c), None);
        if let Some(s) = c.status.as_mut() {
            s.phase = Some(voice_agent_api::CallPhase::Failed);
        }
        let e = EndedCall::of(&c).expect("ended");
        assert_eq!(
            e.ended_at.to_string(),
            "2025-01-01T10:00:00Z",
            "creation time without endedAt"
        );
    }
}
