//! The HTTP side: routing, discovery, verbs and watch streams.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State as AxumState};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::ApiError;
use crate::fields::Scope;
use crate::resource::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{DeleteOpts, EventType, Operation, PatchKind, State, WriteCtx, present};
use crate::{Verb, WriteRecord};

/// State shared by the server and the [`FakeApi`](crate::FakeApi) handle.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    notify: watch::Sender<u64>,
    pub closed: AtomicBool,
    pub addr: SocketAddr,
}

impl Shared {
    pub fn new(addr: SocketAddr) -> Self {
        let state = State::new();
        let (notify, _) = watch::channel(state.rv);
        Shared {
            state: Mutex::new(state),
            notify,
            closed: AtomicBool::new(false),
            addr,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the state and wakes watchers if it changed anything.
    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut state = self.lock();
        let before = state.rv;
        let out = f(&mut state);
        let after = state.rv;
        drop(state);
        if after != before {
            self.notify.send_replace(after);
        }
        out
    }

    /// Ends every watch stream.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.notify.send_modify(|_| {});
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

enum Reply {
    Json(u16, Value),
    Text(&'static str),
    Watch(Box<WatchSpec>),
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Self {
        Reply::Json(e.code, e.to_status())
    }
}

async fn handle(
    AxumState(shared): AxumState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match dispatch(&shared, &method, &uri, &headers, &body) {
        Reply::Json(code, v) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                v.to_string(),
            )
                .into_response()
        }
        Reply::Text(t) => (StatusCode::OK, t).into_response(),
        Reply::Watch(spec) => watch_response(shared, *spec),
    }
}

/// The query string as (name, value) pairs.
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

fn dispatch(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Reply {
    let params = match Query::<Vec<(String, String)>>::try_from_uri(uri) {
        Ok(Query(q)) => Params(q),
        Err(e) => return ApiError::bad_request(format!("invalid query: {e}")).into(),
    };
    let segs: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let aggregated = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=APIGroupDiscoveryList"));
    let get = method == Method::GET;
    match segs.as_slice() {
        ["healthz" | "livez" | "readyz"] if get => Reply::Text("ok"),
        ["version"] if get => Reply::Json(200, version()),
        ["api"] if get && aggregated => {
            Reply::Json(200, shared.with(|s| aggregated_discovery(s, true)))
        }
        ["api"] if get => Reply::Json(200, api_versions(shared.addr)),
        ["apis"] if get && aggregated => {
            Reply::Json(200, shared.with(|s| aggregated_discovery(s, false)))
        }
        ["apis"] if get => Reply::Json(200, shared.with(|s| group_list(s))),
        ["api", "v1"] if get => Reply::Json(200, shared.with(|s| resource_list(s, "", "v1"))),
        ["apis", group] if get => match shared.with(|s| api_group(s, group)) {
            Some(v) => Reply::Json(200, v),
            None => ApiError::no_route().into(),
        },
        ["apis", group, version] if get => {
            if shared.with(|s| {
                s.resources
                    .iter()
                    .any(|r| r.group == *group && r.version == *version)
            }) {
                Reply::Json(200, shared.with(|s| resource_list(s, group, version)))
            } else {
                ApiError::no_route().into()
            }
        }
        ["api", "v1", rest @ ..] if !rest.is_empty() => {
            resource(shared, "", "v1", rest, method, headers, &params, body)
        }
        ["apis", group, version, rest @ ..] if !rest.is_empty() => {
            resource(shared, group, version, rest, method, headers, &params, body)
        }
        _ => ApiError::no_route().into(),
    }
}

/// Where a resource request points.
struct Target {
    rt: ResourceType,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn route(state: &State, group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let namespaced_path = rest.len() >= 3 && rest[0] == "namespaces" && {
        // `/namespaces/{ns}/{plural}...` unless it is `/namespaces/{name}/{subresource}`.
        rest.len() > 3 || state.find(group, version, rest[2]).is_some()
    };
    let (ns, rest) = if namespaced_path {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    let (plural, name, sub) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some((*name).to_string()), None),
        [plural, name, sub] => (*plural, Some((*name).to_string()), Some((*sub).to_string())),
        _ => return Err(ApiError::no_route()),
    };
    let rt = state
        .find(group, version, plural)
        .ok_or_else(ApiError::no_route)?;
    if ns.is_some() && !rt.namespaced {
        return Err(ApiError::no_route());
    }
    if rt.namespaced && ns.is_none() && name.is_some() {
        return Err(ApiError::no_route());
    }
    if let Some(sub) = &sub
        && !(sub == "status" && rt.status_subresource)
    {
        return Err(ApiError::no_route());
    }
    Ok(Target { rt, ns, name, sub })
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

#[allow(clippy::too_many_arguments)]
fn resource(
    shared: &Arc<Shared>,
    group: &str,
    version: &str,
    rest: &[&str],
    method: &Method,
    headers: &HeaderMap,
    params: &Params,
    body: &[u8],
) -> Reply {
    let target = match shared.with(|s| route(s, group, version, rest)) {
        Ok(t) => t,
        Err(e) => return e.into(),
    };
    let ctype = content_type(headers);
    let verb = match (method, &target.name) {
        (&Method::GET, Some(_)) => Verb::Get,
        (&Method::GET, None) if params.flag("watch") => Verb::Watch,
        (&Method::GET, None) => Verb::List,
        (&Method::POST, None) => Verb::Create,
        (&Method::PUT, Some(_)) => Verb::Update,
        (&Method::PATCH, Some(_)) if ctype == "application/apply-patch+yaml" => Verb::Apply,
        (&Method::PATCH, Some(_)) => Verb::Patch,
        (&Method::DELETE, Some(_)) => Verb::Delete,
        (&Method::DELETE, None) => Verb::DeleteCollection,
        _ => {
            return ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method})"
            ))
            .into();
        }
    };
    if verb == Verb::Create && target.rt.namespaced && target.ns.is_none() {
        return ApiError::method_not_allowed(
            "create requires a namespace in the URL for a namespaced resource",
        )
        .into();
    }
    let field_manager = params.get("fieldManager").map(str::to_string);
    let delete_body: Value = if matches!(verb, Verb::Delete | Verb::DeleteCollection)
        && !body.is_empty()
    {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return ApiError::bad_request(format!("error decoding DeleteOptions: {e}")).into();
            }
        }
    } else {
        Value::Null
    };
    let dry_run = params.get("dryRun") == Some("All")
        || delete_body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|v| v == "All"));
    let record_name = target.name.clone().or_else(|| {
        (verb == Verb::Create)
            .then(|| serde_json::from_slice::<Value>(body).ok())
            .flatten()
            .and_then(|b| {
                b.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
    });

    shared.with(|state| {
        *state
            .requests
            .entry((verb, target.rt.group_resource()))
            .or_insert(0) += 1;
        let failure = state.take_failure(
            verb,
            &target.rt,
            target.ns.as_deref(),
            target.name.as_deref(),
            target.sub.as_deref(),
        );
        let reply = match failure {
            Some(err) => err.into(),
            None => execute(
                state,
                verb,
                &target,
                params,
                &ctype,
                body,
                &delete_body,
                dry_run,
                field_manager.clone(),
            ),
        };
        if verb.is_write() {
            let code = match &reply {
                Reply::Json(code, _) => *code,
                _ => 200,
            };
            let name = match (&reply, verb) {
                (Reply::Json(201, obj), Verb::Create | Verb::Apply) => obj
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                _ => None,
            }
            .or(record_name);
            state.writes.push(WriteRecord {
                verb,
                group: target.rt.group.clone(),
                plural: target.rt.plural.clone(),
                namespace: target.ns.clone(),
                name,
                subresource: target.sub.clone(),
                field_manager,
                dry_run,
                code,
            });
        }
        reply
    })
}

#[allow(clippy::too_many_arguments)]
fn execute(
    state: &mut State,
    verb: Verb,
    target: &Target,
    params: &Params,
    ctype: &str,
    body: &[u8],
    delete_body: &Value,
    dry_run: bool,
    field_manager: Option<String>,
) -> Reply {
    let rt = &target.rt;
    let ns = target.ns.as_deref().unwrap_or_default();
    let name = target.name.as_deref().unwrap_or_default();
    let selectors = || -> Result<(LabelSelector, FieldSelector), ApiError> {
        let ls = LabelSelector::parse(params.get("labelSelector").unwrap_or_default())
            .map_err(ApiError::bad_request)?;
        let fs = FieldSelector::parse(params.get("fieldSelector").unwrap_or_default())
            .map_err(ApiError::bad_request)?;
        Ok((ls, fs))
    };
    let scope = if target.sub.is_some() {
        Scope::Status
    } else if rt.status_subresource {
        Scope::Main
    } else {
        Scope::All
    };
    let ctx = WriteCtx {
        manager: field_manager
            .clone()
            .unwrap_or_else(|| "unknown".to_string()),
        dry_run,
        scope,
    };
    let json_body = || -> Result<Value, ApiError> {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))
    };
    let result: Result<(u16, Value), ApiError> = match verb {
        Verb::Get => state.get(rt, ns, name).map(|v| (200, v)),
        Verb::List => {
            selectors().map(|(ls, fs)| (200, state.list(rt, target.ns.as_deref(), &ls, &fs)))
        }
        Verb::Watch => {
            return match watch_spec(state, target, params) {
                Ok(spec) => Reply::Watch(Box::new(spec)),
                Err(e) => e.into(),
            };
        }
        Verb::Create => json_body()
            .and_then(|b| state.create(rt, ns, b, &ctx, Operation::Update))
            .map(|v| (201, v)),
        Verb::Update => json_body()
            .and_then(|b| state.update(rt, ns, name, b, &ctx))
            .map(|v| (200, v)),
        Verb::Patch => {
            let kind = match ctype {
                "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                    PatchKind::Merge
                }
                "application/json-patch+json" => PatchKind::Json,
                other => {
                    return ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"),
                    )
                    .into();
                }
            };
            state
                .patch(rt, ns, name, kind, body, &ctx)
                .map(|v| (200, v))
        }
        Verb::Apply => match field_manager {
            None => Err(ApiError::bad_request(
                "PATCH /apply requires a non-empty fieldManager query parameter",
            )),
            Some(_) => {
                let existed = state.get(rt, ns, name).is_ok();
                state
                    .apply(rt, ns, name, body, &ctx, params.flag("force"))
                    .map(|v| (if existed { 200 } else { 201 }, v))
            }
        },
        Verb::Delete => state
            .delete(rt, ns, name, &delete_opts(delete_body, dry_run))
            .map(|v| (200, v)),
        Verb::DeleteCollection => selectors().and_then(|(ls, fs)| {
            let opts = delete_opts(delete_body, dry_run);
            let victims = state.matching(rt, target.ns.as_deref(), &ls, &fs);
            for v in victims {
                let vns = v
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let vname = v
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                state.delete(rt, vns, vname, &opts)?;
            }
            Ok((
                200,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
            ))
        }),
    };
    match result {
        Ok((code, v)) => Reply::Json(code, v),
        Err(e) => e.into(),
    }
}

