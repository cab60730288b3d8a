//! Standard KServe gRPC clients through istiod's gateway: the group named in the message's
//! `model_name`, no `mm-vmodel-id` header. The filter must hold the call's headers while it
//! reads the message, which needs `allow_on_headers_stop_iteration` — a setting Istio's
//! WasmPlugin cannot carry — so `modelsplit run --delivery envoyfilter` publishes the same
//! filter and configuration as an EnvoyFilter that sets it.
//!
//! The stand-ins behave like ModelMesh (the id from the message first, only the listed
//! models exist), so a call that reaches ModelMesh still naming the group fails: nothing
//! here passes by accident. Run alone with
//! `scripts/test-cluster.sh cluster_grpc_model_name`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use modelsplit_e2e::cluster::istio::GatewayMark;
use modelsplit_e2e::cluster::{group_yaml, Cluster};
use modelsplit_e2e::infer::{
    grpc_client, grpc_infer_by_model_name, model_name_request, timed_rest_until, vmodel_request,
    Answers,
};
use modelsplit_e2e::observe::{Observed, Tally};
use modelsplit_e2e::split::check_split;

const NS: &str = "modelmesh-apps";
const MODELS: &[&str] = &["ai-model-one", "ai-model-two"];
const IN_FORCE: Duration = Duration::from_secs(60);

fn seed(cluster: &Cluster) {
    cluster.admin.apply(&group_yaml(
        NS,
        "ai-model",
        &[("ai-model-one", "80"), ("ai-model-two", "20")],
    ));
}

async fn wait_split(cluster: &Cluster, since: &GatewayMark) -> Duration {
    cluster
        .wait_in_force(
            NS,
            "ai-model",
            &[("ai-model-one", 8000), ("ai-model-two", 2000)],
            since,
            IN_FORCE,
        )
        .await
}

fn assert_80_20(what: &str, tally: &Tally) {
    assert_eq!(tally.problem_count, 0, "{what}: {:?}", tally.problems);
    let check = check_split(
        &tally.by_member,
        &[("ai-model-one", 80), ("ai-model-two", 20)],
    );
    eprintln!("{what} through istiod's gateway:\n{check}");
    assert!(check.passes(), "{what}: {check}");
}

