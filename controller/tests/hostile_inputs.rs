//! Hostile or broken objects from namespace owners: each gets a clear report naming
//! the object and the fix, and never changes what other groups publish.
//!
//! The yardstick: the plan of a cluster with the hostile objects must give every
//! healthy group exactly what the plan without them gives it.

use modelsplit_controller::cluster::snapshot::Snapshot;
use modelsplit_controller::render;
use modelsplit_core::planner::{self, Observed, Plan, PreviousConfigs};
use modelsplit_core::report::GroupState;
use modelsplit_core::resources::InferenceService;
use modelsplit_core::rules::{percent, GroupProblem, FULL_WEIGHT};
use modelsplit_core::settings::Settings;
use modelsplit_filter::config::GroupConfig;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The base namespaces and runtimes plus two healthy 80/20 groups (two namespaces).
fn healthy() -> Observed {
    modelsplit_core::manifests::load_manifests(&[fixture("base"), fixture("hostile/healthy.yaml")])
        .expect("fixtures load")
}

fn isvc_value(namespace: &str, name: &str, group: Option<&str>, weight: Option<&str>) -> Value {
    let mut annotations = json!({"serving.kserve.io/deploymentMode": "ModelMesh"});
    if let Some(weight) = weight {
        annotations["serving.kserve.io/canaryTrafficPercent"] = json!(weight);
    }
    let mut labels = json!({});
    if let Some(group) = group {
        labels["serving.kserve.io/model-tag"] = json!(group);
    }
    json!({
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations,
                     "creationTimestamp": "2025-06-01T00:00:00Z"},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "runtime": "routed"}}},
    })
}

fn isvc(
    namespace: &str,
    name: &str,
    group: Option<&str>,
    weight: Option<&str>,
) -> InferenceService {
    serde_json::from_value(isvc_value(namespace, name, group, weight)).expect("valid isvc")
}

/// Plans; every published configuration must be one the filter accepts.
fn plan(observed: &Observed) -> Plan {
    let plan = planner::plan(observed, &PreviousConfigs::new(), &Settings::default());
    for gateway in &plan.gateways {
        gateway
            .config
            .validate()
            .unwrap_or_else(|e| panic!("{} config rejected: {e}", gateway.plugin_namespace));
    }
    plan
}

fn published<'a>(plan: &'a Plan, namespace: &str, name: &str) -> Option<&'a GroupConfig> {
    plan.groups
        .iter()
        .find(|g| g.namespace == namespace && g.name == name)
        .and_then(|g| g.published.as_ref())
}

/// The healthy groups publish exactly as without the hostile objects, and the
/// healthy namespaces' routes are untouched.
fn assert_healthy_untouched(with: &Plan, without: &Plan) {
    for (namespace, name) in [("modelmesh-apps", "healthy"), ("team-b", "healthy-b")] {
        let expected = published(without, namespace, name).expect("healthy group published");
        assert_eq!(
            published(with, namespace, name),
            Some(expected),
            "{namespace}/{name} changed"
        );
    }
    let route_of = |plan: &Plan, ns: &str| plan.routes.iter().find(|r| r.namespace == ns).cloned();
    for ns in ["modelmesh-apps", "team-b"] {
        let (before, after) = (route_of(without, ns).unwrap(), route_of(with, ns).unwrap());
        for model in &before.models {
            assert!(
                after.models.contains(model),
                "{ns}: route of {} changed: {:?}",
                model.name,
                after.models
            );
        }
    }
}

/// (annotation value, basis points it means or None when it must be refused).
const WEIGHTS: &[(&str, Option<u32>)] = &[
    ("100", Some(10_000)),
    ("080", Some(8_000)),
    ("0100", None),
    (" 100 ", Some(10_000)),
    ("\t100\n", Some(10_000)),
    ("100.0", Some(10_000)),
    ("100.00", Some(10_000)),
    ("99.995", None),
    ("1e2", None),
    ("1E2", None),
    ("NaN", None),
    ("nan", None),
    ("inf", None),
    ("-100", None),
    ("-0", None),
    ("+100", None),
    ("0x64", None),
    ("1_00", None),
    ("100.", None),
    (".5", None),
    ("100%", None),
    ("100 %", None),
    ("1 00", None),
    ("", None),
    ("   ", None),
    ("１００", None),
    ("١٠٠", None),
    ("१००", None),
    ("100\u{0}", None),
    ("\u{202e}001", None),
    ("100\n200", None),
    ("4294967396", None),
    ("18446744073709551716", None),
    ("101", None),
    ("100.01", None),
];

