//! Live changes under load: while clients keep sending REST and gRPC requests, the
//! gateway's files move through a weight change, an added member and a removed one.
//! No request may fail, and each new split holds once applied.
//!
//! Each phase is judged on the requests sent after its configuration was in force on
//! every worker (the harness waits for Envoy's ECDS `config_reload`) and answered before
//! the next change was written; it lasts until `PHASE_REQUESTS` such requests arrived.

use modelsplit_controller::local::envoy_files::GatewayState;
use modelsplit_e2e::fixture::{exposed, group, Fixture, CONCURRENCY};
use modelsplit_e2e::infer::{in_force_between, timed_grpc_until, timed_rest_until, Answers};
use modelsplit_e2e::observe::Tally;
use modelsplit_e2e::split::{check_split, PHASE_REQUESTS};
use modelsplit_e2e::standin::StandInConfig;
use modelsplit_filter::config::FilterConfig;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

const NS: &str = "apps";
/// Requests in flight per protocol.
const IN_FLIGHT: usize = CONCURRENCY / 4;

fn state_with(base: &GatewayState, weights: &[(&str, u32)]) -> GatewayState {
    let members: Vec<&str> = weights.iter().map(|(m, _)| *m).collect();
    GatewayState {
        config: FilterConfig::with_groups(vec![group(NS, "ai-model", weights)]),
        isvcs: exposed(NS, &members),
        upstreams: base.upstreams.clone(),
    }
}

struct Phase {
    label: &'static str,
    weights: Vec<(&'static str, u32)>,
    /// When the change was written.
    written: Instant,
    /// When the harness confirmed it in force on every worker.
    in_force: Instant,
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

    // The initial configuration runs on every worker once the fixture is up.
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Answers::default();
    let rest = timed_rest_until(
        stop.clone(),
        IN_FLIGHT,
        fx.http.clone(),
        fx.gateway.url("/modelmesh/apps/v2/models/ai-model/infer"),
        answers.clone(),
    );
    let grpc = timed_grpc_until(
        stop.clone(),
        IN_FLIGHT,
        fx.grpc().await,
        "ai-model",
        answers.clone(),
    );

    let mut phases = vec![Phase {
        label: "initial 50/50",
        weights: initial.to_vec(),
        written: started,
        in_force: started,
    }];
    answers
        .wait_for_more(PHASE_REQUESTS, 2 * IN_FLIGHT, "initial 50/50")
        .await;
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
        phases.push(Phase {
            label,
            weights,
            written,
            in_force: Instant::now(),
        });
        answers
            .wait_for_more(PHASE_REQUESTS, 2 * IN_FLIGHT, label)
            .await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut observed = rest.await.unwrap();
    observed.extend(grpc.await.unwrap());

    let failed: Vec<_> = observed
        .iter()
        .filter_map(|t| t.observed.problem(NS))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the changes, e.g. {:?}",
        failed.len(),
        observed.len(),
        &failed[..failed.len().min(5)]
    );

    for (i, phase) in phases.iter().enumerate() {
        let next_written = phases.get(i + 1).map(|p| p.written);
        let in_force = in_force_between(&observed, phase.in_force, next_written);
        let split = check_split(&Tally::of(&in_force, NS).by_member, &phase.weights);
        eprintln!(
            "{}: in force on every worker {} ms after the write; {} requests while in force\n{split}",
            phase.label,
            phase.in_force.duration_since(phase.written).as_millis(),
            in_force.len()
        );
        // Guaranteed by the waits above; a failure here is a harness bug.
        assert!(
            in_force.len() >= PHASE_REQUESTS,
            "{}: {} requests",
            phase.label,
            in_force.len()
        );
        assert!(split.passes(), "{}\n{split}", phase.label);
    }
}
