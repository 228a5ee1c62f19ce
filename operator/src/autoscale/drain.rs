//! Drain-aware runtime scale-down (DESIGN.md §4 "Drain"): the pure planner.
//!
//! Removing a runtime pod that holds calls would drop them. So when the
//! decision lowers the runtime from N to M replicas, the operator first
//! drains pods: it picks the ones with the fewest active calls (each pod's
//! `GET /api/load`), marks them with [`DRAINING_SINCE_ANNOTATION`] and a
//! [`DELETION_COST_ANNOTATION`] below every other pod's, tells them
//! `POST /admin/drain` (no new sessions, not ready), and lowers
//! `spec.replicas` only once each of them reports zero calls or its
//! `drainTimeoutSeconds` has passed. The ReplicaSet controller then removes
//! the lowest-cost pods, which are exactly the drained ones (among pods of
//! equal readiness it deletes the lowest cost first; drained pods are not
//! ready, so they rank first anyway). If the decision stops wanting the
//! scale-down before replicas drop, the drain is cancelled
//! (`DELETE /admin/drain`, marks removed).
//!
//! [`plan`] is a pure function of the pods (with their marks), their load
//! reports, the Deployment's replicas, the decision and the time; the live
//! loop ([`super::live`]) only gathers those and carries out the
//! [`Action`]s. Every piece of drain state lives on the pods (annotations)
//! and in the runtimes (their `draining` flag), never only in the leader's
//! memory, so a new leader picks a drain up where the old one left it.

use std::collections::{BTreeMap, BTreeSet};

use voice_agent_proto::LoadReport;

/// The ReplicaSet controller deletes pods with the lowest cost first.
pub const DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";
/// When the operator started draining a pod (RFC 3339). Its presence is the
/// drain mark; the drain deadline counts from it.
pub const DRAINING_SINCE_ANNOTATION: &str = "voiceagent.io/draining-since";
/// Drained pods' costs sit this far below the lowest cost of any other pod.
pub const COST_OFFSET: i64 = 1000;

/// A runtime pod as the planner needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    /// The pod's name.
    pub name: String,
    /// Base URL of its runtime API (`http://{podIP}:{port}`); `None` while it
    /// has no IP (not scheduled or not started: it holds no call).
    pub url: Option<String>,
    /// Being deleted (`deletionTimestamp`) or finished (`Succeeded`,
    /// `Failed`): the ReplicaSet no longer counts it.
    pub gone: bool,
    /// The drain mark, when the pod carries one.
    pub drain: Option<DrainMark>,
    /// `controller.kubernetes.io/pod-deletion-cost` (absent or unreadable
    /// counts as 0, as the ReplicaSet controller reads it).
    pub deletion_cost: Option<i64>,
}

/// A pod's drain mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainMark {
    /// When the drain started, Unix epoch milliseconds; `None` when the
    /// annotation cannot be read (the planner rewrites it).
    pub since_ms: Option<i64>,
}

/// What a pod's `GET /api/load` answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodLoad {
    /// The load report.
    Report(LoadReport),
    /// The pod did not answer usefully (the error, for the status).
    Unreachable(String),
}

/// Everything [`plan`] decides from.
#[derive(Clone, Copy, Debug)]
pub struct DrainInput<'a> {
    /// The runtime's pods.
    pub pods: &'a [PodView],
    /// Load reports by pod name; pods that were not asked are absent.
    pub loads: &'a BTreeMap<String, PodLoad>,
    /// `spec.replicas` of the runtime Deployment.
    pub replicas: i32,
    /// The replicas the decision wants.
    pub desired: i32,
    /// `components.runtime.drainTimeoutSeconds`, in milliseconds.
    pub timeout_ms: i64,
    /// Now, Unix epoch milliseconds.
    pub now_ms: i64,
}

/// One thing the live loop does to a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Mark the pod (cost and since), then `POST /admin/drain` to it (when
    /// it has a URL). The mark comes first: if the POST fails, the next tick
    /// sees a marked pod that does not report draining and posts again.
    Start {
        /// The pod.
        pod: String,
        /// Its runtime API.
        url: Option<String>,
        /// Its new deletion cost.
        cost: i64,
        /// The drain's start.
        since_ms: i64,
    },
    /// Rewrite the marks of a draining pod whose cost is no longer below
    /// every other pod's, or whose since cannot be read.
    Remark {
        /// The pod.
        pod: String,
        /// Its new deletion cost.
        cost: i64,
        /// The drain's start (kept, or now when unreadable).
        since_ms: i64,
    },
    /// `POST /admin/drain` again: the pod is marked, but its runtime says it
    /// is not draining (a POST failed, or the runtime restarted).
    Reassert {
        /// The pod.
        pod: String,
        /// Its runtime API.
        url: String,
    },
    /// `DELETE /admin/drain`, then remove the marks (kept when the DELETE
    /// fails, so the next tick retries).
    Cancel {
        /// The pod.
        pod: String,
        /// Its runtime API; `None` for a pod without an IP (marks only).
        url: Option<String>,
        /// Whether the pod carries marks to remove (false for a runtime that
        /// drains without a mark, which only the operator could have asked).
        marked: bool,
    },
}

