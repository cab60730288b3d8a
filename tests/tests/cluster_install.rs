//! The install on a real control plane (kube-apiserver and etcd built from their Go modules):
//! the Deployment's pod template is admitted by the API server's Pod Security admission at level
//! `restricted` (server-side dry run), and pods that break `restricted` are refused there, so
//! the check can fail.
//!
//! Run alone with `scripts/test-cluster.sh cluster_install`.

use modelsplit_e2e::cluster::Cluster;
use serde::Deserialize;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_install_is_admitted_by_pod_security_restricted() {
    let cluster = Cluster::start(&[]).await;
    pod_security_restricted_admits_the_deployment(&cluster);
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
