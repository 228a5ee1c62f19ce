//! The `qdrant` vector store: a Qdrant server over gRPC (`qdrant-client`).
//!
//! One collection (default `voice-agent`, created if missing with cosine
//! distance and the embedder's dimension) is shared by every VoiceAgent:
//! each point carries the payload `{voiceAgent, namespace, documentId,
//! chunkId, seq, title, section, text}` and every search and delete is
//! filtered by `voiceAgent` and `namespace`, so an agent never sees another
//! one's chunks. Keyword payload indexes on those fields and `documentId` are
//! created with the collection.
//!
//! Point ids are UUIDs derived from `(namespace, voiceAgent, chunkId)`
//! (SHA-256, version 8 layout): re-ingesting a chunk overwrites its point.
//! Replacing a document deletes its points (by payload filter), then
//! upserts the new ones in batches, waiting for each write to be applied;
//! when a batch fails, the document's points are deleted again (best
//! effort), so that no half-written document is searched.
//!
//! The API key (`VOICE_AGENT_QDRANT_API_KEY`) goes only into the `api-key`
//! request header; it is never logged or quoted in errors.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use qdrant_client::qdrant::{
    Condition, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, DeletePointsBuilder,
    Distance, FieldType, Filter, PointStruct, ScoredPoint, SearchPointsBuilder,
    UpsertPointsBuilder, Value, VectorParamsBuilder, r#match::MatchValue, value::Kind,
    vectors_config,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use sha2::{Digest, Sha256};

use super::{ChunkMeta, Hit, IndexedChunk, VectorError, VectorStore};
use crate::config::Secret;

/// The store's name in config, metrics and messages.
pub const NAME: &str = "qdrant";
/// Points per upsert request (keeps gRPC messages well under 4 MiB even
/// for 3072-dimensional vectors).
const UPSERT_BATCH: usize = 64;

/// How the Qdrant server is reached.
#[derive(Debug, Clone)]
pub struct QdrantSettings {
    /// gRPC URL, e.g. `http://qdrant.db:6334`.
    pub url: String,
    /// Collection name.
    pub collection: String,
    /// API key (`VOICE_AGENT_QDRANT_API_KEY`), when the server needs one.
    pub api_key: Option<Secret>,
    /// Deadline of one call (also the connect timeout).
    pub timeout: Duration,
    /// The Kubernetes namespace of the VoiceAgent (part of every filter).
    pub namespace: String,
}

/// A Qdrant collection holding the chunks of many VoiceAgents.
pub struct QdrantStore {
    client: Qdrant,
    collection: String,
    namespace: String,
    dimensions: usize,
}

impl std::fmt::Debug for QdrantStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantStore")
            .field("collection", &self.collection)
            .field("namespace", &self.namespace)
            .field("dimensions", &self.dimensions)
            .finish_non_exhaustive()
    }
}

fn fail(message: impl Into<String>) -> VectorError {
    VectorError {
        store: NAME,
        message: message.into(),
    }
}

/// A gRPC failure as `what: Code: message` (no request metadata).
fn describe(what: &str, err: &QdrantError) -> VectorError {
    let detail = match err {
        QdrantError::ResponseError { status } => {
            format!("{:?}: {}", status.code(), status.message())
        }
        QdrantError::ResourceExhaustedError { status, .. } => {
            format!("{:?}: {}", status.code(), status.message())
        }
        other => other.to_string(),
    };
    fail(format!("{what}: {detail}"))
}

/// The point id of a chunk: a UUID (version 8 layout) from the SHA-256 of
/// `namespace`, `voice_agent` and `chunk_id`.
pub fn point_id(namespace: &str, voice_agent: &str, chunk_id: &str) -> String {
    let mut h = Sha256::new();
    for part in [namespace, voice_agent, chunk_id] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80; // version 8
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 9562 variant
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// An exact match of a keyword field (never a full-text match, which
/// `Condition::matches` picks for strings with spaces).
fn keyword(field: &str, value: &str) -> Condition {
    Condition::matches(field, MatchValue::Keyword(value.to_owned()))
}

fn text_of<'a>(payload: &'a std::collections::HashMap<String, Value>, key: &str) -> &'a str {
    match payload.get(key).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(s)) => s,
        _ => "",
    }
}

