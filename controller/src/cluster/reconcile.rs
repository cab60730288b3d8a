//! One pass: snapshot -> plan -> staged writes (routes, then filter configs, then prunes)
//! -> Events, queued for the Event task ([`super::recorder`]) so that no pass waits for
//! them. The watch loop calls this on every (debounced) change, on resync, and when
//! a route kept for the grace period may go; tests call it directly.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use modelsplit_filter::config::FilterConfig;

use super::apply::{DesiredObject, ObjectKey, Outcome, WriteResult, Writer, WrittenObject};
use super::error::{ClusterError, ErrorKind};
use super::events::{EventMemory, Subject};
use super::kinds::ManagedKind;
use super::lease::Leadership;
use super::metrics::{Metrics, PassStage};
use super::recorder::{self, EventQueue, Limits};
use super::retry::Backoff;
use super::rollouts::ClusterRollouts;
use super::snapshot::Snapshot;
use super::staging::{self, Published, CONFIG_CHANGED_ANNOTATION};
use super::watch::Scope;
use modelsplit_core::encode::virtual_service::virtual_service;
use modelsplit_core::planner::{self, NamespaceRoutes, Plan};
use modelsplit_core::report::{Notice, NoticeReason, StateKind};
use modelsplit_core::resources::{GatewayFilter, ObjectKind, WasmPlugin};
use modelsplit_core::settings::{Delivery, Settings};

/// The resources a plan wants, as apply bodies (WasmPlugins or EnvoyFilters, then
/// VirtualServices), under the default instance name — what `render` prints.
pub fn desired_objects(plan: &Plan, delivery: Delivery) -> Vec<DesiredObject> {
    let plugins = plan
        .wasm_plugins
        .iter()
        .map(|plugin| GatewayFilter::deliver(plugin.clone(), delivery).to_value());
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
    /// Events queued for the Event task in this pass.
    pub events: usize,
    /// When a route kept only for the grace period may be removed: plan again then.
    pub wake_at: Option<Timestamp>,
    /// A rollout is moving: plan again in about a second.
    pub rollouts_progressing: bool,
    /// What this pass wrote: the next pass waits (briefly) for the watch to show it, so
    /// that it does not plan from the objects as they were and write them again.
    pub written: Vec<WrittenObject>,
}

/// Who this controller is among others on the same gateways, and how it stages writes.
#[derive(Debug, Clone)]
pub struct Publishing {
    /// Name of the WasmPlugin and VirtualServices this instance writes (and alone prunes).
    pub instance: String,
    /// The namespaces whose InferenceServices this instance watches; it never writes or
    /// removes a VirtualService outside them.
    pub scope: Scope,
    /// How long a route outlives the filter-config change that stopped using it.
    pub route_grace: Duration,
}

impl Default for Publishing {
    fn default() -> Self {
        Publishing {
            instance: modelsplit_core::resources::wasm_plugin::WASM_PLUGIN_NAME.to_string(),
            scope: Scope::AllNamespaces,
            route_grace: DEFAULT_ROUTE_GRACE,
        }
    }
}

/// Long enough for istiod's debounce (up to 10 s under churn) plus the push to the gateway.
pub const DEFAULT_ROUTE_GRACE: Duration = Duration::from_secs(15);

/// The state kept between passes: settings, and what Events were already sent.
pub struct Reconciler {
    pub client: Client,
    pub settings: Settings,
    pub publishing: Publishing,
    pub leadership: Leadership,
    pub metrics: Metrics,
    /// `reportingInstance` of Events: this replica's identity.
    pub identity: String,
    pub backoff: Backoff,
    memory: EventMemory,
    events: EventQueue,
    rollouts: Option<ClusterRollouts>,
}

impl Reconciler {
    pub fn new(
        client: Client,
        settings: Settings,
        leadership: Leadership,
        metrics: Metrics,
        identity: String,
    ) -> Self {
        // Ends with the reconciler (the queue is its only sender).
        let (events, _task) = recorder::spawn(
            client.clone(),
            leadership.clone(),
            metrics.clone(),
            identity.clone(),
            Limits::default(),
        );
        Reconciler {
            client,
            settings,
            publishing: Publishing::default(),
            leadership,
            metrics,
            identity,
            backoff: Backoff::default(),
            memory: EventMemory::default(),
            events,
            rollouts: None,
        }
    }

