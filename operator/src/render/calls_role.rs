//! The Role of a VoiceAgent's pods: the gateway creates each Call and
//! writes its `Ringing` status, the runtime writes `Active`/`Ended`; nothing
//! else (DESIGN.md §3). Only those two components mount the ServiceAccount's
//! token. The rules are [`crate::rbac::WORKLOAD`].

use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};

use super::Naming;

/// The Role, from [`crate::rbac::WORKLOAD`].
pub(super) fn role(naming: &Naming) -> Role {
    Role {
        metadata: naming.meta(naming.calls_role(), None),
        rules: Some(
            crate::rbac::WORKLOAD
                .iter()
                .map(|r| PolicyRule {
                    api_groups: Some(vec![r.group.to_string()]),
                    resources: Some(r.resources.iter().map(|s| s.to_string()).collect()),
                    verbs: r.verbs.iter().map(|s| s.to_string()).collect(),
                    ..PolicyRule::default()
                })
                .collect(),
        ),
    }
}

/// Binds the Role to the pods' ServiceAccount.
pub(super) fn role_binding(naming: &Naming) -> RoleBinding {
    RoleBinding {
        metadata: naming.meta(naming.calls_role(), None),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: naming.calls_role(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: naming.service_account(),
            namespace: Some(naming.namespace.clone()),
            ..Subject::default()
        }]),
    }
}
