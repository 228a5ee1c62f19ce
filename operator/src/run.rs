//! `voice-agent-operator run`: checks that the CRDs are installed, serves
//! `/metrics`, `/healthz` and `/readyz`, waits for the leader Lease, runs the
//! controllers, and on SIGTERM stops them and releases the Lease.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use futures::StreamExt;
use futures::stream::{BoxStream, select_all};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PartialObjectMeta;
use kube::core::DeserializeGuard;
use kube::runtime::events::Reporter;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};
use thiserror::Error;
use tokio::sync::watch;
use tracing::{error, info, warn};
use voice_agent_api::{PhoneNumber, VoiceAgent};

use crate::autoscale::live::Autoscaler;
use crate::controller::voiceagent::{self, agent_of_number, agents_referencing_secret};
use crate::controller::{Context, Ctx};
use crate::leader::{LeaderElector, LeaseSettings};
use crate::metrics::Metrics;
use crate::render::{MANAGER, OperatorSettings};

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Namespaces to watch; all when empty.
    pub namespaces: Vec<String>,
    /// What the operator renders with.
    pub settings: OperatorSettings,
    /// Address of the metrics and health endpoints.
    pub listen: SocketAddr,
    /// Leader election; `None` runs without it (one replica only).
    pub lease: Option<LeaseSettings>,
    /// Time between autoscaler ticks (the loop runs only with a metrics URL).
    pub autoscale_interval: Duration,
}

/// Why the operator could not start or stopped.
#[derive(Debug, Error)]
pub enum RunError {
    /// A CRD is missing.
    #[error(
        "the CustomResourceDefinition {0} is not installed; install the CRDs with \
         `voice-agent-operator crd | kubectl apply -f -` (or `helm install` the chart)"
    )]
    CrdMissing(String),
    /// The Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The health endpoint could not listen.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The Lease was lost while leading; the process exits so a fresh
    /// replica can take over cleanly.
    #[error("lost the leader Lease")]
    LeaseLost,
}

/// Fails with a message naming the install command when a CRD is missing.
pub async fn check_crds(client: &Client) -> Result<(), RunError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in voice_agent_api::crds() {
        let name = crd.metadata.name.unwrap_or_default();
        if api.get_opt(&name).await?.is_none() {
            return Err(RunError::CrdMissing(name));
        }
    }
    Ok(())
}

#[derive(Clone)]
struct Health {
    metrics: Metrics,
    ready: Arc<AtomicBool>,
}

/// The operator's HTTP endpoints.
pub fn router(metrics: Metrics, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(Health { metrics, ready })
}

async fn serve_metrics(State(h): State<Health>) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        h.metrics.encode(),
    )
}

async fn readyz(State(h): State<Health>) -> (StatusCode, &'static str) {
    if h.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Runs the operator until SIGTERM or Ctrl-C.
pub async fn run(client: Client, config: RunConfig, identity: &str) -> Result<(), RunError> {
    run_until(client, config, identity, shutdown_signal()).await
}

/// Runs the operator until `shutdown` resolves.
pub async fn run_until(
    client: Client,
    config: RunConfig,
    identity: &str,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    check_crds(&client).await?;
    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: config.listen,
            source,
        })?;
    let app = router(metrics.clone(), ready.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            error!("health server: {e}");
        }
    });
    info!(listen = %config.listen, "serving /metrics, /healthz and /readyz");

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        info!("shutdown requested");
        let _ = stop_tx.send(true);
    });
    ready.store(true, Ordering::Relaxed);

    let elector = config
        .lease
        .clone()
        .map(|l| LeaderElector::new(client.clone(), l));
    if let Some(e) = &elector {
        info!(lease = %e.settings().name, identity, "waiting for the leader Lease");
        if !e.acquire(stop_rx.clone()).await {
            return Ok(());
        }
        info!("leading");
    }
    metrics.leader.set(1);

    let ctx = Arc::new(Context::new(
        client.clone(),
        config.settings.clone(),
        metrics.clone(),
        Reporter {
            controller: MANAGER.to_string(),
            instance: Some(identity.to_string()),
        },
    ));
    let (ctl_stop_tx, ctl_stop_rx) = watch::channel(false);
    spawn_autoscaler(&client, &config, &ctx, ctl_stop_rx.clone());
    spawn_numbers_and_retention(&client, &config, &ctx, ctl_stop_rx.clone());
    let controllers = run_controllers(client.clone(), &config.namespaces, ctx, ctl_stop_rx);

    let lost = match &elector {
        Some(e) => {
            let keep = e.keep(stop_rx.clone());
            tokio::select! {
                kept = keep => !kept,
                _ = controllers => false,
            }
        }
        None => {
            let mut stop = stop_rx.clone();
            tokio::select! {
                _ = stop.wait_for(|s| *s) => false,
                _ = controllers => false,
            }
        }
    };
    let _ = ctl_stop_tx.send(true);
    metrics.leader.set(0);
    if let Some(e) = &elector {
        if lost {
            return Err(RunError::LeaseLost);
        }
        if let Err(err) = e.release().await {
            warn!("releasing the leader Lease: {err}");
        } else {
            info!("released the leader Lease");
        }
    }
    Ok(())
}

