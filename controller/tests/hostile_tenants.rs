//! Tenant isolation in the controller: the owner of one namespace cannot take another
//! namespace's REST or gRPC traffic by naming groups or InferenceServices after the
//! other's. REST paths carry the namespace, so only gRPC names (global per gateway
//! workload) can be contested; the oldest claim keeps them, and a group that was not
//! published before cannot backdate its claim by relabelling an old InferenceService.
//!
//! The victim is modelmesh-apps (tests/fixtures/hostile/tenant-a.yaml, 2024); the
//! attackers are team-b and team-c (same gateway workload) and edge-apps (another).

use modelsplit_core::planner::{self, Observed, Plan, PreviousConfigs};
use modelsplit_core::resources::InferenceService;
use modelsplit_core::settings::Settings;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const VICTIM: &str = "modelmesh-apps";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn victim_only() -> Observed {
    modelsplit_core::manifests::load_manifests(&[fixture("base"), fixture("hostile/tenant-a.yaml")])
        .expect("fixtures load")
}

/// An exposed ModelMesh isvc of an attacker, optionally in a group at 100 %.
fn isvc(namespace: &str, name: &str, group: Option<&str>, created: &str) -> InferenceService {
    let mut labels = json!({});
    if let Some(group) = group {
        labels["serving.kserve.io/model-tag"] = json!(group);
    }
    serde_json::from_value(json!({
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created, "labels": labels,
            "annotations": {"serving.kserve.io/deploymentMode": "ModelMesh",
                            "serving.kserve.io/canaryTrafficPercent": "100"}},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "runtime": "routed"}}},
    }))
    .expect("valid isvc")
}

fn plan(observed: &Observed, previous: &PreviousConfigs) -> Plan {
    let plan = planner::plan(observed, previous, &Settings::default());
    for gateway in &plan.gateways {
        gateway
            .config
            .validate()
            .expect("published configs are valid");
    }
    plan
}

/// What reaches the victim's ModelMesh: its VirtualService's models (with gRPC
/// flags) and its published groups (members, weights, gRPC).
fn victim_traffic(plan: &Plan) -> (String, String) {
    let routes = plan.routes.iter().find(|r| r.namespace == VICTIM);
    let groups: Vec<_> = plan
        .groups
        .iter()
        .filter(|g| g.namespace == VICTIM)
        .map(|g| (&g.name, &g.published))
        .collect();
    (format!("{routes:?}"), format!("{groups:?}"))
}

/// Per gateway workload, every gRPC name leads to exactly one namespace: a gRPC
/// route of an isvc, or a gRPC-enabled group, never both in different namespaces.
fn assert_grpc_names_unique(plan: &Plan) {
    let mut owners: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    let routes = plan.routes.iter().flat_map(|r| {
        r.models.iter().filter(|m| m.grpc).map(move |m| {
            (
                r.plugin_namespace.as_str(),
                m.name.as_str(),
                r.namespace.as_str(),
            )
        })
    });
    let groups = plan.gateways.iter().flat_map(|g| {
        g.config
            .groups
            .iter()
            .filter(|group| group.grpc)
            .map(move |group| {
                (
                    g.plugin_namespace.as_str(),
                    group.name.as_str(),
                    group.namespace.as_str(),
                )
            })
    });
    for (scope, name, namespace) in routes.chain(groups) {
        if let Some(other) = owners.insert((scope, name), namespace) {
            assert_eq!(
                other, namespace,
                "gRPC name {name} on {scope} leads to both {other} and {namespace}"
            );
        }
    }
}

