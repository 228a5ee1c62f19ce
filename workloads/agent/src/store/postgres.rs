//! The PostgreSQL store (sqlx, runtime-checked queries; the schema is in
//! `workloads/agent/migrations` and applied at connect).

use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};
use voice_agent_proto::{AgentLatency, Citation, DocumentFormat, DocumentInfo, Role};

use super::{NewDocument, Scope, Store, StoreError, TurnRecord};
use crate::vector::IndexedChunk;

/// The agent's migrations, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// PostgreSQL-backed store for one VoiceAgent.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    scope: Scope,
}

/// Maps a sqlx error to a store error: connection-level failures (refused,
/// reset, pool timeout, server shutting down) are `Unavailable`.
pub(crate) fn classify(err: sqlx::Error) -> StoreError {
    let unavailable = match &err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            // Class 08: connection exception; 57P0x: shutdown, cannot connect
            // now; 53300: too many connections.
            c.starts_with("08") || c.starts_with("57P") || c == "53300"
        }),
        _ => false,
    };
    if unavailable {
        StoreError::Unavailable(err.to_string())
    } else {
        StoreError::Failed(err.to_string())
    }
}

fn role_str(role: Role) -> &'static str {
    match role {
        Role::Caller => "caller",
        Role::Agent => "agent",
    }
}

fn format_str(format: DocumentFormat) -> &'static str {
    match format {
        DocumentFormat::Text => "text",
        DocumentFormat::Markdown => "markdown",
    }
}

