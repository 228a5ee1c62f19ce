//! The sessions this pod holds: capacity, drain state, and per-session
//! bookkeeping (state, counters, transcript) that the API reports.
//!
//! A session is created by the gateway (`POST /api/sessions`), goes
//! `Connecting` → `Active` when its media connects, and `Ended` when the call
//! ends; ended sessions stay readable for a while and do not count against
//! capacity. Creating a session twice for one CallSid returns the first
//! (Twilio retries webhooks).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use voice_agent_proto::{
    Citation, CreateSessionRequest, LoadReport, SessionInfo, SessionState, Transport,
};

/// Why a session ended (mirrors the Call's `endReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EndReason {
    /// The caller hung up (Media Streams `stop`, socket closed by Twilio).
    CallerHangup,
    /// The agent said goodbye and ended the call.
    AgentHangup,
    /// The call reached the longest allowed duration.
    MaxDuration,
    /// The media did not connect or broke.
    TransportError,
    /// The pod drained and the call outlived the drain timeout.
    DrainTimeout,
    /// Ended through the API (`DELETE /api/sessions/{id}`, status callback).
    Deleted,
    /// An internal error.
    Error,
}

/// Per-turn latency, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnLatency {
    /// End of caller speech → final transcript.
    pub eou_ms: Option<f64>,
    /// Agent request → first reply text.
    pub agent_ttft_ms: Option<f64>,
    /// Agent request → reply complete.
    pub agent_total_ms: Option<f64>,
    /// First TTS request → first audio byte.
    pub tts_ttfb_ms: Option<f64>,
    /// End of caller speech → first agent audio sent to the caller.
    pub e2e_ms: Option<f64>,
}

/// One exchange of the conversation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TranscriptTurn {
    /// What the caller said (as transcribed), empty for the greeting.
    pub caller: String,
    /// What the agent said (the reply text, as far as it was spoken).
    pub agent: String,
    /// Sources the reply cites.
    #[serde(default)]
    pub citations: Vec<Citation>,
    /// Latency breakdown.
    pub latency: TurnLatency,
    /// Whether the caller barged in over this reply.
    pub interrupted: bool,
}

/// `GET /api/sessions/{id}`: the contract's [`SessionInfo`] plus the
/// transcript and end reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionDetail {
    /// The contract fields.
    #[serde(flatten)]
    pub info: SessionInfo,
    /// The runtime pod.
    pub pod: String,
    /// Why it ended, once ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    /// Barge-ins that turned out to be coughs or backchannels.
    pub false_interruptions: u32,
    /// The conversation so far.
    pub transcript: Vec<TranscriptTurn>,
}

/// Mutable part of a session.
#[derive(Debug)]
struct SessionData {
    state: SessionState,
    end_reason: Option<EndReason>,
    ended_at: Option<Instant>,
    turns: u32,
    interruptions: u32,
    false_interruptions: u32,
    transcript: Vec<TranscriptTurn>,
}

/// One call held by this pod.
#[derive(Debug)]
pub struct Session {
    /// Runtime-assigned id.
    pub id: String,
    /// The create request.
    pub request: CreateSessionRequest,
    /// Unix epoch ms of creation.
    pub started_at_ms: i64,
    /// Cancelled to end the call (DELETE, drain timeout, shutdown).
    pub cancel: CancellationToken,
    media_claimed: AtomicBool,
    data: Mutex<SessionData>,
}

