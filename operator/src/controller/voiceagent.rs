//! The VoiceAgent controller: dereference → validate → build → apply →
//! status, as DESIGN.md §4 fixes it.
//!
//! Writes are minimal: each owned object carries the hash of what the
//! operator last applied (`voiceagent.io/applied-hash`); an object whose
//! hash matches the desired one is not written again, so a reconcile with
//! nothing to change makes zero writes. Deleted children are recreated,
//! children no longer desired are pruned, and the status is patched only
//! when more than timestamps changed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, PartialObjectMeta, Patch,
    PatchParams,
};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::{info, warn};
use voice_agent_api::conditions::{self, types};
use voice_agent_api::voiceagent::BoundNumber;
use voice_agent_api::{PhoneNumber, VoiceAgent};

use super::status::{self, Degraded, Observed};
use super::{Context, Ctx};
use crate::error::{Error, Result};
use crate::render::{self, BuildInput, COMPONENTS, Desired, FIELD_MANAGER, MANAGER, Naming};

/// Annotation holding the hash of the last applied configuration of an object.
pub const APPLIED_HASH_ANNOTATION: &str = "voiceagent.io/applied-hash";
/// The controller's name in metrics and logs.
pub const CONTROLLER: &str = "voiceagent";
/// How often a healthy VoiceAgent is reconciled without a trigger.
pub const RESYNC: Duration = Duration::from_secs(300);

/// The kinds a VoiceAgent owns, in apply order: configuration before the
/// pods that use it.
pub fn owned_kinds() -> [ApiResource; 9] {
    [
        ApiResource::erase::<ServiceAccount>(&()),
        ApiResource::erase::<Role>(&()),
        ApiResource::erase::<RoleBinding>(&()),
        ApiResource::erase::<ConfigMap>(&()),
        ApiResource::erase::<Service>(&()),
        ApiResource::erase::<PodDisruptionBudget>(&()),
        ApiResource::erase::<NetworkPolicy>(&()),
        ApiResource::erase::<Deployment>(&()),
        ApiResource::erase::<HorizontalPodAutoscaler>(&()),
    ]
}

fn owned_selector(agent: &str) -> String {
    format!("app.kubernetes.io/instance={agent},app.kubernetes.io/managed-by={MANAGER}")
}

/// What one reconcile did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Objects created (`Kind/name`).
    pub created: Vec<String>,
    /// Objects updated.
    pub updated: Vec<String>,
    /// Objects deleted because they are no longer desired.
    pub pruned: Vec<String>,
    /// Whether the status was written.
    pub status_written: bool,
    /// Set when the spec cannot be realised.
    pub degraded: Option<Degraded>,
}

/// Reconciles one VoiceAgent. Undecodable objects are marked Degraded and
/// wait for a change instead of failing the watch.
pub async fn reconcile(guard: Arc<DeserializeGuard<VoiceAgent>>, ctx: Ctx) -> Result<Action> {
    let _timer = ctx
        .metrics
        .duration
        .with_label_values(&[CONTROLLER])
        .start_timer();
    let va = match &guard.0 {
        Ok(va) => va,
        Err(invalid) => {
            mark_undecodable(&invalid.metadata, &invalid.error, &ctx).await?;
            return Ok(Action::await_change());
        }
    };
    let key = format!("{}/{}", va.namespace().unwrap_or_default(), va.name_any());
    let outcome = reconcile_agent(va, &ctx).await?;
    ctx.backoff.reset(&key);
    ctx.metrics
        .reconciles
        .with_label_values(&[CONTROLLER, "ok"])
        .inc();
    Ok(match outcome.degraded {
        // Invalid specs wait for a change of the agent or of a Secret it
        // refers to (Secrets are watched by metadata only).
        Some(_) => Action::await_change(),
        None => Action::requeue(RESYNC),
    })
}

/// Requeues a failed reconcile with per-object exponential backoff.
pub fn error_policy(guard: Arc<DeserializeGuard<VoiceAgent>>, err: &Error, ctx: Ctx) -> Action {
    let meta = match &guard.0 {
        Ok(va) => va.meta().clone(),
        Err(invalid) => invalid.metadata.clone(),
    };
    let key = format!(
        "{}/{}",
        meta.namespace.unwrap_or_default(),
        meta.name.unwrap_or_default()
    );
    let delay = ctx.backoff.next(&key);
    ctx.metrics
        .reconciles
        .with_label_values(&[CONTROLLER, "error"])
        .inc();
    ctx.metrics
        .errors
        .with_label_values(&[CONTROLLER, err.category()])
        .inc();
    warn!(object = %key, category = err.category(), retry_in_s = delay.as_secs(), "reconcile failed: {err}");
    Action::requeue(delay)
}

