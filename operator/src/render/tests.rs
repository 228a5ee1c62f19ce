use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};

use super::*;

fn example(name: &str) -> VoiceAgent {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("example exists");
    let mut va: VoiceAgent = serde_yaml_ng::from_str(&text).expect("example decodes");
    va.metadata
        .namespace
        .get_or_insert_with(|| "voice".to_string());
    va.metadata.uid = Some("0b7f3c2e-1111-4222-8333-944455556666".to_string());
    va
}

fn render(va: &VoiceAgent) -> Rendered {
    build(va, &BuildInput::default()).expect("renders")
}

fn deployment<'a>(r: &'a Rendered, name: &str) -> &'a Deployment {
    match r.get("Deployment", name) {
        Some(Desired::Deployment(d)) => d,
        _ => panic!("no Deployment {name}"),
    }
}

fn pod(d: &Deployment) -> &PodSpec {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec")
}

fn container(d: &Deployment) -> &Container {
    &pod(d).containers[0]
}

fn policy<'a>(r: &'a Rendered, name: &str) -> &'a NetworkPolicy {
    match r.get("NetworkPolicy", name) {
        Some(Desired::NetworkPolicy(p)) => p,
        _ => panic!("no NetworkPolicy {name}"),
    }
}

fn secret_env_names(d: &Deployment) -> Vec<(String, String, String)> {
    container(d)
        .env
        .iter()
        .flatten()
        .filter_map(|e| {
            let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
            Some((e.name.clone(), r.name.clone(), r.key.clone()))
        })
        .collect()
}

#[test]
fn minimal_agent_renders_every_object() {
    let r = render(&example("voiceagent-minimal.yaml"));
    let got: Vec<(&str, &str)> = r.objects.iter().map(|o| (o.kind(), o.name())).collect();
    assert_eq!(
        got,
        [
            ("ServiceAccount", "hello"),
            ("Role", "hello-calls"),
            ("RoleBinding", "hello-calls"),
            ("ConfigMap", "hello-config"),
            ("Deployment", "hello-gateway"),
            ("Service", "hello-gateway"),
            ("PodDisruptionBudget", "hello-gateway"),
            ("Deployment", "hello-runtime"),
            ("Service", "hello-runtime"),
            ("PodDisruptionBudget", "hello-runtime"),
            ("Deployment", "hello-agent"),
            ("Service", "hello-agent"),
            ("PodDisruptionBudget", "hello-agent"),
            ("Deployment", "hello-tts"),
            ("Service", "hello-tts"),
            ("PodDisruptionBudget", "hello-tts"),
            ("NetworkPolicy", "hello-default-deny"),
            ("NetworkPolicy", "hello-gateway"),
            ("NetworkPolicy", "hello-runtime"),
            ("NetworkPolicy", "hello-agent"),
            ("NetworkPolicy", "hello-tts"),
        ]
    );
}

#[test]
fn every_object_is_owned_labelled_and_namespaced() {
    let r = render(&example("voiceagent-full.yaml"));
    for o in &r.objects {
        let m = o.metadata();
        assert_eq!(m.namespace.as_deref(), Some("voice"), "{}", o.name());
        let owners = m.owner_references.as_ref().expect("owner refs");
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "VoiceAgent");
        assert_eq!(owners[0].name, "support");
        assert_eq!(owners[0].controller, Some(true));
        let labels = m.labels.as_ref().expect("labels");
        for key in ["name", "instance", "managed-by", "part-of"] {
            assert!(
                labels.contains_key(&format!("app.kubernetes.io/{key}")),
                "{} lacks {key}",
                o.name()
            );
        }
        assert_eq!(labels["app.kubernetes.io/instance"], "support");
        assert_eq!(
            labels["app.kubernetes.io/managed-by"],
            "voice-agent-operator"
        );
        // Serialized objects carry apiVersion and kind for server-side apply.
        let json = o.to_json();
        assert_eq!(json["kind"], o.kind());
        assert!(json["apiVersion"].is_string());
    }
}