    /// Resolves once every Event queued so far was handled by the Event task.
    pub async fn events_sent(&self) {
        self.events.idle().await;
    }

    pub fn with_publishing(mut self, publishing: Publishing) -> Self {
        self.publishing = publishing;
        self
    }

    /// Follows the rollouts declared on InferenceServices (`modelsplit run` always does).
    pub fn with_rollouts(mut self, rollouts: ClusterRollouts) -> Self {
        self.rollouts = Some(rollouts);
        self
    }

    /// Plans from `snapshot` and moves the cluster towards it in stages, so that every
    /// member of every published filter config has its route at every moment. Events are
    /// queued after the writes (the Event task creates them later); a group whose routes could not be written is reported.
    pub async fn reconcile_once(
        &mut self,
        snapshot: &Snapshot,
    ) -> Result<ReconcileOutcome, ClusterError> {
        let instance = self.publishing.instance.clone();
        let mut clock = StageClock::start();
        let (observed, decode_errors) = snapshot.observed();
        for error in &decode_errors {
            tracing::warn!(object = %error.object, error = %error.message, "skipping an object that cannot be read");
            self.metrics.error(ErrorKind::Decode);
        }
        let published = snapshot.published(&instance, self.settings.delivery);
        let previous: planner::PreviousConfigs = published
            .configs
            .iter()
            .map(|(ns, p)| (ns.clone(), p.config.clone()))
            .collect();
        let mut plan = planner::plan(&observed, &previous, &self.settings);
        let mut rollouts_progressing = false;
        if let Some(rollouts) = &mut self.rollouts {
            let selector = self
                .settings
                .selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let judged = rollouts
                .judge(
                    &self.client,
                    &observed,
                    &mut plan,
                    &selector,
                    &snapshot.isvc_uids(),
                )
                .await?;
            rollouts_progressing = judged.progressing;
            for spec in judged.events {
                self.events.offer(spec);
            }
        }
        self.count_groups(&plan);
        let served: Vec<_> = previous.values().cloned().collect();
        self.memory.seed_once(&plan.groups, &served);
        // Planned and judged: the decoded isvcs and the configs' copies (tens of MiB at
        // 10,000 isvcs) are not needed by the writes, which build bodies of their own.
        drop((observed, previous, served));
        let planned = clock.lap(&self.metrics, PassStage::Plan);

        let writer = Writer {
            client: &self.client,
            leadership: &self.leadership,
            metrics: &self.metrics,
            backoff: self.backoff,
        };
        let now = Timestamp::now();
        let grace = self.publishing.route_grace;
        let mut writes: Vec<WriteResult> = Vec::new();

        // Stage 1: routes for old and new members.
        let stage = staging::route_stage(&plan, &published, now, grace);
        let in_scope: Vec<&NamespaceRoutes> = stage
            .routes
            .iter()
            .filter(|r| self.publishing.scope.contains(&r.namespace))
            .collect();
        let build = |routes: &&NamespaceRoutes| self.route_object(routes);
        let route_results = writer
            .apply_each(&in_scope, &build, &snapshot.managed)
            .await;
        let mut confirmed: BTreeSet<String> = route_results
            .iter()
            .filter(|(_, result)| result.is_ok())
            .map(|(key, _)| key.namespace.clone())
            .collect();
        // A namespace in scope that the plan no longer routes nor groups (it left the mesh,
        // lost every model) has no route to write: dropping its published groups needs none.
        let routed: BTreeSet<&str> = stage.routes.iter().map(|r| r.namespace.as_str()).collect();
        let grouped: BTreeSet<&str> = plan
            .gateways
            .iter()
            .flat_map(|g| &g.config.groups)
            .map(|g| g.namespace.as_str())
            .collect();
        let leaving: Vec<String> = published
            .configs
            .values()
            .flat_map(|p| &p.config.groups)
            .map(|g| g.namespace.clone())
            .filter(|ns| {
                self.publishing.scope.contains(ns)
                    && !routed.contains(ns.as_str())
                    && !grouped.contains(ns.as_str())
            })
            .collect();
        confirmed.extend(leaving);
        let held_back: BTreeSet<String> = route_results
            .iter()
            .filter(|(_, result)| result.is_err())
            .map(|(key, _)| key.namespace.clone())
            .collect();
        for (key, result) in &route_results {
            if let Err(error) = result {
                plan.notices.extend(held_back_notices(
                    &plan,
                    &key.namespace,
                    &key.to_string(),
                    error,
                ));
            }
        }
        writes.extend(route_results);
        let routes_took = clock.lap(&self.metrics, PassStage::Routes);
        self.stop_if_not_leading(&writes)?;

        // Stage 2: filter configs, moving only groups whose routes are in place.
        let configs = staging::config_stage(&plan, &published, &confirmed);
        let mut wanted: BTreeSet<ObjectKey> = in_scope
            .iter()
            .map(|r| ObjectKey {
                kind: ManagedKind::VirtualService,
                namespace: r.namespace.clone(),
                name: instance.clone(),
            })
            .collect();
        let mut plugin_objects = Vec::new();
        let mut wake_at = stage.wake_at;
        for (plugin_namespace, config) in &configs {
            if config.groups.is_empty() {
                // A WasmPlugin whose groups all went is emptied, not deleted, while the
                // gateway may still run its last config: it carries when that changed, so
                // the routes it named outlive it by the grace period. Then both go.
                let emptied = published.configs.get(plugin_namespace).and_then(|p| {
                    if !p.config.groups.is_empty() {
                        return Some(now + grace);
                    }
                    p.changed_at.map(|c| c + grace).filter(|until| now < *until)
                });
                let Some(until) = emptied else {
                    continue;
                };
                wake_at = Some(wake_at.map_or(until, |w| w.min(until)));
            }
            if let Some(object) = self.plugin_object(plugin_namespace, config, &published, now) {
                wanted.insert(object.key.clone());
                plugin_objects.push(object);
            }
        }
        let plugin_results = writer.apply_all(&plugin_objects, &snapshot.managed).await;
        let configs_took = clock.lap(&self.metrics, PassStage::FilterConfigs);
        let changed_configs = plugin_results
            .iter()
            .filter(|(_, r)| matches!(r, Ok(Outcome::Created | Outcome::Updated)))
            .count();
        if changed_configs > 0 {
            self.metrics.published_filter_config();
            // When an edit reached the API, and how much of that was ours (the rest is istiod
            // and the gateway): one line per pass that changed a filter config.
            tracing::info!(
                filter_configs = changed_configs,
                plan_ms = planned.as_millis() as u64,
                routes_ms = routes_took.as_millis() as u64,
                filter_configs_ms = configs_took.as_millis() as u64,
                "published"
            );
        }
        writes.extend(plugin_results);
        self.stop_if_not_leading(&writes)?;

        // Stage 3: prune — only when everything above succeeded, only this instance's
        // objects, only VirtualServices in scope, and never routes still needed.
        let failed = writes.iter().any(|(_, r)| r.is_err());
        if !failed {
            let retained = staging::retained_namespaces(&plan, &published, now, grace);
            let prune: Vec<ObjectKey> = snapshot
                .managed
                .keys()
                .filter(|key| key.name == instance && !wanted.contains(*key))
                .filter(|key| match key.kind {
                    ManagedKind::VirtualService => {
                        self.publishing.scope.contains(&key.namespace)
                            && !retained.contains(&key.namespace)
                    }
                    // The other delivery's object goes once this one is written.
                    ManagedKind::WasmPlugin | ManagedKind::EnvoyFilter => true,
                })
                .cloned()
                .collect();
            writes.extend(writer.prune_all(&prune, &snapshot.managed).await);
            clock.lap(&self.metrics, PassStage::Prune);
            self.stop_if_not_leading(&writes)?;
        }

        let sent = self.announce(&plan, snapshot, &held_back);
        let first_error = writes
            .iter()
            .find_map(|(_, r)| r.as_ref().err())
            .map(|e| e.to_string());
        let written = writes
            .iter()
            .filter(|(_, r)| matches!(r, Ok(Outcome::Created | Outcome::Updated)))
            .map(|(key, _)| WrittenObject {
                key: key.clone(),
                seen_version: snapshot
                    .managed
                    .get(key)
                    .and_then(|o| o.metadata.resource_version.clone()),
            })
            .collect();
        let outcome = ReconcileOutcome {
            written,
            writes: writes
                .into_iter()
                .filter_map(|(key, r)| r.ok().map(|o| (key, o)))
                .collect(),
            plan,
            events: sent,
            wake_at,
            rollouts_progressing,
        };
        match first_error {
            Some(message) => Err(ClusterError::Incomplete { message }),
            None => Ok(outcome),
        }
    }

