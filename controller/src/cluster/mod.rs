//! `modelsplit run`: the planner as an in-cluster controller.
//!
//! - [`watch`]: reflectors on Namespaces, ServingRuntimes, InferenceServices and the
//!   managed WasmPlugins/VirtualServices; one debounced "changed" signal.
//! - [`reconcile`]: one pass, snapshot -> [`modelsplit_core::planner::plan`] -> writes and Events.
//! - [`apply`]: server-side apply (field manager `modelsplit`, forced), no-op skip, prune.
//! - [`events`]: Events on InferenceServices when a group's report changes.
//! - [`lease`]: Lease leader election; only the leader writes.
//! - [`metrics`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`filter_module`], [`filter_source`], [`filter_server`]: the filter module the controller
//!   ships with, published by default and served at `/filter/<sha256>.wasm` by every replica.
//! - [`preflight`]: missing CRDs and RBAC denials, reported before anything starts.
//! - [`rollouts`]: automated rollouts, judged from [`gateway_stats`], kept in
//!   [`rollout_state`].
//!
//! The loop itself ([`run`]) is thin glue; everything it calls is tested on its own
//! against a mock API server (controller/tests/cluster_*.rs).

pub mod apply;
pub mod cli;
pub mod error;
pub mod events;
pub mod filter_module;
pub mod filter_server;
pub mod filter_source;
pub mod gateway_stats;
pub mod kinds;
pub mod lease;
pub mod memory;
pub mod metrics;
pub mod preflight;
pub mod reconcile;
pub mod recorder;
pub mod retry;
pub mod rollout_state;
pub mod rollouts;
pub mod snapshot;
pub mod staging;
pub mod trim;
pub mod watch;

use std::net::SocketAddr;
use std::time::Duration;

use kube::Client;
use tokio::sync::watch as signal;
use tokio::time::Instant;

pub use error::ClusterError;
use error::ErrorKind;
use lease::{keep_leading, LeaderElector, Leadership, LeaseSettings};
use metrics::{Metrics, ReconcileResult};
use reconcile::Reconciler;
use retry::Backoff;
use watch::Scope;

use modelsplit_core::settings::Settings;

/// Everything `modelsplit run` is configured with.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub planner: Settings,
    pub scope: Scope,
    pub lease: LeaseSettings,
    /// Object names, scope and staging of this controller instance.
    pub publishing: reconcile::Publishing,
    pub metrics_addr: SocketAddr,
    /// The filter module served at `/filter/<sha256>.wasm` beside the metrics.
    pub served: Option<filter_module::FilterModule>,
    /// A full re-plan this often even without changes (repairs edits the watch missed).
    pub resync: Duration,
    /// Changes within this long of the first one are planned together (a pass starts at
    /// most this long after a change, however many follow).
    pub debounce: Duration,
    /// Where the gateway pods serve the statistics rollouts are judged from.
    pub gateway_stats: gateway_stats::StatsEndpoint,
}

/// Runs until `shutdown` turns true. Fails early, with a clear error, when a CRD is
/// missing or RBAC denies something the controller needs.
pub async fn run(
    client: Client,
    settings: RunSettings,
    shutdown: signal::Receiver<bool>,
) -> Result<(), ClusterError> {
    preflight::check(&client, &settings.lease.namespace, &settings.lease.name).await?;

    let metrics = Metrics::new();
    let server = metrics::bind(
        settings.metrics_addr,
        metrics.clone(),
        settings.served.clone(),
        shutdown.clone(),
    )
    .await?;
    let server = tokio::spawn(server);

    let leadership = Leadership::new();
    let elector = LeaderElector::new(client.clone(), settings.lease.clone());
    let lease_metrics = metrics.clone();
    let elector = tokio::spawn(keep_leading(
        elector,
        leadership.clone(),
        shutdown.clone(),
        move |_| lease_metrics.error(ErrorKind::Lease),
    ));

    let watchers = watch::start(&client, &settings.scope, metrics.clone());
    let mut stop = shutdown.clone();
    tokio::select! {
        _ = watchers.stores.ready() => {
            tracing::info!("every watch has listed its objects");
            metrics.set_ready(true);
        }
        _ = stop.wait_for(|s| *s) => {}
    }

    let mut reconciler = Reconciler::new(
        client,
        settings.planner.clone(),
        leadership.clone(),
        metrics.clone(),
        settings.lease.identity.clone(),
    )
    .with_publishing(settings.publishing.clone());
    let store = rollout_state::StateStore::new(
        reconciler.client.clone(),
        &settings.lease.namespace,
        &settings.publishing.instance,
    );
    reconciler = reconciler.with_rollouts(rollouts::ClusterRollouts::new(
        store,
        settings.gateway_stats.clone(),
    ));
    let mut leader_changes = leadership.subscribe();
    let mut resync = tokio::time::interval(settings.resync);
    // A long pass delays the next resync instead of causing a burst of them.
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let retry = Backoff {
        first_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(60),
        attempts: u32::MAX,
    };
    let mut failures = 0u32;
    let mut retry_at: Option<Instant> = None;
    // When a route kept for the grace period may go: plan again then, even if idle.
    let mut wake_at: Option<Instant> = None;
    // What the last pass wrote, until the watches show it.
    let mut written: Vec<apply::WrittenObject> = Vec::new();

    while !*stop.borrow() {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = watchers.changed.notified() => {
                debounce(&watchers.changed, settings.debounce).await;
            }
            _ = resync.tick() => {}
            _ = leader_changes.changed() => {}
            _ = sleep_until(retry_at) => {}
            _ = sleep_until(wake_at) => {}
        }
        wake_at = None;
        await_own_writes(&watchers, &written, WATCH_CATCH_UP).await;
        written.clear();
        let leading = leadership.is_leading();
        metrics.set_leader(leading);
        if !leading {
            continue;
        }
        match reconciler.reconcile_once(&watchers.stores.snapshot()).await {
            Ok(outcome) => {
                metrics.reconciled(ReconcileResult::Ok);
                written = outcome.written;
                failures = 0;
                retry_at = None;
                wake_at = outcome.wake_at.map(|at| {
                    let wait = at.duration_since(k8s_openapi::jiff::Timestamp::now());
                    let wait = std::time::Duration::try_from(wait).unwrap_or_default();
                    Instant::now() + wait + Duration::from_millis(50)
                });
                // A rollout in progress is judged again every second, edits or not.
                if outcome.rollouts_progressing {
                    let tick = Instant::now() + ROLLOUT_TICK;
                    wake_at = Some(wake_at.map_or(tick, |at| at.min(tick)));
                }
                tracing::debug!(
                    groups = outcome.plan.groups.len(),
                    events = outcome.events,
                    "reconciled"
                );
            }
            Err(error) => {
                metrics.reconciled(ReconcileResult::Error);
                metrics.error(error.kind());
                failures = failures.saturating_add(1);
                let delay = retry.delay_after(failures);
                tracing::warn!(%error, ?delay, "reconcile failed; retrying");
                retry_at = Some(Instant::now() + delay);
            }
        }
        // The pass's snapshot, plan and bodies are freed by now.
        memory::release_free_memory();
    }

    tracing::info!("shutting down");
    metrics.set_ready(false);
    watchers.task.abort();
    // The elector releases the Lease, so the standby takes over without waiting it out.
    let _ = elector.await;
    let _ = server.await;
    Ok(())
}

