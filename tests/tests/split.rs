//! Weighted splits through the real Envoy with the built filter, REST and gRPC:
//! 10,000 requests each, checked with a chi-square goodness of fit (p > 1e-5),
//! and Envoy's per-member counters equal to what the client observed.

use modelsplit_e2e::fixture::{group, Fixture};
use modelsplit_e2e::observe::{Observed, Tally};
use modelsplit_e2e::split::check_split;
use modelsplit_e2e::standin::Protocol;
use modelsplit_filter::config::FilterConfig;
use modelsplit_filter::plan::requests_counter_name;

const REQUESTS: usize = 10_000;
const NS: &str = "modelmesh-apps";

async fn fixture_for(group_name: &str, weights: &[(&str, u32)]) -> Fixture {
    let config = FilterConfig::with_groups(vec![group(NS, group_name, weights)]);
    let members: Vec<&str> = weights.iter().map(|(m, _)| *m).collect();
    // The stand-in knows only the members: anything else would answer 404.
    Fixture::serving(&config, NS, &members).await
}

/// Checks the split, the stand-in's journal and Envoy's counters; prints the figures.
async fn check(
    fx: &Fixture,
    label: &str,
    group_name: &str,
    weights: &[(&str, u32)],
    observed: &[Observed],
) {
    let tally = Tally::of(observed, NS);
    assert_eq!(
        tally.problem_count, 0,
        "{label}: {} answers were not a consistent member answer from {NS}, e.g. {:?}",
        tally.problem_count, tally.problems
    );
    let split = check_split(&tally.by_member, weights);
    eprintln!("{label}: {} requests\n{split}", observed.len());
    assert!(
        split.passes(),
        "{label}: split does not match the weights\n{split}"
    );

    let received = fx.standin(NS).received();
    assert_eq!(
        received.len(),
        observed.len(),
        "{label}: the stand-in saw every request once"
    );
    assert!(
        received.iter().all(|r| r.served),
        "{label}: a request reached a model outside the group"
    );

    // The filter flushes its counters on each worker's tick: wait until they reach what
    // the client saw (a wrong count never does, and fails below).
    let counters: Vec<(String, u64)> = weights
        .iter()
        .map(|(member, _)| {
            let seen = tally.by_member.get(*member).copied().unwrap_or(0);
            (requests_counter_name(NS, group_name, member), seen)
        })
        .collect();
    let stats = fx
        .gateway
        .stats_when("modelsplit", |stats| {
            counters.iter().all(|(name, seen)| stats.get(name) == *seen)
        })
        .await
        .expect("stats");
    for (member, _) in weights {
        let counter = requests_counter_name(NS, group_name, member);
        let seen = tally.by_member.get(*member).copied().unwrap_or(0);
        assert_eq!(
            stats.get(&counter),
            seen,
            "{label}: Envoy counter {counter} vs requests the client saw"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_80_20() {
    let weights = [("ai-model-one", 80), ("ai-model-two", 20)];
    let fx = fixture_for("ai-model", &weights).await;
    let observed = fx
        .rest_many(
            REQUESTS,
            "POST",
            &format!("/modelmesh/{NS}/v2/models/ai-model/infer"),
            |_| vec![],
        )
        .await;
    check(&fx, "REST 80/20", "ai-model", &weights, &observed).await;
    let received = fx.standin(NS).received();
    assert!(
        received
            .iter()
            .all(|r| r.protocol == Protocol::Rest
                && r.path == format!("/v2/models/{}/infer", r.model))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_three_way_in_basis_points() {
    // The controller writes basis points (percent x 100).
    let weights = [("m-a", 5000), ("m-b", 3000), ("m-c", 2000)];
    let fx = fixture_for("three", &weights).await;
    let observed = fx
        .rest_many(
            REQUESTS,
            "POST",
            &format!("/modelmesh/{NS}/v2/models/three/infer"),
            |_| vec![],
        )
        .await;
    check(&fx, "REST 50/30/20", "three", &weights, &observed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_80_20() {
    let weights = [("ai-model-one", 80), ("ai-model-two", 20)];
    let fx = fixture_for("ai-model", &weights).await;
    let observed = fx.grpc_many(REQUESTS, "ai-model", |_| vec![]).await;
    check(&fx, "gRPC 80/20", "ai-model", &weights, &observed).await;
    // ModelMesh read the model from the rewritten header: it must name the member.
    let received = fx.standin(NS).received();
    assert!(received
        .iter()
        .all(|r| r.protocol == Protocol::Grpc
            && r.vmodel_header.as_deref() == Some(r.model.as_str())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_three_way_with_a_zero_weight_member() {
    let weights = [("g-a", 60), ("g-b", 25), ("g-c", 15), ("g-off", 0)];
    let fx = fixture_for("grpc-three", &weights).await;
    let observed = fx.grpc_many(REQUESTS, "grpc-three", |_| vec![]).await;
    check(&fx, "gRPC 60/25/15/0", "grpc-three", &weights, &observed).await;
}