#[test]
fn hostile_weight_annotations_are_refused_clearly_and_touch_no_other_group() {
    let without = plan(&healthy());
    let huge = "9".repeat(100_000);
    let huge_fraction = format!("99.{}", "9".repeat(100_000));
    let mut cases: Vec<(String, Option<u32>)> =
        WEIGHTS.iter().map(|(v, w)| (v.to_string(), *w)).collect();
    cases.push((huge, None));
    cases.push((huge_fraction, None));

    let mut observed = healthy();
    for (i, (value, expected)) in cases.iter().enumerate() {
        // One group per value: the hostile member and one that makes up the rest of
        // 100 % when the value is read as a number (else 0).
        let group = format!("w{i}");
        observed.inference_services.push(isvc(
            "modelmesh-apps",
            &format!("w{i}-member"),
            Some(&group),
            Some(value),
        ));
        let rest = percent(FULL_WEIGHT - expected.unwrap_or(0).min(FULL_WEIGHT));
        observed.inference_services.push(isvc(
            "modelmesh-apps",
            &format!("w{i}-rest"),
            Some(&group),
            Some(&rest),
        ));
    }
    let with = plan(&observed);
    assert_healthy_untouched(&with, &without);

    for (i, (value, expected)) in cases.iter().enumerate() {
        let group = format!("w{i}");
        let report = with
            .groups
            .iter()
            .find(|g| g.name == group)
            .unwrap_or_else(|| panic!("no report for {group}"));
        let shown: String = value.chars().take(20).collect();
        match expected {
            Some(basis_points) => {
                assert_eq!(report.state, GroupState::Valid, "{shown:?}: {report}");
                let published = report.published.as_ref().unwrap();
                let member = published
                    .members
                    .iter()
                    .find(|m| m.name == format!("w{i}-member"));
                assert_eq!(member.map(|m| m.weight), Some(*basis_points), "{shown:?}");
            }
            None => {
                let GroupState::Invalid { problems } = &report.state else {
                    panic!("{shown:?} was accepted: {report}");
                };
                let names_member = problems.iter().any(|p| {
                    matches!(p, GroupProblem::BadWeight { member, .. } if *member == format!("w{i}-member"))
                });
                assert!(names_member, "{shown:?}: {problems:?}");
                let line = report.to_string();
                assert!(
                    line.contains(&format!("w{i}-member"))
                        && line.contains("serving.kserve.io/canaryTrafficPercent"),
                    "{shown:?}: the report must name the member and the annotation: {line:.300}"
                );
                assert!(report.published.is_none());
            }
        }
    }
}

#[test]
fn hostile_group_labels_stay_in_their_namespace() {
    let without = plan(&healthy());
    let mut observed = healthy();
    // team-b labels its isvcs with modelmesh-apps' group name, path tricks, and junk.
    let labels = [
        "healthy",
        "modelmesh-apps/healthy",
        "../modelmesh-apps/v2/models/healthy",
        "healthy%2F..",
        "healthy?x",
        "healthy#",
        "héalthy",
        "healthy ",
        ".",
        "..",
    ];
    for (i, label) in labels.iter().enumerate() {
        observed.inference_services.push(isvc(
            "team-b",
            &format!("intruder-{i}"),
            Some(label),
            Some("100"),
        ));
    }
    let huge_label = "g".repeat(100_000);
    observed.inference_services.push(isvc(
        "team-b",
        "intruder-huge",
        Some(&huge_label),
        Some("100"),
    ));
    let with = plan(&observed);
    assert_healthy_untouched(&with, &without);

    for gateway in &with.gateways {
        for group in &gateway.config.groups {
            if group.namespace == "team-b" {
                for member in &group.members {
                    assert!(
                        member.name.starts_with("intruder-")
                            || member.name.starts_with("healthy-b"),
                        "team-b's group {} has a member from elsewhere: {}",
                        group.name,
                        member.name
                    );
                }
            }
            if group.namespace == "modelmesh-apps" && group.name == "healthy" {
                assert!(group
                    .members
                    .iter()
                    .all(|m| !m.name.starts_with("intruder-")));
            }
        }
    }
    // team-b's own "healthy" is a separate group in team-b (REST paths carry the
    // namespace); its gRPC name is modelmesh-apps' (older), so gRPC is off for it.
    let b_healthy = with
        .groups
        .iter()
        .find(|g| g.namespace == "team-b" && g.name == "healthy")
        .expect("team-b/healthy reported");
    assert!(!b_healthy.published.as_ref().unwrap().grpc, "{b_healthy}");
    assert!(b_healthy
        .to_string()
        .contains("belongs to namespace modelmesh-apps"));
    // Label values the filter could not route are refused with the filter's reason.
    for label in [
        "modelmesh-apps/healthy",
        "healthy%2F..",
        "healthy?x",
        "healthy#",
        "..",
        ".",
    ] {
        let report = with
            .groups
            .iter()
            .find(|g| g.namespace == "team-b" && g.name == label)
            .unwrap_or_else(|| panic!("no report for {label:?}"));
        assert!(report.state.is_invalid(), "{label:?} accepted: {report}");
        assert!(report.published.is_none());
        assert!(
            report.to_string().contains("must not contain") || report.to_string().contains(label),
            "{report}"
        );
    }
}

