//! A stateful, in-memory fake of the Kubernetes API server, served over real
//! HTTP on `127.0.0.1`, for testing controllers with the real `kube` client.
//!
//! There is no cluster, kind, envtest or apiserver binary in this project's
//! test environment; reconcile code is tested against this fake instead. It
//! speaks enough of the API for `kube::Client`, `kube::Api<K>`,
//! `kube::runtime::watcher` and `kube::discovery` to work unchanged.
//!
//! # Connecting a client
//!
//! The crate does not depend on `kube` (to keep it out of non-dev
//! dependency trees); build the client in the test:
//!
//! ```
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kube::api::{Api, PostParams};
//! use voice_agent_kube_fake::FakeApi;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let fake = FakeApi::start().await;
//! // Default namespace "default". `fake.kube_config_url()` is the same URL
//! // as an `http::Uri`, ready for `kube::Config::new`.
//! let client = kube::Client::try_from(kube::Config::new(fake.url().parse()?))?;
//! let cms: Api<ConfigMap> = Api::default_namespaced(client);
//! let mut cm = ConfigMap::default();
//! cm.metadata.name = Some("settings".into());
//! cms.create(&PostParams::default(), &cm).await?;
//! assert_eq!(fake.objects("configmaps").len(), 1);
//! assert_eq!(fake.writes().len(), 1);
//! # Ok(()) }
//! ```
//!
//! Custom resources are served once registered:
//! `fake.register_crd(&voice_agent_api::VoiceAgent::crd())`.
//!
//! # What is served
//!
//! - Discovery: `/api`, `/api/v1`, `/apis`, `/apis/{group}`,
//!   `/apis/{group}/{version}`, aggregated discovery (v2) on `/api` and
//!   `/apis`, and `/version`.
//! - Resources under `/api/v1/...` and `/apis/{group}/{version}/...`:
//!   namespaced (`/namespaces/{ns}/{plural}[/{name}[/status]]`),
//!   cluster-scoped (`/{plural}[/{name}[/status]]`) and all-namespace lists
//!   (`/{plural}`).
//! - Verbs: get, list (`labelSelector` with `k=v`, `k==v`, `k!=v`, `k`, `!k`,
//!   `k in (a,b)`, `k notin (a,b)`; `fieldSelector` with `=`, `==`, `!=` on any
//!   dotted path such as `metadata.name` or `metadata.namespace`), watch,
//!   create (`generateName` supported), update (PUT), patch (merge,
//!   strategic, JSON patch, apply), delete and deletecollection. `dryRun=All`
//!   validates and returns the result without storing it.
//! - Errors are `metav1.Status` bodies (`NotFound`, `AlreadyExists`,
//!   `Conflict`, `Invalid`, `BadRequest`, `MethodNotAllowed`, ...) that kube
//!   decodes into `kube::Error::Api`.
//!
//! # Object semantics
//!
//! - `metadata.uid` is a UUID-shaped string derived from a per-fake counter
//!   (deterministic across runs), `creationTimestamp` is the wall clock, and
//!   `resourceVersion` is one global counter shared by every kind.
//! - `generation` starts at 1 and is bumped when anything outside `metadata`
//!   and `status` changes.
//! - A write that changes nothing (including a re-apply of the same
//!   configuration) does not bump `resourceVersion` or `generation` and
//!   sends no watch event, like a real apiserver.
//! - Kinds with a `/status` subresource (see [`builtin_resources`] and CRDs
//!   declaring `subresources.status`): create and writes to the main resource
//!   ignore `status`; writes to `/status` change only `status`.
//! - Deleting an object with finalizers sets `deletionTimestamp` and keeps it;
//!   the write that empties `finalizers` removes it.
//! - Deleting removes dependents (objects whose `ownerReferences` name the
//!   deleted uid), like the garbage collector in Background mode.
//! - `managedFields` lists one entry per (manager, operation, subresource).
//!
//! # Server-side apply
//!
//! Ownership is a set of field paths per manager. Maps are granular (each
//! leaf is its own path); lists are atomic, except lists whose items are all
//! maps with a string `name` (containers, env, ports, volumes, volumeMounts),
//! or else a string `type` (conditions), which merge item by item on that key.
//! Of `metadata`, only labels, annotations, ownerReferences and finalizers
//! are tracked.
//!
//! An apply by manager M sets and owns every field of its configuration;
//! fields M applied before and omits now are removed unless another entry
//! also owns them; a field owned by another manager with a different value
//! is a 409 `Conflict` Status naming the field and the manager, unless
//! `force=true`, which moves the field to M. Equal values are co-owned. An
//! apply creates a missing object. A non-apply write (POST/PUT/PATCH) by
//! `fieldManager` (default `"unknown"`) takes ownership of the fields it
//! changes, from everyone.
//!
//! # Simplifications versus a real apiserver
//!
//! - No schema validation, defaulting, admission or conversion; CRD
//!   versions share one store and only `apiVersion` is rewritten on read.
//!   Metadata is checked: names must be RFC 1123 subdomains (Services RFC 1035
//!   labels, Namespaces RFC 1123 labels) and label keys and values must be
//!   valid.
//! - Namespaces need not exist, and deleting a Namespace does not delete its
//!   contents.
//! - `application/strategic-merge-patch+json` is treated as a JSON merge patch
//!   (lists are replaced, `$patch` directives are not understood).
//! - Server-side apply list merging knows only the `name` and `type` keys
//!   (Service `ports` merge by `name`, `ownerReferences` by `name`,
//!   `finalizers` are atomic); a manager's apply never conflicts with its own
//!   non-apply entry; there is no `managedFields` reset via PUT (client
//!   supplied `managedFields` are ignored).
//! - Garbage collection is synchronous and `Foreground` propagation behaves
//!   like `Background`; `Orphan` strips the owner reference at once.
//! - Deletion is immediate (no grace periods). A delete that removes the
//!   object answers with a `Success` Status; one held by finalizers answers
//!   with the object.
//! - List ignores `limit`/`continue` (everything in one page) and
//!   `resourceVersion`; watch keeps the whole event log (never `410 Gone`),
//!   ignores `allowWatchBookmarks` (but honours `sendInitialEvents` with the
//!   initial-events-end bookmark) and ends the stream after `timeoutSeconds`.
//! - kube's default client retries 429, 503 and 504 on its own: inject other
//!   codes (409, 500) to see a single failure reach the code under test.

