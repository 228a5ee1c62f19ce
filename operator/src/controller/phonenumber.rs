//! The PhoneNumber controller: points a Twilio number at its VoiceAgent's
//! gateway and, for the `livekit` transport, keeps a LiveKit SIP inbound
//! trunk and dispatch rule for it; a finalizer releases both when the
//! PhoneNumber is deleted.
//!
//! One reconcile, in order, each step stopping the rest when it cannot go on:
//!
//! 1. **Conflict**: another PhoneNumber (in any watched namespace) claims
//!    the same number and is older (by `creationTimestamp`, then
//!    namespace/name, so both sides agree) → `Conflict=True`, nothing is
//!    provisioned, and the number is looked at again when the other one
//!    changes or goes away (watch) and every minute. An older claimant
//!    that is being deleted still holds the number until its cleanup ends,
//!    so the two never write the same Twilio number at once.
//! 2. **VoiceAgent**: missing → `Ready=False` (`VoiceAgentNotFound`); no
//!    vendor is called until it exists (watched).
//! 3. **Credentials**: the Twilio auth token (and, for `livekit`, the
//!    VoiceAgent's LiveKit key and secret) are read from their Secrets now,
//!    used for this reconcile's requests, and dropped; they never reach a
//!    log, an Event or the status.
//! 4. **Twilio**: find the account's IncomingPhoneNumber (absent →
//!    `Provisioned=False`, `NumberNotFound`); when its webhooks differ,
//!    record the settings it had in `status.previous` (written *before* the
//!    change, so a crash cannot lose them) and set `VoiceUrl` =
//!    `{publicUrl}/twilio/voice`, `StatusCallback` =
//!    `{publicUrl}/twilio/status`, both `POST`.
//! 5. **LiveKit**: find (by id or by the metadata tag it was created with)
//!    or create the inbound trunk and the dispatch rule; replace the rule
//!    when the agent changed.
//! 6. **Status** (`Ready`, `Provisioned`, `Conflict`, ids), written only
//!    when more than timestamps changed, and an Event for what changed at
//!    a vendor. A steady-state reconcile makes one Twilio GET (plus two
//!    LiveKit lists) and no write anywhere.
//!
//! Vendor failures: a 4xx sets the condition to the vendor's message and
//! retries after [`REJECTED_RETRY`] (a request that was refused is refused
//! again until someone changes something); 5xx, 429 and timeouts return an
//! error, retried with per-object exponential backoff. A number that is
//! provisioned and only cannot be *checked* keeps `Provisioned=True` (calls
//! keep flowing), with a Warning Event.
//!
//! Cleanup (the finalizer): restore the number's previous webhooks (or clear
//! them) if it still points where this PhoneNumber pointed it, and delete
//! the LiveKit rule and trunk. Objects already gone (404) are fine. Cleanup
//! never blocks deletion on something retrying cannot fix (a deleted Secret,
//! refused credentials): it says what was left behind in a Warning Event
//! and lets go; transient failures are retried.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::{BoxStream, select_all};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PartialObjectMeta, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};
use voice_agent_api::common::SecretKeyRef;
use voice_agent_api::conditions::{self, Status, types};
use voice_agent_api::phonenumber::PreviousTwilioConfig;
use voice_agent_api::voiceagent::Transport;
use voice_agent_api::{PhoneNumber, PhoneNumberStatus, VoiceAgent};

use super::Backoff;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::provision::livekit::{self, LiveKitClient, SipPlan};
use crate::provision::twilio::{self, IncomingNumber, TwilioClient, Webhooks};
use crate::provision::{ProvisionSettings, VendorError};
use crate::render::FIELD_MANAGER;

/// The controller's name in metrics and logs.
pub const CONTROLLER: &str = "phonenumber";
/// The finalizer that releases what was provisioned at the vendors.
pub const FINALIZER: &str = "voiceagent.io/provisioning";
/// How often a provisioned number is checked at the vendors without a trigger
/// (someone may have changed it in the Twilio console).
pub const RESYNC: Duration = Duration::from_secs(600);
/// When a request the vendor refused (4xx) is tried again.
pub const REJECTED_RETRY: Duration = Duration::from_secs(300);
/// How often a number in conflict checks whether the other claimant is gone
/// (besides the watch, which sees it at once within a namespace scope).
pub const CONFLICT_RECHECK: Duration = Duration::from_secs(60);
/// Metadata tag of the LiveKit objects of a PhoneNumber: `{prefix}{ns}/{name}`.
pub const LIVEKIT_METADATA_PREFIX: &str = "voiceagent.io/phonenumber=";

/// Stable condition and Event reasons of PhoneNumbers.
pub mod reasons {
    /// Provisioned at every vendor the transport needs.
    pub const PROVISIONED: &str = "Provisioned";
    /// No other PhoneNumber claims the number.
    pub const NO_CONFLICT: &str = "NoConflict";
    /// An older PhoneNumber claims the same number.
    pub const NUMBER_CLAIMED: &str = "NumberClaimed";
    /// The bound VoiceAgent does not exist (or cannot be decoded).
    pub const VOICE_AGENT_NOT_FOUND: &str = "VoiceAgentNotFound";
    /// A referenced Secret does not exist.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// A referenced Secret lacks the key.
    pub const SECRET_KEY_NOT_FOUND: &str = "SecretKeyNotFound";
    /// The spec cannot be provisioned as written.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The number is not an IncomingPhoneNumber of the Twilio account.
    pub const NUMBER_NOT_FOUND: &str = "NumberNotFound";
    /// A vendor refused a request (4xx); the message is the vendor's.
    pub const VENDOR_REJECTED: &str = "VendorRejected";
    /// A vendor could not be reached or failed (5xx, timeout); retried.
    pub const VENDOR_UNAVAILABLE: &str = "VendorUnavailable";
    /// Cleanup released the number at the vendors.
    pub const RELEASED: &str = "Released";
    /// Cleanup could not release everything; the note says what is left.
    pub const CLEANUP_INCOMPLETE: &str = "CleanupIncomplete";
}

