//! The install on a real control plane (kube-apiserver, etcd and istiod built from their Go
//! modules), one cluster for the whole file:
//! - the Deployment's pod template is admitted by the API server's Pod Security admission at
//!   level `restricted` (server-side dry run), and a pod that breaks `restricted` is refused
//!   there, so the check can fail;
//! - the install guide's shell blocks marked `<!-- test: cluster -->` (controller/deploy/README.md,
//!   and README.md if it has any) run as written, with kubectl pointing at this API server:
//!   the overlay, the install, the NetworkPolicy for the gateways, the ODH workflow,
//!   re-annotation and clean-up — and the split they set up is in force at istiod's gateway,
//!   whose filter module is the one the controller serves (the install's default).
//!
//! Run alone with `scripts/test-cluster.sh cluster_install`.

use std::time::Duration;

use modelsplit_e2e::cluster::controller::Controller;
use modelsplit_e2e::cluster::{isvc_yaml, Cluster};
use modelsplit_e2e::gateway::require_filter_wasm;
use modelsplit_e2e::guide::{blocks_of, Kind, Runner};
use modelsplit_e2e::split::check_split;
use serde::Deserialize;
use serde_json::{json, Value};

const NS: &str = "modelmesh-apps";
const MODELS: &[&str] = &["ai-model-one", "ai-model-two"];
const IN_FORCE: Duration = Duration::from_secs(60);
/// What the guide's (unmarked) step 1 would have set: a registry.
const REGISTRY: &str = "registry.example/you";
/// The start of the WasmPlugin's default `url`: the module the controller serves.
const SERVED_URL: &str =
    "http://modelsplit-controller-metrics.modelsplit-system.svc.cluster.local:8080/filter/";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_install_is_admitted_by_restricted_and_the_install_guide_runs() {
    let cluster = Cluster::start_before_odh(&[(NS, MODELS)]).await;
    pod_security_restricted_admits_the_deployment(&cluster);
    the_install_guide_runs(&cluster).await;
}

/// The Deployment's pod template from `kubectl kustomize controller/deploy/`.
fn deployment_pod_template(cluster: &Cluster) -> Value {
    let deploy_dir = modelsplit_e2e::cluster::controller::deploy_dir();
    let yaml = cluster
        .admin
        .run(&["kustomize", &deploy_dir.display().to_string()]);
    let deployment = serde_yaml::Deserializer::from_str(&yaml)
        .map(|doc| Value::deserialize(doc).expect("a YAML document"))
        .find(|doc| doc["kind"] == "Deployment")
        .expect("a Deployment in controller/deploy/");
    deployment["spec"]["template"].clone()
}

