//! Label and field selectors, as `?labelSelector=` and `?fieldSelector=`
//! understand them.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LabelSelector(Vec<Requirement>);

/// Splits at commas outside parentheses.
fn split_terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn check_key(key: &str, term: &str) -> Result<String, String> {
    if key.is_empty() || key.contains(char::is_whitespace) || key.contains(['=', '!', '(', ')']) {
        Err(format!(
            "unable to parse requirement: invalid label key in {term:?}"
        ))
    } else {
        Ok(key.to_string())
    }
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in split_terms(s) {
            let req = if let Some(open) = term.find('(') {
                let close = term.rfind(')').filter(|c| *c > open).ok_or_else(|| {
                    format!("unable to parse requirement: missing ')' in {term:?}")
                })?;
                let head: Vec<&str> = term[..open].split_whitespace().collect();
                let values: Vec<String> = term[open + 1..close]
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect();
                match head.as_slice() {
                    [key, "in"] => Requirement::In(check_key(key, term)?, values),
                    [key, "notin"] => Requirement::NotIn(check_key(key, term)?, values),
                    _ => return Err(format!("unable to parse requirement: {term:?}")),
                }
            } else if let Some(rest) = term.strip_prefix('!') {
                Requirement::NotExists(check_key(rest.trim(), term)?)
            } else if let Some((k, v)) = term.split_once("!=") {
                Requirement::NotEq(check_key(k.trim(), term)?, v.trim().to_string())
            } else if let Some((k, v)) = term.split_once("==") {
                Requirement::Eq(check_key(k.trim(), term)?, v.trim().to_string())
            } else if let Some((k, v)) = term.split_once('=') {
                Requirement::Eq(check_key(k.trim(), term)?, v.trim().to_string())
            } else {
                Requirement::Exists(check_key(term, term)?)
            };
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether an object's `metadata.labels` satisfy the selector.
    pub fn matches(&self, obj: &Value) -> bool {
        let label = |k: &str| {
            obj.pointer("/metadata/labels")
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
        };
        self.0.iter().all(|r| match r {
            Requirement::Eq(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEq(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
        })
    }
}

/// A parsed field selector: `path=value`, `path==value` or `path!=value`
/// terms joined by commas, where `path` is any dotted path into the object
/// (`metadata.name`, `metadata.namespace`, `status.phase`,
/// `involvedObject.name`). A missing field compares as `""`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldSelector(Vec<(Vec<String>, bool, String)>);

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in split_terms(s) {
            let (path, eq, value) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!("invalid field selector term {term:?}"));
            };
            let path: Vec<String> = path.trim().split('.').map(str::to_string).collect();
            if path.iter().any(String::is_empty) {
                return Err(format!("invalid field selector term {term:?}"));
            }
            terms.push((path, eq, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, eq, want)| {
            let mut cur = Some(obj);
            for seg in path {
                cur = cur.and_then(|c| c.get(seg));
            }
            let got = match cur {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (got == *want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}})
    }

    #[test]
    fn label_selector_forms() {
        let o = obj(json!({"app": "web", "tier": "front"}));
        let yes = [
            "app=web",
            "app==web",
            "app!=db",
            "app",
            "!missing",
            "tier in (front, back)",
            "tier notin (back)",
            "app=web,tier in (front),!gone",
            "missing!=x",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s).expect(s).matches(&o), "{s}");
        }
        let no = [
            "app=db",
            "app!=web",
            "missing",
            "!app",
            "tier in (back)",
            "tier notin (front,x)",
            "missing in (x)",
        ];
        for s in no {
            assert!(!LabelSelector::parse(s).expect(s).matches(&o), "{s}");
        }
        assert!(LabelSelector::parse("a in b)").is_err());
        assert!(LabelSelector::parse("a foo (b)").is_err());
    }

    #[test]
    fn field_selector_forms() {
        let o = obj(json!({}));
        assert!(
            FieldSelector::parse("metadata.name=a")
                .expect("parse")
                .matches(&o)
        );
        assert!(
            FieldSelector::parse("metadata.namespace==ns,metadata.name!=b")
                .expect("parse")
                .matches(&o)
        );
        assert!(
            !FieldSelector::parse("metadata.namespace=other")
                .expect("parse")
                .matches(&o)
        );
        assert!(
            FieldSelector::parse("status.phase=")
                .expect("parse")
                .matches(&o)
        );
        assert!(FieldSelector::parse("bogus").is_err());
    }
}
