//! Helpers for the workspace-level integration tests in this directory.
//!
//! The tests themselves are the `[[test]]` targets of this crate:
//! `crds.rs` (generated CRDs: drift, structure, names, docs), `examples.rs`
//! (every manifest under `examples/` validates), `api_rules.rs` (each schema
//! and CEL rule with an accepted and a rejected object) and `invalid.rs`
//! (the refused manifests under `tests/invalid/`).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Reads a file below the repository root.
pub fn read(rel: &str) -> String {
    let path = repo_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The non-empty documents of a YAML stream, as JSON values.
pub fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("bad YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// The files with extension `ext` in a directory below the root, sorted.
pub fn files_in(rel_dir: &str, ext: &str) -> Vec<PathBuf> {
    let dir = repo_root().join(rel_dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    files
}

/// Sets `value` at a `/`-separated path in `target`, creating objects on the way.
pub fn set(target: &mut Value, path: &str, value: Value) {
    let mut cur = target;
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Default::default());
        }
        let Some(map) = cur.as_object_mut() else {
            unreachable!("just made an object")
        };
        if i == parts.len() - 1 {
            map.insert((*part).to_string(), value);
            return;
        }
        cur = map
            .entry((*part).to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
}

/// Removes the value at a `/`-separated path, if present.
pub fn remove(target: &mut Value, path: &str) {
    let (parent, last) = match path.rsplit_once('/') {
        Some((p, l)) => (p, l),
        None => ("", path),
    };
    if let Some(map) = target.pointer_mut(parent).and_then(Value::as_object_mut) {
        map.remove(last);
    }
}