/// Names of the objects of `resource` the controller published in istio-system.
fn published(cluster: &Cluster, resource: &str) -> Vec<String> {
    let list = cluster.admin.get_json(&[
        resource,
        "-n",
        "istio-system",
        "-l",
        "app.kubernetes.io/managed-by=modelsplit",
    ]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

/// Waits until the published filter objects in istio-system are exactly `plugins`
/// WasmPlugins and `filters` EnvoyFilters.
async fn wait_published(cluster: &Cluster, plugins: &[&str], filters: &[&str]) {
    let deadline = Instant::now() + IN_FORCE;
    loop {
        let now = (
            published(cluster, "wasmplugins"),
            published(cluster, "envoyfilters"),
        );
        if now.0 == plugins && now.1 == filters {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "published (WasmPlugins, EnvoyFilters) stayed {now:?}, want ({plugins:?}, {filters:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the gateway's listeners run only the EnvoyFilter's filter (by its ECDS
/// name), not the WasmPlugin's (istiod names those `extensions.istio.io/...`).
async fn wait_gateway_runs_only_the_envoy_filter(cluster: &Cluster) {
    let deadline = Instant::now() + IN_FORCE;
    loop {
        let names = cluster.gateway.active_http_filters().await;
        let ours = names
            .iter()
            .any(|n| n == "modelsplit/istio-system/modelsplit");
        let plugin = names.iter().any(|n| n.starts_with("extensions.istio.io/"));
        if ours && !plugin {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway's HTTP filters stayed {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn envoy_filter_delivery_splits_calls_naming_the_group_in_model_name() {
    let cluster = Cluster::start(&[(NS, MODELS)]).await;
    let mut controller = cluster.controller("replica-a", &["--delivery=envoyfilter"]);
    controller.wait_ready().await;

    let labelled = Instant::now();
    let mark = cluster.gateway.mark().await;
    seed(&cluster);
    wait_split(&cluster, &mark).await;
    eprintln!(
        "FIGURE labelled group -> in force at the gateway (EnvoyFilter): {:?}",
        labelled.elapsed()
    );
    wait_published(&cluster, &[], &["modelsplit"]).await;
    wait_gateway_runs_only_the_envoy_filter(&cluster).await;

    let tally = cluster
        .grpc_tally(NS, model_name_request("ai-model"), 2000)
        .await;
    assert_80_20("gRPC model_name 80/20 (EnvoyFilter)", &tally);
    let tally = cluster
        .grpc_tally(NS, vmodel_request("ai-model"), 2000)
        .await;
    assert_80_20("gRPC mm-vmodel-id 80/20 (EnvoyFilter)", &tally);
    let tally = cluster.rest_tally(NS, "ai-model", 2000).await;
    assert_80_20("REST 80/20 (EnvoyFilter)", &tally);

    // A member named directly (with its header, which the gateway's gRPC routes match
    // on) is left alone.
    let mut client = grpc_client(&cluster.gateway.url("")).await;
    for member in MODELS {
        let mut request = model_name_request(member);
        request
            .metadata_mut()
            .insert("mm-vmodel-id", member.parse().expect("header value"));
        let observed = Observed::from_grpc(&client.model_infer(request).await);
        assert_eq!(observed.status, 0, "{member}: {observed:?}");
        assert_eq!(observed.model.as_deref(), Some(*member), "{observed:?}");
        assert_eq!(observed.routed_to, None, "not split: {observed:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switching_to_envoy_filter_delivery_replaces_the_wasm_plugin_without_failing_requests() {
    let cluster = Cluster::start(&[(NS, MODELS)]).await;
    let mut controller = cluster.controller("replica-a", &[]);
    controller.wait_ready().await;
    let mark = cluster.gateway.mark().await;
    seed(&cluster);
    wait_split(&cluster, &mark).await;
    wait_published(&cluster, &["modelsplit"], &[]).await;

    // Through the WasmPlugin the filter cannot hold the call to read `model_name`: the call
    // reaches no member (this is what the EnvoyFilter fixes).
    let mut client = grpc_client(&cluster.gateway.url("")).await;
    let observed = grpc_infer_by_model_name(&mut client, "ai-model").await;
    assert_ne!(observed.status, 0, "{observed:?}");

    // REST load throughout: the switch must not fail a request.
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Answers::default();
    let url = cluster
        .gateway
        .url(&format!("/modelmesh/{NS}/v2/models/ai-model/infer"));
    let load = timed_rest_until(
        stop.clone(),
        8,
        modelsplit_e2e::http::HttpClient::default(),
        url,
        answers.clone(),
    );
    answers
        .wait_for_more(200, 8, "REST load before the switch")
        .await;

    let switched = Instant::now();
    controller.process().signal("TERM");
    assert!(
        controller.process().wait_exit(Duration::from_secs(30)),
        "the controller did not stop on SIGTERM"
    );
    let mut controller = cluster.controller("replica-b", &["--delivery=envoyfilter"]);
    controller.wait_ready().await;
    wait_published(&cluster, &[], &["modelsplit"]).await;
    wait_gateway_runs_only_the_envoy_filter(&cluster).await;
    eprintln!(
        "FIGURE delivery switched (WasmPlugin -> EnvoyFilter, gateway runs only the EnvoyFilter's filter): {:?}",
        switched.elapsed()
    );
    answers
        .wait_for_more(200, 8, "REST load after the switch")
        .await;
    stop.store(true, Ordering::SeqCst);
    let timed = load.await.expect("load task");
    let observed: Vec<_> = timed.into_iter().map(|t| t.observed).collect();
    let tally = Tally::of(&observed, NS);
    eprintln!(
        "FIGURE REST requests during the delivery switch: {} answered, {} failed",
        observed.len(),
        tally.problem_count
    );
    assert_eq!(
        tally.problem_count,
        0,
        "{} of {} failed during the switch: {:?}",
        tally.problem_count,
        observed.len(),
        tally.problems
    );

    // The split was carried over (last-known-good read from the WasmPlugin), and
    // standard clients now split.
    let tally = cluster
        .grpc_tally(NS, model_name_request("ai-model"), 2000)
        .await;
    assert_80_20("gRPC model_name 80/20 after the switch", &tally);
}