/// The pipeline for a decoded VoiceAgent.
pub async fn reconcile_agent(va: &VoiceAgent, ctx: &Context) -> Result<Outcome> {
    let naming = Naming::new(va)?;
    let ns = naming.namespace.clone();

    // Dereference.
    let (bound_numbers, degraded) = dereference(va, &naming, ctx).await?;

    let mut outcome = Outcome {
        degraded: degraded.clone(),
        ..Outcome::default()
    };
    let deployments = if degraded.is_none() {
        // Build from the live replicas: the autoscaler owns them.
        let live = list_owned(ctx, &ns, &naming.agent).await?;
        let mut replicas = BTreeMap::new();
        for c in COMPONENTS {
            let name = naming.component(c);
            if let Some(d) = live.get(&("Deployment", name))
                && let Some(r) = d.data.pointer("/spec/replicas").and_then(Value::as_i64)
            {
                replicas.insert(c, i32::try_from(r).unwrap_or(i32::MAX));
            }
        }
        let input = BuildInput {
            settings: ctx.settings.clone(),
            bound_numbers: bound_numbers
                .iter()
                .filter(|b| b.ready)
                .map(|b| b.number.clone())
                .collect(),
            replicas,
        };
        let rendered = render::build(va, &input)?;
        let mut counts = BTreeMap::new();
        for o in &rendered.objects {
            *counts.entry(o.kind()).or_insert(0) += 1;
        }
        ctx.set_managed(&format!("{ns}/{}", naming.agent), Some(counts));
        apply(va, &naming, &rendered.objects, live, ctx, &mut outcome).await?
    } else {
        // Keep what runs; report what exists.
        let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
        api.list(&ListParams::default().labels(&owned_selector(&naming.agent)))
            .await?
            .items
    };

    // Status.
    let observed = Observed {
        deployments,
        bound_numbers,
        degraded: degraded.clone(),
    };
    let new_status = status::compute(va, &naming, &observed, conditions::now());
    if status::needs_write(va.status.as_ref(), &new_status) {
        let was_degraded = va
            .status
            .as_ref()
            .and_then(|s| conditions::find_condition(&s.conditions, types::DEGRADED))
            .map(|c| (c.status.clone(), c.reason.clone()));
        let api: Api<VoiceAgent> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = json!({
            "apiVersion": format!("{}/{}", voice_agent_api::GROUP, voice_agent_api::VERSION),
            "kind": "VoiceAgent",
            "metadata": {"name": naming.agent},
            "status": new_status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(&patch);
        retry_conflicts(|| api.patch_status(&naming.agent, &params, &patch)).await?;
        ctx.metrics
            .writes
            .with_label_values(&["VoiceAgent", "status"])
            .inc();
        outcome.status_written = true;
        if let Some(d) = &degraded
            && was_degraded != Some(("True".to_string(), d.reason.clone()))
        {
            publish(
                ctx,
                va,
                EventType::Warning,
                &d.reason,
                "Degrade",
                d.message.clone(),
            )
            .await;
        }
    }
    if !outcome.created.is_empty() || !outcome.updated.is_empty() {
        let mut parts = Vec::new();
        if !outcome.created.is_empty() {
            parts.push(format!("created {}", outcome.created.join(", ")));
        }
        if !outcome.updated.is_empty() {
            parts.push(format!("updated {}", outcome.updated.join(", ")));
        }
        publish(
            ctx,
            va,
            EventType::Normal,
            "Applied",
            "Apply",
            parts.join("; "),
        )
        .await;
    }
    if !outcome.pruned.is_empty() {
        publish(
            ctx,
            va,
            EventType::Normal,
            "Pruned",
            "Prune",
            format!("deleted {}", outcome.pruned.join(", ")),
        )
        .await;
    }
    info!(
        object = %format!("{ns}/{}", naming.agent),
        created = outcome.created.len(),
        updated = outcome.updated.len(),
        pruned = outcome.pruned.len(),
        status_written = outcome.status_written,
        degraded = outcome.degraded.as_ref().map(|d| d.reason.as_str()),
        "reconciled"
    );
    Ok(outcome)
}

/// Reads what the spec refers to: the Secrets (existence and key, never the
/// values beyond that check) and the PhoneNumbers bound to the agent.
async fn dereference(
    va: &VoiceAgent,
    naming: &Naming,
    ctx: &Context,
) -> Result<(Vec<BoundNumber>, Option<Degraded>)> {
    let ns = &naming.namespace;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut degraded = None;
    let mut seen: HashMap<String, Option<Secret>> = HashMap::new();
    for (field, r) in va.spec.secret_refs() {
        if !seen.contains_key(&r.name) {
            let s = secrets.get_opt(&r.name).await?;
            seen.insert(r.name.clone(), s);
        }
        let secret = seen.get(&r.name).and_then(Option::as_ref);
        let problem = match secret {
            None => Some(Degraded {
                reason: "SecretNotFound".into(),
                message: format!(
                    "Secret {ns}/{} referenced by {field} does not exist",
                    r.name
                ),
            }),
            Some(s) => {
                let has_key = s.data.as_ref().is_some_and(|d| d.contains_key(&r.key))
                    || s.string_data
                        .as_ref()
                        .is_some_and(|d| d.contains_key(&r.key));
                (!has_key).then(|| Degraded {
                    reason: "SecretKeyNotFound".into(),
                    message: format!(
                        "Secret {ns}/{} has no key {:?} (referenced by {field})",
                        r.name, r.key
                    ),
                })
            }
        };
        if problem.is_some() {
            degraded = problem;
            break;
        }
    }

    let numbers: Api<DeserializeGuard<PhoneNumber>> = Api::namespaced(ctx.client.clone(), ns);
    let mut bound = Vec::new();
    for guard in numbers.list(&ListParams::default()).await?.items {
        let Ok(pn) = guard.0 else { continue };
        if pn.spec.voice_agent_ref.name != naming.agent {
            continue;
        }
        let conds = pn
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        if conditions::is_true(conds, types::CONFLICT) {
            continue;
        }
        bound.push(BoundNumber {
            name: pn.name_any(),
            number: pn.spec.number.clone(),
            ready: conditions::is_true(conds, types::READY),
        });
    }
    Ok((bound, degraded))
}

type LiveObjects = HashMap<(&'static str, String), DynamicObject>;

/// Lists the objects of every owned kind that belong to the agent.
async fn list_owned(ctx: &Context, ns: &str, agent: &str) -> Result<LiveObjects> {
    let mut live = HashMap::new();
    let lp = ListParams::default().labels(&owned_selector(agent));
    for (ar, kind) in owned_kinds().iter().zip(KINDS) {
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, ar);
        for obj in api.list(&lp).await?.items {
            live.insert((kind, obj.name_any()), obj);
        }
    }
    Ok(live)
}

/// The owned kinds, in the order of [`owned_kinds`].
pub const KINDS: [&str; 9] = [
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "Service",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "Deployment",
    "HorizontalPodAutoscaler",
];

/// The hash of a desired object, before the hash annotation is added,
/// without `spec.replicas` (the autoscaler's field; compared separately).
pub fn applied_hash(obj: &Value) -> String {
    let mut obj = obj.clone();
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("replicas");
    }
    let digest = Sha256::digest(obj.to_string().as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// Applies what differs, prunes what is no longer desired, and returns the
/// component Deployments as they are after the apply.
async fn apply(
    va: &VoiceAgent,
    naming: &Naming,
    desired: &[Desired],
    mut live: LiveObjects,
    ctx: &Context,
    outcome: &mut Outcome,
) -> Result<Vec<Deployment>> {
    let ns = &naming.namespace;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut deployments = Vec::new();
    for (ar, kind) in owned_kinds().iter().zip(KINDS) {
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, ar);
        for obj in desired.iter().filter(|o| o.kind() == kind) {
            let mut json = obj.to_json();
            let hash = applied_hash(&json);
            json["metadata"]["annotations"][APPLIED_HASH_ANNOTATION] = Value::String(hash.clone());
            let name = obj.name().to_string();
            let existing = live.remove(&(kind, name.clone()));
            let current = existing
                .as_ref()
                .and_then(|o| o.metadata.annotations.as_ref())
                .and_then(|a| a.get(APPLIED_HASH_ANNOTATION));
            // Replicas are the autoscaler's: the hash leaves them out, and they
            // are compared directly, so a scale does not make the whole
            // Deployment look changed, while a new bound that clamps them does.
            let replicas_match = existing.as_ref().map(|o| o.data.pointer("/spec/replicas"))
                == Some(json.pointer("/spec/replicas"));
            let result = if current == Some(&hash) && replicas_match {
                existing
            } else {
                let patch = Patch::Apply(&json);
                let applied = retry_conflicts(|| api.patch(&name, &params, &patch)).await?;
                let verb = if existing.is_some() {
                    "update"
                } else {
                    "create"
                };
                ctx.metrics.writes.with_label_values(&[kind, verb]).inc();
                let label = format!("{kind}/{name}");
                if existing.is_some() {
                    outcome.updated.push(label);
                } else {
                    outcome.created.push(label);
                }
                Some(applied)
            };
            if kind == "Deployment"
                && let Some(obj) = result
            {
                deployments.push(serde_json::from_value(serde_json::to_value(obj)?)?);
            }
        }
    }
    // Prune: owned objects of this agent that are no longer desired.
    let uid = va.uid();
    for ((kind, name), obj) in live {
        let owned_by_us = obj
            .metadata
            .owner_references
            .as_ref()
            .is_some_and(|refs| refs.iter().any(|r| Some(&r.uid) == uid.as_ref()));
        if !owned_by_us {
            continue;
        }
        let Some(ar) = owned_kinds()
            .into_iter()
            .zip(KINDS)
            .find(|(_, k)| *k == kind)
            .map(|(a, _)| a)
        else {
            continue;
        };
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ar);
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        ctx.metrics
            .writes
            .with_label_values(&[kind, "delete"])
            .inc();
        outcome.pruned.push(format!("{kind}/{name}"));
    }
    deployments.sort_by_key(|d: &Deployment| d.metadata.name.clone());
    Ok(deployments)
}

/// Retries a write that hit a 409 Conflict, up to three attempts.
async fn retry_conflicts<T, F, Fut>(mut write: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = kube::Result<T>>,
{
    let mut attempt = 0;
    loop {
        match write().await {
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < 2 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            other => return other.map_err(Error::from),
        }
    }
}

async fn publish(
    ctx: &Context,
    va: &VoiceAgent,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &va.object_ref(&())).await {
        warn!(object = %va.name_any(), "publishing an Event failed: {e}");
    }
}

/// Marks a VoiceAgent that cannot be decoded as Degraded, with an Event.
async fn mark_undecodable(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    error: &str,
    ctx: &Context,
) -> Result<()> {
    let (Some(name), Some(ns)) = (meta.name.as_deref(), meta.namespace.as_deref()) else {
        return Ok(());
    };
    warn!(object = %format!("{ns}/{name}"), "VoiceAgent cannot be decoded: {error}");
    ctx.metrics
        .errors
        .with_label_values(&[CONTROLLER, "undecodable"])
        .inc();
    let already = meta.generation.is_some(); // the condition below carries the generation
    let ar = ApiResource::erase::<VoiceAgent>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ar);
    let condition = conditions::new_condition(
        types::DEGRADED,
        conditions::Status::True,
        super::INVALID_OBJECT,
        format!("the object does not match the API: {error}"),
        meta.generation,
        conditions::now(),
    );
    let patch = json!({"status": {"phase": "Degraded", "observedGeneration": meta.generation, "conditions": [condition]}});
    let current = api.get_opt(name).await?;
    let same = current
        .as_ref()
        .and_then(|o| o.data.pointer("/status/conditions"))
        .and_then(|c| {
            serde_json::from_value::<
                    Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
                >(c.clone())
                .ok()
        })
        .is_some_and(|c| {
            conditions::find_condition(&c, types::DEGRADED).is_some_and(|d| {
                d.reason == super::INVALID_OBJECT && d.observed_generation == meta.generation
            })
        });
    if already && same {
        return Ok(());
    }
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    ctx.metrics
        .writes
        .with_label_values(&["VoiceAgent", "status"])
        .inc();
    super::publish_invalid_object(&ctx.recorder, "VoiceAgent", meta, error).await;
    Ok(())
}

/// The VoiceAgents in `store` that a Secret (by namespace and name) affects.
pub fn agents_referencing_secret(
    store: &Store<DeserializeGuard<VoiceAgent>>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<DeserializeGuard<VoiceAgent>>> {
    let (Some(ns), Some(name)) = (
        secret.metadata.namespace.as_deref(),
        secret.metadata.name.as_deref(),
    ) else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|va| va.namespace().as_deref() == Some(ns))
        .filter(|va| va.spec.secret_refs().iter().any(|(_, r)| r.name == name))
        .map(|va| ObjectRef::new(&va.name_any()).within(ns))
        .collect()
}

/// The VoiceAgent a PhoneNumber binds, to re-reconcile it when the number changes.
pub fn agent_of_number(
    pn: DeserializeGuard<PhoneNumber>,
) -> Option<ObjectRef<DeserializeGuard<VoiceAgent>>> {
    let pn = pn.0.ok()?;
    let ns = pn.namespace()?;
    Some(ObjectRef::new(&pn.spec.voice_agent_ref.name).within(&ns))
}
