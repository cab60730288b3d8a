//! The watch path and `render` agree: the same objects, served by an API server and read
//! through the real watchers and reflectors, plan to exactly the resources `render` prints
//! (as the bodies of the server-side applies), with the same per-group report. Also:
//! last-known-good is read from the WasmPlugin found in the cluster.

mod cluster_mock;

use std::path::PathBuf;
use std::time::Duration;

use cluster_mock::fake_api::FakeApi;
use cluster_mock::*;
use modelsplit_controller::cluster::lease::Leadership;
use modelsplit_controller::cluster::metrics::Metrics;
use modelsplit_controller::cluster::reconcile::Reconciler;
use modelsplit_controller::cluster::watch::{self, Scope};
use modelsplit_controller::render;
use modelsplit_core::Settings;
use serde_json::{json, Value};

fn paths(names: &[&str]) -> Vec<PathBuf> {
    names
        .iter()
        .map(|n| manifest_dir().join("tests").join(n))
        .collect()
}

/// The objects of the manifests as a cluster would hold them (namespace defaulted).
fn cluster_objects(paths: &[PathBuf]) -> Vec<Value> {
    let mut objects = Vec::new();
    for path in paths {
        for mut object in yaml_documents(path) {
            if object["kind"] != "Namespace" && object["metadata"]["namespace"].is_null() {
                object["metadata"]["namespace"] = json!("default");
            }
            objects.push(as_observed(&object, "1"));
        }
    }
    objects
}

fn sort_key(object: &Value) -> (String, String, String) {
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    (
        text(&object["kind"]),
        text(&object["metadata"]["namespace"]),
        text(&object["metadata"]["name"]),
    )
}

fn sorted(mut objects: Vec<Value>) -> Vec<Value> {
    objects.sort_by_key(sort_key);
    objects
}

/// Equal object lists, or a failure naming the objects that differ (not pages of JSON).
fn assert_same_objects(actual: Vec<Value>, expected: Vec<Value>) {
    let (actual, expected) = (sorted(actual), sorted(expected));
    let keys = |list: &[Value]| list.iter().map(sort_key).collect::<Vec<_>>();
    assert_eq!(keys(&actual), keys(&expected), "different objects");
    for (a, e) in actual.iter().zip(&expected) {
        assert!(
            a == e,
            "{:?} differs:\n watch path: {}\n render:     {}",
            sort_key(a),
            serde_json::to_string(&a["spec"]).unwrap(),
            serde_json::to_string(&e["spec"]).unwrap()
        );
    }
}

const CHANGED_AT: &str = "modelsplit.io/config-changed-at";

