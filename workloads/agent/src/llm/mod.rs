//! Language models behind one streaming trait: the built-in,
//! retrieval-grounded [`LocalResponder`] and any OpenAI-compatible Chat
//! Completions endpoint ([`OpenAiLlm`]).
//!
//! [`Llm::stream`] returns a stream of [`LlmEvent`]s; dropping the stream
//! stops the work (for a remote model it closes the connection), which is how
//! a client disconnect or a barge-in cancels a reply.

use futures::stream::BoxStream;
use thiserror::Error;
use voice_agent_proto::HistoryTurn;

use crate::vector::Hit;

pub mod local;
pub mod openai;

pub use local::LocalResponder;
pub use openai::{OpenAiLlm, OpenAiSettings, system_prompt};

/// What the model is asked.
#[derive(Debug, Clone)]
pub struct LlmRequest {
    /// The caller's utterance, trimmed.
    pub utterance: String,
    /// Earlier turns, oldest first (already bounded).
    pub history: Vec<HistoryTurn>,
    /// Retrieved knowledge above the score threshold, best first.
    pub context: Vec<Hit>,
}

/// One event of a reply stream.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmEvent {
    /// The ids of the context chunks the reply is grounded on. A model that
    /// does not send it is taken to use all of the context.
    Sources(Vec<String>),
    /// The next piece of reply text.
    Delta(String),
}

/// A reply as it is produced.
pub type LlmStream = BoxStream<'static, Result<LlmEvent, LlmError>>;

/// An LLM failure.
#[derive(Debug, Clone, Error)]
pub enum LlmError {
    /// The provider answered with an error, or could not be reached.
    #[error("LLM {provider}: {message}")]
    Upstream {
        /// Provider name.
        provider: &'static str,
        /// What happened; never contains the API key.
        message: String,
    },
    /// No answer (first byte or next chunk) within the deadline.
    #[error("LLM {provider}: timed out {message}")]
    Timeout {
        /// Provider name.
        provider: &'static str,
        /// Which deadline.
        message: String,
    },
    /// The stream broke off before it was complete.
    #[error("LLM {provider}: reply stream ended early: {message}")]
    Interrupted {
        /// Provider name.
        provider: &'static str,
        /// What was seen.
        message: String,
    },
}

/// A language model that streams replies.
pub trait Llm: Send + Sync + std::fmt::Debug {
    /// `local` or `openai`.
    fn name(&self) -> &'static str;
    /// Starts a reply. Nothing happens until the stream is polled; dropping
    /// it cancels the reply.
    fn stream(&self, request: LlmRequest) -> LlmStream;
}
