//! The planner's rules (docs/design.md section 4), one test per rule or combination, over
//! the YAML fixtures in tests/fixtures/ (base/ holds the namespaces and runtimes).

use modelsplit_controller::render;
use modelsplit_core::planner::{self, NamespaceRoutes, Observed, Plan, PreviousConfigs};
use modelsplit_core::report::{GroupReport, GroupState};
use modelsplit_core::resources::ObjectKind;
use modelsplit_core::rules::GroupProblem;
use modelsplit_core::settings::{GatewayRef, Settings};
use modelsplit_filter::config::{FilterConfig, GroupConfig};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// base/ plus the named fixture files.
fn observed(files: &[&str]) -> Observed {
    let mut paths = vec![fixture("base")];
    paths.extend(files.iter().map(|f| fixture(f)));
    modelsplit_core::manifests::load_manifests(&paths).expect("fixtures load")
}

/// Plans, and checks what every plan must satisfy: each published configuration is
/// one the filter accepts, and the WasmPlugins carry exactly those configurations.
fn plan_with(files: &[&str], previous: &PreviousConfigs, settings: &Settings) -> Plan {
    let plan = planner::plan(&observed(files), previous, settings);
    for gateway in &plan.gateways {
        gateway
            .config
            .validate()
            .unwrap_or_else(|e| panic!("{} config rejected: {e}", gateway.plugin_namespace));
    }
    let with_groups = plan.gateways.iter().filter(|g| !g.config.groups.is_empty());
    assert_eq!(plan.wasm_plugins.len(), with_groups.count());
    assert_eq!(plan.virtual_services.len(), plan.routes.len());
    plan
}

fn plan(files: &[&str]) -> Plan {
    plan_with(files, &PreviousConfigs::new(), &Settings::default())
}

fn group<'a>(plan: &'a Plan, namespace: &str, name: &str) -> &'a GroupReport {
    plan.groups
        .iter()
        .find(|g| g.namespace == namespace && g.name == name)
        .unwrap_or_else(|| panic!("no report for group {namespace}/{name}: {:#?}", plan.groups))
}

fn published<'a>(plan: &'a Plan, namespace: &str, name: &str) -> &'a GroupConfig {
    group(plan, namespace, name)
        .published
        .as_ref()
        .unwrap_or_else(|| {
            panic!(
                "{namespace}/{name} not published: {}",
                group(plan, namespace, name)
            )
        })
}

fn weights(group: &GroupConfig) -> Vec<(&str, u32)> {
    group
        .members
        .iter()
        .map(|m| (m.name.as_str(), m.weight))
        .collect()
}

fn config<'a>(plan: &'a Plan, plugin_namespace: &str) -> &'a FilterConfig {
    &plan
        .gateways
        .iter()
        .find(|g| g.plugin_namespace == plugin_namespace)
        .unwrap_or_else(|| panic!("no gateway plan for {plugin_namespace}"))
        .config
}

fn routes<'a>(plan: &'a Plan, namespace: &str) -> Option<&'a NamespaceRoutes> {
    plan.routes.iter().find(|r| r.namespace == namespace)
}

fn exposed(plan: &Plan, namespace: &str) -> Vec<(String, bool)> {
    routes(plan, namespace)
        .map(|r| r.models.iter().map(|m| (m.name.clone(), m.grpc)).collect())
        .unwrap_or_default()
}

fn problems(report: &GroupReport) -> &[GroupProblem] {
    match &report.state {
        GroupState::Stale { problems } | GroupState::Invalid { problems } => problems,
        other => panic!(
            "{}/{} is {other:?}, not invalid",
            report.namespace, report.name
        ),
    }
}

