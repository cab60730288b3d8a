//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it: the replica
//! holding the Lease writes, the others wait until it stops renewing.
//!
//! Expiry is judged by the local clock from when this replica *saw* the record change,
//! never by comparing timestamps written by another machine (clock skew). A leader that
//! cannot renew for `renew_deadline` stops writing before anyone else may take over
//! (`lease_duration` > `renew_deadline`).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;

use super::error::status_code;

/// Timing and identity of this replica's candidacy.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    /// Unique per replica: the pod name.
    pub identity: String,
    /// How long others wait after the last renewal they saw before taking over.
    pub lease_duration: Duration,
    /// How long a leader keeps writing without a successful renewal.
    pub renew_deadline: Duration,
    /// Pause between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(name: &str, namespace: &str, identity: &str) -> Self {
        LeaseSettings {
            name: name.to_string(),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// One replica's view of the Lease, advanced by [`LeaderElector::try_acquire_or_renew`].
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The last record seen and when (local clock) it was first seen.
    observed: Option<(LeaseSpec, Instant)>,
}

impl LeaderElector {
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: None,
        }
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// One round: create the Lease, renew it, take it over when expired or released, or
    /// stand by. Returns whether this replica holds the Lease now.
    pub async fn try_acquire_or_renew(
        &mut self,
        now: Instant,
        wall: Timestamp,
    ) -> Result<bool, kube::Error> {
        let Some(current) = self.api.get_opt(&self.settings.name).await? else {
            return self.create(now, wall).await;
        };
        let spec = current.spec.clone().unwrap_or_default();
        let seen_at = match &self.observed {
            Some((seen, at)) if *seen == spec => *at,
            _ => now,
        };
        self.observed = Some((spec.clone(), seen_at));

        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        let held_by_me = holder == Some(self.settings.identity.as_str());
        if let Some(holder) = holder.filter(|_| !held_by_me) {
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.settings.lease_duration, Duration::from_secs);
            if now < seen_at + duration {
                tracing::debug!(%holder, "lease held by another replica");
                return Ok(false);
            }
            tracing::info!(%holder, "lease expired; taking over");
        }

        let mut next = spec;
        if !held_by_me {
            next.acquire_time = Some(MicroTime(wall));
            next.lease_transitions = Some(next.lease_transitions.unwrap_or(0) + 1);
        }
        next.holder_identity = Some(self.settings.identity.clone());
        next.lease_duration_seconds = Some(self.lease_seconds());
        next.renew_time = Some(MicroTime(wall));
        self.replace(current, next, now).await
    }

    /// Gives the Lease up (on shutdown) so a standby takes over at once, not after expiry.
    pub async fn release(&mut self, wall: Timestamp) -> Result<(), kube::Error> {
        let Some(current) = self.api.get_opt(&self.settings.name).await? else {
            return Ok(());
        };
        let spec = current.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        let next = LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            renew_time: Some(MicroTime(wall)),
            ..spec
        };
        let lease = Lease {
            metadata: current.metadata,
            spec: Some(next),
        };
        self.api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await?;
        self.observed = None;
        Ok(())
    }

    async fn create(&mut self, now: Instant, wall: Timestamp) -> Result<bool, kube::Error> {
        let spec = LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(self.lease_seconds()),
            acquire_time: Some(MicroTime(wall)),
            renew_time: Some(MicroTime(wall)),
            lease_transitions: Some(0),
            ..Default::default()
        };
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.settings.name.clone()),
                namespace: Some(self.settings.namespace.clone()),
                ..Default::default()
            },
            spec: Some(spec),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(created) => {
                self.observed = Some((created.spec.unwrap_or_default(), now));
                Ok(true)
            }
            // Another replica created it first: it leads; look again next round.
            Err(error) if status_code(&error) == Some(409) => Ok(false),
            Err(error) => Err(error),
        }
    }

    async fn replace(
        &mut self,
        current: Lease,
        next: LeaseSpec,
        now: Instant,
    ) -> Result<bool, kube::Error> {
        // metadata.resourceVersion makes this a compare-and-swap: two replicas taking over
        // the same expired Lease cannot both succeed.
        let lease = Lease {
            metadata: current.metadata,
            spec: Some(next),
        };
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.observed = Some((written.spec.unwrap_or_default(), now));
                Ok(true)
            }
            Err(error) if status_code(&error) == Some(409) => Ok(false),
            Err(error) => Err(error),
        }
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// Whether this replica may write now; shared by the elector (writer) and the reconciler.
#[derive(Clone)]
pub struct Leadership {
    until: watch::Sender<Option<Instant>>,
}

impl Leadership {
    pub fn new() -> Self {
        Leadership {
            until: watch::Sender::new(None),
        }
    }

    /// Leadership that never ends: `render`-like one-shot use and tests of the write path.
    pub fn always() -> Self {
        let leadership = Leadership::new();
        leadership.lead_until(Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600));
        leadership
    }

    pub fn is_leading(&self) -> bool {
        self.remaining().is_some()
    }

    /// How long this replica may still write without another renewal; None when not leading.
    /// Every API call of the leader is bounded by this, so no write can land after the
    /// renew deadline (and so after a standby may have taken over).
    pub fn remaining(&self) -> Option<Duration> {
        let until = (*self.until.borrow())?;
        let now = Instant::now();
        (now < until).then(|| until - now)
    }

    /// Extends leadership; subscribers hear of it only when this replica was not leading.
    pub fn lead_until(&self, until: Instant) {
        let now = Instant::now();
        self.until.send_if_modified(|current| {
            let was_leading = matches!(*current, Some(previous) if now < previous);
            *current = Some(until);
            !was_leading
        });
    }

    pub fn step_down(&self) {
        self.until
            .send_if_modified(|current| current.take().is_some());
    }

    /// Notified when leadership is gained or given up (not on every renewal).
    pub fn subscribe(&self) -> watch::Receiver<Option<Instant>> {
        self.until.subscribe()
    }
}

impl Default for Leadership {
    fn default() -> Self {
        Leadership::new()
    }
}

/// Keeps trying to lead until `shutdown` fires, then releases the Lease if held.
pub async fn keep_leading(
    mut elector: LeaderElector,
    leadership: Leadership,
    mut shutdown: watch::Receiver<bool>,
    on_error: impl Fn(&kube::Error),
) {
    let retry_period = elector.settings().retry_period;
    let renew_deadline = elector.settings().renew_deadline;
    loop {
        let now = Instant::now();
        match elector.try_acquire_or_renew(now, Timestamp::now()).await {
            Ok(true) => {
                if !leadership.is_leading() {
                    tracing::info!(identity = %elector.settings().identity, "became leader");
                }
                leadership.lead_until(now + renew_deadline);
            }
            Ok(false) => {
                if leadership.is_leading() {
                    tracing::warn!("lost the lease; stopped writing");
                }
                leadership.step_down();
            }
            // Leadership, if any, runs out by itself at the renew deadline.
            Err(error) => {
                tracing::warn!(%error, "lease renewal failed");
                on_error(&error);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(retry_period) => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    let was_leading = leadership.is_leading();
    leadership.step_down();
    if was_leading {
        match elector.release(Timestamp::now()).await {
            Ok(()) => tracing::info!("released the lease"),
            Err(error) => {
                tracing::warn!(%error, "could not release the lease; it expires by itself")
            }
        }
    }
}
