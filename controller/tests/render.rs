//! `modelsplit render` end to end: golden outputs (review them as an Istio user
//! would before applying) and the command line's behaviour.
//!
//! Regenerate goldens with `UPDATE_GOLDEN=1 cargo test -p modelsplit-controller --test render`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn here(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(path)
}

fn modelsplit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_modelsplit"))
        .args(args)
        .current_dir(here(""))
        .output()
        .expect("modelsplit runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Compares with `golden/<name>`, or rewrites it under UPDATE_GOLDEN=1.
fn golden(name: &str, actual: &str) {
    let path = here("golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert!(
        expected == actual,
        "{} differs (UPDATE_GOLDEN=1 regenerates it; review the diff):\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

/// The first document of a multi-document YAML text.
fn first_document(yaml: &str) -> serde_yaml::Value {
    serde_yaml::Deserializer::from_str(yaml)
        .next()
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .unwrap()
}

/// Renders successfully and checks stdout and stderr against goldens.
fn render_golden(name: &str, args: &[&str]) -> Output {
    let mut full = vec!["render"];
    full.extend_from_slice(args);
    let output = modelsplit(&full);
    assert!(output.status.success(), "{}", stderr(&output));
    golden(&format!("{name}.yaml"), &stdout(&output));
    golden(&format!("{name}.report.txt"), &stderr(&output));
    output
}

#[test]
fn seed_example_renders_a_wasm_plugin_and_a_virtual_service() {
    let output = render_golden("seed", &["-f", "fixtures/seed"]);
    let yaml = stdout(&output);
    // Things an Istio user relies on, asserted here as well as in the golden file.
    assert_eq!(yaml.matches("\nkind: WasmPlugin\n").count(), 1);
    assert_eq!(yaml.matches("\nkind: VirtualService\n").count(), 1);
    for needle in [
        "apiVersion: extensions.istio.io/v1alpha1",
        "apiVersion: networking.istio.io/v1beta1",
        "phase: AUTHN",
        "failStrategy: FAIL_OPEN",
        "weight: 8000",
        "weight: 2000",
        "- istio-system/odh-gateway",
        "exact: /modelmesh/modelmesh-apps/v2/models/ai-model-one\n",
        "prefix: /modelmesh/modelmesh-apps/v2/models/ai-model-one/\n",
        "uri: /v2/models/ai-model-one/\n",
        "host: modelmesh-serving.modelmesh-apps.svc.cluster.local",
        "number: 8033",
        "number: 8008",
        "app.kubernetes.io/managed-by: modelsplit",
    ] {
        assert!(yaml.contains(needle), "missing {needle:?} in\n{yaml}");
    }
    assert_eq!(
        stderr(&output),
        "modelmesh-apps/ai-model: valid: ai-model-one=80% ai-model-two=20%\n"
    );
}

#[test]
fn the_plugin_config_is_what_the_filter_accepts() {
    let output = modelsplit(&["render", "-f", "fixtures/seed"]);
    let first = first_document(&stdout(&output));
    let json = serde_json::to_vec(&first["spec"]["pluginConfig"]).unwrap();
    let config = modelsplit_filter::config::FilterConfig::from_json(&json).unwrap();
    assert_eq!(config.groups[0].members[0].weight, 8000);
}

#[test]
fn many_namespaces_gateways_and_problems() {
    render_golden(
        "mixed",
        &[
            "-f",
            "fixtures/base",
            "-f",
            "fixtures/three-way.yaml",
            "-f",
            "fixtures/same-name-two-namespaces.yaml",
            "-f",
            "fixtures/plain-models.yaml",
            "-f",
            "fixtures/half-percent-canary.yaml",
            "-f",
            "fixtures/sticky.yaml",
            "-f",
            "fixtures/bad-weights.yaml",
            "-f",
            "fixtures/outside-mesh.yaml",
            "-f",
            "fixtures/not-ready.yaml",
        ],
    );
}

#[test]
fn previous_output_keeps_the_last_good_split_byte_for_byte() {
    let before = render_golden(
        "reweight-before",
        &["-f", "fixtures/base", "-f", "fixtures/seed-80-20.yaml"],
    );
    let during = render_golden(
        "reweight-during",
        &[
            "-f",
            "fixtures/base",
            "-f",
            "fixtures/reweight-step-120.yaml",
            "--previous",
            "golden/reweight-before.yaml",
        ],
    );
    assert_eq!(stdout(&before), stdout(&during));
    assert!(stderr(&during).contains("stale: weights sum to 120"));
}

#[test]
fn manifests_can_come_from_stdin() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_modelsplit"))
        .args(["render", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for file in ["namespace.yaml", "runtime.yaml", "inferenceservices.yaml"] {
        input += &std::fs::read_to_string(here("fixtures/seed").join(file)).unwrap();
        input += "\n---\n";
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        std::fs::read_to_string(here("golden/seed.yaml")).unwrap()
    );
}

#[test]
fn same_input_same_bytes() {
    let args = [
        "render",
        "-f",
        "fixtures/base",
        "-f",
        "fixtures/same-name-two-namespaces.yaml",
    ];
    assert_eq!(stdout(&modelsplit(&args)), stdout(&modelsplit(&args)));
}

#[test]
fn strict_fails_on_invalid_groups_and_prints_no_resources() {
    let output = modelsplit(&[
        "render",
        "--strict",
        "-f",
        "fixtures/base",
        "-f",
        "fixtures/missing-weight.yaml",
    ]);
    assert!(!output.status.success());
    assert!(stdout(&output).is_empty());
    let err = stderr(&output);
    assert!(
        err.contains("modelmesh-apps/ai-model: invalid: member ai-model-two has no annotation"),
        "{err}"
    );
    assert!(err.contains("1 group(s) invalid (--strict)"), "{err}");

    // Without --strict the same input renders (the members' own routes).
    let output = modelsplit(&[
        "render",
        "-f",
        "fixtures/base",
        "-f",
        "fixtures/missing-weight.yaml",
    ]);
    assert!(output.status.success());
    assert!(stdout(&output).contains("kind: VirtualService"));

    // --strict passes when every group is valid.
    let output = modelsplit(&["render", "--strict", "-f", "fixtures/seed"]);
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn settings_flags_reach_the_wasm_plugin_and_routes() {
    let sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let output = modelsplit(&[
        "render",
        "-f",
        "fixtures/base",
        "-f",
        "fixtures/plain-models.yaml",
        "-f",
        "fixtures/three-way.yaml",
        "--default-gateway",
        "ingress/models",
        "--plugin-namespace",
        "mesh-root",
        "--selector",
        "app=models-gateway",
        "--selector",
        "tier=edge",
        "--url",
        "https://example.com/modelsplit_filter.wasm",
        "--sha256",
        sha,
        "--fail-strategy",
        "FAIL_CLOSE",
        "--image-pull-secret",
        "registry-pull",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let yaml = stdout(&output);
    for needle in [
        "imagePullSecret: registry-pull",
        "  namespace: mesh-root\n",
        "      app: models-gateway\n      tier: edge\n",
        "url: https://example.com/modelsplit_filter.wasm",
        &format!("sha256: {sha}"),
        "failStrategy: FAIL_CLOSE",
        "- ingress/models",
    ] {
        assert!(yaml.contains(needle), "missing {needle:?} in\n{yaml}");
    }
    assert!(!yaml.contains("istio: ingressgateway"));
}

#[test]
fn no_require_enable_route_exposes_every_model_mesh_isvc() {
    let args = [
        "render",
        "-f",
        "fixtures/base",
        "-f",
        "fixtures/runtime-without-enable-route.yaml",
    ];
    let strict = stdout(&modelsplit(&args));
    assert!(!strict.contains("hidden-one"));
    let mut relaxed_args = args.to_vec();
    relaxed_args.push("--no-require-enable-route");
    let relaxed = modelsplit(&relaxed_args);
    assert!(stdout(&relaxed).contains("/v2/models/hidden-one"));
    assert!(stderr(&relaxed).contains("modelmesh-apps/mixed: valid"));
}

#[test]
fn lists_and_foreign_kinds_and_unknown_fields_are_accepted() {
    let output = modelsplit(&["render", "-f", "fixtures/broken/list-and-others.yaml"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("/modelmesh/listed/v2/models/from-list"));
}

#[test]
fn an_input_without_exposed_models_says_so() {
    let output = modelsplit(&["render", "-f", "fixtures/base"]);
    assert!(output.status.success());
    assert!(stdout(&output).is_empty());
    assert!(
        stderr(&output).contains("nothing to render"),
        "{}",
        stderr(&output)
    );
}

fn failure(args: &[&str]) -> String {
    let output = modelsplit(args);
    assert!(!output.status.success(), "{args:?} succeeded");
    assert!(stdout(&output).is_empty());
    stderr(&output)
}

#[test]
fn input_errors_name_the_file_document_and_field() {
    let err = failure(&["render", "-f", "fixtures/broken/wrong-field-type.yaml"]);
    assert!(
        err.contains("fixtures/broken/wrong-field-type.yaml: document 2:"),
        "{err}"
    );
    assert!(
        err.contains("InferenceService broken-model: field spec.predictor.model.runtime"),
        "{err}"
    );

    let err = failure(&["render", "-f", "fixtures/broken/wrong-api-version.yaml"]);
    assert!(err.contains("document 1: InferenceService has apiVersion \"serving.kserve.io/v1alpha2\"; modelsplit reads serving.kserve.io/v1beta1"), "{err}");

    let err = failure(&["render", "-f", "fixtures/broken/not-yaml.yaml"]);
    assert!(
        err.contains("not-yaml.yaml: document 1: not valid YAML"),
        "{err}"
    );

    let err = failure(&["render", "-f", "fixtures/broken/no-name.yaml"]);
    assert!(err.contains("ServingRuntime has no metadata.name"), "{err}");

    let err = failure(&["render", "-f", "fixtures/broken/no-spec.yaml"]);
    assert!(
        err.contains("no-spec.yaml: document 1: InferenceService specless: missing field `spec`"),
        "{err}"
    );

    let err = failure(&["render", "-f", "fixtures/does-not-exist.yaml"]);
    assert!(err.contains("fixtures/does-not-exist.yaml"), "{err}");

    let err = failure(&[
        "render",
        "-f",
        "fixtures/seed",
        "-f",
        "fixtures/seed/runtime.yaml",
    ]);
    assert!(
        err.contains("ServingRuntime modelmesh-apps/my-runtime is defined twice"),
        "{err}"
    );

    let err = failure(&[
        "render",
        "-f",
        "fixtures/seed",
        "--previous",
        "fixtures/broken/previous-bad-config.yaml",
    ]);
    assert!(err.contains("previous-bad-config.yaml: document 1: WasmPlugin spec.pluginConfig: group modelmesh-apps/ai-model: the member weights sum to 0"), "{err}");
}

#[test]
fn bad_flag_values_are_refused_with_the_fix() {
    let err = failure(&[
        "render",
        "-f",
        "fixtures/seed",
        "--default-gateway",
        "odh-gateway",
    ]);
    assert!(err.contains("must be written <namespace>/<name>"), "{err}");
    let err = failure(&["render", "-f", "fixtures/seed", "--fail-strategy", "OPEN"]);
    assert!(err.contains("FAIL_OPEN or FAIL_CLOSE"), "{err}");
    let err = failure(&["render", "-f", "fixtures/seed", "--sha256", "xyz"]);
    assert!(err.contains("64 hexadecimal digits"), "{err}");
    let err = failure(&["render", "-f", "fixtures/seed", "--selector", "novalue"]);
    assert!(err.contains("<label>=<value>"), "{err}");
    let err = failure(&[
        "render",
        "-f",
        "fixtures/seed",
        "--image-pull-secret",
        "Not/A-Name",
    ]);
    assert!(
        err.contains("image pull secret \"Not/A-Name\" is not a valid Kubernetes name"),
        "{err}"
    );
}

#[test]
fn envoy_filter_delivery_renders_the_same_filter_and_config_as_an_envoy_filter() {
    let output = render_golden(
        "seed-envoyfilter",
        &[
            "-f",
            "fixtures/seed",
            "--delivery",
            "envoyfilter",
            "--url",
            "https://filters.example.com/modelsplit.wasm",
            "--sha256",
            &"ab".repeat(32),
        ],
    );
    let yaml = stdout(&output);
    assert_eq!(yaml.matches("\nkind: EnvoyFilter\n").count(), 1);
    assert_eq!(yaml.matches("\nkind: WasmPlugin\n").count(), 0);
    assert_eq!(yaml.matches("\nkind: VirtualService\n").count(), 1);
    let filter: modelsplit_core::resources::EnvoyFilter =
        serde_yaml::from_value(first_document(&yaml)).expect("an EnvoyFilter");
    // The same configuration the WasmPlugin would carry.
    let plain = modelsplit(&["render", "-f", "fixtures/seed"]);
    let plugin = first_document(&stdout(&plain));
    let json = serde_json::to_vec(&plugin["spec"]["pluginConfig"]).unwrap();
    let config = modelsplit_filter::config::FilterConfig::from_json(&json).unwrap();
    assert_eq!(filter.filter_config().unwrap(), config);
    assert!(
        yaml.contains("allow_on_headers_stop_iteration: true"),
        "{yaml}"
    );
}

#[test]
fn previous_envoy_filter_output_keeps_the_last_good_split() {
    let dir = tempfile::tempdir().unwrap();
    let before = modelsplit(&[
        "render",
        "--delivery=envoyfilter",
        "-f",
        "fixtures/base",
        "-f",
        "fixtures/seed-80-20.yaml",
    ]);
    assert!(before.status.success(), "{}", stderr(&before));
    let previous = dir.path().join("before.yaml");
    std::fs::write(&previous, &before.stdout).unwrap();
    let during = modelsplit(&[
        "render",
        "--delivery=envoyfilter",
        "-f",
        "fixtures/base",
        "-f",
        "fixtures/reweight-step-120.yaml",
        "--previous",
        previous.to_str().unwrap(),
    ]);
    assert!(during.status.success(), "{}", stderr(&during));
    assert_eq!(stdout(&before), stdout(&during));
    assert!(stderr(&during).contains("stale: weights sum to 120"));
}

#[test]
fn delivery_flag_errors_say_what_to_write() {
    let err = failure(&["render", "-f", "fixtures/seed", "--delivery", "lua"]);
    assert!(err.contains("must be wasmplugin or envoyfilter"), "{err}");
    let err = failure(&[
        "render",
        "-f",
        "fixtures/seed",
        "--delivery",
        "envoyfilter",
        "--image-pull-secret",
        "quay-pull",
    ]);
    assert!(
        err.contains("works only with --delivery wasmplugin"),
        "{err}"
    );
}
