//! The **build** step of the reconcile pipeline: pure functions from a
//! VoiceAgent (plus the operator's settings and the bound numbers) to every
//! object the operator owns for it. No client, no clock, no randomness, so
//! `voice-agent-operator render` prints exactly what a reconcile applies and
//! the tests can pin every field.

mod calls_role;
mod hpa;
mod network;
mod workloads;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::Serialize;
use sha2::{Digest, Sha256};
use thiserror::Error;
use voice_agent_api::VoiceAgent;
use voice_agent_api::deploy::{ComponentConfig, Endpoints};
use voice_agent_api::voiceagent::{AutoscalingEngine, ComponentSpec};
use voice_agent_proto::Component;

pub use hpa::{HPA_COMPONENTS, concurrency_metric, latency_metric};
pub use network::url_port;

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "voice-agent-operator";
/// Annotation on pod templates that rolls pods when the rendered config changes.
pub const CONFIG_HASH_ANNOTATION: &str = "voiceagent.io/config-hash";
/// The value of `app.kubernetes.io/name` on everything a VoiceAgent owns.
pub const APP_NAME: &str = "voice-agent";
/// The value of `app.kubernetes.io/managed-by` and `part-of`.
pub const MANAGER: &str = "voice-agent-operator";

/// The four workloads of a VoiceAgent, in a stable order.
pub const COMPONENTS: [Component; 4] = [
    Component::Gateway,
    Component::Runtime,
    Component::Agent,
    Component::Tts,
];

/// Settings of the operator that shape what it renders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorSettings {
    /// Default image (`repository:tag` or `repository@digest`) of the components.
    pub image: String,
    /// Base URL of the cluster's metrics service, if installed.
    pub metrics_url: Option<String>,
    /// Kubernetes cluster domain, for service URLs.
    pub cluster_domain: String,
}

impl Default for OperatorSettings {
    fn default() -> Self {
        Self {
            image: format!(
                "ghcr.io/voice-agent-operator/voice-agent:{}",
                env!("CARGO_PKG_VERSION")
            ),
            metrics_url: None,
            cluster_domain: "cluster.local".to_string(),
        }
    }
}

/// Everything `build` needs besides the VoiceAgent.
#[derive(Clone, Debug, Default)]
pub struct BuildInput {
    /// Operator settings.
    pub settings: OperatorSettings,
    /// E.164 numbers of the PhoneNumbers bound to the agent.
    pub bound_numbers: Vec<String>,
    /// Replicas the autoscaler currently wants per component; components
    /// without an entry start at `minReplicas`. Always clamped to min/max.
    pub replicas: BTreeMap<Component, i32>,
}

/// Why a VoiceAgent cannot be rendered.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BuildError {
    /// The object has no name.
    #[error("the VoiceAgent has no metadata.name")]
    MissingName,
    /// The config could not be serialized.
    #[error("rendering the component config: {0}")]
    Config(String),
}

/// One desired object.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // a handful per VoiceAgent; boxing buys nothing
pub enum Desired {
    /// The pods' ServiceAccount.
    ServiceAccount(ServiceAccount),
    /// What the pods may do with the API: write Calls.
    Role(Role),
    /// Binds the Role to the ServiceAccount.
    RoleBinding(RoleBinding),
    /// The rendered component config.
    ConfigMap(ConfigMap),
    /// A component's Deployment.
    Deployment(Deployment),
    /// A component's Service.
    Service(Service),
    /// A component's PodDisruptionBudget.
    PodDisruptionBudget(PodDisruptionBudget),
    /// A NetworkPolicy.
    NetworkPolicy(NetworkPolicy),
    /// A component's HorizontalPodAutoscaler (`engine: hpa` only).
    HorizontalPodAutoscaler(HorizontalPodAutoscaler),
}

impl Desired {
    /// The object's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Desired::ServiceAccount(_) => "ServiceAccount",
            Desired::Role(_) => "Role",
            Desired::RoleBinding(_) => "RoleBinding",
            Desired::ConfigMap(_) => "ConfigMap",
            Desired::Deployment(_) => "Deployment",
            Desired::Service(_) => "Service",
            Desired::PodDisruptionBudget(_) => "PodDisruptionBudget",
            Desired::NetworkPolicy(_) => "NetworkPolicy",
            Desired::HorizontalPodAutoscaler(_) => "HorizontalPodAutoscaler",
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Desired::ServiceAccount(o) => &o.metadata,
            Desired::Role(o) => &o.metadata,
            Desired::RoleBinding(o) => &o.metadata,
            Desired::ConfigMap(o) => &o.metadata,
            Desired::Deployment(o) => &o.metadata,
            Desired::Service(o) => &o.metadata,
            Desired::PodDisruptionBudget(o) => &o.metadata,
            Desired::NetworkPolicy(o) => &o.metadata,
            Desired::HorizontalPodAutoscaler(o) => &o.metadata,
        }
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    /// The object as JSON with `apiVersion` and `kind`, ready for server-side apply.
    pub fn to_json(&self) -> serde_json::Value {
        // k8s-openapi's Serialize impls write apiVersion and kind; they cannot fail.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// The rendered objects of one VoiceAgent.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    /// Every object, in apply order (config before the pods that mount it).
    pub objects: Vec<Desired>,
    /// Hash of the rendered config; pod templates carry it.
    pub config_hash: String,
}