#[test]
fn seed_workflow_splits_80_20_in_basis_points() {
    let plan = plan(&["seed-80-20.yaml"]);
    let report = group(&plan, "modelmesh-apps", "ai-model");
    assert_eq!(report.state, GroupState::Valid);
    let group = published(&plan, "modelmesh-apps", "ai-model");
    assert_eq!(
        weights(group),
        [("ai-model-one", 8000), ("ai-model-two", 2000)]
    );
    assert!(group.grpc);
    assert_eq!(group.sticky_header, None);
    // One WasmPlugin in the gateway's namespace with exactly this group.
    assert_eq!(
        config(&plan, "istio-system").groups,
        std::slice::from_ref(group)
    );
    let plugin = &plan.wasm_plugins[0];
    assert_eq!(plugin.metadata.namespace.as_deref(), Some("istio-system"));
    // Both members routed, with gRPC, bound to the annotated gateway.
    let routes = routes(&plan, "modelmesh-apps").unwrap();
    assert_eq!(
        routes.gateway,
        GatewayRef::new("istio-system", "odh-gateway")
    );
    assert_eq!(
        exposed(&plan, "modelmesh-apps"),
        [
            ("ai-model-one".to_string(), true),
            ("ai-model-two".to_string(), true)
        ]
    );
    assert_eq!(
        report.to_string(),
        "modelmesh-apps/ai-model: valid: ai-model-one=80% ai-model-two=20%"
    );
}

#[test]
fn three_way_splits_including_two_decimal_thirds() {
    let plan = plan(&["three-way.yaml"]);
    assert_eq!(
        weights(published(&plan, "team-b", "ensemble")),
        [("ens-a", 5000), ("ens-b", 3000), ("ens-c", 2000)]
    );
    assert_eq!(
        weights(published(&plan, "team-b", "thirds")),
        [("third-1", 3333), ("third-2", 3333), ("third-3", 3334)]
    );
    // team-b uses the single opendatahub.io/service-mesh-gw annotation.
    assert_eq!(
        routes(&plan, "team-b").unwrap().gateway.to_string(),
        "istio-system/odh-gateway"
    );
}

#[test]
fn half_percent_canary_is_fifty_basis_points() {
    let plan = plan(&["half-percent-canary.yaml"]);
    let group = published(&plan, "modelmesh-apps", "fraud");
    assert_eq!(weights(group), [("canary", 50), ("stable", 9950)]);
    assert!(group_line(&plan, "fraud").contains("canary=0.5% stable=99.5%"));
}

fn group_line(plan: &Plan, name: &str) -> String {
    plan.groups
        .iter()
        .find(|g| g.name == name)
        .unwrap()
        .to_string()
}

#[test]
fn sum_120_mid_reweighting_keeps_the_last_good_split() {
    let before = plan(&["seed-80-20.yaml"]);
    let previous = before.published_configs();
    let during = plan_with(&["reweight-step-120.yaml"], &previous, &Settings::default());
    let report = group(&during, "modelmesh-apps", "ai-model");
    assert!(matches!(report.state, GroupState::Stale { .. }), "{report}");
    assert_eq!(
        weights(published(&during, "modelmesh-apps", "ai-model")),
        [("ai-model-one", 8000), ("ai-model-two", 2000)]
    );
    let line = report.to_string();
    assert!(
        line.contains("weights sum to 120 (ai-model-one=80, ai-model-two=40), not 100"),
        "{line}"
    );
    assert!(
        line.contains("keeping the last good split ai-model-one=80% ai-model-two=20%"),
        "{line}"
    );
    assert!(during.invalid_groups().count() == 1);
    // The published WasmPlugin is unchanged: the gateway sees no transition at all.
    assert_eq!(during.wasm_plugins, before.wasm_plugins);
}

#[test]
fn sum_120_without_a_previous_split_is_not_published() {
    let plan = plan(&["reweight-step-120.yaml"]);
    let report = group(&plan, "modelmesh-apps", "ai-model");
    assert!(matches!(report.state, GroupState::Invalid { .. }));
    assert!(report.published.is_none());
    assert!(
        plan.wasm_plugins.is_empty(),
        "no group, no filter on the gateway"
    );
    assert!(report
        .to_string()
        .ends_with("not published (no last good split)"));
    // The members are still routed on their own names.
    assert_eq!(exposed(&plan, "modelmesh-apps").len(), 2);
}

