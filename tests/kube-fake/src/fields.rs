//! Field paths and ownership for server-side apply and `managedFields`.
//!
//! An object is flattened into leaves: maps are granular (every key is its own
//! path), lists are atomic (one leaf holds the whole list) except lists whose
//! items are all maps with a string `name` (containers, env, ports, volumes,
//! volumeMounts) or, failing that, a string `type` (conditions): those are
//! merged item by item, keyed by that field.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Seg {
    /// A map key.
    Field(String),
    /// The item of an associative list whose key field has this value.
    Key(String, String),
}

/// A path from the object root to a leaf.
pub(crate) type FieldPath = Vec<Seg>;

/// Which part of an object a write may touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Everything tracked.
    All,
    /// Everything but `status`.
    Main,
    /// Only `status`.
    Status,
}

const TRACKED_METADATA: [&str; 4] = ["labels", "annotations", "ownerReferences", "finalizers"];

fn list_key(items: &[Value]) -> Option<&'static str> {
    if items.is_empty() {
        return None;
    }
    ["name", "type"].into_iter().find(|k| {
        items
            .iter()
            .all(|i| i.get(*k).is_some_and(Value::is_string))
    })
}

fn walk(path: &mut FieldPath, v: &Value, out: &mut BTreeMap<FieldPath, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(Seg::Field(k.clone()));
                walk(path, child, out);
                path.pop();
            }
        }
        Value::Array(items) => match list_key(items) {
            Some(key) => {
                for item in items {
                    let kv = item.get(key).and_then(Value::as_str).unwrap_or_default();
                    path.push(Seg::Key(key.to_string(), kv.to_string()));
                    walk(path, item, out);
                    path.pop();
                }
            }
            None => {
                out.insert(path.clone(), v.clone());
            }
        },
        _ => {
            out.insert(path.clone(), v.clone());
        }
    }
}

/// The tracked leaves of an object within `scope`: everything except
/// `apiVersion`, `kind` and system metadata; of `metadata`, only labels,
/// annotations, ownerReferences and finalizers.
pub(crate) fn leaves(obj: &Value, scope: Scope) -> BTreeMap<FieldPath, Value> {
    let mut out = BTreeMap::new();
    let Value::Object(m) = obj else { return out };
    let mut path = Vec::new();
    for (k, v) in m {
        let wanted = match k.as_str() {
            "apiVersion" | "kind" => false,
            "metadata" => scope != Scope::Status,
            "status" => scope != Scope::Main,
            _ => scope != Scope::Status,
        };
        if !wanted {
            continue;
        }
        path.push(Seg::Field(k.clone()));
        if k == "metadata" {
            for mk in TRACKED_METADATA {
                if let Some(mv) = v.get(mk) {
                    path.push(Seg::Field(mk.to_string()));
                    walk(&mut path, mv, &mut out);
                    path.pop();
                }
            }
        } else {
            walk(&mut path, v, &mut out);
        }
        path.pop();
    }
    out
}

/// Whether one path contains the other.
pub(crate) fn overlaps(a: &[Seg], b: &[Seg]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// The value at a path, if present.
pub(crate) fn value_at<'a>(obj: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in path {
        cur = match seg {
            Seg::Field(f) => cur.get(f)?,
            Seg::Key(k, v) => cur
                .as_array()?
                .iter()
                .find(|i| i.get(k).and_then(Value::as_str) == Some(v))?,
        };
    }
    Some(cur)
}

/// Sets the value at a path, creating maps and list items on the way.
pub(crate) fn set_at(obj: &mut Value, path: &[Seg], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        *obj = value;
        return;
    };
    let child = match first {
        Seg::Field(f) => {
            if !obj.is_object() {
                *obj = Value::Object(Map::new());
            }
            let Value::Object(m) = obj else { return };
            m.entry(f.clone()).or_insert(Value::Null)
        }
        Seg::Key(k, v) => {
            if !obj.is_array() {
                *obj = Value::Array(Vec::new());
            }
            let Value::Array(items) = obj else { return };
            let pos = items
                .iter()
                .position(|i| i.get(k).and_then(Value::as_str) == Some(v));
            let pos = pos.unwrap_or_else(|| {
                items.push(json!({ k.as_str(): v }));
                items.len() - 1
            });
            &mut items[pos]
        }
    };
    set_at(child, rest, value);
}

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn only_key(item: &Value, key: &str) -> bool {
    item.as_object().is_some_and(|m| m.keys().all(|k| k == key))
}

