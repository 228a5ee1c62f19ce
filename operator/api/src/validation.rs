//! Validation of objects against the generated CRDs, without an API server.
//!
//! The API server validates a custom resource in this order: it prunes
//! `null`s, applies schema defaults, checks the OpenAPI v3 schema (types,
//! required fields, enums, patterns, ranges, list-map keys) and then evaluates
//! the `x-kubernetes-validations` CEL rules. [`Validator`] does the same with
//! the schemas of [`crate::crds`] so that `voice-agent-operator validate`, the
//! dev mode and the tests refuse exactly what a cluster would refuse, with
//! messages that name the field. Unknown fields are errors, as with kubectl's
//! default strict field validation.
//!
//! [`structural_problems`] checks that a schema is structural (every node
//! typed, no references or typed junctors), which the API server requires of
//! every CRD.

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::cel;
use regex::Regex;
use serde_json::{Map, Value};

use crate::common::DNS_SUBDOMAIN;

/// One reason an object is invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the offending field (`spec.components.runtime`), empty for the
    /// whole object.
    pub field: String,
    /// What is wrong, in the API server's words where it has them.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

fn err(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        message: message.into(),
    }
}

/// The errors of one invalid object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

impl ValidationErrors {
    /// Whether any error mentions `needle` in its field or message.
    pub fn mentions(&self, needle: &str) -> bool {
        self.0
            .iter()
            .any(|e| e.field.contains(needle) || e.message.contains(needle))
    }
}

struct KindSchema {
    api_version: String,
    kind: String,
    schema: Value,
}

/// Validates objects of the three kinds like the API server would.
pub struct Validator {
    kinds: Vec<KindSchema>,
    patterns: HashMap<String, Regex>,
}

/// The DNS subdomain pattern is a constant of this crate; it compiles.
static NAME_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(DNS_SUBDOMAIN).expect("DNS_SUBDOMAIN compiles"));

impl Default for Validator {
    fn default() -> Self {
        Self::new()
    }
}

impl Validator {
    /// A validator for the CRDs of this crate.
    pub fn new() -> Self {
        Self::for_crds(&crate::crds())
    }