/// State shared by PhoneNumber reconciles.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// The operator's one Event recorder.
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Per-object retry state.
    pub backoff: Backoff,
    /// Twilio's REST API.
    pub twilio: TwilioClient,
    /// LiveKit's SIP service.
    pub livekit: LiveKitClient,
    /// Namespaces in which other claims of a number are looked for (the
    /// watched ones; all when empty).
    pub namespaces: Vec<String>,
}

impl Context {
    /// A context for `client` with the vendor clients of `settings`.
    pub fn new(
        client: Client,
        recorder: Recorder,
        metrics: Metrics,
        settings: &ProvisionSettings,
        namespaces: Vec<String>,
    ) -> std::result::Result<Self, reqwest::Error> {
        Ok(Context {
            twilio: TwilioClient::new(&settings.twilio_api_url, settings.timeout)?,
            livekit: LiveKitClient::new(settings.timeout)?,
            client,
            recorder,
            metrics,
            backoff: Backoff::default(),
            namespaces,
        })
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// Reconciles one PhoneNumber (through the finalizer helper: `Apply` while
/// it lives, `Cleanup` once it is being deleted).
pub async fn reconcile(
    guard: Arc<DeserializeGuard<PhoneNumber>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let _timer = ctx
        .metrics
        .duration
        .with_label_values(&[CONTROLLER])
        .start_timer();
    let pn = match &guard.0 {
        Ok(pn) => pn.clone(),
        Err(invalid) => {
            undecodable(&invalid.metadata, &invalid.error, &ctx).await?;
            return Ok(Action::await_change());
        }
    };
    let key = key_of(&pn.metadata);
    let ns = pn.namespace().unwrap_or_default();
    let api: Api<PhoneNumber> = Api::namespaced(ctx.client.clone(), &ns);
    let action = finalizer(&api, FINALIZER, Arc::new(pn), |event| async {
        match event {
            finalizer::Event::Apply(pn) => apply(&pn, &ctx).await,
            finalizer::Event::Cleanup(pn) => cleanup(&pn, &ctx).await,
        }
    })
    .await
    .map_err(from_finalizer)?;
    ctx.backoff.reset(&key);
    ctx.metrics
        .reconciles
        .with_label_values(&[CONTROLLER, "ok"])
        .inc();
    Ok(action)
}

fn from_finalizer(e: finalizer::Error<Error>) -> Error {
    match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        finalizer::Error::AddFinalizer(k) | finalizer::Error::RemoveFinalizer(k) => Error::Kube(k),
        other @ (finalizer::Error::UnnamedObject | finalizer::Error::InvalidFinalizer) => {
            Error::InvalidSpec {
                reason: super::INVALID_OBJECT,
                message: other.to_string(),
            }
        }
    }
}

/// Requeues a failed reconcile with per-object exponential backoff.
pub fn error_policy(
    guard: Arc<DeserializeGuard<PhoneNumber>>,
    err: &Error,
    ctx: Arc<Context>,
) -> Action {
    let meta = match &guard.0 {
        Ok(pn) => pn.meta().clone(),
        Err(invalid) => invalid.metadata.clone(),
    };
    let key = key_of(&meta);
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

/// The status being built by one reconcile.
struct Draft {
    status: PhoneNumberStatus,
    generation: Option<i64>,
}

impl Draft {
    fn new(pn: &PhoneNumber) -> Self {
        let mut status = pn.status.clone().unwrap_or_default();
        status.observed_generation = pn.metadata.generation;
        Draft {
            status,
            generation: pn.metadata.generation,
        }
    }

    fn set(&mut self, type_: &str, s: Status, reason: &str, message: impl Into<String>) {
        conditions::set_condition(
            &mut self.status.conditions,
            conditions::new_condition(
                type_,
                s,
                reason,
                message,
                self.generation,
                conditions::now(),
            ),
        );
    }

    /// Not provisioned (yet) for `reason`.
    fn blocked(&mut self, reason: &str, message: &str) {
        self.set(types::PROVISIONED, Status::False, reason, message);
        self.set(types::READY, Status::False, reason, message);
    }
}

fn needs_write(old: Option<&PhoneNumberStatus>, new: &PhoneNumberStatus) -> bool {
    let Some(old) = old else { return true };
    let strip = |s: &PhoneNumberStatus| PhoneNumberStatus {
        conditions: Vec::new(),
        ..s.clone()
    };
    strip(old) != strip(new) || !conditions::equal_ignoring_time(&old.conditions, &new.conditions)
}

/// Writes `status` (server-side apply of the whole status) unless it equals
/// `old` but for timestamps. Returns whether it wrote.
async fn write_status(
    pn: &PhoneNumber,
    old: Option<&PhoneNumberStatus>,
    status: &PhoneNumberStatus,
    ctx: &Context,
) -> Result<bool> {
    if !needs_write(old, status) {
        return Ok(false);
    }
    let name = pn.name_any();
    let api: Api<PhoneNumber> =
        Api::namespaced(ctx.client.clone(), &pn.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": format!("{}/{}", voice_agent_api::GROUP, voice_agent_api::VERSION),
        "kind": "PhoneNumber",
        "metadata": {"name": name},
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    ctx.metrics
        .writes
        .with_label_values(&["PhoneNumber", "status"])
        .inc();
    Ok(true)
}

/// Longest Event note (the API allows 1 kB).
const MAX_NOTE: usize = 1000;

async fn publish(
    ctx: &Context,
    pn: &PhoneNumber,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let note = match note.char_indices().nth(MAX_NOTE) {
        Some((i, _)) => format!("{}…", &note[..i]),
        None => note,
    };
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &pn.object_ref(&())).await {
        warn!(object = %key_of(&pn.metadata), "publishing an Event failed: {e}");
    }
}

/// A reference the reconcile cannot use yet: which condition reason and why.
struct Missing {
    reason: &'static str,
    message: String,
}

/// Reads one Secret key now. `Ok(Err(_))` when the Secret or the key is
/// missing (the caller waits for it); the value is never logged.
async fn read_secret(
    ctx: &Context,
    ns: &str,
    r: &SecretKeyRef,
    field: &str,
) -> Result<std::result::Result<crate::provision::Secret, Missing>> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let Some(secret) = api.get_opt(&r.name).await? else {
        return Ok(Err(Missing {
            reason: reasons::SECRET_NOT_FOUND,
            message: format!(
                "Secret {ns}/{} referenced by {field} does not exist",
                r.name
            ),
        }));
    };
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .map(|b| String::from_utf8(b.0.clone()))
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(&r.key))
                .map(|s| Ok(s.clone()))
        });
    match value {
        Some(Ok(v)) if !v.trim().is_empty() => Ok(Ok(crate::provision::Secret::new(v))),
        Some(Ok(_)) => Ok(Err(Missing {
            reason: reasons::SECRET_KEY_NOT_FOUND,
            message: format!(
                "key {:?} of Secret {ns}/{} ({field}) is empty",
                r.key, r.name
            ),
        })),
        Some(Err(_)) => Ok(Err(Missing {
            reason: reasons::SECRET_KEY_NOT_FOUND,
            message: format!(
                "key {:?} of Secret {ns}/{} ({field}) is not UTF-8 text",
                r.key, r.name
            ),
        })),
        None => Ok(Err(Missing {
            reason: reasons::SECRET_KEY_NOT_FOUND,
            message: format!(
                "Secret {ns}/{} has no key {:?} (referenced by {field})",
                r.name, r.key
            ),
        })),
    }
}

