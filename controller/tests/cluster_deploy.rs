//! controller/deploy/ is valid without an API server: every object round-trips through
//! the official Kubernetes types (k8s-openapi) without losing a field (a misspelt or
//! misplaced field would be dropped), `kubectl kustomize` builds it (the kubectl built with
//! the control plane, when `$MODELSPLIT_CONTROL_PLANE` names it), and RBAC grants exactly
//! what the controller uses (least privilege).
//!
//! Admission by a real API server (server-side dry run, Pod Security `restricted`) is
//! tests/tests/cluster_install.rs.

mod cluster_mock;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use cluster_mock::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use modelsplit_controller::cluster::kinds::{
    CLUSTER_ACCESS, LEASE_ACCESS, ROLLOUT_CLUSTER_ACCESS, ROLLOUT_STATE_ACCESS,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

fn deploy_dir() -> std::path::PathBuf {
    manifest_dir().join("deploy")
}

fn round_trips<T: DeserializeOwned + Serialize>(object: &Value) {
    let typed: T = serde_json::from_value(object.clone())
        .unwrap_or_else(|e| panic!("{} {}: {e}", object["kind"], object["metadata"]["name"]));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        &back, object,
        "{} {} lost or changed a field",
        object["kind"], object["metadata"]["name"]
    );
}

fn check_object(object: &Value) {
    match object["kind"].as_str().unwrap_or("") {
        "Namespace" => round_trips::<Namespace>(object),
        "ServiceAccount" => round_trips::<ServiceAccount>(object),
        "ClusterRole" => round_trips::<ClusterRole>(object),
        "ClusterRoleBinding" => round_trips::<ClusterRoleBinding>(object),
        "Role" => round_trips::<Role>(object),
        "RoleBinding" => round_trips::<RoleBinding>(object),
        "Deployment" => round_trips::<Deployment>(object),
        "Service" => round_trips::<Service>(object),
        "PodDisruptionBudget" => round_trips::<PodDisruptionBudget>(object),
        other => panic!("unexpected kind {other} in controller/deploy"),
    }
}

/// The objects of the files the kustomization lists.
fn listed_objects() -> Vec<Value> {
    let kustomization = yaml_documents(&deploy_dir().join("kustomization.yaml"));
    let resources = kustomization[0]["resources"]
        .as_array()
        .expect("resources")
        .clone();
    let mut objects = Vec::new();
    for file in resources {
        let file = file.as_str().expect("a file name");
        let documents = yaml_documents(&deploy_dir().join(file));
        assert!(!documents.is_empty(), "{file} is empty");
        objects.extend(documents);
    }
    objects
}

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn every_manifest_is_a_valid_kubernetes_object() {
    let objects = listed_objects();
    let kinds: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Namespace",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ])
    );
    for object in &objects {
        check_object(object);
    }
}

/// The kubectl built with the control plane (tests/control-plane/build.sh, Kubernetes v1.34.4):
/// distributions' kubectl may predate the kustomization's `labels:` field (Debian 12's is 1.20).
fn control_plane_kubectl() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("MODELSPLIT_CONTROL_PLANE")?;
    let kubectl = std::path::PathBuf::from(dir).join("kubectl");
    assert!(
        kubectl.is_file(),
        "MODELSPLIT_CONTROL_PLANE is set but {} is missing: run tests/control-plane/build.sh",
        kubectl.display()
    );
    Some(kubectl)
}

#[test]
fn kubectl_kustomize_builds_the_install() {
    let Some(kubectl) = control_plane_kubectl() else {
        eprintln!(
            "MODELSPLIT_CONTROL_PLANE is not set (scripts/test.sh sets it): checked the listed \
             files only, not `kubectl kustomize`"
        );
        return;
    };
    let output = Command::new(&kubectl)
        .args(["kustomize"])
        .arg(deploy_dir())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", kubectl.display()));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let file =
        std::env::temp_dir().join(format!("modelsplit-kustomize-{}.yaml", std::process::id()));
    std::fs::write(&file, &output.stdout).unwrap();
    let objects = yaml_documents(Path::new(&file));
    let _ = std::fs::remove_file(&file);
    assert_eq!(objects.len(), listed_objects().len());
    for object in &objects {
        check_object(object);
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/part-of"],
            "modelsplit"
        );
        if !matches!(
            object["kind"].as_str(),
            Some("Namespace" | "ClusterRole" | "ClusterRoleBinding")
        ) {
            assert_eq!(
                object["metadata"]["namespace"], "modelsplit-system",
                "{}",
                object["kind"]
            );
        }
    }
    let deployment = find(&objects, "Deployment");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/modelsplit/modelsplit-controller:0.1.0"
    );
}

/// (group, resource, verb) granted by a set of RBAC rules.
fn grants(rules: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in rules.as_array().expect("rules") {
        assert!(
            rule.get("resourceNames").is_none()
                || rule["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|v| v != "create"),
            "create cannot be limited by name"
        );
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    let text = |v: &Value| v.as_str().unwrap().to_string();
                    assert_ne!(text(verb), "*", "no wildcard verbs");
                    assert_ne!(text(resource), "*", "no wildcard resources");
                    out.insert((text(group), text(resource), text(verb)));
                }
            }
        }
    }
    out
}

