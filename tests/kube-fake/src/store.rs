//! The in-memory object store and the semantics of every verb.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::error::{ApiError, FakeError};
use crate::fields::{self, FieldPath, Scope};
use crate::patch::{self, JsonPatchError};
use crate::resource::{ResourceType, builtin_resources};
use crate::selector::{FieldSelector, LabelSelector};
use crate::{FailMatcher, Verb, WriteRecord};

/// Whether a `managedFields` entry came from an apply or another write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    Apply,
    Update,
}

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Manager {
    pub manager: String,
    pub operation: Operation,
    pub subresource: String,
    pub api_version: String,
    pub time: String,
    pub fields: BTreeSet<FieldPath>,
}

impl Manager {
    fn same_entry(&self, manager: &str, op: Operation, sub: &str) -> bool {
        self.manager == manager && self.operation == op && self.subresource == sub
    }

    /// Everything but the timestamp.
    fn identity(&self) -> (&str, Operation, &str, &str, &BTreeSet<FieldPath>) {
        (
            &self.manager,
            self.operation,
            &self.subresource,
            &self.api_version,
            &self.fields,
        )
    }
}

/// A stored object and who owns which of its fields.
#[derive(Clone, Debug)]
pub(crate) struct Stored {
    pub obj: Value,
    pub managers: Vec<Manager>,
}

/// The type of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One entry in a kind's event log.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub rv: u64,
    pub etype: EventType,
    pub obj: Value,
    /// The previous state, for MODIFIED (selector transitions).
    pub old: Option<Value>,
}

/// The objects of one group/plural and their event log.
#[derive(Default, Debug)]
pub(crate) struct Store {
    pub objects: BTreeMap<(String, String), Stored>,
    pub events: Vec<Event>,
}

/// (group, plural)
pub(crate) type StoreKey = (String, String);

/// An injected failure.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub matcher: FailMatcher,
    pub code: u16,
    pub reason: String,
    pub remaining: usize,
}

/// What a write request asks for besides its body.
#[derive(Clone, Debug)]
pub(crate) struct WriteCtx {
    pub manager: String,
    pub dry_run: bool,
    pub scope: Scope,
}

impl WriteCtx {
    fn subresource(&self) -> &'static str {
        if self.scope == Scope::Status {
            "status"
        } else {
            ""
        }
    }
}

/// Which kind of PATCH body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PatchKind {
    Merge,
    Json,
}

/// DELETE options.
#[derive(Clone, Debug, Default)]
pub(crate) struct DeleteOpts {
    pub orphan: bool,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
}

/// Everything the fake knows.
#[derive(Debug)]
pub(crate) struct State {
    pub resources: Vec<ResourceType>,
    pub stores: BTreeMap<StoreKey, Store>,
    pub rv: u64,
    counter: u64,
    pub writes: Vec<WriteRecord>,
    /// Requests by verb and `group/plural` (reads included).
    pub requests: BTreeMap<(crate::Verb, String), u64>,
    pub failures: Vec<Failure>,
}

pub(crate) fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn uid_for(n: u64) -> String {
    let hi = splitmix(n);
    let lo = splitmix(n ^ 0x5555_AAAA_5555_AAAA);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0x0fff,
        0x8000 | (lo >> 48 & 0x3fff),
        lo & 0xffff_ffff_ffff
    )
}