impl Session {
    fn data(&self) -> MutexGuard<'_, SessionData> {
        // A poisoned lock only means a panic elsewhere; the data is plain.
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims the media connection; false when one already connected (a
    /// second WebSocket for the same session is refused).
    pub fn claim_media(&self) -> bool {
        !self.media_claimed.swap(true, Ordering::AcqRel)
    }

    /// Current state.
    pub fn state(&self) -> SessionState {
        self.data().state
    }

    /// Media connected: `Connecting` → `Active`.
    pub fn set_active(&self) {
        let mut d = self.data();
        if d.state == SessionState::Connecting {
            d.state = SessionState::Active;
        }
    }

    /// Appends a finished or interrupted exchange and updates counters.
    pub fn record_turn(&self, turn: TranscriptTurn, counts_as_turn: bool) {
        let mut d = self.data();
        if counts_as_turn {
            d.turns += 1;
        }
        // A long call keeps the last 200 exchanges; the counters keep counting.
        if d.transcript.len() >= 200 {
            d.transcript.remove(0);
        }
        d.transcript.push(turn);
    }

    /// Sets the barge-in counters (from the turn-taking machine).
    pub fn set_interruptions(&self, interruptions: u32, false_interruptions: u32) {
        let mut d = self.data();
        d.interruptions = interruptions;
        d.false_interruptions = false_interruptions;
    }

    /// Marks the session ended (first reason wins); true if this call ended it.
    pub fn end(&self, reason: EndReason) -> bool {
        let mut d = self.data();
        if d.state == SessionState::Ended {
            return false;
        }
        d.state = SessionState::Ended;
        d.end_reason = Some(reason);
        d.ended_at = Some(Instant::now());
        drop(d);
        self.cancel.cancel();
        true
    }

    /// Why it ended.
    pub fn end_reason(&self) -> Option<EndReason> {
        self.data().end_reason
    }

    /// The contract view.
    pub fn info(&self) -> SessionInfo {
        let d = self.data();
        SessionInfo {
            session_id: self.id.clone(),
            call_sid: self.request.call_sid.clone(),
            voice_agent: self.request.voice_agent.clone(),
            state: d.state,
            started_at_ms: self.started_at_ms,
            turns: d.turns,
            interruptions: d.interruptions,
        }
    }

    /// The detailed view.
    pub fn detail(&self, pod: &str) -> SessionDetail {
        let info = self.info();
        let d = self.data();
        SessionDetail {
            info,
            pod: pod.to_string(),
            end_reason: d.end_reason,
            false_interruptions: d.false_interruptions,
            transcript: d.transcript.clone(),
        }
    }
}

/// Why a session could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// The pod is draining.
    #[error("this runtime pod is draining and takes no new calls")]
    Draining,
    /// The pod holds `capacity` sessions.
    #[error("this runtime pod is at capacity ({0} calls)")]
    Full(u32),
    /// The transport is not built into this runtime.
    #[error("transport {0} is not supported by this runtime build")]
    Unsupported(&'static str),
}

/// All sessions of this pod.
#[derive(Debug)]
pub struct Registry {
    capacity: u32,
    draining: AtomicBool,
    next_id: AtomicU32,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Woken whenever a session ends (drain waits on it).
    ended: Notify,
}

impl Registry {
    /// An empty registry taking up to `capacity` live sessions.
    pub fn new(capacity: u32) -> Self {
        Self {
            capacity,
            draining: AtomicBool::new(false),
            next_id: AtomicU32::new(1),
            sessions: Mutex::new(HashMap::new()),
            ended: Notify::new(),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a session, or returns the live one for the same CallSid
    /// (`Ok((session, false))`).
    pub fn admit(
        &self,
        request: CreateSessionRequest,
        now_ms: i64,
    ) -> Result<(Arc<Session>, bool), AdmitError> {
        if request.transport == Transport::LiveKit && !cfg!(feature = "livekit") {
            return Err(AdmitError::Unsupported("livekit"));
        }
        let mut map = self.map();
        if let Some(existing) = map
            .values()
            .find(|s| s.request.call_sid == request.call_sid && s.state() != SessionState::Ended)
        {
            return Ok((Arc::clone(existing), false));
        }
        if self.draining.load(Ordering::Acquire) {
            return Err(AdmitError::Draining);
        }
        let live = map
            .values()
            .filter(|s| s.state() != SessionState::Ended)
            .count() as u32;
        if live >= self.capacity {
            return Err(AdmitError::Full(self.capacity));
        }
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Unique per pod and per process start; no randomness needed, but the
        // time prefix keeps ids from colliding across restarts.
        let id = format!("s-{:x}-{n}", now_ms);
        let session = Arc::new(Session {
            id: id.clone(),
            request,
            started_at_ms: now_ms,
            cancel: CancellationToken::new(),
            media_claimed: AtomicBool::new(false),
            data: Mutex::new(SessionData {
                state: SessionState::Connecting,
                end_reason: None,
                ended_at: None,
                turns: 0,
                interruptions: 0,
                false_interruptions: 0,
                transcript: Vec::new(),
            }),
        });
        map.insert(id, Arc::clone(&session));
        Ok((session, true))
    }

    /// A session by id (live or recently ended).
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.map().get(id).cloned()
    }

    /// Ends a session; true if it was live.
    pub fn end(&self, id: &str, reason: EndReason) -> bool {
        let ended = self.get(id).is_some_and(|s| s.end(reason));
        if ended {
            self.ended.notify_waiters();
        }
        ended
    }

    /// Tells drain waiters that a session ended (the voice loop calls this
    /// after ending a session itself).
    pub fn notify_ended(&self) {
        self.ended.notify_waiters();
    }

    /// Live (connecting or active) sessions.
    pub fn active(&self) -> u32 {
        self.map()
            .values()
            .filter(|s| s.state() != SessionState::Ended)
            .count() as u32
    }

    /// Live sessions, for ending them all.
    pub fn live_sessions(&self) -> Vec<Arc<Session>> {
        self.map()
            .values()
            .filter(|s| s.state() != SessionState::Ended)
            .cloned()
            .collect()
    }

    /// The load report.
    pub fn load(&self) -> LoadReport {
        LoadReport {
            active_sessions: self.active(),
            capacity: self.capacity,
            draining: self.is_draining(),
        }
    }

    /// Whether new sessions are refused.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Starts (true) or cancels (false) draining; returns the previous value.
    pub fn set_draining(&self, draining: bool) -> bool {
        self.draining.swap(draining, Ordering::AcqRel)
    }

    /// Waits until no session is live or `timeout` passes; returns the
    /// sessions still live at the deadline.
    pub async fn wait_idle(&self, timeout: Duration) -> Vec<Arc<Session>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.ended.notified();
            if self.active() == 0 {
                return Vec::new();
            }
            // Re-check periodically too: a session may end without notifying.
            let wake = (tokio::time::Instant::now() + Duration::from_millis(500)).min(deadline);
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return self.live_sessions();
            }
        }
    }

    /// Forgets sessions that ended more than `retention` ago.
    pub fn sweep(&self, retention: Duration) -> usize {
        let mut map = self.map();
        let before = map.len();
        map.retain(|_, s| s.data().ended_at.is_none_or(|at| at.elapsed() < retention));
        before - map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(call_sid: &str) -> CreateSessionRequest {
        CreateSessionRequest {
            call_sid: call_sid.into(),
            voice_agent: "front-desk".into(),
            from: "+15550100".into(),
            to: "+15550142".into(),
            transport: Transport::MediaStreams,
        }
    }

    #[test]
    fn capacity_and_idempotent_admission() {
        let reg = Registry::new(2);
        let (a, created) = reg.admit(request("CA1"), 1).expect("first");
        assert!(created);
        let (again, created) = reg.admit(request("CA1"), 2).expect("replay");
        assert!(!created);
        assert_eq!(a.id, again.id);
        reg.admit(request("CA2"), 3).expect("second");
        assert_eq!(
            reg.admit(request("CA3"), 4).err(),
            Some(AdmitError::Full(2))
        );
        assert_eq!(reg.load().active_sessions, 2);
        assert!(reg.end(&a.id, EndReason::CallerHangup));
        assert!(
            !reg.end(&a.id, EndReason::Deleted),
            "ending twice is a no-op"
        );
        assert_eq!(a.end_reason(), Some(EndReason::CallerHangup));
        assert!(a.cancel.is_cancelled());
        reg.admit(request("CA3"), 5).expect("room again");
        assert_eq!(reg.sweep(Duration::ZERO), 1);
        assert!(reg.get(&a.id).is_none());
    }

    #[test]
    fn draining_refuses_new_but_keeps_replays() {
        let reg = Registry::new(5);
        let (a, _) = reg.admit(request("CA1"), 1).expect("first");
        assert!(!reg.set_draining(true));
        assert_eq!(
            reg.admit(request("CA2"), 2).err(),
            Some(AdmitError::Draining)
        );
        assert_eq!(reg.admit(request("CA1"), 3).expect("replay").0.id, a.id);
        assert!(reg.load().draining);
        reg.set_draining(false);
        assert!(reg.admit(request("CA2"), 4).is_ok());
    }

    #[test]
    fn media_is_claimed_once() {
        let reg = Registry::new(1);
        let (a, _) = reg.admit(request("CA1"), 1).expect("first");
        assert!(a.claim_media());
        assert!(!a.claim_media());
        assert_eq!(a.state(), SessionState::Connecting);
        a.set_active();
        assert_eq!(a.state(), SessionState::Active);
    }

    #[tokio::test]
    async fn wait_idle_returns_when_the_last_call_ends() {
        let reg = Arc::new(Registry::new(3));
        let (a, _) = reg.admit(request("CA1"), 1).expect("first");
        let reg2 = Arc::clone(&reg);
        let id = a.id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            reg2.end(&id, EndReason::CallerHangup);
        });
        assert!(reg.wait_idle(Duration::from_secs(5)).await.is_empty());
        let (b, _) = reg.admit(request("CA2"), 2).expect("second");
        let left = reg.wait_idle(Duration::from_millis(50)).await;
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id, b.id);
    }
}
