//! Resource types: what the fake serves and how it names it.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// One kind served at one group/version: the unit the fake routes, stores and
/// discovers.
///
/// Objects are stored per group and plural, so a kind registered at several
/// versions (a CRD serving `v1alpha1` and `v1beta1`) shares one store; reads
/// rewrite `apiVersion` to the version asked for (no conversion).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; `""` for the core group (`/api/v1`).
    pub group: String,
    /// API version, such as `v1`.
    pub version: String,
    /// Plural resource name used in URLs, such as `deployments`.
    pub plural: String,
    /// Singular name, such as `deployment`.
    pub singular: String,
    /// Kind, such as `Deployment`.
    pub kind: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Whether the kind has a `/status` subresource: writes to the main
    /// resource then ignore `status` and writes to `/status` change only it.
    pub status_subresource: bool,
    /// Short names advertised by discovery (`deploy`).
    pub short_names: Vec<String>,
    /// Categories advertised by discovery (`all`).
    pub categories: Vec<String>,
}

impl ResourceType {
    /// A kind without a status subresource; `singular` is the lowercased kind.
    pub fn new(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        ResourceType {
            group: group.to_string(),
            version: version.to_string(),
            plural: plural.to_string(),
            singular: kind.to_lowercase(),
            kind: kind.to_string(),
            namespaced,
            status_subresource: false,
            short_names: Vec::new(),
            categories: Vec::new(),
        }
    }

    /// The same kind with a `/status` subresource.
    #[must_use]
    pub fn with_status(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    /// The same kind with these short names.
    #[must_use]
    pub fn with_short_names(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|s| (*s).to_string()).collect();
        self
    }

    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps`, or `configmaps` for the core group: how error
    /// messages name the resource.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The kinds a CRD defines: one per served version.
    pub fn from_crd(crd: &CustomResourceDefinition) -> Vec<ResourceType> {
        let spec = &crd.spec;
        let names = &spec.names;
        spec.versions
            .iter()
            .filter(|v| v.served)
            .map(|v| ResourceType {
                group: spec.group.clone(),
                version: v.name.clone(),
                plural: names.plural.clone(),
                singular: names
                    .singular
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| names.kind.to_lowercase()),
                kind: names.kind.clone(),
                namespaced: spec.scope == "Namespaced",
                status_subresource: v.subresources.as_ref().is_some_and(|s| s.status.is_some()),
                short_names: names.short_names.clone().unwrap_or_default(),
                categories: names.categories.clone().unwrap_or_default(),
            })
            .collect()
    }

    /// Whether `key` names this kind: its plural, kind, singular or a short
    /// name (case-insensitive for kind and singular).
    pub(crate) fn answers_to(&self, key: &str) -> bool {
        self.plural == key
            || self.kind.eq_ignore_ascii_case(key)
            || self.singular == key
            || self.short_names.iter().any(|s| s == key)
    }
}

/// The built-in kinds every [`FakeApi`](crate::FakeApi) serves from the start.
///
/// Core `v1`: ConfigMap, Secret, Service (status), ServiceAccount, Pod
/// (status), Event, Namespace (status, cluster-scoped); `apps/v1` Deployment
/// (status); `policy/v1` PodDisruptionBudget (status); `networking.k8s.io/v1`
/// NetworkPolicy; `autoscaling/v2` HorizontalPodAutoscaler (status);
/// `coordination.k8s.io/v1` Lease; `events.k8s.io/v1` Event;
/// `rbac.authorization.k8s.io/v1` Role and RoleBinding.
pub fn builtin_resources() -> Vec<ResourceType> {
    vec![
        ResourceType::new("", "v1", "configmaps", "ConfigMap", true).with_short_names(&["cm"]),
        ResourceType::new("", "v1", "secrets", "Secret", true),
        ResourceType::new("", "v1", "services", "Service", true)
            .with_status()
            .with_short_names(&["svc"]),
        ResourceType::new("", "v1", "serviceaccounts", "ServiceAccount", true)
            .with_short_names(&["sa"]),
        ResourceType::new("", "v1", "pods", "Pod", true)
            .with_status()
            .with_short_names(&["po"]),
        ResourceType::new("", "v1", "events", "Event", true).with_short_names(&["ev"]),
        ResourceType::new("", "v1", "namespaces", "Namespace", false)
            .with_status()
            .with_short_names(&["ns"]),
        ResourceType::new("apps", "v1", "deployments", "Deployment", true)
            .with_status()
            .with_short_names(&["deploy"]),
        ResourceType::new(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
        )
        .with_status()
        .with_short_names(&["pdb"]),
        ResourceType::new(
            "networking.k8s.io",
            "v1",
            "networkpolicies",
            "NetworkPolicy",
            true,
        )
        .with_short_names(&["netpol"]),
        ResourceType::new(
            "autoscaling",
            "v2",
            "horizontalpodautoscalers",
            "HorizontalPodAutoscaler",
            true,
        )
        .with_status()
        .with_short_names(&["hpa"]),
        ResourceType::new("coordination.k8s.io", "v1", "leases", "Lease", true),
        ResourceType::new("events.k8s.io", "v1", "events", "Event", true).with_short_names(&["ev"]),
        ResourceType::new("rbac.authorization.k8s.io", "v1", "roles", "Role", true),
        ResourceType::new(
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            "RoleBinding",
            true,
        ),
    ]
}