/// How long a pass waits for the watches to show the previous pass's writes: on a healthy
/// API server milliseconds; past this, it plans anyway (and a write is at worst repeated).
const WATCH_CATCH_UP: Duration = Duration::from_secs(2);

/// Waits until the watches show `written` (or `limit` passes). Without it, a pass that
/// starts right after one that wrote (an edit arrived meanwhile) plans from the objects as
/// they were and applies them all again: at 10,000 isvcs a 1 MB WasmPlugin and every
/// VirtualService of the burst. A change signal consumed here is not lost: the pass that
/// follows takes its snapshot after it.
async fn await_own_writes(
    watchers: &watch::Watchers,
    written: &[apply::WrittenObject],
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    while !watchers.stores.show(written) {
        tokio::select! {
            _ = watchers.changed.notified() => {}
            _ = tokio::time::sleep_until(deadline) => {
                tracing::debug!(objects = written.len(), "watches did not show this replica's writes in time; planning anyway");
                return;
            }
        }
    }
}

/// How often a rollout in progress is judged.
const ROLLOUT_TICK: Duration = Duration::from_secs(1);

/// Gathers the changes of one `quiet` interval into one pass: waits `quiet` after the
/// first change (however many follow: under churn, say the start-up burst, a pass still
/// starts within one interval), then takes the signal of the changes that arrived
/// meanwhile, since the snapshot taken next includes them.
async fn debounce(changed: &tokio::sync::Notify, quiet: Duration) {
    tokio::time::sleep(quiet).await;
    let _ = futures::FutureExt::now_or_never(changed.notified());
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A shutdown signal that turns true on SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
pub fn shutdown_on_signals() -> signal::Receiver<bool> {
    let (sender, receiver) = signal::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("termination signal received");
        let _ = sender.send(true);
    });
    receiver
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Notify;

    /// A change that arrives while a pass runs (no one waits on the signal then) is kept
    /// as a permit: the loop's next wait returns at once and plans it right after, after
    /// one quiet interval.
    #[tokio::test(start_paused = true)]
    async fn a_change_during_a_pass_is_planned_right_after_it() {
        let changed = Notify::new();
        // During the pass: the watcher signals, nobody is waiting.
        changed.notify_one();
        changed.notify_one();
        let start = Instant::now();
        tokio::time::timeout(Duration::from_millis(1), changed.notified())
            .await
            .expect("the permit is kept");
        debounce(&changed, Duration::from_millis(100)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        // The signals of the interval make one pass.
        assert!(
            tokio::time::timeout(Duration::from_millis(1), changed.notified())
                .await
                .is_err()
        );
    }

    /// A stream of changes delays a pass by one quiet interval, no more.
    #[tokio::test(start_paused = true)]
    async fn a_stream_of_changes_delays_a_pass_by_one_quiet_interval() {
        let changed = std::sync::Arc::new(Notify::new());
        let signal = changed.clone();
        let churn = tokio::spawn(async move {
            loop {
                signal.notify_one();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let start = Instant::now();
        debounce(&changed, Duration::from_millis(100)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        churn.abort();
    }
}
