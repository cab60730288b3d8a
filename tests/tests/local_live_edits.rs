//! Live edits through `modelsplit local` under continuous REST and gRPC load: a
//! weight change, an added member, a removed member and an invalid edit (weights
//! summing to 120). Each valid edit is in force within 2 s of the manifest write,
//! the invalid one keeps the last good split, and no request fails throughout.

use modelsplit_e2e::infer::{sent_between, timed_grpc_until, timed_rest_until};
use modelsplit_e2e::local_gateway::{group_manifest, namespace_manifest, LocalGateway};
use modelsplit_e2e::observe::Tally;
use modelsplit_e2e::split::check_split;
use modelsplit_e2e::standin::StandInConfig;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NS: &str = "apps";
/// What the issue asks: an edit is in force within this long.
const IN_FORCE_WITHIN: Duration = Duration::from_secs(2);
/// How long each split is left in force under load before the next edit.
const HOLD: Duration = Duration::from_millis(1300);
/// From Envoy's main thread applying a filter config to every worker running it.
const WORKER_PROPAGATION: Duration = Duration::from_millis(300);

/// (what, the group's members as (name, canaryTrafficPercent), the weights Envoy
/// must then run in basis points, or `None` for an invalid edit).
type Edit = (
    &'static str,
    &'static [(&'static str, &'static str)],
    Option<&'static [(&'static str, u32)]>,
);

struct Phase {
    label: &'static str,
    /// Basis points, as the controller writes them.
    weights: Vec<(&'static str, u32)>,
    edited: Instant,
    in_force: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_are_in_force_within_two_seconds_and_no_request_fails() {
    let gw = LocalGateway::start(
        &[
            ("namespace.yaml", &namespace_manifest(NS)),
            (
                "group.yaml",
                &group_manifest(NS, "ai-model", &[("one", "80"), ("two", "20")]),
            ),
        ],
        &[StandInConfig::only(NS, &["one", "two", "three"])],
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let rest = timed_rest_until(
        stop.clone(),
        8,
        gw.http.clone(),
        gw.url("/modelmesh/apps/v2/models/ai-model/infer"),
    );
    let grpc = timed_grpc_until(stop.clone(), 8, gw.grpc().await, "ai-model");

    let start = Instant::now();
    let mut phases = vec![Phase {
        label: "initial 80/20",
        weights: vec![("one", 8000), ("two", 2000)],
        edited: start,
        in_force: start,
    }];
    tokio::time::sleep(HOLD).await;
    let edits: [Edit; 4] = [
        (
            "weights 80/20 -> 30/70",
            &[("one", "30"), ("two", "70")],
            Some(&[("one", 3000), ("two", 7000)]),
        ),
        (
            "member three added, 40/30/30",
            &[("one", "40"), ("two", "30"), ("three", "30")],
            Some(&[("one", 4000), ("two", 3000), ("three", 3000)]),
        ),
        (
            "member one removed, 50/50",
            &[("two", "50"), ("three", "50")],
            Some(&[("two", 5000), ("three", 5000)]),
        ),
        (
            "invalid edit (sum 120) keeps 50/50",
            &[("two", "50"), ("three", "70")],
            None,
        ),
    ];
    for (label, members, weights) in edits {
        let edited = Instant::now();
        gw.edit("group.yaml", &group_manifest(NS, "ai-model", members));
        let (weights, in_force) = match weights {
            Some(weights) => (
                weights.to_vec(),
                gw.wait_for_weights(NS, "ai-model", weights).await,
            ),
            None => {
                let line = gw.wait_for_output("stale").await;
                assert!(
                    line.contains("sum to 120")
                        && line.contains("keeping the last good split three=50% two=50%"),
                    "{line}"
                );
                let last = phases.last().expect("a phase before");
                (last.weights.clone(), edited)
            }
        };
        let took = in_force.duration_since(edited);
        eprintln!(
            "{label}: manifest edit -> split in force in Envoy: {} ms",
            took.as_millis()
        );
        assert!(
            took <= IN_FORCE_WITHIN,
            "{label}: took {took:?}\n{}",
            gw.local_output()
        );
        phases.push(Phase {
            label,
            weights,
            edited,
            in_force,
        });
        tokio::time::sleep(HOLD).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut observed = rest.await.unwrap();
    observed.extend(grpc.await.unwrap());

    let failed: Vec<String> = observed.iter().filter_map(|(_, o)| o.problem(NS)).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the edits, e.g. {:?}\n{}",
        failed.len(),
        observed.len(),
        &failed[..failed.len().min(5)],
        gw.local_output()
    );
    eprintln!("{} requests, none failed", observed.len());

    for (i, phase) in phases.iter().enumerate() {
        let from = phase.in_force + WORKER_PROPAGATION;
        let until = phases.get(i + 1).map(|next| next.edited);
        let in_force = sent_between(&observed, from, until);
        let split = check_split(&Tally::of(&in_force, NS).by_member, &phase.weights);
        eprintln!(
            "{}: {} requests while in force\n{split}",
            phase.label,
            in_force.len()
        );
        assert!(
            in_force.len() >= 200,
            "{}: too few requests to judge",
            phase.label
        );
        assert!(split.passes(), "{}\n{split}", phase.label);
    }
}