/// The Twilio credentials of `pn`.
async fn twilio_credentials(
    pn: &PhoneNumber,
    ctx: &Context,
) -> Result<std::result::Result<twilio::Credentials, Missing>> {
    let Some(spec) = &pn.spec.twilio else {
        return Ok(Err(Missing {
            reason: reasons::INVALID_SPEC,
            message: "provider twilio requires spec.twilio (accountSid, credentialsSecretRef)"
                .into(),
        }));
    };
    let ns = pn.namespace().unwrap_or_default();
    Ok(read_secret(
        ctx,
        &ns,
        &spec.credentials_secret_ref,
        "spec.twilio.credentialsSecretRef",
    )
    .await?
    .map(|token| twilio::Credentials {
        account_sid: spec.account_sid.clone(),
        auth_token: token,
    }))
}

/// The LiveKit credentials of `va` (`None` when it has no LiveKit settings).
async fn livekit_credentials(
    va: &VoiceAgent,
    ctx: &Context,
) -> Result<Option<std::result::Result<livekit::Credentials, Missing>>> {
    let Some(lk) = &va.spec.telephony.livekit else {
        return Ok(None);
    };
    let ns = va.namespace().unwrap_or_default();
    let key = match read_secret(
        ctx,
        &ns,
        &lk.api_key_secret_ref,
        "spec.telephony.livekit.apiKeySecretRef",
    )
    .await?
    {
        Ok(k) => k,
        Err(m) => return Ok(Some(Err(m))),
    };
    let secret = match read_secret(
        ctx,
        &ns,
        &lk.api_secret_secret_ref,
        "spec.telephony.livekit.apiSecretSecretRef",
    )
    .await?
    {
        Ok(s) => s,
        Err(m) => return Ok(Some(Err(m))),
    };
    Ok(Some(Ok(livekit::Credentials {
        url: lk.url.clone(),
        api_key: key.expose().to_string(),
        api_secret: secret,
    })))
}

/// The bound VoiceAgent, if it exists and decodes.
async fn voice_agent(pn: &PhoneNumber, ctx: &Context) -> Result<Option<VoiceAgent>> {
    let ns = pn.namespace().unwrap_or_default();
    let api: Api<DeserializeGuard<VoiceAgent>> = Api::namespaced(ctx.client.clone(), &ns);
    Ok(api
        .get_opt(&pn.spec.voice_agent_ref.name)
        .await?
        .and_then(|g| g.0.ok()))
}

/// The order in which claims of one number win: the oldest, then by
/// namespace and name, so every reconcile agrees on the winner.
fn claim_order(pn: &PhoneNumber) -> (Option<jiff::Timestamp>, String, String) {
    (
        pn.metadata.creation_timestamp.as_ref().map(|t| t.0),
        pn.namespace().unwrap_or_default(),
        pn.name_any(),
    )
}

fn earlier(a: &PhoneNumber, b: &PhoneNumber) -> bool {
    let (ta, na, ma) = claim_order(a);
    let (tb, nb, mb) = claim_order(b);
    // An object without a timestamp (never stored) sorts last.
    let ta = ta.unwrap_or(jiff::Timestamp::MAX);
    let tb = tb.unwrap_or(jiff::Timestamp::MAX);
    (ta, na, ma) < (tb, nb, mb)
}

/// The oldest other PhoneNumber claiming `pn`'s number, if it is older than
/// `pn`. Read live (not from a cache) so two PhoneNumbers created together
/// cannot both see themselves as first.
async fn earlier_claimant(pn: &PhoneNumber, ctx: &Context) -> Result<Option<PhoneNumber>> {
    let apis: Vec<Api<DeserializeGuard<PhoneNumber>>> = if ctx.namespaces.is_empty() {
        vec![Api::all(ctx.client.clone())]
    } else {
        ctx.namespaces
            .iter()
            .map(|ns| Api::namespaced(ctx.client.clone(), ns))
            .collect()
    };
    let mut first: Option<PhoneNumber> = None;
    for api in apis {
        for g in api.list(&ListParams::default()).await?.items {
            let Ok(other) = g.0 else { continue };
            if other.uid() == pn.uid() || other.spec.number != pn.spec.number {
                continue;
            }
            if earlier(&other, pn) && first.as_ref().is_none_or(|f| earlier(&other, f)) {
                first = Some(other);
            }
        }
    }
    Ok(first)
}