impl PgStore {
    /// Connects (within `timeout` per connection attempt), applies the
    /// migrations and returns a store scoped to `scope`.
    pub async fn connect(url: &str, scope: Scope, timeout: Duration) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(timeout)
            .connect(url)
            .await
            .map_err(classify)?;
        MIGRATOR.run(&pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(inner) => classify(inner),
            other => StoreError::Failed(format!("migrations: {other}")),
        })?;
        Ok(PgStore { pool, scope })
    }

    /// A store over an existing pool whose schema is already migrated.
    pub fn with_pool(pool: PgPool, scope: Scope) -> Self {
        PgStore { pool, scope }
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn upsert_session(
        tx: &mut Transaction<'static, Postgres>,
        scope: &Scope,
        session_id: &str,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO sessions (namespace, voice_agent, id, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (namespace, voice_agent, id) DO UPDATE SET updated_at_ms = EXCLUDED.updated_at_ms",
        )
        .bind(&scope.namespace)
        .bind(&scope.voice_agent)
        .bind(session_id)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

fn document_info(row: &PgRow, voice_agent: &str) -> Result<DocumentInfo, sqlx::Error> {
    let format: String = row.try_get("format")?;
    let format = match format.as_str() {
        "text" => DocumentFormat::Text,
        _ => DocumentFormat::Markdown,
    };
    let chunks: i32 = row.try_get("chunk_count")?;
    let bytes: i64 = row.try_get("bytes")?;
    Ok(DocumentInfo {
        id: row.try_get("id")?,
        title: row.try_get("title")?,
        format,
        chunks: u32::try_from(chunks).unwrap_or(0),
        bytes: u64::try_from(bytes).unwrap_or(0),
        voice_agent: voice_agent.to_owned(),
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

impl Store for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn durable(&self) -> bool {
        true
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&self.pool)
                .await
                .map_err(classify)?;
            Ok(())
        })
    }

    fn touch_session<'a>(
        &'a self,
        session_id: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await.map_err(classify)?;
            Self::upsert_session(&mut tx, &self.scope, session_id, now_ms)
                .await
                .map_err(classify)?;
            tx.commit().await.map_err(classify)
        })
    }

    fn append_turns<'a>(
        &'a self,
        session_id: &'a str,
        turns: &'a [TurnRecord],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let now = turns.last().map_or(0, |t| t.at_ms);
            let mut tx = self.pool.begin().await.map_err(classify)?;
            Self::upsert_session(&mut tx, &self.scope, session_id, now)
                .await
                .map_err(classify)?;
            for t in turns {
                sqlx::query(
                    "INSERT INTO turns (namespace, voice_agent, session_id, role, text, latency, citations, created_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&self.scope.namespace)
                .bind(&self.scope.voice_agent)
                .bind(session_id)
                .bind(role_str(t.role))
                .bind(&t.text)
                .bind(t.latency.map(Json))
                .bind(Json(&t.citations))
                .bind(t.at_ms)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            }
            tx.commit().await.map_err(classify)
        })
    }

    fn turns<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<TurnRecord>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT role, text, latency, citations, created_at_ms FROM turns \
                 WHERE namespace = $1 AND voice_agent = $2 AND session_id = $3 ORDER BY id",
            )
            .bind(&self.scope.namespace)
            .bind(&self.scope.voice_agent)
            .bind(session_id)
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
            rows.iter()
                .map(|row| -> Result<TurnRecord, sqlx::Error> {
                    let role: String = row.try_get("role")?;
                    let latency: Option<Json<AgentLatency>> = row.try_get("latency")?;
                    let citations: Json<Vec<Citation>> = row.try_get("citations")?;
                    Ok(TurnRecord {
                        role: if role == "agent" {
                            Role::Agent
                        } else {
                            Role::Caller
                        },
                        text: row.try_get("text")?,
                        latency: latency.map(|j| j.0),
                        citations: citations.0,
                        at_ms: row.try_get("created_at_ms")?,
                    })
                })
                .collect::<Result<_, _>>()
                .map_err(classify)
        })
    }

    fn put_document<'a>(&'a self, doc: &'a NewDocument) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let s = &self.scope;
            let mut tx = self.pool.begin().await.map_err(classify)?;
            // Replacing: the old chunks go with the old row (ON DELETE CASCADE).
            sqlx::query(
                "DELETE FROM documents WHERE namespace = $1 AND voice_agent = $2 AND id = $3",
            )
            .bind(&s.namespace)
            .bind(&s.voice_agent)
            .bind(&doc.info.id)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
            sqlx::query(
                "INSERT INTO documents (namespace, voice_agent, id, title, format, content, bytes, chunk_count, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&s.namespace)
            .bind(&s.voice_agent)
            .bind(&doc.info.id)
            .bind(&doc.info.title)
            .bind(format_str(doc.info.format))
            .bind(&doc.content)
            .bind(i64::try_from(doc.info.bytes).unwrap_or(i64::MAX))
            .bind(i32::try_from(doc.info.chunks).unwrap_or(i32::MAX))
            .bind(doc.info.created_at_ms)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
            // One multi-row insert per batch of chunks (UNNEST of arrays),
            // not one round trip per chunk.
            for batch in doc.chunks.chunks(500) {
                let ids: Vec<&str> = batch.iter().map(|c| c.id.as_str()).collect();
                let seqs: Vec<i32> = batch
                    .iter()
                    .map(|c| i32::try_from(c.seq).unwrap_or(i32::MAX))
                    .collect();
                let titles: Vec<&str> = batch.iter().map(|c| c.title.as_str()).collect();
                let sections: Vec<&str> = batch.iter().map(|c| c.section.as_str()).collect();
                let texts: Vec<&str> = batch.iter().map(|c| c.text.as_str()).collect();
                // real[][] must be rectangular; embeddings are passed as one
                // flat array and sliced per row.
                let dims = batch.first().map_or(0, |c| c.embedding.len());
                let flat: Vec<f32> = batch
                    .iter()
                    .flat_map(|c| c.embedding.iter().copied())
                    .collect();
                sqlx::query(
                    "INSERT INTO chunks (namespace, voice_agent, document_id, id, seq, title, section, text, embedding) \
                     SELECT $1, $2, $3, c.id, c.seq, c.title, c.section, c.text, \
                            ($9::real[])[(c.ord::int - 1) * $10 + 1 : c.ord::int * $10] \
                     FROM UNNEST($4::text[], $5::int4[], $6::text[], $7::text[], $8::text[]) \
                          WITH ORDINALITY AS c(id, seq, title, section, text, ord)",
                )
                .bind(&s.namespace)
                .bind(&s.voice_agent)
                .bind(&doc.info.id)
                .bind(&ids)
                .bind(&seqs)
                .bind(&titles)
                .bind(&sections)
                .bind(&texts)
                .bind(&flat)
                .bind(i32::try_from(dims).unwrap_or(0))
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            }
            tx.commit().await.map_err(classify)
        })
    }

    fn document_content<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT content FROM documents WHERE namespace = $1 AND voice_agent = $2 AND id = $3",
            )
            .bind(&self.scope.namespace)
            .bind(&self.scope.voice_agent)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
            row.map(|r| r.try_get::<String, _>("content"))
                .transpose()
                .map_err(classify)
        })
    }

    fn list_documents(&self) -> BoxFuture<'_, Result<Vec<DocumentInfo>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT id, title, format, bytes, chunk_count, created_at_ms FROM documents \
                 WHERE namespace = $1 AND voice_agent = $2 ORDER BY id",
            )
            .bind(&self.scope.namespace)
            .bind(&self.scope.voice_agent)
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
            rows.iter()
                .map(|r| document_info(r, &self.scope.voice_agent))
                .collect::<Result<_, _>>()
                .map_err(classify)
        })
    }

    fn delete_document<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let done = sqlx::query(
                "DELETE FROM documents WHERE namespace = $1 AND voice_agent = $2 AND id = $3",
            )
            .bind(&self.scope.namespace)
            .bind(&self.scope.voice_agent)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
            Ok(done.rows_affected() > 0)
        })
    }

    fn load_chunks(&self) -> BoxFuture<'_, Result<Vec<IndexedChunk>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT document_id, id, seq, title, section, text, embedding FROM chunks \
                 WHERE namespace = $1 AND voice_agent = $2 ORDER BY document_id, seq",
            )
            .bind(&self.scope.namespace)
            .bind(&self.scope.voice_agent)
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
            rows.iter()
                .map(|r| -> Result<IndexedChunk, sqlx::Error> {
                    let seq: i32 = r.try_get("seq")?;
                    Ok(IndexedChunk {
                        id: r.try_get("id")?,
                        document_id: r.try_get("document_id")?,
                        seq: u32::try_from(seq).unwrap_or(0),
                        title: r.try_get("title")?,
                        section: r.try_get("section")?,
                        text: r.try_get("text")?,
                        embedding: r.try_get("embedding")?,
                    })
                })
                .collect::<Result<_, _>>()
                .map_err(classify)
        })
    }
}