fn name_suffix(n: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = splitmix(n);
    (0..5)
        .map(|_| {
            let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
            x /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

fn meta_str<'a>(obj: &'a Value, key: &str) -> &'a str {
    meta(obj)
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let Value::Object(root) = obj else {
        unreachable!("just made an object")
    };
    let m = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    match m {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

fn has_finalizers(obj: &Value) -> bool {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

fn is_deleting(obj: &Value) -> bool {
    meta(obj).is_some_and(|m| m.get("deletionTimestamp").is_some_and(|t| !t.is_null()))
}

fn owner_uids(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The object without metadata and status: what `generation` tracks.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Value::Object(m) = &mut v {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
    }
    v
}

fn without_volatile(obj: &Value) -> Value {
    let mut v = obj.clone();
    let m = meta_mut(&mut v);
    m.remove("managedFields");
    m.remove("resourceVersion");
    v
}

/// Sets `apiVersion` and `kind` as the request's version serves them.
pub(crate) fn present(obj: &Value, rt: &ResourceType) -> Value {
    let mut v = obj.clone();
    if let Value::Object(m) = &mut v {
        m.insert("apiVersion".into(), Value::String(rt.api_version()));
        m.insert("kind".into(), Value::String(rt.kind.clone()));
    }
    v
}

fn is_dns_label(s: &str, max: usize, letter_first: bool) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && (!letter_first || b[0].is_ascii_lowercase())
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(|l| is_dns_label(l, 253, false))
}

fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    b.is_empty()
        || (b.len() <= 63
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric())
}

fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && is_label_value(name)
}

/// Metadata checks a real apiserver makes on every write: the name's format
/// and labels' keys and values.
fn validate_meta(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    let name = meta_str(obj, "name");
    let name_ok = match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "services") => is_dns_label(name, 63, true),
        ("", "namespaces") => is_dns_label(name, 63, false),
        _ => is_dns_subdomain(name),
    };
    if !name_ok {
        return Err(ApiError::invalid(
            rt,
            name,
            "metadata.name",
            &format!(
                "Invalid value: {name:?}: a lowercase RFC 1123 name must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        ));
    }
    if let Some(labels) = meta(obj).and_then(|m| m.get("labels")) {
        let Some(labels) = labels.as_object() else {
            return Err(ApiError::invalid(
                rt,
                name,
                "metadata.labels",
                "must be a map of strings",
            ));
        };
        for (k, v) in labels {
            if !is_qualified_name(k) {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "metadata.labels",
                    &format!(
                        "Invalid value: {k:?}: name part must consist of alphanumeric characters, '-', '_' or '.', at most 63 characters"
                    ),
                ));
            }
            let Some(v) = v.as_str() else {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "metadata.labels",
                    &format!("value of {k:?} must be a string"),
                ));
            };
            if !is_label_value(v) {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "metadata.labels",
                    &format!(
                        "Invalid value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', at most 63 characters, and must start and end with an alphanumeric character"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Checks `apiVersion` and `kind` of a request body, when present.
fn check_type(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    if let Some(kind) = obj.get("kind").and_then(Value::as_str)
        && kind != rt.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind {kind:?} of the object does not match the expected kind {:?}",
            rt.kind
        )));
    }
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str) {
        let group = av.rsplit_once('/').map(|(g, _)| g).unwrap_or_default();
        if group != rt.group {
            return Err(ApiError::bad_request(format!(
                "the apiVersion {av:?} of the object does not match the expected group {:?}",
                rt.group
            )));
        }
    }
    Ok(())
}

const SYSTEM_METADATA: [&str; 9] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
];

fn render_managers(obj: &mut Value, managers: &[Manager]) {
    let m = meta_mut(obj);
    if managers.is_empty() {
        m.remove("managedFields");
        return;
    }
    let entries: Vec<Value> = managers
        .iter()
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": match e.operation { Operation::Apply => "Apply", Operation::Update => "Update" },
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields::render_fields(&e.fields),
            });
            if !e.subresource.is_empty()
                && let Value::Object(o) = &mut v
            {
                o.insert("subresource".into(), Value::String(e.subresource.clone()));
            }
            v
        })
        .collect();
    m.insert("managedFields".into(), Value::Array(entries));
}

/// A non-apply write by `manager` takes the fields it changed from everyone;
/// fields it removed are owned by nobody.
fn take_ownership(
    managers: &mut Vec<Manager>,
    old: &Value,
    new: &Value,
    manager: &str,
    sub: &str,
    api_version: &str,
) {
    let before = fields::leaves(old, Scope::All);
    let after = fields::leaves(new, Scope::All);
    let changed: Vec<&FieldPath> = after
        .iter()
        .filter(|(p, v)| before.get(*p) != Some(*v))
        .map(|(p, _)| p)
        .collect();
    let removed: Vec<&FieldPath> = before.keys().filter(|p| !after.contains_key(*p)).collect();
    for m in managers.iter_mut() {
        let acting = m.same_entry(manager, Operation::Update, sub);
        m.fields.retain(|q| {
            !removed.iter().any(|p| fields::overlaps(p, q))
                && (acting || !changed.iter().any(|p| fields::overlaps(p, q)))
        });
    }
    if changed.is_empty() {
        return;
    }
    let entry = match managers
        .iter()
        .position(|m| m.same_entry(manager, Operation::Update, sub))
    {
        Some(i) => &mut managers[i],
        None => {
            managers.push(Manager {
                manager: manager.to_string(),
                operation: Operation::Update,
                subresource: sub.to_string(),
                api_version: api_version.to_string(),
                time: String::new(),
                fields: BTreeSet::new(),
            });
            let last = managers.len() - 1;
            &mut managers[last]
        }
    };
    entry.api_version = api_version.to_string();
    entry.fields.extend(changed.into_iter().cloned());
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))
}

