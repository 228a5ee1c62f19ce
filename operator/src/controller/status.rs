//! The **status** step: a pure function from what was observed to the
//! VoiceAgent's status, and the check that decides whether it needs a write.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use voice_agent_api::conditions::{self, Status, new_condition, set_condition, types};
use voice_agent_api::voiceagent::{BoundNumber, ComponentStatus, ComponentsStatus};
use voice_agent_api::{VoiceAgent, VoiceAgentPhase, VoiceAgentStatus};
use voice_agent_proto::Component;

use crate::render::{COMPONENTS, Naming};

/// Why the agent cannot reach its desired state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Degraded {
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable message naming the object at fault.
    pub message: String,
}

/// What a reconcile observed.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The component Deployments that exist.
    pub deployments: Vec<Deployment>,
    /// The PhoneNumbers bound to the agent.
    pub bound_numbers: Vec<BoundNumber>,
    /// Set when the spec cannot be realised.
    pub degraded: Option<Degraded>,
}

fn component_status(d: Option<&Deployment>) -> (ComponentStatus, bool, bool) {
    let Some(d) = d else {
        return (ComponentStatus::default(), false, true);
    };
    let spec_replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let st = d.status.as_ref();
    let replicas = st.and_then(|s| s.replicas).unwrap_or(0);
    let ready = st.and_then(|s| s.ready_replicas).unwrap_or(0);
    let updated = st.and_then(|s| s.updated_replicas).unwrap_or(0);
    let observed = st.and_then(|s| s.observed_generation).unwrap_or(0);
    let generation = d.metadata.generation.unwrap_or(0);
    let rolled_out =
        observed >= generation && updated >= spec_replicas && replicas <= spec_replicas;
    let status = ComponentStatus {
        replicas,
        ready_replicas: ready,
        desired_replicas: spec_replicas,
        last_scale_time: None,
        reason: None,
    };
    (status, ready >= spec_replicas && ready > 0, !rolled_out)
}

/// Computes the status of `va` from what was observed. `previous` keeps
/// fields owned by other writers (the autoscaler's scale times and reasons,
/// active calls and latency from the metrics service).
pub fn compute(
    va: &VoiceAgent,
    naming: &Naming,
    observed: &Observed,
    now: Time,
) -> VoiceAgentStatus {
    let previous = va.status.clone().unwrap_or_default();
    let generation = va.metadata.generation;
    let mut components = ComponentsStatus::default();
    let mut ready_count = 0;
    let mut progressing = Vec::new();
    let mut not_ready = Vec::new();
    for c in COMPONENTS {
        let name = naming.component(c);
        let d = observed
            .deployments
            .iter()
            .find(|d| d.metadata.name.as_deref() == Some(name.as_str()));
        let (mut st, ready, rolling) = component_status(d);
        let prev = previous
            .components
            .as_ref()
            .and_then(|p| slot(p, c).clone());
        if let Some(prev) = prev {
            st.last_scale_time = prev.last_scale_time;
            st.reason = prev.reason;
        }
        if ready {
            ready_count += 1;
        } else {
            not_ready.push(format!(
                "{} {}/{}",
                c.as_str(),
                st.ready_replicas,
                st.desired_replicas
            ));
        }
        if rolling {
            progressing.push(c.as_str());
        }
        *slot_mut(&mut components, c) = Some(st);
    }

    let mut conds = previous.conditions.clone();
    let cond = |t: &str, s: Status, reason: &str, msg: String| {
        new_condition(t, s, reason, msg, generation, now.clone())
    };
    let phase = if let Some(d) = &observed.degraded {
        set_condition(
            &mut conds,
            cond(types::DEGRADED, Status::True, &d.reason, d.message.clone()),
        );
        set_condition(
            &mut conds,
            cond(types::READY, Status::False, &d.reason, d.message.clone()),
        );
        set_condition(
            &mut conds,
            cond(
                types::PROGRESSING,
                Status::False,
                &d.reason,
                "waiting for the spec or its references to change".into(),
            ),
        );
        VoiceAgentPhase::Degraded
    } else {
        set_condition(
            &mut conds,
            cond(
                types::DEGRADED,
                Status::False,
                "AsExpected",
                "the spec is valid and applied".into(),
            ),
        );
        let all_ready = ready_count == COMPONENTS.len();
        if all_ready {
            set_condition(
                &mut conds,
                cond(
                    types::READY,
                    Status::True,
                    "AllComponentsReady",
                    "4/4 components ready".into(),
                ),
            );
        } else {
            set_condition(
                &mut conds,
                cond(
                    types::READY,
                    Status::False,
                    "ComponentsNotReady",
                    format!("not ready: {}", not_ready.join(", ")),
                ),
            );
        }
        if progressing.is_empty() {
            set_condition(
                &mut conds,
                cond(
                    types::PROGRESSING,
                    Status::False,
                    "RolloutComplete",
                    "every component is rolled out".into(),
                ),
            );
        } else {
            set_condition(
                &mut conds,
                cond(
                    types::PROGRESSING,
                    Status::True,
                    "RollingOut",
                    format!("rolling out: {}", progressing.join(", ")),
                ),
            );
        }
        match (all_ready, progressing.is_empty()) {
            (true, true) => VoiceAgentPhase::Ready,
            (false, _) if ready_count == 0 && observed.deployments.is_empty() => {
                VoiceAgentPhase::Pending
            }
            _ => VoiceAgentPhase::Progressing,
        }
    };

    let mut bound = observed.bound_numbers.clone();
    bound.sort_by(|a, b| a.name.cmp(&b.name));
    VoiceAgentStatus {
        observed_generation: generation,
        phase: Some(phase),
        ready: Some(format!("{ready_count}/{}", COMPONENTS.len())),
        conditions: conds,
        components: Some(components),
        webhook_url: Some(va.spec.webhook_url()),
        active_calls: previous.active_calls,
        latency: previous.latency,
        bound_numbers: bound,
    }
}

