//! Knowledge ingestion: validate, chunk, embed, store, index; listing and
//! deletion; loading the index at start; inline sources from the config.

use std::collections::BTreeMap;
use std::time::Instant;

use voice_agent_api::voiceagent::DocumentFormat as SpecFormat;
use voice_agent_proto::{CreateDocumentRequest, DocumentFormat, DocumentInfo};

use crate::chunk::{ChunkOptions, chunk, first_heading};
use crate::config::MAX_DOCUMENT_BYTES;
use crate::error::AgentError;
use crate::store::NewDocument;
use crate::vector::{Hit, IndexedChunk};
use crate::{Error, State, fresh_id, now_ms};

/// Longest document title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest document id, in characters.
pub const MAX_ID_CHARS: usize = 128;

/// Checks a document id: 1 to 128 characters of `A-Z a-z 0-9 . _ -`,
/// starting with a letter or digit.
pub fn check_document_id(id: &str) -> Result<(), AgentError> {
    let ok = !id.is_empty()
        && id.chars().count() <= MAX_ID_CHARS
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(AgentError::Invalid(format!(
            "id: {id:?} must be 1 to {MAX_ID_CHARS} characters of letters, digits, '.', '_' \
             and '-', starting with a letter or digit"
        )))
    }
}

/// The text embedded for a chunk: title and heading path give context.
pub fn embedding_text(title: &str, section: &str, text: &str) -> String {
    if section.is_empty() {
        format!("{title}. {text}")
    } else {
        format!("{title}. {section}. {text}")
    }
}

impl State {
    /// Ingests a document (replacing one with the same id): all or nothing.
    pub async fn ingest(&self, req: CreateDocumentRequest) -> Result<DocumentInfo, AgentError> {
        self.check_voice_agent(&req.voice_agent)?;
        let id = match req.id {
            Some(id) => {
                check_document_id(&id)?;
                id
            }
            None => fresh_id("doc"),
        };
        let title = req.title.trim().to_owned();
        if title.is_empty() {
            return Err(AgentError::Invalid("title: must not be empty".into()));
        }
        if title.chars().count() > MAX_TITLE_CHARS {
            return Err(AgentError::Invalid(format!(
                "title: must be at most {MAX_TITLE_CHARS} characters"
            )));
        }
        if req.content.len() > MAX_DOCUMENT_BYTES {
            return Err(AgentError::TooLarge(format!(
                "content: {} bytes, more than the limit of {MAX_DOCUMENT_BYTES} bytes (1 MiB)",
                req.content.len()
            )));
        }
        if req.content.trim().is_empty() {
            return Err(AgentError::Invalid("content: must not be empty".into()));
        }
        if let Some(c) = req
            .content
            .chars()
            .find(|&c| c == '\0' || (c.is_control() && !matches!(c, '\n' | '\r' | '\t')))
        {
            return Err(AgentError::Invalid(format!(
                "content: contains the control character U+{:04X}; documents must be text",
                u32::from(c)
            )));
        }
        let drafts = chunk(&req.content, req.format, ChunkOptions::default());
        if drafts.is_empty() {
            return Err(AgentError::Invalid(
                "content: has no text to index (only headings or markup)".into(),
            ));
        }
        let texts: Vec<String> = drafts
            .iter()
            .map(|d| embedding_text(&title, &d.section, &d.text))
            .collect();
        let vectors = self.parts.embedder.embed(&texts).await?;
        if vectors.len() != drafts.len() {
            return Err(AgentError::Internal(format!(
                "embedder returned {} vectors for {} chunks",
                vectors.len(),
                drafts.len()
            )));
        }
        let chunks: Vec<IndexedChunk> = drafts
            .into_iter()
            .zip(vectors)
            .map(|(d, embedding)| IndexedChunk {
                id: format!("{id}#{}", d.seq),
                document_id: id.clone(),
                seq: d.seq,
                title: title.clone(),
                section: d.section,
                text: d.text,
                embedding,
            })
            .collect();
        let info = DocumentInfo {
            id: id.clone(),
            title,
            format: req.format,
            chunks: u32::try_from(chunks.len()).unwrap_or(u32::MAX),
            bytes: req.content.len() as u64,
            voice_agent: self.scope.voice_agent.clone(),
            created_at_ms: now_ms(),
        };
        let doc = NewDocument {
            info,
            content: req.content,
            chunks,
        };
        let _one_writer = self.writes.lock().await;
        self.parts.store.put_document(&doc).await?;
        if let Err(err) = self
            .parts
            .vectors
            .upsert(&self.scope.voice_agent, &id, &doc.chunks)
            .await
        {
            // Keep the database and the index in agreement: undo the write.
            if let Err(undo) = self.parts.store.delete_document(&id).await {
                tracing::error!(document = %id, error = %undo, "undoing a failed ingestion");
            }
            return Err(err.into());
        }
        drop(_one_writer);
        self.refresh_gauges().await;
        tracing::info!(
            document = %id,
            chunks = doc.chunks.len(),
            bytes = doc.info.bytes,
            "document ingested"
        );
        Ok(doc.info)
    }

