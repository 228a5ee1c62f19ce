//! The real kube client against the fake: every test here goes through
//! `kube::Client` over HTTP.

use std::fmt::Debug;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::GroupVersionKind;
use kube::runtime::watcher;
use kube::{Client, Config, CustomResourceExt, ResourceExt};
use serde_json::{Value, json};
use voice_agent_kube_fake::{FailMatcher, FakeApi, Verb};

async fn setup() -> (FakeApi, Client) {
    let fake = FakeApi::start().await;
    let client = Client::try_from(Config::new(fake.kube_config_url())).expect("build kube client");
    (fake, client)
}

/// The Status of a failed call: (code, reason, message).
fn status_of<T: Debug>(r: Result<T, kube::Error>) -> (u16, String, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn cm(name: &str, ns: &str, labels: Value) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "data": {"k": "v"},
    }))
    .expect("configmap")
}

fn deployment(name: &str, replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]}
            }
        }
    })
}

fn typed<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("typed object")
}

fn names<K: kube::Resource>(items: impl IntoIterator<Item = K>) -> Vec<String> {
    items.into_iter().map(|o| o.name_any()).collect()
}

#[tokio::test]
async fn create_get_list_with_selectors() {
    let (fake, client) = setup().await;
    let default: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let other: Api<ConfigMap> = Api::namespaced(client.clone(), "other");
    let pp = PostParams::default();
    let a = default
        .create(
            &pp,
            &cm("a", "default", json!({"app": "web", "tier": "front"})),
        )
        .await
        .expect("create a");
    default
        .create(&pp, &cm("b", "default", json!({"app": "db"})))
        .await
        .expect("create b");
    default
        .create(&pp, &cm("c", "default", json!({})))
        .await
        .expect("create c");
    other
        .create(&pp, &cm("d", "other", json!({"app": "web"})))
        .await
        .expect("create d");

    let meta = &a.metadata;
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    assert_eq!(meta.generation, Some(1));
    assert!(meta.uid.as_ref().is_some_and(|u| u.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    assert!(meta.resource_version.is_some());
    let mf = meta.managed_fields.as_ref().expect("managedFields");
    assert_eq!(mf[0].operation.as_deref(), Some("Update"));

    let got = default.get("a").await.expect("get a");
    assert_eq!(got.data, a.data);
    assert_eq!(got.metadata.uid, a.metadata.uid);

    let list = |sel: &'static str| {
        let default = default.clone();
        async move {
            names(
                default
                    .list(&ListParams::default().labels(sel))
                    .await
                    .expect("list"),
            )
        }
    };
    assert_eq!(list("app=web").await, ["a"]);
    assert_eq!(list("app!=web").await, ["b", "c"]);
    assert_eq!(list("app").await, ["a", "b"]);
    assert_eq!(list("!app").await, ["c"]);
    assert_eq!(list("app in (web,db)").await, ["a", "b"]);
    assert_eq!(list("app notin (web)").await, ["b", "c"]);
    assert_eq!(list("app=web,tier=front").await, ["a"]);
    let by_name = default
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .expect("field selector");
    assert_eq!(names(by_name), ["b"]);

    let all: Api<ConfigMap> = Api::all(client.clone());
    assert_eq!(
        names(all.list(&ListParams::default()).await.expect("all")),
        ["a", "b", "c", "d"]
    );
    let web = all
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("all web");
    assert_eq!(names(web), ["a", "d"]);
    let in_other = all
        .list(&ListParams::default().fields("metadata.namespace=other"))
        .await
        .expect("all in other");
    assert_eq!(names(in_other), ["d"]);

    let (code, reason, _) = status_of(default.list(&ListParams::default().labels("a in b)")).await);
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));

    // generateName and the test hooks see the same objects.
    let mut gen_cm = cm("", "default", json!({}));
    gen_cm.metadata.name = None;
    gen_cm.metadata.generate_name = Some("gen-".into());
    let created = default.create(&pp, &gen_cm).await.expect("generateName");
    assert!(created.name_any().starts_with("gen-") && created.name_any().len() == 9);
    assert_eq!(fake.objects("configmaps").len(), 5);
    assert_eq!(fake.objects("ConfigMap").len(), 5);
    assert!(fake.get("cm", Some("other"), "d").is_some());

    // deletecollection honours the selector.
    let res = all
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("app=web"),
        )
        .await
        .expect("delete collection");
    assert!(res.is_right());
    assert_eq!(
        names(all.list(&ListParams::default()).await.expect("all")),
        ["b", "c", created.name_any().as_str()]
    );

    // Cluster-scoped kinds: `/api/v1/namespaces/{name}` is a Namespace.
    let namespaces: Api<Namespace> = Api::all(client);
    let ns: Namespace =
        typed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}));
    let ns = namespaces.create(&pp, &ns).await.expect("create namespace");
    assert_eq!(ns.metadata.namespace, None);
    assert_eq!(
        namespaces.get("team-a").await.expect("get namespace").uid(),
        ns.uid()
    );
    assert_eq!(
        names(
            namespaces
                .list(&ListParams::default())
                .await
                .expect("list namespaces")
        ),
        ["team-a"]
    );
}