#[test]
fn missing_weight_is_invalid_and_names_the_annotation() {
    let plan = plan(&["missing-weight.yaml"]);
    let report = group(&plan, "modelmesh-apps", "ai-model");
    assert_eq!(
        problems(report),
        [GroupProblem::MissingWeight {
            member: "ai-model-two".into()
        }]
    );
    assert!(report
        .to_string()
        .contains("member ai-model-two has no annotation serving.kserve.io/canaryTrafficPercent"));
}

#[test]
fn non_numeric_negative_and_too_precise_weights_are_invalid() {
    let plan = plan(&["bad-weights.yaml"]);
    for (group_name, bad) in [
        ("words", vec!["words-a"]),
        ("negative", vec!["neg-a", "neg-b"]),
        ("precise", vec!["fine-a", "fine-b"]),
    ] {
        let report = group(&plan, "modelmesh-apps", group_name);
        let members: Vec<&str> = problems(report)
            .iter()
            .map(|p| match p {
                GroupProblem::BadWeight { member, .. } => member.as_str(),
                other => panic!("{group_name}: unexpected {other:?}"),
            })
            .collect();
        assert_eq!(members, bad, "{group_name}");
    }
    let line = group_line(&plan, "negative");
    assert!(line.contains("member neg-b: serving.kserve.io/canaryTrafficPercent \"-10\" is not a number from 0 to 100"), "{line}");
    assert!(plan.wasm_plugins.is_empty());
}

#[test]
fn group_named_like_an_inference_service_is_invalid() {
    let plan = plan(&["group-is-isvc-name.yaml"]);
    let report = group(&plan, "modelmesh-apps", "classifier");
    assert_eq!(
        problems(report),
        [GroupProblem::NameIsInferenceService {
            name: "classifier".into()
        }]
    );
    assert!(report.to_string().contains("rename the group"));
    // The InferenceService keeps its own routes.
    assert!(exposed(&plan, "modelmesh-apps").contains(&("classifier".to_string(), true)));
}

#[test]
fn member_on_a_runtime_without_enable_route_makes_the_group_invalid() {
    let plan = plan(&["runtime-without-enable-route.yaml"]);
    let report = group(&plan, "modelmesh-apps", "mixed");
    assert!(matches!(report.state, GroupState::Invalid { .. }));
    assert!(report
        .to_string()
        .contains("member hidden-one is not exposed: its ServingRuntime \"internal\" lacks annotation enable-route: \"true\""));
    assert_eq!(
        exposed(&plan, "modelmesh-apps"),
        [("routed-one".to_string(), true)]
    );
}

#[test]
fn enable_route_can_be_not_required() {
    let settings = Settings {
        require_enable_route: false,
        ..Settings::default()
    };
    let plan = plan_with(
        &["runtime-without-enable-route.yaml"],
        &PreviousConfigs::new(),
        &settings,
    );
    assert_eq!(
        group(&plan, "modelmesh-apps", "mixed").state,
        GroupState::Valid
    );
    assert_eq!(exposed(&plan, "modelmesh-apps").len(), 2);
}

#[test]
fn only_model_mesh_inference_services_take_part() {
    let plan = plan(&["serverless-member.yaml"]);
    let line = group_line(&plan, "modes");
    assert!(
        line.contains("member serverless-one is not exposed: it does not run on ModelMesh"),
        "{line}"
    );
    assert_eq!(
        exposed(&plan, "modelmesh-apps"),
        [("mm-one".to_string(), true)]
    );
}