/// Attacks by namespaces that came later (2025) or sit on another gateway.
fn attacks() -> Vec<(&'static str, Vec<InferenceService>)> {
    let late = "2025-02-01T00:00:00Z";
    vec![
        (
            "isvc named like the victim's isvc",
            vec![isvc("team-b", "fraud", None, late)],
        ),
        (
            "isvc named like the victim's group",
            vec![isvc("team-b", "ai-model", None, late)],
        ),
        (
            "isvc named like the victim's member",
            vec![isvc("team-c", "ai-model-one", None, late)],
        ),
        (
            "group named like the victim's group",
            vec![isvc("team-b", "b-one", Some("ai-model"), late)],
        ),
        (
            "group named like the victim's isvc",
            vec![isvc("team-b", "b-two", Some("fraud"), late)],
        ),
        (
            "group whose member is named like the victim's member",
            vec![isvc("team-b", "ai-model-two", Some("b-group"), late)],
        ),
        (
            "every name at once from two namespaces",
            vec![
                isvc("team-b", "fraud", Some("ai-model"), late),
                isvc("team-c", "ai-model", Some("fraud"), late),
                isvc("team-c", "ai-model-one", Some("ai-model-two"), late),
            ],
        ),
        (
            "another gateway claims every name, older",
            vec![
                isvc(
                    "edge-apps",
                    "fraud",
                    Some("ai-model"),
                    "2020-01-01T00:00:00Z",
                ),
                isvc("edge-apps", "ai-model", None, "2020-01-01T00:00:00Z"),
            ],
        ),
    ]
}

#[test]
fn later_claims_by_other_namespaces_leave_the_victims_traffic_alone() {
    let before = plan(&victim_only(), &PreviousConfigs::new());
    for (label, objects) in attacks() {
        let mut observed = victim_only();
        observed.inference_services.extend(objects);
        for previous in [PreviousConfigs::new(), before.published_configs()] {
            let after = plan(&observed, &previous);
            assert_eq!(victim_traffic(&after), victim_traffic(&before), "{label}");
            assert_grpc_names_unique(&after);
        }
    }
}

#[test]
fn another_gateway_keeps_its_own_names() {
    let mut observed = victim_only();
    observed
        .inference_services
        .push(isvc("edge-apps", "fraud", None, "2025-01-01T00:00:00Z"));
    let plan = plan(&observed, &PreviousConfigs::new());
    let edge = plan
        .routes
        .iter()
        .find(|r| r.namespace == "edge-apps")
        .unwrap();
    assert!(
        edge.models.iter().all(|m| m.grpc),
        "names are per gateway workload: {edge:?}"
    );
}

#[test]
fn relabelling_an_old_isvc_does_not_backdate_a_claim_on_a_published_name() {
    // The controller has published the victim's state; then team-b labels an
    // InferenceService it created long ago with the victim's names.
    let published = plan(&victim_only(), &PreviousConfigs::new()).published_configs();
    let old = "2020-01-01T00:00:00Z";
    for (label, object) in [
        (
            "the victim's group name",
            isvc("team-b", "ancient-1", Some("ai-model"), old),
        ),
        (
            "the victim's isvc name",
            isvc("team-b", "ancient-2", Some("fraud"), old),
        ),
    ] {
        let mut observed = victim_only();
        observed.inference_services.push(object);
        let after = plan(&observed, &published);
        let before = plan(&victim_only(), &published);
        assert_eq!(victim_traffic(&after), victim_traffic(&before), "{label}");
        assert_grpc_names_unique(&after);
        let intruder = after
            .groups
            .iter()
            .find(|g| g.namespace == "team-b")
            .unwrap();
        assert!(
            intruder
                .to_string()
                .contains("belongs to namespace modelmesh-apps"),
            "{label}: {intruder}"
        );
    }
}

#[test]
fn an_older_claim_that_was_there_first_still_wins() {
    // The rule itself: a name the other namespace held before the victim's isvc
    // existed stays with it (here team-b's isvc `fraud` from 2023).
    let mut observed = victim_only();
    observed
        .inference_services
        .push(isvc("team-b", "fraud", None, "2023-01-01T00:00:00Z"));
    let plan = plan(&observed, &PreviousConfigs::new());
    let victim = plan.routes.iter().find(|r| r.namespace == VICTIM).unwrap();
    assert!(victim.models.iter().any(|m| m.name == "fraud" && !m.grpc));
    assert_grpc_names_unique(&plan);
}
