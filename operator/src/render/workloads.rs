//! ServiceAccount, ConfigMap, and per component a Deployment, a Service and a
//! PodDisruptionBudget.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, TopologySpreadConstraint,
    Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use voice_agent_api::deploy::{CONFIG_DIR, CONFIG_ENV, CONFIG_FILE, HTTP_PORT, env};
use voice_agent_api::voiceagent::{PullPolicy, Transport};
use voice_agent_api::{SecretKeyRef, VoiceAgent};
use voice_agent_proto::Component;

use super::{BuildInput, CONFIG_HASH_ANNOTATION, Naming, bounds, operator_scales};

/// UID/GID the components run as (the distroless `nonroot` user).
pub const RUN_AS: i64 = 65532;

pub(super) fn service_account(naming: &Naming) -> ServiceAccount {
    ServiceAccount {
        metadata: naming.meta(naming.service_account(), None),
        // Pods that need the API (gateway, runtime: they write Calls) mount a
        // token explicitly; the others get none.
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

pub(super) fn config_map(naming: &Naming, config_yaml: String) -> ConfigMap {
    ConfigMap {
        metadata: naming.meta(naming.config_map(), None),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_string(), config_yaml)])),
        ..ConfigMap::default()
    }
}

/// Which Secret keys a component receives, as environment variables.
/// Least privilege: each component gets only what it uses.
pub(super) fn secret_env(va: &VoiceAgent, c: Component) -> Vec<(&'static str, SecretKeyRef)> {
    let spec = &va.spec;
    let mut out: Vec<(&'static str, Option<&SecretKeyRef>)> = Vec::new();
    let livekit = spec
        .telephony
        .livekit
        .as_ref()
        .filter(|_| spec.telephony.transport == Transport::Livekit);
    match c {
        Component::Gateway => {
            out.push((
                env::TWILIO_AUTH_TOKEN,
                Some(&spec.telephony.twilio.auth_token_secret_ref),
            ));
            out.push((env::LIVEKIT_API_KEY, livekit.map(|l| &l.api_key_secret_ref)));
            out.push((
                env::LIVEKIT_API_SECRET,
                livekit.map(|l| &l.api_secret_secret_ref),
            ));
        }
        Component::Runtime => {
            out.push((env::STT_API_KEY, spec.stt.api_key_secret_ref.as_ref()));
            out.push((env::LIVEKIT_API_KEY, livekit.map(|l| &l.api_key_secret_ref)));
            out.push((
                env::LIVEKIT_API_SECRET,
                livekit.map(|l| &l.api_secret_secret_ref),
            ));
        }
        Component::Agent => {
            out.push((env::LLM_API_KEY, spec.llm.api_key_secret_ref.as_ref()));
            out.push((
                env::EMBEDDER_API_KEY,
                spec.knowledge.embedder.api_key_secret_ref.as_ref(),
            ));
            out.push((
                env::QDRANT_API_KEY,
                spec.knowledge
                    .vector_store
                    .qdrant
                    .as_ref()
                    .and_then(|q| q.api_key_secret_ref.as_ref()),
            ));
            out.push((
                env::DATABASE_URL,
                spec.database.as_ref().map(|d| &d.postgres.url_secret_ref),
            ));
        }
        Component::Tts => out.push((env::TTS_API_KEY, spec.tts.api_key_secret_ref.as_ref())),
        Component::Metrics => {}
    }
    out.into_iter()
        .filter_map(|(name, r)| r.map(|r| (name, r.clone())))
        .collect()
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn env_vars(va: &VoiceAgent, c: Component) -> Vec<EnvVar> {
    let mut vars = vec![
        EnvVar {
            name: CONFIG_ENV.to_string(),
            value: Some(format!("{CONFIG_DIR}/{CONFIG_FILE}")),
            ..EnvVar::default()
        },
        field_env(env::POD_NAME, "metadata.name"),
        field_env(env::POD_NAMESPACE, "metadata.namespace"),
        field_env(env::POD_IP, "status.podIP"),
    ];
    vars.extend(secret_env(va, c).into_iter().map(|(name, r)| EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: r.name,
                key: r.key,
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }));
    vars
}

/// Requests and limits when the spec sets none: sized for a few dozen calls
/// per runtime pod and the built-in providers.
fn default_resources(c: Component) -> ResourceRequirements {
    let (cpu, mem, limit) = match c {
        Component::Gateway => ("50m", "64Mi", "256Mi"),
        Component::Runtime => ("250m", "256Mi", "1Gi"),
        Component::Agent => ("250m", "256Mi", "1Gi"),
        Component::Tts => ("250m", "128Mi", "512Mi"),
        Component::Metrics => ("50m", "64Mi", "256Mi"),
    };
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.to_string())),
            ("memory".to_string(), Quantity(mem.to_string())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity(limit.to_string()),
        )])),
        ..ResourceRequirements::default()
    }
}