#[tokio::test]
async fn errors_decode_as_kube_api_errors() {
    let (_fake, client) = setup().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let pp = PostParams::default();
    let (code, reason, message) = status_of(cms.get("missing").await);
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    assert_eq!(message, "configmaps \"missing\" not found");
    assert!(cms.get_opt("missing").await.expect("get_opt").is_none());

    cms.create(&pp, &cm("a", "default", json!({})))
        .await
        .expect("create");
    let (code, reason, message) = status_of(cms.create(&pp, &cm("a", "default", json!({}))).await);
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(message, "configmaps \"a\" already exists");

    let (code, reason, message) =
        status_of(cms.create(&pp, &cm("Bad_Name", "default", json!({}))).await);
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(message.contains("metadata.name"), "{message}");
    let too_long = "x".repeat(64);
    let (code, reason, _) = status_of(
        cms.create(&pp, &cm("b", "default", json!({"k": too_long})))
            .await,
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));

    let mut renamed = cms.get("a").await.expect("get");
    renamed.metadata.name = Some("other".into());
    let (code, reason, _) = status_of(cms.replace("a", &pp, &renamed).await);
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));

    // ConfigMaps have no status subresource.
    let (code, reason, _) = status_of(cms.get_status("a").await);
    assert_eq!((code, reason.as_str()), (404, "NotFound"));

    let req = http_request(
        "POST",
        "/api/v1/namespaces/default/configmaps/a",
        "application/json",
        b"{}",
    );
    let (code, reason, _) = status_of(client.request::<Value>(req).await);
    assert_eq!((code, reason.as_str()), (405, "MethodNotAllowed"));
}

fn http_request(
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> axum::http::Request<Vec<u8>> {
    axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(body.to_vec())
        .expect("request")
}

#[tokio::test]
async fn replace_checks_resource_version() {
    let (_fake, client) = setup().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let pp = PostParams::default();
    let created = cms
        .create(&pp, &cm("a", "default", json!({})))
        .await
        .expect("create");

    let mut first = created.clone();
    first.data = Some([("k".to_string(), "first".to_string())].into());
    let replaced = cms
        .replace("a", &pp, &first)
        .await
        .expect("replace with current rv");
    assert_ne!(replaced.resource_version(), created.resource_version());
    assert_eq!(replaced.metadata.uid, created.metadata.uid);

    let mut stale = created.clone();
    stale.data = Some([("k".to_string(), "stale".to_string())].into());
    let (code, reason, message) = status_of(cms.replace("a", &pp, &stale).await);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(
        message.contains("the object has been modified"),
        "{message}"
    );

    // Without a resourceVersion the write is unconditional.
    stale.metadata.resource_version = None;
    let forced = cms
        .replace("a", &pp, &stale)
        .await
        .expect("unconditional replace");
    assert_eq!(forced.data.expect("data")["k"], "stale");

    let (code, reason, _) = status_of(
        cms.replace("missing", &pp, &cm("missing", "default", json!({})))
            .await,
    );
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn merge_and_strategic_patches() {
    let (_fake, client) = setup().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    cms.create(
        &PostParams::default(),
        &cm("a", "default", json!({"x": "1", "y": "2"})),
    )
    .await
    .expect("create");
    let patched = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": null, "z": "3"}}, "data": {"k": "w", "n": "new"}})),
        )
        .await
        .expect("merge patch");
    assert_eq!(patched.labels().get("x"), None);
    assert_eq!(patched.labels().get("y").map(String::as_str), Some("2"));
    assert_eq!(patched.labels().get("z").map(String::as_str), Some("3"));
    let data = patched.data.clone().expect("data");
    assert_eq!((data["k"].as_str(), data["n"].as_str()), ("w", "new"));

    let patched = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"n": null}})),
        )
        .await
        .expect("strategic patch");
    assert!(!patched.data.expect("data").contains_key("n"));

    // A resourceVersion in a patch is a precondition.
    let (code, reason, _) = status_of(
        cms.patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}})),
        )
        .await,
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    let (code, reason, _) = status_of(
        cms.patch("missing", &PatchParams::default(), &Patch::Merge(json!({})))
            .await,
    );
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn json_patch() {
    let (fake, client) = setup().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(
        &PostParams::default(),
        &cm("a", "default", json!({"x": "1"})),
    )
    .await
    .expect("create");
    let patch = json!([
        {"op": "test", "path": "/data/k", "value": "v"},
        {"op": "replace", "path": "/data/k", "value": "w"},
        {"op": "add", "path": "/data/new", "value": "n"},
        {"op": "remove", "path": "/metadata/labels/x"}
    ]);
    let path = "/api/v1/namespaces/default/configmaps/a?fieldManager=jp";
    let req = http_request(
        "PATCH",
        path,
        "application/json-patch+json",
        patch.to_string().as_bytes(),
    );
    let out: ConfigMap = client.request(req).await.expect("json patch");
    let data = out.data.expect("data");
    assert_eq!((data["k"].as_str(), data["new"].as_str()), ("w", "n"));
    assert!(out.metadata.labels.unwrap_or_default().is_empty());

    let failing = json!([{"op": "test", "path": "/data/k", "value": "nope"}]);
    let req = http_request(
        "PATCH",
        path,
        "application/json-patch+json",
        failing.to_string().as_bytes(),
    );
    let (code, reason, _) = status_of(client.request::<ConfigMap>(req).await);
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert_eq!(
        fake.get("configmaps", Some("default"), "a").expect("a")["data"]["k"],
        "w"
    );
}

