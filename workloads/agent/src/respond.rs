//! One turn: validate, open the session, retrieve, ask the LLM, store the
//! caller's utterance and the reply, answer.
//!
//! A turn is acknowledged (JSON answer, or the SSE `done` event) only after
//! both turns are stored; a database that cannot be reached fails the turn
//! with 503 before the LLM is asked.

use std::time::Instant;

use futures::StreamExt;
use voice_agent_proto::{
    AgentLatency, Citation, HistoryTurn, RespondRequest, RespondResponse, Role,
};

use crate::config::MAX_UTTERANCE_CHARS;
use crate::error::AgentError;
use crate::llm::{LlmEvent, LlmRequest, LlmStream};
use crate::store::TurnRecord;
use crate::text::shorten;
use crate::vector::Hit;
use crate::{State, now_ms};

/// Longest session id, in characters.
pub const MAX_SESSION_ID_CHARS: usize = 200;
/// Most history turns accepted in a request.
pub const MAX_HISTORY_TURNS: usize = 200;
/// Longest history turn, in characters.
pub const MAX_HISTORY_TEXT_CHARS: usize = 8_000;
/// History turns passed to the LLM (the most recent ones).
pub const LLM_HISTORY_TURNS: usize = 20;
/// Longest citation snippet, in characters.
pub const SNIPPET_CHARS: usize = 240;

/// A validated turn whose session is open and whose knowledge is retrieved.
#[derive(Debug)]
pub struct Prepared {
    started: Instant,
    received_at_ms: i64,
    session_id: String,
    retrieval_ms: f64,
    hits: Vec<Hit>,
    /// What the LLM is asked.
    pub request: LlmRequest,
}

/// How the LLM part of a turn went.
#[derive(Debug, Clone)]
pub struct LlmOutcome {
    /// The reply, concatenated deltas.
    pub reply: String,
    /// Chunk ids the model says it used (`None`: all of the context).
    pub sources: Option<Vec<String>>,
    /// Time to the first delta, ms.
    pub ttft_ms: f64,
    /// Time to the end of the stream, ms.
    pub total_ms: f64,
}

/// Validates the fields of a [`RespondRequest`] (not the VoiceAgent).
pub fn validate(req: &RespondRequest) -> Result<(), AgentError> {
    let sid = req.session_id.trim();
    if sid.is_empty() {
        return Err(AgentError::Invalid("sessionId: must not be empty".into()));
    }
    if sid.chars().count() > MAX_SESSION_ID_CHARS || sid.chars().any(char::is_control) {
        return Err(AgentError::Invalid(format!(
            "sessionId: must be at most {MAX_SESSION_ID_CHARS} printable characters"
        )));
    }
    if req.utterance.trim().is_empty() {
        return Err(AgentError::Invalid(
            "utterance: must not be empty or only white space".into(),
        ));
    }
    let n = req.utterance.chars().count();
    if n > MAX_UTTERANCE_CHARS {
        return Err(AgentError::Invalid(format!(
            "utterance: {n} characters, more than the limit of {MAX_UTTERANCE_CHARS}"
        )));
    }
    if req.history.len() > MAX_HISTORY_TURNS {
        return Err(AgentError::Invalid(format!(
            "history: {} turns, more than the limit of {MAX_HISTORY_TURNS}",
            req.history.len()
        )));
    }
    if let Some(i) = req
        .history
        .iter()
        .position(|t| t.text.chars().count() > MAX_HISTORY_TEXT_CHARS)
    {
        return Err(AgentError::Invalid(format!(
            "history[{i}].text: more than {MAX_HISTORY_TEXT_CHARS} characters"
        )));
    }
    Ok(())
}

