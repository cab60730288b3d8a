//! Prometheus metrics and the `/metrics`, `/healthz`, `/readyz` endpoints.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::apply::Outcome;
use super::error::{ClusterError, ErrorKind};
use super::filter_module::FilterModule;
use super::filter_server;
use super::kinds::ManagedKind;
use modelsplit_core::report::StateKind;

/// How a reconcile pass ended: the `result` label of `modelsplit_reconciles_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReconcileResult {
    Ok,
    Error,
}

impl ReconcileResult {
    pub const fn as_str(self) -> &'static str {
        match self {
            ReconcileResult::Ok => "ok",
            ReconcileResult::Error => "error",
        }
    }
}

/// What became of one Event: the `result` label of `modelsplit_events_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventResult {
    /// Created in the API.
    Created,
    /// Dropped: the same as the last Event on its object, lately.
    Duplicate,
    /// Dropped: its object had too many Events lately.
    RateLimited,
    /// Dropped by the pass: the Event task's queue was full.
    QueueFull,
    /// Dropped: this replica no longer leads.
    NotLeader,
    /// The API refused it (after retries).
    Failed,
}

impl EventResult {
    pub const fn as_str(self) -> &'static str {
        match self {
            EventResult::Created => "created",
            EventResult::Duplicate => "duplicate",
            EventResult::RateLimited => "rate_limited",
            EventResult::QueueFull => "queue_full",
            EventResult::NotLeader => "not_leader",
            EventResult::Failed => "failed",
        }
    }
}

/// A stage of a reconcile pass: the `stage` label of `modelsplit_reconcile_stage_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PassStage {
    /// Planning from the watched objects (no I/O).
    Plan,
    /// Writing VirtualServices (stage 1).
    Routes,
    /// Writing WasmPlugins (stage 2).
    FilterConfigs,
    /// Deleting what is no longer wanted (stage 3).
    Prune,
}

impl PassStage {
    pub const fn as_str(self) -> &'static str {
        match self {
            PassStage::Plan => "plan",
            PassStage::Routes => "routes",
            PassStage::FilterConfigs => "filter_configs",
            PassStage::Prune => "prune",
        }
    }
}

/// 1 ms .. ~16 s
fn stage_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// A group state as a label value (the state's word; the type lives in the core crate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct StateLabel(StateKind);

impl StateLabel {
    const fn as_str(self) -> &'static str {
        self.0.as_str()
    }
}

/// Label values are the words the enums define (snake_case, or the Kubernetes kind);
/// the derive of `EncodeLabelValue` would write the variant names instead.
macro_rules! label_values {
    ($($type:ty => $word:path),* $(,)?) => {$(
        impl EncodeLabelValue for $type {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                EncodeLabelValue::encode(&$word(*self), encoder)
            }
        }
    )*};
}