fn resources(va: &VoiceAgent, c: Component) -> ResourceRequirements {
    let comps = &va.spec.components;
    let set = match c {
        Component::Gateway => comps.gateway.resources.clone(),
        Component::Runtime => comps.runtime.resources.clone(),
        Component::Agent => comps.agent.resources.clone(),
        Component::Tts => comps.tts.resources.clone(),
        Component::Metrics => None,
    };
    set.unwrap_or_else(|| default_resources(c))
}

/// The image reference: the spec's repository/tag over the operator's default.
pub(super) fn image(va: &VoiceAgent, default: &str) -> String {
    let (default_repo, default_tag) = split_image(default);
    let spec = va.spec.image.as_ref();
    let repo = spec
        .and_then(|i| i.repository.as_deref())
        .unwrap_or(default_repo);
    match spec.and_then(|i| i.tag.as_deref()).or(default_tag) {
        Some(tag) if tag.starts_with("sha256:") => format!("{repo}@{tag}"),
        Some(tag) if tag.starts_with('@') => format!("{repo}{tag}"),
        Some(tag) => format!("{repo}:{tag}"),
        None => repo.to_string(),
    }
}

/// Splits `repo[:tag]` or `repo@digest`, minding registry ports (`host:5000/x`).
fn split_image(image: &str) -> (&str, Option<&str>) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo, Some(&image[repo.len()..][..digest.len() + 1]));
    }
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
        _ => (image, None),
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("http".to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

/// The container security context of every component: Pod Security "restricted".
pub(super) fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// The replicas to write: the autoscaler's choice clamped to the bounds.
pub(super) fn replicas(va: &VoiceAgent, input: &BuildInput, c: Component) -> i32 {
    let (min, max) = bounds(va, c);
    input
        .replicas
        .get(&c)
        .copied()
        .unwrap_or(min)
        .clamp(min, max)
}

pub(super) fn deployment(
    va: &VoiceAgent,
    naming: &Naming,
    input: &BuildInput,
    c: Component,
    config_hash: &str,
) -> Deployment {
    let labels = naming.labels(Some(c));
    let selector = naming.selector(c);
    let runtime = c == Component::Runtime;
    let drain = va.spec.components.runtime.drain_timeout_seconds;
    let pull_policy = va
        .spec
        .image
        .as_ref()
        .and_then(|i| i.pull_policy)
        .map(|p| match p {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        });
    let container = Container {
        name: c.as_str().to_string(),
        image: Some(image(va, &input.settings.image)),
        image_pull_policy: pull_policy.map(str::to_string),
        args: Some(vec![c.as_str().to_string()]),
        ports: Some(vec![ContainerPort {
            name: Some("http".to_string()),
            container_port: HTTP_PORT,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        }]),
        env: Some(env_vars(va, c)),
        resources: Some(resources(va, c)),
        readiness_probe: Some(http_probe("/readyz", 5, 2)),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".to_string(),
                mount_path: CONFIG_DIR.to_string(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "tmp".to_string(),
                mount_path: "/tmp".to_string(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    let pod = PodSpec {
        service_account_name: Some(naming.service_account()),
        // Gateway and runtime create and update Calls; agent and tts never
        // talk to the API server.
        automount_service_account_token: Some(matches!(c, Component::Gateway | Component::Runtime)),
        security_context: Some(pod_security()),
        containers: vec![container],
        volumes: Some(vec![
            Volume {
                name: "config".to_string(),
                config_map: Some(ConfigMapVolumeSource {
                    name: naming.config_map(),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "tmp".to_string(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: Some(Quantity("256Mi".to_string())),
                    ..EmptyDirVolumeSource::default()
                }),
                ..Volume::default()
            },
        ]),
        // The runtime drains calls on SIGTERM; give it the drain timeout plus
        // time to hang up and flush.
        termination_grace_period_seconds: Some(if runtime { i64::from(drain) + 30 } else { 30 }),
        topology_spread_constraints: Some(vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".to_string(),
            when_unsatisfiable: "ScheduleAnyway".to_string(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            }),
            ..TopologySpreadConstraint::default()
        }]),
        ..PodSpec::default()
    };
    Deployment {
        metadata: naming.meta(naming.component(c), Some(c)),
        spec: Some(DeploymentSpec {
            replicas: operator_scales(va, c).then(|| replicas(va, input, c)),
            revision_history_limit: Some(5),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            // Never take capacity away during a rollout; new pods come first.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_string()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::String("25%".to_string())),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_string(),
                        config_hash.to_string(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

pub(super) fn service(naming: &Naming, c: Component) -> Service {
    Service {
        metadata: naming.meta(naming.component(c), Some(c)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(naming.selector(c)),
            ports: Some(vec![ServicePort {
                name: Some("http".to_string()),
                port: HTTP_PORT,
                target_port: Some(IntOrString::String("http".to_string())),
                protocol: Some("TCP".to_string()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

pub(super) fn pdb(naming: &Naming, c: Component) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: naming.meta(naming.component(c), Some(c)),
        spec: Some(PodDisruptionBudgetSpec {
            // One pod at a time; runtime pods drain their calls on eviction.
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(naming.selector(c)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}
