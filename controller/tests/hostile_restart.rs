//! Restart safety of `modelsplit run` against a mock API server: the controller is
//! killed between any two writes of a reconcile pass (the write in flight is never
//! answered and never applied), a new controller starts from what the cluster then
//! holds, and:
//! - it converges to exactly the objects an uninterrupted pass leaves;
//! - at no point — before, between any two writes, after — does a published filter
//!   configuration send traffic to a member that is still exposed but has no route,
//!   and groups valid before and after stay published throughout (no traffic gap);
//! - a further pass writes nothing.
//!
//! The pass moves a cluster through a weight change, a new group and isvc, an isvc
//! deleted from a namespace's routes, and a whole gateway pruned.

mod cluster_mock;

use cluster_mock::*;
use kube::client::Body;
use modelsplit_controller::cluster::lease::Leadership;
use modelsplit_controller::cluster::metrics::Metrics;
use modelsplit_controller::cluster::reconcile::{desired_objects, Reconciler};
use modelsplit_core::planner::{self, PreviousConfigs};
use modelsplit_core::Settings;
use modelsplit_filter::config::FilterConfig;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Groups valid before and after the change: they must be served at every moment.
const ALWAYS_SERVED: [(&str, &str); 2] = [("modelmesh-apps", "healthy"), ("team-b", "healthy-b")];

/// A plain exposed ModelMesh isvc, or a group member at `weight` percent.
fn isvc(namespace: &str, name: &str, group: Option<(&str, &str)>) -> Value {
    let mut labels = json!({});
    let mut annotations = json!({"serving.kserve.io/deploymentMode": "ModelMesh"});
    if let Some((group, weight)) = group {
        labels["serving.kserve.io/model-tag"] = json!(group);
        annotations["serving.kserve.io/canaryTrafficPercent"] = json!(weight);
    }
    as_observed(
        &json!({
            "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": name, "namespace": namespace, "labels": labels,
                         "annotations": annotations, "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "runtime": "routed"}}},
        }),
        "1",
    )
}

fn base() -> Vec<Value> {
    yaml_documents(&manifest_dir().join("tests/fixtures/base"))
        .iter()
        .map(|d| as_observed(d, "1"))
        .collect()
}

fn before_inputs() -> Vec<Value> {
    let mut inputs = base();
    inputs.extend([
        isvc("modelmesh-apps", "healthy-one", Some(("healthy", "50"))),
        isvc("modelmesh-apps", "healthy-two", Some(("healthy", "50"))),
        isvc("team-b", "healthy-b-one", Some(("healthy-b", "80"))),
        isvc("team-b", "healthy-b-two", Some(("healthy-b", "20"))),
        isvc("team-c", "c-keep", None),
        isvc("team-c", "c-old", None),
        isvc("edge-apps", "edge-one", Some(("edge-group", "100"))),
    ]);
    inputs
}

fn after_inputs() -> Vec<Value> {
    let mut inputs = base();
    inputs.extend([
        isvc("modelmesh-apps", "healthy-one", Some(("healthy", "80"))),
        isvc("modelmesh-apps", "healthy-two", Some(("healthy", "20"))),
        isvc("modelmesh-apps", "fraud", None),
        isvc("modelmesh-apps", "ai-model-one", Some(("ai-model", "90"))),
        isvc("modelmesh-apps", "ai-model-two", Some(("ai-model", "10"))),
        isvc("team-b", "healthy-b-one", Some(("healthy-b", "80"))),
        isvc("team-b", "healthy-b-two", Some(("healthy-b", "20"))),
        isvc("team-c", "c-keep", None),
    ]);
    inputs
}

/// `/apis/<group>/<version>/namespaces/<ns>/<plural>/<name>` of a managed object.
fn path_of(object: &Value) -> String {
    let plural = match object["kind"].as_str() {
        Some("WasmPlugin") => "wasmplugins",
        Some("VirtualService") => "virtualservices",
        other => panic!("not a managed kind: {other:?}"),
    };
    format!(
        "/apis/{}/namespaces/{}/{plural}/{}",
        object["apiVersion"].as_str().unwrap(),
        object["metadata"]["namespace"].as_str().unwrap(),
        object["metadata"]["name"].as_str().unwrap()
    )
}

