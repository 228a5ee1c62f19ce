//! Vector search behind one trait: the [`VectorStore`], the embedded,
//! in-process [`EmbeddedIndex`] (brute-force cosine over contiguous `f32`,
//! partitioned per VoiceAgent) and a Qdrant server ([`QdrantStore`]). The
//! embedded index holds no data of its own: its rows are persisted in the
//! database's `chunks` table and loaded back at start.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use futures::future::BoxFuture;
use thiserror::Error;

use crate::embed::dot;

pub mod qdrant;

pub use qdrant::{QdrantSettings, QdrantStore};

/// A chunk as stored in a vector store: its vector plus what a citation
/// needs.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedChunk {
    /// Chunk id, unique per VoiceAgent (`{documentId}#{seq}`).
    pub id: String,
    /// The document it belongs to.
    pub document_id: String,
    /// Position in the document.
    pub seq: u32,
    /// Title of the document.
    pub title: String,
    /// Heading path within the document (may be empty).
    pub section: String,
    /// The chunk's text.
    pub text: String,
    /// Unit-length embedding.
    pub embedding: Vec<f32>,
}

/// What a hit carries besides its score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkMeta {
    /// Chunk id.
    pub id: String,
    /// Document id.
    pub document_id: String,
    /// Document title.
    pub title: String,
    /// Heading path.
    pub section: String,
    /// The chunk's text.
    pub text: String,
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The chunk.
    pub chunk: Arc<ChunkMeta>,
    /// Cosine similarity to the query; higher is closer.
    pub score: f32,
}

/// A vector store failure.
#[derive(Debug, Clone, Error)]
#[error("vector store {store}: {message}")]
pub struct VectorError {
    /// The store's name.
    pub store: &'static str,
    /// What failed.
    pub message: String,
}

/// Where chunk vectors are stored and searched, partitioned by VoiceAgent
/// name: a search never returns another agent's chunks.
pub trait VectorStore: Send + Sync + std::fmt::Debug {
    /// `embedded` or `qdrant`.
    fn name(&self) -> &'static str;
    /// Replaces every chunk of `document_id` with `chunks`.
    fn upsert<'a>(
        &'a self,
        voice_agent: &'a str,
        document_id: &'a str,
        chunks: &'a [IndexedChunk],
    ) -> BoxFuture<'a, Result<(), VectorError>>;
    /// Removes every chunk of `document_id`.
    fn delete_document<'a>(
        &'a self,
        voice_agent: &'a str,
        document_id: &'a str,
    ) -> BoxFuture<'a, Result<(), VectorError>>;
    /// The `top_k` chunks closest to `vector`, best first.
    fn search<'a>(
        &'a self,
        voice_agent: &'a str,
        vector: &'a [f32],
        top_k: usize,
    ) -> BoxFuture<'a, Result<Vec<Hit>, VectorError>>;
}

/// The chunks of one VoiceAgent: vectors back to back, metadata alongside.
#[derive(Debug, Default)]
struct Partition {
    vectors: Vec<f32>,
    meta: Vec<Arc<ChunkMeta>>,
}

/// The embedded index: exact (brute-force) cosine search, fast enough for
/// tens of thousands of chunks per agent (see `voice-agent bench agent`).
#[derive(Debug)]
pub struct EmbeddedIndex {
    dimensions: usize,
    partitions: RwLock<HashMap<String, Partition>>,
}

impl EmbeddedIndex {
    /// An empty index for vectors of `dimensions`.
    pub fn new(dimensions: usize) -> Self {
        EmbeddedIndex {
            dimensions,
            partitions: RwLock::new(HashMap::new()),
        }
    }

    /// Chunks held for `voice_agent`.
    pub fn len(&self, voice_agent: &str) -> usize {
        self.partitions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(voice_agent)
            .map_or(0, |p| p.meta.len())
    }

    /// Whether `voice_agent` has no chunks.
    pub fn is_empty(&self, voice_agent: &str) -> bool {
        self.len(voice_agent) == 0
    }

    /// Synchronous [`VectorStore::upsert`].
    pub fn upsert_sync(
        &self,
        voice_agent: &str,
        document_id: &str,
        chunks: &[IndexedChunk],
    ) -> Result<(), VectorError> {
        if let Some(bad) = chunks.iter().find(|c| c.embedding.len() != self.dimensions) {
            return Err(VectorError {
                store: "embedded",
                message: format!(
                    "chunk {} has {} dimensions, the index {}",
                    bad.id,
                    bad.embedding.len(),
                    self.dimensions
                ),
            });
        }
        let mut parts = self
            .partitions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let part = parts.entry(voice_agent.to_owned()).or_default();
        remove_document(part, self.dimensions, document_id);
        for c in chunks {
            part.vectors.extend_from_slice(&c.embedding);
            part.meta.push(Arc::new(ChunkMeta {
                id: c.id.clone(),
                document_id: c.document_id.clone(),
                title: c.title.clone(),
                section: c.section.clone(),
                text: c.text.clone(),
            }));
        }
        Ok(())
    }

    /// Synchronous [`VectorStore::delete_document`].
    pub fn delete_sync(&self, voice_agent: &str, document_id: &str) {
        let mut parts = self
            .partitions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(part) = parts.get_mut(voice_agent) {
            remove_document(part, self.dimensions, document_id);
        }
    }