/// The status of component `comp`.
pub(crate) fn slot(c: &ComponentsStatus, comp: Component) -> &Option<ComponentStatus> {
    match comp {
        Component::Gateway => &c.gateway,
        Component::Runtime => &c.runtime,
        Component::Agent => &c.agent,
        _ => &c.tts,
    }
}

fn slot_mut(c: &mut ComponentsStatus, comp: Component) -> &mut Option<ComponentStatus> {
    match comp {
        Component::Gateway => &mut c.gateway,
        Component::Runtime => &mut c.runtime,
        Component::Agent => &mut c.agent,
        _ => &mut c.tts,
    }
}

/// Whether writing `new` over `old` would change anything but timestamps.
pub fn needs_write(old: Option<&VoiceAgentStatus>, new: &VoiceAgentStatus) -> bool {
    let Some(old) = old else { return true };
    let strip = |s: &VoiceAgentStatus| VoiceAgentStatus {
        conditions: Vec::new(),
        ..s.clone()
    };
    strip(old) != strip(new) || !conditions::equal_ignoring_time(&old.conditions, &new.conditions)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn va() -> VoiceAgent {
        let mut va: VoiceAgent = serde_yaml_ng::from_str(
            r#"
apiVersion: voiceagent.io/v1alpha1
kind: VoiceAgent
metadata: {name: hello, namespace: voice, generation: 3}
spec:
  persona: {greeting: Hi}
  telephony:
    publicUrl: https://hello.example.com
    twilio: {authTokenSecretRef: {name: twilio, key: authToken}}
"#,
        )
        .expect("valid");
        va.metadata.generation = Some(3);
        va
    }

    fn deployment(name: &str, want: i32, ready: i32, generation: i64, observed: i64) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some(name.into()),
                generation: Some(generation),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(want),
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                replicas: Some(want),
                ready_replicas: Some(ready),
                updated_replicas: Some(want),
                observed_generation: Some(observed),
                ..DeploymentStatus::default()
            }),
        }
    }

    fn at(s: i64) -> Time {
        Time(jiff::Timestamp::from_second(s).expect("ts"))
    }

    fn observed(ready: [i32; 4]) -> Observed {
        let names = ["hello-gateway", "hello-runtime", "hello-agent", "hello-tts"];
        Observed {
            deployments: names
                .iter()
                .zip(ready)
                .map(|(n, r)| deployment(n, 1, r, 1, 1))
                .collect(),
            ..Observed::default()
        }
    }

    fn cond<'a>(
        s: &'a VoiceAgentStatus,
        t: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        conditions::find_condition(&s.conditions, t).expect("condition")
    }

    #[test]
    fn all_ready_is_ready() {
        let va = va();
        let naming = Naming::new(&va).expect("named");
        let s = compute(&va, &naming, &observed([1, 1, 1, 1]), at(10));
        assert_eq!(s.phase, Some(VoiceAgentPhase::Ready));
        assert_eq!(s.ready.as_deref(), Some("4/4"));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(cond(&s, types::READY).status, "True");
        assert_eq!(cond(&s, types::PROGRESSING).status, "False");
        assert_eq!(cond(&s, types::DEGRADED).status, "False");
        assert_eq!(
            s.webhook_url.as_deref(),
            Some("https://hello.example.com/twilio/voice")
        );
    }

    #[test]
    fn partially_ready_is_progressing_and_names_the_components() {
        let va = va();
        let naming = Naming::new(&va).expect("named");
        let s = compute(&va, &naming, &observed([1, 0, 1, 0]), at(10));
        assert_eq!(s.phase, Some(VoiceAgentPhase::Progressing));
        assert_eq!(s.ready.as_deref(), Some("2/4"));
        let ready = cond(&s, types::READY);
        assert_eq!(ready.reason, "ComponentsNotReady");
        assert_eq!(ready.message, "not ready: runtime 0/1, tts 0/1");
    }

    #[test]
    fn nothing_yet_is_pending_and_rollouts_are_progressing() {
        let va = va();
        let naming = Naming::new(&va).expect("named");
        let s = compute(&va, &naming, &Observed::default(), at(10));
        assert_eq!(s.phase, Some(VoiceAgentPhase::Pending));
        let mut o = observed([1, 1, 1, 1]);
        o.deployments[2] = deployment("hello-agent", 1, 1, 2, 1); // new spec not yet observed
        let s = compute(&va, &naming, &o, at(10));
        assert_eq!(s.phase, Some(VoiceAgentPhase::Progressing));
        assert_eq!(cond(&s, types::PROGRESSING).message, "rolling out: agent");
    }

    #[test]
    fn degraded_wins_and_says_why() {
        let va = va();
        let naming = Naming::new(&va).expect("named");
        let mut o = observed([1, 1, 1, 1]);
        o.degraded = Some(Degraded {
            reason: "SecretNotFound".into(),
            message: "Secret voice/twilio not found (spec.telephony.twilio.authTokenSecretRef)"
                .into(),
        });
        let s = compute(&va, &naming, &o, at(10));
        assert_eq!(s.phase, Some(VoiceAgentPhase::Degraded));
        let d = cond(&s, types::DEGRADED);
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "SecretNotFound")
        );
        assert!(d.message.contains("voice/twilio"));
        assert_eq!(cond(&s, types::READY).status, "False");
    }

    #[test]
    fn only_timestamps_changing_needs_no_write() {
        let mut va = va();
        let naming = Naming::new(&va).expect("named");
        let first = compute(&va, &naming, &observed([1, 1, 1, 1]), at(10));
        assert!(needs_write(None, &first));
        va.status = Some(first.clone());
        let second = compute(&va, &naming, &observed([1, 1, 1, 1]), at(99));
        assert!(!needs_write(Some(&first), &second));
        assert_eq!(
            cond(&second, types::READY).last_transition_time,
            at(10),
            "kept"
        );
        let third = compute(&va, &naming, &observed([1, 0, 1, 1]), at(120));
        assert!(needs_write(Some(&first), &third));
        assert_eq!(
            cond(&third, types::READY).last_transition_time,
            at(120),
            "flipped"
        );
    }

    #[test]
    fn keeps_what_other_writers_own() {
        let mut va = va();
        let naming = Naming::new(&va).expect("named");
        let mut prev = compute(&va, &naming, &observed([1, 1, 1, 1]), at(10));
        prev.active_calls = Some(7);
        set_condition(
            &mut prev.conditions,
            new_condition(
                types::SCALING_ACTIVE,
                Status::True,
                "ScaleUp",
                "scaling",
                Some(3),
                at(5),
            ),
        );
        if let Some(c) = prev.components.as_mut().and_then(|c| c.runtime.as_mut()) {
            c.reason = Some("CallsPerPodAboveTarget".into());
            c.last_scale_time = Some(at(5));
        }
        va.status = Some(prev);
        let s = compute(&va, &naming, &observed([1, 1, 1, 1]), at(20));
        assert_eq!(s.active_calls, Some(7));
        let rt = s
            .components
            .as_ref()
            .and_then(|c| c.runtime.clone())
            .expect("runtime");
        assert_eq!(rt.reason.as_deref(), Some("CallsPerPodAboveTarget"));
        assert_eq!(rt.last_scale_time, Some(at(5)));
        let scaling = cond(&s, types::SCALING_ACTIVE);
        assert_eq!(
            (scaling.status.as_str(), scaling.reason.as_str()),
            ("True", "ScaleUp")
        );
    }
}