/// Starts the autoscaler's live loop on the leader, when there is a metrics
/// service to read.
fn spawn_autoscaler(client: &Client, config: &RunConfig, ctx: &Ctx, stop: watch::Receiver<bool>) {
    let Some(url) = config.settings.metrics_url.as_deref() else {
        warn!(
            "autoscaler off: no metrics service URL (--metrics-url / VOICE_AGENT_METRICS_URL); \
             replicas stay as they are, within minReplicas..maxReplicas"
        );
        return;
    };
    let timeout = config
        .autoscale_interval
        .clamp(Duration::from_millis(500), Duration::from_secs(5));
    match Autoscaler::new(
        client.clone(),
        url,
        config.namespaces.clone(),
        ctx.metrics.clone(),
        ctx.recorder.clone(),
        timeout,
    ) {
        Ok(a) => {
            tokio::spawn(a.run(config.autoscale_interval, stop));
        }
        Err(e) => error!("autoscaler off: building its HTTP client failed: {e}"),
    }
}

/// Starts the PhoneNumber controller and the Call retention GC on the leader
/// (the Twilio API URL can be overridden with `VOICE_AGENT_TWILIO_API_URL`).
fn spawn_numbers_and_retention(
    client: &Client,
    config: &RunConfig,
    ctx: &Ctx,
    stop: watch::Receiver<bool>,
) {
    use crate::controller::phonenumber;
    use crate::controller::retention::{RetentionGc, RetentionSettings};
    let settings = crate::provision::ProvisionSettings::from_env();
    match phonenumber::Context::new(
        client.clone(),
        ctx.recorder.clone(),
        ctx.metrics.clone(),
        &settings,
        config.namespaces.clone(),
    ) {
        Ok(numbers) => {
            let (client, namespaces, stop) =
                (client.clone(), config.namespaces.clone(), stop.clone());
            tokio::spawn(async move {
                phonenumber::run(client, &namespaces, Arc::new(numbers), stop).await;
            });
        }
        Err(e) => error!("PhoneNumber controller off: building its HTTP client failed: {e}"),
    }
    let gc = RetentionGc::start(
        client.clone(),
        &config.namespaces,
        ctx.metrics.clone(),
        RetentionSettings::default(),
        stop.clone(),
    );
    tokio::spawn(gc.run(stop));
}

/// Every 30 s, drops deleted VoiceAgents from the `managed_objects` gauge.
fn spawn_managed_gc(
    stores: Vec<kube::runtime::reflector::Store<DeserializeGuard<VoiceAgent>>>,
    ctx: Ctx,
    mut stop: watch::Receiver<bool>,
) {
    use kube::ResourceExt;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let existing = stores
                .iter()
                .flat_map(|s| s.state())
                .map(|g| format!("{}/{}", g.namespace().unwrap_or_default(), g.name_any()))
                .collect();
            ctx.retain_managed(&existing);
        }
    });
}

/// The VoiceAgent controller for each watched namespace (or all), merged.
async fn run_controllers(
    client: Client,
    namespaces: &[String],
    ctx: Ctx,
    stop: watch::Receiver<bool>,
) {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    };
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    let mut streams: Vec<BoxStream<'static, ()>> = Vec::new();
    let mut stores = Vec::new();
    for scope in scopes {
        let api = |c: &Client| -> Api<DeserializeGuard<VoiceAgent>> {
            match &scope {
                Some(ns) => Api::namespaced(c.clone(), ns),
                None => Api::all(c.clone()),
            }
        };
        macro_rules! scoped {
            ($t:ty) => {
                match &scope {
                    Some(ns) => Api::<$t>::namespaced(client.clone(), ns),
                    None => Api::<$t>::all(client.clone()),
                }
            };
        }
        let controller = Controller::new(api(&client), watcher::Config::default().any_semantic());
        let store = controller.store();
        stores.push(store.clone());
        let mut stop = stop.clone();
        let stream = controller
            .owns(scoped!(Deployment), owned.clone())
            .owns(scoped!(Service), owned.clone())
            .owns(scoped!(ConfigMap), owned.clone())
            .owns(scoped!(ServiceAccount), owned.clone())
            .owns(scoped!(Role), owned.clone())
            .owns(scoped!(RoleBinding), owned.clone())
            .owns(scoped!(PodDisruptionBudget), owned.clone())
            .owns(scoped!(NetworkPolicy), owned.clone())
            .owns(scoped!(HorizontalPodAutoscaler), owned.clone())
            .watches(
                scoped!(DeserializeGuard<PhoneNumber>),
                watcher::Config::default(),
                agent_of_number,
            )
            // Metadata only: the operator never holds Secret values in memory.
            .watches(
                scoped!(PartialObjectMeta<Secret>),
                watcher::Config::default(),
                move |s| agents_referencing_secret(&store, &s),
            )
            .graceful_shutdown_on(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .run(voiceagent::reconcile, voiceagent::error_policy, ctx.clone())
            .filter_map(|r| async move {
                if let Err(e) = r {
                    warn!("controller: {e}");
                }
                None::<()>
            })
            .boxed();
        streams.push(stream);
    }
    spawn_managed_gc(stores, ctx, stop);
    select_all(streams).collect::<Vec<()>>().await;
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let metrics = Metrics::new();
        metrics
            .reconciles
            .with_label_values(&["voiceagent", "ok"])
            .inc();
        metrics.leader.set(1);
        metrics
            .duration
            .with_label_values(&["voiceagent"])
            .observe(0.012);
        let ready = Arc::new(AtomicBool::new(false));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(axum::serve(listener, router(metrics, ready.clone())).into_future());

        let health = get(addr, "/healthz").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        ready.store(true, Ordering::Relaxed);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));

        let body = get(addr, "/metrics").await;
        assert!(
            body.contains("content-type: text/plain; version=0.0.4"),
            "{body}"
        );
        assert!(body.contains(
            "voice_agent_operator_reconciles_total{controller=\"voiceagent\",result=\"ok\"} 1"
        ));
        assert!(body.contains("voice_agent_operator_leader 1"));
        assert!(body.contains("# TYPE voice_agent_operator_reconcile_duration_seconds histogram"));
    }
}
