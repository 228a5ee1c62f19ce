//! The checked-in CRDs match the types, are valid `apiextensions.k8s.io/v1`
//! CustomResourceDefinitions with structural schemas, and carry the names,
//! columns, docs and rules the API promises.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;
use voice_agent_api::validation::structural_problems;
use voice_agent_tests::{read, repo_root, yaml_docs};

const REGENERATE: &str = "cargo run -p voice-agent-operator -- crd --write .";

fn checked_in() -> Vec<CustomResourceDefinition> {
    [
        "crds/voiceagents.yaml",
        "crds/phonenumbers.yaml",
        "crds/calls.yaml",
    ]
    .iter()
    .map(|f| {
        let docs = yaml_docs(&read(f));
        assert_eq!(docs.len(), 1, "{f} holds one CRD");
        serde_json::from_value(docs[0].clone())
            .unwrap_or_else(|e| panic!("{f} is not an apiextensions.k8s.io/v1 CRD: {e}"))
    })
    .collect()
}

fn schema(crd: &CustomResourceDefinition) -> Value {
    let s = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("an openAPIV3Schema");
    serde_json::to_value(s).expect("schema serializes")
}

#[test]
fn checked_in_files_match_the_types() {
    let drifted = voice_agent_operator::crdgen::drifted(&repo_root()).expect("generation works");
    assert!(
        drifted.is_empty(),
        "out of date: {}. Regenerate with `{REGENERATE}` and commit the result.",
        drifted.join(", ")
    );
}

#[test]
fn files_are_v1_crds_of_our_group() {
    for (crd, doc) in checked_in()
        .iter()
        .zip(["voiceagents", "phonenumbers", "calls"])
    {
        let raw = &yaml_docs(&read(&format!("crds/{doc}.yaml")))[0];
        assert_eq!(raw["apiVersion"], "apiextensions.k8s.io/v1");
        assert_eq!(raw["kind"], "CustomResourceDefinition");
        assert_eq!(crd.spec.group, "voiceagent.io");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some(format!("{doc}.voiceagent.io").as_str())
        );
        assert_eq!(crd.spec.versions.len(), 1);
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.served && v.storage);
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{doc}: status subresource"
        );
    }
}

#[test]
fn schemas_are_structural_and_rules_compile() {
    for crd in checked_in() {
        let problems = structural_problems(&crd);
        assert!(
            problems.is_empty(),
            "{}: {problems:#?}",
            crd.spec.names.kind
        );
    }
}

#[test]
fn the_structural_check_can_fail() {
    let mut crd = checked_in().remove(1);
    let mut s = schema(&crd);
    // Untype a node, add a $ref, a typed junctor and a broken CEL rule.
    s["properties"]["spec"]["properties"]["number"]
        .as_object_mut()
        .expect("number")
        .remove("type");
    s["properties"]["spec"]["properties"]["provider"]["$ref"] = "#/x".into();
    s["properties"]["spec"]["anyOf"] = serde_json::json!([{"type": "string"}]);
    s["properties"]["spec"]["x-kubernetes-validations"] = serde_json::json!([{"rule": "self.(("}]);
    crd.spec.versions[0]
        .schema
        .as_mut()
        .expect("schema")
        .open_api_v3_schema = Some(serde_json::from_value(s).expect("schema"));
    let problems = structural_problems(&crd).join("\n");
    assert!(problems.contains("spec.number: no type"), "{problems}");
    assert!(problems.contains("`$ref`"), "{problems}");
    assert!(problems.contains("`type` inside `anyOf`"), "{problems}");
    assert!(problems.contains("CEL rule does not compile"), "{problems}");
}

#[test]
fn names_short_names_and_categories() {
    let crds = checked_in();
    let got: Vec<(String, String, Vec<String>, Vec<String>)> = crds
        .iter()
        .map(|c| {
            (
                c.spec.names.kind.clone(),
                c.spec.names.plural.clone(),
                c.spec.names.short_names.clone().unwrap_or_default(),
                c.spec.names.categories.clone().unwrap_or_default(),
            )
        })
        .collect();
    let voice = vec!["voice".to_string()];
    assert_eq!(
        got,
        vec![
            (
                "VoiceAgent".into(),
                "voiceagents".into(),
                vec!["va".into()],
                voice.clone()
            ),
            (
                "PhoneNumber".into(),
                "phonenumbers".into(),
                vec!["pn".into()],
                voice.clone()
            ),
            ("Call".into(), "calls".into(), vec!["vc".into()], voice),
        ]
    );
}