#[test]
fn without_a_uid_objects_have_no_owner_reference() {
    let mut va = example("voiceagent-minimal.yaml");
    va.metadata.uid = None;
    let r = render(&va);
    assert!(
        r.objects
            .iter()
            .all(|o| o.metadata().owner_references.is_none())
    );
}

#[test]
fn pods_meet_pod_security_restricted() {
    let r = render(&example("voiceagent-full.yaml"));
    for c in COMPONENTS {
        let d = deployment(&r, &format!("support-{}", c.as_str()));
        let p = pod(d);
        let psc = p.security_context.as_ref().expect("pod security context");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(65532));
        assert_eq!(
            psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
            Some("RuntimeDefault")
        );
        for ctr in &p.containers {
            let sc = ctr
                .security_context
                .as_ref()
                .expect("container security context");
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", ctr.name);
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(sc.run_as_non_root, Some(true));
            assert_eq!(sc.privileged, None);
            assert_eq!(
                sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
                Some(vec!["ALL".to_string()])
            );
            assert!(
                sc.capabilities
                    .as_ref()
                    .and_then(|c| c.add.as_ref())
                    .is_none()
            );
            // A writable /tmp on an emptyDir, the config read-only.
            let mounts = ctr.volume_mounts.as_ref().expect("mounts");
            assert!(
                mounts
                    .iter()
                    .any(|m| m.mount_path == "/tmp" && m.read_only.is_none())
            );
            assert!(
                mounts
                    .iter()
                    .any(|m| m.mount_path == "/etc/voice-agent" && m.read_only == Some(true))
            );
        }
        let volumes = p.volumes.as_ref().expect("volumes");
        assert!(
            volumes
                .iter()
                .any(|v| v.name == "tmp" && v.empty_dir.is_some())
        );
        assert!(p.host_network.is_none() && p.host_pid.is_none() && p.host_ipc.is_none());
        assert!(volumes.iter().all(|v| v.host_path.is_none()));
    }
}

#[test]
fn deployments_run_the_component_with_probes_and_resources() {
    let r = render(&example("voiceagent-full.yaml"));
    for c in COMPONENTS {
        let d = deployment(&r, &format!("support-{}", c.as_str()));
        let ctr = container(d);
        assert_eq!(ctr.args.as_deref(), Some(&[c.as_str().to_string()][..]));
        assert_eq!(
            ctr.image.as_deref(),
            Some("ghcr.io/voice-agent-operator/voice-agent:0.1.0")
        );
        assert_eq!(ctr.image_pull_policy.as_deref(), Some("IfNotPresent"));
        let ready = ctr
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("readiness");
        assert_eq!(ready.path.as_deref(), Some("/readyz"));
        let live = ctr
            .liveness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("liveness");
        assert_eq!(live.path.as_deref(), Some("/healthz"));
        assert!(
            ctr.resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .is_some()
        );
        let env: Vec<&str> = ctr.env.iter().flatten().map(|e| e.name.as_str()).collect();
        assert!(
            env.contains(&"VOICE_AGENT_CONFIG")
                && env.contains(&"POD_NAME")
                && env.contains(&"POD_IP")
        );
    }
    // The spec's resources win over the defaults.
    let runtime = container(deployment(&r, "support-runtime"));
    let limits = runtime
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .expect("limits");
    assert_eq!(limits["memory"].0, "1Gi");
}

#[test]
fn runtime_grace_period_covers_the_drain_timeout() {
    let r = render(&example("voiceagent-full.yaml"));
    assert_eq!(
        pod(deployment(&r, "support-runtime")).termination_grace_period_seconds,
        Some(930)
    );
    assert_eq!(
        pod(deployment(&r, "support-agent")).termination_grace_period_seconds,
        Some(30)
    );
}

#[test]
fn only_gateway_and_runtime_mount_an_api_token() {
    let r = render(&example("voiceagent.yaml"));
    let mounts = |n: &str| pod(deployment(&r, n)).automount_service_account_token;
    assert_eq!(mounts("front-desk-gateway"), Some(true));
    assert_eq!(mounts("front-desk-runtime"), Some(true));
    assert_eq!(mounts("front-desk-agent"), Some(false));
    assert_eq!(mounts("front-desk-tts"), Some(false));
}