fn delete_opts(body: &Value, dry_run: bool) -> DeleteOpts {
    let pre = body.get("preconditions");
    let s = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    DeleteOpts {
        orphan: body.get("propagationPolicy").and_then(Value::as_str) == Some("Orphan")
            || body.get("orphanDependents").and_then(Value::as_bool) == Some(true),
        uid: s(pre.and_then(|p| p.get("uid"))),
        resource_version: s(pre.and_then(|p| p.get("resourceVersion"))),
        dry_run,
    }
}

// ---------------------------------------------------------------- discovery

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-kube-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn api_versions(addr: SocketAddr) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string()}],
    })
}

/// Groups in registration order, each with its versions in registration order.
fn groups(state: &State) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for r in state.resources.iter().filter(|r| !r.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, vs)) => {
                if !vs.contains(&r.version) {
                    vs.push(r.version.clone());
                }
            }
            None => out.push((r.group.clone(), vec![r.version.clone()])),
        }
    }
    out
}

fn group_json(group: &str, versions: &[String]) -> Value {
    let gvs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": gvs,
        "preferredVersion": gvs.first().cloned().unwrap_or(Value::Null),
    })
}

fn group_list(state: &State) -> Value {
    let gs: Vec<Value> = groups(state)
        .iter()
        .map(|(g, vs)| group_json(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs})
}