/// An applied object as `render` prints it: without the WasmPlugin's config-changed-at
/// stamp, which every applied WasmPlugin must carry (RFC 3339).
fn unstamped(mut object: Value) -> Value {
    if object["kind"] == "WasmPlugin" {
        let Some(annotations) = object["metadata"]["annotations"].as_object_mut() else {
            panic!("the WasmPlugin carries no annotations");
        };
        let stamp = annotations
            .remove(CHANGED_AT)
            .unwrap_or_else(|| panic!("the WasmPlugin carries no {CHANGED_AT}"));
        stamp
            .as_str()
            .and_then(|s| s.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .unwrap_or_else(|| panic!("{CHANGED_AT} is not RFC 3339: {stamp}"));
        if annotations.is_empty() {
            object["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("annotations");
        }
    }
    object
}

/// Plans through the watchers of `served` and returns (applied bodies, report lines).
async fn through_the_watch_path(served: &[Value]) -> (Vec<Value>, Vec<String>) {
    let fake = FakeApi::start(served).await;
    let client = fake.client();
    let watchers = watch::start(&client, &Scope::AllNamespaces, Metrics::new());
    tokio::time::timeout(Duration::from_secs(30), watchers.stores.ready())
        .await
        .expect("every watcher lists its objects");
    let snapshot = watchers.stores.snapshot();
    let mut reconciler = Reconciler::new(
        client,
        Settings::default(),
        Leadership::always(),
        Metrics::new(),
        "pod-a".to_string(),
    );
    let outcome = reconciler
        .reconcile_once(&snapshot)
        .await
        .expect("reconcile");
    watchers.task.abort();
    let lines = render::report_lines(&outcome.plan);
    (fake.applied().into_iter().map(unstamped).collect(), lines)
}

fn rendered(paths: &[PathBuf], previous: Option<&str>) -> (Vec<Value>, Vec<String>) {
    let previous = previous.map(|p| manifest_dir().join("tests").join(p));
    let (plan, yaml) =
        render::render(paths, previous.as_deref(), &Settings::default()).expect("render");
    let file = std::env::temp_dir().join(format!("modelsplit-render-{}.yaml", std::process::id()));
    std::fs::write(&file, yaml).unwrap();
    let documents = yaml_documents(&file);
    let _ = std::fs::remove_file(&file);
    (documents, render::report_lines(&plan))
}

#[tokio::test]
async fn the_seed_workflow_plans_the_same_through_watchers_and_render() {
    let inputs = paths(&["fixtures/seed"]);
    let (expected, expected_report) = rendered(&inputs, None);
    let (applied, report) = through_the_watch_path(&cluster_objects(&inputs)).await;
    assert_same_objects(applied, expected.clone());
    assert_eq!(report, expected_report);
    assert_eq!(expected.len(), 2, "a WasmPlugin and a VirtualService");
}

#[tokio::test]
async fn many_namespaces_gateways_and_problems_plan_the_same_through_watchers_and_render() {
    let inputs = paths(&[
        "fixtures/base",
        "fixtures/three-way.yaml",
        "fixtures/same-name-two-namespaces.yaml",
        "fixtures/plain-models.yaml",
        "fixtures/half-percent-canary.yaml",
        "fixtures/sticky.yaml",
        "fixtures/bad-weights.yaml",
        "fixtures/outside-mesh.yaml",
        "fixtures/not-ready.yaml",
    ]);
    let (expected, expected_report) = rendered(&inputs, None);
    let (applied, report) = through_the_watch_path(&cluster_objects(&inputs)).await;
    assert!(expected.len() > 3, "{expected:?}");
    assert_same_objects(applied, expected);
    assert_eq!(report, expected_report);
}

#[tokio::test]
async fn last_known_good_comes_from_the_wasm_plugin_in_the_cluster() {
    // One-at-a-time re-annotation: the weights momentarily sum to 120. The WasmPlugin
    // published before (80/20) is in the cluster; the split it carries must be kept,
    // exactly as `render --previous` keeps it.
    let inputs = paths(&["fixtures/base", "fixtures/reweight-step-120.yaml"]);
    let (expected, expected_report) = rendered(&inputs, Some("golden/reweight-before.yaml"));
    assert!(
        expected_report
            .iter()
            .any(|l| l.contains("stale: weights sum to 120")),
        "{expected_report:?}"
    );

    let mut served = cluster_objects(&inputs);
    let published = yaml_documents(&manifest_dir().join("tests/golden/reweight-before.yaml"));
    // As this controller published it: stamped with when its config changed.
    served.extend(published.iter().map(|o| {
        let mut o = as_observed(o, "5");
        if o["kind"] == "WasmPlugin" {
            o["metadata"]["annotations"][CHANGED_AT] = json!("2026-01-01T00:00:00Z");
        }
        o
    }));
    let (applied, report) = through_the_watch_path(&served).await;
    assert_eq!(report, expected_report);
    // Nothing to write: the cluster already serves the last good split.
    assert_eq!(applied, Vec::<Value>::new());
    assert_same_objects(published, expected);
}

#[tokio::test]
async fn watching_a_list_of_namespaces_sees_only_their_models() {
    let inputs = paths(&[
        "fixtures/base",
        "fixtures/three-way.yaml",
        "fixtures/seed-80-20.yaml",
    ]);
    let fake = FakeApi::start(&cluster_objects(&inputs)).await;
    let client = fake.client();
    let scope = Scope::Namespaces(vec!["team-b".to_string()]);
    let watchers = watch::start(&client, &scope, Metrics::new());
    tokio::time::timeout(Duration::from_secs(30), watchers.stores.ready())
        .await
        .expect("every watcher lists its objects");
    let snapshot = watchers.stores.snapshot();
    watchers.task.abort();

    let namespaces: std::collections::BTreeSet<String> = snapshot
        .inference_services
        .iter()
        .chain(&snapshot.serving_runtimes)
        .filter_map(|o| o.metadata.namespace.clone())
        .collect();
    assert_eq!(namespaces, ["team-b".to_string()].into());
    assert!(!snapshot.inference_services.is_empty());
    // Inputs are listed in that namespace only; published objects everywhere (by label).
    let lists: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && !r.uri.contains("watch="))
        .map(|r| r.uri.split('?').next().unwrap_or("").to_string())
        .collect();
    for path in [
        "/apis/serving.kserve.io/v1beta1/namespaces/team-b/inferenceservices",
        "/apis/serving.kserve.io/v1alpha1/namespaces/team-b/servingruntimes",
        "/api/v1/namespaces",
        "/apis/extensions.istio.io/v1alpha1/wasmplugins",
        "/apis/networking.istio.io/v1beta1/virtualservices",
    ] {
        assert!(
            lists.iter().any(|l| l == path),
            "{path} not listed: {lists:?}"
        );
    }
    assert!(
        fake.requests()
            .iter()
            .filter(|r| r.uri.contains("wasmplugins") || r.uri.contains("virtualservices"))
            .all(|r| r
                .uri
                .contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dmodelsplit")),
        "managed objects are watched by label only"
    );
}