/// `kubectl create --dry-run=server` of a Pod made from `template` in `namespace`.
fn dry_run_pod(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    template: &Value,
) -> Result<(), String> {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": template["metadata"]["labels"],
            "annotations": template["metadata"]["annotations"],
        },
        "spec": template["spec"],
    });
    let output = cluster.admin.output(
        &["create", "--dry-run=server", "-o", "name", "-f", "-"],
        Some(&pod.to_string()),
    );
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn pod_security_restricted_admits_the_deployment(cluster: &Cluster) {
    let template = deployment_pod_template(cluster);
    let namespace = "psa-restricted";
    cluster.admin.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n  labels:\n    \
         pod-security.kubernetes.io/enforce: restricted\n    \
         pod-security.kubernetes.io/enforce-version: latest\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: modelsplit-controller\n  namespace: {namespace}\n"
    ));

    dry_run_pod(cluster, namespace, "controller", &template).unwrap_or_else(|refused| {
        panic!("Pod Security `restricted` refuses the Deployment's pod template: {refused}")
    });
    // The install's own namespace enforces `restricted` too (namespace.yaml), and admits it.
    dry_run_pod(cluster, "modelsplit-system", "controller", &template).unwrap_or_else(|refused| {
        panic!("modelsplit-system refuses the Deployment's pod template: {refused}")
    });
    let enforced = cluster.admin.get_json(&["namespace", "modelsplit-system"]);
    assert_eq!(
        enforced["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );

    // The check can fail: pods that break `restricted` are refused by the same admission
    // (each variant is otherwise valid, so it is Pod Security that refuses it).
    let variant = |edit: &dyn Fn(&mut Value)| {
        let mut pod = template.clone();
        edit(&mut pod["spec"]);
        pod
    };
    let escalation = variant(&|spec| {
        spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = json!(true)
    });
    let capability = variant(&|spec| {
        spec["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["NET_ADMIN"])
    });
    let host_network = variant(&|spec| spec["hostNetwork"] = json!(true));
    let no_seccomp = variant(&|spec| {
        spec["securityContext"]
            .as_object_mut()
            .expect("pod securityContext")
            .remove("seccompProfile");
    });
    let root_allowed = variant(&|spec| {
        spec["securityContext"]
            .as_object_mut()
            .expect("pod securityContext")
            .remove("runAsNonRoot");
    });
    for (name, pod, why) in [
        ("escalation", &escalation, "allowPrivilegeEscalation"),
        ("capability", &capability, "unrestricted capabilities"),
        ("host-network", &host_network, "host namespaces"),
        ("no-seccomp", &no_seccomp, "seccompProfile"),
        ("root-allowed", &root_allowed, "runAsNonRoot"),
    ] {
        let refused = dry_run_pod(cluster, namespace, name, pod)
            .expect_err("a pod breaking `restricted` must be refused");
        assert!(
            refused.contains("violates PodSecurity \"restricted:latest\"") && refused.contains(why),
            "{name}: {refused}"
        );
    }
    eprintln!("Pod Security restricted: the Deployment's pod is admitted; escalation, capability, host-network, no-seccomp and root-allowed variants are refused");
}

/// modelmesh-apps as it is before the guide's ODH step (the cluster started it outside the
/// mesh, with ModelMesh's Service): two InferenceServices in no group.
fn models_before_the_guide(cluster: &Cluster) {
    cluster.admin.apply(&format!(
        "{}{}",
        isvc_yaml(NS, "ai-model-one", None, None),
        isvc_yaml(NS, "ai-model-two", None, None),
    ));
}

async fn assert_split_at_gateway(cluster: &Cluster, one: u64, two: u64) {
    cluster
        .wait_filter_weights(
            NS,
            "ai-model",
            &[("ai-model-one", one * 100), ("ai-model-two", two * 100)],
            IN_FORCE,
        )
        .await;
    cluster.wait_routed(NS, "ai-model", IN_FORCE).await;
    let tally = cluster.rest_tally(NS, "ai-model", 2000).await;
    assert_eq!(tally.problem_count, 0, "{:?}", tally.problems);
    let check = check_split(
        &tally.by_member,
        &[("ai-model-one", one as u32), ("ai-model-two", two as u32)],
    );
    eprintln!("after the guide's commands, {one}/{two} at the gateway:\n{check}");
    assert!(check.passes(), "{check}");
}

async fn the_install_guide_runs(cluster: &Cluster) {
    models_before_the_guide(cluster);
    let kubectl_dir = cluster.admin.binary.parent().expect("kubectl's dir");
    let runner = Runner::new()
        .path_first(kubectl_dir)
        .env("KUBECONFIG", cluster.admin.kubeconfig.display().to_string())
        .env("REGISTRY", REGISTRY);
    let blocks = blocks_of(Kind::Cluster);
    let image = format!("{REGISTRY}/modelsplit-controller:0.1.0");

    let mut controller: Option<Controller> = None;
    let mut checked = Vec::new();
    for block in &blocks {
        if block.text.contains("kubectl delete wasmplugins") {
            // The guide's previous (unmarked) step removes the controller first.
            controller.take();
        }
        let ran = runner.run(block);
        let text = &block.text;
        if text.contains("kubectl kustomize my-modelsplit/") {
            assert!(
                ran.stdout.contains(&format!("image: {image}")),
                "{}: the overlay does not set the image:\n{}",
                block.at(),
                ran.stdout
            );
            checked.push("overlay");
        }
        if text.contains("kubectl apply -k") {
            let deployment = cluster.admin.get_json(&[
                "deployment",
                "-n",
                "modelsplit-system",
                "modelsplit-controller",
            ]);
            let container = &deployment["spec"]["template"]["spec"]["containers"][0];
            assert_eq!(container["image"], json!(image));
            // No --url: the replicas publish the module they serve.
            assert!(
                !container["args"]
                    .as_array()
                    .expect("args")
                    .iter()
                    .any(|a| a.as_str().is_some_and(|a| a.starts_with("--url"))),
                "{container}"
            );
            // The Deployment would start now; there is no kubelet, so a replica runs here as a
            // process, as its ServiceAccount, serving the built module as the image's own.
            let mut started =
                cluster.controller_serving_filter("guide-replica", &require_filter_wasm(), &[]);
            started.wait_ready().await;
            cluster
                .filter_service
                .set_endpoints(&[started.metrics_port]);
            controller = Some(started);
            checked.push("install");
        }
        if text.contains("kind: NetworkPolicy") {
            let policy = cluster.admin.get_json(&[
                "networkpolicy",
                "-n",
                "modelsplit-system",
                "modelsplit-controller",
            ]);
            let deployment = cluster.admin.get_json(&[
                "deployment",
                "-n",
                "modelsplit-system",
                "modelsplit-controller",
            ]);
            let pod = &deployment["spec"]["template"];
            for (label, value) in policy["spec"]["podSelector"]["matchLabels"]
                .as_object()
                .expect("matchLabels")
            {
                assert_eq!(&pod["metadata"]["labels"][label], value, "{label}");
            }
            // The port it opens is the one the Service and the module's URL use.
            let port = &policy["spec"]["ingress"][0]["ports"][0]["port"];
            let named = pod["spec"]["containers"][0]["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .find(|p| &p["name"] == port)
                .unwrap_or_else(|| panic!("no container port named {port}"));
            assert_eq!(named["containerPort"], 8080);
            checked.push("network policy");
        }
        if text.contains("canaryTrafficPercent=20") {
            assert_split_at_gateway(cluster, 80, 20).await;
            cluster
                .wait_event(
                    NS,
                    "GroupReady",
                    "InferenceService/ai-model-one",
                    Duration::from_secs(30),
                )
                .await;
            checked.push("odh workflow");
        }
        if text.contains("get wasmplugin modelsplit") {
            assert!(ran.stdout.contains("pluginConfig"), "{}", ran.stdout);
            assert!(
                ran.stdout.contains(&format!("url: {SERVED_URL}"))
                    && ran.stdout.contains("sha256: "),
                "{}",
                ran.stdout
            );
            assert!(ran.stdout.contains("GroupReady"), "{}", ran.stdout);
            checked.push("inspection");
        }
        if text.contains("annotate --overwrite") {
            assert_split_at_gateway(cluster, 50, 50).await;
            checked.push("re-annotation");
        }
        if text.contains("kubectl delete wasmplugins") {
            for kind in ["wasmplugins", "virtualservices"] {
                let left = cluster.admin.get_json(&[
                    kind,
                    "-A",
                    "-l",
                    "app.kubernetes.io/managed-by=modelsplit",
                ]);
                assert_eq!(left["items"], json!([]), "{kind} left after the clean-up");
            }
            checked.push("clean-up");
        }
    }
    assert_eq!(
        checked,
        [
            "overlay",
            "install",
            "network policy",
            "odh workflow",
            "inspection",
            "re-annotation",
            "clean-up"
        ],
        "the guide's marked cluster blocks changed: {blocks:#?}"
    );
}