fn api_group(state: &State, group: &str) -> Option<Value> {
    let (g, vs) = groups(state).into_iter().find(|(g, _)| g == group)?;
    let mut v = group_json(&g, &vs);
    if let Value::Object(m) = &mut v {
        m.insert("kind".into(), json!("APIGroup"));
        m.insert("apiVersion".into(), json!("v1"));
    }
    Some(v)
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn resource_list(state: &State, group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for r in state
        .resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let mut res = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
        });
        if let Value::Object(m) = &mut res {
            if !r.short_names.is_empty() {
                m.insert("shortNames".into(), json!(r.short_names));
            }
            if !r.categories.is_empty() {
                m.insert("categories".into(), json!(r.categories));
            }
        }
        resources.push(res);
        if r.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

fn aggregated_discovery(state: &State, core: bool) -> Value {
    let mut gs: Vec<(String, Vec<String>)> = if core {
        vec![(String::new(), vec!["v1".into()])]
    } else {
        groups(state)
    };
    gs.retain(|(g, _)| g.is_empty() == core);
    let items: Vec<Value> = gs
        .iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = state
                        .resources
                        .iter()
                        .filter(|r| r.group == *g && r.version == *v)
                        .map(|r| {
                            let kind = json!({"group": r.group, "version": r.version, "kind": r.kind});
                            let subs: Vec<Value> = if r.status_subresource {
                                vec![json!({"subresource": "status", "responseKind": kind, "verbs": ["get", "patch", "update"]})]
                            } else {
                                Vec::new()
                            };
                            json!({
                                "resource": r.plural,
                                "responseKind": kind,
                                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": r.singular,
                                "verbs": VERBS,
                                "shortNames": r.short_names,
                                "categories": r.categories,
                                "subresources": subs,
                            })
                        })
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": g}, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

// ---------------------------------------------------------------- watch

enum Start {
    /// Synthetic ADDED events for the current objects first; with a
    /// BOOKMARK marking their end if `sendInitialEvents` was asked for.
    Initial { bookmark: bool },
    /// Events after this resourceVersion.
    After(u64),
}

struct WatchSpec {
    rt: ResourceType,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    start: Start,
    timeout: Option<Duration>,
}

fn watch_spec(state: &State, target: &Target, params: &Params) -> Result<WatchSpec, ApiError> {
    let labels = LabelSelector::parse(params.get("labelSelector").unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(params.get("fieldSelector").unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    let rv = params.get("resourceVersion").unwrap_or_default();
    let start = if params.flag("sendInitialEvents") {
        Start::Initial { bookmark: true }
    } else if rv.is_empty() || rv == "0" {
        Start::Initial { bookmark: false }
    } else {
        let n: u64 = rv
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
        if n > state.rv {
            return Err(ApiError::new(
                504,
                "Timeout",
                format!("Too large resource version: {n}, current: {}", state.rv),
            ));
        }
        Start::After(n)
    };
    let timeout = match params.get("timeoutSeconds") {
        Some(t) => Some(Duration::from_secs(t.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid timeoutSeconds {t:?}"))
        })?)),
        None => None,
    };
    Ok(WatchSpec {
        rt: target.rt.clone(),
        ns: target.ns.clone(),
        labels,
        fields,
        start,
        timeout,
    })
}

struct WatchState {
    shared: Arc<Shared>,
    spec: WatchSpec,
    rx: watch::Receiver<u64>,
    cursor: Option<u64>,
    pending: VecDeque<String>,
    deadline: Option<Instant>,
}

fn line(etype: &str, obj: &Value) -> String {
    let mut s = json!({"type": etype, "object": obj}).to_string();
    s.push('\n');
    s
}

impl WatchState {
    fn matches(&self, obj: &Value) -> bool {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        self.spec.ns.as_deref().is_none_or(|n| n == ns)
            && self.spec.labels.matches(obj)
            && self.spec.fields.matches(obj)
    }

    /// Moves new events from the log into `pending`.
    fn collect(&mut self) {
        let shared = Arc::clone(&self.shared);
        let state = shared.lock();
        let rt = &self.spec.rt;
        if self.cursor.is_none() {
            match self.spec.start {
                Start::Initial { bookmark } => {
                    let items = state.matching(
                        rt,
                        self.spec.ns.as_deref(),
                        &self.spec.labels,
                        &self.spec.fields,
                    );
                    for obj in items {
                        self.pending.push_back(line("ADDED", &obj));
                    }
                    if bookmark {
                        let mark = json!({
                            "kind": rt.kind,
                            "apiVersion": rt.api_version(),
                            "metadata": {
                                "resourceVersion": state.rv.to_string(),
                                "annotations": {"k8s.io/initial-events-end": "true"},
                            },
                        });
                        self.pending.push_back(line("BOOKMARK", &mark));
                    }
                    self.cursor = Some(state.rv);
                }
                Start::After(rv) => self.cursor = Some(rv),
            }
        }
        let cursor = self.cursor.unwrap_or_default();
        if let Some(store) = state.stores.get(&(rt.group.clone(), rt.plural.clone())) {
            let start = store.events.partition_point(|e| e.rv <= cursor);
            for e in &store.events[start..] {
                let now = self.matches(&e.obj);
                let out = match e.etype {
                    EventType::Added => now.then_some("ADDED"),
                    EventType::Deleted => now.then_some("DELETED"),
                    EventType::Modified => {
                        let before = e.old.as_ref().is_some_and(|o| self.matches(o));
                        match (before, now) {
                            (true, true) => Some("MODIFIED"),
                            (false, true) => Some("ADDED"),
                            (true, false) => Some("DELETED"),
                            (false, false) => None,
                        }
                    }
                };
                if let Some(t) = out {
                    self.pending.push_back(line(t, &present(&e.obj, rt)));
                }
            }
        }
        self.cursor = Some(state.rv);
    }
}

fn watch_response(shared: Arc<Shared>, spec: WatchSpec) -> Response {
    let rx = shared.notify.subscribe();
    let deadline = spec.timeout.map(|t| Instant::now() + t);
    let st = WatchState {
        shared,
        spec,
        rx,
        cursor: None,
        pending: VecDeque::new(),
        deadline,
    };
    let stream = futures::stream::unfold(st, |mut st| async move {
        loop {
            if st.shared.closed.load(Ordering::SeqCst) {
                return None;
            }
            if let Some(l) = st.pending.pop_front() {
                return Some((Ok::<_, Infallible>(l), st));
            }
            if st.deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            st.rx.borrow_and_update();
            st.collect();
            if !st.pending.is_empty() {
                continue;
            }
            match st.deadline {
                Some(d) => {
                    tokio::select! {
                        changed = st.rx.changed() => if changed.is_err() { return None },
                        () = tokio::time::sleep_until(d) => return None,
                    }
                }
                None => {
                    if st.rx.changed().await.is_err() {
                        return None;
                    }
                }
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