#[tokio::test]
async fn status_subresource_isolation_and_generation() {
    let (_fake, client) = setup().await;
    let deploys: Api<Deployment> = Api::default_namespaced(client);
    let pp = PostParams::default();
    let mut body = deployment("web", 1);
    body["status"] = json!({"replicas": 9});
    let created = deploys.create(&pp, &typed(body)).await.expect("create");
    assert!(created.status.is_none(), "create ignores status");
    assert_eq!(created.metadata.generation, Some(1));

    // Status writes change only status and never generation.
    let st = deploys
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"replicas": 5}, "status": {"readyReplicas": 1, "replicas": 1}}),
            ),
        )
        .await
        .expect("patch status");
    assert_eq!(st.status.as_ref().and_then(|s| s.ready_replicas), Some(1));
    assert_eq!(
        st.spec.as_ref().and_then(|s| s.replicas),
        Some(1),
        "status write ignores spec"
    );
    assert_eq!(st.metadata.generation, Some(1));

    // Main-resource writes ignore status.
    let mut cur = deploys.get("web").await.expect("get");
    cur.spec.as_mut().expect("spec").replicas = Some(3);
    cur.status.as_mut().expect("status").ready_replicas = Some(42);
    let replaced = deploys.replace("web", &pp, &cur).await.expect("replace");
    assert_eq!(
        replaced.status.as_ref().and_then(|s| s.ready_replicas),
        Some(1)
    );
    assert_eq!(replaced.spec.as_ref().and_then(|s| s.replicas), Some(3));
    assert_eq!(
        replaced.metadata.generation,
        Some(2),
        "spec change bumps generation"
    );

    // Metadata-only changes do not bump generation.
    let labelled = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .expect("label patch");
    assert_eq!(labelled.metadata.generation, Some(2));
    let ignored = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readyReplicas": 7}})),
        )
        .await
        .expect("status via main");
    assert_eq!(
        ignored.status.as_ref().and_then(|s| s.ready_replicas),
        Some(1)
    );
    assert_eq!(
        ignored.resource_version(),
        labelled.resource_version(),
        "no-op write"
    );

    // replace_status takes the whole object and keeps only its status.
    let mut cur = deploys.get_status("web").await.expect("get status");
    cur.status.as_mut().expect("status").available_replicas = Some(3);
    cur.spec.as_mut().expect("spec").replicas = Some(100);
    let replaced = deploys
        .replace_status("web", &pp, &cur)
        .await
        .expect("replace status");
    assert_eq!(
        replaced.status.as_ref().and_then(|s| s.available_replicas),
        Some(3)
    );
    assert_eq!(replaced.spec.as_ref().and_then(|s| s.replicas), Some(3));
    assert_eq!(replaced.metadata.generation, Some(2));
}

#[tokio::test]
async fn server_side_apply_lifecycle() {
    let (fake, client) = setup().await;
    let deploys: Api<Deployment> = Api::default_namespaced(client);
    let ssa = PatchParams::apply("operator");
    let mut desired = deployment("web", 2);
    desired["metadata"]["annotations"] = json!({"note": "hello"});

    let created = deploys
        .patch("web", &ssa, &Patch::Apply(&desired))
        .await
        .expect("apply creates");
    assert_eq!(created.metadata.generation, Some(1));
    let mf = created
        .metadata
        .managed_fields
        .clone()
        .expect("managedFields");
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0].manager.as_deref(), Some("operator"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    let fields = serde_json::to_value(&mf[0].fields_v1).expect("fieldsV1");
    assert!(
        fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"]["f:image"]
            .is_object()
    );

    // Identical re-apply: nothing changes, not even resourceVersion.
    let again = deploys
        .patch("web", &ssa, &Patch::Apply(&desired))
        .await
        .expect("re-apply");
    assert_eq!(again.resource_version(), created.resource_version());
    assert_eq!(again.metadata.generation, Some(1));
    assert_eq!(
        again.metadata.managed_fields,
        created.metadata.managed_fields
    );

    // Omitting fields removes them.
    desired["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("annotations");
    desired["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("replicas");
    let trimmed = deploys
        .patch("web", &ssa, &Patch::Apply(&desired))
        .await
        .expect("apply without fields");
    assert!(trimmed.annotations().is_empty());
    assert_eq!(trimmed.spec.as_ref().and_then(|s| s.replicas), None);
    assert_eq!(trimmed.metadata.generation, Some(2));

    // apiVersion/kind are required and fieldManager too.
    let (code, reason, _) = status_of(
        deploys
            .patch(
                "web",
                &ssa,
                &Patch::Apply(json!({"metadata": {"name": "web"}})),
            )
            .await,
    );
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));
    let (code, reason, _) = status_of(
        deploys
            .patch("web", &PatchParams::default(), &Patch::Apply(&desired))
            .await,
    );
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));

    // YAML bodies work as well.
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\ndata:\n  a: b\n";
    let req = http_request(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/y?fieldManager=yaml",
        "application/apply-patch+yaml",
        yaml.as_bytes(),
    );
    let y: ConfigMap = deploys_client(&fake)
        .request(req)
        .await
        .expect("yaml apply");
    assert_eq!(y.data.expect("data")["a"], "b");
}