impl QdrantStore {
    /// Connects to the server and makes sure the collection exists with
    /// `dimensions` and cosine distance (creating it and its payload
    /// indexes if missing; an existing collection of another dimension or
    /// distance is an error).
    pub async fn connect(settings: QdrantSettings, dimensions: usize) -> Result<Self, VectorError> {
        let client = Qdrant::from_url(&settings.url)
            .api_key(settings.api_key.as_ref().map(|k| k.expose().to_owned()))
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .skip_compatibility_check()
            .build()
            .map_err(|e| describe("building the client", &e))?;
        let store = QdrantStore {
            client,
            collection: settings.collection,
            namespace: settings.namespace,
            dimensions,
        };
        store.ensure_collection().await?;
        Ok(store)
    }

    /// The collection's name.
    pub fn collection(&self) -> &str {
        &self.collection
    }

    async fn ensure_collection(&self) -> Result<(), VectorError> {
        let name = &self.collection;
        let exists = self
            .client
            .collection_exists(name.as_str())
            .await
            .map_err(|e| describe(&format!("checking collection {name}"), &e))?;
        if exists {
            return self.check_collection().await;
        }
        let size = u64::try_from(self.dimensions).unwrap_or(u64::MAX);
        let created = self
            .client
            .create_collection(
                CreateCollectionBuilder::new(name.as_str())
                    .vectors_config(VectorParamsBuilder::new(size, Distance::Cosine)),
            )
            .await;
        if let Err(e) = created {
            // Another replica may have created it in the meantime.
            if matches!(self.client.collection_exists(name.as_str()).await, Ok(true)) {
                return self.check_collection().await;
            }
            return Err(describe(&format!("creating collection {name}"), &e));
        }
        for field in ["voiceAgent", "namespace", "documentId"] {
            self.client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(
                        name.as_str(),
                        field,
                        FieldType::Keyword,
                    )
                    .wait(true),
                )
                .await
                .map_err(|e| describe(&format!("indexing payload field {field}"), &e))?;
        }
        tracing::info!(
            component = "agent",
            collection = %name,
            dimensions = self.dimensions,
            "qdrant: collection created"
        );
        Ok(())
    }

    /// Checks an existing collection's vector size and distance.
    async fn check_collection(&self) -> Result<(), VectorError> {
        let name = &self.collection;
        let info = self
            .client
            .collection_info(name.as_str())
            .await
            .map_err(|e| describe(&format!("reading collection {name}"), &e))?;
        let params = info
            .result
            .and_then(|r| r.config)
            .and_then(|c| c.params)
            .and_then(|p| p.vectors_config)
            .and_then(|v| v.config);
        match params {
            Some(vectors_config::Config::Params(p)) => {
                if usize::try_from(p.size).ok() != Some(self.dimensions) {
                    return Err(fail(format!(
                        "collection {name} holds vectors of {} dimensions, the embedder makes \
                         {}; use another collection or the matching embedder",
                        p.size, self.dimensions
                    )));
                }
                if p.distance != Distance::Cosine as i32 {
                    return Err(fail(format!(
                        "collection {name} does not use cosine distance"
                    )));
                }
                Ok(())
            }
            _ => Err(fail(format!(
                "collection {name} has named or no vectors; it needs one unnamed vector"
            ))),
        }
    }

    /// The filter of one VoiceAgent (in this namespace).
    fn scope(&self, voice_agent: &str) -> Vec<Condition> {
        vec![
            keyword("voiceAgent", voice_agent),
            keyword("namespace", &self.namespace),
        ]
    }

    async fn delete_impl(&self, voice_agent: &str, document_id: &str) -> Result<(), VectorError> {
        let mut conditions = self.scope(voice_agent);
        conditions.push(keyword("documentId", document_id));
        self.client
            .delete_points(
                DeletePointsBuilder::new(self.collection.as_str())
                    .points(Filter::must(conditions))
                    .wait(true),
            )
            .await
            .map_err(|e| describe(&format!("deleting document {document_id}"), &e))?;
        Ok(())
    }

    async fn upsert_impl(
        &self,
        voice_agent: &str,
        document_id: &str,
        chunks: &[IndexedChunk],
    ) -> Result<(), VectorError> {
        if let Some(bad) = chunks.iter().find(|c| c.embedding.len() != self.dimensions) {
            return Err(fail(format!(
                "chunk {} has {} dimensions, the collection {}",
                bad.id,
                bad.embedding.len(),
                self.dimensions
            )));
        }
        self.delete_impl(voice_agent, document_id).await?;
        for batch in chunks.chunks(UPSERT_BATCH) {
            let points: Vec<PointStruct> = batch
                .iter()
                .map(|c| {
                    let mut payload = Payload::new();
                    payload.insert("voiceAgent", voice_agent);
                    payload.insert("namespace", self.namespace.as_str());
                    payload.insert("documentId", document_id);
                    payload.insert("chunkId", c.id.as_str());
                    payload.insert("seq", i64::from(c.seq));
                    payload.insert("title", c.title.as_str());
                    payload.insert("section", c.section.as_str());
                    payload.insert("text", c.text.as_str());
                    PointStruct::new(
                        point_id(&self.namespace, voice_agent, &c.id),
                        c.embedding.clone(),
                        payload,
                    )
                })
                .collect();
            let written = self
                .client
                .upsert_points(
                    UpsertPointsBuilder::new(self.collection.as_str(), points).wait(true),
                )
                .await;
            if let Err(e) = written {
                // Leave no half-written document behind (best effort).
                if let Err(undo) = self.delete_impl(voice_agent, document_id).await {
                    tracing::error!(document = %document_id, error = %undo, "qdrant: undoing a partial upsert");
                }
                return Err(describe(&format!("upserting document {document_id}"), &e));
            }
        }
        Ok(())
    }

    async fn search_impl(
        &self,
        voice_agent: &str,
        vector: &[f32],
        top_k: usize,
    ) -> Result<Vec<Hit>, VectorError> {
        if top_k == 0 {
            return Ok(Vec::new());
        }
        if vector.len() != self.dimensions {
            return Err(fail(format!(
                "query vector has {} dimensions, the collection {}",
                vector.len(),
                self.dimensions
            )));
        }
        let limit = u64::try_from(top_k).unwrap_or(u64::MAX);
        let found = self
            .client
            .search_points(
                SearchPointsBuilder::new(self.collection.as_str(), vector.to_vec(), limit)
                    .filter(Filter::must(self.scope(voice_agent)))
                    .with_payload(true),
            )
            .await
            .map_err(|e| describe("searching", &e))?;
        let mut hits: Vec<Hit> = found.result.iter().map(hit).collect();
        // Qdrant answers best first; keep that guaranteed.
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(top_k);
        Ok(hits)
    }
}