impl State {
    /// Validates the request, opens (or touches) the session in the store
    /// and retrieves knowledge. Fails with 503 when the store is down, so
    /// nothing is said that could not be stored.
    pub async fn prepare(&self, req: RespondRequest) -> Result<Prepared, AgentError> {
        let started = Instant::now();
        let received_at_ms = now_ms();
        self.check_voice_agent(&req.voice_agent)?;
        validate(&req)?;
        let session_id = req.session_id.trim().to_owned();
        self.parts
            .store
            .touch_session(&session_id, received_at_ms)
            .await?;
        let utterance = req.utterance.trim().to_owned();
        let (hits, retrieval_ms) = self.retrieve(&utterance).await?;
        let skip = req.history.len().saturating_sub(LLM_HISTORY_TURNS);
        let history: Vec<HistoryTurn> = req.history.into_iter().skip(skip).collect();
        Ok(Prepared {
            started,
            received_at_ms,
            session_id,
            retrieval_ms,
            request: LlmRequest {
                utterance,
                history,
                context: hits.clone(),
            },
            hits,
        })
    }

    /// Starts the LLM on a prepared turn.
    pub fn start_llm(&self, prepared: &Prepared) -> (LlmStream, Instant) {
        (
            self.parts.llm.stream(prepared.request.clone()),
            Instant::now(),
        )
    }

    /// Stores the caller's utterance and the reply (one transaction) and
    /// builds the answer. The turn is acknowledged only if this succeeds.
    pub async fn finish(
        &self,
        prepared: Prepared,
        outcome: LlmOutcome,
    ) -> Result<RespondResponse, AgentError> {
        // Not trimmed: the SSE `done` reply equals the concatenated deltas.
        let reply = outcome.reply;
        if reply.trim().is_empty() {
            return Err(AgentError::Upstream {
                message: format!("LLM {}: returned an empty reply", self.parts.llm.name()),
                timeout: false,
            });
        }
        let citations = citations(&prepared.hits, outcome.sources.as_deref());
        let latency = AgentLatency {
            retrieval_ms: prepared.retrieval_ms,
            llm_ttft_ms: outcome.ttft_ms,
            llm_total_ms: outcome.total_ms,
            total_ms: prepared.started.elapsed().as_secs_f64() * 1000.0,
        };
        let turns = [
            TurnRecord {
                role: Role::Caller,
                text: prepared.request.utterance.clone(),
                latency: None,
                citations: Vec::new(),
                at_ms: prepared.received_at_ms,
            },
            TurnRecord {
                role: Role::Agent,
                text: reply.clone(),
                latency: Some(latency),
                citations: citations.clone(),
                at_ms: now_ms(),
            },
        ];
        self.parts
            .store
            .append_turns(&prepared.session_id, &turns)
            .await?;
        self.exporter.ttft.observe(outcome.ttft_ms / 1000.0);
        self.exporter
            .total
            .observe(prepared.started.elapsed().as_secs_f64());
        Ok(RespondResponse {
            reply,
            citations,
            latency,
        })
    }

    /// A whole turn, not streamed.
    pub async fn respond(&self, req: RespondRequest) -> Result<RespondResponse, AgentError> {
        let prepared = self.prepare(req).await?;
        let (mut stream, llm_started) = self.start_llm(&prepared);
        let mut outcome = LlmOutcome {
            reply: String::new(),
            sources: None,
            ttft_ms: 0.0,
            total_ms: 0.0,
        };
        let mut first = true;
        while let Some(event) = stream.next().await {
            match event? {
                LlmEvent::Sources(ids) => outcome.sources = Some(ids),
                LlmEvent::Delta(text) => {
                    if first {
                        outcome.ttft_ms = llm_started.elapsed().as_secs_f64() * 1000.0;
                        first = false;
                    }
                    outcome.reply.push_str(&text);
                }
            }
        }
        outcome.total_ms = llm_started.elapsed().as_secs_f64() * 1000.0;
        self.finish(prepared, outcome).await
    }
}

/// The citations of a reply: the hits the model used, best first.
pub fn citations(hits: &[Hit], sources: Option<&[String]>) -> Vec<Citation> {
    hits.iter()
        .filter(|h| sources.is_none_or(|ids| ids.contains(&h.chunk.id)))
        .map(|h| Citation {
            document_id: h.chunk.document_id.clone(),
            chunk_id: h.chunk.id.clone(),
            title: h.chunk.title.clone(),
            score: h.score,
            snippet: shorten(&h.chunk.text, SNIPPET_CHARS),
        })
        .collect()
}