fn deploys_client(fake: &FakeApi) -> Client {
    Client::try_from(Config::new(fake.url().parse().expect("url"))).expect("client")
}

#[tokio::test]
async fn server_side_apply_conflicts_and_force() {
    let (_fake, client) = setup().await;
    let deploys: Api<Deployment> = Api::default_namespaced(client);
    let desired = deployment("web", 2);
    deploys
        .patch(
            "web",
            &PatchParams::apply("operator"),
            &Patch::Apply(&desired),
        )
        .await
        .expect("operator applies");

    // The HPA-like manager only cares about replicas.
    let scaler = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 5}});
    let (code, reason, message) = status_of(
        deploys
            .patch("web", &PatchParams::apply("scaler"), &Patch::Apply(&scaler))
            .await,
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(message.contains("conflict with \"operator\""), "{message}");
    assert!(message.contains(".spec.replicas"), "{message}");

    // Same value: no conflict, the field is shared.
    let same = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"team": "x"}}, "spec": {"replicas": 2}});
    deploys
        .patch("web", &PatchParams::apply("scaler"), &Patch::Apply(&same))
        .await
        .expect("shared field applies");

    let forced = deploys
        .patch(
            "web",
            &PatchParams::apply("scaler").force(),
            &Patch::Apply(&scaler),
        )
        .await
        .expect("forced apply");
    assert_eq!(forced.spec.as_ref().and_then(|s| s.replicas), Some(5));
    assert_eq!(
        forced.labels().get("team"),
        None,
        "scaler dropped its own label"
    );

    // Now the operator conflicts unless it stops setting replicas.
    let (code, _, message) = status_of(
        deploys
            .patch(
                "web",
                &PatchParams::apply("operator"),
                &Patch::Apply(&desired),
            )
            .await,
    );
    assert_eq!(code, 409);
    assert!(message.contains("conflict with \"scaler\""), "{message}");
    let mut without_replicas = desired.clone();
    without_replicas["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("replicas");
    without_replicas["spec"]["template"]["spec"]["containers"][0]["image"] = json!("app:2");
    let out = deploys
        .patch(
            "web",
            &PatchParams::apply("operator"),
            &Patch::Apply(&without_replicas),
        )
        .await
        .expect("operator applies without replicas");
    assert_eq!(
        out.spec.as_ref().and_then(|s| s.replicas),
        Some(5),
        "scaler's field survives"
    );
    let image = out
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| p.containers[0].image.clone());
    assert_eq!(image, Some(Some("app:2".to_string())));

    // A non-apply write takes ownership of what it changes.
    deploys
        .patch(
            "web",
            &PatchParams { field_manager: Some("kubectl-edit".into()), ..Default::default() },
            &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:hotfix"}]}}}})),
        )
        .await
        .expect("merge patch by another manager");
    let (code, _, message) = status_of(
        deploys
            .patch(
                "web",
                &PatchParams::apply("operator"),
                &Patch::Apply(&without_replicas),
            )
            .await,
    );
    assert_eq!(code, 409);
    assert!(message.contains("kubectl-edit"), "{message}");
}

