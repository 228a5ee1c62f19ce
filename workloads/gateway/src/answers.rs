//! The answers this replica gave, by CallSid, so that Twilio's replays of a
//! voice webhook get the same TwiML and open no second session, and so that
//! status callbacks and LiveKit events can find the session to end.
//!
//! Entries live for a TTL and the map is bounded: when full, the oldest
//! entries are forgotten first. A slot is created before the answer is
//! computed, so concurrent replays wait for the first answer instead of
//! computing their own.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

/// The runtime session behind an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRef {
    /// The runtime's session id.
    pub session_id: String,
    /// The session's media WebSocket URL on its pod.
    pub media_url: String,
    /// The pod's name.
    pub pod: String,
}

/// What the voice webhook answered for one CallSid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The TwiML document.
    pub twiml: String,
    /// The session, when one was opened.
    pub session: Option<SessionRef>,
    /// How the answer is counted (`ok`, `no_capacity`, `failed`).
    pub outcome: crate::exporter::Outcome,
}

/// A slot for the answer of one CallSid; initialised once.
pub type Slot = Arc<OnceCell<Answer>>;

#[derive(Debug)]
struct Entry {
    slot: Slot,
    at: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    by_call: HashMap<String, Entry>,
    order: VecDeque<(Instant, String)>,
    by_session: HashMap<String, String>,
}

/// Answers by CallSid, with a TTL and a size bound.
#[derive(Debug)]
pub struct Answers {
    inner: Mutex<Inner>,
    ttl: Duration,
    capacity: usize,
}

impl Answers {
    /// A map that keeps answers for `ttl`, at most `capacity` of them.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Answers {
            inner: Mutex::default(),
            ttl,
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the maps consistent before anything
        // can panic, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The slot of `call_sid`, created when absent or expired.
    pub fn slot(&self, call_sid: &str) -> Slot {
        let now = Instant::now();
        let mut inner = self.lock();
        if let Some(entry) = inner.by_call.get(call_sid)
            && now.duration_since(entry.at) < self.ttl
        {
            return Arc::clone(&entry.slot);
        }
        self.evict(&mut inner, now);
        let slot = Slot::default();
        if let Some(old) = inner.by_call.insert(
            call_sid.to_owned(),
            Entry {
                slot: Arc::clone(&slot),
                at: now,
            },
        ) && let Some(session) = old.slot.get().and_then(|a| a.session.as_ref())
        {
            inner.by_session.remove(&session.session_id);
        }
        inner.order.push_back((now, call_sid.to_owned()));
        slot
    }

    /// Indexes the session of `call_sid`'s answer, once it is set.
    pub fn index_session(&self, call_sid: &str, session_id: &str) {
        let mut inner = self.lock();
        if inner.by_call.contains_key(call_sid) {
            inner
                .by_session
                .insert(session_id.to_owned(), call_sid.to_owned());
        }
    }

    /// The answer given for `call_sid`, if still remembered.
    pub fn get(&self, call_sid: &str) -> Option<Answer> {
        let inner = self.lock();
        let entry = inner.by_call.get(call_sid)?;
        if Instant::now().duration_since(entry.at) >= self.ttl {
            return None;
        }
        entry.slot.get().cloned()
    }

    /// The session with id `session_id`, if this replica opened it.
    pub fn session(&self, session_id: &str) -> Option<SessionRef> {
        let call_sid = self.lock().by_session.get(session_id).cloned()?;
        self.get(&call_sid)?.session
    }

    /// Number of remembered CallSids.
    pub fn len(&self) -> usize {
        self.lock().by_call.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops expired entries, then the oldest ones until there is room for
    /// one more.
    fn evict(&self, inner: &mut Inner, now: Instant) {
        while let Some((at, _)) = inner.order.front() {
            let expired = now.duration_since(*at) >= self.ttl;
            if !expired && inner.by_call.len() < self.capacity {
                break;
            }
            let Some((at, call_sid)) = inner.order.pop_front() else {
                break;
            };
            // The queue may hold a stale record of a key that was replaced
            // after expiring; only remove the entry it describes.
            if inner.by_call.get(&call_sid).is_some_and(|e| e.at == at)
                && let Some(entry) = inner.by_call.remove(&call_sid)
                && let Some(session) = entry.slot.get().and_then(|a| a.session.as_ref())
            {
                inner.by_session.remove(&session.session_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exporter::Outcome;

    fn answer(session: &str) -> Answer {
        Answer {
            twiml: format!("<Response>{session}</Response>"),
            session: Some(SessionRef {
                session_id: session.to_owned(),
                media_url: format!("ws://rt/api/sessions/{session}/media"),
                pod: "rt-0".to_owned(),
            }),
            outcome: Outcome::Ok,
        }
    }

    #[test]
    fn replays_share_one_slot_until_the_ttl() {
        let answers = Answers::new(Duration::from_millis(50), 10);
        let slot = answers.slot("CA1");
        assert!(answers.get("CA1").is_none(), "not answered yet");
        slot.set(answer("s-1")).expect("first");
        answers.index_session("CA1", "s-1");
        assert!(Arc::ptr_eq(&slot, &answers.slot("CA1")));
        assert_eq!(answers.get("CA1"), Some(answer("s-1")));
        assert_eq!(
            answers.session("s-1").map(|s| s.pod),
            Some("rt-0".to_owned())
        );
        std::thread::sleep(Duration::from_millis(60));
        assert!(answers.get("CA1").is_none(), "expired");
        assert!(answers.session("s-1").is_none());
        let fresh = answers.slot("CA1");
        assert!(!Arc::ptr_eq(&slot, &fresh));
        assert!(fresh.get().is_none());
        assert_eq!(answers.len(), 1);
    }

    #[test]
    fn bounded_oldest_first() {
        let answers = Answers::new(Duration::from_secs(60), 3);
        for i in 0..5 {
            let sid = format!("CA{i}");
            answers
                .slot(&sid)
                .set(answer(&format!("s-{i}")))
                .expect("set");
            answers.index_session(&sid, &format!("s-{i}"));
        }
        assert_eq!(answers.len(), 3);
        assert!(answers.get("CA0").is_none() && answers.get("CA1").is_none());
        assert!(answers.get("CA4").is_some());
        assert!(answers.session("s-0").is_none());
        assert!(answers.session("s-2").is_some());
    }
}
