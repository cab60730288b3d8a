//! A gateway's WasmPlugin must stay below what the API server accepts: above
//! MAX_WASM_PLUGIN_BYTES the planner keeps the last published configuration (or
//! publishes none) and says which gateway, how large, and how to fix it.

use modelsplit_core::planner::{self, Observed, Plan, PreviousConfigs};
use modelsplit_core::resources::wasm_plugin::MAX_WASM_PLUGIN_BYTES;
use modelsplit_core::settings::Settings;
use modelsplit_filter::config::{FilterConfig, GroupConfig};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Gateway workload namespace of the crowded namespace `big` (the default gateway).
const BIG_GATEWAY: &str = "istio-system";
/// Gateway workload namespace of the namespace `small`, which has one group.
const SMALL_GATEWAY: &str = "edge";
const MEMBERS_PER_GROUP: usize = 4;
/// Pads names to 58 characters, so fewer objects pass the limit (DNS labels allow 63).
const PAD: &str = "padding-padding-padding-padding-padding";

/// Manifests: namespace `big` with `groups` groups of four 25% members on the
/// default gateway, and namespace `small` with one 80/20 group on edge/public.
fn manifests(groups: usize) -> String {
    let mut yaml = String::new();
    for (namespace, gateway) in [("big", None), ("small", Some("edge/public"))] {
        let gateway = gateway
            .map(|g| format!("\n  annotations:\n    opendatahub.io/service-mesh-gw: {g}"))
            .unwrap_or_default();
        write!(
            yaml,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n  labels:\n    opendatahub.io/service-mesh: \"true\"{gateway}\n---\napiVersion: serving.kserve.io/v1alpha1\nkind: ServingRuntime\nmetadata:\n  name: open\n  namespace: {namespace}\n  annotations:\n    enable-route: \"true\"\nspec:\n  multiModel: true\n"
        )
        .unwrap();
    }
    let mut isvc = |namespace: &str, name: &str, group: &str, weight: &str| {
        write!(
            yaml,
            "---\napiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n    serving.kserve.io/model-tag: {group}\n  annotations:\n    serving.kserve.io/deploymentMode: ModelMesh\n    serving.kserve.io/canaryTrafficPercent: \"{weight}\"\nspec:\n  predictor:\n    model:\n      runtime: open\nstatus:\n  conditions:\n    - type: Ready\n      status: \"True\"\n"
        )
        .unwrap();
    };
    for g in 0..groups {
        for m in 0..MEMBERS_PER_GROUP {
            isvc(
                "big",
                &format!("m{g:05}-{m}-{PAD}-model"),
                &format!("g{g:05}-{PAD}-group"),
                "25",
            );
        }
    }
    isvc("small", "s1", "sg", "80");
    isvc("small", "s2", "sg", "20");
    yaml
}

/// Writes the manifests for `groups` groups to a temporary file.
fn manifest_file(groups: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cluster.yaml");
    std::fs::write(&path, manifests(groups)).expect("write manifests");
    (dir, path)
}

fn observed(groups: usize) -> Observed {
    let (_dir, path) = manifest_file(groups);
    modelsplit_core::manifests::load_manifests(&[path]).expect("generated manifests load")
}

/// Enough groups that the `big` gateway's WasmPlugin is above the limit (about 1.5 MB).
const TOO_MANY_GROUPS: usize = 3_500;

/// The oversized cluster, generated and loaded once for the planner tests.
fn oversized_cluster() -> &'static Observed {
    static CLUSTER: OnceLock<Observed> = OnceLock::new();
    CLUSTER.get_or_init(|| observed(TOO_MANY_GROUPS))
}

fn plugin_config<'a>(plan: &'a Plan, namespace: &str) -> Option<&'a FilterConfig> {
    plan.wasm_plugins
        .iter()
        .find(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .map(|p| {
            assert!(
                p.serialized_len() <= MAX_WASM_PLUGIN_BYTES,
                "WasmPlugin in {namespace} is {} bytes",
                p.serialized_len()
            );
            match &p.spec.plugin_config {
                Some(modelsplit_core::resources::wasm_plugin::PluginConfig::Filter(c)) => c,
                other => panic!("unexpected pluginConfig {other:?}"),
            }
        })
}

fn gateway_config<'a>(plan: &'a Plan, namespace: &str) -> &'a FilterConfig {
    &plan
        .gateways
        .iter()
        .find(|g| g.plugin_namespace == namespace)
        .unwrap_or_else(|| panic!("no gateway plan for {namespace}"))
        .config
}

/// Every WasmPlugin is within the limit, and the small gateway is untouched.
fn check_common(plan: &Plan) {
    for plugin in &plan.wasm_plugins {
        assert!(plugin.serialized_len() <= MAX_WASM_PLUGIN_BYTES);
    }
    let small = plugin_config(plan, SMALL_GATEWAY).expect("small gateway keeps its plugin");
    assert_eq!(small.groups.len(), 1);
    assert_eq!(small.groups[0].name, "sg");
    assert_eq!(plan.oversized.len(), 1, "{:?}", plan.oversized);
    let too_big = &plan.oversized[0];
    assert_eq!(too_big.plugin_namespace, BIG_GATEWAY);
    assert!(too_big.bytes > MAX_WASM_PLUGIN_BYTES, "{too_big:?}");
}