mod error;
mod fields;
mod patch;
mod resource;
mod selector;
mod server;
mod store;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Serialize;
use serde_json::Value;

pub use axum::http::Uri;
pub use error::FakeError;
pub use resource::{ResourceType, builtin_resources};

use server::Shared;
use store::Failure;

/// What a request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    /// GET of one object (or its `/status`).
    Get,
    /// GET of a collection.
    List,
    /// GET of a collection with `watch=true`.
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH with a merge, strategic-merge or JSON patch.
    Patch,
    /// PATCH with `application/apply-patch+yaml` (server-side apply).
    Apply,
    /// DELETE of one object.
    Delete,
    /// DELETE of a collection.
    DeleteCollection,
}

impl Verb {
    /// Whether the verb writes (create, update, patch, apply, delete,
    /// deletecollection).
    pub fn is_write(self) -> bool {
        !matches!(self, Verb::Get | Verb::List | Verb::Watch)
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Apply => "apply",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        })
    }
}

/// One write request a client made, in arrival order, whatever its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRecord {
    /// The verb.
    pub verb: Verb,
    /// API group (`""` for core).
    pub group: String,
    /// Plural resource name.
    pub plural: String,
    /// Namespace from the URL.
    pub namespace: Option<String>,
    /// Object name (from the URL, or the created object for POST).
    pub name: Option<String>,
    /// `Some("status")` for writes to the status subresource.
    pub subresource: Option<String>,
    /// The `fieldManager` query parameter, as sent.
    pub field_manager: Option<String>,
    /// Whether the write was `dryRun=All`.
    pub dry_run: bool,
    /// The HTTP status code of the response.
    pub code: u16,
}

