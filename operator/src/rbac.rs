//! The Kubernetes permissions the operator uses, as data: the Helm chart's
//! ClusterRole/Role must grant exactly these (a test compares them), and
//! `docs/operations.md` lists them. Keep this in step with the code: every
//! API call the operator makes is covered by one rule here, nothing more.

/// One RBAC rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Resources (with `/subresource` where needed).
    pub resources: &'static [&'static str],
    /// Verbs.
    pub verbs: &'static [&'static str],
    /// Why the operator needs it.
    pub why: &'static str,
}

const OWN: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];

/// Rules in the watched namespaces (a ClusterRole when all are watched).
pub const WATCHED: &[Rule] = &[
    Rule {
        group: "voiceagent.io",
        resources: &["voiceagents"],
        verbs: &["get", "list", "watch"],
        why: "the VoiceAgent controller's main resource",
    },
    Rule {
        group: "voiceagent.io",
        resources: &["voiceagents/status"],
        verbs: &["get", "patch"],
        why: "status: phase, conditions, replicas, bound numbers",
    },
    Rule {
        group: "voiceagent.io",
        resources: &["phonenumbers"],
        verbs: &["get", "list", "watch", "patch"],
        why: "numbers bound to a VoiceAgent; the PhoneNumber controller's main resource \
              (patch: its finalizer)",
    },
    Rule {
        group: "voiceagent.io",
        resources: &["phonenumbers/status"],
        verbs: &["patch"],
        why: "status: Ready, Provisioned, Conflict, vendor ids, previous webhooks",
    },
    Rule {
        group: "voiceagent.io",
        resources: &["calls"],
        verbs: &["list", "watch", "create", "delete"],
        why: "Call retention: mirror Calls, delete ended ones past the VoiceAgent's callRetention \
              (create: held only to grant it to the pods' Role; RBAC lets nobody grant more \
              than they hold)",
    },
    Rule {
        group: "voiceagent.io",
        resources: &["calls/status"],
        verbs: &["patch"],
        why: "held only to grant it to the pods' Role (the operator never writes a Call's status)",
    },
    Rule {
        group: "rbac.authorization.k8s.io",
        resources: &["roles", "rolebindings"],
        verbs: OWN,
        why: "each VoiceAgent's Role and RoleBinding letting its pods write Calls",
    },
    Rule {
        group: "",
        resources: &["secrets"],
        verbs: &["get", "list", "watch"],
        why: "check that referenced Secrets and keys exist (watched by metadata only)",
    },
    Rule {
        group: "",
        resources: &["configmaps", "services", "serviceaccounts"],
        verbs: OWN,
        why: "owned objects of each VoiceAgent",
    },
    Rule {
        group: "apps",
        resources: &["deployments"],
        verbs: OWN,
        why: "the four component Deployments",
    },
    Rule {
        group: "policy",
        resources: &["poddisruptionbudgets"],
        verbs: OWN,
        why: "one PodDisruptionBudget per component",
    },
    Rule {
        group: "networking.k8s.io",
        resources: &["networkpolicies"],
        verbs: OWN,
        why: "default-deny and call-path NetworkPolicies",
    },
    Rule {
        group: "autoscaling",
        resources: &["horizontalpodautoscalers"],
        verbs: OWN,
        why: "gateway, agent and tts HPAs with `autoscaling.engine: hpa`",
    },
    Rule {
        group: "",
        resources: &["pods"],
        verbs: &["list", "patch"],
        why: "drain-aware runtime scale-down: find the runtime pods, mark drained ones \
              (pod-deletion-cost, draining-since annotations)",
    },
    Rule {
        group: "events.k8s.io",
        resources: &["events"],
        verbs: &["create", "patch"],
        why: "Events on VoiceAgents",
    },
];

/// The Role of each VoiceAgent's pods (rendered by the operator, bound to
/// the agent's ServiceAccount, whose token only the gateway and the runtime
/// mount): the gateway creates a Call and writes its `Ringing` status, the
/// runtime writes `Active`, a summary and `Ended`. Nothing else: no reads,
/// no deletes, no spec changes.
pub const WORKLOAD: &[Rule] = &[
    Rule {
        group: "voiceagent.io",
        resources: &["calls"],
        verbs: &["create"],
        why: "the gateway creates a Call when the phone rings",
    },
    Rule {
        group: "voiceagent.io",
        resources: &["calls/status"],
        verbs: &["patch"],
        why: "the gateway's Ringing patch, the runtime's Active, summary and Ended patches",
    },
];

/// Rules in the operator's own namespace.
pub const OPERATOR_NAMESPACE: &[Rule] = &[Rule {
    group: "coordination.k8s.io",
    resources: &["leases"],
    verbs: &["get", "create", "update"],
    why: "leader election",
}];

/// Cluster-scoped rules.
pub const CLUSTER: &[Rule] = &[Rule {
    group: "apiextensions.k8s.io",
    resources: &["customresourcedefinitions"],
    verbs: &["get"],
    why: "startup check that the CRDs are installed",
}];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_wildcards_and_no_secret_writes() {
        for r in WATCHED.iter().chain(OPERATOR_NAMESPACE).chain(CLUSTER) {
            assert!(!r.verbs.contains(&"*") && !r.resources.contains(&"*") && r.group != "*");
            if r.resources.contains(&"secrets") {
                assert_eq!(
                    r.verbs,
                    ["get", "list", "watch"],
                    "the operator never writes Secrets"
                );
            }
        }
    }

    #[test]
    fn the_operator_holds_every_permission_it_grants_the_pods() {
        // RBAC refuses to create a Role granting more than its creator holds.
        for w in WORKLOAD {
            for res in w.resources {
                let held = WATCHED
                    .iter()
                    .filter(|r| r.group == w.group && r.resources.contains(res))
                    .flat_map(|r| r.verbs.iter())
                    .collect::<Vec<_>>();
                for verb in w.verbs {
                    assert!(held.contains(&verb), "{res}: {verb} is not held");
                }
            }
        }
    }

    #[test]
    fn the_pods_may_only_write_calls() {
        for r in WORKLOAD {
            assert_eq!(r.group, "voiceagent.io");
            assert!(
                r.resources
                    .iter()
                    .all(|x| *x == "calls" || *x == "calls/status")
            );
            assert!(
                r.verbs.iter().all(|v| ["create", "patch"].contains(v)),
                "{:?}",
                r.verbs
            );
        }
    }

    #[test]
    fn every_owned_kind_is_covered() {
        let owned = [
            ("", "serviceaccounts"),
            ("", "configmaps"),
            ("", "services"),
            ("policy", "poddisruptionbudgets"),
            ("networking.k8s.io", "networkpolicies"),
            ("apps", "deployments"),
            ("autoscaling", "horizontalpodautoscalers"),
            ("rbac.authorization.k8s.io", "roles"),
            ("rbac.authorization.k8s.io", "rolebindings"),
        ];
        for ar in crate::controller::voiceagent::owned_kinds() {
            assert!(
                owned.contains(&(ar.group.as_str(), ar.plural.as_str())),
                "{}",
                ar.plural
            );
        }
        for (group, plural) in owned {
            let rule = WATCHED
                .iter()
                .find(|r| r.group == group && r.resources.contains(&plural))
                .unwrap_or_else(|| panic!("no rule for {plural}"));
            assert_eq!(rule.verbs, OWN);
        }
    }
}