/// The status callback URL of an agent: `{publicUrl}/twilio/status`.
pub fn status_callback_url(va: &VoiceAgent) -> String {
    format!(
        "{}/twilio/status",
        va.spec.telephony.public_url.trim_end_matches('/')
    )
}

/// The webhooks a number bound to `va` should have.
pub fn desired_webhooks(va: &VoiceAgent) -> Webhooks {
    Webhooks {
        voice_url: Some(va.spec.webhook_url()),
        voice_method: Some("POST".into()),
        status_callback: Some(status_callback_url(va)),
        status_callback_method: Some("POST".into()),
    }
}

/// Whether a URL carries credentials (`scheme://user:pass@host/…`).
fn has_userinfo(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.contains('@')
}

/// What to remember of a number's settings before changing them. URLs with
/// credentials are left out (they would land in the status): they are
/// cleared on delete instead of restored.
fn previous_of(n: &IncomingNumber) -> (PreviousTwilioConfig, bool) {
    let keep = |u: &Option<String>| u.clone().filter(|u| !has_userinfo(u));
    let dropped = n.voice_url.as_deref().is_some_and(has_userinfo)
        || n.status_callback.as_deref().is_some_and(has_userinfo);
    (
        PreviousTwilioConfig {
            voice_url: keep(&n.voice_url),
            voice_method: n.voice_method.clone(),
            status_callback: keep(&n.status_callback),
            status_callback_method: n.status_callback_method.clone(),
        },
        dropped,
    )
}

/// The settings a deleted PhoneNumber leaves its number with.
fn restored(previous: Option<&PreviousTwilioConfig>) -> Webhooks {
    match previous {
        Some(p) => Webhooks {
            voice_url: p.voice_url.clone(),
            voice_method: p.voice_method.clone(),
            status_callback: p.status_callback.clone(),
            status_callback_method: p.status_callback_method.clone(),
        },
        None => Webhooks::default(),
    }
}

/// The LiveKit trunk and rule a PhoneNumber bound to `va` should have.
pub fn sip_plan(pn: &PhoneNumber, va: &VoiceAgent) -> SipPlan {
    let key = key_of(&pn.metadata);
    SipPlan {
        number: pn.spec.number.clone(),
        name: format!("voice-agent {key}"),
        metadata: format!("{LIVEKIT_METADATA_PREFIX}{key}"),
        room_prefix: format!("{}-", va.name_any()),
        attributes: HashMap::from([
            ("voiceagent.io/voice-agent".to_string(), va.name_any()),
            ("voiceagent.io/phone-number".to_string(), pn.name_any()),
        ]),
        allowed_addresses: va
            .spec
            .telephony
            .livekit
            .as_ref()
            .map(|l| l.allowed_addresses.clone())
            .unwrap_or_default(),
    }
}

/// How a vendor failure ends the reconcile.
async fn vendor_failure(
    pn: &PhoneNumber,
    draft: &mut Draft,
    steady: bool,
    e: VendorError,
    ctx: &Context,
) -> Result<Action> {
    let old = pn.status.as_ref();
    let (reason, retry) = if e.is_transient() {
        (reasons::VENDOR_UNAVAILABLE, None)
    } else {
        (reasons::VENDOR_REJECTED, Some(REJECTED_RETRY))
    };
    let message = e.to_string();
    // A provisioned number that merely could not be checked keeps its
    // conditions: calls still flow, and flipping Ready would make the
    // gateway refuse them.
    if !steady {
        draft.blocked(reason, &message);
        write_status(pn, old, &draft.status, ctx).await?;
    }
    publish(ctx, pn, EventType::Warning, reason, "Provision", message).await;
    match retry {
        Some(after) => Ok(Action::requeue(after)),
        None => Err(Error::Vendor(e)),
    }
}

