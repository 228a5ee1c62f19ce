//! Rendered objects and the CRDs pass the Kubernetes OpenAPI schemas of a
//! real release, checked by `kubernetes-validate` (PyPI; installed by
//! `scripts/test`) in strict mode: unknown fields and wrong types fail.

use std::path::PathBuf;
use std::process::Command;

use voice_agent_operator::render::{BuildInput, build};
use voice_agent_tests::{read, repo_root};

/// The oldest Kubernetes release the operator supports.
const KUBERNETES_VERSION: &str = "1.33.0";

/// Runs kubernetes-validate on a YAML stream; `None` when it is not installed
/// (allowed only outside CI).
fn validate(name: &str, yaml: &str) -> Option<(bool, String)> {
    if Command::new("kubernetes-validate")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "kubernetes-validate is missing in CI: scripts/test installs it"
        );
        eprintln!(
            "SKIPPED: kubernetes-validate is not installed (pip install kubernetes-validate)"
        );
        return None;
    }
    let path: PathBuf =
        std::env::temp_dir().join(format!("va-schema-{}-{name}.yaml", std::process::id()));
    std::fs::write(&path, yaml).expect("write temp file");
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "--no-warn", "-k", KUBERNETES_VERSION])
        .arg(&path)
        .output()
        .expect("kubernetes-validate runs");
    let _ = std::fs::remove_file(&path);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text))
}

fn rendered(example: &str) -> String {
    let mut va: voice_agent_api::VoiceAgent =
        serde_yaml_ng::from_str(&read(&format!("examples/{example}"))).expect("example decodes");
    va.metadata.uid = Some("0b7f3c2e-1111-4222-8333-944455556666".into());
    let input = BuildInput {
        bound_numbers: vec!["+15551230142".into()],
        ..BuildInput::default()
    };
    build(&va, &input)
        .expect("renders")
        .to_yaml()
        .expect("yaml")
}

#[test]
fn rendered_objects_pass_the_kubernetes_schema() {
    for example in [
        "voiceagent-minimal.yaml",
        "voiceagent.yaml",
        "voiceagent-full.yaml",
    ] {
        if let Some((ok, out)) = validate(example, &rendered(example)) {
            assert!(ok, "{example}: {out}");
        }
    }
}

#[test]
fn crds_pass_the_kubernetes_schema() {
    for crd in ["voiceagents", "phonenumbers", "calls"] {
        let yaml =
            std::fs::read_to_string(repo_root().join(format!("crds/{crd}.yaml"))).expect("crd");
        if let Some((ok, out)) = validate(crd, &yaml) {
            assert!(ok, "{crd}: {out}");
        }
    }
}

#[test]
fn the_schema_check_can_fail() {
    let broken = rendered("voiceagent-minimal.yaml")
        .replacen("replicas: 1", "replicas: one", 1)
        .replacen(
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: true\n          readOnlyRootFs: true",
            1,
        );
    assert!(broken.contains("replicas: one"));
    if let Some((ok, out)) = validate("broken", &broken) {
        assert!(!ok, "a broken Deployment passed: {out}");
        assert!(out.contains("replicas"), "{out}");
    }
}
