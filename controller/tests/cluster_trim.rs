//! The reflectors keep trimmed objects (controller/src/cluster/trim.rs): a trimmed
//! cluster plans exactly as the untrimmed one, for every fixture.

mod cluster_mock;

use std::sync::Arc;

use cluster_mock::*;
use kube::api::DynamicObject;
use modelsplit_controller::cluster::snapshot::Snapshot;
use modelsplit_controller::cluster::trim;
use modelsplit_core::{planner, Plan, PreviousConfigs, Settings};
use serde_json::{json, Value};

/// What a real cluster adds to what was applied: managed fields, kubectl's copy, status.
fn as_in_a_cluster(mut document: Value) -> Value {
    let copy = document.to_string();
    let meta = &mut document["metadata"];
    meta["managedFields"] = json!([{"manager": "kubectl", "operation": "Apply",
        "fieldsV1": {"f:metadata": {}}}]);
    if !meta["annotations"].is_object() {
        meta["annotations"] = json!({});
    }
    meta["annotations"][trim::LAST_APPLIED_ANNOTATION] = json!(copy);
    if document["kind"] == "InferenceService" {
        if document["spec"]["predictor"].is_object() {
            document["spec"]["predictor"]["minReplicas"] = json!(1);
        }
        if document["status"].is_null() {
            document["status"] = json!({});
        }
        if document["status"].is_object() {
            document["status"]["modelStatus"] = json!({"states": {"activeModelState": "Loaded"}});
        }
    }
    if document["kind"] == "ServingRuntime" && document["spec"].is_object() {
        document["spec"]["containers"] = json!([{"name": "server", "image": "x"}]);
    }
    document
}

fn plan(snapshot: &Snapshot) -> (Plan, usize) {
    let (observed, errors) = snapshot.observed();
    let plan = planner::plan(&observed, &PreviousConfigs::new(), &Settings::default());
    (plan, errors.len())
}

fn trimmed(snapshot: &Snapshot) -> Snapshot {
    let mut copy = snapshot.clone();
    let each = |objects: &mut Vec<Arc<DynamicObject>>, trim: fn(&mut DynamicObject)| {
        objects.iter_mut().for_each(|o| trim(Arc::make_mut(o)));
    };
    each(&mut copy.inference_services, trim::inference_service);
    each(&mut copy.serving_runtimes, trim::serving_runtime);
    for namespace in &mut copy.namespaces {
        trim::metadata(&mut namespace.metadata);
    }
    copy
}

#[test]
fn a_trimmed_cluster_plans_exactly_as_the_untrimmed_one() {
    let fixtures = manifest_dir().join("tests/fixtures");
    let base = yaml_documents(&fixtures.join("base"));
    let mut entries: Vec<_> = std::fs::read_dir(&fixtures)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    let mut planned = 0;
    for entry in entries {
        // Not YAML at all: the planner never sees it.
        if entry.ends_with("broken") {
            continue;
        }
        let mut documents = base.clone();
        documents.extend(yaml_documents(&entry));
        let documents: Vec<Value> = documents.into_iter().map(as_in_a_cluster).collect();
        let full = snapshot_of(&documents);
        let small = trimmed(&full);
        let (expected, expected_errors) = plan(&full);
        let (actual, actual_errors) = plan(&small);
        assert_eq!(actual, expected, "{}", entry.display());
        assert_eq!(actual_errors, expected_errors, "{}", entry.display());
        let size = |s: &Snapshot| {
            let objects: Vec<Value> = s
                .inference_services
                .iter()
                .map(|o| trim::unpack(o).unwrap())
                .collect();
            serde_json::to_string(&objects).unwrap().len()
        };
        if !full.inference_services.is_empty() {
            assert!(size(&small) < size(&full), "{}", entry.display());
        }
        planned += usize::from(!expected.groups.is_empty());
    }
    assert!(planned >= 5, "the fixtures plan groups: {planned}");
}