/// Provisions a live PhoneNumber.
async fn apply(pn: &PhoneNumber, ctx: &Context) -> Result<Action> {
    let key = key_of(&pn.metadata);
    let ns = pn.namespace().unwrap_or_default();
    let old = pn.status.as_ref();
    let mut draft = Draft::new(pn);
    let number = pn.spec.number.clone();

    // 1. Conflict.
    if let Some(holder) = earlier_claimant(pn, ctx).await? {
        let message = format!(
            "{number} is already claimed by PhoneNumber {}; this one provisions nothing \
             until that one is deleted",
            key_of(&holder.metadata)
        );
        let entering = !old.is_some_and(|s| conditions::is_true(&s.conditions, types::CONFLICT));
        // This one may have provisioned LiveKit objects before the older one
        // became visible in its namespace scope: they are its own, release them.
        let mut notes = Vec::new();
        if (draft.status.livekit_trunk_id.is_some()
            || draft.status.livekit_dispatch_rule_id.is_some())
            && let Some(va) = voice_agent(pn, ctx).await?
            && let Some(Ok(creds)) = livekit_credentials(&va, ctx).await?
        {
            release_livekit(&mut draft.status, &creds, ctx, &mut notes).await?;
        }
        draft.status.twilio_number_sid = None;
        draft.status.webhook_url = None;
        draft.status.previous = None;
        draft.set(
            types::CONFLICT,
            Status::True,
            reasons::NUMBER_CLAIMED,
            &message,
        );
        draft.blocked(reasons::NUMBER_CLAIMED, &message);
        write_status(pn, old, &draft.status, ctx).await?;
        if entering {
            publish(
                ctx,
                pn,
                EventType::Warning,
                reasons::NUMBER_CLAIMED,
                "Provision",
                message,
            )
            .await;
        }
        info!(object = %key, "number claimed by an older PhoneNumber; waiting");
        return Ok(Action::requeue(CONFLICT_RECHECK));
    }
    draft.set(
        types::CONFLICT,
        Status::False,
        reasons::NO_CONFLICT,
        format!("no other PhoneNumber claims {number}"),
    );

    // 2. The VoiceAgent.
    let agent = &pn.spec.voice_agent_ref.name;
    let Some(va) = voice_agent(pn, ctx).await? else {
        let message = format!(
            "waiting for VoiceAgent {ns}/{agent}: it does not exist (or does not decode); \
             nothing is changed at the vendors until it does"
        );
        draft.set(
            types::READY,
            Status::False,
            reasons::VOICE_AGENT_NOT_FOUND,
            &message,
        );
        // A number provisioned earlier keeps pointing where it did.
        if draft.status.twilio_number_sid.is_none() {
            draft.set(
                types::PROVISIONED,
                Status::False,
                reasons::VOICE_AGENT_NOT_FOUND,
                &message,
            );
        }
        if write_status(pn, old, &draft.status, ctx).await? {
            publish(
                ctx,
                pn,
                EventType::Warning,
                reasons::VOICE_AGENT_NOT_FOUND,
                "Provision",
                message,
            )
            .await;
        }
        return Ok(Action::await_change());
    };

    // 3. Credentials, all of them before any vendor is called.
    let twilio_creds = match twilio_credentials(pn, ctx).await? {
        Ok(c) => c,
        Err(m) => return wait_for(pn, &mut draft, m, ctx).await,
    };
    let livekit_creds = if va.spec.telephony.transport == Transport::Livekit {
        match livekit_credentials(&va, ctx).await? {
            Some(Ok(c)) => Some(c),
            Some(Err(m)) => return wait_for(pn, &mut draft, m, ctx).await,
            None => {
                let m = Missing {
                    reason: reasons::INVALID_SPEC,
                    message: format!(
                        "VoiceAgent {ns}/{agent} uses transport livekit without spec.telephony.livekit"
                    ),
                };
                return wait_for(pn, &mut draft, m, ctx).await;
            }
        }
    } else {
        None
    };

    // 4. Twilio.
    let desired = desired_webhooks(&va);
    let steady = old.is_some_and(|s| {
        conditions::is_true(&s.conditions, types::PROVISIONED) && s.webhook_url == desired.voice_url
    });
    let mut changed = Vec::new();
    let incoming = match ctx.twilio.find_number(&twilio_creds, &number).await {
        Ok(Some(n)) => n,
        Ok(None) => {
            let account = pn
                .spec
                .twilio
                .as_ref()
                .map(|t| t.account_sid.as_str())
                .unwrap_or_default();
            let message = format!(
                "{number} is not an IncomingPhoneNumber of Twilio account {account}: buy or \
                 port it into that account, or fix spec.number / spec.twilio.accountSid"
            );
            draft.status.twilio_number_sid = None;
            draft.status.webhook_url = None;
            draft.blocked(reasons::NUMBER_NOT_FOUND, &message);
            if write_status(pn, old, &draft.status, ctx).await? {
                publish(
                    ctx,
                    pn,
                    EventType::Warning,
                    reasons::NUMBER_NOT_FOUND,
                    "Provision",
                    message,
                )
                .await;
            }
            return Ok(Action::requeue(REJECTED_RETRY));
        }
        Err(e) => return vendor_failure(pn, &mut draft, steady, e, ctx).await,
    };
    if !desired.matches(&incoming) {
        if draft.status.twilio_number_sid.as_deref() != Some(incoming.sid.as_str()) {
            // First time this number is changed by this PhoneNumber: remember
            // what to restore, durably, before changing it.
            let (previous, dropped) = previous_of(&incoming);
            draft.status.previous = Some(previous);
            draft.status.twilio_number_sid = Some(incoming.sid.clone());
            write_status(pn, old, &draft.status, ctx).await?;
            if dropped {
                publish(
                    ctx,
                    pn,
                    EventType::Warning,
                    reasons::PROVISIONED,
                    "Provision",
                    format!(
                        "the previous webhook of Twilio number {} contains credentials and is \
                         not recorded; it will be cleared, not restored, when this PhoneNumber \
                         is deleted",
                        incoming.sid
                    ),
                )
                .await;
            }
        }
        if let Err(e) = ctx
            .twilio
            .update_number(&twilio_creds, &incoming.sid, &desired)
            .await
        {
            return vendor_failure(pn, &mut draft, false, e, ctx).await;
        }
        changed.push(format!(
            "Twilio number {} sends calls to {}",
            incoming.sid,
            desired.voice_url.as_deref().unwrap_or_default()
        ));
    }
    draft.status.twilio_number_sid = Some(incoming.sid.clone());
    draft.status.webhook_url = desired.voice_url.clone();

    // 5. LiveKit.
    match &livekit_creds {
        Some(creds) => {
            let plan = sip_plan(pn, &va);
            if let Err(e) = ensure_livekit(&plan, creds, &mut draft.status, ctx, &mut changed).await
            {
                return vendor_failure(pn, &mut draft, steady, e, ctx).await;
            }
        }
        None if draft.status.livekit_trunk_id.is_some()
            || draft.status.livekit_dispatch_rule_id.is_some() =>
        {
            // The transport moved away from LiveKit: release what was made.
            match livekit_credentials(&va, ctx).await? {
                Some(Ok(creds)) => {
                    release_livekit(&mut draft.status, &creds, ctx, &mut changed).await?;
                }
                _ => {
                    let note = left_on_livekit(&draft.status);
                    draft.status.livekit_trunk_id = None;
                    draft.status.livekit_dispatch_rule_id = None;
                    publish(
                        ctx,
                        pn,
                        EventType::Warning,
                        reasons::CLEANUP_INCOMPLETE,
                        "Provision",
                        note,
                    )
                    .await;
                }
            }
        }
        None => {}
    }

    // 6. Status and Events.
    let mut summary = format!(
        "Twilio number {} sends calls to {}",
        incoming.sid,
        desired.voice_url.as_deref().unwrap_or_default()
    );
    if let (Some(t), Some(r)) = (
        &draft.status.livekit_trunk_id,
        &draft.status.livekit_dispatch_rule_id,
    ) {
        summary.push_str(&format!("; LiveKit trunk {t}, dispatch rule {r}"));
    }
    draft.set(
        types::PROVISIONED,
        Status::True,
        reasons::PROVISIONED,
        &summary,
    );
    draft.set(
        types::READY,
        Status::True,
        reasons::PROVISIONED,
        format!("{number} routes calls to VoiceAgent {agent}"),
    );
    let written = write_status(pn, old, &draft.status, ctx).await?;
    if !changed.is_empty() {
        publish(
            ctx,
            pn,
            EventType::Normal,
            reasons::PROVISIONED,
            "Provision",
            changed.join("; "),
        )
        .await;
    }
    info!(
        object = %key,
        vendor_changes = changed.len(),
        status_written = written,
        "reconciled"
    );
    Ok(Action::requeue(RESYNC))
}