    /// Synchronous [`VectorStore::search`].
    pub fn search_sync(&self, voice_agent: &str, vector: &[f32], top_k: usize) -> Vec<Hit> {
        if vector.len() != self.dimensions || top_k == 0 {
            return Vec::new();
        }
        let parts = self
            .partitions
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(part) = parts.get(voice_agent) else {
            return Vec::new();
        };
        // (score, row), kept sorted best first; top_k is small.
        let mut best: Vec<(f32, usize)> = Vec::with_capacity(top_k + 1);
        for (row, v) in part.vectors.chunks_exact(self.dimensions).enumerate() {
            let score = dot(vector, v);
            if best.len() == top_k && best.last().is_some_and(|&(s, _)| score <= s) {
                continue;
            }
            let at = best.partition_point(|&(s, _)| s >= score);
            best.insert(at, (score, row));
            best.truncate(top_k);
        }
        best.into_iter()
            .filter_map(|(score, row)| {
                part.meta.get(row).map(|m| Hit {
                    chunk: Arc::clone(m),
                    score,
                })
            })
            .collect()
    }
}

fn remove_document(part: &mut Partition, dims: usize, document_id: &str) {
    if !part.meta.iter().any(|m| m.document_id == document_id) {
        return;
    }
    let mut vectors = Vec::with_capacity(part.vectors.len());
    let mut meta = Vec::with_capacity(part.meta.len());
    for (m, v) in part.meta.iter().zip(part.vectors.chunks_exact(dims)) {
        if m.document_id != document_id {
            vectors.extend_from_slice(v);
            meta.push(Arc::clone(m));
        }
    }
    part.vectors = vectors;
    part.meta = meta;
}

impl VectorStore for EmbeddedIndex {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn upsert<'a>(
        &'a self,
        voice_agent: &'a str,
        document_id: &'a str,
        chunks: &'a [IndexedChunk],
    ) -> BoxFuture<'a, Result<(), VectorError>> {
        let result = self.upsert_sync(voice_agent, document_id, chunks);
        Box::pin(async move { result })
    }

    fn delete_document<'a>(
        &'a self,
        voice_agent: &'a str,
        document_id: &'a str,
    ) -> BoxFuture<'a, Result<(), VectorError>> {
        self.delete_sync(voice_agent, document_id);
        Box::pin(async { Ok(()) })
    }

    fn search<'a>(
        &'a self,
        voice_agent: &'a str,
        vector: &'a [f32],
        top_k: usize,
    ) -> BoxFuture<'a, Result<Vec<Hit>, VectorError>> {
        let hits = self.search_sync(voice_agent, vector, top_k);
        Box::pin(async move { Ok(hits) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(doc: &str, seq: u32, v: [f32; 4]) -> IndexedChunk {
        IndexedChunk {
            id: format!("{doc}#{seq}"),
            document_id: doc.into(),
            seq,
            title: doc.into(),
            section: String::new(),
            text: format!("text {seq}"),
            embedding: v.to_vec(),
        }
    }

    #[test]
    fn search_is_ranked_and_partitioned() {
        let idx = EmbeddedIndex::new(4);
        idx.upsert_sync(
            "a",
            "d1",
            &[
                chunk("d1", 0, [1.0, 0.0, 0.0, 0.0]),
                chunk("d1", 1, [0.6, 0.8, 0.0, 0.0]),
            ],
        )
        .expect("upsert");
        idx.upsert_sync("b", "d2", &[chunk("d2", 0, [1.0, 0.0, 0.0, 0.0])])
            .expect("upsert");
        let hits = idx.search_sync("a", &[1.0, 0.0, 0.0, 0.0], 5);
        assert_eq!(
            hits.iter().map(|h| h.chunk.id.as_str()).collect::<Vec<_>>(),
            ["d1#0", "d1#1"]
        );
        assert!((hits[1].score - 0.6).abs() < 1e-6);
        assert_eq!(idx.search_sync("a", &[1.0, 0.0, 0.0, 0.0], 1).len(), 1);
        assert!(idx.search_sync("c", &[1.0, 0.0, 0.0, 0.0], 5).is_empty());
    }

    #[test]
    fn upsert_replaces_and_delete_removes() {
        let idx = EmbeddedIndex::new(4);
        idx.upsert_sync("a", "d1", &[chunk("d1", 0, [1.0, 0.0, 0.0, 0.0])])
            .expect("upsert");
        idx.upsert_sync("a", "d2", &[chunk("d2", 0, [0.0, 1.0, 0.0, 0.0])])
            .expect("upsert");
        idx.upsert_sync(
            "a",
            "d1",
            &[
                chunk("d1", 0, [0.0, 0.0, 1.0, 0.0]),
                chunk("d1", 1, [0.0, 0.0, 0.0, 1.0]),
            ],
        )
        .expect("upsert");
        assert_eq!(idx.len("a"), 3);
        let hits = idx.search_sync("a", &[0.0, 1.0, 0.0, 0.0], 1);
        assert_eq!(hits[0].chunk.id, "d2#0");
        idx.delete_sync("a", "d1");
        assert_eq!(idx.len("a"), 1);
        let err = idx
            .upsert_sync(
                "a",
                "d3",
                &[IndexedChunk {
                    embedding: vec![1.0],
                    ..chunk("d3", 0, [0.0; 4])
                }],
            )
            .expect_err("wrong dims");
        assert!(err.to_string().contains("dimensions"), "{err}");
    }
}
