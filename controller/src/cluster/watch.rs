//! Watchers feeding in-memory stores (kube-runtime reflectors), and one "something
//! changed" signal for the reconcile loop.

use std::sync::Arc;

use futures::stream::{self, BoxStream, StreamExt};
use kube::api::DynamicObject;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::apply::WrittenObject;
use super::error::{ErrorKind, ResourceName};
use super::kinds::{api_resource, ManagedKind, INFERENCE_SERVICES, SERVING_RUNTIMES};
use super::metrics::Metrics;
use super::snapshot::Snapshot;
use super::trim;
use modelsplit_core::resources::{Namespace, MANAGED_BY_LABEL, MANAGER};

/// Which namespaces to watch for ServingRuntimes and InferenceServices.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Scope {
    #[default]
    AllNamespaces,
    Namespaces(Vec<String>),
}

impl Scope {
    /// Whether `namespace` is watched.
    pub fn contains(&self, namespace: &str) -> bool {
        match self {
            Scope::AllNamespaces => true,
            Scope::Namespaces(list) => list.iter().any(|ns| ns == namespace),
        }
    }
}

/// Objects per list page of the published kinds' watches (kube's default is 500).
const PUBLISHED_PAGE_SIZE: u32 = 20;

/// The reflector stores; read them with [`Stores::snapshot`].
#[derive(Clone)]
pub struct Stores {
    namespaces: Store<Namespace>,
    serving_runtimes: Vec<Store<DynamicObject>>,
    inference_services: Vec<Store<DynamicObject>>,
    managed: Vec<(ManagedKind, Store<DynamicObject>)>,
}

impl Stores {
    /// Resolves once every watcher has listed its objects once.
    pub async fn ready(&self) {
        let _ = self.namespaces.wait_until_ready().await;
        let dynamic = self
            .serving_runtimes
            .iter()
            .chain(&self.inference_services)
            .chain(self.managed.iter().map(|(_, store)| store));
        for store in dynamic {
            let _ = store.wait_until_ready().await;
        }
    }

    /// Whether the watches show every one of `written` (see [`WrittenObject::shown_by`]).
    pub fn show(&self, written: &[WrittenObject]) -> bool {
        written.iter().all(|object| {
            let Some((_, store)) = self.managed.iter().find(|(k, _)| *k == object.key.kind) else {
                return true;
            };
            let reference = ObjectRef::new_with(&object.key.name, object.key.kind.api_resource())
                .within(&object.key.namespace);
            let current = store.get(&reference);
            object.shown_by(
                current
                    .as_ref()
                    .and_then(|o| o.metadata.resource_version.as_deref()),
            )
        })
    }

    /// Every store at this moment (each read atomically), sharing the stores' objects.
    pub fn snapshot(&self) -> Snapshot {
        let shared = |stores: &[Store<DynamicObject>]| {
            stores.iter().flat_map(|s| s.state()).collect::<Vec<_>>()
        };
        let mut snapshot = Snapshot {
            namespaces: self
                .namespaces
                .state()
                .iter()
                .map(|n| (**n).clone())
                .collect(),
            serving_runtimes: shared(&self.serving_runtimes),
            inference_services: shared(&self.inference_services),
            ..Snapshot::default()
        };
        for (kind, store) in &self.managed {
            for object in store.state() {
                snapshot.insert_managed(*kind, object);
            }
        }
        snapshot
    }
}

/// The running watchers: stores, the change signal, and the task driving them.
pub struct Watchers {
    pub stores: Stores,
    pub changed: Arc<Notify>,
    pub task: JoinHandle<()>,
}

/// Starts every watcher. Watch errors are logged, counted and retried with backoff.
pub fn start(client: &Client, scope: &Scope, metrics: Metrics) -> Watchers {
    let mut streams: Vec<BoxStream<'static, Result<(), watcher::Error>>> = Vec::new();

    let (namespaces, writer) = reflector::store();
    let api: Api<Namespace> = Api::all(client.clone());
    streams.push(drive(reflector::reflector(
        writer,
        watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(|namespace: &mut Namespace| trim::metadata(&mut namespace.metadata)),
    )));

    let mut dynamic = |resource: &ResourceName,
                       kind: &str,
                       namespace: Option<&str>,
                       labels: Option<String>,
                       trim: fn(&mut DynamicObject)| {
        let resource = api_resource(resource, kind);
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let config = match labels {
            // Only our own published objects carry a selector: VirtualServices of up to
            // 60 KB each, listed a few at a time so that a (re)start never holds a 500-item
            // page of them (30 MB of JSON, and its decoded form) at once.
            Some(selector) => watcher::Config::default()
                .labels(&selector)
                .page_size(PUBLISHED_PAGE_SIZE),
            None => watcher::Config::default(),
        };
        let writer = reflector::store::Writer::new(resource);
        let store = writer.as_reader();
        // Trimmed before the store keeps them: only what the planner reads.
        streams.push(drive(reflector::reflector(
            writer,
            watcher(api, config).default_backoff().modify(trim),
        )));
        store
    };

    let namespaces_in_scope: Vec<Option<&str>> = match scope {
        Scope::AllNamespaces => vec![None],
        Scope::Namespaces(list) => list.iter().map(|ns| Some(ns.as_str())).collect(),
    };
    let serving_runtimes = namespaces_in_scope
        .iter()
        .map(|ns| {
            dynamic(
                &SERVING_RUNTIMES,
                "ServingRuntime",
                *ns,
                None,
                trim::serving_runtime,
            )
        })
        .collect();
    let inference_services = namespaces_in_scope
        .iter()
        .map(|ns| {
            dynamic(
                &INFERENCE_SERVICES,
                "InferenceService",
                *ns,
                None,
                trim::inference_service,
            )
        })
        .collect();
    // Published objects live in gateway namespaces, whatever the scope.
    let managed_selector = format!("{MANAGED_BY_LABEL}={MANAGER}");
    let managed = ManagedKind::ALL
        .into_iter()
        .map(|kind| {
            let store = dynamic(
                kind.resource(),
                kind.kind(),
                None,
                Some(managed_selector.clone()),
                trim::published(kind),
            );
            (kind, store)
        })
        .collect();

    let changed = Arc::new(Notify::new());
    let signal = changed.clone();
    let task = tokio::spawn(async move {
        let mut all = stream::select_all(streams);
        while let Some(result) = all.next().await {
            match result {
                Ok(()) => signal.notify_one(),
                Err(error) => {
                    tracing::warn!(%error, "watch failed; retrying with backoff");
                    metrics.error(ErrorKind::Watch);
                }
            }
        }
    });

    Watchers {
        stores: Stores {
            namespaces,
            serving_runtimes,
            inference_services,
            managed,
        },
        changed,
        task,
    }
}

fn drive<S, K>(stream: S) -> BoxStream<'static, Result<(), watcher::Error>>
where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    stream.map(|event| event.map(drop)).boxed()
}