    fn stop_if_not_leading(&self, writes: &[WriteResult]) -> Result<(), ClusterError> {
        if writes
            .iter()
            .any(|(_, r)| matches!(r, Err(ClusterError::NotLeader)))
        {
            return Err(ClusterError::NotLeader);
        }
        Ok(())
    }

    /// The VirtualService of one namespace under this instance's name.
    fn route_object(&self, routes: &NamespaceRoutes) -> Option<DesiredObject> {
        let mut service = virtual_service(routes);
        service.metadata.name = Some(self.publishing.instance.clone());
        DesiredObject::from_value(serde_json::to_value(&service).ok()?)
    }

    /// The WasmPlugin (or EnvoyFilter) of one gateway under this instance's name, stamped
    /// with when its filter config last changed (kept as published when unchanged).
    fn plugin_object(
        &self,
        plugin_namespace: &str,
        config: &FilterConfig,
        published: &Published,
        now: Timestamp,
    ) -> Option<DesiredObject> {
        let mut plugin = WasmPlugin::for_gateway(plugin_namespace, config, &self.settings);
        plugin.metadata.name = Some(self.publishing.instance.clone());
        let changed_at = match published.configs.get(plugin_namespace) {
            Some(p) if &p.config == config => p.changed_at.unwrap_or(now),
            _ => now,
        };
        plugin.metadata.annotations = Some(BTreeMap::from([(
            CONFIG_CHANGED_ANNOTATION.to_string(),
            changed_at.to_string(),
        )]));
        let object = GatewayFilter::deliver(plugin, self.settings.delivery);
        DesiredObject::from_value(object.to_value().ok()?)
    }

