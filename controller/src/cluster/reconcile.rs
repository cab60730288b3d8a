//! One pass: snapshot -> plan -> writes, prunes and Events. The watch loop calls this on
//! every (debounced) change and on resync; tests call it directly with a mock API server.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use kube::Client;

use super::apply::{DesiredObject, ObjectKey, Outcome, Writer};
use super::error::ClusterError;
use super::events::{self, EventMemory};
use super::lease::Leadership;
use super::metrics::Metrics;
use super::retry::{with_backoff, Backoff};
use super::snapshot::Snapshot;
use crate::planner::{self, Plan};
use crate::settings::Settings;

/// The resources a plan wants, as apply bodies (WasmPlugins, then VirtualServices).
pub fn desired_objects(plan: &Plan) -> Vec<DesiredObject> {
    let plugins = plan.wasm_plugins.iter().map(serde_json::to_value);
    let services = plan.virtual_services.iter().map(serde_json::to_value);
    plugins
        .chain(services)
        .filter_map(Result::ok)
        .filter_map(DesiredObject::from_value)
        .collect()
}

/// What one pass did.
#[derive(Debug)]
pub struct ReconcileOutcome {
    pub plan: Plan,
    pub writes: Vec<(ObjectKey, Outcome)>,
    /// Events created in this pass.
    pub events: usize,
}

/// The state kept between passes: settings, and what Events were already sent.
pub struct Reconciler {
    pub client: Client,
    pub settings: Settings,
    pub leadership: Leadership,
    pub metrics: Metrics,
    /// `reportingInstance` of Events: this replica's identity.
    pub identity: String,
    pub backoff: Backoff,
    memory: EventMemory,
}

impl Reconciler {
    pub fn new(
        client: Client,
        settings: Settings,
        leadership: Leadership,
        metrics: Metrics,
        identity: String,
    ) -> Self {
        Reconciler {
            client,
            settings,
            leadership,
            metrics,
            identity,
            backoff: Backoff::default(),
            memory: EventMemory::default(),
        }
    }

    /// Plans from `snapshot` and makes the cluster match. Events are sent only when every
    /// write succeeded, so "ready" is never announced for a split that is not published.
    pub async fn reconcile_once(
        &mut self,
        snapshot: &Snapshot,
    ) -> Result<ReconcileOutcome, ClusterError> {
        let (observed, decode_errors) = snapshot.observed();
        for error in &decode_errors {
            tracing::warn!(object = %error.object, error = %error.message, "skipping an object that cannot be read");
            self.metrics.error("decode");
        }
        let previous = snapshot.previous_configs();
        let plan = planner::plan(&observed, &previous, &self.settings);
        self.count_groups(&plan);
        let published: Vec<_> = previous.into_values().collect();
        self.memory.seed_once(&plan.groups, &published);

        let writer = Writer {
            client: &self.client,
            leadership: &self.leadership,
            metrics: &self.metrics,
            backoff: self.backoff,
        };
        let writes = writer
            .sync(&desired_objects(&plan), &snapshot.managed)
            .await?;

        let announcements = self
            .memory
            .changes(&plan.groups, &plan.notices, &snapshot.isvc_uids());
        let mut sent = 0;
        let mut first_error = None;
        'announcements: for announcement in &announcements {
            for spec in &announcement.events {
                if !self.leadership.is_leading() {
                    return Err(ClusterError::NotLeader);
                }
                let wall = Timestamp::now();
                let result = with_backoff("create event", self.backoff, || {
                    events::publish(&self.client, spec, &self.identity, wall)
                })
                .await;
                if let Err(error) = result {
                    // Not remembered: the announcement is retried on the next pass.
                    tracing::warn!(%error, reason = spec.reason, "could not create an Event");
                    self.metrics.error("event");
                    first_error.get_or_insert(ClusterError::kube("create event", error));
                    continue 'announcements;
                }
                sent += 1;
            }
            tracing::info!(line = %announcement.said.line, "announced");
            self.memory.remember(announcement);
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(ReconcileOutcome {
                plan,
                writes,
                events: sent,
            }),
        }
    }

    fn count_groups(&self, plan: &Plan) {
        let mut counts: BTreeMap<&str, usize> = ["valid", "stale", "invalid", "ignored"]
            .into_iter()
            .map(|state| (state, 0))
            .collect();
        for group in &plan.groups {
            *counts.entry(group.state.label()).or_default() += 1;
        }
        self.metrics.set_groups(counts);
    }
}