#[test]
fn a_thousand_members_plan_and_render() {
    let without = plan(&healthy());
    let mut observed = healthy();
    // 1,000 members at 0.1 % each: exactly 100 %.
    for i in 0..1000 {
        observed.inference_services.push(isvc(
            "team-c",
            &format!("big-{i:04}"),
            Some("big"),
            Some("0.1"),
        ));
    }
    let with = plan(&observed);
    assert_healthy_untouched(&with, &without);
    let big = published(&with, "team-c", "big").expect("the 1,000-member group is published");
    assert_eq!(big.members.len(), 1000);
    assert!(big.members.iter().all(|m| m.weight == 10));
    let routes = with
        .routes
        .iter()
        .find(|r| r.namespace == "team-c")
        .unwrap();
    assert_eq!(routes.models.len(), 1000);
    let yaml = render::to_yaml(&with, Default::default()).expect("renders");
    assert!(yaml.contains("big-0999"));

    // One member more makes it 100.1 %: refused, and still nothing else changes.
    observed
        .inference_services
        .push(isvc("team-c", "big-1000", Some("big"), Some("0.1")));
    let over = plan(&observed);
    assert_healthy_untouched(&over, &without);
    let report = over.groups.iter().find(|g| g.name == "big").unwrap();
    assert!(report.state.is_invalid());
    assert!(
        report.to_string().contains("weights sum to 100.1"),
        "{:.200}",
        report.to_string()
    );
}

fn dynamic(value: Value) -> kube::api::DynamicObject {
    serde_json::from_value(value).expect("a Kubernetes object")
}

#[test]
fn broken_objects_from_the_api_are_reported_and_skipped_one_by_one() {
    // As `modelsplit run` sees them: untyped objects decoded one by one.
    let healthy = healthy();
    let mut snapshot = Snapshot {
        namespaces: healthy.namespaces.clone(),
        ..Snapshot::default()
    };
    for runtime in &healthy.serving_runtimes {
        snapshot
            .serving_runtimes
            .push(dynamic(serde_json::to_value(runtime).unwrap()).into());
    }
    for isvc in &healthy.inference_services {
        let mut value = serde_json::to_value(isvc).unwrap();
        value["apiVersion"] = json!("serving.kserve.io/v1beta1");
        value["kind"] = json!("InferenceService");
        snapshot.inference_services.push(dynamic(value).into());
    }
    let mut no_spec = isvc_value("team-b", "specless", Some("healthy-b"), Some("0"));
    no_spec.as_object_mut().unwrap().remove("spec");
    let mut bad_spec = isvc_value("team-b", "bad-spec", Some("healthy-b"), Some("0"));
    bad_spec["spec"] = json!({"predictor": {"model": {"runtime": 42}}});
    let mut string_spec = isvc_value("team-b", "string-spec", None, None);
    string_spec["spec"] = json!("not an object");
    let mut future = isvc_value("team-b", "from-the-future", None, None);
    future["apiVersion"] = json!("serving.kserve.io/v2alpha9");
    future["spec"] = json!({"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "runtime": "routed"}}, "extra": {"x": [1, 2]}});
    for value in [no_spec, bad_spec, string_spec, future] {
        snapshot.inference_services.push(dynamic(value).into());
    }

    let (observed, errors) = snapshot.observed();
    let with = plan(&observed);
    assert_healthy_untouched(&with, &plan(&healthy));
    let reported: Vec<&str> = errors.iter().map(|e| e.object.as_str()).collect();
    for name in ["specless", "bad-spec", "string-spec"] {
        assert!(
            reported
                .iter()
                .any(|o| o.ends_with(&format!("team-b/{name}"))),
            "{name} not reported: {errors:?}"
        );
    }
    for error in &errors {
        assert!(
            error.object.starts_with("InferenceService team-b/"),
            "{error:?}"
        );
        assert!(!error.message.is_empty());
    }
}

#[test]
fn render_names_the_broken_document_and_the_field() {
    let err = modelsplit_core::manifests::load_manifests(&[
        fixture("base"),
        fixture("hostile/broken.yaml"),
    ])
    .expect_err("a broken manifest is an error for render")
    .to_string();
    assert!(err.contains("hostile/broken.yaml: document 2"), "{err}");
    assert!(err.contains("InferenceService no-spec"), "{err}");
    let err = modelsplit_core::manifests::load_manifests(&[fixture("hostile/future-version.yaml")])
        .expect_err("an unknown version is an error for render")
        .to_string();
    assert!(err.contains("serving.kserve.io/v2alpha9"), "{err}");
    assert!(
        err.contains("modelsplit reads serving.kserve.io/v1beta1"),
        "{err}"
    );
}