    /// A validator for the given CRDs (their first served version).
    pub fn for_crds(crds: &[CustomResourceDefinition]) -> Self {
        let mut kinds = Vec::new();
        let mut patterns = HashMap::new();
        for crd in crds {
            for version in &crd.spec.versions {
                let Some(schema) = version
                    .schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref())
                    .and_then(|s| serde_json::to_value(s).ok())
                else {
                    continue;
                };
                collect_patterns(&schema, &mut patterns);
                kinds.push(KindSchema {
                    api_version: format!("{}/{}", crd.spec.group, version.name),
                    kind: crd.spec.names.kind.clone(),
                    schema,
                });
            }
        }
        Self { kinds, patterns }
    }

    /// Validates a new object. On success returns the object with the schema
    /// defaults applied, as the API server would store it.
    pub fn validate(&self, obj: &Value) -> Result<Value, ValidationErrors> {
        self.validate_inner(obj, None)
    }

    /// Validates an update of `old` to `obj`, including transition rules
    /// (`self == oldSelf`).
    pub fn validate_update(&self, obj: &Value, old: &Value) -> Result<Value, ValidationErrors> {
        self.validate_inner(obj, Some(old))
    }

    fn validate_inner(&self, obj: &Value, old: Option<&Value>) -> Result<Value, ValidationErrors> {
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let Some(ks) = self
            .kinds
            .iter()
            .find(|k| k.kind == kind && k.api_version == api_version)
        else {
            let known: Vec<String> = self
                .kinds
                .iter()
                .map(|k| format!("{}/{}", k.api_version, k.kind))
                .collect();
            return Err(ValidationErrors(vec![err(
                "",
                format!(
                    "unknown apiVersion/kind {api_version:?}/{kind:?}; expected one of {}",
                    known.join(", ")
                ),
            )]));
        };

        let mut errors = Vec::new();
        self.check_metadata(obj, &mut errors);

        let pruned = prune_nulls(obj);
        let defaulted = cel::apply_defaults(&ks.schema, &pruned);
        let mut root = defaulted.clone();
        // `apiVersion`, `kind` and `metadata` are the API machinery's; the
        // schema only declares them loosely.
        if let Some(map) = root.as_object_mut() {
            map.remove("metadata");
        }
        self.check(&ks.schema, &root, "", &mut errors);

        // CEL rules assume a schema-valid object, as on the API server.
        if errors.is_empty() {
            let old_defaulted = old.map(|o| cel::apply_defaults(&ks.schema, &prune_nulls(o)));
            if let Err(cel_errors) =
                cel::Validator::new().validate(&ks.schema, &defaulted, old_defaulted.as_ref())
            {
                errors.extend(
                    cel_errors
                        .iter()
                        .map(|e| err(&e.field_path, e.message.clone())),
                );
            }
        }
        if errors.is_empty() {
            Ok(defaulted)
        } else {
            Err(ValidationErrors(errors))
        }
    }

    fn check_metadata(&self, obj: &Value, errors: &mut Vec<FieldError>) {
        let name = obj
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str);
        match name {
            None | Some("") => errors.push(err("metadata.name", "Required value: name is required")),
            Some(n) if n.len() > 253 || !NAME_RE.is_match(n) => errors.push(err(
                "metadata.name",
                format!(
                    "Invalid value: {n:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                ),
            )),
            Some(_) => {}
        }
    }

    fn check(&self, schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
        if value.is_null() {
            if schema.get("nullable").and_then(Value::as_bool) != Some(true) {
                errors.push(err(path, "Invalid value: null: must not be null"));
            }
            return;
        }
        if flag(schema, "x-kubernetes-int-or-string") {
            if !(value.is_string() || value.is_i64() || value.is_u64()) {
                errors.push(err(
                    path,
                    format!(
                        "Invalid value: {}: must be an integer or a string",
                        short(value)
                    ),
                ));
            }
            return;
        }
        let ty = schema.get("type").and_then(Value::as_str);
        match ty {
            Some("object") => self.check_object(schema, value, path, errors),
            Some("array") => self.check_array(schema, value, path, errors),
            Some("string") => self.check_string(schema, value, path, errors),
            Some("integer") => {
                if value.is_i64() || value.is_u64() {
                    check_number_range(schema, value, path, errors);
                } else {
                    errors.push(type_error(path, value, "integer"));
                }
            }
            Some("number") => {
                if value.is_number() {
                    check_number_range(schema, value, path, errors);
                } else {
                    errors.push(type_error(path, value, "number"));
                }
            }
            Some("boolean") if !value.is_boolean() => {
                errors.push(type_error(path, value, "boolean"));
            }
            _ => {}
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            let list: Vec<String> = allowed.iter().map(short).collect();
            errors.push(err(
                path,
                format!(
                    "Unsupported value: {}: supported values: {}",
                    short(value),
                    list.join(", ")
                ),
            ));
        }
    }

    fn check_object(
        &self,
        schema: &Value,
        value: &Value,
        path: &str,
        errors: &mut Vec<FieldError>,
    ) {
        let Some(map) = value.as_object() else {
            errors.push(type_error(path, value, "object"));
            return;
        };
        let props = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties").filter(|a| a.is_object());
        let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
        for (key, child) in map {
            let child_path = join(path, key);
            if let Some(child_schema) = props.and_then(|p| p.get(key)) {
                self.check(child_schema, child, &child_path, errors);
            } else if let Some(add) = additional {
                self.check(add, child, &child_path, errors);
            } else if !preserve && !(path.is_empty() && (key == "apiVersion" || key == "kind")) {
                errors.push(err(&child_path, "unknown field"));
            }
        }
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for r in required.iter().filter_map(Value::as_str) {
                if map.get(r).is_none_or(Value::is_null) {
                    errors.push(err(&join(path, r), "Required value"));
                }
            }
        }
    }

    fn check_array(&self, schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
        let Some(items) = value.as_array() else {
            errors.push(type_error(path, value, "array"));
            return;
        };
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            errors.push(err(
                path,
                format!("Too many: {}: must have at most {max} items", items.len()),
            ));
        }
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            errors.push(err(
                path,
                format!(
                    "Invalid value: {} items: must have at least {min} items",
                    items.len()
                ),
            ));
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                self.check(item_schema, item, &format!("{path}[{i}]"), errors);
            }
        }
        match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") => {
                let keys: Vec<&str> = schema
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|k| k.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut seen: Vec<Vec<&Value>> = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let key: Vec<&Value> = keys
                        .iter()
                        .map(|k| item.get(*k).unwrap_or(&Value::Null))
                        .collect();
                    if seen.contains(&key) {
                        let shown: Vec<String> = key.iter().map(|v| short(v)).collect();
                        errors.push(err(
                            &format!("{path}[{i}]"),
                            format!("Duplicate value: {}", shown.join(", ")),
                        ));
                    } else {
                        seen.push(key);
                    }
                }
            }
            Some("set") => {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        errors.push(err(
                            &format!("{path}[{i}]"),
                            format!("Duplicate value: {}", short(item)),
                        ));
                    }
                }
            }
            _ => {}
        }
    }

    fn check_string(
        &self,
        schema: &Value,
        value: &Value,
        path: &str,
        errors: &mut Vec<FieldError>,
    ) {
        let Some(s) = value.as_str() else {
            errors.push(type_error(path, value, "string"));
            return;
        };
        let len = s.chars().count() as u64;
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            errors.push(err(
                path,
                format!("Too long: may not be more than {max} bytes"),
            ));
        }
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            errors.push(err(
                path,
                format!(
                    "Invalid value: {}: should be at least {min} chars long",
                    short(value)
                ),
            ));
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            match self.patterns.get(pattern) {
                Some(re) if !re.is_match(s) => errors.push(err(
                    path,
                    format!("Invalid value: {}: should match '{pattern}'", short(value)),
                )),
                Some(_) => {}
                None => errors.push(err(
                    path,
                    format!("schema pattern does not compile: {pattern}"),
                )),
            }
        }
        if schema.get("format").and_then(Value::as_str) == Some("date-time")
            && s.parse::<jiff::Timestamp>().is_err()
        {
            errors.push(err(
                path,
                format!(
                    "Invalid value: {}: must be an RFC 3339 date-time",
                    short(value)
                ),
            ));
        }
    }
}