    /// Queues the Events the plan's report calls for (never waiting: the Event task
    /// creates them); returns how many were queued. Groups of `held_back` namespaces (their
    /// routes could not be written) kept their published split: their report is not
    /// announced (nor remembered) until it holds. An announcement is remembered as said
    /// once queued; one the full queue dropped is counted, not retried.
    fn announce(
        &mut self,
        plan: &Plan,
        snapshot: &Snapshot,
        held_back: &BTreeSet<String>,
    ) -> usize {
        let mut announcements =
            self.memory
                .changes(&plan.groups, &plan.notices, &snapshot.isvc_uids());
        announcements.retain(|a| {
            !matches!(&a.subject, Subject::Group { namespace, .. } if held_back.contains(namespace))
        });
        let mut queued = 0;
        for announcement in &announcements {
            for spec in &announcement.events {
                if self.events.offer(spec.clone()) {
                    queued += 1;
                }
            }
            tracing::info!(line = %announcement.said.line, "announced");
            self.memory.remember(announcement);
        }
        queued
    }

    fn count_groups(&self, plan: &Plan) {
        let mut counts: BTreeMap<StateKind, usize> =
            StateKind::ALL.into_iter().map(|state| (state, 0)).collect();
        for group in &plan.groups {
            *counts.entry(group.state.kind()).or_default() += 1;
        }
        self.metrics.set_groups(counts);
    }
}

/// Notices on the InferenceServices of `namespace`'s groups: their routes could not be
/// written, so their split did not change.
fn held_back_notices(
    plan: &Plan,
    namespace: &str,
    object: &str,
    error: &ClusterError,
) -> Vec<Notice> {
    plan.groups
        .iter()
        .filter(|g| g.namespace == namespace)
        .flat_map(|g| {
            g.members.iter().map(move |member| Notice {
                kind: ObjectKind::InferenceService,
                reason: NoticeReason::RoutesNotWritten,
                namespace: namespace.to_string(),
                name: member.clone(),
                message: format!(
                    "routes of group {} could not be written ({object}: {error}); the gateway keeps the group's last published split until they can",
                    g.name
                ),
            })
        })
        .collect()
}

/// Times the stages of one pass into `modelsplit_reconcile_stage_seconds`.
struct StageClock {
    since: std::time::Instant,
}

impl StageClock {
    fn start() -> Self {
        StageClock {
            since: std::time::Instant::now(),
        }
    }

    /// The time since the previous lap (or the start), recorded as `stage`.
    fn lap(&mut self, metrics: &Metrics, stage: PassStage) -> std::time::Duration {
        let now = std::time::Instant::now();
        let took = now - self.since;
        self.since = now;
        metrics.observe_stage(stage, took);
        took
    }
}