/// Removes the value at a path, then prunes maps left empty and list items
/// left holding only their key.
pub(crate) fn remove_at(obj: &mut Value, path: &[Seg]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    match (first, obj) {
        (Seg::Field(f), Value::Object(m)) => {
            if rest.is_empty() {
                m.remove(f);
            } else if let Some(child) = m.get_mut(f) {
                remove_at(child, rest);
                if is_empty_container(child) {
                    m.remove(f);
                }
            }
        }
        (Seg::Key(k, v), Value::Array(items)) => {
            let Some(pos) = items
                .iter()
                .position(|i| i.get(k).and_then(Value::as_str) == Some(v))
            else {
                return;
            };
            if rest.is_empty() {
                items.remove(pos);
            } else {
                remove_at(&mut items[pos], rest);
                if only_key(&items[pos], k) || is_empty_container(&items[pos]) {
                    items.remove(pos);
                }
            }
        }
        _ => {}
    }
}

/// If `path` ends at the key field of an associative-list item, the path of
/// the item itself: an item goes away as a whole, never by losing its key.
pub(crate) fn item_of_key(path: &[Seg]) -> Option<&[Seg]> {
    match path {
        [.., Seg::Key(k, _), Seg::Field(f)] if k == f => Some(&path[..path.len() - 1]),
        _ => None,
    }
}

/// Renders a field set in the `FieldsV1` format of `managedFields`.
pub(crate) fn render_fields(fields: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut node = &mut root;
        for seg in path {
            let (key, is_item) = match seg {
                Seg::Field(f) => (format!("f:{f}"), false),
                Seg::Key(k, v) => (format!("k:{}", json!({ k.as_str(): v })), true),
            };
            let entry = node.entry(key).or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            let Value::Object(next) = entry else { break };
            if is_item {
                next.entry(".").or_insert_with(|| Value::Object(Map::new()));
            }
            node = next;
        }
    }
    Value::Object(root)
}

/// Renders a path for messages: `.spec.template.spec.containers[name="app"].image`.
pub(crate) fn display(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            Seg::Key(k, v) => s.push_str(&format!("[{k}=\"{v}\"]")),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> Seg {
        Seg::Field(s.to_string())
    }

    #[test]
    fn leaves_flatten_maps_and_keyed_lists() {
        let obj = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "x", "uid": "u", "labels": {"app": "x"}},
            "spec": {
                "replicas": 2,
                "args": ["a", "b"],
                "containers": [{"name": "app", "image": "i", "env": [{"name": "A", "value": "1"}]}]
            },
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        });
        let main = leaves(&obj, Scope::Main);
        let keys: Vec<String> = main.keys().map(|p| display(p)).collect();
        assert_eq!(
            keys,
            vec![
                ".metadata.labels.app",
                ".spec.args",
                ".spec.containers[name=\"app\"].env[name=\"A\"].name",
                ".spec.containers[name=\"app\"].env[name=\"A\"].value",
                ".spec.containers[name=\"app\"].image",
                ".spec.containers[name=\"app\"].name",
                ".spec.replicas",
            ]
        );
        let status = leaves(&obj, Scope::Status);
        assert_eq!(status.len(), 2);
        assert!(status.keys().all(|p| p[0] == f("status")));
    }

    #[test]
    fn set_and_remove_prune() {
        let mut obj = json!({"spec": {"containers": [{"name": "a", "image": "x"}]}});
        let p = vec![
            f("spec"),
            f("containers"),
            Seg::Key("name".into(), "b".into()),
            f("image"),
        ];
        set_at(&mut obj, &p, json!("y"));
        assert_eq!(
            obj,
            json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}})
        );
        remove_at(&mut obj, &p);
        assert_eq!(
            obj,
            json!({"spec": {"containers": [{"name": "a", "image": "x"}]}})
        );
        set_at(&mut obj, &[f("metadata"), f("labels"), f("k")], json!("v"));
        remove_at(&mut obj, &[f("metadata"), f("labels"), f("k")]);
        assert_eq!(
            obj,
            json!({"spec": {"containers": [{"name": "a", "image": "x"}]}})
        );
    }

    #[test]
    fn renders_fields_v1() {
        let set: BTreeSet<FieldPath> = [
            vec![f("spec"), f("replicas")],
            vec![
                f("spec"),
                f("containers"),
                Seg::Key("name".into(), "a".into()),
                f("image"),
            ],
        ]
        .into_iter()
        .collect();
        assert_eq!(
            render_fields(&set),
            json!({"f:spec": {"f:replicas": {}, "f:containers": {"k:{\"name\":\"a\"}": {".": {}, "f:image": {}}}}})
        );
    }
}