fn check_number_range(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(v) = value.as_f64() else { return };
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let exclusive = flag(schema, "exclusiveMinimum");
        if v < min || (exclusive && v == min) {
            let op = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            errors.push(err(
                path,
                format!(
                    "Invalid value: {}: should be {op} {}",
                    short(value),
                    fmt_num(min)
                ),
            ));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let exclusive = flag(schema, "exclusiveMaximum");
        if v > max || (exclusive && v == max) {
            let op = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            errors.push(err(
                path,
                format!(
                    "Invalid value: {}: should be {op} {}",
                    short(value),
                    fmt_num(max)
                ),
            ));
        }
    }
    if schema.get("format").and_then(Value::as_str) == Some("int32")
        && !(f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&v)
    {
        errors.push(err(
            path,
            format!("Invalid value: {}: out of range for int32", short(value)),
        ));
    }
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

fn type_error(path: &str, value: &Value, expected: &str) -> FieldError {
    let actual = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    err(
        path,
        format!(
            "Invalid value: {}: must be of type {expected}, not {actual}",
            short(value)
        ),
    )
}

/// A value as it appears in an error message, cut to a readable length.
fn short(value: &Value) -> String {
    let s = value.to_string();
    if s.chars().count() > 80 {
        let cut: String = s.chars().take(77).collect();
        format!("{cut}...")
    } else {
        s
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool) == Some(true)
}

/// Drops `null` map entries, as the API server prunes them before defaulting
/// (nullable fields excepted, which no schema of ours declares with a null
/// meaning).
fn prune_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), prune_nulls(v)))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(prune_nulls).collect()),
        other => other.clone(),
    }
}

fn collect_patterns(schema: &Value, out: &mut HashMap<String, Regex>) {
    match schema {
        Value::Object(map) => {
            if let Some(p) = map.get("pattern").and_then(Value::as_str)
                && let Ok(re) = Regex::new(p)
            {
                out.insert(p.to_string(), re);
            }
            for v in map.values() {
                collect_patterns(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_patterns(v, out)),
        _ => {}
    }
}

/// Validates a single VoiceAgent manifest (YAML) as the API server would and
/// returns it with the schema defaults applied. The operator's `validate`
/// and `render` commands and `voice-agent dev` read manifests this way.
pub fn load_voice_agent(yaml: &str) -> Result<crate::VoiceAgent, String> {
    // Building a Validator (CRD schemas, regexes, CEL programs) costs far
    // more than validating one manifest: build it once.
    static VALIDATOR: LazyLock<Validator> = LazyLock::new(Validator::new);
    let value: Value = serde_yaml_ng::from_str(yaml).map_err(|e| format!("not valid YAML: {e}"))?;
    let defaulted = VALIDATOR.validate(&value).map_err(|e| e.to_string())?;
    serde_json::from_value(defaulted).map_err(|e| format!("expected a VoiceAgent: {e}"))
}

/// Why a CRD schema is not structural, or would be refused by the API server:
/// untyped nodes, `$ref`s, typed junctors, patterns that do not compile, CEL
/// rules that do not compile, defaults that violate their own schema. Empty
/// when the schema is fine.
pub fn structural_problems(crd: &CustomResourceDefinition) -> Vec<String> {
    let mut problems = Vec::new();
    for version in &crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| serde_json::to_value(s).ok())
        else {
            problems.push(format!("version {}: no openAPIV3Schema", version.name));
            continue;
        };
        structural_walk(&schema, "", &mut problems);
        check_defaults(&schema, "", &mut problems);
    }
    problems
}

