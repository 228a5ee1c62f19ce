//! The drain planner, tick by tick: which pods drain, their costs, when
//! replicas drop, deadlines, cancellation and marks that need repair.

use super::*;

const T0: i64 = 1_700_000_000_000;
const TIMEOUT: i64 = 600_000;

fn pod(name: &str) -> PodView {
    PodView {
        name: name.to_string(),
        url: Some(format!("http://{name}:8080")),
        gone: false,
        drain: None,
        deletion_cost: None,
    }
}

fn marked(name: &str, since_ms: i64, cost: i64) -> PodView {
    PodView {
        drain: Some(DrainMark {
            since_ms: Some(since_ms),
        }),
        deletion_cost: Some(cost),
        ..pod(name)
    }
}

fn report(calls: u32, draining: bool) -> PodLoad {
    PodLoad::Report(LoadReport {
        active_sessions: calls,
        capacity: 20,
        draining,
    })
}

fn loads(entries: &[(&str, u32, bool)]) -> BTreeMap<String, PodLoad> {
    entries
        .iter()
        .map(|(n, c, d)| (n.to_string(), report(*c, *d)))
        .collect()
}

fn run(
    pods: &[PodView],
    l: &BTreeMap<String, PodLoad>,
    replicas: i32,
    desired: i32,
    now: i64,
) -> DrainPlan {
    plan(&DrainInput {
        pods,
        loads: l,
        replicas,
        desired,
        timeout_ms: TIMEOUT,
        now_ms: now,
    })
}

fn started(p: &DrainPlan) -> Vec<(String, i64)> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::Start { pod, cost, .. } => Some((pod.clone(), *cost)),
            _ => None,
        })
        .collect()
}

