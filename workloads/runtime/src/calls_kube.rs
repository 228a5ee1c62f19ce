//! The runtime's part of a `Call` object: `Active` when the caller's media
//! connects, a summary at most once a minute while the call goes on, and
//! `Ended`/`Failed` with the call's summary when it ends.
//!
//! # Write budget
//!
//! DESIGN.md §3 bounds the writes per call. Counted as status writes that
//! reach the API server and change the Call (each is one `resourceVersion`
//! and one line of `kubectl get calls -w`), a call costs at most:
//!
//! | # | writer  | write                                       |
//! |---|---------|---------------------------------------------|
//! | 1 | gateway | create (spec, labels; no status)            |
//! | 2 | gateway | status `Ringing` (or `Failed`), `startedAt` |
//! | 3 | runtime | status `Active`, `answeredAt`, `runtimePod` |
//! | 4 | runtime | status summary (turns, interruptions, duration, latency); only for calls still active [`KubeCallsConfig::summary_interval`] (60 s) after the previous runtime write, at most [`KubeCallsConfig::max_summaries`] (1) |
//! | 5 | runtime | status `Ended`/`Failed` with the final summary and `endReason` |
//!
//! So the runtime writes at most `2 + max_summaries` = 3 times per call: a
//! call shorter than a minute writes 2, a longer one 3, however many turns
//! it has; a call that ends before its `Active` write went out skips it
//! (the `Ended` write carries `answeredAt` and `runtimePod` too). A request
//! that fails (the gateway's create has not landed yet: 404; a 5xx; a
//! timeout) changes nothing and is retried, up to
//! [`KubeCallsConfig::attempts`] (3) attempts in all, so the worst case on a
//! failing API server is `attempts × (2 + max_summaries)` = 9 requests, and
//! the call itself never waits for any of them.
//!
//! # Never blocking the voice loop
//!
//! The [`CallSink`] hooks only take a snapshot of the session's counters
//! (a summary hook returns before even that unless a summary is due) and
//! send it to one spawned task per call, which makes the writes in order.
//! The API being slow or down delays or drops Call updates, never audio.
//!
//! # Privacy
//!
//! Only counters, times, the pod name and the end reason are written; the
//! caller's and the called number (in the session's create request) are never
//! read here, so they cannot reach the Call, a log line or an error.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use voice_agent_api::{Call, CallEndReason, CallPhase, LatencySummary};

use crate::calls::{CallSink, NoCalls};
use crate::sessions::{EndReason, Session};

/// The field manager of the runtime's writes.
pub const FIELD_MANAGER: &str = "voice-agent-runtime";

/// `VOICE_AGENT_RUNTIME_CALLS`: `off` disables Call updates even in a cluster.
pub const CALLS_ENV: &str = "VOICE_AGENT_RUNTIME_CALLS";

/// Set in every pod by the kubelet; its absence means "not in a cluster".
const IN_CLUSTER_ENV: &str = "KUBERNETES_SERVICE_HOST";

/// The name of the Call object of `call_sid`: the SID in lower case. It must
/// equal the gateway's `calls::object_name`, which creates the object (Twilio
/// SIDs are `CA` + 32 hex digits). `None` for SIDs that are not 2-63 ASCII
/// letters and digits: such a call has no object to update.
pub fn object_name(call_sid: &str) -> Option<String> {
    ((2..=63).contains(&call_sid.len()) && call_sid.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| call_sid.to_ascii_lowercase())
}

/// Tuning of [`KubeCalls`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeCallsConfig {
    /// Namespace of the Calls (the pod's, `POD_NAMESPACE`).
    pub namespace: String,
    /// This pod's name, written as `runtimePod` (`POD_NAME`).
    pub pod: String,
    /// Least time between two runtime writes of one call before a summary
    /// may be sent (DESIGN.md §3: at most once a minute).
    pub summary_interval: Duration,
    /// Most summaries per call; with `Active` and `Ended` this bounds the
    /// runtime's writes per call to `2 + max_summaries`.
    pub max_summaries: u32,
    /// Deadline of one write request.
    pub timeout: Duration,
    /// Attempts per write (the first included) for failures that may pass:
    /// 404 (the gateway's create has not landed), 409, 429, 5xx, timeouts.
    pub attempts: u32,
    /// Delay before the first retry; doubles per retry.
    pub retry_delay: Duration,
}