#[test]
fn same_group_name_in_two_namespaces_on_one_gateway_goes_to_the_oldest() {
    let plan = plan(&["same-name-two-namespaces.yaml"]);
    // team-b's claim (2024-06) is older than modelmesh-apps' (2025-03).
    assert!(published(&plan, "team-b", "shared").grpc);
    let loser = group(&plan, "modelmesh-apps", "shared");
    assert!(!loser.published.as_ref().unwrap().grpc);
    assert_eq!(
        loser.state,
        GroupState::Valid,
        "REST still works: the group stays valid"
    );
    assert!(loser
        .to_string()
        .contains("gRPC off: the name \"shared\" belongs to namespace team-b"));
    // edge-apps is behind another gateway workload: its name is its own.
    assert!(published(&plan, "edge-apps", "shared").grpc);
    assert!(group(&plan, "edge-apps", "shared").grpc_lost.is_none());
}

#[test]
fn a_group_whose_member_name_is_owned_elsewhere_loses_grpc() {
    let plan = plan(&["same-name-two-namespaces.yaml"]);
    // team-b/dup is younger than modelmesh-apps/dup: rewriting the header to "dup"
    // would reach modelmesh-apps, outside the group, so the group gets no gRPC.
    let report = group(&plan, "team-b", "uses-dup");
    let loss = report.grpc_lost.as_ref().expect("gRPC lost");
    assert_eq!(
        (loss.name.as_str(), loss.owner_namespace.as_str()),
        ("dup", "modelmesh-apps")
    );
    assert!(!published(&plan, "team-b", "uses-dup").grpc);
    assert!(exposed(&plan, "team-b").contains(&("dup".to_string(), false)));
    assert!(exposed(&plan, "modelmesh-apps").contains(&("dup".to_string(), true)));
    let notice = plan
        .notices
        .iter()
        .find(|n| n.namespace == "team-b" && n.name == "dup")
        .expect("a notice for the InferenceService that lost its gRPC route");
    assert!(
        notice.message.contains("namespace modelmesh-apps"),
        "{notice}"
    );
}

#[test]
fn two_gateways_get_two_wasm_plugins_and_their_own_routes() {
    let plan = plan(&["seed-80-20.yaml", "same-name-two-namespaces.yaml"]);
    let namespaces: Vec<_> = plan
        .wasm_plugins
        .iter()
        .map(|p| p.metadata.namespace.clone().unwrap())
        .collect();
    assert_eq!(namespaces, ["edge-gateways", "istio-system"]);
    let edge = config(&plan, "edge-gateways");
    assert_eq!(edge.groups.len(), 1);
    assert_eq!(edge.groups[0].namespace, "edge-apps");
    assert!(config(&plan, "istio-system")
        .groups
        .iter()
        .all(|g| g.namespace != "edge-apps"));
    assert_eq!(
        routes(&plan, "edge-apps").unwrap().gateway.to_string(),
        "edge-gateways/public"
    );
    // The service names each route's own namespace.
    assert_eq!(
        routes(&plan, "edge-apps").unwrap().modelmesh_host(),
        "modelmesh-serving.edge-apps.svc.cluster.local"
    );
}

#[test]
fn one_plugin_namespace_merges_gateways_and_makes_grpc_names_global_across_them() {
    let settings = Settings {
        plugin_namespace: Some("istio-system".into()),
        ..Settings::default()
    };
    let plan = plan_with(
        &["same-name-two-namespaces.yaml"],
        &PreviousConfigs::new(),
        &settings,
    );
    assert_eq!(plan.wasm_plugins.len(), 1);
    let gateway = &plan.gateways[0];
    assert_eq!(gateway.gateways.len(), 2, "{:?}", gateway.gateways);
    // All three "shared" groups now meet in one filter: only team-b keeps gRPC.
    let grpc: Vec<_> = gateway
        .config
        .groups
        .iter()
        .filter(|g| g.name == "shared")
        .map(|g| (g.namespace.as_str(), g.grpc))
        .collect();
    assert_eq!(
        grpc,
        [
            ("edge-apps", false),
            ("modelmesh-apps", false),
            ("team-b", true)
        ]
    );
}