impl Rendered {
    /// The object of `kind` named `name`.
    pub fn get(&self, kind: &str, name: &str) -> Option<&Desired> {
        self.objects
            .iter()
            .find(|o| o.kind() == kind && o.name() == name)
    }

    /// All objects as one multi-document YAML stream.
    pub fn to_yaml(&self) -> Result<String, serde_yaml_ng::Error> {
        let mut out = String::new();
        for o in &self.objects {
            out.push_str("---\n");
            out.push_str(&serde_yaml_ng::to_string(&o.to_json())?);
        }
        Ok(out)
    }
}

/// Names and labels of one VoiceAgent's objects.
#[derive(Clone, Debug)]
pub struct Naming {
    /// The VoiceAgent's name.
    pub agent: String,
    /// Its namespace.
    pub namespace: String,
    owner: Option<OwnerReference>,
}

impl Naming {
    /// Naming for a VoiceAgent; objects get an owner reference when it has a uid.
    pub fn new(va: &VoiceAgent) -> Result<Self, BuildError> {
        let agent = va.metadata.name.clone().ok_or(BuildError::MissingName)?;
        let namespace = va
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let owner = va.metadata.uid.clone().map(|uid| OwnerReference {
            api_version: format!("{}/{}", voice_agent_api::GROUP, voice_agent_api::VERSION),
            kind: "VoiceAgent".to_string(),
            name: agent.clone(),
            uid,
            controller: Some(true),
            block_owner_deletion: Some(true),
        });
        Ok(Self {
            agent,
            namespace,
            owner,
        })
    }

    /// Name of a component's Deployment, Service, PDB and NetworkPolicy.
    pub fn component(&self, c: Component) -> String {
        format!("{}-{}", self.agent, c.as_str())
    }

    /// Name of the ConfigMap.
    pub fn config_map(&self) -> String {
        format!("{}-config", self.agent)
    }

    /// Name of the ServiceAccount.
    pub fn service_account(&self) -> String {
        self.agent.clone()
    }

    /// Name of the pods' Role and RoleBinding (they write Calls).
    pub fn calls_role(&self) -> String {
        format!("{}-calls", self.agent)
    }

    /// Labels that select one component's pods.
    pub fn selector(&self, c: Component) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), APP_NAME.to_string()),
            ("app.kubernetes.io/instance".to_string(), self.agent.clone()),
            (
                "app.kubernetes.io/component".to_string(),
                c.as_str().to_string(),
            ),
        ])
    }

    /// Labels that select every pod of this VoiceAgent.
    pub fn agent_selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), APP_NAME.to_string()),
            ("app.kubernetes.io/instance".to_string(), self.agent.clone()),
        ])
    }

    /// Labels of an object (and its pods), with or without a component.
    pub fn labels(&self, c: Option<Component>) -> BTreeMap<String, String> {
        let mut l = match c {
            Some(c) => self.selector(c),
            None => self.agent_selector(),
        };
        l.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
        l.insert("app.kubernetes.io/part-of".into(), MANAGER.into());
        l
    }

    /// Metadata of an owned object.
    pub fn meta(&self, name: String, c: Option<Component>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels(c)),
            owner_references: self.owner.clone().map(|o| vec![o]),
            ..ObjectMeta::default()
        }
    }

    /// In-cluster base URL of a component's Service.
    pub fn service_url(&self, c: Component, cluster_domain: &str) -> String {
        format!(
            "http://{}.{}.svc.{}:{}",
            self.component(c),
            self.namespace,
            cluster_domain,
            voice_agent_api::deploy::HTTP_PORT
        )
    }
}

/// The autoscaling bounds of a component.
pub fn bounds(va: &VoiceAgent, c: Component) -> (i32, i32) {
    let comps = &va.spec.components;
    let spec: (i32, i32) = match c {
        Component::Runtime => (comps.runtime.min_replicas, comps.runtime.max_replicas),
        Component::Gateway => minmax(&comps.gateway),
        Component::Agent => minmax(&comps.agent),
        Component::Tts => minmax(&comps.tts),
        Component::Metrics => (1, 1),
    };
    (spec.0, spec.1.max(spec.0))
}

fn minmax(c: &ComponentSpec) -> (i32, i32) {
    (c.min_replicas, c.max_replicas)
}

/// Whether the operator writes `spec.replicas` of this component's
/// Deployment. With `engine: hpa`, an HPA owns gateway, agent and tts; the
/// runtime stays operator-scaled because an HPA cannot drain calls.
pub fn operator_scales(va: &VoiceAgent, c: Component) -> bool {
    va.spec.autoscaling.engine == AutoscalingEngine::Operator || c == Component::Runtime
}

