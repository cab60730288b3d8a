//! `modelsplit run` on a real control plane (kube-apiserver + istiod built from their Go
//! modules), installed from controller/deploy/ and running as its ServiceAccount, with an
//! Envoy gateway configured by istiod: the user's workflow from label to split.

use std::time::Duration;

use modelsplit_e2e::cluster::{isvc_yaml, Cluster};
use modelsplit_e2e::split::check_split;

const NS: &str = "modelmesh-apps";
const GATEWAY_FLAGS: &[&str] = &[];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_labelled_group_splits_rest_and_grpc_through_istiod() {
    let cluster = Cluster::start(&[(NS, &["ai-model-one", "ai-model-two"])]).await;
    let mut controller = cluster.controller("replica-a", GATEWAY_FLAGS);
    controller.wait_ready().await;

    cluster.admin.apply(&format!(
        "{}{}",
        isvc_yaml(NS, "ai-model-one", Some("ai-model"), Some("80")),
        isvc_yaml(NS, "ai-model-two", Some("ai-model"), Some("20")),
    ));
    let took = cluster
        .wait_filter_weights(
            NS,
            "ai-model",
            &[("ai-model-one", 8000), ("ai-model-two", 2000)],
            Duration::from_secs(60),
        )
        .await;
    eprintln!("labelled group -> filter config at the gateway: {took:?}");

    let rest = cluster.rest_tally(NS, "ai-model", 2000).await;
    assert_eq!(rest.problem_count, 0, "REST problems: {:?}", rest.problems);
    let check = check_split(
        &rest.by_member,
        &[("ai-model-one", 80), ("ai-model-two", 20)],
    );
    eprintln!("REST 80/20:\n{check}");
    assert!(check.passes(), "{check}");

    let grpc = cluster.grpc_tally(NS, "ai-model", 2000).await;
    assert_eq!(grpc.problem_count, 0, "gRPC problems: {:?}", grpc.problems);
    let check = check_split(
        &grpc.by_member,
        &[("ai-model-one", 80), ("ai-model-two", 20)],
    );
    eprintln!("gRPC 80/20:\n{check}");
    assert!(check.passes(), "{check}");
}
