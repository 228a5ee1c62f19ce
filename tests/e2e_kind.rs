//! End-to-end on a real Kubernetes cluster (kind in CI): install the CRDs,
//! run the operator, apply the examples, and wait for the operator to create
//! every component and report status. With `VOICE_AGENT_E2E_IMAGE` set to an
//! image loaded into the cluster, it also waits for `phase: Ready`.
//!
//! No cluster can run on the development machines, so the suite runs only
//! when `VOICE_AGENT_E2E=1` and skips, loudly, otherwise. The GitHub Actions
//! workflow `.github/workflows/e2e.yml` runs it on kind.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use voice_agent_api::VoiceAgent;
use voice_agent_operator::run::{RunConfig, run};
use voice_agent_tests::{read, yaml_docs};

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

#[tokio::test]
async fn operator_reconciles_the_examples_on_a_real_cluster() {
    if std::env::var("VOICE_AGENT_E2E").as_deref() != Ok("1") {
        eprintln!(
            "SKIPPED: the end-to-end suite needs a Kubernetes cluster. Run it with \
             VOICE_AGENT_E2E=1 and KUBECONFIG pointing at one (e.g. `kind create cluster`)."
        );
        return;
    }
    let client = Client::try_default()
        .await
        .expect("a reachable cluster (KUBECONFIG)");

    // CRDs, as `voice-agent-operator crd | kubectl apply -f -` would.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let ssa = PatchParams::apply("voice-agent-e2e").force();
    for crd in voice_agent_api::crds() {
        let name = crd.name_any();
        crds.patch(&name, &ssa, &Patch::Apply(&crd))
            .await
            .expect("apply CRD");
        wait_for(
            &format!("CRD {name} established"),
            Duration::from_secs(60),
            || {
                let crds = crds.clone();
                let name = name.clone();
                async move {
                    crds.get(&name)
                        .await
                        .ok()
                        .and_then(|c| c.status)
                        .and_then(|s| s.conditions)
                        .is_some_and(|c| {
                            c.iter()
                                .any(|c| c.type_ == "Established" && c.status == "True")
                        })
                }
            },
        )
        .await;
    }

    let ns = format!("voice-e2e-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).expect("ns");
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .expect("create namespace");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "twilio"},
        "stringData": {"authToken": "e2e-token"}
    }))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");

    let mut settings = voice_agent_operator::render::OperatorSettings::default();
    if let Ok(image) = std::env::var("VOICE_AGENT_E2E_IMAGE") {
        settings.image = image;
    }
    let config = RunConfig {
        namespaces: vec![ns.clone()],
        settings,
        listen: "127.0.0.1:0".parse().expect("addr"),
        lease: Some(voice_agent_operator::leader::LeaseSettings::new(&ns, "e2e")),
        autoscale_interval: Duration::from_secs(2),
    };
    let operator = tokio::spawn(run(client.clone(), config, "e2e"));

    let agents: Api<VoiceAgent> = Api::namespaced(client.clone(), &ns);
    let va: VoiceAgent =
        serde_json::from_value(yaml_docs(&read("examples/voiceagent-minimal.yaml")).remove(0))
            .expect("example");
    agents
        .create(&PostParams::default(), &va)
        .await
        .expect("create VoiceAgent");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    wait_for("the four Deployments", Duration::from_secs(120), || {
        let deployments = deployments.clone();
        async move {
            let names: Vec<String> = deployments
                .list(&Default::default())
                .await
                .map(|l| l.items.iter().map(ResourceExt::name_any).collect())
                .unwrap_or_default();
            ["hello-gateway", "hello-runtime", "hello-agent", "hello-tts"]
                .iter()
                .all(|n| names.iter().any(|x| x == n))
        }
    })
    .await;
    let want_ready = std::env::var("VOICE_AGENT_E2E_IMAGE").is_ok();
    wait_for("the VoiceAgent status", Duration::from_secs(300), || {
        let agents = agents.clone();
        async move {
            let Ok(va) = agents.get("hello").await else {
                return false;
            };
            let status = va.status.unwrap_or_default();
            status.observed_generation == va.metadata.generation
                && (!want_ready || status.phase == Some(voice_agent_api::VoiceAgentPhase::Ready))
        }
    })
    .await;

    operator.abort();
    let _ = namespaces.delete(&ns, &DeleteParams::background()).await;
}