#[test]
fn secrets_reach_only_the_components_that_use_them() {
    let r = render(&example("voiceagent-full.yaml"));
    let env = |n: &str| secret_env_names(deployment(&r, n));
    let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        env("support-gateway"),
        [
            s("TWILIO_AUTH_TOKEN", "twilio", "authToken"),
            s("LIVEKIT_API_KEY", "livekit", "apiKey"),
            s("LIVEKIT_API_SECRET", "livekit", "apiSecret"),
        ]
    );
    assert_eq!(
        env("support-runtime"),
        [
            s("VOICE_AGENT_STT_API_KEY", "deepgram", "apiKey"),
            s("LIVEKIT_API_KEY", "livekit", "apiKey"),
            s("LIVEKIT_API_SECRET", "livekit", "apiSecret"),
        ]
    );
    assert_eq!(
        env("support-agent"),
        [
            s("VOICE_AGENT_LLM_API_KEY", "openai", "apiKey"),
            s("VOICE_AGENT_EMBEDDER_API_KEY", "openai", "apiKey"),
            s("VOICE_AGENT_QDRANT_API_KEY", "qdrant", "apiKey"),
            s("DATABASE_URL", "support-db", "url"),
        ]
    );
    assert_eq!(
        env("support-tts"),
        [s("VOICE_AGENT_TTS_API_KEY", "elevenlabs", "apiKey")]
    );

    // The minimal agent: only the Twilio token, only in the gateway.
    let r = render(&example("voiceagent-minimal.yaml"));
    assert_eq!(secret_env_names(deployment(&r, "hello-gateway")).len(), 1);
    for n in ["hello-runtime", "hello-agent", "hello-tts"] {
        assert!(secret_env_names(deployment(&r, n)).is_empty(), "{n}");
    }
}

#[test]
fn no_secret_material_is_rendered() {
    let r = render(&example("voiceagent-full.yaml"));
    for o in &r.objects {
        assert_ne!(o.kind(), "Secret");
        // Env values are literal only for non-secret settings.
        if let Desired::Deployment(d) = o {
            for e in container(d).env.iter().flatten() {
                assert!(
                    e.value.is_none() || e.name == "VOICE_AGENT_CONFIG",
                    "{}",
                    e.name
                );
            }
        }
    }
    // The ConfigMap names Secrets, never their values, and has no data for
    // database URLs at all.
    let Some(Desired::ConfigMap(ConfigMap {
        data: Some(data), ..
    })) = r.get("ConfigMap", "support-config")
    else {
        panic!("no ConfigMap")
    };
    let config = &data["config.yaml"];
    assert!(config.contains("apiKeySecretRef"));
    assert!(!config.contains("postgres://"));
    assert!(
        !config.contains("support-db"),
        "the database Secret is not even named:\n{config}"
    );
}

#[test]
fn config_map_holds_the_component_config() {
    let r = render(&example("voiceagent.yaml"));
    let Some(Desired::ConfigMap(ConfigMap {
        data: Some(data), ..
    })) = r.get("ConfigMap", "front-desk-config")
    else {
        panic!("no ConfigMap")
    };
    let cfg =
        voice_agent_api::deploy::ComponentConfig::from_yaml(&data["config.yaml"]).expect("parses");
    assert_eq!(cfg.voice_agent, "front-desk");
    assert_eq!(cfg.namespace, "voice");
    assert!(cfg.database);
    assert_eq!(cfg.runtime.max_calls_per_pod, 20);
    assert_eq!(
        cfg.endpoints.agent,
        "http://front-desk-agent.voice.svc.cluster.local:8080"
    );
    assert_eq!(
        cfg.persona.greeting,
        "Thanks for calling Harbor Bikes. How can I help?"
    );
}