#[test]
fn rbac_grants_exactly_what_the_controller_uses() {
    let objects = listed_objects();
    let mut needed = BTreeSet::new();
    for (resource, verbs) in CLUSTER_ACCESS.iter().chain([&ROLLOUT_CLUSTER_ACCESS]) {
        for verb in *verbs {
            needed.insert((
                resource.group.to_string(),
                resource.plural.to_string(),
                verb.to_string(),
            ));
        }
    }
    let granted = grants(&find(&objects, "ClusterRole")["rules"]);
    // `get` on what is listed is harmless and what `kubectl` users expect; nothing else extra.
    let extra: Vec<_> = granted
        .difference(&needed)
        .filter(|(_, _, verb)| verb != "get")
        .collect();
    assert!(extra.is_empty(), "more than needed: {extra:?}");
    let missing: Vec<_> = needed.difference(&granted).collect();
    assert!(missing.is_empty(), "not granted: {missing:?}");

    let (lease, verbs) = LEASE_ACCESS;
    let role = find(&objects, "Role");
    assert_eq!(role["metadata"]["namespace"], "modelsplit-system");
    // Not limited by name: `--lease-name` and `--instance` (whose Lease is
    // <instance>-controller) work without editing the Role.
    for rule in role["rules"].as_array().unwrap() {
        assert!(rule.get("resourceNames").is_none(), "{rule}");
    }
    let granted = grants(&role["rules"]);
    let needed: BTreeSet<_> = [(lease, verbs), ROLLOUT_STATE_ACCESS]
        .iter()
        .flat_map(|(resource, verbs)| {
            verbs.iter().map(|v| {
                (
                    resource.group.to_string(),
                    resource.plural.to_string(),
                    v.to_string(),
                )
            })
        })
        .collect();
    assert_eq!(granted, needed);

    // Both bindings point at the controller's ServiceAccount.
    for kind in ["ClusterRoleBinding", "RoleBinding"] {
        let subject = &find(&objects, kind)["subjects"][0];
        assert_eq!(subject["kind"], "ServiceAccount");
        assert_eq!(
            subject["name"],
            find(&objects, "ServiceAccount")["metadata"]["name"]
        );
        assert_eq!(subject["namespace"], "modelsplit-system");
    }
}

#[test]
fn the_deployment_is_two_hardened_replicas_probed_on_the_metrics_port() {
    let objects = listed_objects();
    let deployment = find(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    // No UID or GID pinned, in the pod or the container: OpenShift's restricted-v2 assigns
    // one from the namespace's range and refuses pods that ask for another.
    for context in [
        &pod["securityContext"],
        &pod["containers"][0]["securityContext"],
    ] {
        for field in ["runAsUser", "runAsGroup", "fsGroup"] {
            assert!(context.get(field).is_none(), "{field} is pinned: {context}");
        }
    }
    assert_eq!(pod["serviceAccountName"], "modelsplit-controller");
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
    assert!(
        container["resources"]["requests"].is_object()
            && container["resources"]["limits"].is_object()
    );

    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args[0], "run");
    assert!(args.contains(&"--metrics-addr=0.0.0.0:8080"), "{args:?}");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            container[probe]["httpGet"]["port"],
            container["ports"][0]["name"]
        );
    }
    let env: BTreeSet<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(
        env.contains("POD_NAME") && env.contains("POD_NAMESPACE"),
        "{env:?}"
    );
}

#[test]
fn the_deployment_args_are_accepted_by_modelsplit_run() {
    let objects = listed_objects();
    let container = &find(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    // `--help` after the real arguments: clap rejects unknown flags before printing help.
    let output = Command::new(env!("CARGO_BIN_EXE_modelsplit"))
        .args(&args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_modelsplit"))
        .args(["run", "--no-such-flag", "--help"])
        .output()
        .unwrap();
    assert!(!bad.status.success(), "the check above can fail");
}

/// The URL `modelsplit run` publishes by default names this Service, in the pods' namespace
/// (POD_NAMESPACE from the Downward API), on a port that reaches the metrics server where
/// every replica serves the filter module.
#[test]
fn the_published_filter_url_reaches_the_replicas_through_the_service() {
    use modelsplit_controller::cluster::cli::{DEFAULT_FILTER_SERVICE, DEFAULT_NAMESPACE};
    let objects = listed_objects();
    let service = find(&objects, "Service");
    assert_eq!(service["metadata"]["name"], DEFAULT_FILTER_SERVICE);
    assert_eq!(service["metadata"]["namespace"], DEFAULT_NAMESPACE);
    let port = &service["spec"]["ports"][0];
    // --filter-service-port's default.
    assert_eq!(port["port"], 8080);

    let deployment = find(&objects, "Deployment");
    let template = &deployment["spec"]["template"];
    for (label, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&template["metadata"]["labels"][label], value, "{label}");
    }
    let container = &template["spec"]["containers"][0];
    let target = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port["targetPort"])
        .unwrap_or_else(|| panic!("no container port named {}", port["targetPort"]));
    let metrics_addr = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix("--metrics-addr="))
        .expect("--metrics-addr");
    assert_eq!(
        metrics_addr.rsplit_once(':').map(|(_, p)| p),
        Some(target["containerPort"].to_string().as_str())
    );

    let pod_namespace = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "POD_NAMESPACE")
        .expect("POD_NAMESPACE");
    assert_eq!(
        pod_namespace["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    // No --url in the shipped args: the served module is the default.
    assert!(
        !container["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().is_some_and(|a| a.starts_with("--url"))),
        "{container}"
    );
}
