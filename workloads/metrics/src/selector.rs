//! Kubernetes label selectors, as the HPA controller sends them in
//! `labelSelector` (the syntax of `metav1.LabelSelector` rendered to a
//! string, `k8s.io/apimachinery/pkg/labels.Parse`):
//!
//! - `key=value`, `key==value`, `key!=value`;
//! - `key in (a, b)`, `key notin (a, b)`;
//! - `key` (exists), `!key` (does not exist);
//!
//! joined by commas, every requirement must hold. As in Kubernetes, `!=` and
//! `notin` also match a label that is absent. Keys and values are checked
//! against the label syntax, so a typo is a 400 rather than an empty answer.

use std::collections::BTreeMap;

use thiserror::Error;

/// A selector that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid label selector {selector:?}: {reason}")]
pub struct SelectorError {
    /// The selector as given.
    pub selector: String,
    /// What is wrong.
    pub reason: String,
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value`.
    NotEquals(String, String),
    /// `key in (values)`.
    In(String, Vec<String>),
    /// `key notin (values)`.
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A parsed selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// The requirements, all of which must hold.
    pub requirements: Vec<Requirement>,
}

impl Selector {
    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

/// Splits on commas outside parentheses.
fn split_requirements(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, ch) in s.char_indices() {
        match ch {
            '(' => {
                if depth > 0 {
                    return Err("nested parentheses".into());
                }
                depth += 1;
            }
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| "unbalanced parentheses".to_string())?;
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced parentheses".into());
    }
    parts.push(&s[start..]);
    Ok(parts)
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters.
fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A DNS subdomain: dot-separated lowercase labels, at most 253 characters.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// A label key: `name` or `prefix/name`.
fn check_key(key: &str) -> Result<String, String> {
    let ok = match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name(name),
        None => is_name(key),
    };
    if ok {
        Ok(key.to_string())
    } else {
        Err(format!("{key:?} is not a valid label key"))
    }
}

/// A label value: empty, or a name.
fn check_value(value: &str) -> Result<String, String> {
    if value.is_empty() || is_name(value) {
        Ok(value.to_string())
    } else {
        Err(format!("{value:?} is not a valid label value"))
    }
}

fn set_values(rest: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| "a set needs parentheses: key in (a, b)".to_string())?;
    if inner.trim().is_empty() {
        return Err("in and notin need at least one value".into());
    }
    let values: Vec<String> = inner
        .split(',')
        .map(|v| check_value(v.trim()))
        .collect::<Result<_, _>>()?;
    Ok(values)
}

/// The operator in `word rest` for set-based requirements (`in`, `notin`).
fn set_requirement(text: &str) -> Option<Result<Requirement, String>> {
    let (key, rest) = text.split_once(char::is_whitespace)?;
    let rest = rest.trim_start();
    let (op, values) = if let Some(v) = rest.strip_prefix("notin") {
        ("notin", v)
    } else if let Some(v) = rest.strip_prefix("in") {
        ("in", v)
    } else {
        return None;
    };
    // `in(` or `in (`: the operator must be followed by the set.
    if !values.trim_start().starts_with('(') {
        return None;
    }
    Some((|| {
        let key = check_key(key.trim())?;
        let values = set_values(values)?;
        Ok(if op == "in" {
            Requirement::In(key, values)
        } else {
            Requirement::NotIn(key, values)
        })
    })())
}

fn requirement(text: &str) -> Result<Requirement, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("an empty requirement".into());
    }
    if let Some(r) = set_requirement(text) {
        return r;
    }
    if let Some((key, value)) = text.split_once("!=") {
        return Ok(Requirement::NotEquals(
            check_key(key.trim())?,
            check_value(value.trim())?,
        ));
    }
    if let Some((key, value)) = text.split_once("==").or_else(|| text.split_once('=')) {
        return Ok(Requirement::Equals(
            check_key(key.trim())?,
            check_value(value.trim())?,
        ));
    }
    if let Some(key) = text.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(check_key(key.trim())?));
    }
    if text.contains(char::is_whitespace) {
        return Err(format!(
            "{text:?}: expected key, !key, key=value, key!=value, key in (...) or key notin (...)"
        ));
    }
    Ok(Requirement::Exists(check_key(text)?))
}

/// Parses a selector; empty (or only whitespace) selects everything.
pub fn parse(selector: &str) -> Result<Selector, SelectorError> {
    let fail = |reason: String| SelectorError {
        selector: selector.to_string(),
        reason,
    };
    if selector.trim().is_empty() {
        return Ok(Selector::default());
    }
    let requirements = split_requirements(selector)
        .map_err(fail)?
        .into_iter()
        .map(requirement)
        .collect::<Result<_, _>>()
        .map_err(fail)?;
    Ok(Selector { requirements })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_operator() {
        let s = parse(
            "namespace=voice, voiceAgent==hello,component!=tts,stage in (e2e, webhook),\
             voiceAgent notin (other),app.kubernetes.io/name,!legacy",
        )
        .expect("parses");
        assert_eq!(
            s.requirements,
            [
                Requirement::Equals("namespace".into(), "voice".into()),
                Requirement::Equals("voiceAgent".into(), "hello".into()),
                Requirement::NotEquals("component".into(), "tts".into()),
                Requirement::In("stage".into(), vec!["e2e".into(), "webhook".into()]),
                Requirement::NotIn("voiceAgent".into(), vec!["other".into()]),
                Requirement::Exists("app.kubernetes.io/name".into()),
                Requirement::DoesNotExist("legacy".into()),
            ]
        );
    }

    #[test]
    fn matches_as_kubernetes_does() {
        let l = labels(&[("voiceAgent", "hello"), ("component", "gateway")]);
        let yes = [
            "",
            "voiceAgent=hello",
            "voiceAgent in (hello,other)",
            "component notin (tts)",
            "stage notin (e2e)", // absent: notin holds
            "stage!=e2e",        // absent: != holds
            "component,!stage",
            "voiceAgent in(hello)",
        ];
        for s in yes {
            assert!(parse(s).expect(s).matches(&l), "{s}");
        }
        let no = [
            "voiceAgent=other",
            "voiceAgent!=hello",
            "stage in (e2e)",
            "component notin (gateway, tts)",
            "stage",
            "!component",
            "voiceAgent=hello,component=tts",
        ];
        for s in no {
            assert!(!parse(s).expect(s).matches(&l), "{s}");
        }
    }

    #[test]
    fn refuses_what_kubernetes_refuses() {
        for bad in [
            "voiceAgent in hello",
            "voiceAgent in ()",
            "voiceAgent in (a,(b))",
            "voiceAgent in (a",
            "voice agent",
            "=hello",
            "voiceAgent=hel lo",
            "voiceAgent=-hello",
            "a,,b",
            "Bad_Prefix/name=x",
            "voiceAgent=héllo",
        ] {
            let err = parse(bad).expect_err(bad);
            assert_eq!(err.selector, bad);
            assert!(
                err.to_string().starts_with("invalid label selector"),
                "{err}"
            );
        }
    }
}
