//! Leader election on a `coordination.k8s.io/v1` Lease, so that only one
//! operator replica writes. The decision is a pure function of the Lease and
//! the clock ([`decide`]); [`LeaderElector`] performs it with
//! compare-and-swap writes (`resourceVersion` preconditions), so two
//! candidates can never both win.
//!
//! Timing: a standby retries every `retry_every` and takes over once the
//! holder has not renewed for `lease_duration`; with the defaults (10 s
//! lease, 2 s retry) a standby leads within 12 s of the leader's death, and
//! at once after a clean shutdown, which releases the Lease.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tracing::{info, warn};

/// Lease timing and identity.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// Name of the Lease.
    pub name: String,
    /// Namespace of the Lease (the operator's).
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_every: Duration,
    /// How often a standby tries to acquire.
    pub retry_every: Duration,
}

impl LeaseSettings {
    /// Defaults for `identity` in `namespace`.
    pub fn new(namespace: &str, identity: &str) -> Self {
        Self {
            name: "voice-agent-operator".to_string(),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(10),
            renew_every: Duration::from_secs(3),
            retry_every: Duration::from_secs(2),
        }
    }
}

/// What a candidate should do with the Lease it sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease exists: create it, holding it.
    Create,
    /// We hold it: renew it.
    Renew,
    /// It is free or expired: take it over.
    TakeOver,
    /// Someone else holds a valid Lease.
    Wait {
        /// The current holder.
        holder: String,
    },
}

/// Decides what a candidate does with the current Lease at time `now`.
pub fn decide(
    lease: Option<&LeaseSpec>,
    identity: &str,
    now: jiff::Timestamp,
    duration: Duration,
) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    let valid_for = spec
        .lease_duration_seconds
        .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
        .unwrap_or(duration);
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    let expired = match renewed {
        None => true,
        Some(t) => {
            let age = now.duration_since(t);
            !age.is_negative() && age.unsigned_abs() >= valid_for
        }
    };
    if expired {
        Decision::TakeOver
    } else {
        Decision::Wait {
            holder: holder.to_string(),
        }
    }
}

/// Acquires, renews and releases the Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
}

impl LeaderElector {
    /// An elector for `settings` using `client`.
    pub fn new(client: kube::Client, settings: LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    fn spec(
        &self,
        now: jiff::Timestamp,
        transitions: i32,
        acquired: Option<MicroTime>,
    ) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One attempt to acquire or renew. `Ok(true)` while we lead.
    pub async fn try_acquire_or_renew(&self) -> kube::Result<bool> {
        let now = jiff::Timestamp::now();
        let current = self.api.get_opt(&self.settings.name).await?;
        let decision = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.settings.identity,
            now,
            self.settings.lease_duration,
        );
        let result = match (decision, current) {
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.settings.name.clone()),
                        namespace: Some(self.settings.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(now, 0, None)),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| true)
            }
            (Decision::Renew, Some(mut lease)) => {
                let old = lease.spec.take().unwrap_or_default();
                lease.spec =
                    Some(self.spec(now, old.lease_transitions.unwrap_or(0), old.acquire_time));
                self.replace(&lease).await
            }
            (Decision::TakeOver, Some(mut lease)) => {
                let old = lease.spec.take().unwrap_or_default();
                lease.spec = Some(self.spec(now, old.lease_transitions.unwrap_or(0) + 1, None));
                let won = self.replace(&lease).await;
                if matches!(won, Ok(true)) {
                    info!(lease = %self.settings.name, previous = old.holder_identity.as_deref().unwrap_or(""), "took over the leader Lease");
                }
                won
            }
            _ => Ok(false),
        };
        match result {
            // Someone else wrote first: not an error, just not us.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            other => other,
        }
    }

    async fn replace(&self, lease: &Lease) -> kube::Result<bool> {
        // `replace` sends the resourceVersion we read: a concurrent write makes it fail with 409.
        self.api
            .replace(&self.settings.name, &PostParams::default(), lease)
            .await
            .map(|_| true)
    }

    /// Blocks until this replica leads, or `stop` resolves (then `false`).
    pub async fn acquire(&self, mut stop: tokio::sync::watch::Receiver<bool>) -> bool {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(e) => warn!("leader election: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.retry_every) => {}
                _ = stop.wait_for(|s| *s) => return false,
            }
        }
    }

    /// Renews the Lease until `stop` resolves (returns `true`) or the Lease is
    /// lost (returns `false`): renewal refused, or no successful renewal for
    /// the lease duration.
    pub async fn keep(&self, mut stop: tokio::sync::watch::Receiver<bool>) -> bool {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.settings.renew_every) => {}
                _ = stop.wait_for(|s| *s) => return true,
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => return false,
                Err(e) => {
                    warn!("renewing the leader Lease: {e}");
                    if last_ok.elapsed() >= self.settings.lease_duration {
                        return false;
                    }
                }
            }
        }
    }

    /// Gives the Lease up so a standby takes over at once.
    pub async fn release(&self) -> kube::Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            return Ok(());
        };
        let ours = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.settings.identity.as_str());
        if !ours {
            return Ok(());
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.acquire_time = None;
            spec.renew_time = None;
        }
        match self.replace(&lease).await {
            Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).expect("ts")
    }

    fn held_by(who: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(who.into()),
            lease_duration_seconds: Some(10),
            renew_time: Some(MicroTime(t(renewed))),
            acquire_time: Some(MicroTime(t(renewed))),
            ..LeaseSpec::default()
        }
    }

    const D: Duration = Duration::from_secs(10);

    #[test]
    fn no_lease_is_created() {
        assert_eq!(decide(None, "a", t(100), D), Decision::Create);
    }

    #[test]
    fn the_holder_renews() {
        assert_eq!(
            decide(Some(&held_by("a", 95)), "a", t(100), D),
            Decision::Renew
        );
    }

    #[test]
    fn a_valid_lease_makes_others_wait() {
        assert_eq!(
            decide(Some(&held_by("a", 95)), "b", t(100), D),
            Decision::Wait { holder: "a".into() }
        );
        // Clock skew: a renewal "in the future" is still valid.
        assert_eq!(
            decide(Some(&held_by("a", 105)), "b", t(100), D),
            Decision::Wait { holder: "a".into() }
        );
    }

    #[test]
    fn an_expired_or_released_lease_is_taken_over() {
        assert_eq!(
            decide(Some(&held_by("a", 90)), "b", t(100), D),
            Decision::TakeOver
        );
        let released = LeaseSpec {
            holder_identity: None,
            ..held_by("a", 99)
        };
        assert_eq!(decide(Some(&released), "b", t(100), D), Decision::TakeOver);
        let never_renewed = LeaseSpec {
            renew_time: None,
            acquire_time: None,
            ..held_by("a", 0)
        };
        assert_eq!(
            decide(Some(&never_renewed), "b", t(100), D),
            Decision::TakeOver
        );
    }

    #[test]
    fn a_standby_leads_within_twelve_seconds_of_the_last_renewal() {
        // The leader renews at t=100 and dies. A standby polls every 2 s.
        let lease = held_by("a", 100);
        let took_over = (100..=130)
            .step_by(2)
            .find(|now| decide(Some(&lease), "b", t(*now), D) == Decision::TakeOver)
            .expect("takes over");
        assert!(
            took_over - 100 <= 12,
            "took over after {} s",
            took_over - 100
        );
    }
}
