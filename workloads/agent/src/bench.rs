//! `voice-agent bench agent`: retrieval over the embedded index,
//! `/v1/respond` with the local LLM end to end over loopback HTTP, and
//! ingestion throughput, measured in-process on the in-memory store.
//! Reports percentiles against the goals; never asserts (build with
//! `--release` for meaningful numbers).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use voice_agent_proto::{CreateDocumentRequest, DocumentFormat};

use crate::embed::{Embedder, LocalEmbedder};
use crate::store::MemoryStore;
use crate::vector::{EmbeddedIndex, IndexedChunk};
use crate::{Config, Error, LocalResponder, Parts, State, testing};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Chunks in the index for the retrieval and respond runs.
    pub chunks: usize,
    /// Retrieval queries.
    pub queries: usize,
    /// `/v1/respond` requests.
    pub requests: usize,
    /// Bytes of Markdown to ingest for the throughput run.
    pub ingest_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            chunks: 10_000,
            queries: 5_000,
            requests: 2_000,
            ingest_bytes: 8 * 1024 * 1024,
        }
    }
}

/// The measurements.
#[derive(Debug, Clone)]
pub struct Report {
    options: Options,
    retrieval: Percentiles,
    respond: Percentiles,
    ingest_mb_s: f64,
    ingest_chunks_s: f64,
}

/// p50/p99/max of a sample set.
#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

impl Percentiles {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        Percentiles {
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let goal = |v: f64, g: f64| if v < g { "meets goal" } else { "MISSES goal" };
        writeln!(
            f,
            "agent bench ({} chunks, in-memory store)",
            self.options.chunks
        )?;
        writeln!(
            f,
            "  retrieval (embed query + cosine top-3), {} queries: p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  (goal p99 < 5 ms: {})",
            self.options.queries,
            self.retrieval.p50_ms,
            self.retrieval.p99_ms,
            self.retrieval.max_ms,
            goal(self.retrieval.p99_ms, 5.0)
        )?;
        writeln!(
            f,
            "  /v1/respond (local LLM, loopback HTTP, JSON), {} requests: p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  (goal p99 < 15 ms: {})",
            self.options.requests,
            self.respond.p50_ms,
            self.respond.p99_ms,
            self.respond.max_ms,
            goal(self.respond.p99_ms, 15.0)
        )?;
        writeln!(
            f,
            "  ingestion (chunk + embed + store + index), {:.1} MiB of Markdown: {:.2} MB/s, {:.0} chunks/s",
            self.options.ingest_bytes as f64 / (1024.0 * 1024.0),
            self.ingest_mb_s,
            self.ingest_chunks_s
        )
    }
}

/// A deterministic word generator (xorshift) over a fixed vocabulary.
struct Words {
    state: u64,
    vocab: Vec<String>,
}

impl Words {
    fn new() -> Self {
        let syllables = [
            "ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "bre", "dan", "fel", "gor", "hum",
            "jip", "kel", "mor",
        ];
        let mut vocab = Vec::new();
        for a in syllables {
            for b in syllables {
                vocab.push(format!("{a}{b}"));
            }
        }
        Words {
            state: 0x9e37_79b9_7f4a_7c15,
            vocab,
        }
    }

    fn next(&mut self) -> &str {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let i = usize::try_from(self.state % self.vocab.len() as u64).unwrap_or(0);
        &self.vocab[i]
    }

    fn sentence(&mut self, n: usize) -> String {
        let mut s = String::new();
        for i in 0..n {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(self.next());
        }
        s.push('.');
        s
    }
}

/// Synthetic chunks of about 60 words, embedded.
fn corpus(chunks: usize, embedder: &LocalEmbedder) -> Vec<IndexedChunk> {
    let mut words = Words::new();
    (0..chunks)
        .map(|i| {
            let text = (0..5)
                .map(|_| words.sentence(12))
                .collect::<Vec<_>>()
                .join(" ");
            let embedding = embedder.embed_one(&text);
            IndexedChunk {
                id: format!("doc-{}#{}", i / 100, i % 100),
                document_id: format!("doc-{}", i / 100),
                seq: u32::try_from(i % 100).unwrap_or(0),
                title: format!("Document {}", i / 100),
                section: String::new(),
                text,
                embedding,
            }
        })
        .collect()
}