impl KubeCallsConfig {
    /// The defaults for `namespace` and `pod`: a summary at most once a
    /// minute and at most one per call, 5 s per request, 3 attempts.
    pub fn new(namespace: &str, pod: &str) -> Self {
        KubeCallsConfig {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            summary_interval: Duration::from_secs(60),
            max_summaries: 1,
            timeout: Duration::from_secs(5),
            attempts: 3,
            retry_delay: Duration::from_millis(500),
        }
    }
}

/// Counts of what [`KubeCalls`] did, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallWriteStats {
    /// Status writes the API server accepted.
    pub written: u64,
    /// Write requests that failed (each retry counts).
    pub failed: u64,
    /// Writes given up after the last attempt or on a permanent error.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// A call's counters at one moment.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    turns: u32,
    interruptions: u32,
    latency: Option<LatencySummary>,
    end_reason: Option<EndReason>,
    at: jiff::Timestamp,
}

impl Snapshot {
    fn of(session: &Session, with_latency: bool) -> Self {
        let info = session.info();
        let latency = if with_latency {
            // The pod name is not used by the latency; the transcript is.
            let detail = session.detail("");
            let e2e: Vec<f64> = detail
                .transcript
                .iter()
                .filter_map(|t| t.latency.e2e_ms)
                .collect();
            latency_summary(&e2e)
        } else {
            None
        };
        Snapshot {
            turns: info.turns,
            interruptions: info.interruptions,
            latency,
            end_reason: session.end_reason(),
            at: jiff::Timestamp::now(),
        }
    }
}

/// What the per-call task is told.
#[derive(Debug)]
enum Update {
    Answered(Snapshot),
    Progressed(Snapshot),
    Ended(Snapshot),
}

/// The hooks' side of one call: the task's inbox and the summary gate.
#[derive(Debug)]
struct CallHandle {
    tx: mpsc::UnboundedSender<Update>,
    gate: Arc<Mutex<SummaryGate>>,
}

/// Decides, without waiting, whether a summary is due.
#[derive(Debug)]
struct SummaryGate {
    /// When the last runtime write of this call was queued.
    last_write: tokio::time::Instant,
    summaries: u32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the data is plain.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records call lifecycles on `Call` objects through the Kubernetes API.
pub struct KubeCalls {
    api: Api<Call>,
    config: Arc<KubeCallsConfig>,
    calls: Mutex<HashMap<String, CallHandle>>,
    counters: Arc<Counters>,
}

impl fmt::Debug for KubeCalls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeCalls")
            .field("namespace", &self.config.namespace)
            .field("pod", &self.config.pod)
            .finish_non_exhaustive()
    }
}

impl KubeCalls {
    /// Updates Calls in `config.namespace` through `client`.
    pub fn new(client: Client, config: KubeCallsConfig) -> Self {
        KubeCalls {
            api: Api::namespaced(client, &config.namespace),
            config: Arc::new(config),
            calls: Mutex::new(HashMap::new()),
            counters: Arc::new(Counters::default()),
        }
    }

    /// What was written so far.
    pub fn stats(&self) -> CallWriteStats {
        CallWriteStats {
            written: self.counters.written.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
        }
    }

    /// Calls whose task has not finished its `Ended` write yet.
    pub fn pending(&self) -> usize {
        let mut calls = lock(&self.calls);
        calls.retain(|_, h| !h.tx.is_closed());
        calls.len()
    }

    /// Waits until every ended call's writes are done (or given up), up to
    /// `timeout`; returns whether none is left. For a clean shutdown after
    /// the drain, and for tests.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let open = lock(&self.calls).values().any(|h| !h.tx.is_closed());
            if !open {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The handle of `session`'s call, starting its task on first use.
    fn handle(
        &self,
        session: &Session,
    ) -> Option<(mpsc::UnboundedSender<Update>, Arc<Mutex<SummaryGate>>)> {
        let mut calls = lock(&self.calls);
        // Forget calls whose task is done (their Ended write went out).
        calls.retain(|_, h| !h.tx.is_closed());
        if let Some(h) = calls.get(&session.id) {
            return Some((h.tx.clone(), Arc::clone(&h.gate)));
        }
        let Some(name) = object_name(&session.request.call_sid) else {
            tracing::debug!(session = %session.id, "CallSid cannot name a Call; not recorded");
            return None;
        };
        // The hooks run inside the voice loop's Tokio runtime; outside one
        // (a unit test calling a hook directly) there is nothing to write with.
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let gate = Arc::new(Mutex::new(SummaryGate {
            last_write: tokio::time::Instant::now(),
            summaries: 0,
        }));
        let task = CallTask {
            api: self.api.clone(),
            config: Arc::clone(&self.config),
            counters: Arc::clone(&self.counters),
            name,
            session: session.id.clone(),
            started_at_ms: session.started_at_ms,
            answered_at: None,
            active_written: false,
            summaries: 0,
        };
        runtime.spawn(task.run(rx));
        calls.insert(
            session.id.clone(),
            CallHandle {
                tx: tx.clone(),
                gate: Arc::clone(&gate),
            },
        );
        Some((tx, gate))
    }
}

impl CallSink for KubeCalls {
    fn answered(&self, session: &Session) {
        if let Some((tx, gate)) = self.handle(session) {
            lock(&gate).last_write = tokio::time::Instant::now();
            let _ = tx.send(Update::Answered(Snapshot::of(session, false)));
        }
    }