/// A pod of the drain, for status and Events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainingPod {
    /// The pod.
    pub name: String,
    /// Its calls, when known.
    pub calls: Option<u32>,
    /// When its drain started.
    pub since_ms: i64,
}

/// Where the runtime's scale-down stands after a tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DrainState {
    /// No scale-down is wanted and no pod is draining.
    Idle,
    /// Pods drain; replicas stay until they are empty or past the deadline.
    Draining {
        /// The replicas the scale-down goes to.
        target: i32,
        /// The draining pods.
        pods: Vec<DrainingPod>,
        /// The earliest start.
        since_ms: i64,
        /// The latest deadline.
        deadline_ms: i64,
        /// Why the drain cannot complete yet besides calls in progress
        /// (e.g. pods whose load is unknown).
        blocked: Option<String>,
    },
    /// The drained pods are empty or past the deadline: replicas drop now.
    Drained {
        /// The new replicas.
        target: i32,
        /// The drained pods.
        pods: Vec<DrainingPod>,
        /// Those that still held calls at the deadline (or did not say).
        cut: Vec<DrainingPod>,
    },
    /// More pods run than `spec.replicas` (the ReplicaSet is removing the
    /// drained pods, or a rollout surges): no new drain starts meanwhile.
    Settling {
        /// Pods that are not being deleted.
        live: usize,
        /// `spec.replicas`.
        replicas: i32,
    },
    /// The scale-down is no longer wanted: the drain of these pods is
    /// cancelled.
    Cancelled {
        /// The pods taken out of the drain.
        pods: Vec<String>,
    },
}

/// What [`plan`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainPlan {
    /// Pod actions, in order: cancels first, then marks and drains.
    pub actions: Vec<Action>,
    /// Set `spec.replicas` to this now.
    pub scale_to: Option<i32>,
    /// Where the scale-down stands.
    pub state: DrainState,
}

impl DrainPlan {
    fn idle(actions: Vec<Action>) -> Self {
        Self {
            actions,
            scale_to: None,
            state: DrainState::Idle,
        }
    }
}

/// The pod's calls: zero without an IP, else what its load report says.
fn calls(pod: &PodView, loads: &BTreeMap<String, PodLoad>) -> Option<u32> {
    if pod.url.is_none() {
        return Some(0);
    }
    match loads.get(&pod.name) {
        Some(PodLoad::Report(r)) => Some(r.active_sessions),
        _ => None,
    }
}

fn reports_draining(pod: &PodView, loads: &BTreeMap<String, PodLoad>) -> Option<bool> {
    match loads.get(&pod.name) {
        Some(PodLoad::Report(r)) => Some(r.draining),
        _ => None,
    }
}

/// Cancels the drain of `pods` (marked ones) and of runtimes that drain
/// without a mark.
fn cancel_all(live: &[&PodView], loads: &BTreeMap<String, PodLoad>) -> Vec<Action> {
    live.iter()
        .filter(|p| p.drain.is_some() || reports_draining(p, loads) == Some(true))
        .map(|p| Action::Cancel {
            pod: p.name.clone(),
            url: p.url.clone(),
            marked: p.drain.is_some(),
        })
        .collect()
}

fn cancelled(actions: Vec<Action>) -> DrainPlan {
    let pods: Vec<String> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Cancel {
                pod, marked: true, ..
            } => Some(pod.clone()),
            _ => None,
        })
        .collect();
    if pods.is_empty() {
        return DrainPlan::idle(actions);
    }
    DrainPlan {
        actions,
        scale_to: None,
        state: DrainState::Cancelled { pods },
    }
}