/// Which requests an injected failure applies to; unset fields match
/// anything.
///
/// ```
/// use voice_agent_kube_fake::{FailMatcher, Verb};
/// let m = FailMatcher::any().verb(Verb::Apply).resource("deployments").namespace("ns");
/// # let _ = m;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FailMatcher {
    verb: Option<Verb>,
    resource: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

impl FailMatcher {
    /// Matches every request.
    pub fn any() -> Self {
        FailMatcher::default()
    }

    /// Matches `verb` on `resource` (see [`FailMatcher::resource`]).
    pub fn on(verb: Verb, resource: &str) -> Self {
        FailMatcher::any().verb(verb).resource(resource)
    }

    /// Only this verb.
    #[must_use]
    pub fn verb(mut self, verb: Verb) -> Self {
        self.verb = Some(verb);
        self
    }

    /// Only this resource: its plural, kind, singular, short name or
    /// `plural.group`.
    #[must_use]
    pub fn resource(mut self, resource: &str) -> Self {
        self.resource = Some(resource.to_string());
        self
    }

    /// Only this namespace.
    #[must_use]
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_string());
        self
    }

    /// Only this object name.
    #[must_use]
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// Only this subresource (`"status"`).
    #[must_use]
    pub fn subresource(mut self, subresource: &str) -> Self {
        self.subresource = Some(subresource.to_string());
        self
    }

    pub(crate) fn matches(
        &self,
        verb: Verb,
        rt: &ResourceType,
        ns: Option<&str>,
        name: Option<&str>,
        sub: Option<&str>,
    ) -> bool {
        self.verb.is_none_or(|v| v == verb)
            && self
                .resource
                .as_deref()
                .is_none_or(|r| rt.answers_to(r) || rt.group_resource() == r)
            && self.namespace.as_deref().is_none_or(|n| Some(n) == ns)
            && self.name.as_deref().is_none_or(|n| Some(n) == name)
            && self.subresource.as_deref().is_none_or(|s| Some(s) == sub)
    }
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.close();
        self.server.abort();
    }
}

/// A running fake API server. Cloning shares the same server; it stops when
/// the last clone is dropped.
#[derive(Clone, Debug)]
pub struct FakeApi {
    inner: Arc<Inner>,
}

impl FakeApi {
    /// Binds `127.0.0.1:0` and serves in a background task of the current
    /// Tokio runtime.
    ///
    /// # Panics
    ///
    /// If the port cannot be bound; see [`FakeApi::try_start`].
    pub async fn start() -> FakeApi {
        FakeApi::try_start()
            .await
            .expect("bind 127.0.0.1:0 for the fake API server")
    }