/// The notice about the big gateway, checked to name the size, the limit and the fix.
fn size_notice(plan: &Plan) -> String {
    let notices: Vec<String> = plan
        .notices
        .iter()
        .filter(|n| n.message.contains("limit"))
        .map(ToString::to_string)
        .collect();
    assert_eq!(notices.len(), 1, "{notices:#?}");
    let notice = notices[0].clone();
    let bytes = plan.oversized[0].bytes.to_string();
    for needed in [
        &format!("Namespace {BIG_GATEWAY}:"),
        &bytes,
        &MAX_WASM_PLUGIN_BYTES.to_string(),
        "opendatahub.io/service-mesh-gw",
        "several gateways",
        "shorten",
    ] {
        assert!(notice.contains(needed), "{needed:?} missing from: {notice}");
    }
    notice
}

#[test]
fn oversized_gateway_without_a_previous_config_publishes_none_and_says_why() {
    let plan = planner::plan(
        oversized_cluster(),
        &PreviousConfigs::new(),
        &Settings::default(),
    );
    check_common(&plan);
    assert!(!plan.oversized[0].kept_previous);
    assert!(plugin_config(&plan, BIG_GATEWAY).is_none());
    assert!(gateway_config(&plan, BIG_GATEWAY).groups.is_empty());
    assert!(!plan.published_configs().contains_key(BIG_GATEWAY));
    let notice = size_notice(&plan);
    assert!(notice.contains("no configuration published"), "{notice}");
    // The routes of the namespace are still rendered (they fit on their own).
    assert!(plan.routes.iter().any(|r| r.namespace == "big"));
}

#[test]
fn oversized_gateway_keeps_its_previously_published_config() {
    let previous_config = FilterConfig::with_groups(vec![GroupConfig::weighted(
        "big",
        &format!("g00000-{PAD}-group"),
        &[
            (&format!("m00000-0-{PAD}-model"), 5000),
            (&format!("m00000-1-{PAD}-model"), 5000),
        ],
    )]);
    previous_config
        .validate()
        .expect("previous config is valid");
    let previous = PreviousConfigs::from([(BIG_GATEWAY.to_string(), previous_config.clone())]);
    let plan = planner::plan(oversized_cluster(), &previous, &Settings::default());
    check_common(&plan);
    assert!(plan.oversized[0].kept_previous);
    assert_eq!(plugin_config(&plan, BIG_GATEWAY), Some(&previous_config));
    assert_eq!(gateway_config(&plan, BIG_GATEWAY), &previous_config);
    // The next round starts from the same last-known-good config.
    assert_eq!(
        plan.published_configs().get(BIG_GATEWAY),
        Some(&previous_config)
    );
    let notice = size_notice(&plan);
    assert!(
        notice.contains("keeping the previously published"),
        "{notice}"
    );
}

#[test]
fn a_gateway_below_the_limit_is_unaffected() {
    let groups = 50;
    let plan = planner::plan(
        &observed(groups),
        &PreviousConfigs::new(),
        &Settings::default(),
    );
    assert!(plan.oversized.is_empty(), "{:?}", plan.oversized);
    assert!(
        plan.notices.iter().all(|n| !n.message.contains("limit")),
        "{:?}",
        plan.notices
    );
    let big = plugin_config(&plan, BIG_GATEWAY).expect("big gateway has its plugin");
    assert_eq!(big.groups.len(), groups);
    assert!(big
        .groups
        .iter()
        .all(|g| g.members.len() == MEMBERS_PER_GROUP));
    assert_eq!(big, gateway_config(&plan, BIG_GATEWAY));
}

#[test]
fn render_strict_fails_on_an_oversized_gateway_and_plain_render_prints_the_rest() {
    let (_dir, path) = manifest_file(TOO_MANY_GROUPS);
    let path = path.to_str().expect("utf-8 temp path");
    let strict = Command::new(env!("CARGO_BIN_EXE_modelsplit"))
        .args(["render", "--strict", "-f", path])
        .output()
        .expect("run modelsplit");
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert!(!strict.status.success(), "{stderr}");
    assert!(strict.stdout.is_empty(), "--strict printed resources");
    assert!(
        stderr.contains("too large to publish (--strict)"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("Namespace {BIG_GATEWAY}:")),
        "{stderr}"
    );

    let plain = Command::new(env!("CARGO_BIN_EXE_modelsplit"))
        .args(["render", "-f", path])
        .output()
        .expect("run modelsplit");
    assert!(plain.status.success());
    let stdout = String::from_utf8_lossy(&plain.stdout);
    assert_eq!(
        stdout.matches("kind: WasmPlugin").count(),
        1,
        "only the small gateway's"
    );
    assert!(stdout.contains("namespace: edge"));
}