/// Waits for a missing reference (Secrets are watched; specs change).
async fn wait_for(
    pn: &PhoneNumber,
    draft: &mut Draft,
    m: Missing,
    ctx: &Context,
) -> Result<Action> {
    if draft.status.twilio_number_sid.is_none() {
        draft.set(types::PROVISIONED, Status::False, m.reason, &m.message);
    }
    draft.set(types::READY, Status::False, m.reason, &m.message);
    if write_status(pn, pn.status.as_ref(), &draft.status, ctx).await? {
        publish(
            ctx,
            pn,
            EventType::Warning,
            m.reason,
            "Provision",
            m.message,
        )
        .await;
    }
    Ok(Action::await_change())
}

/// Finds (and brings up to date) or creates the trunk and the rule of `plan`;
/// records their ids. A steady state writes nothing.
async fn ensure_livekit(
    plan: &SipPlan,
    creds: &livekit::Credentials,
    status: &mut PhoneNumberStatus,
    ctx: &Context,
    changed: &mut Vec<String>,
) -> std::result::Result<(), VendorError> {
    let trunks = ctx.livekit.list_inbound_trunks(creds, &plan.number).await?;
    let trunk = trunks.into_iter().find(|t| {
        Some(&t.sip_trunk_id) == status.livekit_trunk_id.as_ref() || t.metadata == plan.metadata
    });
    let trunk_id = match trunk {
        Some(t) if t.sip_trunk_id.is_empty() || plan.trunk_matches(&t) => t.sip_trunk_id,
        // Made before the trunk mapped the session headers, or edited by hand.
        Some(t) => {
            let id = t.sip_trunk_id.clone();
            ctx.livekit
                .replace_inbound_trunk(creds, &id, plan.trunk_replacing(&t))
                .await?;
            changed.push(format!("updated LiveKit inbound trunk {id}"));
            id
        }
        None => {
            let t = ctx
                .livekit
                .create_inbound_trunk(creds, plan.trunk())
                .await?;
            changed.push(format!("created LiveKit inbound trunk {}", t.sip_trunk_id));
            t.sip_trunk_id
        }
    };
    if trunk_id.is_empty() {
        return Err(VendorError::Protocol {
            vendor: "LiveKit",
            message: "the trunk has no id".into(),
        });
    }
    status.livekit_trunk_id = Some(trunk_id.clone());

    let rules = ctx.livekit.list_dispatch_rules(creds, &trunk_id).await?;
    let rule = rules.into_iter().find(|r| {
        Some(&r.sip_dispatch_rule_id) == status.livekit_dispatch_rule_id.as_ref()
            || r.metadata == plan.metadata
    });
    let rule_id = match rule {
        Some(r) if plan.rule_matches(&trunk_id, &r) => r.sip_dispatch_rule_id,
        Some(r) => {
            let id = r.sip_dispatch_rule_id;
            ctx.livekit
                .replace_dispatch_rule(creds, &id, plan.rule(&trunk_id))
                .await?;
            changed.push(format!("updated LiveKit dispatch rule {id}"));
            id
        }
        None => {
            let r = ctx
                .livekit
                .create_dispatch_rule(creds, plan.rule(&trunk_id))
                .await?;
            changed.push(format!(
                "created LiveKit dispatch rule {}",
                r.sip_dispatch_rule_id
            ));
            r.sip_dispatch_rule_id
        }
    };
    if rule_id.is_empty() {
        return Err(VendorError::Protocol {
            vendor: "LiveKit",
            message: "the dispatch rule has no id".into(),
        });
    }
    status.livekit_dispatch_rule_id = Some(rule_id);
    Ok(())
}

/// Deletes the recorded rule and trunk (rule first: it names the trunk).
/// Transient failures are errors (retried); refused requests are noted.
async fn release_livekit(
    status: &mut PhoneNumberStatus,
    creds: &livekit::Credentials,
    ctx: &Context,
    notes: &mut Vec<String>,
) -> Result<()> {
    if let Some(id) = status.livekit_dispatch_rule_id.clone() {
        match ctx.livekit.delete_dispatch_rule(creds, &id).await {
            Ok(()) => notes.push(format!("deleted LiveKit dispatch rule {id}")),
            Err(e) if e.is_transient() => return Err(Error::Vendor(e)),
            Err(e) => notes.push(format!("LiveKit dispatch rule {id} was not deleted: {e}")),
        }
        status.livekit_dispatch_rule_id = None;
    }
    if let Some(id) = status.livekit_trunk_id.clone() {
        match ctx.livekit.delete_trunk(creds, &id).await {
            Ok(()) => notes.push(format!("deleted LiveKit trunk {id}")),
            Err(e) if e.is_transient() => return Err(Error::Vendor(e)),
            Err(e) => notes.push(format!("LiveKit trunk {id} was not deleted: {e}")),
        }
        status.livekit_trunk_id = None;
    }
    Ok(())
}