#[tokio::test]
async fn server_side_apply_merges_keyed_lists() {
    let (_fake, client) = setup().await;
    let deploys: Api<Deployment> = Api::default_namespaced(client);
    let base = deployment("web", 1);
    deploys
        .patch("web", &PatchParams::apply("operator"), &Patch::Apply(&base))
        .await
        .expect("operator applies");
    let sidecar = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [
            {"name": "proxy", "image": "proxy:1"},
            {"name": "app", "env": [{"name": "INJECTED", "value": "1"}]}
        ]}}}
    });
    let merged = deploys
        .patch(
            "web",
            &PatchParams::apply("injector"),
            &Patch::Apply(&sidecar),
        )
        .await
        .expect("injector applies");
    let containers = merged
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers)
        .expect("containers");
    let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["app", "proxy"]);
    assert_eq!(containers[0].image.as_deref(), Some("app:1"));
    assert_eq!(containers[0].env.as_ref().map(Vec::len), Some(1));

    // The operator re-applies its own container only: the injector's parts stay.
    let mut changed = base.clone();
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("app:2");
    let out = deploys
        .patch(
            "web",
            &PatchParams::apply("operator"),
            &Patch::Apply(&changed),
        )
        .await
        .expect("operator re-applies");
    let containers = out
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers)
        .expect("containers");
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0].image.as_deref(), Some("app:2"));
    assert_eq!(containers[0].env.as_ref().map(Vec::len), Some(1));

    // The injector withdraws: its container and env var go, the operator's stay.
    let withdraw =
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}});
    let out = deploys
        .patch(
            "web",
            &PatchParams::apply("injector"),
            &Patch::Apply(&withdraw),
        )
        .await
        .expect("injector withdraws");
    let containers = out
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers)
        .expect("containers");
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0].name, "app");
    assert_eq!(containers[0].image.as_deref(), Some("app:2"));
    assert!(containers[0].env.is_none());
}

#[tokio::test]
async fn owner_reference_cascade_delete() {
    let (fake, client) = setup().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let deploys: Api<Deployment> = Api::default_namespaced(client);
    let pp = PostParams::default();
    let owner_ref = |o: &ConfigMap| json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": o.name_any(), "uid": o.uid().expect("uid"), "controller": true}]);
    let parent = cms
        .create(&pp, &cm("parent", "default", json!({})))
        .await
        .expect("parent");
    let other = cms
        .create(&pp, &cm("other", "default", json!({})))
        .await
        .expect("other owner");
    let mut child = deployment("child", 1);
    child["metadata"]["ownerReferences"] = owner_ref(&parent);
    let child: Deployment = deploys.create(&pp, &typed(child)).await.expect("child");
    let mut grandchild = cm("grandchild", "default", json!({}));
    grandchild.metadata.owner_references = Some(typed(json!([{
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "child", "uid": child.uid().expect("uid")
    }])));
    cms.create(&pp, &grandchild).await.expect("grandchild");
    let mut shared = cm("shared", "default", json!({}));
    let mut refs = owner_ref(&parent);
    refs.as_array_mut()
        .expect("refs")
        .extend(owner_ref(&other).as_array().expect("refs").clone());
    shared.metadata.owner_references = Some(typed(refs));
    cms.create(&pp, &shared).await.expect("shared child");

    let res = cms
        .delete("parent", &DeleteParams::default())
        .await
        .expect("delete parent");
    assert!(res.is_right(), "deleted at once: a Status");
    assert!(fake.get("deployments", Some("default"), "child").is_none());
    assert!(
        fake.get("configmaps", Some("default"), "grandchild")
            .is_none()
    );
    let survivor = cms
        .get("shared")
        .await
        .expect("child with another owner survives");
    let refs = survivor.metadata.owner_references.expect("refs");
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].name, "other");

    // Orphan keeps dependents and strips the reference.
    let mut orphan = cm("orphan", "default", json!({}));
    orphan.metadata.owner_references = Some(typed(owner_ref(&other)));
    cms.create(&pp, &orphan).await.expect("orphan");
    cms.delete("other", &DeleteParams::orphan())
        .await
        .expect("delete orphaning");
    assert!(
        cms.get("orphan")
            .await
            .expect("orphan kept")
            .metadata
            .owner_references
            .is_none()
    );
}

#[tokio::test]
async fn finalizers_hold_deletion() {
    let (_fake, client) = setup().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let mut held = cm("held", "default", json!({}));
    held.metadata.finalizers = Some(vec!["voiceagent.io/cleanup".into()]);
    cms.create(&PostParams::default(), &held)
        .await
        .expect("create");

    let res = cms
        .delete("held", &DeleteParams::default())
        .await
        .expect("delete");
    let pending = res.left().expect("object returned while finalizers remain");
    assert!(pending.metadata.deletion_timestamp.is_some());
    let still = cms.get("held").await.expect("still there");
    assert!(still.metadata.deletion_timestamp.is_some());
    // Deleting again is harmless.
    assert!(
        cms.delete("held", &DeleteParams::default())
            .await
            .expect("delete again")
            .is_left()
    );

    let done = cms
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("remove finalizers");
    assert!(done.finalizers().is_empty());
    let (code, _, _) = status_of(cms.get("held").await);
    assert_eq!(code, 404, "gone once finalizers are removed");
}

