//! `modelsplit run`'s automated rollouts: the shared driver ([`crate::rollouts`]) fed with
//! the gateway pods' numbers ([`super::gateway_stats`]), its state kept in a ConfigMap
//! ([`super::rollout_state`]), each start, step and decision logged and sent as an Event
//! on the canary InferenceService.

use std::time::{SystemTime, UNIX_EPOCH};

use kube::Client;
use modelsplit_core::planner::{Observed, Plan};
use modelsplit_core::resources::ObjectKind;

use super::error::ClusterError;
use super::events::{reference, EventReason, EventSpec, IsvcUids};
use super::gateway_stats::{scrape, StatsEndpoint};
use super::rollout_state::StateStore;
use crate::rollouts::{GatewayNumbers, LineKind, RolloutLine, Rollouts};

/// The rollouts of one controller instance.
pub struct ClusterRollouts {
    driver: Rollouts,
    store: StateStore,
    endpoint: StatsEndpoint,
    /// The kept states were read (they are read once, before the first judgement).
    loaded: bool,
}

/// What judging the rollouts did in one pass.
#[derive(Debug, Default)]
pub struct Judged {
    pub events: Vec<EventSpec>,
    /// A rollout is moving: judge again in about a second.
    pub progressing: bool,
}

impl ClusterRollouts {
    pub fn new(store: StateStore, endpoint: StatsEndpoint) -> Self {
        ClusterRollouts {
            driver: Rollouts::default(),
            store,
            endpoint,
            loaded: false,
        }
    }

    /// Judges every declared rollout and gives its group its step's weights in `plan`.
    /// `selector` is the gateway pods' label selector (the WasmPlugins' one). Fails only
    /// when the kept state cannot be read: the pass then publishes nothing and is retried.
    pub async fn judge(
        &mut self,
        client: &Client,
        observed: &Observed,
        plan: &mut Plan,
        selector: &str,
        uids: &IsvcUids,
    ) -> Result<Judged, ClusterError> {
        if !self.loaded {
            if !self.driver.wanted(observed) {
                return Ok(Judged::default());
            }
            let states = self
                .store
                .load()
                .await
                .map_err(|source| ClusterError::Kube {
                    action: format!(
                        "reading the rollouts' state (ConfigMap {})",
                        self.store.name()
                    ),
                    source,
                })?;
            self.driver = Rollouts::new(states);
            self.loaded = true;
        }
        if !self.driver.wanted(observed) {
            return Ok(Judged::default());
        }
        let gateways: Vec<(String, String)> = plan
            .gateways
            .iter()
            .filter(|g| !g.config.groups.is_empty())
            .map(|g| (g.plugin_namespace.clone(), selector.to_string()))
            .collect();
        let numbers = scrape(client, &gateways, &self.endpoint).await;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let (lines, changed) = self.driver.apply(
            observed,
            plan,
            numbers
                .as_ref()
                .map(|n| n as &dyn GatewayNumbers)
                .map_err(Clone::clone),
            now,
        );
        if changed {
            if let Err(error) = self.store.save(self.driver.states()).await {
                tracing::warn!(configmap = self.store.name(), %error, "cannot keep the rollouts' state; a restart would start them over");
            }
        }
        Ok(Judged {
            events: lines.iter().filter_map(|l| event(l, uids)).collect(),
            progressing: self.driver.progressing(),
        })
    }
}

/// Logs `line`; the Event it makes, if any (holding lines are only logged).
fn event(line: &RolloutLine, uids: &IsvcUids) -> Option<EventSpec> {
    let reason = match line.kind {
        LineKind::Holding => {
            tracing::debug!(line = %line.text, "rollout");
            return None;
        }
        LineKind::Started => EventReason::RolloutStarted,
        LineKind::Advanced => EventReason::RolloutAdvanced,
        LineKind::Promoted => EventReason::RolloutPromoted,
        LineKind::RolledBack => EventReason::RolloutRolledBack,
        LineKind::Waiting => EventReason::RolloutWaiting,
        LineKind::Ignored => EventReason::RolloutIgnored,
        LineKind::Removed => EventReason::RolloutRemoved,
    };
    tracing::info!(line = %line.text, %reason, "rollout");
    let canary = line.canary.as_deref()?;
    Some(EventSpec::new(
        reference(ObjectKind::InferenceService, &line.namespace, canary, uids),
        reason,
        line.text.clone(),
    ))
}