    fn progressed(&self, session: &Session) {
        let Some((tx, gate)) = self.handle(session) else {
            return;
        };
        {
            // Decide before touching the session: most turns write nothing.
            let mut g = lock(&gate);
            if g.summaries >= self.config.max_summaries
                || g.last_write.elapsed() < self.config.summary_interval
            {
                return;
            }
            g.summaries += 1;
            g.last_write = tokio::time::Instant::now();
        }
        let _ = tx.send(Update::Progressed(Snapshot::of(session, true)));
    }

    fn ended(&self, session: &Session) {
        if let Some((tx, _)) = self.handle(session) {
            let _ = tx.send(Update::Ended(Snapshot::of(session, true)));
        }
    }
}

/// The writes of one call, in order.
struct CallTask {
    api: Api<Call>,
    config: Arc<KubeCallsConfig>,
    counters: Arc<Counters>,
    /// The Call object's name.
    name: String,
    /// The runtime session, for logs.
    session: String,
    started_at_ms: i64,
    answered_at: Option<jiff::Timestamp>,
    active_written: bool,
    summaries: u32,
}

impl CallTask {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Update>) {
        while let Some(first) = rx.recv().await {
            // Coalesce what queued up while a write was in flight: an Ended
            // makes pending Active/summary writes pointless.
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            let mut ended = None;
            let mut answered = None;
            let mut progressed = None;
            for u in batch {
                match u {
                    Update::Answered(s) => answered = Some(s),
                    Update::Progressed(s) => progressed = Some(s),
                    Update::Ended(s) => ended = Some(s),
                }
            }
            if let Some(s) = &answered {
                self.answered_at.get_or_insert(s.at);
            }
            if let Some(s) = ended {
                self.answered_at.get_or_insert(s.at);
                let patch = self.ended_patch(&s);
                self.write("ended", &patch).await;
                break;
            }
            if let Some(s) = answered
                && !self.active_written
            {
                let patch = self.active_patch(&s);
                self.active_written = true;
                self.write("active", &patch).await;
            }
            // The hook's gate spaced summaries by `summary_interval`; the
            // cap here holds even if a hook misbehaves.
            if let Some(s) = progressed
                && self.summaries < self.config.max_summaries
            {
                let patch = self.summary_patch(&s);
                self.summaries += 1;
                self.write("summary", &patch).await;
            }
        }
        // Dropping `rx` closes the channel: the sink forgets the call.
    }

    fn duration_seconds(&self, at: jiff::Timestamp) -> i64 {
        let from_ms = self
            .answered_at
            .map(|t| t.as_millisecond())
            .unwrap_or(self.started_at_ms);
        ((at.as_millisecond() - from_ms) / 1000).max(0)
    }

    fn active_patch(&self, s: &Snapshot) -> Value {
        json!({"status": {
            "phase": CallPhase::Active,
            "answeredAt": time(self.answered_at.unwrap_or(s.at)),
            "runtimePod": self.config.pod,
            "turns": s.turns,
            "interruptions": s.interruptions,
            "durationSeconds": self.duration_seconds(s.at),
        }})
    }

    fn summary_patch(&self, s: &Snapshot) -> Value {
        let mut status = json!({
            "turns": s.turns,
            "interruptions": s.interruptions,
            "durationSeconds": self.duration_seconds(s.at),
        });
        if let Some(l) = &s.latency {
            status["latency"] = json!(l);
        }
        json!({ "status": status })
    }

    fn ended_patch(&self, s: &Snapshot) -> Value {
        let (phase, reason) = end_phase(s.end_reason);
        let mut status = json!({
            "phase": phase,
            "answeredAt": time(self.answered_at.unwrap_or(s.at)),
            "runtimePod": self.config.pod,
            "endedAt": time(s.at),
            "durationSeconds": self.duration_seconds(s.at),
            "turns": s.turns,
            "interruptions": s.interruptions,
            "endReason": reason,
        });
        if let Some(l) = &s.latency {
            status["latency"] = json!(l);
        }
        json!({ "status": status })
    }