#[test]
fn namespace_outside_the_mesh_is_ignored() {
    let plan = plan(&["outside-mesh.yaml", "plain-models.yaml"]);
    let report = group(&plan, "outside", "outsiders");
    assert!(matches!(report.state, GroupState::Ignored { .. }));
    assert!(
        !report.state.is_invalid(),
        "--strict does not fail on other teams' namespaces"
    );
    assert!(report.to_string().contains("not in the service mesh"));
    assert!(routes(&plan, "outside").is_none());
    assert!(plan.wasm_plugins.is_empty());
}

#[test]
fn gateways_come_from_either_annotation_style_or_the_default() {
    let plan = plan(&["plain-models.yaml", "three-way.yaml", "seed-80-20.yaml"]);
    let gateway = |ns| routes(&plan, ns).unwrap().gateway.to_string();
    assert_eq!(gateway("modelmesh-apps"), "istio-system/odh-gateway"); // maistra.io pair
    assert_eq!(gateway("team-b"), "istio-system/odh-gateway"); // opendatahub.io/service-mesh-gw
    assert_eq!(gateway("team-c"), "istio-system/odh-gateway"); // default
    assert_eq!(gateway("edge-apps"), "edge-gateways/public");

    let settings = Settings {
        default_gateway: GatewayRef::new("ingress", "models"),
        ..Settings::default()
    };
    let plan = plan_with(&["plain-models.yaml"], &PreviousConfigs::new(), &settings);
    assert_eq!(
        routes(&plan, "team-c").unwrap().gateway.to_string(),
        "ingress/models"
    );
    assert_eq!(routes(&plan, "team-c").unwrap().plugin_namespace, "ingress");
}

#[test]
fn broken_gateway_annotations_leave_the_namespace_out_with_a_notice() {
    let plan = plan(&["bad-gateway-annotations.yaml"]);
    let notice = |ns: &str| {
        plan.notices
            .iter()
            .find(|n| n.kind == ObjectKind::Namespace && n.name == ns)
            .unwrap_or_else(|| panic!("no notice for {ns}: {:?}", plan.notices))
            .message
            .clone()
    };
    assert!(notice("half-maistra").contains("set both"));
    assert!(notice("no-slash").contains("must be <namespace>/<name>"));
    assert!(matches!(
        group(&plan, "no-slash", "nowhere").state,
        GroupState::Ignored { .. }
    ));
    assert!(routes(&plan, "no-slash").is_none());
}

#[test]
fn exposure_follows_the_runtime_named_or_auto_selected() {
    let plan = plan(&["plain-models.yaml"]);
    // solo names `routed`; legacy (spec.predictor.sklearn) auto-selects `routed`;
    // onnx-auto auto-selects `internal` (no enable-route); typo names no runtime
    // that exists; serverless is not ModelMesh.
    assert_eq!(
        exposed(&plan, "team-c"),
        [("legacy".to_string(), true), ("solo".to_string(), true)]
    );
    assert_eq!(
        exposed(&plan, "edge-apps"),
        [("edge-model".to_string(), true)]
    );
    assert!(plan.groups.is_empty());
    assert!(plan.wasm_plugins.is_empty(), "routes alone need no filter");
}

#[test]
fn not_ready_member_gets_no_traffic_and_its_share_moves_to_the_ready_ones() {
    let plan = plan(&["not-ready.yaml"]);
    let report = group(&plan, "modelmesh-apps", "ai-model");
    assert_eq!(report.state, GroupState::Valid);
    assert_eq!(
        weights(published(&plan, "modelmesh-apps", "ai-model")),
        [("ai-model-one", 8000), ("ai-model-two", 0)]
    );
    let not_ready = report.not_ready.as_ref().unwrap();
    assert_eq!(not_ready.members, ["ai-model-two"]);
    assert!(not_ready.redistributed);
    assert!(report
        .to_string()
        .contains("not ready (Ready=False): ai-model-two, their share goes to the ready members"));
}