/// The rendered component config of a VoiceAgent.
pub fn component_config(va: &VoiceAgent, naming: &Naming, input: &BuildInput) -> ComponentConfig {
    let domain = &input.settings.cluster_domain;
    let endpoints = Endpoints {
        gateway: naming.service_url(Component::Gateway, domain),
        runtime: naming.service_url(Component::Runtime, domain),
        agent: naming.service_url(Component::Agent, domain),
        tts: naming.service_url(Component::Tts, domain),
        metrics: input.settings.metrics_url.clone(),
    };
    let mut numbers = input.bound_numbers.clone();
    numbers.sort();
    numbers.dedup();
    ComponentConfig::from_voice_agent(va, &naming.namespace, endpoints, numbers)
}

/// Hex SHA-256 of the rendered config, shortened: the pod template annotation.
pub fn config_hash(config_yaml: &str) -> String {
    let digest = Sha256::digest(config_yaml.as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// Builds every object the operator owns for `va`.
pub fn build(va: &VoiceAgent, input: &BuildInput) -> Result<Rendered, BuildError> {
    let naming = Naming::new(va)?;
    let config = component_config(va, &naming, input);
    let config_yaml = config
        .to_yaml()
        .map_err(|e| BuildError::Config(e.to_string()))?;
    let config_hash = config_hash(&config_yaml);

    let mut objects = vec![
        Desired::ServiceAccount(workloads::service_account(&naming)),
        Desired::Role(calls_role::role(&naming)),
        Desired::RoleBinding(calls_role::role_binding(&naming)),
        Desired::ConfigMap(workloads::config_map(&naming, config_yaml)),
    ];
    for c in COMPONENTS {
        objects.push(Desired::Deployment(workloads::deployment(
            va,
            &naming,
            input,
            c,
            &config_hash,
        )));
        objects.push(Desired::Service(workloads::service(&naming, c)));
        objects.push(Desired::PodDisruptionBudget(workloads::pdb(&naming, c)));
    }
    objects.extend(
        network::policies(va, &naming)
            .into_iter()
            .map(Desired::NetworkPolicy),
    );
    // After the Deployments they scale.
    objects.extend(
        hpa::hpas(va, &naming)
            .into_iter()
            .map(Desired::HorizontalPodAutoscaler),
    );
    Ok(Rendered {
        objects,
        config_hash,
    })
}

/// Why `render` refused its input.
#[derive(Debug, Error)]
pub enum RenderError {
    /// A manifest is not a valid VoiceAgent or PhoneNumber.
    #[error("{0}")]
    Invalid(String),
    /// Rendering failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The output could not be serialized.
    #[error("serializing: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
}

/// `voice-agent-operator render`: validates the VoiceAgent manifest (schema
/// and CEL, as the API server would), binds the numbers of the PhoneNumbers
/// in `phone_numbers_yaml` that refer to it, and renders its objects as YAML.
pub fn render_manifests(
    voice_agent_yaml: &str,
    phone_numbers_yaml: &str,
    namespace: &str,
    settings: OperatorSettings,
) -> Result<String, RenderError> {
    use serde::Deserialize;
    let validator = voice_agent_api::validation::Validator::new();
    let mut agents = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(voice_agent_yaml) {
        let value = serde_json::Value::deserialize(doc)
            .map_err(|e| RenderError::Invalid(format!("not valid YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        let defaulted = validator
            .validate(&value)
            .map_err(|e| RenderError::Invalid(e.to_string()))?;
        let va: VoiceAgent = serde_json::from_value(defaulted)
            .map_err(|e| RenderError::Invalid(format!("expected a VoiceAgent: {e}")))?;
        agents.push(va);
    }
    let [mut va] = <[VoiceAgent; 1]>::try_from(agents)
        .map_err(|a| RenderError::Invalid(format!("expected one VoiceAgent, found {}", a.len())))?;
    va.metadata
        .namespace
        .get_or_insert_with(|| namespace.to_string());

    let mut bound_numbers = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(phone_numbers_yaml) {
        let value = serde_json::Value::deserialize(doc)
            .map_err(|e| RenderError::Invalid(format!("phone numbers: not valid YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        let defaulted = validator
            .validate(&value)
            .map_err(|e| RenderError::Invalid(format!("phone numbers: {e}")))?;
        let pn: voice_agent_api::PhoneNumber = serde_json::from_value(defaulted)
            .map_err(|e| RenderError::Invalid(format!("expected a PhoneNumber: {e}")))?;
        if Some(&pn.spec.voice_agent_ref.name) == va.metadata.name.as_ref() {
            bound_numbers.push(pn.spec.number);
        }
    }
    let input = BuildInput {
        settings,
        bound_numbers,
        ..BuildInput::default()
    };
    Ok(build(&va, &input)?.to_yaml()?)
}

#[cfg(test)]
mod tests;
