//! The `qdrant` vector store against an in-process gRPC stub of Qdrant.
//!
//! The stub is a tonic server with a minimal `tower::Service` per gRPC
//! service (`qdrant.Collections`, `qdrant.Points`) that routes by path and
//! decodes/encodes qdrant-client's own prost messages with `ProstCodec`. It
//! implements exactly the RPCs the store calls (CollectionExists, Create,
//! Get, CreateFieldIndex, Upsert, Delete, Search; anything else is
//! UNIMPLEMENTED), keeps points in memory, evaluates keyword `must` filters
//! (any other filter is refused) and computes cosine scores itself, so the
//! tests check real behaviour: partitioning by VoiceAgent and namespace,
//! ordering by score, replacing and deleting documents.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::http;
use futures::future::BoxFuture;
use qdrant_client::qdrant::{
    CollectionConfig, CollectionExists, CollectionExistsRequest, CollectionInfo,
    CollectionOperationResponse, CollectionParams, CreateCollection, CreateFieldIndexCollection,
    DeletePoints, Filter, GetCollectionInfoRequest, GetCollectionInfoResponse,
    PointsOperationResponse, ScoredPoint, SearchPoints, SearchResponse, UpdateResult, UpsertPoints,
    Value, VectorParams, VectorsConfig, condition::ConditionOneOf, r#match::MatchValue,
    points_selector, value::Kind, vector, vectors, vectors_config,
};
use serde_json::json;
use support::{Server, config, json_of, post_json};
use tokio::net::TcpListener;
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;
use voice_agent_agent::testing::FAQ_MARKDOWN;
use voice_agent_agent::vector::IndexedChunk;
use voice_agent_agent::{QdrantSettings, QdrantStore, Secret, State, VectorStore};
use voice_agent_api::voiceagent::{QdrantSpec, VectorStoreType};
use voice_agent_proto::RespondResponse;

// ---------------------------------------------------------------- the stub

#[derive(Debug, Clone)]
struct Point {
    vector: Vec<f32>,
    payload: HashMap<String, Value>,
}

#[derive(Debug, Default)]
struct Collection {
    size: u64,
    distance: i32,
    indexes: Vec<String>,
    points: HashMap<String, Point>,
}

#[derive(Debug, Default)]
struct Db {
    collections: HashMap<String, Collection>,
    /// Every call: the RPC path.
    calls: Vec<String>,
    /// The `api-key` header of every call.
    api_keys: Vec<String>,
    /// Upserts left before one fails with UNAVAILABLE (`None`: never).
    fail_upsert_after: Option<usize>,
}

#[derive(Debug, Clone, Default)]
struct Stub(Arc<Mutex<Db>>);