    /// Every document of the VoiceAgent, by id.
    pub async fn list_documents(&self) -> Result<Vec<DocumentInfo>, AgentError> {
        Ok(self.parts.store.list_documents().await?)
    }

    /// Deletes a document and its chunks; 404 when unknown.
    pub async fn delete_document(&self, id: &str) -> Result<(), AgentError> {
        let _one_writer = self.writes.lock().await;
        if !self.parts.store.delete_document(id).await? {
            return Err(AgentError::NotFound(format!("document {id:?} not found")));
        }
        self.parts
            .vectors
            .delete_document(&self.scope.voice_agent, id)
            .await?;
        drop(_one_writer);
        self.refresh_gauges().await;
        Ok(())
    }

    /// Retrieves the chunks closest to `query`, best first, and the time it
    /// took in milliseconds. Only chunks scoring at least the configured
    /// minimum are returned.
    pub async fn retrieve(&self, query: &str) -> Result<(Vec<Hit>, f64), AgentError> {
        let started = Instant::now();
        let query = [query.to_owned()];
        let mut vectors = self.parts.embedder.embed(&query).await?;
        let vector = vectors.pop().unwrap_or_default();
        let retrieval = &self.config.retrieval;
        let hits = if vector.iter().all(|&x| x == 0.0) {
            Vec::new()
        } else {
            self.parts
                .vectors
                .search(&self.scope.voice_agent, &vector, retrieval.top_k)
                .await?
        };
        let hits = hits
            .into_iter()
            .filter(|h| h.score >= retrieval.min_score)
            .collect();
        let elapsed = started.elapsed();
        self.exporter.retrieval.observe(elapsed.as_secs_f64());
        Ok((hits, elapsed.as_secs_f64() * 1000.0))
    }

    /// Loads the chunks stored in the database into the embedded index,
    /// re-embedding chunks whose stored vector does not fit the embedder.
    pub(crate) async fn load_index(&self) -> Result<(), Error> {
        if self.parts.vectors.name() != "embedded" {
            return Ok(());
        }
        let started = Instant::now();
        let chunks = self.parts.store.load_chunks().await?;
        let total = chunks.len();
        let dims = self.parts.embedder.dimensions();
        let mut by_doc: BTreeMap<String, Vec<IndexedChunk>> = BTreeMap::new();
        let mut reembedded = 0usize;
        for mut c in chunks {
            if c.embedding.len() != dims {
                let text = [embedding_text(&c.title, &c.section, &c.text)];
                let mut v = self
                    .parts
                    .embedder
                    .embed(&text)
                    .await
                    .map_err(|e| Error::Knowledge(e.to_string()))?;
                c.embedding = v.pop().unwrap_or_default();
                reembedded += 1;
            }
            by_doc.entry(c.document_id.clone()).or_default().push(c);
        }
        for (doc, chunks) in &by_doc {
            self.parts
                .vectors
                .upsert(&self.scope.voice_agent, doc, chunks)
                .await
                .map_err(|e| Error::Knowledge(e.to_string()))?;
        }
        self.refresh_gauges().await;
        tracing::info!(
            component = "agent",
            documents = by_doc.len(),
            chunks = total,
            reembedded,
            ms = started.elapsed().as_millis() as u64,
            "vector index loaded"
        );
        Ok(())
    }

    /// Ingests the config's inline knowledge sources whose stored content
    /// differs (or that are missing). ConfigMap sources are not read here.
    pub(crate) async fn ingest_sources(&self) -> Result<(), Error> {
        let sources = self.config.component.knowledge.sources.clone();
        for source in sources {
            let Some(content) = source.inline.clone() else {
                tracing::warn!(
                    component = "agent",
                    source = %source.name,
                    "knowledge source from a ConfigMap is not read by the agent in this build; \
                     post it to /v1/documents"
                );
                continue;
            };
            let stored = self.parts.store.document_content(&source.name).await?;
            if stored.as_deref() == Some(content.as_str()) {
                continue;
            }
            let format = match source.format {
                SpecFormat::Markdown => DocumentFormat::Markdown,
                SpecFormat::Text => DocumentFormat::Text,
            };
            let title = source
                .title
                .clone()
                .or_else(|| {
                    (format == DocumentFormat::Markdown)
                        .then(|| first_heading(&content))
                        .flatten()
                })
                .unwrap_or_else(|| source.name.clone());
            let req = CreateDocumentRequest {
                id: Some(source.name.clone()),
                title,
                format,
                content,
                voice_agent: self.scope.voice_agent.clone(),
            };
            self.ingest(req)
                .await
                .map_err(|e| Error::Knowledge(format!("source {}: {e}", source.name)))?;
        }
        Ok(())
    }

    async fn refresh_gauges(&self) {
        if let Ok(docs) = self.parts.store.list_documents().await {
            let chunks: u64 = docs.iter().map(|d| u64::from(d.chunks)).sum();
            self.exporter
                .documents
                .set(i64::try_from(docs.len()).unwrap_or(i64::MAX));
            self.exporter
                .chunks
                .set(i64::try_from(chunks).unwrap_or(i64::MAX));
        }
    }
}