#[test]
fn config_hash_changes_with_config_and_only_then() {
    let base = example("voiceagent.yaml");
    let hash = |va: &VoiceAgent, input: &BuildInput| {
        let r = build(va, input).expect("renders");
        let annotations: Vec<String> = COMPONENTS
            .iter()
            .map(|c| {
                let d = deployment(&r, &format!("front-desk-{}", c.as_str()));
                d.spec
                    .as_ref()
                    .and_then(|s| s.template.metadata.as_ref())
                    .and_then(|m| m.annotations.as_ref())
                    .expect("annotations")[CONFIG_HASH_ANNOTATION]
                    .clone()
            })
            .collect();
        assert!(annotations.iter().all(|a| a == &r.config_hash));
        r.config_hash
    };
    let input = BuildInput::default();
    let h0 = hash(&base, &input);
    assert_eq!(h0, hash(&base, &input), "deterministic");

    // Scaling settings do not roll pods.
    let mut scaled = base.clone();
    scaled.spec.components.runtime.max_replicas = 40;
    scaled.spec.autoscaling.targets.turn_latency_p95_ms = 900;
    scaled.spec.call_retention.max_ended_calls = 5;
    assert_eq!(h0, hash(&scaled, &input));
    let mut more = input.clone();
    more.replicas.insert(Component::Runtime, 5);
    assert_eq!(h0, hash(&base, &more));

    // Config does.
    let mut persona = base.clone();
    persona.spec.persona.greeting = "Hi there".into();
    assert_ne!(h0, hash(&persona, &input));
    let mut capacity = base.clone();
    capacity.spec.components.runtime.max_calls_per_pod = 30;
    assert_ne!(h0, hash(&capacity, &input));
    let mut numbers = input.clone();
    numbers.bound_numbers = vec!["+15551230142".into()];
    assert_ne!(h0, hash(&base, &numbers));
    // Order of bound numbers does not matter.
    let mut a = input.clone();
    a.bound_numbers = vec!["+15551230142".into(), "+15551230143".into()];
    let mut b = input.clone();
    b.bound_numbers = vec!["+15551230143".into(), "+15551230142".into()];
    assert_eq!(hash(&base, &a), hash(&base, &b));
}

#[test]
fn replicas_follow_the_autoscaler_within_bounds() {
    let va = example("voiceagent.yaml"); // runtime 2..10, others 1..10
    let replicas = |input: &BuildInput, n: &str| {
        deployment(&build(&va, input).expect("renders"), n)
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
    };
    let mut input = BuildInput::default();
    assert_eq!(replicas(&input, "front-desk-runtime"), Some(2));
    assert_eq!(replicas(&input, "front-desk-agent"), Some(1));
    input.replicas.insert(Component::Runtime, 7);
    assert_eq!(replicas(&input, "front-desk-runtime"), Some(7));
    input.replicas.insert(Component::Runtime, 70);
    assert_eq!(replicas(&input, "front-desk-runtime"), Some(10));
    input.replicas.insert(Component::Runtime, 0);
    assert_eq!(replicas(&input, "front-desk-runtime"), Some(2));
}

#[test]
fn hpa_engine_leaves_replicas_to_the_hpa_except_for_the_runtime() {
    let r = render(&example("voiceagent-full.yaml")); // engine: hpa
    let replicas = |n: &str| deployment(&r, n).spec.as_ref().and_then(|s| s.replicas);
    assert_eq!(replicas("support-gateway"), None);
    assert_eq!(replicas("support-agent"), None);
    assert_eq!(replicas("support-tts"), None);
    assert_eq!(replicas("support-runtime"), Some(3));
}

#[test]
fn image_defaults_and_overrides() {
    let mut va = example("voiceagent-minimal.yaml");
    let default = "registry.local:5000/team/voice-agent:1.2.3";
    assert_eq!(workloads::image(&va, default), default);
    va.spec.image = Some(voice_agent_api::voiceagent::ImageSpec {
        repository: None,
        tag: Some("2.0.0".into()),
        pull_policy: None,
    });
    assert_eq!(
        workloads::image(&va, default),
        "registry.local:5000/team/voice-agent:2.0.0"
    );
    va.spec.image = Some(voice_agent_api::voiceagent::ImageSpec {
        repository: Some("example.com/va".into()),
        tag: Some("sha256:abcd".into()),
        pull_policy: None,
    });
    assert_eq!(workloads::image(&va, default), "example.com/va@sha256:abcd");
    va.spec.image = None;
    assert_eq!(
        workloads::image(&va, "example.com/va@sha256:ff"),
        "example.com/va@sha256:ff"
    );
    assert_eq!(
        workloads::image(&va, "registry.local:5000/va"),
        "registry.local:5000/va"
    );
}