impl Stub {
    fn db(&self) -> std::sync::MutexGuard<'_, Db> {
        self.0.lock().expect("stub lock")
    }

    fn calls(&self) -> Vec<String> {
        self.db().calls.clone()
    }

    fn points(&self, collection: &str) -> Vec<Point> {
        self.db()
            .collections
            .get(collection)
            .map(|c| c.points.values().cloned().collect())
            .unwrap_or_default()
    }

    fn exists(&self, r: CollectionExistsRequest) -> Result<CollectionExists, Status> {
        let exists = self.db().collections.contains_key(&r.collection_name);
        Ok(CollectionExists { exists })
    }

    fn create(&self, r: CreateCollection) -> Result<CollectionOperationResponse, Status> {
        let mut db = self.db();
        if db.collections.contains_key(&r.collection_name) {
            return Err(Status::invalid_argument(format!(
                "Wrong input: Collection `{}` already exists!",
                r.collection_name
            )));
        }
        let Some(vectors_config::Config::Params(p)) = r.vectors_config.and_then(|v| v.config)
        else {
            return Err(Status::invalid_argument(
                "stub: one unnamed vector expected",
            ));
        };
        db.collections.insert(
            r.collection_name,
            Collection {
                size: p.size,
                distance: p.distance,
                ..Collection::default()
            },
        );
        Ok(CollectionOperationResponse {
            result: true,
            time: 0.001,
        })
    }

    fn get(&self, r: GetCollectionInfoRequest) -> Result<GetCollectionInfoResponse, Status> {
        let db = self.db();
        let c = db.collections.get(&r.collection_name).ok_or_else(|| {
            Status::not_found(format!("Collection `{}` doesn't exist!", r.collection_name))
        })?;
        let params = VectorParams {
            size: c.size,
            distance: c.distance,
            ..VectorParams::default()
        };
        Ok(GetCollectionInfoResponse {
            result: Some(CollectionInfo {
                points_count: Some(c.points.len() as u64),
                config: Some(CollectionConfig {
                    params: Some(CollectionParams {
                        vectors_config: Some(VectorsConfig {
                            config: Some(vectors_config::Config::Params(params)),
                        }),
                        ..CollectionParams::default()
                    }),
                    ..CollectionConfig::default()
                }),
                ..CollectionInfo::default()
            }),
            time: 0.001,
        })
    }

    fn field_index(
        &self,
        r: CreateFieldIndexCollection,
    ) -> Result<PointsOperationResponse, Status> {
        let mut db = self.db();
        let c = db
            .collections
            .get_mut(&r.collection_name)
            .ok_or_else(|| Status::not_found("no such collection"))?;
        c.indexes.push(r.field_name);
        Ok(done())
    }

    fn upsert(&self, r: UpsertPoints) -> Result<PointsOperationResponse, Status> {
        let mut db = self.db();
        if r.wait != Some(true) {
            return Err(Status::invalid_argument("stub: writes must wait"));
        }
        match db.fail_upsert_after {
            Some(0) => return Err(Status::unavailable("stub: upsert failed")),
            Some(n) => db.fail_upsert_after = Some(n - 1),
            None => {}
        }
        let c = db
            .collections
            .get_mut(&r.collection_name)
            .ok_or_else(|| Status::not_found("no such collection"))?;
        for p in r.points {
            let id = match p.id.and_then(|i| i.point_id_options) {
                Some(qdrant_client::qdrant::point_id::PointIdOptions::Uuid(u)) => u,
                other => return Err(Status::invalid_argument(format!("id {other:?}"))),
            };
            let vector = match p.vectors.and_then(|v| v.vectors_options) {
                Some(vectors::VectorsOptions::Vector(qdrant_client::qdrant::Vector {
                    vector: Some(vector::Vector::Dense(d)),
                    ..
                })) => d.data,
                other => return Err(Status::invalid_argument(format!("vectors {other:?}"))),
            };
            if vector.len() as u64 != c.size {
                return Err(Status::invalid_argument(format!(
                    "Wrong input: Vector dimension error: expected dim: {}, got {}",
                    c.size,
                    vector.len()
                )));
            }
            c.points.insert(
                id,
                Point {
                    vector,
                    payload: p.payload,
                },
            );
        }
        Ok(done())
    }

    fn delete(&self, r: DeletePoints) -> Result<PointsOperationResponse, Status> {
        let mut db = self.db();
        let c = db
            .collections
            .get_mut(&r.collection_name)
            .ok_or_else(|| Status::not_found("no such collection"))?;
        let Some(points_selector::PointsSelectorOneOf::Filter(filter)) =
            r.points.and_then(|p| p.points_selector_one_of)
        else {
            return Err(Status::invalid_argument("stub: delete by filter expected"));
        };
        let mut keep = HashMap::new();
        for (id, p) in c.points.drain() {
            if !matches_filter(&filter, &p.payload)? {
                keep.insert(id, p);
            }
        }
        c.points = keep;
        Ok(done())
    }

    fn search(&self, r: SearchPoints) -> Result<SearchResponse, Status> {
        let db = self.db();
        let c = db
            .collections
            .get(&r.collection_name)
            .ok_or_else(|| Status::not_found("no such collection"))?;
        if r.vector.len() as u64 != c.size {
            return Err(Status::invalid_argument(
                "Wrong input: Vector dimension error",
            ));
        }
        let filter = r.filter.unwrap_or_default();
        let mut scored = Vec::new();
        for (id, p) in &c.points {
            if matches_filter(&filter, &p.payload)? {
                scored.push(ScoredPoint {
                    id: Some(id.clone().into()),
                    payload: if r.with_payload.is_some() {
                        p.payload.clone()
                    } else {
                        HashMap::new()
                    },
                    score: cosine(&r.vector, &p.vector),
                    ..ScoredPoint::default()
                });
            }
        }
        scored.sort_by(|a, b| b.score.total_cmp(&a.score));
        scored.truncate(usize::try_from(r.limit).unwrap_or(usize::MAX));
        Ok(SearchResponse {
            result: scored,
            time: 0.001,
            usage: None,
        })
    }
}

