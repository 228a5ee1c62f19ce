//! Helpers for `metav1.Condition` lists (`status.conditions`).
//!
//! Conditions follow the Kubernetes API conventions: one entry per `type`,
//! `lastTransitionTime` changes only when `status` flips, and
//! `observedGeneration` records the spec generation the condition speaks for.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types used by the three kinds.
pub mod types {
    /// The object is fully functional (VoiceAgent: every component is ready;
    /// PhoneNumber: provisioned and bound).
    pub const READY: &str = "Ready";
    /// The operator is rolling out a change.
    pub const PROGRESSING: &str = "Progressing";
    /// The object cannot reach its desired state; the reason says why.
    pub const DEGRADED: &str = "Degraded";
    /// The autoscaler has fresh signals and is scaling the components.
    pub const SCALING_ACTIVE: &str = "ScalingActive";
    /// The phone number is configured at the vendors (Twilio, LiveKit).
    pub const PROVISIONED: &str = "Provisioned";
    /// Another PhoneNumber already claims the same number.
    pub const CONFLICT: &str = "Conflict";
}

/// The status of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// The controller cannot tell.
    Unknown,
}

impl Status {
    /// The string the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

impl From<bool> for Status {
    fn from(b: bool) -> Self {
        if b { Status::True } else { Status::False }
    }
}

/// Builds a condition. `reason` must be CamelCase (the API requires
/// `^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`); `now` becomes the
/// `lastTransitionTime` unless [`set_condition`] keeps an earlier one.
pub fn new_condition(
    type_: &str,
    status: Status,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: status.as_str().to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation,
        last_transition_time: now,
    }
}

/// Inserts or replaces the condition of `new.type_`, keeping the old
/// `lastTransitionTime` when the status does not flip. Returns whether
/// anything other than timestamps changed, so callers can skip a status
/// patch that would only move time forward.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            if existing.status == new.status {
                new.last_transition_time = existing.last_transition_time.clone();
            }
            let changed = existing.status != new.status
                || existing.reason != new.reason
                || existing.message != new.message
                || existing.observed_generation != new.observed_generation;
            *existing = new;
            changed
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// Removes the condition of `type_`; returns whether one was removed.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    conditions.len() != before
}

/// The condition of `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == Status::True.as_str())
}

/// Whether two condition lists are equal when `lastTransitionTime` is ignored.
pub fn equal_ignoring_time(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().all(|x| {
            find_condition(b, &x.type_).is_some_and(|y| {
                x.status == y.status
                    && x.reason == y.reason
                    && x.message == y.message
                    && x.observed_generation == y.observed_generation
            })
        })
}

/// The current time as a `metav1.Time`.
pub fn now() -> Time {
    Time(jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).expect("valid timestamp"))
    }

    #[test]
    fn inserts_then_keeps_transition_time_when_status_is_unchanged() {
        let mut conds = Vec::new();
        assert!(set_condition(
            &mut conds,
            new_condition(
                types::READY,
                Status::False,
                "Rolling",
                "2/4 ready",
                Some(1),
                at(100)
            )
        ));
        // Same status, new message: changed, but the transition time stays.
        assert!(set_condition(
            &mut conds,
            new_condition(
                types::READY,
                Status::False,
                "Rolling",
                "3/4 ready",
                Some(1),
                at(200)
            )
        ));
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].last_transition_time, at(100));
        assert_eq!(conds[0].message, "3/4 ready");
    }

    #[test]
    fn flip_moves_transition_time() {
        let mut conds = vec![new_condition(
            types::READY,
            Status::False,
            "Rolling",
            "",
            Some(1),
            at(100),
        )];
        assert!(set_condition(
            &mut conds,
            new_condition(types::READY, Status::True, "AllReady", "", Some(1), at(300))
        ));
        assert_eq!(conds[0].last_transition_time, at(300));
        assert!(is_true(&conds, types::READY));
    }

    #[test]
    fn identical_condition_reports_no_change() {
        let mut conds = vec![new_condition(
            types::DEGRADED,
            Status::False,
            "AsExpected",
            "ok",
            Some(2),
            at(100),
        )];
        assert!(!set_condition(
            &mut conds,
            new_condition(
                types::DEGRADED,
                Status::False,
                "AsExpected",
                "ok",
                Some(2),
                at(999)
            )
        ));
        assert_eq!(conds[0].last_transition_time, at(100));
    }

    #[test]
    fn generation_change_is_a_change() {
        let mut conds = vec![new_condition(
            types::READY,
            Status::True,
            "AllReady",
            "",
            Some(1),
            at(1),
        )];
        assert!(set_condition(
            &mut conds,
            new_condition(types::READY, Status::True, "AllReady", "", Some(2), at(2))
        ));
    }

    #[test]
    fn compare_and_remove() {
        let a = vec![
            new_condition(types::READY, Status::True, "AllReady", "", Some(1), at(1)),
            new_condition(
                types::DEGRADED,
                Status::False,
                "AsExpected",
                "",
                Some(1),
                at(1),
            ),
        ];
        let mut b = a.clone();
        b.reverse();
        b[0].last_transition_time = at(50);
        assert!(equal_ignoring_time(&a, &b));
        b[1].message = "x".into();
        assert!(!equal_ignoring_time(&a, &b));
        assert!(remove_condition(&mut b, types::READY));
        assert!(!remove_condition(&mut b, types::READY));
        assert!(find_condition(&b, types::READY).is_none());
        assert!(!is_true(&b, types::DEGRADED));
    }
}