fn hit(p: &ScoredPoint) -> Hit {
    Hit {
        chunk: Arc::new(ChunkMeta {
            id: text_of(&p.payload, "chunkId").to_owned(),
            document_id: text_of(&p.payload, "documentId").to_owned(),
            title: text_of(&p.payload, "title").to_owned(),
            section: text_of(&p.payload, "section").to_owned(),
            text: text_of(&p.payload, "text").to_owned(),
        }),
        score: p.score,
    }
}

impl VectorStore for QdrantStore {
    fn name(&self) -> &'static str {
        NAME
    }

    fn upsert<'a>(
        &'a self,
        voice_agent: &'a str,
        document_id: &'a str,
        chunks: &'a [IndexedChunk],
    ) -> BoxFuture<'a, Result<(), VectorError>> {
        Box::pin(self.upsert_impl(voice_agent, document_id, chunks))
    }

    fn delete_document<'a>(
        &'a self,
        voice_agent: &'a str,
        document_id: &'a str,
    ) -> BoxFuture<'a, Result<(), VectorError>> {
        Box::pin(self.delete_impl(voice_agent, document_id))
    }

    fn search<'a>(
        &'a self,
        voice_agent: &'a str,
        vector: &'a [f32],
        top_k: usize,
    ) -> BoxFuture<'a, Result<Vec<Hit>, VectorError>> {
        Box::pin(self.search_impl(voice_agent, vector, top_k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_ids_are_deterministic_uuids() {
        let a = point_id("default", "support", "faq#0");
        assert_eq!(a, point_id("default", "support", "faq#0"));
        assert_ne!(a, point_id("default", "sales", "faq#0"));
        assert_ne!(a, point_id("other", "support", "faq#0"));
        assert_ne!(a, point_id("default", "support", "faq#1"));
        // Length-prefixed: moving a character between parts changes the id.
        assert_ne!(point_id("a", "bc", "d"), point_id("ab", "c", "d"));
        assert_eq!(a.len(), 36);
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('8'), "{a}");
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{a}");
    }
}