fn done() -> PointsOperationResponse {
    PointsOperationResponse {
        result: Some(UpdateResult {
            operation_id: Some(1),
            status: 2, // Completed
        }),
        time: 0.001,
        usage: None,
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// Keyword `must` conditions only; anything else is refused so that the
/// test notices filters the stub does not understand.
fn matches_filter(f: &Filter, payload: &HashMap<String, Value>) -> Result<bool, Status> {
    if !f.should.is_empty() || !f.must_not.is_empty() || f.min_should.is_some() {
        return Err(Status::unimplemented("stub: only `must` filters"));
    }
    for c in &f.must {
        let Some(ConditionOneOf::Field(field)) = &c.condition_one_of else {
            return Err(Status::unimplemented("stub: only field conditions"));
        };
        let Some(MatchValue::Keyword(want)) =
            field.r#match.as_ref().and_then(|m| m.match_value.as_ref())
        else {
            return Err(Status::unimplemented("stub: only keyword matches"));
        };
        let have = match payload.get(&field.key).and_then(|v| v.kind.as_ref()) {
            Some(Kind::StringValue(s)) => Some(s),
            _ => None,
        };
        if have != Some(want) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A unary handler for `Grpc::unary`.
struct Handler<F>(F);

impl<Req, Resp, F> UnaryService<Req> for Handler<F>
where
    F: FnMut(Req) -> Result<Resp, Status>,
{
    type Response = Resp;
    type Future = std::future::Ready<Result<Response<Resp>, Status>>;

    fn call(&mut self, request: Request<Req>) -> Self::Future {
        std::future::ready((self.0)(request.into_inner()).map(Response::new))
    }
}

async fn unary<Req, Resp>(
    req: http::Request<tonic::body::Body>,
    f: impl FnMut(Req) -> Result<Resp, Status> + Send + 'static,
) -> http::Response<tonic::body::Body>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
{
    let mut grpc = tonic::server::Grpc::new(ProstCodec::<Resp, Req>::default());
    grpc.unary(Handler(f), req).await
}

use tonic_prost::prost;

/// One gRPC service of the stub: `COLLECTIONS` true for
/// `qdrant.Collections`, false for `qdrant.Points`.
#[derive(Clone)]
struct Service<const COLLECTIONS: bool>(Stub);

impl NamedService for Service<true> {
    const NAME: &'static str = "qdrant.Collections";
}

impl NamedService for Service<false> {
    const NAME: &'static str = "qdrant.Points";
}

impl<const C: bool> tower::Service<http::Request<tonic::body::Body>> for Service<C> {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let stub = self.0.clone();
        let path = req.uri().path().to_owned();
        {
            let mut db = stub.db();
            db.calls.push(path.clone());
            let key = req
                .headers()
                .get("api-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            db.api_keys.push(key);
        }
        Box::pin(async move {
            let s = stub.clone();
            Ok(match path.as_str() {
                "/qdrant.Collections/CollectionExists" => {
                    unary(req, move |r| {
                        s.exists(r)
                            .map(|e| qdrant_client::qdrant::CollectionExistsResponse {
                                result: Some(e),
                                time: 0.001,
                            })
                    })
                    .await
                }
                "/qdrant.Collections/Create" => unary(req, move |r| s.create(r)).await,
                "/qdrant.Collections/Get" => unary(req, move |r| s.get(r)).await,
                "/qdrant.Points/CreateFieldIndex" => unary(req, move |r| s.field_index(r)).await,
                "/qdrant.Points/Upsert" => unary(req, move |r| s.upsert(r)).await,
                "/qdrant.Points/Delete" => unary(req, move |r| s.delete(r)).await,
                "/qdrant.Points/Search" => unary(req, move |r| s.search(r)).await,
                other => Status::unimplemented(format!("stub: {other}")).into_http(),
            })
        })
    }
}

/// Serves the stub on a loopback port; its gRPC URL.
async fn serve(stub: &Stub) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = futures::stream::unfold(listener, |l| async move {
        let conn = l.accept().await.map(|(s, _)| s);
        Some((conn, l))
    });
    let router = tonic::transport::Server::builder()
        .add_service(Service::<true>(stub.clone()))
        .add_service(Service::<false>(stub.clone()));
    tokio::spawn(async move {
        router.serve_with_incoming(incoming).await.expect("stub");
    });
    format!("http://{addr}")
}

// ---------------------------------------------------------------- the tests

const COLLECTION: &str = "kb";

fn settings(url: &str, namespace: &str) -> QdrantSettings {
    QdrantSettings {
        url: url.to_owned(),
        collection: COLLECTION.into(),
        api_key: Some(Secret::new("qdrant-key")),
        timeout: std::time::Duration::from_secs(5),
        namespace: namespace.into(),
    }
}

fn chunk(doc: &str, seq: u32, v: [f32; 4]) -> IndexedChunk {
    IndexedChunk {
        id: format!("{doc}#{seq}"),
        document_id: doc.into(),
        seq,
        title: format!("Title {doc}"),
        section: "Section".into(),
        text: format!("text {doc} {seq}"),
        embedding: v.to_vec(),
    }
}

fn ids(hits: &[voice_agent_agent::vector::Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.chunk.id.as_str()).collect()
}

#[tokio::test]
async fn creates_the_collection_once_and_checks_its_dimension() {
    let stub = Stub::default();
    let url = serve(&stub).await;
    let store = QdrantStore::connect(settings(&url, "default"), 4)
        .await
        .expect("connect");
    assert!(!format!("{store:?}").contains("qdrant-key"));
    {
        let db = stub.db();
        let c = db.collections.get(COLLECTION).expect("created");
        assert_eq!(c.size, 4);
        assert_eq!(c.distance, qdrant_client::qdrant::Distance::Cosine as i32);
        assert_eq!(c.indexes, ["voiceAgent", "namespace", "documentId"]);
        assert!(
            db.api_keys.iter().all(|k| k == "qdrant-key"),
            "{:?}",
            db.api_keys
        );
    }
    // A second start finds it and checks it, without creating.
    let before = stub.calls().len();
    QdrantStore::connect(settings(&url, "default"), 4)
        .await
        .expect("reconnect");
    assert_eq!(
        stub.calls()[before..],
        [
            "/qdrant.Collections/CollectionExists",
            "/qdrant.Collections/Get"
        ]
    );
    // Another embedder dimension: a clear error at start.
    let err = QdrantStore::connect(settings(&url, "default"), 8)
        .await
        .expect_err("dimension mismatch");
    assert!(err.to_string().contains("4 dimensions"), "{err}");
    assert!(!err.to_string().contains("qdrant-key"));
}

#[tokio::test]
async fn upsert_search_replace_and_delete_are_partitioned() {
    let stub = Stub::default();
    let url = serve(&stub).await;
    let store = QdrantStore::connect(settings(&url, "default"), 4)
        .await
        .expect("connect");
    let other_ns = QdrantStore::connect(settings(&url, "staging"), 4)
        .await
        .expect("connect");
    store
        .upsert(
            "support",
            "d1",
            &[
                chunk("d1", 0, [1.0, 0.0, 0.0, 0.0]),
                chunk("d1", 1, [0.6, 0.8, 0.0, 0.0]),
            ],
        )
        .await
        .expect("upsert d1");
    store
        .upsert("support", "d2", &[chunk("d2", 0, [0.0, 0.0, 1.0, 0.0])])
        .await
        .expect("upsert d2");
    // Same chunk ids, another agent and another namespace.
    store
        .upsert("sales", "d1", &[chunk("d1", 0, [1.0, 0.0, 0.0, 0.0])])
        .await
        .expect("upsert sales");
    other_ns
        .upsert("support", "d1", &[chunk("d1", 0, [1.0, 0.0, 0.0, 0.0])])
        .await
        .expect("upsert staging");
    assert_eq!(stub.points(COLLECTION).len(), 5, "distinct point ids");

    let q = [1.0, 0.1, 0.0, 0.0];
    let hits = store.search("support", &q, 5).await.expect("search");
    assert_eq!(ids(&hits), ["d1#0", "d1#1", "d2#0"], "best first");
    assert!(hits[0].score > hits[1].score && hits[1].score > hits[2].score);
    assert!((hits[0].score - 0.995).abs() < 0.01, "{}", hits[0].score);
    let h = &hits[0].chunk;
    assert_eq!(
        (
            h.document_id.as_str(),
            h.title.as_str(),
            h.section.as_str(),
            h.text.as_str()
        ),
        ("d1", "Title d1", "Section", "text d1 0")
    );
    assert_eq!(
        ids(&store.search("support", &q, 1).await.expect("top 1")),
        ["d1#0"]
    );
    assert_eq!(
        ids(&store.search("sales", &q, 5).await.expect("sales")),
        ["d1#0"]
    );
    assert!(
        store
            .search("nobody", &q, 5)
            .await
            .expect("none")
            .is_empty()
    );
    assert_eq!(
        ids(&other_ns.search("support", &q, 5).await.expect("ns")),
        ["d1#0"]
    );

    // Payload as documented.
    let p = stub
        .points(COLLECTION)
        .into_iter()
        .find(|p| {
            matches!(p.payload.get("chunkId").and_then(|v| v.kind.as_ref()),
                Some(Kind::StringValue(s)) if s == "d2#0")
        })
        .expect("d2#0 stored");
    for key in [
        "voiceAgent",
        "namespace",
        "documentId",
        "chunkId",
        "title",
        "text",
    ] {
        assert!(p.payload.contains_key(key), "{key}");
    }

    // Replacing d1 drops its old chunk 1.
    store
        .upsert("support", "d1", &[chunk("d1", 0, [0.0, 1.0, 0.0, 0.0])])
        .await
        .expect("replace d1");
    let hits = store.search("support", &q, 5).await.expect("search");
    assert_eq!(ids(&hits), ["d1#0", "d2#0"]);
    assert!((hits[0].score - 0.0995).abs() < 0.01, "{}", hits[0].score);

    // Deleting d1 of `support` leaves `sales` and `staging` alone.
    store
        .delete_document("support", "d1")
        .await
        .expect("delete");
    assert_eq!(
        ids(&store.search("support", &q, 5).await.expect("s")),
        ["d2#0"]
    );
    assert_eq!(
        ids(&store.search("sales", &q, 5).await.expect("s")),
        ["d1#0"]
    );
    assert_eq!(
        ids(&other_ns.search("support", &q, 5).await.expect("s")),
        ["d1#0"]
    );
    assert_eq!(stub.points(COLLECTION).len(), 3);

    // Wrong dimensions are refused before anything is sent.
    let calls = stub.calls().len();
    let bad = IndexedChunk {
        embedding: vec![1.0],
        ..chunk("d3", 0, [0.0; 4])
    };
    let err = store
        .upsert("support", "d3", &[bad])
        .await
        .expect_err("dims");
    assert!(err.to_string().contains("dimensions"), "{err}");
    assert!(store.search("support", &[1.0], 3).await.is_err());
    assert_eq!(stub.calls().len(), calls);
}

#[tokio::test]
async fn a_failed_batch_leaves_no_half_document() {
    let stub = Stub::default();
    let url = serve(&stub).await;
    let store = QdrantStore::connect(settings(&url, "default"), 4)
        .await
        .expect("connect");
    store
        .upsert("support", "keep", &[chunk("keep", 0, [1.0, 0.0, 0.0, 0.0])])
        .await
        .expect("upsert");
    // 100 chunks: two batches; the second fails.
    let many: Vec<IndexedChunk> = (0..100)
        .map(|i| chunk("big", i, [0.0, 1.0, 0.0, 0.0]))
        .collect();
    stub.db().fail_upsert_after = Some(1);
    let err = store
        .upsert("support", "big", &many)
        .await
        .expect_err("fails");
    assert!(err.to_string().contains("Unavailable"), "{err}");
    stub.db().fail_upsert_after = None;
    let hits = store
        .search("support", &[0.0, 1.0, 0.0, 0.0], 10)
        .await
        .expect("search");
    assert_eq!(
        ids(&hits),
        ["keep#0"],
        "no chunk of the failed document remains"
    );
}

#[tokio::test]
async fn server_errors_and_an_unreachable_server_are_errors() {
    // A collection removed behind the store's back: a clear upstream error.
    let stub = Stub::default();
    let url = serve(&stub).await;
    let store = QdrantStore::connect(settings(&url, "default"), 4)
        .await
        .expect("connect");
    stub.db().collections.clear();
    let err = store
        .search("support", &[1.0, 0.0, 0.0, 0.0], 3)
        .await
        .expect_err("collection gone");
    assert!(err.to_string().contains("NotFound"), "{err}");

    // Nothing listens: the start fails with a clear error, not a hang.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let mut s = settings(&dead, "default");
    s.timeout = std::time::Duration::from_millis(500);
    let err = QdrantStore::connect(s, 4).await.expect_err("unreachable");
    assert!(
        err.to_string()
            .starts_with("vector store qdrant: checking collection kb"),
        "{err}"
    );
}

#[tokio::test]
async fn the_service_ingests_retrieves_and_deletes_through_qdrant() {
    let stub = Stub::default();
    let url = serve(&stub).await;
    let mut c = config();
    c.component.knowledge.vector_store.type_ = VectorStoreType::Qdrant;
    c.component.knowledge.vector_store.qdrant = Some(QdrantSpec {
        url,
        collection: "voice-agent".into(),
        api_key_secret_ref: None,
    });
    c.qdrant_api_key = Some(Secret::new("qdrant-key"));
    // State::new builds the store from the config, as in a pod.
    let state = State::new(c).await.expect("state");
    assert_eq!(state.parts().vectors.name(), "qdrant");
    let dims = state.parts().embedder.dimensions() as u64;
    assert_eq!(
        stub.db().collections.get("voice-agent").map(|c| c.size),
        Some(dims)
    );
    let s = Server::start(state).await;
    let resp = post_json(
        &s.url("/v1/documents"),
        &json!({"id": "faq", "title": "Acme Bikes FAQ", "content": FAQ_MARKDOWN, "voiceAgent": "support"}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 201);
    assert!(!stub.points("voice-agent").is_empty());
    let ask = || {
        json!({"sessionId": "c1", "voiceAgent": "support",
            "utterance": "When are you open on Saturdays?", "history": []})
    };
    let resp = post_json(&s.url("/v1/respond"), &ask(), &[]).await;
    assert_eq!(resp.status(), 200);
    let r: RespondResponse = json_of(resp).await;
    assert!(r.reply.contains("10 am"), "{}", r.reply);
    assert_eq!(
        r.citations.first().map(|c| c.document_id.as_str()),
        Some("faq")
    );

    let resp = support::client()
        .delete(s.url("/v1/documents/faq"))
        .send()
        .await
        .expect("delete");
    assert!(resp.status().is_success(), "{}", resp.status());
    assert!(stub.points("voice-agent").is_empty());
    let resp = post_json(&s.url("/v1/respond"), &ask(), &[]).await;
    let r: RespondResponse = json_of(resp).await;
    assert!(r.citations.is_empty(), "{:?}", r.citations);
    assert!(stub.db().api_keys.iter().all(|k| k == "qdrant-key"));
    s.shutdown().await;
}
