//! `voice-agent-operator validate`: offline validation of manifests.

use serde::Deserialize;
use serde_json::Value;
use voice_agent_api::validation::Validator;

/// The outcome for one YAML document.
#[derive(Debug)]
pub struct DocResult {
    /// 1-based index of the document in its stream.
    pub index: usize,
    /// `Kind/name`, when the document got that far.
    pub object: Option<String>,
    /// Errors; empty when the document is valid.
    pub errors: Vec<String>,
}

/// The outcome for one multi-document YAML stream.
#[derive(Debug, Default)]
pub struct Report {
    /// One entry per non-empty document.
    pub docs: Vec<DocResult>,
}

impl Report {
    /// Whether every document is valid (and there was at least one).
    pub fn ok(&self) -> bool {
        !self.docs.is_empty() && self.docs.iter().all(|d| d.errors.is_empty())
    }

    /// Human-readable lines, prefixed with `source`.
    pub fn lines(&self, source: &str) -> Vec<String> {
        if self.docs.is_empty() {
            return vec![format!("{source}: no objects found")];
        }
        let mut out = Vec::new();
        for d in &self.docs {
            let what = d
                .object
                .clone()
                .unwrap_or_else(|| format!("document {}", d.index));
            if d.errors.is_empty() {
                out.push(format!("{source}: {what}: valid"));
            } else {
                for e in &d.errors {
                    out.push(format!("{source}: {what}: {e}"));
                }
            }
        }
        out
    }
}

/// Validates every document of a YAML stream: schema, CEL rules, and that it
/// decodes into the typed API.
pub fn validate_manifests(yaml: &str) -> Report {
    let validator = Validator::new();
    let mut report = Report::default();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(yaml).enumerate() {
        let index = i + 1;
        let value = match Value::deserialize(doc) {
            Ok(Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                report.docs.push(DocResult {
                    index,
                    object: None,
                    errors: vec![format!("not valid YAML: {e}")],
                });
                // The parser cannot resynchronise after a syntax error.
                break;
            }
        };
        let object = match (
            value.get("kind").and_then(Value::as_str),
            value.pointer("/metadata/name").and_then(Value::as_str),
        ) {
            (Some(k), Some(n)) => Some(format!("{k}/{n}")),
            (Some(k), None) => Some(k.to_string()),
            _ => None,
        };
        let errors = match validator.validate(&value) {
            Ok(defaulted) => decode_typed(&defaulted).err().into_iter().collect(),
            Err(errs) => errs.0.iter().map(ToString::to_string).collect(),
        };
        report.docs.push(DocResult {
            index,
            object,
            errors,
        });
    }
    report
}

pub use voice_agent_api::validation::load_voice_agent;

fn decode_typed(value: &Value) -> Result<(), String> {
    use voice_agent_api::{Call, PhoneNumber, VoiceAgent};
    let result = match value.get("kind").and_then(Value::as_str) {
        Some("VoiceAgent") => serde_json::from_value::<VoiceAgent>(value.clone()).map(drop),
        Some("PhoneNumber") => serde_json::from_value::<PhoneNumber>(value.clone()).map(drop),
        Some("Call") => serde_json::from_value::<Call>(value.clone()).map(drop),
        _ => Ok(()),
    };
    result.map_err(|e| format!("does not decode: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_each_document() {
        let yaml = r#"
apiVersion: voiceagent.io/v1alpha1
kind: PhoneNumber
metadata: {name: main}
spec:
  number: "+15551230142"
  voiceAgentRef: {name: front-desk}
  twilio:
    accountSid: AC0123456789abcdef0123456789abcdef
    credentialsSecretRef: {name: twilio, key: authToken}
---
apiVersion: voiceagent.io/v1alpha1
kind: PhoneNumber
metadata: {name: bad}
spec:
  number: "555"
  voiceAgentRef: {name: front-desk}
"#;
        let report = validate_manifests(yaml);
        assert_eq!(report.docs.len(), 2);
        assert!(
            report.docs[0].errors.is_empty(),
            "{:?}",
            report.docs[0].errors
        );
        assert!(!report.ok());
        let lines = report.lines("f.yaml").join("\n");
        assert!(
            lines.contains("PhoneNumber/bad: spec.number: Invalid value: \"555\""),
            "{lines}"
        );
    }

    #[test]
    fn broken_yaml_and_empty_streams_are_errors() {
        let report = validate_manifests("kind: [unclosed");
        assert!(!report.ok());
        assert!(report.docs[0].errors[0].starts_with("not valid YAML"));
        assert!(!validate_manifests("").ok());
        assert!(!validate_manifests("---\n---\n").ok());
    }

    #[test]
    fn foreign_kinds_are_refused() {
        let report = validate_manifests("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n");
        assert!(!report.ok());
        assert!(report.docs[0].errors[0].contains("unknown apiVersion/kind"));
    }
}