#[tokio::test]
async fn watch_delivers_added_modified_deleted() {
    let (fake, client) = setup().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let pp = PostParams::default();
    cms.create(&pp, &cm("before", "default", json!({"w": "1"})))
        .await
        .expect("create");

    let stream = cms
        .watch(&WatchParams::default().labels("w=1"), "0")
        .await
        .expect("watch");
    let mut stream = stream.boxed();
    let next =
        async |s: &mut futures::stream::BoxStream<'_, kube::Result<WatchEvent<ConfigMap>>>| {
            tokio::time::timeout(Duration::from_secs(5), s.try_next())
                .await
                .expect("event in time")
                .expect("event ok")
                .expect("stream open")
        };
    assert!(matches!(next(&mut stream).await, WatchEvent::Added(o) if o.name_any() == "before"));

    cms.create(&pp, &cm("a", "default", json!({"w": "1"})))
        .await
        .expect("create a");
    cms.create(&pp, &cm("ignored", "default", json!({})))
        .await
        .expect("create ignored");
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .expect("patch a");
    cms.delete("a", &DeleteParams::default())
        .await
        .expect("delete a");
    fake.set_status(
        "configmaps",
        Some("default"),
        "before",
        json!({"hook": true}),
    )
    .expect("set_status hook");
    // Leaving the selector looks like a deletion.
    cms.patch(
        "before",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"w": null}}})),
    )
    .await
    .expect("unlabel");

    assert!(matches!(next(&mut stream).await, WatchEvent::Added(o) if o.name_any() == "a"));
    assert!(
        matches!(next(&mut stream).await, WatchEvent::Modified(o) if o.name_any() == "a" && o.data.as_ref().is_some_and(|d| d["k"] == "2"))
    );
    assert!(matches!(next(&mut stream).await, WatchEvent::Deleted(o) if o.name_any() == "a"));
    assert!(matches!(next(&mut stream).await, WatchEvent::Modified(o) if o.name_any() == "before"));
    assert!(matches!(next(&mut stream).await, WatchEvent::Deleted(o) if o.name_any() == "before"));

    // Resuming from a resourceVersion replays what came after it.
    let rv = cms
        .get("ignored")
        .await
        .expect("get")
        .resource_version()
        .expect("rv");
    let mut resumed = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("resume")
        .boxed();
    assert!(matches!(next(&mut resumed).await, WatchEvent::Modified(o) if o.name_any() == "a"));

    // timeoutSeconds ends the stream.
    let mut short = cms
        .watch(
            &WatchParams::default().timeout(1),
            &fake.resource_version().to_string(),
        )
        .await
        .expect("short watch")
        .boxed();
    let end = tokio::time::timeout(Duration::from_secs(5), short.try_next())
        .await
        .expect("ends in time");
    assert!(end.expect("clean end").is_none());
}