fn cancelled_pods(p: &DrainPlan) -> Vec<(String, bool)> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::Cancel { pod, marked, .. } => Some((pod.clone(), *marked)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_least_loaded_pods_drain_first_with_the_lowest_costs() {
    let pods: Vec<PodView> = ["a", "b", "c", "d", "e"].into_iter().map(pod).collect();
    let l = loads(&[
        ("a", 3, false),
        ("b", 0, false),
        ("c", 2, false),
        ("d", 5, false),
        ("e", 1, false),
    ]);
    let p = run(&pods, &l, 5, 2, T0);
    assert_eq!(
        started(&p),
        [
            ("b".to_string(), -1000),
            ("e".to_string(), -1001),
            ("c".to_string(), -1002)
        ]
    );
    assert_eq!(p.scale_to, None, "replicas wait for the drain");
    let DrainState::Draining {
        target,
        pods: members,
        since_ms,
        deadline_ms,
        blocked,
    } = &p.state
    else {
        panic!("{:?}", p.state);
    };
    assert_eq!(*target, 2);
    assert_eq!(
        members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["b", "c", "e"]
    );
    assert_eq!((*since_ms, *deadline_ms), (T0, T0 + TIMEOUT));
    assert_eq!(blocked, &None);
    // Every Start carries the pod's URL and the drain's start.
    assert!(p.actions.iter().all(|a| matches!(a,
        Action::Start { url: Some(u), since_ms, .. } if u.starts_with("http://") && *since_ms == T0)));
}

#[test]
fn costs_go_below_a_cost_set_by_someone_else() {
    let mut pods: Vec<PodView> = ["a", "b", "c"].into_iter().map(pod).collect();
    pods[0].deletion_cost = Some(-50);
    pods[2].deletion_cost = Some(300);
    let l = loads(&[("a", 4, false), ("b", 0, false), ("c", 6, false)]);
    let p = run(&pods, &l, 3, 2, T0);
    assert_eq!(started(&p), [("b".to_string(), -1050)]);
}

#[test]
fn replicas_drop_only_once_every_drained_pod_is_empty() {
    let pods = vec![
        pod("a"),
        marked("b", T0, -1000),
        marked("c", T0, -1002),
        pod("d"),
        marked("e", T0, -1001),
    ];
    // c still has a call.
    let l = loads(&[
        ("a", 3, false),
        ("b", 0, true),
        ("c", 1, true),
        ("d", 5, false),
        ("e", 0, true),
    ]);
    let p = run(&pods, &l, 5, 2, T0 + 30_000);
    assert_eq!(p.scale_to, None);
    assert!(p.actions.is_empty(), "nothing to redo: {:?}", p.actions);
    assert!(matches!(p.state, DrainState::Draining { .. }));

    // The last call on c ends.
    let l = loads(&[
        ("a", 3, false),
        ("b", 0, true),
        ("c", 0, true),
        ("d", 5, false),
        ("e", 0, true),
    ]);
    let p = run(&pods, &l, 5, 2, T0 + 60_000);
    assert_eq!(p.scale_to, Some(2));
    let DrainState::Drained { target, pods, cut } = &p.state else {
        panic!("{:?}", p.state);
    };
    assert_eq!(*target, 2);
    assert_eq!(pods.len(), 3);
    assert!(cut.is_empty(), "no call cut: {cut:?}");
}

#[test]
fn a_pod_that_starts_draining_waits_one_tick_even_when_idle() {
    let pods = vec![pod("a"), pod("b")];
    let l = loads(&[("a", 0, false), ("b", 0, false)]);
    let p = run(&pods, &l, 2, 1, T0);
    assert_eq!(started(&p), [("a".to_string(), -1000)]);
    assert_eq!(p.scale_to, None);
    let pods = vec![marked("a", T0, -1000), pod("b")];
    let l = loads(&[("a", 0, true), ("b", 0, false)]);
    let p = run(&pods, &l, 2, 1, T0 + 2_000);
    assert_eq!(p.scale_to, Some(1));
}

#[test]
fn pods_still_holding_calls_at_the_deadline_are_reported_and_replicas_drop() {
    let pods = vec![
        pod("a"),
        marked("b", T0, -1000),
        marked("c", T0 + 5_000, -1001),
    ];
    let l = loads(&[("a", 1, false), ("b", 2, true), ("c", 0, true)]);
    // Just before b's deadline: wait.
    let p = run(&pods, &l, 3, 1, T0 + TIMEOUT - 1);
    assert_eq!(p.scale_to, None);
    let DrainState::Draining { deadline_ms, .. } = &p.state else {
        panic!("{:?}", p.state);
    };
    assert_eq!(*deadline_ms, T0 + 5_000 + TIMEOUT, "the latest deadline");
    // At b's deadline (c is empty): replicas drop, b is reported.
    let p = run(&pods, &l, 3, 1, T0 + TIMEOUT);
    assert_eq!(p.scale_to, Some(1));
    let DrainState::Drained { cut, .. } = &p.state else {
        panic!("{:?}", p.state);
    };
    assert_eq!(
        cut,
        &[DrainingPod {
            name: "b".into(),
            calls: Some(2),
            since_ms: T0
        }]
    );
}

#[test]
fn a_drained_pod_that_does_not_answer_waits_for_its_deadline() {
    let pods = vec![pod("a"), marked("b", T0, -1000)];
    let mut l = loads(&[("a", 1, false)]);
    l.insert(
        "b".into(),
        PodLoad::Unreachable("connection refused".into()),
    );
    let p = run(&pods, &l, 2, 1, T0 + 10_000);
    assert_eq!(p.scale_to, None);
    let p = run(&pods, &l, 2, 1, T0 + TIMEOUT);
    assert_eq!(p.scale_to, Some(1));
    let DrainState::Drained { cut, .. } = &p.state else {
        panic!("{:?}", p.state);
    };
    assert_eq!(cut.len(), 1);
    assert_eq!(cut[0].calls, None, "unknown calls are reported as unknown");
}

#[test]
fn pods_with_unknown_load_are_never_chosen_and_block_the_scale_down() {
    let pods = vec![pod("a"), pod("b"), pod("c")];
    let mut l = loads(&[("a", 2, false)]);
    l.insert("b".into(), PodLoad::Unreachable("timeout".into()));
    l.insert("c".into(), PodLoad::Unreachable("timeout".into()));
    let p = run(&pods, &l, 3, 1, T0);
    assert_eq!(started(&p), [("a".to_string(), -1000)]);
    let DrainState::Draining { blocked, .. } = &p.state else {
        panic!("{:?}", p.state);
    };
    assert_eq!(
        blocked.as_deref(),
        Some("1 more pod(s) must drain, but the load of b, c is unknown")
    );
    // Even once a is empty, replicas stay: a second pod must drain first.
    let pods = vec![marked("a", T0, -1000), pod("b"), pod("c")];
    let mut l = loads(&[("a", 0, true)]);
    l.insert("b".into(), PodLoad::Unreachable("timeout".into()));
    l.insert("c".into(), PodLoad::Unreachable("timeout".into()));
    let p = run(&pods, &l, 3, 1, T0 + TIMEOUT * 2);
    assert_eq!(p.scale_to, None);
}

#[test]
fn pods_without_an_ip_hold_no_call_and_go_first() {
    let mut pending = pod("p");
    pending.url = None;
    let pods = vec![pod("a"), pending, pod("b")];
    let l = loads(&[("a", 0, false), ("b", 3, false)]);
    let p = run(&pods, &l, 3, 2, T0);
    assert_eq!(
        p.actions,
        [Action::Start {
            pod: "p".into(),
            url: None,
            cost: -1000,
            since_ms: T0
        }]
    );
}

#[test]
fn load_back_at_the_replicas_cancels_the_drain() {
    let pods = vec![
        pod("a"),
        marked("b", T0, -1000),
        marked("c", T0, -1001),
        pod("d"),
    ];
    let l = loads(&[
        ("a", 3, false),
        ("b", 1, true),
        ("c", 0, true),
        ("d", 5, true), // draining without a mark: a drain lost track of
    ]);
    for desired in [4, 6] {
        let p = run(&pods, &l, 4, desired, T0 + 1_000);
        assert_eq!(
            cancelled_pods(&p),
            [
                ("b".to_string(), true),
                ("c".to_string(), true),
                ("d".to_string(), false)
            ],
            "desired {desired}"
        );
        assert_eq!(p.scale_to, None);
        assert_eq!(
            p.state,
            DrainState::Cancelled {
                pods: vec!["b".into(), "c".into()]
            }
        );
    }
    // Nothing drained: a tick at steady state does nothing.
    let quiet = vec![pod("a"), pod("b")];
    let l = loads(&[("a", 3, false), ("b", 1, false)]);
    let p = run(&quiet, &l, 2, 2, T0);
    assert_eq!(p, DrainPlan::idle(Vec::new()));
}

#[test]
fn a_partial_rise_releases_the_busiest_drained_pod() {
    let pods = vec![
        pod("a"),
        marked("b", T0, -1000),
        marked("c", T0, -1001),
        marked("e", T0, -1002),
        pod("d"),
    ];
    let l = loads(&[
        ("a", 3, false),
        ("b", 0, true),
        ("c", 2, true),
        ("d", 5, false),
        ("e", 1, true),
    ]);
    // The decision goes from 2 to 3: two pods to drain, not three.
    let p = run(&pods, &l, 5, 3, T0 + 1_000);
    assert_eq!(cancelled_pods(&p), [("c".to_string(), true)]);
    let DrainState::Draining { pods, .. } = &p.state else {
        panic!("{:?}", p.state);
    };
    assert_eq!(
        pods.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["b", "e"]
    );
}

#[test]
fn while_the_replicaset_removes_pods_nothing_new_starts_and_nothing_is_cancelled() {
    // Replicas already 2, the three drained pods not deleted yet.
    let pods = vec![
        pod("a"),
        marked("b", T0, -1000),
        marked("c", T0, -1001),
        pod("d"),
        marked("e", T0, -1002),
    ];
    let l = loads(&[
        ("a", 3, false),
        ("b", 0, true),
        ("c", 0, true),
        ("d", 5, false),
        ("e", 0, true),
    ]);
    for desired in [1, 2] {
        let p = run(&pods, &l, 2, desired, T0 + 60_000);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_eq!(p.scale_to, None);
        assert_eq!(
            p.state,
            DrainState::Settling {
                live: 5,
                replicas: 2
            }
        );
    }
    // Once they are being deleted they no longer count.
    let mut gone = pods.clone();
    for p in &mut gone {
        if p.drain.is_some() {
            p.gone = true;
        }
    }
    let p = run(&gone, &l, 2, 2, T0 + 62_000);
    assert_eq!(p, DrainPlan::idle(Vec::new()));
}

#[test]
fn fewer_pods_than_the_target_scale_down_at_once() {
    let pods = vec![pod("a"), pod("b")];
    let l = loads(&[("a", 3, false), ("b", 1, false)]);
    let p = run(&pods, &l, 5, 2, T0);
    assert_eq!(p.scale_to, Some(2));
    assert!(p.actions.is_empty());
    assert_eq!(p.state, DrainState::Idle);
}

#[test]
fn broken_marks_are_repaired_and_a_lost_drain_is_asked_again() {
    let mut unreadable = marked("b", T0, -1000);
    unreadable.drain = Some(DrainMark { since_ms: None });
    let mut low_user_cost = pod("a");
    low_user_cost.deletion_cost = Some(-5000);
    let pods = vec![
        low_user_cost,
        unreadable,
        marked("c", T0, -1001), // cost no longer below a's
        pod("d"),
    ];
    // c's runtime restarted and forgot its drain.
    let l = loads(&[
        ("a", 1, false),
        ("b", 0, true),
        ("c", 1, false),
        ("d", 5, false),
    ]);
    let now = T0 + 4_000;
    let p = run(&pods, &l, 4, 2, now);
    assert_eq!(
        p.actions,
        [
            Action::Remark {
                pod: "b".into(),
                cost: -6000,
                since_ms: now
            },
            Action::Remark {
                pod: "c".into(),
                cost: -6001,
                since_ms: T0
            },
            Action::Reassert {
                pod: "c".into(),
                url: "http://c:8080".into()
            },
        ]
    );
}

#[test]
fn the_same_marks_and_loads_give_the_same_plan() {
    // What a new leader sees is all there is: the plan depends on nothing else.
    let pods = vec![pod("a"), marked("b", T0, -1000), pod("c")];
    let l = loads(&[("a", 2, false), ("b", 1, true), ("c", 4, false)]);
    let first = run(&pods, &l, 3, 1, T0 + 9_000);
    let second = run(&pods, &l, 3, 1, T0 + 9_000);
    assert_eq!(first, second);
    // b is kept, a (fewer calls than c) joins it.
    assert_eq!(started(&first), [("a".to_string(), -1001)]);
}
