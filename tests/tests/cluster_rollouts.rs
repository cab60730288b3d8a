//! Automated rollouts in `modelsplit run` on a real control plane (kube-apiserver, etcd,
//! istiod) with an Envoy gateway configured by istiod: the controller reads the gateway
//! pod's filter statistics (found like the WasmPlugin finds its pods), moves a healthy
//! canary step by step to promotion, rolls a failing one back at once, says each decision
//! in an Event on the canary, keeps its state in a ConfigMap it owns, and resumes from it
//! after a restart. Nobody touches an annotation.
//!
//! Run alone with `scripts/test-cluster.sh cluster_rollouts`.

use std::time::Duration;

use modelsplit_e2e::cluster::controller::CONTROLLER_NAMESPACE;
use modelsplit_e2e::cluster::{group_yaml, Cluster, GroupLoad};
use modelsplit_e2e::standin::StandInConfig;

const NS: &str = "apps";
/// A loose latency threshold: these steps last 2 s and 40 answers, on a 2-core machine
/// that also runs the control plane, so a canary's p99 includes the gateway taking each
/// new filter config (and Envoy merges histograms only every 5 s); the latency rollback
/// itself is covered by the state machine's unit tests and `local_rollouts`.
const ROLLOUT: &str =
    "steps=20,100 interval=2s max-error-percent=5 max-p99-ratio=20 min-requests=40";
const DECIDED: Duration = Duration::from_secs(90);

/// A group whose `canary` (weight 10) declares the rollout beside `stable` (weight 90).
fn rollout_group(group: &str, stable: &str, canary: &str) -> String {
    let yaml = group_yaml(NS, group, &[(stable, "90"), (canary, "10")]);
    let canary_weight = "serving.kserve.io/canaryTrafficPercent: \"10\"";
    assert!(yaml.contains(canary_weight), "{yaml}");
    yaml.replace(
        canary_weight,
        &format!("{canary_weight}\n    modelsplit.io/rollout: \"{ROLLOUT}\""),
    )
}

