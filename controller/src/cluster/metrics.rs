//! Prometheus metrics and the `/metrics`, `/healthz`, `/readyz` endpoints.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::error::ClusterError;

type Labels = Vec<(&'static str, String)>;

/// Everything `/metrics` reports. Cheap to clone: all handles share their values.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciles: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    groups: Family<Labels, Gauge>,
    writes: Family<Labels, Counter>,
    apply_seconds: Histogram,
    leader: Gauge,
    ready: Arc<AtomicBool>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("modelsplit");
        let reconciles = Family::<Labels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles run, by result (ok, error)",
            reconciles.clone(),
        );
        let errors = Family::<Labels, Counter>::default();
        registry.register(
            "errors",
            "Errors by kind (conflict, server, api, transport, forbidden, not_leader, watch, lease, event, decode)",
            errors.clone(),
        );
        let groups = Family::<Labels, Gauge>::default();
        registry.register(
            "groups",
            "Groups by state after the last reconcile",
            groups.clone(),
        );
        let writes = Family::<Labels, Counter>::default();
        registry.register(
            "writes",
            "Objects written or skipped, by kind and action (created, updated, unchanged, pruned)",
            writes.clone(),
        );
        // 5 ms .. ~10 s
        let apply_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        registry.register(
            "apply_duration_seconds",
            "Latency of one server-side apply or delete, retries included",
            apply_seconds.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 when this replica holds the lease and writes",
            leader.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            reconciles,
            errors,
            groups,
            writes,
            apply_seconds,
            leader,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn reconciled(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }

    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc();
    }

    pub fn wrote(&self, kind: &str, action: &str) {
        self.writes
            .get_or_create(&vec![
                ("kind", kind.to_string()),
                ("action", action.to_string()),
            ])
            .inc();
    }

    pub fn observe_apply(&self, took: Duration) {
        self.apply_seconds.observe(took.as_secs_f64());
    }

    /// Replaces the per-state group counts (states that vanished drop to 0).
    pub fn set_groups<'a>(&self, counts: impl IntoIterator<Item = (&'a str, usize)>) {
        self.groups.clear();
        for (state, count) in counts {
            self.groups
                .get_or_create(&vec![("state", state.to_string())])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Ready once the watches have listed everything (a standby is ready too).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The HTTP routes of the metrics server.
pub fn router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readiness))
        .with_state(metrics)
}

async fn metrics_text(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
}

async fn readiness(State(metrics): State<Metrics>) -> impl IntoResponse {
    if metrics.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first list of every watched resource",
        )
    }
}

/// Binds `addr` (errors at startup, not later) and returns the serving future.
pub async fn bind(
    addr: SocketAddr,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) -> Result<impl std::future::Future<Output = ()>, ClusterError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ClusterError::MetricsServer {
            addr: addr.to_string(),
            source,
        })?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    Ok(async move {
        let server = axum::serve(listener, router(metrics)).with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        });
        if let Err(error) = server.await {
            tracing::warn!(%error, "metrics server stopped");
        }
    })
}