#[tokio::test]
async fn runtime_watcher_sees_changes() {
    let (_fake, client) = setup().await;
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let pp = PostParams::default();
    deploys
        .create(&pp, &typed(deployment("one", 1)))
        .await
        .expect("create one");

    let mut events = watcher(deploys.clone(), watcher::Config::default()).boxed();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(5), events.try_next())
            .await
            .expect("event in time")
            .expect("watcher ok")
            .expect("stream open")
    };
    assert!(matches!(next().await, watcher::Event::Init));
    assert!(matches!(next().await, watcher::Event::InitApply(d) if d.name_any() == "one"));
    assert!(matches!(next().await, watcher::Event::InitDone));

    deploys
        .create(&pp, &typed(deployment("two", 1)))
        .await
        .expect("create two");
    assert!(matches!(next().await, watcher::Event::Apply(d) if d.name_any() == "two"));
    deploys
        .patch(
            "two",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .expect("scale two");
    assert!(
        matches!(next().await, watcher::Event::Apply(d) if d.spec.as_ref().and_then(|s| s.replicas) == Some(4))
    );
    deploys
        .delete("one", &DeleteParams::default())
        .await
        .expect("delete one");
    assert!(matches!(next().await, watcher::Event::Delete(d) if d.name_any() == "one"));

    // The streaming-list initial strategy (sendInitialEvents) works too.
    let mut streaming = watcher(deploys, watcher::Config::default().streaming_lists()).boxed();
    let mut seen = Vec::new();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), streaming.try_next())
            .await
            .expect("event in time")
            .expect("watcher ok")
            .expect("stream open");
        match ev {
            watcher::Event::InitApply(d) => seen.push(d.name_any()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(seen, ["two"]);
}

#[tokio::test]
async fn discovery_finds_registered_crd() {
    let (fake, client) = setup().await;
    let gvk = GroupVersionKind::gvk("voiceagent.io", "v1alpha1", "VoiceAgent");
    assert!(kube::discovery::pinned_kind(&client, &gvk).await.is_err());

    fake.register_crd(&voice_agent_api::VoiceAgent::crd());
    let discovery = kube::Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let (ar, caps) = discovery.resolve_gvk(&gvk).expect("VoiceAgent discovered");
    assert_eq!(ar.plural, "voiceagents");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(
        caps.subresources
            .iter()
            .any(|(r, _)| r.plural == "voiceagents/status" || r.plural == "status")
    );
    assert!(
        discovery
            .resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"))
            .is_some()
    );
    assert!(
        discovery
            .resolve_gvk(&GroupVersionKind::gvk("", "v1", "ConfigMap"))
            .is_some()
    );

    let aggregated = kube::Discovery::new(client.clone())
        .run_aggregated()
        .await
        .expect("aggregated discovery");
    assert!(aggregated.resolve_gvk(&gvk).is_some());
    assert!(
        aggregated
            .resolve_gvk(&GroupVersionKind::gvk("", "v1", "Secret"))
            .is_some()
    );
    let (ar, _) = kube::discovery::pinned_kind(&client, &gvk)
        .await
        .expect("pinned kind");

    // The custom kind is served, with its status subresource.
    let vas: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
    let obj: DynamicObject = typed(json!({
        "apiVersion": "voiceagent.io/v1alpha1", "kind": "VoiceAgent",
        "metadata": {"name": "agent"},
        "spec": {"persona": {"greeting": "hi"}},
        "status": {"phase": "Ready"}
    }));
    let created = vas
        .create(&PostParams::default(), &obj)
        .await
        .expect("create VoiceAgent");
    assert!(created.data.get("status").is_none());
    let st = vas
        .patch_status(
            "agent",
            &PatchParams::apply("op"),
            &Patch::Apply(json!({
                "apiVersion": "voiceagent.io/v1alpha1", "kind": "VoiceAgent",
                "metadata": {"name": "agent"}, "status": {"phase": "Ready"}
            })),
        )
        .await
        .expect("apply status");
    assert_eq!(st.data["status"]["phase"], "Ready");
    assert_eq!(st.data["spec"]["persona"]["greeting"], "hi");
    assert_eq!(fake.objects("voiceagents.voiceagent.io").len(), 1);
    assert_eq!(fake.objects("voiceagent.io/v1alpha1/VoiceAgent").len(), 1);
}

#[tokio::test]
async fn failure_injection() {
    let (fake, client) = setup().await;
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let ssa = PatchParams::apply("operator");
    let desired = deployment("web", 1);

    fake.fail_next(
        FailMatcher::on(Verb::Apply, "deployments"),
        409,
        "Conflict",
        1,
    );
    let (code, reason, message) =
        status_of(deploys.patch("web", &ssa, &Patch::Apply(&desired)).await);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(message.contains("injected"), "{message}");
    assert!(
        fake.get("deployments", Some("default"), "web").is_none(),
        "failed before touching state"
    );
    deploys
        .patch("web", &ssa, &Patch::Apply(&desired))
        .await
        .expect("second apply succeeds");

    fake.fail_next(
        FailMatcher::any()
            .verb(Verb::Get)
            .resource("Deployment")
            .name("web"),
        500,
        "InternalError",
        2,
    );
    cms.create(
        &PostParams::default(),
        &cm("unaffected", "default", json!({})),
    )
    .await
    .expect("other requests unaffected");
    for _ in 0..2 {
        let (code, reason, _) = status_of(deploys.get("web").await);
        assert_eq!((code, reason.as_str()), (500, "InternalError"));
    }
    deploys.get("web").await.expect("third get succeeds");

    fake.fail_next(
        FailMatcher::on(Verb::List, "configmaps").namespace("elsewhere"),
        403,
        "Forbidden",
        1,
    );
    cms.list(&ListParams::default())
        .await
        .expect("namespace does not match");
    let elsewhere: Api<ConfigMap> = Api::namespaced(deploys.clone().into_client(), "elsewhere");
    let (code, _, _) = status_of(elsewhere.list(&ListParams::default()).await);
    assert_eq!(code, 403);
}

/// (verb, name, subresource, fieldManager, dryRun, code)
type Summary<'a> = (
    Verb,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    bool,
    u16,
);

#[tokio::test]
async fn write_recording_and_test_hooks() {
    let (fake, client) = setup().await;
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let pp = PostParams::default();

    // Seeding and controller simulation are not client writes.
    let seeded = fake
        .put_direct(&typed::<Deployment>(deployment("seeded", 2)))
        .expect("put_direct");
    assert_eq!(seeded["metadata"]["namespace"], "default");
    fake.set_status(
        "deployments",
        Some("default"),
        "seeded",
        json!({"readyReplicas": 2, "replicas": 2}),
    )
    .expect("set_status");
    let got = deploys.get("seeded").await.expect("seeded is served");
    assert_eq!(got.status.and_then(|s| s.ready_replicas), Some(2));
    assert!(fake.writes().is_empty());

    deploys
        .create(&pp, &typed(deployment("web", 1)))
        .await
        .expect("create");
    deploys
        .patch(
            "web",
            &PatchParams::apply("operator").force(),
            &Patch::Apply(deployment("web", 3)),
        )
        .await
        .expect("apply");
    deploys
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 3}})),
        )
        .await
        .expect("patch status");
    deploys
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &typed(deployment("dry", 1)),
        )
        .await
        .expect("dry-run create");
    assert!(
        fake.get("deployments", Some("default"), "dry").is_none(),
        "dry run stores nothing"
    );
    deploys
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    deploys.get("seeded").await.expect("reads are not writes");

    let writes = fake.writes();
    let summary: Vec<Summary<'_>> = writes
        .iter()
        .map(|w| {
            (
                w.verb,
                w.name.as_deref(),
                w.subresource.as_deref(),
                w.field_manager.as_deref(),
                w.dry_run,
                w.code,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (Verb::Create, Some("web"), None, None, false, 201),
            (Verb::Apply, Some("web"), None, Some("operator"), false, 200),
            (Verb::Patch, Some("web"), Some("status"), None, false, 200),
            (Verb::Create, Some("dry"), None, None, true, 201),
            (Verb::Delete, Some("web"), None, None, false, 200),
        ]
    );
    assert!(writes.iter().all(|w| w.plural == "deployments"
        && w.group == "apps"
        && w.namespace.as_deref() == Some("default")));
    fake.reset_writes();
    assert!(fake.writes().is_empty());

    // delete_direct ignores finalizers.
    let mut held = cm("held", "default", json!({}));
    held.metadata.finalizers = Some(vec!["x/y".into()]);
    fake.put_direct(&held).expect("seed held");
    assert!(
        fake.delete_direct("configmaps", Some("default"), "held")
            .is_some()
    );
    assert!(fake.get("configmaps", Some("default"), "held").is_none());
    assert!(
        fake.put_direct(&json!({"apiVersion": "v9", "kind": "Nope", "metadata": {"name": "x"}}))
            .is_err()
    );
}