#[test]
fn printer_columns() {
    let columns = |crd: &CustomResourceDefinition, priority: i32| -> Vec<String> {
        crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.priority.unwrap_or(0) == priority)
            .map(|c| c.name)
            .collect()
    };
    let crds = checked_in();
    assert_eq!(
        columns(&crds[0], 0),
        ["Phase", "Ready", "Calls", "P95", "Age"]
    );
    assert_eq!(columns(&crds[0], 1), ["Transport", "Webhook URL"]);
    assert_eq!(columns(&crds[1], 0), ["Number", "Agent", "Ready", "Age"]);
    assert_eq!(
        columns(&crds[2], 0),
        ["Agent", "From", "Phase", "Duration", "Turns", "P95", "Age"]
    );
    // Every column's JSONPath points at a field the schema declares.
    for crd in &crds {
        let s = schema(crd);
        for c in crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
        {
            if c.json_path.starts_with(".metadata") {
                continue;
            }
            let path = c.json_path.split("[?").next().unwrap_or_default();
            let mut node = &s;
            for part in path.trim_start_matches('.').split('.') {
                node = node
                    .get("properties")
                    .and_then(|p| p.get(part))
                    .or_else(|| {
                        node.get("items")
                            .and_then(|i| i.get("properties"))
                            .and_then(|p| p.get(part))
                    })
                    .unwrap_or_else(|| {
                        panic!(
                            "{}: column {} points at missing {path}",
                            crd.spec.names.kind, c.name
                        )
                    });
            }
        }
    }
}

fn undocumented(node: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, child) in props {
            let p = format!("{path}.{k}");
            let documented = child
                .get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| !d.trim().is_empty());
            if !documented {
                out.push(p.clone());
            }
            undocumented(child, &p, out);
            if let Some(items) = child.get("items") {
                undocumented(items, &format!("{p}[]"), out);
            }
        }
    }
}

#[test]
fn every_field_is_documented() {
    for crd in checked_in() {
        let s = schema(&crd);
        let mut missing = Vec::new();
        for section in ["spec", "status"] {
            undocumented(&s["properties"][section], section, &mut missing);
        }
        assert!(
            missing.is_empty(),
            "{}: fields without a description: {missing:#?}",
            crd.spec.names.kind
        );
    }
}

#[test]
fn conditions_are_list_maps_keyed_by_type() {
    for crd in checked_in() {
        let s = schema(&crd);
        let status = &s["properties"]["status"]["properties"];
        assert!(
            status.get("observedGeneration").is_some(),
            "{}",
            crd.spec.names.kind
        );
        assert!(status.get("phase").is_some() || crd.spec.names.kind == "PhoneNumber");
        let conds = &status["conditions"];
        assert_eq!(
            conds["x-kubernetes-list-type"], "map",
            "{}",
            crd.spec.names.kind
        );
        assert_eq!(
            conds["x-kubernetes-list-map-keys"],
            serde_json::json!(["type"])
        );
        let item = &conds["items"]["properties"];
        for f in [
            "type",
            "status",
            "reason",
            "message",
            "lastTransitionTime",
            "observedGeneration",
        ] {
            assert!(
                item.get(f).is_some(),
                "{}: Condition.{f}",
                crd.spec.names.kind
            );
        }
    }
}

#[test]
fn api_reference_lists_every_spec_field() {
    let doc = read("docs/api.md");
    for crd in checked_in() {
        let s = schema(&crd);
        let mut fields = Vec::new();
        collect_paths(&s["properties"]["spec"], "spec", &mut fields);
        for f in fields {
            assert!(
                doc.contains(&format!("`{f}`")),
                "docs/api.md misses {}.{f}",
                crd.spec.names.kind
            );
        }
    }
}

fn collect_paths(node: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, child) in props {
            let p = format!("{path}.{k}");
            out.push(p.clone());
            collect_paths(child, &p, out);
            if let Some(items) = child.get("items") {
                collect_paths(items, &format!("{p}[]"), out);
            }
        }
    }
}
