//! `modelsplit run`: the planner as an in-cluster controller.
//!
//! - [`watch`]: reflectors on Namespaces, ServingRuntimes, InferenceServices and the
//!   managed WasmPlugins/VirtualServices; one debounced "changed" signal.
//! - [`reconcile`]: one pass, snapshot -> [`modelsplit_core::planner::plan`] -> writes and Events.
//! - [`apply`]: server-side apply (field manager `modelsplit`, forced), no-op skip, prune.
//! - [`events`]: Events on InferenceServices when a group's report changes.
//! - [`lease`]: Lease leader election; only the leader writes.
//! - [`metrics`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`preflight`]: missing CRDs and RBAC denials, reported before anything starts.
//!
//! The loop itself ([`run`]) is thin glue; everything it calls is tested on its own
//! against a mock API server (controller/tests/cluster_*.rs).

pub mod apply;
pub mod cli;
pub mod error;
pub mod events;
pub mod kinds;
pub mod lease;
pub mod metrics;
pub mod preflight;
pub mod reconcile;
pub mod recorder;
pub mod retry;
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
    /// A full re-plan this often even without changes (repairs edits the watch missed).
    pub resync: Duration,
    /// Changes closer together than this are planned once.
    pub debounce: Duration,
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
    let server = metrics::bind(settings.metrics_addr, metrics.clone(), shutdown.clone()).await?;
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
        let leading = leadership.is_leading();
        metrics.set_leader(leading);
        if !leading {
            continue;
        }
        match reconciler.reconcile_once(&watchers.stores.snapshot()).await {
            Ok(outcome) => {
                metrics.reconciled(ReconcileResult::Ok);
                failures = 0;
                retry_at = None;
                wake_at = outcome.wake_at.map(|at| {
                    let wait = at.duration_since(k8s_openapi::jiff::Timestamp::now());
                    let wait = std::time::Duration::try_from(wait).unwrap_or_default();
                    Instant::now() + wait + Duration::from_millis(50)
                });
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
    }

    tracing::info!("shutting down");
    metrics.set_ready(false);
    watchers.task.abort();
    // The elector releases the Lease, so the standby takes over without waiting it out.
    let _ = elector.await;
    let _ = server.await;
    Ok(())
}

/// Waits until no change arrived for `quiet`, at most 10 × `quiet` in all.
async fn debounce(changed: &tokio::sync::Notify, quiet: Duration) {
    let deadline = Instant::now() + quiet * 10;
    loop {
        let wait = quiet.min(deadline.saturating_duration_since(Instant::now()));
        if wait.is_zero()
            || tokio::time::timeout(wait, changed.notified())
                .await
                .is_err()
        {
            return;
        }
    }
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