fn ports(rules: &[Value]) -> Vec<i64> {
    rules
        .iter()
        .flat_map(|r| r["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["port"].as_i64())
        .collect()
}

#[test]
fn network_policies_deny_by_default_and_allow_the_call_paths() {
    let r = render(&example("voiceagent-minimal.yaml"));
    let deny = serde_json::to_value(policy(&r, "hello-default-deny")).expect("json");
    assert_eq!(
        deny["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    assert!(deny["spec"].get("ingress").is_none() && deny["spec"].get("egress").is_none());

    let json = |n: &str| serde_json::to_value(policy(&r, n)).expect("json")["spec"].clone();
    // Gateway: open ingress on its port only (Twilio, through the ingress).
    let gw = json("hello-gateway");
    assert_eq!(gw["ingress"][0].get("from"), None);
    assert_eq!(ports(gw["ingress"].as_array().expect("rules")), [8080]);
    // Agent and TTS: only the runtime and Prometheus may call them.
    for n in ["hello-agent", "hello-tts"] {
        let spec = json(n);
        let from = spec["ingress"][0]["from"].as_array().expect("from").clone();
        assert_eq!(from.len(), 2, "{n}");
        assert_eq!(
            from[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
            "runtime"
        );
        assert!(
            from[0].get("namespaceSelector").is_none(),
            "same namespace only"
        );
        assert_eq!(
            from[1]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
            "prometheus"
        );
    }
    // Runtime: from the gateway, the operator (drain) and Prometheus.
    let rt = json("hello-runtime");
    let from = rt["ingress"][0]["from"].as_array().expect("from");
    assert_eq!(
        from[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "gateway"
    );
    assert_eq!(
        from[1]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "operator"
    );
    // Built-in providers: no vendor egress at all for agent and tts.
    for n in ["hello-agent", "hello-tts"] {
        let egress = json(n)["egress"].as_array().expect("egress").clone();
        assert!(
            egress.iter().all(|r| r["to"][0].get("ipBlock").is_none()),
            "{n} has no egress to the internet: {egress:#?}"
        );
        assert_eq!(
            ports(&egress),
            [53, 53, 9090],
            "{n}: DNS and the metrics service"
        );
    }
    // Runtime reaches agent and tts; gateway reaches the runtime; both reach the API server.
    assert!(ports(rt["egress"].as_array().expect("egress")).contains(&6443));
    assert!(ports(gw["egress"].as_array().expect("egress")).contains(&8080));
}

#[test]
fn vendor_egress_follows_the_providers() {
    let r = render(&example("voiceagent-full.yaml"));
    let vendor_ports = |n: &str| -> Vec<i64> {
        let spec = serde_json::to_value(policy(&r, n)).expect("json")["spec"].clone();
        let rules: Vec<Value> = spec["egress"]
            .as_array()
            .expect("egress")
            .iter()
            .filter(|r| r["to"][0].get("ipBlock").is_some())
            .cloned()
            .collect();
        ports(&rules)
    };
    // OpenAI (443), Qdrant gRPC (6334), Postgres (5432).
    assert_eq!(vendor_ports("support-agent"), [443, 5432, 6334]);
    // ElevenLabs.
    assert_eq!(vendor_ports("support-tts"), [443]);
    // Deepgram + LiveKit signalling, then LiveKit media (UDP range start and TCP fallback).
    assert_eq!(vendor_ports("support-runtime"), [443, 50000, 7881]);
    assert_eq!(vendor_ports("support-gateway"), [443]);
}

#[test]
fn url_ports() {
    assert_eq!(url_port("https://api.openai.com/v1"), Some(443));
    assert_eq!(url_port("http://qdrant.data:6334"), Some(6334));
    assert_eq!(url_port("wss://api.deepgram.com"), Some(443));
    assert_eq!(url_port("http://user:pw@vllm:8000/v1"), Some(8000));
    assert_eq!(url_port("http://[::1]:9000/x"), Some(9000));
    assert_eq!(url_port("http://[::1]/x"), Some(80));
    assert_eq!(url_port("ftp://x"), None);
    assert_eq!(url_port("no-scheme"), None);
    assert_eq!(url_port("http://host:notaport"), None);
}

#[test]
fn missing_name_is_an_error() {
    let mut va = example("voiceagent-minimal.yaml");
    va.metadata.name = None;
    assert_eq!(
        build(&va, &BuildInput::default()),
        Err(BuildError::MissingName)
    );
}

#[test]
fn rendered_objects_round_trip_through_the_typed_api() {
    // Every object deserializes back into its k8s-openapi type unchanged.
    let r = render(&example("voiceagent-full.yaml"));
    for o in &r.objects {
        let json = o.to_json();
        let back = match o {
            Desired::ServiceAccount(_) => {
                Desired::ServiceAccount(serde_json::from_value(json).expect("sa"))
            }
            Desired::Role(_) => Desired::Role(serde_json::from_value(json).expect("role")),
            Desired::RoleBinding(_) => {
                Desired::RoleBinding(serde_json::from_value(json).expect("rolebinding"))
            }
            Desired::ConfigMap(_) => Desired::ConfigMap(serde_json::from_value(json).expect("cm")),
            Desired::Deployment(_) => {
                Desired::Deployment(serde_json::from_value(json).expect("deploy"))
            }
            Desired::Service(_) => Desired::Service(serde_json::from_value(json).expect("svc")),
            Desired::PodDisruptionBudget(_) => {
                Desired::PodDisruptionBudget(serde_json::from_value(json).expect("pdb"))
            }
            Desired::NetworkPolicy(_) => {
                Desired::NetworkPolicy(serde_json::from_value(json).expect("np"))
            }
            Desired::HorizontalPodAutoscaler(_) => {
                Desired::HorizontalPodAutoscaler(serde_json::from_value(json).expect("hpa"))
            }
        };
        assert_eq!(&back, o, "{} {}", o.kind(), o.name());
    }
    let yaml = r.to_yaml().expect("yaml");
    assert_eq!(yaml.matches("\n---\n").count() + 1, r.objects.len());
}

fn hpas(r: &Rendered) -> Vec<&k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler> {
    r.objects
        .iter()
        .filter_map(|o| match o {
            Desired::HorizontalPodAutoscaler(h) => Some(h),
            _ => None,
        })
        .collect()
}

#[test]
fn hpa_engine_renders_an_hpa_for_gateway_agent_and_tts_but_not_the_runtime() {
    let r = render(&example("voiceagent-full.yaml")); // engine: hpa
    let names: Vec<&str> = hpas(&r)
        .iter()
        .filter_map(|h| h.metadata.name.as_deref())
        .collect();
    assert_eq!(names, ["support-gateway", "support-agent", "support-tts"]);
    // After the Deployments they target, in apply order.
    let last_deployment = r
        .objects
        .iter()
        .rposition(|o| o.kind() == "Deployment")
        .expect("deployments");
    let first_hpa = r
        .objects
        .iter()
        .position(|o| o.kind() == "HorizontalPodAutoscaler")
        .expect("hpas");
    assert!(first_hpa > last_deployment);
    for h in hpas(&r) {
        let meta = &h.metadata;
        assert_eq!(meta.namespace.as_deref(), Some("voice"));
        let refs = meta.owner_references.as_ref().expect("owned");
        assert_eq!(refs[0].kind, "VoiceAgent");
        assert_eq!(refs[0].controller, Some(true));
        let labels = meta.labels.as_ref().expect("labels");
        assert_eq!(
            labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some(MANAGER)
        );
        let spec = h.spec.as_ref().expect("spec");
        assert_eq!(spec.scale_target_ref.kind, "Deployment");
        assert_eq!(
            spec.scale_target_ref.api_version.as_deref(),
            Some("apps/v1")
        );
        assert_eq!(Some(&spec.scale_target_ref.name), meta.name.as_ref());
    }
}

#[test]
fn an_hpa_pins_external_metrics_bounds_and_behavior_from_the_spec() {
    let r = render(&example("voiceagent-full.yaml"));
    let gateway = r
        .get("HorizontalPodAutoscaler", "support-gateway")
        .expect("gateway HPA")
        .to_json();
    let selector = json!({"matchLabels": {"namespace": "voice", "voiceAgent": "support"}});
    assert_eq!(
        gateway["spec"],
        json!({
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "support-gateway"},
            "minReplicas": 2,
            "maxReplicas": 6,
            "metrics": [
                {"type": "External", "external": {
                    "metric": {"name": "voice_agent_gateway_latency_p95_ms", "selector": selector},
                    "target": {"type": "Value", "value": "80"},
                }},
                {"type": "External", "external": {
                    "metric": {"name": "voice_agent_gateway_concurrency", "selector": selector},
                    "target": {"type": "AverageValue", "averageValue": "40"},
                }},
            ],
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "selectPolicy": "Max",
                    "policies": [
                        {"type": "Percent", "value": 100, "periodSeconds": 15},
                        {"type": "Pods", "value": 4, "periodSeconds": 15},
                    ],
                },
                "scaleDown": {"stabilizationWindowSeconds": 600},
            },
        })
    );
    assert_eq!(gateway["apiVersion"], "autoscaling/v2");
    assert_eq!(gateway["kind"], "HorizontalPodAutoscaler");
    let target = |name: &str, i: usize| -> Value {
        r.get("HorizontalPodAutoscaler", name)
            .expect("HPA")
            .to_json()["spec"]["metrics"][i]["external"]
            .clone()
    };
    assert_eq!(
        target("support-agent", 0)["metric"]["name"],
        "voice_agent_agent_latency_p95_ms"
    );
    assert_eq!(target("support-agent", 0)["target"]["value"], "500");
    assert_eq!(target("support-agent", 1)["target"]["averageValue"], "12");
    assert_eq!(
        target("support-tts", 0)["metric"]["name"],
        "voice_agent_tts_latency_p95_ms"
    );
    assert_eq!(target("support-tts", 0)["target"]["value"], "200");
    assert_eq!(
        target("support-tts", 1)["metric"]["name"],
        "voice_agent_tts_concurrency"
    );
}

#[test]
fn operator_engine_renders_no_hpa() {
    for name in ["voiceagent-minimal.yaml", "voiceagent.yaml"] {
        let r = render(&example(name));
        assert!(hpas(&r).is_empty(), "{name}");
    }
}

#[test]
fn the_pods_may_create_calls_and_patch_their_status_and_nothing_else() {
    let r = render(&example("voiceagent-minimal.yaml"));
    let Some(Desired::Role(role)) = r.get("Role", "hello-calls") else {
        panic!("no Role");
    };
    let rules: Vec<(Vec<String>, Vec<String>, Vec<String>)> = role
        .rules
        .iter()
        .flatten()
        .map(|r| {
            (
                r.api_groups.clone().unwrap_or_default(),
                r.resources.clone().unwrap_or_default(),
                r.verbs.clone(),
            )
        })
        .collect();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        rules,
        [
            (s(&["voiceagent.io"]), s(&["calls"]), s(&["create"])),
            (s(&["voiceagent.io"]), s(&["calls/status"]), s(&["patch"])),
        ]
    );
    let Some(Desired::RoleBinding(rb)) = r.get("RoleBinding", "hello-calls") else {
        panic!("no RoleBinding");
    };
    assert_eq!(rb.role_ref.kind, "Role");
    assert_eq!(rb.role_ref.name, "hello-calls");
    let subjects = rb.subjects.clone().unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(
        (subjects[0].kind.as_str(), subjects[0].name.as_str()),
        ("ServiceAccount", "hello")
    );
}
