//! Durable state behind one trait: conversation history (sessions, turns),
//! knowledge documents and their chunks (with embeddings). [`PgStore`] keeps
//! them in PostgreSQL; [`MemoryStore`] keeps them in the process (dev mode
//! without `DATABASE_URL`: not durable, and it says so at start).
//!
//! A store is scoped to one VoiceAgent (namespace and name) when it is
//! created; every row it reads or writes carries that scope.

use futures::future::BoxFuture;
use thiserror::Error;
use voice_agent_proto::{AgentLatency, Citation, DocumentInfo, Role};

mod memory;
mod postgres;

pub use memory::MemoryStore;
pub use postgres::PgStore;

use crate::vector::IndexedChunk;

/// Which VoiceAgent a store serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    /// Namespace of the VoiceAgent.
    pub namespace: String,
    /// Name of the VoiceAgent.
    pub voice_agent: String,
}

/// One stored turn of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnRecord {
    /// Who spoke.
    pub role: Role,
    /// What was said.
    pub text: String,
    /// Latency breakdown (agent turns).
    pub latency: Option<AgentLatency>,
    /// Citations (agent turns; empty otherwise).
    pub citations: Vec<Citation>,
    /// When, Unix epoch milliseconds.
    pub at_ms: i64,
}

/// A document to store with its chunks.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDocument {
    /// What list shows.
    pub info: DocumentInfo,
    /// The full content as posted.
    pub content: String,
    /// The chunks with their embeddings.
    pub chunks: Vec<IndexedChunk>,
}

/// A store failure.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// The database cannot be reached (down, refused, timed out); 503.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database refused or failed an operation; 500.
    #[error("database error: {0}")]
    Failed(String),
}

/// Conversation history and knowledge, durable or not.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// `postgres` or `memory`.
    fn kind(&self) -> &'static str;
    /// Whether data survives a restart.
    fn durable(&self) -> bool;
    /// Checks that the store can serve requests now (readiness).
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Creates the session if new, else marks it updated.
    fn touch_session<'a>(
        &'a self,
        session_id: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Appends turns to a session (created if missing), all or nothing.
    fn append_turns<'a>(
        &'a self,
        session_id: &'a str,
        turns: &'a [TurnRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// The turns of a session, oldest first (empty when unknown).
    fn turns<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<TurnRecord>, StoreError>>;
    /// Stores a document and its chunks, replacing a document with the same
    /// id and all its chunks; all or nothing.
    fn put_document<'a>(&'a self, doc: &'a NewDocument) -> BoxFuture<'a, Result<(), StoreError>>;
    /// The content of one document, if stored.
    fn document_content<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>>;
    /// Every document, by id.
    fn list_documents(&self) -> BoxFuture<'_, Result<Vec<DocumentInfo>, StoreError>>;
    /// Deletes a document and its chunks; `false` when it did not exist.
    fn delete_document<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Every chunk with its embedding (to rebuild the embedded index).
    fn load_chunks(&self) -> BoxFuture<'_, Result<Vec<IndexedChunk>, StoreError>>;
}