    /// One status write with bounded retries. Never logs the patch body.
    async fn write(&mut self, what: &'static str, patch: &Value) {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let attempts = self.config.attempts.max(1);
        let mut delay = self.config.retry_delay;
        for attempt in 1..=attempts {
            let result = tokio::time::timeout(
                self.config.timeout,
                self.api
                    .patch_status(&self.name, &params, &Patch::Merge(patch)),
            )
            .await;
            let error = match result {
                Ok(Ok(_)) => {
                    self.counters.written.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(call = %self.name, session = %self.session, write = what, "Call status written");
                    return;
                }
                Ok(Err(e)) => WriteError::Kube(e),
                Err(_) => WriteError::Timeout(self.config.timeout),
            };
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            if !error.may_pass() || attempt == attempts {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    call = %self.name,
                    session = %self.session,
                    write = what,
                    attempts = attempt,
                    %error,
                    "updating the Call failed; the call goes on, its Call object lags"
                );
                return;
            }
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2);
        }
    }
}

/// A failed write.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("kubernetes: {0}")]
    Kube(kube::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

impl WriteError {
    /// Whether a retry can succeed: the object may not exist *yet* (the
    /// gateway creates it in the background), or the server is struggling.
    fn may_pass(&self) -> bool {
        match self {
            WriteError::Timeout(_) => true,
            WriteError::Kube(kube::Error::Api(s)) => {
                matches!(s.code, 404 | 409 | 429) || s.code >= 500
            }
            // Connection refused, TLS, … : the API server may be restarting.
            WriteError::Kube(_) => true,
        }
    }
}

fn time(t: jiff::Timestamp) -> Value {
    serde_json::to_value(Time(t)).unwrap_or(Value::Null)
}

/// The Call's terminal phase and end reason for a session's end reason.
/// `Failed` is for calls that broke (transport, internal error); ending
/// through the API (`DELETE /api/sessions/{id}`, Twilio's status callback)
/// is the caller hanging up as Twilio saw it.
pub fn end_phase(reason: Option<EndReason>) -> (CallPhase, CallEndReason) {
    match reason {
        Some(EndReason::CallerHangup | EndReason::Deleted) => {
            (CallPhase::Ended, CallEndReason::CallerHangup)
        }
        Some(EndReason::AgentHangup) => (CallPhase::Ended, CallEndReason::AgentHangup),
        Some(EndReason::MaxDuration) => (CallPhase::Ended, CallEndReason::MaxDuration),
        Some(EndReason::DrainTimeout) => (CallPhase::Ended, CallEndReason::DrainTimeout),
        Some(EndReason::TransportError) => (CallPhase::Failed, CallEndReason::TransportError),
        Some(EndReason::Error) | None => (CallPhase::Failed, CallEndReason::Error),
    }
}

/// p50 and p95 (nearest rank) of per-turn latencies in milliseconds;
/// `None` without samples.
pub fn latency_summary(samples_ms: &[f64]) -> Option<LatencySummary> {
    let mut v: Vec<f64> = samples_ms
        .iter()
        .copied()
        .filter(|x| x.is_finite() && *x >= 0.0)
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = |q: f64| {
        let idx = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[idx].round() as i64
    };
    Some(LatencySummary {
        p50_ms: Some(rank(0.50)),
        p95_ms: Some(rank(0.95)),
    })
}

/// The sink for this process: [`KubeCalls`] when running in a cluster
/// (`KUBERNETES_SERVICE_HOST` set by the kubelet, the pod's service account,
/// Calls in `POD_NAMESPACE`, `runtimePod` from `POD_NAME`), else [`NoCalls`]
/// (one machine: the session API and the logs are the record).
/// `VOICE_AGENT_RUNTIME_CALLS=off` turns Call updates off in a cluster too.
///
/// To let the last `Ended` writes out on shutdown, use [`kube_calls_from_env`]
/// instead and [`KubeCalls::flush`] after the drain.
pub async fn sink_from_env() -> Arc<dyn CallSink> {
    sink_from_lookup(|k| std::env::var(k).ok()).await
}

/// [`sink_from_env`] with the environment given as a lookup.
pub async fn sink_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Arc<dyn CallSink> {
    match kube_calls_from_lookup(lookup).await {
        Some(calls) => calls,
        None => Arc::new(NoCalls),
    }
}

/// The [`KubeCalls`] of this pod, or `None` outside a cluster (see
/// [`sink_from_env`]); the caller keeps the `Arc` to [`KubeCalls::flush`]
/// on shutdown and passes a clone to `State::with_calls`.
pub async fn kube_calls_from_env() -> Option<Arc<KubeCalls>> {
    kube_calls_from_lookup(|k| std::env::var(k).ok()).await
}

/// [`kube_calls_from_env`] with the environment given as a lookup.
pub async fn kube_calls_from_lookup(
    lookup: impl Fn(&str) -> Option<String>,
) -> Option<Arc<KubeCalls>> {
    let var = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
    if var(CALLS_ENV).is_some_and(|v| v.eq_ignore_ascii_case("off")) {
        tracing::info!("{CALLS_ENV}=off: Call objects are not updated");
        return None;
    }
    if var(IN_CLUSTER_ENV).is_none() {
        tracing::info!("not in a Kubernetes cluster: Call objects are not updated");
        return None;
    }
    let Some(namespace) = var(voice_agent_api::deploy::env::POD_NAMESPACE) else {
        tracing::warn!(
            "in a cluster but POD_NAMESPACE is not set: Call objects are not updated \
             (the operator's Deployment sets it from the downward API)"
        );
        return None;
    };
    let pod = var(voice_agent_api::deploy::env::POD_NAME)
        .or_else(|| var("HOSTNAME"))
        .unwrap_or_else(|| "unknown".to_owned());
    let client = match kube::Config::incluster() {
        Ok(config) => Client::try_from(config).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match client {
        Ok(client) => {
            tracing::info!(namespace, pod, "updating Call objects in the cluster");
            Some(Arc::new(KubeCalls::new(
                client,
                KubeCallsConfig::new(&namespace, &pod),
            )))
        }
        Err(error) => {
            tracing::warn!(%error, "no in-cluster Kubernetes client: Call objects are not updated");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_match_the_gateway() {
        assert_eq!(
            object_name("CA0123456789abcdef0123456789ABCDEF").as_deref(),
            Some("ca0123456789abcdef0123456789abcdef")
        );
        assert_eq!(object_name("C"), None);
        assert_eq!(object_name("CA-1"), None);
        assert_eq!(object_name(&"A".repeat(64)), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(latency_summary(&[]), None);
        assert_eq!(latency_summary(&[f64::NAN]), None);
        let one = latency_summary(&[812.4]).expect("one sample");
        assert_eq!((one.p50_ms, one.p95_ms), (Some(812), Some(812)));
        let v: Vec<f64> = (1..=20).map(|i| f64::from(i) * 100.0).collect();
        let s = latency_summary(&v).expect("samples");
        assert_eq!((s.p50_ms, s.p95_ms), (Some(1000), Some(1900)));
        let s = latency_summary(&[300.0, 100.0, 200.0]).expect("unsorted");
        assert_eq!((s.p50_ms, s.p95_ms), (Some(200), Some(300)));
    }

    #[test]
    fn end_reasons_map_to_phases() {
        use CallEndReason as R;
        use CallPhase::{Ended, Failed};
        let cases = [
            (Some(EndReason::CallerHangup), Ended, R::CallerHangup),
            (Some(EndReason::Deleted), Ended, R::CallerHangup),
            (Some(EndReason::AgentHangup), Ended, R::AgentHangup),
            (Some(EndReason::MaxDuration), Ended, R::MaxDuration),
            (Some(EndReason::DrainTimeout), Ended, R::DrainTimeout),
            (Some(EndReason::TransportError), Failed, R::TransportError),
            (Some(EndReason::Error), Failed, R::Error),
            (None, Failed, R::Error),
        ];
        for (reason, phase, end) in cases {
            assert_eq!(end_phase(reason), (phase, end), "{reason:?}");
        }
    }

    #[tokio::test]
    async fn outside_a_cluster_the_sink_is_a_no_op() {
        let sink = sink_from_lookup(|_| None).await;
        assert_eq!(format!("{sink:?}"), "NoCalls");
        let off = sink_from_lookup(|k| match k {
            "VOICE_AGENT_RUNTIME_CALLS" => Some("off".into()),
            "KUBERNETES_SERVICE_HOST" => Some("10.0.0.1".into()),
            _ => Some("x".into()),
        })
        .await;
        assert_eq!(format!("{off:?}"), "NoCalls");
        let no_namespace =
            sink_from_lookup(|k| (k == "KUBERNETES_SERVICE_HOST").then(|| "10.0.0.1".to_string()))
                .await;
        assert_eq!(format!("{no_namespace:?}"), "NoCalls");
    }
}