    /// Like [`FakeApi::start`], returning the bind error.
    pub async fn try_start() -> std::io::Result<FakeApi> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(addr));
        let app = server::router(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            // Serving ends only when the task is aborted.
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeApi {
            inner: Arc::new(Inner { shared, server }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.shared().addr
    }

    /// The base URL, `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The base URL as the `http::Uri` that `kube::Config::new` takes.
    pub fn kube_config_url(&self) -> Uri {
        Uri::builder()
            .scheme("http")
            .authority(self.addr().to_string())
            .path_and_query("/")
            .build()
            .unwrap_or_default()
    }

    /// Serves another kind (or replaces one with the same group, version
    /// and plural).
    pub fn register(&self, rt: ResourceType) {
        self.shared().with(|s| s.register(rt));
    }

    /// Serves the kinds a CRD defines, one per served version, with a
    /// `/status` subresource where the CRD declares one.
    pub fn register_crd(&self, crd: &CustomResourceDefinition) {
        self.shared().with(|s| {
            for rt in ResourceType::from_crd(crd) {
                s.register(rt);
            }
        });
    }

    /// The kind a name resolves to: `plural`, `Kind`, `plural.group`,
    /// `Kind.group`, `group/version/Kind`, `v1/Kind` or `group/version/plural`.
    /// Bare names prefer the earliest registered kind (core `events` before
    /// `events.k8s.io`).
    pub fn resource(&self, key: &str) -> Option<ResourceType> {
        self.shared().with(|s| s.resolve(key))
    }

    fn resolve(&self, key: &str) -> Result<ResourceType, FakeError> {
        self.resource(key)
            .ok_or_else(|| FakeError::UnknownResource(key.to_string()))
    }

    /// All stored objects of a kind (see [`FakeApi::resource`] for `key`),
    /// sorted by namespace and name. Unknown kinds give an empty list.
    pub fn objects(&self, key: &str) -> Vec<Value> {
        let Ok(rt) = self.resolve(key) else {
            return Vec::new();
        };
        self.shared()
            .with(|s| s.matching(&rt, None, &Default::default(), &Default::default()))
    }

    /// One stored object; `ns` is `None` for cluster-scoped kinds.
    pub fn get(&self, key: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        let rt = self.resolve(key).ok()?;
        self.shared()
            .with(|s| s.get(&rt, ns.unwrap_or_default(), name).ok())
    }

    /// Stores an object as is (typed k8s-openapi/kube objects or JSON with
    /// `apiVersion` and `kind`), creating or replacing it, without counting a
    /// client write or tracking field ownership. `status` is kept, missing
    /// namespace defaults to `"default"`, missing uid/creationTimestamp/
    /// generation are filled in, resourceVersion is assigned; watchers see
    /// ADDED or MODIFIED.
    pub fn put_direct<T: Serialize>(&self, obj: &T) -> Result<Value, FakeError> {
        let obj = serde_json::to_value(obj).map_err(|e| FakeError::Invalid(e.to_string()))?;
        self.shared().with(|s| s.put_direct(obj))
    }

    /// Replaces an object's `status`, as a controller would (a Deployment
    /// becoming available), without counting a client write. Bumps
    /// resourceVersion; watchers see MODIFIED.
    pub fn set_status(
        &self,
        key: &str,
        ns: Option<&str>,
        name: &str,
        status: Value,
    ) -> Result<Value, FakeError> {
        let rt = self.resolve(key)?;
        let ns = ns.unwrap_or_default();
        self.shared()
            .with(|s| {
                s.modify(&rt, ns, name, |o| {
                    if let Value::Object(m) = o {
                        m.insert("status".into(), status);
                    }
                })
            })
            .ok_or_else(|| FakeError::NotFound {
                resource: rt.group_resource(),
                namespace: (!ns.is_empty()).then(|| ns.to_string()),
                name: name.to_string(),
            })
    }

    /// Removes an object at once, ignoring its finalizers, and garbage-collects
    /// its dependents; returns what was removed. Not counted as a client write.
    pub fn delete_direct(&self, key: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        let rt = self.resolve(key).ok()?;
        self.shared()
            .with(|s| s.remove(&rt, ns.unwrap_or_default(), name))
    }

    /// Every write request received since start or [`FakeApi::reset_writes`].
    pub fn writes(&self) -> Vec<WriteRecord> {
        self.shared().with(|s| s.writes.clone())
    }

    /// How many requests with `verb` (reads included: get, list, watch) the
    /// kind `key` (see [`FakeApi::resource`]) received since start, whatever
    /// their outcome. Unknown kinds count 0.
    pub fn request_count(&self, verb: Verb, key: &str) -> u64 {
        let Ok(rt) = self.resolve(key) else {
            return 0;
        };
        self.shared().with(|s| {
            s.requests
                .get(&(verb, rt.group_resource()))
                .copied()
                .unwrap_or(0)
        })
    }

    /// Forgets the recorded writes.
    pub fn reset_writes(&self) {
        self.shared().with(|s| s.writes.clear());
    }

    /// Makes the next `times` requests matching `matcher` fail with a Status
    /// of this code and reason (message `"injected failure: ..."`), before
    /// they touch any state. Failures are consumed in the order added.
    pub fn fail_next(&self, matcher: FailMatcher, status_code: u16, reason: &str, times: usize) {
        self.shared().with(|s| {
            s.failures.push(Failure {
                matcher,
                code: status_code,
                reason: reason.to_string(),
                remaining: times,
            });
        });
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared().with(|s| s.rv)
    }
}