#[test]
fn when_no_member_is_ready_the_split_stays_as_configured() {
    let plan = plan(&["not-ready.yaml"]);
    let report = group(&plan, "modelmesh-apps", "all-down");
    assert_eq!(
        weights(published(&plan, "modelmesh-apps", "all-down")),
        [("down-a", 7000), ("down-b", 3000)]
    );
    assert!(!report.not_ready.as_ref().unwrap().redistributed);
    assert!(report.to_string().contains("split stays as configured"));
}

#[test]
fn readiness_also_gates_a_last_good_split() {
    let previous = plan(&["seed-80-20.yaml"]).published_configs();
    // Mid-reweighting (sum 120), and ai-model-one stops being ready.
    let mut observed = observed(&["reweight-step-120.yaml"]);
    for isvc in &mut observed.inference_services {
        if isvc.metadata.name.as_deref() == Some("ai-model-one") {
            isvc.status = Some(serde_json::from_value(serde_json::json!({
                "conditions": [{"type": "Ready", "status": "False", "reason": "ModelLoadFailed"}]
            })).unwrap());
        }
    }
    let plan = planner::plan(&observed, &previous, &Settings::default());
    let report = group(&plan, "modelmesh-apps", "ai-model");
    assert!(matches!(report.state, GroupState::Stale { .. }));
    assert_eq!(
        weights(report.published.as_ref().unwrap()),
        [("ai-model-one", 0), ("ai-model-two", 2000)]
    );
}

#[test]
fn emptied_group_is_removed_even_with_a_previous_split() {
    let previous = plan(&["seed-80-20.yaml"]).published_configs();
    let plan = plan_with(&[], &previous, &Settings::default());
    assert!(plan.groups.is_empty());
    assert!(config(&plan, "istio-system").groups.is_empty());
    assert!(plan.wasm_plugins.is_empty());
    assert!(routes(&plan, "modelmesh-apps").is_none());
}

#[test]
fn last_good_split_drops_members_that_left_the_group() {
    let previous = plan(&["three-way.yaml"]).published_configs();
    // ens-c was deleted; ens-a and ens-b still say 50 and 30: sum 80, invalid.
    let mut observed = observed(&["three-way.yaml"]);
    observed
        .inference_services
        .retain(|i| i.metadata.name.as_deref() != Some("ens-c"));
    let plan = planner::plan(&observed, &previous, &Settings::default());
    let report = group(&plan, "team-b", "ensemble");
    assert!(matches!(report.state, GroupState::Stale { .. }));
    assert_eq!(
        weights(report.published.as_ref().unwrap()),
        [("ens-a", 5000), ("ens-b", 3000)],
        "never route to a member that is gone"
    );
}

#[test]
fn a_valid_group_replaces_its_last_good_split() {
    let previous = plan(&["seed-80-20.yaml"]).published_configs();
    let mut observed = observed(&["seed-80-20.yaml"]);
    for isvc in &mut observed.inference_services {
        let weight = match isvc.metadata.name.as_deref() {
            Some("ai-model-one") => "60",
            _ => "40",
        };
        isvc.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                "serving.kserve.io/canaryTrafficPercent".into(),
                weight.into(),
            );
    }
    let plan = planner::plan(&observed, &previous, &Settings::default());
    assert_eq!(
        weights(published(&plan, "modelmesh-apps", "ai-model")),
        [("ai-model-one", 6000), ("ai-model-two", 4000)]
    );
}

#[test]
fn sticky_header_comes_from_the_members_and_must_agree() {
    let plan = plan(&["sticky.yaml"]);
    assert_eq!(
        published(&plan, "team-b", "recommender")
            .sticky_header
            .as_deref(),
        Some("x-user-id")
    );
    let report = group(&plan, "team-b", "conflicted");
    assert!(matches!(
        problems(report),
        [GroupProblem::StickyHeaderConflict { .. }]
    ));
}