fn structural_walk(schema: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(map) = schema.as_object() else {
        problems.push(format!("{path}: schema is not an object"));
        return;
    };
    let at = if path.is_empty() { "<root>" } else { path };
    for forbidden in [
        "$ref",
        "definitions",
        "$defs",
        "$schema",
        "dependencies",
        "patternProperties",
    ] {
        if map.contains_key(forbidden) {
            problems.push(format!(
                "{at}: `{forbidden}` is not allowed in a structural schema"
            ));
        }
    }
    let typed = map.contains_key("type");
    let int_or_string = flag(schema, "x-kubernetes-int-or-string");
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    if !typed && !int_or_string && !preserve {
        problems.push(format!(
            "{at}: no type (add a type or x-kubernetes-preserve-unknown-fields)"
        ));
    }
    if map.contains_key("properties")
        && map
            .get("additionalProperties")
            .is_some_and(Value::is_object)
    {
        problems.push(format!(
            "{at}: properties and additionalProperties are mutually exclusive"
        ));
    }
    if let Some(p) = map.get("pattern").and_then(Value::as_str)
        && Regex::new(p).is_err()
    {
        problems.push(format!("{at}: pattern does not compile: {p}"));
    }
    if map.contains_key("x-kubernetes-validations") {
        // compile_schema reports the rules of the node it is given, not of
        // its children, so every node with rules is compiled on its own.
        for e in cel::compile_schema(schema).compilation_errors() {
            problems.push(format!("{at}: CEL rule does not compile: {e}"));
        }
    }
    for junctor in ["allOf", "anyOf", "oneOf", "not"] {
        let branches: Vec<&Value> = match map.get(junctor) {
            Some(Value::Array(a)) => a.iter().collect(),
            Some(v @ Value::Object(_)) => vec![v],
            _ => continue,
        };
        for b in branches {
            for k in [
                "type",
                "default",
                "nullable",
                "description",
                "additionalProperties",
            ] {
                if b.get(k).is_some() {
                    problems.push(format!("{at}: `{k}` inside `{junctor}` is not structural"));
                }
            }
        }
    }
    if let Some(props) = map.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            structural_walk(v, &join(path, k), problems);
        }
    }
    if let Some(items) = map.get("items") {
        if items.is_array() {
            problems.push(format!("{at}: items must be a single schema"));
        } else {
            structural_walk(items, &format!("{path}[]"), problems);
        }
    } else if map.get("type").and_then(Value::as_str) == Some("array") {
        problems.push(format!("{at}: array without items"));
    }
    if let Some(add) = map.get("additionalProperties").filter(|a| a.is_object()) {
        structural_walk(add, &format!("{path}{{}}"), problems);
    }
}

/// Defaults must satisfy their own schema: the API server refuses a CRD
/// whose defaults are invalid.
fn check_defaults(schema: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(map) = schema.as_object() else {
        return;
    };
    if let Some(default) = map.get("default") {
        let v = Validator {
            kinds: Vec::new(),
            patterns: {
                let mut p = HashMap::new();
                collect_patterns(schema, &mut p);
                p
            },
        };
        let defaulted = cel::apply_defaults(schema, default);
        let mut errors = Vec::new();
        v.check(schema, &defaulted, path, &mut errors);
        for e in errors {
            problems.push(format!(
                "default of {}: {e}",
                if path.is_empty() { "<root>" } else { path }
            ));
        }
    }
    if let Some(props) = map.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            check_defaults(v, &join(path, k), problems);
        }
    }
    if let Some(items) = map.get("items") {
        check_defaults(items, &format!("{path}[]"), problems);
    }
}
