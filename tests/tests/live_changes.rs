//! Live changes under load: while clients keep sending REST and gRPC requests, the
//! gateway's files move through a weight change, an added member and a removed one.
//! No request may fail, and each new split holds once applied.

use modelsplit_controller::local::envoy_files::GatewayState;
use modelsplit_e2e::fixture::{exposed, group, Fixture, CONCURRENCY};
use modelsplit_e2e::infer::{sent_between, timed_grpc_until, timed_rest_until};
use modelsplit_e2e::observe::Tally;
use modelsplit_e2e::split::check_split;
use modelsplit_e2e::standin::StandInConfig;
use modelsplit_filter::config::FilterConfig;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NS: &str = "apps";
const PHASE: Duration = Duration::from_millis(1500);

fn state_with(base: &GatewayState, weights: &[(&str, u32)]) -> GatewayState {
    let members: Vec<&str> = weights.iter().map(|(m, _)| *m).collect();
    GatewayState {
        config: FilterConfig::with_groups(vec![group(NS, "ai-model", weights)]),
        isvcs: exposed(NS, &members),
        upstreams: base.upstreams.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_members_added_and_removed_under_load_without_a_failed_request() {
    let initial = [("one", 50), ("two", 50)];
    let config = FilterConfig::with_groups(vec![group(NS, "ai-model", &initial)]);
    let fx = Fixture::start(
        &config,
        &exposed(NS, &["one", "two"]),
        vec![StandInConfig::only(NS, &["one", "two", "three"])],
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let rest = timed_rest_until(
        stop.clone(),
        CONCURRENCY / 4,
        fx.http.clone(),
        fx.gateway.url("/modelmesh/apps/v2/models/ai-model/infer"),
    );
    let grpc = timed_grpc_until(stop.clone(), CONCURRENCY / 4, fx.grpc().await, "ai-model");

    // (label, weights, when the change was written, when Envoy had applied it)
    let mut phases = vec![(
        "initial 50/50",
        initial.to_vec(),
        Instant::now(),
        Instant::now(),
    )];
    tokio::time::sleep(PHASE).await;
    let base = fx.gateway.state();
    for (label, weights) in [
        ("weights 90/10", vec![("one", 90), ("two", 10)]),
        (
            "member three added 40/30/30",
            vec![("one", 40), ("two", 30), ("three", 30)],
        ),
        ("member one removed 50/50", vec![("two", 50), ("three", 50)]),
    ] {
        let written = Instant::now();
        fx.gateway
            .update(state_with(&base, &weights))
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        phases.push((label, weights, written, Instant::now()));
        tokio::time::sleep(PHASE).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut observed = rest.await.unwrap();
    observed.extend(grpc.await.unwrap());

    let failed: Vec<_> = observed.iter().filter_map(|(_, o)| o.problem(NS)).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the changes, e.g. {:?}",
        failed.len(),
        observed.len(),
        &failed[..failed.len().min(5)]
    );

    for (i, (label, weights, written, applied)) in phases.iter().enumerate() {
        let next_written = phases.get(i + 1).map(|p| p.2);
        let in_force = sent_between(&observed, *applied, next_written);
        let weights: Vec<(&str, u32)> = weights.iter().map(|(m, w)| (*m, *w)).collect();
        let split = check_split(&Tally::of(&in_force, NS).by_member, &weights);
        // The first request after the write that saw the new split's newest member shows the delay.
        eprintln!(
            "{label}: applied {} ms after the write; {} requests while in force\n{split}",
            applied.duration_since(*written).as_millis(),
            in_force.len()
        );
        assert!(in_force.len() >= 200, "{label}: too few requests to judge");
        assert!(split.passes(), "{label}\n{split}");
    }
}
