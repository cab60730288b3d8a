//! Live edits through `modelsplit local` under continuous REST and gRPC load: a
//! weight change, an added member, a removed member and an invalid edit (weights
//! summing to 120). Each valid edit takes effect in Envoy, the invalid one keeps the
//! last good split, and no request fails throughout.
//!
//! Each split is judged on the requests sent after it was in force on every worker
//! (Envoy's `config_dump` shows it and ECDS `config_reload` counted it) and answered
//! before the next edit was written; a phase lasts until `PHASE_REQUESTS` such requests
//! arrived. How long an edit takes to be in force is printed, not asserted (README:
//! about 150 ms; the deadline for it is generous, speed belongs in bench/).

use modelsplit_e2e::infer::{in_force_between, timed_grpc_until, timed_rest_until, Answers};
use modelsplit_e2e::local_gateway::{group_manifest, namespace_manifest, LocalGateway};
use modelsplit_e2e::observe::Tally;
use modelsplit_e2e::split::{check_split, PHASE_REQUESTS};
use modelsplit_e2e::standin::StandInConfig;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

const NS: &str = "apps";
/// Requests in flight per protocol.
const IN_FLIGHT: usize = 8;

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
async fn edits_take_effect_under_load_and_no_request_fails() {
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

    // The start waited for the first configuration on every worker.
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Answers::default();
    let rest = timed_rest_until(
        stop.clone(),
        IN_FLIGHT,
        gw.http.clone(),
        gw.url("/modelmesh/apps/v2/models/ai-model/infer"),
        answers.clone(),
    );
    let grpc = timed_grpc_until(
        stop.clone(),
        IN_FLIGHT,
        gw.grpc().await,
        "ai-model",
        answers.clone(),
    );

    let mut phases = vec![Phase {
        label: "initial 80/20",
        weights: vec![("one", 8000), ("two", 2000)],
        edited: start,
        in_force: start,
    }];
    answers
        .wait_for_more(PHASE_REQUESTS, 2 * IN_FLIGHT, "initial 80/20")
        .await;
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
        let reloads_before = gw.filter_reloads().await;
        let edited = Instant::now();
        gw.edit("group.yaml", &group_manifest(NS, "ai-model", members));
        let (weights, in_force) = match weights {
            Some(weights) => (
                weights.to_vec(),
                gw.wait_in_force(NS, "ai-model", weights, reloads_before)
                    .await,
            ),
            None => {
                let line = gw.wait_for_output("stale").await;
                assert!(
                    line.contains("sum to 120")
                        && line.contains("keeping the last good split three=50% two=50%"),
                    "{line}"
                );
                // Nothing new reached Envoy: the split in force stays the last good one.
                let last = phases.last().expect("a phase before");
                (last.weights.clone(), edited)
            }
        };
        eprintln!(
            "{label}: manifest edit -> split in force on every worker: {} ms",
            in_force.duration_since(edited).as_millis()
        );
        phases.push(Phase {
            label,
            weights,
            edited,
            in_force,
        });
        answers
            .wait_for_more(PHASE_REQUESTS, 2 * IN_FLIGHT, label)
            .await;
    }
    let reloads_at_end = gw.filter_reloads().await;
    stop.store(true, Ordering::Relaxed);
    let mut observed = rest.await.unwrap();
    observed.extend(grpc.await.unwrap());

    let failed: Vec<String> = observed
        .iter()
        .filter_map(|t| t.observed.problem(NS))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the edits, e.g. {:?}\n{}",
        failed.len(),
        observed.len(),
        &failed[..failed.len().min(5)],
        gw.local_output()
    );
    eprintln!("{} requests, none failed", observed.len());
    // Start, then one filter configuration per valid edit: the invalid one wrote none.
    assert_eq!(
        reloads_at_end,
        4,
        "filter configurations Envoy took up\n{}",
        gw.local_output()
    );

    for (i, phase) in phases.iter().enumerate() {
        let until = phases.get(i + 1).map(|next| next.edited);
        let in_force = in_force_between(&observed, phase.in_force, until);
        let split = check_split(&Tally::of(&in_force, NS).by_member, &phase.weights);
        eprintln!(
            "{}: {} requests while in force\n{split}",
            phase.label,
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
