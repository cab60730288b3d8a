//! A ModelMesh stand-in for one namespace: KServe v2 REST (HTTP/1.1) and gRPC
//! `inference.GRPCInferenceService` (h2c), answering as the model it was asked for.
//!
//! It plays `modelmesh-serving.<ns>`: the gateway must deliver every request to the
//! right namespace with the right model, and the stand-in makes that observable —
//! each answer names the namespace and the model, REST answers echo the exact path
//! received, and every request is kept in a [`Journal`] the tests can read.

mod grpc;
pub use grpc::fnv1a;
mod rest;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Response header (REST and gRPC) naming the stand-in's namespace.
pub const NAMESPACE_HEADER: &str = "x-standin-namespace";
/// Response header (REST and gRPC) naming the model that answered.
pub const MODEL_HEADER: &str = "x-standin-model";
/// gRPC request header ModelMesh reads the model from when `model_name` is empty.
pub const VMODEL_HEADER: &str = "mm-vmodel-id";

/// What one stand-in serves.
#[derive(Debug, Clone)]
pub struct StandInConfig {
    pub namespace: String,
    /// `None`: any model name is served. `Some`: only these; others get 404 / NOT_FOUND.
    pub models: Option<BTreeSet<String>>,
    /// A model that fails every n-th request it gets (REST 503, gRPC UNAVAILABLE): a
    /// canary answering worse than the stable member, deterministically.
    pub failing: Option<(String, u64)>,
}

impl StandInConfig {
    /// A stand-in for `namespace` that serves any model.
    pub fn any_model(namespace: &str) -> Self {
        StandInConfig {
            namespace: namespace.to_string(),
            models: None,
            failing: None,
        }
    }

    /// A stand-in for `namespace` that knows only `models`.
    pub fn only(namespace: &str, models: &[&str]) -> Self {
        StandInConfig {
            namespace: namespace.to_string(),
            models: Some(models.iter().map(|m| m.to_string()).collect()),
            failing: None,
        }
    }

    /// The same, with `model` failing every `n`-th request (n >= 1).
    pub fn failing_every(mut self, model: &str, n: u64) -> Self {
        self.failing = Some((model.to_string(), n.max(1)));
        self
    }

    fn serves(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|m| m.contains(model))
    }
}

/// The protocol a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Rest,
    Grpc,
}

/// One request as the stand-in saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub protocol: Protocol,
    /// The model the request resolved to (REST: from the path; gRPC: body, else header).
    pub model: String,
    /// REST: path and query exactly as received. gRPC: the method path.
    pub path: String,
    /// gRPC: the `mm-vmodel-id` header as received.
    pub vmodel_header: Option<String>,
    /// Whether the stand-in answered it as a known model.
    pub served: bool,
}

/// Every request a stand-in received, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Journal(Arc<Mutex<Vec<Received>>>);

impl Journal {
    fn record(&self, received: Received) {
        // A poisoned lock only means another request panicked; keep recording.
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(received);
    }

    /// A copy of everything received so far.
    pub fn snapshot(&self) -> Vec<Received> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forgets everything received so far.
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Shared by the REST and gRPC sides of one stand-in.
#[derive(Debug, Clone)]
struct Shared {
    config: Arc<StandInConfig>,
    journal: Journal,
    /// Requests the failing model got so far (REST and gRPC together).
    failing_seen: Arc<std::sync::atomic::AtomicU64>,
}

impl Shared {
    /// Whether this request to `model` (one that is served) is one to fail.
    fn fails(&self, model: &str) -> bool {
        match &self.config.failing {
            Some((failing, every)) if failing == model => {
                let seen = self
                    .failing_seen
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                    + 1;
                seen.is_multiple_of(*every)
            }
            _ => false,
        }
    }
}

/// Why a stand-in could not start.
#[derive(Debug, thiserror::Error)]
pub enum StandInError {
    #[error("cannot listen for {what} on {addr}: {source} (is the port already in use?)")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running stand-in; its servers stop when it is dropped.
#[derive(Debug)]
pub struct StandIn {
    pub namespace: String,
    pub rest_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    journal: Journal,
    tasks: Vec<JoinHandle<()>>,
}

impl StandIn {
    /// Starts both servers; port 0 picks a free port (see `rest_addr` / `grpc_addr`).
    pub async fn start(
        config: StandInConfig,
        rest: SocketAddr,
        grpc: SocketAddr,
    ) -> Result<StandIn, StandInError> {
        let bind = |what, addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StandInError::Bind { what, addr, source })
        };
        let rest_listener = bind("REST", rest).await?;
        let grpc_listener = bind("gRPC", grpc).await?;
        let local = |l: &TcpListener, what, addr| {
            l.local_addr()
                .map_err(|source| StandInError::Bind { what, addr, source })
        };
        let rest_addr = local(&rest_listener, "REST", rest)?;
        let grpc_addr = local(&grpc_listener, "gRPC", grpc)?;

        let namespace = config.namespace.clone();
        let shared = Shared {
            config: Arc::new(config),
            journal: Journal::default(),
            failing_seen: Arc::default(),
        };
        let journal = shared.journal.clone();
        let tasks = vec![
            tokio::spawn(rest::serve(rest_listener, shared.clone())),
            tokio::spawn(grpc::serve(grpc_listener, shared)),
        ];
        tracing::info!(%namespace, %rest_addr, %grpc_addr, "modelmesh stand-in listening");
        Ok(StandIn {
            namespace,
            rest_addr,
            grpc_addr,
            journal,
            tasks,
        })
    }

    /// Starts on free loopback ports.
    pub async fn start_local(config: StandInConfig) -> Result<StandIn, StandInError> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        StandIn::start(config, any, any).await
    }

    /// Everything this stand-in received so far.
    pub fn received(&self) -> Vec<Received> {
        self.journal.snapshot()
    }

    /// Forgets what was received (between phases of a test).
    pub fn clear(&self) {
        self.journal.clear()
    }

    /// Waits until a server stops (only on error: they run until dropped).
    pub async fn wait(mut self) {
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