/// Runs every measurement.
pub async fn run(options: Options) -> Result<Report, Error> {
    let embedder = LocalEmbedder::default();
    let chunks = corpus(options.chunks, &embedder);

    // Retrieval: the query path of a turn (embed + search), index only.
    let index = EmbeddedIndex::new(embedder.dimensions());
    for doc in chunks.chunks(100) {
        if let Some(first) = doc.first() {
            index
                .upsert_sync("bench", &first.document_id, doc)
                .map_err(|e| Error::Knowledge(e.to_string()))?;
        }
    }
    let mut words = Words::new();
    let mut samples = Vec::with_capacity(options.queries);
    for _ in 0..options.queries {
        let q = words.sentence(6);
        let started = Instant::now();
        let v = embedder.embed_one(&q);
        let hits = index.search_sync("bench", &v, 3);
        samples.push(started.elapsed());
        std::hint::black_box(hits);
    }
    let retrieval = Percentiles::of(samples);

    // /v1/respond over loopback with the same corpus plus the FAQ.
    let config = Config::new(testing::component_config());
    let parts = Parts {
        store: Arc::new(MemoryStore::new()),
        embedder: Arc::new(embedder),
        vectors: Arc::new(EmbeddedIndex::new(embedder.dimensions())),
        llm: Arc::new(LocalResponder::new(&config.component.persona)),
    };
    let voice_agent = config.component.voice_agent.clone();
    for doc in chunks.chunks(100) {
        if let Some(first) = doc.first() {
            parts
                .vectors
                .upsert(&voice_agent, &first.document_id, doc)
                .await
                .map_err(|e| Error::Knowledge(e.to_string()))?;
        }
    }
    let state = Arc::new(State::with_parts(config, parts).await?);
    state
        .ingest(CreateDocumentRequest {
            id: Some("faq".into()),
            title: "Acme Bikes FAQ".into(),
            format: DocumentFormat::Markdown,
            content: testing::FAQ_MARKDOWN.into(),
            voice_agent: voice_agent.clone(),
        })
        .await
        .map_err(|e| Error::Knowledge(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::serve(listener, Arc::clone(&state), async {
        let _ = stopped.await;
    }));
    let client = crate::llm::openai::client_builder()
        .build()
        .map_err(|e| Error::Knowledge(format!("HTTP client: {e}")))?;
    let url = format!("http://{addr}/v1/respond");
    let questions = [
        "When are you open on Saturdays?",
        "How much does a tune-up cost?",
        "Where is your shop?",
        "Can I return an item?",
        "Do you repair electric bikes?",
    ];
    let mut samples = Vec::with_capacity(options.requests);
    for i in 0..options.requests + 50 {
        let body = serde_json::json!({
            "sessionId": format!("bench-{}", i % 20),
            "voiceAgent": voice_agent,
            "utterance": questions[i % questions.len()],
        })
        .to_string();
        let started = Instant::now();
        let resp = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| Error::Knowledge(format!("respond: {e}")))?;
        let status = resp.status();
        let _ = resp
            .bytes()
            .await
            .map_err(|e| Error::Knowledge(format!("respond body: {e}")))?;
        if !status.is_success() {
            return Err(Error::Knowledge(format!("respond answered {status}")));
        }
        // The first requests warm up connections and caches.
        if i >= 50 {
            samples.push(started.elapsed());
        }
    }
    let respond = Percentiles::of(samples);
    let _ = stop.send(());
    let _ = server.await;

    // Ingestion throughput: Markdown documents of ~64 KiB through the
    // whole write path (validate, chunk, embed, store, index).
    let config = Config::new(testing::component_config());
    let embedder = LocalEmbedder::default();
    let parts = Parts {
        store: Arc::new(MemoryStore::new()),
        embedder: Arc::new(embedder),
        vectors: Arc::new(EmbeddedIndex::new(embedder.dimensions())),
        llm: Arc::new(LocalResponder::new(&config.component.persona)),
    };
    let state = State::with_parts(config, parts).await?;
    let mut docs = Vec::new();
    let mut total = 0usize;
    let mut words = Words::new();
    while total < options.ingest_bytes {
        let mut md = String::new();
        let mut n = 0;
        while md.len() < 64 * 1024 {
            md.push_str(&format!("\n## Section {n}\n\n"));
            for _ in 0..4 {
                md.push_str(&words.sentence(14));
                md.push(' ');
            }
            md.push('\n');
            n += 1;
        }
        total += md.len();
        docs.push(md);
    }
    let started = Instant::now();
    let mut chunk_count = 0u64;
    for (i, content) in docs.into_iter().enumerate() {
        let info = state
            .ingest(CreateDocumentRequest {
                id: Some(format!("ingest-{i}")),
                title: format!("Ingest {i}"),
                format: DocumentFormat::Markdown,
                content,
                voice_agent: voice_agent.clone(),
            })
            .await
            .map_err(|e| Error::Knowledge(e.to_string()))?;
        chunk_count += u64::from(info.chunks);
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    Ok(Report {
        options,
        retrieval,
        respond,
        ingest_mb_s: total as f64 / 1e6 / secs,
        ingest_chunks_s: chunk_count as f64 / secs,
    })
}