/// The cluster as the mock API server holds it.
#[derive(Clone)]
struct Cluster {
    inputs: Vec<Value>,
    /// Managed objects (WasmPlugins, VirtualServices) by API path.
    managed: BTreeMap<String, Value>,
    version: u64,
}

impl Cluster {
    /// The inputs, and the objects an earlier controller published for `published_from`.
    fn new(inputs: Vec<Value>, published_from: &[Value]) -> Cluster {
        let plan = planner::plan(
            &snapshot_of(published_from).observed().0,
            &PreviousConfigs::new(),
            &Settings::default(),
        );
        let managed = desired_objects(&plan, Default::default())
            .into_iter()
            .map(|d| (path_of(&d.body), as_observed(&d.body, "1")))
            .collect();
        Cluster {
            inputs,
            managed,
            version: 1,
        }
    }

    fn snapshot(&self) -> modelsplit_controller::cluster::snapshot::Snapshot {
        let mut all = self.inputs.clone();
        all.extend(self.managed.values().cloned());
        snapshot_of(&all)
    }

    /// What the objects say, without server-set fields.
    fn contents(&self) -> BTreeMap<String, (Value, Value)> {
        self.managed
            .iter()
            .map(|(path, o)| {
                (
                    path.clone(),
                    (o["metadata"]["labels"].clone(), o["spec"].clone()),
                )
            })
            .collect()
    }

