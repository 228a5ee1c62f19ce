//! JSON merge patch (RFC 7386) and JSON patch (RFC 6902).

use serde_json::{Map, Value};

/// Applies an RFC 7386 merge patch to `target` in place.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in patch {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Why a JSON patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JsonPatchError {
    /// The patch document is malformed (400).
    Malformed(String),
    /// An operation failed against the object (422).
    Failed(String),
}

fn parse_pointer(p: &str) -> Result<Vec<String>, JsonPatchError> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = p.strip_prefix('/') else {
        return Err(JsonPatchError::Malformed(format!(
            "invalid JSON pointer {p:?}"
        )));
    };
    Ok(rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn index(arr: &[Value], tok: &str, allow_end: bool) -> Result<usize, JsonPatchError> {
    if allow_end && tok == "-" {
        return Ok(arr.len());
    }
    let i: usize = tok
        .parse()
        .map_err(|_| JsonPatchError::Failed(format!("invalid array index {tok:?}")))?;
    let limit = if allow_end {
        arr.len()
    } else {
        arr.len().saturating_sub(1)
    };
    if i > limit || (!allow_end && arr.is_empty()) {
        return Err(JsonPatchError::Failed(format!(
            "array index {i} out of bounds"
        )));
    }
    Ok(i)
}

fn parent<'a>(doc: &'a mut Value, path: &[String]) -> Result<&'a mut Value, JsonPatchError> {
    let mut cur = doc;
    for tok in path {
        cur = match cur {
            Value::Object(m) => m
                .get_mut(tok)
                .ok_or_else(|| JsonPatchError::Failed(format!("path segment {tok:?} not found")))?,
            Value::Array(a) => {
                let i = index(a, tok, false)?;
                &mut a[i]
            }
            _ => {
                return Err(JsonPatchError::Failed(format!(
                    "path segment {tok:?} not found"
                )));
            }
        };
    }
    Ok(cur)
}

fn get(doc: &Value, path: &[String]) -> Result<Value, JsonPatchError> {
    let pointer: String = path
        .iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect();
    doc.pointer(&pointer)
        .cloned()
        .ok_or_else(|| JsonPatchError::Failed(format!("path {pointer:?} not found")))
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), JsonPatchError> {
    let Some((last, init)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent(doc, init)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            let i = index(a, last, true)?;
            a.insert(i, value);
        }
        _ => return Err(JsonPatchError::Failed(format!("cannot add at {last:?}"))),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, JsonPatchError> {
    let Some((last, init)) = path.split_last() else {
        return Err(JsonPatchError::Failed(
            "cannot remove the whole document".into(),
        ));
    };
    match parent(doc, init)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| JsonPatchError::Failed(format!("path segment {last:?} not found"))),
        Value::Array(a) => {
            let i = index(a, last, false)?;
            Ok(a.remove(i))
        }
        _ => Err(JsonPatchError::Failed(format!(
            "path segment {last:?} not found"
        ))),
    }
}

/// Applies an RFC 6902 JSON patch (add, remove, replace, move, copy, test)
/// atomically: on error `doc` is unchanged.
pub(crate) fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), JsonPatchError> {
    let ops = patch.as_array().ok_or_else(|| {
        JsonPatchError::Malformed("a JSON patch must be an array of operations".into())
    })?;
    let mut work = doc.clone();
    for op in ops {
        let field = |name: &str| -> Result<Vec<String>, JsonPatchError> {
            let p = op.get(name).and_then(Value::as_str).ok_or_else(|| {
                JsonPatchError::Malformed(format!("operation {op} lacks {name:?}"))
            })?;
            parse_pointer(p)
        };
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| JsonPatchError::Malformed(format!("operation {op} lacks \"value\"")))
        };
        let path = field("path")?;
        match op.get("op").and_then(Value::as_str) {
            Some("add") => add(&mut work, &path, value()?)?,
            Some("remove") => {
                remove(&mut work, &path)?;
            }
            Some("replace") => {
                remove(&mut work, &path)?;
                add(&mut work, &path, value()?)?;
            }
            Some("move") => {
                let from = field("from")?;
                let v = remove(&mut work, &from)?;
                add(&mut work, &path, v)?;
            }
            Some("copy") => {
                let v = get(&work, &field("from")?)?;
                add(&mut work, &path, v)?;
            }
            Some("test") => {
                // Like the apiserver, a missing path tests equal to null.
                let want = value()?;
                let got = match get(&work, &path) {
                    Ok(v) => v,
                    Err(_) if want.is_null() => Value::Null,
                    Err(e) => return Err(e),
                };
                if got != want {
                    return Err(JsonPatchError::Failed(format!(
                        "test operation failed: {op}"
                    )));
                }
            }
            other => {
                return Err(JsonPatchError::Malformed(format!(
                    "unsupported JSON patch op {other:?}"
                )));
            }
        }
    }
    *doc = work;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc7386_examples() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"a": [{"b": "c"}]});
        merge_patch(&mut t, &json!({"a": [1]}));
        assert_eq!(t, json!({"a": [1]}));
        let mut t = json!(["a"]);
        merge_patch(&mut t, &json!({"a": {"bb": {"ccc": null}}}));
        assert_eq!(t, json!({"a": {"bb": {}}}));
    }

    #[test]
    fn rfc6902_ops() {
        let mut d = json!({"a": {"b": [1, 2]}, "c": "x"});
        json_patch(
            &mut d,
            &json!([
                {"op": "test", "path": "/c", "value": "x"},
                {"op": "add", "path": "/a/b/-", "value": 3},
                {"op": "add", "path": "/a/b/0", "value": 0},
                {"op": "replace", "path": "/c", "value": "y"},
                {"op": "copy", "from": "/c", "path": "/d"},
                {"op": "move", "from": "/d", "path": "/e~1f"},
                {"op": "remove", "path": "/a/b/1"}
            ]),
        )
        .expect("patch applies");
        assert_eq!(d, json!({"a": {"b": [0, 2, 3]}, "c": "y", "e/f": "y"}));
        let before = d.clone();
        let err = json_patch(
            &mut d,
            &json!([{"op": "remove", "path": "/c"}, {"op": "test", "path": "/c", "value": 1}]),
        );
        assert!(matches!(err, Err(JsonPatchError::Failed(_))));
        assert_eq!(d, before);
        assert!(matches!(
            json_patch(&mut d, &json!({})),
            Err(JsonPatchError::Malformed(_))
        ));
        assert!(matches!(
            json_patch(
                &mut d,
                &json!([{"op": "replace", "path": "/nope", "value": 1}])
            ),
            Err(JsonPatchError::Failed(_))
        ));
        json_patch(
            &mut d,
            &json!([{"op": "test", "path": "/missing", "value": null}]),
        )
        .expect("a missing path tests equal to null");
    }
}