/// A declared rollout reads each member's outcomes: its group is published with
/// `observe: true` (the filter then measures it); other groups' JSON is unchanged.
#[test]
fn a_group_whose_canary_declares_a_rollout_is_observed() {
    let rollout = plan(&["rollout.yaml"]);
    assert!(published(&rollout, "team-b", "risky").observe);
    assert!(!published(&rollout, "team-b", "calm").observe);
    let json = config(&rollout, "istio-system").to_json();
    assert_eq!(json.matches(r#""observe":true"#).count(), 1, "{json}");
    assert!(!json.contains(r#""observe":false"#), "{json}");
    let seed = config(&plan(&["seed-80-20.yaml"]), "istio-system").to_json();
    assert!(!seed.contains("observe"), "{seed}");
}

#[test]
fn every_problem_of_a_group_is_reported_at_once() {
    let mut observed = observed(&["runtime-without-enable-route.yaml"]);
    for isvc in &mut observed.inference_services {
        isvc.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("serving.kserve.io/canaryTrafficPercent".into(), "70".into());
    }
    let plan = planner::plan(&observed, &PreviousConfigs::new(), &Settings::default());
    let kinds: Vec<&str> = problems(group(&plan, "modelmesh-apps", "mixed"))
        .iter()
        .map(|p| match p {
            GroupProblem::WrongSum { .. } => "sum",
            GroupProblem::MemberNotExposed { .. } => "exposure",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["sum", "exposure"]);
}

#[test]
fn output_does_not_depend_on_input_order() {
    let files = [
        "seed-80-20.yaml",
        "three-way.yaml",
        "same-name-two-namespaces.yaml",
        "plain-models.yaml",
        "sticky.yaml",
        "half-percent-canary.yaml",
    ];
    let forward = observed(&files);
    let mut backward = forward.clone();
    backward.namespaces.reverse();
    backward.serving_runtimes.reverse();
    backward.inference_services.reverse();
    let settings = Settings::default();
    let a = planner::plan(&forward, &PreviousConfigs::new(), &settings);
    let b = planner::plan(&backward, &PreviousConfigs::new(), &settings);
    assert_eq!(a, b);
    assert_eq!(
        render::to_yaml(&a, Default::default()).unwrap(),
        render::to_yaml(&b, Default::default()).unwrap()
    );
}

#[test]
fn every_output_is_labelled_managed_by_modelsplit() {
    let plan = plan(&[
        "seed-80-20.yaml",
        "same-name-two-namespaces.yaml",
        "plain-models.yaml",
    ]);
    let labels = plan
        .wasm_plugins
        .iter()
        .map(|p| &p.metadata.labels)
        .chain(plan.virtual_services.iter().map(|v| &v.metadata.labels));
    let mut count = 0;
    for labels in labels {
        count += 1;
        assert_eq!(
            labels
                .as_ref()
                .and_then(|l| l.get("app.kubernetes.io/managed-by"))
                .map(String::as_str),
            Some("modelsplit")
        );
    }
    assert_eq!(count, 2 + 4);
}

#[test]
fn group_and_inference_service_names_share_one_grpc_namespace_per_gateway() {
    let plan = plan(&["group-vs-isvc-across-namespaces.yaml"]);
    // team-b's InferenceService "ai-model" is older than modelmesh-apps' group.
    let report = group(&plan, "modelmesh-apps", "ai-model");
    assert_eq!(
        report
            .grpc_lost
            .as_ref()
            .map(|l| l.owner_namespace.as_str()),
        Some("team-b")
    );
    assert!(exposed(&plan, "team-b").contains(&("ai-model".to_string(), true)));
    // modelmesh-apps' group "ranker" is older than team-b's InferenceService.
    assert!(published(&plan, "modelmesh-apps", "ranker").grpc);
    assert!(exposed(&plan, "team-b").contains(&("ranker".to_string(), false)));
}