fn left_on_livekit(status: &PhoneNumberStatus) -> String {
    format!(
        "LiveKit trunk {} and dispatch rule {} were not deleted: the VoiceAgent or its LiveKit \
         credentials are gone; delete them in LiveKit (lk sip inbound delete / lk sip dispatch \
         delete)",
        status.livekit_trunk_id.as_deref().unwrap_or("-"),
        status.livekit_dispatch_rule_id.as_deref().unwrap_or("-")
    )
}

/// Releases a deleted PhoneNumber at the vendors.
async fn cleanup(pn: &PhoneNumber, ctx: &Context) -> Result<Action> {
    let key = key_of(&pn.metadata);
    let mut status = pn.status.clone().unwrap_or_default();
    let mut notes = Vec::new();
    let mut left = Vec::new();
    // A number in conflict never changed Twilio: the holder owns it.
    let conflicted = conditions::is_true(&status.conditions, types::CONFLICT);

    if !conflicted && let Some(sid) = status.twilio_number_sid.clone() {
        match twilio_credentials(pn, ctx).await? {
            Err(m) => left.push(format!(
                "Twilio number {sid} was not restored ({}); it may still send calls to {}",
                m.message,
                status
                    .webhook_url
                    .as_deref()
                    .unwrap_or("this agent's gateway")
            )),
            Ok(creds) => match ctx.twilio.get_number(&creds, &sid).await {
                Ok(None) => notes.push(format!("Twilio number {sid} no longer exists")),
                Ok(Some(n)) if n.voice_url.is_some() && n.voice_url == status.webhook_url => {
                    let back = restored(status.previous.as_ref());
                    match ctx.twilio.update_number(&creds, &sid, &back).await {
                        Ok(_) => notes.push(match &back.voice_url {
                            Some(u) => format!("Twilio number {sid} restored to {u}"),
                            None => format!("Twilio number {sid}: webhooks cleared"),
                        }),
                        Err(e) if e.is_transient() => return Err(Error::Vendor(e)),
                        Err(VendorError::NotFound { .. }) => {
                            notes.push(format!("Twilio number {sid} no longer exists"));
                        }
                        Err(e) => left.push(format!("Twilio number {sid} was not restored: {e}")),
                    }
                }
                Ok(Some(_)) => notes.push(format!(
                    "Twilio number {sid} was repointed by someone else; left as it is"
                )),
                Err(e) if e.is_transient() => return Err(Error::Vendor(e)),
                Err(e) => left.push(format!("Twilio number {sid} was not restored: {e}")),
            },
        }
    }

    if status.livekit_trunk_id.is_some() || status.livekit_dispatch_rule_id.is_some() {
        let creds = match voice_agent(pn, ctx).await? {
            Some(va) => livekit_credentials(&va, ctx).await?.and_then(|c| c.ok()),
            None => None,
        };
        match creds {
            Some(creds) => release_livekit(&mut status, &creds, ctx, &mut notes).await?,
            None => left.push(left_on_livekit(&status)),
        }
    }

    if left.is_empty() {
        let note = if notes.is_empty() {
            "nothing was provisioned".to_string()
        } else {
            notes.join("; ")
        };
        publish(
            ctx,
            pn,
            EventType::Normal,
            reasons::RELEASED,
            "Release",
            note,
        )
        .await;
    } else {
        notes.extend(left);
        publish(
            ctx,
            pn,
            EventType::Warning,
            reasons::CLEANUP_INCOMPLETE,
            "Release",
            notes.join("; "),
        )
        .await;
    }
    info!(object = %key, "released");
    Ok(Action::await_change())
}

/// An undecodable PhoneNumber: a Warning Event; if it is being deleted with
/// this finalizer, the finalizer is removed (nothing can be cleaned up from
/// an object that cannot be read, and deletion must not hang on it).
async fn undecodable(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    error: &str,
    ctx: &Context,
) -> Result<()> {
    let (Some(name), Some(ns)) = (meta.name.as_deref(), meta.namespace.as_deref()) else {
        return Ok(());
    };
    warn!(object = %format!("{ns}/{name}"), "PhoneNumber cannot be decoded: {error}");
    ctx.metrics
        .errors
        .with_label_values(&[CONTROLLER, "undecodable"])
        .inc();
    super::publish_invalid_object(&ctx.recorder, "PhoneNumber", meta, error).await;
    let finalizers = meta.finalizers.clone().unwrap_or_default();
    if meta.deletion_timestamp.is_some()
        && let Some(i) = finalizers.iter().position(|f| f == FINALIZER)
    {
        let mut rest = finalizers;
        rest.remove(i);
        // The resourceVersion makes the list replacement conditional: a
        // concurrent change of the finalizers fails with 409 and is retried.
        let patch =
            json!({"metadata": {"resourceVersion": meta.resource_version, "finalizers": rest}});
        let api: Api<PhoneNumber> = Api::namespaced(ctx.client.clone(), ns);
        api.patch_metadata(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(())
}

/// The PhoneNumbers in `store` bound to VoiceAgent `va`.
pub fn numbers_of_agent(
    store: &Store<DeserializeGuard<PhoneNumber>>,
    va: &DeserializeGuard<VoiceAgent>,
) -> Vec<ObjectRef<DeserializeGuard<PhoneNumber>>> {
    let meta = match &va.0 {
        Ok(va) => va.meta(),
        Err(invalid) => &invalid.metadata,
    };
    let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|pn| pn.namespace().as_deref() == Some(ns) && pn.spec.voice_agent_ref.name == name)
        .map(|pn| ObjectRef::new(&pn.name_any()).within(ns))
        .collect()
}

/// The PhoneNumbers in `store` that may be waiting for Secret `secret`:
/// those of its namespace that are not Ready (a Secret may be the Twilio
/// token or one of the agent's LiveKit credentials).
pub fn numbers_waiting_in_namespace(
    store: &Store<DeserializeGuard<PhoneNumber>>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<DeserializeGuard<PhoneNumber>>> {
    let Some(ns) = secret.metadata.namespace.as_deref() else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|pn| pn.namespace().as_deref() == Some(ns))
        .filter(|pn| {
            !pn.status
                .as_ref()
                .is_some_and(|s| conditions::is_true(&s.conditions, types::READY))
        })
        .map(|pn| ObjectRef::new(&pn.name_any()).within(ns))
        .collect()
}

/// The other PhoneNumbers in `store` claiming `pn`'s number: when one
/// changes or goes away, the others re-check their conflict at once.
pub fn same_number(
    store: &Store<DeserializeGuard<PhoneNumber>>,
    pn: &DeserializeGuard<PhoneNumber>,
) -> Vec<ObjectRef<DeserializeGuard<PhoneNumber>>> {
    let Ok(pn) = &pn.0 else { return Vec::new() };
    store
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|o| o.spec.number == pn.spec.number && o.uid() != pn.uid())
        .filter_map(|o| Some(ObjectRef::new(&o.name_any()).within(&o.namespace()?)))
        .collect()
}

