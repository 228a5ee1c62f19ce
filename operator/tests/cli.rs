//! The `voice-agent-operator` command line, run as a real process.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_voice-agent-operator"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> (Output, String, String) {
    let out = cmd.output().expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

#[test]
fn crd_prints_three_crds() {
    let (out, stdout, _) = run(bin().arg("crd"));
    assert!(out.status.success());
    assert_eq!(stdout.matches("kind: CustomResourceDefinition").count(), 3);
    for name in [
        "voiceagents.voiceagent.io",
        "phonenumbers.voiceagent.io",
        "calls.voiceagent.io",
    ] {
        assert!(stdout.contains(name), "{name}");
    }
}

#[test]
fn crd_check_passes_on_the_repository() {
    let (out, stdout, stderr) = run(bin().args(["crd", "--check"]).arg(root()));
    assert!(out.status.success(), "{stdout}{stderr}");
}

#[test]
fn crd_check_names_the_command_on_drift() {
    let dir = std::env::temp_dir().join(format!("va-crd-drift-{}", std::process::id()));
    let (out, ..) = run(bin().args(["crd", "--write"]).arg(&dir));
    assert!(out.status.success());
    std::fs::write(dir.join("crds/calls.yaml"), "stale").expect("write");
    let (out, _, stderr) = run(bin().args(["crd", "--check"]).arg(&dir));
    assert!(!out.status.success());
    assert!(stderr.contains("crds/calls.yaml"), "{stderr}");
    assert!(stderr.contains("crd --write"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn docs_flag_prints_the_reference() {
    let (out, stdout, _) = run(bin().args(["crd", "--docs"]));
    assert!(out.status.success());
    assert!(stdout.starts_with("# API reference"));
}

#[test]
fn validate_accepts_the_examples_and_refuses_bad_manifests() {
    let examples = root().join("examples");
    let mut cmd = bin();
    cmd.arg("validate");
    for f in [
        "voiceagent.yaml",
        "voiceagent-minimal.yaml",
        "voiceagent-full.yaml",
        "phonenumber.yaml",
        "call.yaml",
    ] {
        cmd.arg("-f").arg(examples.join(f));
    }
    let (out, stdout, stderr) = run(&mut cmd);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.matches(": valid").count(), 5, "{stdout}");

    let bad = root().join("tests/invalid/phonenumber-not-e164.yaml");
    let (out, stdout, _) = run(bin().arg("validate").arg("-f").arg(bad));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.contains("PhoneNumber/local-format: spec.number: Invalid value"),
        "{stdout}"
    );

    let (out, _, stderr) = run(bin().args(["validate", "-f", "/nonexistent.yaml"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("reading /nonexistent.yaml"), "{stderr}");
}

#[test]
fn validate_reads_standard_input() {
    use std::io::Write;
    let mut child = bin()
        .args(["validate", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(
            b"apiVersion: voiceagent.io/v1alpha1\nkind: Call\nmetadata: {name: x}\nspec: {}\n",
        )
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.contains("<stdin>: Call/x: spec.callSid: Required value"),
        "{stdout}"
    );
}

#[test]
fn render_prints_the_objects_of_a_voice_agent() {
    let examples = root().join("examples");
    let (out, stdout, stderr) = run(bin()
        .args(["render", "-n", "voice", "--image", "example.com/va:9", "-f"])
        .arg(examples.join("voiceagent.yaml"))
        .arg("--phone-numbers")
        .arg(examples.join("phonenumber.yaml")));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.matches("\nkind: Deployment").count(), 4, "{stdout}");
    assert!(stdout.contains("name: front-desk-runtime"));
    assert!(stdout.contains("namespace: voice"));
    assert!(stdout.contains("image: example.com/va:9"));
    // The bound number reaches the gateway's config.
    assert!(stdout.contains("+15551230142"), "{stdout}");
}

#[test]
fn render_refuses_an_invalid_voice_agent() {
    let bad = root().join("tests/invalid/voiceagent-min-above-max.yaml");
    let (out, stdout, stderr) = run(bin().arg("render").arg("-f").arg(bad));
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("minReplicas must be less than or equal to maxReplicas"),
        "{stderr}"
    );
}

#[test]
fn simulate_replays_a_trace() {
    let examples = root().join("examples");
    let (out, stdout, stderr) = run(bin()
        .args(["simulate", "-f"])
        .arg(examples.join("voiceagent.yaml"))
        .arg("--signals")
        .arg(examples.join("signals/lunch-rush.csv")));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("PanicScaleUp"), "{stdout}");
    assert!(stdout.contains("runtime  peak"), "{stdout}");
    let (out, csv, _) = run(bin()
        .args(["simulate", "--csv", "-f"])
        .arg(examples.join("voiceagent.yaml"))
        .arg("--signals")
        .arg(examples.join("signals/lunch-rush.csv")));
    assert!(out.status.success());
    assert!(csv.starts_with("time_s,component,replicas,reason,changed\n"));

    let bad = std::env::temp_dir().join(format!("va-bad-trace-{}.csv", std::process::id()));
    std::fs::write(
        &bad,
        "0,runtime,activeCalls,10\n2,runtime,activeCalls,lots\n",
    )
    .expect("write");
    let (out, _, stderr) = run(bin()
        .args(["simulate", "-f"])
        .arg(examples.join("voiceagent.yaml"))
        .arg("--signals")
        .arg(&bad));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("line 2: value \"lots\""), "{stderr}");
    let _ = std::fs::remove_file(bad);
}
