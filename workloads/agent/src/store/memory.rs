//! The in-process store of dev mode: everything is lost on restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use futures::future::BoxFuture;
use voice_agent_proto::DocumentInfo;

use super::{NewDocument, Store, StoreError, TurnRecord};
use crate::vector::IndexedChunk;

#[derive(Debug, Default)]
struct Inner {
    /// Session id → (created, updated).
    sessions: HashMap<String, (i64, i64)>,
    turns: HashMap<String, Vec<TurnRecord>>,
    documents: BTreeMap<String, NewDocument>,
}

/// Sessions, turns and documents in memory; not durable.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every mutation is a single insert or remove: a panic cannot leave
        // half of one behind.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(async move { value })
}

impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn durable(&self) -> bool {
        false
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        ready(Ok(()))
    }

    fn touch_session<'a>(
        &'a self,
        session_id: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut inner = self.lock();
        inner
            .sessions
            .entry(session_id.to_owned())
            .and_modify(|(_, updated)| *updated = now_ms)
            .or_insert((now_ms, now_ms));
        ready(Ok(()))
    }

    fn append_turns<'a>(
        &'a self,
        session_id: &'a str,
        turns: &'a [TurnRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut inner = self.lock();
        let now = turns.last().map_or(0, |t| t.at_ms);
        inner
            .sessions
            .entry(session_id.to_owned())
            .and_modify(|(_, updated)| *updated = now)
            .or_insert((now, now));
        inner
            .turns
            .entry(session_id.to_owned())
            .or_default()
            .extend_from_slice(turns);
        ready(Ok(()))
    }

    fn turns<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<TurnRecord>, StoreError>> {
        let turns = self
            .lock()
            .turns
            .get(session_id)
            .cloned()
            .unwrap_or_default();
        ready(Ok(turns))
    }

    fn put_document<'a>(&'a self, doc: &'a NewDocument) -> BoxFuture<'a, Result<(), StoreError>> {
        self.lock()
            .documents
            .insert(doc.info.id.clone(), doc.clone());
        ready(Ok(()))
    }

    fn document_content<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        let content = self.lock().documents.get(id).map(|d| d.content.clone());
        ready(Ok(content))
    }

    fn list_documents(&self) -> BoxFuture<'_, Result<Vec<DocumentInfo>, StoreError>> {
        let docs = self
            .lock()
            .documents
            .values()
            .map(|d| d.info.clone())
            .collect();
        ready(Ok(docs))
    }

    fn delete_document<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        let existed = self.lock().documents.remove(id).is_some();
        ready(Ok(existed))
    }

    fn load_chunks(&self) -> BoxFuture<'_, Result<Vec<IndexedChunk>, StoreError>> {
        let chunks = self
            .lock()
            .documents
            .values()
            .flat_map(|d| d.chunks.iter().cloned())
            .collect();
        ready(Ok(chunks))
    }
}