#[tokio::test]
async fn kube_runtime_finalizer_helper_works() {
    use std::sync::Arc;

    use kube::runtime::controller::Action;
    use kube::runtime::finalizer::{Event as Finalizer, finalizer};

    let (fake, client) = setup().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    cms.create(&PostParams::default(), &cm("guarded", "default", json!({})))
        .await
        .expect("create");
    let reconcile = |ev: Finalizer<ConfigMap>| async move {
        Ok::<_, std::io::Error>(match ev {
            Finalizer::Apply(_) => Action::await_change(),
            Finalizer::Cleanup(_) => Action::await_change(),
        })
    };
    // First pass adds the finalizer with a JSON patch (test null + add).
    let obj = Arc::new(cms.get("guarded").await.expect("get"));
    finalizer(&cms, "voiceagent.io/cleanup", obj, reconcile)
        .await
        .expect("finalizer added");
    let obj = cms.get("guarded").await.expect("get");
    assert_eq!(obj.finalizers(), ["voiceagent.io/cleanup"]);

    cms.delete("guarded", &DeleteParams::default())
        .await
        .expect("delete");
    let obj = Arc::new(cms.get("guarded").await.expect("held by the finalizer"));
    finalizer(&cms, "voiceagent.io/cleanup", obj, reconcile)
        .await
        .expect("cleanup removes the finalizer");
    assert!(fake.get("configmaps", Some("default"), "guarded").is_none());
}

#[tokio::test]
async fn kube_runtime_controller_reconciles() {
    use std::sync::Arc;

    use kube::runtime::Controller;
    use kube::runtime::controller::Action;

    let (fake, client) = setup().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let reconcile = |obj: Arc<ConfigMap>, api: Arc<Api<ConfigMap>>| async move {
        let name = format!("{}-child", obj.name_any());
        let child = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "ownerReferences": [{
                "apiVersion": "v1", "kind": "ConfigMap", "name": obj.name_any(),
                "uid": obj.uid().unwrap_or_default(), "controller": true
            }]},
            "data": {"source": obj.data.as_ref().and_then(|d| d.get("k")).cloned().unwrap_or_default()}
        });
        api.patch(
            &name,
            &PatchParams::apply("controller").force(),
            &Patch::Apply(child),
        )
        .await?;
        Ok::<_, kube::Error>(Action::await_change())
    };
    let controller = Controller::new(
        cms.clone(),
        watcher::Config::default().labels("managed=true"),
    )
    .run(
        reconcile,
        |_, _, _| Action::requeue(Duration::from_secs(1)),
        Arc::new(cms.clone()),
    )
    .for_each(|_| async {});
    let task = tokio::spawn(controller);

    cms.create(
        &PostParams::default(),
        &cm("parent", "default", json!({"managed": "true"})),
    )
    .await
    .expect("create parent");
    let wait_for = async |want: &str| {
        for _ in 0..100 {
            let got = fake.get("configmaps", Some("default"), "parent-child");
            if got.as_ref().map(|c| c["data"]["source"].clone()) == Some(json!(want)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("child never reached source={want}");
    };
    wait_for("v").await;
    cms.patch(
        "parent",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v2"}})),
    )
    .await
    .expect("update parent");
    wait_for("v2").await;
    let applies = fake
        .writes()
        .iter()
        .filter(|w| w.verb == Verb::Apply && w.field_manager.as_deref() == Some("controller"))
        .count();
    assert!(applies >= 2, "one apply per parent change, got {applies}");

    cms.delete("parent", &DeleteParams::default())
        .await
        .expect("delete parent");
    assert!(
        fake.get("configmaps", Some("default"), "parent-child")
            .is_none()
    );
    task.abort();
}