/// The gateway as a pod the API server knows: labelled like Istio's ingress gateway,
/// running at 127.0.0.1 (where the test's Envoy is); the controller reads its statistics
/// at `--gateway-stats-port`, here Envoy's admin port (which serves /stats/prometheus too).
fn register_gateway_pod(cluster: &Cluster) {
    cluster.admin.apply(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: default\n  namespace: istio-system\n---\n\
apiVersion: v1\nkind: Pod\nmetadata:\n  name: istio-ingressgateway-0\n  namespace: istio-system\n  labels:\n    istio: ingressgateway\n\
spec:\n  automountServiceAccountToken: false\n  containers:\n  - name: istio-proxy\n    image: istio/proxyv2\n",
    );
    cluster.admin.run(&[
        "patch",
        "pod",
        "-n",
        "istio-system",
        "istio-ingressgateway-0",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running","podIP":"127.0.0.1","podIPs":[{"ip":"127.0.0.1"}]}}"#,
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_promotes_a_healthy_canary_and_rolls_back_a_failing_one() {
    // `bad` fails every 4th request (REST 503, gRPC UNAVAILABLE): 25% > the 5% allowed.
    let cluster = Cluster::start_standins(&[
        StandInConfig::only(NS, &["v1", "v2", "old", "bad"]).failing_every("bad", 4)
    ])
    .await;
    register_gateway_pod(&cluster);
    let stats_port = format!("--gateway-stats-port={}", cluster.gateway.admin_port);
    let mut controller = cluster.controller("replica-a", &[&stats_port]);
    controller.wait_ready().await;

    cluster
        .admin
        .apply(&rollout_group("good-model", "v1", "v2"));
    cluster
        .admin
        .apply(&rollout_group("risky-model", "old", "bad"));
    cluster.wait_routed(NS, "good-model", DECIDED).await;
    cluster.wait_routed(NS, "risky-model", DECIDED).await;
    let good = GroupLoad::start(&cluster, NS, "good-model").await;
    let risky = GroupLoad::start(&cluster, NS, "risky-model").await;

    let started = cluster
        .wait_event(NS, "RolloutStarted", "InferenceService/v2", DECIDED)
        .await;
    assert!(started.message.contains("started at 20%"), "{started:?}");
    let rolled_back = cluster
        .wait_event(NS, "RolloutRolledBack", "InferenceService/bad", DECIDED)
        .await;
    assert_eq!(rolled_back.type_, "Warning");
    assert!(
        rolled_back.message.contains("max-error-percent 5"),
        "the reason in numbers: {rolled_back:?}"
    );
    let since = cluster.gateway.mark().await;
    cluster
        .wait_in_force(
            NS,
            "risky-model",
            &[("old", 10_000), ("bad", 0)],
            &since,
            DECIDED,
        )
        .await;
    assert_status_shows_the_failing_canary(&cluster).await;

    cluster
        .wait_event(NS, "RolloutAdvanced", "InferenceService/v2", DECIDED)
        .await;
    let promoted = cluster
        .wait_event(NS, "RolloutPromoted", "InferenceService/v2", DECIDED)
        .await;
    assert!(promoted.message.contains("0.0% errors"), "{promoted:?}");
    cluster
        .wait_in_force(
            NS,
            "good-model",
            &[("v1", 0), ("v2", 10_000)],
            &since,
            DECIDED,
        )
        .await;

    let good = good.finish().await;
    assert_eq!(good.failed, 0, "{:?}", good.failures);
    let risky = risky.finish().await;
    assert!(risky.by_member.contains_key("old"), "{risky:?}");

    // The decisions are kept in the controller's own ConfigMap; the annotations are untouched.
    let state = cluster.admin.get_json(&[
        "configmap",
        "-n",
        CONTROLLER_NAMESPACE,
        "modelsplit-rollouts",
    ]);
    let kept: serde_json::Value =
        serde_json::from_str(state["data"]["rollouts.json"].as_str().expect("state"))
            .expect("JSON");
    assert_eq!(
        kept[format!("{NS}/good-model")]["phase"],
        "promoted",
        "{kept:#}"
    );
    assert_eq!(
        kept[format!("{NS}/risky-model")]["phase"],
        "rolled-back",
        "{kept:#}"
    );
    let canary = cluster.admin.get_json(&["isvc", "-n", NS, "v2"]);
    assert_eq!(
        canary["metadata"]["annotations"]["serving.kserve.io/canaryTrafficPercent"],
        "10"
    );

    // A new replica resumes from the ConfigMap: nothing starts over, the split stays.
    let log = controller.log();
    let timeline: Vec<&str> = log.lines().filter(|l| l.contains("rollout")).collect();
    eprintln!("{}", timeline.join("\n"));
    let started_before = rollout_events(&cluster, "RolloutStarted");
    controller.process().kill();
    let mut next = cluster.controller("replica-b", &[&stats_port]);
    next.wait_ready().await;
    // Its first pass, on taking the Lease over (SIGKILL left it held until it expired);
    // no other follows while nothing changes.
    let deadline = std::time::Instant::now() + DECIDED;
    while next.passes().await < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "replica-b ran no pass"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster
        .wait_filter_weights(NS, "good-model", &[("v1", 0), ("v2", 10_000)], DECIDED)
        .await;
    cluster
        .wait_filter_weights(NS, "risky-model", &[("old", 10_000), ("bad", 0)], DECIDED)
        .await;
    assert_eq!(rollout_events(&cluster, "RolloutStarted"), started_before);
    let resumed = next.log();
    assert!(!resumed.contains("started at"), "started over: {resumed}");
}

/// `modelsplit status` on istiod's gateway: istiod's routes keep no per-member statistics,
/// so the ERRORS column of a group with a rollout comes from the filter's own counts.
/// Histograms reach the admin API on Envoy's stats flush (every 5 s, as on an Istio
/// gateway), so the latency columns may take that long to fill.
async fn assert_status_shows_the_failing_canary(cluster: &Cluster) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = cluster.gateway_status();
        let member = |name: &str| {
            status
                .as_array()
                .into_iter()
                .flatten()
                .filter(|g| g["namespace"] == NS && g["group"] == "risky-model")
                .flat_map(|g| g["members"].as_array().cloned().unwrap_or_default())
                .find(|m| m["member"] == name)
                .unwrap_or_else(|| panic!("no risky-model/{name} in {status:#}"))
        };
        let (bad, old) = (member("bad"), member("old"));
        let shares = (
            bad["outcome"]["error_percent"].as_f64(),
            old["outcome"]["error_percent"].as_f64(),
        );
        if let (Some(bad_errors), Some(old_errors)) = shares {
            // Every 4th request to `bad` failed, REST and gRPC alike: 25% of its answers.
            assert!((20.0..=30.0).contains(&bad_errors), "{bad:#}");
            assert_eq!(old_errors, 0.0, "{old:#}");
            assert!(bad["outcome"]["p99_ms"].as_f64().is_some(), "{bad:#}");
            eprintln!("modelsplit status on istiod's gateway, the rolled-back canary: {bad}");
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no error shares after 20 s: {status:#}\n{}",
            cluster
                .gateway
                .admin("/stats?filter=wasmcustom.modelsplit&histogram_buckets=cumulative")
                .await
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn rollout_events(cluster: &Cluster, reason: &str) -> usize {
    cluster
        .events(NS)
        .iter()
        .filter(|e| e.reason == reason)
        .count()
}
