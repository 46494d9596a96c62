//! One active `weir run` among replicas, elected through a `coordination.k8s.io/v1` Lease.
//!
//! The leader renews the Lease every `retry_period`; a follower takes it over once
//! `renewTime + leaseDurationSeconds` has passed. A leader that cannot renew within
//! `renew_deadline` stops, rather than risk two replicas acting at once: the process exits and
//! its supervisor restarts it as a follower. All state is in the Lease; which replica leads is
//! decided by [`decide`], a pure function of the Lease and the clock.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};

/// Field manager of Lease writes.
pub const FIELD_MANAGER: &str = "weir-leader-election";

/// How to elect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    /// Name of the Lease.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// This replica's identity (unique among replicas).
    pub identity: String,
    /// How long a Lease holds without renewal; a failover takes at most this long plus `retry_period`.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leading.
    pub renew_deadline: Duration,
    /// How often the leader renews and a follower tries to acquire.
    pub retry_period: Duration,
}

/// What to do with the Lease now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it, holding it.
    Create,
    /// Someone else held it and let it expire (or nobody holds it): take it over.
    TakeOver,
    /// We hold it: renew.
    Renew,
    /// Someone else holds a live Lease: wait this long and look again.
    Follow(Duration),
}

/// Decides from the observed Lease, who we are, and the time.
pub fn decide(lease: Option<&Lease>, me: &str, now: Timestamp) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
    if holder == Some(me) {
        return Decision::Renew;
    }
    let Some(holder_renewed) = spec.renew_time.map(|t| t.0) else {
        return Decision::TakeOver;
    };
    if holder.is_none() {
        return Decision::TakeOver;
    }
    let duration =
        Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0));
    let expires = holder_renewed
        .checked_add(jiff::SignedDuration::try_from(duration).unwrap_or_default())
        .unwrap_or(holder_renewed);
    if now >= expires {
        Decision::TakeOver
    } else {
        Decision::Follow(
            Duration::try_from(expires.duration_since(now)).unwrap_or(Duration::from_secs(1)),
        )
    }
}

/// Why leading stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The Lease could not be read or written.
    #[error("{action} Lease {lease}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// `namespace/name`.
        lease: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Another replica took the Lease.
    #[error("Lease {lease} is now held by {holder}")]
    Lost {
        /// `namespace/name`.
        lease: String,
        /// The new holder.
        holder: String,
    },
    /// Renewal failed for longer than the renew deadline.
    #[error("could not renew Lease {lease} within {deadline:?}")]
    RenewDeadline {
        /// `namespace/name`.
        lease: String,
        /// The deadline.
        deadline: Duration,
    },
}

/// Electing and holding one Lease.
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
}

impl Elector {
    /// An elector for `settings`.
    pub fn new(client: Client, settings: LeaseSettings) -> Elector {
        Elector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
        }
    }

    fn lease_key(&self) -> String {
        format!("{}/{}", self.settings.namespace, self.settings.name)
    }

    fn held(&self, lease: Option<Lease>, now: Timestamp, transition: bool) -> Lease {
        let mut lease = lease.unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(self.settings.name.clone()),
                namespace: Some(self.settings.namespace.clone()),
                ..Default::default()
            },
            spec: None,
        });
        let mut spec = lease.spec.clone().unwrap_or_default();
        spec.holder_identity = Some(self.settings.identity.clone());
        spec.lease_duration_seconds =
            Some(i32::try_from(self.settings.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX));
        spec.renew_time = Some(MicroTime(now));
        if transition {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec = Some(spec);
        lease
    }

    /// One round: acts on [`decide`]. Returns whether we hold the Lease afterwards, and if not, how
    /// long to wait.
    async fn round(&self) -> Result<Result<(), Duration>, LeaderError> {
        let key = self.lease_key();
        let err = |action: &'static str| {
            let lease = key.clone();
            move |source| LeaderError::Api {
                action,
                lease,
                source,
            }
        };
        let current = self
            .api
            .get_opt(&self.settings.name)
            .await
            .map_err(err("reading"))?;
        let now = Timestamp::now();
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let written = match decide(current.as_ref(), &self.settings.identity, now) {
            Decision::Follow(wait) => return Ok(Err(wait.min(self.settings.retry_period))),
            Decision::Create => self.api.create(&pp, &self.held(None, now, true)).await,
            Decision::TakeOver => {
                self.api
                    .replace(&self.settings.name, &pp, &self.held(current, now, true))
                    .await
            }
            Decision::Renew => {
                self.api
                    .replace(&self.settings.name, &pp, &self.held(current, now, false))
                    .await
            }
        };
        match written {
            Ok(_) => Ok(Ok(())),
            // Another replica wrote first; look again next round.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Err(self.settings.retry_period)),
            Err(e) => Err(err("writing")(e)),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) -> Result<(), LeaderError> {
        loop {
            match self.round().await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(wait)) => tokio::time::sleep(wait).await,
                Err(e) => {
                    tracing::warn!(error = %e, "leader election");
                    tokio::time::sleep(self.settings.retry_period).await;
                }
            }
        }
    }

    /// Renews the Lease until leadership is lost; returns why.
    pub async fn hold(&self) -> LeaderError {
        let mut last_renewed = std::time::Instant::now();
        loop {
            tokio::time::sleep(self.settings.retry_period).await;
            match self.round().await {
                Ok(Ok(())) => last_renewed = std::time::Instant::now(),
                Ok(Err(_)) => {
                    let holder = self
                        .api
                        .get_opt(&self.settings.name)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|l| l.spec?.holder_identity)
                        .unwrap_or_default();
                    if !holder.is_empty() && holder != self.settings.identity {
                        return LeaderError::Lost {
                            lease: self.lease_key(),
                            holder,
                        };
                    }
                }
                Err(e) => tracing::warn!(error = %e, "renewing the leader Lease"),
            }
            if last_renewed.elapsed() > self.settings.renew_deadline {
                return LeaderError::RenewDeadline {
                    lease: self.lease_key(),
                    deadline: self.settings.renew_deadline,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;

    fn lease(holder: Option<&str>, renewed_at: Option<i64>, duration: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                renew_time: renewed_at.map(|s| MicroTime(Timestamp::from_second(s).unwrap())),
                lease_duration_seconds: Some(duration),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn one_replica_leads_until_its_lease_expires() {
        let now = Timestamp::from_second(1_000).unwrap();
        let cases = [
            ("no lease", None, Decision::Create),
            (
                "ours",
                Some(lease(Some("a"), Some(999), 15)),
                Decision::Renew,
            ),
            (
                "ours, even expired",
                Some(lease(Some("a"), Some(900), 15)),
                Decision::Renew,
            ),
            (
                "theirs, live",
                Some(lease(Some("b"), Some(995), 15)),
                Decision::Follow(Duration::from_secs(10)),
            ),
            (
                "theirs, expired",
                Some(lease(Some("b"), Some(985), 15)),
                Decision::TakeOver,
            ),
            (
                "theirs, expiring now",
                Some(lease(Some("b"), Some(985), 15)),
                Decision::TakeOver,
            ),
            (
                "released",
                Some(lease(None, Some(999), 15)),
                Decision::TakeOver,
            ),
            (
                "never renewed",
                Some(lease(Some("b"), None, 15)),
                Decision::TakeOver,
            ),
        ];
        for (what, l, expected) in cases {
            assert_eq!(decide(l.as_ref(), "a", now), expected, "{what}");
        }
    }
}