    /// No traffic gap: every published group is whole (each member with weight that
    /// is still exposed has its routes), and the always-served groups are published.
    fn assert_no_gap(&self, exposed: &BTreeSet<(String, String)>, moment: &str) {
        let routes: BTreeSet<(String, String)> = self
            .managed
            .values()
            .filter(|o| o["kind"] == "VirtualService")
            .flat_map(|vs| {
                let namespace = vs["metadata"]["namespace"].as_str().unwrap().to_string();
                vs["spec"]["http"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(move |r| (namespace.clone(), r["name"].as_str().unwrap().to_string()))
            })
            .collect();
        let mut published = BTreeSet::new();
        for plugin in self.managed.values().filter(|o| o["kind"] == "WasmPlugin") {
            let config =
                FilterConfig::from_json(plugin["spec"]["pluginConfig"].to_string().as_bytes())
                    .unwrap_or_else(|e| {
                        panic!("{moment}: a published pluginConfig is invalid: {e}")
                    });
            for group in &config.groups {
                published.insert((group.namespace.clone(), group.name.clone()));
                for member in group.members.iter().filter(|m| m.weight > 0) {
                    let key = (group.namespace.clone(), member.name.clone());
                    if !exposed.contains(&key) {
                        continue; // gone from the cluster: nothing could serve it
                    }
                    let mut needed = vec![
                        format!("{}-rest", member.name),
                        format!("{}-rest-paths", member.name),
                    ];
                    if group.grpc {
                        needed.push(format!("{}-grpc", member.name));
                    }
                    for route in needed {
                        assert!(
                            routes.contains(&(group.namespace.clone(), route.clone())),
                            "{moment}: group {}/{} sends traffic to {} but route {route} is missing",
                            group.namespace,
                            group.name,
                            member.name
                        );
                    }
                }
            }
        }
        for (namespace, name) in ALWAYS_SERVED {
            assert!(
                published.contains(&(namespace.to_string(), name.to_string())),
                "{moment}: valid group {namespace}/{name} is not published"
            );
        }
    }
}

/// Plays the API server for one reconcile pass. With `kill_after`, the controller is
/// killed when it sends write number `kill_after + 1` (that write is not applied).
/// Returns the writes applied and whether the pass finished.
async fn play(
    cluster: &mut Cluster,
    kill_after: Option<usize>,
    exposed: &BTreeSet<(String, String)>,
    label: &str,
) -> (usize, bool) {
    let (client, mut api) = mock_client();
    let mut reconciler = Reconciler::new(
        client,
        Settings::default(),
        Leadership::always(),
        Metrics::new(),
        "pod-a".into(),
    );
    let snapshot = cluster.snapshot();
    let task = tokio::spawn(async move { reconciler.reconcile_once(&snapshot).await.map(|_| ()) });
    tokio::pin!(task);
    let mut writes = 0;
    loop {
        let request = tokio::select! {
            biased;
            result = &mut task => {
                result.expect("the reconciler panicked").expect("the pass succeeds");
                return (writes, true);
            }
            request = api.next_request() => request,
        };
        let Some((request, send)) = request else {
            continue;
        };
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_string();
        let method = parts.method.to_string();
        if method == "POST" && path.ends_with("/events") {
            let body: Value =
                serde_json::from_slice(&Body::collect_bytes(body).await.unwrap()).unwrap();
            reply(send, 201, &body);
            continue;
        }
        assert!(
            path.contains("/wasmplugins/") || path.contains("/virtualservices/"),
            "{label}: unexpected request {method} {path}"
        );
        if kill_after == Some(writes) {
            task.abort();
            return (writes, false);
        }
        cluster.version += 1;
        match method.as_str() {
            "PATCH" => {
                let body: Value =
                    serde_json::from_slice(&Body::collect_bytes(body).await.unwrap()).unwrap();
                let stored = as_observed(&body, &cluster.version.to_string());
                cluster.managed.insert(path.clone(), stored.clone());
                reply(send, 200, &stored);
            }
            "DELETE" => {
                let gone = cluster.managed.remove(&path);
                let status = if gone.is_some() { 200 } else { 404 };
                reply(
                    send,
                    status,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                );
            }
            other => panic!("{label}: unexpected {other} {path}"),
        }
        writes += 1;
        cluster.assert_no_gap(
            exposed,
            &format!("{label}, after write {writes} ({method} {path})"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_any_two_writes_a_restarted_controller_converges_without_a_gap() {
    let start = Cluster::new(after_inputs(), &before_inputs());
    let after_plan = planner::plan(
        &start.snapshot().observed().0,
        &start.snapshot().previous_configs(),
        &Settings::default(),
    );
    let exposed: BTreeSet<(String, String)> = after_plan
        .routes
        .iter()
        .flat_map(|r| {
            r.models
                .iter()
                .map(move |m| (r.namespace.clone(), m.name.clone()))
        })
        .collect();
    start.assert_no_gap(&exposed, "before the pass");

    // The uninterrupted pass: what every interrupted one must end at.
    let mut reference = start.clone();
    let (total, finished) = play(&mut reference, None, &exposed, "uninterrupted").await;
    assert!(finished);
    assert!(
        total >= 4,
        "the scenario should need several writes, got {total}"
    );
    let (again, _) = play(&mut reference, None, &exposed, "second pass").await;
    assert_eq!(again, 0, "an uninterrupted pass converges in one go");

    for kill_after in 0..total {
        let label = format!("killed after {kill_after} of {total} writes");
        let mut cluster = start.clone();
        let (done, finished) = play(&mut cluster, Some(kill_after), &exposed, &label).await;
        assert_eq!((done, finished), (kill_after, false), "{label}");
        cluster.assert_no_gap(&exposed, &format!("{label}, while down"));

        let (_, finished) =
            play(&mut cluster, None, &exposed, &format!("{label}, restarted")).await;
        assert!(finished);
        assert_eq!(
            cluster.contents(),
            reference.contents(),
            "{label}: the restarted controller did not converge to the same objects"
        );
        let (writes, _) = play(&mut cluster, None, &exposed, &format!("{label}, settled")).await;
        assert_eq!(writes, 0, "{label}: a pass after convergence still writes");
    }
}