label_values! {
    ReconcileResult => ReconcileResult::as_str,
    EventResult => EventResult::as_str,
    ErrorKind => ErrorKind::metric_label,
    StateLabel => StateLabel::as_str,
    PassStage => PassStage::as_str,
    ManagedKind => ManagedKind::kind,
    Outcome => Outcome::as_str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReconcileLabels {
    result: ReconcileResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EventLabels {
    result: EventResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    kind: ErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct GroupLabels {
    state: StateLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StageLabels {
    stage: PassStage,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WriteLabels {
    kind: ManagedKind,
    action: Outcome,
}

/// Everything `/metrics` reports. Cheap to clone: all handles share their values.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciles: Family<ReconcileLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    events: Family<EventLabels, Counter>,
    groups: Family<GroupLabels, Gauge>,
    writes: Family<WriteLabels, Counter>,
    apply_seconds: Histogram,
    stage_seconds: Family<StageLabels, Histogram, fn() -> Histogram>,
    published_at: Gauge<f64, AtomicU64>,
    leader: Gauge,
    ready: Arc<AtomicBool>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("modelsplit");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles run, by result (ok, error)",
            reconciles.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "errors",
            "Errors by kind (conflict, server, api, transport, forbidden, not_leader, watch, lease, event, decode)",
            errors.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Events handed to the Event task, by result (created, duplicate, rate_limited, queue_full, not_leader, failed)",
            events.clone(),
        );
        let groups = Family::<GroupLabels, Gauge>::default();
        registry.register(
            "groups",
            "Groups by state after the last reconcile",
            groups.clone(),
        );
        let writes = Family::<WriteLabels, Counter>::default();
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
        let stage_seconds: Family<StageLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(stage_histogram);
        registry.register(
            "reconcile_stage_seconds",
            "Time a reconcile pass spent per stage (plan, routes, filter_configs, prune)",
            stage_seconds.clone(),
        );
        let published_at = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "filter_config_published_timestamp_seconds",
            "When a changed filter config (WasmPlugin) was last written, in seconds since the Unix epoch",
            published_at.clone(),
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
            events,
            groups,
            writes,
            apply_seconds,
            stage_seconds,
            published_at,
            leader,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn reconciled(&self, result: ReconcileResult) {
        self.reconciles
            .get_or_create(&ReconcileLabels { result })
            .inc();
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors.get_or_create(&ErrorLabels { kind }).inc();
    }

    pub fn event(&self, result: EventResult) {
        self.events.get_or_create(&EventLabels { result }).inc();
    }

    pub fn wrote(&self, kind: ManagedKind, action: Outcome) {
        self.writes
            .get_or_create(&WriteLabels { kind, action })
            .inc();
    }

    pub fn observe_apply(&self, took: Duration) {
        self.apply_seconds.observe(took.as_secs_f64());
    }

    pub fn observe_stage(&self, stage: PassStage, took: Duration) {
        self.stage_seconds
            .get_or_create(&StageLabels { stage })
            .observe(took.as_secs_f64());
    }

    /// A changed filter config was written just now.
    pub fn published_filter_config(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.published_at.set(now.as_secs_f64());
    }

    /// Replaces the per-state group counts (states that vanished drop to 0).
    pub fn set_groups(&self, counts: impl IntoIterator<Item = (StateKind, usize)>) {
        self.groups.clear();
        for (state, count) in counts {
            self.groups
                .get_or_create(&GroupLabels {
                    state: StateLabel(state),
                })
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

/// The HTTP routes of the metrics server, and the filter module's when one is served.
pub fn router(metrics: Metrics, served: Option<FilterModule>) -> Router {
    let router = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readiness))
        .with_state(metrics);
    match served {
        Some(module) => router.merge(filter_server::router(module)),
        None => router,
    }
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
    served: Option<FilterModule>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<impl std::future::Future<Output = ()>, ClusterError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ClusterError::MetricsServer {
            addr: addr.to_string(),
            source,
        })?;
    match &served {
        Some(module) => {
            tracing::info!(%addr, filter = %module.served_path(), "serving /metrics, /healthz, /readyz and the filter module")
        }
        None => tracing::info!(%addr, "serving /metrics, /healthz, /readyz"),
    }
    Ok(async move {
        let server =
            axum::serve(listener, router(metrics, served)).with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            });
        if let Err(error) = server.await {
            tracing::warn!(%error, "metrics server stopped");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_labels_and_values_as_dashboards_expect() {
        let metrics = Metrics::new();
        metrics.reconciled(ReconcileResult::Ok);
        metrics.reconciled(ReconcileResult::Ok);
        metrics.reconciled(ReconcileResult::Error);
        let errors = [
            (ErrorKind::CrdMissing, "crd_missing"),
            (ErrorKind::Forbidden, "forbidden"),
            (ErrorKind::Conflict, "conflict"),
            (ErrorKind::Server, "server"),
            (ErrorKind::Api, "api"),
            (ErrorKind::Transport, "transport"),
            (ErrorKind::NotLeader, "not_leader"),
            (ErrorKind::Timeout, "timeout"),
            (ErrorKind::Incomplete, "incomplete"),
            (ErrorKind::MetricsServer, "metrics_server"),
            (ErrorKind::Watch, "watch"),
            (ErrorKind::Lease, "lease"),
            (ErrorKind::Event, "event"),
            (ErrorKind::Decode, "decode"),
        ];
        for (kind, _) in errors {
            metrics.error(kind);
        }
        let writes = [
            (ManagedKind::WasmPlugin, Outcome::Created),
            (ManagedKind::WasmPlugin, Outcome::Unchanged),
            (ManagedKind::VirtualService, Outcome::Updated),
            (ManagedKind::VirtualService, Outcome::Pruned),
        ];
        for (kind, action) in writes {
            metrics.wrote(kind, action);
        }
        metrics.set_groups([
            (StateKind::Valid, 3),
            (StateKind::Stale, 1),
            (StateKind::Invalid, 0),
            (StateKind::Ignored, 2),
        ]);
        metrics.set_leader(true);
        metrics.observe_stage(PassStage::Plan, Duration::from_millis(3));
        metrics.observe_stage(PassStage::Routes, Duration::from_millis(40));
        metrics.published_filter_config();

        let text = metrics.render();
        let published: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("modelsplit_filter_config_published_timestamp_seconds "))
            .and_then(|v| v.parse().ok())
            .expect("the published-at gauge");
        assert!(published > 1.7e9, "seconds since the epoch: {published}");
        let mut expected = vec![
            "modelsplit_reconciles_total{result=\"ok\"} 2".to_string(),
            "modelsplit_reconciles_total{result=\"error\"} 1".to_string(),
            "modelsplit_writes_total{kind=\"WasmPlugin\",action=\"created\"} 1".to_string(),
            "modelsplit_writes_total{kind=\"WasmPlugin\",action=\"unchanged\"} 1".to_string(),
            "modelsplit_writes_total{kind=\"VirtualService\",action=\"updated\"} 1".to_string(),
            "modelsplit_writes_total{kind=\"VirtualService\",action=\"pruned\"} 1".to_string(),
            "modelsplit_groups{state=\"valid\"} 3".to_string(),
            "modelsplit_groups{state=\"stale\"} 1".to_string(),
            "modelsplit_groups{state=\"invalid\"} 0".to_string(),
            "modelsplit_groups{state=\"ignored\"} 2".to_string(),
            "modelsplit_leader 1".to_string(),
            "# TYPE modelsplit_reconciles counter".to_string(),
            "# HELP modelsplit_reconciles Reconciles run, by result (ok, error).".to_string(),
            "# TYPE modelsplit_groups gauge".to_string(),
            "modelsplit_reconcile_stage_seconds_count{stage=\"plan\"} 1".to_string(),
            "modelsplit_reconcile_stage_seconds_count{stage=\"routes\"} 1".to_string(),
            "modelsplit_reconcile_stage_seconds_bucket{le=\"0.004\",stage=\"plan\"} 1".to_string(),
            "modelsplit_reconcile_stage_seconds_bucket{le=\"0.032\",stage=\"routes\"} 0"
                .to_string(),
        ];
        expected.extend(
            errors
                .iter()
                .map(|(_, label)| format!("modelsplit_errors_total{{kind=\"{label}\"}} 1")),
        );
        for line in &expected {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        let samples = text.lines().filter(|l| !l.starts_with('#')).count();
        // 2 results, 14 error kinds, 4 writes, 4 states, leader, the apply histogram's
        // 12 buckets + inf + sum + count, two stages' 15 buckets + inf + sum + count, and
        // the published-at gauge.
        assert_eq!(samples, 2 + 14 + 4 + 4 + 1 + 15 + 2 * 18 + 1, "{text}");
    }
}