impl State {
    pub fn new() -> Self {
        State {
            resources: builtin_resources(),
            stores: BTreeMap::new(),
            rv: 1,
            counter: 0,
            writes: Vec::new(),
            requests: BTreeMap::new(),
            failures: Vec::new(),
        }
    }

    pub fn register(&mut self, rt: ResourceType) {
        match self
            .resources
            .iter_mut()
            .find(|r| r.group == rt.group && r.version == rt.version && r.plural == rt.plural)
        {
            Some(existing) => *existing = rt,
            None => self.resources.push(rt),
        }
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    /// Resolves `plural`, `Kind`, `plural.group`, `Kind.group`,
    /// `group/version/Kind`, `version/Kind` (core) or `group/version/plural`.
    pub fn resolve(&self, key: &str) -> Option<ResourceType> {
        let found = if let Some((gv, last)) = key.rsplit_once('/') {
            let (group, version) = gv.rsplit_once('/').unwrap_or(("", gv));
            self.resources.iter().find(|r| {
                r.group == group && r.version == version && (r.kind == last || r.plural == last)
            })
        } else if let Some((first, group)) = key.split_once('.') {
            self.resources
                .iter()
                .find(|r| r.group == group && r.answers_to(first))
        } else {
            self.resources
                .iter()
                .find(|r| r.plural == key || r.kind == key)
                .or_else(|| self.resources.iter().find(|r| r.answers_to(key)))
        };
        found.cloned()
    }

    fn store_key(rt: &ResourceType) -> StoreKey {
        (rt.group.clone(), rt.plural.clone())
    }

    fn store(&mut self, rt: &ResourceType) -> &mut Store {
        self.stores.entry(Self::store_key(rt)).or_default()
    }

    fn stored(&self, rt: &ResourceType, ns: &str, name: &str) -> Option<&Stored> {
        self.stores
            .get(&Self::store_key(rt))
            .and_then(|s| s.objects.get(&(ns.to_string(), name.to_string())))
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn next_counter(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn record(&mut self, key: &StoreKey, etype: EventType, obj: Value, old: Option<Value>) {
        let rv = self.rv;
        self.stores
            .entry(key.clone())
            .or_default()
            .events
            .push(Event {
                rv,
                etype,
                obj,
                old,
            });
    }

    pub fn uid_exists(&self, uid: &str) -> bool {
        self.stores
            .values()
            .flat_map(|s| s.objects.values())
            .any(|o| meta_str(&o.obj, "uid") == uid)
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.stored(rt, ns, name)
            .map(|s| present(&s.obj, rt))
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    pub fn matching(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        ls: &LabelSelector,
        fs: &FieldSelector,
    ) -> Vec<Value> {
        self.stores
            .get(&Self::store_key(rt))
            .map(|s| {
                s.objects
                    .iter()
                    .filter(|((ons, _), o)| {
                        ns.is_none_or(|n| n == ons) && ls.matches(&o.obj) && fs.matches(&o.obj)
                    })
                    .map(|(_, o)| present(&o.obj, rt))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        ls: &LabelSelector,
        fs: &FieldSelector,
    ) -> Value {
        json!({
            "kind": format!("{}List", rt.kind),
            "apiVersion": rt.api_version(),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": self.matching(rt, ns, ls, fs),
        })
    }

    /// POST, and apply to an object that does not exist.
    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        body: Value,
        ctx: &WriteCtx,
        op: Operation,
    ) -> Result<Value, ApiError> {
        check_type(rt, &body)?;
        let mut obj = body;
        let m = meta_mut(&mut obj);
        if rt.namespaced {
            let body_ns = m
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            m.insert("namespace".into(), Value::String(ns.to_string()));
        } else {
            m.remove("namespace");
        }
        let mut name = m
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            let prefix = m
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    rt,
                    "",
                    "metadata.name",
                    "Required value: name or generateName is required",
                ));
            }
            name = format!("{prefix}{}", name_suffix(self.counter + 1));
        }
        for k in SYSTEM_METADATA.iter().skip(2) {
            m.remove(*k);
        }
        m.remove("selfLink");
        m.insert("name".into(), Value::String(name.clone()));
        validate_meta(rt, &obj)?;
        if self.stored(rt, ns, &name).is_some() {
            return Err(ApiError::already_exists(rt, &name));
        }
        if let Value::Object(root) = &mut obj {
            if rt.status_subresource {
                root.remove("status");
            }
            root.insert("apiVersion".into(), Value::String(rt.api_version()));
            root.insert("kind".into(), Value::String(rt.kind.clone()));
        }
        let n = if ctx.dry_run {
            self.counter + 1
        } else {
            self.next_counter()
        };
        let m = meta_mut(&mut obj);
        m.insert("uid".into(), Value::String(uid_for(n)));
        m.insert("creationTimestamp".into(), Value::String(now()));
        m.insert("generation".into(), json!(1));
        let owned: BTreeSet<FieldPath> = fields::leaves(&obj, Scope::All).into_keys().collect();
        let managers = if owned.is_empty() {
            Vec::new()
        } else {
            vec![Manager {
                manager: ctx.manager.clone(),
                operation: op,
                subresource: String::new(),
                api_version: rt.api_version(),
                time: now(),
                fields: owned,
            }]
        };
        render_managers(&mut obj, &managers);
        if ctx.dry_run {
            return Ok(obj);
        }
        let rv = self.next_rv();
        meta_mut(&mut obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
        let key = Self::store_key(rt);
        self.store(rt).objects.insert(
            (ns.to_string(), name),
            Stored {
                obj: obj.clone(),
                managers,
            },
        );
        self.record(&key, EventType::Added, obj.clone(), None);
        Ok(obj)
    }

    /// Validates a replacement for `cur` and keeps what the write may not change.
    fn prepare(
        rt: &ResourceType,
        cur: &Value,
        candidate: Value,
        name: &str,
        scope: Scope,
    ) -> Result<Value, ApiError> {
        check_type(rt, &candidate)?;
        let body_name = meta_str(&candidate, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_ns = meta_str(&candidate, "namespace");
        if rt.namespaced && !body_ns.is_empty() && body_ns != meta_str(cur, "namespace") {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let rv = meta_str(&candidate, "resourceVersion");
        if !rv.is_empty() && rv != meta_str(cur, "resourceVersion") {
            return Err(ApiError::conflict(
                rt,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        let mut next = if scope == Scope::Status {
            let mut next = cur.clone();
            if let Value::Object(m) = &mut next {
                match candidate.get("status") {
                    Some(s) if !s.is_null() => m.insert("status".into(), s.clone()),
                    _ => m.remove("status"),
                };
            }
            next
        } else {
            let mut next = candidate;
            let cur_meta = meta(cur).cloned().unwrap_or_default();
            let m = meta_mut(&mut next);
            m.remove("selfLink");
            for k in SYSTEM_METADATA {
                match cur_meta.get(k) {
                    Some(v) => m.insert(k.to_string(), v.clone()),
                    None => m.remove(k),
                };
            }
            if let Value::Object(root) = &mut next
                && scope == Scope::Main
            {
                match cur.get("status") {
                    Some(s) => root.insert("status".into(), s.clone()),
                    None => root.remove("status"),
                };
            }
            next
        };
        if let Value::Object(root) = &mut next {
            root.insert("apiVersion".into(), Value::String(rt.api_version()));
            root.insert("kind".into(), Value::String(rt.kind.clone()));
        }
        validate_meta(rt, &next)?;
        Ok(next)
    }

    /// Bumps generation, stamps managedFields and stores `next`, unless
    /// nothing changed (then the current object is returned untouched).
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        cur: &Stored,
        mut next: Value,
        mut managers: Vec<Manager>,
        acting: (&str, Operation, &str),
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let generation = meta(&cur.obj)
            .and_then(|m| m.get("generation"))
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let generation = if spec_part(&cur.obj) == spec_part(&next) {
            generation
        } else {
            generation + 1
        };
        meta_mut(&mut next).insert("generation".into(), json!(generation));
        managers.retain(|m| !m.fields.is_empty());
        let same_managers = managers.len() == cur.managers.len()
            && managers
                .iter()
                .zip(&cur.managers)
                .all(|(a, b)| a.identity() == b.identity());
        if same_managers && without_volatile(&next) == without_volatile(&cur.obj) {
            return Ok(present(&cur.obj, rt));
        }
        let stamp = now();
        for m in managers.iter_mut() {
            if m.same_entry(acting.0, acting.1, acting.2) || m.time.is_empty() {
                m.time = stamp.clone();
            }
        }
        render_managers(&mut next, &managers);
        if dry_run {
            return Ok(next);
        }
        let rv = self.next_rv();
        meta_mut(&mut next).insert("resourceVersion".into(), Value::String(rv.to_string()));
        let key = Self::store_key(rt);
        self.store(rt).objects.insert(
            (ns.to_string(), name.to_string()),
            Stored {
                obj: next.clone(),
                managers,
            },
        );
        self.record(
            &key,
            EventType::Modified,
            next.clone(),
            Some(cur.obj.clone()),
        );
        if is_deleting(&next) && !has_finalizers(&next) {
            self.remove_object(&key, ns, name);
        }
        Ok(next)
    }

    fn current(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Stored, ApiError> {
        self.stored(rt, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// PUT.
    pub fn update(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        body: Value,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        let cur = self.current(rt, ns, name)?;
        let next = Self::prepare(rt, &cur.obj, body, name, ctx.scope)?;
        self.write_update(rt, ns, name, &cur, next, ctx)
    }

    fn write_update(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        cur: &Stored,
        next: Value,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        let mut managers = cur.managers.clone();
        let sub = ctx.subresource();
        take_ownership(
            &mut managers,
            &cur.obj,
            &next,
            &ctx.manager,
            sub,
            &rt.api_version(),
        );
        self.finish(
            rt,
            ns,
            name,
            cur,
            next,
            managers,
            (&ctx.manager, Operation::Update, sub),
            ctx.dry_run,
        )
    }

    /// PATCH with a merge or JSON patch.
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        kind: PatchKind,
        body: &[u8],
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        let cur = self.current(rt, ns, name)?;
        let patch = parse_body(body)?;
        let mut candidate = cur.obj.clone();
        match kind {
            PatchKind::Merge => {
                if !patch.is_object() {
                    return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                }
                patch::merge_patch(&mut candidate, &patch);
            }
            PatchKind::Json => patch::json_patch(&mut candidate, &patch).map_err(|e| match e {
                JsonPatchError::Malformed(m) => ApiError::bad_request(m),
                JsonPatchError::Failed(m) => ApiError::invalid(rt, name, "patch", &m),
            })?,
        }
        let next = Self::prepare(rt, &cur.obj, candidate, name, ctx.scope)?;
        self.write_update(rt, ns, name, &cur, next, ctx)
    }

    /// PATCH with `application/apply-patch+yaml`: server-side apply.
    pub fn apply(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        body: &[u8],
        ctx: &WriteCtx,
        force: bool,
    ) -> Result<Value, ApiError> {
        let config: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => serde_yaml_ng::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
        };
        if !config.is_object() {
            return Err(ApiError::bad_request(
                "an apply configuration must be an object",
            ));
        }
        let api_version = config
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let kind = config
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if api_version.is_empty() || kind.is_empty() {
            return Err(ApiError::bad_request(
                "error decoding YAML: Object 'Kind' or 'apiVersion' is missing in the apply configuration",
            ));
        }
        if api_version != rt.api_version() {
            return Err(ApiError::bad_request(format!(
                "the apiVersion {api_version:?} of the apply configuration does not match the request ({})",
                rt.api_version()
            )));
        }
        check_type(rt, &config)?;
        let body_name = meta_str(&config, "name");
        if body_name.is_empty() {
            return Err(ApiError::bad_request(
                "metadata.name is required in an apply configuration",
            ));
        }
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_ns = meta_str(&config, "namespace");
        if rt.namespaced && !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        // What this apply may touch.
        let mut config = config;
        if let Value::Object(root) = &mut config {
            match ctx.scope {
                Scope::Main => {
                    root.remove("status");
                }
                Scope::Status => root.retain(|k, _| {
                    matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status")
                }),
                Scope::All => {}
            }
        }
        let Some(cur) = self.stored(rt, ns, name).cloned() else {
            if ctx.scope == Scope::Status {
                return Err(ApiError::not_found(rt, name));
            }
            return self.create(rt, ns, config, ctx, Operation::Apply);
        };
        let rv = meta_str(&config, "resourceVersion");
        if !rv.is_empty() && rv != meta_str(&cur.obj, "resourceVersion") {
            return Err(ApiError::conflict(
                rt,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        let applied = fields::leaves(&config, ctx.scope);
        let manager = ctx.manager.as_str();
        let sub = ctx.subresource();
        let mut managers = cur.managers.clone();

        // Conflicts: another manager owns a field this apply sets to a different value.
        let mut conflicts: Vec<(String, FieldPath, String)> = Vec::new();
        for (p, v) in &applied {
            if fields::value_at(&cur.obj, p) == Some(v) {
                continue;
            }
            for m in managers.iter().filter(|m| m.manager != manager) {
                if m.fields.iter().any(|q| fields::overlaps(p, q))
                    && !conflicts
                        .iter()
                        .any(|(who, path, _)| *who == m.manager && path == p)
                {
                    conflicts.push((m.manager.clone(), p.clone(), m.api_version.clone()));
                }
            }
        }
        if !conflicts.is_empty() {
            if !force {
                return Err(apply_conflict(rt, name, &conflicts));
            }
            for m in managers.iter_mut().filter(|m| m.manager != manager) {
                m.fields.retain(|q| {
                    !conflicts
                        .iter()
                        .any(|(who, p, _)| *who == m.manager && fields::overlaps(p, q))
                });
            }
        }

        // Fields this manager applied before and omits now.
        let previous: BTreeSet<FieldPath> = managers
            .iter()
            .find(|m| m.same_entry(manager, Operation::Apply, sub))
            .map(|m| m.fields.clone())
            .unwrap_or_default();
        let removed: Vec<&FieldPath> = previous
            .iter()
            .filter(|q| !applied.keys().any(|p| fields::overlaps(p, q)))
            .collect();

        let mut next = cur.obj.clone();
        for (p, v) in &applied {
            fields::set_at(&mut next, p, v.clone());
        }
        for q in removed {
            let target = fields::item_of_key(q).unwrap_or(q);
            let shared = managers
                .iter()
                .filter(|m| !m.same_entry(manager, Operation::Apply, sub))
                .any(|m| m.fields.iter().any(|o| fields::overlaps(o, target)));
            if !shared {
                fields::remove_at(&mut next, target);
            }
        }
        let owned: BTreeSet<FieldPath> = applied.into_keys().collect();
        match managers
            .iter_mut()
            .find(|m| m.same_entry(manager, Operation::Apply, sub))
        {
            Some(m) => {
                m.fields = owned;
                m.api_version = api_version.clone();
            }
            None => managers.push(Manager {
                manager: manager.to_string(),
                operation: Operation::Apply,
                subresource: sub.to_string(),
                api_version: api_version.clone(),
                time: String::new(),
                fields: owned,
            }),
        }
        validate_meta(rt, &next)?;
        self.finish(
            rt,
            ns,
            name,
            &cur,
            next,
            managers,
            (manager, Operation::Apply, sub),
            ctx.dry_run,
        )
    }

    /// DELETE of one object. Returns the object (deletion pending on
    /// finalizers) or a success Status.
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Value, ApiError> {
        let cur = self.current(rt, ns, name)?;
        let uid = meta_str(&cur.obj, "uid").to_string();
        if let Some(want) = &opts.uid
            && *want != uid
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                ),
            ));
        }
        if let Some(want) = &opts.resource_version {
            let have = meta_str(&cur.obj, "resourceVersion");
            if want != have {
                return Err(ApiError::conflict(
                    rt,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {have}"
                    ),
                ));
            }
        }
        if opts.orphan && !opts.dry_run {
            self.orphan_dependents(&uid);
        }
        if has_finalizers(&cur.obj) {
            if is_deleting(&cur.obj) {
                return Ok(present(&cur.obj, rt));
            }
            let mut next = cur.obj.clone();
            let m = meta_mut(&mut next);
            m.insert("deletionTimestamp".into(), Value::String(now()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            if opts.dry_run {
                return Ok(next);
            }
            return Ok(self.modify(rt, ns, name, |o| *o = next).unwrap_or_default());
        }
        if !opts.dry_run {
            self.remove_object(&Self::store_key(rt), ns, name);
        }
        Ok(json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "group": rt.group, "kind": rt.plural, "uid": uid},
        }))
    }

    /// Replaces an object through `f`, bumping resourceVersion and recording
    /// MODIFIED. No ownership, generation or validation.
    pub fn modify(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        self.modify_key(&Self::store_key(rt), ns, name, f)
            .map(|v| present(&v, rt))
    }

    fn modify_key(
        &mut self,
        key: &StoreKey,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        let id = (ns.to_string(), name.to_string());
        let old = self.stores.get(key)?.objects.get(&id)?.obj.clone();
        let mut next = old.clone();
        f(&mut next);
        let rv = self.next_rv();
        meta_mut(&mut next).insert("resourceVersion".into(), Value::String(rv.to_string()));
        if let Some(stored) = self
            .stores
            .get_mut(key)
            .and_then(|s| s.objects.get_mut(&id))
        {
            stored.obj = next.clone();
        }
        self.record(key, EventType::Modified, next.clone(), Some(old));
        Some(next)
    }

    fn orphan_dependents(&mut self, uid: &str) {
        for (key, ns, name) in self.dependents_of(uid) {
            self.modify_key(&key, &ns, &name, |o| drop_owner(o, uid));
        }
    }

    fn dependents_of(&self, uid: &str) -> Vec<(StoreKey, String, String)> {
        self.stores
            .iter()
            .flat_map(|(key, s)| {
                s.objects
                    .iter()
                    .filter(|(_, o)| owner_uids(&o.obj).iter().any(|u| u == uid))
                    .map(|((ns, name), _)| (key.clone(), ns.clone(), name.clone()))
            })
            .collect()
    }

    /// Removes an object now (DELETED) and garbage-collects its dependents
    /// like the background garbage collector: a dependent with another live
    /// owner loses the owner reference; one with finalizers gets a
    /// deletionTimestamp; any other is removed, recursively.
    pub fn remove_object(&mut self, key: &StoreKey, ns: &str, name: &str) -> Option<Value> {
        let mut first = None;
        let mut queue = vec![(key.clone(), ns.to_string(), name.to_string())];
        while let Some((key, ns, name)) = queue.pop() {
            let Some(stored) = self
                .stores
                .get_mut(&key)
                .and_then(|s| s.objects.remove(&(ns.clone(), name.clone())))
            else {
                continue;
            };
            let mut obj = stored.obj;
            let rv = self.next_rv();
            meta_mut(&mut obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
            self.record(&key, EventType::Deleted, obj.clone(), None);
            let uid = meta_str(&obj, "uid").to_string();
            if first.is_none() {
                first = Some(obj);
            }
            if uid.is_empty() {
                continue;
            }
            for (dkey, dns, dname) in self.dependents_of(&uid) {
                let Some(dep) = self
                    .stores
                    .get(&dkey)
                    .and_then(|s| s.objects.get(&(dns.clone(), dname.clone())))
                else {
                    continue;
                };
                let other_owner = owner_uids(&dep.obj)
                    .iter()
                    .any(|u| *u != uid && self.uid_exists(u));
                if other_owner {
                    self.modify_key(&dkey, &dns, &dname, |o| drop_owner(o, &uid));
                } else if has_finalizers(&dep.obj) {
                    if !is_deleting(&dep.obj) {
                        self.modify_key(&dkey, &dns, &dname, |o| {
                            let m = meta_mut(o);
                            m.insert("deletionTimestamp".into(), Value::String(now()));
                            m.insert("deletionGracePeriodSeconds".into(), json!(0));
                        });
                    }
                } else {
                    queue.push((dkey, dns, dname));
                }
            }
        }
        first
    }

    pub fn remove(&mut self, rt: &ResourceType, ns: &str, name: &str) -> Option<Value> {
        self.remove_object(&Self::store_key(rt), ns, name)
            .map(|v| present(&v, rt))
    }

    /// Seeds or overwrites an object without ownership tracking.
    pub fn put_direct(&mut self, obj: Value) -> Result<Value, FakeError> {
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        let rt = self
            .resources
            .iter()
            .find(|r| r.api_version() == api_version && r.kind == kind)
            .cloned()
            .ok_or_else(|| FakeError::UnknownResource(format!("{api_version}/{kind}")))?;
        let mut obj = obj;
        let name = meta_str(&obj, "name").to_string();
        if name.is_empty() {
            return Err(FakeError::Invalid("metadata.name is required".into()));
        }
        let ns = if rt.namespaced {
            let ns = meta_str(&obj, "namespace");
            if ns.is_empty() {
                "default".to_string()
            } else {
                ns.to_string()
            }
        } else {
            String::new()
        };
        {
            let m = meta_mut(&mut obj);
            if rt.namespaced {
                m.insert("namespace".into(), Value::String(ns.clone()));
            } else {
                m.remove("namespace");
            }
            m.remove("managedFields");
        }
        let key = Self::store_key(&rt);
        let existing = self.stored(&rt, &ns, &name).cloned();
        let m = meta_mut(&mut obj);
        let fill = |m: &mut Map<String, Value>, k: &str, v: Value| {
            if m.get(k).is_none_or(Value::is_null) {
                m.insert(k.to_string(), v);
            }
        };
        match &existing {
            Some(cur) => {
                let cm = meta(&cur.obj).cloned().unwrap_or_default();
                for k in ["uid", "creationTimestamp"] {
                    fill(m, k, cm.get(k).cloned().unwrap_or(Value::Null));
                }
                let generation = cm.get("generation").and_then(Value::as_i64).unwrap_or(1);
                let bump = i64::from(spec_part(&cur.obj) != spec_part(&obj));
                fill(meta_mut(&mut obj), "generation", json!(generation + bump));
            }
            None => {
                let n = self.next_counter();
                fill(m, "uid", Value::String(uid_for(n)));
                fill(m, "creationTimestamp", Value::String(now()));
                fill(m, "generation", json!(1));
            }
        }
        let managers = existing
            .as_ref()
            .map(|c| c.managers.clone())
            .unwrap_or_default();
        render_managers(&mut obj, &managers);
        let rv = self.next_rv();
        meta_mut(&mut obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
        self.store(&rt).objects.insert(
            (ns, name),
            Stored {
                obj: obj.clone(),
                managers,
            },
        );
        let (etype, old) = match existing {
            Some(cur) => (EventType::Modified, Some(cur.obj)),
            None => (EventType::Added, None),
        };
        self.record(&key, etype, obj.clone(), old);
        Ok(obj)
    }

    /// The first injected failure matching a request, consumed.
    pub fn take_failure(
        &mut self,
        verb: Verb,
        rt: &ResourceType,
        ns: Option<&str>,
        name: Option<&str>,
        sub: Option<&str>,
    ) -> Option<ApiError> {
        let f = self
            .failures
            .iter_mut()
            .find(|f| f.remaining > 0 && f.matcher.matches(verb, rt, ns, name, sub))?;
        f.remaining -= 1;
        let err = ApiError::new(
            f.code,
            &f.reason,
            format!("injected failure: {} ({})", f.reason, f.code),
        );
        self.failures.retain(|f| f.remaining > 0);
        Some(err)
    }
}

fn drop_owner(obj: &mut Value, uid: &str) {
    let m = meta_mut(obj);
    if let Some(Value::Array(refs)) = m.get_mut("ownerReferences") {
        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
        if refs.is_empty() {
            m.remove("ownerReferences");
        }
    }
}

fn apply_conflict(
    rt: &ResourceType,
    name: &str,
    conflicts: &[(String, FieldPath, String)],
) -> ApiError {
    let n = conflicts.len();
    let lines: Vec<String> = conflicts
        .iter()
        .map(|(who, p, av)| format!("conflict with \"{who}\" using {av}: {}", fields::display(p)))
        .collect();
    let message = format!(
        "Apply failed with {n} conflict{}: {}",
        if n == 1 { "" } else { "s" },
        lines.join("; ")
    );
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(who, p, av)| {
            json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{who}\" using {av}"), "field": fields::display(p)})
        })
        .collect();
    let mut err = ApiError::new(409, "Conflict", message);
    err.details =
        Some(json!({"name": name, "group": rt.group, "kind": rt.plural, "causes": causes}));
    err
}