/// Plans one tick of the runtime's scale-down.
pub fn plan(input: &DrainInput<'_>) -> DrainPlan {
    let loads = input.loads;
    let live: Vec<&PodView> = input.pods.iter().filter(|p| !p.gone).collect();
    let live_count = i32::try_from(live.len()).unwrap_or(i32::MAX);

    // Load rose above the current replicas: the live loop scales up, and
    // every drained pod is capacity again.
    if input.desired > input.replicas {
        return cancelled(cancel_all(&live, loads));
    }
    // The ReplicaSet is still removing pods (the drained ones, after the
    // last scale-down) or a rollout surges: keep every mark, start nothing.
    if live_count > input.replicas {
        return DrainPlan {
            actions: Vec::new(),
            scale_to: None,
            state: DrainState::Settling {
                live: live.len(),
                replicas: input.replicas,
            },
        };
    }
    // No scale-down wanted (any more): undrain.
    if input.desired == input.replicas {
        return cancelled(cancel_all(&live, loads));
    }

    // A scale-down to `desired`: the ReplicaSet will delete
    // `live - desired` pods, so that many must be drained first.
    let needed = usize::try_from((live_count - input.desired).max(0)).unwrap_or(0);
    if needed == 0 {
        // Fewer pods run than the target: nothing to remove, nothing to drain.
        let mut plan = cancelled(cancel_all(&live, loads));
        plan.scale_to = Some(input.desired);
        if matches!(plan.state, DrainState::Cancelled { .. }) {
            plan.state = DrainState::Idle;
        }
        return plan;
    }

    let mut actions = Vec::new();
    // Fewest calls first; on a tie a pod without an IP (nothing to ask, the
    // ReplicaSet removes it first anyway); unknown load last: a pod that
    // does not answer may hold calls.
    let rank = |p: &PodView| {
        (
            calls(p, loads).map_or(u64::MAX, u64::from),
            p.url.is_some(),
            p.name.clone(),
        )
    };

    let mut marked: Vec<&PodView> = live.iter().copied().filter(|p| p.drain.is_some()).collect();
    marked.sort_by_key(|p| rank(p));
    // Too many drained (the decision rose part of the way): release the
    // busiest ones.
    while marked.len() > needed {
        if let Some(p) = marked.pop() {
            actions.push(Action::Cancel {
                pod: p.name.clone(),
                url: p.url.clone(),
                marked: true,
            });
        }
    }
    let mut chosen: Vec<&PodView> = marked.clone();
    let mut started: BTreeSet<String> = BTreeSet::new();
    let mut unknown = Vec::new();
    if chosen.len() < needed {
        let mut candidates: Vec<&PodView> = live
            .iter()
            .copied()
            .filter(|p| p.drain.is_none())
            .filter(|p| {
                let known = calls(p, loads).is_some();
                if !known {
                    unknown.push(p.name.clone());
                }
                known
            })
            .collect();
        candidates.sort_by_key(|p| rank(p));
        for p in candidates.into_iter().take(needed - chosen.len()) {
            started.insert(p.name.clone());
            chosen.push(p);
        }
    }
    let chosen_names: BTreeSet<&str> = chosen.iter().map(|p| p.name.as_str()).collect();

    // Runtimes that drain without a mark and were not chosen: only the
    // operator drains runtimes, so this is a drain it lost track of.
    for p in &live {
        if p.drain.is_none()
            && !chosen_names.contains(p.name.as_str())
            && reports_draining(p, loads) == Some(true)
        {
            actions.push(Action::Cancel {
                pod: p.name.clone(),
                url: p.url.clone(),
                marked: false,
            });
        }
    }

    // Costs: every drained pod below every other live pod (absent = 0).
    // Marked pods outside the drain are being cancelled and lose their cost.
    let floor = live
        .iter()
        .filter(|p| p.drain.is_none() && !chosen_names.contains(p.name.as_str()))
        .map(|p| p.deletion_cost.unwrap_or(0))
        .min()
        .unwrap_or(0)
        .min(0);
    let mut members = Vec::new();
    for (i, p) in chosen.iter().enumerate() {
        let cost = (floor - COST_OFFSET - i as i64).max(i64::from(i32::MIN));
        let since_ms = p.drain.and_then(|d| d.since_ms).unwrap_or(input.now_ms);
        if started.contains(&p.name) {
            actions.push(Action::Start {
                pod: p.name.clone(),
                url: p.url.clone(),
                cost,
                since_ms,
            });
        } else {
            let cost_ok = p.deletion_cost.is_some_and(|c| c < floor);
            let since_ok = p.drain.and_then(|d| d.since_ms).is_some();
            if !cost_ok || !since_ok {
                actions.push(Action::Remark {
                    pod: p.name.clone(),
                    cost,
                    since_ms,
                });
            }
            if let Some(url) = &p.url
                && reports_draining(p, loads) == Some(false)
            {
                actions.push(Action::Reassert {
                    pod: p.name.clone(),
                    url: url.clone(),
                });
            }
        }
        members.push(DrainingPod {
            name: p.name.clone(),
            calls: calls(p, loads),
            since_ms,
        });
    }
    members.sort_by(|a, b| a.name.cmp(&b.name));

    let blocked = (chosen.len() < needed).then(|| {
        format!(
            "{} more pod(s) must drain, but the load of {} is unknown",
            needed - chosen.len(),
            unknown.join(", ")
        )
    });
    // A pod is done when it is empty, or when its deadline has passed.
    // Pods that started draining in this tick wait one tick: a session
    // admitted between their load report and the drain would be missed.
    let done = |m: &DrainingPod| {
        !started.contains(&m.name)
            && (m.calls == Some(0) || input.now_ms >= m.since_ms.saturating_add(input.timeout_ms))
    };
    if blocked.is_none() && members.iter().all(done) {
        let cut = members
            .iter()
            .filter(|m| m.calls != Some(0))
            .cloned()
            .collect();
        return DrainPlan {
            actions,
            scale_to: Some(input.desired),
            state: DrainState::Drained {
                target: input.desired,
                pods: members,
                cut,
            },
        };
    }
    let since_ms = members
        .iter()
        .map(|m| m.since_ms)
        .min()
        .unwrap_or(input.now_ms);
    let deadline_ms = members
        .iter()
        .map(|m| m.since_ms.saturating_add(input.timeout_ms))
        .max()
        .unwrap_or(input.now_ms);
    DrainPlan {
        actions,
        scale_to: None,
        state: DrainState::Draining {
            target: input.desired,
            pods: members,
            since_ms,
            deadline_ms,
            blocked,
        },
    }
}

#[cfg(test)]
mod tests;