/// Runs the PhoneNumber controller for each watched namespace (or all)
/// until `stop` turns true.
pub async fn run(
    client: Client,
    namespaces: &[String],
    ctx: Arc<Context>,
    stop: watch::Receiver<bool>,
) {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    };
    let mut streams: Vec<BoxStream<'static, ()>> = Vec::new();
    for scope in scopes {
        macro_rules! scoped {
            ($t:ty) => {
                match &scope {
                    Some(ns) => Api::<$t>::namespaced(client.clone(), ns),
                    None => Api::<$t>::all(client.clone()),
                }
            };
        }
        let controller = Controller::new(
            scoped!(DeserializeGuard<PhoneNumber>),
            watcher::Config::default().any_semantic(),
        );
        let (by_agent, by_secret, by_number) =
            (controller.store(), controller.store(), controller.store());
        let mut stop = stop.clone();
        let stream = controller
            .watches(
                scoped!(DeserializeGuard<VoiceAgent>),
                watcher::Config::default(),
                move |va| numbers_of_agent(&by_agent, &va),
            )
            // Metadata only: the operator never caches Secret values.
            .watches(
                scoped!(PartialObjectMeta<Secret>),
                watcher::Config::default(),
                move |s| numbers_waiting_in_namespace(&by_secret, &s),
            )
            .watches(
                scoped!(DeserializeGuard<PhoneNumber>),
                watcher::Config::default(),
                move |pn| same_number(&by_number, &pn),
            )
            .graceful_shutdown_on(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .run(reconcile, error_policy, ctx.clone())
            .filter_map(|r| async move {
                if let Err(e) = r {
                    warn!(controller = CONTROLLER, "controller: {e}");
                }
                None::<()>
            })
            .boxed();
        streams.push(stream);
    }
    select_all(streams).collect::<Vec<()>>().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pn(ns: &str, name: &str, created: &str) -> PhoneNumber {
        let mut pn: PhoneNumber = serde_json::from_value(json!({
            "apiVersion": "voiceagent.io/v1alpha1", "kind": "PhoneNumber",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": created, "uid": format!("{ns}-{name}")},
            "spec": {"number": "+15551230142", "voiceAgentRef": {"name": "hello"},
                     "twilio": {"accountSid": format!("AC{}", "0".repeat(32)),
                                "credentialsSecretRef": {"name": "twilio", "key": "authToken"}}},
        }))
        .expect("decodes");
        pn.metadata.generation = Some(1);
        pn
    }

    #[test]
    fn the_oldest_claim_wins_then_namespace_and_name() {
        let a = pn("voice", "a", "2025-01-01T10:00:00Z");
        let b = pn("voice", "b", "2025-01-01T10:00:01Z");
        assert!(earlier(&a, &b) && !earlier(&b, &a));
        let same_second = pn("voice", "c", "2025-01-01T10:00:00Z");
        assert!(earlier(&a, &same_second), "ties break by name");
        let other_ns = pn("alpha", "z", "2025-01-01T10:00:00Z");
        assert!(earlier(&other_ns, &a), "then by namespace");
    }

    #[test]
    fn urls_with_credentials_are_not_recorded() {
        assert!(has_userinfo("https://user:pass@example.com/voice"));
        assert!(!has_userinfo("https://example.com/voice?to=a@b"));
        assert!(!has_userinfo("https://example.com/a@b"));
        let (prev, dropped) = previous_of(&IncomingNumber {
            voice_url: Some("https://u:p@old.example.com/v".into()),
            voice_method: Some("GET".into()),
            status_callback: Some("https://old.example.com/s".into()),
            ..IncomingNumber::default()
        });
        assert!(dropped);
        assert_eq!(prev.voice_url, None);
        assert_eq!(
            prev.status_callback.as_deref(),
            Some("https://old.example.com/s")
        );
        assert_eq!(restored(Some(&prev)).voice_method.as_deref(), Some("GET"));
        assert_eq!(restored(None), Webhooks::default());
    }

    #[test]
    fn plans_name_the_phone_number_and_the_agent() {
        let p = pn("voice", "main", "2025-01-01T10:00:00Z");
        let va: VoiceAgent = serde_json::from_value(json!({
            "apiVersion": "voiceagent.io/v1alpha1", "kind": "VoiceAgent",
            "metadata": {"name": "hello", "namespace": "voice"},
            "spec": {"persona": {"greeting": "Hi"},
                     "telephony": {"publicUrl": "https://hello.example.com/",
                                   "twilio": {"authTokenSecretRef": {"name": "t", "key": "k"}}}},
        }))
        .expect("decodes");
        let plan = sip_plan(&p, &va);
        assert_eq!(plan.metadata, "voiceagent.io/phonenumber=voice/main");
        assert_eq!(plan.room_prefix, "hello-");
        let w = desired_webhooks(&va);
        assert_eq!(
            w.voice_url.as_deref(),
            Some("https://hello.example.com/twilio/voice")
        );
        assert_eq!(
            w.status_callback.as_deref(),
            Some("https://hello.example.com/twilio/status")
        );
    }
}
